"""Teleport grids ("The Unreasonable Effectiveness of Gaussian Score Approximation for Diffusion
Models and its Applications").

The skipped part of sampling is the grid's first interval: :class:`~jaxsolve.diffusion.Teleport`
takes it with the Gaussian's closed-form flow, and its solver takes every later step.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, is_concrete


def teleport_sigmas(
    sigma_max: Float[ArrayLike, ""], sigmas: Float[ArrayLike, " L"]
) -> Float[Array, " L+1"]:
    """The grid ``[sigma_max, *sigmas]``: teleport from ``sigma_max`` to ``sigmas[0]``, then ``sigmas``.

    ``sigmas`` is the solver's own grid starting at the skip level (e.g.
    ``karras_sigmas(n, sigma_min, sigma_skip)``), so ``n`` solver steps follow the free jump.
    """
    sigmas = as_float(sigmas)
    sigma_max = as_float(sigma_max).astype(sigmas.dtype)
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D grid; got shape {sigmas.shape}.")
    if is_concrete((sigma_max, sigmas)) and not float(sigma_max) > float(sigmas[0]):
        raise ValueError(
            f"sigma_max must exceed the skip level sigmas[0]; got {float(sigma_max):.6g} <= "
            f"{float(sigmas[0]):.6g}."
        )
    return jnp.concatenate([sigma_max[None], sigmas])
