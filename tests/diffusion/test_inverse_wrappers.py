"""RePaint and SVDD: solver wrappers on the one sampling driver, checked against exact oracles."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture
from jaxsolve.diffusion.inverse import (
    SVDD,
    Dense,
    Mask,
    Measurement,
    RePaint,
    WeightedSVDD,
    effective_sample_size,
    repaint_sigmas,
    weighted_sample,
)

# ----------------------------------------------------------------------------------------------
# RePaint: the grid builder
# ----------------------------------------------------------------------------------------------


def test_repaint_sigmas_is_the_papers_time_travel_schedule():
    # Levels 7..1 (t = 6..0 from the bottom), L = 2: jump points t = 0, 2, 4 (sigma 1, 3, 5),
    # each climbed back 2 levels, jump_n_sample - 1 = 2 times. Written out by hand.
    grid = np.asarray(repaint_sigmas(np.arange(7.0, -1.0, -1.0), jump_length=2, jump_n_sample=3))
    expected = [7, 6, 5, 6, 7, 6, 5, 6, 7, 6, 5, 4, 3, 4, 5, 4, 3, 4, 5, 4, 3, 2, 1, 2, 3, 2, 1,
                2, 3, 2, 1, 0]  # fmt: skip
    np.testing.assert_array_equal(grid, expected)


@pytest.mark.parametrize("n, L, J", [(25, 10, 10), (30, 3, 2), (12, 1, 4), (9, 8, 3)])
def test_repaint_sigmas_structure(n, L, J):
    base = np.concatenate([np.geomspace(10.0, 0.01, n), [0.0]]).astype(np.float32)
    grid = np.asarray(repaint_sigmas(base, L, J))
    assert grid[0] == base[0] and grid[-1] == 0 and np.all(grid[:-1] > 0)
    assert set(grid[:-1]) == set(base[:-1])  # only the grid's own levels
    level = {s: i for i, s in enumerate(base)}
    idx = np.array([level[s] for s in grid])
    steps = -np.diff(idx)  # +1: one level up, -1: one level down
    assert set(steps) <= {-1, 1}
    # Jump points: levels t = 0, L, 2L, ... from the bottom with L levels above them.
    jump_points = len(range(0, n - 1 - L + 1, L))
    assert np.sum(steps == 1) == L * (J - 1) * jump_points
    # Every upward run climbs exactly L levels and starts at a jump point.
    runs = np.split(steps, np.nonzero(np.diff(steps))[0] + 1)
    starts = np.cumsum([0] + [len(r) for r in runs[:-1]])
    for run, start in zip(runs, starts, strict=True):
        if run[0] == 1:
            assert len(run) % L == 0
            assert (n - 1 - idx[start]) % L == 0
    np.testing.assert_array_equal(repaint_sigmas(base, L, 1), base)  # no resampling
    padded = np.asarray(repaint_sigmas(base, L, J, max_steps=len(grid) + 4))
    np.testing.assert_array_equal(padded, np.concatenate([grid, np.zeros(5)]))


def test_repaint_sigmas_errors():
    base = np.concatenate([np.geomspace(10.0, 0.01, 10), [0.0]])
    with pytest.raises(ValueError, match="strictly decreasing"):
        repaint_sigmas(repaint_sigmas(base, 2, 3), 2, 3)  # already has jumps
    with pytest.raises(ValueError, match="strictly decreasing"):
        repaint_sigmas(np.array([1.0, 2.0, 0.5, 0.0]), 1, 2)
    with pytest.raises(ValueError, match="end in 0"):
        repaint_sigmas(np.array([2.0, 1.0]), 1, 2)
    with pytest.raises(ValueError, match="jump_length"):
        repaint_sigmas(base, 0, 2)
    with pytest.raises(TypeError, match="jump_length"):
        repaint_sigmas(base, 1.5, 2)
    with pytest.raises(ValueError, match="jump_n_sample"):
        repaint_sigmas(base, 2, 0)
    with pytest.raises(ValueError, match="jump_length=10 climbs above"):
        repaint_sigmas(base, 10, 2)
    with pytest.raises(ValueError, match="max_steps"):
        repaint_sigmas(base, 2, 3, max_steps=10)
    with pytest.raises(TypeError, match="concrete"):
        jax.jit(lambda s: repaint_sigmas(s, 2, 3))(base)
    # A grid with jumps is RePaint's (or Restart's): a plain solver refuses it.
    with pytest.raises(ValueError, match="strictly decreasing"):
        jd.sample(Gaussian(np.zeros(2), np.eye(2)), np.zeros((1, 2)), repaint_sigmas(base, 2, 3),
                  jd.Euler())  # fmt: skip


def test_repaint_refusals():
    meas = Measurement(Mask(np.array([1.0, 0.0])), np.array([1.0, 0.0]))
    with pytest.raises(TypeError, match="Measurement"):
        RePaint(jd.Euler(), np.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="adaptive"):
        RePaint(jd.DPMAdaptive(), meas)
    with pytest.raises(ValueError, match="grids that go up"):
        RePaint(jd.Restart(), meas)
    with pytest.raises(TypeError, match="AbstractSolver"):
        RePaint(lambda x: x, meas)
    solver = RePaint(jd.Euler(), meas)
    assert solver.stochastic and solver.allows_increasing_grid  # the replacement draws noise


# ----------------------------------------------------------------------------------------------
# RePaint: the mechanics, exactly (float64)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["mask", pytest.param("dense", marks=pytest.mark.slow)])
def test_repaint_replacement_and_jumps_are_exact(x64, operator):
    """With recorded noise z_i (noise=) and Euler inside: a downward step is Euler's step
    followed by the projection, so A x_{i+1} = y + s_{i+1} A z_i and the part A cannot see is
    Euler's; an upward step is x_{i+1} = x_i + sqrt(s_{i+1}^2 - s_i^2) z_i; the sample has
    A x = y. The jumps cost no evaluation."""
    d, n = 2, 5
    A = Mask(np.array([1.0, 0.0])) if operator == "mask" else Dense(np.array([[0.6, 0.8]]))
    y = A(np.array([1.3, -0.4]))
    null = np.eye(d) - np.asarray(A.matrix()).T @ np.asarray(A.matrix())  # I - A^+ A (|rows| = 1)
    prior = Gaussian(np.array([0.3, -0.5]), np.array([[1.0, 0.8], [0.8, 1.5]]))
    grid = repaint_sigmas(np.append(np.geomspace(5.0, 0.05, 6), 0.0), 2, 3)
    base = jax.random.PRNGKey(3)

    def noise(i, k):
        return jax.random.normal(jax.random.fold_in(jax.random.fold_in(base, i), k), (n, d))

    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (n, d))
    sol = jd.sample(prior, x, grid, RePaint(jd.Euler(), Measurement(A, y)), noise=noise,
                    full_output=True, save_trajectory=True)  # fmt: skip
    path, s = np.asarray(sol.trajectory), np.asarray(grid)
    k = len(s) - 2  # the steps before the final one
    z = np.asarray(jax.vmap(lambda i: noise(i, 0))(jnp.arange(k)))
    before, after, sigma, sigma_next = path[:k], path[1 : k + 1], s[:k, None], s[1 : k + 1, None]
    up = s[1 : k + 1] > s[:k]
    ups, downs = int(up.sum()), int((~up).sum())
    # Upward: the forward jump.
    jumped = before + np.sqrt(np.maximum(sigma_next**2 - sigma**2, 0.0))[..., None] * z
    np.testing.assert_allclose(after[up], jumped[up], rtol=0, atol=1e-12)
    # Downward: what A sees is the measurement noised to the new level ...
    np.testing.assert_allclose(
        np.asarray(A(after))[~up], np.asarray(y + sigma_next[..., None] * A(z))[~up], atol=1e-12
    )
    # ... and the rest is Euler's step.
    denoised = np.asarray(prior.denoise(before, np.broadcast_to(sigma, (k, n))))
    euler = before + ((sigma_next - sigma) / sigma)[..., None] * (before - denoised)
    np.testing.assert_allclose((after @ null)[~up], (euler @ null)[~up], rtol=0, atol=1e-12)
    assert ups > 0 and downs > 0
    np.testing.assert_allclose(A(sol.value), np.broadcast_to(y, (n, *y.shape)), rtol=0, atol=1e-12)
    if operator == "mask":
        assert np.all(np.asarray(sol.value)[:, 0] == np.asarray(y)[0])  # exactly y where observed
    assert int(sol.nfe) == downs + 1


@pytest.mark.slow
def test_repaint_on_independent_coordinates_is_the_inner_solver(x64):
    # A prior under which the observed coordinate says nothing about the other: RePaint's
    # unobserved coordinate is exactly the unconditional solver's (deterministic DDIM = Euler).
    prior = Gaussian(np.array([0.3, -0.5]), np.array([1.0, 1.5]))
    meas = Measurement(Mask(np.array([1.0, 0.0])), np.array([1.5, 0.0]))
    grid = jd.karras_sigmas(8, 0.01, 10.0)
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (16, 2))
    plain = np.asarray(jd.sample(prior, x, grid, jd.DDIM()))
    repaint = np.asarray(
        jd.sample(prior, x, grid, RePaint(jd.DDIM(), meas), key=jax.random.PRNGKey(1))
    )
    np.testing.assert_allclose(repaint[:, 1], plain[:, 1], rtol=1e-12, atol=1e-12)
    assert np.all(repaint[:, 0] == 1.5)


def _conditional(mu, S, y0):
    """Exact posterior of x[1] given x[0] = y0 for a 2-D Gaussian (textbook conditioning)."""
    return mu[1] + S[1, 0] / S[0, 0] * (y0 - mu[0]), S[1, 1] - S[1, 0] ** 2 / S[0, 0]


def _gaussian_w2(samples, mean, var):
    """2-Wasserstein distance between the Gaussian with the samples' mean and variance and
    N(mean, var) (1-D)."""
    return np.hypot(samples.mean() - mean, samples.std() - np.sqrt(var))


@pytest.mark.parametrize(
    "solver",
    [pytest.param(jd.Euler(), marks=pytest.mark.slow), jd.EulerAncestral()],
    ids=["Euler", "EulerAncestral"],
)
def test_repaint_approaches_gaussian_posterior(x64, solver):
    """Half the coordinates observed (d = 2), noiseless y: the exact posterior of x[1] is the
    conditional Gaussian. Without resampling RePaint barely conditions (its known failure:
    mean error 0.62 / 0.53 for Euler / EulerAncestral on this 20-level grid, measured with 4000
    samples); with jump_length 2, jump_n_sample 10 it is 0.19 / 0.12 (and the Gaussian W2 0.19 /
    0.16). With 400 samples the Monte-Carlo error of a mean is 0.046 (sd 0.93 / 20), so the
    bounds below hold 3 standard errors above the measured values. A noisy measurement
    (noise_std > 0) runs too and is treated as exact (documented): y is copied into the sample."""
    mu, S = np.array([0.3, -0.5]), np.array([[1.0, 0.8], [0.8, 1.5]])
    y = np.array([1.5, 0.0])
    post_mean, post_var = _conditional(mu, S, y[0])  # 0.46, 0.86 (prior: -0.5, 1.5)
    meas = Measurement(Mask(np.array([1.0, 0.0])), y)
    base = jd.karras_sigmas(20, 0.01, 10.0)
    long = repaint_sigmas(base, 2, 10)
    n = 400
    x = base[0] * jax.random.normal(jax.random.PRNGKey(0), (n, 2))
    prior = Gaussian(mu, S)
    results = {}
    for J in (1, 10):
        # Padded to one length: both grids run in one compiled program.
        grid = repaint_sigmas(base, 2, J, max_steps=long.shape[0] - 1)
        out = np.asarray(
            jd.sample(prior, x, grid, RePaint(solver, meas), key=jax.random.PRNGKey(1))
        )
        assert np.all(out[:, 0] == y[0])  # observed coordinate: y exactly
        results[J] = out[:, 1]
    se = np.sqrt(post_var / n)
    err1 = abs(results[1].mean() - post_mean)
    err10 = abs(results[10].mean() - post_mean)
    assert err1 > 0.4  # RePaint without resampling: far from the posterior
    assert err10 < 0.19 + 3 * se
    assert err10 < err1 - 6 * se  # resampling helps, well beyond the Monte-Carlo error
    w1 = _gaussian_w2(results[1], post_mean, post_var)
    w10 = _gaussian_w2(results[10], post_mean, post_var)
    assert w10 < w1 - 6 * se
    noisy = Measurement(Mask(np.array([1.0, 0.0])), y, noise_std=0.3)  # same program
    out = np.asarray(jd.sample(prior, x, grid, RePaint(solver, noisy), key=jax.random.PRNGKey(1)))
    assert np.all(np.isfinite(out)) and np.all(out[:, 0] == y[0])


@pytest.mark.slow
@pytest.mark.parametrize(
    "solver", [jd.Euler(), jd.EulerAncestral()], ids=["Euler", "EulerAncestral"]
)
def test_repaint_gaussian_posterior_fine_grid(x64, solver):
    """The paper's setting (jump_length 10, jump_n_sample 10) on 200 levels, 4000 samples
    (Monte-Carlo error of the mean 0.015): measured mean errors 0.65 / 0.52 without resampling and
    0.165 / 0.081 with it (Euler / EulerAncestral); variance errors 0.022 / 0.014 with it."""
    mu, S = np.array([0.3, -0.5]), np.array([[1.0, 0.8], [0.8, 1.5]])
    y = np.array([1.5, 0.0])
    post_mean, post_var = _conditional(mu, S, y[0])
    meas = Measurement(Mask(np.array([1.0, 0.0])), y)
    base = jd.karras_sigmas(200, 0.002, 80.0)
    n = 4000
    x = base[0] * jax.random.normal(jax.random.PRNGKey(1), (n, 2))
    se = np.sqrt(post_var / n)
    errors = {}
    for J in (1, 10):
        out = np.asarray(jd.sample(Gaussian(mu, S), x, repaint_sigmas(base, 10, J),
                                   RePaint(solver, meas), key=jax.random.PRNGKey(2)))  # fmt: skip
        assert np.all(out[:, 0] == y[0])
        errors[J] = abs(out[:, 1].mean() - post_mean), abs(out[:, 1].var() - post_var)
    assert errors[1][0] > 0.4
    assert errors[10][0] < 0.165 + 4 * se
    assert errors[10][1] < 0.1
    assert errors[10][0] < errors[1][0] - 10 * se


# ----------------------------------------------------------------------------------------------
# SVDD
# ----------------------------------------------------------------------------------------------


def _region_prior():
    return GaussianMixture(
        np.array([0.6, 0.4]),
        np.array([[-1.0, 0.0], [1.0, 1.0]]),
        np.array([[[0.5, 0.2], [0.2, 0.5]], [[0.3, -0.1], [-0.1, 0.6]]]),
    )


def _in_region(x0):
    """Log-density of the region x[0] > 1 (up to a constant): 0 inside, -inf outside."""
    return jnp.where(x0[..., 0] > 1.0, 0.0, -jnp.inf)


def test_svdd_refusals():
    with pytest.raises(ValueError, match="deterministic"):
        SVDD(jd.Euler(), _in_region)
    with pytest.raises(ValueError, match="deterministic"):
        SVDD(jd.DDIM(), _in_region)  # eta = 0
    with pytest.raises(ValueError, match="deterministic"):
        SVDD(jd.EulerAncestral(eta=0.0), _in_region)
    with pytest.raises(ValueError, match="adaptive"):
        SVDD(jd.DPMAdaptive(), _in_region)
    with pytest.raises(ValueError, match="num_particles"):
        SVDD(jd.EulerAncestral(), _in_region, num_particles=0)
    with pytest.raises(TypeError, match="num_particles"):
        SVDD(jd.EulerAncestral(), _in_region, num_particles=2.5)
    with pytest.raises(ValueError, match="temperature"):
        SVDD(jd.EulerAncestral(), _in_region, temperature=-1.0)
    with pytest.raises(TypeError, match="reward"):
        SVDD(jd.EulerAncestral(), 3.0)
    assert SVDD(jd.EulerAncestral(), _in_region).stochastic


@pytest.mark.slow
def test_svdd_reward_must_return_one_value_per_sample():
    grid = jd.karras_sigmas(3, 0.1, 5.0)
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (4, 2))
    with pytest.raises(ValueError, match="one value per sample"):
        jd.sample(_region_prior(), x, grid, SVDD(jd.EulerAncestral(), lambda x0: x0.sum()),
                  key=jax.random.PRNGKey(1))  # fmt: skip


def test_svdd_region_fraction_rises_with_particles():
    """Reward: the log-density of the region x[0] > 1 (prior mass 0.201). The fraction of samples
    inside rises with the number of particles: on this 20-step grid (EulerAncestral) measured
    0.145, 0.357, 0.515 for M = 1, 4, 16 with 10 000 samples (Monte-Carlo error <= 0.005; M = 1 is
    the inner sampler's own fraction, below the prior mass from its discretisation). Here one
    compiled run, M = 16 with 300 samples (error <= 0.029), against the recorded M = 1 fraction;
    the slow test below runs all three. Each step costs one shared evaluation plus M values."""
    M, steps, n = 16, 20, 300
    grid = jd.karras_sigmas(steps, 0.002, 80.0)
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (n, 2))
    solver = SVDD(jd.EulerAncestral(), _in_region, M)
    sol = jd.sample(_region_prior(), x, grid, solver, key=jax.random.PRNGKey(1), full_output=True)
    fraction = float(np.mean(np.asarray(sol.value)[:, 0] > 1.0))
    se = np.sqrt(0.25 / n)
    assert fraction > 0.145 + 0.005 + 8 * se  # 0.38: far above one particle's
    assert abs(fraction - 0.515) < 4 * se
    assert int(sol.nfe) == (steps - 1) * (1 + M) + 1


@pytest.mark.slow
def test_svdd_region_fraction_rises_with_particles_each_m():
    """The measurement above, all three M on 2000 samples (errors <= 0.011): each rise must
    exceed 4 errors of a difference."""
    steps, n = 20, 2000
    grid = jd.karras_sigmas(steps, 0.002, 80.0)
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (n, 2))
    fractions = []
    for M in (1, 4, 16):
        out = jd.sample(_region_prior(), x, grid, SVDD(jd.EulerAncestral(), _in_region, M),
                        key=jax.random.PRNGKey(1))  # fmt: skip
        fractions.append(float(np.mean(np.asarray(out)[:, 0] > 1.0)))
    diff_se = np.sqrt(2 * 0.25 / n)
    assert fractions[0] + 4 * diff_se < fractions[1] < fractions[2] - 4 * diff_se
    np.testing.assert_allclose(fractions, [0.145, 0.357, 0.515], atol=4 * np.sqrt(0.25 / n))


class _SignReward(eqx.Module):
    """``inside`` where x0[0] > 0, ``outside`` elsewhere (arrays: one program for every value)."""

    inside: jax.Array
    outside: jax.Array

    def __call__(self, x0):
        return jnp.where(x0[..., 0] > 0, self.inside, self.outside)


def _identity_denoiser(x, sigma):
    return x


def test_svdd_selects_with_softmax_of_value_over_temperature():
    """One step from x = 0 with the denoiser x0_hat = x: EulerAncestral's two candidates are
    x + s z_j, each positive with probability 1/2, and their values r(x_j). With r = 0 / -log 3
    (positive / not) the kept one is positive with probability 1/4 + 1/2 * p, p the chance of
    keeping the positive one of a mixed pair: softmax gives p = 3/4 at temperature 1 (so 5/8),
    argmax p = 1 at temperature 0 (3/4); all values -inf: uniform (1/2). 2000 samples: error at
    most 0.011; tolerance 4 of those."""
    n = 2000
    grid = jnp.array([1.0, 0.5, 0.0])
    x = jnp.zeros((n, 2))
    cases = [
        (0.0, -np.log(3.0), 0.0, 0.75),
        (0.0, -np.log(3.0), 1.0, 0.625),
        (-np.inf, -np.inf, 1.0, 0.5),
    ]
    for inside, outside, temperature, expected in cases:
        # Arrays of one dtype (no weak types): the three cases share one compiled program.
        reward = _SignReward(jnp.asarray(np.float32(inside)), jnp.asarray(np.float32(outside)))
        solver = SVDD(jd.EulerAncestral(), reward, 2, jnp.asarray(np.float32(temperature)))
        out = jd.sample(_identity_denoiser, x, grid, solver, key=jax.random.PRNGKey(4))
        positive = float(np.mean(np.asarray(out)[:, 0] > 0))
        assert abs(positive - expected) < 4 * np.sqrt(0.25 / n), (temperature, positive, expected)


@pytest.mark.slow
@pytest.mark.parametrize(
    "inner, per_step",
    [
        # One call on the step's own input, shared by the candidates, plus M values.
        (jd.EulerAncestral(), lambda M: 1 + M),
        # The step's input is shared as well (its history follows the kept candidate).
        (jd.DPMSolverPPSDE(), lambda M: 1 + M),
        # Churn first: both Heun calls see the candidate's noise, so 2 per candidate, plus M.
        (jd.EDMStochastic(churn=10.0, solver=jd.Heun()), lambda M: 3 * M),
    ],
    ids=["EulerAncestral", "DPMSolverPPSDE", "EDMStochastic"],
)
def test_svdd_nfe_and_batch_size_independence(x64, inner, per_step):
    M, steps = 4, 6
    grid = jd.karras_sigmas(steps, 0.05, 10.0)
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (6, 2))
    solver = SVDD(inner, _in_region, M)
    sol = jd.sample(_region_prior(), x, grid, solver, key=jax.random.PRNGKey(1), full_output=True)
    # Every step but the last (the inner solver's final step: one denoiser call).
    assert int(sol.nfe) == (steps - 1) * per_step(M) + 1
    part = jd.sample(_region_prior(), x[:3], grid, solver, key=jax.random.PRNGKey(1))
    np.testing.assert_allclose(part, sol.value[:3], rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_svdd_constant_reward_keeps_the_inner_solvers_distribution(x64):
    # A constant reward leaves every candidate equally likely: the kept one is then an ordinary
    # sample of the inner solver (checked on its mean).
    grid = jd.karras_sigmas(4, 0.05, 5.0)
    prior = Gaussian(np.array([1.0, -1.0]), np.array([0.5, 0.5]))
    n = 400
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(0), (n, 2))
    flat = SVDD(jd.EulerAncestral(), lambda x0: jnp.zeros(x0.shape[:1]), 8, 1.0)
    out = np.asarray(jd.sample(prior, x, grid, flat, key=jax.random.PRNGKey(1)))
    plain = np.asarray(jd.sample(prior, x, grid, jd.EulerAncestral(), key=jax.random.PRNGKey(1)))
    # Same distribution: means agree within the Monte-Carlo error of two independent means.
    se = np.sqrt((out.var(0) + plain.var(0)) / n)
    assert np.all(np.abs(out.mean(0) - plain.mean(0)) < 4 * se)


@functools.cache
def _restricted_prior_moments():
    """Moments of 2 000 000 rejection samples of the prior restricted to x[0] > 1, with the
    standard deviations of the quantities averaged (for Monte-Carlo errors), and the mass."""
    ref = np.asarray(_region_prior().sample(jax.random.PRNGKey(9), 2_000_000))
    inside = ref[ref[:, 0] > 1.0]
    return (*_moments(inside), len(inside) / len(ref))


def _moments(points):
    """Mean, (var x0, cov, var x1), and the standard deviations of what each one averages."""
    centred = points - points.mean(0)
    products = np.stack([centred[:, 0] ** 2, centred[:, 0] * centred[:, 1], centred[:, 1] ** 2], 1)
    return points.mean(0), products.mean(0), points.std(0), products.std(0)


@functools.cache
def _svdd_inside_region(M):
    """200 EulerAncestral steps (its own error is then within the Monte-Carlo error), 20 000
    samples: (fraction inside, z-scores of the mean and of (var x0, cov, var x1) inside against
    the restricted prior)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        ref_mean, ref_cov, ref_sd, ref_cov_sd, _ = _restricted_prior_moments()
        grid = jd.karras_sigmas(200, 0.002, 80.0)
        n = 20000
        x = grid[0] * jax.random.normal(jax.random.PRNGKey(1), (n, 2))
        solver = SVDD(jd.EulerAncestral(), _in_region, M)
        out = np.asarray(jd.sample(_region_prior(), x, grid, solver, key=jax.random.PRNGKey(2)))
    finally:
        jax.config.update("jax_enable_x64", previous)
    inside = out[out[:, 0] > 1.0]
    mean, cov, _, _ = _moments(inside)
    k = len(inside)
    return (
        k / n,
        (mean - ref_mean) / (ref_sd / np.sqrt(k)),
        (cov - ref_cov) / (ref_cov_sd / np.sqrt(k)),
    )


@pytest.mark.slow
def test_svdd_restricted_prior_fine_grid():
    """Against the oracle's prior restricted to x[0] > 1 (mass 0.201). Measured fractions inside:
    0.202 / 0.392 / 0.432 for M = 1 / 4 / 16. One particle (the inner sampler alone) matches the
    restricted prior in every moment (|z| < 2); with more particles x[1]'s mean and the
    covariance of x[0] with x[1] still do, but x[1]'s variance is low by 6% (z = -3.9 / -4.1 for
    M = 4 / 16) and, for M = 16, x[0]'s mean is 0.025 too deep into the region (z = 6.9): recorded
    below; WeightedSVDD removes it."""
    fractions = []
    for M in (1, 4, 16):
        fraction, z_mean, z_cov = _svdd_inside_region(M)
        fractions.append(fraction)
        if M == 1:
            np.testing.assert_array_less(np.abs(z_mean), 4)
            np.testing.assert_array_less(np.abs(z_cov), 4)
        assert abs(z_mean[1]) < 4 and abs(z_cov[1]) < 4
    *_, mass = _restricted_prior_moments()  # computed in float64 by the first run above
    se = np.sqrt(0.25 / 20000)
    assert abs(fractions[0] - mass) < 4 * se
    assert fractions[0] + 10 * se < fractions[1] < fractions[2] - 4 * se


@pytest.mark.slow
def test_unweighted_svdd_pm_is_biased_inside_the_region():
    """The record of SVDD-PM's bias (the samples it keeps are not weighted): with 16 particles the
    mean of x[0] inside sits too deep in the region (z = 6.9) and x[1]'s variance is too low
    (z = -4.1), although the inner sampler alone is, if anything, too shallow (see the weighted
    tests below, which remove the bias)."""
    _, z_mean, z_cov = _svdd_inside_region(16)
    assert z_mean[0] > 4 and z_cov[2] < -3


def _exact_region_value(x, s):
    """The exact soft value of the region reward at temperature 1, log P(x0[0] > 1 | x_s = x), for
    the region prior: its posterior given x_s is a mixture of Gaussians (responsibilities times
    each component's conditional)."""
    prior = _region_prior()
    covs = jnp.einsum("kij,kj,klj->kil", prior.eigvecs, prior.eigvals, prior.eigvecs)

    def component(m, c):
        gain = c @ jnp.linalg.inv(c + s**2 * jnp.eye(2))
        mean = m + (x - m) @ gain.T
        return jax.scipy.stats.norm.logcdf((mean[:, 0] - 1.0) / jnp.sqrt((c - gain @ c)[0, 0]))

    log_p = jax.vmap(component, out_axes=-1)(prior.means, covs)
    return jax.nn.logsumexp(jnp.log(prior.responsibilities(x, s)) + log_p, axis=-1)


@pytest.mark.slow
def test_svdd_with_the_exact_soft_value_reaches_the_region_and_its_bias_shrinks_with_m(x64):
    """With the exact soft value (temperature 1, target = the prior restricted to the region) the
    value approximation is gone: almost every sample lands inside (measured 0.949 / 0.995 for
    M = 4 / 16, against 0.39 / 0.43 with SVDD-PM), and what is left is the finite-M bias of
    importance resampling without weights (the mean of x[0] inside sits too near the boundary:
    1.352 / 1.400 against 1.436), which shrinks as M grows (and which WeightedSVDD's weights
    remove at every M)."""
    ref_mean, *_ = _restricted_prior_moments()
    grid = jd.karras_sigmas(200, 0.002, 80.0)
    n = 20000
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(1), (n, 2))
    errors = []
    for M, min_fraction in ((4, 0.93), (16, 0.99)):
        solver = SVDD(jd.EulerAncestral(), None, M, 1.0, value=_exact_region_value)
        out = np.asarray(jd.sample(_region_prior(), x, grid, solver, key=jax.random.PRNGKey(2)))
        inside = out[out[:, 0] > 1.0]
        assert len(inside) / n > min_fraction
        errors.append(abs(inside[:, 0].mean() - ref_mean[0]))
    assert errors[1] < 0.6 * errors[0]
    with pytest.raises(ValueError, match="exactly one"):
        SVDD(jd.EulerAncestral(), _in_region, 4, 1.0, value=_exact_region_value)


