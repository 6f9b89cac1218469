r"""The one driver of the ODE pillar: a diffrax solve with exact statistics and result codes.

Both :class:`~jaxsolve.ode.NeuralODE` and :func:`~jaxsolve.ode.log_likelihood` integrate through
:func:`integrate`. It wraps the solver in :class:`~._solver_tools.InstrumentedSolver` (exact NFE,
and optionally the per-step error/stiffness sums of the global regulariser in an extra state
component), calls :func:`diffrax.diffeqsolve` with ``throw=False`` and maps diffrax's outcome to
:data:`jaxsolve.RESULTS`.

A state (or a value of the vector field at the state) that is not finite ends the solve at that
step with ``RESULTS.nonfinite`` (see :func:`~._solver_tools.stop_on_nonfinite`): diffrax alone
would reject and shrink until ``max_steps``. After any failed solve, saved times the solve did
not reach hold ``inf`` (diffrax's fill value), so ``ys`` is never finite where it is not data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from .._core import RESULTS, check_int, is_concrete
from ._solver_tools import (
    AugmentedField,
    InstrumentedSolver,
    check_tolerances,
    controller_init_evaluations,
    error_norm_fn,
    evaluations_per_step,
    explicit_tableau,
    initial_extras,
    require_error_estimate,
    require_stiffness_estimate,
    restrict_norm_to_state,
    stop_on_nonfinite,
)

# Adjoints that differentiate the discrete solver itself ("discretise-then-optimise"): the sums in
# the extra state component are ordinary outputs of the computation for them. A continuous adjoint
# (BacksolveAdjoint) would try to solve an adjoint ODE for a quantity that is not an ODE solution.
DISCRETE_ADJOINTS = (dfx.RecursiveCheckpointAdjoint, dfx.DirectAdjoint, dfx.ForwardMode)
# The adjoints under which jax.jvp runs through a solve (diffrax's classes, so a tuple here rather
# than a method on them): a failed solve marks its tangents, not its cotangents, as NaN.
FORWARD_MODE_ADJOINTS = (dfx.DirectAdjoint, dfx.ForwardMode)


class RawSolve(NamedTuple):
    ys: object  # saved states at ts
    sums: jnp.ndarray | None  # accumulated heuristics at t1, or None
    pick: tuple | None  # (t, y) at the start of a uniformly random accepted step, or None
    num_steps: jnp.ndarray
    num_accepted_steps: jnp.ndarray
    num_rejected_steps: jnp.ndarray
    nfe: jnp.ndarray
    result: RESULTS


def map_result(diffrax_result, ys) -> RESULTS:
    """diffrax's outcome as a jaxsolve code; a non-finite state is flagged even on "success"."""
    D = dfx.RESULTS
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(y)) for y in jtu.tree_leaves(ys)]))
    code = RESULTS.where(finite, RESULTS.successful, RESULTS.nonfinite)
    table = [
        (("max_steps_reached", "max_steps_rejected"), RESULTS.max_steps_reached),
        (("dt_min_reached",), RESULTS.step_size_too_small),
        (("nonfinite", "nonfinite_input"), RESULTS.nonfinite),
        (("singular", "breakdown", "stagnation", "conlim"), RESULTS.linear_solve_failed),
        (
            ("nonlinear_max_steps_reached", "nonlinear_divergence", "internal_error"),
            RESULTS.solver_step_failed,
        ),
    ]
    for names, ours in table:
        hit = jnp.zeros((), bool)
        for name in names:
            hit = hit | (diffrax_result == getattr(D, name))
        code = RESULTS.where(hit, ours, code)
    return code


def check_ts(ts):
    """``ts`` must be a 1-D finite non-decreasing array of at least two times, ts[-1] > ts[0].

    Concrete ``ts`` are checked now; traced ones when the compiled code runs (an error, not a
    result code: a wrong grid is a wrong argument, not a failed solve).
    """
    ts = jnp.asarray(ts)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 times; got shape {ts.shape}.")
    if not jnp.issubdtype(ts.dtype, jnp.floating):
        raise TypeError(f"ts must be a floating array; got dtype {ts.dtype}.")
    if is_concrete(ts):
        a = np.asarray(ts)
        if not np.all(np.isfinite(a)):
            raise ValueError(f"ts must be finite; got {a[~np.isfinite(a)][:3]} among its entries.")
        if np.any(np.diff(a) < 0):
            raise ValueError("ts must be non-decreasing, with ts[-1] > ts[0].")
        if not a[-1] > a[0]:
            raise ValueError(f"ts[-1] must be larger than ts[0]; got {a[[0, -1]]}.")
        return ts
    bad = ~jnp.all(jnp.isfinite(ts)) | jnp.any(jnp.diff(ts) < 0) | ~(ts[-1] > ts[0])
    return eqx.error_if(ts, bad, "ts must be finite and non-decreasing, with ts[-1] > ts[0].")


