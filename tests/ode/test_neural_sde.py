"""NeuralSDE: strong convergence to exact solutions, OU fit, batch independence, failures, and
the global error regulariser on SDE solves (parity with the ODE pillar at zero noise)."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest

from jaxsolve import RESULTS, ode
from jaxsolve.ode._neural_sde import LatentSDE, NeuralSDE, euler_transition_nll


class OUDrift(eqx.Module):
    """mu(x) = theta (m - x), theta = exp(log_theta)."""

    log_theta: jax.Array
    m: jax.Array

    def __call__(self, t, y, args):
        return jnp.exp(self.log_theta) * (self.m - y)


class ConstantDiffusion(eqx.Module):
    log_s: jax.Array

    def __call__(self, t, y, args):
        return jnp.exp(self.log_s) * jnp.ones_like(y)


class Linear(eqx.Module):
    rate: jax.Array

    def __call__(self, t, y, args):
        return self.rate * y


def _ou(theta, m, s, **kw):
    return NeuralSDE(
        OUDrift(jnp.log(jnp.asarray(theta)), jnp.asarray(m)),
        ConstantDiffusion(jnp.log(jnp.asarray(s))),
        **kw,
    )


def test_ou_parameters_recovered_from_paths(x64):
    """Fit theta, m, s of an OU process to exact transitions (dt = 0.02, 256 paths over T = 10)
    by the Euler-Maruyama transition likelihood. Tolerances: ~3 standard errors of the estimator
    (theta: sqrt(2 theta / (256 T)) = 2.8%) plus the Euler bias theta^2 dt / 2 = 1.5% (rel.)."""
    theta, m, s, dt, n_paths, n_steps = 1.5, 0.7, 0.4, 0.02, 256, 500
    ts = jnp.arange(n_steps + 1) * dt
    decay = np.exp(-theta * dt)
    step_std = s * np.sqrt((1 - decay**2) / (2 * theta))

    def path(key):
        noise = jax.random.normal(key, (n_steps,))

        def step(x, z):
            x = m + (x - m) * decay + step_std * z
            return x, x

        x0 = m + s / np.sqrt(2 * theta) * jax.random.normal(jax.random.fold_in(key, 1))
        _, xs = jax.lax.scan(step, x0, noise)
        return jnp.concatenate([x0[None], xs])[:, None]

    paths = jax.vmap(path)(jax.random.split(jax.random.key(0), n_paths))

    def loss(params, _):
        drift = OUDrift(params[0], params[1])
        diffusion = ConstantDiffusion(params[2])
        nll = jax.vmap(lambda p: euler_transition_nll(drift, diffusion, ts, p))(paths)
        return jnp.mean(nll) / n_steps

    fit = optx.minimise(loss, optx.BFGS(rtol=1e-10, atol=1e-10), jnp.array([0.0, 0.0, 0.0]))
    theta_hat, m_hat, s_hat = np.exp(fit.value[0]), fit.value[1], np.exp(fit.value[2])
    assert abs(theta_hat - theta) / theta < 0.1
    assert abs(m_hat - m) < 0.05
    assert abs(s_hat - s) / s < 0.02


def _exact_ou(bm, theta, m, s, x0, T, n_quad=2**11):
    """X_T for the path bm: the stochastic integral by parts,
    int_0^T e^{-theta(T-u)} dW_u = W_T - theta int_0^T e^{-theta(T-u)} W_u du (a pathwise
    Riemann integral of the continuous path, by the trapezoid rule on a fine grid)."""
    u = jnp.linspace(0.0, T, n_quad + 1)
    w = jax.vmap(lambda t: bm.evaluate(0.0, t))(u)[:, 0]
    integral = jnp.trapezoid(jnp.exp(-theta * (T - u)) * w, u)
    stochastic = w[-1] - theta * integral
    return m + (x0 - m) * jnp.exp(-theta * T) + s * stochastic


def _strong_errors(make_sde, exact, dts, n_paths=32):
    """Mean |X_T - exact| over paths for each dt (one compilation: dt is traced)."""

    @jax.jit
    def errors(dt):
        def one(key):
            sde = make_sde(dt)
            y0 = jnp.array([1.0])
            sol = sde(jnp.array([0.0, 1.0]), y0, key=key)
            bm = sde.brownian_motion(0.0, 1.0, y0, key)
            return jnp.abs(sol.ys[-1, 0] - exact(bm, y0[0]))

        return jnp.mean(jax.vmap(one)(jax.random.split(jax.random.key(3), n_paths)))

    return np.array([errors(jnp.asarray(dt)) for dt in dts])


def _order(dts, errs):
    return np.polyfit(np.log(dts), np.log(errs), 1)[0]


DTS = [2.0**-3, 2.0**-4, 2.0**-5, 2.0**-6]
TOL = 2.0**-11  # one Brownian tree for every dt: the same path


def test_strong_order_ou_euler_additive(x64):
    """Euler-Maruyama on OU (additive noise) converges with strong order 1 to the exact
    pathwise solution."""
    theta, m, s = 2.0, 0.5, 0.8
    errs = _strong_errors(
        lambda dt: _ou(theta, m, s, dt0=dt, brownian_tol=TOL, max_steps=2**8),
        lambda bm, x0: _exact_ou(bm, theta, m, s, x0, 1.0),
        DTS,
    )
    assert np.all(np.diff(errs) < 0)
    assert 0.85 < _order(DTS, errs) < 1.2


@pytest.mark.parametrize(
    "calculus, solver, order",
    [
        ("ito", dfx.Euler(), 0.5),
        pytest.param("stratonovich", dfx.Heun(), 1.0, marks=pytest.mark.slow),
    ],
)
def test_strong_order_geometric_brownian_motion(x64, calculus, solver, order):
    """dX = a X dt + b X dW (multiplicative noise): Ito X_T = x0 exp((a - b^2/2) T + b W_T),
    Stratonovich X_T = x0 exp(a T + b W_T). Euler-Maruyama has strong order 0.5; Heun order 1
    (scalar, hence commutative, noise)."""
    a, b = 0.3, 0.9
    shift = a - b**2 / 2 if calculus == "ito" else a
    errs = _strong_errors(
        lambda dt: NeuralSDE(
            Linear(jnp.asarray(a)),
            Linear(jnp.asarray(b)),
            dt0=dt,
            calculus=calculus,
            solver=solver,
            brownian_tol=TOL,
            max_steps=2**8,
        ),
        lambda bm, x0: x0 * jnp.exp(shift + b * bm.evaluate(0.0, 1.0)[0]),
        DTS,
    )
    assert abs(_order(DTS, errs) - order) < 0.2
    assert errs[-1] < errs[0]


def test_batch_independence(x64):
    """Sample i is the same solve in a batch of 3, of 5, and alone with fold_in(key, i) (general
    noise: sigma (2x3) with a 3-dimensional Brownian motion)."""
    sigma = jnp.array([[0.3, 0.0, 0.4], [0.1, 0.2, 0.0]])
    sde = NeuralSDE(
        lambda t, y, a: -y,
        lambda t, y, a: sigma,
        dt0=0.05,
        noise="general",
        brownian_dim=3,
    )
    ts = jnp.linspace(0.0, 1.0, 3)
    y0 = jnp.array([1.0, -1.0])
    key = jax.random.key(7)

    @jax.jit
    def solves(key):
        five = sde.sample(ts, y0, key=key, num_samples=5)
        alone = sde(ts, y0, key=jax.random.fold_in(key, 2))
        return five, alone

    five, alone = solves(key)
    three = sde.sample(ts, y0, key=key, num_samples=3)  # eagerly: a batch of another size
    np.testing.assert_array_equal(three.ys, five.ys[:3])
    np.testing.assert_allclose(alone.ys, three.ys[2], rtol=1e-12)
    assert not np.allclose(three.ys[0], three.ys[1])


@pytest.mark.slow
def test_general_noise_covariance(x64):
    """With zero drift, one step of length 1 gives y = sigma W_1: covariance sigma sigma^T
    (4000 samples: tolerance ~4 standard errors)."""
    sigma = jnp.array([[0.3, 0.0, 0.4], [0.1, 0.2, 0.0]])
    key = jax.random.key(7)
    flat = NeuralSDE(
        lambda t, y, a: jnp.zeros_like(y),
        lambda t, y, a: sigma,
        dt0=1.0,
        noise="general",
        brownian_dim=3,
    )
    ends = flat.sample(jnp.array([0.0, 1.0]), jnp.zeros((4000, 2)), key=key).ys[:, -1]
    np.testing.assert_allclose(np.cov(ends.T), sigma @ sigma.T, atol=0.015)


class Explodes(eqx.Module):
    def __call__(self, t, y, args):
        return y**3


def test_failed_solve_gives_code_never_a_value(x64):
    """A blow-up (dX = X^3 dt + dW from X0 = 3 with fixed steps) ends with `nonfinite`, ys is
    non-finite from there on; throw=True raises."""
    ts = jnp.linspace(0.0, 1.0, 5)
    key = jax.random.key(0)
    diffusion = lambda t, y, a: jnp.ones_like(y)
    sde = NeuralSDE(Explodes(), diffusion, dt0=0.01, throw=False)
    sol = sde(ts, jnp.array([3.0]), key=key)
    assert sol.result == RESULTS.nonfinite
    assert not np.all(np.isfinite(sol.ys[-1]))
    with pytest.raises(Exception, match="NaN or infinity"):
        NeuralSDE(Explodes(), diffusion, dt0=0.01)(ts, jnp.array([3.0]), key=key)


@pytest.mark.slow
def test_max_steps_gives_code_and_inf(x64):
    """Too few steps for an adaptive solve: `max_steps_reached`, inf at the unreached times."""
    ts = jnp.linspace(0.0, 1.0, 5)
    key = jax.random.key(0)
    diffusion = lambda t, y, a: jnp.ones_like(y)
    adaptive = NeuralSDE(
        lambda t, y, a: -y,
        diffusion,
        dt0=0.01,
        calculus="stratonovich",
        stepsize_controller=dfx.PIDController(rtol=1e-4, atol=1e-4),
        max_steps=3,
        throw=False,
    )
    sol = adaptive(ts, jnp.array([1.0]), key=key)
    assert sol.result == RESULTS.max_steps_reached
    assert np.all(np.isinf(sol.ys[-1]))


def test_global_regulariser_matches_ode_at_zero_noise(x64):
    """With zero diffusion and the same steps the SDE solve is the ODE solve: ys, R_E = sum_n
    E_n h_n (raw RMS of Heun's embedded estimate at constant steps) and NFE equal those of a
    NeuralODE with the global regulariser. (Under a PID controller the steps of the SDE and the
    ODE differ: diffrax's error order for SDE terms is strong order + 1/2, not order + 1.)"""
    ts = jnp.linspace(0.0, 2.0, 5)
    y0 = jnp.array([1.0, 0.5])
    drift = Linear(jnp.asarray(-1.3))
    reg = ode.GlobalRegulariser()
    quiet = NeuralSDE(
        drift,
        lambda t, y, a: jnp.zeros_like(y),
        dt0=0.1,
        calculus="stratonovich",
        solver=dfx.Heun(),
    )
    sde_sol = quiet(ts, y0, key=jax.random.key(1), regulariser=reg)
    node = ode.NeuralODE(drift, dfx.Heun(), dfx.ConstantStepSize(), dt0=0.1)
    ode_sol = node(ts, y0, regulariser=reg)
    np.testing.assert_allclose(sde_sol.ys, ode_sol.ys, rtol=1e-12)
    np.testing.assert_allclose(sde_sol.error_estimate, ode_sol.error_estimate, rtol=1e-12)
    assert sde_sol.num_steps == ode_sol.num_steps == 20
    assert sde_sol.nfe == ode_sol.nfe == 40


@pytest.mark.slow  # compiling the gradient through an adaptive SDE solve: ~15 s
def test_global_regulariser_adaptive_gradient(x64):
    """Adaptive (PID) Heun: the noisy R_E is positive, has a finite non-zero gradient, and
    gathering it does not change the solve."""
    ts = jnp.linspace(0.0, 2.0, 5)
    y0 = jnp.array([1.0, 0.5])
    drift = Linear(jnp.asarray(-1.3))
    reg = ode.GlobalRegulariser()
    adaptive = NeuralSDE(
        drift,
        Linear(jnp.asarray(0.5)),
        dt0=0.1,
        calculus="stratonovich",
        solver=dfx.Heun(),
        stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-6),
    )
    plain = adaptive(ts, y0, key=jax.random.key(1))

    def r_e(rate):
        noisy = eqx.tree_at(lambda s: s.drift, adaptive, Linear(rate))
        sol = noisy(ts, y0, key=jax.random.key(1), regulariser=reg)
        return sol.error_estimate, sol

    (value, sol), grad = jax.value_and_grad(r_e, has_aux=True)(jnp.asarray(-1.3))
    assert value > 0 and np.isfinite(grad) and grad != 0
    np.testing.assert_allclose(sol.ys, plain.ys, rtol=1e-12)
    assert sol.num_steps == plain.num_steps and sol.nfe == 2 * plain.num_steps


def test_bad_arguments():
    drift = lambda t, y, a: -y
    diffusion = lambda t, y, a: jnp.ones_like(y)
    with pytest.raises(ValueError, match="solver must converge to the ito"):
        NeuralSDE(drift, diffusion, dt0=0.1, solver=dfx.Heun())
    with pytest.raises(ValueError, match="stratonovich"):
        NeuralSDE(drift, diffusion, dt0=0.1, calculus="stratonovich", solver=dfx.Euler())
    with pytest.raises(TypeError, match="error estimate"):
        NeuralSDE(drift, diffusion, dt0=0.1, stepsize_controller=dfx.PIDController(1e-3, 1e-3))
    with pytest.raises(ValueError, match="noise"):
        NeuralSDE(drift, diffusion, dt0=0.1, noise="scalar")
    with pytest.raises(TypeError, match="brownian_dim"):
        NeuralSDE(drift, diffusion, dt0=0.1, noise="general")
    with pytest.raises(ValueError, match="dt0"):
        NeuralSDE(drift, diffusion, dt0=-0.1)
    sde = NeuralSDE(drift, lambda t, y, a: jnp.ones(3), dt0=0.1)
    with pytest.raises(ValueError, match="diffusion"):
        sde(jnp.array([0.0, 1.0]), jnp.zeros(2), key=jax.random.key(0))
    with pytest.raises(ValueError, match="key"):
        NeuralSDE(drift, diffusion, dt0=0.1)(jnp.array([0.0, 1.0]), jnp.zeros(2), key=None)
    with pytest.raises(ValueError, match="stiffness"):
        NeuralSDE(drift, diffusion, dt0=0.1)(
            jnp.array([0.0, 1.0]),
            jnp.zeros(2),
            key=jax.random.key(0),
            regulariser=ode.GlobalRegulariser(stiffness=True),
        )


class ConstantEncoder(eqx.Module):
    drift: jax.Array
    mean0: jax.Array
    log_std0: jax.Array

    def __call__(self, ts, xs):
        return self.drift, self.mean0, self.log_std0


@pytest.mark.parametrize("with_grad", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_latent_sde_elbo_closed_form(x64, with_grad):
    """Prior drift 0, posterior drift c, diffusion s: the path KL is |c/s|^2 (t1 - t0) / 2 exactly
    (Girsanov); KL(q(z0) || N(0, I)) has a closed form; the loss is the sum of the parts. The
    slow variant also checks a finite non-zero gradient (compiling it takes ~20 s)."""
    c, s = jnp.array([0.6, -0.2]), 0.5
    ts = jnp.linspace(0.0, 2.0, 5)
    xs = jnp.stack([jnp.sin(ts), jnp.cos(ts)], axis=-1)
    encoder = ConstantEncoder(c, jnp.array([0.1, -0.3]), jnp.log(jnp.array([0.2, 0.4])))
    model = LatentSDE(
        encoder=encoder,
        posterior_drift=lambda t, z, context: context * jnp.ones_like(z),
        prior_drift=lambda t, z, args: jnp.zeros_like(z),
        diffusion=lambda t, z, args: s * jnp.ones_like(z),
        decoder=lambda z: z,
        obs_std=0.3,
        dt0=0.05,
    )

    loss = lambda m: m.loss(ts, xs, key=jax.random.key(0))
    if with_grad:
        (total, parts), grads = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))(model)
        assert np.all(np.isfinite(grads.encoder.drift)) and np.all(grads.encoder.drift != 0)
    else:
        total, parts = eqx.filter_jit(loss)(model)
    np.testing.assert_allclose(parts["kl_path"], 0.5 * jnp.sum((c / s) ** 2) * 2.0, rtol=1e-12)
    m0, sd0 = encoder.mean0, jnp.exp(encoder.log_std0)
    kl_z0 = jnp.sum(0.5 * (m0**2 + sd0**2 - 1) - jnp.log(sd0))
    np.testing.assert_allclose(parts["kl_z0"], kl_z0, rtol=1e-12)
    np.testing.assert_allclose(total, parts["reconstruction"] + kl_z0 + parts["kl_path"])
    assert parts["result"] == RESULTS.successful
