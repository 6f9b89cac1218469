"""The sampling driver: masking, sweeps as data, NFE, noise, errors, stochastic samplers' moments."""

import dataclasses

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsolve import RESULTS
from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture


def _mixture():
    angles = np.linspace(0, 2 * np.pi, 4, endpoint=False)
    means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return GaussianMixture(np.full(4, 0.25), means, np.full((4, 2), 0.1))


SOLVERS = {
    "euler": jd.Euler(),
    "heun": jd.Heun(),
    "dpm2": jd.DPM2(),
    "dpmpp_2m": jd.DPMSolverPP(order=2),
    "dpmpp_3m": jd.DPMSolverPP(order=3),
    "dpm_3s": jd.DPMSolver(order=3),
    "unipc_2": jd.UniPC(order=2),
    "deis_3": jd.DEIS(order=3),
    "lms": jd.LMS(),
    "ipndm": jd.IPNDM(),
}


# Masking is the driver's; one solver per kind of state (none, a second evaluation, multistep
# history, a corrector, a long history) runs by default, the rest under -m slow.
_PADDING_DEFAULT = {"euler", "dpm2", "dpmpp_3m", "unipc_2", "ipndm"}


@pytest.mark.parametrize(
    "name",
    [n if n in _PADDING_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in SOLVERS],
)
def test_padded_grid_equals_unpadded(name):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(0), 16, sigma=20.0)
    ref = jd.sample(m, x0, jd.karras_sigmas(7, 0.01, 20.0), SOLVERS[name])
    padded = jd.sample(m, x0, jd.karras_sigmas(7, 0.01, 20.0, max_steps=12), SOLVERS[name])
    np.testing.assert_allclose(padded, ref, rtol=1e-6, atol=1e-6)


def test_vmap_over_step_counts_compiles_once_and_equals_separate_runs():
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(1), 32, sigma=20.0)
    traces = []

    def run(n):
        traces.append(1)
        sig = jd.karras_sigmas(n, 0.01, 20.0, max_steps=40)
        return jd.sample(m, x0, sig, jd.DPMSolverPP(order=2))

    ns = jnp.array([5, 10, 20, 40])
    swept = jax.jit(jax.vmap(run))(ns)
    assert len(traces) == 1
    # Each separate run compiles anew; two of them pin the sweep down.
    for i, n in [(0, 5), (2, 20)]:
        ref = jd.sample(m, x0, jd.karras_sigmas(n, 0.01, 20.0), jd.DPMSolverPP(order=2))
        np.testing.assert_allclose(swept[i], ref, rtol=2e-5, atol=2e-5)


class _CountingDenoiser(eqx.Module):
    """The Gaussian's exact denoiser; counts how often it is traced (its body runs only then)."""

    gaussian: Gaussian
    traces: list = eqx.field(static=True)

    def __call__(self, x, sigma):
        self.traces.append(1)
        return self.gaussian(x, sigma)


def test_eager_sample_compiles_once_per_structure():
    """Outside jit, a second call with new arrays of the same shapes (another Gaussian, another
    grid, another key) reuses the compiled program, and equals the first call's function."""
    traces = []
    key = jax.random.PRNGKey(30)
    g1 = Gaussian(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))
    g2 = Gaussian(jnp.array([0.0, 2.0]), jnp.array([[0.4, 0.1], [0.1, 0.9]]))
    x0 = g1.sample(key, 8, sigma=20.0)
    first = jd.sample(
        _CountingDenoiser(g1, traces),
        x0,
        jd.karras_sigmas(6, 0.01, 20.0),
        jd.EulerAncestral(),
        key=key,
    )
    traced = len(traces)
    assert traced > 0
    second = jd.sample(
        _CountingDenoiser(g2, traces),
        x0,
        jd.karras_sigmas(6, 0.02, 10.0),
        jd.EulerAncestral(),
        key=jax.random.PRNGKey(31),
    )
    assert len(traces) == traced
    # The cached program is the function of its arguments, not of the first call's values.
    fresh = jd.sample(
        g2, x0, jd.karras_sigmas(6, 0.02, 10.0), jd.EulerAncestral(), key=jax.random.PRNGKey(31)
    )
    np.testing.assert_allclose(second, fresh, rtol=1e-6, atol=1e-6)
    assert not np.allclose(first, second)


