"""Checks on where results will be written, made before any work is done."""

from __future__ import annotations

import os
import tempfile


def check_writable_dir(
    name: str, path: str | os.PathLike, *, given: str | None = None, hint: str = ""
) -> str:
    """Create the directory ``path`` if needed and check that a file can be written in it.

    Raises ``ValueError`` naming the argument ``name`` (e.g. ``"--out"``, ``"cache_dir"``) and
    the value the caller gave (``given``, default ``path``; a checkpoint file names the file, not
    its folder), then ``hint``: a long computation whose results cannot be saved should fail
    before it starts, not after.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jaxsolve-write-probe-"):
            pass
    except OSError as err:
        shown = path if given is None else given
        raise ValueError(
            f"{name}={shown!r} is not a writable directory ({type(err).__name__}: "
            f"{err.strerror or err})" + (f"; {hint}" if hint else ".")
        ) from err
    return path
