"""Guidance parameters built from traced values (a ``vmap`` sweep) are checked when the program
runs, as concrete ones are when the module is built; valid traced values give the numbers of
concrete ones (checked against the exact posterior of a Gaussian prior)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion import inverse as inv
from jaxsolve.diffusion.analytic import Gaussian

_COND = Gaussian(jnp.array([1.0, -2.0, 0.5]), jnp.array([2.0, 0.5, 1.0]))
_UNCOND = Gaussian(jnp.zeros(3), jnp.array([3.0, 3.0, 3.0]))
_X = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (4, 3))


def test_traced_rescale_outside_zero_one_raises():
    # Concrete rescale = 1.5 raises when cfg() is built; traced, it extrapolated silently.
    guided = jax.jit(jax.vmap(lambda r: jd.cfg(_COND, _UNCOND, 3.0, rescale=r)(_X, 1.7)))
    ok = guided(jnp.array([0.0, 0.7]))
    np.testing.assert_allclose(
        np.asarray(ok[1]), np.asarray(jd.cfg(_COND, _UNCOND, 3.0, rescale=0.7)(_X, 1.7)), rtol=1e-6
    )
    with pytest.raises(ValueError, match="rescale must lie in \\[0, 1\\]"):
        jd.cfg(_COND, _UNCOND, 3.0, rescale=1.5)
    for bad in (1.5, -0.5):
        with pytest.raises(Exception, match="rescale must lie in \\[0, 1\\]"):
            jax.block_until_ready(guided(jnp.array([0.7, bad])))


def test_traced_reversed_or_negative_interval_raises():
    # A reversed traced interval never guided, silently.
    grid = jd.karras_sigmas(4, 0.01, 10.0)
    run = jax.jit(
        jax.vmap(
            lambda lo, hi: jd.sample(
                jd.cfg(_COND, _UNCOND, 3.0, interval=(lo, hi)), _X, grid, jd.Euler()
            )
        )
    )
    ok = run(jnp.array([0.0, 0.5]), jnp.array([1.0, 5.0]))
    concrete = jd.sample(jd.cfg(_COND, _UNCOND, 3.0, interval=(0.5, 5.0)), _X, grid, jd.Euler())
    np.testing.assert_allclose(np.asarray(ok[1]), np.asarray(concrete), rtol=1e-6)
    for lo, hi in [(5.0, 0.5), (1.0, 1.0), (-1.0, 2.0)]:
        with pytest.raises(Exception, match="interval must be \\(sigma_lo, sigma_hi\\)"):
            jax.block_until_ready(run(jnp.array([0.0, lo]), jnp.array([1.0, hi])))


@pytest.mark.parametrize("method", [inv.PiGDM, inv.DDNM])
def test_traced_data_variance_must_be_positive(method):
    v = 1.7
    prior = Gaussian(jnp.zeros(3), v * jnp.ones(3))
    mask = inv.Mask(jnp.array([1.0, 0.0, 1.0]))
    meas = inv.Measurement(mask, jnp.array([0.5, 0.0, -1.0]), 0.1)
    guided = jax.jit(lambda var: method(prior, meas, data_variance=var)(_X, 0.8))
    # Exact for an isotropic Gaussian prior with the right variance.
    exact = prior.condition(mask, meas.y, 0.1).denoise(_X, 0.8)
    np.testing.assert_allclose(np.asarray(guided(v)), np.asarray(exact), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="data_variance must be positive"):
        method(prior, meas, data_variance=-1.0)
    for bad in (-1.0, 0.0):
        with pytest.raises(Exception, match="data_variance must be positive"):
            jax.block_until_ready(guided(bad))


def test_measurement_noise_std_must_be_finite():
    # inf passed (the traced check's message said "finite"); the oracles' condition() refuses it.
    mask = inv.Mask(jnp.array([1.0, 0.0, 1.0]))
    y = jnp.array([0.5, 0.0, -1.0])
    with pytest.raises(ValueError, match="noise_std must be non-negative and finite"):
        inv.Measurement(mask, y, jnp.inf)
    build = jax.jit(lambda s: inv.Measurement(mask, y, s).noise_std)
    assert float(build(0.3)) == pytest.approx(0.3)
    for bad in (jnp.inf, jnp.nan, -1.0):
        with pytest.raises(Exception, match="noise_std must be finite and non-negative"):
            jax.block_until_ready(build(bad))


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda v: jd.PredictorCorrector(snr=v), "PredictorCorrector snr"),
        (lambda v: jd.DualFast(jd.DPMSolverPP(), c=v), "DualFast c"),
    ],
)
def test_wrapper_settings_must_be_finite_and_non_negative(build, name):
    # Negative snr acted as |snr| (it enters squared), NaN or infinite values made every sample
    # NaN: concrete ones raise when built, traced ones when the program runs.
    for bad in (-0.1, np.inf, np.nan):
        with pytest.raises(ValueError, match=name):
            build(bad)
    grid = jd.karras_sigmas(4, 0.01, 10.0)
    run = jax.jit(
        jax.vmap(lambda v: jd.sample(_COND, _X, grid, build(v), key=jax.random.PRNGKey(1)))
    )
    ok = run(jnp.array([0.0, 0.1]))
    np.testing.assert_allclose(
        np.asarray(ok[1]),
        np.asarray(jd.sample(_COND, _X, grid, build(0.1), key=jax.random.PRNGKey(1))),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(Exception, match=f"{name} must be non-negative"):
        jax.block_until_ready(run(jnp.array([0.1, -0.1])))
