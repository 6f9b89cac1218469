"""diffusers' PNDM / PLMS, DDPM and KDPM2 schedulers against jaxsolve's solvers.

Live parity (slow, needs diffusers and torch): each diffusers scheduler runs its own loop with the
exact noise prediction of a Gaussian mixture (jaxsolve's closed form, in float64) and, for DDPM, a
recorded noise table patched in for its ``randn_tensor``; jaxsolve runs the same VE grid from the
same state with the mixture as its denoiser (and ``sample(noise=...)`` replaying the table).
diffusers runs in float32, so the two agree to float32 round-off (atol 2e-4 on VE states, as
tests/diffusion/test_sampler_parity.py). Orders of convergence (slow) are measured in float64 on
the Gaussian oracle as tests/diffusion/test_solver_order.py does.
"""

import contextlib
import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._solvers.ddpm import DDPM
from jaxsolve.diffusion._solvers.pndm import PNDM
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture

BATCH = 8
WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.2]])
COVS = np.array(
    [[[0.10, 0.03], [0.03, 0.05]], [[0.20, -0.05], [-0.05, 0.10]], [[0.05, 0.0], [0.0, 0.15]]]
)


def _mixture():
    return GaussianMixture(WEIGHTS, MEANS, COVS)


def _sigmas_of(alphas_cumprod):
    acp = np.asarray(alphas_cumprod, np.float64)
    return np.sqrt((1.0 - acp) / acp)


def _vp_eps(oracle, x_vp, s):
    """The mixture's exact noise prediction for a VP-scale state at VE level ``s`` (float64)."""
    a = 1.0 / np.sqrt(1.0 + s * s)
    d = np.asarray(oracle.denoise(jnp.asarray(x_vp / a), jnp.asarray(s)))
    return (x_vp - a * d) / (a * s)


def _grid(levels):
    """Decreasing distinct levels, ending in 0 (a 0 appended when the last level is positive)."""
    out = [levels[0]]
    for s in levels[1:]:
        if s != out[-1]:
            out.append(s)
    if out[-1] != 0.0:
        out.append(0.0)
    return np.asarray(out)


@contextlib.contextmanager
def _replay_noise(scheduler, table):
    """Replace the draws of ``scheduler``'s module by ``table``'s rows, in order; yields the count
    of rows used (a one-element list)."""
    torch = pytest.importorskip("torch")
    module = importlib.import_module(type(scheduler).__module__)
    original, used = getattr(module, "randn_tensor", None), [0]

    def replay(shape, *args, dtype=None, **kwargs):
        out = torch.from_numpy(table[used[0]]).to(dtype or torch.float32)
        used[0] += 1
        return out

    module.randn_tensor = replay
    try:
        yield used
    finally:
        if original is None:
            del module.randn_tensor
        else:
            module.randn_tensor = original


def _run_diffusers(scheduler, n, seed, *, noise=False):
    """diffusers' own loop from VP state ``z``: ``(z, final VP state, the noise rows it drew)``
    (``None`` without ``noise``)."""
    torch = pytest.importorskip("torch")
    scheduler.set_timesteps(n)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((BATCH, 2))
    acp = scheduler.alphas_cumprod.numpy()
    sig = _sigmas_of(acp)
    oracle = _mixture()
    table = rng.standard_normal((len(scheduler.timesteps), BATCH, 2))
    sample = torch.from_numpy(z).float()
    with _replay_noise(scheduler, table) as used:
        for t in scheduler.timesteps:
            x = sample.numpy().astype(np.float64)
            eps = _vp_eps(oracle, x, float(sig[int(t)]))
            sample = scheduler.step(torch.from_numpy(eps).float(), t, sample).prev_sample
    return z, sample.numpy().astype(np.float64), (table[: used[0]] if noise else None)


# ------------------------------------------------------------------------------------------------
# Default (fast) checks against closed forms and a VP-scale reference, no diffusers needed.


MEAN = np.array([0.5, -1.0])
COV = np.array([[0.3, 0.1], [0.1, 0.8]])


def _gaussian_vp_eps(x_vp, s):
    """A Gaussian's exact noise prediction (NumPy, float64) for a VP-scale state at VE level s."""
    a = 1.0 / np.sqrt(1.0 + s * s)
    x = x_vp / a
    d = MEAN + np.linalg.solve(COV + s * s * np.eye(2), (x - MEAN).T).T @ COV
    return (x_vp - a * d) / (a * s)


def _table_schedule():
    betas = np.linspace(1e-4, 0.02, 1000)
    return np.cumprod(1.0 - betas)


def _vp_transfer(x, a, a_next, e):
    """Equation (9) of the PNDM paper, in the VP scale of alphas_cumprod a -> a_next."""
    denom = a * np.sqrt(1.0 - a_next) + np.sqrt(a * (1.0 - a) * a_next)
    return np.sqrt(a_next / a) * x - (a_next - a) * e / denom


