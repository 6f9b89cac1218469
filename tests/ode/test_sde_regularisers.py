"""The local solver regulariser on NeuralSDE solves ("Locally Regularized Neural Differential
Equations: Some Black Boxes Were Meant to Remain Closed!"), and the regulariser seam.

The local term of one sample is E(t_r, y(t_r), h_r) |h_r|: one step of the SDE solver from the
solved state at a random time t_r, on the sample's own Brownian path, E the controller's scaled
norm of the step's embedded error estimate, h_r = min(dt0, t1 - t_r). The checks: equality with
the same step taken by hand with diffrax (its own ControlTerm and VirtualBrownianTree), the
closed form of Heun's estimate for a linear SDE with additive noise and its expectation over
t_r ~ U[t0, t1), parity with the ODE regulariser at zero noise, gradients against finite
differences, NFE accounting, bad options, and jit + vmap over samples.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest

from jaxsolve import RESULTS, ode
from jaxsolve.ode._neural_sde import NeuralSDE
from jaxsolve.ode._regularisers import AbstractRegulariser, RegularisedSolve


class Drift(eqx.Module):
    """mu(y) = a y + b sin(y): not integrated exactly by any step."""

    a: jax.Array
    b: jax.Array

    def __call__(self, t, y, args):
        return self.a * y + self.b * jnp.sin(y)


class GeneralDiffusion(eqx.Module):
    """sigma(y) = S * (1 + c cos(y))[:, None], shape (2, 3): multiplicative, general noise."""

    S: jax.Array
    c: jax.Array

    def __call__(self, t, y, args):
        return self.S * (1 + self.c * jnp.cos(y))[:, None]


class DiagonalDiffusion(eqx.Module):
    s: jax.Array

    def __call__(self, t, y, args):
        return self.s * (1 + 0.5 * jnp.cos(y))


class LinearDrift(eqx.Module):
    a: jax.Array

    def __call__(self, t, y, args):
        return self.a * y


class AdditiveDiffusion(eqx.Module):
    s: jax.Array

    def __call__(self, t, y, args):
        return self.s * jnp.ones_like(y)


TOL = 2.0**-9
T0, T1 = 0.0, 1.5
TS = np.linspace(T0, T1, 4)  # numpy: float64 once the x64 fixture is on
PID = dfx.PIDController(rtol=1e-2, atol=1e-3)


def _by_hand(sde, diffusion_op, y0, key, t_r, levy_area):
    """The local term of the solve of `sde` with `key`, from diffrax alone: the same tree, the
    solve saved at t_r, one step of the solver from there, diffrax's PID norm of its error."""
    shape = y0.shape if sde.noise == "diagonal" else (sde.brownian_dim,)
    bm = dfx.VirtualBrownianTree(
        T0, T1, tol=TOL, shape=jax.ShapeDtypeStruct(shape, y0.dtype), key=key, levy_area=levy_area
    )
    terms = dfx.MultiTerm(dfx.ODETerm(sde.drift), dfx.ControlTerm(diffusion_op, bm))
    sol = dfx.diffeqsolve(
        terms,
        sde.solver,
        T0,
        T1,
        sde.dt0,
        y0,
        saveat=dfx.SaveAt(ts=t_r[None]),
        stepsize_controller=sde.stepsize_controller,
        max_steps=sde.max_steps,
    )
    y_r = sol.ys[0]
    h = jnp.minimum(sde.dt0, T1 - t_r)
    t_stop = jnp.minimum(t_r + h, T1)
    state = sde.solver.init(terms, t_r, t_stop, y_r, None)
    y1, y_error, _, _, _ = sde.solver.step(terms, t_r, t_stop, y_r, None, state, False)
    scale = PID.atol + PID.rtol * jnp.maximum(jnp.abs(y_r), jnp.abs(y1))
    return jnp.sqrt(jnp.mean((y_error / scale) ** 2)) * h


