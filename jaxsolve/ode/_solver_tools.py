r"""What a diffrax solver knows internally, made visible: stage counts, error norms, stiffness.

An adaptive Runge–Kutta step over :math:`[t_n, t_n + h_n]` computes stages
:math:`k_i = h_n f(t_n + c_i h_n, Y_i)`, :math:`Y_i = y_n + \sum_{j<i} a_{ij} k_j`, the solution
:math:`y_{n+1} = y_n + \sum_i b_i k_i` and the embedded error estimate
:math:`\tilde e_n = \sum_i \beta_i k_i`. Two internal heuristics drive the solver's cost:

* the **scaled local error** :math:`E_n = \lVert \tilde e_n / (\mathrm{atol} + \mathrm{rtol}
  \max(|y_n|, |y_{n+1}|)) \rVert` that the PID controller compares against 1 to accept a step
  and to choose the next one;
* the **stiffness estimate** of Hairer & Wanner (Solving ODEs II, §IV.2) from the last two
  stages, :math:`h_n|\hat\lambda_n| = \lVert k_s - k_{s-1}\rVert / \lVert Y_s - Y_{s-1}\rVert`,
  the step size times the dominant eigenvalue magnitude of :math:`\partial f/\partial y` along the
  step — the quantity that is compared against the stability region. For Tsit5, Dopri5 and Dopri8
  both stages sit at :math:`c = 1`, so the quotient is free of :math:`\partial f/\partial t`.

:class:`InstrumentedSolver` wraps any diffrax solver: it pre-computes the first FSAL stage once
at ``init`` (so every attempted step costs exactly the same number of evaluations and the NFE is
known exactly from the step counts), and optionally adds :math:`E_n|h_n|` and :math:`h_n|\hat
\lambda_n|` of each *accepted* step to an extra state component (and can keep a uniformly random
accepted step there). Because they live in the state, they are saved like ``ys`` and
differentiate through any discretise-then-optimise adjoint.

**Non-finite states end the solve.** diffrax answers a non-finite candidate step by rejecting it
and shrinking the step (right when a too-large step left the domain of the field, e.g. a
``sqrt(y)`` stepped below zero). When the state itself, or the field at the state
:math:`f(t_n, y_n)`, is not finite, no step size helps: diffrax would reject until ``max_steps``
(4096 attempts of a NaN field, reported as "max steps"). :class:`InstrumentedSolver` marks such
a step and :func:`stop_on_nonfinite` wraps the step-size controller so that it ends the solve
there with diffrax's ``nonfinite`` result.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._core import exact_tensordot, is_concrete, safe_divide, safe_sqrt


def safe_rms(x):
    """Root-mean-square of all entries, with a finite (zero) gradient at zero."""
    leaves = jtu.tree_leaves(x)
    total = sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves)
    n = sum(leaf.size for leaf in leaves)
    return safe_sqrt(total / n)


def explicit_tableau(solver):
    """The explicit Butcher tableau of ``solver``, or None when it has none (Euler, implicit...)."""
    tableau = getattr(solver, "tableau", None)
    if isinstance(tableau, dfx.ButcherTableau) and not tableau.implicit:
        return tableau
    return None


def is_fsal_erk(solver) -> bool:
    tableau = explicit_tableau(solver)
    return tableau is not None and tableau.fsal


def evaluations_per_step(solver) -> int | None:
    """Vector-field evaluations per attempted step (accepted or rejected), or None if unknown.

    Explicit Runge–Kutta: the number of stages, less one for first-same-as-last methods whose first
    stage is the previous step's last (:class:`InstrumentedSolver` pre-computes it at ``init``, so
    this holds for the first step and after rejections too). Euler: one. Implicit methods spend a
    data-dependent number of evaluations in their root finds, so their count is unknown (None).
    """
    tableau = explicit_tableau(solver)
    if tableau is not None:
        return tableau.num_stages - (1 if tableau.fsal else 0)
    if type(solver) is dfx.Euler:
        return 1
    return None


def stages_per_step(solver) -> int | None:
    """Stages of an SDE solver per attempted step (each evaluates the drift and the diffusion
    once), None when unknown. The Runge-Kutta methods that converge for SDEs (Heun, Midpoint,
    Ralston) are not first-same-as-last, so a tableau costs all its stages."""
    tableau = explicit_tableau(solver)
    if tableau is not None:
        return tableau.num_stages
    if type(solver) in (dfx.Euler, dfx.ItoMilstein, dfx.StratonovichMilstein):
        return 1
    if type(solver) is dfx.EulerHeun:
        return 2
    srk_tableau = getattr(solver, "tableau", None)
    if isinstance(solver, dfx.AbstractSRK) and srk_tableau is not None:
        return len(srk_tableau.c) + 1
    return None


def require_error_estimate(solver, who: str) -> None:
    """``TypeError`` unless ``solver`` has an embedded error estimate (``who`` needs it)."""
    if not isinstance(solver, dfx.AbstractAdaptiveSolver):
        raise TypeError(
            f"{who} needs a solver with an embedded error estimate (a diffrax "
            f"AbstractAdaptiveSolver such as Tsit5); got {type(solver).__name__}."
        )


def require_stiffness_estimate(solver) -> None:
    """``TypeError`` unless ``solver`` is an explicit Runge-Kutta method with two stages or
    more (the stiffness estimate compares its last two)."""
    if explicit_tableau(solver) is None or solver.tableau.num_stages < 2:
        raise TypeError(
            "the stiffness estimate needs an explicit Runge-Kutta solver with at least two stages "
            f"(Tsit5, Dopri5, Dopri8, Bosh3, Heun, ...); got {type(solver).__name__}."
        )


def all_finite(tree):
    """True when every floating entry of ``tree`` is finite (a scalar boolean array)."""
    leaves = [leaf for leaf in jtu.tree_leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def first_stage_is_the_field_at_the_state(solver) -> bool:
    """True when the solver's first stage is :math:`k_1 = h f(t_n, y_n)`, exposed as
    ``dense_info["k"][0]``: every explicit Runge-Kutta tableau, and implicit ones whose first
    stage is explicit (ESDIRK methods such as Kvaerno3/4/5)."""
    tableau = getattr(solver, "tableau", None)
    if not isinstance(tableau, dfx.ButcherTableau) or tableau.c1 != 0:
        return False
    return tableau.a_diagonal is None or tableau.a_diagonal[0] == 0


def _inner_controller(controller):
    while isinstance(controller, dfx.ClipStepSizeController):
        controller = controller.controller
    return controller


def check_tolerances(controller):
    """``controller`` with the tolerances of its PID controller checked: ``rtol`` and ``atol``
    finite and non-negative, not both zero (``ValueError`` now when concrete; traced ones are
    checked when the compiled code runs). A negative tolerance makes the scaled error negative,
    so every step is accepted and the solve reports success at whatever accuracy; zero for both
    divides by zero."""
    if isinstance(controller, dfx.ClipStepSizeController):
        inner = check_tolerances(controller.controller)
        return eqx.tree_at(lambda c: c.controller, controller, inner)
    if not isinstance(controller, dfx.PIDController):
        return controller
    rtol, atol = controller.rtol, controller.atol
    if is_concrete(rtol) and is_concrete(atol):
        r, a = np.asarray(rtol), np.asarray(atol)
        for name, value in (("rtol", r), ("atol", a)):
            if value.ndim != 0 or not np.isfinite(value) or value < 0:
                raise ValueError(
                    f"stepsize_controller.{name} must be a finite non-negative scalar; got "
                    f"{value!r}."
                )
        if r == 0 and a == 0:
            raise ValueError("stepsize_controller: rtol and atol must not both be zero.")
        return controller
    r, a = jnp.asarray(rtol), jnp.asarray(atol)
    bad = ~(jnp.isfinite(r) & jnp.isfinite(a) & (r >= 0) & (a >= 0) & (r + a > 0))
    message = "stepsize_controller: rtol and atol must be finite, non-negative, not both zero."
    rtol = eqx.error_if(r, bad, message)
    return eqx.tree_at(lambda c: c.rtol, controller, rtol)


def controller_init_evaluations(controller, dt0) -> int:
    """Evaluations the step-size controller spends choosing the first step.

    A PID controller without ``dt0`` runs the initial-step heuristic of Hairer, Nørsett & Wanner
    (Solving ODEs I, §II.4), which evaluates :math:`f(t_0, y_0)` and :math:`f(t_0 + h_0, y_0 + h_0
    f_0)`; with ``dt0`` given, or any other controller, nothing is evaluated.
    """
    if dt0 is None and isinstance(_inner_controller(controller), dfx.PIDController):
        return 2
    return 0


def error_norm_fn(controller) -> Callable:
    r"""``(y0, y1, y_error) -> E``: the scaled error norm the controller compares against 1.

    PID (also inside a ``ClipStepSizeController``): :math:`\lVert \tilde e / (\mathrm{atol} +
    \mathrm{rtol}\max(|y_0|, |y_1|))\rVert` with the controller's own norm, exactly diffrax's
    acceptance test. Constant step sizes have no tolerances: the plain RMS of :math:`\tilde e`.
    """
    inner = _inner_controller(controller)
    if isinstance(inner, dfx.PIDController):
        return _ScaledErrorNorm(inner.rtol, inner.atol, inner.norm)
    if isinstance(inner, (dfx.ConstantStepSize, dfx.StepTo)):
        return _RawErrorNorm()
    raise TypeError(
        "stepsize_controller must be a diffrax PIDController, ConstantStepSize or StepTo (or a "
        f"ClipStepSizeController around one) to define the error regulariser; got "
        f"{type(controller).__name__}."
    )


class _ScaledErrorNorm(eqx.Module):
    rtol: jax.Array | float
    atol: jax.Array | float
    norm: Callable

    def __call__(self, y0, y1, y_error):
        def scale(a, b, e):
            # As diffrax: a NaN candidate falls back to y0 so the scale stays finite.
            b = jnp.where(jnp.isnan(b).any(), a, b)
            return e / (self.atol + jnp.maximum(jnp.abs(a), jnp.abs(b)) * self.rtol)

        # diffrax's default norm (optimistix.rms_norm) has a zero gradient at zero error, which
        # matters: an exactly integrated field has exactly zero error.
        return self.norm(jtu.tree_map(scale, y0, y1, y_error))


class _RawErrorNorm(eqx.Module):
    def __call__(self, y0, y1, y_error):
        del y0, y1
        return safe_rms(y_error)


def stiffness_estimate(tableau, ks):
    r""":math:`h|\hat\lambda| = \lVert k_s - k_{s-1}\rVert / \lVert Y_s - Y_{s-1}\rVert` of one step.

    ``ks`` holds the stage increments :math:`k_i = h f(Y_i)` along a leading axis, as in diffrax's
    ``dense_info["k"]``; the difference of the stage values comes from the tableau. Zero when the
    two stage derivatives coincide (a field that does not depend on ``y``).
    """
    s = tableau.num_stages
    dtype = jtu.tree_leaves(ks)[0].dtype
    # Y_s - Y_{s-1} = sum_j (a_{s,j} - a_{s-1,j}) k_j, formed from the stages directly: rebuilding
    # both from y0 and subtracting would cancel y0 and lose digits.
    rows = np.zeros((2, s))
    for r, i in enumerate((s - 1, s - 2)):
        if i > 0:
            rows[r, :i] = np.asarray(tableau.a_lower[i - 1], dtype=float)
    weights = jnp.asarray(rows[0] - rows[1], dtype=dtype)
    dy = jtu.tree_map(lambda k: exact_tensordot(weights, k, axes=1), ks)
    dk = jtu.tree_map(lambda k: k[s - 1] - k[s - 2], ks)
    num, den = safe_rms(dk), safe_rms(dy)
    return safe_divide(num, den, jnp.zeros_like(num))


class _FirstComponentNorm(eqx.Module):
    """A controller norm that only looks at ``state[0]`` (the extra components are ignored)."""

    norm: Callable

    def __call__(self, tree):
        return self.norm(tree[0])


def restrict_norm_to_state(controller):
    """Make the controller measure only ``state[0]``, so step control is unchanged by extras."""
    if isinstance(controller, dfx.ClipStepSizeController):
        return eqx.tree_at(
            lambda c: c.controller, controller, restrict_norm_to_state(controller.controller)
        )
    if isinstance(controller, dfx.PIDController):
        return eqx.tree_at(lambda c: c.norm, controller, _FirstComponentNorm(controller.norm))
    return controller


class AugmentedField(eqx.Module):
    """``f(t, (y, extras), args) = (f(t, y, args), 0)``: the extras are constant within a step."""

    vector_field: Callable

    def __call__(self, t, state, args):
        y, extras = state
        return self.vector_field(t, y, args), jtu.tree_map(jnp.zeros_like, extras)


def initial_extras(y0, *, n_sums: int, reservoir: bool):
    """The extra state component: ``sums`` (the accumulated heuristics) and the reservoir."""
    dtype = jnp.result_type(*jtu.tree_leaves(y0))
    extras = {}
    if n_sums:
        extras["sums"] = jnp.zeros((n_sums,), dtype)
    if reservoir:
        extras["pick_t"] = jnp.zeros((), dtype)
        extras["pick_y"] = jtu.tree_map(jnp.zeros_like, y0)
        # A float counter: every leaf of the state goes through the Runge-Kutta arithmetic.
        extras["count"] = jnp.zeros((), dtype)
    return extras


class InstrumentedSolver(dfx.AbstractWrappedSolver):
    r"""Wraps a diffrax solver: exact NFE accounting, and per-step information kept in the state.

    Without extras the state is the user's ``y``. With them it is ``(y, extras)`` (use
    :class:`AugmentedField` as the term and :func:`restrict_norm_to_state` on the controller, so
    that step control is unchanged). Each accepted step then

    * adds :math:`E_n|h_n|` (when ``error_norm`` is given) and :math:`h_n|\hat\lambda_n|` (when
      ``stiffness``), in that order, to ``extras["sums"]``;
    * with a ``reservoir_key``, keeps the start :math:`(t_{n-1}, y_{n-1})` of the ``n``-th accepted
      step with probability :math:`1/n` (reservoir sampling, uniform ``u`` from
      ``fold_in(reservoir_key, n)``), so that at the end ``extras["pick_t"], extras["pick_y"]`` is
      a uniformly random accepted step's starting point, in O(1) memory.

    A rejected step's state is discarded by diffrax, so only accepted steps count.
    """

    solver: dfx.AbstractSolver
    error_norm: Callable | None = None
    stiffness: bool = eqx.field(static=True, default=False)
    reservoir_key: jax.Array | None = None

    @property
    def has_extras(self) -> bool:
        return self.error_norm is not None or self.stiffness or self.reservoir_key is not None

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def root_finder(self):
        # diffrax forwards isinstance checks through a wrapped solver, so it treats this wrapper
        # of an implicit solver as implicit and hands the controller's tolerances to
        # `solver.root_finder` (with eqx.tree_at, which follows this property into the field).
        return self.solver.root_finder

    @property
    def scan_kind(self):
        # The same forwarding: DirectAdjoint and ForwardMode set a Runge-Kutta solver's
        # scan_kind (to loop without a custom_vjp) with eqx.tree_at through this property.
        return self.solver.scan_kind

    @property
    def interpolation_cls(self):  # pyright: ignore
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        state = self.solver.init(terms, t0, t1, y0, args)
        if is_fsal_erk(self.solver) and state is not None:
            # diffrax evaluates f(t0, y0) inside the first step, and again for every rejected
            # first attempt; computing it once here makes every attempt cost s - 1 evaluations.
            first_step, _ = state
            f0 = self.solver.func(terms, t0, y0, args)
            state = (jnp.zeros_like(first_step), f0)
        return state

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        y1, y_error, dense_info, solver_state, result = self.solver.step(
            terms, t0, t1, y0, args, solver_state, made_jump
        )
        if y_error is not None and first_stage_is_the_field_at_the_state(self.solver):
            # f(t0, y0) is not finite: every step size gives a non-finite candidate, so rejecting
            # and shrinking cannot help. A finite (zero) error estimate next to a non-finite
            # candidate is the mark StopOnNonFinite reads to end the solve here.
            first = jtu.tree_map(lambda k: k[0], dense_info["k"])
            stuck = all_finite(y0) & ~all_finite(first)
            y_error = jtu.tree_map(lambda e: jnp.where(stuck, jnp.zeros_like(e), e), y_error)
            y1 = jtu.tree_map(lambda y: jnp.where(stuck, jnp.full_like(y, jnp.nan), y), y1)
        if not self.has_extras:
            return y1, y_error, dense_info, solver_state, result
        (y0_main, _), (y1_main, extras) = y0, y1
        extras = dict(extras)
        if "sums" in extras:
            h = jnp.abs(t1 - t0)
            increments = []
            if self.error_norm is not None:
                increments.append(self.error_norm(y0_main, y1_main, y_error[0]) * h)
            if self.stiffness:
                increments.append(stiffness_estimate(self.solver.tableau, dense_info["k"][0]))
            sums = extras["sums"]
            extras["sums"] = sums + jnp.stack(increments).astype(sums.dtype)
        if "count" in extras:
            n = extras["count"] + 1
            index = jnp.asarray(n, jnp.int32)
            u = jax.random.uniform(jax.random.fold_in(self.reservoir_key, index), (), n.dtype)
            take = u * n < 1
            extras["pick_t"] = jnp.where(take, t0, extras["pick_t"]).astype(n.dtype)
            extras["pick_y"] = jtu.tree_map(
                lambda new, old: jnp.where(take, new, old), y0_main, extras["pick_y"]
            )
            extras["count"] = n
        return (y1_main, extras), y_error, dense_info, solver_state, result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


class StopOnNonFinite(dfx.AbstractStepSizeController):
    r"""Wraps a step-size controller: a step that no step size can make finite ends the solve.

    That is a step from a non-finite state; a non-finite candidate whose error estimate is finite
    (:class:`InstrumentedSolver`'s mark for a non-finite :math:`f(t_n, y_n)`, or else an overflow
    of finite stages); or any non-finite candidate of a controller that cannot shrink the step
    (constant steps, ``StepTo``) or of a solver without an error estimate. Such a step is
    rejected and the result becomes diffrax's ``nonfinite``, so the solve stops with its last
    finite state. Any other non-finite candidate (a finite state whose step went too far) is left
    to the adaptive controller, which rejects it and shrinks the step.

    A step that no longer advances time (:math:`t_n + h = t_n` in floating point) ends the solve
    with ``dt_min_reached``: it happens when the field is non-finite just beyond :math:`t_n`
    (``where(t > 1, nan, ...)``), and each further attempt would repeat it until ``max_steps``.
    """

    controller: dfx.AbstractStepSizeController

    def wrap(self, direction):
        return type(self)(self.controller.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        return self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)

    def adapt_step_size(
        self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state
    ):
        keep, next_t0, next_t1, made_jump, controller_state, result = (
            self.controller.adapt_step_size(
                t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state
            )
        )
        adaptive = isinstance(self.controller, dfx.AbstractAdaptiveStepSizeController)
        if y_error is None or not adaptive:
            cannot_shrink = jnp.array(True)
        else:
            cannot_shrink = all_finite(y_error)
        hopeless = ~all_finite(y0) | (~all_finite(y1_candidate) & cannot_shrink)
        keep = keep & ~hopeless
        next_t0 = jnp.where(hopeless, t0, next_t0)
        next_t1 = jnp.where(hopeless, t1, next_t1)
        result = dfx.RESULTS.where(
            hopeless & (result == dfx.RESULTS.successful), dfx.RESULTS.nonfinite, result
        )
        stalled = ~(t1 > t0)
        result = dfx.RESULTS.where(
            stalled & (result == dfx.RESULTS.successful), dfx.RESULTS.dt_min_reached, result
        )
        return keep, next_t0, next_t1, made_jump, controller_state, result


class _AdaptiveStopOnNonFinite(StopOnNonFinite, dfx.AbstractAdaptiveStepSizeController):
    """:class:`StopOnNonFinite` around an adaptive controller, still seen by diffrax as adaptive
    (it hands the controller's tolerances on to an implicit solver's root find)."""

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm


def stop_on_nonfinite(controller) -> StopOnNonFinite:
    """``controller`` wrapped in :class:`StopOnNonFinite` (keeping it adaptive if it was)."""
    if isinstance(controller, dfx.AbstractAdaptiveStepSizeController):
        return _AdaptiveStopOnNonFinite(controller)
    return StopOnNonFinite(controller)