def test_unhashable_denoiser_still_samples():
    """A callable dataclass (``eq=True`` makes it unhashable) cannot key the compilation cache;
    sample runs it uncompiled, with the same result."""

    @dataclasses.dataclass
    class Wrapped:
        inner: Gaussian

        def __call__(self, x, sigma):
            return self.inner(x, sigma)

    g = Gaussian(jnp.array([1.0, -1.0]), jnp.array([[1.0, 0.3], [0.3, 0.5]]))
    x0 = g.sample(jax.random.PRNGKey(32), 8, sigma=20.0)
    grid = jd.karras_sigmas(6, 0.01, 20.0)
    np.testing.assert_allclose(
        jd.sample(Wrapped(g), x0, grid, jd.Heun()), jd.sample(g, x0, grid, jd.Heun()), rtol=1e-6
    )


def test_vmap_over_steps_and_guidance_scales_in_one_compile():
    cond = Gaussian(jnp.array([1.5, 0.0]), 0.2 * jnp.eye(2))
    uncond = _mixture()
    x0 = uncond.sample(jax.random.PRNGKey(2), 16, sigma=20.0)
    traces = []

    def run(n, w):
        traces.append(1)
        sig = jd.karras_sigmas(n, 0.01, 20.0, max_steps=20)
        return jd.sample(jd.cfg(cond, uncond, w), x0, sig, jd.UniPC(order=2))

    ns, ws = jnp.meshgrid(jnp.array([5, 10, 20]), jnp.array([1.0, 2.0, 4.0]), indexing="ij")
    swept = jax.jit(jax.vmap(jax.vmap(run)))(ns, ws)
    assert len(traces) == 1
    separate = jax.jit(
        lambda w: jd.sample(
            jd.cfg(cond, uncond, w), x0, jd.karras_sigmas(10, 0.01, 20.0), jd.UniPC(order=2)
        )
    )
    for j, w in enumerate([1.0, 2.0, 4.0]):
        np.testing.assert_allclose(swept[1, j], separate(w), rtol=2e-5, atol=2e-5)
    assert not np.allclose(swept[1, 0], swept[1, 2])  # the scale matters


@pytest.mark.parametrize(
    "solver, nfe",
    [
        (jd.Euler(), lambda n: n),
        (jd.Heun(), lambda n: 2 * n - 1),
        (jd.DPM2(), lambda n: 2 * n - 1),
        (jd.DPMSolverPP(order=3), lambda n: n),
        (jd.DPMSolver(order=3), lambda n: n),
        (jd.UniPC(order=3), lambda n: n),
        (jd.DEIS(order=3), lambda n: n),
        (jd.EDMStochastic(churn=10.0), lambda n: 2 * n - 1),
        (jd.PredictorCorrector(n_corrector=2), lambda n: 3 * n),
        (jd.FlowHeun(), lambda n: 2 * n - 1),
    ],
)
def test_nfe_counts(solver, nfe):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(3), 4, sigma=20.0)
    out = jd.sample(
        m,
        x0,
        jd.karras_sigmas(9, 0.01, 20.0, max_steps=15),
        solver,
        key=jax.random.PRNGKey(0),
        full_output=True,
    )
    assert int(out.nfe) == nfe(9)
    assert int(out.num_steps) == 9


def test_restart_grid_and_nfe():
    base = jd.karras_sigmas(10, 0.01, 20.0)
    grid = jd.restart_sigmas(base, [(0.3, 2.0, 3, 2)])
    # 10 main levels, plus 2 restarts of (1 jump + 3 steps): 10 + 8 steps.
    chex.assert_shape(grid, (19,))
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(4), 4, sigma=20.0)
    out = jd.sample(m, x0, grid, jd.Restart(), key=jax.random.PRNGKey(1), full_output=True)
    # Heun: 2 NFE per ODE step, jumps are free, the final step 1 NFE.
    assert int(out.nfe) == 2 * (9 + 2 * 3) + 1


def test_n_steps_stops_early():
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(5), 8, sigma=20.0)
    sig = jd.karras_sigmas(10, 0.01, 20.0)
    full = jd.sample(m, x0, sig, jd.Heun(), full_output=True, save_trajectory=True)
    part = jd.sample(m, x0, sig, jd.Heun(), n_steps=4)
    np.testing.assert_allclose(part, full.trajectory[4], rtol=1e-6)
    chex.assert_shape(full.trajectory, (11, 8, 2))


STOCHASTIC = {
    "euler_ancestral": (jd.EulerAncestral(), 1000),
    "ddim_eta": (jd.DDIM(eta=0.5), 1000),
    "euler_maruyama": (jd.EulerMaruyama(), 1000),
    "edm": (jd.EDMStochastic(churn=40.0, s_tmin=0.05, s_tmax=10.0), 400),
    "sde_dpmpp_2m": (jd.DPMSolverPPSDE(order=2), 200),
    "sde_dpmpp_3m": (jd.DPMSolverPPSDE(order=3, eta=0.7), 200),
    "predictor_corrector": (jd.PredictorCorrector(), 1000),
}


