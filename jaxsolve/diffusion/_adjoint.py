r"""How reverse-mode gradients flow through :func:`~jaxsolve.diffusion.sample`: an adjoint object.

As diffrax's ``adjoint=``, ``sample(adjoint=...)`` takes an :class:`AbstractAdjoint`, and the driver
calls its two methods and never asks which one it has: ``check`` (refuse, at trace time, a run it
cannot differentiate) and ``loop`` (run the driver's integration so that its gradients flow as
the adjoint says).

* :class:`Backprop` — through the ``lax.scan`` of the steps; memory grows with the steps.
* :class:`Checkpointed` — each step recomputed in the backward pass (``checkpoints=None``), or
  recursive (binomial, "treeverse") checkpointing with a fixed number of stored states
  (``checkpoints=k``): memory :math:`O(k)` at the price of recomputing steps.
* :class:`AdjointDPM` — the continuous adjoint, below.

The strings ``"backprop"``, ``"checkpoint"`` and ``"adjoint"`` name ``Backprop()``,
``Checkpointed()`` and ``AdjointDPM()`` (:func:`as_adjoint` maps them once, where ``sample`` is
called). The forward sample is the same under every adjoint, bit for bit.

**AdjointDPM**: gradients by the adjoint method, in exponential-integrator variables.

"AdjointDPM: Adjoint Sensitivity Method for Gradient Backpropagation of Diffusion Probabilistic
Models". With :math:`\lambda = -\log\sigma` the probability-flow ODE is
:math:`\mathrm dx/\mathrm d\lambda = D_\theta(x, \sigma) - x`, and for a loss of the final sample the
adjoints :math:`a = \partial L/\partial x(\lambda)`, :math:`a_\theta` obey

.. math:: \frac{\mathrm da}{\mathrm d\lambda} = a - J_x^\top a, \qquad
          \frac{\mathrm da_\theta}{\mathrm d\lambda} = -J_\theta^\top a,

solved backward from the last positive level to :math:`\sigma_0` together with :math:`x` itself
(reconstructed backward, never stored). The linear parts are integrated exactly, as in the paper:
over a step :math:`[\lambda_s, \lambda_e]`, :math:`H = \lambda_e - \lambda_s`,

.. math:: x_s = e^{H}x_e - \int_{\lambda_s}^{\lambda_e} e^{u-\lambda_s}D\,\mathrm du, \qquad
          a_s = e^{-H}a_e + \int_{\lambda_s}^{\lambda_e} e^{\lambda_s-u}J_x^\top a\,\mathrm du, \qquad
          a_{\theta,s} = a_{\theta,e} + \int_{\lambda_s}^{\lambda_e} J_\theta^\top a\,\mathrm du,

with the remaining integrands interpolated linearly between a first-order prediction at
:math:`\lambda_s` and the value at :math:`\lambda_e` (a second-order, Heun-type scheme: two
vector-Jacobian products per step). The forward pass is the driver's own integration, so the
sample is the one every other ``adjoint`` gives; its last step, :math:`x\mapsto D(x,\sigma_{n-1})`,
is differentiated exactly. Memory is independent of the number of steps: the backward pass is a
``lax.scan`` whose carry is :math:`(x, a, a_\theta)`.

The gradients are those of the *continuous* flow, evaluated on the sampling grid; they approach
backpropagation through the discrete solver as the number of steps grows. Gradients reach the
initial state and every inexact array the denoiser holds or closes over (network weights,
conditioning, a guidance scale); the grid itself gets none.
"""

from __future__ import annotations

import abc
from typing import Any

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from .._core import RESULTS, check_choice, check_int


class AbstractAdjoint(eqx.Module):
    """How gradients flow through a sampling run (see the module).

    The driver calls ``check`` while it validates its arguments and ``loop`` to integrate. ``run``
    is the driver's sampling run: ``run.integrate(denoiser, x, *, scan=jax.lax.scan,
    keep_final_input=False)`` is the whole integration (``scan(body, init, xs)`` runs its loop)
    and returns ``(x_out, path, nfe, num_steps, result, final_input)``;
    ``run.final_step(denoiser, x, state)`` re-evaluates the step into sigma = 0;
    ``run.init(x)`` is the solver's initial state and ``run.sigmas`` the grid.
    """

    def check(
        self, solver, *, max_steps: int | None, n_steps: Any, noise: Any, save_trajectory: bool
    ) -> None:
        """Raise a ``ValueError`` for a run this adjoint cannot differentiate."""

    @abc.abstractmethod
    def loop(self, run, denoiser, x) -> tuple:
        """Integrate: ``(x_out, path, nfe, num_steps, result)``."""


class Backprop(AbstractAdjoint):
    """Reverse mode through the driver's ``lax.scan``: memory grows with the number of steps."""

    def loop(self, run, denoiser, x):
        return run.integrate(denoiser, x)[:5]


