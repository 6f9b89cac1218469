"""``sample(callback=...)``: k-diffusion's per-step host callback."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

MEAN, COV = np.array([1.0, -0.5]), np.array([[1.0, 0.3], [0.3, 0.5]])


def _denoise_np(x, s):
    """The exact denoiser of N(MEAN, COV) in NumPy: mean + cov (cov + s^2 I)^-1 (x - mean)."""
    return MEAN + (x - MEAN) @ np.linalg.solve(COV + s**2 * np.eye(2), COV)


def test_callback_sees_every_step_in_order_with_the_trajectory(x64):
    gaussian = Gaussian(jnp.asarray(MEAN), jnp.asarray(COV))
    x = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    # A padded grid: the iterations past its 4 steps do no work and are not reported.
    sigmas = jd.karras_sigmas(4, 0.05, 10.0, max_steps=6)
    seen = []
    sol = jd.sample(
        gaussian,
        x,
        sigmas,
        jd.Euler(),
        full_output=True,
        save_trajectory=True,
        callback=seen.append,
    )
    assert [info["i"] for info in seen] == [0, 1, 2, 3]
    for info in seen:
        i = info["i"]
        assert set(info) == {"i", "x", "sigma", "sigma_hat", "denoised"}
        np.testing.assert_array_equal(info["x"], sol.trajectory[i])
        assert info["sigma"] == info["sigma_hat"] == sigmas[i]
        np.testing.assert_allclose(
            info["denoised"], _denoise_np(info["x"], float(sigmas[i])), rtol=1e-12, atol=1e-12
        )
    np.testing.assert_array_equal(seen[-1]["denoised"], sol.value)  # the final step lands on D


def test_callback_must_be_callable():
    with pytest.raises(TypeError, match="callback"):
        jd.sample(lambda x, s: x, jnp.ones(2), jnp.array([1.0, 0.0]), jd.Euler(), callback=1)


@pytest.mark.slow
def test_callback_changes_nothing_and_reports_the_churned_level(x64):
    gaussian = Gaussian(jnp.asarray(MEAN), jnp.asarray(COV))
    x = 10.0 * jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    sigmas = jd.karras_sigmas(5, 0.05, 10.0)
    solver = jd.EDMStochastic(churn=2.0, s_tmin=0.1, s_tmax=5.0)
    key = jax.random.PRNGKey(2)
    heun_seen = []
    heun = jd.sample(gaussian, x, sigmas, jd.Heun(), callback=heun_seen.append)
    np.testing.assert_array_equal(heun, jd.sample(gaussian, x, sigmas, jd.Heun()))
    for info in heun_seen:  # the step's first evaluation, D(x_i, sigma_i), not Heun's second
        s = float(sigmas[info["i"]])
        np.testing.assert_allclose(info["denoised"], _denoise_np(info["x"], s), rtol=1e-12)
    plain = jd.sample(gaussian, x, sigmas, solver, key=key)
    seen = []
    with_callback = jd.sample(gaussian, x, sigmas, solver, key=key, callback=seen.append)
    # The same arithmetic, but XLA may fuse a program whose values leave it for the host
    # differently: here it differs in the last bit.
    np.testing.assert_allclose(with_callback, plain, rtol=4e-16, atol=4e-16)
    assert [info["i"] for info in seen] == list(range(5))
    for info in seen:
        sigma = float(sigmas[info["i"]])
        churned = 0.1 <= sigma <= 5.0 and info["i"] < 4  # no churn in the final step
        assert (info["sigma_hat"] > sigma) if churned else (info["sigma_hat"] == sigma)
    # Under jit and vmap (over guidance-like data: the key), every sample's steps are reported.
    seen.clear()
    keys = jax.random.split(key, 2)
    jax.jit(
        jax.vmap(lambda k: jd.sample(gaussian, x, sigmas, solver, key=k, callback=seen.append))
    )(keys)
    assert sorted(info["i"] for info in seen) == sorted(2 * list(range(5)))
