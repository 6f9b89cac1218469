import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsolve.diffusion.analytic import Empirical, Gaussian, GaussianMixture

from .._jaxpr import HIGHEST, dot_precisions


def _spd(rng, d, scale=1.0):
    a = rng.normal(size=(d, d))
    return scale * (a @ a.T / d + 0.2 * np.eye(d))


def _oracles(rng):
    """A representative set, built under whatever precision is active."""
    d = 3
    means = rng.normal(size=(3, d)) * 2.0
    covs = np.stack([_spd(rng, d, s) for s in (0.3, 1.0, 0.1)])
    return {
        "gaussian": Gaussian(means[0], covs[0]),
        "gaussian_diag": Gaussian(means[1], np.array([0.5, 2.0, 0.1])),
        "mixture_full": GaussianMixture(np.array([0.2, 0.5, 0.3]), means, covs),
        "mixture_diag": GaussianMixture(
            np.array([0.6, 0.4]), means[:2], np.array([[0.2, 0.3, 0.4], [1.0, 0.5, 0.2]])
        ),
        "empirical": Empirical(rng.normal(size=(20, d))),
        "empirical_smooth": Empirical(rng.normal(size=(20, d)), smoothing=0.3),
    }


NAMES = list(_oracles(np.random.default_rng(0)))
SIGMAS = [0.05, 0.5, 3.0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_score_is_gradient_of_log_prob(x64, name, sigma):
    o = _oracles(np.random.default_rng(0))[name]
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(1), (8, 3))
    grad = jax.vmap(jax.grad(lambda y: o.log_prob(y, sigma)))(x)
    np.testing.assert_allclose(o.score(x, sigma), grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sigma", SIGMAS)
def test_tweedie(x64, name, sigma):
    o = _oracles(np.random.default_rng(0))[name]
    x = 2.0 * jax.random.normal(jax.random.PRNGKey(2), (8, 3))
    np.testing.assert_allclose(
        o.denoise(x, sigma), x + sigma**2 * o.score(x, sigma), rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_normalises(x64, name):
    """Monte Carlo: E_{x ~ N(0, I*9)}[p_s(x) / q(x)] = 1 in 3-D (importance sampling)."""
    o = _oracles(np.random.default_rng(0))[name]
    sigma = 1.0
    q_std = 4.0
    z = jax.random.normal(jax.random.PRNGKey(3), (200_000, 3))
    x = o.mean() + q_std * z
    log_q = -0.5 * jnp.sum(z**2, -1) - 3 * np.log(q_std) - 1.5 * np.log(2 * np.pi)
    w = jnp.exp(o.log_prob(x, sigma) - log_q)
    est, se = float(jnp.mean(w)), float(jnp.std(w) / np.sqrt(w.shape[0]))
    assert abs(est - 1.0) < 5 * se + 1e-3, (est, se)


def test_gaussian_log_prob_closed_form(x64):
    rng = np.random.default_rng(4)
    mean, cov = rng.normal(size=4), _spd(rng, 4)
    g = Gaussian(mean, cov)
    x = rng.normal(size=(5, 4))
    for s in [0.0, 0.3, 2.0]:
        c = cov + s**2 * np.eye(4)
        diff = x - mean
        quad = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(c), diff)
        ref = -0.5 * quad - 0.5 * np.linalg.slogdet(2 * np.pi * c)[1]
        np.testing.assert_allclose(g.log_prob(x, s), ref, rtol=1e-12)
        np.testing.assert_allclose(
            g.denoise(x, s), mean + diff @ np.linalg.solve(c, cov), rtol=1e-10, atol=1e-12
        )


def test_gaussian_ode_solution_matches_diffrax(x64):
    rng = np.random.default_rng(5)
    g = Gaussian(rng.normal(size=3), _spd(rng, 3))
    x = g.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    for s0, s1 in [(20.0, 0.0), (20.0, 1.5), (0.5, 4.0)]:
        np.testing.assert_allclose(
            g.ode_solution(x, s0, s1), g.reference_solution(x, s0, s1), rtol=1e-8, atol=1e-8
        )


def test_gaussian_ode_solution_is_a_flow(x64):
    rng = np.random.default_rng(6)
    g = Gaussian(rng.normal(size=3), _spd(rng, 3))
    x = rng.normal(size=(4, 3)) * 10
    via = g.ode_solution(g.ode_solution(x, 10.0, 2.0), 2.0, 0.1)
    np.testing.assert_allclose(via, g.ode_solution(x, 10.0, 0.1), rtol=1e-12)
    # It transports the marginals: N(m, C + s0^2) -> N(m, C + s1^2) (checked on covariances).
    z = g.sample(jax.random.PRNGKey(1), 50_000, sigma=5.0)
    y = g.ode_solution(z, 5.0, 0.5)
    np.testing.assert_allclose(
        np.cov(np.asarray(y).T), np.asarray(g.covariance()) + 0.25 * np.eye(3), atol=0.08
    )


def test_one_component_mixture_equals_gaussian(x64):
    rng = np.random.default_rng(7)
    mean, cov = rng.normal(size=3), _spd(rng, 3)
    g, m = Gaussian(mean, cov), GaussianMixture(np.ones(1), mean[None], cov[None])
    x = rng.normal(size=(5, 3)) * 3
    for s in [0.1, 1.0, 10.0]:
        np.testing.assert_allclose(m.log_prob(x, s), g.log_prob(x, s), rtol=1e-13)
        np.testing.assert_allclose(m.score(x, s), g.score(x, s), rtol=1e-12)
        np.testing.assert_allclose(m.denoise(x, s), g.denoise(x, s), rtol=1e-12)
    x_t = g.sample(jax.random.PRNGKey(2), 4, sigma=30.0)
    np.testing.assert_allclose(
        m.reference_solution(x_t, 30.0, 0.0), g.ode_solution(x_t, 30.0, 0.0), rtol=1e-8, atol=1e-8
    )


def test_mixture_reference_solution_in_float32_is_close_to_float64():
    rng = np.random.default_rng(8)
    means = rng.normal(size=(3, 2)) * 3
    covs = np.stack([_spd(rng, 2, 0.2) for _ in range(3)])
    w = np.array([0.3, 0.3, 0.4])
    x = np.asarray(GaussianMixture(w, means, covs).sample(jax.random.PRNGKey(0), 4, sigma=40.0))
    y32 = np.asarray(GaussianMixture(w, means, covs).reference_solution(x, 40.0, 0.0))
    jax.config.update("jax_enable_x64", True)
    try:
        y64 = np.asarray(
            GaussianMixture(w, means, covs).reference_solution(x.astype(np.float64), 40.0, 0.0)
        )
    finally:
        jax.config.update("jax_enable_x64", False)
    np.testing.assert_allclose(y32, y64, atol=5e-4)


def test_empirical_at_tiny_sigma_returns_nearest_point(x64):
    rng = np.random.default_rng(9)
    pts = rng.normal(size=(50, 4))
    e = Empirical(pts)
    x = rng.normal(size=(10, 4))
    nearest = pts[np.argmin(((x[:, None] - pts[None]) ** 2).sum(-1), axis=1)]
    np.testing.assert_allclose(e.denoise(x, 1e-4), nearest, atol=1e-12)


def test_smoothed_empirical_equals_isotropic_mixture(x64):
    rng = np.random.default_rng(10)
    pts, h = rng.normal(size=(6, 2)), 0.4
    e = Empirical(pts, smoothing=h)
    m = GaussianMixture(np.full(6, 1 / 6), pts, np.full((6, 2), h**2))
    x = rng.normal(size=(7, 2)) * 2
    for s in [0.05, 0.7]:
        np.testing.assert_allclose(e.log_prob(x, s), m.log_prob(x, s), rtol=1e-12)
        np.testing.assert_allclose(e.denoise(x, s), m.denoise(x, s), rtol=1e-11)
    np.testing.assert_allclose(e.covariance(), m.covariance(), rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_sample_moments(name, sigma):
    o = _oracles(np.random.default_rng(0))[name]
    n = 100_000
    x = np.asarray(o.sample(jax.random.PRNGKey(11), n, sigma=sigma), dtype=np.float64)
    cov = np.asarray(o.covariance(), dtype=np.float64) + sigma**2 * np.eye(3)
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - np.asarray(o.mean())), 5 * se_mean + 1e-5)
    # Standard error of a sample covariance entry is about sqrt((c_ii c_jj + c_ij^2) / n).
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), 6 * se_cov + 1e-4)


