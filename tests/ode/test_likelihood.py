"""Probability-flow log-likelihood against the exact oracles of the diffusion pillar."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jaxsolve import RESULTS, ode
from jaxsolve import diffusion as jd
from jaxsolve._core import per_sample_keys
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture

SIGMA_MIN, SIGMA_MAX = 0.01, 40.0
# Tests share shapes and pass tolerances as arrays, so the solves compile once per kind.
N = 8


def gaussian():
    cov = jnp.array([[1.0, 0.5, 0.1], [0.5, 2.0, 0.3], [0.1, 0.3, 0.5]])
    return Gaussian(jnp.array([0.5, -1.0, 0.2]), cov)


def tolerance(tol):
    return dfx.PIDController(rtol=jnp.asarray(tol), atol=jnp.asarray(tol))


def tight():
    return tolerance(1e-10)


def integrated_jacobian(g, sigma_min, sigma_max):
    r"""M = ∫ ∂D/∂x du over u = log s. For the Gaussian ∂D/∂x = C (C + s²I)^{-1}, whose
    eigenvalues λ/(λ + e^{2u}) integrate to ½ log(s²/(λ + s²)) between the limits."""
    lam, vecs = g.eigvals, g.eigvecs
    m = 0.5 * (
        jnp.log(sigma_max**2 / (lam + sigma_max**2)) - jnp.log(sigma_min**2 / (lam + sigma_min**2))
    )
    return (vecs * m) @ vecs.T


def test_exact_divergence_recovers_gaussian_log_prob(x64):
    g = gaussian()
    x = g.sample(jax.random.PRNGKey(0), N, sigma=SIGMA_MIN)
    # With the exact marginal at sigma_max as prior, the model density is the true one.
    exact = ode.log_likelihood(
        g.denoise,
        x,
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        prior=g.log_prob,
        stepsize_controller=tight(),
    )
    np.testing.assert_allclose(exact.log_prob, g.log_prob(x, SIGMA_MIN), rtol=0, atol=1e-7)
    assert jnp.all(exact.result == RESULTS.successful)
    np.testing.assert_allclose(exact.latent, g.ode_solution(x, SIGMA_MIN, SIGMA_MAX), atol=1e-7)
    np.testing.assert_allclose(exact.log_prob, exact.prior_log_prob + exact.delta_log_prob)
    assert exact.nfe.shape == (N,) and jnp.all(exact.nfe > 0)

    # With the default N(0, sigma_max^2 I) prior the flow map is still linear, x -> A x + b, so
    # the model density is log N(A x + b; 0, sigma_max^2 I) + log det A (not the true density).
    default = ode.log_likelihood(
        g.denoise, x, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, stepsize_controller=tight()
    )
    z = g.ode_solution(x, SIGMA_MIN, SIGMA_MAX)
    log_det = 0.5 * jnp.sum(jnp.log((g.eigvals + SIGMA_MAX**2) / (g.eigvals + SIGMA_MIN**2)))
    expected = ode.gaussian_prior_log_prob(z, SIGMA_MAX) + log_det
    np.testing.assert_allclose(default.log_prob, expected, rtol=0, atol=1e-7)
    assert np.max(np.abs(default.log_prob - g.log_prob(x, SIGMA_MIN))) > 1e-4  # prior mismatch


@pytest.mark.slow
def test_exact_divergence_on_a_nonlinear_flow(x64):
    """A Gaussian mixture's probability flow is nonlinear; the exact likelihood still matches."""
    mix = GaussianMixture(
        jnp.array([0.3, 0.7]),
        jnp.array([[-1.5, 0.5], [1.0, -0.5]]),
        jnp.array([[[0.3, 0.1], [0.1, 0.2]], [[0.5, -0.2], [-0.2, 0.4]]]),
    )
    x = mix.sample(jax.random.PRNGKey(1), N, sigma=0.05)
    res = ode.log_likelihood(
        mix.denoise,
        x,
        sigma_min=0.05,
        sigma_max=20.0,
        prior=mix.log_prob,
        stepsize_controller=tolerance(1e-9),
    )
    np.testing.assert_allclose(res.log_prob, mix.log_prob(x, 0.05), rtol=0, atol=1e-6)