# ----------------------------------------------------------------------------------------------
# WeightedSVDD: the same candidates, with importance weights
# ----------------------------------------------------------------------------------------------


def test_weighted_svdd_refusals():
    with pytest.raises(ValueError, match="deterministic"):
        WeightedSVDD(jd.Euler(), _in_region)
    with pytest.raises(ValueError, match="adaptive"):
        WeightedSVDD(jd.DPMAdaptive(), _in_region)
    with pytest.raises(ValueError, match="temperature"):
        WeightedSVDD(jd.EulerAncestral(), _in_region, temperature=0.0)  # no argmax: no weights
    with pytest.raises(TypeError, match="reward"):
        WeightedSVDD(jd.EulerAncestral(), None)
    with pytest.raises(TypeError, match="value"):
        WeightedSVDD(jd.EulerAncestral(), _in_region, value=3.0)
    with pytest.raises(ValueError, match="min_value"):
        WeightedSVDD(jd.EulerAncestral(), _in_region, min_value=-np.inf)
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="resample_ess"):
            WeightedSVDD(jd.EulerAncestral(), _in_region, resample_ess=bad)
    with pytest.raises(ValueError, match="resampling"):
        WeightedSVDD(jd.EulerAncestral(), _in_region, resampling="residual")
    with pytest.raises(TypeError, match="WeightedSVDD"):
        weighted_sample(_identity_denoiser, jnp.zeros((2, 2)), jnp.array([1.0, 0.0]),
                        SVDD(jd.EulerAncestral(), _in_region), key=jax.random.PRNGKey(0))  # fmt: skip
    # The log-weights are per sample: a solver built for one batch axis refuses two.
    with pytest.raises(ValueError, match="batch_ndim"):
        weighted_sample(_identity_denoiser, jnp.zeros((2, 3, 2)), jnp.array([1.0, 0.5, 0.0]),
                        WeightedSVDD(jd.EulerAncestral(), _in_region),
                        key=jax.random.PRNGKey(0), batch_ndim=2)  # fmt: skip


