"""SA-Solver (stochastic Adams predictor-corrector): identities with other solvers, diffusers
parity in float64, orders of convergence, NFE, batch independence, one-compile sweeps and weak
convergence to the exact target."""

import importlib
import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._guidance import cfg
from jaxsolve.diffusion._solvers.sa_solver import (
    SASolver,
    TauWindow,
    sa_solver_from_diffusers_config,
)
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture

from .test_solver_order import NS, _errors, _lam_uniform

# Pairs of order >= 3 with a corrector reach their asymptotic rate later (see
# test_order_of_convergence).
NS_HIGH = (80, 160, 320, 640)

SMAX, SMIN = 40.0, 0.05


def _gaussian2():
    return Gaussian(jnp.array([0.5, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))


def _run(solver, grid, x0, key=None, g=None):
    g = _gaussian2() if g is None else g
    return jd.sample(g.denoise, x0, grid, solver, key=key, full_output=True, save_trajectory=True)


# --- closed-form identities ---------------------------------------------------------------------


def test_first_order_is_ddim_and_sde_dpm_solver_pp(x64):
    """Order 1 without corrector: tau = 0 is DDIM (data and noise prediction alike), tau > 0 is
    SDE-DPM-Solver++(1) with eta = tau^2 (same noise draws)."""
    g = _gaussian2()
    x0 = g.sample(jax.random.PRNGKey(0), 5, sigma=SMAX)
    grid = jd.karras_sigmas(7, SMIN, SMAX)
    ddim = _run(jd.DDIM(), grid, x0).trajectory
    for algorithm in ("data_prediction", "noise_prediction"):
        ours = _run(SASolver(1, 0, tau=0.0, algorithm=algorithm), grid, x0).trajectory
        np.testing.assert_allclose(ours, ddim, rtol=1e-12, atol=1e-12)
    key = jax.random.PRNGKey(3)
    sde = _run(jd.DPMSolverPPSDE(order=1, eta=0.64), grid, x0, key).trajectory
    ours = _run(SASolver(1, 0, tau=0.8), grid, x0, key).trajectory
    np.testing.assert_allclose(ours, sde, rtol=1e-12, atol=1e-12)


def test_predictor_2_corrector_3_is_unipc_2_bh1(x64):
    """Data prediction, tau = 0: the modified order-2 predictor is UniP-2 (rho = 1/2), the warm-up
    corrector of order 2 is UniC-1 (rho = 1/2) and the order-3 corrector UniC-2 (exact weights):
    the same method as UniPC(order=2) with variant bh1."""
    g = _gaussian2()
    x0 = g.sample(jax.random.PRNGKey(1), 4, sigma=SMAX)
    grid = jd.karras_sigmas(9, SMIN, SMAX)
    ours = _run(SASolver(2, 3, tau=0.0, lower_order_final=False), grid, x0).trajectory
    unipc = _run(jd.UniPC(order=2, variant="bh1", lower_order_final=False), grid, x0).trajectory
    np.testing.assert_allclose(ours, unipc, rtol=1e-11, atol=1e-11)


def test_tau_window_is_diffusers_default_tau_func(x64):
    """TauWindow.from_timesteps on a DDPM table is 1 exactly on the timesteps 200..800, also for
    levels given in float32 (diffusers' grids)."""
    betas = np.linspace(1e-4, 0.02, 1000)
    schedule = jd.DiscreteVPSchedule(betas=betas)
    window = TauWindow.from_timesteps(schedule)
    t = np.arange(1000)
    expected = ((t >= 200) & (t <= 800)).astype(float)
    levels = np.asarray(schedule.sigmas)
    np.testing.assert_array_equal(np.asarray(window(jnp.asarray(levels))), expected)
    as_f32 = levels.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(np.asarray(window(jnp.asarray(as_f32))), expected)
    exact = TauWindow.from_timesteps(schedule, 10.0, 20.0, value=0.5, margin=0.0)
    assert float(exact(levels[10])) == 0.5 and float(exact(levels[9])) == 0.0


def test_config_mapping():
    schedule = jd.DiscreteVPSchedule(betas=np.linspace(1e-4, 0.02, 1000))
    config = {
        "predictor_order": 3,
        "corrector_order": 4,
        "algorithm_type": "noise_prediction",
        "lower_order_final": False,
        "tau_func": None,
    }
    solver = sa_solver_from_diffusers_config(config, schedule)
    assert (solver.predictor_order, solver.corrector_order) == (3, 4)
    assert solver.algorithm == "noise_prediction" and solver.lower_order_final is False
    assert isinstance(solver.tau, TauWindow) and solver.stochastic
    with pytest.raises(ValueError, match="tau_func"):
        sa_solver_from_diffusers_config({"tau_func": lambda t: 0}, schedule)
    with pytest.raises(ValueError, match="use_flow_sigmas"):
        sa_solver_from_diffusers_config({"use_flow_sigmas": True}, schedule)


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="predictor_order"):
        SASolver(predictor_order=5)
    with pytest.raises(ValueError, match="predictor_order"):
        SASolver(predictor_order=0)
    with pytest.raises(TypeError, match="corrector_order"):
        SASolver(corrector_order=2.0)
    with pytest.raises(ValueError, match="corrector_order"):
        SASolver(corrector_order=-1)
    with pytest.raises(ValueError, match="algorithm"):
        SASolver(algorithm="dpmsolver++")
    with pytest.raises(ValueError, match="tau"):
        SASolver(tau=-0.5)
    with pytest.raises(ValueError, match="tau"):
        SASolver(tau=jnp.ones(3))
    with pytest.raises(TypeError, match="lower_order_final"):
        SASolver(lower_order_final=1)
    with pytest.raises(ValueError, match="sigma_lo"):
        TauWindow(2.0, 1.0)


