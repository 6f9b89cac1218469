"""Pytest plugin: check jaxsolve's annotations at run time with jaxtyping and beartype.

    python -m pytest -p tests.typecheck [paths]

installs ``jaxtyping.install_import_hook("jaxsolve", ...)`` with beartype before anything
imports jaxsolve, so every function and dataclass in the package is decorated with
``@jaxtyped(typechecker=beartype)``: each call checks its arguments and return value against the
annotations, array shapes and dtypes included (``Float[Array, "batch n"]`` binds ``batch`` and
``n`` across one call). Calls made while JAX traces are checked too (on their tracers, whose
shape and dtype are known), once per trace.

Pytest loads a ``-p`` plugin while it parses the command line, before any conftest.py, so the hook
is in place when tests/conftest.py and the test modules import jaxsolve. What it cannot reach:
fresh interpreters a test starts (README blocks, notebooks, the multi-device runs) import
jaxsolve without the hook. Tests marked ``wrong_argument_types`` give jaxsolve arguments against
its annotations on purpose, to check the errors jaxsolve raises itself; beartype rejects those calls
first (with a ``jaxtyping.TypeCheckError``), so they are skipped here. Needs ``beartype`` (in the
test extra).
"""

import sys

import jaxtyping
import pytest
from beartype import BeartypeConf, beartype

if "jaxsolve" in sys.modules:  # the hook only decorates modules imported after it
    raise pytest.UsageError(
        "tests.typecheck: jaxsolve was imported before the plugin; load it with "
        "`python -m pytest -p tests.typecheck` (not from a conftest.py)"
    )

# PEP 484's numeric tower, as static type checkers read annotations: an int is a float (and a
# float a complex), so `r: float` accepts r=1. beartype is stricter by default.
typechecker = beartype(conf=BeartypeConf(is_pep484_tower=True))
HOOK = jaxtyping.install_import_hook("jaxsolve", "tests.typecheck.typechecker")


def pytest_report_header(config):
    return "jaxsolve annotations checked at run time (jaxtyping import hook, beartype)"


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="passes arguments against jaxsolve's annotations on purpose")
    for item in items:
        if item.get_closest_marker("wrong_argument_types"):
            item.add_marker(skip)


def pytest_unconfigure(config):
    HOOK.uninstall()
