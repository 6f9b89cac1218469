r"""Neural stochastic differential equations on diffrax, with the global solver regulariser.

A neural SDE models a process by

.. math:: \mathrm{d}X_t = \mu_\theta(t, X_t)\,\mathrm{d}t + \sigma_\theta(t, X_t)\,\mathrm{d}W_t,

with a learned drift :math:`\mu_\theta` and diffusion :math:`\sigma_\theta` ("Neural SDEs as
Infinite-Dimensional GANs", "Scalable Gradients for Stochastic Differential Equations"). The noise
is either **diagonal** (:math:`\sigma_\theta(t, x)` has the state's shape and multiplies a Brownian
motion of the state's shape entry by entry) or **general** (:math:`\sigma_\theta(t, x)` has shape
``state.shape + (m,)`` and multiplies an ``m``-dimensional Brownian motion). The integral is Itô's
or Stratonovich's; the solver must match (diffrax's ``AbstractItoSolver`` /
``AbstractStratonovichSolver``): Euler–Maruyama (:class:`diffrax.Euler`, strong order 0.5, 1 for
additive noise) for Itô; :class:`diffrax.Heun` (embedded error estimate), :class:`diffrax.SPaRK`
(embedded error estimate, needs space-time Lévy area), :class:`diffrax.EulerHeun`,
:class:`diffrax.GeneralShARK` for Stratonovich; :class:`diffrax.ShARK` / :class:`diffrax.SRA1` for
additive noise (where both calculi agree: use ``calculus="stratonovich"`` with them).

The Brownian motion of one sample is a :class:`diffrax.VirtualBrownianTree` built from that
sample's key, so a path is a fixed function of time: the same for every step size (which is what
strong convergence means) and for every batch it is solved in (:meth:`NeuralSDE.sample` uses
``fold_in(key, i)`` for sample ``i``).

**Regularisers.** A :class:`NeuralSDE` hands its solve to the regulariser
(:meth:`~jaxsolve.ode.AbstractRegulariser.solve_sde`), as a :class:`~jaxsolve.ode.NeuralODE`
does: it builds the drift and noise terms on the sample's Brownian path and the regulariser runs
:meth:`NeuralSDE.integrate` instrumented as it needs.

* :class:`~jaxsolve.ode.GlobalRegulariser` (``error=True``; "Opening the Blackbox: Accelerating
  Neural Differential Equations by Regularizing Internal Solver Heuristics", whose experiments
  include neural SDEs) adds :math:`R_E = \sum_n E_n|h_n|` over the accepted steps of an adaptive
  SDE solve, :math:`E_n` the controller's scaled norm of the solver's embedded error estimate.
  The sum is gathered by the same :class:`~._solver_tools.InstrumentedSolver` as for ODEs (an
  extra state component, invisible to the controller, with zero drift and diffusion).
* :class:`~jaxsolve.ode.LocalRegulariser` ("Locally Regularized Neural Differential Equations:
  Some Black Boxes Were Meant to Remain Closed!") adds :math:`E(t_r, y(t_r), h_r)|h_r|` of one
  step of the same solver from a random time :math:`t_r` on the **same** Brownian path:
  ``"unbiased"`` :math:`t_r \sim U[t_0, t_1)` (:math:`y(t_r)` the solve's dense output there,
  any adjoint), ``"biased"`` :math:`t_r` uniform among the accepted steps' starts
  (discretise-then-optimise adjoints). :math:`h_r` is ``dt0``, cut at :math:`t_1`. The probe's
  stages are added to ``nfe``. Its random time comes from a key folded out of ``key`` apart
  from the Brownian tree's, so the path, the steps and ``ys`` are those of the unregularised
  call with the same ``key``.

The stiffness estimate is ODE-only (it reads Runge–Kutta stages of the drift alone): asking for
it on an SDE raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import RESULTS, as_float, check_choice, check_int, is_concrete
from ._driver import (
    DISCRETE_ADJOINTS,
    RawSolve,
    check_ts,
    closed_over_arrays,
    map_result,
    mark_failed,
    nan_if,
)
from ._regularisers import AbstractRegulariser, as_regulariser
from ._solver_tools import (
    InstrumentedSolver,
    check_tolerances,
    error_norm_fn,
    initial_extras,
    require_error_estimate,
    restrict_norm_to_state,
    stages_per_step,
    stop_on_nonfinite,
)

# The regulariser's key is fold_in(key, _REGULARISER_STREAM): the Brownian tree of `key` uses
# split(key, 1)[0], which is fold_in(key, 0), so any other value gives an independent stream.
_REGULARISER_STREAM = 0x5EED


class SDESolution(eqx.Module):
    """What a :class:`NeuralSDE` call returns.

    ``ys[i]`` is the state at ``ts[i]``. ``nfe`` counts the solver's stages over every attempted
    step (each stage evaluates the drift and the diffusion once; additive-noise SRK methods
    evaluate the diffusion once per step), -1 for solvers whose count this module does not know;
    for a local regulariser it includes the probe step. ``error_estimate`` is the regulariser's
    term (:math:`R_E` of a :class:`~jaxsolve.ode.GlobalRegulariser`, :math:`E(t_r)|h_r|` of a
    :class:`~jaxsolve.ode.LocalRegulariser`; None without one) and ``probe_time`` is :math:`t_r`
    of a local regulariser (as in :class:`~jaxsolve.ode.ODESolution`).

    After a failed solve (seen with ``throw=False``) ``ys`` holds ``inf`` at every saved time the
    solve did not reach, never a plausible number.
    """

    ts: Float[Array, " n"]
    ys: Float[Array, "n ..."]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    result: RESULTS
    error_estimate: Float[Array, ""] | None = None
    probe_time: Float[Array, ""] | None = None


class _DiagonalNoiseTerm(dfx.AbstractTerm):
    r""":math:`\sigma(t, x) \odot \Delta W`: the diffusion has the state's shape."""

    diffusion: Callable
    brownian: dfx.AbstractBrownianPath

    def vf(self, t, y, args):
        return self.diffusion(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return self.brownian.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        # An SRK method hands Lévy areas (H, K) here too: the same entrywise product.
        return vf * control


class _GeneralNoiseTerm(dfx.AbstractTerm):
    r""":math:`\sigma(t, x)\,\Delta W`, :math:`\sigma` of shape ``state.shape + (m,)``."""

    diffusion: Callable
    brownian: dfx.AbstractBrownianPath

    def vf(self, t, y, args):
        return self.diffusion(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return self.brownian.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return jnp.tensordot(vf, control, axes=1)


class _WithExtras(dfx.AbstractTerm):
    """A term on the state ``(y, extras)``: the inner term on ``y``, zero on the extras (the
    regulariser's sums ride along without drift or noise)."""

    term: dfx.AbstractTerm

    def vf(self, t, y, args):
        main, extras = y
        return self.term.vf(t, main, args), jtu.tree_map(jnp.zeros_like, extras)

    def contr(self, t0, t1, **kwargs):
        return self.term.contr(t0, t1, **kwargs)

    def prod(self, vf, control):
        main, extras = vf
        return self.term.prod(main, control), extras

    def vf_prod(self, t, y, args, control):
        main, extras = y
        return self.term.vf_prod(t, main, args, control), jtu.tree_map(jnp.zeros_like, extras)

    def is_vf_expensive(self, t0, t1, y, args):
        return self.term.is_vf_expensive(t0, t1, y[0], args)


class NeuralSDE(eqx.Module):
    r"""Solve :math:`\mathrm{d}X = \mu(t, X)\,\mathrm{d}t + \sigma(t, X)\,\mathrm{d}W` with diffrax.

    ``drift`` and ``diffusion`` are callables ``f(t, y, args)`` (``eqx.Module``\ s hold the trained
    parameters; :class:`~jaxsolve.ode.MLPField` serves for either with diagonal noise).
    ``noise="diagonal"``: ``diffusion`` returns the state's shape. ``noise="general"``: it returns
    ``state.shape + (brownian_dim,)``. ``calculus`` is ``"ito"`` (default solver
    :class:`diffrax.Euler`, Euler–Maruyama) or ``"stratonovich"`` (default :class:`diffrax.Heun`);
    a solver of the other calculus raises. ``stepsize_controller`` defaults to constant steps of
    ``dt0`` (required: the ODE initial-step heuristic has no meaning for a Brownian path); a
    :class:`diffrax.PIDController` needs a solver with an error estimate (Heun, SPaRK), and then
    ``dt0`` is the first step. ``brownian_tol`` is the resolution of the virtual Brownian tree
    (default ``dt0 / 8``; adaptive steps smaller than it see a Brownian bridge interpolation).
    ``adjoint`` defaults to ``RecursiveCheckpointAdjoint``.

    A non-finite state or drift/diffusion ends the solve with ``result`` ``nonfinite``; running
    out of ``max_steps`` gives ``max_steps_reached``. ``throw=True`` (the default) raises then.

    A call solves one sample, whose Brownian path comes from ``key``; :meth:`sample` solves a
    batch, sample ``i`` with ``fold_in(key, i)``.
    """

    drift: Callable
    diffusion: Callable
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController
    adjoint: dfx.AbstractAdjoint
    dt0: float
    brownian_tol: float | None
    noise: str = eqx.field(static=True)
    brownian_dim: int | None = eqx.field(static=True)
    calculus: str = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        drift: Callable,
        diffusion: Callable,
        *,
        dt0: float,
        noise: str = "diagonal",
        brownian_dim: int | None = None,
        calculus: str = "ito",
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        adjoint: dfx.AbstractAdjoint | None = None,
        brownian_tol: float | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ):
        for name, f in (("drift", drift), ("diffusion", diffusion)):
            if not callable(f):
                raise TypeError(f"{name} must be callable as f(t, y, args); got {type(f)}.")
        check_choice("noise", noise, {"diagonal", "general"})
        check_choice("calculus", calculus, {"ito", "stratonovich"})
        if noise == "general":
            check_int("brownian_dim", brownian_dim)
        elif brownian_dim is not None:
            raise ValueError(
                "brownian_dim is for noise='general' (diagonal noise has the state's shape); "
                f"got {brownian_dim!r}."
            )
        if solver is None:
            solver = dfx.Euler() if calculus == "ito" else dfx.Heun()
        if not isinstance(solver, dfx.AbstractSolver):
            raise TypeError(f"solver must be a diffrax solver; got {type(solver).__name__}.")
        wanted = dfx.AbstractItoSolver if calculus == "ito" else dfx.AbstractStratonovichSolver
        if not isinstance(solver, wanted):
            raise ValueError(
                f"solver must converge to the {calculus} solution ({wanted.__name__}); got "
                f"{type(solver).__name__}. Choose calculus= to match (Euler, ItoMilstein: 'ito'; "
                "Heun, SPaRK, EulerHeun, ShARK, ...: 'stratonovich')."
            )
        if stepsize_controller is None:
            stepsize_controller = dfx.ConstantStepSize()
        if not isinstance(stepsize_controller, dfx.AbstractStepSizeController):
            raise TypeError(
                "stepsize_controller must be a diffrax step-size controller; got "
                f"{type(stepsize_controller).__name__}."
            )
        if isinstance(stepsize_controller, dfx.AbstractAdaptiveStepSizeController):
            require_error_estimate(solver, "an adaptive stepsize_controller")
        stepsize_controller = check_tolerances(stepsize_controller)
        adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
        if not isinstance(adjoint, dfx.AbstractAdjoint):
            raise TypeError(f"adjoint must be a diffrax adjoint; got {type(adjoint).__name__}.")
        check_int("max_steps", max_steps)
        for name, value in (("dt0", dt0), ("brownian_tol", brownian_tol)):
            if value is None and name == "brownian_tol":
                continue
            if value is None or (is_concrete(value) and not _positive_scalar(value)):
                raise ValueError(f"{name} must be a positive finite scalar; got {value!r}.")
        if not isinstance(throw, bool):
            raise TypeError(f"throw must be a bool; got {type(throw).__name__}.")
        self.drift, self.diffusion = drift, diffusion
        self.solver, self.stepsize_controller, self.adjoint = solver, stepsize_controller, adjoint
        self.dt0, self.brownian_tol = dt0, brownian_tol
        self.noise, self.brownian_dim, self.calculus = noise, brownian_dim, calculus
        self.max_steps, self.throw = max_steps, throw

    def __call__(
        self,
        ts: Float[ArrayLike, " n"],
        y0: Float[ArrayLike, "..."],
        args=None,
        *,
        key: PRNGKeyArray,
        regulariser: AbstractRegulariser | None = None,
    ) -> SDESolution:
        """Solve one sample from ``ts[0]`` to ``ts[-1]`` starting at ``y0``, saving at ``ts``;
        the Brownian path is a function of ``key`` alone.

        ``regulariser``: None, :class:`~jaxsolve.ode.GlobalRegulariser` (``error=True``) or
        :class:`~jaxsolve.ode.LocalRegulariser`: it runs the solve and the returned
        :class:`SDESolution` carries its term.
        """
        if key is None:
            raise ValueError("NeuralSDE draws its Brownian path from key=; got None.")
        if jnp.iscomplexobj(y0) or jnp.iscomplexobj(ts):
            raise TypeError("y0 and ts must be real.")
        y0 = as_float(y0)
        ts = check_ts(as_float(ts).astype(y0.dtype))
        regulariser = as_regulariser(regulariser)
        self._check_shapes(ts[0], y0, args)
        terms = self.terms(ts[0], ts[-1], y0, key)
        solved = regulariser.solve_sde(
            self, terms, ts, y0, args, jax.random.fold_in(key, _REGULARISER_STREAM)
        )
        return SDESolution(**solved.solution_fields(ts, self.throw))

    def terms(self, t0, t1, y0, key) -> dfx.MultiTerm:
        r"""The drift and noise terms of one sample on ``[t0, t1]``: :math:`\mu\,\mathrm{d}t`
        and :math:`\sigma\,\mathrm{d}W` on the Brownian path :meth:`brownian_motion` of
        ``key``."""
        brownian = self.brownian_motion(t0, t1, y0, key)
        noise = _DiagonalNoiseTerm if self.noise == "diagonal" else _GeneralNoiseTerm
        return dfx.MultiTerm(dfx.ODETerm(self.drift), noise(self.diffusion, brownian))

    def integrate(
        self, terms, ts, y0, args, *, error: bool = False, reservoir_key=None
    ) -> RawSolve:
        r"""Solve on ``terms`` (from :meth:`terms`) from ``ts[0]`` to ``ts[-1]``, saving at
        ``ts``: the solve a regulariser runs and instruments.

        ``error``: ``sums`` holds :math:`\sum_n E_n|h_n|` over the accepted steps.
        ``reservoir_key``: ``pick`` is the start ``(t, y)`` of a uniformly random accepted step.
        Both ride in an extra state component with zero drift and noise, so they need a
        discretise-then-optimise adjoint (``TypeError`` otherwise). ``nfe`` counts the stages of
        every attempted step (-1 when unknown).
        """
        if error:
            require_error_estimate(self.solver, "the error regulariser")
        gathers = error or reservoir_key is not None
        if gathers and not isinstance(self.adjoint, DISCRETE_ADJOINTS):
            raise TypeError(
                "quantities gathered over the solver's own steps (GlobalRegulariser's sum, "
                "LocalRegulariser('biased')'s probe point) need a discretise-then-optimise "
                "adjoint (RecursiveCheckpointAdjoint, DirectAdjoint or ForwardMode); this "
                f"NeuralSDE has {type(self.adjoint).__name__}. LocalRegulariser('unbiased') "
                "works with any adjoint."
            )
        controller = check_tolerances(self.stepsize_controller)
        wrapped = InstrumentedSolver(
            self.solver,
            error_norm_fn(controller) if error else None,
            reservoir_key=reservoir_key,
        )
        if gathers:
            terms = dfx.MultiTerm(*(_WithExtras(term) for term in terms.terms))
            extras = initial_extras(y0, n_sums=int(error), reservoir=reservoir_key is not None)
            state0 = (y0, extras)
            controller = restrict_norm_to_state(controller)
            saveat = dfx.SaveAt(
                subs=[
                    dfx.SubSaveAt(ts=ts, fn=lambda t, y, a: y[0]),
                    # Saved from the final state itself (not interpolated): the extras are exact.
                    dfx.SubSaveAt(t1=True, fn=lambda t, y, a: y[1]),
                ]
            )
        else:
            state0, saveat = y0, dfx.SaveAt(ts=ts)
        sol = dfx.diffeqsolve(
            terms,
            wrapped,
            ts[0],
            ts[-1],
            jnp.asarray(self.dt0, ts.dtype),
            state0,
            args,
            saveat=saveat,
            stepsize_controller=stop_on_nonfinite(controller),
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=False,
        )
        if gathers:
            ys, extras = sol.ys[0], jtu.tree_map(lambda e: e[0], sol.ys[1])
        else:
            ys, extras = sol.ys, {}
        pick = (extras["pick_t"], extras["pick_y"]) if "pick_y" in extras else None
        # ys[0] is y0 itself (diffrax interpolates it from the first step: inf if that failed).
        ys = ys.at[0].set(y0)
        num_steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)
        stages = stages_per_step(self.solver)
        result = map_result(sol.result, ys)
        closed_over = [closed_over_arrays(f, ts[0], y0, args) for f in (self.drift, self.diffusion)]
        ys, sums, pick = mark_failed(
            result, ys, extras.get("sums"), pick, (terms, closed_over, y0, args), self.adjoint
        )
        return RawSolve(
            ys=ys,
            sums=sums,
            pick=pick,
            num_steps=num_steps,
            num_accepted_steps=jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
            num_rejected_steps=jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
            nfe=jnp.asarray(-1 if stages is None else stages * num_steps, jnp.int32),
            result=result,
        )

    def brownian_motion(self, t0, t1, y0, key) -> dfx.VirtualBrownianTree:
        """The Brownian path of one sample on ``[t0, t1]``: a virtual Brownian tree of ``key``,
        with the Lévy area the solver needs."""
        shape = y0.shape if self.noise == "diagonal" else (self.brownian_dim,)
        levy_area = getattr(self.solver, "minimal_levy_area", dfx.BrownianIncrement)
        if levy_area is dfx.AbstractBrownianIncrement:
            levy_area = dfx.BrownianIncrement
        elif levy_area is dfx.AbstractSpaceTimeLevyArea:
            levy_area = dfx.SpaceTimeLevyArea
        elif levy_area is dfx.AbstractSpaceTimeTimeLevyArea:
            levy_area = dfx.SpaceTimeTimeLevyArea
        tol = self.dt0 / 8 if self.brownian_tol is None else self.brownian_tol
        return dfx.VirtualBrownianTree(
            t0,
            t1,
            tol=tol,
            shape=jax.ShapeDtypeStruct(shape, y0.dtype),
            key=key,
            levy_area=levy_area,
        )

    def sample(
        self,
        ts,
        y0,
        args=None,
        *,
        key: PRNGKeyArray,
        num_samples: int | None = None,
        regulariser: AbstractRegulariser | None = None,
    ):
        """Solve a batch: ``y0`` of shape ``(batch, ...)`` (or one ``y0`` repeated
        ``num_samples`` times); sample ``i`` uses ``fold_in(key, i)``, so it does not depend on
        the batch size. Returns an :class:`SDESolution` with a leading batch axis (each sample
        with its own regulariser term, of ``regulariser``)."""
        y0 = as_float(y0)
        if num_samples is not None:
            check_int("num_samples", num_samples)
            y0 = jnp.broadcast_to(y0, (num_samples, *y0.shape))
        if y0.ndim < 1:
            raise ValueError(f"y0 must have a leading batch axis; got shape {y0.shape}.")
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(y0.shape[0]))
        return jax.vmap(lambda y, k: self(ts, y, args, key=k, regulariser=regulariser))(y0, keys)

    def _check_shapes(self, t0, y0, args):
        mu = eqx.filter_eval_shape(self.drift, t0, y0, args)
        if getattr(mu, "shape", None) != y0.shape:
            raise ValueError(
                f"drift(t, y, args) must return the state's shape {y0.shape}; got "
                f"{getattr(mu, 'shape', mu)}."
            )
        sigma = eqx.filter_eval_shape(self.diffusion, t0, y0, args)
        expected = y0.shape if self.noise == "diagonal" else (*y0.shape, self.brownian_dim)
        if getattr(sigma, "shape", None) != expected:
            raise ValueError(
                f"diffusion(t, y, args) must return shape {expected} for noise={self.noise!r}; "
                f"got {getattr(sigma, 'shape', sigma)}."
            )


