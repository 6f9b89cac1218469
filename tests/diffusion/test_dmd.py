"""Distribution-matching distillation (DMD, f-distill) against closed forms on Gaussians.

Setting: data N(m, S), linear generator G(z) = mu + L z, so q = N(mu, C) with C = L L^T; at noise
level s the diffused laws are q_s = N(mu, A), p_s = N(m, B) with A = C + s^2 I, B = S + s^2 I, and
both scores are exact (Gaussian oracles). Then

    KL(q_s || p_s) = 1/2 [tr(B^-1 A) + (mu-m)^T B^-1 (mu-m) - d + ln det B - ln det A],
    d/dmu = B^-1 (mu - m),   d/dA = 1/2 (B^-1 - A^-1),   d/dL = 2 (d/dA) L = (B^-1 - A^-1) L,

and the DMD integrand (s_fake - s_real)(x) dx/dtheta, x = mu + L z + s eps, is a polynomial of
degree 2 in (z, eps), so the symmetric sigma-point rule (points +-sqrt(n) e_i, weights 1/(2n), n
= 2d) gives its expectation exactly. For the forward KL the reference is
KL(p_s || q_s) = 1/2 [tr(A^-1 B) + (mu-m)^T A^-1 (mu-m) - d + ln det A - ln det B], for
Jensen-Shannon a 1-D Gauss-Hermite quadrature of int q f(p/q) differentiated by JAX; the
f-distill integrand then is not a polynomial and is integrated by a tensor Gauss-Hermite rule.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve.diffusion import dsm_loss
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture
from jaxsolve.diffusion.fewstep import (
    divergence_weight,
    dmd_fake_score_loss,
    dmd_generator_loss,
    dmd_regression_loss,
    dmd_step,
)


class LinearGenerator(eqx.Module):
    mu: jax.Array
    L: jax.Array

    def __call__(self, z):
        return self.mu + z @ self.L.T

    def oracle(self):
        """The exact denoiser of the generator's own distribution N(mu, L L^T)."""
        mu, L = jax.lax.stop_gradient((self.mu, self.L))
        return Gaussian(mu, L @ L.T)


class GaussianDenoiser(eqx.Module):
    """A learnable 2-D denoiser of the Gaussian family: D(x, s) = m + C (C + s^2 I)^-1 (x - m)."""

    m: jax.Array
    K: jax.Array

    def __call__(self, x, sigma):
        C = self.K @ self.K.T
        s2 = jnp.broadcast_to(sigma, x.shape[:1])[:, None, None] ** 2
        a, b, d = C[0, 0] + s2[:, 0, 0], C[0, 1], C[1, 1] + s2[:, 0, 0]
        # The explicit 2x2 inverse: cheaper to compile than a batched solve.
        off = -b * jnp.ones_like(a)
        adjugate = jnp.stack([jnp.stack([d, off], -1), jnp.stack([off, a], -1)], -2)
        inv = adjugate / (a * d - b * b)[:, None, None]
        return self.m + jnp.einsum("ij,bjk,bk->bi", C, inv, x - self.m)


M = np.array([0.4, -0.7])
S = np.array([[1.2, 0.3], [0.3, 0.5]])
MU = np.array([-0.3, 0.5])
L0 = np.array([[0.8, 0.0], [-0.2, 1.1]])


def _sigma_points(n):
    eye = np.sqrt(n) * np.eye(n)
    return np.concatenate([eye, -eye])  # weights 1/(2n) each: the batch mean


def _reverse_kl_grad(m, S, mu, L, s):
    d = m.shape[0]
    A = L @ L.T + s**2 * np.eye(d)
    B = S + s**2 * np.eye(d)
    Bi, Ai = np.linalg.inv(B), np.linalg.inv(A)
    return Bi @ (mu - m), (Bi - Ai) @ L