def _pndm_vp_reference(x_vp, acps, mids, warmup):
    """PNDM as the paper states it, in VP scale, on levels ``acps`` (last 1.0) with half-way
    levels ``mids`` (float64 NumPy)."""

    def eps(x, a):
        s = np.sqrt((1.0 - a) / a)
        return _gaussian_vp_eps(x, s)

    history, x = [], x_vp
    for k in range(len(acps) - 1):
        a, a_next = acps[k], acps[k + 1]
        e1 = eps(x, a)
        history.append(e1)
        if warmup == "runge_kutta" and k < 3:
            m = mids[k]
            e2 = eps(_vp_transfer(x, a, m, e1), m)
            e3 = eps(_vp_transfer(x, a, m, e2), m)
            e4 = eps(_vp_transfer(x, a, a_next, e3), a_next)
            x = _vp_transfer(x, a, a_next, (e1 + 2 * e2 + 2 * e3 + e4) / 6)
        elif warmup == "heun" and k == 0:
            e2 = eps(_vp_transfer(x, a, a_next, e1), a_next)
            x = _vp_transfer(x, a, a_next, (e1 + e2) / 2)
        else:
            weights = {
                1: (1.0,),
                2: (3 / 2, -1 / 2),
                3: (23 / 12, -16 / 12, 5 / 12),
                4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
            }[min(len(history), 4)]
            combo = sum(w * e for w, e in zip(weights, history[::-1], strict=False))
            x = _vp_transfer(x, a, a_next, combo)
    return x


@pytest.mark.parametrize("warmup", ["runge_kutta", pytest.param("heun", marks=pytest.mark.slow)])
def test_pndm_matches_the_papers_vp_form(x64, warmup):
    acp = _table_schedule()
    ts = [900, 700, 500, 300, 100]
    acps = [acp[t] for t in ts] + [1.0]
    grid = np.concatenate([_sigmas_of(np.asarray(acps[:-1])), [0.0]])
    # Without a schedule the half-way level is the geometric mean of the two (the schedule's
    # half-way time is checked against diffusers in test_pndm_matches_diffusers).
    mids = [1.0 / (1.0 + s * s_next) for s, s_next in itertools.pairwise(grid[:-1])]
    oracle = Gaussian(MEAN, COV)
    z = np.random.default_rng(0).standard_normal((4, 2))
    theirs = _pndm_vp_reference(z, acps, mids, warmup)
    ours = jd.sample(
        oracle,
        jnp.asarray(z / np.sqrt(acps[0])),
        jnp.asarray(grid),
        PNDM(warmup=warmup),
        full_output=True,
    )
    np.testing.assert_allclose(np.asarray(ours.value), theirs, rtol=0, atol=1e-10)
    assert int(ours.nfe) == (len(ts) + (9 if warmup == "runge_kutta" else 1))


@pytest.mark.slow
def test_ddpm_fixed_small_is_euler_ancestral(x64):
    oracle = Gaussian(MEAN, COV)
    grid = jnp.asarray([8.0, 3.0, 1.0, 0.3, 0.0])
    x = jnp.asarray(np.random.default_rng(1).standard_normal((4, 2)) * 8.0)
    key = jax.random.PRNGKey(3)
    a = jd.sample(oracle, x, grid, DDPM(), key=key)
    b = jd.sample(oracle, x, grid, jd.EulerAncestral(), key=key)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "variance_type", [pytest.param("fixed_small", marks=pytest.mark.slow), "fixed_large"]
)
def test_ddpm_step_is_the_vp_posterior(x64, variance_type):
    # One step between two table levels, against the posterior q(x_t' | x_t, x0) in VP scale.
    acp = _table_schedule()
    a, a_next = acp[600], acp[400]
    s, s_next = _sigmas_of(a), _sigmas_of(a_next)
    oracle = Gaussian(MEAN, COV)
    rng = np.random.default_rng(2)
    x_vp, z = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    x0 = x_vp / np.sqrt(a) - s * _gaussian_vp_eps(x_vp, s)
    beta = 1.0 - a / a_next
    mean = (np.sqrt(a_next) * beta * x0 + np.sqrt(1 - beta) * (1 - a_next) * x_vp) / (1 - a)
    var = beta if variance_type == "fixed_large" else (1 - a_next) / (1 - a) * beta
    theirs = mean + np.sqrt(var) * z
    out = jd.sample(
        oracle,
        jnp.asarray(x_vp / np.sqrt(a)),
        jnp.asarray([s, s_next, 0.0]),
        DDPM(variance_type=variance_type),
        noise=lambda i, k: jnp.asarray(z),
        full_output=True,
        save_trajectory=True,
    )
    np.testing.assert_allclose(np.asarray(out.trajectory[1]) * np.sqrt(a_next), theirs, atol=1e-12)