def check_field_output(vector_field, t0, y0, args, *, name="vector_field"):
    """``vector_field(t, y, args)`` must return y's structure, shapes and (floating) kind: a
    mismatch otherwise fails deep inside the Runge-Kutta arithmetic or broadcasts silently."""
    expected = jax.eval_shape(lambda y: y, y0)
    describe = lambda tree: jtu.tree_map(lambda a: f"{a.dtype}{list(a.shape)}", tree)
    try:
        out = eqx.filter_eval_shape(vector_field, t0, y0, args)
    except Exception as error:
        raise ValueError(
            f"{name}(t, y, args) fails on the initial state y0 {describe(expected)}: {error}"
        ) from error
    same = jtu.tree_structure(out) == jtu.tree_structure(expected) and all(
        hasattr(o, "shape") and o.shape == e.shape and jnp.issubdtype(o.dtype, jnp.inexact)
        for o, e in zip(jtu.tree_leaves(out), jtu.tree_leaves(expected), strict=True)
    )
    if not same:
        raise ValueError(
            f"{name}(t, y, args) must return the state's shape {describe(expected)}; got "
            f"{describe(out) if all(hasattr(o, 'shape') for o in jtu.tree_leaves(out)) else out}."
        )


def solver_setup(solver, stepsize_controller, adjoint, max_steps, dt0, *, rtol, atol):
    """``(solver, stepsize_controller, adjoint)`` with defaults for those that are None (Tsit5,
    a PID controller at ``rtol`` and ``atol``, backpropagation through the solver by recursive
    checkpointing), checked together with ``max_steps`` and ``dt0``."""
    solver = dfx.Tsit5() if solver is None else solver
    if stepsize_controller is None:
        stepsize_controller = dfx.PIDController(rtol=rtol, atol=atol)
    adjoint = dfx.RecursiveCheckpointAdjoint() if adjoint is None else adjoint
    if not isinstance(solver, dfx.AbstractSolver):
        raise TypeError(f"solver must be a diffrax solver; got {type(solver).__name__}.")
    if not isinstance(stepsize_controller, dfx.AbstractStepSizeController):
        raise TypeError(
            "stepsize_controller must be a diffrax step-size controller; got "
            f"{type(stepsize_controller).__name__}."
        )
    if not isinstance(adjoint, dfx.AbstractAdjoint):
        raise TypeError(f"adjoint must be a diffrax adjoint; got {type(adjoint).__name__}.")
    check_int("max_steps", max_steps)
    stepsize_controller = check_tolerances(stepsize_controller)
    if dt0 is not None and is_concrete(dt0):
        # A NaN first step would make every time NaN; a negative one is diffrax's terse
        # "(t1 - t0) * dt0 >= 0".
        a = np.asarray(dt0)
        if a.ndim != 0 or not (np.isfinite(a) and a > 0):
            raise ValueError(f"dt0 must be a positive finite scalar (the first step); got {dt0!r}.")
    if dt0 is None and isinstance(stepsize_controller, dfx.ConstantStepSize):
        raise ValueError("dt0 must be given with a ConstantStepSize controller; got None.")
    return solver, stepsize_controller, adjoint