# 1000-step runs of 20000 samples: DDIM(eta) is EulerAncestral's code path, Euler-Maruyama and the
# predictor-corrector repeat the check on other steps; those three are left to -m slow.
_STOCHASTIC_SLOW = {"ddim_eta", "euler_maruyama", "predictor_corrector"}


@pytest.mark.parametrize(
    "name",
    [
        n if n not in _STOCHASTIC_SLOW else pytest.param(n, marks=pytest.mark.slow)
        for n in STOCHASTIC
    ],
)
def test_stochastic_sampler_moments_match_the_gaussian(name):
    solver, steps = STOCHASTIC[name]
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    cov = q @ np.diag([0.3, 1.0, 3.0]) @ q.T
    g = Gaussian(np.array([0.5, -1.0, 0.25]), cov)
    n = 20_000
    x0 = g.sample(jax.random.PRNGKey(7), n, sigma=20.0)
    x = np.asarray(
        jd.sample(g, x0, jd.karras_sigmas(steps, 0.002, 20.0), solver, key=jax.random.PRNGKey(8)),
        np.float64,
    )
    se_mean = np.sqrt(np.diag(cov) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - g.mean()), 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), 5 * se_cov)


def test_restart_moments_match_the_gaussian():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    cov = q @ np.diag([0.5, 2.0]) @ q.T
    g = Gaussian(np.array([0.3, -0.2]), cov)
    n = 20_000
    grid = jd.restart_sigmas(jd.karras_sigmas(60, 0.002, 20.0), [(0.2, 2.0, 20, 3)])
    x = np.asarray(
        jd.sample(
            g,
            g.sample(jax.random.PRNGKey(9), n, sigma=20.0),
            grid,
            jd.Restart(),
            key=jax.random.PRNGKey(10),
        )
    )
    se_cov = np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov**2) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - g.mean()), 5 * np.sqrt(np.diag(cov) / n))
    np.testing.assert_array_less(np.abs(np.cov(x.T) - cov), 5 * se_cov)


# The per-sample noise comes from the driver; one solver drawing once per step and one drawing
# several times per step cover its two code paths by default, the others run under -m slow.
@pytest.mark.parametrize(
    "solver",
    [
        jd.EulerAncestral(),
        jd.PredictorCorrector(),
        pytest.param(jd.DPMSolverPPSDE(order=2), marks=pytest.mark.slow),
        pytest.param(jd.EDMStochastic(churn=20.0), marks=pytest.mark.slow),
        pytest.param(jd.EulerMaruyama(), marks=pytest.mark.slow),
    ],
    ids=lambda s: type(s).__name__,
)
def test_stochastic_sample_does_not_depend_on_batch_size(solver):
    m = _mixture()
    key = jax.random.PRNGKey(11)
    x0 = m.sample(jax.random.PRNGKey(12), 20, sigma=20.0)
    sig = jd.karras_sigmas(8, 0.01, 20.0)
    big = jd.sample(m, x0, sig, solver, key=key)
    small = jd.sample(m, x0[:5], sig, solver, key=key)
    np.testing.assert_allclose(big[:5], small, rtol=1e-5, atol=1e-6)
    other = jd.sample(m, x0[:5], sig, solver, key=jax.random.PRNGKey(13))
    assert not np.allclose(other, small)


def test_recorded_noise_replaces_the_key():
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(14), 3, sigma=20.0)
    sig = jd.karras_sigmas(5, 0.01, 20.0)
    table = jax.random.normal(jax.random.PRNGKey(15), (5, 3, 2))
    out = jd.sample(m, x0, sig, jd.EulerAncestral(), noise=lambda i, k: table[i])
    # By hand: the first ancestral step with that noise.
    s0, s1 = float(sig[0]), float(sig[1])
    down, up = jd._solvers.ancestral.ancestral_levels(s0, s1, 1.0)
    d = m(x0, s0)
    x1 = d + down * (x0 - d) / s0 + up * table[0]
    np.testing.assert_allclose(
        jd.sample(m, x1, sig[1:], jd.EulerAncestral(), noise=lambda i, k: table[i + 1]),
        out,
        rtol=1e-5,
        atol=1e-6,
    )


