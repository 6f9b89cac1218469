"""The annotation-checking plugin (tests/typecheck.py) really checks jaxsolve's public functions.

Importing the plugin here would install its import hook too late (jaxsolve is imported), so the
first test runs only in a run that loaded it (``-p tests.typecheck``); the second starts one.
"""

import pathlib
import subprocess
import sys

import jax.numpy as jnp
import jaxtyping
import pytest

from jaxsolve import diffusion as jd
from jaxsolve import operators as ops


def test_annotations_are_checked_under_the_plugin(request):
    if not request.config.pluginmanager.hasplugin("tests.typecheck"):
        pytest.skip("run with -p tests.typecheck")
    # A shape the annotations rule out: pred and target share "c *spatial".
    with pytest.raises(jaxtyping.TypeCheckError, match="relative_lp_loss"):
        ops.relative_lp_loss(jnp.zeros((1, 8)), jnp.zeros((1, 9)))
    # A type they rule out: a list is not ArrayLike.
    with pytest.raises(jaxtyping.TypeCheckError, match="lam"):
        jd.VPSchedule.linear().lam([0.5])


@pytest.mark.slow  # a fresh pytest: importing jaxsolve under the hook takes ~6 s
def test_the_plugin_hooks_jaxsolve_before_it_is_imported():
    test = f"{__file__}::test_annotations_are_checked_under_the_plugin"
    options = ["-n", "0", "-q", "-p", "no:cacheprovider"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.typecheck", test, *options],
        cwd=pathlib.Path(__file__).parents[1],  # where `tests` is importable
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and "1 passed" in run.stdout, run.stdout + run.stderr
