"""Training objectives, toy training, stochastic interpolants, and gradients through sampling."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import diffusion as jd
from jaxsolve import train
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture


def _gauss(d=3, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    lam = np.linspace(0.2, 2.0, d)
    return Gaussian(rng.normal(size=d), q @ np.diag(lam) @ q.T), lam


def _ring(k=6, radius=2.0, var=0.02):
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    means = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    return GaussianMixture(np.full(k, 1 / k), means, np.full((k, 2), var))


# ---------------------------------------------------------------------------------------------
# Closed forms


def test_dsm_loss_of_the_exact_gaussian_denoiser_is_the_posterior_variance(x64):
    g, lam = _gauss()
    x0 = g.sample(jax.random.PRNGKey(0), 400_000)
    for sigma in [0.1, 1.0, 5.0]:
        closed = np.mean(lam * sigma**2 / (lam + sigma**2))  # per element
        per_sample = jax.vmap(lambda x, k, sigma=sigma: jd.dsm_loss(g, x[None], sigma, k))(
            x0, jax.random.split(jax.random.PRNGKey(1), x0.shape[0])
        )
        est, se = float(jnp.mean(per_sample)), float(jnp.std(per_sample) / np.sqrt(x0.shape[0]))
        assert abs(est - closed) < 5 * se, (sigma, est, closed, se)


def test_edm_loss_of_the_exact_gaussian_denoiser_matches_quadrature(x64):
    g, lam = _gauss(seed=1)
    sd = 0.5
    # E_sigma[ lambda(sigma) * mean_i lam_i s^2 / (lam_i + s^2) ], ln sigma ~ N(-1.2, 1.2^2), by Gauss-Hermite.
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)
    s = np.exp(-1.2 + 1.2 * nodes)
    inner = np.mean(lam[None] * s[:, None] ** 2 / (lam[None] + s[:, None] ** 2), axis=1)
    closed = np.sum(weights * (s**2 + sd**2) / (s * sd) ** 2 * inner) / np.sqrt(2 * np.pi)
    x0 = g.sample(jax.random.PRNGKey(2), 200_000)
    keys = jax.random.split(jax.random.PRNGKey(3), x0.shape[0])
    per_sample = jax.vmap(lambda x, k: jd.edm_loss(g, x[None], k, sigma_data=sd))(x0, keys)
    est, se = float(jnp.mean(per_sample)), float(jnp.std(per_sample) / np.sqrt(x0.shape[0]))
    assert abs(est - closed) < 5 * se, (est, closed, se)


def test_precond_coefficients_and_exact_network(x64):
    g, _ = _gauss(d=2, seed=2)
    sd = 0.7
    pre = jd.Precond(lambda x, c: x, sigma_data=sd)
    for s in [0.01, 0.5, 20.0]:
        c_skip, c_out, c_in, c_noise = pre.coefficients(s)
        np.testing.assert_allclose(
            [c_skip, c_out, c_in, c_noise],
            [
                sd**2 / (s**2 + sd**2),
                s * sd / np.sqrt(s**2 + sd**2),
                1 / np.sqrt(s**2 + sd**2),
                np.log(s) / 4,
            ],
            rtol=1e-13,
        )
        # The network that makes Precond exact: F = (D(x) - c_skip x) / c_out, x recovered from c_in x.
        exact = jd.Precond(
            lambda xin, c, s=s, c_in=c_in, c_skip=c_skip, c_out=c_out: (
                (g.denoise(xin / c_in, s) - c_skip * xin / c_in) / c_out
            ),
            sigma_data=sd,
        )
        x = jnp.asarray(np.random.default_rng(3).normal(size=(5, 2)) * 3)
        np.testing.assert_allclose(exact(x, s), g.denoise(x, s), rtol=1e-10, atol=1e-12)


def test_eps_and_v_losses_are_minimised_by_the_exact_model(x64):
    g, _ = _gauss(d=2, seed=4)
    sch = jd.VPSchedule.cosine()
    eps_exact = jd.to_eps(g.denoise, sch)
    v_exact = jd.to_v(g.denoise, sch)
    x0 = g.sample(jax.random.PRNGKey(5), 20_000)
    key = jax.random.PRNGKey(6)
    bump = lambda f: lambda x, t: f(x, t) + 0.05
    assert jd.eps_loss(eps_exact, sch, x0, key) < jd.eps_loss(bump(eps_exact), sch, x0, key)
    assert jd.v_loss(v_exact, sch, x0, key) < jd.v_loss(bump(v_exact), sch, x0, key)
    # At a fixed t the eps loss is the posterior variance of eps: mean_i (1 - b^2/(a^2 lam_i + b^2)).
    t = 0.4
    a, b = (float(v) for v in sch.alpha_sigma(t))
    lam = np.linalg.eigvalsh(np.asarray(g.covariance()))
    closed = np.mean(1 - b**2 / (a**2 * lam + b**2))
    np.testing.assert_allclose(jd.eps_loss(eps_exact, sch, x0, key, t=t), closed, rtol=0.03)


def test_u_shaped_times_follow_their_density():
    a = 4.0
    t = np.sort(np.asarray(jd.u_shaped_times(jax.random.PRNGKey(7), (200_000,), a)))
    cdf = 0.5 + np.sinh(a * (t - 0.5)) / (2 * np.sinh(a / 2))
    assert np.max(np.abs(cdf - np.arange(1, t.size + 1) / t.size)) < 0.005  # Kolmogorov-Smirnov
    assert t.min() >= 0.0 and t.max() <= 1.0


def test_pseudo_huber_closed_form():
    d = jnp.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(jd.pseudo_huber(d, c=1.0), [np.sqrt(26.0) - 1.0, 0.0], rtol=1e-6)
    small = jnp.full((1, 4), 1e-3)
    c = 0.00054 * 2.0
    np.testing.assert_allclose(jd.pseudo_huber(small), [np.sqrt(4e-6 + c**2) - c], rtol=1e-5)


def test_metrics():
    x = jax.random.normal(jax.random.PRNGKey(8), (500, 2))
    assert float(jd.sliced_wasserstein(x, x, jax.random.PRNGKey(0))) == 0.0
    shifted = x + jnp.array([3.0, 0.0])
    sw = float(jd.sliced_wasserstein(x, shifted, jax.random.PRNGKey(0), 2000))
    np.testing.assert_allclose(sw, 3.0 / np.sqrt(2.0), rtol=0.05)  # E[cos^2] = 1/2 in 2-D
    assert float(jd.mmd(x, x)) < 1e-6 < float(jd.mmd(x, shifted))


# ---------------------------------------------------------------------------------------------
# Toy training (a few seconds each)


def _fit(loss, model, data_fn, steps, lr=3e-3, key=0):
    return train.fit(
        loss,
        model,
        data_fn,
        optimizer=optax.adam(optax.cosine_decay_schedule(lr, steps, 0.1)),
        num_steps=steps,
        key=jax.random.PRNGKey(key),
        progress=False,
    ).model


def test_score_model_learns_a_mixture():
    ring = _ring(var=0.05)
    model = jd.Precond(jd.NoiseMLP(2, width=96, depth=3, key=jax.random.PRNGKey(0)), sigma_data=1.4)
    data = lambda k: ring.sample(k, 256)
    trained = _fit(lambda m, x, k: jd.edm_loss(m, x, k, sigma_data=1.4), model, data, 1200)
    noise = 40.0 * jax.random.normal(jax.random.PRNGKey(1), (2000, 2))
    grid = jd.karras_sigmas(20, 0.002, 40.0)
    ref = ring.sample(jax.random.PRNGKey(2), 2000)

    def sw(denoiser):
        out = jd.sample(denoiser, noise, grid, jd.DPMSolverPP(order=2))
        return float(jd.sliced_wasserstein(out, ref, jax.random.PRNGKey(3)))

    # The exact denoiser with the same sampler is the best a perfect model can do here (the
    # metric has a finite-sample floor of its own).
    before, after, best = sw(model), sw(trained), sw(ring)
    assert after < 0.5 * before, (before, after)
    assert after < 1.3 * best, (after, best)


def _fm_velocity(net):
    # A batch model: t is a scalar (from the sampler) or one time per sample (in training).
    return lambda x, t: jax.vmap(net)(x, jnp.broadcast_to(t, x.shape[:1]))


# A training run (default-run budget): the reflow test below trains flow matching too.
@pytest.mark.slow
def test_flow_matching_velocity_approaches_the_analytic_one():
    g, _ = _gauss(d=2, seed=5)
    net = jd.NoiseMLP(2, width=64, depth=3, key=jax.random.PRNGKey(10))
    loss = lambda n, x, k: jd.flow_matching_loss(_fm_velocity(n), x, k)
    trained = _fit(loss, net, lambda k: g.sample(k, 256), 2500)
    # Exact velocity E[x1 - x0 | x_t] of the straight path from N(m, C) to N(0, I): the linear
    # stochastic interpolant with gamma = 0, data as its base.
    exact = jd.StochasticInterpolant.linear(0.0).gaussian_model(
        g.mean(), g.covariance(), jnp.zeros(2), jnp.eye(2)
    )
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(11), 3)
    t = jax.random.uniform(k1, (2000,), minval=0.05, maxval=0.95)
    x_t = (1 - t[:, None]) * g.sample(k2, 2000) + t[:, None] * jax.random.normal(k3, (2000, 2))
    v_true = exact(x_t, t)[0]
    rel = lambda n: float(
        jnp.linalg.norm(_fm_velocity(n)(x_t, t) - v_true) / jnp.linalg.norm(v_true)
    )
    assert rel(trained) < 0.1 < rel(net), (rel(trained), rel(net))


@pytest.mark.slow  # two training runs (~18 s); the default run keeps the flow-matching fit
def test_reflow_straightens_the_flow():
    mix = GaussianMixture(
        np.array([0.5, 0.5]), np.array([[-2.0, 0.0], [2.0, 0.0]]), np.full((2, 2), 0.05)
    )
    net = jd.NoiseMLP(2, width=64, depth=3, key=jax.random.PRNGKey(12))
    loss = lambda n, x, k: jd.flow_matching_loss(_fm_velocity(n), x, k, times="u_shaped")
    rf1 = _fit(loss, net, lambda k: mix.sample(k, 256), 1000)
    data, noise = jd.reflow_pairs(_fm_velocity(rf1), jax.random.PRNGKey(13), (4096, 2), n_steps=40)
    pair_loss = lambda n, b, k: jd.flow_matching_loss(
        _fm_velocity(n), b[0], k, x1=b[1], times="u_shaped", metric="pseudo_huber"
    )
    rf2 = train.fit(
        pair_loss,
        rf1,
        (data, noise),
        optimizer=optax.adam(1e-3),
        num_steps=750,
        batch_size=256,
        key=jax.random.PRNGKey(14),
        progress=False,
    ).model
    z = jax.random.normal(jax.random.PRNGKey(15), (512, 2))
    s1 = float(jd.straightness(_fm_velocity(rf1), z))
    s2 = float(jd.straightness(_fm_velocity(rf2), z))
    # The first flow bends (s1 ~ 1.2: two modes); one reflow makes it nearly straight (s2 ~ 0.006
    # with these step counts, 0.003 with twice as many).
    assert s2 < 0.05 * s1, (s1, s2)


# ---------------------------------------------------------------------------------------------
# Stochastic interpolants


@pytest.mark.parametrize(
    "interp",
    # The default run checks the linear interpolant on 5000 samples; the trigonometric one, and
    # 20000 samples, are left to -m slow.
    [
        pytest.param(("linear", 5_000), id="linear-5000"),
        pytest.param(("linear", 20_000), id="linear-20000", marks=pytest.mark.slow),
        pytest.param(("trigonometric", 20_000), id="trigonometric-20000", marks=pytest.mark.slow),
    ],
)
def test_interpolant_ode_and_sde_reach_the_same_moments(x64, interp):
    interp, n = interp
    interpolant = getattr(jd.StochasticInterpolant, interp)(1.0)
    m0, c0 = np.zeros(2), np.eye(2)
    m1, c1 = np.array([2.0, -1.0]), np.array([[0.5, 0.2], [0.2, 0.3]])
    model = jd.interpolant_model(interpolant.gaussian_model(m0, c0, m1, c1))
    t0 = 1e-3
    k = jax.random.split(jax.random.PRNGKey(16), 3)
    x0 = jax.random.normal(k[0], (n, 2))
    x1 = m1 + jax.random.normal(k[1], (n, 2)) @ np.linalg.cholesky(c1).T
    start = interpolant.interpolate(x0, x1, jax.random.normal(k[2], (n, 2)), jnp.full((n,), t0))
    se_cov = np.sqrt((np.outer(np.diag(c1), np.diag(c1)) + c1**2) / n)
    for eps in [0.0, 0.5, 1.0]:
        y = np.asarray(
            jd.sample(
                model,
                start,
                jd.interpolant_grid(400, t0),
                jd.InterpolantSolver(interpolant, eps),
                key=jax.random.PRNGKey(17),
            )
        )
        np.testing.assert_array_less(np.abs(y.mean(0) - m1), 5 * np.sqrt(np.diag(c1) / n) + 0.01)
        np.testing.assert_array_less(np.abs(np.cov(y.T) - c1), 5 * se_cov + 0.01)


def test_interpolant_losses_are_minimised_by_the_exact_drift(x64):
    interp = jd.StochasticInterpolant.linear(0.5)
    m1, c1 = np.array([1.0, 1.0]), np.diag([0.3, 2.0])
    exact = interp.gaussian_model(np.zeros(2), np.eye(2), m1, c1)
    x0 = jax.random.normal(jax.random.PRNGKey(18), (50_000, 2))
    x1 = m1 + jax.random.normal(jax.random.PRNGKey(19), (50_000, 2)) * np.sqrt(np.diag(c1))
    key = jax.random.PRNGKey(20)
    b = lambda x, t: exact(x, t)[0]
    eta = lambda x, t: exact(x, t)[1]
    assert interp.velocity_loss(b, x0, x1, key) < interp.velocity_loss(
        lambda x, t: b(x, t) * 1.05, x0, x1, key
    )
    assert interp.denoiser_loss(eta, x0, x1, key) < interp.denoiser_loss(
        lambda x, t: eta(x, t) + 0.03, x0, x1, key
    )


def test_interpolant_solver_arguments():
    with pytest.raises(ValueError, match="method"):
        jd.InterpolantSolver(jd.StochasticInterpolant.linear(), method="rk4")
    with pytest.raises(ValueError, match=r"needs epsilon"):
        jd.InterpolantSolver(jd.StochasticInterpolant.linear(), epsilon=0.5, method="heun")


# ---------------------------------------------------------------------------------------------
# Gradients through sampling


def _adjoint_problem():
    net = jd.NoiseMLP(2, width=32, depth=2, key=jax.random.PRNGKey(21))
    den = jd.Precond(net, 0.5)
    x0 = 10.0 * jax.random.normal(jax.random.PRNGKey(22), (8, 2))
    return den, x0


def _gradients(den, x0, adjoint, n):
    sig = jd.karras_sigmas(n, 0.01, 10.0)

    def loss(d, x):
        y = jd.sample(d, x, sig, jd.DPMSolverPP(order=2), adjoint=adjoint)
        return jnp.sum((y - jnp.array([1.0, -1.0])) ** 2)

    gp, gx = eqx.filter_jit(eqx.filter_grad(lambda dx: loss(*dx)))((den, x0))
    flat = jnp.concatenate(
        [jnp.ravel(v) for v in jax.tree_util.tree_leaves(eqx.filter(gp, eqx.is_array))]
    )
    return flat, gx


def test_adjoint_gradients_match_backprop_and_converge(x64):
    den, x0 = _adjoint_problem()
    errors = []
    for n in [25, 100]:
        pb, xb = _gradients(den, x0, "backprop", n)
        pa, xa = _gradients(den, x0, "adjoint", n)
        rel_p = float(jnp.linalg.norm(pa - pb) / jnp.linalg.norm(pb))
        rel_x = float(jnp.linalg.norm(xa - xb) / jnp.linalg.norm(xb))
        errors.append(max(rel_p, rel_x))
    assert errors[1] < 5e-3, errors
    assert errors[1] < errors[0] / 8, errors  # second order: 4x the steps, ~16x smaller


@pytest.mark.slow  # conditioning gradients: same adjoint as the parameters' (checked by default)
def test_adjoint_gradient_with_respect_to_guidance_scale(x64):
    cond = Gaussian(jnp.array([1.5, 0.0]), 0.3 * jnp.eye(2))
    uncond = _ring()
    x0 = uncond.sample(jax.random.PRNGKey(23), 16, sigma=20.0)
    sig = jd.karras_sigmas(100, 0.01, 20.0)

    def loss(w, adjoint):
        return jnp.sum(
            jd.sample(jd.cfg(cond, uncond, w), x0, sig, jd.DPMSolverPP(order=2), adjoint=adjoint)
            ** 2
        )

    gb = jax.grad(loss)(2.0, "backprop")
    ga = jax.grad(loss)(2.0, "adjoint")
    np.testing.assert_allclose(ga, gb, rtol=5e-3)


@pytest.mark.slow  # compiles four adjoint runs to read their memory; a measurement
def test_adjoint_memory_is_flat_in_the_number_of_steps():
    den, _ = _adjoint_problem()
    x0 = jnp.ones((256, 2))
    params, static = eqx.partition(den, eqx.is_inexact_array)

    def temp_bytes(adjoint, n):
        sig = jd.karras_sigmas(n, 0.01, 10.0)
        loss = lambda p, x: jnp.sum(
            jd.sample(eqx.combine(p, static), x, sig, jd.DPMSolverPP(order=2), adjoint=adjoint) ** 2
        )
        return (
            jax.jit(jax.grad(loss, argnums=(0, 1)))
            .lower(params, x0)
            .compile()
            .memory_analysis()
            .temp_size_in_bytes
        )

    adj = [temp_bytes("adjoint", n) for n in (25, 200)]
    back = [temp_bytes("backprop", n) for n in (25, 200)]
    assert adj[1] <= 1.05 * adj[0], adj
    assert back[1] > 4 * back[0], back
    assert adj[1] < back[1] / 10


def test_adjoint_arguments():
    den, x0 = _adjoint_problem()
    sig = jd.karras_sigmas(5, 0.01, 10.0)
    with pytest.raises(ValueError, match="deterministic ODE solver"):
        jd.sample(den, x0, sig, jd.EulerAncestral(), key=jax.random.PRNGKey(0), adjoint="adjoint")
    with pytest.raises(ValueError, match="save_trajectory"):
        jd.sample(den, x0, sig, jd.Heun(), adjoint="adjoint", save_trajectory=True)


@pytest.mark.wrong_argument_types
def test_unet_single_sample_and_errors():
    net = jd.UNet2D(channels=2, width=8, key=jax.random.PRNGKey(24))
    y = eqx.filter_jit(net)(jnp.ones((2, 8, 12)), 0.3)
    chex.assert_shape(y, (2, 8, 12))
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        net(jnp.ones((3, 2, 8, 8)), 0.3)
    with pytest.raises(ValueError, match="divisible by 4"):
        net(jnp.ones((2, 6, 8)), 0.3)
