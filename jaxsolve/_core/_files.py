"""Checks on where results will be written, made before any work is done."""

from __future__ import annotations

import os
import tempfile


def check_writable_dir(name: str, path: str | os.PathLike) -> str:
    """Create ``path`` (a directory) if needed and check that a file can be written in it.

    Raises ``ValueError`` naming the argument ``name`` (e.g. ``"--out"``, ``"cache_dir"``): a long
    computation whose results cannot be saved should fail before it starts, not after.
    """
    path = os.fspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".jaxsolve-write-probe-"):
            pass
    except OSError as err:
        raise ValueError(
            f"{name}={path!r} is not a writable directory ({err.strerror or err})."
        ) from err
    return path