def test_nonfinite_denoiser_is_reported_not_propagated_silently():
    m = _mixture()
    bad = lambda x, s: jnp.where(s < 1.0, jnp.nan, m(x, s))
    x0 = m.sample(jax.random.PRNGKey(16), 4, sigma=20.0)
    sig = jd.karras_sigmas(10, 0.01, 20.0)
    out = jd.sample(bad, x0, sig, jd.DPMSolverPP(), full_output=True, throw=False)
    assert bool(out.result == RESULTS.nonfinite)
    with pytest.raises(Exception, match="NaN or infinity"):
        jax.block_until_ready(jd.sample(bad, x0, sig, jd.DPMSolverPP()))
    ok = jd.sample(m, x0, sig, jd.DPMSolverPP(), full_output=True)
    assert bool(ok.result == RESULTS.successful)


def test_half_precision_denoiser_is_cast_back():
    m = _mixture()
    half = lambda x, s: m(x, s).astype(jnp.bfloat16)
    out = jd.sample(
        half,
        m.sample(jax.random.PRNGKey(17), 4, sigma=20.0),
        jd.karras_sigmas(5, 0.01, 20.0),
        jd.Heun(),
    )
    assert out.dtype == jnp.float32


@pytest.mark.parametrize(
    "checkpointed",
    # Recursive checkpointing (two stored states for six steps) compiles slowly.
    ["checkpoint", pytest.param(jd.Checkpointed(checkpoints=2), marks=pytest.mark.slow)],
)
def test_checkpointed_gradient_equals_backprop(checkpointed):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(18), 4, sigma=20.0)
    sig = jd.karras_sigmas(6, 0.01, 20.0)

    def loss(x, adjoint):
        return jnp.sum(jd.sample(m, x, sig, jd.DPMSolverPP(order=2), adjoint=adjoint) ** 2)

    g1 = jax.jit(jax.grad(loss), static_argnums=1)(x0, "backprop")
    g2 = jax.jit(jax.grad(loss), static_argnums=1)(x0, checkpointed)
    np.testing.assert_allclose(g1, g2, rtol=1e-5, atol=1e-6)
    assert np.all(np.isfinite(g1))


# Every deterministic solver on a fixed grid, for the adjoint forward-pass check. One per kind of
# state and of lower-order-final logic runs by default, the rest under -m slow.
DETERMINISTIC = {
    "euler": lambda: jd.Euler(),
    "heun": lambda: jd.Heun(),
    "dpm2": lambda: jd.DPM2(),
    "ddim": lambda: jd.DDIM(eta=0.0),
    "lms": lambda: jd.LMS(),
    "ipndm": lambda: jd.IPNDM(),
    "deis_tab": lambda: jd.DEIS(order=3),
    "deis_rho": lambda: jd.DEIS(order=2, variable="sigma"),
    "dpm_1": lambda: jd.DPMSolver(order=1),
    "dpm_2m": lambda: jd.DPMSolver(order=2),
    "dpm_3s": lambda: jd.DPMSolver(order=3, multistep=False),
    "dpmpp_2m": lambda: jd.DPMSolverPP(order=2),
    "dpmpp_3m": lambda: jd.DPMSolverPP(order=3),
    "dpmpp_2s": lambda: jd.DPMSolverPP(order=2, multistep=False),
    "dpmpp_3m_legacy": lambda: jd.DPMSolverPP(order=3, legacy_third_order=True),
    "unipc_bh1": lambda: jd.UniPC(order=3, variant="bh1"),
    "unipc_bh2": lambda: jd.UniPC(order=2),
    "unipc_p": lambda: jd.UniPC(order=2, corrector=False),
    "dualfast": lambda: jd.DualFast(jd.DPMSolverPP(order=2)),
    "heavy_ball": lambda: jd.HeavyBall(jd.DPMSolverPP(order=2)),
    "ghvb": lambda: jd.GHVB(),
    "time_shift": lambda: jd.TimeShift(jd.DDIM(eta=0.0)),
    "bdia": lambda: jd.BDIA(0.5),
}
# Two of the three the bug was found with (multistep history; a corrector) run by default.
_ADJOINT_DEFAULT = {"dpmpp_2m"}


