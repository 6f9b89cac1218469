"""Solver-heuristic regularisers: exactness on polynomials, closed forms, sums, gradients.

Compilation dominates the cost of these tests, so each test jits one function that computes
everything it checks; further tableaux and adjoints are checked with ``-m slow``.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import ode
from jaxsolve.ode._regularisers import local_probe
from jaxsolve.ode._solver_tools import InstrumentedSolver, error_norm_fn


class Monomial(eqx.Module):
    """f(t, y) = t^k (for every component, t > 0): the solution is a polynomial of degree k + 1.

    The degree is an array, so one compilation serves every degree.
    """

    degree: jax.Array

    def __call__(self, t, y, args):
        return jnp.ones_like(y) * t**self.degree


class Linear(eqx.Module):
    rates: jax.Array

    def __call__(self, t, y, args):
        return self.rates * y


class Nonlinear(eqx.Module):
    """f(t, y) = a y + b sin(y) + c t: smooth in its parameters, not integrated exactly."""

    a: jax.Array
    b: jax.Array
    c: jax.Array

    def __call__(self, t, y, args):
        return self.a * y + self.b * jnp.sin(y) + self.c * t


def quadrature_exact_degree(tableau):
    """Smallest m with sum_i beta_i c_i^m != 0: the embedded error of y' = t^k vanishes iff k < m.

    Over a step [t, t+h] the error estimate of y' = t^k is h sum_i beta_i (t + c_i h)^k
    = h sum_m C(k, m) t^(k-m) h^m sum_i beta_i c_i^m, independent of the solver code.
    """
    c = np.concatenate([[0.0], np.asarray(tableau.c, float)])
    beta = np.asarray(tableau.b_error, float)
    m = 0
    while abs(np.sum(beta * c**m)) < 1e-12:
        m += 1
    return m


def monomial_error(tableau, degree, t, h):
    """Closed form of the embedded error estimate of y' = t^k over [t, t + h] (see above)."""
    c = np.concatenate([[0.0], np.asarray(tableau.c, float)])
    beta = np.asarray(tableau.b_error, float)
    return h * np.sum(beta * (t + c * h) ** degree)


# Tsit5 runs by default; the other tableaux are the same code path, checked with -m slow.
SOLVERS = [
    dfx.Tsit5(),
    pytest.param(dfx.Bosh3(), marks=pytest.mark.slow),
    pytest.param(dfx.Dopri5(), marks=pytest.mark.slow),
    pytest.param(dfx.Dopri8(), marks=pytest.mark.slow),
    pytest.param(dfx.Heun(), marks=pytest.mark.slow),
]


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_error_regularisers_vanish_exactly_on_polynomials_within_order(x64, solver):
    top = quadrature_exact_degree(solver.tableau)
    assert top >= 1
    # Large steps keep the error of the first inexact degree far above rounding (Dopri8's error
    # is O(h^9)).
    t0, h, n_steps = 0.25, 0.5, 4
    ts = jnp.linspace(t0, t0 + h * n_steps, 5)
    y0 = jnp.array([0.5, -1.0])
    key = jax.random.PRNGKey(0)

    @jax.jit
    def both(degree_field):
        node = ode.NeuralODE(degree_field, solver, dfx.ConstantStepSize(), dt0=h)
        glob = node(ts, y0, regulariser=ode.GlobalRegulariser())
        loc = node(ts, y0, regulariser=ode.LocalRegulariser(), key=key)
        return glob.error_estimate, loc.error_estimate, loc.probe_time

    starts = t0 + h * np.arange(n_steps)
    for degree in range(top + 1):
        glob, loc, t_r = both(Monomial(jnp.array(float(degree))))
        if degree < top:
            # Exact up to rounding of O(1e-16) per stage.
            assert float(glob) < 1e-13 and float(loc) < 1e-13, (degree, glob, loc)
        else:
            # Every component has the same error, so the RMS norm is its absolute value.
            expected = sum(abs(monomial_error(solver.tableau, degree, t, h)) * h for t in starts)
            expected_loc = abs(monomial_error(solver.tableau, degree, float(t_r), h)) * h
            assert expected > 1e-8 and expected_loc > 1e-10
            np.testing.assert_allclose(glob, expected, rtol=1e-8)
            np.testing.assert_allclose(loc, expected_loc, rtol=1e-8)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_stiffness_estimate_closed_forms(x64, solver):
    """For y' = λy every step's estimate is exactly h|λ| (for any pair of stages, since
    f(Y_s) - f(Y_{s-1}) = λ(Y_s - Y_{s-1})), so R_S = |λ| (t1 - t0). A field without
    y-dependence has k_s = k_{s-1} when c_s = c_{s-1} (Tsit5, Dopri5, Dopri8): zero. With PID
    tolerance scaling, the error regulariser of an exactly integrated polynomial is zero to
    rounding and clearly positive one degree up."""
    ts = jnp.linspace(0.25, 3.25, 7)
    y0 = jnp.array([1.0, 2.0])
    ctrl = dfx.PIDController(rtol=1e-6, atol=1e-8)
    top = quadrature_exact_degree(solver.tableau)

    @jax.jit
    def run(field):
        # Heun (second order) needs ~5000 steps here at rate 4: the default max_steps = 4096
        # stopped the solve, and its partial sum used to come back as a number (now NaN).
        glob = ode.NeuralODE(field, solver, ctrl, max_steps=16384)(
            ts, y0, regulariser=ode.GlobalRegulariser(stiffness=True)
        )
        return glob.error_estimate, glob.stiffness_estimate

    _, glob = run(Linear(jnp.array([-1.7, -1.7])))
    # Y_s - Y_{s-1} is a difference of two approximations of y(t + h); Dopri8's last stages agree
    # to ~1e-8 relative at these steps, so rounding limits its quotient to ~1e-16 / 1e-8.
    np.testing.assert_allclose(glob, 1.7 * 3.0, rtol=1e-8 if type(solver) is dfx.Dopri8 else 1e-12)
    _, glob = run(Linear(jnp.array([-0.5, -4.0])))
    assert 0.5 * 3.0 < float(glob) < 4.0 * 3.0  # a quotient between the two rates
    err_exact, stiff_exact = run(Monomial(jnp.array(float(top - 1))))
    err_next, _ = run(Monomial(jnp.array(float(top))))
    assert float(err_exact) < 1e-8 < 1e-3 < float(err_next)
    c = np.concatenate([[0.0], np.asarray(solver.tableau.c)])
    if c[-1] == c[-2]:
        assert float(stiff_exact) == 0.0


