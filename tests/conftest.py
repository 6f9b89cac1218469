import os


# Most of the suite's time is XLA compiling small programs that then run for milliseconds. Two
# XLA:CPU settings cut that compile time with the same IEEE arithmetic (jaxsolve/_core/
# _xla_flags.py says which, and why): the whole default run takes 15% less time (454 s against
# 517-545 s on the 2-core machine). Set before JAX creates its CPU backend; subprocesses (README
# blocks, notebook kernels, pytest-xdist workers) inherit them, and the verdict of the one probe
# (a fresh interpreter, ~0.2 s: XLA aborts on a flag it does not know). A choice the caller
# already made in XLA_FLAGS is kept. The module is loaded by path: importing jaxsolve here would
# import JAX before the compilation-cache settings below.
def _add_fast_compile_flags():
    import importlib.util

    package = importlib.util.find_spec("jaxsolve").submodule_search_locations[0]
    path = os.path.join(package, "_core", "_xla_flags.py")
    spec = importlib.util.spec_from_file_location("_jaxsolve_tests_xla_flags", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.add_fast_compile_flags()


_add_fast_compile_flags()

# One persistent compilation cache for the whole run, shared by the pytest-xdist workers and the
# subprocesses (README blocks, notebook kernels, the multi-device and resume checks): a program
# that one process compiled is loaded by the next instead of compiled again. A fresh directory per
# run, removed at its end, so no run reads another's; a cache the caller chose is kept.
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    import atexit
    import shutil
    import tempfile

    _cache_dir = tempfile.mkdtemp(prefix="jaxsolve-tests-xla-cache-")
    atexit.register(shutil.rmtree, _cache_dir, ignore_errors=True)
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _cache_dir
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

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


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "wrong_argument_types: gives jaxsolve arguments against its annotations on purpose, to "
        "check its own errors (skipped under -p tests.typecheck, where beartype rejects them first)",
    )


def ci_checks():
    """The node ids of tests/ci_checks.txt (the default run's heaviest checks)."""
    path = os.path.join(os.path.dirname(__file__), "ci_checks.txt")
    with open(path) as f:
        return {line.strip() for line in f if line.strip() and not line.startswith("#")}


_CI_CHECKS = ci_checks()


# tryfirst: the marks must be on the items before -m deselects by them.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.nodeid in _CI_CHECKS:
            item.add_marker(pytest.mark.slow)
            item.add_marker(pytest.mark.ci)
    items.sort(key=lambda item: not item.nodeid.startswith(_LONG_FIRST))