@pytest.mark.parametrize(
    "name",
    [
        n if n in _ADJOINT_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
        for n in DETERMINISTIC
    ],
)
def test_every_adjoint_gives_the_same_forward_sample(name, x64):
    # The adjoint used to integrate n - 1 steps with an (n - 1)-step grid's lower-order final
    # steps: a relative difference of 0.23 for DPM-Solver++(2M) at 4 steps.
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(40), 8, sigma=20.0)
    counts = jnp.array([2, 3, 4, 7, 10, 20, 50])
    grids = jax.vmap(lambda n: jd.karras_sigmas(n, 0.01, 20.0, max_steps=50))(counts)
    solver = DETERMINISTIC[name]()

    adjoints = ("backprop", "checkpoint", "adjoint", jd.Checkpointed(checkpoints=3))

    @jax.jit
    def forward(grid):
        return [jd.sample(m, x0, grid, solver, adjoint=a) for a in adjoints]

    backprop, *others = jax.vmap(forward)(grids)
    assert np.all(np.isfinite(backprop))
    for other in others:
        np.testing.assert_array_equal(other, backprop)
    # and the padded, vmapped runs are the plain ones (up to the order of float64 operations)
    plain = jd.sample(m, x0, jd.karras_sigmas(4, 0.01, 20.0), solver, adjoint="adjoint")
    np.testing.assert_allclose(backprop[2], plain, rtol=1e-12, atol=1e-12)


def test_adjoint_reports_and_raises_a_nonfinite_sample():
    sig = jd.karras_sigmas(5, 0.01, 10.0)
    x0 = jnp.ones((3, 2))

    def nan_below_one(w):
        return lambda x, s: w * jnp.where(s < 1.0, jnp.nan, 1.0) * x

    with pytest.raises(Exception, match="NaN or infinity"):
        jax.block_until_ready(
            jd.sample(nan_below_one(1.0), x0, sig, jd.DPMSolverPP(), adjoint="adjoint")
        )
    sol = jd.sample(
        nan_below_one(1.0),
        x0,
        sig,
        jd.DPMSolverPP(),
        adjoint="adjoint",
        throw=False,
        full_output=True,
    )
    assert sol.result == RESULTS.nonfinite and int(sol.nfe) == 5
    # A gradient through the failed sample is NaN, not a plausible zero.
    loss = lambda w: jnp.sum(
        jd.sample(nan_below_one(w), x0, sig, jd.DPMSolverPP(), adjoint="adjoint", throw=False)
    )
    assert np.isnan(jax.grad(loss)(1.0))


def test_gradient_with_respect_to_guidance_scale_is_finite_with_padding():
    cond = Gaussian(jnp.array([1.5, 0.0]), 0.2 * jnp.eye(2))
    uncond = _mixture()
    x0 = uncond.sample(jax.random.PRNGKey(19), 4, sigma=20.0)
    sig = jd.karras_sigmas(jnp.int32(6), 0.01, 20.0, max_steps=10)

    @jax.jit
    def loss(w):
        return jnp.sum(jd.sample(jd.cfg(cond, uncond, w), x0, sig, jd.UniPC(order=3)))

    g = jax.jit(jax.grad(loss))(2.0)
    eps = 1e-2
    fd = (loss(2.0 + eps) - loss(2.0 - eps)) / (2 * eps)
    assert np.isfinite(g) and abs(g - fd) <= 1e-2 * max(1.0, abs(fd))


def test_progress_bar_under_jit(capfd):
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(20), 4, sigma=20.0)
    f = eqx.filter_jit(
        lambda x: jd.sample(m, x, jd.karras_sigmas(5, 0.01, 20.0), jd.Euler(), progress=True)
    )
    jax.block_until_ready(f(x0))
    jax.effects_barrier()
    assert "sampling" in capfd.readouterr().err


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "sigmas, match",
    [
        (jnp.array([10.0, 5.0, 7.0, 0.0]), "strictly decreasing"),
        (jnp.array([10.0, 5.0, 1.0]), "must end in 0"),
        (jnp.array([0.0, 0.0]), "sigmas\\[0\\] must be positive"),
        (jnp.array([10.0, -1.0, 0.0]), "non-negative"),
        (jnp.array([10.0, 0.0, 1.0, 0.0]), "all zeros after"),
        pytest.param(jnp.ones((2, 2)), "1-D grid", marks=pytest.mark.wrong_argument_types),
    ],
)
def test_bad_grids(sigmas, match):
    with pytest.raises(ValueError, match=match):
        jd.sample(_mixture(), jnp.zeros((2, 2)), sigmas, jd.Euler())


