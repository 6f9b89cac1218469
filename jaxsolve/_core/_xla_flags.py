"""XLA:CPU settings that cut compile time, added to ``XLA_FLAGS`` where this jaxlib knows them.

Most of the quick tour's and the test suite's time is XLA compiling small programs that then run
for milliseconds. Two XLA:CPU settings cut that compile time with the same IEEE arithmetic (no
fast-math either way):

* the older loop emitters instead of the MLIR fusion emitters (the default): fusions compile
  about twice as fast, and small training loops run as fast or faster;
* LLVM's optimisation level 1 instead of 2 for the compiled kernels: programs bound by execution
  rather than compilation run a little slower.

XLA aborts the whole process on a flag it does not know, and flags come and go between jaxlib
releases (jaxlib 0.11 no longer has the first), so a fresh interpreter tries them before they are
used: it builds the compile options every compilation builds, which is where ``XLA_FLAGS`` is
parsed (about 0.2 s; with ``import jax`` and a CPU client as a fallback where that part of jaxlib
moved). The verdict is kept in an environment variable, so the subprocesses that inherit it do
not ask again.

The module imports nothing from jaxsolve or JAX at import time: the test suite's conftest loads
it by path, before anything imports JAX.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence

FAST_COMPILE_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_backend_optimization_level=1")
"""The flags :func:`add_fast_compile_flags` adds by default."""

_VERDICT = "JAXSOLVE_XLA_FLAGS_PROBED"

# Builds the compile options as every compilation does: XLA parses XLA_FLAGS there and aborts on
# one it does not know. Where that part of jaxlib moved, starting JAX's CPU backend parses them.
_PROBE = """
try:
    from jaxlib import xla_client
    xla_client.CompileOptions()
except (ImportError, AttributeError):
    import jax
    jax.devices("cpu")
"""


def _flag_name(flag: str) -> str:
    return flag.split("=", 1)[0]


def _checked_flags(flags) -> tuple[str, ...]:
    if isinstance(flags, str) or not isinstance(flags, Sequence):
        raise TypeError(f"flags must be a sequence of strings; got {type(flags).__name__}.")
    for flag in flags:
        if not (isinstance(flag, str) and flag.startswith("--xla_") and " " not in flag):
            raise ValueError(
                f"flags must hold XLA flags such as '--xla_backend_optimization_level=1'; "
                f"got {flag!r}."
            )
    return tuple(flags)


def _starts_with(flags: Sequence[str], base: str) -> bool:
    """Whether this jaxlib starts with ``flags`` added to the XLA_FLAGS ``base``."""
    env = dict(os.environ, XLA_FLAGS=" ".join([base, *flags]).strip(), JAX_PLATFORMS="cpu")
    probe = [sys.executable, "-c", _PROBE]
    return subprocess.run(probe, env=env, capture_output=True).returncode == 0


def accepted_xla_flags(flags: Sequence[str] = FAST_COMPILE_FLAGS) -> tuple[str, ...]:
    """Those of ``flags`` that this jaxlib accepts next to the current ``XLA_FLAGS``.

    Tried together in a fresh interpreter, then each alone if together they fail. The answer is
    cached in the environment (``JAXSOLVE_XLA_FLAGS_PROBED``, keyed by the interpreter, the
    current ``XLA_FLAGS`` and ``flags``), which subprocesses inherit.
    """
    flags = _checked_flags(flags)
    if not flags:
        return ()
    base = os.environ.get("XLA_FLAGS", "")
    key = {"python": sys.executable, "xla_flags": base, "tried": list(flags)}
    try:
        cached = json.loads(os.environ.get(_VERDICT, ""))
    except ValueError:
        cached = None
    if isinstance(cached, dict) and {k: cached.get(k) for k in key} == key:
        accepted = cached.get("accepted")
        if isinstance(accepted, list) and set(accepted) <= set(flags):
            return tuple(accepted)
    if _starts_with(flags, base):
        accepted = flags
    else:
        accepted = tuple(f for f in flags if _starts_with([f], base))
    os.environ[_VERDICT] = json.dumps({**key, "accepted": list(accepted)})
    return accepted


def _backend_started() -> bool:
    """Whether JAX has created a backend in this process (XLA has read XLA_FLAGS by then)."""
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without this private helper: assume not
        return False


def add_fast_compile_flags(flags: Sequence[str] = FAST_COMPILE_FLAGS) -> tuple[str, ...]:
    """Add to ``XLA_FLAGS`` those of ``flags`` that this jaxlib accepts; returns the ones added.

    A flag whose name ``XLA_FLAGS`` already sets is left out: the caller's choice is kept. XLA
    reads ``XLA_FLAGS`` once, when JAX creates its first backend (importing JAX does not), so
    this must run before anything computes; after that it changes nothing and returns ``()``.
    Subprocesses inherit the result.
    """
    flags = _checked_flags(flags)
    if _backend_started():
        return ()
    present = os.environ.get("XLA_FLAGS", "")
    names = {_flag_name(f) for f in present.split()}
    wanted = [f for f in flags if _flag_name(f) not in names]
    added = accepted_xla_flags(wanted) if wanted else ()
    if added:
        os.environ["XLA_FLAGS"] = " ".join([present, *added]).strip()
    return added
