import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

# Not yet exported by fewstep/__init__.py (the lead adds them).
from jaxsolve.diffusion.fewstep import (
    from_trigflow,
    pfgmpp_loss,
    pfgmpp_perturb,
    pfgmpp_prior,
    pfgmpp_radius,
    pfgmpp_sigma,
    scm_tangent,
    tangent_normalization,
    to_trigflow,
    trigflow_consistency,
    trigflow_sigma,
    trigflow_time,
)

SD = 0.5  # sigma_data
# The default PFGM++ tests draw finite-D kernels eagerly, all of shape (_N, 4): jax.random.gamma
# and every eager op compile once per shape, and that compilation is most of their time.
_N = 8000

# One compilation for every (shape, dtype): D is traced, so D = inf takes the traced branch.
_perturb = jax.jit(pfgmpp_perturb, static_argnames="batch_ndim")


def _gaussian(d=3, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    return Gaussian(rng.normal(size=d), 0.4 * a @ a.T / d + 0.1 * np.eye(d))


def _mlp(d, seed, hidden=16):
    """A random two-layer tanh network F(x, t), nonlinear in both arguments (NumPy weights: no
    eager JAX draws to compile)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(size=(hidden, d)) / np.sqrt(d)
    b1 = rng.normal(size=hidden)
    w2 = rng.normal(size=(d, hidden)) / np.sqrt(hidden)

    def F(x, t):
        t = jnp.asarray(t)[..., None]
        h = jnp.tanh(x @ w1.T + jnp.sin(3.0 * t) * b1)
        return h @ w2.T + jnp.cos(t) * x

    return F


def _batch(seed, n=5, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.uniform(0.1, 1.4, size=n)


# --- TrigFlow <-> VE --------------------------------------------------------------------------


def test_time_conversions_and_denoiser_round_trip(x64):
    g = _gaussian()
    x, _ = _batch(0)
    sigma = np.array([0.0, 1e-3, 0.5, 3.0, 80.0])
    back = from_trigflow(to_trigflow(g.denoise, SD), SD)

    @jax.jit
    def run(x, sigma):
        t = trigflow_time(sigma, SD)
        quarter = trigflow_sigma(math.pi / 4, SD)
        return t, trigflow_sigma(t, SD), quarter, back(x, sigma[1:]), g.denoise(x, sigma[1:])

    t, sigma_back, sigma_quarter, denoised, expected = run(x[1:], sigma)
    assert t[0] == 0.0 and bool(np.all((t >= 0) & (t < math.pi / 2)))
    np.testing.assert_allclose(sigma_back, sigma, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(np.tan(np.asarray(t)) * SD, sigma, rtol=1e-14)
    np.testing.assert_allclose(sigma_quarter, SD, rtol=1e-15)
    # from_trigflow(to_trigflow(D)) == D (sigma > 0: to_trigflow is 0/0 at t = 0).
    np.testing.assert_allclose(denoised, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_trigflow_round_trip_through_denoiser(x64):
    F = _mlp(3, 1)
    x, t = _batch(2)
    back = eqx.filter_jit(to_trigflow(from_trigflow(F, SD), SD))
    np.testing.assert_allclose(back(x, t), F(x, t), rtol=1e-11, atol=1e-11)


@pytest.mark.slow
def test_from_trigflow_is_identity_at_sigma_zero(x64):
    F = _mlp(3, 1)
    x, _ = _batch(3)
    np.testing.assert_array_equal(from_trigflow(F, SD)(x, 0.0), x)


@pytest.mark.slow
def test_exact_trigflow_model_is_the_pf_ode_velocity(x64):
    # sigma_d F(x_t / sigma_d, t) = dx_t/dt along the exact flow x_t(t') = cos t' * x_ve(s(t')),
    # differentiated from the oracle's exact probability-flow map (independent of the adapters).
    g = _gaussian()
    F = to_trigflow(g.denoise, SD)
    x_t, t = _batch(4)

    def path(tp):
        x_ve = g.ode_solution(
            x_t / jnp.cos(t)[:, None], trigflow_sigma(t, SD), trigflow_sigma(tp, SD)
        )
        return jnp.cos(tp)[:, None] * x_ve

    x_same, v = jax.jvp(path, (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(x_same, x_t, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(SD * F(x_t / SD, t), v, rtol=1e-10, atol=1e-10)


# --- sCM tangent ------------------------------------------------------------------------------


def test_tangent_of_exact_consistency_function_vanishes(x64):
    # The exact consistency function of Gaussian data, as a TrigFlow network, is constant along
    # the exact probability-flow ODE: its total derivative is zero.
    g = _gaussian()
    F_flow = to_trigflow(g.denoise, SD)
    F_cm = to_trigflow(lambda x, s: g.ode_solution(x, s, 0.0), SD)
    x_t, t = _batch(5)

    @jax.jit
    def run(x_t, t):
        v = SD * F_flow(x_t / SD, t)
        end = g.ode_solution(x_t / jnp.cos(t)[:, None], trigflow_sigma(t, SD), 0.0)
        return (
            scm_tangent(F_cm, x_t, t, SD, v),
            scm_tangent(F_flow, x_t, t, SD, v),
            trigflow_consistency(F_cm, x_t, t, SD),
            end,
        )

    tangent, tangent_of_denoiser, consistency, end = run(x_t, t)
    assert float(np.max(np.abs(tangent))) < 1e-10
    # ...and the consistency function is the ODE's end point (cf. from_trigflow at sigma = 0).
    np.testing.assert_allclose(consistency, end, rtol=1e-12, atol=1e-12)
    # The denoiser itself is not invariant along the flow: the test can fail.
    assert float(np.max(np.abs(tangent_of_denoiser))) > 1e-2


def test_tangent_equals_finite_difference_along_the_ode(x64):
    F = _mlp(3, 6)
    teacher = _mlp(3, 7)
    x_t, t = _batch(8)
    v = SD * teacher(x_t / SD, t)
    h = 1e-5

    def f(s):
        return trigflow_consistency(F, x_t + s * v, t + s, SD)

    @jax.jit
    def run():
        return (
            (f(h) - f(-h)) / (2 * h),
            scm_tangent(F, x_t, t, SD, v),
            from_trigflow(F, SD)(x_t, 0.0),
            scm_tangent(F, x_t, t, SD, v, warmup_ratio=0.0),
            -jnp.cos(t)[:, None] * (SD * F(x_t / SD, t) - v),
        )

    fd, tangent, at_zero, no_warmup, no_warmup_expected = run()
    np.testing.assert_allclose(tangent, fd, rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(at_zero, x_t)  # the boundary condition f(x, 0) = x, exactly
    # Closed form of the warmup term: at r = 0 only -cos(t) (sigma_d F - v) remains.
    np.testing.assert_allclose(no_warmup, no_warmup_expected, rtol=1e-13, atol=1e-13)


def test_tangent_normalization(x64):
    g = np.array([[3.0, 4.0], [0.0, 0.0], [0.3, 0.4]])
    single = np.array([[1.0, 2.0], [2.0, 4.0]])

    @jax.jit
    def run(g, single):
        grad = jax.grad(lambda a: tangent_normalization(a).sum())(jnp.zeros_like(g))
        return tangent_normalization(g, 0.1), tangent_normalization(single, 1.0, batch_ndim=0), grad

    out, out_single, grad = run(g, single)
    np.testing.assert_allclose(out, g / np.array([[5.1], [0.1], [0.6]]), rtol=1e-15)
    np.testing.assert_allclose(out_single, single / 6.0, rtol=1e-15)
    assert bool(np.all(np.isfinite(grad)))
    with pytest.raises(ValueError, match="batch_ndim"):
        tangent_normalization(g, batch_ndim=3)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="sigma_data"):
        from_trigflow(lambda x, t: x, 0.0)
    with pytest.raises(TypeError, match="denoiser"):
        to_trigflow(3.0, SD)
    with pytest.raises(ValueError, match="dxt_dt"):
        scm_tangent(lambda x, t: x, jnp.ones((2, 3)), jnp.ones(2), SD, jnp.ones((3,)))
    with pytest.raises(ValueError, match="D"):
        pfgmpp_perturb(jax.random.key(0), jnp.zeros((2, 3)), 1.0, 0.0)


# --- PFGM++ -----------------------------------------------------------------------------------


def _f_variance(n, d):
    """Variance of an F(n, d) variate (d > 4)."""
    return 2 * d**2 * (n + d - 2) / (n * (d - 2) ** 2 * (d - 4))


@pytest.mark.parametrize(
    "shape",
    [pytest.param((4,), marks=pytest.mark.slow), pytest.param((3,), marks=pytest.mark.slow)],
)
def test_pfgmpp_second_moment(x64, shape):
    # ||x - x0||^2 / sigma^2 = N * F(N, D), so E = r^2 N / (D - 2) = sigma^2 N D / (D - 2); the
    # tolerance is 5 standard errors of the mean of n draws.
    n, D = 8000, 16.0
    N = int(np.prod(shape))
    rng = np.random.default_rng(9)
    x0 = rng.normal(size=(n, *shape))
    sigma = rng.uniform(0.2, 3.0, size=n)
    key = jax.random.key(9)
    noise = np.asarray(_perturb(key, x0, sigma, D) - x0).reshape(n, N) / sigma[:, None]
    second = np.sum(noise**2, axis=-1)
    r2_over_sigma2 = float(pfgmpp_radius(1.0, D)) ** 2
    expected = r2_over_sigma2 * N / (D - 2)
    se = N * math.sqrt(_f_variance(N, D) / n)
    assert abs(float(np.mean(second)) - expected) < 5 * se
    assert abs(expected - N) > 10 * se  # the Gaussian's moment would fail
    # Isotropy: each coordinate carries 1/N of it.
    coord = np.mean(noise**2, axis=0)
    np.testing.assert_allclose(coord, expected / N, atol=10 * se / N)


@pytest.mark.slow
def test_pfgmpp_radius_follows_the_kernel_density(x64):
    # R / r has density u^(N-1) / (1 + u^2)^((N+D)/2): its CDF by quadrature, compared with the
    # sample's by Kolmogorov-Smirnov (critical value 1.95/sqrt(n) at the 0.1% level).
    n, N, D, sigma = 4000, 3, 5.0, 0.8
    x0 = jnp.zeros((n, N))
    R = jnp.linalg.norm(pfgmpp_perturb(jax.random.key(10), x0, sigma, D), axis=-1)
    u = np.sort(np.asarray(R / pfgmpp_radius(sigma, D)))
    grid = np.linspace(0.0, 400.0, 400001)
    density = grid ** (N - 1) / (1 + grid**2) ** ((N + D) / 2)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2 * np.diff(grid))])
    cdf /= cdf[-1]
    model = np.interp(u, grid, cdf)
    ks = max(np.max(np.arange(1, n + 1) / n - model), np.max(model - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)
    # A Gaussian radius (EDM) of the same sigma is rejected.
    gauss = np.sort(
        np.asarray(
            jnp.linalg.norm(pfgmpp_perturb(jax.random.key(10), x0, sigma, math.inf), axis=-1)
            / pfgmpp_radius(sigma, D)
        )
    )
    model_g = np.interp(gauss, grid, cdf)
    assert np.max(np.abs(np.arange(1, n + 1) / n - model_g)) > 3 * 1.95 / math.sqrt(n)
    # D = inf taken statically (above) and traced give the same draw.
    traced = _perturb(jax.random.key(10), x0, sigma, jnp.inf)
    np.testing.assert_allclose(
        traced, pfgmpp_perturb(jax.random.key(10), x0, sigma, math.inf), rtol=1e-14, atol=1e-15
    )


def test_pfgmpp_large_d_is_edm(x64):
    # D = inf is EDM's x0 + sigma g; D = 1e8 is the same draw scaled by sqrt(D / chi2_D), which is
    # 1 + O(D^-1/2) per sample (std 1/sqrt(2D)); the bound is 8 such standard deviations.
    n, N, sigma, D = _N, 4, 1.3, 1e8
    x0 = np.random.default_rng(11).normal(size=(n, N))
    sigmas = np.full(n, sigma)  # per sample
    key = jax.random.key(11)
    edm = pfgmpp_perturb(key, x0, sigmas, math.inf)
    big = pfgmpp_perturb(key, x0, sigmas, D)  # eager: gamma's compilation is shared (_N)
    np.testing.assert_allclose(big - x0, edm - x0, rtol=8 / math.sqrt(2 * D), atol=0)
    # EDM's kernel: mean 0, covariance sigma^2 I (5 standard errors).
    z = np.asarray(edm - x0) / sigma
    assert np.all(np.abs(z.mean(0)) < 5 / math.sqrt(n))
    np.testing.assert_allclose(np.cov(z.T), np.eye(N), atol=5 * math.sqrt(2 / n))
    # The kernel's exact second moment tends to EDM's: N D / (D - 2) = N (1 + 2e-8).
    assert abs(D / (D - 2) - 1) < 1e-7
    assert np.isclose(float(pfgmpp_sigma(pfgmpp_radius(sigma, D), D)), sigma, rtol=1e-15)


# A nonlinear denoiser of few operations (eager operations compile once per shape).
def _cheap_denoiser(x, sigma):
    return jnp.tanh(x + jnp.sin(sigma)[:, None])


# An affine denoiser: the solvers' maps are then affine too.
def _affine_denoiser(x, sigma):
    return 0.3 + x / (1 + sigma**2)


def test_pfgmpp_loss_tends_to_edm(x64):
    # D = inf: the same key gives EDM's loss bit for bit. D = 1e8: every draw is EDM's times
    # s = sqrt(D / chi2_D) per sample, 1 + O(D^-1/2) with sd 1/sqrt(2D) = 7.1e-5; the bound on s
    # is 6 such sd (beyond the largest of _N normal deviates), twice that for a squared error
    # (homogeneous of degree 2 in the noise to first order).
    n, d, D = _N, 4, 1e8
    tol = 6 / math.sqrt(2 * D)
    x0 = jnp.asarray(np.random.default_rng(12).normal(size=(n, d)))
    key = jax.random.key(12)
    edm = jd.edm_loss(_cheap_denoiser, x0, key, sigma_data=SD)
    np.testing.assert_array_equal(
        pfgmpp_loss(_cheap_denoiser, x0, key, math.inf, sigma_data=SD), edm
    )
    big = pfgmpp_loss(_cheap_denoiser, x0, key, D, sigma_data=SD)
    assert 0 < abs(float(big / edm) - 1) < 2 * tol
    # Finite D is EDM's objective on the kernel's draws (the keys as edm_loss splits them).
    D_small = 5.0
    k_sigma, k_noise = jax.random.split(key)
    sigma = jd.lognormal_sigmas(k_sigma, (n,))
    x = pfgmpp_perturb(k_noise, x0, sigma, D_small)
    err = jnp.mean((_cheap_denoiser(x, sigma) - x0) ** 2, axis=-1)
    by_hand = jnp.mean(jd.edm_weight(sigma, SD) * err)
    small = pfgmpp_loss(_cheap_denoiser, x0, key, D_small, sigma_data=SD)
    np.testing.assert_allclose(small, by_hand, rtol=1e-13)


def test_pfgmpp_samples_tend_to_edm(x64):
    # The prior is the only D-dependent part of sampling; the PF-ODE and the solver are EDM's.
    # D = inf is EDM's prior bit for bit; D = 1e8 scales each sample by s (bound as above). With
    # an affine denoiser a deterministic solver's map is affine, x -> A x + c, so the samples obey
    # x_D = c + s (x_inf - c) to round-off, with c the sample from 0: EDM's samples to O(D^-1/2).
    n, d, D, sigma_max = _N, 4, 1e8, 20.0
    tol = 6 / math.sqrt(2 * D)
    key = jax.random.key(14)
    prior_edm = pfgmpp_prior(key, (n, d), sigma_max, math.inf)
    np.testing.assert_array_equal(prior_edm, sigma_max * jax.random.normal(key, (n, d)))
    prior_big = pfgmpp_prior(key, (n, d), sigma_max, D)
    s = np.asarray(prior_big / prior_edm)
    np.testing.assert_allclose(s, s[:, :1] * np.ones((1, d)), rtol=1e-14)  # one radius a sample
    assert np.all(np.abs(s - 1) < tol) and np.any(s != 1)
    sigmas = jd.karras_sigmas(6, sigma_min=0.01, sigma_max=sigma_max)
    x_edm, x_big, c = (
        jd.sample(_affine_denoiser, x, sigmas, jd.Euler())
        for x in (prior_edm, prior_big, 0 * prior_edm)
    )
    np.testing.assert_allclose(x_big, c + s * (x_edm - c), rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(x_big - x_edm))) < tol * float(jnp.max(jnp.abs(x_edm - c)))


def test_pfgmpp_best_linear_denoiser_is_the_posterior_mean_at_the_kernel_variance(x64):
    # Data N(0, v I) and the kernel of variance sigma^2 D/(D-2) per element: among denoisers a x,
    # E||a x - x0||^2 = N [(a-1)^2 v + a^2 sigma^2 D/(D-2)] is least at a* = v/(v + sigma^2 D/(D-2)),
    # the Gaussian posterior mean at the inflated level (the exact optimum is not linear: the
    # kernel is a scale mixture of Gaussians). The loss is quadratic in a for fixed draws,
    # L(a) = A a^2 - 2 B a + C, so three values give the empirical minimiser B/A; its delta-method
    # standard error comes from the same draws, and the bound is 5 of them. sigma is fixed
    # (p_std = 0) so the weight cancels.
    n, N, v, D = _N, 4, 1.0, 10.0
    x0 = jnp.asarray(np.random.default_rng(13).normal(size=(n, N)) * math.sqrt(v))
    key = jax.random.key(13)
    loss = lambda a: float(pfgmpp_loss(lambda x, s: a * x, x0, key, D, p_mean=0.0, p_std=0.0))
    l0, lp, lm = loss(0.0), loss(1.0), loss(-1.0)
    A, B = (lp + lm) / 2 - l0, (lm - lp) / 4
    a_hat = B / A
    # The same draws by hand (the keys as pfgmpp_loss splits them).
    x = np.asarray(pfgmpp_perturb(jax.random.split(key)[1], x0, 1.0, D))
    Ai, Bi = np.mean(x**2, axis=-1), np.mean(x * np.asarray(x0), axis=-1)
    np.testing.assert_allclose(a_hat, Bi.mean() / Ai.mean(), rtol=1e-10)
    se = np.std(Bi - a_hat * Ai) / Ai.mean() / math.sqrt(n)
    a_star = v / (v + D / (D - 2))
    assert abs(a_hat - a_star) < 5 * se
    assert abs(v / (v + 1.0) - a_star) > 10 * se  # EDM's optimum would fail
