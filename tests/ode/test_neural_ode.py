"""NeuralODE: solutions, exact NFE accounting, result codes, jit/vmap/grad, argument checks."""

import re

import chex
import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jaxsolve import RESULTS, ode
from jaxsolve.ode._driver import integrate_with
from jaxsolve.ode._regularisers import RegularisedSolve


class LinearSystem(eqx.Module):
    matrix: jax.Array

    def __call__(self, t, y, args):
        return self.matrix @ y


class Forced(eqx.Module):
    """-y + sin(3t), which records every evaluation through a host callback."""

    def __call__(self, t, y, args):
        jax.debug.callback(_COUNTER.tick)
        return -y + jnp.sin(3.0 * t)


class _Counter:
    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1


_COUNTER = _Counter()


def test_solution_matches_matrix_exponential(x64):
    a = jnp.array([[-0.3, 2.0], [-2.0, -0.3]])
    ts = jnp.linspace(0.0, 5.0, 11)
    y0 = jnp.array([1.0, 0.5])
    node = ode.NeuralODE(LinearSystem(a), dfx.Tsit5(), dfx.PIDController(rtol=1e-10, atol=1e-10))
    sol = eqx.filter_jit(node)(ts, y0)
    expected = jax.vmap(lambda t: jax.scipy.linalg.expm(a * t) @ y0)(ts)
    np.testing.assert_allclose(sol.ys, expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(sol.ts, ts)
    assert sol.result == RESULTS.successful
    assert int(sol.num_steps) == int(sol.num_accepted_steps) + int(sol.num_rejected_steps)
    # Tsit5 is FSAL: 2 evaluations for the initial-step heuristic, 1 first stage, 6 per step.
    assert int(sol.nfe) == 2 + 1 + 6 * int(sol.num_steps)


@pytest.mark.parametrize(
    "solver, controller, dt0",
    [
        (dfx.Tsit5(), dfx.PIDController(rtol=1e-6, atol=1e-8), None),
        pytest.param(
            dfx.Bosh3(), dfx.PIDController(rtol=1e-4, atol=1e-6), 0.5, marks=pytest.mark.slow
        ),
        pytest.param(dfx.Heun(), dfx.ConstantStepSize(), 0.1, marks=pytest.mark.slow),
        pytest.param(dfx.Euler(), dfx.ConstantStepSize(), 0.1, marks=pytest.mark.slow),
    ],
    ids=["Tsit5-pid", "Bosh3-pid-dt0", "Heun-constant", "Euler-constant"],
)
def test_nfe_counts_every_evaluation(x64, solver, controller, dt0):
    """The reported NFE equals the number of times the vector field actually ran."""
    ts = jnp.linspace(0.0, 2.0, 5)
    node = ode.NeuralODE(Forced(), solver, controller, dt0=dt0)
    _COUNTER.n = 0
    plain = jax.block_until_ready(jax.jit(lambda y: node(ts, y))(jnp.ones(2)))
    assert _COUNTER.n == int(plain.nfe)
    if isinstance(controller, dfx.PIDController):
        assert int(plain.num_rejected_steps) > 0  # rejected steps are counted too
    if not isinstance(solver, dfx.AbstractAdaptiveSolver):
        return  # no error estimate, no local probe
    _COUNTER.n = 0
    local = jax.block_until_ready(
        jax.jit(lambda y, k: node(ts, y, regulariser=ode.LocalRegulariser("biased"), key=k))(
            jnp.ones(2), jax.random.PRNGKey(0)
        )
    )
    assert _COUNTER.n == int(local.nfe)
    assert int(local.nfe) > int(plain.nfe)


ROTATION = jnp.array([[-0.3, 2.0], [-2.0, -0.3]])


class Guarded(eqx.Module):
    """dy/dt = M y, NaN for t > t_end or when a component of y is below ``floor``.

    ``args = (M, t_end, floor)`` are data, so one compiled program serves a healthy field, a NaN
    or infinite one (M), one that is undefined beyond a time, and one with a domain (y >= floor)
    that a too-large step can leave."""

    def __call__(self, t, y, args):
        matrix, t_end, floor = args
        inside = (t <= t_end) & jnp.all(y >= floor)
        return jnp.where(inside, 1.0, jnp.nan) * (matrix @ y)


# float32, tolerances as arrays: the tests below share this solve (eagerly, and under filter_jit).
GUARDED = ode.NeuralODE(
    Guarded(),
    dfx.Tsit5(),
    dfx.PIDController(rtol=jnp.asarray(1e-6), atol=jnp.asarray(1e-8)),
    max_steps=256,
    throw=False,
)
GUARDED_JIT = eqx.filter_jit(lambda node, ts, y0, args: node(ts, y0, args))
INF = jnp.asarray(jnp.inf)  # arrays, not Python floats: those would be static, one compile each
HEALTHY = (ROTATION, INF, -INF)


def expm_solution(matrix, ts, y0):
    return jax.vmap(lambda t: jax.scipy.linalg.expm(matrix * t) @ y0)(ts)


def test_result_codes_and_throw():
    """max_steps: the code, and ``ys`` holds y0 then inf where the solve never got (no plausible
    numbers); the default throw=True raises instead, with the code's message."""
    ts = jnp.array([0.0, 500.0, 1000.0])
    y0 = jnp.array([1.0, 0.5])
    short = GUARDED(ts, y0, HEALTHY)
    assert short.result == RESULTS.max_steps_reached and int(short.num_steps) == 256
    np.testing.assert_array_equal(short.ys[0], y0)
    assert np.all(np.isposinf(short.ys[1:]))
    # throw=True is the default; the same solve is compiled (throw acts on its output).
    throwing = ode.NeuralODE(Guarded(), GUARDED.solver, GUARDED.stepsize_controller, max_steps=256)
    assert throwing.throw
    with pytest.raises(Exception, match="maximum number of steps"):
        jax.block_until_ready(throwing(ts, y0, HEALTHY))
    with pytest.raises(Exception, match="NaN or infinity"):
        jax.block_until_ready(throwing(ts[:3] / 500.0, y0.at[0].set(jnp.nan), HEALTHY))


def test_nonfinite_state_stops_the_solve_at_once():
    """A NaN or infinite y0 or field: ``nonfinite`` after the first step, whose evaluations are
    2 (initial-step heuristic) + 1 (first stage) + 6 (one Tsit5 step). diffrax alone rejects such
    steps until max_steps (before: 4096 steps, 24,579 evaluations, ``max_steps_reached``)."""
    ts = jnp.array([0.0, 1.0, 2.0])
    y0 = jnp.array([1.0, 0.5])
    nan_field = (ROTATION.at[0, 1].set(jnp.nan), INF, -INF)
    inf_field = (ROTATION.at[0, 0].set(jnp.inf), INF, -INF)
    cases = [
        (y0.at[0].set(jnp.nan), HEALTHY),
        (y0.at[1].set(-jnp.inf), HEALTHY),
        (y0, nan_field),
        (y0, inf_field),
    ]
    for start, args in cases:
        for solve in (GUARDED, lambda *a: GUARDED_JIT(GUARDED, *a)):
            sol = solve(ts, start, args)
            assert sol.result == RESULTS.nonfinite
            assert int(sol.num_steps) == 1 and int(sol.nfe) == 2 + 1 + 6
            np.testing.assert_array_equal(sol.ys[0], start)  # y0 itself, then no data
            assert np.all(np.isposinf(sol.ys[1:]))


def test_field_undefined_beyond_a_time_stops_early():
    """f is NaN for t > 0.5: steps shrink towards 0.5 until t + h == t; that ends the solve as
    ``step_size_too_small`` within a few dozen steps (before: every step up to max_steps)."""
    ts = jnp.array([0.0, 0.25, 2.0])
    y0 = jnp.array([1.0, 0.5])
    sol = GUARDED(ts, y0, (ROTATION, jnp.asarray(0.5), -INF))
    assert sol.result == RESULTS.step_size_too_small
    assert int(sol.num_steps) < 100
    np.testing.assert_allclose(sol.ys[:2], expm_solution(ROTATION, ts[:2], y0), rtol=1e-5)
    assert np.all(np.isposinf(sol.ys[2]))


def test_a_step_that_leaves_the_domain_is_still_retried():
    """A non-finite candidate from a finite state with a finite field is a step that went too
    far (here below the domain y >= 0 of the field, when the decaying y falls under atol and the
    steps grow): it is rejected and retried smaller, as diffrax does, and the solve succeeds."""
    ts = jnp.array([0.0, 10.0, 30.0])
    y0 = jnp.ones(2)
    sol = GUARDED(ts, y0, (-jnp.eye(2), INF, jnp.asarray(0.0)))
    assert sol.result == RESULTS.successful
    assert int(sol.num_rejected_steps) > 0
    np.testing.assert_allclose(sol.ys, jnp.exp(-ts)[:, None] * y0, rtol=1e-4, atol=1e-8)


class EndpointEnergy(ode.AbstractRegulariser):
    """A regulariser written outside NeuralODE: |y(t1)|^2 of the plain solve as its term."""

    def solve(self, node, ts, y0, args, key):
        raw = integrate_with(node, ts, y0, args)
        return RegularisedSolve(raw, raw.result, error_estimate=jnp.sum(raw.ys[-1] ** 2))


def test_a_new_regulariser_plugs_in_without_changing_neural_ode():
    """NeuralODE hands its solve to the regulariser object and reports what that returns (the
    same solve as the tests above, so nothing new is compiled)."""
    ts = jnp.array([0.0, 0.5, 1.0])
    y0 = jnp.array([1.0, 0.5])
    plain = GUARDED(ts, y0, HEALTHY)
    sol = GUARDED(ts, y0, HEALTHY, regulariser=EndpointEnergy())
    np.testing.assert_array_equal(sol.ys, plain.ys)
    assert int(sol.nfe) == int(plain.nfe) and sol.result == RESULTS.successful
    np.testing.assert_allclose(sol.error_estimate, jnp.sum(plain.ys[-1] ** 2), rtol=1e-6)
    assert sol.stiffness_estimate is None and sol.probe_time is None


@pytest.mark.slow
def test_nonfinite_state_is_reported():
    class Blowup(eqx.Module):
        def __call__(self, t, y, args):
            return jnp.where(t > 1.0, jnp.nan, 1.0) * y

    node = ode.NeuralODE(Blowup(), dfx.Euler(), dfx.ConstantStepSize(), dt0=0.1, throw=False)
    sol = node(jnp.linspace(0.0, 5.0, 3), jnp.ones(2))
    assert sol.result == RESULTS.nonfinite
    # The first step from t > 1 is the last (a constant step cannot shrink): about 11 of 50.
    assert int(sol.num_steps) <= 12 and int(sol.num_rejected_steps) == 1
    np.testing.assert_array_equal(sol.ys[0], jnp.ones(2))
    assert np.all(np.isposinf(sol.ys[1:]))


@pytest.mark.slow  # an implicit solve compiles slowly
def test_implicit_solver(x64):
    """An implicit (ESDIRK) solver works through the instrumented wrapper (diffrax hands the
    controller's tolerances to its root find), and its explicit first stage f(t0, y0) lets a NaN
    field stop at once too. Before: AttributeError 'root_finder'."""
    ts = jnp.linspace(0.0, 2.0, 3)
    y0 = jnp.array([1.0, 0.5])
    node = ode.NeuralODE(
        Guarded(), dfx.Kvaerno5(), dfx.PIDController(rtol=1e-8, atol=1e-8), throw=False
    )
    solve = eqx.filter_jit(lambda args: node(ts, y0, args))
    sol = solve(HEALTHY)
    assert sol.result == RESULTS.successful and int(sol.nfe) == -1
    np.testing.assert_allclose(sol.ys, expm_solution(ROTATION, ts, y0), rtol=1e-6, atol=1e-6)
    sol = solve((ROTATION.at[0, 0].set(jnp.nan), INF, -INF))
    assert sol.result == RESULTS.nonfinite and int(sol.num_steps) == 1


@pytest.mark.slow  # the default run trains through vmap + grad in test_training.py
def test_vmap_jit_grad_through_a_batch(x64):
    """Per-sample adaptive solves under vmap; the gradient of a loss by AD and by FD."""
    key = jax.random.PRNGKey(0)
    field = ode.MLPField(2, 8, 1, key=key)
    node = ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=1e-8, atol=1e-8))
    ts = jnp.linspace(0.0, 1.0, 6)
    y0s = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    target = jnp.sin(ts)[None, :, None] * jnp.ones((4, 1, 2))
    params, static = eqx.partition(node, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    direction = [
        jax.random.normal(jax.random.fold_in(key, i), x.shape) for i, x in enumerate(leaves)
    ]

    def loss(eps):
        shifted = [x + eps * d for x, d in zip(leaves, direction, strict=True)]
        m = eqx.combine(jax.tree_util.tree_unflatten(treedef, shifted), static)
        sol = jax.vmap(lambda y: m(ts, y))(y0s)
        return jnp.mean((sol.ys - target) ** 2), sol

    value_and_slope = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, sol), slope = value_and_slope(0.0)
    chex.assert_shape([sol.ys, sol.nfe], [(4, 6, 2), (4,)])
    # Samples start from different points: each has its own adaptive steps.
    assert len(set(np.asarray(sol.num_steps).tolist())) > 1
    # Directional derivative along a random direction in parameter space vs central FD (the step
    # sizes move with the parameters too; tight tolerances keep that effect small).
    (up, _), _ = value_and_slope(1e-5)
    (down, _), _ = value_and_slope(-1e-5)
    np.testing.assert_allclose(slope, (up - down) / 2e-5, rtol=1e-4)
    assert np.isfinite(float(value))