# Levels and noise are given (numpy draws): drawing them inside compiles the PRNG, which costs
# more than everything else these tests compile.
RNG = np.random.default_rng(0)
Z = RNG.normal(size=(32, 2))
EPS = RNG.normal(size=(32, 2))
SIG = np.exp(RNG.normal(-0.5, 1.2, size=32))
KEY = jax.random.PRNGKey(0)
DIVERGENCES = ("reverse_kl", "forward_kl", "jensen_shannon")


@eqx.filter_jit
def _three_gradients(gen, real, fake):
    """The generator gradient under DMD's weighting, the forward KL and the normalised JS."""
    log_ratio = lambda x, s: real.log_prob(x, s) - fake.log_prob(x, s)
    out = []
    for kw in (dict(), dict(divergence="forward_kl"),
               dict(divergence="jensen_shannon", normalize_ratio=True)):  # fmt: skip
        g = jax.grad(dmd_generator_loss)(
            gen, real, fake, Z, KEY, sigma=SIG, noise=EPS, log_ratio=log_ratio, **kw
        )
        out.append(jnp.concatenate([g.mu, g.L.ravel()]))
    return jnp.stack(out)


def test_zero_gradient_when_generator_matches_data(x64):
    real = Gaussian(M, S)
    root = np.linalg.cholesky(S)
    rot = np.array([[np.cos(0.7), -np.sin(0.7)], [np.sin(0.7), np.cos(0.7)]])
    # Two square roots of S: the same distribution through different maps.
    for L in (root, root @ rot):
        gen = LinearGenerator(jnp.asarray(M), jnp.asarray(L))
        assert np.max(np.abs(_three_gradients(gen, real, gen.oracle()))) < 1e-12
    mismatched = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    grads = _three_gradients(mismatched, real, mismatched.oracle())
    assert np.min(np.max(np.abs(grads), axis=1)) > 1e-2


def test_reverse_kl_gradient_closed_form(x64):
    """Sigma points (exact for degree 2) at three levels, weight w(s) = 1 + s."""
    real = Gaussian(M, S)
    gen = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    pts = _sigma_points(4)
    levels = np.array([0.1, 0.8, 3.0])
    z = np.tile(pts[:, :2], (3, 1))
    eps = np.tile(pts[:, 2:], (3, 1))
    sig = np.repeat(levels, pts.shape[0])

    @eqx.filter_jit
    def value_and_grad(g, fake):
        return jax.value_and_grad(dmd_generator_loss)(
            g, real, fake, z, KEY, sigma=sig, noise=eps, weight=lambda s: 1.0 + s
        )

    value, grad = value_and_grad(gen, gen.oracle())
    refs = [_reverse_kl_grad(M, S, MU, L0, s) for s in levels]
    ref_mu = sum((1 + s) * r[0] for s, r in zip(levels, refs, strict=True)) / 3
    ref_L = sum((1 + s) * r[1] for s, r in zip(levels, refs, strict=True)) / 3
    np.testing.assert_allclose(grad.mu, ref_mu, rtol=0, atol=1e-12)
    np.testing.assert_allclose(grad.L, ref_L, rtol=0, atol=1e-12)
    assert float(value) > 0  # the diagnostic 0.5 |g|^2


def _gauss_hermite(n):
    t, w = np.polynomial.hermite_e.hermegauss(n)
    return t, w / np.sqrt(2 * np.pi)


def _js(r):
    return r * jnp.log(r) - (1 + r) * jnp.log((1 + r) / 2)