def test_global_sums_equal_a_replay_of_the_accepted_steps(x64):
    """R_E = Σ E_n |h_n| and R_S = Σ h_n|λ_n| over accepted steps only, with E_n the controller's
    own scaled error and λ_n Hairer's estimate; the extra state does not change the steps."""
    field = Nonlinear(jnp.array(-0.8), jnp.array(1.5), jnp.array(0.4))
    ctrl = dfx.PIDController(rtol=1e-4, atol=1e-6)
    ts = jnp.linspace(0.0, 4.0, 9)
    y0 = jnp.array([1.0, -2.0, 0.3])
    tsit5 = dfx.Tsit5()
    term = dfx.ODETerm(field)

    @jax.jit
    def solves(y0):
        node = ode.NeuralODE(field, tsit5, ctrl)
        plain = node(ts, y0)
        glob = node(ts, y0, regulariser=ode.GlobalRegulariser(stiffness=True))
        # Reference: diffrax's accepted steps (same first step), each replayed on its own below.
        t_next, _ = ctrl.init(term, 0.0, 4.0, y0, None, None, tsit5.func, 5)
        steps = dfx.diffeqsolve(
            term,
            InstrumentedSolver(tsit5),
            0.0,
            4.0,
            t_next,
            y0,
            saveat=dfx.SaveAt(t0=True, steps=True),
            stepsize_controller=ctrl,
            max_steps=64,
        )
        return plain, glob, steps.ts, steps.ys, steps.stats["num_accepted_steps"]

    plain, glob, t_acc, y_acc, n = solves(y0)
    assert int(glob.num_rejected_steps) > 0  # the replay must leave out rejected steps
    assert int(plain.num_steps) == int(glob.num_steps) and int(plain.nfe) == int(glob.nfe)
    np.testing.assert_array_equal(plain.ys, glob.ys)
    n = int(n)
    assert n == int(glob.num_accepted_steps)

    @jax.jit
    def replay(t_a, t_b, y):
        state = InstrumentedSolver(tsit5).init(term, t_a, t_b, y, None)
        y1, err, dense, _, _ = tsit5.step(term, t_a, t_b, y, None, state, False)
        # Hairer's estimate ||f(y1) - f(g6)|| / ||y1 - g6|| times h, with Tsit5's last stage at
        # y1 = y0 + sum_i b_i k_i and g6 = y0 + sum_i a_6i k_i.
        k = dense["k"]
        weights = np.asarray(tsit5.tableau.b_sol) - np.append(tsit5.tableau.a_lower[-2], [0, 0])
        dy = jnp.tensordot(jnp.asarray(weights), k, axes=1)
        stiff = jnp.linalg.norm(k[6] - k[5]) / jnp.linalg.norm(dy)
        return error_norm_fn(ctrl)(y, y1, err) * (t_b - t_a), stiff

    parts = [replay(t_acc[i], t_acc[i + 1], y_acc[i]) for i in range(n)]
    np.testing.assert_allclose(glob.error_estimate, sum(float(e) for e, _ in parts), rtol=1e-10)
    np.testing.assert_allclose(glob.stiffness_estimate, sum(float(s) for _, s in parts), rtol=1e-10)
    # Accepted steps have E_n < 1, so the sum is below the time span.
    assert 0.0 < float(glob.error_estimate) < 4.0


