import os

# Most of the suite's time is XLA compiling small programs that then run for milliseconds. XLA:CPU's
# older loop emitters compile fusions about twice as fast as its MLIR fusion emitters (the
# default), with the same IEEE arithmetic, and the few training tests run as fast or faster. Set
# before JAX creates its CPU backend; subprocesses (README blocks, notebook kernels) inherit it.
# A choice the caller already made in XLA_FLAGS is kept.
if "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_cpu_use_fusion_emitters=false"
    ).strip()

import jax
import pytest
from hypothesis import HealthCheck, settings

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
