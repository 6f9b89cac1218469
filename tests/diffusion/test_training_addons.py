"""The losses' training add-ons: DDPM-IP's input perturbation and Rectified Diffusion's coupled
noise, checked against Gaussian closed forms (float64)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import diffusion as jd
from jaxsolve import train
from jaxsolve.diffusion import x0_loss
from jaxsolve.diffusion.analytic import Gaussian
from jaxsolve.diffusion.fewstep import rectified_pairs

D_DIM = 3


def _gauss(seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D_DIM, D_DIM)))
    lam = np.linspace(0.2, 2.0, D_DIM)
    return Gaussian(rng.normal(size=D_DIM), q @ np.diag(lam) @ q.T), q, lam


def _linear(mu, K):
    """The affine denoiser mu + K (x - mu) (the Gaussian posterior mean is one)."""
    return lambda x, sigma: mu + (x - mu) @ K.T


def _posterior_gain(cov, level):
    """K = Sigma (Sigma + level^2 I)^-1: the Gaussian posterior mean at noise level ``level``."""
    return cov @ np.linalg.inv(cov + level**2 * np.eye(len(cov)))


# ---------------------------------------------------------------------------------------------
# Defaults: the add-ons off use the key exactly as before


def test_defaults_draw_the_noise_as_before(x64):
    # The add-ons off take the code path from before them (a float 0.0 skips the perturbation),
    # so the default draws the noise from the key as before: bit for bit the loss with that noise
    # passed explicitly, and the dsm formula written out within round-off (its operations fuse
    # differently). A traced gamma of 0 adds 0 * xi: the same within round-off.
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(5, D_DIM))
    sigma = rng.uniform(0.1, 2.0, size=5)
    den = lambda x, s: jnp.tanh(x) * s[:, None]
    sch = jd.VPSchedule.cosine()
    model = lambda x, t: jnp.sin(x) * t[:, None]

    @jax.jit  # one program (eager operations compile one by one)
    def values(gamma):
        key = jax.random.key(1)
        n = jax.random.normal(key, x0.shape)
        eps = jax.random.normal(jax.random.split(key)[1], x0.shape)
        dsm_before = jnp.mean(jnp.mean((den(x0 + sigma[:, None] * n, sigma) - x0) ** 2, axis=-1))
        return (
            (
                jd.dsm_loss(den, x0, sigma, key),
                jd.dsm_loss(den, x0, sigma, key, noise=n),
                jd.eps_loss(model, sch, x0, key),
                jd.eps_loss(model, sch, x0, key, noise=eps),
                jd.v_loss(model, sch, x0, key),
                jd.v_loss(model, sch, x0, key, noise=eps),
            ),
            dsm_before,
            jd.dsm_loss(den, x0, sigma, key, input_perturbation=gamma),
        )

    pairs, dsm_before, traced = values(0.0)
    for default, coupled in zip(pairs[::2], pairs[1::2], strict=True):
        assert float(default) == float(coupled)
    np.testing.assert_allclose(pairs[0], dsm_before, rtol=1e-14)
    np.testing.assert_allclose(traced, pairs[0], rtol=1e-15)
    assert abs(float(values(0.3)[2]) / float(pairs[0]) - 1) > 1e-3
    key = jax.random.key(1)
    with pytest.raises(ValueError, match="input_perturbation"):
        jd.dsm_loss(den, x0, sigma, key, input_perturbation=-0.1)
    with pytest.raises(ValueError, match="noise"):
        jd.dsm_loss(den, x0, sigma, key, noise=jnp.zeros((5, 2)))


# ---------------------------------------------------------------------------------------------
# DDPM-IP ("Input Perturbation Reduces Exposure Bias in Diffusion Models")


@pytest.mark.slow
def test_input_perturbation_moves_the_optimal_denoiser_to_the_inflated_level(x64):
    # x = x0 + sigma (eps + gamma xi), target x0. For the affine denoiser mu + K (x - mu),
    #   E||D - x0||^2 / d = [tr((K - I) S (K - I)^T) + tau^2 tr(K K^T)] / d,  tau^2 = sigma^2 (1 + g^2),
    # least at K* = S (S + tau^2 I)^-1: the posterior mean at sigma sqrt(1 + g^2). Monte Carlo over
    # n per-sample losses, bounds of 5 standard errors computed from the same draws.
    g, _, _ = _gauss(2)
    mu, cov = np.asarray(g.mean()), np.asarray(g.covariance())
    sigma, gamma, n = 0.7, 1.0, 4000
    tau2 = sigma**2 * (1 + gamma**2)
    level = sigma * math.sqrt(1 + gamma**2)
    K_nominal = _posterior_gain(cov, sigma)
    K_inflated = _posterior_gain(cov, level)

    def expected(K):
        E = K - np.eye(D_DIM)
        return (np.trace(E @ cov @ E.T) + tau2 * np.trace(K @ K.T)) / D_DIM

    @jax.jit  # one program (eager operations compile one by one)
    def run():
        x0 = g.sample(jax.random.key(2), n)
        keys = jax.random.split(jax.random.key(3), n)
        loss = lambda K, x, k: jd.dsm_loss(
            _linear(mu, K), x[None], sigma, k, input_perturbation=gamma
        )
        per_sample = jax.vmap(jax.value_and_grad(loss), (None, 0, 0))
        oracle_check = _linear(mu, K_inflated)(x0[:4], None) - g.denoise(x0[:4], level)
        return per_sample(K_nominal, x0, keys), per_sample(K_inflated, x0, keys), oracle_check

    (l_nom, g_nom), (l_inf, g_inf), oracle_check = run()
    np.testing.assert_allclose(oracle_check, 0.0, atol=1e-13)  # K_inflated is the oracle's
    se = lambda v: np.std(np.asarray(v), axis=0) / math.sqrt(n)
    for losses, K in ((l_nom, K_nominal), (l_inf, K_inflated)):
        assert abs(float(np.mean(losses)) - expected(K)) < 5 * se(losses)
    # The paired difference: the nominal-level oracle is worse by the closed-form amount.
    diff = np.asarray(l_nom - l_inf)
    closed_diff = expected(K_nominal) - expected(K_inflated)
    assert abs(diff.mean() - closed_diff) < 5 * se(diff) < closed_diff
    # The gradient in K vanishes at the inflated gain, not at the nominal one.
    assert np.all(np.abs(np.mean(g_inf, axis=0)) < 5 * se(g_inf))
    assert np.max(np.abs(np.mean(g_nom, axis=0)) / se(g_nom)) > 10


def _coeffs(kind, a, s):
    """Target y = P eps + Q x0 of each schedule loss."""
    return {"eps": (1.0, 0.0), "x0": (0.0, 1.0), "v": (a, -s)}[kind]


@pytest.mark.slow
def test_input_perturbation_schedule_losses_match_the_gaussian_posterior(x64):
    # x_t = a x0 + s (eps + gamma xi), target y = P eps + Q x0. (y, x_t) is jointly Gaussian:
    # C = a^2 S + s^2 (1 + gamma^2) I, Cov(y, x_t) = P s I + Q a S, so the optimal predictor is
    # Q mu + Cov(y, x_t) C^-1 (x_t - a mu) and its loss is tr(P^2 I + Q^2 S - Cov C^-1 Cov^T) / d
    # (5 standard errors from n per-sample losses).
    g, _, _ = _gauss(4)
    mu, cov = np.asarray(g.mean()), np.asarray(g.covariance())
    sch = jd.VPSchedule.cosine()
    t, gamma, n = 0.45, 0.4, 4000
    a, s = (float(v) for v in sch.alpha_sigma(t))
    C = a**2 * cov + s**2 * (1 + gamma**2) * np.eye(D_DIM)
    x0 = g.sample(jax.random.key(5), n)
    keys = jax.random.split(jax.random.key(6), n)
    losses = {"eps": jd.eps_loss, "v": jd.v_loss, "x0": x0_loss}

    @jax.jit
    def per_sample(gains):
        out = {}
        for kind, gain in gains.items():
            _, Q = _coeffs(kind, a, s)
            model = lambda x, tt, gain=gain, Q=Q: Q * mu + (x - a * mu) @ gain.T
            loss = lambda x, k, kind=kind, model=model: losses[kind](
                model, sch, x[None], k, t=t, input_perturbation=gamma
            )
            out[kind] = jax.vmap(loss)(x0, keys)
        return out

    gains, closed = {}, {}
    for kind in losses:
        P, Q = _coeffs(kind, a, s)
        cross = P * s * np.eye(D_DIM) + Q * a * cov
        gains[kind] = jnp.asarray(cross @ np.linalg.inv(C))
        cov_y = P**2 * np.eye(D_DIM) + Q**2 * cov
        closed[kind] = np.trace(cov_y - cross @ np.linalg.solve(C, cross.T)) / D_DIM
    for kind, values in per_sample(gains).items():
        values = np.asarray(values)
        assert abs(values.mean() - closed[kind]) < 5 * values.std() / math.sqrt(n), kind


# ---------------------------------------------------------------------------------------------
# Rectified Diffusion ("Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow")


def _coupling(g, q, lam, sigma_max):
    """The exact ODE coupling as :func:`rectified_pairs` returns it, x0 = c + M eps, M = V diag(m) V^T.

    From x_T = sigma_max z the exact ODE gives x0 = mu + J (x_T - mu), J = V diag(j) V^T,
    j = sqrt(lam / (lam + sigma_max^2)); the returned noise is eps = (x_T - x0) / sigma_max =
    (I - J) (x_T - mu) / sigma_max, so x0 = mu + sigma_max J (I - J)^-1 eps: c = mu and
    m = sigma_max j / (1 - j).
    """
    j = np.sqrt(lam / (lam + sigma_max**2))
    return np.asarray(g.mean()), sigma_max * j / (1 - j)


def _coupled_predictors(seed, sigma_max, sch):
    """Gaussian data, and the optimal predictors on its exact coupling x0 = c + M eps: on a
    coupled pair x_t = a c + (a M + s I) eps determines eps, so
    eps* = (a M + s I)^-1 (x_t - a c), x0* = c + M eps*, v* = a eps* - s x0*, and the VE
    denoiser is x0* at a = 1."""
    g, q, lam = _gauss(seed)
    c, m = _coupling(g, q, lam, sigma_max)

    def eps_star(x, a, s):
        a, s = jnp.reshape(a, (-1, 1)), jnp.reshape(s, (-1, 1))
        return (((x - a * c) @ q) / (a * m + s)) @ q.T

    x0_of = lambda e: c + (e @ q * m) @ q.T

    def v_star(x, t):
        a, s = sch.alpha_sigma(t)
        e = eps_star(x, a, s)
        return a[:, None] * e - s[:, None] * x0_of(e)

    predictors = {
        "denoiser": lambda x, sigma: x0_of(eps_star(x, 1.0, sigma)),
        "eps": lambda x, t: eps_star(x, *sch.alpha_sigma(t)),
        "x0": lambda x, t: x0_of(eps_star(x, *sch.alpha_sigma(t))),
        "v": v_star,
    }
    return g, predictors


def test_coupled_noise_losses_have_the_closed_form_zero_loss_minimisers(x64):
    # On the exact coupling (the pairs rectified_pairs makes from the exact ODE: the slow test
    # below) every coupled loss of the closed-form predictors is 0 to round-off, while the
    # independent-noise optimum (the oracle itself) stays bounded away from 0. In VE the coupled
    # denoiser's PF-ODE is dx/dsigma = eps, a straight line through x_T = x0 + sigma_max eps: one
    # Euler step (x -> D(x_T, sigma_max)) lands on x0 exactly, the oracle's does not.
    sigma_max, n = 20.0, 256
    sch = jd.VPSchedule.cosine()
    g, predictors = _coupled_predictors(7, sigma_max, sch)
    denoiser = predictors["denoiser"]
    losses = {"eps": jd.eps_loss, "v": jd.v_loss, "x0": x0_loss}

    @jax.jit  # one program (eager operations compile one by one)
    def run():
        x_T = sigma_max * jax.random.normal(jax.random.key(8), (n, D_DIM))
        x0 = g.ode_solution(x_T, sigma_max, 0.0)
        eps = (x_T - x0) / sigma_max
        key = jax.random.key(9)
        sigma = jd.lognormal_sigmas(jax.random.key(10), (n,))
        coupled = {
            "dsm": jd.dsm_loss(denoiser, x0, sigma, key, noise=eps),
            "edm": jd.edm_loss(denoiser, x0, key, noise=eps),
            **{k: f(predictors[k], sch, x0, key, noise=eps) for k, f in losses.items()},
        }
        independent = jd.dsm_loss(g.denoise, x0, sigma, key, noise=eps)
        one_step = denoiser(x_T, sigma_max), g.denoise(x_T, sigma_max)
        return x0, one_step, coupled, independent

    x0, (one_step, one_step_oracle), coupled, independent = run()
    for kind, value in coupled.items():
        assert float(value) < 1e-24, kind
    assert float(independent) > 1e-4
    np.testing.assert_allclose(one_step, x0, rtol=1e-12, atol=1e-12)
    assert float(jnp.min(jnp.linalg.norm(one_step_oracle - x0, axis=-1))) > 1e-3


@pytest.mark.slow
def test_rectified_pairs_through_the_driver(x64):
    # The driver's couplings: with the oracle and Heun they converge to the exact ODE map at
    # second order (the error ratio between 20 and 40 steps near 4); with the coupled denoiser
    # one Euler step is the exact map. The noise returned puts x_T on the pair's line.
    sigma_max, n = 20.0, 64
    g, predictors = _coupled_predictors(7, sigma_max, jd.VPSchedule.cosine())
    key = jax.random.key(8)
    x_T = sigma_max * jax.random.normal(key, (n, D_DIM))
    exact = g.ode_solution(x_T, sigma_max, 0.0)
    x0, eps = rectified_pairs(
        predictors["denoiser"], key, (n, D_DIM), jnp.array([sigma_max, 0.0]), jd.Euler()
    )
    np.testing.assert_allclose(x0 + sigma_max * eps, x_T, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(x0, exact, rtol=1e-12, atol=1e-12)
    errors = []
    for steps in (20, 40):
        grid = jd.karras_sigmas(steps, sigma_min=1e-3, sigma_max=sigma_max)
        x0, eps = rectified_pairs(g.denoise, key, (n, D_DIM), grid, jd.Heun())
        np.testing.assert_allclose(x0 + sigma_max * eps, x_T, rtol=1e-13, atol=1e-13)
        # The grid stops at sigma_min: compare with the exact map to sigma_min, then denoise.
        errors.append(float(jnp.max(jnp.abs(x0 - g.ode_solution(x_T, sigma_max, 0.0)))))
    assert 3.0 < errors[0] / errors[1] < 5.0, errors


def _fit(loss, data_fn, steps):
    model = jd.Precond(jd.NoiseMLP(2, width=64, depth=3, key=jax.random.PRNGKey(0)), sigma_data=1.0)
    return train.fit(
        loss,
        model,
        data_fn,
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, steps, 0.1)),
        num_steps=steps,
        key=jax.random.PRNGKey(2),
        progress=False,
    ).model


@pytest.mark.slow
def test_training_on_couplings_needs_fewer_steps():
    # Rectified Diffusion's claim on 2-D Gaussian data with the exact oracle as the pretrained
    # model: the same network and budget trained with edm_loss on the oracle's couplings (noise=)
    # or on independent noise. The measure is the RMS distance of Euler samples to the teacher's
    # exact ODE map from the same x_T. The independently trained model is as far as the oracle
    # itself at 1 step (both return D(x_T): the mean's neighbourhood), the coupled one lands near
    # the map in one step, closer than the oracle gets in 8.
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    g = Gaussian(np.array([1.0, -0.5]), q @ np.diag([0.3, 2.0]) @ q.T)
    sigma_max = 20.0
    teacher_grid = jd.karras_sigmas(40, 0.002, sigma_max)
    x0c, epsc = rectified_pairs(
        g.denoise, jax.random.PRNGKey(1), (8192, 2), teacher_grid, jd.Heun()
    )

    def coupled_batch(k):
        i = jax.random.randint(k, (256,), 0, x0c.shape[0])
        return x0c[i], epsc[i]

    independent = _fit(
        lambda m, x, k: jd.edm_loss(m, x, k, sigma_data=1.0), lambda k: g.sample(k, 256), 1500
    )
    coupled = _fit(
        lambda m, b, k: jd.edm_loss(m, b[0], k, sigma_data=1.0, noise=b[1]), coupled_batch, 1500
    )
    x_T = sigma_max * jax.random.normal(jax.random.PRNGKey(5), (2000, 2))
    exact = g.ode_solution(x_T, sigma_max, 0.0)

    def error(denoiser, steps):
        grid = (
            jd.karras_sigmas(steps, 0.002, sigma_max) if steps > 1 else jnp.array([sigma_max, 0.0])
        )
        out = jd.sample(denoiser, x_T, grid, jd.Euler())
        return float(jnp.sqrt(jnp.mean(jnp.sum((out - exact) ** 2, axis=-1))))

    oracle_1, oracle_8 = error(g.denoise, 1), error(g.denoise, 8)
    independent_1, coupled_1 = error(independent, 1), error(coupled, 1)
    assert abs(independent_1 / oracle_1 - 1) < 0.1
    assert coupled_1 < 0.1 * independent_1
    assert coupled_1 < 0.5 * oracle_8