class Checkpointed(AbstractAdjoint):
    """Checkpointing: the backward pass recomputes steps instead of storing their intermediates.

    Args:
        checkpoints: ``None`` stores the state entering every step and recomputes each step once
            (memory: one state per step); an int ``k`` stores only ``k`` states, placed by
            recursive binomial checkpointing ("treeverse", as diffrax's
            ``RecursiveCheckpointAdjoint``), and recomputes the rest (memory :math:`O(k)`; it does
            not support forward-mode differentiation).
    """

    checkpoints: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.checkpoints is not None:
            check_int("checkpoints", self.checkpoints)

    def scan(self, body, init, xs):
        """The driver's loop, checkpointed."""
        if self.checkpoints is None:
            return jax.lax.scan(jax.checkpoint(body), init, xs)
        return eqxi.scan(body, init, xs, kind="checkpointed", checkpoints=self.checkpoints)

    def loop(self, run, denoiser, x):
        return run.integrate(denoiser, x, scan=self.scan)[:5]


class AdjointDPM(AbstractAdjoint):
    """The continuous adjoint of the probability-flow ODE (see the module): memory independent of
    the number of steps. Deterministic solvers on a fixed grid only; no trajectory, no
    ``n_steps`` (pad the grid instead)."""

    def check(self, solver, *, max_steps, n_steps, noise, save_trajectory):
        if solver.stochastic or solver.adaptive or max_steps is not None or noise is not None:
            raise ValueError(
                "adjoint='adjoint' (AdjointDPM) needs a deterministic ODE solver on a fixed grid; "
                f"got {type(solver).__name__}."
            )
        if save_trajectory:
            raise ValueError("adjoint='adjoint' does not keep the trajectory (save_trajectory).")
        if n_steps is not None:
            raise ValueError(
                "adjoint='adjoint' integrates the whole grid; pad the grid instead of passing "
                "n_steps."
            )

    def loop(self, run, denoiser, x):
        def integrate_keeping_final_input(d, y):
            x_out, _, nfe, taken, result, final_input = run.integrate(d, y, keep_final_input=True)
            return x_out, nfe, taken, result, final_input

        x_out, nfe, taken, result = adjoint_sample(
            denoiser, x, run.sigmas, integrate_keeping_final_input, run.final_step, run.init(x)
        )
        # Counts and codes carry no gradient (the custom rule's integer outputs would otherwise
        # come with instantiated zero tangents, which the error check cannot differentiate).
        nfe, taken, result = jax.lax.stop_gradient((nfe, taken, result))
        return x_out, None, nfe, taken, result


_ALIASES = {"backprop": Backprop, "checkpoint": Checkpointed, "adjoint": AdjointDPM}


def as_adjoint(adjoint: AbstractAdjoint | str) -> AbstractAdjoint:
    """The adjoint object for ``sample(adjoint=...)``: an :class:`AbstractAdjoint` as it is, or
    one of the strings ``"backprop"``, ``"checkpoint"``, ``"adjoint"`` (see the module)."""
    if isinstance(adjoint, str):
        check_choice("adjoint", adjoint, set(_ALIASES))
        return _ALIASES[adjoint]()
    if not isinstance(adjoint, AbstractAdjoint):
        raise TypeError(
            "adjoint must be an AbstractAdjoint (Backprop(), Checkpointed(), AdjointDPM()) or one "
            f"of 'backprop', 'checkpoint', 'adjoint'; got {type(adjoint).__name__}."
        )
    return adjoint


