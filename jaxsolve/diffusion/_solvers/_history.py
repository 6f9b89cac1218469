"""History buffers for multistep solvers, carried in the driver's scan.

A buffer holds the last ``K`` model outputs (most recent last) with their noise levels and a count
of valid entries. Entries not yet filled hold harmless finite values (distinct levels), so that
coefficient formulas evaluated for every order under ``vmap`` never produce NaN or infinity, not
even in branches whose result is discarded (whose gradients would otherwise be NaN).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int


class History(NamedTuple):
    values: Float[Array, "K ..."]
    sigmas: Float[Array, " K"]
    count: Int[Array, ""]


def empty(x, size: int) -> History:
    return History(
        values=jnp.zeros((size, *x.shape), x.dtype),
        sigmas=jnp.ones((size,), x.dtype),
        count=jnp.zeros((), jnp.int32),
    )


def push(h: History, value, sigma) -> History:
    values = jnp.concatenate([h.values[1:], value[None].astype(h.values.dtype)])
    sigmas = jnp.concatenate([h.sigmas[1:], jnp.asarray(sigma, h.sigmas.dtype)[None]])
    return History(values, sigmas, jnp.minimum(h.count + 1, h.values.shape[0]))


def reset(h: History) -> History:
    return History(h.values, h.sigmas, jnp.zeros((), jnp.int32))


def recent(h: History, j: int):
    """(value, sigma) of the ``j``-th most recent entry (0 = newest), made safe when not filled.

    An unfilled entry reads as the newest value at a level ``e^(j)`` times the newest level, so
    divided differences stay finite (and are multiplied by zero weights when unused).
    """
    k = h.values.shape[0]
    newest_v, newest_s = h.values[k - 1], h.sigmas[k - 1]
    valid = j < h.count
    value = jnp.where(valid, h.values[k - 1 - j], newest_v)
    sigma = jnp.where(valid, h.sigmas[k - 1 - j], newest_s * jnp.exp(float(j)))
    return value, sigma


def effective_order(order: int, count, i, n, lower_order_final: bool, always: bool = False):
    """Order used at step ``i``: warm-up ``count + 1``, and near the end at most ``n - i``.

    ``lower_order_final`` lowers the order on the last steps as diffusers does: for DPM-Solver and
    DEIS only when there are fewer than 15 steps, for UniPC (``always=True``) whatever ``n``.
    """
    o = jnp.minimum(order, count + 1)
    if lower_order_final:
        limit = jnp.where(always | (n < 15), n - i, order)
        o = jnp.minimum(o, limit)
    return jnp.maximum(o, 1).astype(jnp.int32)


def switch_on_order(order, branches, *operands):
    """``lax.switch`` over ``branches[k-1]`` for order ``k``."""
    return jax.lax.switch(jnp.clip(order - 1, 0, len(branches) - 1), branches, *operands)