class _SignValue(_SignReward):
    """The same, as a value function of (x, sigma)."""

    def __call__(self, x, sigma):
        return jnp.where(x[..., 0] > 0, self.inside, self.outside)


def test_weighted_svdd_weights_are_exact_for_any_value_and_resampling():
    """The closed form of the softmax test above: one step from x = 0 (two candidates x_j = s z_j,
    the final step x0 = x), reward r = 0 / -log 3 for x0[0] > 0 / not, temperature 1. The target
    p(x0) e^r / Z puts 3/4 of its mass on x0[0] > 0, and the weighted fraction must be 3/4 whatever
    the value: the reward itself (SVDD-PM's, exact here), or the opposite one (every candidate's
    choice wrong-way round: the unweighted fraction falls to 1/4 + 1/2 * 1/4 = 3/8). Resampling
    (systematic, after the step, ESS threshold 1: always) keeps it at 3/4. Tolerances: 4 standard
    errors of the self-normalised estimate, sqrt(p(1-p)/ESS); after resampling, p(1-p) (1/ESS
    entering it + 1/ESS of the final weights), the first that of the same run without resampling
    (same draws, same weights)."""
    n = 2000
    grid = jnp.array([1.0, 0.5, 0.0])
    x = jnp.zeros((n, 2))
    zero, low = jnp.asarray(np.float32(0.0)), jnp.asarray(np.float32(-np.log(3.0)))
    reward = _SignReward(zero, low)
    ess_before = {}
    for value, resample_ess in [
        (_SignValue(zero, low), 1e-6),  # the reward's own value; the threshold is never met
        (_SignValue(low, zero), 1e-6),  # the opposite value
        (_SignValue(low, zero), 1.0),  # the opposite value, resampled
    ]:
        # Arrays of one dtype as data: the three cases share one compiled program.
        solver = WeightedSVDD(jd.EulerAncestral(), reward, 2, jnp.asarray(np.float32(1.0)),
                              value=value, resample_ess=jnp.asarray(np.float32(resample_ess)))  # fmt: skip
        out, log_w = weighted_sample(_identity_denoiser, x, grid, solver, key=jax.random.PRNGKey(4))
        w = np.exp(np.asarray(log_w, np.float64) - float(np.max(log_w)))
        positive = np.asarray(out)[:, 0] > 0
        fraction = float(np.sum(w * positive) / np.sum(w))
        ess = float(effective_sample_size(log_w))
        var = 0.75 * 0.25 / ess
        if resample_ess == 1.0:
            # Resampled: equal weights times the final correction e^{r(x0) - v(x)}, 9 : 1.
            np.testing.assert_allclose(w, np.where(positive, 1.0, 1 / 9), rtol=1e-5)
            var = 0.75 * 0.25 * (1 / ess_before[float(value.inside)] + 1 / ess)
        else:
            ess_before[float(value.inside)] = ess
        if float(value.inside) < 0:
            assert abs(np.mean(positive) - 0.375) < 4 * np.sqrt(0.25 / n) or resample_ess == 1.0
        assert abs(fraction - 0.75) < 4 * np.sqrt(var), (resample_ess, fraction, ess)
    # A value of -inf everywhere kills every sample: an error, not a batch of zero weights.
    never = jnp.asarray(np.float32(-np.inf))
    solver = WeightedSVDD(jd.EulerAncestral(), reward, 2, jnp.asarray(np.float32(1.0)),
                          value=_SignValue(never, never), resample_ess=jnp.asarray(np.float32(1.0)))  # fmt: skip
    with pytest.raises(Exception, match="every sample has weight 0"):
        weighted_sample(_identity_denoiser, x, grid, solver, key=jax.random.PRNGKey(4))