def _positive_scalar(value) -> bool:
    a = np.asarray(value)
    return a.ndim == 0 and bool(np.isfinite(a)) and bool(a > 0)


def euler_transition_nll(
    drift: Callable,
    diffusion: Callable,
    ts: Float[ArrayLike, " n"],
    path: Float[ArrayLike, "n dim"],
    args=None,
    *,
    noise: str = "diagonal",
) -> Float[Array, ""]:
    r"""Negative log-likelihood of an observed path under the Euler–Maruyama transition density.

    .. math:: x_{k+1} \mid x_k \sim \mathcal N\big(x_k + \mu(t_k, x_k)\Delta_k,\;
        \Sigma(t_k, x_k)\Delta_k\big),

    :math:`\Sigma = \mathrm{diag}(\sigma^2)` for diagonal noise and :math:`\sigma\sigma^\top` for
    general noise (``diffusion`` returning ``(dim, m)``). Summed over transitions; the maximum
    over the drift/diffusion parameters fits an SDE to densely observed paths (Itô calculus). A
    non-positive-definite covariance gives NaN, never a finite number.
    """
    check_choice("noise", noise, {"diagonal", "general"})
    path = as_float(path)
    ts = check_ts(as_float(ts).astype(path.dtype))
    if path.ndim != 2 or path.shape[0] != ts.shape[0]:
        raise ValueError(
            f"path must have shape (len(ts), dim) = ({ts.shape[0]}, dim); got {path.shape}."
        )
    dt = jnp.diff(ts)

    def one(t, dt_k, x, x_next):
        mean = x + drift(t, x, args) * dt_k
        sigma = diffusion(t, x, args)
        r = x_next - mean
        if noise == "diagonal":
            var = sigma**2 * dt_k
            return 0.5 * jnp.sum(r**2 / var + jnp.log(2 * jnp.pi * var))
        cov = sigma @ sigma.T * dt_k
        chol = jnp.linalg.cholesky(cov)
        z = jax.scipy.linalg.solve_triangular(chol, r, lower=True)
        logdet = 2 * jnp.sum(jnp.log(jnp.diag(chol)))
        return 0.5 * (z @ z + logdet + r.shape[0] * jnp.log(2 * jnp.pi))

    return jnp.sum(jax.vmap(one)(ts[:-1], dt, path[:-1], path[1:]))


