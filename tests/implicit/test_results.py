"""Run-time failures as result codes (per member under vmap) or errors (throw=True), and clear
errors for bad static input."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import RUNTIME_ERRORS


def _affine(z, p):
    # z = scale * z + 1 + log(shift): contracting for |scale| < 1, divergent for |scale| > 1,
    # NaN for shift < 0.
    scale, shift = p
    return scale * z + 1.0 + jnp.log(shift)


def _run(p, throw, solver=None):
    return ji.fixed_point(
        _affine,
        jnp.zeros(()),
        p,
        solver=ji.Picard() if solver is None else solver,
        max_steps=60,
        throw=throw,
    )


@pytest.mark.parametrize("solver", [ji.Picard, ji.Anderson, ji.Broyden])
def test_codes_per_member_under_vmap(solver):
    scales = jnp.array([0.5, 3.0, 0.5, 0.9999, -0.3])
    shifts = jnp.array([1.0, 1.0, -1.0, 1.0, 1.0])
    sol = jax.jit(jax.vmap(lambda s, t: _run((s, t), False, solver())))(scales, shifts)
    codes = [
        RESULTS.successful,
        RESULTS.diverged,
        RESULTS.nonfinite,
        RESULTS.max_steps_reached,
        RESULTS.successful,
    ]
    if solver is not ji.Picard:
        # A secant method extrapolates the affine map exactly: 0.9999 converges and 3.0 finds
        # the (repelling) fixed point -1/2, which is a legitimate fixed point.
        codes[1] = codes[3] = RESULTS.successful
    for i, code in enumerate(codes):
        assert bool((sol.result == code)[i]), (i, sol.result)
    np.testing.assert_allclose(sol.value[0], 2.0, atol=1e-4)
    np.testing.assert_allclose(sol.value[4], 1 / 1.3, atol=1e-4)
    assert int(sol.num_steps[2]) == 0  # NaN at the first evaluation stops at once


@pytest.mark.parametrize(
    ("p", "message"),
    [
        ((3.0, 1.0), "diverged"),
        ((0.5, -1.0), "NaN or infinity"),
        ((0.9999, 1.0), "maximum number of steps"),
    ],
)
def test_throw_raises_with_the_code_message(p, message):
    with pytest.raises(RUNTIME_ERRORS, match=message):
        jax.block_until_ready(jax.jit(lambda p: _run(p, True).value)(p))


def test_throw_under_vmap_raises_if_any_member_fails_and_passes_otherwise():
    run = jax.jit(jax.vmap(lambda s: _run((s, jnp.asarray(1.0)), True).value))
    np.testing.assert_allclose(run(jnp.array([0.5, -0.5])), [2.0, 1 / 1.5], atol=1e-4)
    with pytest.raises(RUNTIME_ERRORS, match="diverged"):
        jax.block_until_ready(run(jnp.array([0.5, 3.0])))


def test_state_and_output_mismatch_names_both():
    with pytest.raises(ValueError, match=r"z0 is float32\[2\] but fn returned float32\[3\]"):
        ji.fixed_point(lambda z, _: jnp.zeros(3), jnp.zeros(2))
    with pytest.raises(ValueError, match=r"z0 is \{'a': .*\} but fn returned \(.*\)"):
        ji.fixed_point(lambda z, _: (z["a"], z["b"]), {"a": jnp.zeros(2), "b": jnp.zeros(1)})
    with pytest.raises(ValueError, match="x0 is"):
        ji.root_find(lambda x, _: x.sum(), jnp.zeros(2))


def test_complex_output_for_a_real_state_is_rejected():
    # Cast to the real state, z = (1 + i) z / 2 + 1 lost its imaginary part and "converged" to
    # 2, the fixed point of the real part, not of fn (whose fixed point is 1 + i).
    fn = lambda z, _: 0.5 * (1 + 1j) * z + 1.0
    with pytest.raises(ValueError, match=r"real floating dtypes.*returned complex64\[2\]"):
        ji.fixed_point(fn, jnp.zeros(2))


def test_integer_or_empty_state_is_rejected():
    with pytest.raises(TypeError, match=r"z0 must have a real floating dtype.*int32"):
        ji.fixed_point(lambda z, _: z, jnp.zeros(3, jnp.int32))
    with pytest.raises(TypeError, match="floating dtype"):
        ji.fixed_point(lambda z, _: z, 1)
    with pytest.raises(ValueError, match="at least one array"):
        ji.fixed_point(lambda z, _: z, {})


@pytest.mark.parametrize(("name", "value"), [("rtol", 0.0), ("atol", -1e-3), ("rtol", jnp.nan)])
def test_non_positive_tolerances_are_rejected(name, value):
    with pytest.raises(ValueError, match=f"{name} must be positive"):
        ji.fixed_point(lambda z, _: 0.5 * z, jnp.ones(2), **{name: value})


def test_traced_non_positive_tolerance_raises_at_run_time():
    run = jax.jit(lambda r: ji.fixed_point(lambda z, _: 0.5 * z, jnp.ones(2), rtol=r).value)
    np.testing.assert_allclose(run(1e-6), 0.0, atol=1e-5)
    with pytest.raises(RUNTIME_ERRORS, match="rtol must be positive"):
        jax.block_until_ready(run(-1.0))


@pytest.mark.wrong_argument_types
def test_bad_options_are_rejected():
    f = lambda z, _: 0.5 * z
    with pytest.raises(ValueError, match="max_steps must be >= 1; got 0"):
        ji.fixed_point(f, jnp.ones(2), max_steps=0)
    with pytest.raises(TypeError, match="solver must be"):
        ji.fixed_point(f, jnp.ones(2), solver="anderson")
    with pytest.raises(TypeError, match="backward must be"):
        ji.fixed_point(f, jnp.ones(2), backward=ji.GMRES())
    with pytest.raises(ValueError, match="divergence_factor must be > 1"):
        ji.fixed_point(f, jnp.ones(2), divergence_factor=0.5)
    with pytest.raises(ValueError, match="Picard damping must be positive"):
        ji.Picard(damping=0.0)
    with pytest.raises(ValueError, match="Anderson history must be >= 1"):
        ji.Anderson(history=0)
    with pytest.raises(ValueError, match="GMRES restart"):
        ji.GMRES(restart=0)
    with pytest.raises(ValueError, match="PhantomGradient steps"):
        ji.PhantomGradient(steps=0)
    with pytest.raises(TypeError, match="ImplicitDiff solver must be"):
        ji.ImplicitDiff(solver="gmres")


@pytest.mark.wrong_argument_types
def test_a_norm_that_is_not_a_scalar_is_named():
    # An element-wise "norm" failed inside the loop ("`where` requires a scalar boolean
    # predicate"), naming no argument.
    f = lambda z, _: 0.5 * z
    with pytest.raises(ValueError, match=r"fixed_point: norm must return a real scalar.*\[3\]"):
        ji.fixed_point(f, jnp.ones(3), norm=jnp.abs)
    with pytest.raises(ValueError, match="DEQ: norm must return a real scalar"):
        ji.DEQ(lambda z, x: 0.5 * z + x, norm=jnp.abs)(jnp.ones(3))
    with pytest.raises(ValueError, match="linear_solve: norm must return a real scalar"):
        ji.linear_solve(lambda x: 2.0 * x, jnp.ones(3), norm=jnp.abs)
    # Scalars pass, whatever their type: an array, an integer array, a Python number.
    for norm in (jnp.linalg.norm, lambda x: jnp.max(jnp.abs(x)).astype(jnp.int32), lambda x: 0.0):
        assert ji.fixed_point(f, jnp.ones(3), norm=norm).result == RESULTS.successful


# ----------------------------------------------------------------------------------------------
# Property: random bad inputs to the drivers give a correct result, a non-successful code, or an
# error naming the argument — never a successful code with a non-finite or wrong value.

_A = np.array([[2.0, 0.5, 0.0], [0.5, 1.5, 0.2], [0.0, 0.2, 1.0]])  # symmetric positive definite

# (entry point, solver, throw). The default run takes three cheap configurations, so that its
# examples share three compiled programs; the slow run takes every solver.
_CONFIGS = {
    "fixed_point/Picard": ("fixed_point", ji.Picard, False),
    "root_find/Picard/throw": ("root_find", ji.Picard, True),
    "linear_solve/CG": ("linear_solve", ji.CG, False),
    "fixed_point/Picard/throw": ("fixed_point", ji.Picard, True),
    "fixed_point/Anderson": ("fixed_point", ji.Anderson, False),
    "fixed_point/Anderson/throw": ("fixed_point", ji.Anderson, True),
    "fixed_point/Broyden": ("fixed_point", ji.Broyden, False),
    "fixed_point/Newton": ("fixed_point", ji.Newton, False),
    "root_find/Newton": ("root_find", ji.Newton, False),
    "root_find/Broyden/throw": ("root_find", ji.Broyden, True),
    "linear_solve/GMRES": ("linear_solve", ji.GMRES, False),
    "linear_solve/BiCGStab/throw": ("linear_solve", ji.BiCGStab, True),
    "linear_solve/Picard": ("linear_solve", lambda: ji.Picard(damping=0.4), False),
}
_CHEAP = list(_CONFIGS)[:3]
_STATE = {"fixed_point": "z0", "root_find": "x0", "linear_solve": "b"}

# Mostly one fault per example (a second one now and then): with several, the first check
# to fire hides the rest. Faults in the data (which must come back as codes or correct values)
# are drawn twice as often as bad arguments (which must raise).
_DATA_FAULTS = ["nan", "inf", "nan_in_args", "nan_on_the_way", "2 steps", "atol=inf"]
_FAULTS = [
    *("nan", "inf", "short", "column", "int"),  # in the state
    *("nan_in_args", "nan_on_the_way"),  # in the map: NaN data, or NaN past a point
    *("rtol=0", "rtol<0", "rtol=nan", "atol<0", "atol=inf"),
    *("2 steps", "0 steps", "-2 steps", "2.5 steps", "True steps"),
]


def _g(z, args):
    # A 1/2-contraction; NaN wherever z exceeds the trap t (f "returns NaN at some point").
    c, t = args
    return 0.5 * jnp.tanh(z) + c + jnp.where(z > t, jnp.nan, 0.0)


def _call(config, z0, c, t, rtol, atol, max_steps):
    entry, solver, throw = _CONFIGS[config]
    kw = dict(solver=solver(), rtol=rtol, atol=atol, max_steps=max_steps, throw=throw)
    if entry == "fixed_point":
        return ji.fixed_point(_g, z0, (c, t), **kw)
    if entry == "root_find":
        # F = g - x (the root of which is g's fixed point), the form Picard iterates.
        return ji.root_find(lambda x, a: _g(x, a) - x, z0, (c, t), **kw)
    return ji.linear_solve(lambda x: jnp.asarray(_A) @ x, z0, **kw)


_TRACED = jax.jit(_call, static_argnums=0)


_FAILURE_MESSAGES = [
    RESULTS[getattr(RESULTS, name)] for name in ("max_steps_reached", "nonfinite", "diverged")
]


def _check_driver(config, traced, faults, where, start):
    entry, _, throw = _CONFIGS[config]
    state_fault = next((f for f in faults if f in _FAULTS[:5]), "none")
    map_fault = next((f for f in faults if f in _FAULTS[5:7]), "none")
    tol_fault = next((f for f in faults if f in _FAULTS[7:12]), "none")
    step_fault = next((f for f in faults if f in _FAULTS[12:]), "none")
    state = _STATE[entry]
    z0 = np.full(3, start)
    z0[where] = {"nan": np.nan, "inf": np.inf}.get(state_fault, start)
    if state_fault in ("short", "column"):
        z0 = z0[:2] if state_fault == "short" else z0[:, None]
    elif state_fault == "int":
        z0 = np.round(z0).astype(np.int32)
    c = np.linspace(-0.5, 0.5, 3)
    c[where] = np.nan if map_fault == "nan_in_args" else c[where]
    trap = 0.1 if map_fault == "nan_on_the_way" else np.inf
    rtol = {"rtol=0": 0.0, "rtol<0": -1e-3, "rtol=nan": np.nan}.get(tol_fault, 1e-8)
    atol = {"atol<0": -1.0, "atol=inf": np.inf}.get(tol_fault, 1e-8)
    max_steps = {"2 steps": 2, "0 steps": 0, "-2 steps": -2, "2.5 steps": 2.5, "True steps": True}
    max_steps = max_steps.get(step_fault, 100)
    # The arguments that must be named in an error. A column b is a valid right-hand side for
    # A @ x (the same shape comes back); a column z0 is not for g, whose c broadcasts it to 3 x 3.
    # An infinite atol is a valid (if useless) tolerance: every finite state passes it. A traced
    # budget of 0 is a valid sweep point (it returns z0 with its code); a concrete 0, a negative
    # budget or a non-integer is an error.
    misfits = ("short", "int") if entry == "linear_solve" else ("short", "column", "int")
    bad = {state} if state_fault in misfits else set()
    bad |= {tol_fault[:4]} if tol_fault not in ("none", "atol=inf") else set()
    steps_ok = type(max_steps) is int and max_steps >= (0 if traced else 1)
    bad |= set() if steps_ok else {"max_steps"}

    args = (jnp.asarray(z0), jnp.asarray(c), jnp.asarray(trap, jnp.float64))
    tols = (jnp.asarray(rtol, jnp.float64), jnp.asarray(atol, jnp.float64))
    # Integers as int32 whatever their value, so that every example shares one program.
    steps = jnp.asarray(max_steps, jnp.int32 if type(max_steps) is int else None)
    try:
        if not traced:
            # Concrete arguments: every trace-time check sees their values (no compile here).
            jax.eval_shape(lambda: _call(config, z0, c, trap, rtol, atol, max_steps))
        sol = jax.block_until_ready(_TRACED(config, *args, *tols, steps))
    except (TypeError, ValueError, *RUNTIME_ERRORS) as error:
        message = str(error)
        named = any(re.search(rf"\b{name}\b", message) for name in bad)
        # Without a bad argument, only a run-time failure under throw=True may raise.
        failure = not bad and throw and any(m in message for m in _FAILURE_MESSAGES)
        assert named or failure, (bad, message)
        return
    assert not bad, f"{bad} accepted; result {sol.result}"
    if not bool(sol.successful):
        assert not throw, "a failed solve with throw=True must raise"
        return
    value = np.asarray(sol.value)
    assert np.all(np.isfinite(value)), value
    # The solver's own test, recomputed in NumPy (another order of operations: a few ulps of
    # slack). The Krylov methods test ||b - A x||_2 against atol + rtol ||b||_2; the driver's
    # solvers the max-norm of the residual scaled by atol + rtol |x|.
    if entry == "linear_solve" and config != "linear_solve/Picard":
        ratio = np.linalg.norm(z0 - _A @ value) / (atol + rtol * np.linalg.norm(z0))
    else:
        with np.errstate(invalid="ignore"):
            g = 0.5 * np.tanh(value) + c + np.where(value > trap, np.nan, 0.0)
        residual = _A @ value - z0 if entry == "linear_solve" else g - value
        ratio = np.max(np.abs(residual) / (atol + rtol * np.abs(value)))
    assert ratio <= 1 + 1e-9, ratio


def _driver_property(configs):
    @given(
        config=st.sampled_from(configs),
        traced=st.booleans(),
        faults=st.tuples(
            st.sampled_from(["none"] * 2 + _DATA_FAULTS + _FAULTS),
            st.sampled_from(["none"] * 30 + _FAULTS),
        ),
        where=st.integers(0, 2),
        start=st.floats(-2.0, 2.0),
    )
    def check(x64, **case):
        _check_driver(**case)

    return check


test_drivers_never_report_success_on_a_wrong_value = settings(max_examples=25, derandomize=True)(
    _driver_property(_CHEAP)
)
test_every_solver_never_reports_success_on_a_wrong_value = pytest.mark.slow(
    settings(max_examples=200, derandomize=True)(_driver_property(sorted(_CONFIGS)))
)
