"""Norms over pytrees, used by the convergence tests of every solver.

Each takes any pytree of arrays and returns a scalar. ``max_norm`` is the default: with the
per-element scale ``atol + rtol * |z|`` it says "every component is within tolerance".
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree


def _leaves(x):
    return [jnp.asarray(leaf) for leaf in jax.tree_util.tree_leaves(x)]


def max_norm(x: PyTree[Array]) -> Float[Array, ""]:
    """Largest absolute entry over all leaves (0 for an empty tree)."""
    leaves = [jnp.max(jnp.abs(leaf)) for leaf in _leaves(x) if leaf.size]
    if not leaves:
        return jnp.zeros(())
    return jnp.max(jnp.stack(leaves))


def two_norm(x: PyTree[Array]) -> Float[Array, ""]:
    """Euclidean norm of all entries of all leaves taken together."""
    leaves = _leaves(x)
    if not leaves:
        return jnp.zeros(())
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves))


def rms_norm(x: PyTree[Array]) -> Float[Array, ""]:
    """Root mean square over all entries of all leaves taken together."""
    leaves = _leaves(x)
    size = sum(leaf.size for leaf in leaves)
    if size == 0:
        return jnp.zeros(())
    return two_norm(x) / jnp.sqrt(size)
