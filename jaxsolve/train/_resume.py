"""What identifies a :func:`~jaxsolve.train.fit` run, its checkpoints, and resuming one exactly.

A checkpoint of a run records, besides the state and the step, what the run's steps depend on
other than the data's values and the loss: the key, the batch size, ``microbatches``,
``ema_decay``, the data's shapes and the optimiser's hyper-parameters. Resuming checks every one
of them against the new call, so a resumed run takes exactly the steps of the uninterrupted one.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax

from .._core import _sharding
from . import _checkpoint, _fingerprint


def describe_data(data, batch_shape) -> str:
    """What resuming must find unchanged about ``data``: its kind and its arrays' shapes and
    dtypes (as JAX computes with them: float64 NumPy data is float32 without x64)."""
    if callable(data):
        kind, leaves = "a function giving batches", jax.tree_util.tree_leaves(batch_shape)
    else:
        kind, leaves = "arrays", jax.tree_util.tree_leaves(data)
    shapes = ", ".join(
        f"{jax.dtypes.canonicalize_dtype(leaf.dtype)}{list(leaf.shape)}" for leaf in leaves
    )
    return f"{kind} {shapes}"


def run_metadata(key, batch_size, microbatches, ema_decay, data_description, optimizer) -> dict:
    """What a checkpoint of this run records, and a resumed checkpoint must match
    (``data_description`` from :func:`describe_data`)."""
    return {
        "key": _fingerprint.describe_array(key),
        "batch_size": None if batch_size is None else int(batch_size),
        "microbatches": microbatches,
        "ema_decay": ema_decay,
        "data": data_description,
        "optimizer": _fingerprint.hyperparameters(optimizer),
    }


class Start(NamedTuple):
    """Where a run starts: its state ``(params, opt_state, ema)``, step, the non-finite steps
    skipped in a row just before it, the checkpoint it came from (``(step, path)`` or None) and
    the names its model and optimiser state go by in an error."""

    state: Any
    step: int = 0
    nonfinite_run: int = 0
    last_checkpoint: tuple[int, str] | None = None
    state_names: tuple[str, str] = ("model", "opt_state")


class Checkpointing(NamedTuple):
    """``fit``'s checkpoint options: save to ``path`` every ``every`` steps (and at the end),
    and ``resume`` from a checkpoint found there."""

    path: str | None = None
    every: int | None = None
    resume: bool = True

    def check(self) -> None:
        """Before any work: a run that cannot save should not find out at its first checkpoint."""
        if self.every is not None and self.path is None:
            raise ValueError("checkpoint_every needs checkpoint_path.")
        if self.path is not None:
            _checkpoint.check_writable(self.path)

    def due(self, step: int) -> bool:
        return self.every is not None and step % self.every == 0

    def start(self, state, metadata: dict, num_steps: int) -> Start:
        """The run's start: from the checkpoint at ``path`` when resuming one that matches this
        run (``ValueError`` naming what differs), else step 0 with ``state``."""
        if self.path is None or not self.resume or not _checkpoint.exists(self.path):
            return Start(state)
        state, step, saved, read = _checkpoint.load_verified(self.path, state, expect=metadata)
        if step > num_steps:
            raise ValueError(
                f"num_steps={num_steps} is smaller than the step of the checkpoint at {read!r} "
                f"({step}): a run cannot be resumed backwards. Pass num_steps >= {step} to "
                "continue it, or resume=False to start over."
            )
        names = (f"the model in {read!r}", f"the opt_state in {read!r}")
        return Start(state, step, int(saved.get("nonfinite_run", 0)), (step, read), names)

    def save(self, state, step: int, metadata: dict, nonfinite_run: int) -> tuple[int, str]:
        """Write ``state`` (gathered to the host) as the checkpoint of ``step``."""
        metadata = {**metadata, "nonfinite_run": nonfinite_run}
        _checkpoint.save(self.path, _sharding.to_host(state), step=step, metadata=metadata)
        return (step, self.path)
