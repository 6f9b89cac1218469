import os
import subprocess
import sys

# Most of the suite's time is XLA compiling small programs that then run for milliseconds. Two
# XLA:CPU settings cut that compile time with the same IEEE arithmetic (no fast-math either way):
#
# * the older loop emitters instead of the MLIR fusion emitters (the default): fusions compile
#   about twice as fast, and the few training tests run as fast or faster;
# * LLVM's optimisation level 1 instead of 2 for the compiled kernels: together with the first,
#   the whole default run takes 15% less time (454 s against 517-545 s on the 2-core machine);
#   the few tests bound by execution rather than compilation run a little slower.
#
# Set before JAX creates its CPU backend; subprocesses (README blocks, notebook kernels,
# pytest-xdist workers) inherit them. A choice the caller already made in XLA_FLAGS is kept.
# XLA aborts the whole process on a flag it does not know, and flags come and go between jaxlib
# releases (jaxlib 0.11 no longer has the first), so a fresh interpreter tries them first (~1 s,
# once per run: the workers inherit the answer), and each one alone if together they fail.
_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1")
_CHECKED = "JAXSOLVE_TESTS_XLA_FLAG_CHECKED"


def _accepted(flags):
    """Whether this jaxlib starts with ``flags`` added to XLA_FLAGS."""
    env = dict(os.environ, XLA_FLAGS=" ".join([os.environ.get("XLA_FLAGS", ""), *flags]).strip())
    probe = [sys.executable, "-c", "import jax; jax.devices('cpu')"]
    return subprocess.run(probe, env=env, capture_output=True).returncode == 0


if not os.environ.get(_CHECKED):
    os.environ[_CHECKED] = "1"
    _present = os.environ.get("XLA_FLAGS", "")
    _wanted = [f for f in _FLAGS if f.split("=")[0] not in _present]
    if _wanted:
        _chosen = _wanted if _accepted(_wanted) else [f for f in _wanted if _accepted([f])]
        os.environ["XLA_FLAGS"] = " ".join([_present, *_chosen]).strip()

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