@pytest.mark.slow  # default-run budget; the local regulariser's gradient test stays
def test_local_probe_starts_from_the_solution(x64):
    """The probe starts from y(t_r): check against the closed form of y' = -y. Unbiased t_r is
    uniform in [t0, t1); biased t_r is the start of an accepted step."""
    ts = jnp.linspace(0.0, 2.0, 5)
    # A tight solve, and a probe step of dt0 = 0.2 (a PID controller starts with dt0 when given).
    # Purely absolute tolerances make the scaled error E = rms(error) / atol linear in y(t_r).
    node = ode.NeuralODE(
        Linear(jnp.array(-1.0)), dfx.Tsit5(), dfx.PIDController(rtol=0.0, atol=1e-11), dt0=0.2
    )

    @jax.jit
    @jax.vmap
    def run(key):
        unbiased = node(ts, jnp.ones(1), regulariser=ode.LocalRegulariser("unbiased"), key=key)
        biased = node(ts, jnp.ones(1), regulariser=ode.LocalRegulariser("biased"), key=key)
        return (
            unbiased.probe_time,
            unbiased.error_estimate,
            biased.probe_time,
            biased.error_estimate,
        )

    t_u, e_u, t_b, e_b = run(jax.random.split(jax.random.PRNGKey(1), 6))
    # One Tsit5 step of y' = -y is linear in its starting value: E h / y(t_r) is a constant of
    # the method, that of a probe from y = 1.
    const, _, _, _ = local_probe(
        node.vector_field,
        node.solver,
        node.stepsize_controller,
        0.2,
        0.0,
        jnp.ones(1),
        None,
        2.0,
        stiffness=False,
    )
    assert float(const) > 1e-9
    assert np.all((t_u >= 0.0) & (t_u < 2.0)) and np.all((t_b >= 0.0) & (t_b < 2.0))
    assert len(set(np.asarray(t_b).tolist())) > 1  # different keys pick different steps
    np.testing.assert_allclose(e_u / np.exp(-t_u), const, rtol=1e-8)
    np.testing.assert_allclose(e_b / np.exp(-t_b), const, rtol=1e-8)


def test_biased_probe_is_uniform_over_accepted_steps():
    """Reservoir sampling picks each of the 8 accepted steps' starts with probability 1/8."""
    ts = jnp.linspace(0.0, 2.0, 3)
    node = ode.NeuralODE(Linear(jnp.array(-1.0)), dfx.Tsit5(), dfx.ConstantStepSize(), dt0=0.25)
    keys = jax.random.split(jax.random.PRNGKey(0), 800)
    picks = jax.jit(
        jax.vmap(
            lambda k: (
                node(ts, jnp.ones(1), regulariser=ode.LocalRegulariser("biased"), key=k).probe_time
            )
        )
    )(keys)
    index = np.rint(np.asarray(picks) / 0.25).astype(int)
    np.testing.assert_allclose(np.asarray(picks), index * 0.25, atol=1e-6)
    counts = np.bincount(index, minlength=8)
    assert counts.shape == (8,)
    # Pearson chi-square with 7 degrees of freedom: P(X > 24.3) = 0.001.
    chi2 = np.sum((counts - 100.0) ** 2 / 100.0)
    assert chi2 < 24.3, counts


def _fd_check(terms):
    p = jnp.array([-0.6, 1.2, 0.5])
    jac = np.asarray(jax.jit(jax.jacrev(terms))(p))
    value = jax.jit(terms)
    # The error estimate is a small difference of O(h f) stages, so its rounding error is
    # ~1e-16 * h|f|: a large step keeps it well above FD's noise ~rounding / eps.
    eps = 1e-5
    fd = np.stack(
        [(value(p + eps * e) - value(p - eps * e)) / (2 * eps) for e in jnp.eye(3)], axis=1
    )
    assert np.all(np.asarray(value(p)) > 0)
    np.testing.assert_allclose(jac, fd, rtol=1e-6, atol=1e-12)
    assert np.all(np.abs(jac[:, :2]) > 1e-8)


def _node(p):
    return ode.NeuralODE(Nonlinear(p[0], p[1], p[2]), dfx.Tsit5(), dfx.ConstantStepSize(), dt0=0.5)


