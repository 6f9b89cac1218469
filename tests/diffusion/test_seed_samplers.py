"""The seed papers' samplers: degenerate settings reproduce their bases, and each method's own claim.

Float64 throughout (the ``x64`` fixture); oracles are built inside the tests. Every method is a
solver, wrapper or grid search on :func:`jaxsolve.diffusion.sample`, so equalities with the base
solvers are checked to round-off, and each method also gets a test that can only pass if the
method does what its paper says (orders of convergence, exactness, optimality, recovery).
"""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture

SMAX, SMIN = 10.0, 0.2
NS = (40, 80, 160, 320)


def _gaussian():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return Gaussian(np.array([0.5, -1.0, 0.25]), q @ np.diag([0.3, 1.0, 3.0]) @ q.T)


def _mixture(d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    return GaussianMixture(np.full(k, 1.0 / k), rng.normal(size=(k, d)), np.full((k, d), 0.2))


def _mlp_denoiser(d=4, seed=3):
    """A random (untrained) network in EDM preconditioning: an arbitrary smooth denoiser."""
    return jd.Precond(jd.NoiseMLP(d, width=32, depth=2, key=jax.random.PRNGKey(seed)), 0.5)


def _lam_uniform(n):
    return np.concatenate([np.exp(-np.linspace(-np.log(SMAX), -np.log(SMIN), n + 1)), [0.0]])


def _sigma_uniform(n):
    return np.concatenate([np.linspace(SMAX, SMIN, n + 1), [0.0]])


def _order(solver, grid=_lam_uniform, ns=NS, fit_last=None):
    """Slope of log(error at SMIN) against log(steps) on the Gaussian, one compile for all ns."""
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(0), 16, sigma=SMAX)
    exact = g.ode_solution(x0, SMAX, SMIN)
    grids = np.zeros((len(ns), max(ns) + 2))
    for r, n in enumerate(ns):
        grids[r, : n + 2] = grid(n)

    def run(sigmas, n):
        out = jd.sample(g.denoise, x0, sigmas, solver, full_output=True, save_trajectory=True)
        return out.trajectory[n]

    xs = jax.jit(jax.vmap(run))(jnp.asarray(grids), jnp.asarray(ns))
    errors = np.max(np.abs(np.asarray(xs) - np.asarray(exact)[None]), axis=(1, 2))
    k = len(ns) if fit_last is None else fit_last
    slope = -np.polyfit(np.log(ns[-k:]), np.log(errors[-k:]), 1)[0]
    return slope, errors


def _close(a, b, tol=1e-11):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# ---------------------------------------------------------------------------------------------
# DPM-Solver-v3


