"""Bilevel optimisation: implicit, unrolled and penalty hypergradients, and the outer driver.

The oracle is ridge regression with one penalty per feature,
x*(lam) = (A^T A + diag(exp(lam)))^{-1} A^T b, whose validation-loss hypergradient has the
closed form dPhi/dlam_j = -exp(lam_j) x*_j (S^{-1} A_v^T (A_v x* - b_v))_j with
S = A^T A + diag(exp(lam)).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji
from jaxsolve.implicit._bilevel import (
    ImplicitHypergradient,
    OptaxSolver,
    PenaltyHypergradient,
    UnrolledHypergradient,
    bilevel_minimize,
    hypergradient,
)

from ._problems import RUNTIME_ERRORS, normal

D = 5


def _ridge():
    """Training and validation data; ``inner``/``outer`` objectives; closed forms."""
    a, b = normal(0, (40, D)), normal(1, (40,))
    av, bv = normal(2, (30, D)), normal(3, (30,))

    def inner(x, lam, args):
        return 0.5 * jnp.sum((a @ x - b) ** 2) + 0.5 * jnp.sum(jnp.exp(lam) * x**2)

    def outer(x, lam, args):
        return 0.5 * jnp.sum((av @ x - bv) ** 2)

    def solution(lam):
        return jnp.linalg.solve(a.T @ a + jnp.diag(jnp.exp(lam)), a.T @ b)

    def phi(lam):
        return outer(solution(lam), lam, None)

    def closed_grad(lam):
        x = solution(lam)
        s = a.T @ a + jnp.diag(jnp.exp(lam))
        return -jnp.exp(lam) * x * jnp.linalg.solve(s, av.T @ (av @ x - bv))

    lipschitz = float(jnp.linalg.norm(a, 2) ** 2)
    return inner, outer, solution, phi, closed_grad, lipschitz


def _central_differences(phi, lam, h=1e-5):
    eye = jnp.eye(lam.size)
    return jnp.stack([(phi(lam + h * e) - phi(lam - h * e)) / (2 * h) for e in eye])


def _solver(kind, lipschitz):
    if kind == "newton":
        return ImplicitHypergradient(rtol=1e-12, atol=1e-12)
    if kind == "anderson":
        # root_find iterates x + eta * (-grad G): gradient descent, Anderson-accelerated.
        return ImplicitHypergradient(
            ji.Anderson(), step_size=1 / (lipschitz + 3), max_steps=2000, rtol=1e-12, atol=1e-12
        )
    if kind == "optax":
        inner = OptaxSolver(optax.adam(0.1), max_steps=5000, rtol=1e-11, atol=1e-11)
        return ImplicitHypergradient(inner)

    # A user's own loop that returns only x: its stationarity is checked by the tolerances.
    def gradient_descent(inner_fn, x0, lam, args):
        grad = jax.grad(inner_fn)
        step = 1 / (lipschitz + jnp.max(jnp.exp(lam)))
        return jax.lax.fori_loop(0, 3000, lambda _, x: x - step * grad(x, lam, args), x0)

    return ImplicitHypergradient(gradient_descent, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["newton", "anderson", "optax", "user_loop"])
def test_implicit_hypergradient_matches_closed_form_and_finite_differences(x64, kind):
    inner, outer, solution, phi, closed_grad, lipschitz = _ridge()
    lam = 0.5 * normal(4, (D,))
    hg = jax.jit(
        lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=_solver(kind, lipschitz))
    )(lam)
    assert hg.inner.result == RESULTS.successful
    np.testing.assert_allclose(hg.inner.value, solution(lam), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(hg.value, phi(lam), rtol=1e-12)
    expected = closed_grad(lam)
    np.testing.assert_allclose(hg.grad, expected, rtol=1e-7, atol=1e-10)
    # The closed form itself against central differences of Phi (error O(h^2) ~ 1e-10).
    np.testing.assert_allclose(_central_differences(phi, lam), expected, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(hg.grad, _central_differences(phi, lam), rtol=1e-6, atol=1e-9)


def test_unrolled_hypergradient_converges_to_the_implicit_one(x64):
    # Strongly convex inner problem; K gradient steps of size 1/L from x0 = 0. The error of the
    # unrolled hypergradient falls monotonically with K, to the implicit (exact) one.
    inner, outer, solution, _, closed_grad, lipschitz = _ridge()
    lam = 0.5 * normal(4, (D,))
    # The implicit hypergradient, here with an exact inner solve (a user's solver).
    exact_solve = lambda f, x0, lam, args: solution(lam)
    method = ImplicitHypergradient(exact_solve, rtol=1e-10, atol=1e-10)
    exact = jax.jit(lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=method))(lam)
    np.testing.assert_allclose(exact.grad, closed_grad(lam), rtol=1e-9)
    step = 1 / (lipschitz + float(jnp.max(jnp.exp(lam))))
    ks = jnp.array([1, 2, 4, 8, 16, 32, 64])

    def unrolled(k):
        method = UnrolledHypergradient(num_steps=k, step_size=step, max_steps=64)
        return hypergradient(outer, inner, lam, jnp.zeros(D), method=method)

    # One compiled program for every K (a traced step count under a static max_steps).
    hgs = jax.jit(jax.vmap(unrolled))(ks)
    assert bool(jnp.all(hgs.inner.result == RESULTS.successful))
    np.testing.assert_array_equal(hgs.inner.num_steps, ks)
    errors = [float(e) for e in jnp.linalg.norm(hgs.grad - exact.grad, axis=1)]
    assert all(b < a for a, b in itertools.pairwise(errors)), errors
    # The masked scan is the plain one: K = 8 without max_steps gives the same hypergradient.
    plain = jax.jit(
        lambda lam: hypergradient(
            outer, inner, lam, jnp.zeros(D), method=UnrolledHypergradient(8, step_size=step)
        )
    )(lam)
    np.testing.assert_allclose(plain.grad, hgs.grad[3], rtol=1e-12)
    assert errors[0] > 1e-2 * float(jnp.linalg.norm(exact.grad)), errors
    assert errors[-1] < 1e-8, errors


def _quadratic_bilevel(gamma):
    """G = x^T H x / 2 - x^T B lam, F = |x - t|^2 / 2 + mu |lam|^2 / 2: x*(lam) = M lam with
    M = H^{-1} B, so lam* = (M^T M + mu I)^{-1} M^T t. The penalised problem
    F + gamma (G - min G) = F + gamma (x - M lam)^T H (x - M lam) / 2 is quadratic too."""
    h = jnp.array([[2.0, 0.5, 0.0], [0.5, 1.5, 0.3], [0.0, 0.3, 1.0]])
    b = jnp.array([[1.0, 0.0], [0.5, 1.0], [-0.3, 0.8]])
    t, mu = jnp.array([1.0, -2.0, 0.5]), 0.1
    m = jnp.linalg.solve(h, b)

    def inner(x, lam, args):
        return 0.5 * x @ h @ x - x @ (b @ lam)

    def outer(x, lam, args):
        return 0.5 * jnp.sum((x - t) ** 2) + 0.5 * mu * jnp.sum(lam**2)

    lam_star = jnp.linalg.solve(m.T @ m + mu * jnp.eye(2), m.T @ t)
    # Stationarity of the penalised problem in (x, lam): a 5 x 5 linear system.
    p = jnp.concatenate([jnp.eye(3), -m], axis=1)  # x - M lam = p @ (x, lam)
    hess = jnp.diag(jnp.array([1.0, 1.0, 1.0, mu, mu])) + gamma * p.T @ h @ p
    z = jnp.linalg.solve(hess, jnp.concatenate([t, jnp.zeros(2)]))
    hypergrad = lambda lam: m.T @ (m @ lam - t) + mu * lam  # the bilevel gradient, closed form
    lipschitz = float(jnp.linalg.eigvalsh(hess)[-1])  # of the penalised objective
    return inner, outer, lam_star, z[3:], hypergrad, lipschitz


def test_penalty_method_reaches_a_bilevel_stationary_point(x64):
    # V-PBGD with the paper's joint step on (x, lam) (optax.sgd with the x step size 1/L of the
    # penalised objective, one x step) and y warm-started: it converges to the penalised
    # problem's stationary point, which is O(1/gamma) from the bilevel solution. Both penalties
    # run in one vmapped program.
    problems = [_quadratic_bilevel(gamma) for gamma in (10.0, 100.0)]
    inner, outer, lam_star, _, hypergrad, _ = problems[0]
    gammas = jnp.array([10.0, 100.0])
    steps = jnp.array([1 / p[5] for p in problems])

    def run(gamma, step):
        method = PenaltyHypergradient(gamma, step, inner_step_size=0.4, inner_steps=5)
        optimizer = optax.sgd(step)
        return bilevel_minimize(
            outer,
            inner,
            jnp.zeros(2),
            jnp.zeros(3),
            optimizer=optimizer,
            num_steps=25000,
            method=method,
        )

    runs = jax.jit(jax.vmap(run))(gammas, steps)
    assert bool(jnp.all(runs.result == RESULTS.successful))
    np.testing.assert_allclose(runs.lam, jnp.stack([p[3] for p in problems]), atol=1e-9)
    biases = jnp.linalg.norm(runs.lam - lam_star, axis=1)
    assert bool(jnp.all(biases < 2.0 / gammas)), biases
    # The bilevel hypergradient (closed form) there is O(1/gamma) too.
    assert bool(jnp.all(jnp.linalg.norm(jax.vmap(hypergrad)(runs.lam), axis=1) < 1 / gammas))
    # The bias is of order 1/gamma: ten times the penalty, about a tenth of the distance.
    assert 5 < float(biases[0] / biases[1]) < 20, biases


def test_failed_inner_solve_gives_nan_or_raises(x64):
    inner, outer, _, _, _, _ = _ridge()
    lam = 0.5 * normal(4, (D,))
    # Three tiny gradient steps: far from the inner solution.
    failing = dict(solver=ji.Picard(), step_size=1e-4, max_steps=3)
    method = ImplicitHypergradient(**failing, throw=False)
    hg = jax.jit(lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=method))(lam)
    assert hg.inner.result == RESULTS.max_steps_reached
    assert bool(jnp.isnan(hg.value)) and bool(jnp.all(jnp.isnan(hg.grad)))
    with pytest.raises(RUNTIME_ERRORS, match="maximum number of steps was reached"):
        method = ImplicitHypergradient(**failing)
        jax.block_until_ready(
            jax.jit(lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=method))(lam)
        )


def test_failed_inner_loops_and_diverging_unrolled_steps_give_nan(x64):
    inner, outer, _, _, _, _ = _ridge()
    lam = 0.5 * normal(4, (D,))
    # An optax loop out of budget reports it, and so does a user loop that stops early.
    short = ImplicitHypergradient(OptaxSolver(optax.sgd(1e-4), max_steps=5), throw=False)
    hg = jax.jit(lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=short))(lam)
    assert hg.inner.result == RESULTS.max_steps_reached and bool(jnp.all(jnp.isnan(hg.grad)))
    early = ImplicitHypergradient(lambda f, x0, lam, args: x0 + 0.1, throw=False)
    hg = jax.jit(lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=early))(lam)
    assert hg.inner.result == RESULTS.max_steps_reached and bool(jnp.all(jnp.isnan(hg.grad)))
    # Unrolled steps that diverge (step far above 2/L) are non-finite, never a number.
    blowup = UnrolledHypergradient(num_steps=2000, step_size=10.0, throw=False)
    hg = jax.jit(lambda lam: hypergradient(outer, inner, lam, jnp.zeros(D), method=blowup))(lam)
    assert hg.inner.result == RESULTS.nonfinite and bool(jnp.all(jnp.isnan(hg.grad)))


def test_optax_loop_reports_a_nan_gradient_as_nonfinite(x64):
    # A gradient that is NaN at a finite iterate ends the loop at once (its test is False):
    # that is a non-finite model output, not an exhausted budget.
    inner = lambda x, lam, args: jnp.sum(jnp.sqrt(x)) + lam * jnp.sum(x**2)
    solver = OptaxSolver(optax.sgd(1e-2), max_steps=50)
    sol = jax.jit(lambda lam: solver(inner, -jnp.ones(3), lam, None))(1.0)
    assert sol.result == RESULTS.nonfinite and int(sol.num_steps) == 0
    assert bool(jnp.isnan(sol.residual))


def test_outer_loop_matches_the_closed_form_gradient_run(x64):
    # Tuning per-feature ridge penalties with Adam: the driver with implicit hypergradients
    # and warm-started inner solves follows the trajectory of Adam on the closed-form
    # gradient, and the validation loss drops.
    inner, outer, _, phi, closed_grad, _ = _ridge()
    optimizer, steps = optax.adam(0.1), 40
    method = ImplicitHypergradient(rtol=1e-12, atol=1e-12)
    run = jax.jit(
        lambda lam0: bilevel_minimize(
            outer, inner, lam0, jnp.zeros(D), optimizer=optimizer, num_steps=steps, method=method
        )
    )(jnp.zeros(D))

    def reference(carry, _):
        lam, state = carry
        updates, state = optimizer.update(closed_grad(lam), state, lam)
        return (optax.apply_updates(lam, updates), state), phi(lam)

    (lam_ref, _), values_ref = jax.lax.scan(
        reference, (jnp.zeros(D), optimizer.init(jnp.zeros(D))), None, length=steps
    )
    assert run.result == RESULTS.successful
    np.testing.assert_allclose(run.lam, lam_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(run.values, values_ref, rtol=1e-10)
    assert float(run.values[-1]) < float(run.values[0])
    # Warm starts: the first solve starts from zero, later ones from the last solution.
    assert int(run.inner_steps[-1]) <= int(run.inner_steps[0])


@pytest.mark.wrong_argument_types
def test_bad_arguments_raise_naming_them():
    inner = lambda x, lam, args: jnp.sum(x**2) + jnp.sum(lam * x)
    outer = lambda x, lam, args: jnp.sum(x)
    x0, lam = jnp.zeros(3), jnp.zeros(3)
    with pytest.raises(TypeError, match="lam must have a real floating dtype"):
        hypergradient(outer, inner, jnp.zeros(3, int), x0)
    with pytest.raises(ValueError, match="outer_fn\\(x, lam, args\\) must return a real floating"):
        hypergradient(lambda x, lam, args: x, inner, lam, x0)
    with pytest.raises(TypeError, match="inner_fn must be callable"):
        hypergradient(outer, "ridge", lam, x0)
    with pytest.raises((TypeError, ValueError), match="x = float32\\[4\\]"):
        hypergradient(outer, inner, lam, jnp.zeros(4))
    with pytest.raises(TypeError, match="method must be an AbstractHypergradient"):
        hypergradient(outer, inner, lam, x0, method=ji.Newton())
    with pytest.raises(ValueError, match="num_steps must be >= 1"):
        bilevel_minimize(outer, inner, lam, x0, optimizer=optax.sgd(0.1), num_steps=0)
    with pytest.raises(TypeError, match="optimizer must be an optax"):
        bilevel_minimize(outer, inner, lam, x0, optimizer="adam", num_steps=3)
    with pytest.raises(ValueError, match="UnrolledHypergradient num_steps must be >= 1"):
        UnrolledHypergradient(num_steps=0)
    with pytest.raises(ValueError, match="PenaltyHypergradient gamma must be positive"):
        PenaltyHypergradient(gamma=-1.0)
    with pytest.raises(ValueError, match="ImplicitHypergradient step_size must be positive"):
        ImplicitHypergradient(step_size=0.0)
    with pytest.raises(TypeError, match="ImplicitHypergradient solver must be"):
        ImplicitHypergradient(solver="newton")
    with pytest.raises(TypeError, match="OptaxSolver optimizer must be"):
        OptaxSolver("adam")
