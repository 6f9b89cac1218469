"""Exact posterior oracles: ``condition(A, y, noise_std)`` of the analytic oracles.

References are computed here with dense matrices (``A.matrix()``) and numpy; the library never
builds them.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd
from jaxsolve.diffusion.analytic import Empirical, Gaussian, GaussianMixture
from jaxsolve.diffusion.inverse import (
    Blur,
    Dense,
    LinearFunction,
    Mask,
    Measurement,
    Subsample,
    box_blur,
    gaussian_blur,
)


def _spd(rng, d, scale=1.0, floor=0.1):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + floor * np.eye(d))


def _dense(A):
    """The dense matrix of anything ``condition`` accepts (test-side only)."""
    if isinstance(A, np.ndarray):
        return A
    return np.asarray(A.matrix())


def _conjugate(mean, cov, A, y, noise_std):
    """Textbook posterior: C - C A^T G^+ A C and m + C A^T G^+ (y - A m), G = A C A^T + s^2 I."""
    g = A @ cov @ A.T + noise_std**2 * np.eye(A.shape[0])
    gain = cov @ A.T @ np.linalg.pinv(g, hermitian=True)
    return mean + gain @ (y - A @ mean), cov - gain @ A @ cov


def _log_normal(y, mean, cov):
    """log N(y; mean, cov) for a non-singular cov."""
    r = y - mean
    sign, logdet = np.linalg.slogdet(cov)
    assert sign > 0
    return -0.5 * (r @ np.linalg.solve(cov, r) + logdet + len(y) * np.log(2 * np.pi))


# Operators on d = 8 points; the image operators act on a 2x4 reshaping of them.
_MASK = np.array([1.0, 0, 1, 1, 0, 0, 1, 0])
_DENSE = np.random.default_rng(3).normal(size=(3, 8))


def _operator_cases():
    tall = np.random.default_rng(4).normal(size=(10, 8)) @ np.diag(np.r_[np.ones(5), np.zeros(3)])
    return {
        "dense": (Dense(_DENSE), 0.3),
        "dense_noiseless": (Dense(_DENSE), 0.0),
        "matrix": (_DENSE, 0.2),
        "tall_rank_deficient_noiseless": (Dense(tall), 0.0),
        "mask_noiseless": (Mask(_MASK.reshape(2, 4)), 0.0),
        "mask": (Mask(_MASK.reshape(2, 4)), 0.2),
        "subsample": (Subsample(2, (2, 4)), 0.1),
        "subsample_noiseless": (Subsample(2, (2, 4)), 0.0),
        "box_blur_noiseless": (box_blur((8,), 3), 0.0),
        "gaussian_blur": (gaussian_blur((2, 4), 0.8), 0.05),
        "linear_function": (LinearFunction(lambda x: jnp.cumsum(x)[::3], (8,)), 0.1),
        "function": (lambda x: jnp.stack([x[0] - x[5], 2.0 * x[3] + x[7]]), 0.1),
    }


# The default run covers every operator type once; the rest are slow.
OPERATORS = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("gaussian_blur", "mask") else name
    for name in _operator_cases()
]


@pytest.mark.parametrize("name", OPERATORS)
def test_gaussian_condition_equals_conjugate_formulas(x64, name):
    A, noise_std = _operator_cases()[name]
    d = 8
    if isinstance(A, np.ndarray):
        mat, out_shape = A, A.shape[:1]
    else:
        op = A if isinstance(A, LinearFunction | Dense | Mask | Subsample | Blur) else None
        op = LinearFunction(A, (d,)) if op is None else op
        mat, out_shape = np.asarray(op.matrix()), op.out_shape
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(d, 6)))[0]
    for cov in (_spd(rng, d), basis @ np.diag([0.2, 0.5, 0.8, 1.1, 1.5, 2.0]) @ basis.T):
        # A non-singular prior, then data on a 6-dimensional subspace.
        mean = rng.normal(size=d)
        prior = Gaussian(mean, cov)
        # A measurement of a prior draw (so a noiseless y lies in the prior's support), plus noise.
        x0 = np.asarray(prior.sample(jax.random.PRNGKey(1), 1)[0])
        y = mat @ x0 + noise_std * rng.normal(size=mat.shape[0])
        post = prior.condition(A, y.reshape(out_shape), noise_std)
        ref_mean, ref_cov = _conjugate(mean, cov, mat, y, noise_std)
        assert isinstance(post, Gaussian)
        np.testing.assert_allclose(post.mean(), ref_mean, atol=1e-10)
        np.testing.assert_allclose(post.covariance(), ref_cov, atol=1e-10)
        if noise_std > 0:
            g = mat @ cov @ mat.T + noise_std**2 * np.eye(mat.shape[0])
            np.testing.assert_allclose(
                prior.log_evidence(A, y.reshape(out_shape), noise_std),
                _log_normal(y, mat @ mean, g),
                rtol=1e-11,
            )


def test_noiseless_evidence_is_the_density_on_the_observed_coordinates(x64):
    # Pseudo-determinant convention: a noiseless mask's evidence is the prior marginal density of
    # the observed coordinates.
    rng = np.random.default_rng(1)
    d = 8
    mean, cov = rng.normal(size=d), _spd(rng, d)
    obs = _MASK.astype(bool)
    y = np.where(obs, rng.normal(size=d), 0.0)
    ev = Gaussian(mean, cov).log_evidence(Mask(_MASK), y, 0.0)
    np.testing.assert_allclose(
        ev, _log_normal(y[obs], mean[obs], cov[np.ix_(obs, obs)]), rtol=1e-11
    )


def test_measurement_object_is_accepted(x64):
    rng = np.random.default_rng(2)
    prior = Gaussian(rng.normal(size=8), _spd(rng, 8))
    op, y = Mask(_MASK.reshape(2, 4)), rng.normal(size=(2, 4))
    a = prior.condition(Measurement(op, y, 0.2))
    b = prior.condition(op, y, 0.2)
    np.testing.assert_array_equal(a.mean(), b.mean())
    np.testing.assert_array_equal(a.covariance(), b.covariance())


# ------------------------------------------------------------------------------------- mixtures


def _mixture(rng, d, k=3):
    weights = rng.dirichlet(np.full(k, 3.0))
    means = 2.0 * rng.normal(size=(k, d))
    covs = np.stack([_spd(rng, d, s) for s in rng.uniform(0.2, 1.0, k)])
    return weights, means, covs


def _dense_mixture_posterior(weights, means, covs, A, y, noise_std):
    """Per-component conjugate formulas and weights w_k N(y; A m_k, A C_k A^T + s^2 I)."""
    post = [_conjugate(m, c, A, y, noise_std) for m, c in zip(means, covs, strict=True)]
    log_w = np.log(weights) + np.array(
        [
            _log_normal(y, A @ m, A @ c @ A.T + noise_std**2 * np.eye(len(y)))
            for m, c in zip(means, covs, strict=True)
        ]
    )
    w = np.exp(log_w - log_w.max())
    return w / w.sum(), np.stack([p[0] for p in post]), np.stack([p[1] for p in post])


@pytest.mark.parametrize(
    "A, noise_std",
    [
        (Dense(_DENSE), 0.3),
        (Dense(_DENSE), 0.0),
        pytest.param(box_blur((8,), 3), 0.4, marks=pytest.mark.slow),
        pytest.param(Subsample(2, (2, 4)), 0.1, marks=pytest.mark.slow),
    ],
    ids=["dense", "dense_noiseless", "blur", "subsample"],
)
def test_mixture_condition_equals_dense_reference(x64, A, noise_std):
    rng = np.random.default_rng(5)
    weights, means, covs = _mixture(rng, 8)
    prior = GaussianMixture(weights, means, covs)
    mat = _dense(A)
    y = mat @ means[1] + 0.5 * rng.normal(size=mat.shape[0])
    post = prior.condition(A, y.reshape(A.out_shape), noise_std)
    ref_w, ref_means, ref_covs = _dense_mixture_posterior(weights, means, covs, mat, y, noise_std)
    assert isinstance(post, GaussianMixture)
    np.testing.assert_allclose(post.weights, ref_w, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(post.means, ref_means, atol=1e-10)
    post_covs = np.einsum("kij,kj,klj->kil", post.eigvecs, post.eigvals, post.eigvecs)
    np.testing.assert_allclose(post_covs, ref_covs, atol=1e-10)
    m = np.einsum("k,kd->d", ref_w, ref_means)
    second = np.einsum("k,kij->ij", ref_w, ref_covs + ref_means[:, :, None] * ref_means[:, None])
    np.testing.assert_allclose(post.mean(), m, atol=1e-10)
    np.testing.assert_allclose(post.covariance(), second - np.outer(m, m), atol=1e-10)
    g = [mat @ c @ mat.T + noise_std**2 * np.eye(len(y)) for c in covs]
    log_joint = np.log(weights) + [
        _log_normal(y, mat @ mk, gk) for mk, gk in zip(means, g, strict=False)
    ]
    log_ev = np.log(np.sum(np.exp(log_joint - log_joint.max()))) + log_joint.max()
    np.testing.assert_allclose(
        prior.log_evidence(A, y.reshape(A.out_shape), noise_std), log_ev, rtol=1e-11
    )


def test_mixture_condition_matches_monte_carlo_reweighting(x64):
    # Self-normalised importance sampling of prior draws by the likelihood. The standard error of
    # a posterior expectation E[f] is about sqrt(Var_post f / ESS), ESS = 1 / sum(w_i^2); the
    # tolerance is 5 standard errors (ESS is about 7e4 here, so errors of about 0.005).
    rng = np.random.default_rng(6)
    d, n, noise_std = 2, 400_000, 0.5
    weights, means, covs = _mixture(rng, d)
    A = np.array([[1.0, -0.7]])
    y = A @ means[0] + 0.3
    post = GaussianMixture(weights, means, covs).condition(A, y, noise_std)

    comp = rng.choice(len(weights), size=n, p=weights)
    chol = np.linalg.cholesky(covs)
    x = means[comp] + np.einsum("nij,nj->ni", chol[comp], rng.normal(size=(n, d)))
    log_lik = -0.5 * np.sum((y - x @ A.T) ** 2, axis=1) / noise_std**2
    w = np.exp(log_lik - log_lik.max())
    w /= w.sum()
    ess = 1.0 / np.sum(w * w)
    assert ess > 1e4

    def check(f, exact):
        estimate = np.einsum("n,n...->...", w, f)
        var = np.einsum("n,n...->...", w, (f - estimate) ** 2)
        np.testing.assert_array_less(np.abs(estimate - exact), 5 * np.sqrt(var / ess) + 1e-12)

    check(np.eye(len(weights))[comp], np.asarray(post.weights))
    check(x, np.asarray(post.mean()))
    centred = x - np.asarray(post.mean())
    check(centred[:, :, None] * centred[:, None, :], np.asarray(post.covariance()))


# --------------------------------------------------------------------------- samples, Bayes' rule


def _sample_moments_match(samples, mean, cov):
    """Sample mean and covariance within 5 standard errors (estimated from the samples)."""
    samples, mean, cov = np.asarray(samples), np.asarray(mean), np.asarray(cov)
    n = samples.shape[0]
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(samples.mean(0) - mean), 5 * se_mean)
    c = samples - mean
    prod = c[:, :, None] * c[:, None, :]
    se_cov = prod.std(0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(prod.mean(0) - cov), 5 * se_cov + 1e-12)


def _posterior(name, rng):
    pts = rng.normal(size=(30, 2))
    A, y = np.array([[1.0, -0.5]]), np.array([0.7])
    if name == "gaussian":
        prior = Gaussian(rng.normal(size=8), _spd(rng, 8))
        return prior.condition(Mask(_MASK.reshape(2, 4)), rng.normal(size=(2, 4)), 0.2)
    if name == "mixture":
        return GaussianMixture(*_mixture(rng, 2)).condition(A, y, 0.3)
    if name == "empirical":
        return Empirical(pts).condition(A, y, 0.5)
    return Empirical(pts, smoothing=0.3).condition(A, y, 0.2)


@pytest.mark.parametrize(
    "name",
    [
        "gaussian",
        pytest.param("empirical", marks=pytest.mark.slow),
        # (GaussianMixture.sample is the prior's; its moments are checked in test_analytic)
        pytest.param("mixture", marks=pytest.mark.slow),
        pytest.param("empirical_smooth", marks=pytest.mark.slow),
    ],
)
def test_posterior_samples_match_its_moments(x64, name):
    post = _posterior(name, np.random.default_rng(7))
    samples = post.sample(jax.random.PRNGKey(3), 20_000)
    _sample_moments_match(samples, post.mean(), post.covariance())


@pytest.mark.parametrize(
    "kind", ["gaussian", "mixture", pytest.param("empirical_smooth", marks=pytest.mark.slow)]
)
def test_bayes_rule_holds_exactly(x64, kind):
    # log p(x | y) = log p(x) + log N(y; A x, s^2 I) - log p(y) at noise level 0.
    rng = np.random.default_rng(8)
    noise_std = 0.4
    if kind == "empirical_smooth":
        pts, h = rng.normal(size=(30, 2)), 0.5
        A, y = np.array([[1.0, -0.5]]), np.array([0.7])
        prior = Empirical(pts, smoothing=h)
        log_ev = GaussianMixture(np.full(30, 1 / 30), pts, np.full((30, 2), h * h)).log_evidence(
            A, y, noise_std
        )
    else:
        A, y = _DENSE, rng.normal(size=3)
        if kind == "gaussian":
            prior = Gaussian(rng.normal(size=8), _spd(rng, 8))
        else:
            prior = GaussianMixture(*_mixture(rng, 8))
        log_ev = prior.log_evidence(A, y, noise_std)
    post = prior.condition(A, y, noise_std)
    x = rng.normal(size=(6, A.shape[1])) * 1.5
    log_lik = -0.5 * (
        np.sum((y - x @ A.T) ** 2, axis=1) / noise_std**2
        + len(y) * np.log(2 * np.pi * noise_std**2)
    )
    np.testing.assert_allclose(
        post.log_prob(x, 0.0), prior.log_prob(x, 0.0) + log_lik - log_ev, rtol=1e-11, atol=1e-11
    )


def test_empirical_condition_reweights_the_points(x64):
    rng = np.random.default_rng(9)
    pts, w = rng.normal(size=(30, 2)), rng.dirichlet(np.ones(30))
    A, y, noise_std = np.array([[1.0, -0.5]]), np.array([0.7]), 0.7
    post = Empirical(pts, weights=w).condition(A, y, noise_std)
    lik = np.exp(-0.5 * np.sum((y - pts @ A.T) ** 2, axis=1) / noise_std**2)
    assert isinstance(post, Empirical)
    np.testing.assert_allclose(post.weights, w * lik / np.sum(w * lik), rtol=1e-12)
    np.testing.assert_array_equal(post.points, pts)


def test_smoothed_empirical_condition_is_the_conditioned_mixture(x64):
    # Its prior is sum_i w_i N(p_i, h^2 I): the dense per-component reference applies.
    rng = np.random.default_rng(10)
    pts, w, h = rng.normal(size=(30, 2)), rng.dirichlet(np.ones(30)), 0.4
    A, y = np.array([[1.0, -0.5]]), np.array([0.7])
    post = Empirical(pts, smoothing=h, weights=w).condition(A, y, 0.1)
    covs = np.broadcast_to(h * h * np.eye(2), (30, 2, 2))
    ref_w, ref_means, ref_covs = _dense_mixture_posterior(w, pts, covs, A, y, 0.1)
    assert isinstance(post, GaussianMixture)
    np.testing.assert_allclose(post.weights, ref_w, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(post.means, ref_means, atol=1e-12)
    post_covs = np.einsum("kij,kj,klj->kil", post.eigvecs, post.eigvals, post.eigvecs)
    np.testing.assert_allclose(post_covs, ref_covs, atol=1e-12)


@pytest.mark.slow
def test_weighted_empirical_is_the_weighted_kernel_density(x64):
    rng = np.random.default_rng(11)
    pts, w, h, s = rng.normal(size=(6, 2)), rng.dirichlet(np.ones(6)), 0.3, 0.5
    e = Empirical(pts, smoothing=h, weights=w)
    x = rng.normal(size=(7, 2)) * 2
    v = h * h + s * s
    logits = np.log(w) - 0.5 * np.sum((x[:, None] - pts) ** 2, axis=-1) / v
    top = logits.max(axis=1, keepdims=True)
    log_prob = np.log(np.sum(np.exp(logits - top), axis=1)) + top[:, 0] - np.log(2 * np.pi * v)
    r = np.exp(logits - top)
    r /= r.sum(axis=1, keepdims=True)
    denoised = x + s * s * (r @ pts - x) / v  # Tweedie
    # (the score shares the log-density's weighted logits)
    np.testing.assert_allclose(e.log_prob(x, s), log_prob, rtol=1e-12)
    np.testing.assert_allclose(e.denoise(x, s), denoised, rtol=1e-11)
    mean = w @ pts
    np.testing.assert_allclose(e.mean(), mean, rtol=1e-12)
    c = pts - mean
    np.testing.assert_allclose(e.covariance(), (w * c.T) @ c + h * h * np.eye(2), rtol=1e-12)


# ------------------------------------------------------------------------ the sampling driver


def test_ode_solver_reproduces_the_gaussian_posterior_flow(x64):
    # The driver's samples of the posterior oracle converge to its exact flow map at Heun's order
    # (2: halving the step divides the error by about 4, asserted > 3), and after 20 steps their
    # moments match the exact posterior's within the Monte-Carlo tolerance.
    rng = np.random.default_rng(12)
    d, sigma_max = 8, 80.0
    prior = Gaussian(rng.normal(size=d), _spd(rng, d))
    mask = np.array([1.0, 0, 1, 1, 0, 0, 1, 0]).reshape(2, 4)
    post = prior.condition(Mask(mask), rng.normal(size=(2, 4)), 0.1)
    x = post.sample(jax.random.PRNGKey(4), 512, sigma_max)
    exact = post.ode_solution(x, sigma_max, 0.0)
    pushed, err = {}, {}
    for n in (10, 20):  # one padded grid shape: one compilation
        grid = jd.karras_sigmas(n, 0.002, sigma_max, max_steps=20)
        pushed[n] = jd.sample(post, x, grid, jd.Heun())
        err[n] = float(jnp.sqrt(jnp.mean((pushed[n] - exact) ** 2)))
    assert err[10] / err[20] > 3.0, err
    _sample_moments_match(pushed[20], post.mean(), post.covariance())


@pytest.mark.slow
def test_ode_solver_reproduces_a_mixture_posterior(x64):
    rng = np.random.default_rng(13)
    sigma_max = 20.0
    A, y = np.array([[1.0, -0.5]]), np.array([0.7])
    post = GaussianMixture(*_mixture(rng, 2)).condition(A, y, 0.3)
    x = post.sample(jax.random.PRNGKey(5), 400, sigma_max)
    pushed = jd.sample(post, x, jd.karras_sigmas(20, 0.002, sigma_max), jd.DPMSolverPP(order=2))
    _sample_moments_match(pushed, post.mean(), post.covariance())


@pytest.mark.slow
def test_ode_solver_matches_the_reference_flow_of_a_64d_mixture_posterior(x64):
    # d = 64 (an 8x8 image), 4x subsampling: pushed points against the diffrax reference flow.
    rng = np.random.default_rng(14)
    d, sigma_max = 64, 80.0
    weights, means, covs = _mixture(rng, d)
    op = Subsample(2, (8, 8))
    y = op(jnp.asarray(means[0]).reshape(8, 8)) + 0.1
    post = GaussianMixture(weights, means, covs).condition(op, y, 0.1)
    x = post.sample(jax.random.PRNGKey(6), 16, sigma_max)
    ref = post.reference_solution(x, sigma_max, 0.0)
    err = {}
    for n in (50, 100, 200):
        pushed = jd.sample(post, x, jd.karras_sigmas(n, 0.002, sigma_max), jd.Heun())
        err[n] = float(jnp.max(jnp.abs(pushed - ref)))
    assert err[50] / err[100] > 3.0 and err[100] / err[200] > 3.0, err
    assert err[200] < 1e-3, err


# ------------------------------------------------------------------------------ traced, errors


def test_vmap_over_noise_levels_and_masks_equals_separate_calls(x64):
    rng = np.random.default_rng(15)
    d = 8
    prior = Gaussian(rng.normal(size=d), _spd(rng, d))
    mixture = GaussianMixture(*_mixture(rng, d))
    y = rng.normal(size=(2, 4))
    mask = Mask(np.array([1.0, 0, 1, 1, 0, 0, 1, 0]).reshape(2, 4))
    levels = jnp.array([0.0, 0.05, 0.3, 1.0])
    for oracle in (prior, mixture):
        swept = jax.jit(jax.vmap(lambda s, o=oracle: o.condition(mask, y, s).mean()))(levels)
        for i, s in enumerate(levels):
            np.testing.assert_allclose(
                swept[i], oracle.condition(mask, y, float(s)).mean(), rtol=1e-12, atol=1e-12
            )
    masks = jnp.asarray(rng.integers(0, 2, size=(5, 2, 4)), dtype=float)
    swept = jax.jit(jax.vmap(lambda mk: prior.condition(Mask(mk), y, 0.1).mean()))(masks)
    for i in range(5):
        np.testing.assert_allclose(
            swept[i], prior.condition(Mask(masks[i]), y, 0.1).mean(), rtol=1e-12, atol=1e-12
        )


@pytest.mark.slow
def test_vmap_over_noise_levels_reweights_an_empirical(x64):
    rng = np.random.default_rng(17)
    emp = Empirical(rng.normal(size=(10, 8)))
    mask, y = Mask(_MASK.reshape(2, 4)), rng.normal(size=(2, 4))
    levels = jnp.array([0.05, 0.3, 1.0])
    swept = jax.jit(jax.vmap(lambda s: emp.condition(mask, y, s).weights))(levels)
    for i, s in enumerate(levels):
        np.testing.assert_allclose(swept[i], emp.condition(mask, y, float(s)).weights, rtol=1e-12)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: g.condition(Mask(np.ones(4)), np.zeros(4), 0.1), "d = 3"),
        (lambda g: g.condition(np.ones((2, 4)), np.zeros(2), 0.1), "d = 3"),
        (lambda g: g.condition(Mask(np.ones(3)), np.zeros(2), 0.1), "y must have shape"),
        (lambda g: g.condition(np.ones((2, 3)), np.zeros(3), 0.1), "y must have shape"),
        (lambda g: g.condition(Mask(np.ones(3)), np.zeros(3), -0.1), "noise_std"),
        (lambda g: g.condition(Mask(np.ones(3)), np.zeros(3), np.ones(2)), "noise_std"),
        (lambda g: g.condition(Mask(np.ones(3)), np.array([0.0, np.nan, 0.0]), 0.1), "finite"),
        (lambda g: g.condition(Mask(np.ones(3))), "y is required"),
        (lambda g: g.condition("A", np.zeros(3), 0.1), "A must be"),
    ],
)
def test_invalid_measurements_raise(call, match):
    rng = np.random.default_rng(16)
    oracles = [
        Gaussian(np.zeros(3), np.eye(3)),
        GaussianMixture(np.array([0.5, 0.5]), rng.normal(size=(2, 3)), np.ones((2, 3))),
        Empirical(rng.normal(size=(4, 3)), smoothing=0.2),
    ]
    for oracle in oracles:
        with pytest.raises((ValueError, TypeError), match=match):
            call(oracle)


def test_traced_invalid_noise_is_a_runtime_error(x64):
    prior = Gaussian(np.zeros(3), np.eye(3))
    fn = jax.jit(lambda s: prior.condition(Mask(np.ones(3)), jnp.zeros(3), s).mean())
    assert np.all(np.isfinite(fn(0.1)))
    with pytest.raises(Exception, match="noise_std"):
        fn(-0.1)
    emp = Empirical(np.eye(3))
    with pytest.raises(ValueError, match="noise_std must be positive"):
        emp.condition(Mask(np.ones(3)), jnp.zeros(3), 0.0)
    fn = jax.jit(lambda s: emp.condition(Mask(np.ones(3)), jnp.zeros(3), s).weights)
    with pytest.raises(Exception, match="noise_std must be positive"):
        fn(0.0)


def test_traced_smoothing_cannot_choose_the_posterior_type():
    def condition(h):
        return Empirical(np.eye(3), smoothing=h).condition(Mask(np.ones(3)), jnp.zeros(3), 0.1)

    with pytest.raises(ValueError, match="concrete smoothing"):
        jax.jit(lambda h: condition(h).mean())(0.2)


def test_invalid_empirical_weights_raise():
    with pytest.raises(ValueError, match="weights must sum to 1"):
        Empirical(np.eye(3), weights=np.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="weights must have shape"):
        Empirical(np.eye(3), weights=np.array([0.5, 0.5]))