# Rademacher probes repeat the check with another probe law: left to -m slow (default-run budget).
@pytest.mark.parametrize("probe", [pytest.param("rademacher", marks=pytest.mark.slow), "gaussian"])
def test_hutchinson_estimate_of_the_gaussian(x64, probe):
    """Many independent probes for one point.

    * For the Gaussian the Jacobian of D does not depend on x, so a probe ε gives exactly
      log p + tr M - εᵀ M ε, with M the integrated Jacobian (a closed form).
    * The mean of the estimates is within 3 standard errors of the exact log p, and their spread
      matches the estimator's variance (2 Σ_{i≠j} M_ij² for Rademacher, 2 ‖M‖_F² for Gaussian
      probes)."""
    g = gaussian()
    n = 256
    x = jnp.broadcast_to(g.sample(jax.random.PRNGKey(3), 1, sigma=SIGMA_MIN), (n, 3))
    key = jax.random.PRNGKey(11)
    res = ode.log_likelihood(
        g.denoise,
        x,
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        prior=g.log_prob,
        divergence="hutchinson",
        probe=probe,
        key=key,
        stepsize_controller=tolerance(1e-8),
    )
    exact = float(g.log_prob(x[0], SIGMA_MIN))
    m = integrated_jacobian(g, SIGMA_MIN, SIGMA_MAX)
    # Sample i draws its probe from fold_in(key, i).
    draw = jax.random.rademacher if probe == "rademacher" else jax.random.normal
    eps = jax.vmap(lambda k: draw(k, (1, 3), dtype=jnp.float64))(per_sample_keys(key, n))[:, 0]
    quad = jnp.einsum("ni,ij,nj->n", eps, m, eps)
    np.testing.assert_allclose(res.log_prob, exact + jnp.trace(m) - quad, rtol=0, atol=1e-6)
    # The estimator as an object is the same computation (and the same compiled solve).
    same = ode.log_likelihood(
        g.denoise,
        x,
        sigma_min=SIGMA_MIN,
        sigma_max=SIGMA_MAX,
        prior=g.log_prob,
        divergence=ode.HutchinsonDivergence(probe),
        key=key,
        stepsize_controller=tolerance(1e-8),
    )
    np.testing.assert_array_equal(same.log_prob, res.log_prob)

    estimates = np.asarray(res.log_prob)
    se = estimates.std(ddof=1) / np.sqrt(n)
    assert abs(estimates.mean() - exact) < 3 * se
    m = np.asarray(m)
    off = m - np.diag(np.diag(m))
    variance = 2 * np.sum(off**2) if probe == "rademacher" else 2 * np.sum(m**2)
    # The sample variance of 256 draws is within ±35% of the truth with overwhelming odds
    # (its relative sd is about sqrt(2/n) ≈ 9% for Gaussian-like draws).
    assert 0.65 < estimates.var(ddof=1) / variance < 1.35


def test_flow_schedule_likelihood_in_model_scale(x64):
    """With a schedule, x is a sample x_t = α(t) x_ve in the model's scale: the result is
    log N(x_t; α m, α²(C + s² I)) = log p_s(x_t / α) - d log α."""
    g = gaussian()
    sched = jd.FlowSchedule(t_min=0.02, t_max=0.98)
    s_min = sched.to_ve_sigma(0.02)
    alpha = sched.alpha(0.02)
    x_ve = g.sample(jax.random.PRNGKey(4), N, sigma=s_min)
    res = ode.log_likelihood(
        g.denoise, alpha * x_ve, schedule=sched, prior=g.log_prob, stepsize_controller=tight()
    )
    expected = g.log_prob(x_ve, s_min) - 3 * jnp.log(alpha)
    np.testing.assert_allclose(res.log_prob, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.sigma_max, sched.to_ve_sigma(0.98))
    np.testing.assert_allclose(res.sigma_min, s_min)


