"""Checkpoints: Equinox serialisation of the training state behind a header that is checked on load.

File layout: one JSON line (format, step, and a fingerprint of every leaf: path, shape, dtype),
then the bytes of :func:`equinox.tree_serialise_leaves`. Loading into a template of a different
structure, or a file cut short, fails with an error that says which.
"""

from __future__ import annotations

import io
import json
import os

import equinox as eqx
import jax
import numpy as np

FORMAT = "jaxsolve-checkpoint-1"


def _fingerprint(tree) -> list:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    out = []
    for path, leaf in leaves:
        if eqx.is_array(leaf):
            out.append([jax.tree_util.keystr(path), list(np.shape(leaf)), str(leaf.dtype)])
        elif isinstance(leaf, (bool, int, float, complex, np.generic)):
            out.append([jax.tree_util.keystr(path), [], type(leaf).__name__])
    return out


def save(path: str, tree, *, step: int) -> None:
    """Write ``tree`` (any pytree of arrays and Python scalars) atomically to ``path``."""
    header = {"format": FORMAT, "step": int(step), "leaves": _fingerprint(tree)}
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, tree)
    payload = buffer.getvalue()
    header["payload_bytes"] = len(payload)
    tmp = f"{path}.tmp"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(tmp, "wb") as f:
        f.write((json.dumps(header) + "\n").encode())
        f.write(payload)
    os.replace(tmp, path)


def load(path: str, template):
    """Read a checkpoint into the structure of ``template``; returns ``(tree, step)``."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint at {path!r}.")
    with open(path, "rb") as f:
        first = f.readline()
        try:
            header = json.loads(first.decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path!r} is not a jaxsolve checkpoint (unreadable header).") from err
        if header.get("format") != FORMAT:
            raise ValueError(f"{path!r} has format {header.get('format')!r}; expected {FORMAT!r}.")
        payload = f.read()
    if len(payload) != header["payload_bytes"]:
        raise ValueError(
            f"checkpoint {path!r} is truncated: {len(payload)} of {header['payload_bytes']} bytes."
        )
    expected = _fingerprint(template)
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
    return tree, header["step"]
