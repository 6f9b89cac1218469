import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

KINDS = ["eps", "x0", "v", "score", "flow"]
FROM = {
    "eps": jd.from_eps,
    "x0": jd.from_x0,
    "v": jd.from_v,
    "score": jd.from_score,
    "flow": jd.from_flow,
}
TO = {"eps": jd.to_eps, "x0": jd.to_x0, "v": jd.to_v, "score": jd.to_score, "flow": jd.to_flow}


def _schedules():
    return {
        "vp_linear": jd.VPSchedule.linear(),
        "vp_cosine": jd.VPSchedule.cosine(),
        "vp_discrete": jd.VPSchedule.discrete(jd.ddpm_betas("scaled_linear", 1000, 0.00085, 0.012)),
        "ve": jd.VESchedule(0.01, 50.0),
        "flow": jd.FlowSchedule(),
    }


def _model(d, key):
    """A smooth nonlinear stand-in for a network: fn(x_t, t)."""
    w = jax.random.normal(key, (d, d)) / np.sqrt(d)
    return lambda x_t, t: jnp.tanh(x_t @ w.T) * (1.0 + jnp.asarray(t)[..., None]) + 0.1 * x_t


def _interior_times(sch, n):
    lo, hi = float(sch.t_min), float(sch.t_max)
    return jnp.linspace(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo), n)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sched", list(_schedules()))
def test_model_to_denoiser_to_model_round_trip(x64, kind, sched):
    sch = _schedules()[sched]
    fn = _model(3, jax.random.PRNGKey(0))
    x_t = jax.random.normal(jax.random.PRNGKey(1), (7, 3))
    t = _interior_times(sch, 7)
    back = TO[kind](FROM[kind](fn, sch), sch)
    np.testing.assert_allclose(back(x_t, t), fn(x_t, t), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sched", list(_schedules()))
def test_denoiser_to_model_to_denoiser_round_trip(x64, kind, sched):
    sch = _schedules()[sched]
    g = Gaussian(jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(2), (5, 2))
    sigma = sch.to_ve_sigma(_interior_times(sch, 5))
    back = FROM[kind](TO[kind](g.denoise, sch), sch)
    np.testing.assert_allclose(back(x, sigma), g.denoise(x, sigma), rtol=1e-9, atol=1e-10)


def test_eps_round_trip_eps_x0_eps(x64):
    sch = jd.VPSchedule.linear()
    fn = _model(4, jax.random.PRNGKey(3))
    x_t = jax.random.normal(jax.random.PRNGKey(4), (4,))
    for t in [0.01, 0.3, 0.9]:
        denoiser = jd.from_eps(fn, sch)
        s = sch.to_ve_sigma(t)
        x = x_t / sch.alpha(t)
        eps = jd.eps_from_denoised(x, s, denoiser(x, s))
        np.testing.assert_allclose(eps, fn(x_t, t), rtol=1e-10)
        np.testing.assert_allclose(jd.denoised_from_eps(x, s, eps), denoiser(x, s), rtol=1e-10)


def _posterior_means(mean, cov, a, b, x_t):
    """E[x0 | x_t] and E[eps | x_t] for x_t = a x0 + b eps, x0 ~ N(mean, cov): independent numpy."""
    d = mean.shape[0]
    s_xx = a * a * cov + b * b * np.eye(d)
    r = np.linalg.solve(s_xx, (x_t - a * mean).T).T
    x0 = mean + a * r @ cov  # cov symmetric
    eps = b * r
    return x0, eps


def test_vp_eps_model_of_exact_gaussian_equals_gaussian_denoiser(x64):
    mean = np.array([1.0, -2.0, 0.5])
    cov = np.array([[2.0, 0.4, 0.0], [0.4, 1.0, -0.3], [0.0, -0.3, 0.5]])
    g = Gaussian(mean, cov)
    sch = jd.VPSchedule.linear()

    def exact_eps(x_t, t):
        a, b = np.asarray(sch.alpha(t)), np.asarray(sch.sigma(t))
        return jnp.asarray(_posterior_means(mean, cov, a, b, np.asarray(x_t))[1])

    denoiser = jd.from_eps(exact_eps, sch)
    x = 4.0 * np.random.default_rng(0).normal(size=(6, 3))
    for t in [0.005, 0.1, 0.5, 1.0]:
        s = sch.to_ve_sigma(t)
        np.testing.assert_allclose(denoiser(x, s), g.denoise(x, s), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("kind", ["v", "x0", "flow"])
def test_other_exact_parameterisations_equal_gaussian_denoiser(x64, kind):
    """v-, x0- and flow-velocity models of a Gaussian, written from their definitions."""
    mean = np.array([0.3, -0.7])
    cov = np.array([[1.5, -0.2], [-0.2, 0.4]])
    g = Gaussian(mean, cov)
    sch = jd.FlowSchedule() if kind == "flow" else jd.VPSchedule.cosine()

    def model(x_t, t):
        a, b = np.asarray(sch.alpha(t)), np.asarray(sch.sigma(t))
        x0, eps = _posterior_means(mean, cov, a, b, np.asarray(x_t))
        if kind == "v":
            return jnp.asarray(a * eps - b * x0)
        if kind == "x0":
            return jnp.asarray(x0)
        return jnp.asarray(eps - x0)  # rectified flow: d/dt[(1 - t) x0 + t eps]

    denoiser = FROM[kind](model, sch)
    x = 3.0 * np.random.default_rng(1).normal(size=(5, 2))
    for t in [0.02, 0.4, 0.9]:
        s = sch.to_ve_sigma(t)
        np.testing.assert_allclose(denoiser(x, s), g.denoise(x, s), rtol=1e-9, atol=1e-11)


def test_batched_sigma_and_time():
    sch = jd.VPSchedule.linear()
    seen = {}

    def fn(x_t, t):
        seen["t"] = t.shape
        return jnp.zeros_like(x_t)

    x = jnp.ones((4, 3, 8, 8))
    sigma = jnp.array([0.1, 1.0, 5.0, 20.0])
    out = jd.from_eps(fn, sch)(x, sigma)
    assert seen["t"] == (4,)
    np.testing.assert_allclose(out, x)  # eps = 0 means x0 = x


def test_half_precision_model_output_is_cast_back():
    sch = jd.VPSchedule.linear()
    fn = lambda x_t, t: (0.5 * x_t).astype(jnp.bfloat16)
    out = jd.from_eps(fn, sch)(jnp.ones((3,)), 0.5)
    assert out.dtype == jnp.float32


@pytest.mark.parametrize(
    "make, match",
    [
        (
            lambda: jd.from_eps(lambda x, t: x, None),
            "from_eps: schedule must be a jaxsolve schedule",
        ),
        (lambda: jd.from_v(lambda x, t: x, jnp.ones(3)), "from_v: schedule must be"),
        (lambda: jd.from_eps(3.0, jd.VPSchedule.linear()), "from_eps: fn must be callable"),
        (lambda: jd.to_score(None, jd.VPSchedule.linear()), "to_score: denoiser must be callable"),
    ],
)
@pytest.mark.wrong_argument_types
def test_adapters_are_validated_when_built(make, match):
    # They used to be accepted and fail on their first call.
    with pytest.raises(TypeError, match=match):
        make()


def test_bad_prediction_kind():
    with pytest.raises(ValueError, match="prediction"):
        jd.ModelDenoiser(lambda x, t: x, jd.VPSchedule.linear(), "epsilon")


# ---------------------------------------------------------------------------------------------
# Guidance and thresholding


def test_cfg_scale_one_is_conditional_and_zero_unconditional(x64):
    cond = Gaussian(jnp.array([2.0, 0.0]), jnp.eye(2))
    uncond = Gaussian(jnp.array([0.0, 0.0]), 4.0 * jnp.eye(2))
    x = jax.random.normal(jax.random.PRNGKey(0), (5, 2))
    np.testing.assert_array_equal(jd.cfg(cond, uncond, 1.0)(x, 0.7), cond(x, 0.7))
    np.testing.assert_array_equal(jd.cfg(cond, uncond, 0.0)(x, 0.7), uncond(x, 0.7))
    w = 3.5
    expect = uncond(x, 0.7) + w * (cond(x, 0.7) - uncond(x, 0.7))
    np.testing.assert_allclose(jd.cfg(cond, uncond, w)(x, 0.7), expect, rtol=1e-14)


def test_cfg_scale_is_data_vmapped_in_one_compile():
    cond = Gaussian(jnp.array([2.0, 0.0]), jnp.eye(2))
    uncond = Gaussian(jnp.array([0.0, 0.0]), 4.0 * jnp.eye(2))
    x = jnp.array([0.3, -0.2])
    scales = jnp.linspace(0.0, 8.0, 9)
    out = jax.jit(jax.vmap(lambda w: jd.cfg(cond, uncond, w)(x, 1.0)))(scales)
    for w, row in zip(scales, out, strict=True):
        np.testing.assert_allclose(row, jd.cfg(cond, uncond, float(w))(x, 1.0), rtol=1e-6)


def test_dynamic_thresholding_is_identity_inside_range():
    inside = lambda x, s: 0.9 * jnp.tanh(x)
    x = 5.0 * jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16))
    np.testing.assert_array_equal(jd.dynamic_thresholding(inside)(x, 1.0), inside(x, 1.0))


