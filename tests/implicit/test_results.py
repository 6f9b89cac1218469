"""Run-time failures as result codes (per member under vmap) or errors (throw=True), and clear
errors for bad static input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
    with pytest.raises(ValueError, match="Anderson history must be a Python int >= 1"):
        ji.Anderson(history=0)
    with pytest.raises(ValueError, match="GMRES restart"):
        ji.GMRES(restart=0)
    with pytest.raises(ValueError, match="PhantomGradient steps"):
        ji.PhantomGradient(steps=0)
    with pytest.raises(TypeError, match="ImplicitDiff solver must be"):
        ji.ImplicitDiff(solver="gmres")
