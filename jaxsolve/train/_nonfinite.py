"""What :func:`~jaxsolve.train.fit` checks for finiteness, and how it reports a step that was not.

In the compiled chunk every step records, as bits of an int32, which part of its outcome was not
finite: the loss, the parameters, the optimiser state or the EMA. On the host the first failure
that ``skip_nonfinite`` does not cover becomes a ``FloatingPointError`` naming its step, the
parts that went non-finite, the minibatch's non-finite values if it has any, and the last good
checkpoint.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import _sharding

# Bits of the per-step report: which part of a step's outcome was not finite.
LOSS, PARAMS, OPT_STATE, EMA = 1, 2, 4, 8
_PART_NAMES = ((PARAMS, "parameters"), (OPT_STATE, "optimiser state"), (EMA, "EMA"))


def all_finite(tree) -> jax.Array:
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(tree)
        if eqx.is_inexact_array(leaf)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def nonfinite_bits(loss, params, opt_state, ema) -> jax.Array:
    """An int32 of the ``LOSS | PARAMS | OPT_STATE | EMA`` bits of the parts not finite."""
    bits = jnp.int32(0)
    for bit, tree in ((LOSS, loss), (PARAMS, params), (OPT_STATE, opt_state), (EMA, ema)):
        bits = bits | jnp.where(all_finite(tree), 0, bit).astype(jnp.int32)
    return bits


def check_finite(names, trees):
    """``ValueError`` naming the first leaf of ``trees`` (concrete pytrees named ``names``) that
    is not finite."""
    for name, tree in zip(names, _sharding.to_host(trees), strict=True):
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
            if eqx.is_inexact_array(leaf) and not np.all(np.isfinite(leaf)):
                raise ValueError(
                    f"{name}{jax.tree_util.keystr(path)} holds non-finite values; fit trains every "
                    "floating-point array and needs them finite (keep constants such as -inf masks "
                    "out of the model's arrays, e.g. as static fields)."
                )


class Failure(NamedTuple):
    """A chunk's first failure: where (``"at step 7"``), its step (-1 when found only at the end
    of the chunk), the bits of what went non-finite, and its loss (None when not known)."""

    where: str
    step: int
    bits: int
    loss: float | None


def first_failure(outcome, first_step: int, length: int) -> Failure | None:
    """The failure that ends the chunk of ``length`` steps from ``first_step``, if there is one:
    a step beyond what ``skip_nonfinite`` allows, or an optimiser state or EMA that went
    non-finite in the chunk (checked once per chunk when not skipping)."""
    failed_at, end_bits = int(outcome.failed_at), int(outcome.end_bits)
    if failed_at >= 0:
        i = failed_at - first_step
        bits, loss = int(outcome.bits[i]), float(outcome.losses[i])
        return Failure(f"at step {failed_at}", failed_at, bits, loss)
    if end_bits:
        return Failure(f"between steps {first_step} and {first_step + length}", -1, end_bits, None)
    return None


def nonfinite_in_batch(data, batch, step) -> str | None:
    """Where the minibatch of ``step`` holds a non-finite value (``"data[0]"``), if it does.

    ``batch(step)`` gives the minibatch.
    """
    try:
        values = batch(step)
    except Exception:  # a diagnosis only: never hide the error it is called for
        return None
    for path, leaf in jax.tree_util.tree_leaves_with_path(values):
        if eqx.is_inexact_array(leaf) and not bool(jnp.all(jnp.isfinite(leaf))):
            where = jax.tree_util.keystr(path)
            return f"batch{where} of data(key)" if callable(data) else f"data{where}"
    return None


def nonfinite_message(
    failure: Failure, skip_nonfinite, data_where, checkpoint_path, last_checkpoint
) -> str:
    """Why :func:`fit` stopped, what it kept, and what to do."""
    failed_at, bits, loss = failure.step, failure.bits, failure.loss
    parts = " and the ".join(name for bit, name in _PART_NAMES if bits & bit)
    if bits & LOSS:
        what = f"the loss became {loss}" + (f", and the {parts} with it" if parts else "")
    elif loss is not None:
        what = (
            f"the loss was finite ({loss:.6g}) but the {parts} became non-finite: the gradient "
            "or the optimiser's update was not finite"
        )
    else:
        what = f"the {parts} became non-finite while the loss and parameters stayed finite"
    message = f"training went non-finite {failure.where} (steps count from 0): {what}"
    if skip_nonfinite:
        message += (
            f"; steps {failed_at - skip_nonfinite} to {failed_at} were all non-finite, more in "
            f"a row than skip_nonfinite={skip_nonfinite} skips"
        )
    message += "."
    if data_where is not None:
        message += (
            f" The minibatch of step {failed_at} holds non-finite values in {data_where}: clean "
            "the data, or mask those values in loss_fn."
        )
    message += _kept(checkpoint_path, last_checkpoint)
    if not skip_nonfinite:
        message += " skip_nonfinite=k skips up to k such steps in a row instead of stopping."
    return message


def _kept(checkpoint_path, last_checkpoint) -> str:
    if checkpoint_path is None:
        return " No model is returned (and no checkpoint_path was given)."
    if last_checkpoint is None:
        return f" No checkpoint had been written to {checkpoint_path!r} yet."
    return (
        f" The last good checkpoint, step {last_checkpoint[0]} at {last_checkpoint[1]!r}, "
        "was kept untouched."
    )
