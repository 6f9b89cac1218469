"""The accelerator-rounding plugin (tests/tf32_emulation.py) rounds what a GPU rounds, and only that.

The plugin patches primitive binding for the whole process, and traces made meanwhile (eager
primitive calls included) keep the rounding in JAX's caches, so removing it clears them all. In a
pytest-xdist worker that has compiled hundreds of programs, the clearing alone takes seconds and
every later test there traces and compiles again: the checks run in one fresh interpreter instead
(:func:`run_checks`), which the one test here starts.
"""

import os
import subprocess
import sys

import jax
import numpy as np
from jax import lax

from . import tf32_emulation as emulation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
C = np.float32(np.cos(np.pi / 4))
DIMS = (((1,), (0,)), ((), ()))


def _with_plugin(fn):
    emulation.pytest_configure(None)
    try:
        return fn()
    finally:
        emulation.pytest_unconfigure(None)


def _check_matrix_products_are_rounded_like_a_gpu():
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


def _check_float64_is_not_rounded():
    jax.config.update("jax_enable_x64", True)
    try:
        a = np.full((3, 4), np.cos(np.pi / 4))
        out = _with_plugin(lambda: lax.dot_general(a, np.eye(4), DIMS))
        assert out.dtype == np.float64
        assert float(out[0, 0]) == np.cos(np.pi / 4)
    finally:
        jax.config.update("jax_enable_x64", False)


def _check_convolutions_are_rounded():
    x = np.full((1, 1, 5), C, np.float32)
    w = np.ones((1, 1, 1), np.float32)
    out = _with_plugin(lambda: lax.conv_general_dilated(x, w, (1,), "VALID"))
    assert float(out[0, 0, 0]) == 0.70703125


def run_checks():
    """Every check above, in this process (a fresh one: see the module docstring)."""
    _check_matrix_products_are_rounded_like_a_gpu()
    _check_float64_is_not_rounded()
    _check_convolutions_are_rounded()
    print("tf32 emulation checks passed")


def test_the_plugin_rounds_what_a_gpu_rounds_and_only_that():
    code = "from tests.test_tf32_emulation import run_checks; run_checks()"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tf32 emulation checks passed" in result.stdout