def integrate(
    vector_field: Callable,
    ts,
    y0,
    args,
    *,
    solver,
    stepsize_controller,
    adjoint,
    dt0,
    max_steps: int,
    error: bool = False,
    stiffness: bool = False,
    reservoir_key=None,
) -> RawSolve:
    """Solve ``dy/dt = vector_field(t, y, args)`` from ``ts[0]`` to ``ts[-1]``, saving at ``ts``.

    With ``error``/``stiffness`` the global sums :math:`\\sum_n E_n|h_n|` and
    :math:`\\sum_n h_n|\\hat\\lambda_n|` over accepted steps are returned in ``sums`` (in that
    order, those requested). With ``reservoir_key``, ``pick`` is the starting point ``(t, y)`` of a
    uniformly random accepted step (reservoir sampling in the state). NFE counts every vector-field
    evaluation: the controller's initial-step heuristic (PID without ``dt0``: two), the
    pre-computed first stage, and every attempted step; it is -1 for solvers whose count is data
    dependent (implicit methods).
    """
    _check_instrumentation(solver, adjoint, error, stiffness, reservoir_key)
    stepsize_controller = check_tolerances(stepsize_controller)
    t0, t1 = ts[0], ts[-1]
    check_field_output(vector_field, t0, y0, args)
    init_evaluations = controller_init_evaluations(stepsize_controller, dt0)
    if init_evaluations:
        dt0 = _initial_step(vector_field, solver, stepsize_controller, t0, t1, y0, args)
    wrapped = InstrumentedSolver(
        solver,
        error_norm_fn(stepsize_controller) if error else None,
        stiffness=stiffness,
        reservoir_key=reservoir_key,
    )
    gathers = wrapped.has_extras
    if gathers:
        extras = initial_extras(
            y0, n_sums=int(error) + int(stiffness), reservoir=reservoir_key is not None
        )
        term, state0, controller, saveat = _augmented_problem(
            vector_field, ts, y0, extras, stepsize_controller
        )
    else:
        term, state0, controller = dfx.ODETerm(vector_field), y0, stepsize_controller
        saveat = dfx.SaveAt(ts=ts)
    sol = dfx.diffeqsolve(
        term,
        wrapped,
        t0,
        t1,
        dt0,
        state0,
        args,
        saveat=saveat,
        stepsize_controller=stop_on_nonfinite(controller),
        adjoint=adjoint,
        max_steps=max_steps,
        throw=False,
    )
    ys, sums, pick = _unpack_saved(sol.ys, gathers)
    # The value at ts[0] = t0 is y0 itself (diffrax interpolates it from the first accepted step:
    # the same numbers after a successful first step, but inf when the first step failed).
    ys = jtu.tree_map(lambda saved, first: saved.at[0].set(first), ys, y0)
    num_steps = jnp.asarray(sol.stats["num_steps"], jnp.int32)
    result = map_result(sol.result, ys)
    inputs = (vector_field, closed_over_arrays(vector_field, t0, y0, args), y0, args)
    ys, sums, pick = mark_failed(result, ys, sums, pick, inputs, adjoint)
    return RawSolve(
        ys=ys,
        sums=sums,
        pick=pick,
        num_steps=num_steps,
        num_accepted_steps=jnp.asarray(sol.stats["num_accepted_steps"], jnp.int32),
        num_rejected_steps=jnp.asarray(sol.stats["num_rejected_steps"], jnp.int32),
        nfe=count_evaluations(solver, init_evaluations, num_steps),
        result=result,
    )


def mark_failed(result: RESULTS, ys, sums, pick, inputs, adjoint):
    """``(ys, sums, pick)`` of a solve, marked by its outcome: after a failure the gathered
    ``sums`` and ``pick`` (taken from the last accepted step: plausible numbers) are NaN, the
    values of ``ys`` stay (the states reached, ``inf`` after), and every derivative through them
    is NaN (:func:`nan_derivative_if` on the solve's ``inputs``)."""
    failed = result != RESULTS.successful
    sums = None if sums is None else nan_if(sums, failed)
    pick_t, pick_y = (None, None) if pick is None else nan_if(pick, failed)
    forward = isinstance(adjoint, FORWARD_MODE_ADJOINTS)
    ys, sums, pick_y = nan_derivative_if((ys, sums, pick_y), failed, inputs, forward=forward)
    if pick is None:
        return ys, sums, None
    # The probe time is where the step starts, a choice of the solver: not differentiated (a
    # Brownian path cannot be evaluated at a differentiated time).
    return ys, sums, (jax.lax.stop_gradient(pick_t), pick_y)


def _check_instrumentation(solver, adjoint, error, stiffness, reservoir_key):
    """What each gathered quantity needs of the solver and the adjoint (``TypeError``)."""
    if error:
        require_error_estimate(solver, "the error regulariser")
    if stiffness:
        require_stiffness_estimate(solver)
    gathers = error or stiffness or reservoir_key is not None
    if gathers and not isinstance(adjoint, DISCRETE_ADJOINTS):
        raise TypeError(
            "quantities gathered over the solver's own steps (the global regulariser's sums, the "
            "biased local probe point) need a discretise-then-optimise adjoint "
            "(RecursiveCheckpointAdjoint, DirectAdjoint or ForwardMode); got "
            f"{type(adjoint).__name__}. LocalRegulariser('unbiased') works with any adjoint."
        )


