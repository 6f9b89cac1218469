"""Pytest plugin: emulate an accelerator's default float32 matrix products on the CPU.

On NVIDIA GPUs since Ampere, a float32 matrix-matrix product (and convolution) at JAX's default
precision runs on tensor cores in TF32: each operand is rounded to 10 mantissa bits (relative
error ~5e-4) and the products are accumulated in float32. TPUs do the same with bfloat16. XLA:CPU
ignores the precision request, so code and tests can pass here and fail there; running the suite
on an H200 found a truncated-DFT transform that was only TF32-accurate and a float32 DEQ whose
backward solve could not reach its tolerance.

    python -m pytest -p tests.tf32_emulation [paths]

rounds both operands of every float32 / complex64 ``dot_general`` whose operands are both
matrices (a free dimension of size > 1 on each side, as cuBLAS needs for its tensor-core path;
matrix-vector products stay float32 there too) and of every float32 convolution to TF32, unless
the product asks for more (``precision=HIGHEST``, or ``jax.default_matmul_precision("float32")``
around it). ``JAXSOLVE_EMULATE=bfloat16`` rounds to bfloat16 instead (a TPU). It is an
approximation of the hardware: reduction order and which kernels use tensor cores still differ.
Fresh interpreters a test starts (README blocks, notebooks, the multi-device runs) do not load the
plugin; tests marked ``compares_with_fresh_interpreter`` (numbers from this process against a new
one) are deselected, since they would only report the emulation itself.
"""

import os

import jax
import jax.numpy as jnp
from jax import lax
from jax._src.lax.convolution import conv_general_dilated_p
from jax._src.lax.lax import dot_general_p

_MANTISSA = {"tf32": 10, "bfloat16": 7}[os.environ.get("JAXSOLVE_EMULATE", "tf32")]
_FULL = {"highest", "float32", "fastest_never"}  # config values that keep full float32


def _reduced(precision) -> bool:
    """Whether a product with this ``precision`` parameter runs below float32 on an accelerator."""
    if precision is None:
        default = jax.config.jax_default_matmul_precision
        return default is None or str(default).lower() not in _FULL
    values = precision if isinstance(precision, tuple) else (precision,)
    return all(p in (None, lax.Precision.DEFAULT) for p in values)


def _round(x):
    if x.dtype == jnp.float32:
        return lax.reduce_precision(x, exponent_bits=8, mantissa_bits=_MANTISSA)
    if x.dtype == jnp.complex64:
        return lax.complex(_round(jnp.real(x)), _round(jnp.imag(x)))
    return x


def _has_free_dim(shape, contracting, batch) -> bool:
    used = set(contracting) | set(batch)
    return any(n > 1 for i, n in enumerate(shape) if i not in used)


def _dot_bind(*args, **params):
    lhs, rhs = args
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    if (
        _reduced(params.get("precision"))
        and _has_free_dim(lhs.shape, lc, lb)
        and _has_free_dim(rhs.shape, rc, rb)
    ):
        lhs, rhs = _round(lhs), _round(rhs)
    return _original["dot"](lhs, rhs, **params)


def _conv_bind(*args, **params):
    lhs, rhs = args
    if _reduced(params.get("precision")):
        lhs, rhs = _round(lhs), _round(rhs)
    return _original["conv"](lhs, rhs, **params)


_original = {}


def pytest_configure(config):
    _original["dot"] = dot_general_p.bind
    _original["conv"] = conv_general_dilated_p.bind
    dot_general_p.bind = _dot_bind
    conv_general_dilated_p.bind = _conv_bind


def pytest_unconfigure(config):
    if _original:
        dot_general_p.bind = _original["dot"]
        conv_general_dilated_p.bind = _original["conv"]
        # Traces made meanwhile (eager primitives included) hold the rounding: drop them.
        jax.clear_caches()


def pytest_collection_modifyitems(config, items):
    skipped = [i for i in items if i.get_closest_marker("compares_with_fresh_interpreter")]
    if skipped:
        config.hook.pytest_deselected(items=skipped)
        items[:] = [i for i in items if i not in skipped]


def pytest_report_header(config):
    return f"jaxsolve: emulating accelerator matmul precision ({_MANTISSA} mantissa bits)"