def test_v3_with_data_or_noise_statistics_is_dpm_solver(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    sig = jd.karras_sigmas(8, 0.01, 20.0)
    data, noise = jd.EMS.data_prediction(0.01, 20.0), jd.EMS.noise_prediction(0.01, 20.0)

    @jax.jit
    def runs():
        # Order 3 runs through the order-1 and order-2 updates while the history fills, and
        # lower_order_final uses them again on the last steps.
        return [
            jd.sample(m, x0, sig, jd.DPMSolverV3(data, order=3, corrector=False)),
            jd.sample(m, x0, sig, jd.DPMSolverPP(order=3, solver_type="heun")),
            jd.sample(m, x0, sig, jd.DPMSolverV3(data, order=2, corrector=False)),
            jd.sample(m, x0, sig, jd.DPMSolverPP(order=2, solver_type="heun")),
            jd.sample(m, x0, sig, jd.DPMSolverV3(noise, order=3, corrector=False)),
            jd.sample(m, x0, sig, jd.DPMSolver(order=3, multistep=True, solver_type="heun")),
        ]

    out = runs()
    for j in range(0, 6, 2):
        _close(out[j], out[j + 1])


def test_v3_converges_to_the_flow_for_any_statistics(x64):
    """The EMS rewriting of the ODE is exact for arbitrary l, s, b: with random statistics the
    solver still converges to the exact flow (order 2, the kinks of piecewise-linear EMS)."""
    rng = np.random.default_rng(0)
    ems = jd.EMS(
        jnp.linspace(-np.log(12.0), -np.log(0.1), 9),
        jnp.asarray(rng.uniform(0, 1, size=(9, 3))),
        jnp.asarray(rng.uniform(-1, 1, size=(9, 3))),
        jnp.asarray(rng.normal(size=(9, 3))),
    )
    slope, errors = _order(
        jd.DPMSolverV3(ems, order=2, corrector=False, lower_order_final=False), ns=(20, 40, 80, 160)
    )
    assert errors[-1] < 2e-3 and abs(slope - 2.0) < 0.2, (slope, errors)


# Default-run budget: the equivalence with DPM-Solver and the convergence test stay by default.
@pytest.mark.slow
def test_v3_statistics_of_a_gaussian_make_first_order_nearly_exact(x64):
    """For Gaussian data f = (1 - l)x - D does not depend on x: with the estimated EMS the
    first-order v3 step integrates the flow almost exactly, where DPM-Solver++(1) does not."""
    c = np.array([0.05, 0.3, 1.0, 2.5])
    g = Gaussian(np.array([1.0, -0.5, 0.3, 2.0]), c)
    ems = jd.estimate_ems(
        g, g.sample(jax.random.PRNGKey(1), 64), 0.01, 20.0, key=jax.random.PRNGKey(2), num=160
    )
    sigma = np.exp(-np.asarray(ems.lambdas))[:, None]
    # l* = 1 - E diag(dD/dx) = sigma^2 / (c + sigma^2); Hutchinson is exact for a diagonal Jacobian.
    _close(ems.l, sigma**2 / (c + sigma**2), tol=1e-10)
    x0 = g.sample(jax.random.PRNGKey(0), 16, sigma=20.0)
    sig = jd.karras_sigmas(6, 0.01, 20.0)
    exact = g.ode_solution(x0, 20.0, sig[5])

    def err(solver):
        out = jd.sample(g, x0, sig, solver, full_output=True, save_trajectory=True)
        return float(jnp.max(jnp.abs(out.trajectory[5] - exact)))

    v3 = err(jd.DPMSolverV3(ems, order=1, corrector=False))
    pp = err(jd.DPMSolverPP(order=1))
    assert v3 < 2e-3 and v3 < 1e-3 * pp, (v3, pp)


@pytest.mark.slow  # default-run budget; the benchmark measures it too
def test_v3_estimated_statistics_are_stable_and_beat_dpm_solver_pp(x64):
    """Regression: the EMS at sigma_max were noise (s = -399 ... +152 across seeds; v3 reached RMS
    2206 at NFE 5) because l' came from finite differences. On a ring of eight Gaussians, for
    three data/probe seeds:

    * s at sigma_max = 80 is at its closed-form high-noise limit 3 (data symmetric under
      x -> -x with isotropic covariance, so f ~ sigma^-3) and agrees across seeds;
    * DPM-Solver-v3(3) with the estimated EMS beats DPM-Solver++(3M) at NFE 10 and 20 (the EMS
      minimise the first-order discretisation error), and its error falls from NFE 10 to 20.

    The reference is DPM-Solver++(3M) on 400 steps, within 1e-5 of the Dopri8 flow (errors here
    are >= 1e-2); it shares the compile of the NFE 10 / 20 runs.
    """
    a = np.linspace(0.0, 2.0 * np.pi, 8, endpoint=False)
    ring = GaussianMixture(
        np.full(8, 1.0 / 8), 2.0 * np.stack([np.cos(a), np.sin(a)], 1), np.full((8, 2), 0.03)
    )
    smin, smax = 0.002, 80.0
    x = smax * jax.random.normal(jax.random.PRNGKey(1), (32, 2))
    grids = np.zeros((3, 402))  # NFE 10, 20 and the 400-step reference, zero-padded: one shape
    for r, n in enumerate((10, 20, 400)):
        grids[r, : n + 1] = jd.karras_sigmas(n, smin, smax)
    # One compile per solver class (eqx.filter_jit traces the EMS arrays, keeps the flags static).
    sample = eqx.filter_jit(lambda solver, g: jd.sample(ring, x, g, solver))

    @jax.jit
    def estimate(seed):
        data = ring.sample(jax.random.fold_in(jax.random.PRNGKey(7), seed), 1024)
        key = jax.random.fold_in(jax.random.PRNGKey(8), seed)
        return jd.estimate_ems(ring, data, smin, smax, key=key)  # the defaults: 64 nodes, 1 probe

    def run(solver):
        return np.stack([np.asarray(sample(solver, g)) for g in grids])

    base = run(jd.DPMSolverPP(order=3))
    ref = base[2]

    def rms(y):
        return np.sqrt(np.mean(np.sum((y[:2] - ref) ** 2, -1), -1))

    emss = [estimate(seed) for seed in range(3)]
    s_max = np.stack([np.asarray(e.s[0]) for e in emss])
    err, pp = np.stack([rms(run(jd.DPMSolverV3(e, order=3))) for e in emss]), rms(base)
    # Now s_max = 2.998-2.999, v3 0.24-0.26 / 0.014-0.024 against 0.48 / 0.061. With l' by finite
    # differences: s_max = [149, -15], [73, -30], [-44, -113], and v3 1.30 at NFE 10 for seed 0.
    assert np.all(np.abs(s_max - 3.0) < 0.01) and np.ptp(s_max, axis=0).max() < 0.005, s_max
    assert np.all(err < pp[None]) and np.all(err[:, 1] < err[:, 0]), (err, pp)


@pytest.mark.wrong_argument_types
def test_v3_bad_arguments():
    with pytest.raises(ValueError, match="order"):
        jd.DPMSolverV3(jd.EMS.data_prediction(0.01, 1.0), order=4)
    with pytest.raises(TypeError, match="EMS"):
        jd.DPMSolverV3(ems=None)
    with pytest.raises(ValueError, match="one value per lambda"):
        jd.EMS(jnp.linspace(0.0, 1.0, 4), jnp.ones(3), jnp.zeros(4), jnp.zeros(4))
    with pytest.raises(ValueError, match="data must have shape"):
        jd.estimate_ems(lambda x, s: x, jnp.ones((1, 2)), 0.1, 1.0, key=jax.random.PRNGKey(0))


# ---------------------------------------------------------------------------------------------
# DC-Solver


def test_dc_ratios_one_is_unipc(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    sig = jd.karras_sigmas(7, 0.01, 20.0)

    @jax.jit
    def runs():
        return [
            (
                jd.sample(m, x0, sig, jd.DCSolver(jnp.ones(7), order=k, variant=v)),
                jd.sample(m, x0, sig, jd.UniPC(order=k, variant=v)),
            )
            for k, v in [(1, "bh2"), (2, "bh2"), (3, "bh1")]
        ]

    for a, b in runs():
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.slow  # ~30 s of compiles; the default run keeps "ratios 1 = UniPC" and the cascade
def test_dc_fitted_ratio_is_the_optimum_of_its_step(x64):
    """Each fitted ratio minimises its step's objective — the corrected next state against the
    reference (the denoised output for the last step) — checked by a scan of ratios through the
    driver; and compensation reduces the error on held-out samples."""
    m = _mixture(d=4, k=3, seed=1)
    x0 = m.sample(jax.random.PRNGKey(0), 16, sigma=20.0)
    n = 6
    sig = jd.karras_sigmas(n, 0.01, 20.0)
    ref = jd.reference_states(m, x0, sig, refine=24)
    ratios = jd.fit_dc_ratios(m, x0, sig, ref, order=2)
    assert np.all(np.asarray(ratios[:2]) == 1.0) and float(ratios[-1]) == 1.0

    @jax.jit
    def objective(ratios, i):
        # The private fitting hook: step i + 1 returns its corrected state.
        solver = jd.DCSolver(ratios, order=2, _stop_at=i + 1)
        y = jd.sample(m, x0, sig, solver, n_steps=jnp.minimum(i + 2, n))
        return jnp.mean((y - ref[jnp.where(i + 2 < n, i + 1, n)]) ** 2)

    for i in range(2, n - 1):
        fitted = float(objective(ratios, i))
        scan = [float(objective(ratios.at[i].set(r), i)) for r in np.linspace(0.0, 2.0, 11)]
        assert fitted <= min(scan) + 1e-12, (i, fitted, min(scan))

    xt = m.sample(jax.random.PRNGKey(7), 16, sigma=20.0)
    exact = jd.reference_states(m, xt, sig, refine=24)[-1]
    base = jnp.mean((jd.sample(m, xt, sig, jd.UniPC(order=2)) - exact) ** 2)
    dc = jnp.mean((jd.sample(m, xt, sig, jd.DCSolver(ratios, order=2)) - exact) ** 2)
    assert float(dc) < float(base), (float(dc), float(base))


def test_dc_fit_refuses_a_non_finite_reference():
    x0, sig = np.ones((4, 4)), np.array([20.0, 5.0, 1.0, 0.1, 0.01, 0.0])
    ref = np.ones((6, 4, 4))
    ref[2, 0, 0] = np.nan
    with pytest.raises(ValueError, match="reference must be finite"):
        jd.fit_dc_ratios(lambda x, s: x, x0, sig, ref)


@pytest.mark.slow  # a DC fit compiles for ~10 s
def test_dc_fit_raises_when_every_ratio_is_non_finite(x64):
    # Below sigma = 1 the model is NaN: every ratio of a late step gives NaN, and argmin used to
    # return the first candidate as the "best" ratio.
    m = _mixture(d=4, k=3, seed=1)
    x0 = m.sample(jax.random.PRNGKey(0), 4, sigma=20.0)
    sig = jd.karras_sigmas(6, 0.01, 20.0)
    ref = jd.reference_states(m, x0, sig, refine=4)
    poisoned = lambda x, s: jnp.where(s < 1.0, jnp.nan, m(x, s))
    with pytest.raises(FloatingPointError, match="every ratio"):
        jd.fit_dc_ratios(poisoned, x0, sig, ref, order=2)


def test_cascade_regression_recovers_a_cascade_and_predicts_unseen_nfe(x64):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 3)) * 0.1
    nfes, guidance = [5, 6, 8, 10, 12], [1.0, 3.0, 7.5]

    def truth(nfe, g):
        i = np.arange(nfe)
        u, nu, gg = (i + 1) / nfe, nfe / 12, g / 7.5
        rho = 1.0 + np.einsum(
            "ia,abc,b,c->i", u[:, None] ** np.arange(3), w, nu ** np.arange(3), gg ** np.arange(3)
        )
        return np.where((i >= 2) & (i <= nfe - 2), rho, 1.0)

    sets = [(n, g) for n in nfes for g in guidance]
    model = jd.CascadeRatioRegression.fit(
        [n for n, _ in sets], [truth(n, g) for n, g in sets], [g for _, g in sets]
    )
    _close(model(7, 5.0), truth(7, 5.0), tol=1e-10)
    padded = model(9, 2.0, max_steps=12)
    _close(padded[:9], truth(9, 2.0), tol=1e-10)
    assert np.all(np.asarray(padded[9:]) == 1.0)
    with pytest.raises(ValueError, match="cannot determine"):
        jd.CascadeRatioRegression.fit([5], [truth(5, 0.0)])


