import os
import subprocess
import sys

# Most of the suite's time is XLA compiling small programs that then run for milliseconds. XLA:CPU's
# older loop emitters compile fusions about twice as fast as its MLIR fusion emitters (the
# default), with the same IEEE arithmetic, and the few training tests run as fast or faster. Set
# before JAX creates its CPU backend; subprocesses (README blocks, notebook kernels, pytest-xdist
# workers) inherit it. A choice the caller already made in XLA_FLAGS is kept.
#
# XLA aborts the whole process on a flag it does not know, and flags come and go between jaxlib
# releases (jaxlib 0.11 no longer has this one), so a fresh interpreter tries it first (~1 s, once
# per run: the workers inherit the answer).
_FLAG = "--xla_cpu_use_fusion_emitters=false"
_CHECKED = "JAXSOLVE_TESTS_XLA_FLAG_CHECKED"
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "") and not os.environ.get(
    _CHECKED
):
    os.environ[_CHECKED] = "1"
    _flags = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
    _probe = subprocess.run(
        [sys.executable, "-c", "import jax; jax.devices('cpu')"],
        env=dict(os.environ, XLA_FLAGS=_flags),
        capture_output=True,
    )
    if _probe.returncode == 0:
        os.environ["XLA_FLAGS"] = _flags

import jax  # noqa: E402  (after the XLA flags above)
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

# JAX compiles on first use, so a Hypothesis example can take far longer than the next one.
settings.register_profile(
    "jaxsolve",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("jaxsolve")


@pytest.fixture
def x64():
    """Run a test in float64 (parity and convergence tests need it)."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


# The longest tests start fresh interpreters or kernels (README blocks, notebooks, the 8-device
# run, the resume-in-a-new-process check). Collected last, they leave one pytest-xdist worker
# busy with a 20 s test while the other has nothing left; run first, the short tests fill in.
_LONG_FIRST = ("tests/test_readme.py", "tests/test_notebooks.py", "tests/test_multidevice.py")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not item.nodeid.startswith(_LONG_FIRST))
