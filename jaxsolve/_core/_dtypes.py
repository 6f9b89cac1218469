"""Dtype rules: state and schedule arithmetic in float32 (float64 under ``jax_enable_x64``).

Half-precision inputs (a model that returns bfloat16, a bfloat16 time) are promoted, because
log-SNR and noise levels lose all meaning in 8 bits of mantissa.
"""

import jax.numpy as jnp
from jax import dtypes


def default_float():
    """float64 when ``jax_enable_x64`` is on, else float32."""
    return dtypes.canonicalize_dtype(jnp.float64)


def as_float(x):
    """``x`` as a floating array of at least the default precision.

    Integers and Python scalars become the default float; float16/bfloat16 are promoted to
    float32 (or float64 under x64); float32/float64 arrays keep their dtype.
    """
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.promote_types(x.dtype, default_float()))
    return x.astype(default_float())


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
