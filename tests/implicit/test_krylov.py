"""Krylov solvers (GMRES, CG, BiCGStab) and linear_solve: parity with dense solves, honest failure codes,
differentiability."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from jaxsolve import RESULTS
from jaxsolve import implicit as ji
from jaxsolve.implicit._krylov import run_steps

from .._jaxpr import HIGHEST, dot_precisions
from ._problems import RUNTIME_ERRORS, normal

N = 12


def _matrices():
    a = normal(0, (N, N)) / np.sqrt(N) + 1.5 * jnp.eye(N)
    spd = a @ a.T + 0.1 * jnp.eye(N)
    b = normal(1, (N,))
    return a, spd, b


CASES = {
    "gmres_full": (lambda: ji.GMRES(restart=N), "general"),
    "gmres_restart4": (lambda: ji.GMRES(restart=4), "general"),
    "cg_spd": (lambda: ji.CG(), "spd"),
    "cg_negative_definite": (lambda: ji.CG(), "nd"),
    "bicgstab": (lambda: ji.BiCGStab(), "general"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_krylov_matches_dense_solve(x64, name):
    make, kind = CASES[name]
    a, spd, b = _matrices()
    m = {"general": a, "spd": spd, "nd": -spd}[kind]
    sol = jax.jit(
        lambda m, b: ji.linear_solve(
            lambda x: m @ x, b, solver=make(), rtol=1e-12, atol=1e-14, max_steps=500
        )
    )(m, b)
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(sol.value, jnp.linalg.solve(m, b), atol=1e-9)
    # The reported residual is the true ||b - A x||_2 of the returned x. At ~1e-13 that norm is
    # itself only known to the rounding error of forming b - A x (a few eps ||A|| ||x||), and two
    # evaluations may sum in different orders (they did on a GPU: 7.285e-14 against 7.321e-14).
    rounding = 16 * jnp.finfo(b.dtype).eps * jnp.linalg.norm(m, 2) * jnp.linalg.norm(sol.value)
    np.testing.assert_allclose(
        sol.residual, jnp.linalg.norm(b - m @ sol.value), rtol=1e-6, atol=rounding
    )
    assert sol.residual <= 1e-12 * jnp.linalg.norm(b) + 1e-14
    if name == "gmres_full":
        # Exact arithmetic: the Krylov space is complete after N products (+ the initial
        # residual, the restart that checks it, and the final check).
        assert int(sol.num_steps) <= N + 3, sol.num_steps


def test_not_converged_linear_solve_is_reported(x64):
    a, _, b = _matrices()
    sol = jax.jit(
        lambda b: ji.linear_solve(
            lambda x: a @ x, b, solver=ji.GMRES(restart=2), rtol=1e-12, max_steps=6, throw=False
        )
    )(b)
    assert sol.result == RESULTS.max_steps_reached
    np.testing.assert_allclose(sol.residual, jnp.linalg.norm(b - a @ sol.value), rtol=1e-10)
    assert sol.residual > 1e-12 * jnp.linalg.norm(b)


def test_bicgstab_budget_and_breakdown_are_reported(x64):
    """max_steps counts products (two per BiCGStab step); a budget too small ends in
    max_steps_reached with the true residual. A breakdown (a zero inner product) ends a run of
    steps and restarts the method from its iterate with a new shadow residual: where that cures
    it the solve converges, where the restarted step breaks down again (b orthogonal to A b for
    a skew A, so <A s, s> = 0 as well) it spends the budget without moving: no silent zero."""
    a, _, b = _matrices()
    sol = jax.jit(
        lambda b: ji.linear_solve(
            lambda x: a @ x, b, solver=ji.BiCGStab(), rtol=1e-12, max_steps=4, throw=False
        )
    )(b)
    assert sol.result == RESULTS.max_steps_reached
    assert int(sol.num_steps) <= 4 + 1  # four in the loop, one to measure the true residual
    np.testing.assert_allclose(sol.residual, jnp.linalg.norm(b - a @ sol.value), rtol=1e-10)
    skew = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
    sol = ji.linear_solve(
        lambda x: skew @ x, jnp.array([1.0, 0.0]), solver=ji.BiCGStab(), max_steps=20, throw=False
    )
    assert sol.result == RESULTS.max_steps_reached
    assert bool(jnp.all(sol.value == 0)) and int(sol.num_steps) <= 20 + 1, sol.num_steps
    np.testing.assert_allclose(sol.residual, 1.0)
    # On this integer system the first step leaves r_1 = (-2, 6, 2) / 11, orthogonal to the
    # shadow residual b: <b, r_k> = 0 from then on, alpha = 0, and the old recurrence went on
    # with minimal-residual steps alone, stalled at |r| = 0.58 after 40 products. Restarted
    # with the shadow residual r_1 it finds x = (-1, 1, -1) (in 10 products).
    a3 = jnp.array([[2.0, 2.0, 1.0], [1.0, 2.0, 1.0], [-1.0, -2.0, 0.0]])
    b3 = jnp.array([-1.0, 0.0, -1.0])
    sol = ji.linear_solve(
        lambda x: a3 @ x, b3, solver=ji.BiCGStab(), rtol=1e-12, max_steps=40, throw=False
    )
    assert sol.result == RESULTS.successful, (sol.residual, sol.num_steps)
    np.testing.assert_allclose(sol.value, jnp.array([-1.0, 1.0, -1.0]), atol=1e-12)


def _near_breakdown_system(n=N, delta=1e-3, seed=0):
    """float32 ``A, b`` on which BiCGStab's recurrence residual passes a tolerance its true
    residual misses. ``A = I - (1 - delta) u u^T + K`` with ``u = b / |b|`` and ``K`` skew, so
    ``<b, A b> = delta |b|^2``: the first step's ``alpha = |b|^2 / <b, A b> = 1 / delta`` sends the
    residual to ``|K b| / delta ~ 1000 |b|``, and float32 rounding of the recurrence at that
    size (~6e-8 * 1000 |b|) leaves it ~1e-4 |b| from the true residual. The symmetric part is
    positive definite and ``K`` couples ``u`` to the rest, so ``A`` is well conditioned
    (kappa ~ 6): the failure is the recurrence's, not the problem's."""
    rng = np.random.default_rng(seed)
    b = rng.standard_normal(n)
    u = b / np.linalg.norm(b)
    g = rng.standard_normal((n, n)) / np.sqrt(n)
    a = np.eye(n) - (1 - delta) * np.outer(u, u) + (g - g.T) / 2
    return a.astype(np.float32), b.astype(np.float32)


@jax.jit
def _bicgstab_near_breakdown(a, rhs, tol):
    """The solves of ``A x = rhs_i`` under vmap, and the first run of recurrence steps on
    ``A x = rhs_0`` alone: ``(solutions, recurrence residual norm, its x)``."""

    def solve(b):
        return ji.linear_solve(
            lambda x: a @ x,
            b,
            solver=ji.BiCGStab(),
            rtol=1e-5,
            atol=1e-12,
            max_steps=200,
            throw=False,
        )

    method = ji.BiCGStab()
    state, _ = run_steps(
        method, lambda x: a @ x, rhs[0], tol, 200, method.restart(0 * rhs[0], rhs[0]), 0
    )
    return jax.vmap(solve)(rhs), method.residual_norm(state), state["x"]


def test_bicgstab_accepts_only_a_true_residual_and_restarts_on_a_residual_gap():
    # A float32 pagerank training (tests/implicit/test_graph_solver.py, slow) stopped at step
    # ~370 on such a backward solve: a residual peak, then a recurrence residual at 0.97 tol
    # with a true residual at 1.13 tol. The solve now measures the true residual when the
    # recurrence claims convergence and restarts from the iterate where it misses (before:
    # max_steps_reached). Under vmap with a member that needs no restart and a zero one.
    a, b = _near_breakdown_system()
    rhs = np.stack([b, np.random.default_rng(5).standard_normal(N).astype(np.float32), 0 * b])
    tol = 1e-5 * np.linalg.norm(rhs.astype(np.float64), axis=1) + 1e-12
    sols, recurrence, x_recurrence = _bicgstab_near_breakdown(a, rhs, jnp.float32(tol[0]))
    a64 = a.astype(np.float64)
    # The problem does what it is for: the recurrence passes tol, the true residual does not.
    gap_true = np.linalg.norm(b - a64 @ np.asarray(x_recurrence, np.float64))
    assert float(recurrence) <= tol[0] < gap_true, (float(recurrence), tol[0], gap_true)
    inverse_norm = np.linalg.norm(np.linalg.inv(a64), 2)
    for i in range(3):
        x = np.asarray(sols.value[i], np.float64)
        true = np.linalg.norm(rhs[i] - a64 @ x)
        assert int(sols.result._value[i]) == int(RESULTS.successful._value), (i, true, tol[i])
        # The reported residual is the true one (to the float32 rounding of forming b - A x,
        # ~eps |A| |x| ~ 1e-7: ~1% of a residual at 1e-5 |b|) and meets the tolerance; so
        # |x - x*| = |A^-1 (b - A x)| <= |A^-1| |b - A x| (closed form).
        np.testing.assert_allclose(sols.residual[i], true, rtol=0.05, atol=1e-12)
        assert true <= tol[i], (i, true, tol[i])
        dense = np.linalg.solve(a64, rhs[i].astype(np.float64))
        assert np.linalg.norm(x - dense) <= inverse_norm * true * (1 + 1e-6), i
        assert int(sols.num_steps[i]) <= 200 + 1, i
    # Without a restart, the steps (two products each) and the one measurement that always gave
    # the verdict: no extra product on the normal path. A zero right-hand side costs none.
    assert int(sols.num_steps[1]) % 2 == 1, sols.num_steps
    assert int(sols.num_steps[2]) == 0 and bool(jnp.all(sols.value[2] == 0))


@jax.jit
@functools.partial(jax.vmap, in_axes=(None, None, 0))
def _linear_derivatives(a, b, budget):
    """Reverse- and forward-mode derivatives of a CG solve with ``budget`` products."""

    def solve(b):
        return ji.linear_solve(
            lambda x: a @ x,
            b,
            solver=ji.CG(),
            rtol=1e-12,
            atol=1e-14,
            max_steps=budget,
            throw=False,
        ).value

    _, tangent = jax.jvp(solve, (b,), (jnp.ones_like(b),))
    return jax.grad(lambda b: jnp.sum(jnp.sin(solve(b))))(b), tangent


def test_derivatives_through_a_failed_linear_solve_are_nan_or_raise(x64):
    # Three products do not solve the system; the derivative of that x used to come from the
    # tangent solve, itself cut at three products and unchecked: finite, wrong and silent. Now
    # NaN for the failed member, and the closed forms dL/db = A^-1 cos(x) (A symmetric) and
    # dx/db . 1 = A^-1 1 for the converged one.
    _, spd, b = _matrices()
    grad, tangent = _linear_derivatives(spd, b, jnp.array([3, 400]))
    assert bool(jnp.all(jnp.isnan(grad[0]))) and bool(jnp.all(jnp.isnan(tangent[0])))
    x = jnp.linalg.solve(spd, b)
    np.testing.assert_allclose(grad[1], jnp.linalg.solve(spd, jnp.cos(x)), atol=1e-9)
    np.testing.assert_allclose(tangent[1], jnp.linalg.solve(spd, jnp.ones(N)), atol=1e-9)
    starved = lambda b: ji.linear_solve(lambda x: spd @ x, b, solver=ji.CG(), max_steps=3)
    with pytest.raises(RUNTIME_ERRORS, match="derivative was requested through a solve that"):
        jax.block_until_ready(jax.jit(jax.grad(lambda b: jnp.sum(starved(b).value)))(b))


def test_linear_solve_is_differentiable_and_accepts_driver_solvers(x64):
    a, _, b = _matrices()
    # Richardson x <- x + (A x - b) converges when rho(I + A) < 1: use A = -(I - 0.5 C).
    c = a / jnp.linalg.norm(a, 2)
    m = -(jnp.eye(N) - 0.5 * c)

    def loss(m, b, solver):
        x = ji.linear_solve(lambda x: m @ x, b, solver=solver, rtol=1e-12, atol=1e-14).value
        return jnp.sum(jnp.sin(x))

    exact = jax.grad(lambda m, b: jnp.sum(jnp.sin(jnp.linalg.solve(m, b))), (0, 1))(m, b)
    for solver in (ji.GMRES(), ji.Picard()):
        g = jax.jit(jax.grad(lambda m, b, s=solver: loss(m, b, s), (0, 1)))(m, b)
        np.testing.assert_allclose(g[0], exact[0], atol=1e-9)
        np.testing.assert_allclose(g[1], exact[1], atol=1e-9)


def test_gmres_under_vmap_matches_each_system_alone(x64):
    # The batched step is where the speed work went: members restart, exit early and run out
    # of budget at different steps, and must get exactly what they get alone (frozen by the
    # vmapped loop once done). A zero right-hand side costs no product at all.
    a, _, b = _matrices()
    scales = jnp.array([0.1, 0.6, 1.2, 0.9])
    mats = jnp.stack([jnp.eye(N) + s * (a - 1.5 * jnp.eye(N)) for s in scales])
    rhs = jnp.stack([b, 2 * b, b[::-1], jnp.zeros(N)])
    budgets = jnp.array([200, 200, 7, 200])

    def solve(m, rhs, budget):
        return ji.linear_solve(
            lambda x: m @ x,
            rhs,
            solver=ji.GMRES(restart=3),
            rtol=1e-10,
            atol=1e-12,
            max_steps=budget,
            throw=False,
        )

    batched = jax.jit(jax.vmap(solve))(mats, rhs, budgets)
    alone = [jax.jit(solve)(m, r, k) for m, r, k in zip(mats, rhs, budgets, strict=True)]
    for i, sol in enumerate(alone):
        np.testing.assert_allclose(batched.value[i], sol.value, rtol=1e-12, atol=1e-14)
        assert int(batched.num_steps[i]) == int(sol.num_steps)
        assert int(batched.result._value[i]) == int(sol.result._value)
        np.testing.assert_allclose(batched.residual[i], sol.residual, rtol=1e-9, atol=1e-15)
    # Different members stopped at different products, with the codes their budgets imply.
    assert len({int(k) for k in batched.num_steps}) >= 3, batched.num_steps
    codes = [RESULTS.successful, RESULTS.successful, RESULTS.max_steps_reached]
    for i, code in enumerate([*codes, RESULTS.successful]):
        assert int(batched.result._value[i]) == int(code._value), i
    assert int(batched.num_steps[3]) == 0 and bool(jnp.all(batched.value[3] == 0))
    for i in (0, 1):
        np.testing.assert_allclose(batched.value[i], jnp.linalg.solve(mats[i], rhs[i]), atol=1e-8)


def _non_normal_system(n=40, scale=0.2, seed=1):
    # A = I - J^T for J upper triangular with eigenvalues in (-0.9, 0.9) and a random strictly
    # upper part: rho(J) < 1 (a convergent fixed point) but ||J||_2 ~ 2.1, kappa(A) ~ 200.
    # Restarted GMRES can stagnate on such a system when the restart is too short.
    rng = np.random.default_rng(seed)
    j = np.triu(rng.standard_normal((n, n)), 1) * scale + np.diag(rng.uniform(-0.9, 0.9, n))
    return jnp.eye(n) - jnp.asarray(j).T, normal(2, (n,))


def test_default_backward_solver_does_not_stagnate_on_a_non_normal_system(x64):
    # The default backward solver (BiCGStab, chosen for speed under vmap: bench_implicit.py) must
    # not stagnate where a short-restart GMRES does: GMRES(5) stalls on this system.
    a, b = _non_normal_system()
    default = ji.ImplicitDiff().solver

    def run(solver):
        return jax.jit(
            lambda a, b: ji.linear_solve(
                lambda v: a @ v, b, solver=solver, rtol=1e-8, atol=1e-14, max_steps=400, throw=False
            )
        )(a, b)

    sol = run(default)
    assert sol.result == RESULTS.successful, sol.num_steps
    np.testing.assert_allclose(sol.value, jnp.linalg.solve(a, b), rtol=1e-6, atol=1e-8)
    assert int(sol.num_steps) <= 150, sol.num_steps
    stalled = run(ji.GMRES(restart=5))
    assert stalled.result == RESULTS.max_steps_reached, stalled.num_steps


@pytest.mark.parametrize(
    "make",
    [ji.GMRES, ji.CG, ji.BiCGStab, ji.Anderson, ji.Broyden],
    ids=["gmres", "cg", "bicgstab", "anderson", "broyden"],
)
def test_solver_internal_products_are_full_precision(make):
    # A solver's Gram matrices, Krylov bases and inner products ask for full precision: on a GPU a
    # float32 product at the default precision is TF32, and with emulated TF32 a vmapped Broyden
    # lost a contraction of factor 0.9999 (1 - 0.9999 is below TF32's resolution) to NaN. The
    # operator here has no products of its own, so every dot_general in the jaxpr is the solver's.
    scale = jnp.linspace(1.0, 2.0, 8)
    b = jnp.ones(8)

    def solve(b):
        return ji.linear_solve(lambda x: scale * x, b, solver=make(), max_steps=20).value

    precisions = dot_precisions(jax.vmap(solve), jnp.stack([b, 2 * b]))
    assert precisions and all(p == HIGHEST for p in precisions), precisions


@jax.jit
def _preconditioned_cg(m, b, diagonal):
    # The preconditioner holds a traced array, so it is a Partial (its array is a leaf).
    cg = ji.CG(preconditioner=Partial(lambda d, v: v / d, diagonal))
    return ji.linear_solve(lambda x: m @ x, b, solver=cg, rtol=1e-10, atol=1e-14, max_steps=2000)


def test_preconditioned_cg_matches_dense_solve_and_needs_fewer_products(x64):
    """CG with a Jacobi preconditioner M = diag(A) on A = D B D (B symmetric with spectrum in
    [1, 4], D spanning two decades, so kappa(A) ~ 1e4 but kappa(M^-1 A) ~ 4): the solution
    matches a dense solve, the reported residual is the preconditioned one,
    ||M^-1 (b - A x)||_2, and the preconditioner cuts the products several times. One compiled
    program serves both runs: the unpreconditioned one divides by ones. (Derivatives through a
    preconditioned CG: the adjoint solves of tests/pde/test_darcy.py.)"""
    n = 40
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    d = np.logspace(0, 2, n)
    m = jnp.asarray(d[:, None] * (q @ np.diag(np.linspace(1.0, 4.0, n)) @ q.T) * d[None, :])
    b = jnp.asarray(rng.standard_normal(n))
    exact = jnp.linalg.solve(m, b)
    plain = _preconditioned_cg(m, b, jnp.ones(n))
    jacobi = _preconditioned_cg(m, b, jnp.diagonal(m))
    for sol in (plain, jacobi):
        assert sol.result == RESULTS.successful
        np.testing.assert_allclose(sol.value, exact, rtol=0, atol=1e-9 * jnp.abs(exact).max())
    preconditioned = jnp.linalg.norm((b - m @ jacobi.value) / jnp.diagonal(m))
    np.testing.assert_allclose(jacobi.residual, preconditioned, rtol=1e-6)
    assert int(jacobi.num_steps) * 3 < int(plain.num_steps), (jacobi.num_steps, plain.num_steps)
