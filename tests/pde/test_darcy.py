"""Darcy solver: second-order convergence on a manufactured solution, grid-independent iteration
counts, implicit gradients, result codes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from hypothesis import example, given, settings
from hypothesis import strategies as st

from jaxsolve import RESULTS, pde

from .._jaxpr import HIGHEST, dot_precisions


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


@pytest.mark.wrong_argument_types
def test_result_codes_and_bad_arguments():
    a = jnp.ones((17, 17))
    sol = jax.jit(lambda a: pde.darcy_solve(a, max_steps=1, throw=False))(a.at[3:9, 5:12].set(10.0))
    assert sol.result == RESULTS.max_steps_reached
    with pytest.raises(Exception, match="did not converge"):  # throw=True is the default
        solve = jax.jit(lambda a: pde.darcy_solve(a, max_steps=1).u)
        jax.block_until_ready(solve(a.at[3:9, 5:12].set(10.0)))
    with pytest.raises(ValueError, match="square"):
        pde.darcy_solve(jnp.ones((5, 6)))
    with pytest.raises(ValueError, match=r"\(1, s, s\)"):
        pde.darcy_solve(jnp.ones((2, 5, 5)))
    with pytest.raises(ValueError, match="shape of a"):
        pde.darcy_solve(jnp.ones((5, 5)), jnp.ones((4, 4)))


def test_inner_products_are_full_precision():
    """The solve is jaxsolve.implicit.CG with the Poisson preconditioner, whose inner products
    ask for full precision (a float32 product at the default precision is TF32 on a GPU); the
    solver darcy_solve had of its own used jnp.vdot at the default precision. The stencil and
    the sine transforms have no products, so every dot_general is the solver's."""
    precisions = dot_precisions(lambda a: pde.darcy_solve(a).u, jnp.ones((9, 9)))
    assert precisions and all(p == HIGHEST for p in precisions), precisions


@pytest.mark.wrong_argument_types
def test_non_positive_coefficients_are_rejected():
    """Issue 17 item 7: darcy_solve(-ones((9, 9))) reported success with u <= 0 (CG solves the
    negated system). A concrete coefficient that is not positive and finite now raises, naming
    a, the value and the node; so do a non-finite f and tolerances that accept u = 0."""
    ones = np.ones((9, 9))
    for a, message in (
        (
            -ones,
            r"a must be positive and finite at every node; got -1\.0 at index \(0, 0\) "
            r"\(81 of 81 nodes\)",
        ),
        (ones * np.where(np.arange(9) == 4, 0.0, 1.0), r"got 0\.0 at index \(0, 4\)"),
        (np.where(np.eye(9) > 0, np.nan, 1.0)[None], r"got nan at index \(0, 0, 0\) \(9 of 81"),
    ):
        with pytest.raises(ValueError, match=message):
            pde.darcy_solve(a)
    with pytest.raises(ValueError, match="f must be finite"):
        pde.darcy_solve(ones, np.inf)
    with pytest.raises(ValueError, match="rtol must be < 1"):
        pde.darcy_solve(ones, rtol=1.0)
    with pytest.raises(ValueError, match="atol must be finite"):
        pde.darcy_solve(ones, atol=np.inf)
    with pytest.raises(ValueError, match="max_steps must be an integer"):
        pde.darcy_solve(ones, max_steps=2.5)
    with pytest.raises(TypeError, match="a must be real"):
        pde.darcy_solve(ones + 1j)


_darcy = jax.jit(lambda a, f, m: pde.darcy_solve(a, f, max_steps=m, throw=False))


def test_traced_non_positive_coefficients_raise_when_run():
    """The same check on a traced coefficient (under jit) runs with the compiled solve."""
    f, ok = jnp.ones((9, 9)), jnp.full((9, 9), 2.0)
    assert _darcy(ok, f, 100).result == RESULTS.successful
    for a in (-ok, ok.at[4, 4].set(0.0), ok.at[4, 4].set(-np.inf)):
        with pytest.raises(Exception, match="darcy_solve: a must be positive at every node"):
            jax.block_until_ready(_darcy(a, f, 100))
    # A NaN is not a sign error: CG stops on it and reports it.
    assert _darcy(ok.at[4, 4].set(np.nan), f, 100).result == RESULTS.nonfinite