class _PosteriorWithKL(eqx.Module):
    r"""Drift of the state ``[z, L]``: :math:`(f(t, z, c),\ \tfrac12|u|^2)` with
    :math:`u = (f - h)/\sigma` (the path KL's integrand)."""

    posterior_drift: Callable
    prior_drift: Callable
    diffusion: Callable

    def __call__(self, t, state, context):
        z = state[:-1]
        f = self.posterior_drift(t, z, context)
        u = (f - self.prior_drift(t, z, None)) / self.diffusion(t, z, None)
        return jnp.concatenate([f, 0.5 * jnp.sum(u**2, keepdims=True)])


class _DiffusionWithKL(eqx.Module):
    """Diagonal diffusion of ``[z, L]``: the KL channel has no noise."""

    diffusion: Callable

    def __call__(self, t, state, args):
        g = self.diffusion(t, state[:-1], None)
        return jnp.concatenate([g, jnp.zeros((1,), g.dtype)])


class LatentSDE(eqx.Module):
    r"""A latent SDE trained by its evidence lower bound ("Scalable Gradients for Stochastic
    Differential Equations", Li, Wong, Chen & Duvenaud, §5).

    Prior :math:`\mathrm{d}z = h(t, z)\,\mathrm{d}t + \sigma(t, z)\,\mathrm{d}W`,
    :math:`z_0 \sim \mathcal N(0, I)`; approximate posterior, given a context :math:`c` computed
    from the observations by ``encoder``, :math:`\mathrm{d}z = f(t, z, c)\,\mathrm{d}t +
    \sigma(t, z)\,\mathrm{d}W` (the same diagonal diffusion, so the two path measures are mutually
    absolutely continuous), :math:`z_0 \sim \mathcal N(m, \mathrm{diag}\,e^{2 \ell})`.
    Girsanov's theorem gives the KL between the path measures as

    .. math:: \mathrm{KL} = \mathbb E \int_{t_0}^{t_1} \tfrac12 |u(t, z_t)|^2\,\mathrm{d}t,
        \qquad u = (f - h)/\sigma,

    integrated along the sampled posterior path as an extra state component. With a Gaussian
    decoder :math:`x_t \sim \mathcal N(\mathrm{decoder}(z_t), \mathrm{obs\_std}^2 I)` the loss is
    the single-sample negative ELBO

    .. math:: -\sum_i \log p(x_{t_i} \mid z_{t_i}) + \mathrm{KL}(q(z_0)\,\|\,p(z_0))
        + \int \tfrac12|u|^2\,\mathrm{d}t.

    ``encoder(ts, xs) -> (context, mean0, log_std0)``; ``posterior_drift(t, z, context)``;
    ``prior_drift(t, z, args)`` and ``diffusion(t, z, args)`` (``args`` is None) return the latent
    shape; ``decoder(z)`` the observation shape. Itô calculus, Euler–Maruyama by default;
    ``solver``, ``dt0``, ``max_steps`` and ``adjoint`` are those of the :class:`NeuralSDE` it
    builds. A failed solve raises (``throw=True``) or gives a NaN loss with NaN derivatives,
    never finite ones.
    """

    encoder: Callable
    posterior_drift: Callable
    prior_drift: Callable
    diffusion: Callable
    decoder: Callable
    obs_std: float
    dt0: float
    solver: dfx.AbstractSolver | None = None
    adjoint: dfx.AbstractAdjoint | None = None
    max_steps: int = eqx.field(static=True, default=4096)
    throw: bool = eqx.field(static=True, default=True)

    def posterior_sde(self) -> NeuralSDE:
        """The posterior SDE on ``[z, L]`` (latent state and accumulated path KL)."""
        return NeuralSDE(
            _PosteriorWithKL(self.posterior_drift, self.prior_drift, self.diffusion),
            _DiffusionWithKL(self.diffusion),
            dt0=self.dt0,
            solver=self.solver,
            adjoint=self.adjoint,
            max_steps=self.max_steps,
            throw=self.throw,
        )

    def loss(self, ts, xs, *, key: PRNGKeyArray):
        """Negative ELBO of one observed sequence ``xs[i]`` at ``ts[i]`` (one posterior sample),
        and a dict of its parts (``reconstruction``, ``kl_z0``, ``kl_path``) and ``result``."""
        xs = as_float(xs)
        ts = check_ts(as_float(ts).astype(xs.dtype))
        if xs.shape[0] != ts.shape[0]:
            raise ValueError(
                f"xs must have one observation per time (len(ts) = {ts.shape[0]}); got shape "
                f"{xs.shape}."
            )
        context, mean0, log_std0 = self.encoder(ts, xs)
        z_key, path_key = jax.random.split(key)
        z0 = mean0 + jnp.exp(log_std0) * jax.random.normal(z_key, mean0.shape, mean0.dtype)
        state0 = jnp.concatenate([z0, jnp.zeros((1,), z0.dtype)])
        sol = self.posterior_sde()(ts, state0, context, key=path_key)
        zs, kl_path = sol.ys[:, :-1], sol.ys[-1, -1]
        predicted = jax.vmap(self.decoder)(zs)
        var = self.obs_std**2
        reconstruction = 0.5 * jnp.sum((xs - predicted) ** 2 / var + jnp.log(2 * jnp.pi * var))
        # KL(N(m, e^{2l}) || N(0, 1)), summed over latent dimensions.
        kl_z0 = jnp.sum(0.5 * (mean0**2 + jnp.exp(2 * log_std0) - 1) - log_std0)
        total = reconstruction + kl_z0 + kl_path
        # NaN in value and derivative: a select alone would hand back a zero gradient.
        total = nan_if(total, sol.result != RESULTS.successful)
        parts = {
            "reconstruction": reconstruction,
            "kl_z0": kl_z0,
            "kl_path": kl_path,
            "result": sol.result,
        }
        return total, parts
