"""PINN problems as data: benchmark residuals vanish on exact solutions, losses are the weighted
sums of mean squared residuals, weights and parameters are data (one compile for a sweep)."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._problems import (
    PINNProblem,
    Term,
    allen_cahn,
    burgers,
    convection,
    dirichlet,
    heat,
    initial,
    neumann,
    periodic,
    poisson,
)


def _points(names, n, low, high, seed=0):
    """Uniform points in the box [low, high] for each term (NumPy: no compile)."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(low, float), np.asarray(high, float)
    return {name: low + (high - low) * rng.uniform(size=(n, low.size)) for name in names}


def _residuals(problem, u, pts):
    """The residuals in one compiled program (eagerly, every vmapped jvp dispatches alone)."""
    return jax.jit(lambda p: problem.residuals(u, p))(pts)


def _max_abs(residuals):
    return {k: float(jnp.max(jnp.abs(v))) for k, v in residuals.items()}


def test_convection_exact_solution(x64):
    beta = 30.0
    problem = convection(beta)
    assert problem.names == ("pde", "ic", "bc")
    pts = _points(problem.names, 64, [0.0, 0.0], [1.0, 2 * np.pi])
    pts["bc"][:, 1] = 0.0  # the left side, compared with x = 2 pi
    # The exact solution, and one of the wrong speed, whose residual is (beta - 20) cos(x - 20 t).
    res, wrong = jax.jit(
        lambda p: (
            problem.residuals(lambda x: jnp.sin(x[1] - beta * x[0]), p),
            problem.residuals(lambda x: jnp.sin(x[1] - 20.0 * x[0]), p)["pde"],
        )
    )(pts)
    assert res["bc"].shape == (64, 1)
    errors = _max_abs(res)
    assert errors["pde"] <= 1e-12 and errors["ic"] <= 1e-14 and errors["bc"] <= 1e-12, errors
    t, x = pts["pde"].T
    np.testing.assert_allclose(wrong, 10.0 * np.cos(x - 20.0 * t), rtol=1e-12, atol=1e-12)


def test_heat_exact_solution(x64):
    kappa, k = 0.3, 2.0
    problem = heat(lambda s: jnp.sin(k * s[0]), kappa)
    pts = _points(problem.names, 64, [0.0, 0.0], [1.0, np.pi])
    pts["bc"][:, 1] = np.where(np.arange(64) % 2 == 0, 0.0, np.pi)

    def u(x):
        return jnp.exp(-kappa * k**2 * x[0]) * jnp.sin(k * x[1])

    errors = _max_abs(_residuals(problem, u, pts))
    assert max(errors.values()) <= 1e-14, errors


def test_poisson_exact_solution(x64):
    def u(x):
        return jnp.sin(jnp.pi * x[0]) * jnp.sin(jnp.pi * x[1])

    problem = poisson(lambda x: 2 * np.pi**2 * u(x))
    pts = _points(problem.names, 64, [0.0, 0.0], [1.0, 1.0])
    side, b = np.arange(64) % 4, pts["bc"]  # a quarter of the points on each side
    b[side == 0, 0], b[side == 1, 0], b[side == 2, 1], b[side == 3, 1] = 0.0, 1.0, 0.0, 1.0
    errors = _max_abs(_residuals(problem, u, pts))
    assert errors["pde"] <= 1e-12 and errors["bc"] <= 1e-15, errors


def test_burgers_conditions_and_hand_computed_residual(x64):
    nu = 0.01 / math.pi
    problem = burgers()
    pts = _points(problem.names, 64, [0.0, -1.0], [1.0, 1.0])
    pts["bc"][:, 1] = np.where(np.arange(64) % 2 == 0, -1.0, 1.0)

    def u(x):  # meets u(0, x) = -sin(pi x) and u(t, +-1) = 0
        return -jnp.sin(jnp.pi * x[1]) * jnp.exp(-x[0])

    res = _residuals(problem, u, pts)
    assert float(jnp.max(jnp.abs(res["ic"]))) <= 1e-15
    assert float(jnp.max(jnp.abs(res["bc"]))) <= 1e-15
    t, x = pts["pde"].T
    s, c, e = np.sin(np.pi * x), np.cos(np.pi * x), np.exp(-t)
    # u_t = s e, u u_x = (-s e)(-pi c e), u_xx = pi^2 s e.
    expected = s * e + np.pi * s * c * e**2 - nu * np.pi**2 * s * e
    np.testing.assert_allclose(res["pde"], expected, rtol=1e-12, atol=1e-14)