def test_f_divergence_gradients(x64):
    """1-D: d/d(mu, ell) of D_f(p_s || q_s), tensor Gauss-Hermite over (z, eps) (24^2
    points; the JS gradient is off by 4e-12 at 20^2 points, 2e-13 at 24^2, 4e-16 at 32^2)."""
    m, var, mu, ell, s = 0.3, 0.5, -0.2, 0.9, 0.5
    real = Gaussian(np.array([m]), np.array([[var]]))
    gen = LinearGenerator(jnp.array([mu]), jnp.array([[ell]]))
    t, w = _gauss_hermite(24)
    z, eps = (a.ravel()[:, None] for a in np.meshgrid(t, t, indexing="ij"))
    wts = np.outer(w, w).ravel()

    @eqx.filter_jit
    def quadrature(g, fake):
        log_ratio = lambda x, sg: real.log_prob(x, sg) - fake.log_prob(x, sg)

        def per_point(g, zi, ei, divergence):
            return dmd_generator_loss(
                g, real, fake, zi[None], KEY, sigma=s, noise=ei[None], weight="score",
                divergence=divergence, log_ratio=log_ratio,
            )  # fmt: skip

        out = []
        for divergence in ("forward_kl", "jensen_shannon"):
            grads = jax.vmap(jax.grad(per_point), (None, 0, 0, None))(g, z, eps, divergence)
            out.append(jnp.stack([wts @ grads.mu[:, 0], wts @ grads.L[:, 0, 0]]))
        return out

    got_fkl, got_js = quadrature(gen, gen.oracle())

    B, A = var + s**2, ell**2 + s**2
    dA = 0.5 * (1 / A - B / A**2 - (mu - m) ** 2 / A**2)
    np.testing.assert_allclose(got_fkl, [(mu - m) / A, 2 * ell * dA], rtol=0, atol=1e-12)

    tq, wq = _gauss_hermite(60)

    def js_value(theta):  # int q f(p/q) = E_{x ~ q} f(r), x reparameterised by theta
        A = theta[1] ** 2 + s**2
        x = theta[0] + jnp.sqrt(A) * tq
        log_r = -0.5 * ((x - m) ** 2 / B - (x - theta[0]) ** 2 / A) - 0.5 * jnp.log(B / A)
        return jnp.sum(wq * _js(jnp.exp(log_r)))

    ref_js = jax.jit(jax.grad(js_value))(jnp.array([mu, ell]))
    np.testing.assert_allclose(got_js, ref_js, rtol=0, atol=1e-11)
    # h(r) matters: the three divergences give three different directions.
    rk_mu, rk_L = _reverse_kl_grad(np.array([m]), np.array([[var]]), np.array([mu]),
                                   np.array([[ell]]), s)  # fmt: skip
    rk = np.array([rk_mu[0], rk_L[0, 0]])
    assert min(np.max(np.abs(got_fkl - rk)), np.max(np.abs(got_js - rk))) > 1e-2


def _gaussian_denoise(x, sigma, mean, cov):
    """Numpy reference: m + C (C + s^2 I)^-1 (x - m), one level per row."""
    eye = np.eye(len(mean))
    return np.stack([mean + cov @ np.linalg.solve(cov + s**2 * eye, xi - mean)
                     for xi, s in zip(x, sigma, strict=True)])  # fmt: skip


def _gaussian_log_prob(x, sigma, mean, cov):
    out = []
    for xi, s in zip(x, sigma, strict=True):
        A = cov + s**2 * np.eye(len(mean))
        r = xi - mean
        out.append(-0.5 * (r @ np.linalg.solve(A, r) + np.linalg.slogdet(2 * np.pi * A)[1]))
    return np.array(out)


