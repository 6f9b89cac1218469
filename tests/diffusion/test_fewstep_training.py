import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.diffusion.analytic import Gaussian
from jaxsolve.diffusion.fewstep import (
    ConsistencyFunction,
    consistency_training_loss,
    ect_gap,
    ict_level_probabilities,
    ict_num_levels,
    scm_loss,
    to_trigflow,
)

SD = 0.5
SIGMA_MIN = 0.002


def _gaussian(d=3, seed=0, n=64):
    """A Gaussian oracle and ``n`` samples of it (drawn in NumPy: no eager JAX to compile)."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d, d))
    mean, cov = rng.normal(size=d), 0.4 * a @ a.T / d + 0.1 * np.eye(d)
    return Gaussian(mean, cov), rng.multivariate_normal(mean, cov, size=n)


def _exact_cm(g, sigma_min):
    """The exact consistency function of Gaussian data: the PF-ODE map down to sigma_min."""
    return lambda x, s: g.ode_solution(x, s, sigma_min)


class _MLP(eqx.Module):
    """A tiny network ``(x, c) -> out`` on one sample (float32 weights)."""

    w1: jax.Array
    w2: jax.Array

    def __init__(self, d, seed, hidden=8):
        rng = np.random.default_rng(seed)
        self.w1 = jnp.asarray(rng.normal(size=(hidden, d + 1)) / np.sqrt(d + 1), jnp.float32)
        self.w2 = jnp.asarray(rng.normal(size=(d, hidden)) / np.sqrt(hidden), jnp.float32)

    def __call__(self, x, c):
        return self.w2 @ jnp.tanh(self.w1 @ jnp.append(x, c))


class _Batched(eqx.Module):
    net: _MLP

    def __call__(self, x, t):
        return jax.vmap(self.net)(x, jnp.broadcast_to(t, x.shape[:1]))


class _LogWeight(eqx.Module):
    a: jax.Array
    b: jax.Array

    def __call__(self, t):
        return self.a * jnp.cos(t) + self.b


# --- schedules ---------------------------------------------------------------------------------


def test_schedules():
    t = jnp.array([0.01, 1.0, 50.0])
    grid = jnp.linspace(0.1, 2.0, 6)

    @jax.jit
    def run():
        progress = jnp.array([0.0, 0.124, 0.126, 0.5, 0.99, 1.0])
        return (
            jax.vmap(ict_num_levels)(progress),
            ict_level_probabilities(grid, 4),
            ect_gap(t, 0.0),
            ect_gap(t, 3 / 8),
            ect_gap(t, 4 / 8),
        )

    n, probs, g0, g3, g4 = run()
    # 8 stages of doubling from 10 to 1280 intervals.
    np.testing.assert_array_equal(n, [11, 11, 21, 161, 1281, 1281])
    assert probs.shape == (5,) and float(probs[3]) == 0.0 and float(probs[4]) == 0.0
    np.testing.assert_allclose(float(jnp.sum(probs)), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(g0, 1.0)  # pretraining: the whole interval
    np.testing.assert_allclose(g3 / g4, 2.0, rtol=1e-6)  # each stage halves the gap
    np.testing.assert_allclose(g4, 2.0**-4 * (1 + 8 * jax.nn.sigmoid(-t)), rtol=1e-6)


# --- consistency training ----------------------------------------------------------------------


def test_ct_loss_of_exact_consistency_function_vanishes_with_the_gap(x64):
    # With the exact consistency function f, f(x0 + t z, t) - f(x0 + r z, r) = O(t - r) per sample
    # (x0 + r z is not on x0 + t z's ODE trajectory, it is one Euler step with D = x0): the
    # unweighted squared loss is C gap^2 (1 + O(gap)). ECT's stages halve the gap exactly.
    g, x0 = _gaussian()
    f = _exact_cm(g, SIGMA_MIN)
    wrong = _exact_cm(g, 0.3)  # a consistency function of the wrong boundary

    @jax.jit
    def losses(progress):
        kw = dict(
            schedule="ect", progress=progress, ect_stages=16, metric="l2", weight=lambda a, b: 1.0
        )
        key = jax.random.key(1)
        return (
            consistency_training_loss(f, f, x0, key, **kw),
            consistency_training_loss(wrong, f, x0, key, **kw),
        )

    stages = np.arange(7, 11)
    exact, bad = zip(*(losses(s / 16) for s in stages), strict=True)
    exact = np.array(exact)
    ratios = exact[:-1] / exact[1:]
    # Ratio -> 4 with an O(gap) error: the error roughly halves from stage to stage.
    err = np.abs(ratios - 4.0)
    assert err[-1] < 0.02, ratios
    np.testing.assert_allclose(err[1:] / err[:-1], 0.5, atol=0.05)
    assert exact[-1] < 1e-6
    # The wrong student keeps an O(1) loss.
    assert min(bad) > 1e3 * exact[-1]


# --- sCM ---------------------------------------------------------------------------------------


def test_scm_distillation_loss_vanishes_at_the_exact_consistency_function(x64):
    g, x0 = _gaussian(n=32)
    F_cm = to_trigflow(_exact_cm(g, 0.0), SD)
    F_flow = to_trigflow(g.denoise, SD)

    @jax.jit
    def run():
        key = jax.random.key(5)
        return (
            scm_loss(F_cm, x0, key, SD, teacher=g.denoise, normalize_tangent=False),
            scm_loss(F_flow, x0, key, SD, teacher=g.denoise),
        )

    exact, denoiser = map(float, run())
    assert exact < 1e-20
    # The denoiser is not a consistency function: the loss can fail. Normalised, each tangent has
    # norm < 1, so the loss (= ||g||^2 / D in value) is below 1 / D.
    assert 1e-3 < denoiser < 1 / 3


def _assert_finite_nonzero(grad):
    leaves = jax.tree_util.tree_leaves(grad)
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert all(float(jnp.max(jnp.abs(leaf))) > 0 for leaf in leaves)


def test_scm_float32_gradient_finite():
    # sCT with tangent normalisation, tangent warmup and a learned adaptive weight, in float32.
    d = 3
    F = _Batched(_MLP(d, 1))
    w = _LogWeight(jnp.float32(0.3), jnp.float32(-0.1))
    x0 = 0.5 * jax.random.normal(jax.random.key(6), (16, d))

    def sct(params):
        F, w = params
        return scm_loss(F, x0, jax.random.key(7), SD, adaptive_weight=w, warmup_ratio=0.5)

    @jax.jit
    def run(F, w):
        return jax.value_and_grad(sct)((F, w)), scm_loss(F, x0, jax.random.key(7), SD)

    (loss, grad), plain = run(F, w)
    assert loss.dtype == jnp.float32 and np.isfinite(float(loss))
    # Normalised tangents have norm < 1: the plain loss (= ||g||^2 / D in value) is below 1/D.
    assert 0 < float(plain) < 1 / d
    _assert_finite_nonzero(grad)


@pytest.mark.slow
def test_ct_float32_gradient_finite():
    # iCT through a ConsistencyFunction, progress traced (one compilation for the curriculum).
    d = 3
    cm = ConsistencyFunction(_MLP(d, 0), sigma_min=SIGMA_MIN, sigma_data=SD)
    x0 = 0.5 * jax.random.normal(jax.random.key(2), (16, d))

    @jax.jit
    def run(model, progress):
        def ct(model):
            target = jax.lax.stop_gradient(model)
            return consistency_training_loss(
                model, target, x0, jax.random.key(3), progress=progress
            )

        return jax.value_and_grad(ct)(model)

    for progress in (0.0, 0.7):
        loss, grad = run(cm, jnp.float32(progress))
        assert loss.dtype == jnp.float32 and np.isfinite(float(loss)) and float(loss) > 0
        _assert_finite_nonzero(grad)


# --- short training runs (the benchmark, benchmarks/bench_fewstep.py, runs them to accuracy) --


def _ring4():
    from jaxsolve.diffusion.analytic import GaussianMixture

    corners = np.array([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    return GaussianMixture(np.full(4, 0.25), corners, np.full((4, 2), 0.05))


def _train(loss, model, data, steps, *, with_step=False):
    import optax

    from jaxsolve import train

    result = train.fit(
        loss, model, jax.jit(lambda k: data.sample(k, 256)),
        optimizer=optax.adam(optax.cosine_decay_schedule(2e-3, steps, alpha=0.05)),
        num_steps=steps, key=jax.random.PRNGKey(1), steps_per_call=steps, progress=False,
        with_step=with_step,
    )  # fmt: skip
    assert np.all(np.isfinite(result.history["loss"]))
    return result.model


def _distances(data, samplers):
    """Sliced Wasserstein distances to 2000 data samples, for each ``x_max -> samples`` map."""
    from jaxsolve.diffusion import sliced_wasserstein

    ref = data.sample(jax.random.PRNGKey(7), 2000)
    x_max = 80.0 * jax.random.normal(jax.random.PRNGKey(8), (2000, 2))
    return [float(sliced_wasserstein(f(x_max), ref, jax.random.PRNGKey(9))) for f in samplers]


@pytest.mark.slow
def test_consistency_distillation_from_the_exact_teacher_beats_the_teachers_two_steps():
    """CD (Heun on the exact mixture denoiser) for 1500 steps: its 2-step samples are closer to the
    data than the untrained student's, and than the exact teacher's own 2-step DPM-Solver++(2M) by
    more than 2x. (CD on a fixed grid learns slowly: consistency reaches the top levels one
    interval at a time, which iCT's coarse-to-fine curriculum shortcuts; the benchmark trains
    longer.)"""
    from jaxsolve import diffusion as jd
    from jaxsolve.diffusion.fewstep import ConsistencySampler, consistency_distillation_loss

    data = _ring4()
    student = ConsistencyFunction(jd.NoiseMLP(2, 64, 2, key=jax.random.PRNGKey(0)), sigma_data=1.4)
    levels = jd.karras_sigmas(18, SIGMA_MIN, 80.0)

    def loss(model, x0, key):
        return consistency_distillation_loss(model, model, data, x0, key, levels, jd.Heun())

    trained = _train(loss, student, data, 1500)
    grid = jnp.array([80.0, 1.4 * np.tan(1.1), 0.0])

    def two_steps(model):
        return lambda x: jd.sample(model, x, grid, ConsistencySampler(), key=jax.random.PRNGKey(3))

    def teacher(x):
        return jd.sample(data, x, jd.karras_sigmas(2, SIGMA_MIN, 80.0), jd.DPMSolverPP())

    cd, untrained, teacher_2 = _distances(data, [two_steps(trained), two_steps(student), teacher])
    assert cd < 0.5 * teacher_2 and cd < untrained, (cd, teacher_2, untrained)


@pytest.mark.slow
def test_sct_in_float32_trains_finite_with_tangent_normalisation_and_adaptive_weighting():
    """sCT in float32 with the paper's stabilisers: every step finite (``train.fit`` raises at the
    first non-finite one) and the 2-step samples far closer to the data than the untrained
    network's."""
    from jaxsolve import diffusion as jd
    from jaxsolve.diffusion.fewstep import ConsistencySampler, from_trigflow

    class F(eqx.Module):
        net: jd.NoiseMLP
        w: eqx.nn.Linear

        def __call__(self, x, t):
            return jax.vmap(self.net)(x, jnp.broadcast_to(t, x.shape[:1]))

        def log_weight(self, t):
            return jax.vmap(lambda s: self.w(jnp.stack([jnp.cos(s), jnp.sin(s)]))[0])(t)

    data, sd, steps = _ring4(), 1.4, 1500
    model = F(
        jd.NoiseMLP(2, 64, 2, key=jax.random.PRNGKey(0)),
        eqx.nn.Linear(2, 1, key=jax.random.PRNGKey(1)),
    )

    def loss(m, x0, key, step):
        return scm_loss(
            m, x0, key, sd, adaptive_weight=m.log_weight,
            warmup_ratio=jnp.minimum(step / (steps // 10), 1.0),
        )  # fmt: skip

    trained = _train(loss, model, data, steps, with_step=True)
    grid = jnp.array([80.0, sd * np.tan(1.1), 0.0])

    def two_steps(m):
        sampler = ConsistencySampler(sigma_min=0.0)
        return lambda x: jd.sample(
            from_trigflow(m, sd), x, grid, sampler, key=jax.random.PRNGKey(3)
        )

    sct, untrained = _distances(data, [two_steps(trained), two_steps(model)])
    assert sct < 0.3 * untrained, (sct, untrained)


def test_positional_embedding_is_sinusoidal_with_a_bounded_time_derivative(x64):
    """sCM's stable time conditioning: fixed frequencies 10000^(-k/h) <= 1, so the embedding's
    derivative in t has norm sqrt(sum_k f_k^2) <= sqrt(h) for every t; a Fourier embedding of
    scale 16 (EDM's) has derivatives two orders larger."""
    from jaxsolve.diffusion import FourierEmbedding, NoiseMLP, PositionalEmbedding

    emb = PositionalEmbedding(8)
    fourier = FourierEmbedding(8, scale=16.0, key=jax.random.PRNGKey(0))
    net = NoiseMLP(2, 16, 1, 8, embedding="positional", key=jax.random.PRNGKey(1))
    times = jnp.array([0.0, 0.3, 0.7, 1.5])

    @jax.jit  # one program: eager JAX compiles every operation on its own
    def measured(times):
        values = jax.vmap(emb)(times)
        slopes = jnp.linalg.norm(jax.vmap(jax.jacfwd(emb))(times), axis=1)
        fourier_slopes = jnp.linalg.norm(jax.vmap(jax.jacfwd(fourier))(times), axis=1)
        return values, slopes, fourier_slopes, net(jnp.ones(2), 0.5)

    values, slopes, fourier_slopes, out = measured(times)
    f = 10000.0 ** (-np.arange(4) / 4)
    phase = np.asarray(times)[:, None] * f
    np.testing.assert_allclose(
        values, np.concatenate([np.cos(phase), np.sin(phase)], 1), rtol=1e-15
    )
    np.testing.assert_allclose(slopes, np.sqrt(np.sum(f**2)), rtol=1e-12)
    assert np.all(fourier_slopes > 100 * np.sqrt(np.sum(f**2)))
    assert isinstance(net.embed, PositionalEmbedding) and out.shape == (2,)
    with pytest.raises(ValueError, match="embedding"):
        NoiseMLP(2, embedding="learned", key=jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="dim"):
        PositionalEmbedding(3)


def test_ict_levels_are_drawn_with_the_lognormal_interval_probabilities(x64):
    """The interval index of iCT's level pairs (inverse-CDF draws) has ict_level_probabilities'
    law: 200 000 draws at 3 stages of the curriculum, every count within 5 standard deviations of
    its expectation, only intervals of the active grid, and adjacent levels."""
    from jaxsolve.diffusion.fewstep._training import _karras_levels, _levels

    n = 200_000
    for progress in (0.0, 0.4, 1.0):
        num_levels = int(ict_num_levels(progress))
        grid = np.asarray(_karras_levels(num_levels, 1281, SIGMA_MIN, 80.0, 7.0))
        probs = np.asarray(ict_level_probabilities(jnp.asarray(grid), num_levels))
        hi, lo = _levels(
            jax.random.PRNGKey(int(10 * progress)), n, jnp.float64, "ict", progress,
            SIGMA_MIN, 80.0, 7.0, -1.1, 2.0, 10, 1280, {},
        )  # fmt: skip
        index = np.searchsorted(grid[:num_levels], np.asarray(lo))
        np.testing.assert_array_equal(grid[index], lo)
        np.testing.assert_array_equal(grid[index + 1], hi)
        assert index.max() <= num_levels - 2
        counts = np.bincount(index, minlength=probs.shape[0])
        sd = np.sqrt(n * probs * (1 - probs))
        assert np.all(np.abs(counts - n * probs) <= 5 * sd + 1e-9), progress
