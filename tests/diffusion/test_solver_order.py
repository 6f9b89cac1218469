"""Order of convergence of every deterministic sampler on the exact Gaussian oracle (float64).

The error is measured at the last positive level ``SMIN`` against ``Gaussian.ode_solution`` and the
slope of log(error) against log(steps) must lie within 0.3 of the method's order.

Grids: one-step methods use log-SNR-uniform steps. A k-step multistep method needs starting
values accurate to the method's order (the classical condition of multistep convergence theory);
its warm-up steps of order 1..p-1 would otherwise add O(h^2) errors. So for multistep methods the
first p-1 steps are shortened to h (h/H)^((p+1-j)/(j+1)), which makes their local errors
O(h^(p+2)), and the rest of the grid is log-SNR-uniform. Singlestep DPM-Solver-k uses step counts
that are multiples of k so every group is complete. iPNDM's fixed weights assume equal steps in
sigma, so it is measured on a sigma-uniform grid (where it coincides with LMS, tested exactly).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

SMAX, SMIN = 10.0, 0.2
NS = (40, 80, 160, 320)


def _gaussian():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return Gaussian(np.array([0.5, -1.0, 0.25]), q @ np.diag([0.3, 1.0, 3.0]) @ q.T)


def _lam_uniform(n, p=1):
    lam0, lam1 = -np.log(SMAX), -np.log(SMIN)
    span = lam1 - lam0
    h = span / n
    lams = [lam0]
    for j in range(1, p):
        lams.append(lams[-1] + h * (h / span) ** ((p + 1 - j) / (j + 1)))
    rest = np.linspace(lams[-1], lam1, n - (p - 1) + 1)[1:]
    return np.concatenate([np.exp(-np.concatenate([lams, rest])), [0.0]])


def _sigma_uniform(n, p=1):
    return np.concatenate([np.linspace(SMAX, SMIN, n + 1), [0.0]])


def _errors(solver, ns, grid, p):
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(0), 16, sigma=SMAX)
    exact = g.ode_solution(x0, SMAX, SMIN)
    grids = np.zeros((len(ns), max(ns) + 2))
    for r, n in enumerate(ns):
        s = grid(n, p)
        grids[r, : s.shape[0]] = s

    def run(sigmas, n):
        out = jd.sample(g.denoise, x0, sigmas, solver, full_output=True, save_trajectory=True)
        return out.trajectory[n]

    # Padded grids: one compilation serves every step count.
    xs = jax.jit(jax.vmap(run))(jnp.asarray(grids), jnp.asarray(ns))
    return np.max(np.abs(np.asarray(xs) - np.asarray(exact)[None]), axis=(1, 2))


def _slope(ns, errors):
    return -np.polyfit(np.log(ns), np.log(errors), 1)[0]


CASES = [
    # (id, solver factory, theoretical order, grid, warm-up order p, step counts)
    ("euler", lambda: jd.Euler(), 1, _lam_uniform, 1, NS),
    ("heun", lambda: jd.Heun(), 2, _lam_uniform, 1, NS),
    ("dpm2", lambda: jd.DPM2(), 2, _lam_uniform, 1, NS),
    ("ddim", lambda: jd.DDIM(), 1, _lam_uniform, 1, NS),
    ("dpm_solver_1", lambda: jd.DPMSolver(order=1), 1, _lam_uniform, 1, NS),
    ("dpm_solver_2", lambda: jd.DPMSolver(order=2), 2, _lam_uniform, 1, (48, 96, 192, 384)),
    ("dpm_solver_3", lambda: jd.DPMSolver(order=3), 3, _lam_uniform, 1, (48, 96, 192, 384)),
    (
        "dpm_solver_pp_2s",
        lambda: jd.DPMSolverPP(order=2, multistep=False),
        2,
        _lam_uniform,
        1,
        (48, 96, 192, 384),
    ),
    (
        "dpm_solver_pp_3s",
        lambda: jd.DPMSolverPP(order=3, multistep=False),
        3,
        _lam_uniform,
        1,
        (48, 96, 192, 384),
    ),
    ("dpm_solver_2m", lambda: jd.DPMSolver(order=2, multistep=True), 2, _lam_uniform, 2, NS),
    ("dpm_solver_3m", lambda: jd.DPMSolver(order=3, multistep=True), 3, _lam_uniform, 3, NS),
    ("dpm_solver_pp_2m", lambda: jd.DPMSolverPP(order=2), 2, _lam_uniform, 2, NS),
    (
        "dpm_solver_pp_2m_heun",
        lambda: jd.DPMSolverPP(order=2, solver_type="heun"),
        2,
        _lam_uniform,
        2,
        NS,
    ),
    ("dpm_solver_pp_3m", lambda: jd.DPMSolverPP(order=3), 3, _lam_uniform, 3, NS),
    ("deis_1", lambda: jd.DEIS(order=1), 1, _lam_uniform, 1, NS),
    ("deis_2", lambda: jd.DEIS(order=2), 2, _lam_uniform, 2, NS),
    ("deis_3", lambda: jd.DEIS(order=3), 3, _lam_uniform, 3, NS),
    (
        "deis_3_tab",
        lambda: jd.DEIS(order=3, variable="t", schedule=jd.VPSchedule.linear()),
        3,
        _lam_uniform,
        3,
        NS,
    ),
    ("lms_4", lambda: jd.LMS(order=4), 4, _lam_uniform, 4, NS),
    ("unipc_1", lambda: jd.UniPC(order=1, lower_order_final=False), 2, _lam_uniform, 2, NS),
    (
        "unipc_2_bh1",
        lambda: jd.UniPC(order=2, variant="bh1", lower_order_final=False),
        3,
        _lam_uniform,
        3,
        NS,
    ),
    ("unipc_2_bh2", lambda: jd.UniPC(order=2, lower_order_final=False), 3, _lam_uniform, 3, NS),
    ("unipc_3", lambda: jd.UniPC(order=3, lower_order_final=False), 4, _lam_uniform, 4, NS),
    ("ipndm", lambda: jd.IPNDM(), 4, _sigma_uniform, 1, NS),
    ("flow_heun", lambda: jd.FlowHeun(), 2, _lam_uniform, 1, NS),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_order_of_convergence(x64, case):
    _, make, order, grid, p, ns = case
    errors = _errors(make(), ns, grid, p)
    assert np.all(errors < 1.0) and np.all(np.diff(errors) < 0), errors
    slope = _slope(ns, errors)
    assert abs(slope - order) <= 0.3, f"slope {slope:.3f} vs order {order}; errors {errors}"


def test_reference_3m_is_second_order(x64):
    """diffusers' / DPM-Solver's 3M coefficient (legacy_third_order) converges at order 2 only."""
    errors = _errors(jd.DPMSolverPP(order=3, legacy_third_order=True), NS, _lam_uniform, 3)
    assert abs(_slope(NS, errors) - 2.0) <= 0.3, errors
    fixed = _errors(jd.DPMSolverPP(order=3), NS, _lam_uniform, 3)
    assert np.all(fixed < errors)


def test_ipndm_equals_lms_on_equal_steps(x64):
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(1), 8, sigma=SMAX)
    sig = jnp.asarray(_sigma_uniform(30))
    a = jd.sample(g.denoise, x0, sig, jd.IPNDM())
    b = jd.sample(g.denoise, x0, sig, jd.LMS(order=4))
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_equivalences_in_the_denoiser_form(x64):
    """DDIM = Euler = DPM-Solver-1 = DEIS-1 = flow-Euler (linear interpolant); UniP-2 = DPM-Solver++(2M)."""
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(2), 8, sigma=SMAX)
    sig = jnp.asarray(_lam_uniform(12))
    ref = jd.sample(g.denoise, x0, sig, jd.Euler())
    for solver in [
        jd.DDIM(),
        jd.DPMSolver(order=1),
        jd.DPMSolverPP(order=1),
        jd.DEIS(order=1),
        jd.FlowEuler(),
    ]:
        np.testing.assert_allclose(
            jd.sample(g.denoise, x0, sig, solver), ref, rtol=1e-11, atol=1e-12
        )
    np.testing.assert_allclose(
        jd.sample(g.denoise, x0, sig, jd.UniPC(order=2, corrector=False)),
        jd.sample(g.denoise, x0, sig, jd.DPMSolverPP(order=2)),
        rtol=1e-11,
        atol=1e-12,
    )
    # Noise-prediction multistep with the Taylor coefficients (heun form, corrected 3M) is the
    # exact integral of the Lagrange extrapolant in log(sigma), i.e. DEIS:
    np.testing.assert_allclose(
        jd.sample(g.denoise, x0, sig, jd.DPMSolver(order=3, multistep=True, solver_type="heun")),
        jd.sample(g.denoise, x0, sig, jd.DEIS(order=3)),
        rtol=1e-9,
        atol=1e-10,
    )


def test_adaptive_solver_meets_its_tolerance(x64):
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(3), 8, sigma=SMAX)
    exact = g.denoise(g.ode_solution(x0, SMAX, SMIN), SMIN)
    grid = jnp.array([SMAX, SMIN, 0.0])
    errors, nfes = [], []
    for rtol in [1e-2, 1e-3, 1e-4]:
        out = jd.sample(
            g.denoise,
            x0,
            grid,
            jd.DPMAdaptive(order=3, rtol=rtol, atol=rtol / 10),
            max_steps=400,
            full_output=True,
        )
        assert bool(out.result == RESULTS.successful)
        errors.append(float(jnp.max(jnp.abs(out.value - exact))))
        nfes.append(int(out.nfe))
    assert errors[0] > errors[1] > errors[2] and nfes[0] < nfes[1] < nfes[2], (errors, nfes)
    assert errors[2] < 1e-3


def test_adaptive_solver_reports_running_out_of_steps(x64):
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(4), 4, sigma=SMAX)
    out = jd.sample(
        g.denoise,
        x0,
        jnp.array([SMAX, SMIN, 0.0]),
        jd.DPMAdaptive(rtol=1e-6, atol=1e-7),
        max_steps=5,
        full_output=True,
        throw=False,
    )
    assert bool(out.result == RESULTS.max_steps_reached)
    with pytest.raises(Exception, match="maximum number of steps"):
        # Blocked on: an accelerator reports the error when the result is awaited.
        jax.block_until_ready(
            jd.sample(
                g.denoise,
                x0,
                jnp.array([SMAX, SMIN, 0.0]),
                jd.DPMAdaptive(rtol=1e-6, atol=1e-7),
                max_steps=5,
            )
        )