# ---------------------------------------------------------------------------------------------
# DualFast, GENIE, momentum


def test_dualfast_with_zero_coefficient_is_its_base(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    sig = jd.karras_sigmas(6, 0.01, 20.0)

    @jax.jit
    def runs():
        out = []
        for base in (jd.DPMSolverPP(order=2), jd.UniPC(), jd.Heun()):
            for ref in ("previous", "first"):
                out.append(
                    (
                        jd.sample(m, x0, sig, jd.DualFast(base, c=0.0, reference=ref)),
                        jd.sample(m, x0, sig, base),
                    )
                )
        return out

    for a, b in runs():
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_dualfast_mixes_in_the_previous_noise_prediction(x64):
    """Two DDIM steps and the final one by hand: eps~ = (1 + c_i) eps_i - c_i eps_{i-1}."""
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 5, sigma=20.0)
    s = jnp.array([20.0, 3.0, 0.5, 0.0])
    c = 0.6
    out = jd.sample(m, x0, s, jd.DualFast(jd.Euler(), c=c))
    eps = lambda x, sig: (x - m.denoise(x, sig)) / sig
    e0 = eps(x0, 20.0)
    x1 = x0 + (3.0 - 20.0) * e0
    e1 = eps(x1, 3.0)
    x2 = x1 + (0.5 - 3.0) * ((1 + c / 2) * e1 - (c / 2) * e0)
    e2 = eps(x2, 0.5)
    _close(out, x2 - 0.5 * ((1 + c) * e2 - c * e1))