def test_negative_traced_tau_raises_when_run():
    g = _gaussian2()
    x0 = g.sample(jax.random.PRNGKey(0), 2, sigma=SMAX)
    grid = jd.karras_sigmas(4, SMIN, SMAX)
    with pytest.raises(Exception, match="tau must be non-negative"):
        jd.sample(g.denoise, x0, grid, SASolver(tau=lambda s: -s), key=jax.random.PRNGKey(0))


def test_one_denoiser_evaluation_per_step(x64):
    g = _gaussian2()
    x0 = g.sample(jax.random.PRNGKey(0), 3, sigma=SMAX)
    grid = jd.karras_sigmas(8, SMIN, SMAX)
    out = _run(SASolver(4, 4), grid, x0, jax.random.PRNGKey(1))
    assert int(out.nfe) == grid.shape[0] - 1  # 7 steps and the final one to sigma = 0
    assert int(out.num_steps) == grid.shape[0] - 1
    assert np.all(np.isfinite(np.asarray(out.value)))


# --- stochastic: batch independence, one-compile sweeps ---------------------------------------


def test_stochastic_samples_independent_of_batch_size(x64):
    g = _gaussian2()
    x0 = g.sample(jax.random.PRNGKey(0), 4, sigma=SMAX)
    grid = jd.karras_sigmas(6, SMIN, SMAX)
    key = jax.random.PRNGKey(7)
    whole = jd.sample(g.denoise, x0, grid, SASolver(3, 3, tau=1.0), key=key)
    first = jd.sample(g.denoise, x0[:2], grid, SASolver(3, 3, tau=1.0), key=key)
    np.testing.assert_allclose(whole[:2], first, rtol=1e-12, atol=1e-12)
    # And the noise matters: another key gives another sample.
    other = jd.sample(g.denoise, x0, grid, SASolver(3, 3, tau=1.0), key=jax.random.PRNGKey(8))
    assert not np.allclose(other, whole)


@pytest.mark.slow
def test_sweep_over_steps_guidance_and_tau_compiles_once(x64):
    """Padded grids of 3, 5 and 7 levels, guidance scales and noise levels under one vmap: one
    trace, each entry equal to its own run."""
    cond = _gaussian2()
    uncond = Gaussian(jnp.zeros(2), 4.0 * jnp.eye(2))
    x0 = cond.sample(jax.random.PRNGKey(0), 3, sigma=SMAX)
    key = jax.random.PRNGKey(5)
    counts = (3, 5, 7)
    grids = np.zeros((len(counts), max(counts) + 1))
    for r, n in enumerate(counts):
        grids[r, : n + 1] = np.asarray(jd.karras_sigmas(n, SMIN, SMAX))
    scales, taus = jnp.array([1.0, 3.0, 5.0]), jnp.array([1.0, 0.0, 0.5])
    traces = []

    def run(sigmas, w, tau):
        traces.append(None)
        return jd.sample(cfg(cond, uncond, w), x0, sigmas, SASolver(3, 2, tau=tau), key=key)

    swept = jax.jit(jax.vmap(run))(jnp.asarray(grids), scales, taus)
    assert len(traces) == 1
    for r, n in enumerate(counts):
        grid = jd.karras_sigmas(n, SMIN, SMAX)
        ref = jd.sample(
            cfg(cond, uncond, scales[r]), x0, grid, SASolver(3, 2, tau=taus[r]), key=key
        )
        np.testing.assert_allclose(swept[r], ref, rtol=1e-11, atol=1e-11)
    # tau = 0 in the sweep is the deterministic method.
    det = jd.sample(
        cfg(cond, uncond, 3.0), x0, jd.karras_sigmas(5, SMIN, SMAX), SASolver(3, 2, 0.0)
    )
    np.testing.assert_allclose(swept[1], det, rtol=1e-11, atol=1e-11)