def test_bad_sampler_arguments():
    m = _mixture()
    x = jnp.zeros((2, 2))
    sig = jd.karras_sigmas(5, 0.01, 10.0)
    with pytest.raises(ValueError, match="n_steps must lie in \\[1, 5\\]"):
        jd.sample(m, x, sig, jd.Euler(), n_steps=6)
    with pytest.raises(
        Exception, match="n_steps is larger than the number of steps the grid allows"
    ):
        jax.block_until_ready(jax.jit(lambda k: jd.sample(m, x, sig, jd.Euler(), n_steps=k))(9))
    with pytest.raises(ValueError, match="stochastic: pass key"):
        jd.sample(m, x, sig, jd.EulerAncestral())
    with pytest.raises(TypeError, match="AbstractSolver"):
        jd.sample(m, x, sig, "euler")
    with pytest.raises(ValueError, match="adjoint"):
        jd.sample(m, x, sig, jd.Euler(), adjoint="magic")
    with pytest.raises(ValueError, match="needs max_steps"):
        jd.sample(m, x, jnp.array([10.0, 0.1, 0.0]), jd.DPMAdaptive())
    with pytest.raises(ValueError, match="only for adaptive solvers"):
        jd.sample(m, x, sig, jd.Euler(), max_steps=20)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jd.DPMSolverPP(order=4), "DPMSolverPP order must be <= 3"),
        (lambda: jd.DPMSolver(order=0), "DPMSolver order must be >= 1"),
        (lambda: jd.UniPC(order=5), "UniPC order must be <= 3"),
        (lambda: jd.DEIS(order=4), "DEIS order must be <= 3"),
        (lambda: jd.LMS(order=5), "LMS order must be <= 4"),
        (lambda: jd.DPMAdaptive(order=1), "DPMAdaptive order must be >= 2"),
        (lambda: jd.DPMSolverSDE(order=2, multistep=False), "multistep only"),
        (lambda: jd.DPMSolverPP(solver_type="rk4"), "solver_type"),
        (lambda: jd.UniPC(variant="bh3"), "variant"),
        (lambda: jd.DEIS(variable="t"), "needs schedule"),
        (lambda: jd.EDMStochastic(solver=jd.DPMSolverPP()), "single-step"),
        (lambda: jd.PredictorCorrector(norms="l2"), "norms"),
        # churn = -1 used to fail at run time with a NaN; eta = -1 acted as eta = 1.
        (lambda: jd.EDMStochastic(churn=-1.0), "churn must be non-negative"),
        (lambda: jd.EDMStochastic(s_noise=-1.0), "s_noise must be non-negative"),
        (lambda: jd.DDIM(eta=-1.0), "eta must be non-negative"),
        (lambda: jd.EulerAncestral(eta=-0.5), "eta must be non-negative"),
    ],
)
def test_bad_solver_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_traced_negative_eta_and_churn_raise_when_they_run():
    m = _mixture()
    x = m.sample(jax.random.PRNGKey(0), 4, sigma=10.0)
    sig = jd.karras_sigmas(3, 0.01, 10.0)
    key = jax.random.PRNGKey(1)
    run = jax.jit(lambda s: jd.sample(m, x, sig, s, key=key))
    for make, name in [(jd.DDIM, "eta"), (lambda v: jd.EDMStochastic(churn=v), "churn")]:
        assert np.all(np.isfinite(run(make(jnp.asarray(0.5)))))
        with pytest.raises(Exception, match=f"{name} must be non-negative"):
            jax.block_until_ready(run(make(jnp.asarray(-1.0))))


# Invalid traced grids, each of length 4: no trailing 0, increasing, a negative level, a NaN, a
# level after the first 0. They used to run (a grid without 0 ran 0 steps and returned the noise
# as a successful sample).
_BAD_TRACED_GRIDS = [
    [10.0, 5.0, 1.0, 0.5],
    [1.0, 5.0, 10.0, 0.0],
    [10.0, -1.0, 0.5, 0.0],
    [10.0, np.nan, 1.0, 0.0],
    [10.0, 0.0, 1.0, 0.0],
    [0.0, 0.0, 0.0, 0.0],
]


def test_traced_grids_are_checked_when_they_run():
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(2), 4, sigma=10.0)
    run = jax.jit(lambda g: jd.sample(m, x0, g, jd.DPMSolverPP(), throw=False, full_output=True))
    good = run(jnp.array([10.0, 5.0, 1.0, 0.0]))
    assert good.result == RESULTS.successful and int(good.num_steps) == 3
    for grid in _BAD_TRACED_GRIDS:
        sol = run(jnp.asarray(grid))
        assert sol.result == RESULTS.invalid_grid, grid
        assert np.all(np.isnan(sol.value)), grid  # never a plausible sample
    # throw=True (the default) raises; under vmap one bad member is enough.
    raising = jax.jit(jax.vmap(lambda g: jd.sample(m, x0, g, jd.Euler())))
    ok = jnp.array([[10.0, 5.0, 1.0, 0.0], [8.0, 2.0, 0.0, 0.0]])
    assert np.all(np.isfinite(raising(ok)))
    with pytest.raises(Exception, match="The grid sigmas is invalid"):
        jax.block_until_ready(raising(ok.at[1].set(jnp.asarray(_BAD_TRACED_GRIDS[1]))))


