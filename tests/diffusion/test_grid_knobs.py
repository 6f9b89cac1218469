"""Grid and schedule knobs: zero terminal SNR, Align Your Steps, beta sigmas, Karras/exponential/beta
spacing over a schedule, flow time shifts — against diffusers 0.42 and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._grids.ays import AYS_TABLES, ays_sigmas
from jaxsolve.diffusion._grids.knobs import (
    beta_sigmas,
    dynamic_shift_mu,
    flow_shift_sigmas,
    flow_shift_times,
    schedule_sigmas,
)
from jaxsolve.diffusion._schedules import rescale_zero_terminal_snr, zero_terminal_snr_schedule
from jaxsolve.diffusion.analytic import Gaussian

torch = pytest.importorskip("torch")
schedulers = pytest.importorskip("diffusers.schedulers")

SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)


def _sd_betas():
    return jd.ddpm_betas("scaled_linear", beta_start=SD["beta_start"], beta_end=SD["beta_end"])


# -- zero terminal SNR ---------------------------------------------------------------------------


def test_rescale_zero_terminal_snr_matches_diffusers(x64):
    from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr as reference

    betas = _sd_betas()
    ours = np.asarray(rescale_zero_terminal_snr(betas))
    acp = np.cumprod(1.0 - ours)
    assert ours[-1] == 1.0 and acp[-1] == 0.0
    np.testing.assert_allclose(
        np.sqrt(acp[0]), np.sqrt(np.cumprod(1.0 - np.asarray(betas))[0]), rtol=1e-15
    )
    # The rescaled sqrt(alpha_bar) is affine in the original one.
    root, new_root = np.sqrt(np.cumprod(1.0 - np.asarray(betas))), np.sqrt(acp)
    expect = (root - root[-1]) * root[0] / (root[0] - root[-1])
    np.testing.assert_allclose(new_root, expect, rtol=1e-12, atol=1e-15)
    ref64 = reference(torch.tensor(np.asarray(betas), dtype=torch.float64)).numpy()
    # Compared as 1 - beta, the ratio of consecutive alpha_bar both compute (beta is 1 minus it).
    np.testing.assert_allclose(1.0 - ours, 1.0 - ref64, rtol=1e-13, atol=0)
    # diffusers in float32: a few float32 ulps, amplified at the tail by the shift's cancellation
    # root - root_T (relative condition number root / (root - root_T)).
    ref32 = reference(torch.tensor(np.asarray(betas), dtype=torch.float32)).numpy()
    condition = np.maximum(1.0, root / np.maximum(root - root[-1], root[0] * 1e-30))
    bound = 16 * np.finfo(np.float32).eps * condition[:-1]
    assert np.all(np.abs((1.0 - ref32[:-1]) / (1.0 - ours[:-1]) - 1.0) <= bound)


@pytest.mark.slow
def test_zero_terminal_snr_schedule_matches_diffusers_euler(x64):
    n = 12
    ref = schedulers.EulerDiscreteScheduler(
        **SD, rescale_betas_zero_snr=True, timestep_spacing="trailing"
    )
    ref.set_timesteps(n)
    schedule = zero_terminal_snr_schedule(_sd_betas())
    ours = np.asarray(jd.discrete_sigmas(schedule, n, "trailing"))
    np.testing.assert_allclose(ours[0], np.sqrt((1 - 2.0**-24) / 2.0**-24), rtol=1e-15)
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=2e-6, atol=0)


def test_zero_terminal_snr_schedule_needs_a_decreasing_table(x64):
    betas = jd.ddpm_betas("linear")  # rescaled: alpha_bar[N-2] ~ 4e-9 < 2**-24
    with pytest.raises(ValueError, match="terminal_alphas_cumprod"):
        zero_terminal_snr_schedule(betas)
    sigmas = np.asarray(zero_terminal_snr_schedule(betas, terminal_alphas_cumprod=1e-10).sigmas)
    assert np.all(np.diff(sigmas) > 0) and sigmas[-1] == pytest.approx(1e5, rel=1e-9)


@pytest.mark.slow
def test_zero_snr_v_prediction_end_to_end(x64):
    """Pure noise at the (clamped) terminal level and a v-prediction model: DPM-Solver++(2M)
    converges to the exact flow from that level, which is the zero-SNR answer m + C^(1/2) eps up to
    O(1/s_0); the unrescaled table started from pure noise misses the mean by ~ m C^(1/2)/s_0.
    An eps model with the same output error is amplified by 1/alpha at the terminal level."""
    schedule = zero_terminal_snr_schedule(_sd_betas())
    mean, var = np.array([1.5, -0.5]), np.array([0.3, 0.05])
    oracle = Gaussian(mean, var)
    eps = jax.random.normal(jax.random.PRNGKey(0), (64, 2), jnp.float64)
    zero_snr = mean + np.sqrt(var) * np.asarray(eps)

    def start(schedule_, n):
        grid = jd.discrete_sigmas(schedule_, n, "trailing")
        x = eps * jnp.sqrt(1.0 + grid[0] ** 2)  # x_t = eps, the VP state at the first level
        return grid, x, np.asarray(oracle.ode_solution(x, grid[0], 0.0))

    def run(n, prediction="v", error=0.0):
        grid, x, exact = start(schedule, n)
        model = jd.DenoiserModel(oracle, schedule, prediction)
        denoiser = jd.ModelDenoiser(lambda x_t, t: model(x_t, t) + error, schedule, prediction)
        return np.asarray(jd.sample(denoiser, x, grid, jd.DPMSolverPP(order=2))), exact

    _, _, exact = start(schedule, 50)
    np.testing.assert_allclose(exact, zero_snr, atol=np.abs(mean).max() * np.sqrt(0.3) / 4000)
    _, _, plain = start(jd.VPSchedule.discrete(_sd_betas()), 50)
    bias = mean * (1 - np.sqrt(var / (var + 14.6146**2)))  # E[x] from E[x_init] = 0
    np.testing.assert_allclose(plain.mean(0) - zero_snr.mean(0), -mean + bias, atol=2e-3)
    coarse, fine = run(50)[0], run(200)[0]
    assert np.all(np.isfinite(coarse))
    assert np.abs(fine - exact).max() < np.abs(coarse - exact).max() / 3 < 0.03
    # A model error of 1e-4: ~1e-4 in v; in eps, x0 = (x_t - sigma eps)/alpha carries 4096 x it.
    v_err = np.abs(run(50, "v", 1e-4)[0] - coarse).max()
    eps_err = np.abs(run(50, "eps", 1e-4)[0] - coarse).max()
    assert v_err < 1e-3 < eps_err


# -- Align Your Steps ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, key",
    [
        ("sd15", "StableDiffusionSigmas"),
        ("sdxl", "StableDiffusionXLSigmas"),
        ("svd", "StableDiffusionVideoSigmas"),
    ],
)
def test_ays_ten_steps_is_the_published_table(x64, model, key):
    from diffusers.schedulers import AysSchedules

    assert np.array_equal(np.asarray(ays_sigmas(model, 10)), np.asarray(AysSchedules[key]))
    assert np.array_equal(
        np.asarray(ays_sigmas(model, 11, keep_sigma_min=True)), [*AYS_TABLES[model], 0.0]
    )


def _authors_interpolation(table, m):
    """Log-linear interpolation as the authors describe it, on increasing sigma."""
    xs = np.linspace(0, 1, len(table))
    ys = np.log(np.asarray(table)[::-1])
    return np.exp(np.interp(np.linspace(0, 1, m), xs, ys))[::-1]


def test_ays_interpolation_closed_form(x64):
    table = np.asarray(AYS_TABLES["sd15"])
    # 20 steps: 21 levels at half table positions, odd ones the geometric means of neighbours.
    s = np.asarray(ays_sigmas("sd15", 20))
    np.testing.assert_array_equal(s[0:20:2], table[:10])
    np.testing.assert_allclose(s[1:20:2], np.sqrt(table[:-1] * table[1:]), rtol=1e-14)
    assert s[-1] == 0.0


@pytest.mark.slow
def test_ays_interpolation_matches_authors_and_is_monotone(x64):
    for model in AYS_TABLES:
        for n in (1, 2, 3, 7, 13, 32):
            for keep in (False, True):
                s = np.asarray(ays_sigmas(model, n, keep_sigma_min=keep))
                assert s.shape == (n + 1,) and s[-1] == 0.0 and s[0] == AYS_TABLES[model][0]
                assert np.all(np.diff(s) < 0), (model, n, keep)
                m = n if keep else n + 1
                ref = _authors_interpolation(AYS_TABLES[model], m)[:n]
                if not (keep and n == 1):  # one level: the authors' linspace gives sigma_min
                    np.testing.assert_allclose(s[:-1], ref, rtol=1e-13)
                if keep and n > 1:
                    assert s[-2] == AYS_TABLES[model][-1]


# -- beta sigmas and spacing over a schedule -----------------------------------------------------


@pytest.mark.slow  # compiling JAX's betainc takes seconds
@pytest.mark.parametrize("n", [1, 2, 10, 25])
def test_beta_sigmas_match_diffusers(x64, n):
    ref_sched = schedulers.EulerDiscreteScheduler()
    smin, smax = 0.0292, 14.6146
    ref = ref_sched._convert_to_beta(torch.tensor([smax, smin], dtype=torch.float64), n)
    ours = np.asarray(beta_sigmas(n, smin, smax))
    assert ours[-1] == 0.0
    # JAX's betainc is accurate to ~4e-14 relative (scipy's to round-off), hence 1e-12.
    np.testing.assert_allclose(ours[:-1], ref, rtol=1e-12, atol=0)
    ours_skew = np.asarray(beta_sigmas(n, smin, smax, alpha=2.0, beta=0.5))
    ref_skew = ref_sched._convert_to_beta(
        torch.tensor([smax, smin], dtype=torch.float64), n, alpha=2.0, beta=0.5
    )
    np.testing.assert_allclose(ours_skew[:-1], ref_skew, rtol=1e-12, atol=0)


def test_schedule_spacing_closed_form(x64):
    schedule = jd.VPSchedule.linear()
    lo, hi = (float(schedule.to_ve_sigma(t)) for t in (schedule.t_min, schedule.t_max))
    u = np.linspace(0, 1, 9)
    karras = (hi ** (1 / 5) + u * (lo ** (1 / 5) - hi ** (1 / 5))) ** 5
    np.testing.assert_allclose(schedule_sigmas(schedule, 9, rho=5.0)[:-1], karras, rtol=1e-13)
    exponential = np.exp(np.log(hi) + u * np.log(lo / hi))
    np.testing.assert_allclose(
        schedule_sigmas(schedule, 9, "exponential")[:-1], exponential, rtol=1e-13
    )


@pytest.mark.slow  # importing diffusers' multistep scheduler takes a second
@pytest.mark.parametrize("option", ["karras", "exponential", "beta"])
def test_schedule_spacing_matches_diffusers_dpmsolver(x64, option):
    n = 15
    ref = schedulers.DPMSolverMultistepScheduler(**SD, **{f"use_{option}_sigmas": True})
    ref.set_timesteps(n)
    # diffusers' float32 table (its 1 - alpha_bar loses ~1e-5 at small sigma), read in float64.
    table = ref.alphas_cumprod.numpy().astype(np.float64)
    ours = np.asarray(schedule_sigmas(jd.VPSchedule.discrete(alphas_cumprod=table), n, option))
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=3e-6, atol=0)


# -- flow time shift -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, kwargs",
    [
        ({}, {}),
        ({"shift": 3.0}, {"shift": 3.0}),
        ({"use_dynamic_shifting": True}, {"mu": 1.15}),
        (
            {"use_dynamic_shifting": True, "time_shift_type": "linear"},
            {"mu": 2.5, "time_shift_type": "linear"},
        ),
        ({"shift": 3.0, "shift_terminal": 0.1}, {"shift": 3.0, "shift_terminal": 0.1}),
    ],
)
@pytest.mark.parametrize(
    "n", [pytest.param(1, marks=pytest.mark.slow), pytest.param(4, marks=pytest.mark.slow), 28]
)
def test_flow_shift_matches_diffusers(x64, config, kwargs, n):
    ref = schedulers.FlowMatchEulerDiscreteScheduler(**config)
    ref.set_timesteps(n, mu=kwargs.get("mu"))
    ours = np.asarray(flow_shift_times(n, **kwargs))
    if n == 1 and "shift_terminal" in kwargs:
        # diffusers stretches by (1 - t_last)/(1 - shift_terminal) = 0 at one step: NaN.
        assert np.isnan(ref.sigmas.numpy()[0]) and ours[0] == 1.0
        return
    np.testing.assert_allclose(ours, ref.sigmas.numpy(), rtol=2e-6, atol=0)
    ve = np.asarray(flow_shift_sigmas(n, **kwargs))
    assert np.all(np.isfinite(ve)) and np.all(np.diff(ve) < 0) and ve[-1] == 0.0
    np.testing.assert_allclose(ve[0], (1 - 2.0**-24) / 2.0**-24, rtol=1e-15)
    np.testing.assert_allclose(ve[1:] / (1 + ve[1:]), ours[1:], rtol=1e-14)


def test_dynamic_shift_mu_closed_form(x64):
    assert float(dynamic_shift_mu(256)) == pytest.approx(0.5, rel=1e-15)
    assert float(dynamic_shift_mu(4096)) == pytest.approx(1.15, rel=1e-15)
    np.testing.assert_allclose(dynamic_shift_mu(1024), 0.5 + 768 * 0.65 / 3840, rtol=1e-15)
    # The dynamic shift is the static shift exp(mu) of the unshifted times.
    t = np.asarray(flow_shift_times(8, mu=0.7))[:-1]
    base = np.linspace(1.0, 1e-3, 8)
    c = np.exp(0.7)
    np.testing.assert_allclose(t, c * base / (1 + (c - 1) * base), rtol=1e-14)


# -- sweeps: padded grids --------------------------------------------------------------------------

PADDED = {
    "ays": lambda n, **kw: ays_sigmas("sdxl", n, **kw),
    "ays_keep": lambda n, **kw: ays_sigmas("svd", n, keep_sigma_min=True, **kw),
    "beta": lambda n, **kw: beta_sigmas(n, 0.03, 14.6, **kw),
    "karras_schedule": lambda n, **kw: schedule_sigmas(jd.VPSchedule.linear(), n, **kw),
    "flow": lambda n, **kw: flow_shift_sigmas(n, mu=0.9, shift_terminal=0.05, **kw),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PADDED))
def test_padded_grid_equals_unpadded(name):
    max_steps = 12
    traces = []

    def build(n):
        traces.append(None)
        return PADDED[name](n, max_steps=max_steps)

    padded = np.asarray(jax.jit(jax.vmap(build))(jnp.arange(1, max_steps + 1)))
    assert len(traces) == 1  # every step count in one compilation
    for n in (1, 2, 5, max_steps):
        ref = np.asarray(PADDED[name](n))
        np.testing.assert_allclose(padded[n - 1, : n + 1], ref, rtol=2e-6, atol=0)
        assert np.all(padded[n - 1, n + 1 :] == 0.0)
