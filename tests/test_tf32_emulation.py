"""The accelerator-rounding plugin (tests/tf32_emulation.py) rounds what a GPU rounds, and only that.

The plugin patches primitive binding for the whole process, and traces made meanwhile (eager
primitive calls included) keep the rounding in JAX's caches; removing the plugin clears them, which
the last check of the first test relies on.
"""

import numpy as np
import pytest
from jax import lax
from jax._src.lax.lax import dot_general_p

from . import tf32_emulation as emulation

C = np.float32(np.cos(np.pi / 4))
DIMS = (((1,), (0,)), ((), ()))


def _with_plugin(fn):
    if dot_general_p.bind is emulation._dot_bind:
        pytest.skip("the plugin is active for this whole run (-p tests.tf32_emulation)")
    emulation.pytest_configure(None)
    try:
        return fn()
    finally:
        emulation.pytest_unconfigure(None)


def test_matrix_products_are_rounded_like_a_gpu():
    a = np.full((3, 4), C, np.float32)
    eye = np.eye(4, dtype=np.float32)
    col = np.eye(4, 1, dtype=np.float32)[:, 0]
    default, highest, matvec = _with_plugin(
        lambda: (
            lax.dot_general(a, eye, DIMS),
            lax.dot_general(a, eye, DIMS, precision=lax.Precision.HIGHEST),
            lax.dot_general(a, col, DIMS),
        )
    )
    # TF32 keeps 10 mantissa bits: cos(pi/4) becomes 181/256, as an H200 returned.
    assert float(default[0, 0]) == 0.70703125
    assert float(highest[0, 0]) == C  # asking for full precision is honoured
    assert float(matvec[0]) == C  # matrix-vector products do not use tensor cores
    # And the patch is gone afterwards.
    assert float(lax.dot_general(a, eye, DIMS)[0, 0]) == C


def test_float64_is_not_rounded(x64):
    a = np.full((3, 4), np.cos(np.pi / 4))
    out = _with_plugin(lambda: lax.dot_general(a, np.eye(4), DIMS))
    assert float(out[0, 0]) == np.cos(np.pi / 4)


def test_convolutions_are_rounded():
    x = np.full((1, 1, 5), C, np.float32)
    w = np.ones((1, 1, 1), np.float32)
    out = _with_plugin(lambda: lax.conv_general_dilated(x, w, (1,), "VALID"))
    assert float(out[0, 0, 0]) == 0.70703125
