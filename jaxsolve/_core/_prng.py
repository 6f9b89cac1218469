"""PRNG conventions: per-sample noise from ``fold_in(key, i)``.

Drawing sample ``i``'s randomness from ``jax.random.fold_in(key, i)`` (rather than splitting
``key`` into ``n`` pieces) makes sample ``i`` independent of the batch size: the first ten samples
of a batch of 100 equal a batch of 10.
"""

import jax
import jax.numpy as jnp


def per_sample_keys(key, n, offset=0):
    """Keys ``fold_in(key, offset + i)`` for ``i = 0..n-1``, shape ``(n, *key.shape)``."""
    idx = jnp.arange(n) + offset
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)