def adjoint_sample(denoiser, x, sigmas, integrate, final_step, state):
    r"""Sample with the driver, differentiated by the adjoint method.

    ``integrate(denoiser, x) -> (x_out, nfe, taken, result, (x_last, state_last, last))`` is the
    driver's own integration of the whole grid (so the sample is bitwise the one of
    ``adjoint="backprop"``), which also hands back the state entering the final step, the solver
    state there and the index ``last`` of the last positive level.
    ``final_step(denoiser, x_last, state_last) -> x_out`` re-evaluates that last step; it is
    differentiated exactly, with the solver's history held fixed (for every solver whose final
    step is the denoised estimate, as all grid solvers', that is :math:`D(x_{n-1}, \sigma_{n-1})`).
    ``state`` is an example of the solver state (its shapes).

    Returns ``(x_out, nfe, taken, result)``. A gradient through a sample whose ``result`` is not
    successful is NaN: the adjoint of a non-finite trajectory has no meaning, and a zero or finite
    number would look like a real gradient.
    """
    # Three programs see the arrays the denoiser closes over (weights, a guidance scale): the
    # forward integration, the final step and D on the whole state (the adjoint ODE). Each is
    # closure-converted where it is used — a solver may call the denoiser on other shapes than
    # the state's, e.g. per sample — and their closed-over arrays are matched by identity, so one
    # list of parameters feeds all three and collects their gradients.
    forward = _Converted(lambda y: integrate(denoiser, y), x)
    last_step = _Converted(lambda y, st: final_step(denoiser, y, st), x, state)
    flow = _Converted(denoiser, x, sigmas[0])
    last_step.index_into(forward)
    flow.index_into(forward)

    @jax.custom_vjp
    def run(params, x):
        x_out, nfe, taken, result, _ = forward.call(params, x)
        return x_out, nfe, taken, result

    def run_fwd(params, x):
        x_out, nfe, taken, result, final_input = forward.call(params, x)
        return (x_out, nfe, taken, result), (params, final_input, result)

    def run_bwd(residuals, cotangents):
        fwd_params, (x_last, state_last, last), result = residuals
        cotangent = cotangents[0]
        params = flow.own(fwd_params)

        def denoise(p, y, s):
            return flow.module(p)(y, s)

        # The final step exactly (the solver's history held fixed).
        _, vjp = jax.vjp(
            lambda p, y: last_step.module(p)(y, state_last), last_step.own(fwd_params), x_last
        )
        g_last, a = vjp(cotangent)
        zero_params = jax.tree_util.tree_map(jnp.zeros_like, params)

        def eval_point(y, adj, s):
            d, vjp_d = jax.vjp(lambda p, z: denoise(p, z, s), params, y)
            p_bar, g = vjp_d(adj)
            return d, g, p_bar

        def body(carry, k):
            y_e, a_e, acc = carry
            s_e, s_s = sigmas[jnp.minimum(k + 1, sigmas.shape[0] - 1)], sigmas[k]
            active = k + 1 <= last  # step k: from level k+1 back to level k
            s_e = jnp.where(active, s_e, 1.0)
            s_s = jnp.where(active, s_s, 2.0)
            h = jnp.log(s_s / s_e)  # lambda_e - lambda_s > 0
            eh, emh = jnp.exp(h), jnp.exp(-h)
            d_e, g_e, p_e = eval_point(y_e, a_e, s_e)
            y_pred = eh * y_e - (eh - 1.0) * d_e
            a_pred = emh * a_e + (1.0 - emh) * g_e
            d_s, g_s, p_s = eval_point(y_pred, a_pred, s_s)
            # Linear interpolation of D and J^T a between the two ends, integrated exactly.
            w_d = (h * eh - eh + 1.0) / h  # int_0^h e^v v dv / h
            w_g = (1.0 - emh - h * emh) / h  # int_0^h e^-v v dv / h
            y_s = eh * y_e - (d_s * (eh - 1.0) + (d_e - d_s) * w_d)
            a_s = emh * a_e + g_s * (1.0 - emh) + (g_e - g_s) * w_g
            acc_s = jax.tree_util.tree_map(lambda c, u, v: c + 0.5 * h * (u + v), acc, p_s, p_e)
            keep = lambda new, old: jax.tree_util.tree_map(
                lambda u, v: jnp.where(active, u, v), new, old
            )
            return (keep(y_s, y_e), keep(a_s, a_e), keep(acc_s, acc)), None

        steps = jnp.arange(sigmas.shape[0] - 2, -1, -1)
        (_, a0, acc), _ = jax.lax.scan(body, (x_last, a, zero_params), steps)
        g_params = forward.collect(fwd_params, (last_step, g_last), (flow, acc))
        # No gradient through a failed sample looks plausible: it is NaN.
        failed = result != RESULTS.successful
        poison = lambda g: jnp.where(failed, jnp.nan, g)
        return [poison(g) for g in g_params], poison(a0)

    run.defvjp(run_fwd, run_bwd)
    return run(forward.params, x)


class _Converted:
    """A function closure-converted at example arguments, its inexact closed-over arrays as a
    flat list of parameters (:func:`equinox.filter_closure_convert`)."""

    def __init__(self, fn, *example):
        converted = eqx.filter_closure_convert(fn, *example)
        params, self.static = eqx.partition(converted, eqx.is_inexact_array)
        self.params, self.treedef = jax.tree_util.tree_flatten(params)
        self.index = None

    def module(self, params):
        return eqx.combine(jax.tree_util.tree_unflatten(self.treedef, params), self.static)

    def call(self, params, *args):
        return self.module(params)(*args)

    def index_into(self, owner):
        """Find each parameter in ``owner``'s by identity (the same closed-over array)."""
        where = {id(p): j for j, p in enumerate(owner.params)}
        self.index = [where.get(id(p)) for p in self.params]
        for p, j in zip(self.params, self.index, strict=True):
            if j is None and isinstance(p, jax.core.Tracer):
                raise ValueError(
                    "adjoint='adjoint': the denoiser closes over an array that the sampling run "
                    "does not use, so its gradient cannot be collected."
                )

    def own(self, owner_params):
        """This function's parameters taken from the owner's list (unmatched ones are constants
        of this function alone, kept as they are)."""
        return [
            p if j is None else owner_params[j]
            for p, j in zip(self.params, self.index, strict=True)
        ]

    def collect(self, params, *parts):
        """The owner's gradient: the sum of each part's gradient, mapped onto ``params``."""
        total = [jnp.zeros_like(p) for p in params]
        for part, grads in parts:
            for g, j in zip(grads, part.index, strict=True):
                if j is not None:
                    total[j] = total[j] + g
        return total