def _initial_step(vector_field, solver, stepsize_controller, t0, t1, y0, args):
    """The controller's first step from the initial-step heuristic, run on the bare field.

    diffrax wraps every term (to normalise the direction of time) before its controller picks
    dt0, and its initial-step heuristic only runs on a bare ODETerm: inside diffeqsolve it
    silently falls back to dt0 = 0.01 whatever the time scale.
    """
    bare = dfx.ODETerm(vector_field)
    t_next, _ = stepsize_controller.init(
        bare, t0, t1, y0, None, args, solver.func, solver.error_order(bare)
    )
    dt0 = jax.lax.stop_gradient(t_next - t0)
    # The heuristic's probe f(t0 + h0, y0 + h0 f0) may leave the field's domain (NaN), and a
    # NaN dt0 would make every step NaN: start small instead and let the controller grow it
    # (factor 10 per accepted step). A non-finite y0 or f(t0, y0) ends the first step anyway.
    return jnp.where(jnp.isfinite(dt0) & (dt0 > 0), dt0, 1e-6 * (t1 - t0))


def _augmented_problem(vector_field, ts, y0, extras, stepsize_controller):
    """Term, initial state, controller and saving of the solve of ``(y, extras)``: the extras
    ride along in the state, invisible to step control, and are saved exactly at ``t1``."""
    saveat = dfx.SaveAt(
        subs=[
            dfx.SubSaveAt(ts=ts, fn=lambda t, y, a: y[0]),
            # Saved from the final state itself (not interpolated), so the extras are exact.
            dfx.SubSaveAt(t1=True, fn=lambda t, y, a: y[1]),
        ]
    )
    term = dfx.ODETerm(AugmentedField(vector_field))
    return term, (y0, extras), restrict_norm_to_state(stepsize_controller), saveat


def _unpack_saved(saved, gathers):
    """``(ys, sums, pick)`` from what the solve saved (``sums``/``pick`` None when not gathered)."""
    if not gathers:
        return saved, None, None
    ys, extras = saved[0], jtu.tree_map(lambda e: e[0], saved[1])
    pick = (extras["pick_t"], extras["pick_y"]) if "pick_y" in extras else None
    return ys, extras.get("sums"), pick


def count_evaluations(solver, init_evaluations, num_steps):
    """Vector-field evaluations of the solve: the controller's, the pre-computed first stage of
    an FSAL method, and a fixed number per attempted step (-1 when that number is unknown)."""
    per_step = evaluations_per_step(solver)
    if per_step is None:
        return jnp.full((), -1, jnp.int32)
    first = 1 if explicit_tableau(solver) is not None and solver.tableau.fsal else 0
    return jnp.asarray(init_evaluations + first + per_step * num_steps, jnp.int32)


def integrate_with(
    node, ts, y0, args, *, error: bool = False, stiffness: bool = False, reservoir_key=None
) -> RawSolve:
    """:func:`integrate` with the vector field, solver, controller, adjoint, ``dt0`` and
    ``max_steps`` of ``node`` (a :class:`~jaxsolve.ode.NeuralODE`); the keywords choose what the
    solve gathers. How a regulariser runs the solve it instruments."""
    return integrate(
        node.vector_field,
        ts,
        y0,
        args,
        solver=node.solver,
        stepsize_controller=node.stepsize_controller,
        adjoint=node.adjoint,
        dt0=node.dt0,
        max_steps=node.max_steps,
        error=error,
        stiffness=stiffness,
        reservoir_key=reservoir_key,
    )


def _is_float(leaf) -> bool:
    return hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact)


def _nan_where(failed, like):
    return jnp.where(failed, jnp.nan, 0.0).astype(like.dtype)


