"""Measurement operators, measurements and the guided denoisers of jaxsolve.diffusion.inverse."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.diffusion import Heun, analytic, karras_sigmas, sample
from jaxsolve.diffusion import inverse as inv


def _operators():
    key = jax.random.PRNGKey(0)
    return {
        "mask": inv.Mask(np.array([1.0, 0, 1, 1, 0, 0, 1, 1])),
        "subsample_1d": inv.Subsample(2, (8,)),
        "subsample_2d": inv.Subsample(2, (4, 4)),
        "box_blur": inv.box_blur((8,), 3),
        "gaussian_blur_2d": inv.gaussian_blur((4, 4), 0.8),
        "dense": inv.random_projection(key, 5, 8),
        "function": inv.LinearFunction(lambda x: 2.0 * x[:3] - x[3:6], (8,)),
    }


@pytest.mark.parametrize("name", list(_operators()))
def test_operator_methods_match_its_dense_matrix(x64, name):
    A = _operators()[name]
    x = jax.random.normal(jax.random.PRNGKey(1), (3, *A.in_shape))
    y = jax.random.normal(jax.random.PRNGKey(2), (3, *A.out_shape))
    # One program per operator (run op by op, each primitive would compile on its own).
    run = eqx.filter_jit(
        lambda A, x, y: (A.matrix(), A(x), A.transpose(y), A.gram_solve(y, 0.7, 0.3), A.pinv(y))
    )
    M, ax, aty, solved, pinv = (np.asarray(v).reshape(v.shape[0], -1) for v in run(A, x, y))
    xf, yf = np.asarray(x).reshape(3, -1), np.asarray(y).reshape(3, -1)
    np.testing.assert_allclose(ax, xf @ M.T, atol=1e-13)
    np.testing.assert_allclose(aty, yf @ M, atol=1e-13)
    gram = 0.7 * M @ M.T + 0.3 * np.eye(M.shape[0])
    np.testing.assert_allclose(solved, np.linalg.solve(gram, yf.T).T, atol=1e-12)
    # The pseudo-inverse, also where A A^T is singular (the mask's unobserved entries).
    np.testing.assert_allclose(pinv, yf @ np.linalg.pinv(M).T, atol=1e-10)


def test_operators_are_data_under_vmap(x64):
    """A sweep over masks (or noise levels) is one program over array fields."""
    masks = jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    x = jnp.array([1.0, 2.0, 3.0])
    out = jax.vmap(lambda m: inv.Mask(m).pinv(inv.Mask(m)(x)))(masks)
    np.testing.assert_array_equal(out, masks * x)


def test_measure_and_likelihood(x64):
    A = inv.Subsample(2, (4,))
    x0 = jnp.array([1.0, 3.0, -1.0, 5.0])
    clean = inv.measure(jax.random.PRNGKey(0), A, x0, 0.0)
    np.testing.assert_array_equal(clean.y, [2.0, 2.0])
    noisy = inv.measure(jax.random.PRNGKey(0), A, jnp.tile(x0, (4000, 1)), 0.5)
    assert noisy.y.shape == (4000, 2)
    assert abs(float(jnp.std(noisy.y - 2.0)) - 0.5) < 0.02  # 4000 draws: std error ~0.006
    masked = inv.measure(jax.random.PRNGKey(0), inv.Mask(jnp.array([1.0, 0.0])), x0[:2], 0.5)
    assert masked.y[1] == 0.0 and masked.y[0] != 1.0  # no noise where nothing is observed
    m = inv.Measurement(A, jnp.array([2.0, 1.0]), 0.5)
    np.testing.assert_allclose(m.log_likelihood(x0), -0.5 * (0.0 + 1.0) / 0.25)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="mask"):
        inv.Mask(np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match="factor"):
        inv.Subsample(3, (8,))
    with pytest.raises(ValueError, match="linear"):
        inv.LinearFunction(lambda x: x**2, (3,))
    with pytest.raises(ValueError, match="out_shape"):
        inv.Measurement(inv.Subsample(2, (4,)), jnp.zeros(3), 0.1)
    with pytest.raises(ValueError, match="noise_std"):
        inv.Measurement(inv.Subsample(2, (4,)), jnp.zeros(2), -0.1)
    with pytest.raises(ValueError, match="noise_std > 0"):
        inv.DPS(lambda x, s: x, inv.Measurement(np.eye(2), jnp.zeros(2)), normalized=False)
    with pytest.raises(TypeError, match="Measurement"):
        inv.PiGDM(lambda x, s: x, (np.eye(2), jnp.zeros(2)))


def _textbook_posterior(prior_mean, prior_cov, M, y, noise_std):
    S = M @ prior_cov @ M.T + noise_std**2 * np.eye(M.shape[0])
    K = prior_cov @ M.T @ np.linalg.pinv(S)
    cov = prior_cov - K @ M @ prior_cov
    return prior_mean + K @ (y - M @ prior_mean), 0.5 * (cov + cov.T)


@pytest.mark.parametrize("name", ["mask", "box_blur", "dense"])
@pytest.mark.parametrize("noise_std", [0.0, 0.3])
def test_pigdm_and_ddnm_are_the_exact_posterior_denoiser_of_an_isotropic_gaussian(
    x64, name, noise_std
):
    """For a prior N(m, v I), p(x0 | x_s) is exactly N(D, r_s^2 I): PiGDM's guidance and DDNM's
    conditioning then give E[x0 | x_s, y], the denoiser of the exact posterior."""
    A = _operators()[name]
    d, v = 8, 1.7
    prior = analytic.Gaussian(np.linspace(-1.0, 1.0, d), v * np.ones(d))
    meas = inv.measure(
        jax.random.PRNGKey(3), A, prior.sample(jax.random.PRNGKey(4), 1)[0], noise_std
    )
    mean, cov = _textbook_posterior(
        np.asarray(prior.mean()),
        v * np.eye(d),
        np.asarray(A.matrix()),
        np.asarray(meas.y),
        noise_std,
    )
    posterior = analytic.Gaussian(mean, cov)
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(5), (4, d))
    pigdm = inv.PiGDM(prior, meas, data_variance=v)
    ddnm = inv.DDNM(prior, meas, data_variance=v)
    dps = inv.DPS(prior, meas)
    sigma = jnp.array([0.1, 1.0, 5.0, 0.5])  # one noise level per sample
    guided = jax.jit(lambda x, s: (pigdm(x, s), ddnm(x, s), dps(x, s), posterior.denoise(x, s)))
    out_pigdm, out_ddnm, out_dps, exact = guided(x, sigma)
    np.testing.assert_allclose(out_pigdm, exact, atol=1e-11)
    np.testing.assert_allclose(out_ddnm, exact, atol=1e-11)
    # DPS ignores the spread of x0 given x_s: not the exact posterior denoiser.
    assert float(jnp.max(jnp.abs(out_dps - exact))) > 1e-2


def test_likelihood_guidance_with_the_gaussian_likelihood_is_dps(x64):
    A = _operators()["dense"]
    prior = analytic.GaussianMixture(
        np.array([0.3, 0.7]), np.stack([np.ones(8), -np.ones(8)]), np.ones((2, 8))
    )
    meas = inv.measure(jax.random.PRNGKey(0), A, jnp.ones(8), 0.2)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 8))
    general = inv.LikelihoodGuidance(prior, meas.log_likelihood, scale=0.5)
    dps = inv.DPS(prior, meas, scale=0.5, normalized=False)
    sig = jnp.array([0.3, 0.7, 2.0])

    @jax.jit
    def run(x):
        # Per-sample sigma (leading batch axes) acts sample by sample.
        each = jax.vmap(lambda xi, si: dps(xi[None], si)[0])(x, sig)
        return general(x, 0.7), dps(x, 0.7), dps(x, sig), each

    out_general, out_dps, out_batch, out_each = run(x)
    np.testing.assert_allclose(out_general, out_dps, atol=1e-12)
    np.testing.assert_allclose(out_batch, out_each, atol=1e-12)


def test_guidance_scale_and_noise_level_sweep_compiles_once(x64):
    A = inv.Mask(jnp.array([1.0, 0.0, 1.0]))
    prior = analytic.Gaussian(jnp.zeros(3), jnp.ones(3))
    x = jnp.ones((2, 3))

    def guided(noise_std, scale):
        meas = inv.Measurement(A, jnp.array([0.5, 0.0, -0.5]), noise_std)
        return inv.PiGDM(prior, meas, scale=scale)(x, 1.0)

    swept = jax.jit(jax.vmap(guided))(jnp.array([0.1, 0.3]), jnp.array([1.0, 0.5]))
    np.testing.assert_allclose(swept[1], guided(0.3, 0.5), atol=1e-12)


def test_pigdm_samples_the_exact_posterior_of_an_isotropic_gaussian(x64):
    """The guided denoiser is exact, so the driver's ODE samples are the posterior's up to the
    solver's discretisation (Heun, 24 steps) and Monte-Carlo error."""
    d, v, n = 4, 1.0, 2000
    prior = analytic.Gaussian(jnp.array([0.5, -0.5, 1.0, 0.0]), v * jnp.ones(d))
    A = inv.Mask(jnp.array([1.0, 0.0, 1.0, 0.0]))
    meas = inv.Measurement(A, jnp.array([1.5, 0.0, -1.0, 0.0]), 0.2)
    mean, cov = _textbook_posterior(
        np.asarray(prior.mean()), v * np.eye(d), np.asarray(A.matrix()), np.asarray(meas.y), 0.2
    )
    sigmas = karras_sigmas(24, 0.002, 80.0)
    z = sigmas[0] * jax.random.normal(jax.random.PRNGKey(0), (n, d))
    xs = np.asarray(sample(inv.PiGDM(prior, meas, data_variance=v), z, sigmas, Heun()))
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(xs.mean(0) - mean) < 5 * se)
    np.testing.assert_allclose(np.cov(xs.T), cov, atol=5 * np.sqrt(2.0 / n) * np.max(cov))


