"""Guidance knobs: guidance rescale, guidance interval, batched CFG and CFG++."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd
from jaxsolve.diffusion._guidance import cfg, cfg_batched, cfg_pair
from jaxsolve.diffusion._solvers.cfgpp import CFGPlusPlus
from jaxsolve.diffusion.analytic import Gaussian


class _Fixed(eqx.Module):
    """A denoiser returning a fixed array (the random branches of the rescale tests)."""

    out: jax.Array

    def __call__(self, x, sigma):
        return self.out


def _branches(shape, seed=0):
    rng = np.random.default_rng(seed)
    x, d_c, d_u = (rng.normal(size=shape) * s for s in (3.0, 1.0, 1.5))
    return x, d_c + 0.5, d_u


def _vp_prediction(space, x, d, sigma):
    """The VP model output of ``space`` for the VE state ``x`` and denoised ``d`` (textbook
    formulas, independent of the code under test), and its inverse."""
    alpha, s_vp = 1 / np.sqrt(1 + sigma**2), sigma / np.sqrt(1 + sigma**2)
    x_vp = alpha * x
    eps = (x_vp - alpha * d) / s_vp
    if space == "eps":
        return eps, lambda p: (x_vp - s_vp * p) / alpha
    return alpha * eps - s_vp * d, lambda p: alpha * x_vp - s_vp * p  # v; x0 = a x_vp - s v


def _rescale_reference(p_w, p_c, phi):
    """diffusers' ``rescale_noise_cfg`` transcribed to NumPy (torch's std is unbiased)."""
    axes = tuple(range(1, p_w.ndim))
    ratio = p_c.std(axis=axes, ddof=1, keepdims=True) / p_w.std(axis=axes, ddof=1, keepdims=True)
    return phi * p_w * ratio + (1 - phi) * p_w


def _guided_by_reference(space, x, d_c, d_u, sigma, w, phi, rescale):
    p_c, back = _vp_prediction(space, x, d_c, sigma)
    p_u, _ = _vp_prediction(space, x, d_u, sigma)
    return back(rescale(p_u + w * (p_c - p_u), p_c, phi))


@pytest.mark.parametrize("space", ["eps", "v"])
def test_rescale_equals_diffusers_formula_in_its_prediction_space(x64, space):
    x, d_c, d_u = _branches((3, 4, 5, 5))
    sigma, w, phi = 2.3, 7.5, 0.7
    ours = jax.jit(
        lambda x: cfg(_Fixed(d_c), _Fixed(d_u), w, rescale=phi, rescale_space=space)(x, sigma)
    )(x)
    ref = _guided_by_reference(space, x, d_c, d_u, sigma, w, phi, _rescale_reference)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    plain = _guided_by_reference(space, x, d_c, d_u, sigma, w, phi, lambda p, c, f: p)
    assert np.max(np.abs(ref - plain)) > 0.1  # the rescale did something


@pytest.mark.slow
@pytest.mark.parametrize("space", ["eps", "v"])
def test_rescale_equals_diffusers_rescale_noise_cfg(x64, space):
    torch = pytest.importorskip("torch")
    guider_utils = pytest.importorskip("diffusers.guiders.guider_utils")

    def diffusers_rescale(p_w, p_c, phi):
        out = guider_utils.rescale_noise_cfg(torch.from_numpy(p_w), torch.from_numpy(p_c), phi)
        return out.numpy()

    x, d_c, d_u = _branches((2, 4, 6, 6), seed=1)
    sigma, w, phi = 0.8, 5.0, 0.6
    ours = cfg(_Fixed(d_c), _Fixed(d_u), w, rescale=phi, rescale_space=space)(x, sigma)
    ref = _guided_by_reference(space, x, d_c, d_u, sigma, w, phi, diffusers_rescale)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)


def test_rescale_zero_is_plain_cfg_and_x0_space_matches_stds(x64):
    x, d_c, d_u = _branches((2, 3, 4))

    @jax.jit
    def run(x):
        plain = cfg(_Fixed(d_c), _Fixed(d_u), 4.0)(x, 1.3)
        off = cfg(_Fixed(d_c), _Fixed(d_u), 4.0, rescale=0.0)(x, 1.3)
        full = cfg(_Fixed(d_c), _Fixed(d_u), 4.0, rescale=1.0, rescale_space="x0")(x, 1.3)
        return plain, off, full

    plain, off, full = run(x)
    np.testing.assert_allclose(off, plain, rtol=1e-14, atol=1e-14)
    # phi = 1 in x0 space: each sample's guided estimate has its conditional one's std.
    np.testing.assert_allclose(full.std(axis=(1, 2)), d_c.std(axis=(1, 2)), rtol=1e-12)


def test_interval_is_guided_inside_and_conditional_outside_exactly(x64):
    x, d_c, d_u = _branches((4, 3))
    lo, hi = 0.5, 2.0

    @jax.jit
    def run(sigma):
        return (
            cfg(_Fixed(d_c), _Fixed(d_u), 3.0, interval=(lo, hi))(x, sigma),
            cfg(_Fixed(d_c), _Fixed(d_u), 3.0)(x, sigma),
        )

    for sigma, inside in [(0.3, False), (0.5, False), (0.51, True), (2.0, True), (2.01, False)]:
        with_interval, guided = run(jnp.asarray(sigma))
        np.testing.assert_array_equal(with_interval, guided if inside else d_c)
    # Per-sample noise levels choose per sample.
    out, guided = run(jnp.array([0.3, 1.0, 2.0, 3.0]))
    out, guided = np.asarray(out), np.asarray(guided)
    np.testing.assert_array_equal(out[[0, 3]], d_c[[0, 3]])
    np.testing.assert_array_equal(out[[1, 2]], guided[[1, 2]])


def test_bad_guidance_options():
    d = lambda x, s: x
    with pytest.raises(ValueError, match="rescale"):
        cfg(d, d, 2.0, rescale=1.5)
    with pytest.raises(ValueError, match="interval"):
        cfg(d, d, 2.0, interval=(2.0, 1.0))
    with pytest.raises(ValueError, match="rescale_space"):
        cfg(d, d, 2.0, rescale=0.5, rescale_space="score")
    with pytest.raises(ValueError, match="rescale"):
        cfg_batched(d, None, None, 2.0, rescale=-0.5)
    with pytest.raises(ValueError, match="batch_ndim"):
        cfg_batched(d, None, None, 2.0, batch_ndim=0)


_GAUSSIANS = (([2.0, -1.0], [[1.0, 0.3], [0.3, 0.5]]), ([0.0, 0.0], [[4.0, 0.0], [0.0, 4.0]]))


def _gaussians():
    return tuple(Gaussian(jnp.array(m), jnp.array(c)) for m, c in _GAUSSIANS)


def _interval_sweep(x, sigmas, scales, los, his, traces):
    cond, uncond = _gaussians()

    def run(w, lo, hi):
        traces.append(1)
        return jd.sample(cfg(cond, uncond, w, interval=(lo, hi)), x, sigmas, jd.Euler())

    return jax.jit(jax.vmap(run))(scales, los, his)


def test_denoiser_sweep_over_scale_rescale_and_interval_compiles_once(x64):
    x, d_c, d_u = _branches((2, 3))
    traces = []

    @jax.jit
    @jax.vmap
    def swept(w, phi, lo, hi):
        traces.append(1)
        return cfg(_Fixed(d_c), _Fixed(d_u), w, rescale=phi, interval=(lo, hi))(x, 1.0)

    ws, phis = jnp.array([2.0, 4.0, 4.0]), jnp.array([0.0, 0.5, 0.5])
    out = swept(ws, phis, jnp.array([0.5, 0.5, 1.0]), jnp.array([2.0, 2.0, 3.0]))
    assert len(traces) == 1
    ref = _guided_by_reference("v", x, d_c, d_u, 1.0, 4.0, 0.5, _rescale_reference)
    np.testing.assert_allclose(out[1], ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out[0], d_u + 2.0 * (d_c - d_u), rtol=1e-14, atol=1e-14)
    np.testing.assert_array_equal(out[2], d_c)  # sigma = 1 is outside (1, 3]


@pytest.mark.slow
def test_sampling_sweep_over_scale_and_interval_compiles_once(x64):
    x = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    sigmas = jd.karras_sigmas(6, 0.05, 10.0)
    traces = []
    swept = _interval_sweep(
        x,
        sigmas,
        jnp.array([1.0, 5.0, 3.0, 3.0]),
        jnp.array([0.0, 30.0, 0.5, 0.1]),
        jnp.array([20.0, 40.0, 2.0, 5.0]),
        traces,
    )
    assert len(traces) == 1
    # Scale 1 everywhere, and scale 5 on an interval the grid never enters: both conditional.
    np.testing.assert_allclose(swept[0], swept[1], rtol=1e-13, atol=1e-13)
    assert not np.allclose(swept[2], swept[0]) and not np.allclose(swept[2], swept[3])


@pytest.mark.slow
def test_interval_sweep_equals_separate_runs(x64):
    cond, uncond = _gaussians()
    x = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 2))
    sigmas = jd.karras_sigmas(6, 0.05, 10.0)
    scales, los, his = jnp.array([3.0, 5.0]), jnp.array([0.5, 0.1]), jnp.array([2.0, 5.0])
    swept = _interval_sweep(x, sigmas, scales, los, his, [])
    for k in range(2):
        guided = cfg(cond, uncond, scales[k], interval=(los[k], his[k]))
        ref = jd.sample(guided, x, sigmas, jd.Euler())
        np.testing.assert_allclose(swept[k], ref, rtol=1e-13, atol=1e-13)


def test_batched_cfg_equals_two_calls_in_one_model_call(x64):
    calls = []

    def model(x, sigma, c):
        calls.append(x.shape)
        s = jnp.reshape(sigma, jnp.shape(sigma) + (1,) * (x.ndim - jnp.ndim(sigma)))
        return jnp.tanh(x * c["a"][:, None]) / (1 + s**2) + c["b"]

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(4, 5)))
    cond = {"a": jnp.asarray(rng.normal(size=4)), "b": jnp.asarray(rng.normal(size=(4, 5)))}
    null = {"a": jnp.ones(4), "b": jnp.zeros((4, 5))}
    options = dict(rescale=0.5, interval=(0.2, 3.0))

    def both(sigma):
        calls.clear()
        batched = cfg_batched(model, cond, null, 6.0, **options)(x, sigma)
        assert calls == [(8, 5)]  # one model call on the stacked batch
        two = cfg(lambda x, s: model(x, s, cond), lambda x, s: model(x, s, null), 6.0, **options)
        return batched, two(x, sigma)

    # One program for a shared and a per-sample sigma.
    out = jax.jit(lambda s, each: (both(s), both(each)))(1.0, jnp.array([0.1, 1.0, 2.5, 4.0]))
    for batched, two in out:
        np.testing.assert_array_equal(batched, two)


def _gaussian_denoiser_np(mean, cov):
    """The exact denoiser of N(mean, cov) in NumPy: mean + cov (cov + s^2 I)^-1 (x - mean)."""
    mean, cov = np.asarray(mean), np.asarray(cov)
    return lambda x, s: mean + (x - mean) @ np.linalg.solve(cov + s**2 * np.eye(len(mean)), cov)


def _cfgpp_by_hand(x, sigmas, w):
    """DDIM CFG++ (the paper's Algorithm) in VP variables, alpha_bar = 1 / (1 + sigma^2)."""
    d_c = _gaussian_denoiser_np(*_GAUSSIANS[0])
    d_u = _gaussian_denoiser_np(*_GAUSSIANS[1])
    abar = 1.0 / (1.0 + np.asarray(sigmas) ** 2)
    x_vp = np.sqrt(abar[0]) * np.asarray(x)
    for t in range(len(sigmas) - 1):
        a, a_next = abar[t], abar[t + 1]
        x_ve = x_vp / np.sqrt(a)
        eps_c = (x_vp - np.sqrt(a) * d_c(x_ve, sigmas[t])) / np.sqrt(1 - a)
        eps_u = (x_vp - np.sqrt(a) * d_u(x_ve, sigmas[t])) / np.sqrt(1 - a)
        eps_w = eps_u + w * (eps_c - eps_u)
        x0_w = (x_vp - np.sqrt(1 - a) * eps_w) / np.sqrt(a)
        x_vp = np.sqrt(a_next) * x0_w + np.sqrt(1 - a_next) * eps_u
    return x_vp  # alpha_bar = 1 at sigma = 0: the VP and VE states agree


@pytest.mark.slow  # a sampling program: ~1 s to compile
def test_cfgpp_equals_hand_written_ddim_cfgpp_on_two_gaussians(x64):
    cond, uncond = _gaussians()
    x = 8.0 * jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    sigmas = jd.karras_sigmas(5, 0.05, 8.0)
    scales = jnp.array([0.0, 0.4, 1.0])
    pair = cfg_pair(cond, uncond)
    swept = jax.jit(jax.vmap(lambda w: jd.sample(pair, x, sigmas, CFGPlusPlus(w))))(scales)
    for w, got in zip(scales, swept, strict=True):
        ref = _cfgpp_by_hand(x, np.asarray(sigmas), float(w))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_cfgpp_at_scale_zero_is_unconditional_ddim(x64):
    # It renoises with the unconditional estimate it also lands on.
    cond, uncond = _gaussians()
    x = 8.0 * jax.random.normal(jax.random.PRNGKey(3), (5, 2))
    sigmas = jd.karras_sigmas(5, 0.05, 8.0)
    got = jd.sample(cfg_pair(cond, uncond), x, sigmas, CFGPlusPlus(0.0))
    np.testing.assert_allclose(got, jd.sample(uncond, x, sigmas, jd.DDIM()), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_ancestral_cfgpp_equals_hand_written_loop_with_recorded_noise(x64):
    """Euler-ancestral CFG++ (eta = 1): k-diffusion's ancestral levels, unconditional renoising."""
    cond, uncond = _gaussians()
    rng = np.random.default_rng(4)
    x = 8.0 * rng.normal(size=(5, 2))
    sigmas = np.asarray(jd.karras_sigmas(5, 0.05, 8.0))
    z = rng.normal(size=(len(sigmas), 5, 2))
    w = 0.6
    got = jd.sample(
        cfg_pair(cond, uncond),
        x,
        sigmas,
        CFGPlusPlus(w, eta=1.0),
        noise=lambda i, k: jnp.asarray(z)[i],
    )
    d_c = _gaussian_denoiser_np(*_GAUSSIANS[0])
    d_u = _gaussian_denoiser_np(*_GAUSSIANS[1])
    y = x
    for i in range(len(sigmas) - 1):
        s, s_next = sigmas[i], sigmas[i + 1]
        guided = d_u(y, s) + w * (d_c(y, s) - d_u(y, s))
        if s_next == 0:
            y = guided
            break
        up = min(s_next, np.sqrt(s_next**2 * (s**2 - s_next**2) / s**2))
        down = np.sqrt(s_next**2 - up**2)
        y = guided + down * (y - d_u(y, s)) / s + up * z[i]
    np.testing.assert_allclose(got, y, rtol=1e-12, atol=1e-12)
