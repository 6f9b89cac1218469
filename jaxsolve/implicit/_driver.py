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
    return iterate_traced(fn, x0, args, solver, convergence, 0)[:4]


def iterate_traced(fn, x0, args, solver, convergence, trace_length):
    """:func:`iterate` that also records the residual norms: ``(x, result, num_steps,
    residual_norm, trace)``.

    ``trace`` (a static ``trace_length > 0``; else ``None``) has fixed length: entry ``i`` is the
    norm of ``fn`` at iterate ``i`` (entry 0 at ``x0``) for ``i <= num_steps``, NaN after the
    solve stopped; steps past ``trace_length - 1`` are not recorded. The fixed size keeps the
    loop's carry static (``vmap`` over members with different step counts compiles once); the
    NaN padding cannot be mistaken for a recorded value. With ``trace_length = 0`` nothing is
    added to the loop, so results are those of :func:`iterate` bit for bit.
    """
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

    def record(trace, k, fx):
        if trace is None:
            return None
        # An index past the end is dropped (mode="drop"), so a long solve keeps its first steps.
        return trace.at[k].set(convergence.norm(fx), mode="drop")

    def cond(carry):
        return ~carry[4]

    def body(carry):
        x, fx, state, k, _, _, trace = carry
        x_new, state_new = solver.step(fn, x, fx, args, state)
        fx_new = fn(x_new, args)
        k_new = k + 1
        trace = record(trace, k_new, fx_new)
        return x_new, fx_new, state_new, k_new, *verdict(x_new, fx_new, state_new, k_new), trace

    k0 = jnp.zeros((), jnp.int32)
    trace0 = None
    if trace_length > 0:
        trace0 = record(jnp.full((trace_length,), jnp.nan, dtype), k0, fx0)
    start = (x0, fx0, state0, k0, *verdict(x0, fx0, state0, k0), trace0)
    x, fx, _, k, _, result, trace = lax.while_loop(cond, body, start)
    return x, result, k, convergence.norm(fx), trace


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
