"""Products that must be as accurate as their dtype, whatever the accelerator's default.

On GPUs since Ampere a float32 matrix product at JAX's default precision rounds its operands to
TF32 (10 mantissa bits, relative error ~5e-4); TPUs round to bfloat16. That suits a network's
layers, and the user keeps control of them through ``jax.default_matmul_precision``. It does not
suit the numerical machinery underneath: a truncated DFT standing in for an FFT, an exact oracle
that measures sampler errors, the Gram matrices and Krylov bases of a solver (whose conditioning
squares the error). Those products go through these helpers, at ``Precision.HIGHEST``. CPU ignores
the request, so nothing changes there; ``python -m pytest -p tests.tf32_emulation`` emulates the
rounding on CPU.
"""

import jax.numpy as jnp
from jax import lax

HIGHEST = lax.Precision.HIGHEST


def exact_dot(a, b):
    """``jnp.dot`` (``a @ b`` for matrices and vectors) in full precision."""
    return jnp.dot(a, b, precision=HIGHEST)


def exact_einsum(spec, *operands):
    """``jnp.einsum`` in full precision."""
    return jnp.einsum(spec, *operands, precision=HIGHEST)


def exact_tensordot(a, b, axes):
    """``jnp.tensordot`` in full precision."""
    return jnp.tensordot(a, b, axes=axes, precision=HIGHEST)