@pytest.mark.slow
def test_flow_model_through_the_adapters(x64):
    """A flow model's velocity seen as a denoiser through the diffusion adapters."""
    g = gaussian()
    sched = jd.FlowSchedule(t_min=0.02, t_max=0.98)
    s_min, alpha = sched.to_ve_sigma(0.02), sched.alpha(0.02)
    x_ve = g.sample(jax.random.PRNGKey(4), N, sigma=s_min)
    denoiser = jd.from_flow(jd.to_flow(g.denoise, sched), sched)
    res = ode.log_likelihood(
        denoiser, alpha * x_ve, schedule=sched, prior=g.log_prob, stepsize_controller=tight()
    )
    expected = g.log_prob(x_ve, s_min) - 3 * jnp.log(alpha)
    np.testing.assert_allclose(res.log_prob, expected, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_gradient_with_respect_to_the_model(x64):
    """d log p / d mean through the solve equals the closed form (C + s²I)^{-1} (x - m)."""
    g = gaussian()
    x = g.sample(jax.random.PRNGKey(5), 2, sigma=SIGMA_MIN)

    def total(mean):
        model = Gaussian(mean, g.covariance())
        res = ode.log_likelihood(
            model.denoise,
            x,
            sigma_min=SIGMA_MIN,
            sigma_max=SIGMA_MAX,
            prior=model.log_prob,
            stepsize_controller=tolerance(1e-9),
        )
        return jnp.sum(res.log_prob)

    grad = jax.jit(jax.grad(total))(g.mean())
    cov = g.covariance() + SIGMA_MIN**2 * jnp.eye(3)
    expected = jnp.sum(jnp.linalg.solve(cov, (x - g.mean()).T).T, axis=0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


@pytest.mark.wrong_argument_types
def test_likelihood_argument_checks():
    g = Gaussian(jnp.zeros(2), jnp.eye(2))
    x = jnp.ones((3, 2))
    with pytest.raises(ValueError, match="batch axis"):
        ode.log_likelihood(g.denoise, jnp.ones(2), sigma_min=0.1, sigma_max=10.0)
    with pytest.raises(ValueError, match="sigma_min= and sigma_max="):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1)
    with pytest.raises(ValueError, match="not both"):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1, schedule=jd.FlowSchedule())
    with pytest.raises(ValueError, match="smaller than"):
        ode.log_likelihood(g.denoise, x, sigma_min=10.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="key"):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1, sigma_max=10.0, divergence="hutchinson")
    with pytest.raises(ValueError, match="divergence"):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1, sigma_max=10.0, divergence="trace")
    with pytest.raises(ValueError, match="probe"):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1, sigma_max=10.0, probe="sphere")
    with pytest.raises(ValueError, match="n_probes"):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1, sigma_max=10.0, n_probes=0)
    with pytest.raises(TypeError, match="divergence must be"):
        ode.log_likelihood(g.denoise, x, sigma_min=0.1, sigma_max=10.0, divergence=None)
    with pytest.raises(ValueError, match="probe"):
        ode.HutchinsonDivergence("sphere")
    with pytest.raises(ValueError, match="n_probes"):
        ode.HutchinsonDivergence(n_probes=0)
    hutchinson = dict(sigma_min=0.1, sigma_max=10.0, divergence=ode.HutchinsonDivergence())
    with pytest.raises(ValueError, match="key"):
        ode.log_likelihood(g.denoise, x, **hutchinson)
    with pytest.raises(ValueError, match="carries its own"):
        ode.log_likelihood(g.denoise, x, n_probes=4, key=jax.random.PRNGKey(0), **hutchinson)
    with pytest.raises(ValueError, match="one log-density per sample"):
        ode.log_likelihood(
            g.denoise, x, sigma_min=0.1, sigma_max=10.0, prior=lambda z, s: jnp.sum(z)
        )


# --- Failures: non-finite inputs stop at once; argument errors name the argument. -------------


def nan_model(g):
    """The Gaussian oracle with a NaN mean: its denoiser returns NaN everywhere. (Built with
    tree_at, past the constructor's checks, to keep the compiled solve of the tests above.)"""
    return eqx.tree_at(lambda m: m.loc, g, jnp.full_like(g.loc, jnp.nan))


def test_nonfinite_sample_or_denoiser_stops_at_once(x64):
    """Per sample: a NaN/inf entry of x, or a NaN denoiser, gives ``nonfinite`` after one step
    (2 + 1 + 6 evaluations) and log_prob NaN; the other samples keep their exact value. Before:
    4096 steps each and ``max_steps_reached``. throw=True (the default) raises the code."""
    g = gaussian()
    x = g.sample(jax.random.PRNGKey(0), N, sigma=SIGMA_MIN)
    x = x.at[2, 1].set(jnp.nan).at[5, 0].set(-jnp.inf)
    bad = np.isin(np.arange(N), [2, 5])
    common = dict(sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX, stepsize_controller=tight())
    res = ode.log_likelihood(g.denoise, x, prior=g.log_prob, throw=False, **common)
    assert np.all(np.asarray(res.result == RESULTS.nonfinite) == bad)
    assert np.all(np.asarray(res.result == RESULTS.successful) == ~bad)
    np.testing.assert_array_equal(res.num_steps[bad], 1)
    np.testing.assert_array_equal(res.nfe[bad], 2 + 1 + 6)
    assert np.all(np.isnan(res.log_prob[bad]))
    np.testing.assert_allclose(
        res.log_prob[~bad], g.log_prob(x[~bad], SIGMA_MIN), rtol=0, atol=1e-7
    )

    broken = nan_model(g)
    res = ode.log_likelihood(broken.denoise, x, prior=g.log_prob, throw=False, **common)
    assert np.all(np.asarray(res.result == RESULTS.nonfinite))
    np.testing.assert_array_equal(res.num_steps, 1)
    assert np.all(np.isnan(res.log_prob))
    with pytest.raises(Exception, match="NaN or infinity"):
        jax.block_until_ready(ode.log_likelihood(g.denoise, x, prior=g.log_prob, **common))


