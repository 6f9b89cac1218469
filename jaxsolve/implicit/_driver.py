r"""The one iteration driver behind :func:`fixed_point`, :func:`root_find` and iterative backward
solves: a single ``lax.while_loop`` that calls a solver's ``step`` until the solver's
``terminate`` says done or the :class:`Convergence` budget ends.

The solver decides convergence and its code (the default ``terminate``: the scaled residual test
``successful``, ``diverged``, ``nonfinite``; see :class:`AbstractSolver`); the driver only counts
steps and reports ``RESULTS.max_steps_reached`` when ``max_steps`` runs out first. The
tolerances, ``max_steps`` and ``divergence_factor`` are traced values, so they can be swept with
``jax.vmap``. Under ``vmap`` each member stops on its own: finished members are frozen while the
others iterate.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from .._core import RESULTS


def iterate(fn, x0, args, solver, convergence):
    """Run ``solver`` on ``fn(x, args) = 0`` from the flat vector ``x0`` until its ``terminate``
    or the budget of ``convergence`` (a checked :class:`Convergence` whose norm acts on flat
    vectors) ends. Returns ``(x, result, num_steps, residual_norm)``."""
    dtype = x0.dtype
    convergence = dataclasses.replace(
        convergence,
        rtol=jnp.asarray(convergence.rtol, dtype),
        atol=jnp.asarray(convergence.atol, dtype),
        divergence_factor=jnp.asarray(convergence.divergence_factor, dtype),
    )
    fx0 = fn(x0, args)
    r0 = convergence.norm(fx0)
    state0 = solver.init(fn, x0, fx0, args)

    def verdict(x, fx, state, k):
        done, result = solver.terminate(x, fx, state, convergence, r0)
        out_of_steps = k >= convergence.max_steps
        return done | out_of_steps, RESULTS.where(done, result, RESULTS.max_steps_reached)

    def cond(carry):
        return ~carry[-2]

    def body(carry):
        x, fx, state, k, _, _ = carry
        x_new, state_new = solver.step(fn, x, fx, args, state)
        fx_new = fn(x_new, args)
        k_new = k + 1
        return x_new, fx_new, state_new, k_new, *verdict(x_new, fx_new, state_new, k_new)

    k0 = jnp.zeros((), jnp.int32)
    start = (x0, fx0, state0, k0, *verdict(x0, fx0, state0, k0))
    x, fx, _, k, _, result = lax.while_loop(cond, body, start)
    return x, result, k, convergence.norm(fx)


def flatten_problem(fn, z0):
    """Flat views of a pytree problem: ``(x0, fn_flat, unravel)``.

    ``fn_flat(x, args)`` unravels ``x``, calls ``fn``, casts each output leaf to the dtype of the
    matching leaf of ``z0`` (a model may return a different precision) and ravels the result.
    """
    x0, unravel = ravel_pytree(z0)
    dtypes = [jnp.result_type(leaf) for leaf in jax.tree_util.tree_leaves(z0)]
    treedef = jax.tree_util.tree_structure(z0)

    def fn_flat(x, args):
        out_leaves = jax.tree_util.tree_leaves(fn(unravel(x), args))
        out = [jnp.asarray(o).astype(d) for o, d in zip(out_leaves, dtypes, strict=True)]
        flat, _ = ravel_pytree(jax.tree_util.tree_unflatten(treedef, out))
        return flat.astype(x.dtype)

    return x0, fn_flat, unravel