def test_argument_errors():
    with pytest.raises(ValueError, match="learned_range"):
        DDPM(variance_type="learned_range")
    with pytest.raises(ValueError, match="variance_type"):
        DDPM(variance_type="small")
    with pytest.raises(ValueError, match="clip_sample_range"):
        DDPM(clip_sample_range=0.0)
    with pytest.raises(ValueError, match="warmup"):
        PNDM(warmup="euler")


# ------------------------------------------------------------------------------------------------
# PNDM / PLMS


def _pndm_case(n, skip_prk_steps, set_alpha_to_one, steps_offset, seed):
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.PNDMScheduler(
        skip_prk_steps=skip_prk_steps, set_alpha_to_one=set_alpha_to_one, steps_offset=steps_offset
    )
    z, final_vp, _ = _run_diffusers(sch, n, seed)
    acp = sch.alphas_cumprod.numpy().astype(np.float64)
    sig = _sigmas_of(acp)
    levels = list(sig[sch._timesteps[::-1]])
    final_acp = float(sch.final_alpha_cumprod)
    levels.append(0.0 if final_acp == 1.0 else float(_sigmas_of(final_acp)))
    grid = _grid(levels)
    schedule = jd.DiscreteVPSchedule(alphas_cumprod=jnp.asarray(acp))
    solver = PNDM(warmup="heun" if skip_prk_steps else "runge_kutta", schedule=schedule)
    out = jd.sample(
        _mixture(),
        jnp.asarray(z * np.sqrt(1.0 + grid[0] ** 2)),
        jnp.asarray(grid),
        solver,
        full_output=True,
        save_trajectory=True,
    )
    if levels[-1] == 0.0:
        ours = np.asarray(out.value)
    else:
        ours = np.asarray(out.trajectory[grid.shape[0] - 2]) / np.sqrt(1.0 + grid[-2] ** 2)
    return ours, final_vp, int(out.nfe), len(sch.timesteps)


@pytest.mark.slow
@pytest.mark.parametrize("skip_prk_steps", [False, True])
@pytest.mark.parametrize(
    "n, set_alpha_to_one, steps_offset",
    [(10, True, 0), (20, False, 1), (50, True, 0), (10, False, 0)],
)
def test_pndm_matches_diffusers(x64, skip_prk_steps, n, set_alpha_to_one, steps_offset):
    ours, theirs, nfe, diffusers_calls = _pndm_case(
        n, skip_prk_steps, set_alpha_to_one, steps_offset, seed=n + skip_prk_steps
    )
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)
    # Same number of model evaluations, but for the driver's final denoiser call when diffusers
    # ends at a positive level. (diffusers' defaults, set_alpha_to_one=False with steps_offset=0,
    # end with a step from timestep 0 to the same level: the grid lists that level once, and the
    # state there is compared; that step's wasted call becomes the driver's final one.)
    assert nfe == diffusers_calls + (not set_alpha_to_one and steps_offset > 0)


# ------------------------------------------------------------------------------------------------
# DDPM


def _ddpm_case(n, variance_type, clip_sample, seed, spacing="leading"):
    diffusers = pytest.importorskip("diffusers")
    sch = diffusers.DDPMScheduler(
        variance_type=variance_type, clip_sample=clip_sample, timestep_spacing=spacing
    )
    z, final_vp, table = _run_diffusers(sch, n, seed, noise=True)
    sig = _sigmas_of(sch.alphas_cumprod.numpy())
    grid = _grid(list(sig[sch.timesteps.numpy()]))
    solver = DDPM(variance_type=variance_type, clip_sample_range=1.0 if clip_sample else None)
    noise_table = jnp.asarray(table)
    out = jd.sample(
        _mixture(),
        jnp.asarray(z * np.sqrt(1.0 + grid[0] ** 2)),
        jnp.asarray(grid),
        solver,
        noise=lambda i, k: noise_table[jnp.minimum(i, noise_table.shape[0] - 1)],
    )
    return np.asarray(out), final_vp, table, int(sch.timesteps[-1])


@pytest.mark.slow
@pytest.mark.parametrize(
    "n, variance_type, clip_sample, spacing",
    [
        (10, "fixed_small", False, "leading"),
        (20, "fixed_small_log", False, "leading"),
        (10, "fixed_large", False, "leading"),
        (20, "fixed_large", True, "leading"),
        (10, "fixed_small", True, "leading"),
        (12, "fixed_small", False, "trailing"),
        (12, "fixed_small", True, "linspace"),
    ],
)
def test_ddpm_matches_diffusers(x64, n, variance_type, clip_sample, spacing):
    ours, theirs, table, last_timestep = _ddpm_case(n, variance_type, clip_sample, n, spacing)
    # diffusers draws noise on every step but one from timestep 0, as the driver does but on its
    # step into sigma = 0. (From a last timestep > 0 diffusers draws there too, scaled by the
    # fixed_small variance into alphas_cumprod = 1, 0 clamped to 1e-20: a negligible draw.)
    assert table.shape[0] == n - (last_timestep == 0)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)
    if clip_sample:  # the clamp is active: the last step lands on the clipped x0_hat
        assert np.max(np.abs(theirs)) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.slow