def test_allen_cahn_conditions_and_hand_computed_residual(x64):
    problem = allen_cahn()
    pts = _points(problem.names, 32, [0.0, -1.0], [1.0, 1.0])
    pts["bc"][:, 1] = -1.0

    def u0(x):  # the initial condition at every time: the "ic" term vanishes
        return x[1] ** 2 * jnp.cos(jnp.pi * x[1])

    def u(x):  # 2-periodic in x with its derivative: the periodic term (u and u_x) vanishes
        return jnp.exp(-x[0]) * jnp.cos(jnp.pi * x[1])

    ic, res = jax.jit(lambda p: (problem.residuals(u0, p)["ic"], problem.residuals(u, p)))(pts)
    assert float(jnp.max(jnp.abs(ic))) <= 1e-15
    assert res["bc"].shape == (32, 2)
    assert float(jnp.max(jnp.abs(res["bc"]))) <= 1e-13
    t, x = pts["pde"].T
    v = np.exp(-t) * np.cos(np.pi * x)
    expected = -v + 1e-4 * np.pi**2 * v + 5 * (v**3 - v)
    np.testing.assert_allclose(res["pde"], expected, rtol=1e-12, atol=1e-14)


def test_condition_builders(x64):
    def u(y):
        return y[0] ** 2 + 3 * y[1]

    @jax.jit
    def residuals(x):
        return (
            dirichlet(lambda y: y[0] ** 2)(u, x),
            neumann(3.0, jnp.array([0.0, 1.0]))(u, x),
            neumann(0.0, lambda y: jnp.array([1.0, 0.0]))(u, x),  # d/dx0 u = 2 x0
            # The initial term sets the time (axis 0) to t0 and hands u0 the space coordinates.
            initial(lambda s: 3 * s[0], t0=0.5)(u, x),
            initial(0.0, time_axis=1)(u, x),  # time last: u(0.3, 0) = 0.09
            # Periodic along the shift (0, 2) with two derivatives: u(x) - u(x + s), then
            # the first and second derivatives in x1 (3 and 0 on both sides).
            periodic(jnp.array([0.0, 2.0]), orders=2)(u, x),
        )

    got = residuals(jnp.array([0.3, -0.2]))
    expected = (-0.6, 0.0, 0.6, 0.25, 0.09, [-6.0, 0.0, 0.0])
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, atol=1e-14)


def test_loss_is_the_weighted_sum(x64):
    problem = PINNProblem(
        (Term("a", lambda u, x: u(x) - 1.0), Term("b", dirichlet(0.0), weight=0.5))
    )

    def u(x):
        return x[0] * x[1]

    pts = {"a": np.array([[1.0, 2.0], [3.0, 0.0]]), "b": np.array([[2.0, 2.0]])}
    # Term "a": residuals 1, -1 -> mean square 1; term "b": residual 4 -> 16.
    (t0, losses), (t1, _), (t2, _) = jax.jit(
        lambda p: (
            problem.loss(u, p),
            problem.loss(u, p, {"a": 3.0}),  # "b" keeps its own weight
            problem.loss(u, p, {"a": 2.0, "b": 0.25}),
        )
    )(pts)
    assert float(losses["a"]) == 1.0 and float(losses["b"]) == 16.0
    assert float(t0) == 1.0 + 0.5 * 16.0
    assert float(t1) == 3.0 + 0.5 * 16.0
    assert float(t2) == 2.0 + 4.0