def test_dynamic_thresholding_rule_per_sample_under_one_sigma(x64):
    """The driver calls the denoiser on the whole batch with one level: the quantile must still
    be each sample's own (Imagen's rule, uncapped by default; diffusers' cap with max_value)."""
    big = lambda x, s: 3.0 * x
    x = jax.random.normal(jax.random.PRNGKey(1), (4, 64))
    out = np.asarray(jd.dynamic_thresholding(big, 0.9)(x, 1.0))
    x0 = 3.0 * np.asarray(x)
    for row, ref in zip(out, x0, strict=True):
        r = max(np.quantile(np.abs(ref), 0.9), 1.0)
        np.testing.assert_allclose(row, np.clip(ref, -r, r) / r, rtol=1e-12)
        assert np.abs(row).max() <= 1.0 + 1e-12
    capped = np.asarray(jd.dynamic_thresholding(big, 0.9, max_value=1.5)(x, 1.0))
    for row, ref in zip(capped, x0, strict=True):
        r = min(max(np.quantile(np.abs(ref), 0.9), 1.0), 1.5)
        np.testing.assert_allclose(row, np.clip(ref, -r, r) / r, rtol=1e-12)


def test_dynamic_thresholding_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        jd.dynamic_thresholding(lambda x, s: x, 1.5)
    with pytest.raises(ValueError, match="max_value"):
        jd.dynamic_thresholding(lambda x, s: x, 0.9, max_value=-0.5)