def test_a_failed_check_under_jit_logs_no_traceback_before_its_message(caplog):
    # JAX logged ~17 lines of "jax.pure_callback failed" traceback before the error reached the
    # user; the exception itself, with the message, is all that is left.
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(2), 4, sigma=10.0)
    run = jax.jit(lambda g: jd.sample(m, x0, g, jd.Euler()))
    with caplog.at_level("DEBUG"), pytest.raises(Exception, match="The grid sigmas is invalid"):
        jax.block_until_ready(run(jnp.asarray(_BAD_TRACED_GRIDS[0])))
    assert not [r for r in caplog.records if "callback failed" in r.getMessage()]

    # A user's own failing callback still logs.
    def crash(x):
        raise RuntimeError("user callback")

    with caplog.at_level("DEBUG"), pytest.raises(Exception, match="user callback"):
        jax.block_until_ready(
            jax.jit(lambda x: jax.pure_callback(crash, jax.ShapeDtypeStruct((), x.dtype), x))(1.0)
        )
    assert [r for r in caplog.records if "callback failed" in r.getMessage()]


def test_a_traced_grid_may_go_up_only_for_solvers_that_allow_it():
    m = _mixture()
    x0 = m.sample(jax.random.PRNGKey(3), 4, sigma=10.0)
    # Restart's grid jumps back up; the same traced grid is invalid for a plain solver.
    grid = jd.restart_sigmas(jd.karras_sigmas(6, 0.01, 10.0), [(0.5, 2.0, 2, 1)])
    restart = jax.jit(
        lambda g: jd.sample(
            m, x0, g, jd.Restart(), key=jax.random.PRNGKey(4), throw=False, full_output=True
        )
    )(grid)
    assert restart.result == RESULTS.successful
    euler = jax.jit(lambda g: jd.sample(m, x0, g, jd.Euler(), throw=False, full_output=True))(grid)
    assert euler.result == RESULTS.invalid_grid


@pytest.mark.parametrize(
    "denoiser, match",
    [
        (lambda x, s: x[0], "returned shape \\(2,\\), expected \\(4, 2\\)"),
        (lambda x, s: jnp.sum(x), "returned shape \\(\\), expected \\(4, 2\\)"),
        (lambda x, s: (x, x), "returned a tuple; expected one array of shape \\(4, 2\\)"),
    ],
)
def test_a_denoiser_of_the_wrong_shape_is_named(denoiser, match):
    # These failed deep inside lax.switch / concatenate, or broadcast silently.
    with pytest.raises((ValueError, TypeError), match=match):
        jd.sample(denoiser, jnp.ones((4, 2)), jd.karras_sigmas(3, 0.1, 1.0), jd.DPMSolverPP())


class _Denoiser(eqx.Module):
    """The mixture's denoiser, or (by a traced ``mode``) one that goes NaN below sigma = 1 or
    returns infinity: one compiled program serves every example of the property test."""

    mode: jax.Array

    def __call__(self, x, sigma):
        d = _mixture()(x, sigma)
        d = jnp.where((self.mode == 1) & (sigma < 1.0), jnp.nan, d)
        return jnp.where(self.mode == 2, jnp.inf, d)


_GRIDS = {
    "valid": [10.0, 3.0, 1.0, 0.3, 0.0],
    "padded": [10.0, 1.0, 0.0, 0.0, 0.0],
    "no_zero": [10.0, 3.0, 1.0, 0.3, 0.1],
    "increasing": [0.3, 1.0, 3.0, 10.0, 0.0],
    "repeated": [10.0, 3.0, 3.0, 1.0, 0.0],
    "negative": [10.0, 3.0, -1.0, 0.3, 0.0],
    "nan": [10.0, np.nan, 1.0, 0.3, 0.0],
    "inf": [np.inf, 3.0, 1.0, 0.3, 0.0],
    "zero_first": [0.0, 3.0, 1.0, 0.3, 0.0],
    "after_zero": [10.0, 0.0, 1.0, 0.0, 0.0],
}
_ARGUMENT_NAMES = ("sigmas", "x", "n_steps", "denoiser", "batch_ndim")


def _run_property_case(x, sigmas, mode, solver):
    return jd.sample(_Denoiser(mode), x, sigmas, SOLVERS[solver], throw=False, full_output=True)