def test_tolerance_is_a_traced_value():
    """One compilation sweeps rtol; tighter tolerances take more steps."""
    field = LinearSystem(jnp.array([[-0.3, 2.0], [-2.0, -0.3]]))
    ts = jnp.linspace(0.0, 5.0, 3)

    @jax.jit
    @jax.vmap
    def steps(rtol):
        node = ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=rtol, atol=rtol * 1e-2))
        return node(ts, jnp.ones(2)).num_steps

    counts = np.asarray(steps(jnp.array([1e-2, 1e-4, 1e-6])))
    assert counts[0] < counts[1] < counts[2]


def test_mlp_field_shapes():
    key = jax.random.PRNGKey(0)
    f = ode.MLPField(3, 16, 2, key=key, time_dependent=True, final_activation=jnp.tanh)
    y = jnp.ones((5, 3))

    @eqx.filter_jit
    def evaluate(f, y):
        return f(0.5, y), f(0.5, y[1]), f(0.0, y[0]), f(1.0, y[0])

    # Full float32 products: on a GPU the batched layer is a TF32 matrix product by default and
    # the single one a float32 matrix-vector product, which differ by ~1e-3.
    with jax.default_matmul_precision("float32"):
        batch, single, at0, at1 = evaluate(f, y)
    chex.assert_shape(batch, (5, 3))
    np.testing.assert_allclose(batch[1], single, rtol=1e-5, atol=1e-6)  # float32 matmuls
    assert jnp.all(jnp.abs(batch) <= 1.0)
    assert not np.allclose(at0, at1)  # time enters
    with pytest.raises(ValueError, match="last axis 3"):
        f(0.0, jnp.ones(4))
    with pytest.raises(ValueError, match="width"):
        ode.MLPField(3, 0, 2, key=key)