def test_genie_is_second_order(x64):
    slope, errors = _order(jd.GENIE())
    assert np.all(np.diff(errors) < 0) and abs(slope - 2.0) < 0.15, (slope, errors)


def test_genie_counts_the_jvp(x64):
    g = _gaussian()
    out = jd.sample(
        g,
        g.sample(jax.random.PRNGKey(0), 2, sigma=SMAX),
        _lam_uniform(5),
        jd.GENIE(),
        full_output=True,
    )
    assert int(out.nfe) == 2 * 5 + 1


@pytest.mark.slow  # default-run budget; its order test stays by default
def test_heavy_ball_with_beta_one_is_its_base_and_ghvb_integer_is_plms(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    sig = jd.karras_sigmas(8, 0.01, 20.0)
    bases = (
        jd.DPMSolverPP(order=2),
        jd.DPMSolver(order=3, multistep=True),
        jd.IPNDM(),
        jd.DEIS(),
        jd.Euler(),
    )

    @jax.jit
    def runs():
        out = [
            (jd.sample(m, x0, sig, jd.HeavyBall(b, 1.0)), jd.sample(m, x0, sig, b)) for b in bases
        ]
        out += [
            (jd.sample(m, x0, sig, jd.GHVB(k)), jd.sample(m, x0, sig, jd.IPNDM(order=k)))
            for k in (1, 2, 3, 4)
        ]
        return out

    for a, b in runs():
        _close(a, b)


def test_heavy_ball_is_first_order_and_ghvb_keeps_its_order(x64):
    hb, _ = _order(jd.HeavyBall(jd.DPMSolverPP(order=2), 0.5))
    assert abs(hb - 1.0) < 0.15, hb
    # GHVB's fixed weights assume equal steps in sigma (like iPNDM); the start-up transient of
    # the moving average decays geometrically, so the rate is read on the finer grids.
    g15, _ = _order(jd.GHVB(1.5), grid=_sigma_uniform, ns=(80, 160, 320, 640), fit_last=2)
    g25, _ = _order(jd.GHVB(2.5), grid=_sigma_uniform, ns=(80, 160, 320, 640), fit_last=2)
    assert abs(g15 - 2.0) < 0.2 and abs(g25 - 3.0) < 0.2, (g15, g25)


def test_momentum_bad_arguments():
    with pytest.raises(TypeError, match="HeavyBall wraps"):
        jd.HeavyBall(jd.UniPC(), 0.5)
    with pytest.raises(TypeError, match="singlestep"):
        jd.HeavyBall(jd.DPMSolverPP(order=2, multistep=False), 0.5)
    with pytest.raises(ValueError, match="beta must lie"):
        jd.HeavyBall(jd.Euler(), 0.0)
    with pytest.raises(ValueError, match=r"r must lie in \(0, 4\]"):
        jd.GHVB(4.5)


# ---------------------------------------------------------------------------------------------
# BDIA


def test_bdia_gamma_zero_is_ddim_and_gamma_one_is_second_order(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    sig = jd.karras_sigmas(8, 0.01, 20.0)
    _close(jd.sample(m, x0, sig, jd.BDIA(0.0)), jd.sample(m, x0, sig, jd.DDIM()))
    slope, errors = _order(jd.BDIA(1.0))
    assert abs(slope - 2.0) < 0.15, (slope, errors)


@pytest.mark.parametrize("gamma", [1.0, 0.6])
def test_bdia_sample_then_invert_recovers_the_noise(x64, gamma):
    den = _mlp_denoiser()
    x0 = 10.0 * jax.random.normal(jax.random.PRNGKey(1), (5, 4))
    sig = jd.karras_sigmas(12, 0.01, 10.0)

    @jax.jit
    def roundtrip(n):
        # n_steps = n (12 = the whole grid; fewer stops early): invert from states n - 1 and n.
        run = jd.sample(
            den, x0, sig, jd.BDIA(gamma), n_steps=n, full_output=True, save_trajectory=True
        )
        return jd.bdia_invert(den, run.trajectory[n - 1], run.trajectory[n], sig, gamma, n_steps=n)

    for n in (12, 7):
        np.testing.assert_allclose(np.asarray(roundtrip(n)), np.asarray(x0), rtol=0, atol=1e-12)


def test_bdia_inversion_raises_when_it_goes_non_finite():
    x = jnp.ones((2, 2))
    sig = jnp.array([2.0, 1.0, 0.5, 0.0])
    nan_model = lambda y, s: jnp.where(s < 1.5, jnp.nan, y)
    with pytest.raises(Exception, match="NaN or infinity"):
        jax.block_until_ready(jd.bdia_invert(nan_model, x, x, sig, 0.5))
    assert np.all(np.isnan(jd.bdia_invert(nan_model, x, x, sig, 0.5, throw=False)))


def test_bdia_bad_arguments():
    with pytest.raises(ValueError, match="gamma must lie"):
        jd.BDIA(1.5)
    x = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"gamma must lie in \(0, 1\]"):
        jd.bdia_invert(lambda y, s: y, x, x, jnp.array([2.0, 1.0, 0.0]), 0.0)
    with pytest.raises(ValueError, match="at least 2 steps"):
        jd.bdia_invert(lambda y, s: y, x, x, jnp.array([2.0, 0.0]), 1.0)


# ---------------------------------------------------------------------------------------------
# Teleportation


def test_teleport_of_a_gaussian_is_the_exact_flow(x64):
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(0), 8, sigma=80.0)
    inner = jd.karras_sigmas(5, 0.01, 5.0)
    grid = jd.teleport_sigmas(80.0, inner)
    out = jd.sample(
        g, x0, grid, jd.Teleport(jd.DPMSolverPP(order=2), g), full_output=True, save_trajectory=True
    )
    at_skip = g.ode_solution(x0, 80.0, 5.0)
    _close(out.trajectory[1], at_skip)
    _close(out.value, jd.sample(g, at_skip, inner, jd.DPMSolverPP(order=2)))
    assert int(out.nfe) == 5  # the jump is free
    to_zero = jd.sample(g, x0, jnp.array([80.0, 0.0]), jd.Teleport(jd.UniPC(), g), full_output=True)
    _close(to_zero.value, g.ode_solution(x0, 80.0, 0.0))
    assert int(to_zero.nfe) == 0