def test_gradient_through_a_failed_solve_is_nan_not_plausible():
    """With throw=False the last CG iterate of a failed solve comes back with its code; a
    gradient through it was finite and wrong (the derivative at a point that solves nothing).
    It is NaN now, and with the default throw=True the gradient raises."""
    a = jnp.ones((9, 9)).at[2:6, 3:7].set(10.0)

    @functools.partial(jax.jit, static_argnames="throw")
    def grad(a, max_steps, throw):
        solve = lambda a: pde.darcy_solve(a, max_steps=max_steps, throw=throw).u
        return jax.grad(lambda a: jnp.sum(solve(a)))(a)

    assert np.all(np.isfinite(grad(a, 100, False)))
    failed = np.asarray(grad(a, 1, False))
    corners = np.zeros((9, 9), bool)
    corners[::8, ::8] = True  # a's corners enter no face of the scheme: derivative exactly 0
    assert np.all(np.isnan(failed[~corners])) and np.all(failed[corners] == 0)
    with pytest.raises(Exception, match="did not converge"):
        jax.block_until_ready(grad(a, 1, True))


def _poisson(f):
    """The five-point Dirichlet problem -Laplacian_h u = f exactly (the fast sine-transform
    inverse), boundary values zero: the solution for a = 1."""
    s = f.shape[-1]
    return np.pad(np.asarray(pde._darcy.poisson_inverse(s, jnp.float32)(f[1:-1, 1:-1])), 1)


def _case(**chosen):
    """A full set of the property test's arguments: ``chosen`` over harmless defaults."""
    defaults = dict(c=1.0, f_scale=1.0, bad_a=-1.0, bad_f=np.nan, i=4, j=4, max_steps=1)
    return {**defaults, "traced": False, **chosen}


@settings(max_examples=20, deadline=None, derandomize=True)
@example(**_case(bad="-a"))  # the darcy_solve(-ones((9, 9)))
@example(**_case(bad="-a", traced=True))
@example(**_case(bad="a", bad_a=np.nan, traced=True))
@given(
    bad=st.sampled_from([None, None, "a", "a", "-a", "f", "max_steps"]),
    c=st.sampled_from([0.5, 3.0]),
    f_scale=st.sampled_from([1.0, -2.0, 0.0]),
    bad_a=st.sampled_from([-1.0, 0.0, np.nan, np.inf, -np.inf]),
    bad_f=st.sampled_from([np.nan, np.inf]),
    i=st.integers(0, 8),
    j=st.integers(0, 8),
    max_steps=st.sampled_from([100, 1]),
    traced=st.booleans(),
)
def test_darcy_property_bad_inputs(bad, c, f_scale, bad_a, bad_f, i, j, max_steps, traced):
    """Random bad inputs to darcy_solve, concrete and traced: the solution is right (for a = c
    constant, u = Poisson(f) / c), or the code is non-successful, or the error names a or f;
    never a successful code with a non-finite or wrong u."""
    a = np.full((9, 9), c, np.float32)
    f = np.full((9, 9), f_scale, np.float32)
    if bad == "a":
        a[i, j] = bad_a
    if bad == "-a":  # CG "solves" the negated, negative definite system: u = -Poisson(f) / c
        a = -a
    if bad == "f":
        f[i, j] = bad_f
    steps = max_steps if bad == "max_steps" else 100
    try:
        if not traced:  # the trace-time checks on concrete values; the numbers come from _darcy
            jax.eval_shape(lambda: pde.darcy_solve(a, f, max_steps=steps, throw=False))
        sol = jax.block_until_ready(_darcy(a, f, steps))
    except Exception as err:  # the message is what is checked
        assert bad in ("a", "-a", "f"), f"{bad}: raised {err}"
        if not traced:
            assert isinstance(err, ValueError)
        assert f"darcy_solve: {bad.lstrip('-')} must be" in str(err), str(err)[:300]
        return
    if sol.result == RESULTS.successful:
        # Right whatever was bad: f's boundary values and a's corners do not enter the scheme.
        exact = _poisson(f) / c
        np.testing.assert_allclose(sol.u, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())
    else:
        assert bad is not None, "a valid input failed"