def test_mcg_keeps_the_measurement_and_guides_the_rest(x64):
    """Noiseless inpainting: every MCG sample has the observed entries exactly; the unobserved
    entry of a correlated Gaussian prior moves toward its posterior mean."""
    cov = jnp.array([[1.0, 0.8], [0.8, 1.0]])
    prior = analytic.Gaussian(jnp.zeros(2), cov)
    meas = inv.Measurement(inv.Mask(jnp.array([1.0, 0.0])), jnp.array([1.5, 0.0]), 0.0)
    sigmas = karras_sigmas(12, 0.002, 80.0)
    z = sigmas[0] * jax.random.normal(jax.random.PRNGKey(0), (400, 2))
    from jaxsolve.diffusion import EulerAncestral

    run = jax.jit(
        lambda scale: sample(
            prior,
            z,
            sigmas,
            inv.MCG(EulerAncestral(), meas, scale),
            key=jax.random.PRNGKey(1),
            full_output=True,
        )
    )
    guided, projected = run(1.0), run(0.0)
    np.testing.assert_array_equal(guided.value[:, 0], 1.5)
    assert int(guided.nfe) == 12  # one guided evaluation per step
    # Exact posterior of the unobserved entry: N(0.8 * 1.5, 1 - 0.64). The projection alone (the
    # score-SDE replacement, scale 0) lags behind; the manifold-constrained gradient closes most of
    # the gap (400 samples: Monte-Carlo standard error 0.03).
    err_guided = abs(float(guided.value[:, 1].mean()) - 1.2)
    err_projected = abs(float(projected.value[:, 1].mean()) - 1.2)
    assert err_guided < 0.15 < err_projected
    with pytest.raises(TypeError, match="Measurement"):
        inv.MCG(EulerAncestral(), (np.eye(2), jnp.zeros(2)))