def test_teleport_with_the_data_gaussian_tracks_a_mixture_at_high_noise(x64):
    """The paper's premise: at high noise the flow of the data's Gaussian approximation follows the
    true flow closely, so the first part of sampling can be skipped."""
    m = _mixture(d=4, k=3, seed=2)
    gauss = jd.gaussian_approximation(m.sample(jax.random.PRNGKey(3), 20000))
    _close(gauss.mean(), m.mean(), tol=0.05)
    x0 = m.sample(jax.random.PRNGKey(0), 32, sigma=80.0)
    fine = jnp.concatenate([jd.exponential_sigmas(200, 8.0, 80.0)[:-1], jnp.zeros(1)])
    true = jd.sample(m, x0, fine, jd.DPMSolverPP(order=3), n_steps=199)
    jump = jd.sample(m, x0, jnp.array([80.0, 8.0, 0.0]), jd.Teleport(jd.Euler(), gauss), n_steps=1)
    spread = float(jnp.sqrt(jnp.mean(jnp.sum((true - jnp.mean(true, 0)) ** 2, -1))))
    err = float(jnp.sqrt(jnp.mean(jnp.sum((jump - true) ** 2, -1))))
    assert err < 0.05 * spread, (err, spread)
    with pytest.raises(ValueError, match="dimension"):
        jd.sample(m, jnp.ones((2, 5)), jnp.array([80.0, 0.0]), jd.Teleport(jd.Euler(), gauss))
    with pytest.raises(ValueError, match="must exceed"):
        jd.teleport_sigmas(1.0, jnp.array([2.0, 0.0]))