def test_dmd_normalisation_and_divergence_weights(x64):
    """weight='dmd': g = (D_fake - D_real) / mean|x - D_real| per sample, times f-distill's
    normalised h(r); h(r) per divergence."""
    gen = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    grads = _three_gradients(gen, Gaussian(M, S), gen.oracle())  # compiled once for both tests
    x = MU + Z @ L0.T
    xt = x + SIG[:, None] * EPS
    d_real = _gaussian_denoise(xt, SIG, M, S)
    d_fake = _gaussian_denoise(xt, SIG, MU, L0 @ L0.T)
    g = (d_fake - d_real) / np.mean(np.abs(x - d_real), axis=1, keepdims=True)
    np.testing.assert_allclose(grads[0, :2], np.mean(g, axis=0), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(grads[0, 2:], np.ravel(g.T @ Z) / len(Z), rtol=1e-11, atol=1e-14)
    # f-distill's normalised JS weight: h_i / mean(h), h = r/(1+r), r = p_s(x_t)/q_s(x_t).
    log_r = _gaussian_log_prob(xt, SIG, M, S) - _gaussian_log_prob(xt, SIG, MU, L0 @ L0.T)
    h = 1 / (1 + np.exp(-log_r))
    g_js = (h / np.mean(h))[:, None] * g
    np.testing.assert_allclose(grads[2, :2], np.mean(g_js, axis=0), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(grads[2, 2:], np.ravel(g_js.T @ Z) / len(Z), rtol=1e-11, atol=1e-14)

    lr = np.array([-40.0, -1.0, 0.0, 2.0, 40.0, 1e4, -1e4])
    np.testing.assert_array_equal(divergence_weight("reverse_kl", lr), np.ones(7))
    np.testing.assert_allclose(divergence_weight("forward_kl", lr[:5]), np.exp(lr[:5]), rtol=1e-14)
    r = np.exp(lr[:5])
    np.testing.assert_allclose(divergence_weight("jensen_shannon", lr),
                               np.append(r / (1 + r), [1, 0]), rtol=1e-14, atol=0)  # fmt: skip


def test_fake_score_and_regression_losses(x64):
    gen = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    fake = GaussianDenoiser(jnp.zeros(2), jnp.eye(2))
    x = MU + Z @ L0.T

    @eqx.filter_jit
    def losses(gen, fake):
        loss = lambda g: dmd_fake_score_loss(fake, g, Z, KEY, sigma=1.0)
        value, g_gen = jax.value_and_grad(loss)(gen)
        reference = dsm_loss(fake, x, 1.0, jax.random.split(KEY)[1])
        regression = [dmd_regression_loss(gen, Z, x + 0.1, metric=metric)
                      for metric in ("l2", "pseudo_huber")]  # fmt: skip
        return value, reference, g_gen, regression

    value, reference, g_gen, regression = losses(gen, fake)
    # The denoising loss on generator samples; the generator is held fixed.
    np.testing.assert_allclose(value, reference, rtol=1e-13)
    assert np.all(np.asarray(g_gen.mu) == 0) and np.all(np.asarray(g_gen.L) == 0)
    c = 0.00054 * np.sqrt(2)
    np.testing.assert_allclose(regression, [0.01, np.sqrt(0.02 + c**2) - c], rtol=1e-12)


def test_bad_arguments():
    gen = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    real = lambda x, s: x  # never called: the arguments are refused first
    z = np.zeros((2, 2))
    with pytest.raises(ValueError, match="divergence"):
        dmd_generator_loss(gen, real, real, z, KEY, divergence="chi2")
    with pytest.raises(ValueError, match="log_ratio"):
        dmd_generator_loss(gen, real, real, z, KEY, divergence="forward_kl")
    with pytest.raises(ValueError, match="weight"):
        dmd_generator_loss(gen, real, real, z, KEY, weight="lpips")
    with pytest.raises(TypeError, match="weight"):
        dmd_generator_loss(gen, real, real, z, KEY, weight=2.0)
    with pytest.raises(ValueError, match="metric"):
        dmd_regression_loss(gen, z, z, metric="l1")
    with pytest.raises(ValueError, match="fake_updates"):
        dmd_step(gen, gen, None, None, real, z, KEY, optax.sgd(1.0), optax.sgd(1.0),
                 fake_updates=0)  # fmt: skip


def _moments_error(gen):
    C = gen.L @ gen.L.T
    return float(jnp.linalg.norm(gen.mu - M)), float(jnp.linalg.norm(C - S))


def _train_with_exact_scores(real, gen, steps, learning_rate, **kwargs):
    """Adam on the generator; the fake denoiser (and the density ratio) exact for N(mu, LL^T)."""
    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, 0.01))
    state = opt.init(gen)

    @eqx.filter_jit
    def step(gen, state, key):
        k_z, k = jax.random.split(key)
        z = jax.random.normal(k_z, (256, 2))
        fake = gen.oracle()
        log_ratio = lambda x, s: real.log_prob(x, s) - fake.log_prob(x, s)
        grads = jax.grad(dmd_generator_loss)(gen, real, fake, z, k, log_ratio=log_ratio, **kwargs)
        updates, state = opt.update(grads, state, gen)
        return eqx.apply_updates(gen, updates), state

    for i in range(steps):
        gen, state = step(gen, state, jax.random.PRNGKey(i))
    return gen