@pytest.mark.wrong_argument_types
def test_argument_checks():
    field = LinearSystem(-jnp.eye(2))
    with pytest.raises(ValueError, match="ts must be a 1-D"):
        ode.NeuralODE(field)(jnp.array([0.0]), jnp.ones(2))
    with pytest.raises(ValueError, match="non-decreasing"):
        ode.NeuralODE(field)(jnp.array([0.0, 2.0, 1.0]), jnp.ones(2))
    with pytest.raises(ValueError, match="dt0 must be given"):
        ode.NeuralODE(field, dfx.Tsit5(), dfx.ConstantStepSize())
    with pytest.raises(TypeError, match="solver must be a diffrax solver"):
        ode.NeuralODE(field, "tsit5")
    with pytest.raises(TypeError, match="adjoint must be a diffrax adjoint"):
        ode.NeuralODE(field, adjoint="backsolve")
    with pytest.raises(ValueError, match="max_steps"):
        ode.NeuralODE(field, max_steps=0)
    for dt0 in (float("nan"), -0.1, 0.0):
        with pytest.raises(ValueError, match="dt0 must be a positive finite"):
            ode.NeuralODE(field, dfx.Tsit5(), dfx.ConstantStepSize(), dt0=dt0)
    with pytest.raises(TypeError, match="throw must be a bool"):
        ode.NeuralODE(field, throw="yes")
    with pytest.raises(TypeError, match="vector_field must be callable"):
        ode.NeuralODE(3.0)


