"""MeanFlow on an analytic flow: Gaussian data N(m, C) to noise N(0, I) on the linear path.

Closed forms (data at t = 0, noise at t = 1, z_t = (1-t) x + t e). In the eigenbasis C = Q diag(lam) Q^T
every coordinate is independent: z_t ~ N((1-t) m, Q diag(s2_t) Q^T) with s2_t = (1-t)^2 lam + t^2.
The marginal velocity E[e - x | z_t = z] is linear in z,
    v(z, t) = -m + Q diag((t - (1-t) lam) / s2_t) Q^T (z - (1-t) m),
and the ODE flow map is the affine map between the marginals,
    z_r = (1-r) m + Q diag(sd_r / sd_t) Q^T (z_t - (1-t) m),   sd = sqrt(s2),
so u(z, r, t) = (z_t - z_r)/(t - r) = -m + Q diag(k) Q^T (z - (1-t) m) with
    k = ((t + r) - lam (2 - t - r)) / ((sd_t + sd_r) sd_t)
(from s2_t - s2_r = (t - r)((t + r) - lam (2 - t - r))), smooth at r = t where it is v's gain.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.diffusion import FlowSchedule, sample
from jaxsolve.diffusion.analytic import Gaussian
from jaxsolve.diffusion.fewstep import (
    MeanFlowSolver,
    meanflow_denoiser,
    meanflow_loss,
    meanflow_sample,
    meanflow_target,
    meanflow_times,
)

MEAN = np.array([0.5, -1.0])
COV = np.array([[1.5, 0.6], [0.6, 0.8]])


def _flow(mean=MEAN, cov=COV):
    """Closed-form velocity, average velocity and flow map of N(mean, cov) -> N(0, I)."""
    lam, q = np.linalg.eigh(cov)
    lam, q, m = jnp.asarray(lam), jnp.asarray(q), jnp.asarray(mean)

    def sd(t):
        return jnp.sqrt((1.0 - t) ** 2 * lam + t**2)

    def centred(z, t):
        return (z - (1.0 - t)[:, None] * m) @ q

    def velocity(z, t):
        gain = (t[:, None] - (1.0 - t[:, None]) * lam) / sd(t[:, None]) ** 2
        return -m + (gain * centred(z, t)) @ q.T

    def average(z, r, t):
        r, t = r[:, None], t[:, None]
        k = ((t + r) - lam * (2.0 - t - r)) / ((sd(t) + sd(r)) * sd(t))
        return -m + (k * centred(z, t[:, 0])) @ q.T

    def flow_map(z, t, r):
        ratio = sd(r[:, None]) / sd(t[:, None])
        return (1.0 - r)[:, None] * m + (ratio * centred(z, t)) @ q.T

    return velocity, average, flow_map


def _points(seed, n):
    # NumPy draws: no random-number program to compile.
    rng = np.random.default_rng(seed)
    z = jnp.asarray(1.5 * rng.standard_normal((n, 2)))
    a, b = jnp.asarray(rng.uniform(size=n)), jnp.asarray(rng.uniform(size=n))
    return z, jnp.minimum(a, b), jnp.maximum(a, b)


@pytest.mark.slow
def test_closed_form_velocity_is_the_oracles(x64):
    # E[e - x | z_t] = (z - E[x | z_t]) / t, and E[x | z_t = z] is the VE oracle's denoiser at
    # x = z / (1 - t), sigma = t / (1 - t).
    velocity, _, _ = _flow()
    oracle = Gaussian(MEAN, COV)

    @jax.jit
    def both(z, t):
        t = 0.05 + 0.9 * t
        x0 = jax.vmap(lambda zi, ti: oracle.denoise(zi / (1 - ti), ti / (1 - ti)))(z, t)
        return velocity(z, t), (z - x0) / t[:, None]

    np.testing.assert_allclose(*both(*_points(0, 16)[::2]), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_closed_form_average_velocity_integrates_the_velocity(x64):
    velocity, average, flow_map = _flow()

    @jax.jit
    def run(z, r, t):
        # RK4 from t down to r, 200 steps.
        n = 200
        h = (r - t) / n

        def rk4(y, i):
            s = t + i * h
            f = lambda y_, s_: velocity(y_, s_) * h[:, None]
            k1 = f(y, s)
            k2 = f(y + k1 / 2, s + h / 2)
            k3 = f(y + k2 / 2, s + h / 2)
            k4 = f(y + k3, s + h)
            return y + (k1 + 2 * k2 + 2 * k3 + k4) / 6, None

        z_r, _ = jax.lax.scan(rk4, z, jnp.arange(n))
        mapped = flow_map(z, t, r)
        return (
            (mapped, z_r),
            (average(z, r, t) * (t - r)[:, None], z - mapped),
            (average(z, t, t), velocity(z, t)),  # u(z, t, t) = v(z, t)
        )

    (a, b), (c, d), (e, f) = run(*_points(1, 8))
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
    np.testing.assert_allclose(c, d, rtol=0, atol=1e-12)
    np.testing.assert_allclose(e, f, rtol=0, atol=1e-12)


def test_meanflow_identity_holds_for_the_exact_average_velocity(x64):
    velocity, average, _ = _flow()
    _, wrong, _ = _flow(cov=COV * 1.2)

    @jax.jit
    def run(z, r, t):
        r = r.at[:8].set(t[:8])  # include r = t
        exact = meanflow_target(average, z, r, t, velocity(z, t))
        # The average velocity of another flow does not satisfy it with this velocity.
        other = meanflow_target(wrong, z, r, t, velocity(z, t))
        return exact, other, average(z, r, t)

    (u, u_tgt), (u_w, u_w_tgt), direct = run(*_points(2, 64))
    np.testing.assert_allclose(u, direct, rtol=0, atol=0)
    np.testing.assert_allclose(u, u_tgt, rtol=0, atol=1e-10)
    assert jnp.max(jnp.abs(u_w - u_w_tgt)) > 1e-2


def test_loss_vanishes_at_the_exact_average_velocity(x64):
    velocity, average, _ = _flow()
    _, wrong, _ = _flow(cov=COV * 1.2)

    rng = np.random.default_rng(3)
    x0 = jnp.asarray(MEAN + rng.standard_normal((256, 2)) @ np.linalg.cholesky(COV).T)

    @jax.jit
    def losses(x0, k_loss):
        # fraction_distinct = 1: every pair has r < t (the hard case); power 1 is the paper's
        # adaptive weight, power 0 the plain squared error.
        hard = dict(velocity=velocity, fraction_distinct=1.0)
        return (
            meanflow_loss(average, x0, k_loss, **hard),
            meanflow_loss(average, x0, k_loss, velocity=velocity, power=0.0),
            meanflow_loss(wrong, x0, k_loss, **hard),
        )

    exact_weighted, exact_plain, wrong_weighted = losses(x0, jax.random.key(4))
    assert exact_weighted < 1e-20
    assert exact_plain < 1e-20
    assert wrong_weighted > 1e-1


@pytest.mark.slow
def test_conditional_loss_is_stationary_at_the_exact_average_velocity(x64):
    # With v = e - x the residual at the exact u is -(I - (t - r) d_z u)(e - x - v(z_t, t)):
    # zero mean given (z_t, r, t), so the gradient of the (p = 0) loss along any perturbation
    # u + eps g vanishes in expectation at eps = 0, and is 2 eps E|g|^2 + ... away from it.
    _, average, _ = _flow()
    n = 4096

    def g(z, r, t):
        return jnp.stack([t, 1.0 - r], axis=1) * jnp.array([1.0, -0.5]) + 0.3 * z

    def perturbed(eps):
        return lambda z, r, t: average(z, r, t) + eps * g(z, r, t)

    x0 = Gaussian(MEAN, COV).sample(jax.random.key(5), n)
    kw = dict(power=0.0, fraction_distinct=0.5)

    grad_at = jax.jit(
        jax.vmap(jax.grad(lambda e, key: meanflow_loss(perturbed(e), x0, key, **kw)), (0, None))
    )

    @jax.jit
    def terms(key):
        # Monte-Carlo scale of that gradient from per-sample terms 2 Delta . g (own draws).
        k_rt, k_e = jax.random.split(key)
        r, t = meanflow_times(k_rt, (n,), fraction_distinct=0.5)
        e = jax.random.normal(k_e, x0.shape)
        z = (1 - t)[:, None] * x0 + t[:, None] * e
        u, u_tgt = meanflow_target(average, z, r, t, e - x0)
        return 2 * jnp.sum((u - u_tgt) * g(z, r, t), axis=1)

    per_sample = terms(jax.random.key(6))
    std_err = float(jnp.std(per_sample)) / np.sqrt(n)
    assert abs(float(jnp.mean(per_sample))) < 5 * std_err
    at_zero, away = grad_at(jnp.array([0.0, 0.5]), jax.random.key(7))
    assert abs(float(at_zero)) < 5 * std_err
    assert abs(float(away)) > 20 * std_err


def test_one_step_sampling_maps_noise_to_the_data(x64):
    _, average, _ = _flow()
    n = 20000
    _, wrong, _ = _flow(cov=COV * 1.5)

    @jax.jit
    def run(noise):
        return (
            meanflow_sample(average, noise),  # times (1, 0): one jump from t = 1 to r = 0
            meanflow_sample(average, noise, (1.0, 0.5, 0.0)),
            meanflow_sample(average, noise, (1.0, 0.7, 0.4, 0.1, 0.0)),
            meanflow_sample(wrong, noise),
        )

    noise = jnp.asarray(np.random.default_rng(8).standard_normal((n, 2)))
    x, two, four, bad = run(noise)
    # Exactly the flow map: m + C^(1/2) e.
    lam, q = np.linalg.eigh(COV)
    root = q @ np.diag(np.sqrt(lam)) @ q.T
    np.testing.assert_allclose(x, MEAN + noise @ root, rtol=0, atol=1e-12)
    # Two and four jumps compose the same exact map.
    np.testing.assert_allclose(two, x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(four, x, rtol=0, atol=1e-12)
    # Monte-Carlo: mean and covariance of N(m, C) within 5 standard errors.
    mean_err = np.sqrt(np.diag(COV) / n)
    np.testing.assert_array_less(np.abs(np.mean(x, 0) - MEAN), 5 * mean_err)
    cov_err = np.sqrt((np.outer(np.diag(COV), np.diag(COV)) + COV**2) / n)
    np.testing.assert_array_less(np.abs(np.cov(np.asarray(x).T) - COV), 5 * cov_err)
    # A wrong average velocity lands on the wrong covariance.
    assert np.max(np.abs(np.cov(np.asarray(bad).T) - COV)) > 20 * cov_err.max()


@pytest.mark.slow
def test_solver_on_the_driver_is_the_exact_flow_map(x64):
    # The driver's VE state cannot sit at t = 1: start at t_max on the exact trajectory of the
    # noise; with the exact u every grid then lands on m + C^(1/2) e.
    velocity, average, flow_map = _flow()
    schedule = FlowSchedule(t_min=1e-3, t_max=0.999)
    noise = jax.random.normal(jax.random.key(10), (64, 2))
    t_max = jnp.full((64,), 0.999)
    z = flow_map(noise, jnp.ones(64), t_max)
    x = z / (1 - 0.999)  # VE scale
    lam, q = np.linalg.eigh(COV)
    expected = MEAN + noise @ (q @ np.diag(np.sqrt(lam)) @ q.T)
    denoiser = meanflow_denoiser(average, schedule)
    solver = MeanFlowSolver(average, schedule)
    for times in [(0.999, 0.0), (0.999, 0.6, 0.2, 0.0)]:
        sigmas = jnp.asarray([schedule.to_ve_sigma(t) for t in times[:-1]] + [0.0])
        out = sample(denoiser, x, sigmas, solver, full_output=True)
        np.testing.assert_allclose(out.value, expected, rtol=0, atol=1e-10)
        assert int(out.nfe) == len(times) - 1
    # The denoiser is the instantaneous velocity's: x0_hat = z - t v(z, t) at VE (x, sigma).
    t = jnp.full((64,), 0.3)
    z = flow_map(noise, jnp.ones(64), t)
    np.testing.assert_allclose(
        denoiser(z / 0.7, 0.3 / 0.7), z - 0.3 * velocity(z, t), rtol=0, atol=1e-12
    )


@pytest.mark.slow
def test_meanflow_times():
    r, t = jax.jit(lambda k: meanflow_times(k, (4000,)))(jax.random.key(9))
    r, t = np.asarray(r), np.asarray(t)
    assert np.all((0 <= r) & (r <= t) & (t <= 1))
    distinct = np.mean(r < t)
    assert abs(distinct - 0.25) < 5 * np.sqrt(0.25 * 0.75 / 4000)
    # logit-normal(-0.4, 1): the median of max(a, b) is sigmoid(-0.4 + Phi^-1(1/sqrt 2)).
    median_t = 1 / (1 + np.exp(0.4 - 0.5449521))
    assert abs(np.median(t) - median_t) < 0.02  # 5 standard errors
    r, t = jax.jit(lambda k: meanflow_times(k, (16,), times="uniform", fraction_distinct=0.0))(
        jax.random.key(9)
    )
    assert bool(jnp.all(r == t))


def test_rejects_bad_input():
    def average(z, r, t):
        return z

    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="times"):
        meanflow_sample(average, x0, (0.0, 1.0))
    with pytest.raises(ValueError, match="times"):
        meanflow_sample(average, x0, (1.0,))
    with pytest.raises(ValueError, match="fraction_distinct"):
        meanflow_times(jax.random.key(0), (4,), fraction_distinct=1.5)
    with pytest.raises(ValueError, match="times"):
        meanflow_times(jax.random.key(0), (4,), times="cosine")
    with pytest.raises(ValueError, match="power"):
        meanflow_loss(average, x0, jax.random.key(0), power=-1.0)


@pytest.mark.wrong_argument_types
def test_rejects_noise_of_another_shape():
    # Under -p tests.typecheck the annotations (one "batch" for x0 and noise) reject it first.
    def average(z, r, t):
        return z

    with pytest.raises(ValueError, match="noise"):
        meanflow_loss(average, jnp.zeros((4, 2)), jax.random.key(0), noise=jnp.zeros((3, 2)))
