"""Checkpoints: Equinox serialisation of the training state behind a header that is checked on load.

File layout: one JSON line (the header), then the bytes of :func:`equinox.tree_serialise_leaves`.
The header holds the format, the step, a fingerprint of every leaf (path, shape, dtype), the
payload's length, free-form ``metadata`` (what :func:`jaxsolve.train.fit` needs to recognise its
own run: key, batch size, optimiser, ...) and a SHA-256 of the header's other fields and the
payload together. Loading checks all of it, so a file cut short, a flipped byte anywhere, a
different model or optimiser, or (with ``expect=``) a different run each fail with an error that
says which.

Writing never leaves the only copy half-written: the new file is written next to the old one as
``<path>.tmp`` and flushed to disk (``fsync``), the old checkpoint is moved to ``<path>.prev``,
and only then is the new one renamed to ``<path>`` (each rename is atomic on POSIX file systems).
A crash at any moment leaves a complete ``<path>`` or a complete ``<path>.prev``; loading a
``<path>`` that is missing falls back to ``<path>.prev`` (with a warning), and an error about a
corrupt ``<path>`` names the ``<path>.prev`` kept beside it. In a multi-process job only process 0
writes (``jax.process_index() == 0``); every process must still reach :func:`save` with the same
(host) tree, since gathering sharded arrays to the host is collective.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings

import equinox as eqx
import jax
import numpy as np

from .._core import check_writable_dir
from . import _fingerprint

FORMAT = "jaxsolve-checkpoint-2"
# Formats this version recognises but cannot resume from, with the reason.
_OLD_FORMATS = {
    "jaxsolve-checkpoint-1": (
        "it was written by an older jaxsolve that recorded neither the PRNG key, the batch size "
        "and the optimiser of its run nor a checksum, so resuming it could silently continue a "
        "different run"
    ),
}


def _fingerprint_leaves(tree) -> list:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    out = []
    for path, leaf in leaves:
        if eqx.is_array(leaf):
            out.append([jax.tree_util.keystr(path), list(np.shape(leaf)), str(leaf.dtype)])
        elif isinstance(leaf, (bool, int, float, complex, np.generic)):
            out.append([jax.tree_util.keystr(path), [], type(leaf).__name__])
    return out


def previous_path(path: str) -> str:
    """Where the checkpoint before the latest one is kept."""
    return f"{path}.prev"


def exists(path: str) -> bool:
    """Whether there is a checkpoint to resume at ``path`` (or, after a crash, its ``.prev``)."""
    return os.path.exists(path) or os.path.exists(previous_path(path))


def check_writable(path: str, *, name: str = "checkpoint_path") -> None:
    """Create ``path``'s directory and a probe file in it now, so an unwritable path fails before
    the work it would save is done (``ValueError`` naming ``name``). Only process 0 writes."""
    if jax.process_index() != 0:
        return
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str); got {type(path).__name__}.")
    if os.path.isdir(path):
        raise ValueError(f"{name} {str(path)!r} is a directory; it must name the checkpoint file.")
    check_writable_dir(
        name,
        os.path.dirname(os.path.abspath(path)),
        given=str(path),
        hint="checked before training so that no work is lost.",
    )


def _digest(header: dict, payload: bytes) -> str:
    """SHA-256 of the header (less its own ``sha256`` field, in canonical JSON) and payload."""
    fields = {k: v for k, v in header.items() if k != "sha256"}
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical + b"\n" + payload).hexdigest()


def _fsync_directory(directory: str) -> None:
    # Makes the renames themselves durable; not every platform can open a directory.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(path: str, tree, *, step: int, metadata: dict | None = None) -> None:
    """Write ``tree`` (a pytree of host arrays and Python scalars) to ``path`` without ever
    leaving the only copy half-written; the checkpoint it replaces is kept as ``<path>.prev``.

    ``metadata`` (JSON-serialisable) is stored in the header and can be checked on load with
    ``load(..., expect=...)``. Only process 0 of a multi-process job writes.
    """
    if jax.process_index() != 0:
        return
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    payload = buffer.getvalue()
    header = {
        "format": FORMAT,
        "step": int(step),
        "leaves": _fingerprint_leaves(tree),
        "payload_bytes": len(payload),
        "metadata": metadata or {},
    }
    header["sha256"] = _digest(header, payload)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write((json.dumps(header, sort_keys=True, separators=(",", ":")) + "\n").encode())
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(path):
        os.replace(path, previous_path(path))
    os.replace(tmp, path)
    _fsync_directory(directory)


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be trusted: unreadable, truncated, or failing its checksum."""


