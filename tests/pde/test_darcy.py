"""Darcy solver: second-order convergence on a manufactured solution, grid-independent iteration
counts, implicit gradients, result codes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg

from jaxsolve import RESULTS, pde


def _u(x, y):
    return jnp.sin(jnp.pi * x) * jnp.sin(2 * jnp.pi * y) * jnp.exp(x)


def _a(x, y):
    return 1.5 + jnp.sin(2 * jnp.pi * x) * jnp.cos(jnp.pi * y)


def _f(x, y):
    """-div(a grad u) of the closed forms above, by automatic differentiation (not the stencil)."""
    flux_x = lambda x, y: _a(x, y) * jax.grad(_u, 0)(x, y)
    flux_y = lambda x, y: _a(x, y) * jax.grad(_u, 1)(x, y)
    return -(jax.grad(flux_x, 0)(x, y) + jax.grad(flux_y, 1)(x, y))


@functools.partial(jax.jit, static_argnums=0)
def _manufactured(s):
    t = jnp.linspace(0.0, 1.0, s)
    x, y = jnp.meshgrid(t, t, indexing="ij")
    sol = pde.darcy_solve(_a(x, y), jax.vmap(jax.vmap(_f))(x, y))
    return jnp.max(jnp.abs(sol.u - _u(x, y))), sol.num_steps, sol.result


def test_second_order_convergence_on_a_manufactured_solution(x64):
    errs, steps = [], []
    for s in (17, 33, 65):
        err, k, result = _manufactured(s)
        assert result == RESULTS.successful
        errs.append(float(err))
        steps.append(int(k))
    orders = np.log2(np.asarray(errs[:-1]) / np.asarray(errs[1:]))
    assert np.all(np.abs(orders - 2.0) < 0.1), (errs, orders)
    # Fast-Poisson preconditioning: the iteration count does not grow with the grid.
    assert max(steps) - min(steps) <= 3, steps


def _direct_solve(a):
    """The same scheme assembled entry by entry as a sparse matrix, solved directly (float64)."""
    s = a.shape[0]
    n = s - 2
    h2 = (s - 1) ** 2
    index = -np.ones((s, s), int)
    index[1:-1, 1:-1] = np.arange(n * n).reshape(n, n)
    rows, cols, vals = [], [], []
    for i in range(1, s - 1):
        for j in range(1, s - 1):
            me = index[i, j]
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                face = 2 * a[i, j] * a[i + di, j + dj] / (a[i, j] + a[i + di, j + dj]) * h2
                rows.append(me), cols.append(me), vals.append(face)
                other = index[i + di, j + dj]
                if other >= 0:
                    rows.append(me), cols.append(other), vals.append(-face)
    matrix = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n * n, n * n))
    u = np.zeros((s, s))
    u[1:-1, 1:-1] = scipy.sparse.linalg.spsolve(matrix, np.ones(n * n)).reshape(n, n)
    return u


def test_piecewise_constant_coefficients_fno_contrast():
    """a in {3, 12} (the FNO fields): the float32 solution equals a sparse direct solve of the
    independently assembled scheme, is zero on the boundary, and the iterations stay near 20 at
    every resolution (preconditioned condition number <= 12/3)."""
    grf = pde.GaussianRandomField(2.0, 3.0, boundary="neumann", zero_mean=True)

    @functools.partial(jax.jit, static_argnums=1)
    def solve(key, s):
        a = jnp.where(grf.sample(key, (s, s)) >= 0, 12.0, 3.0)
        return a, pde.darcy_solve(a[None])

    for s in (33, 129):
        a, sol = solve(jax.random.PRNGKey(s), s)
        assert sol.result == RESULTS.successful and int(sol.num_steps) <= 25
        assert sol.u.shape == (1, s, s)
        exact = _direct_solve(np.asarray(a, np.float64))
        u = np.asarray(sol.u[0], np.float64)
        assert np.linalg.norm(u - exact) < 1e-5 * np.linalg.norm(exact)
        assert np.all(u[0] == 0) and np.all(u[-1] == 0) and np.all(u[:, 0] == 0)


def test_gradient_with_respect_to_the_coefficient_matches_finite_differences(x64):
    """d/da of sum(u * w) through the implicit-function-theorem adjoint."""
    s = 9
    rng = np.random.default_rng(0)
    a = jnp.asarray(2.0 + rng.uniform(size=(s, s)))
    w = jnp.asarray(rng.normal(size=(s, s)))
    objective = jax.jit(lambda a: jnp.sum(pde.darcy_solve(a, 1.0 + a**2).u * w))
    grad = jax.grad(objective)(a)
    direction = jnp.asarray(rng.normal(size=(s, s)))
    eps = 1e-6
    fd = (objective(a + eps * direction) - objective(a - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(jnp.sum(grad * direction), fd, rtol=1e-6)


def test_result_codes_and_bad_arguments():
    a = jnp.ones((17, 17))
    sol = jax.jit(lambda a: pde.darcy_solve(a, max_steps=1))(a.at[3:9, 5:12].set(10.0))
    assert sol.result == RESULTS.max_steps_reached
    with pytest.raises(Exception, match="did not converge"):
        solve = jax.jit(lambda a: pde.darcy_solve(a, max_steps=1, throw=True).u)
        jax.block_until_ready(solve(a.at[3:9, 5:12].set(10.0)))
    with pytest.raises(ValueError, match="square"):
        pde.darcy_solve(jnp.ones((5, 6)))
    with pytest.raises(ValueError, match=r"\(1, s, s\)"):
        pde.darcy_solve(jnp.ones((2, 5, 5)))
    with pytest.raises(ValueError, match="shape of a"):
        pde.darcy_solve(jnp.ones((5, 5)), jnp.ones((4, 4)))