@pytest.mark.slow
@pytest.mark.parametrize("weight", ["dmd", "score"])
def test_training_with_exact_scores_reaches_data_gaussian(x64, weight):
    """Reverse KL, exact real and fake scores: N(mu, LL^T) converges onto N(m, S).

    With both scores exact the per-sample direction vanishes identically once q = p, so the
    Monte-Carlo noise vanishes at the optimum and the moments converge to round-off."""
    real = Gaussian(M, S)
    gen = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    err0 = _moments_error(gen)
    err = _moments_error(_train_with_exact_scores(real, gen, 1500, 3e-2, weight=weight))
    assert err0[0] > 1.0 and err0[1] > 1.0
    assert err[0] < 1e-8 and err[1] < 1e-8, err


@pytest.mark.slow
def test_mode_seeking_reverse_kl_and_mode_covering_forward_kl_js(x64):
    """A Gaussian generator fitted to a two-mode mixture (modes at x = +-2, variance 0.1).

    The reverse KL (DMD) is mode-seeking: the generator collapses onto one mode. The forward KL
    and Jensen-Shannon weights h(r) = r, r/(1+r) cover both: mean near 0 and the x-variance near
    the mixture's 4.1 (the forward KL's optimum over Gaussians at s -> 0 is moment matching)."""
    mix = GaussianMixture(np.array([0.5, 0.5]), np.array([[2.0, 0.0], [-2.0, 0.0]]),
                          np.full((2, 2), 0.1))  # fmt: skip
    start = LinearGenerator(jnp.array([0.5, 0.3]), jnp.eye(2))
    for divergence in ("reverse_kl", "forward_kl", "jensen_shannon"):
        gen = _train_with_exact_scores(mix, start, 2000, 2e-2, weight="score",
                                       divergence=divergence)  # fmt: skip
        mean_x, var_x = float(gen.mu[0]), float((gen.L @ gen.L.T)[0, 0])
        if divergence == "reverse_kl":
            assert abs(mean_x - 2.0) < 0.05 and abs(var_x - 0.1) < 0.02, (mean_x, var_x)
        else:
            assert abs(mean_x) < 0.1 and var_x > 3.5, (divergence, mean_x, var_x)
        np.testing.assert_allclose((gen.L @ gen.L.T)[1, 1], 0.1, atol=0.02)


@pytest.mark.slow
def test_two_optimizer_training_with_learned_fake_score(x64):
    """dmd_step: the fake denoiser is learned online (Gaussian family), the generator follows."""
    real = Gaussian(M, S)
    gen = LinearGenerator(jnp.asarray(MU), jnp.asarray(L0))
    fake = GaussianDenoiser(jnp.asarray(MU), jnp.asarray(L0))
    g_opt = optax.adam(optax.cosine_decay_schedule(2e-2, 1500, 0.01))
    f_opt = optax.adam(2e-2)
    g_state, f_state = g_opt.init(gen), f_opt.init(fake)

    @eqx.filter_jit
    def step(gen, fake, g_state, f_state, key):
        k_z, k = jax.random.split(key)
        z = jax.random.normal(k_z, (256, 2))
        return dmd_step(gen, fake, g_state, f_state, real, z, k, g_opt, f_opt, fake_updates=3)

    for i in range(1500):
        gen, fake, g_state, f_state, _ = step(gen, fake, g_state, f_state, jax.random.PRNGKey(i))
    err = _moments_error(gen)
    # The learned fake score's estimation noise sets the floor (about 0.005 and 0.01 here).
    assert err[0] < 0.03 and err[1] < 0.05, err
