r"""Norms over pytrees, used by the convergence tests of every solver.

Each takes any pytree of arrays and returns a scalar. ``max_norm`` is the default: with the
per-element scale ``atol + rtol * |z|`` it says "every component is within tolerance".

Derivatives: ``two_norm`` and ``rms_norm`` are differentiable everywhere, with gradient
:math:`x / \|x\|_2` (over ``sqrt(n)`` for ``rms_norm``) away from zero and 0 at zero — the
minimal-norm subgradient, as optimistix's ``two_norm`` has it; a plain ``sqrt(sum(x**2))`` gives
``0 / 0 = NaN`` there. They sum :math:`|x / m|^2` with :math:`m = \max|x|`, so entries
beyond the square root of the dtype's largest value (``1.8e19`` in float32) do not overflow to
an infinite norm (which the drivers would report as ``nonfinite`` for a finite state).
"""

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PyTree


def _leaves(x):
    return [jnp.asarray(leaf) for leaf in jax.tree_util.tree_leaves(x)]


def max_norm(x: PyTree[Array]) -> Float[Array, ""]:
    """Largest absolute entry over all leaves (0 for an empty tree); gradient 0 at 0, as
    optimistix's (``max`` would share a unit gradient among the tied zeros)."""
    leaves = [jnp.max(jnp.abs(leaf)) for leaf in _leaves(x) if leaf.size]
    if not leaves:
        return jnp.zeros(())
    largest = jnp.max(jnp.stack(leaves))
    return jnp.where(largest == 0, jnp.zeros_like(largest), largest)


def two_norm(x: PyTree[Array]) -> Float[Array, ""]:
    r"""Euclidean norm of all entries of all leaves taken together.

    Computed as :math:`m \sqrt{\sum_i |x_i / m|^2}` with :math:`m = \max_i |x_i|` held constant
    under differentiation: the expression does not depend on :math:`m`, so its derivative is the
    norm's, :math:`x / \|x\|_2`, and the square root only sees values :math:`\ge 1`. At
    :math:`x = 0` the value and the gradient are 0 (the double ``where`` keeps the unused branch
    free of ``0 / 0``). A NaN entry gives NaN, an infinite one (and no NaN) gives ``inf``.
    """
    leaves = [leaf for leaf in _leaves(x) if leaf.size]
    if not leaves:
        return jnp.zeros(())
    scale = lax.stop_gradient(max_norm(leaves))
    nonzero = scale != 0  # True for NaN: a NaN must come out as NaN, never as 0.
    safe = jnp.where(nonzero & jnp.isfinite(scale), scale, jnp.ones_like(scale))
    squares = sum(jnp.sum(jnp.abs(leaf / safe.astype(leaf.dtype)) ** 2) for leaf in leaves)
    norm = safe * jnp.sqrt(jnp.where(nonzero, squares, jnp.ones_like(squares)))
    # An infinite entry: x / safe has inf, so the sum is inf and so is the norm, unless another
    # entry is NaN. Only the exact zero needs its own branch.
    return jnp.where(nonzero, norm, jnp.zeros_like(norm))


def rms_norm(x: PyTree[Array]) -> Float[Array, ""]:
    """Root mean square over all entries of all leaves taken together (gradient 0 at 0)."""
    leaves = _leaves(x)
    size = sum(leaf.size for leaf in leaves)
    if size == 0:
        return jnp.zeros(())
    return two_norm(x) / jnp.sqrt(size)
