"""Gaussian random fields: sample spectra and covariances against c(-Laplacian + tau^2)^(-alpha)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import pde


def _draw(grf, shape, n, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return np.asarray(jax.jit(jax.vmap(lambda k: grf.sample(k, shape)))(keys), np.float64)


def test_periodic_spectrum_matches_covariance():
    """E|u_hat_k|^2 = lambda_k / |Omega| for every mode (forward-normalised coefficients), with
    lambda_k = c (|2 pi k / L|^2 + tau^2)^(-alpha) written out here independently."""
    lengths, shape, (alpha, tau, c) = (2.0, 0.5), (12, 10), (2.5, 4.0, 30.0)
    grf = pde.GaussianRandomField(alpha, tau, c, lengths=lengths)
    m = 3000
    u = _draw(grf, shape, m)
    power = np.abs(np.fft.rfftn(u, axes=(1, 2), norm="forward")) ** 2
    k1 = np.fft.fftfreq(12, 1 / 12)[:, None]
    k2 = np.fft.rfftfreq(10, 1 / 10)[None, :]
    lam = c * ((2 * np.pi * k1 / 2.0) ** 2 + (2 * np.pi * k2 / 0.5) ** 2 + tau**2) ** (-alpha)
    ratio = power.mean(0) / (lam / (2.0 * 0.5))
    # |u_hat|^2 / E is Exp(1) for complex modes (relative sd 1/sqrt(m)) and chi^2_1 for the real
    # ones (k = 0 and Nyquist of the rfft axis, relative sd sqrt(2/m)): 5 sd everywhere.
    real = np.zeros_like(ratio, bool)
    real[0, 0] = real[6, 0] = real[0, 5] = real[6, 5] = True
    sd = np.where(real, np.sqrt(2 / m), 1 / np.sqrt(m))
    assert np.all(np.abs(ratio - 1) < 5 * sd), np.max(np.abs(ratio - 1) / sd)
    np.testing.assert_allclose(grf.eigenvalues(shape), lam, rtol=1e-5)
    # The pointwise variance is the trace sum over the full spectrum.
    full = c * (
        (2 * np.pi * k1 / 2.0) ** 2 + (2 * np.pi * np.fft.fftfreq(10, 0.1) / 0.5) ** 2 + tau**2
    ) ** (-alpha)
    np.testing.assert_allclose(u.var(0).mean(), full.sum() / (2.0 * 0.5), rtol=5 * np.sqrt(2 / m))


def test_neumann_covariance_in_the_cosine_basis():
    """Zero-Neumann fields: recover the KL coefficients with the explicit cosine basis and check
    that, scaled by sqrt(lambda_k), they are independent standard normals."""
    n, length, (alpha, tau) = 9, 1.5, (2.0, 3.0)
    grf = pde.GaussianRandomField(alpha, tau, 1.0, lengths=length, boundary="neumann")
    m = 4000
    u = _draw(grf, (n,), m, seed=1)
    x = np.arange(n) * length / (n - 1)
    k = np.arange(n)
    basis = np.sqrt((2 - (k == 0)) / length) * np.cos(np.pi * np.outer(x, k) / length)
    lam = ((np.pi * k / length) ** 2 + tau**2) ** (-alpha)
    xi = np.linalg.solve(basis, u.T).T / np.sqrt(lam)
    cov = xi.T @ xi / m
    np.testing.assert_array_less(np.abs(np.diag(cov) - 1), 5 * np.sqrt(2 / m))
    off = cov[~np.eye(n, dtype=bool)]
    np.testing.assert_array_less(np.abs(off), 5 / np.sqrt(m))
    # The node grid includes both ends: zero normal derivative there in the mean sense.
    np.testing.assert_allclose(np.asarray(grf.grid((n,)))[0], x, atol=1e-6)


def test_zero_mean_and_2d_neumann_shapes():
    grf = pde.GaussianRandomField(2.0, 3.0, boundary="neumann", zero_mean=True)
    u = np.asarray(jax.jit(lambda k: grf.sample(k, (7, 5)))(jax.random.PRNGKey(0)), np.float64)
    chex.assert_shape(u, (7, 5))
    # The constant mode is the trapezoid-weighted mean of a cosine series on the nodes.
    w1 = np.r_[0.5, np.ones(5), 0.5] / 6
    w2 = np.r_[0.5, np.ones(3), 0.5] / 4
    assert abs(w1 @ u @ w2) < 1e-6
    per = jax.jit(lambda k: pde.gaussian_random_field(k, 16, alpha=2.0, tau=0.0, zero_mean=True))(
        jax.random.PRNGKey(1)
    )
    assert abs(float(jnp.mean(per))) < 1e-6
    assert float(pde.GaussianRandomField(zero_mean=True).eigenvalues(8)[0]) == 0.0


def test_sweep_over_alpha_compiles_once_and_bad_arguments():
    key = jax.random.PRNGKey(2)
    draw = jax.jit(jax.vmap(lambda a: pde.GaussianRandomField(a, 3.0).sample(key, (32,))))
    u = draw(jnp.array([1.5, 3.0]))
    # Same noise, smoother covariance: the larger alpha has less high-frequency energy.
    hi = [float(jnp.sum(jnp.abs(jnp.fft.rfft(v)[8:]) ** 2)) for v in u]
    assert hi[1] < hi[0]
    with pytest.raises(ValueError, match="boundary"):
        pde.GaussianRandomField(boundary="dirichlet")
    with pytest.raises(ValueError, match="tau"):
        pde.GaussianRandomField(tau=0.0)
    with pytest.raises(ValueError, match="shape"):
        pde.GaussianRandomField(boundary="neumann").sample(key, (1, 4))
    with pytest.raises(ValueError, match="lengths"):
        pde.GaussianRandomField(lengths=(1.0, 2.0)).sample(key, (4, 4, 4))


def test_traced_negative_parameters_raise():
    """A traced negative scale gave a NaN draw silently (square roots of negative variances);
    the concrete one is rejected at construction."""
    key = jax.random.PRNGKey(0)
    draw = jax.jit(lambda scale: pde.GaussianRandomField(2.0, 3.0, scale).sample(key, (8,)))
    assert np.all(np.isfinite(draw(1.0)))
    with pytest.raises(Exception, match="GaussianRandomField: scale must be finite and > 0"):
        jax.block_until_ready(draw(-1.0))
    with pytest.raises(ValueError, match="GaussianRandomField: alpha"):
        pde.GaussianRandomField(float("nan"))