# ---------------------------------------------------------------------------------------------
# Optimal step sizes


def test_oss_with_all_teacher_steps_is_the_teacher_grid(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 4, sigma=20.0)
    teacher = jd.karras_sigmas(4, 0.01, 20.0)
    res = jd.optimal_sigmas(m, x0, teacher, jd.DPMSolverPP(order=2), 4)
    np.testing.assert_array_equal(np.asarray(res.indices), np.arange(5))
    _close(res.sigmas, teacher)
    assert float(res.cost) < 1e-20


def _brute_force(denoiser, x0, teacher, solver, k, target):
    """Cost of every k-step subgrid (one vmapped compile) and the best one."""
    n = teacher.shape[0] - 1
    paths = [(0, *inner, n) for inner in itertools.combinations(range(1, n), k - 1)]

    @jax.jit
    def costs(idx):
        return jax.vmap(
            lambda ix: jnp.mean((jd.sample(denoiser, x0, teacher[ix], solver) - target) ** 2)
        )(idx)

    c = np.asarray(costs(jnp.asarray(paths)))
    return float(c.min()), paths[int(np.argmin(c))]


def test_oss_dynamic_programming_equals_brute_force(x64):
    """Euler on an isotropic Gaussian shrinks every error monotonically (each step's factor is
    positive and below the exact ratio), so the paper's DP over student states is exactly optimal;
    against exact reference states it must find the brute-force optimum."""
    g = Gaussian(np.array([0.3, -0.2, 0.1]), np.full(3, 0.7))
    x0 = g.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    teacher = jd.karras_sigmas(8, 0.05, 20.0)
    ref = jnp.stack([g.ode_solution(x0, 20.0, s) for s in teacher])
    for k in (2, 3):
        res = jd.optimal_sigmas(g, x0, teacher, jd.Euler(), k, reference=ref)
        cost, idx = _brute_force(g, x0, teacher, jd.Euler(), k, ref[-1])
        assert tuple(np.asarray(res.indices)) == idx
        np.testing.assert_allclose(float(res.cost), cost, rtol=1e-10)