def test_mixture_moments_closed_form(x64):
    rng = np.random.default_rng(12)
    w = np.array([0.25, 0.75])
    means, covs = rng.normal(size=(2, 3)), np.stack([_spd(rng, 3), _spd(rng, 3)])
    m = GaussianMixture(w, means, covs)
    mu = w @ means
    second = sum(wk * (ck + np.outer(mk, mk)) for wk, mk, ck in zip(w, means, covs, strict=True))
    np.testing.assert_allclose(m.mean(), mu, rtol=1e-13)
    np.testing.assert_allclose(m.covariance(), second - np.outer(mu, mu), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_oracle_products_are_full_precision(name):
    # An oracle is the yardstick, so its products ask for full precision: at the default, a GPU
    # rounds float32 operands to TF32 (relative error ~5e-4), more than the sampler errors it
    # measures (an emulated-TF32 run moved a guided UniPC sweep by 2e-2). CPU ignores the request,
    # so the jaxpr is where this can be checked here.
    oracle = _oracles(np.random.default_rng(0))[name]
    x = jnp.ones((4, oracle.dim), jnp.float32)
    s = jnp.full((4,), 0.5, jnp.float32)
    uses = {
        "denoise": (oracle.denoise, x, s),
        "score": (oracle.score, x, s),
        "covariance": (oracle.covariance,),
        "sample": (lambda k: oracle.sample(k, 4, sigma=0.5), jax.random.PRNGKey(0)),
    }
    for use, (fn, *args) in uses.items():
        precisions = dot_precisions(fn, *args)
        assert all(p == HIGHEST for p in precisions), (use, precisions)


def test_sample_does_not_depend_on_batch_size():
    o = _oracles(np.random.default_rng(0))["mixture_full"]
    key = jax.random.PRNGKey(13)
    np.testing.assert_array_equal(o.sample(key, 100)[:10], o.sample(key, 10))


def test_oracle_is_a_denoiser_and_jits():
    o = _oracles(np.random.default_rng(0))["mixture_full"]
    x = jnp.ones((3,))
    np.testing.assert_allclose(eqx.filter_jit(o)(x, 0.5), o.denoise(x, 0.5), rtol=1e-6)
    np.testing.assert_allclose(jax.jit(lambda s: o(x, s))(0.5), o.denoise(x, 0.5), rtol=1e-6)


def test_singular_gaussian_denoises_onto_its_support(x64):
    g = Gaussian(np.zeros(2), np.array([[1.0, 0.0], [0.0, 0.0]]))  # data on the x-axis
    x = np.array([[0.7, 2.0]])
    out = np.asarray(g.denoise(x, 1e-3))
    assert abs(out[0, 1]) < 1e-12 and out[0, 0] == pytest.approx(0.7, rel=1e-5)
    np.testing.assert_array_equal(g.denoise(x, 0.0), x)  # no noise: the identity, not NaN


# ---------------------------------------------------------------------------------------------
# Property tests over shapes and parameters


@settings(max_examples=6)  # every example has new shapes, so it compiles anew
@given(
    d=st.integers(1, 4),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**31 - 1),
    log_sigma=st.floats(-2.0, 1.5),
    diagonal=st.booleans(),
)
def test_mixture_properties(x64, d, k, seed, log_sigma, diagonal):
    rng = np.random.default_rng(seed)
    w = rng.dirichlet(np.ones(k))
    means = rng.normal(size=(k, d)) * 2
    covs = (
        rng.uniform(0.1, 2.0, size=(k, d))
        if diagonal
        else np.stack([_spd(rng, d) for _ in range(k)])
    )
    m = GaussianMixture(w, means, covs)
    sigma = 10.0**log_sigma
    x = rng.normal(size=(3, d)) * 2

    @jax.jit  # one compile per example instead of one per primitive
    def properties(x):
        grad = jax.vmap(jax.grad(lambda y: m.log_prob(y, sigma)))(x)
        return m.score(x, sigma), grad, m.denoise(x, sigma), m.responsibilities(x, sigma)

    score, grad, denoised, r = properties(x)
    np.testing.assert_allclose(score, grad, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(denoised, x + sigma**2 * score, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(np.asarray(r).sum(-1), 1.0, rtol=1e-12)
    assert m.sample(jax.random.PRNGKey(seed % 1000), 5).shape == (5, d)


@settings(max_examples=10)  # every example has new shapes, so it compiles anew
@given(
    d=st.integers(1, 5), seed=st.integers(0, 2**31 - 1), s0=st.floats(0.5, 50), s1=st.floats(0.0, 5)
)
def test_gaussian_flow_properties(x64, d, seed, s0, s1):
    rng = np.random.default_rng(seed)
    g = Gaussian(rng.normal(size=d), _spd(rng, d))
    x = rng.normal(size=(2, d)) * s0
    y = g.ode_solution(x, s0, s1)
    np.testing.assert_allclose(g.ode_solution(y, s1, s0), x, rtol=1e-9, atol=1e-9)  # invertible
    # Along the flow, d/ds x = (x - D(x, s)) / s: check by central differences at s0.
    h = 1e-5 * s0
    dx = (g.ode_solution(x, s0, s0 + h) - g.ode_solution(x, s0, s0 - h)) / (2 * h)
    np.testing.assert_allclose(dx, (x - g.denoise(x, s0)) / s0, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Gaussian(np.zeros(2), np.eye(3)), "cov must have shape"),
        (lambda: Gaussian(np.zeros((2, 2)), np.eye(2)), "mean must have shape"),
        (
            lambda: Gaussian(np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])),
            "cov must be symmetric",
        ),
        (
            lambda: Gaussian(np.zeros(2), np.array([[1.0, 0.0], [0.0, -1.0]])),
            "positive semi-definite",
        ),
        (lambda: Gaussian(np.zeros(2), np.array([1.0, -1.0])), "non-negative"),
        (
            lambda: GaussianMixture(np.array([0.5, 0.6]), np.zeros((2, 2)), np.ones((2, 2))),
            "weights must sum to 1",
        ),
        (
            lambda: GaussianMixture(np.array([1.0]), np.zeros((2, 2)), np.ones((2, 2))),
            "weights must have shape",
        ),
        (
            lambda: GaussianMixture(np.array([1.5, -0.5]), np.zeros((2, 2)), np.ones((2, 2))),
            "non-negative",
        ),
        (
            lambda: GaussianMixture(np.array([0.5, 0.5]), np.zeros((2, 2)), np.ones((3, 2))),
            "covs must have shape",
        ),
        (
            lambda: GaussianMixture(np.array([0.5, 0.5]), np.zeros(2), np.ones((2, 2))),
            "means must have shape",
        ),
        (lambda: Empirical(np.zeros(3)), "points must have shape"),
        (lambda: Empirical(np.zeros((3, 2)), smoothing=-1.0), "smoothing"),
        (lambda: Gaussian(np.array([0.0, np.nan]), np.eye(2)), "mean must be finite"),
        (lambda: Empirical(np.array([[0.0, np.inf]])), "points must be finite"),
    ],
)
def test_bad_oracle_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "weights, covs, match",
    [
        ([0.9, 0.9], [[1.0, 1.0], [1.0, 1.0]], "weights must be finite, non-negative and sum to 1"),
        ([1.5, -0.5], [[1.0, 1.0], [1.0, 1.0]], "weights must be"),
        ([0.5, 0.5], [[1.0, -1.0], [1.0, 1.0]], "covs must be finite and non-negative"),
        ([0.5, 0.5], [[1.0, np.nan], [1.0, 1.0]], "covs must be finite"),
    ],
)
def test_traced_oracle_parameters_are_checked_when_they_run(weights, covs, match):
    # Weights summing to 1.8 used to build, under jit, an oracle of a different distribution.
    denoise = jax.jit(
        lambda w, c: GaussianMixture(w, jnp.zeros((2, 2)), c).denoise(jnp.ones((3, 2)), 1.0)
    )
    assert np.all(np.isfinite(denoise(jnp.array([0.5, 0.5]), jnp.ones((2, 2)))))
    with pytest.raises(Exception, match=match):
        jax.block_until_ready(denoise(jnp.asarray(weights), jnp.asarray(covs)))