@pytest.mark.slow
def test_weak_convergence_to_the_gaussian_target(x64):
    """tau = 1 (the reverse SDE), 40000 samples from the exact marginal at sigma_max: the law at
    the last level sigma_min approaches N(mu, C + sigma_min^2 I) as the steps grow.

    Each statistic (2 means, 3 covariance entries) is compared in units of its Monte-Carlo
    standard error, estimated from the samples (sd / sqrt(N) of x_i, resp. of the products
    (x_i - m_i)(x_j - m_j)). With 5 steps the bias is many standard errors; with 65 every
    statistic lies within 4 of them (a 4-sigma band: a false failure has probability ~1e-4)."""
    g = _gaussian2()
    n_samples = 40000
    counts = (5, 17, 65)
    grids = np.zeros((len(counts), max(counts) + 1))
    for r, n in enumerate(counts):
        grids[r, : n + 1] = np.asarray(jd.karras_sigmas(n, SMIN, SMAX))
    x0 = g.sample(jax.random.PRNGKey(1), n_samples, sigma=SMAX)

    def run(sigmas, n):
        out = jd.sample(
            g.denoise,
            x0,
            sigmas,
            SASolver(3, 3, tau=1.0),
            key=jax.random.PRNGKey(2),
            full_output=True,
            save_trajectory=True,
        )
        return out.trajectory[n - 1]  # the state at sigma_min

    xs = np.asarray(jax.jit(jax.vmap(run))(jnp.asarray(grids), jnp.asarray(counts)))
    mu = np.asarray(g.mean())
    cov = np.asarray(g.covariance()) + SMIN**2 * np.eye(2)
    iu = np.triu_indices(2)
    z_scores = []
    for x in xs:
        m = x.mean(0)
        d = x - m
        prods = d[:, :, None] * d[:, None, :]
        z_mean = (m - mu) / (x.std(0) / np.sqrt(n_samples))
        z_cov = (prods.mean(0) - cov)[iu] / (prods.std(0)[iu] / np.sqrt(n_samples))
        z_scores.append(np.abs(np.concatenate([z_mean, z_cov])))
    assert np.max(z_scores[0]) > 20, z_scores[0]
    assert np.max(z_scores[-1]) < 4, z_scores[-1]


# --- orders of convergence (float64, tau = 0) ---------------------------------------------------

PAIRS = [(p, c) for p in range(1, 5) for c in range(0, 5)]


def _pair_order(p, c):
    # PEC: the predicted state's O(h^(p+1)) error enters the corrector through the new output
    # (weight O(h)), so the pair has order min(p + 1, c); without corrector, p.
    return min(p + 1, c) if c else p


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["data_prediction", "noise_prediction"])
@pytest.mark.parametrize("pair", PAIRS, ids=[f"p{p}c{c}" for p, c in PAIRS])
def test_order_of_convergence(x64, pair, algorithm):
    """Error at sigma_min against the Gaussian's exact ODE solution (tests/diffusion/
    test_solver_order.py's harness: log-SNR-uniform grids with shortened warm-up steps). The
    errors decrease and the slope between the two finest grids lies within 0.3 of the order.

    The slope of a fit over all grids is not used: pairs of order >= 3 are pre-asymptotic on the
    coarse grids, from above (data prediction 3/3: local slopes 3.76, 3.59, 3.19 on 40..320
    steps) or below (noise prediction 3/3: 2.28, 2.74, 2.90, 2.95 on 80..1280 steps), so pairs
    with a corrector are measured on 80..640 steps (at 1280 the 4th-order errors reach round-off,
    ~1e-10). Predictor-only pairs stay on 40..320: at 640 steps the harness's shortened warm-up
    steps (step ratios ~1e7 for p = 4) make the extrapolating Lagrange weights so large that
    round-off shows (p = 4: errors 6e-9 at 320 steps, 9e-9 at 640)."""
    p, c = pair
    order = _pair_order(p, c)
    ns = NS_HIGH if (order >= 3 and c > 0) else NS
    solver = SASolver(p, c, tau=0.0, algorithm=algorithm, lower_order_final=False)
    errors = _errors(solver, ns, _lam_uniform, order)
    assert np.all(np.diff(errors) < 0), errors
    finest = np.log(errors[-2] / errors[-1]) / np.log(ns[-1] / ns[-2])
    assert abs(finest - order) < 0.3, (finest, errors)