def test_bad_tolerances_raise_concrete_and_traced():
    """A negative rtol made the scaled error negative: every step was accepted and the solve
    reported success at whatever accuracy. Concrete tolerances raise at construction, traced
    ones (a sweep) when the compiled code runs."""
    field = LinearSystem(-jnp.eye(2))
    for rtol, atol in ((-1e-3, 1e-6), (1e-3, float("nan")), (0.0, 0.0), (1e-3, np.inf)):
        with pytest.raises(ValueError, match="stepsize_controller"):
            ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=rtol, atol=atol))

    @jax.jit
    def solve(rtol):
        node = ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=rtol, atol=1e-6))
        return node(jnp.array([0.0, 1.0]), jnp.ones(2)).ys[-1]

    np.testing.assert_allclose(solve(1e-6), np.exp(-1.0) * np.ones(2), rtol=1e-5)
    with pytest.raises(Exception, match="rtol and atol must be finite, non-negative"):
        jax.block_until_ready(solve(-1e-3))


# --- Property test: random bad inputs never come back as a plausible success. ------------------

_Y0S = {
    "finite": [1.0, 0.5],
    "integer": [1, 0],  # promoted to float (eagerly only: traced, it would be another program)
    "nan": [jnp.nan, 0.5],
    "inf": [1.0, -jnp.inf],
}
_FIELDS = {
    "healthy": HEALTHY,
    "nan": (ROTATION.at[1, 0].set(jnp.nan), INF, -INF),
    "inf": (ROTATION.at[1, 1].set(-jnp.inf), INF, -INF),
    "ends at t=0.5": (ROTATION, jnp.asarray(0.5), -INF),
}
_GOOD_TS = {"grid": [0.0, 1.0, 2.0], "uneven": [0.0, 0.3, 2.0], "long": [0.0, 500.0, 1000.0]}
# Argument defects: each must raise, naming the argument (trace time, or run time if traced).
_TS = r"ts must|ts\[-1\] must"
_DEFECTS = {
    "ts decreasing": (_TS, lambda ts, y0: ([0.0, 2.0, 1.0], y0)),
    "ts with NaN": (_TS, lambda ts, y0: ([0.0, jnp.nan, 2.0], y0)),
    "ts flat": (_TS, lambda ts, y0: ([1.0, 1.0, 1.0], y0)),
    "ts too short": (_TS, lambda ts, y0: ([0.0], y0)),
    "y0 of the wrong shape": ("y0", lambda ts, y0: (ts, [1.0, 0.5, 0.2])),
    "complex y0": ("y0", lambda ts, y0: (ts, jnp.array([1.0, 0.5], jnp.complex64))),
}