def test_ddpm_fixed_large_log_is_nan_in_diffusers(x64):
    # diffusers takes the square root of the log-variance; ours is the variance the name means.
    ours, theirs, _, _ = _ddpm_case(10, "fixed_large_log", False, seed=3)
    assert np.all(np.isnan(theirs))
    reference, _, _, _ = _ddpm_case(10, "fixed_large", False, seed=3)
    np.testing.assert_array_equal(ours, reference)


# ------------------------------------------------------------------------------------------------
# KDPM2: diffusers' KDPM2DiscreteScheduler is jaxsolve's DPM2 (midpoint at the geometric mean of
# the two levels, i.e. half-way in log sigma; Euler into sigma = 0).


def _kdpm2_diffusers(sch, n, seed, *, ancestral=False):
    torch = pytest.importorskip("torch")
    sch.set_timesteps(n)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, 2)) * float(sch.init_noise_sigma)
    x_init = x.copy()
    oracle = _mixture()
    table = rng.standard_normal((n, BATCH, 2))
    sample = torch.from_numpy(x).float()
    with _replay_noise(sch, table):
        for t in sch.timesteps:
            if sch.step_index is None:
                sch._init_step_index(t)
            # The level scale_model_input uses: the interval's start, or its midpoint (indexed
            # differently by the two schedulers).
            if sch.state_in_first_order:
                s = float(sch.sigmas[sch.step_index])
            else:
                s = float(sch.sigmas_interpol[sch.step_index - (1 if ancestral else 0)])
            xs = sample.numpy().astype(np.float64)
            eps = (xs - np.asarray(oracle.denoise(jnp.asarray(xs), jnp.asarray(s)))) / s
            sample = sch.step(torch.from_numpy(eps).float(), t, sample).prev_sample
    levels = sch.sigmas.numpy().astype(np.float64)
    grid = _grid(list(levels))
    return x_init, grid, sample.numpy().astype(np.float64), table


@pytest.mark.slow
@pytest.mark.parametrize("n", [10, 20])
def test_kdpm2_is_dpm2(x64, n):
    diffusers = pytest.importorskip("diffusers")
    x_init, grid, theirs, _ = _kdpm2_diffusers(diffusers.KDPM2DiscreteScheduler(), n, seed=n)
    ours = jd.sample(_mixture(), jnp.asarray(x_init), jnp.asarray(grid), jd.DPM2())
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("n", [10, 20])
def test_kdpm2_ancestral_is_dpm2_ancestral(x64, n):
    # KDPM2AncestralDiscreteScheduler: the geometric midpoint of sigma and sigma_down, a step to
    # sigma_down, then sigma_up z: k-diffusion's dpm_2_ancestral (eta = 1).
    diffusers = pytest.importorskip("diffusers")
    from jaxsolve.diffusion._solvers.kdiffusion import DPM2Ancestral

    sch = diffusers.KDPM2AncestralDiscreteScheduler()
    x_init, grid, theirs, table = _kdpm2_diffusers(sch, n, seed=n, ancestral=True)
    noise_table = jnp.asarray(table)
    ours = jd.sample(
        _mixture(),
        jnp.asarray(x_init),
        jnp.asarray(grid),
        DPM2Ancestral(),
        noise=lambda i, k: noise_table[jnp.minimum(i, noise_table.shape[0] - 1)],
    )
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=2e-4)


# ------------------------------------------------------------------------------------------------
# Orders of convergence (float64, Gaussian oracle; see tests/diffusion/test_solver_order.py)


@pytest.mark.slow
@pytest.mark.parametrize("warmup", ["runge_kutta", "heun"])
@pytest.mark.parametrize("grid_name, order", [("sigma_uniform", 4), ("log_snr_uniform", 2)])
def test_pndm_order(x64, warmup, grid_name, order):
    # PLMS's fixed weights are Adams-Bashforth's for equal steps in the transfer's variable,
    # sigma: fourth order on sigma-uniform grids; on log-SNR-uniform grids (smoothly varying
    # steps) they are consistent only to second order.
    from tests.diffusion.test_solver_order import (
        NS,
        _errors,
        _lam_uniform,
        _sigma_uniform,
        _slope,
    )

    grid = _sigma_uniform if grid_name == "sigma_uniform" else _lam_uniform
    errors = _errors(PNDM(warmup=warmup), NS, grid, 1)
    assert abs(_slope(NS, errors) - order) < 0.3
