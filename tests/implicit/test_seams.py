"""The seams a method plugs into without editing a driver: a backward mode
(``AbstractBackward.apply``), a solver's own verdict (``AbstractSolver.terminate``) and the one
``Convergence`` rule that the entry points build and the layers hold."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import linear_map, linear_problem


class _HalfImplicit(ji.AbstractBackward):
    """A new backward mode: half the implicit derivative (a stand-in for any new rule)."""

    def apply(self, primal, residual, args, z0, **context):
        z, aux = ji.ImplicitDiff().apply(primal, residual, args, z0, **context)
        return jax.tree.map(lambda v: 0.5 * v + 0.5 * lax.stop_gradient(v), z), aux


class _LooseVerdict(ji.Picard):
    """A solver with its own verdict: done once max |F| <= 1e-3, whatever the tolerances say."""

    def terminate(self, x, fx, state, convergence, initial_norm):
        return jnp.max(jnp.abs(fx)) <= 1e-3, RESULTS.successful


def _solve(a):
    return ji.fixed_point(
        lambda z, a: a * jnp.cos(z),
        jnp.zeros(()),
        a,
        solver=_LooseVerdict(),
        backward=_HalfImplicit(),
        rtol=1e-12,
        atol=1e-12,
    )


def test_a_new_backward_mode_and_a_solver_verdict_plug_into_the_driver(x64):
    # z = a cos z: Picard contracts by a |sin z*| ~ 0.34, so the solver's own test (|F| <= 1e-3)
    # ends it after a few steps where the call's tolerances (1e-12) would need about 25. The
    # derivative is the new mode's: half of the implicit one at the returned z,
    # cos z / (1 + a sin z).
    a = 0.5

    def value(a):
        sol = _solve(a)
        return sol.value, sol

    (value, sol), grad = jax.jit(jax.value_and_grad(value, has_aux=True))(a)
    assert sol.result == RESULTS.successful and int(sol.num_steps) < 10, sol.num_steps
    residual = abs(a * np.cos(float(value)) - float(value))
    assert 1e-12 < residual <= 1e-3
    np.testing.assert_allclose(grad, 0.5 * np.cos(value) / (1 + a * np.sin(value)), rtol=1e-10)


def test_layers_hold_one_convergence_rule():
    deq = ji.DEQ(lambda z, x: 0.5 * z + x, max_steps=7, rtol=1e-3)
    rule = deq.convergence
    assert isinstance(rule, ji.Convergence)
    assert (rule.max_steps, rule.rtol, rule.atol, rule.norm) == (7, 1e-3, 1e-5, ji.max_norm)
    # The constructor's keywords stay readable, and replaceable, under their own names.
    assert (deq.max_steps, deq.rtol, deq.atol, deq.norm) == (7, 1e-3, 1e-5, ji.max_norm)
    tightened = eqx.tree_at(lambda m: (m.rtol, m.atol), deq, (1e-9, 1e-10))
    assert (tightened.convergence.rtol, tightened.convergence.atol) == (1e-9, 1e-10)


@pytest.mark.slow
def test_lineax_solvers_serve_the_linear_systems(x64):
    # A lineax solver passed where a linear solver goes is wrapped (LineaxSolver): as the
    # backward solve of a fixed point, and as linear_solve's solver (forward and adjoint).
    import lineax as lx

    w, b = linear_problem(6, 0.8)
    eye = jnp.eye(6)
    dense = jnp.linalg.solve((eye - w).T, jnp.ones(6))  # d sum(z) / db for z = W z + b

    def loss(b, backward):
        z = ji.fixed_point(
            linear_map, jnp.zeros(6), (w, b), rtol=1e-12, atol=1e-12, backward=backward
        )
        return jnp.sum(z.value)

    for solver in (lx.LU(), lx.GMRES(rtol=1e-12, atol=1e-12)):
        backward = ji.ImplicitDiff(solver)
        assert isinstance(backward.solver, ji.LineaxSolver)
        np.testing.assert_allclose(jax.grad(loss)(b, backward), dense, rtol=1e-9)
    solve = lambda b: ji.linear_solve(lambda x: x - w @ x, b, solver=lx.LU())
    sol = solve(b)
    assert sol.result == RESULTS.successful and sol.residual < 1e-12
    np.testing.assert_allclose(sol.value, jnp.linalg.solve(eye - w, b), rtol=1e-10)
    np.testing.assert_allclose(jax.grad(lambda b: jnp.sum(solve(b).value))(b), dense, rtol=1e-9)
    singular = ji.linear_solve(lambda x: x.at[0].set(0.0), b, solver=lx.LU(), throw=False)
    assert singular.result != RESULTS.successful