# How a failed solve's outputs carry a NaN derivative. A failed solve leaves constants in its
# outputs (diffrax's inf fill, the last accepted state), and diffrax's own backward pass drops
# any cotangent of a time it did not reach: the derivative would be an exact, plausible zero.
# So the marked outputs lean on the solve's inputs (the field's parameters, y0, args) directly.
#
# Reverse mode (_marked_vjp): the inputs get NaN cotangents when the solve failed and any
# cotangent of its outputs is non-zero, so a loss that leaves a failed sample out (selects it
# away) keeps a finite gradient. Forward mode (_marked_jvp, for adjoints that allow jax.jvp): the
# tangent of every output is NaN when the solve failed (tangents must stay linear there).


@jax.custom_vjp
def _marked_vjp(tree, anchors, failed):
    del anchors, failed
    return tree


def _marked_vjp_fwd(tree, anchors, failed):
    return tree, (anchors, failed)


def _marked_vjp_bwd(residuals, cotangent):
    anchors, failed = residuals
    leaves = [c for c in jtu.tree_leaves(cotangent) if _is_float(c)]
    used = jnp.any(jnp.stack([jnp.any(c != 0) for c in leaves])) if leaves else False
    bad = failed & used
    anchor_cotangents = [
        jnp.full(jnp.shape(a), jnp.where(bad, jnp.nan, 0.0), jnp.result_type(a)) for a in anchors
    ]
    return cotangent, anchor_cotangents, None


_marked_vjp.defvjp(_marked_vjp_fwd, _marked_vjp_bwd)


@jax.custom_jvp
def _marked_jvp(tree, anchors, failed):
    del anchors, failed
    return tree


@_marked_jvp.defjvp
def _marked_jvp_rule(primals, tangents):
    tree, _, failed = primals
    d_tree, d_anchors, _ = tangents
    # (NaN or 0) times the inputs' tangents: linear in them, so reverse mode transposes it too.
    lean = sum((jnp.sum(d) for d in d_anchors), jnp.zeros(()))
    out = jtu.tree_map(
        lambda x, d: d + (_nan_where(failed, x) * lean).astype(d.dtype) if _is_float(x) else d,
        tree,
        d_tree,
    )
    return tree, out


def closed_over_arrays(fn: Callable, *example_args) -> list:
    """The floating arrays ``fn`` closes over, beyond its own pytree leaves: the traced
    ``theta`` of ``lambda t, y, args: -theta * y`` under :func:`jax.grad`. diffrax
    differentiates through them like any input, so a failed solve's NaN derivative
    (:func:`nan_derivative_if`) must reach them too. Found by tracing ``fn`` at
    ``example_args`` (:func:`equinox.filter_closure_convert`); a function without a closure is
    not traced."""
    converted = eqx.filter_closure_convert(fn, *example_args)
    return [leaf for leaf in jtu.tree_leaves(converted) if eqx.is_inexact_array(leaf)]


def nan_derivative_if(tree, failed, inputs, *, forward: bool = False):
    """``tree`` (a solve's outputs) unchanged, but its derivative NaN when ``failed`` (a scalar
    bool: one solve's outcome; batch with ``jax.vmap``).

    ``inputs``: what the solve depends on (the field's parameters, ``y0``, ``args``); their
    floating arrays receive NaN cotangents, in reverse mode when any cotangent of ``tree`` is
    non-zero. ``forward``: for adjoints that allow ``jax.jvp``, every tangent of ``tree`` is NaN
    when ``failed`` (reverse mode then gives the inputs NaN whatever the cotangent).
    """
    anchors = [leaf for leaf in jtu.tree_leaves(inputs) if eqx.is_inexact_array(leaf)]
    failed = jnp.asarray(failed, bool)
    if not anchors:
        return tree
    if forward:
        return _marked_jvp(tree, anchors, failed)
    return _marked_vjp(tree, anchors, failed)


def nan_if(tree, failed):
    """``tree`` times NaN in every floating leaf when ``failed`` (a scalar): NaN values, and NaN
    derivatives through whatever the values depend on. For values that a failed solve would
    leave finite and plausible (a regulariser's sums up to the step where the solve stopped, a
    loss that leaves the unreached times out)."""
    failed = jnp.asarray(failed, bool)
    return jtu.tree_map(
        lambda x: x * jnp.where(failed, jnp.nan, 1.0).astype(x.dtype) if _is_float(x) else x,
        tree,
    )


def maybe_throw(result: RESULTS, token, throw: bool):
    """Raise (at run time) on a non-successful ``result`` when ``throw``; else return ``token``."""
    if throw:
        return result.error_if(token, result != RESULTS.successful)
    return token