# --- parity with diffusers' SASolverScheduler (float64) -----------------------------------------


def _recorder():
    pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    path = pathlib.Path(__file__).parents[2] / "scripts" / "record_diffusers_samplers.py"
    spec = importlib.util.spec_from_file_location("_record_diffusers_samplers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# (predictor, corrector, tau, algorithm, steps, lower_order_final); tau "default" is diffusers'
# default tau_func, a number c is tau_func = lambda t: c.
PARITY = [
    (1, 1, 0.0, "data_prediction", 12, True),
    (2, 2, "default", "data_prediction", 12, True),
    (2, 2, 0.0, "data_prediction", 25, True),
    (3, 3, "default", "data_prediction", 25, True),
    (4, 4, 0.0, "data_prediction", 12, True),
    (4, 4, "default", "data_prediction", 12, True),
    (3, 1, "default", "data_prediction", 12, True),
    (1, 4, 0.0, "data_prediction", 12, True),
    (2, 3, 1.0, "data_prediction", 12, True),
    (3, 2, 0.5, "data_prediction", 12, False),
    (2, 2, 0.0, "noise_prediction", 12, True),
    (3, 3, "default", "noise_prediction", 25, True),
    (4, 4, "default", "noise_prediction", 12, True),
    (1, 3, 1.0, "noise_prediction", 12, True),
    (3, 1, 0.0, "noise_prediction", 12, False),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", PARITY, ids=["-".join(map(str, c)) for c in PARITY])
def test_matches_diffusers_in_float64(x64, monkeypatch, case):
    """diffusers' scheduler run in float64 (its levels cast to float64) on the exact mixture of
    scripts/record_diffusers_samplers.py, with the noise replayed: agreement to float64
    round-off at diffusers' last level s_min (the grid is [..., s_min, 0])."""
    import torch
    from diffusers import SASolverScheduler

    rec = _recorder()
    p, c, tau, algorithm, n, lower_order_final = case
    options = {} if tau == "default" else {"tau_func": lambda t, tau=tau: tau}
    scheduler = SASolverScheduler(
        predictor_order=p,
        corrector_order=c,
        algorithm_type=algorithm,
        lower_order_final=lower_order_final,
        **options,
    )
    scheduler.set_timesteps(n)
    scheduler.sigmas = scheduler.sigmas.to(torch.float64)
    sigmas = scheduler.sigmas.numpy()
    rng = np.random.default_rng(1000 + 10 * p + c)
    z = rng.standard_normal((rec.BATCH, 2))
    table = rng.standard_normal((n, rec.BATCH, 2))
    draws = rec.NoiseTable(table)
    module = importlib.import_module(type(scheduler).__module__)
    monkeypatch.setattr(module, "randn_tensor", draws)
    sample = torch.from_numpy(z)
    for i, t in enumerate(scheduler.timesteps):
        s = sigmas[i]
        a = 1.0 / np.sqrt(1.0 + s * s)
        x_vp = sample.numpy()
        eps = rec.model_output("epsilon", x_vp, rec.gmm_denoise(x_vp / a, s), a, a * s)
        sample = scheduler.step(torch.from_numpy(eps), t, sample).prev_sample
    assert draws.i == n
    theirs = sample.numpy() * np.sqrt(1.0 + sigmas[-1] ** 2)  # VP latents at s_min, in VE scale

    if tau == "default":
        schedule = jd.DiscreteVPSchedule(betas=scheduler.betas.numpy().astype(np.float64))
        solver = sa_solver_from_diffusers_config(scheduler.config, schedule)
    else:
        solver = SASolver(p, c, tau, algorithm, lower_order_final)
    oracle = GaussianMixture(rec.WEIGHTS, rec.MEANS, rec.COVS)
    grid = jnp.asarray(np.concatenate([sigmas, [0.0]]))
    noise_table = jnp.asarray(table)
    out = jd.sample(
        oracle,
        jnp.asarray(z * np.sqrt(1.0 + sigmas[0] ** 2)),
        grid,
        solver,
        noise=lambda i, k: noise_table[jnp.minimum(i, n - 1)],
        key=None,
        full_output=True,
        save_trajectory=True,
    )
    ours = np.asarray(out.trajectory[n])
    assert int(out.nfe) == n + 1  # diffusers' n evaluations and the final step to sigma = 0
    scale = max(1.0, np.max(np.abs(theirs)))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-11 * scale)