def test_oss_never_picks_a_path_through_a_non_finite_state(x64):
    # A denoiser that is NaN at one teacher level: every student path starting a step there is
    # non-finite. argmin returns the index of a NaN, so the DP used to pick such a path.
    g = Gaussian(np.array([0.3, -0.2, 0.1]), np.full(3, 0.7))
    x0 = g.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    teacher = jd.karras_sigmas(8, 0.05, 20.0)
    ref = jnp.stack([g.ode_solution(x0, 20.0, s) for s in teacher])
    poisoned = lambda x, s: jnp.where(s == teacher[2], jnp.nan, g(x, s))
    res = jd.optimal_sigmas(poisoned, x0, teacher, jd.Euler(), 2, reference=ref)
    # brute force over the 2-step paths that avoid level 2
    costs = {
        (0, j, 8): float(
            jnp.mean((jd.sample(g, x0, teacher[jnp.array([0, j, 8])], jd.Euler()) - ref[-1]) ** 2)
        )
        for j in range(1, 8)
        if j != 2
    }
    best = min(costs, key=costs.get)
    assert tuple(np.asarray(res.indices)) == best
    np.testing.assert_allclose(float(res.cost), costs[best], rtol=1e-10)
    with pytest.raises(FloatingPointError, match="every 2-step subgrid"):
        jd.optimal_sigmas(
            lambda x, s: jnp.where(s == teacher[0], jnp.nan, g(x, s)),
            x0,
            teacher,
            jd.Euler(),
            2,
            reference=ref,
        )
    with pytest.raises(ValueError, match="reference must be finite"):
        jd.optimal_sigmas(g, x0, teacher, jd.Euler(), 2, reference=ref.at[3, 0, 0].set(jnp.nan))