def _read(path: str) -> tuple[dict, bytes]:
    """The verified header and payload of the file at ``path``."""
    with open(path, "rb") as f:
        first = f.readline()
        try:
            header = json.loads(first.decode())
            if not isinstance(header, dict):
                raise ValueError("the header is not a JSON object")
        except (UnicodeDecodeError, ValueError) as err:
            raise CorruptCheckpointError(
                f"{path!r} is not a jaxsolve checkpoint (unreadable header)."
            ) from err
        payload = f.read()
    fmt = header.get("format")
    if fmt in _OLD_FORMATS:
        raise ValueError(
            f"checkpoint {path!r} has the old format {fmt!r}: {_OLD_FORMATS[fmt]}. Start over "
            f"(resume=False, or another checkpoint_path); this version writes {FORMAT!r}."
        )
    if fmt != FORMAT:
        raise ValueError(f"{path!r} has format {fmt!r}; expected {FORMAT!r}.")
    expected_bytes = header.get("payload_bytes")
    if len(payload) != expected_bytes:
        raise CorruptCheckpointError(
            f"checkpoint {path!r} is truncated: {len(payload)} of {expected_bytes} bytes."
            if isinstance(expected_bytes, int) and len(payload) < expected_bytes
            else f"checkpoint {path!r} is corrupt: {len(payload)} payload bytes where its header "
            f"says {expected_bytes}."
        )
    if header.get("sha256") != _digest(header, payload):
        raise CorruptCheckpointError(
            f"checkpoint {path!r} is corrupt: its SHA-256 checksum does not match its contents "
            "(a byte changed on disk or in transfer)."
        )
    return header, payload


def _differences(saved: dict, expect: dict) -> list[str]:
    out = []
    for field, current in expect.items():
        if field not in saved:
            out.append(f"{field}: not recorded in the checkpoint, {current!r} in this call")
        elif field == "optimizer":
            if saved[field] != current:
                out.append("optimizer: " + _fingerprint.first_difference(saved[field], current))
        elif saved[field] != current:
            out.append(f"{field}: {saved[field]!r} in the checkpoint, {current!r} in this call")
    return out


def load_verified(path: str, template, *, expect: dict | None = None):
    """``(tree, step, metadata, path_read)``: :func:`load`, with the header's ``metadata`` and
    the file actually read (``<path>.prev`` after a crash between the two renames of a save)."""
    prev = previous_path(path)
    if not os.path.exists(path):
        if not os.path.exists(prev):
            raise FileNotFoundError(f"no checkpoint at {path!r}.")
        warnings.warn(
            f"no checkpoint at {path!r} but its previous one {prev!r} is there (a crash while "
            "the checkpoint was being replaced?); resuming from it.",
            stacklevel=3,
        )
        path = prev
    try:
        header, payload = _read(path)
    except CorruptCheckpointError as err:
        if path != prev and os.path.exists(prev):
            raise CorruptCheckpointError(
                f"{err} The previous checkpoint {prev!r} was kept: move it to {path!r} to "
                "resume from it."
            ) from err
        raise
    if expect:
        differences = _differences(header.get("metadata", {}), expect)
        if differences:
            raise ValueError(
                f"checkpoint {path!r} was written by a different run, which this call would not "
                "continue exactly:\n  - " + "\n  - ".join(differences) + "\nPass the same "
                "arguments to resume it, or resume=False (or another checkpoint_path) to start "
                "over."
            )
    expected = _fingerprint_leaves(template)
    if header["leaves"] != expected:
        mismatch = next(
            ((a, b) for a, b in zip(header["leaves"], expected, strict=False) if a != b),
            None,
        )
        detail = (
            f"first difference: checkpoint has {mismatch[0]}, model expects {mismatch[1]}"
            if mismatch
            else f"checkpoint has {len(header['leaves'])} leaves, model expects {len(expected)}"
        )
        raise ValueError(
            f"checkpoint {path!r} was saved from a different model or optimiser: {detail}."
        )
    tree = eqx.tree_deserialise_leaves(io.BytesIO(payload), template)
    return tree, header["step"], header.get("metadata", {}), path


def load(path: str, template, *, expect: dict | None = None):
    """Read a checkpoint into the structure of ``template``; returns ``(tree, step)``.

    The file must pass its checksum and match ``template``'s structure; with ``expect`` (a dict),
    every field must equal the one in the ``metadata`` it was saved with (``ValueError`` listing
    each difference otherwise). A missing ``path`` whose ``<path>.prev`` exists loads that, with a
    warning.
    """
    tree, step, _, _ = load_verified(path, template, expect=expect)
    return tree, step