def _weighted_inside_region(solver, n=20000, steps=100):
    """``weighted_sample`` of the region prior with ``solver`` (float64, a 100-step grid: there the
    inner DPMSolverPPSDE's own error is within the Monte-Carlo error), and against the restricted
    prior: the fraction of samples inside, the ESS, and z-scores of the weighted mean and of
    (var x0, cov, var x1), each with the standard error of an average of ESS samples."""
    ref_mean, ref_cov, ref_sd, ref_cov_sd, _ = _restricted_prior_moments()
    grid = jd.karras_sigmas(steps, 0.002, 80.0)
    x = grid[0] * jax.random.normal(jax.random.PRNGKey(1), (n, 2))
    out, log_w = weighted_sample(_region_prior(), x, grid, solver, key=jax.random.PRNGKey(2))
    out, log_w = np.asarray(out), np.asarray(log_w)
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    assert np.all(w[out[:, 0] <= 1.0] == 0)  # weight only inside
    ess = 1 / np.sum(w**2)
    np.testing.assert_allclose(ess, float(effective_sample_size(log_w)), rtol=1e-9)
    mean = w @ out
    c = out - mean
    cov = np.stack([w @ (c[:, 0] ** 2), w @ (c[:, 0] * c[:, 1]), w @ (c[:, 1] ** 2)])
    return (
        np.mean(out[:, 0] > 1.0),
        ess,
        (mean - ref_mean) / (ref_sd / np.sqrt(ess)),
        (cov - ref_cov) / (ref_cov_sd / np.sqrt(ess)),
    )