def test_traced_full_covariance_must_be_positive_semi_definite():
    denoise = jax.jit(lambda c: Gaussian(jnp.zeros(2), c).denoise(jnp.ones((3, 2)), 1.0))
    assert np.all(np.isfinite(denoise(jnp.eye(2))))
    with pytest.raises(Exception, match="symmetric and positive semi-definite"):
        jax.block_until_ready(denoise(jnp.array([[1.0, 2.0], [2.0, 1.0]])))


def test_sample_count_must_be_a_positive_int():
    with pytest.raises(ValueError, match="n must be >= 1"):
        Gaussian(np.zeros(2), np.eye(2)).sample(jax.random.PRNGKey(0), 0)


def test_a_nan_noise_level_gives_nan_never_a_plausible_denoised_value():
    # The Gaussian's gain lambda / (lambda + s^2) was guarded by "v > 0": a NaN sigma made it 1.
    x = jnp.ones((2, 2))
    for oracle in (
        Gaussian(np.zeros(2), np.diag([1.0, 0.0])),
        GaussianMixture(np.array([0.5, 0.5]), np.array([[1.0, 0.0], [-1.0, 0.0]]), np.ones((2, 2))),
        Empirical(np.array([[0.0, 1.0], [1.0, 0.0]])),
    ):
        assert np.all(np.isnan(oracle.denoise(x, jnp.nan))), type(oracle).__name__