_run_property_case_jit = jax.jit(_run_property_case, static_argnames="solver")


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    # Repeats bias the draws towards valid inputs, so that successes are checked too.
    grid=st.sampled_from(["valid", "padded", *sorted(_GRIDS)]),
    x_value=st.sampled_from([None, None, np.nan, np.inf, -np.inf]),
    x_index=st.integers(0, 7),
    mode=st.sampled_from([0, 0, 1, 2]),
    solver=st.sampled_from(["euler", "dpmpp_2m"]),
    traced=st.booleans(),
)
def test_sample_property_bad_input_never_passes_as_success(
    grid, x_value, x_index, mode, solver, traced
):
    """Each call returns a correct sample, a non-successful code, or raises naming the argument."""
    x = np.array(_mixture().sample(jax.random.PRNGKey(7), 4, sigma=10.0))
    if x_value is not None:
        x.reshape(-1)[x_index] = x_value
    sigmas = jnp.asarray(_GRIDS[grid])
    run = _run_property_case_jit if traced else _run_property_case
    try:
        sol = run(x, sigmas, jnp.asarray(mode), solver)
    except (ValueError, TypeError) as err:
        assert not traced and any(name in str(err) for name in _ARGUMENT_NAMES), err
        return
    if sol.result != RESULTS.successful:
        return
    assert np.all(np.isfinite(sol.value))
    # A success is the sample of the same (valid) grid run plainly.
    reference = jd.sample(_mixture(), x, sigmas, SOLVERS[solver])
    np.testing.assert_allclose(sol.value, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.wrong_argument_types
def test_bad_step_counts():
    m = _mixture()
    x = jnp.zeros((2, 2))
    sig = jd.karras_sigmas(5, 0.01, 10.0)
    with pytest.raises(TypeError, match="n_steps must be an integer"):
        jd.sample(m, x, sig, jd.Euler(), n_steps=2.5)  # used to run 2 steps
    with pytest.raises(TypeError, match="n_steps must be an integer"):
        jax.jit(lambda k: jd.sample(m, x, sig, jd.Euler(), n_steps=k))(2.5)
    # vmapped n_steps = 0 used to say "larger than the grid allows".
    run = jax.jit(jax.vmap(lambda k: jd.sample(m, x, sig, jd.Euler(), n_steps=k)))
    with pytest.raises(Exception, match="n_steps must be at least 1"):
        jax.block_until_ready(run(jnp.array([0, 3])))


def test_predictor_corrector_follows_samples_batch_ndim():
    # PredictorCorrector kept its own batch_ndim = 1: with sample(batch_ndim=2) its per-sample
    # norms mixed samples, and the result depended on how the batch was laid out.
    m = _mixture()
    x = m.sample(jax.random.PRNGKey(5), 6, sigma=10.0)
    sig = jd.karras_sigmas(4, 0.01, 10.0)
    pc = jd.PredictorCorrector(norms="sample")
    key = jax.random.PRNGKey(6)
    noise = lambda i, k: jax.random.normal(
        jax.random.fold_in(jax.random.fold_in(key, i), k), x.shape
    )
    flat = jd.sample(m, x, sig, pc, noise=noise)
    nested = jd.sample(
        m,
        x.reshape(2, 3, 2),
        sig,
        pc,
        batch_ndim=2,
        noise=lambda i, k: noise(i, k).reshape(2, 3, 2),
    )
    np.testing.assert_allclose(nested.reshape(6, 2), flat, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="batch_ndim=1\\) but sample\\(batch_ndim=2"):
        jd.sample(
            m, x.reshape(2, 3, 2), sig, jd.PredictorCorrector(batch_ndim=1), batch_ndim=2, key=key
        )


def test_noise_of_another_shape_is_refused():
    """A user's ``noise(i, k)`` must have x's shape: a transposed draw of the same size used to
    be reshaped, scrambling the noise across samples."""
    g = Gaussian(jnp.zeros(2), jnp.eye(2))
    x = jnp.ones((3, 2))
    sigmas = jd.karras_sigmas(4, 0.01, 10.0)
    z = jax.random.normal(jax.random.key(0), (2, 3))
    with pytest.raises(ValueError, match=r"noise\(i, k\) must return an array of x's shape"):
        jd.sample(g, x, sigmas, jd.EulerAncestral(), noise=lambda i, k: z)
    out = jd.sample(g, x, sigmas, jd.EulerAncestral(), noise=lambda i, k: z.T)
    assert out.shape == x.shape and bool(jnp.all(jnp.isfinite(out)))