@pytest.mark.slow
def test_weighted_svdd_with_the_exact_soft_value_is_the_restricted_prior_at_any_m(x64):
    """With the exact soft value, the weighted samples are the prior restricted to x[0] > 1 at
    M = 1 (the weights are then exactly the indicator of the region) and at M = 16, where the
    unweighted sampler keeps the finite-M bias of the test above. Measured: |z| < 1.8 at M = 1 and
    < 1 at M = 16, ESS 4032 and 16 417 of 20 000; the fraction inside rises from the prior mass
    (0.2016) to 0.9925."""
    fractions = []
    for M in (1, 16):
        solver = WeightedSVDD(jd.DPMSolverPPSDE(), _in_region, M, 1.0, value=_exact_region_value)
        fraction, ess, z_mean, z_cov = _weighted_inside_region(solver)
        fractions.append(fraction)
        np.testing.assert_array_less(np.abs(z_mean), 4)
        np.testing.assert_array_less(np.abs(z_cov), 4)
        if M == 1:
            assert ess == pytest.approx(fraction * 20000)  # equal weights inside, zero outside
    *_, mass = _restricted_prior_moments()
    se = np.sqrt(0.25 / 20000)
    assert abs(fractions[0] - mass) < 4 * se
    assert fractions[1] > 0.98