CASES = [
    pytest.param("general", dfx.Heun(), dfx.BrownianIncrement, 2, "unbiased", id="Heun-unbiased"),
    pytest.param(
        "general",
        dfx.Heun(),
        dfx.BrownianIncrement,
        2,
        "biased",
        id="Heun-biased",
        marks=pytest.mark.slow,
    ),
    pytest.param(
        "diagonal",
        dfx.SPaRK(),
        dfx.SpaceTimeLevyArea,
        3,
        "unbiased",
        id="SPaRK-unbiased",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("noise, solver, levy_area, stages, sampling", CASES)
def test_local_term_equals_one_diffrax_step(x64, noise, solver, levy_area, stages, sampling):
    """A jitted batch (NeuralSDE.sample), adaptive (PID) steps, general noise (diagonal with
    SPaRK under -m slow): each sample's term equals the step taken by hand from the solved state
    at its t_r on its own Brownian path; NFE adds the probe's stages; the samples draw different
    t_r."""
    y0 = jnp.array([0.8, -0.4])
    drift = Drift(jnp.asarray(-1.2), jnp.asarray(0.7))
    if noise == "general":
        diffusion = GeneralDiffusion(
            jnp.array([[0.3, 0.0, 0.4], [0.1, 0.2, 0.0]]), jnp.asarray(0.5)
        )
        diffusion_op = diffusion
        kw = {"noise": "general", "brownian_dim": 3}
    else:
        diffusion = DiagonalDiffusion(jnp.array([0.4, 0.3]))
        diffusion_op = lambda t, y, a: lx.DiagonalLinearOperator(diffusion(t, y, a))
        kw = {}
    sde = NeuralSDE(
        drift,
        diffusion,
        dt0=0.1,
        calculus="stratonovich",
        solver=solver,
        stepsize_controller=PID,
        brownian_tol=TOL,
        max_steps=512,
        **kw,
    )
    key = jax.random.key(4)

    @jax.jit
    def run(key):
        # A batch under jit + vmap: sample i has the Brownian path of fold_in(key, i).
        sol = sde.sample(TS, y0, key=key, num_samples=3, regulariser=ode.LocalRegulariser(sampling))
        keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(3))
        by_hand = jax.vmap(lambda k, t: _by_hand(sde, diffusion_op, y0, k, t, levy_area))
        return sol, by_hand(keys, sol.probe_time)

    sol, hand = run(key)
    assert np.all(sol.result == RESULTS.successful)
    np.testing.assert_allclose(sol.error_estimate, hand, rtol=1e-10)
    assert np.all(sol.error_estimate > 0)
    assert np.all((sol.probe_time >= T0) & (sol.probe_time < T1))
    np.testing.assert_array_equal(sol.nfe, stages * sol.num_steps + stages)
    assert len(set(np.asarray(sol.probe_time).tolist())) == 3


def test_closed_form_and_expectation_over_probe_times(x64):
    """dX = a X dt + s dW (additive noise, Stratonovich = Ito), Heun at constant steps (raw RMS
    norm). Heun's embedded estimate over [t, t + h] is (k2 - k1)/2 with k1 = a y h + s dW,
    k2 = a (y + k1) h + s dW, so R(t) = |a h (a y(t) h + s W(t, t + h)) / 2| h. On one fixed
    path, with t_r ~ U[t0, t1) drawn by 1000 regulariser keys, every sample equals R(t_r) and
    the mean equals (1/T) int R dt (midpoint rule on 4096 points) within 4 standard errors."""
    a, s, dt0 = -1.5, 0.6, 0.1
    sde = NeuralSDE(
        LinearDrift(jnp.asarray(a)),
        AdditiveDiffusion(jnp.asarray(s)),
        dt0=dt0,
        calculus="stratonovich",
        solver=dfx.Heun(),
        brownian_tol=TOL,
    )
    y0 = jnp.array([1.0])
    path_key = jax.random.key(11)
    terms = sde.terms(T0, T1, y0, path_key)
    regulariser = ode.LocalRegulariser()
    bm = terms.terms[1].brownian

    def closed_form(t, y):
        h = jnp.minimum(dt0, T1 - t)
        k1 = a * y * h + s * bm.evaluate(t, jnp.minimum(t + h, T1))
        return jnp.abs(a * h * k1 / 2)[0] * h

    @jax.jit
    def run(keys):
        ts = jnp.asarray(TS)
        solved = jax.vmap(lambda k: regulariser.solve_sde(sde, terms, ts, y0, None, k))(keys)
        grid = T0 + (jnp.arange(4096) + 0.5) * (T1 - T0) / 4096
        # One reference solve, saved at ts, at the quadrature grid and at the probe times.
        times = jnp.concatenate([ts, grid, solved.probe_time])
        order = jnp.argsort(times)
        saved = dfx.diffeqsolve(
            terms, dfx.Heun(), T0, T1, dt0, y0, saveat=dfx.SaveAt(ts=times[order]), max_steps=64
        ).ys[jnp.argsort(order)]
        values = jax.vmap(closed_form)(times[ts.size :], saved[ts.size :])
        n = grid.size
        return solved, saved[: ts.size], values[n:], jnp.mean(values[:n])

    solved, reference_ys, expected, integral = run(jax.random.split(jax.random.key(5), 1000))
    values = solved.error_estimate
    np.testing.assert_allclose(values, expected, rtol=1e-10)
    # The regularised solve is the plain one (15 Heun steps) plus the probe's two stages.
    np.testing.assert_allclose(
        solved.raw.ys, np.broadcast_to(reference_ys, (1000, 4, 1)), rtol=1e-12
    )
    np.testing.assert_array_equal(solved.raw.nfe, 2 * 15 + 2)
    assert np.all((solved.probe_time >= T0) & (solved.probe_time < T1))
    mean, sem = float(np.mean(values)), float(np.std(values) / np.sqrt(values.size))
    assert abs(mean - float(integral)) < 4 * sem
    assert sem < 0.05 * mean  # the check has power: its tolerance is a fraction of the mean


@pytest.mark.slow  # default-run budget: the SDE pillar's own checks above stay
def test_zero_noise_parity_with_the_ode_regulariser(x64):
    """With zero diffusion and constant steps the SDE solve is the ODE solve; the local term from
    the same t_r equals NeuralODE's LocalRegulariser term wherever t_r + dt0 <= t1 (beyond, the
    SDE probe is cut at t1: its Brownian path ends there)."""
    drift = Drift(jnp.asarray(-1.2), jnp.asarray(0.7))
    y0 = jnp.array([0.8, -0.4])
    quiet = NeuralSDE(
        drift, lambda t, y, a: jnp.zeros_like(y), dt0=0.1, calculus="stratonovich", brownian_tol=TOL
    )
    node = ode.NeuralODE(drift, dfx.Heun(), dfx.ConstantStepSize(), dt0=0.1)
    regulariser = ode.LocalRegulariser()

    @jax.jit
    @jax.vmap
    def run(key):
        terms = quiet.terms(T0, T1, y0, jax.random.key(0))
        sde_part = regulariser.solve_sde(quiet, terms, jnp.asarray(TS), y0, None, key)
        return sde_part, node(TS, y0, regulariser=regulariser, key=key)

    sde_part, ode_sol = run(jax.random.split(jax.random.key(2), 8))
    np.testing.assert_array_equal(sde_part.probe_time, ode_sol.probe_time)
    inside = np.asarray(ode_sol.probe_time) + 0.1 <= T1
    assert inside.sum() >= 4
    np.testing.assert_allclose(
        sde_part.error_estimate[inside], ode_sol.error_estimate[inside], rtol=1e-12
    )
    np.testing.assert_allclose(sde_part.raw.ys, ode_sol.ys, rtol=1e-12)
    # Heun: two stages per step and for the probe, in both pillars.
    np.testing.assert_array_equal(sde_part.raw.nfe, ode_sol.nfe)


@pytest.mark.parametrize("sampling", ["unbiased", pytest.param("biased", marks=pytest.mark.slow)])
def test_gradient_matches_finite_differences(x64, sampling):
    """The term's gradient reaches the drift's and the diffusion's parameters, is finite and
    non-zero, and equals central finite differences (t_r and h_r do not depend on them; the
    probe point and the step do, smoothly)."""
    y0 = jnp.array([1.0, -0.5])
    regulariser = ode.LocalRegulariser(sampling)
    key = jax.random.key(9)

    def term(params):
        sde = NeuralSDE(
            LinearDrift(params[0]),
            DiagonalDiffusion(params[1]),
            dt0=0.1,
            calculus="stratonovich",
            brownian_tol=TOL,
        )
        return sde(TS, y0, key=key, regulariser=regulariser).error_estimate

    params = jnp.array([-1.3, 0.5])
    value, grad = jax.jit(jax.value_and_grad(term))(params)
    assert value > 0 and np.all(np.isfinite(grad)) and np.all(grad != 0)
    eps = 1e-6
    shifts = jnp.concatenate([jnp.eye(2), -jnp.eye(2)]) * eps
    values = jax.jit(jax.vmap(lambda d: term(params + d)))(shifts)
    np.testing.assert_allclose(grad, (values[:2] - values[2:]) / (2 * eps), rtol=1e-6)


class OnlyODE(AbstractRegulariser):
    def solve(self, node, ts, y0, args, key):
        return RegularisedSolve(None, RESULTS.successful)


def test_bad_options():
    """Stiffness has no SDE counterpart (ValueError naming it, local and global); the biased
    probe point lives in the state (a continuous adjoint is refused); the probe needs an error
    estimate; a regulariser without an SDE solve, or not a regulariser, is refused."""
    drift = lambda t, y, a: -y
    diffusion = lambda t, y, a: jnp.ones_like(y)
    ts, y0, key = jnp.array([0.0, 1.0]), jnp.zeros(2), jax.random.key(0)
    heun = NeuralSDE(drift, diffusion, dt0=0.1, calculus="stratonovich")
    for regulariser in (
        ode.LocalRegulariser(stiffness=True),
        ode.GlobalRegulariser(stiffness=True),
    ):
        with pytest.raises(ValueError, match="stiffness"):
            heun(ts, y0, key=key, regulariser=regulariser)
    backsolve = NeuralSDE(
        drift, diffusion, dt0=0.1, calculus="stratonovich", adjoint=dfx.BacksolveAdjoint()
    )
    with pytest.raises(TypeError, match="adjoint"):
        backsolve(ts, y0, key=key, regulariser=ode.LocalRegulariser("biased"))
    euler = NeuralSDE(drift, diffusion, dt0=0.1)
    with pytest.raises(TypeError, match="error estimate"):
        euler(ts, y0, key=key, regulariser=ode.LocalRegulariser())
    with pytest.raises(TypeError, match="solve_sde"):
        heun(ts, y0, key=key, regulariser=OnlyODE())
    with pytest.raises(TypeError, match="regulariser"):
        heun(ts, y0, key=key, regulariser="local")
    with pytest.raises(ValueError, match="sampling"):
        ode.LocalRegulariser("stratified")


@pytest.mark.slow  # default-run budget: the first test covers jit + vmap over samples
def test_jit_vmap_over_samples_keeps_the_adaptive_solve(x64):
    """sample() with the local regulariser, jitted: the samples' paths, steps and ys are those of
    the unregularised batch (the probe's key is apart from the Brownian tree's), NFE is theirs
    plus Heun's two probe stages, and each sample draws its own t_r."""
    sde = NeuralSDE(
        Drift(jnp.asarray(-1.2), jnp.asarray(0.7)),
        DiagonalDiffusion(jnp.array([0.4, 0.3])),
        dt0=0.1,
        calculus="stratonovich",
        stepsize_controller=PID,
        brownian_tol=TOL,
        max_steps=512,
    )
    y0, key = jnp.array([0.8, -0.4]), jax.random.key(3)
    regulariser = ode.LocalRegulariser()

    @jax.jit
    def run(key):
        batch = sde.sample(TS, y0, key=key, num_samples=4, regulariser=regulariser)
        plain = sde.sample(TS, y0, key=key, num_samples=4)
        return batch, plain

    batch, plain = run(key)
    np.testing.assert_array_equal(batch.ys, plain.ys)
    np.testing.assert_array_equal(batch.num_steps, plain.num_steps)
    np.testing.assert_array_equal(batch.nfe, plain.nfe + 2)
    assert len(set(np.asarray(batch.probe_time).tolist())) == 4
    assert np.all(np.isfinite(batch.error_estimate)) and np.all(batch.error_estimate > 0)