_LIKELIHOOD_JIT = eqx.filter_jit(
    lambda model, prior, x, sigma_min, sigma_max, throw: ode.log_likelihood(
        model.denoise,
        x,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        prior=prior.log_prob,
        stepsize_controller=tight(),
        throw=throw,
    )
)

# Argument defects and the words the error must contain.
_SIGMAS = {
    "swapped": (SIGMA_MAX, SIGMA_MIN),
    "negative sigma_min": (-1.0, SIGMA_MAX),
    "equal": (1.0, 1.0),
    "infinite sigma_max": (SIGMA_MIN, np.inf),
    "NaN sigma_min": (np.nan, SIGMA_MAX),
}


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    spoilt=st.dictionaries(
        st.integers(0, N - 1), st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3
    ),
    model=st.sampled_from(["exact", "NaN denoiser"]),
    defect=st.sampled_from(
        [None, None, None, "x without batch axis", "complex x", "denoiser shape", *sorted(_SIGMAS)]
    ),
    mode=st.sampled_from(["eager", "eager, throw=True", "filter_jit"]),
)
@example(spoilt={}, model="exact", defect="swapped", mode="filter_jit")
@example(spoilt={}, model="exact", defect="NaN sigma_min", mode="filter_jit")
@example(spoilt={}, model="exact", defect="infinite sigma_max", mode="filter_jit")
@example(spoilt={}, model="exact", defect="denoiser shape", mode="eager")
@example(spoilt={3: np.nan}, model="exact", defect=None, mode="filter_jit")
@example(spoilt={}, model="NaN denoiser", defect=None, mode="filter_jit")
@pytest.mark.wrong_argument_types
def test_bad_inputs_never_look_successful(x64, spoilt, model, defect, mode):
    """A random mix of bad samples, a NaN denoiser, bad noise ranges (concrete or traced) and
    malformed arguments: an error naming the argument, or per sample either the exact value with
    ``successful`` or NaN with ``nonfinite`` after one step — never a successful-looking number."""
    g = gaussian()
    x = g.sample(jax.random.PRNGKey(0), N, sigma=SIGMA_MIN)
    rows = np.zeros(N)
    rows[list(spoilt)] = list(spoilt.values())
    x = x.at[:, 0].add(jnp.asarray(rows))  # 0 leaves a sample alone; NaN/±inf spoil it
    denoiser_model = g if model == "exact" else nan_model(g)
    sigma_min, sigma_max = SIGMA_MIN, SIGMA_MAX
    throw = mode == "eager, throw=True"
    denoise = denoiser_model.denoise
    if defect == "x without batch axis":
        x = x[0]
    elif defect == "complex x":
        x = x.astype(jnp.complex128)
    elif defect == "denoiser shape":
        denoise = lambda y, s: y[0]
    elif defect is not None:
        sigma_min, sigma_max = _SIGMAS[defect]

    def call():
        if mode == "filter_jit":
            if defect == "denoiser shape":  # a plain function, failing at trace time
                return jax.jit(
                    lambda x: ode.log_likelihood(denoise, x, sigma_min=0.1, sigma_max=1)
                )(x)
            return _LIKELIHOOD_JIT(
                denoiser_model, g, x, jnp.asarray(sigma_min), jnp.asarray(sigma_max), False
            )
        return ode.log_likelihood(
            denoise,
            x,
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            prior=g.log_prob,
            stepsize_controller=tight(),
            throw=throw,
        )

    if defect is not None:
        names = {"x without batch axis": "batch axis", "complex x": "x must be real"}
        name = {**names, "denoiser shape": "denoiser"}.get(defect, "sigma_m(in|ax)")
        with pytest.raises(Exception, match=name):
            jax.block_until_ready(call())
        return
    bad = ~np.isfinite(np.asarray(rows)) | (model == "NaN denoiser")
    if throw and bad.any():
        with pytest.raises(Exception, match="NaN or infinity"):
            jax.block_until_ready(call())
        return
    res = call()
    assert np.all(np.asarray(res.result == RESULTS.nonfinite) == bad)
    assert np.all(np.asarray(res.result == RESULTS.successful) == ~bad)
    np.testing.assert_array_equal(res.num_steps[bad], 1)
    assert np.all(np.isnan(res.log_prob[bad]))
    np.testing.assert_allclose(
        res.log_prob[~bad], g.log_prob(x[~bad], SIGMA_MIN), rtol=0, atol=1e-7
    )