def _expected_result(y0_kind, field_kind, ts_kind):
    if y0_kind in ("nan", "inf") or field_kind in ("nan", "inf"):
        return RESULTS.nonfinite
    if field_kind == "ends at t=0.5":  # within a few dozen steps, so before max_steps
        return RESULTS.step_size_too_small
    if ts_kind == "long":
        return RESULTS.max_steps_reached
    return RESULTS.successful


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    y0_kind=st.sampled_from(sorted(_Y0S)),
    field_kind=st.sampled_from(sorted(_FIELDS)),
    ts_kind=st.sampled_from(sorted(_GOOD_TS)),
    defect=st.sampled_from([None, None, None, *sorted(_DEFECTS)]),
    mode=st.sampled_from(["eager", "eager, throw=True", "filter_jit"]),
)
@example("finite", "healthy", "grid", None, "eager")
@example("finite", "healthy", "uneven", None, "filter_jit")
@example("finite", "healthy", "grid", "ts decreasing", "filter_jit")
@example("nan", "healthy", "grid", None, "eager, throw=True")
@pytest.mark.wrong_argument_types
def test_bad_inputs_never_look_successful(y0_kind, field_kind, ts_kind, defect, mode):
    """Each call raises an error naming the argument, or returns the exact code with ``ys`` the
    solution where it was reached and non-finite after; success comes only with the solution."""
    if mode == "filter_jit" and y0_kind == "integer":
        y0_kind = "finite"
    ts, y0, args = _GOOD_TS[ts_kind], _Y0S[y0_kind], _FIELDS[field_kind]
    node = GUARDED
    if mode == "eager, throw=True":
        node = ode.NeuralODE(Guarded(), node.solver, node.stepsize_controller, max_steps=256)
    solve = node if mode != "filter_jit" else lambda *a: GUARDED_JIT(node, *a)
    if defect is not None:
        name, corrupt = _DEFECTS[defect]
        ts, y0 = corrupt(ts, y0)
        with pytest.raises(Exception, match=name):
            jax.block_until_ready(solve(jnp.asarray(ts), jnp.asarray(y0), args))
        return
    ts, y0 = jnp.asarray(ts), jnp.asarray(y0, jnp.float32)
    expected = _expected_result(y0_kind, field_kind, ts_kind)
    if expected != RESULTS.successful and node.throw:
        with pytest.raises(Exception, match=re.escape(RESULTS[expected][:20])):
            jax.block_until_ready(solve(ts, y0, args))
        return
    sol = solve(ts, y0, args)
    assert sol.result == expected
    if expected == RESULTS.successful:
        reached = ts <= ts[-1]
    elif expected == RESULTS.step_size_too_small:
        reached = ts <= 0.5
    else:
        reached = ts <= ts[0]
    if expected == RESULTS.nonfinite:
        assert int(sol.num_steps) == 1
    np.testing.assert_array_equal(sol.ys[0], y0)
    exact = expm_solution(args[0], ts, y0)
    later = np.asarray(reached[1:])
    np.testing.assert_allclose(sol.ys[1:][later], exact[1:][later], rtol=1e-4, atol=1e-8)
    assert np.all(np.isposinf(sol.ys[1:][~later]))