def test_oss_restart_from_teacher_is_exact_for_any_denoiser(x64):
    den = _mlp_denoiser(d=3, seed=5)
    x0 = 5.0 * jax.random.normal(jax.random.PRNGKey(2), (4, 3))
    teacher = jd.karras_sigmas(7, 0.02, 5.0)
    ref = jd.sample(den, x0, teacher, jd.Heun(), full_output=True, save_trajectory=True).trajectory
    res = jd.optimal_sigmas(
        den, x0, teacher, jd.Heun(), 3, reference=ref, restart_from_teacher=True
    )

    def one(i, j):
        grid = jnp.stack([teacher[i], teacher[j], 0.0])
        return jnp.mean((jd.sample(den, ref[i], grid, jd.Heun(), n_steps=1) - ref[j]) ** 2)

    n = 7
    local = np.full((n + 1, n + 1), np.inf)
    ii, jj = np.triu_indices(n + 1, 1)
    local[ii, jj] = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(ii), jnp.asarray(jj)))
    best = min(
        (sum(local[a, b] for a, b in itertools.pairwise(p)), p)
        for p in ((0, *inner, n) for inner in itertools.combinations(range(1, n), 2))
    )
    assert tuple(np.asarray(res.indices)) == best[1]
    np.testing.assert_allclose(float(res.cost), best[0], rtol=1e-10)


def test_oss_bad_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        jd.optimal_sigmas(
            lambda x, s: x, jnp.ones((2, 2)), jnp.array([2.0, 1.0, 0.0]), jd.Euler(), 3
        )
    with pytest.raises(ValueError, match="teacher_sigmas"):
        jd.optimal_sigmas(lambda x, s: x, jnp.ones((2, 2)), jnp.array([2.0, 1.0]), jd.Euler(), 1)
    with pytest.raises(TypeError, match="one-step solver"):
        jd.optimal_sigmas(
            lambda x, s: x,
            jnp.ones((2, 2)),
            jnp.array([2.0, 1.0, 0.0]),
            jd.DPMSolverPP(),
            1,
            restart_from_teacher=True,
        )


# ---------------------------------------------------------------------------------------------
# Time shift


def test_time_shift_with_no_window_is_its_base(x64):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 6, sigma=20.0)
    sig = jd.karras_sigmas(7, 0.01, 20.0)

    @jax.jit
    def runs():
        return [
            (jd.sample(m, x0, sig, jd.TimeShift(b, window=0.0)), jd.sample(m, x0, sig, b))
            for b in (jd.DPMSolverPP(order=2), jd.UniPC(), jd.Heun())
        ]

    for a, b in runs():
        _close(a, b, tol=1e-12)


def test_time_shift_moves_each_sample_to_its_variance_matched_level(x64):
    """One DDIM step to sigma_1, then the final denoising at each sample's shifted level
    sqrt(Var(x) - v), clipped to the window and to sqrt(sigma_0 sigma_1) (the paper's rule)."""
    m = _mixture(d=32, k=3)
    x0 = m.sample(jax.random.PRNGKey(0), 12, sigma=20.0)
    x0 = x0 * jnp.linspace(0.8, 1.25, 12)[:, None]  # states too cold / too hot for their level
    s0, s1, w, v = 20.0, 2.0, 0.3, 0.1
    grid = jnp.array([s0, s1, 0.0])

    @jax.jit
    def runs():
        shifted = jd.sample(m, x0, grid, jd.TimeShift(jd.Euler(), window=w, data_variance=v))
        below = jd.sample(m, x0, grid, jd.TimeShift(jd.Euler(), window=w, cutoff_sigma=5.0))
        return shifted, below

    out, unshifted = runs()
    x1 = x0 + (s1 - s0) * (x0 - m.denoise(x0, s0)) / s0
    level = np.sqrt(np.maximum(np.var(np.asarray(x1), axis=1) - v, 0.0))
    level = np.clip(level, s1 * np.exp(-w), min(s1 * np.exp(w), np.sqrt(s0 * s1)))
    assert np.any(level > s1) and np.any(level < s1)  # both directions are exercised
    expected = jax.vmap(lambda xb, lv: m.denoise(xb, lv))(x1, jnp.asarray(level))
    _close(out, expected, tol=1e-12)
    _close(jd.shifted_sigma(x1, s1, w, data_variance=v, upper=np.sqrt(s0 * s1)), level, tol=1e-12)
    _close(unshifted, m.denoise(x1, s1), tol=1e-12)  # below the cutoff nothing moves


@pytest.mark.wrong_argument_types
def test_time_shift_bad_arguments():
    with pytest.raises(ValueError, match="window"):
        jd.TimeShift(jd.Euler(), window=-0.1)
    with pytest.raises(TypeError, match="sampler"):
        jd.TimeShift(lambda x: x)
