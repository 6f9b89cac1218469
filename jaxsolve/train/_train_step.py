r"""The compiled part of :func:`~jaxsolve.train.fit`: a chunk of optimisation steps in a ``lax.scan``.

:class:`TrainStep` holds everything that shapes the program of one step — the loss, the model's
non-trainable part, the optimiser, the batch source, micro-batching, EMA, the non-finite policy and
the mesh — and :func:`run_chunk` is one module-level ``eqx.filter_jit`` over it. Arrays (the
training state, the data, the keys) are arguments, everything else is static: a second ``fit``
with the same loss function, optimiser object, model structure and shapes (a sweep, a notebook
cell run again, a resumed run) reuses the compiled chunk instead of compiling it again.

Step ``s`` of the chunk: minibatch ``batches(data, data_key, s)``, loss key ``fold_in(loss_key,
s)``, gradient (averaged over ``microbatches`` parts), optimiser update, EMA
:math:`e \leftarrow \beta e + (1 - \beta)\theta`. Each step records which part of its outcome is
not finite; with ``skip_nonfinite`` a non-finite step is not applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh

from .._core import _sharding
from ._batches import AbstractBatches, microbatched
from ._nonfinite import nonfinite_bits


class TrainStep(eqx.Module):
    """One optimisation step of ``fit``: what it computes, not the state it computes it on."""

    loss_fn: Callable
    static: Any  # the model without its trained (inexact) arrays
    optimizer: optax.GradientTransformation
    batches: AbstractBatches
    has_aux: bool = eqx.field(static=True)
    with_step: bool = eqx.field(static=True)
    microbatches: int = eqx.field(static=True)
    ema_decay: float | None = eqx.field(static=True)
    skip_nonfinite: int = eqx.field(static=True)
    mesh: Mesh | None = eqx.field(static=True)
    data_axis: str = eqx.field(static=True)

    # The constraints make GSPMD split each step's work by sample and keep the state whole on
    # every device; the gradient of the batch mean then needs (and gets) an all-reduce. That
    # all-reduce adds per-device partial sums, a different order of float additions from one
    # device's, so results agree to round-off rather than bitwise.
    def place_batch(self, batch):
        return (
            batch if self.mesh is None else _sharding.shard_batch(batch, self.mesh, self.data_axis)
        )

    def place_state(self, state):
        return state if self.mesh is None else _sharding.replicate(state, self.mesh)

    def loss_and_grad(self, params, batch, key, step):
        """The loss and its gradient with respect to ``params`` (over micro-batches) at ``step``."""

        def objective(p, b, k):
            model = eqx.combine(p, self.static)
            out = self.loss_fn(model, b, k, step) if self.with_step else self.loss_fn(model, b, k)
            return split_loss(out, self.has_aux)

        grad_fn = jax.value_and_grad(objective, has_aux=True)

        def value_and_grad(p, b, k):
            (loss, _), grads = grad_fn(p, self.place_batch(b), k)
            return loss, grads

        return microbatched(value_and_grad, self.microbatches)(params, batch, key)

    def update(self, state, loss_key, batch, s):
        """Step ``s`` from ``state = (params, opt_state, ema)``: the new state and the loss."""
        params, opt_state, ema = state
        loss, grads = self.loss_and_grad(params, batch, jax.random.fold_in(loss_key, s), s)
        updates, new_opt_state = self.optimizer.update(grads, opt_state, params)
        new_params = eqx.apply_updates(params, updates)
        new_ema = ema
        if ema is not None:
            decay = self.ema_decay
            new_ema = jax.tree_util.tree_map(
                lambda e, p: decay * e + (1.0 - decay) * p, ema, new_params
            )
        return (new_params, new_opt_state, new_ema), loss


class ChunkOutcome(NamedTuple):
    """What :func:`run_chunk` returns: the state after the chunk, the run of non-finite steps at
    its end, the first step beyond ``skip_nonfinite`` (-1 if none), every step's loss and
    non-finite bits, and the bits of the state at the start and of the optimiser state and EMA
    at the end."""

    state: Any
    run_length: jax.Array
    failed_at: jax.Array
    losses: jax.Array
    bits: jax.Array
    start_bits: jax.Array
    end_bits: jax.Array


@eqx.filter_jit
def run_chunk(train_step: TrainStep, state, nonfinite_run, steps, keys, data) -> ChunkOutcome:
    """The training steps ``steps`` from ``state``, in one ``lax.scan``; ``keys`` is
    ``(data_key, loss_key)``, ``nonfinite_run`` the non-finite steps skipped in a row before."""
    data_key, loss_key = keys
    skip = train_step.skip_nonfinite

    def one(carry, s):
        state, run_length, failed_at = carry
        state = train_step.place_state(state)
        batch = train_step.batches(data, data_key, s)
        new_state, loss = train_step.update(state, loss_key, batch, s)
        if skip:
            bits = nonfinite_bits(loss, *new_state)
        else:
            # Raising at the first failure, the loss and parameters name its step; the
            # optimiser state and EMA are checked once per chunk, below (each check is a
            # reduction over the whole state).
            bits = nonfinite_bits(loss, new_state[0], None, None)
        run_length = jnp.where(bits == 0, 0, run_length + 1)
        failed_at = jnp.where((failed_at < 0) & (run_length > skip), s, failed_at)
        if skip:
            # A non-finite step is not applied, nor any after a failure: the carry stays
            # the last good state. The select and the per-step check of the whole state cost
            # a few per cent of a small MLP's step on a CPU, hence only when skipping.
            take = (bits == 0) & (failed_at < 0)
            new_state = jax.tree_util.tree_map(
                lambda new, old: jnp.where(take, new, old) if eqx.is_array(new) else new,
                new_state,
                state,
            )
        return (new_state, run_length, failed_at), (loss, bits)

    start_bits = nonfinite_bits(None, *state)
    first = (state, nonfinite_run, jnp.asarray(-1, steps.dtype))
    (state, run_length, failed_at), (losses, bits) = jax.lax.scan(one, first, steps)
    _, opt_state, ema = state
    end_bits = nonfinite_bits(None, None, opt_state, ema)
    return ChunkOutcome(state, run_length, failed_at, losses, bits, start_bits, end_bits)


def split_loss(out, has_aux):
    """``(loss, aux)`` from what ``loss_fn`` returned, checked when traced (``TypeError``)."""
    if has_aux:
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise TypeError(
                "with has_aux=True, loss_fn must return a pair (loss, aux); it returned "
                f"{describe_output(out)}."
            )
        loss, aux = out
    else:
        loss, aux = out, None
    if (
        not isinstance(loss, jax.Array | np.ndarray | np.generic | float)
        or jnp.shape(loss) != ()
        or not jnp.issubdtype(jnp.result_type(loss), jnp.floating)
    ):
        hint = (
            " (a pair (loss, aux) needs has_aux=True)"
            if not has_aux and isinstance(loss, tuple | list) and len(loss) == 2
            else ""
        )
        raise TypeError(
            "loss_fn must return a floating-point scalar (shape ()); it returned "
            f"{describe_output(loss)}{hint}."
        )
    return loss, aux


def describe_output(out) -> str:
    if isinstance(out, jax.Array | np.ndarray | np.generic):
        return f"an array of shape {tuple(out.shape)} and dtype {out.dtype}"
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"
