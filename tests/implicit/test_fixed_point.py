"""Forward solves: parity with direct solves, pytree states, vmap, traced tolerances, speed of
Anderson against Picard, Broyden / Newton convergence, root finding."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import linear_map, linear_problem, normal, symmetric_contraction, tanh_map

SOLVERS = {
    "picard": lambda: ji.Picard(),
    "picard_km": lambda: ji.Picard(damping=0.7),
    "anderson": lambda: ji.Anderson(history=4),
    "broyden": lambda: ji.Broyden(memory=8),
    "newton": lambda: ji.Newton(),
}


@pytest.mark.parametrize("name", list(SOLVERS))
def test_linear_contraction_equals_direct_solve(x64, name):
    w, b = linear_problem()
    solve = jax.jit(
        lambda w, b: ji.fixed_point(
            linear_map, jnp.zeros(6), (w, b), solver=SOLVERS[name](), rtol=1e-12, atol=1e-12
        )
    )
    sol = solve(w, b)
    exact = jnp.linalg.solve(jnp.eye(6) - w, b)
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(sol.value, exact, rtol=0, atol=1e-10)
    # The reported residual is the max-norm of f(z) - z at the returned value, which at ~1e-13 is
    # itself known only to the rounding error of forming W z + b - z (a GPU's summation order
    # differed from the solver's loop there).
    z = sol.value
    rounding = (
        16 * jnp.finfo(z.dtype).eps * (jnp.max(jnp.abs(w) @ jnp.abs(z)) + jnp.max(jnp.abs(b)))
    )
    np.testing.assert_allclose(
        sol.residual, jnp.max(jnp.abs(linear_map(z, (w, b)) - z)), rtol=1e-6, atol=rounding
    )
    assert sol.residual <= 1e-12 * (1 + jnp.max(jnp.abs(exact)))


def test_krasnoselskii_mann_damping_converges_where_picard_oscillates(x64):
    # f(z) = 2 - z is nonexpansive, not contractive: plain Picard cycles 0, 2, 0, ... while the
    # averaged iteration with damping 1/2 lands on the fixed point 1 in one step.
    fn = lambda z, _: 2.0 - z
    plain = ji.fixed_point(fn, jnp.zeros(()), solver=ji.Picard(), max_steps=20, throw=False)
    averaged = ji.fixed_point(fn, jnp.zeros(()), solver=ji.Picard(damping=0.5), max_steps=20)
    assert plain.result == RESULTS.max_steps_reached
    assert averaged.num_steps == 1 and float(averaged.value) == 1.0
    # A half-precision state is promoted to the default float (float64 here, under x64): the
    # iteration and its tolerance test run in it.
    half = ji.fixed_point(fn, jnp.zeros((), jnp.bfloat16), solver=ji.Picard(damping=0.5))
    assert half.value.dtype == jnp.float64 and float(half.value) == 1.0


def test_pytree_state_matches_flat_solve(x64):
    w, b = linear_problem(n=7, seed=3)

    def unflat(v):
        return {"u": v[:3], "v": (v[3:5], v[5:].reshape(1, 2))}

    def flat(t):
        return jnp.concatenate([t["u"], t["v"][0], t["v"][1].ravel()])

    fn = lambda z, args: unflat(args[0] @ flat(z) + args[1])
    z0 = unflat(jnp.zeros(7))
    solve = lambda w, b: ji.fixed_point(
        fn,
        z0,
        (w, b),
        solver=ji.Picard(),
        rtol=1e-12,
        atol=1e-12,
        backward=ji.ImplicitDiff(ji.Picard()),
    )
    loss = lambda b: jnp.sum(flat(solve(w, b).value))
    sol, g = jax.jit(lambda w, b: (solve(w, b), jax.grad(loss)(b)))(w, b)
    assert jax.tree_util.tree_structure(sol.value) == jax.tree_util.tree_structure(z0)
    exact = jnp.linalg.solve(jnp.eye(7) - w, b)
    np.testing.assert_allclose(flat(sol.value), exact, atol=1e-10)

    # Gradients with a pytree state: d/db sum(z) = (I - W)^{-T} 1.
    np.testing.assert_allclose(g, jnp.linalg.solve((jnp.eye(7) - w).T, jnp.ones(7)), atol=1e-9)


def test_vmap_members_converge_at_different_speeds(x64):
    w0, b = linear_problem(norm=1.0)
    scales = jnp.array([0.1, 0.5, 0.9, 0.99])
    solve = jax.jit(
        lambda s: ji.fixed_point(
            linear_map,
            jnp.zeros(6),
            (s * w0, b),
            solver=ji.Picard(),
            max_steps=5000,
            rtol=1e-10,
            atol=1e-10,
        )
    )
    batched = jax.jit(jax.vmap(solve))(scales)
    steps = np.asarray(batched.num_steps)
    assert np.all(np.diff(steps) > 0), steps
    assert bool(jnp.all(batched.result == RESULTS.successful))
    for i, s in enumerate(scales):
        single = solve(s)
        # Members freeze once converged: each matches its own unbatched solve (same step count,
        # same iterate up to the rounding of batched versus unbatched matrix products).
        assert int(single.num_steps) == steps[i]
        np.testing.assert_allclose(single.value, batched.value[i], rtol=1e-13, atol=1e-15)
        exact = jnp.linalg.solve(jnp.eye(6) - s * w0, b)
        # ||z - z*||_2 <= ||f(z) - z||_2 / (1 - ||W||_2), with a max-norm residual <= tol.
        bound = np.sqrt(6) * 1e-10 * (1 + np.max(np.abs(exact))) / (1 - s)
        assert np.linalg.norm(batched.value[i] - exact) <= bound


def test_tolerances_and_step_budget_are_traced(x64):
    w, b = linear_problem(norm=0.9)
    traces = []

    def solve(rtol, max_steps):
        traces.append(None)
        return ji.fixed_point(
            linear_map,
            jnp.zeros(6),
            (w, b),
            solver=ji.Picard(),
            rtol=rtol,
            atol=rtol,
            max_steps=max_steps,
            throw=False,
        )

    rtols = jnp.array([1e-2, 1e-4, 1e-6, 1e-9])
    batched = jax.jit(jax.vmap(solve, in_axes=(0, None)))
    sols = batched(rtols, jnp.asarray(1000))
    assert len(traces) == 1
    steps = np.asarray(sols.num_steps)
    assert np.all(np.diff(steps) > 0), steps
    exact = jnp.linalg.solve(jnp.eye(6) - w, b)
    err = jnp.max(jnp.abs(sols.value - exact), axis=1)
    assert bool(jnp.all(err < 20 * rtols * (1 + jnp.max(jnp.abs(exact))))), err
    # A traced step budget: the same compiled function stops at 5 steps.
    capped = batched(rtols, jnp.asarray(5))
    assert len(traces) == 1
    assert np.all(np.asarray(capped.num_steps) == np.minimum(steps, 5))
    assert bool((capped.result == RESULTS.max_steps_reached)[3])


def _tanh_problem(n=50):
    # W symmetric, so ||W||_2 = rho(W) = 0.9 is the actual contraction rate near the small
    # equilibrium (|x| ~ 0.1 keeps tanh near-linear). For a non-normal W with rho(W) << ||W||_2
    # Picard is already fast and no Krylov-type acceleration can halve it.
    w = symmetric_contraction(n, 0.9, seed=7)
    x = 0.1 * normal(8, (n,))
    return w, x


def test_anderson_needs_at_most_half_of_picards_iterations(x64):
    w, x = _tanh_problem()
    run = lambda solver: jax.jit(
        lambda w, x: ji.fixed_point(
            tanh_map, jnp.zeros(50), (w, x), solver=solver, rtol=1e-10, atol=1e-10, max_steps=2000
        )
    )(w, x)
    picard, anderson = run(ji.Picard()), run(ji.Anderson())
    assert picard.result == RESULTS.successful and anderson.result == RESULTS.successful
    assert 2 * int(anderson.num_steps) <= int(picard.num_steps), (
        anderson.num_steps,
        picard.num_steps,
    )
    np.testing.assert_allclose(anderson.value, picard.value, atol=1e-8)


def test_anderson_safeguard_converges_where_plain_anderson_wanders(x64):
    """z = tanh(W z + b) with ||W|| ~ 2: contractive only near its fixed point. Picard converges;
    plain Anderson extrapolates into the non-contractive region and wanders for 300 steps; the
    safeguard (reject an extrapolation whose residual grew, take a Picard step instead) brings
    it back. The instance (n = 8, seed 39) was found by a search over random W, b."""
    n = 8
    k1, k2 = jax.random.split(jax.random.PRNGKey(39))
    w = 2.0 * jax.random.normal(k1, (n, n)) / np.sqrt(n)
    b = 2.0 * jax.random.normal(k2, (n,))

    @jax.jit
    def run(w, b):
        def solve(solver):
            return ji.fixed_point(
                tanh_map,
                jnp.zeros(n),
                (w, b),
                solver=solver,
                max_steps=300,
                rtol=1e-10,
                atol=1e-12,
                throw=False,
            )

        return solve(ji.Picard()), solve(ji.Anderson(safeguard=False)), solve(ji.Anderson())

    picard, plain, safe = run(w, b)
    assert picard.result == RESULTS.successful
    assert plain.result == RESULTS.max_steps_reached
    assert safe.result == RESULTS.successful and int(safe.num_steps) < int(picard.num_steps)
    np.testing.assert_allclose(safe.value, picard.value, atol=1e-9)


@pytest.mark.parametrize("name", ["broyden", "newton"])
def test_broyden_and_newton_converge_on_tanh_equilibrium(x64, name):
    w, x = _tanh_problem()
    sol = jax.jit(
        lambda w, x: ji.fixed_point(
            tanh_map, jnp.zeros(50), (w, x), solver=SOLVERS[name](), rtol=1e-11, atol=1e-11
        )
    )(w, x)
    assert sol.result == RESULTS.successful
    # An equilibrium: f(z) = z to the tolerance, and the map is a contraction so it is unique.
    np.testing.assert_allclose(tanh_map(sol.value, (w, x)), sol.value, atol=1e-10)
    if name == "newton":
        assert int(sol.num_steps) <= 8, sol.num_steps


def test_root_find_cubic_and_its_implicit_derivative(x64):
    # x^3 + x = a has one real root for every a; dx/da = 1 / (3 x^2 + 1).
    fn = lambda x, a: x**3 + x - a
    a = jnp.array([-3.0, 0.5, 2.0, 10.0])
    solve = lambda a: ji.root_find(fn, jnp.zeros(4), a, rtol=1e-12, atol=1e-12).value
    # The Jacobian is diagonal, so the gradient of sum(x) is its diagonal.
    x, g = jax.jit(lambda a: (solve(a), jax.grad(lambda a: jnp.sum(solve(a)))(a)))(a)
    np.testing.assert_allclose(x**3 + x, a, atol=1e-10)
    np.testing.assert_allclose(g, 1 / (3 * x**2 + 1), atol=1e-9)
    bro = jax.jit(
        lambda a: ji.root_find(
            fn, jnp.ones(4), a, solver=ji.Broyden(jacobian_init=4.0), rtol=1e-11, atol=1e-11
        )
    )(a)
    assert bro.result == RESULTS.successful
    np.testing.assert_allclose(bro.value, x, atol=1e-9)


def test_two_norm_and_rms_norm_values_and_gradients():
    # d||x||_2 / dx = x / ||x||_2 away from 0, and 0 (the minimal-norm subgradient) at 0, where
    # sqrt(sum(x**2)) gives 0 / 0 = NaN; the same over sqrt(n) for the RMS norm.
    x = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[-4.0]])}
    zero = jax.tree_util.tree_map(jnp.zeros_like, x)
    for norm, n in ((ji.two_norm, 1.0), (ji.rms_norm, np.sqrt(3.0))):
        value_and_grad = jax.jit(jax.value_and_grad(norm))
        value, grad = value_and_grad(x)
        np.testing.assert_allclose(value, 5.0 / n, rtol=1e-6)
        np.testing.assert_allclose(grad["a"], np.array([0.6, 0.0]) / n, rtol=1e-6)
        np.testing.assert_allclose(grad["b"], np.array([[-0.8]]) / n, rtol=1e-6)
        value, grad = value_and_grad(zero)
        assert float(value) == 0.0
        chex.assert_trees_all_equal(grad, zero)
    # Finite entries beyond sqrt(float32 max) ~ 1.8e19 keep a finite norm (squaring them
    # overflowed: the drivers then called a finite state nonfinite); NaN stays NaN, inf is inf.
    two_norm = jax.jit(ji.two_norm)
    big, nan, nan_inf, inf = (
        float(two_norm(jnp.array(v, jnp.float32)))
        for v in ([3e30, 4e30], [np.nan, 0.0], [np.nan, np.inf], [np.inf, 1.0])
    )
    np.testing.assert_allclose(big, 5e30, rtol=1e-6)
    assert np.isnan(nan) and np.isnan(nan_inf) and inf == np.inf