def test_loss_jits_once_and_vmaps_over_weights(x64):
    problem = burgers()
    pts = _points(problem.names, 16, [0.0, -1.0], [1.0, 1.0])

    def u(x):
        return jnp.tanh(x[0] + 2 * x[1])

    traces = []

    @jax.jit
    def total(weights):
        traces.append(1)
        return problem.loss(u, pts, weights)

    ones = {n: jnp.asarray(1.0) for n in problem.names}
    _, losses = total(ones)
    losses = {n: float(v) for n, v in losses.items()}
    for w in ([1.0, 2.0, 3.0], [0.5, 0.0, 7.0]):
        weights = dict(zip(problem.names, map(jnp.asarray, w), strict=True))
        expected = sum(wi * losses[n] for wi, n in zip(w, problem.names, strict=True))
        np.testing.assert_allclose(total(weights)[0], expected, rtol=1e-13)
    assert len(traces) == 1
    batch = {n: np.linspace(0.0, 1.0, 5) * (i + 1) for i, n in enumerate(problem.names)}
    got = jax.vmap(lambda w: total(w)[0])(batch)
    expected = sum(batch[n] * losses[n] for n in problem.names)
    np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_parameters_are_data(x64):
    # One compiled loss over a batch of wave speeds: zero exactly at the solution's own speed.
    pts = _points(("pde", "ic", "bc"), 16, [0.0, 0.0], [1.0, 2 * np.pi])

    def pde_loss(beta):
        return convection(beta).loss(lambda x: jnp.sin(x[1] - 10.0 * x[0]), pts)[1]["pde"]

    got = jax.jit(jax.vmap(pde_loss))(jnp.array([10.0, 12.0]))
    t, x = pts["pde"].T
    assert float(got[0]) <= 1e-24
    np.testing.assert_allclose(got[1], np.mean((2 * np.cos(x - 10 * t)) ** 2), rtol=1e-12)


class _Wave(eqx.Module):
    a: jax.Array
    b: jax.Array

    def __call__(self, x):
        return self.a * jnp.sin(x[1] - self.b * x[0])


def test_term_gradients_closed_form(x64):
    beta, a, b = 3.0, 1.5, 2.0
    problem = convection(beta)
    pts = _points(problem.names, 16, [0.0, 0.0], [1.0, 2 * np.pi])
    pts["bc"][:, 1] = 0.0
    grads = eqx.filter_jit(problem.term_gradients)(_Wave(jnp.asarray(a), jnp.asarray(b)), pts)
    assert set(grads) == set(problem.names)
    # pde: r = a (beta - b) cos(x - b t), L = mean r^2 -> dL/da = 2 a (beta - b)^2 mean cos^2.
    t, x = pts["pde"].T
    expected = 2 * a * (beta - b) ** 2 * np.mean(np.cos(x - b * t) ** 2)
    np.testing.assert_allclose(grads["pde"].a, expected, rtol=1e-12)
    # ic: r = (a - 1) sin x at t = 0 -> dL/da = 2 (a - 1) mean sin^2, and b plays no part.
    s = np.sin(pts["ic"][:, 1])
    np.testing.assert_allclose(grads["ic"].a, 2 * (a - 1) * np.mean(s**2), rtol=1e-12)
    assert float(grads["ic"].b) == 0.0
    # bc: a 2 pi-periodic wave meets the periodic condition for every a and b.
    assert abs(float(grads["bc"].a)) <= 1e-14 and abs(float(grads["bc"].b)) <= 1e-14


def test_bad_input():
    with pytest.raises(ValueError, match="distinct"):
        PINNProblem((Term("a", dirichlet()), Term("a", dirichlet())))
    problem = burgers()
    pts = _points(problem.names, 4, [0.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="missing"):
        problem.loss(lambda x: x[0], {"pde": pts["pde"]})
    with pytest.raises(ValueError, match="unknown terms"):
        problem.loss(lambda x: x[0], pts, {"pd": 1.0})
    with pytest.raises(ValueError, match="weight"):
        Term("a", dirichlet(), weight=-1.0)
    with pytest.raises(ValueError, match="nu"):
        burgers(-0.1)
    with pytest.raises(ValueError, match="kappa"):
        heat(0.0, kappa=float("nan"))
    with pytest.raises(ValueError, match="shift"):
        periodic(jnp.zeros(2))


@pytest.mark.wrong_argument_types
def test_bad_types():
    with pytest.raises(TypeError, match="residual"):
        Term("a", 3.0)
    with pytest.raises(TypeError, match="name"):
        Term("", dirichlet())
    with pytest.raises(TypeError, match="points"):
        burgers().loss(lambda x: x[0], [jnp.ones((2, 2))] * 3)
    pts = _points(("pde", "ic", "bc"), 4, [0.0, -1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="scalar"):
        burgers().loss(lambda x: x[0], pts, {"pde": jnp.ones(2)})
    with pytest.raises(ValueError, match=r"points\['ic'\]"):
        burgers().loss(lambda x: x[0], {**pts, "ic": jnp.ones(3)})
