r"""Continuous normalising flows (FFJORD) and the regularisers that keep them cheap to solve.

A continuous normalising flow ("FFJORD: Free-form Continuous Dynamics for Scalable Reversible
Generative Models", Grathwohl et al.) maps data :math:`x` to a latent :math:`z = x(T)` by
:math:`\mathrm{d}x/\mathrm{d}t = f(t, x, \mathrm{args})`, :math:`x(0) = x`. By the instantaneous
change of variables ("Neural Ordinary Differential Equations"),
:math:`\mathrm{d}\log p_t(x(t))/\mathrm{d}t = -\operatorname{tr}\partial_x f`, so

.. math:: \log p(x) = \log p_{\mathrm{base}}(x(T)) + \int_0^T \operatorname{tr}
   \partial_x f(t, x(t))\,\mathrm{d}t,

solved jointly with the state. The base is :math:`\mathcal N(0, I)`. The trace comes from an
:class:`~jaxsolve.ode.AbstractDivergence`: exact (:math:`d` Jacobian-vector products; low
dimension) or Hutchinson's :math:`\varepsilon^\top\partial_x f\,\varepsilon` with Gaussian or
Rademacher probes held fixed along each sample's trajectory and drawn from ``fold_in(key, i)``.
Sampling solves the same ODE backwards from :math:`z \sim \mathcal N(0, I)` at :math:`T` to 0.

Regularisers (all optional, combinable):

* :class:`RNODE` — "How to Train Your Neural ODE: the World of Jacobian and Kinetic
  Regularization" (Finlay et al.): kinetic energy :math:`\int_0^T\lVert f\rVert^2\mathrm{d}t` and
  Jacobian Frobenius norm :math:`\int_0^T\lVert\partial_x f\rVert_F^2\mathrm{d}t`, the latter as
  :math:`\mathbb E\lVert\partial_x f\,\varepsilon\rVert^2` with the divergence's own probes (exact
  from the :math:`d` columns with :class:`~jaxsolve.ode.ExactDivergence`).
* :class:`TayNODE` — "Learning Differential Equations that are Easy to Solve" (Kelly et al.):
  :math:`\int_0^T\lVert \mathrm{d}^K x/\mathrm{d}t^K\rVert^2\mathrm{d}t`, the :math:`K`-th total
  time derivative of the state from Taylor-mode automatic differentiation
  (``jax.experimental.jet``).
* :class:`~jaxsolve.ode.GlobalRegulariser` / :class:`~jaxsolve.ode.LocalRegulariser` — the
  adaptive solver's own error/stiffness heuristics ("Opening the Blackbox", "Locally Regularized
  Neural Differential Equations"), applied to the CNF's augmented solve through the same seam as
  :class:`~jaxsolve.ode.NeuralODE`: the CNF hands its solve to the regulariser.

The first two are integrals that ride along in the augmented state; they are kept out of the step
size control (the controller measures only :math:`x` and the log-density), so adding them does not
change where the solver steps.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.experimental import jet
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import RESULTS, as_float, check_int, is_concrete, per_sample_keys
from ._divergence import AbstractDivergence, ExactDivergence
from ._driver import check_field_output, integrate, maybe_throw, nan_if, solver_setup
from ._neural_ode import NeuralODE
from ._regularisers import AbstractRegulariser, LocalRegulariser, as_regulariser

# ---------------------------------------------------------------------------------------------
# Regularisers integrated along the solve


class AbstractIntegralRegulariser(eqx.Module):
    r"""A penalty :math:`\int_0^T r(t, x(t))\,\mathrm{d}t` carried in the CNF's augmented state.

    :meth:`integrands` returns the named integrands :math:`r` at one point of the trajectory; the
    :class:`CNF` integrates each and returns it under its name. A new one is a subclass.
    """

    @property
    @abc.abstractmethod
    def names(self) -> tuple:
        """The names of the integrands, in a fixed order (known without tracing)."""

    @abc.abstractmethod
    def integrands(self, vector_field, t, x, args, fx, tangent, probes, exact) -> dict:
        """``{name: r(t, x)}`` (scalars) at ``(t, x)``.

        ``fx`` is ``vector_field(t, x, args)``, ``tangent`` its linearisation in ``x``,
        ``probes`` the sample's divergence probes and ``exact`` whether the divergence is exact
        (then ``probes`` is empty).
        """


class RNODE(AbstractIntegralRegulariser):
    r"""Kinetic energy and Jacobian Frobenius norm ("How to Train Your Neural ODE").

    ``kinetic``: :math:`\int_0^T\lVert f(t, x)\rVert^2\mathrm{d}t`.
    ``jacobian``: :math:`\int_0^T\lVert\partial_x f\rVert_F^2\mathrm{d}t`, estimated by
    :math:`\frac1K\sum_k\lVert\partial_x f\,\varepsilon_k\rVert^2` with the Hutchinson probes of the
    divergence (unbiased: the probes have identity covariance), or exactly from the :math:`d`
    Jacobian columns when the divergence is exact. The paper's loss adds
    :math:`\lambda_K\cdot\mathrm{kinetic} + \lambda_J\cdot\mathrm{jacobian}`.
    """

    kinetic: bool = eqx.field(static=True, default=True)
    jacobian: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not (self.kinetic or self.jacobian):
            raise ValueError("RNODE needs kinetic=True or jacobian=True (or both).")

    @property
    def names(self):
        return tuple(n for n, on in (("kinetic", self.kinetic), ("jacobian", self.jacobian)) if on)

    def integrands(self, vector_field, t, x, args, fx, tangent, probes, exact):
        out = {}
        if self.kinetic:
            out["kinetic"] = jnp.sum(fx**2)
        if self.jacobian:
            out["jacobian"] = _frobenius_squared(tangent, x, probes, exact)
        return out


class TayNODE(AbstractIntegralRegulariser):
    r""":math:`\int_0^T\lVert\mathrm{d}^K x/\mathrm{d}t^K\rVert^2\mathrm{d}t` ("Learning
    Differential Equations that are Easy to Solve"), ``order`` = K >= 1.

    The total derivative along :math:`\dot x = f(t, x)` comes from Taylor-mode differentiation
    (:func:`total_derivative`); only the state :math:`x` is regularised, not the log-density. The
    vector field must be built from primitives that ``jax.experimental.jet`` supports (tanh,
    exp, sin, ...).
    """

    order: int = eqx.field(static=True, default=2)

    def __check_init__(self):
        check_int("order", self.order)

    @property
    def names(self):
        return ("taylor",)

    def integrands(self, vector_field, t, x, args, fx, tangent, probes, exact):
        dk = total_derivative(vector_field, t, x, args, self.order)
        return {"taylor": jnp.sum(dk**2)}


def total_derivative(
    vector_field: Callable, t: Float[ArrayLike, ""], x: Float[Array, "..."], args, order: int
) -> Float[Array, "..."]:
    r""":math:`\mathrm{d}^K x/\mathrm{d}t^K` at :math:`(t, x)` along :math:`\dot x = f(t, x)`.

    Recursively, with :math:`x^{(1)} = f(t, x)`: the jet of :math:`s \mapsto f(t + s, x(t + s))`
    through order :math:`k` needs only :math:`x^{(1)}, \dots, x^{(k)}` and its :math:`k`-th term
    is :math:`x^{(k+1)}` (``jet`` uses the derivative convention: terms are derivatives, not
    Taylor coefficients). ``order - 1`` jets in all. For :math:`f = Ax`, :math:`A^K x`.
    """
    check_int("order", order)
    t = jnp.asarray(t, x.dtype)

    def f(s, y):
        return vector_field(s, y, args).astype(y.dtype)

    derivatives = [f(t, x)]
    for k in range(1, order):
        # Time runs with unit speed: its derivatives beyond the first are zero.
        t_series = [jnp.ones_like(t)] + [jnp.zeros_like(t)] * (k - 1)
        _, f_series = jet.jet(f, (t, x), (t_series, derivatives))
        derivatives = [*derivatives, f_series[-1]]
    return derivatives[-1]


def _frobenius_squared(tangent, x, probes, exact):
    if exact:
        d = x.size
        basis = jnp.eye(d, dtype=x.dtype).reshape((d, *x.shape))
        return jnp.sum(jax.vmap(tangent)(basis) ** 2)
    jvps = jax.vmap(tangent)(probes)
    return jnp.mean(jnp.sum(jvps.reshape(probes.shape[0], -1) ** 2, axis=-1))


def _split_regularisers(regulariser):
    """``(solve regulariser, integral regularisers)`` from None, one object or a sequence."""
    items = regulariser if isinstance(regulariser, (tuple, list)) else (regulariser,)
    solve_regs, integral = [], []
    for item in items:
        if item is None:
            continue
        if isinstance(item, AbstractIntegralRegulariser):
            integral.append(item)
        elif isinstance(item, AbstractRegulariser):
            solve_regs.append(item)
        else:
            raise TypeError(
                "regulariser must be None, a regulariser (RNODE, TayNODE, GlobalRegulariser, "
                "LocalRegulariser) or a tuple of them; got "
                f"{type(item).__name__}."
            )
    if len(solve_regs) > 1:
        raise ValueError(
            "regulariser may hold at most one solver-heuristic regulariser "
            f"(GlobalRegulariser or LocalRegulariser); got {len(solve_regs)}."
        )
    names = [n for r in integral for n in r.names]
    if len(names) != len(set(names)):
        raise ValueError(f"regulariser computes the same term twice: {names}.")
    return (solve_regs[0] if solve_regs else None), tuple(integral)


# ---------------------------------------------------------------------------------------------
# The flow


class CNFDensity(eqx.Module):
    r"""What :meth:`CNF.log_prob` returns, one entry per sample.

    ``log_prob`` = ``base_log_prob`` + ``delta_log_prob`` (:math:`\int_0^T\operatorname{tr}
    \partial_x f`), NaN for a sample whose ``result`` is not successful (seen only with
    ``throw=False``). ``latent`` is :math:`z = x(T)`. ``nfe`` counts evaluations of the augmented
    field (each one pass of ``f`` plus the divergence's and regularisers' derivatives).
    ``kinetic``, ``jacobian`` (:class:`RNODE`), ``taylor`` (:class:`TayNODE`),
    ``error_estimate``, ``stiffness_estimate`` and ``probe_time`` (the solver-heuristic
    regularisers) are None unless the regulariser used computes them; ``integrals`` holds every
    integral regulariser's terms by name (those of a user's own
    :class:`AbstractIntegralRegulariser` too).
    """

    log_prob: Float[Array, " n"]
    base_log_prob: Float[Array, " n"]
    delta_log_prob: Float[Array, " n"]
    latent: Float[Array, "n ..."]
    nfe: Int[Array, " n"]
    num_steps: Int[Array, " n"]
    result: RESULTS
    kinetic: Float[Array, " n"] | None = None
    jacobian: Float[Array, " n"] | None = None
    taylor: Float[Array, " n"] | None = None
    error_estimate: Float[Array, " n"] | None = None
    stiffness_estimate: Float[Array, " n"] | None = None
    probe_time: Float[Array, " n"] | None = None
    integrals: dict | None = None


class CNFSample(eqx.Module):
    """What :meth:`CNF.sample` and :meth:`CNF.inverse` return: ``x = x(0)`` from ``latent`` =
    :math:`z = x(T)` by the reverse solve; ``inf`` where a ``result`` is not successful."""

    x: Float[Array, "n ..."]
    latent: Float[Array, "n ..."]
    nfe: Int[Array, " n"]
    num_steps: Int[Array, " n"]
    result: RESULTS


class _DensityField(eqx.Module):
    """:math:`t \\mapsto [f, \\operatorname{tr}\\partial_x f, r_1, \\dots]` for one sample.

    The augmented state is one flat vector ``[x.ravel(), ∫tr, ∫r_1, ...]``: the regularisers'
    seam (:meth:`~jaxsolve.ode.AbstractRegulariser.solve`) handles array states, as a
    :class:`~jaxsolve.ode.NeuralODE` has.
    """

    vector_field: Callable
    trace: Callable = eqx.field(static=True)  # an AbstractDivergence's estimator()
    exact: bool = eqx.field(static=True)
    integral: tuple  # AbstractIntegralRegulariser objects
    event_shape: tuple = eqx.field(static=True)

    def __call__(self, t, state, args):
        d = math.prod(self.event_shape)
        x = state[:d].reshape(self.event_shape)
        user_args, probes = args
        fx, tangent = jax.linearize(lambda y: self.vector_field(t, y, user_args).astype(y.dtype), x)
        rates = [fx.ravel(), jnp.reshape(self.trace(tangent, x, probes), (1,))]
        for reg in self.integral:
            terms = reg.integrands(
                self.vector_field, t, x, user_args, fx, tangent, probes, self.exact
            )
            rates += [jnp.reshape(terms[n], (1,)).astype(x.dtype) for n in reg.names]
        return jnp.concatenate(rates)


class _PrefixNorm(eqx.Module):
    """A controller norm over the first ``size`` entries of the flat state (the integrals of
    the regularisers that follow are not step-controlled)."""

    norm: Callable
    size: int = eqx.field(static=True)

    def __call__(self, y):
        return self.norm(y[: self.size])


def _control_state_only(controller, size):
    if isinstance(controller, dfx.ClipStepSizeController):
        inner = _control_state_only(controller.controller, size)
        return eqx.tree_at(lambda c: c.controller, controller, inner)
    if isinstance(controller, dfx.PIDController):
        return eqx.tree_at(lambda c: c.norm, controller, _PrefixNorm(controller.norm, size))
    return controller


class _ReversedField(eqx.Module):
    """:math:`s \\mapsto -f(T - s, x)`: the flow from :math:`T` back to 0 as a forward solve."""

    vector_field: Callable
    t1: Float[Array, ""]

    def __call__(self, s, x, args):
        return -self.vector_field(self.t1 - s, x, args).astype(x.dtype)


class CNF(eqx.Module):
    r"""A continuous normalising flow :math:`\mathrm{d}x/\mathrm{d}t = f(t, x, \mathrm{args})`
    on :math:`[0, T]` with base :math:`\mathcal N(0, I)` at :math:`T` (FFJORD).

    ``vector_field(t, x, args)`` maps one sample ``x`` (any event shape) to an array of its shape;
    an ``eqx.Module`` whose arrays are the trained parameters (e.g.
    :class:`~jaxsolve.ode.MLPField`). ``t1`` = :math:`T` (may be an array, e.g. trained).
    ``divergence``: :class:`~jaxsolve.ode.ExactDivergence` (default) or
    :class:`~jaxsolve.ode.HutchinsonDivergence` (then :meth:`log_prob` needs ``key``).
    ``solver`` (default Tsit5), ``stepsize_controller`` (default ``PIDController(rtol=1e-5,
    atol=1e-5)``), ``adjoint`` (default ``RecursiveCheckpointAdjoint``), ``dt0`` and
    ``max_steps`` are as in :class:`~jaxsolve.ode.NeuralODE`: every sample is its own adaptive
    solve with its own NFE and result code. ``throw=True`` raises on a failed solve when the
    compiled code runs; ``throw=False`` returns NaN log-densities (``inf`` samples) with the
    codes.
    """

    vector_field: Callable
    t1: Float[Array, ""] | float
    divergence: AbstractDivergence
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController
    adjoint: dfx.AbstractAdjoint
    dt0: float | None
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable,
        t1: Float[ArrayLike, ""] = 1.0,
        divergence: AbstractDivergence | None = None,
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        adjoint: dfx.AbstractAdjoint | None = None,
        *,
        dt0: float | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ):
        if not callable(vector_field):
            raise TypeError(
                f"vector_field must be callable as f(t, x, args); got {type(vector_field)}."
            )
        divergence = ExactDivergence() if divergence is None else divergence
        if not isinstance(divergence, AbstractDivergence):
            raise TypeError(
                "divergence must be an AbstractDivergence (ExactDivergence, "
                f"HutchinsonDivergence); got {type(divergence).__name__}."
            )
        if jnp.ndim(t1) != 0 or jnp.iscomplexobj(t1):
            raise ValueError(f"t1 must be a real scalar (the flow's end time T); got {t1!r}.")
        if is_concrete(t1) and not (math.isfinite(float(t1)) and float(t1) > 0):
            raise ValueError(f"t1 must be positive and finite (the flow's end time T); got {t1!r}.")
        if not isinstance(throw, bool):
            raise TypeError(f"throw must be a bool; got {type(throw).__name__}.")
        self.solver, self.stepsize_controller, self.adjoint = solver_setup(
            solver, stepsize_controller, adjoint, max_steps, dt0, rtol=1e-5, atol=1e-5
        )
        self.vector_field = vector_field
        self.t1 = t1
        self.divergence = divergence
        self.dt0 = dt0
        self.max_steps = max_steps
        self.throw = throw

    def log_prob(
        self,
        x: Float[ArrayLike, "n ..."],
        args=None,
        *,
        key: PRNGKeyArray | None = None,
        regulariser=None,
    ) -> CNFDensity:
        r""":math:`\log p(x)` of each sample ``x[i]`` (shape ``(n, *event_shape)``).

        ``key``: the Hutchinson probes of sample ``i`` come from ``fold_in(key_probes, i)`` and a
        local regulariser's random time from ``fold_in(key_times, i)``, the two keys split from
        ``key`` (so a sample's value does not depend on the batch). ``regulariser``: None, one of
        :class:`RNODE`, :class:`TayNODE`, :class:`~jaxsolve.ode.GlobalRegulariser`,
        :class:`~jaxsolve.ode.LocalRegulariser`, or a tuple of them (at most one of the last
        two); their terms come back in :class:`CNFDensity`, one per sample.
        """
        solve_reg, integral = _split_regularisers(regulariser)
        x = self._check_x(x, "x")
        needs_key = self.divergence.needs_key or (solve_reg is not None and _needs_key(solve_reg))
        if needs_key and key is None:
            raise ValueError(
                "key is needed (Hutchinson probes or a local regulariser's random time): pass key=."
            )
        key_probes, key_times = jax.random.split(key) if key is not None else (None, None)
        n = x.shape[0]
        probes = self.divergence.probes(key_probes, n, x.shape[1:], x.dtype)
        times = per_sample_keys(key_times, n) if key_times is not None else None
        check_field_output(self.vector_field, jnp.zeros((), x.dtype), x[0], args)
        out = _solve_density(self, x, probes, times, args, solve_reg, integral)
        (latent, delta, nfe, num_steps, result, integrals, reg_terms) = out
        base = _standard_normal_log_prob(latent)
        failed = jnp.where(result == RESULTS.successful, 0.0, jnp.nan).astype(x.dtype)
        # Added, not selected, so that a gradient still flows through every sample's value.
        log_prob = maybe_throw(result, base + delta + failed, self.throw)
        return CNFDensity(
            log_prob=log_prob,
            base_log_prob=base,
            delta_log_prob=delta,
            latent=latent,
            nfe=nfe,
            num_steps=num_steps,
            result=result,
            kinetic=integrals.get("kinetic"),
            jacobian=integrals.get("jacobian"),
            taylor=integrals.get("taylor"),
            error_estimate=reg_terms[0],
            stiffness_estimate=reg_terms[1],
            probe_time=reg_terms[2],
            integrals=integrals,
        )

    def inverse(self, latent: Float[ArrayLike, "n ..."], args=None) -> CNFSample:
        """``x(0)`` of each ``latent[i]`` = :math:`x(T)` by the reverse solve."""
        latent = self._check_x(latent, "latent")
        check_field_output(self.vector_field, jnp.zeros((), latent.dtype), latent[0], args)
        x, nfe, num_steps, result = _solve_reverse(self, latent, args)
        x = maybe_throw(result, x, self.throw)
        return CNFSample(x, latent, nfe, num_steps, result)

    def sample(
        self, key: PRNGKeyArray, n: int, event_shape: tuple, args=None, *, dtype=None
    ) -> CNFSample:
        """``n`` samples: :math:`z_i \\sim \\mathcal N(0, I)` from ``fold_in(key, i)``, then the
        reverse solve."""
        check_int("n", n)
        if not isinstance(event_shape, tuple):
            raise TypeError(f"event_shape must be a tuple; got {type(event_shape).__name__}.")
        dtype = as_float(0.0).dtype if dtype is None else dtype
        keys = per_sample_keys(key, n)
        z = jax.vmap(lambda k: jax.random.normal(k, event_shape, dtype))(keys)
        return self.inverse(z, args)

    @staticmethod
    def _check_x(x, name):
        if jnp.iscomplexobj(x):
            raise TypeError(f"{name} must be real; got dtype {jnp.result_type(x)}.")
        x = as_float(x)
        if x.ndim < 2:
            raise ValueError(
                f"{name} must have a batch axis, shape (n, *event_shape); got shape {x.shape}."
            )
        return x


def _needs_key(solve_reg):
    return isinstance(solve_reg, LocalRegulariser)


def _standard_normal_log_prob(z):
    d = math.prod(z.shape[1:])
    sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
    return -0.5 * sq - 0.5 * d * jnp.log(2.0 * jnp.pi).astype(z.dtype)


def _checked_t1(t1, dtype):
    """``t1`` as an array; a traced one is checked (positive, finite) when the code runs."""
    t1 = jnp.asarray(t1, dtype)
    return eqx.error_if(t1, ~(jnp.isfinite(t1) & (t1 > 0)), "t1 must be positive and finite.")


def _setup(cnf):
    return dict(
        solver=cnf.solver,
        adjoint=cnf.adjoint,
        dt0=cnf.dt0,
        max_steps=cnf.max_steps,
    )


@eqx.filter_jit
def _solve_density(cnf, x, probes, times, args, solve_reg, integral):
    """Every sample's augmented solve ``((x, ∫tr), {∫r_j})``, handed to ``solve_reg``."""
    dtype = x.dtype
    t1 = _checked_t1(cnf.t1, dtype)
    ts = jnp.stack([jnp.zeros((), dtype), t1])
    event_shape = x.shape[1:]
    d = math.prod(event_shape)
    field = _DensityField(
        cnf.vector_field,
        cnf.divergence.estimator(),
        not cnf.divergence.needs_key,
        integral,
        event_shape,
    )
    # The integrals ride along outside step control: only (x, ∫tr) decides where the solver steps.
    controller = _control_state_only(cnf.stepsize_controller, d + 1)
    node = NeuralODE(
        field,
        cnf.solver,
        controller,
        cnf.adjoint,
        dt0=cnf.dt0,
        max_steps=cnf.max_steps,
        throw=False,
    )
    regulariser = as_regulariser(solve_reg)
    names = [n for r in integral for n in r.names]

    def solve_one(x_i, probes_i, key_i):
        state0 = jnp.concatenate([x_i.ravel(), jnp.zeros((1 + len(names),), dtype)])
        solved = regulariser.solve(node, ts, state0, (args, probes_i), key_i)
        raw = solved.raw
        end = raw.ys[-1]
        integrals = {n: end[d + 1 + j] for j, n in enumerate(names)}
        # A probe step may fail after a successful solve: the terms follow the combined outcome.
        estimates = nan_if(
            (solved.error_estimate, solved.stiffness_estimate),
            solved.result != RESULTS.successful,
        )
        terms = (*estimates, solved.probe_time)
        z = end[:d].reshape(event_shape)
        return z, end[d], raw.nfe, raw.num_steps, solved.result, integrals, terms

    if times is None:
        return jax.vmap(lambda a, b: solve_one(a, b, None))(x, probes)
    return jax.vmap(solve_one)(x, probes, times)


@eqx.filter_jit
def _solve_reverse(cnf, latent, args):
    dtype = latent.dtype
    t1 = _checked_t1(cnf.t1, dtype)
    ss = jnp.stack([jnp.zeros((), dtype), t1])
    field = _ReversedField(cnf.vector_field, t1)

    def solve_one(z):
        raw = integrate(
            field, ss, z, args, stepsize_controller=cnf.stepsize_controller, **_setup(cnf)
        )
        return raw.ys[-1], raw.nfe, raw.num_steps, raw.result

    return jax.vmap(solve_one)(latent)
