"""Dtype rules: arithmetic in the default float, float32 (float64 under ``jax_enable_x64``).

One rule for half precision, in every pillar: a float16 or bfloat16 input (a model that returns
bfloat16, a bfloat16 time or state) is promoted to the default float, because log-SNR, noise
levels and tolerance tests lose all meaning in 8 bits of mantissa. :func:`as_float` (schedules,
times, diffusion states) also lifts float32 to float64 under x64; :func:`promote_half` (the state
of an iterative solve, which keeps the caller's float32 or float64) lifts half precision only.
"""

import jax.numpy as jnp
from jax import dtypes


def default_float():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return dtypes.canonicalize_dtype(jnp.float64)


def as_float(x):
    """``x`` as a floating array of at least the default precision.

    Integers, bools and Python scalars become the default float; a floating array is promoted to
    the default float where it is narrower (float16/bfloat16 always; float32 under x64) and keeps
    its dtype otherwise.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.promote_types(x.dtype, default_float()))
    return x.astype(default_float())


def promote_half(x):
    """``x`` with half precision (float16, bfloat16) promoted to the default float; any other
    dtype kept (a float32 state stays float32 under x64)."""
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating) and jnp.finfo(x.dtype).bits < 32:
        return x.astype(default_float())
    return x


def expand_to(v, x):
    """Append trailing singleton axes to ``v`` so it broadcasts against ``x`` from the left.

    A noise level of shape ``(B,)`` against a batch ``x`` of shape ``(B, C, H, W)`` becomes
    ``(B, 1, 1, 1)``; a scalar stays a scalar.
    """
    v = jnp.asarray(v)
    extra = jnp.ndim(x) - v.ndim
    if extra < 0:
        raise ValueError(
            f"a per-sample value of shape {v.shape} has more axes than the state of shape "
            f"{jnp.shape(x)}."
        )
    return v.reshape(v.shape + (1,) * extra)