@pytest.mark.slow
def test_weighted_svdd_inside_follows_the_restricted_prior(x64):
    """SVDD-PM's value r(D(x, sigma)) (the default), 16 particles: the weights remove the bias of
    the unweighted sampler (test_unweighted_svdd_pm_is_biased_inside_the_region). Its value is
    -inf wherever the denoised estimate lies outside the region (at large sigma: everywhere),
    which would kill every sample; min_value = -1 floors it. Measured: fraction inside 0.34 by
    count (prior mass 0.20; 0.31 with M = 4), ESS 1049 of 20 000, |z| < 1.6.

    Then with systematic resampling whenever the ESS falls below half the batch: fraction inside
    0.43, |z| < 1.6. A resampled system's Kish ESS (4483) counts the descendants of one ancestor
    as independent; its z-scores use the ESS of the run without resampling instead."""
    *_, mass = _restricted_prior_moments()
    solver = WeightedSVDD(jd.DPMSolverPPSDE(), _in_region, 16, 1.0, min_value=-1.0)
    fraction, ess, z_mean, z_cov = _weighted_inside_region(solver)
    assert ess > 500  # enough for the z-scores to mean something
    assert fraction > mass + 10 * np.sqrt(0.25 / 20000)
    np.testing.assert_array_less(np.abs(z_mean), 4)
    np.testing.assert_array_less(np.abs(z_cov), 4)
    resampled = WeightedSVDD(jd.DPMSolverPPSDE(), _in_region, 16, 1.0, min_value=-1.0,
                             resample_ess=0.5)  # fmt: skip
    fraction_r, ess_r, z_mean, z_cov = _weighted_inside_region(resampled)
    assert fraction_r > fraction
    np.testing.assert_array_less(np.abs(z_mean) * np.sqrt(ess / ess_r), 4)
    np.testing.assert_array_less(np.abs(z_cov) * np.sqrt(ess / ess_r), 4)
