r"""The one iteration driver behind :func:`fixed_point`, :func:`root_find` and iterative backward
solves: a single ``lax.while_loop`` that calls a solver's ``step``.

Convergence test (as in optimistix / Hairer's codes), per element scaled:

.. math:: \Big\| \frac{F(x_k)}{\text{atol} + \text{rtol}\,|x_k|} \Big\| \le 1,

with :math:`F(z) = f(z) - z` for a fixed point. The loop also stops when the state or residual
is not finite (``RESULTS.nonfinite``), when the unscaled residual norm exceeds
``divergence_factor`` times its initial value (``RESULTS.diverged``), or after ``max_steps``
steps (``RESULTS.max_steps_reached``). ``rtol``, ``atol``, ``max_steps`` and
``divergence_factor`` are traced values, so they can be swept with ``jax.vmap``. Under ``vmap``
each member stops on its own: finished members are frozen while the others iterate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree

from .._core import RESULTS


def _status(x, fx, k, r0, norm, rtol, atol, max_steps, divergence_factor):
    scale = atol + rtol * jnp.abs(x)
    # Both norms in one batched reduction (one pass over fx instead of two).
    scaled, rnorm = jax.vmap(norm)(jnp.stack([fx / scale, fx]))
    # A NaN or infinity in the residual makes its norm non-finite, and a NaN in x makes the
    # scale, hence the scaled norm, NaN: no separate pass over the state is needed.
    finite = jnp.isfinite(rnorm) & jnp.isfinite(scaled)
    converged = scaled <= 1
    diverged = rnorm > divergence_factor * r0
    out_of_steps = k >= max_steps
    done = (~finite) | converged | diverged | out_of_steps
    result = RESULTS.where(
        finite,
        RESULTS.where(
            converged,
            RESULTS.successful,
            RESULTS.where(diverged, RESULTS.diverged, RESULTS.max_steps_reached),
        ),
        RESULTS.nonfinite,
    )
    return done, result, rnorm


def iterate(fn, x0, args, solver, *, max_steps, rtol, atol, norm, divergence_factor):
    """Run ``solver`` on ``fn(x, args) = 0`` from the flat vector ``x0``.

    Returns ``(x, result, num_steps, residual_norm)``.
    """
    rtol = jnp.asarray(rtol, x0.dtype)
    atol = jnp.asarray(atol, x0.dtype)
    divergence_factor = jnp.asarray(divergence_factor, x0.dtype)
    fx0 = fn(x0, args)
    r0 = norm(fx0)
    state0 = solver.init(fn, x0, fx0, args)
    k0 = jnp.zeros((), jnp.int32)
    check = lambda x, fx, k: _status(x, fx, k, r0, norm, rtol, atol, max_steps, divergence_factor)
    done0, _, _ = check(x0, fx0, k0)

    def cond(carry):
        return ~carry[-1]

    def body(carry):
        x, fx, state, k, _ = carry
        x_new, state_new = solver.step(fn, x, fx, args, state)
        fx_new = fn(x_new, args)
        k_new = k + 1
        done, _, _ = check(x_new, fx_new, k_new)
        return x_new, fx_new, state_new, k_new, done

    x, fx, _, k, _ = lax.while_loop(cond, body, (x0, fx0, state0, k0, done0))
    _, result, rnorm = check(x, fx, k)
    return x, result, k, rnorm


def flatten_problem(fn, z0, norm):
    """Flat views of a pytree problem: ``(x0, fn_flat, norm_flat, unravel)``.

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

    def norm_flat(v):
        return jnp.asarray(norm(unravel(v))).astype(v.dtype)

    return x0, fn_flat, norm_flat, unravel