TS_FD = jnp.linspace(0.0, 1.5, 4)
Y0_FD = jnp.array([0.7, -0.4])


def test_regulariser_gradients_match_finite_differences(x64):
    """Fixed steps make each regulariser a smooth function of the parameters: reverse-mode AD
    equals central FD. (With a PID controller the step sizes also move with the parameters; like
    the papers and diffrax, the regulariser is differentiated with the steps held fixed.)"""

    def terms(p):
        glob = _node(p)(TS_FD, Y0_FD, regulariser=ode.GlobalRegulariser(stiffness=True))
        return jnp.stack([glob.error_estimate, glob.stiffness_estimate])

    _fd_check(terms)


@pytest.mark.slow
def test_local_regulariser_gradients_match_finite_differences(x64):
    def terms(p):
        key = jax.random.PRNGKey(5)
        unbiased = _node(p)(TS_FD, Y0_FD, regulariser=ode.LocalRegulariser(stiffness=True), key=key)
        biased = _node(p)(TS_FD, Y0_FD, regulariser=ode.LocalRegulariser("biased"), key=key)
        return jnp.stack(
            [unbiased.error_estimate, unbiased.stiffness_estimate, biased.error_estimate]
        )

    _fd_check(terms)
    # The local stiffness estimate of y' = λy is h_r|λ| for the probe step h_r = dt0.
    node = ode.NeuralODE(Linear(jnp.array(-1.7)), dfx.Tsit5(), dfx.ConstantStepSize(), dt0=0.5)
    sol = node(
        TS_FD, Y0_FD, regulariser=ode.LocalRegulariser(stiffness=True), key=jax.random.PRNGKey(5)
    )
    np.testing.assert_allclose(sol.stiffness_estimate, 0.5 * 1.7, rtol=1e-12)


@pytest.mark.slow
def test_local_regulariser_with_backsolve_adjoint(x64):
    """The unbiased local regulariser only needs y(t_r) as a saved output: BacksolveAdjoint."""
    ts = jnp.linspace(0.0, 2.0, 5)
    y0 = jnp.array([0.7, -0.4])
    key = jax.random.PRNGKey(2)
    ctrl = dfx.PIDController(rtol=1e-9, atol=1e-9)

    def loss(p, adjoint):
        node = ode.NeuralODE(Nonlinear(p[0], p[1], p[2]), dfx.Tsit5(), ctrl, adjoint)
        sol = node(ts, y0, regulariser=ode.LocalRegulariser(), key=key)
        return sol.error_estimate * 1e3 + jnp.sum(sol.ys**2)

    p = jnp.array([-0.6, 1.2, 0.5])
    g_back = jax.jit(jax.grad(lambda p: loss(p, dfx.BacksolveAdjoint())))(p)
    g_disc = jax.jit(jax.grad(lambda p: loss(p, dfx.RecursiveCheckpointAdjoint())))(p)
    np.testing.assert_allclose(g_back, g_disc, rtol=1e-5)


@pytest.mark.wrong_argument_types
def test_regulariser_errors():
    ts = jnp.linspace(0.0, 1.0, 3)
    y0 = jnp.ones(2)
    field = Linear(jnp.array(-1.0))
    key = jax.random.PRNGKey(0)
    backsolve = ode.NeuralODE(field, adjoint=dfx.BacksolveAdjoint())
    with pytest.raises(TypeError, match="discretise-then-optimise"):
        backsolve(ts, y0, regulariser=ode.GlobalRegulariser())
    with pytest.raises(TypeError, match="discretise-then-optimise"):
        backsolve(ts, y0, regulariser=ode.LocalRegulariser("biased"), key=key)
    with pytest.raises(TypeError, match="explicit Runge-Kutta"):
        ode.NeuralODE(field, dfx.Kvaerno5())(
            ts, y0, regulariser=ode.GlobalRegulariser(stiffness=True)
        )
    euler = ode.NeuralODE(field, dfx.Euler(), dfx.ConstantStepSize(), dt0=0.1)
    with pytest.raises(TypeError, match="error estimate"):
        euler(ts, y0, regulariser=ode.GlobalRegulariser())
    with pytest.raises(TypeError, match="error estimate"):
        euler(ts, y0, regulariser=ode.LocalRegulariser(), key=key)
    with pytest.raises(ValueError, match="key"):
        ode.NeuralODE(field)(ts, y0, regulariser=ode.LocalRegulariser())
    with pytest.raises(ValueError, match="sampling"):
        ode.LocalRegulariser("sometimes")
    with pytest.raises(ValueError, match="error=True or stiffness=True"):
        ode.GlobalRegulariser(error=False)
    with pytest.raises(TypeError, match="regulariser must be"):
        ode.NeuralODE(field)(ts, y0, regulariser="global")
