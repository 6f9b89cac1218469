"""Consistency models: boundary condition, multistep sampler and distillation loss, on the exact
consistency function of Gaussian data (the probability-flow map to sigma_min)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.diffusion import EulerAncestral, NoiseMLP, sample
from jaxsolve.diffusion import fewstep as fs
from jaxsolve.diffusion._solvers.runge_kutta import Euler, Heun
from jaxsolve.diffusion.analytic import Gaussian
from jaxsolve.diffusion.fewstep import (
    ConsistencyFunction,
    ConsistencySampler,
    consistency_distillation_loss,
    consistency_scalings,
)

SIGMA_MIN = 0.002
MEAN = np.array([1.0, -0.5])
COV = np.array([[0.5, 0.2], [0.2, 0.3]])


def _gaussian_draws(seed, n, sigma=0.0):
    """n draws of N(MEAN, COV + sigma^2 I), in NumPy (nothing to compile)."""
    chol = np.linalg.cholesky(COV + sigma**2 * np.eye(2))
    return MEAN + np.random.default_rng(seed).normal(size=(n, 2)) @ chol.T


class ExactConsistency(eqx.Module):
    """f(x, s) = the exact probability-flow map from s to sigma_min of a Gaussian."""

    oracle: Gaussian
    sigma_min: float = SIGMA_MIN

    def __call__(self, x, sigma):
        return self.oracle.ode_solution(x, sigma, self.sigma_min)


def test_scalings_closed_form():
    sd, smin = 0.5, 0.002
    s = np.array([smin, 0.1, 1.0, 80.0])
    c_skip, c_out = consistency_scalings(s, smin, sd)
    np.testing.assert_allclose(c_skip, sd**2 / ((s - smin) ** 2 + sd**2), rtol=1e-6)
    np.testing.assert_allclose(c_out, (s - smin) * sd / np.sqrt(sd**2 + s**2), rtol=1e-6)
    assert c_skip[0] == 1.0 and c_out[0] == 0.0


def _tiny_network(dim, seed):
    """A raw network ``(x, c_noise) -> out`` on one sample (cheaper to build than a NoiseMLP)."""
    rng = np.random.default_rng(seed)
    w1, w2 = rng.normal(size=(8, dim)), rng.normal(size=(dim, 8))
    b = rng.normal(size=8)

    def net(x, c):
        return jnp.asarray(w2) @ jnp.tanh(jnp.asarray(w1) @ x + c * jnp.asarray(b))

    return net


def test_boundary_condition_any_network(x64):
    net = _tiny_network(3, 0)
    f = ConsistencyFunction(net, sigma_min=SIGMA_MIN, sigma_data=0.5)
    x = np.random.default_rng(1).normal(size=(5, 3)) * 3.0
    sig = np.array([SIGMA_MIN, 0.5, SIGMA_MIN, 2.0, 10.0])
    s = 2.0
    c_skip, c_out = consistency_scalings(s, SIGMA_MIN, 0.5)

    @jax.jit
    def outputs(x):
        raw = jax.vmap(net)(x / np.sqrt(s**2 + 0.25), jnp.full(5, np.log(s) / 4))
        return f(x, SIGMA_MIN), f(x, sig), f(x, s), c_skip * x + c_out * raw

    at_boundary, out, at_s, expect = outputs(x)
    np.testing.assert_allclose(at_boundary, x, rtol=1e-15, atol=0)
    # per-sample levels: only the samples at sigma_min are left alone
    at_min = np.array([True, False, True, False, False])
    np.testing.assert_allclose(out[at_min], x[at_min], rtol=1e-15, atol=0)
    assert np.all(np.abs(np.asarray(out - x))[~at_min] > 1e-3)
    # away from sigma_min it is c_skip x + c_out F(c_in x, ln(sigma)/4)
    np.testing.assert_allclose(at_s, expect, rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="sigma_min"):
        ConsistencyFunction(net, sigma_min=0.0)


def _assert_gaussian_moments(out, n):
    """Mean and covariance of ``out`` are those of N(MEAN, COV + sigma_min^2 I), within 5 Monte
    Carlo standard errors."""
    target = COV + SIGMA_MIN**2 * np.eye(2)
    se_mean = np.sqrt(np.diag(target) / n)
    np.testing.assert_array_less(np.abs(out.mean(0) - MEAN), 5 * se_mean)
    se_cov = np.sqrt((np.outer(np.diag(target), np.diag(target)) + target**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(out.T) - target), 5 * se_cov)


def test_sampler_is_algorithm_1_and_exact(x64):
    """Through the driver, each level is x0 = f(x, s_i), x = x0 + sqrt(s_{i+1}^2 - s_min^2) z, and
    the last returns f(x, s_last), one evaluation per level. With the exact consistency function
    and the exact prior at sigma_max, the 1-step estimate f(x, sigma_max) and the 2-step sample
    are both N(m, C + sigma_min^2 I) exactly (re-noising by sqrt(s^2 - s_min^2) lands on the
    exact marginal at s): checked by Monte Carlo."""
    g = Gaussian(MEAN, COV)
    f = ExactConsistency(g)
    n = 4000
    grid = jnp.array([80.0, 0.8, 0.0])
    x = _gaussian_draws(4, n, 80.0)
    z = jnp.asarray(np.random.default_rng(5).normal(size=(n, 2)))
    sol = sample(f, x, grid, ConsistencySampler(SIGMA_MIN), noise=lambda i, k: z, full_output=True)
    assert int(sol.nfe) == 2
    one_step = f(x, 80.0)
    by_hand = f(one_step + np.sqrt(0.8**2 - SIGMA_MIN**2) * z, 0.8)
    np.testing.assert_allclose(sol.value, by_hand, rtol=1e-13, atol=1e-13)
    _assert_gaussian_moments(np.asarray(one_step), n)
    _assert_gaussian_moments(np.asarray(sol.value), n)


@pytest.mark.slow
@pytest.mark.parametrize(
    "grid",
    [([80.0, 0.0]), ([80.0, 0.8, 0.0]), ([80.0, 2.0, 0.5, 0.0])],
    ids=["1-step", "2-step", "3-step"],
)
def test_exact_consistency_samples_the_data(x64, grid):
    """With the exact consistency function and the exact prior at sigma_max, few-step samples
    (the driver's own noise) are N(m, C + sigma_min^2 I) exactly (re-noising by sqrt(s^2 - s_min^2) lands on the
    exact marginal at s): checked by Monte Carlo, 5 standard errors."""
    g = Gaussian(MEAN, COV)
    n = 4000
    x = _gaussian_draws(4, n, grid[0])
    f = ExactConsistency(g)
    sol = sample(
        f,
        x,
        jnp.array(grid),
        ConsistencySampler(SIGMA_MIN),
        key=jax.random.key(5),
        full_output=True,
    )
    assert int(sol.nfe) == len(grid) - 1
    out = np.asarray(sol.value)
    if len(grid) == 2:
        np.testing.assert_allclose(out, eqx.filter_jit(f)(x, grid[0]), rtol=1e-14)
    _assert_gaussian_moments(out, n)


def _one_step_gain(solver, lam, s_hi, s_lo):
    """Per eigen-direction y_lo = a y of one Euler / Heun step of the Gaussian's flow
    dy/ds = s y / (lam + s^2)."""
    slope = lambda s: s / (lam + s**2)
    h = s_lo - s_hi
    euler = 1 + h * slope(s_hi)
    if solver == "euler":
        return euler
    return 1 + h * (slope(s_hi) + slope(s_lo) * euler) / 2


def _expected_l2_loss(solver, s_hi, s_lo):
    """E over x_hi ~ N(m, C + s_hi^2 I) of mean_i (f(x_hi, s_hi) - f(x_lo, s_lo))_i^2 with the
    exact consistency function: in the eigenbasis the difference is y * g(lam)."""
    lam = np.linalg.eigvalsh(COV)
    end = np.sqrt(lam + SIGMA_MIN**2)
    gain = end / np.sqrt(lam + s_hi**2) - end * _one_step_gain(solver, lam, s_hi, s_lo) / np.sqrt(
        lam + s_lo**2
    )
    return np.mean(gain**2 * (lam + s_hi**2))


def _exact_losses(solvers_and_gaps, loss_fn=consistency_distillation_loss):
    g = Gaussian(MEAN, COV)
    f = ExactConsistency(g)
    x0 = _gaussian_draws(6, 2000)
    losses = {}
    for name, s_lo in solvers_and_gaps:
        solver = Euler() if name == "euler" else Heun()
        grid = jnp.array([1.0, s_lo, 0.0])
        losses[name, s_lo] = float(
            loss_fn(f, f, g.denoise, x0, jax.random.key(7), grid, solver, metric="l2")
        )
        expect = _expected_l2_loss(name, 1.0, s_lo)
        # a mean of 2000 x 2 weighted chi-square(1) terms: relative s.e. <= sqrt(2 / 2000)
        assert abs(losses[name, s_lo] - expect) < 5 * np.sqrt(2 / 2000) * expect
    return g, x0, losses


def _loss_at_half(student, teacher, x0, solver):
    grid = jnp.array([1.0, 0.5, 0.0])
    loss = consistency_distillation_loss(
        student, student, teacher, x0, jax.random.key(7), grid, solver, metric="l2"
    )
    return float(loss)


def test_distillation_loss_of_exact_student(x64):
    """Exact teacher, exact student: the loss is the solver's one-step error alone, its closed
    form (Monte Carlo over x_hi, 5 standard errors); a student that is the consistency function
    of other data (covariance 3C) is far from it."""
    g, x0, losses = _exact_losses([("euler", 0.5)])
    wrong_student = ExactConsistency(Gaussian(MEAN, 3 * COV))
    wrong = _loss_at_half(wrong_student, g.denoise, x0, Euler())
    assert wrong > 10 * losses["euler", 0.5]


@pytest.mark.slow
def test_distillation_loss_heun_and_gap(x64):
    """Heun's one-step error is below Euler's, and both shrink as the levels get closer (local
    errors O(h^3) and O(h^2)); the same holds under jit (a traced grid ending in 0)."""
    pairs = [(n, s) for n in ("euler", "heun") for s in (0.5, 0.9)]
    g, x0, losses = _exact_losses(pairs)
    assert losses["heun", 0.5] < 0.2 * losses["euler", 0.5]
    assert losses["heun", 0.9] < 0.2 * losses["euler", 0.9]
    assert losses["euler", 0.9] < 0.1 * losses["euler", 0.5]
    assert losses["heun", 0.9] < 0.1 * losses["heun", 0.5]
    _, _, jitted = _exact_losses(pairs[:1], eqx.filter_jit(consistency_distillation_loss))
    np.testing.assert_allclose(jitted["euler", 0.5], losses["euler", 0.5], rtol=1e-12)
    wrong = _loss_at_half(g.denoise, g.denoise, x0, Heun())
    assert wrong > 20 * losses["euler", 0.5]


def test_distillation_loss_checks():
    g = Gaussian(MEAN, COV)
    student = ConsistencyFunction(_tiny_network(2, 0), sigma_min=SIGMA_MIN)
    x0 = np.zeros((4, 2))
    grid = jnp.array([80.0, 1.0, SIGMA_MIN, 0.0])
    with pytest.raises(ValueError, match="metric"):
        consistency_distillation_loss(
            student, student, g.denoise, x0, jax.random.key(0), grid, Heun(), metric="l1"
        )
    with pytest.raises(ValueError, match="stochastic"):
        consistency_distillation_loss(
            student, student, g.denoise, x0, jax.random.key(0), grid, EulerAncestral()
        )
    with pytest.raises(ValueError, match="decreasing"):
        consistency_distillation_loss(
            student, student, g.denoise, x0, jax.random.key(0), jnp.array([1.0, 2.0, 0.0]), Heun()
        )
    with pytest.raises(ValueError, match="level_sampling"):
        consistency_distillation_loss(
            student, student, g.denoise, x0, jax.random.key(0), grid, Heun(), level_sampling="x"
        )


class _Ones(eqx.Module):
    def __call__(self, x, sigma):
        return jnp.ones_like(x)


def test_distillation_levels_follow_the_lognormal_interval_probabilities(x64):
    """level_sampling="lognormal": with a student of constant distance 1 to its target, the loss
    weighted by the indicator of interval k is the fraction of pairs drawn in k. 100 000 pairs on
    a grid ending in 0 (never drawn as an interval): each fraction within 5 standard deviations of
    ict_level_probabilities."""
    grid = jnp.array([80.0, 10.0, 1.0, 0.1, SIGMA_MIN, 0.0])
    probs = np.asarray(fs.ict_level_probabilities(grid, 5))
    assert probs[-1] == 0 and np.isclose(probs.sum(), 1.0)
    n = 100_000
    x0 = jnp.zeros((n, 1))
    zero = Gaussian(np.zeros(1), np.eye(1)).denoise
    for k in range(4):

        def in_interval(hi, lo, k=k):
            return ((hi == grid[k]) & (lo == grid[k + 1])).astype(hi.dtype)

        loss = consistency_distillation_loss(
            _Ones(), lambda x, s: jnp.zeros_like(x), zero, x0, jax.random.key(3), grid, Euler(),
            metric="l2", weight=in_interval, level_sampling="lognormal",
        )  # fmt: skip
        sd = np.sqrt(probs[k] * (1 - probs[k]) / n)
        assert abs(float(loss) - probs[k]) <= 5 * sd, (k, float(loss), probs[k])


@pytest.mark.slow
def test_distillation_loss_gradient():
    """jax.grad through the loss (NoiseMLP student, Heun teacher step) is finite and nonzero."""
    g = Gaussian(MEAN, COV)
    net = NoiseMLP(2, width=16, depth=2, embed_dim=8, key=jax.random.key(0))
    student = ConsistencyFunction(net, sigma_min=SIGMA_MIN)
    x0 = g.sample(jax.random.key(1), 16)
    grid = jnp.array([80.0, 10.0, 1.0, 0.1, SIGMA_MIN, 0.0])

    @eqx.filter_value_and_grad
    def loss(model):
        return consistency_distillation_loss(
            model, model, g.denoise, x0, jax.random.key(2), grid, Heun()
        )

    value, grads = loss(student)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    assert np.isfinite(float(value)) and value > 0
    assert all(np.all(np.isfinite(leaf)) for leaf in leaves)
    assert any(np.any(leaf != 0) for leaf in leaves)
