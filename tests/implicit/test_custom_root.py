"""custom_root: implicit derivatives of a black-box solver from its optimality conditions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import RUNTIME_ERRORS, normal


def _data():
    x = normal(0, (30, 5))
    y = x @ jnp.arange(1.0, 6.0) + 0.1 * normal(1, (30,))
    return x, y


def _ridge_optimality(w, lam, x, y):
    # Gradient of 0.5 ||X w - y||^2 + 0.5 lam ||w||^2.
    return x.T @ (x @ w - y) + lam * w


def _gradient_descent(w0, lam, x, y):
    """A solver that cannot be differentiated through: a while loop with early stopping."""
    step = 1.0 / (jnp.linalg.norm(x, 2) ** 2 + lam)

    def cond(c):
        w, k = c
        return (jnp.max(jnp.abs(_ridge_optimality(w, lam, x, y))) > 1e-12) & (k < 20000)

    def body(c):
        w, k = c
        return w - step * _ridge_optimality(w, lam, x, y), k + 1

    return jax.lax.while_loop(cond, body, (w0, 0))[0]


def test_ridge_derivative_in_regularisation_strength(x64):
    x, y = _data()
    lam = 2.5
    a = x.T @ x + lam * jnp.eye(5)
    w_exact = jnp.linalg.solve(a, x.T @ y)
    # w(lam) = A(lam)^{-1} X^T y  =>  dw/dlam = -A^{-1} w  and  d2w/dlam2 = 2 A^{-2} w.
    dw = -jnp.linalg.solve(a, w_exact)
    d2w = 2 * jnp.linalg.solve(a, jnp.linalg.solve(a, w_exact))

    # Forward mode, backward system solved by CG (the optimality conditions are a gradient).
    cg_solver = ji.custom_root(_ridge_optimality, backward=ji.ImplicitDiff(ji.CG()))(
        _gradient_descent
    )
    w, w_dot = jax.jit(
        lambda lam: jax.jvp(lambda t: cg_solver(jnp.zeros(5), t, x, y), (lam,), (1.0,))
    )(lam)
    np.testing.assert_allclose(w, w_exact, atol=1e-10)
    np.testing.assert_allclose(w_dot, dw, atol=1e-9)

    # Reverse mode and forward-over-reverse (a Hessian), on a scalar projection c . w(lam).
    solver = cg_solver
    c = jnp.array([0.3, -1.0, 0.5, 2.0, -0.7])
    grad = jax.grad(lambda t: c @ solver(jnp.zeros(5), t, x, y))
    first, second = jax.jit(lambda lam: jax.jvp(grad, (lam,), (1.0,)))(lam)
    np.testing.assert_allclose(first, c @ dw, rtol=1e-9)
    np.testing.assert_allclose(second, c @ d2w, rtol=1e-8)


def test_derivatives_in_the_data_and_aux_passthrough(x64):
    x, y = _data()
    lam = 0.7

    def solver_with_aux(w0, lam, x, y):
        w = jnp.linalg.solve(x.T @ x + lam * jnp.eye(5), x.T @ y)
        return w, {"gram_trace": jnp.trace(x.T @ x)}

    # Default backward: GMRES.
    solver = ji.custom_root(_ridge_optimality, has_aux=True)(solver_with_aux)

    def loss(x, y):
        w, aux = solver(jnp.zeros(5), lam, x, y)
        return jnp.sum(w**2) + 0.0 * aux["gram_trace"]

    def closed(x, y):
        return jnp.sum(jnp.linalg.solve(x.T @ x + lam * jnp.eye(5), x.T @ y) ** 2)

    g = jax.jit(jax.grad(loss, (0, 1)))(x, y)
    e = jax.grad(closed, (0, 1))(x, y)
    np.testing.assert_allclose(g[0], e[0], atol=1e-9)
    np.testing.assert_allclose(g[1], e[1], atol=1e-9)
    _, aux = solver(jnp.zeros(5), lam, x, y)
    np.testing.assert_allclose(aux["gram_trace"], jnp.sum(x**2), rtol=1e-12)


def test_custom_root_rejects_mismatched_conditions():
    solver = ji.custom_root(lambda w, lam: jnp.zeros(3))(lambda w0, lam: w0)
    with pytest.raises(
        ValueError, match=r"x is float32\[2\] but optimality_fn returned float32\[3\]"
    ):
        solver(jnp.zeros(2), 1.0)


def _picard_with_code(x0, a, steps):
    """``steps`` fixed-point steps on x = a cos x, and the solver's own verdict as a code."""
    x = jax.lax.fori_loop(0, steps, lambda _, x: a * jnp.cos(x), x0)
    done = jnp.abs(a * jnp.cos(x) - x) <= 1e-12
    return x, RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)


def _cos_root_grad(throw):
    solver = ji.custom_root(
        lambda x, a, steps: a * jnp.cos(x) - x,
        backward=ji.ImplicitDiff(ji.Picard(), rtol=1e-12, atol=1e-12, throw=throw),
        has_aux=True,
    )(_picard_with_code)
    return jax.grad(lambda a, steps: solver(jnp.zeros(()), a, steps)[0])


def test_a_code_in_aux_guards_the_derivatives(x64):
    # custom_root cannot see whether the solver converged; a solver that returns its code in
    # aux gets NaN derivatives where it failed (two steps: x_2 = a cos a, where the implicit
    # derivative would be a finite, wrong 0.747) and the closed form
    # dx/da = cos x / (1 + a sin x) where it converged.
    grads = jax.jit(jax.vmap(_cos_root_grad(False), (None, 0)))(0.5, jnp.array([2, 200]))
    x = 0.0
    for _ in range(200):
        x = 0.5 * np.cos(x)
    assert bool(jnp.isnan(grads[0])), grads
    np.testing.assert_allclose(grads[1], np.cos(x) / (1 + 0.5 * np.sin(x)), rtol=1e-10)


@pytest.mark.slow
def test_a_failure_code_in_aux_raises_with_throw(x64):
    with pytest.raises(RUNTIME_ERRORS, match="custom_root: a derivative was requested through"):
        jax.block_until_ready(jax.jit(_cos_root_grad(True))(0.5, 2))
