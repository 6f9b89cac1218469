r"""The one training loop: optax updates inside a compiled ``lax.scan``, chunks driven from Python.

``fit`` compiles a chunk of training steps as one ``lax.scan`` (so the Python overhead is paid per
chunk, not per step) and, between chunks, updates a tqdm bar, evaluates, and writes checkpoints.

Everything random is a function of ``(key, step)``: the minibatch of step ``s`` comes from a
permutation drawn with ``fold_in(data_key, epoch)``, the loss's key is ``fold_in(loss_key, s)``.
Hence a run resumed from a checkpoint at step ``k`` takes exactly the steps the uninterrupted run
takes, whatever the chunking.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from .._core import _sharding
from . import _checkpoint


class FitResult(eqx.Module):
    """Outcome of :func:`fit`. ``history`` holds per-chunk mean losses and evaluation metrics."""

    model: Any
    opt_state: Any
    ema_model: Any
    step: int = eqx.field(static=True)
    key: PRNGKeyArray
    history: dict = eqx.field(static=True)


def _batches(data, batch_size, data_key):
    """``batch(step)``: minibatch ``step`` of shuffled epochs (the remainder of an epoch is dropped)."""
    if callable(data):
        return lambda s: data(jax.random.fold_in(data_key, s))
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data is empty.")
    n = leaves[0].shape[0]
    if any(leaf.shape[0] != n for leaf in leaves):
        raise ValueError(
            f"every array in data needs the same leading (sample) axis; got {[leaf.shape for leaf in leaves]}."
        )
    if batch_size is None:
        return lambda s: data
    if not isinstance(batch_size, int) or not 1 <= batch_size <= n:
        raise ValueError(
            f"batch_size must be an int in [1, {n}] (the number of samples); got {batch_size!r}."
        )
    per_epoch = n // batch_size

    def batch(s):
        perm = jax.random.permutation(jax.random.fold_in(data_key, s // per_epoch), n)
        idx = jax.lax.dynamic_slice(perm, ((s % per_epoch) * batch_size,), (batch_size,))
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx], data)

    return batch


def _check_microbatches(microbatches):
    if not isinstance(microbatches, int) or isinstance(microbatches, bool) or microbatches < 1:
        raise ValueError(f"microbatches must be a positive int; got {microbatches!r}.")


def _split_shape(batch_shape, microbatches):
    """Shape of one of ``microbatches`` equal parts of a minibatch; ``ValueError`` if it does not
    split."""
    if microbatches == 1:
        return batch_shape

    def part(path, leaf):
        n = leaf.shape[0] if leaf.shape else None
        if n is None or n % microbatches:
            raise ValueError(
                f"microbatches={microbatches} must divide the minibatch's sample axis; "
                f"batch{jax.tree_util.keystr(path)} has shape {tuple(leaf.shape)}."
            )
        return jax.ShapeDtypeStruct((n // microbatches, *leaf.shape[1:]), leaf.dtype)

    return jax.tree_util.tree_map_with_path(part, batch_shape)


def microbatched(fn: Callable, microbatches: int) -> Callable:
    """``fn(params, batch, key)`` averaged over ``microbatches`` equal parts of ``batch``.

    ``fn`` returns any pytree of batch means (typically ``(loss, grads)`` from
    ``jax.value_and_grad``); the parts are taken along every leaf's leading (sample) axis and
    evaluated one after another in a ``lax.scan``, so only one part's intermediates are alive
    at a time. Part ``j`` gets the key ``fold_in(key, j)`` (``key`` may be ``None``). For
    per-sample means this equals ``fn`` on the whole batch up to rounding; it is what
    :func:`fit` does with ``microbatches=k``, for hand-written training steps.
    """
    _check_microbatches(microbatches)
    if microbatches == 1:
        return fn

    def averaged(params, batch, key):
        _split_shape(jax.eval_shape(lambda: batch), microbatches)
        parts = jax.tree_util.tree_map(
            lambda a: jnp.reshape(a, (microbatches, a.shape[0] // microbatches, *a.shape[1:])),
            batch,
        )

        def part_key(j):
            return None if key is None else jax.random.fold_in(key, j)

        def accumulate(total, jb):
            j, part = jb
            return jax.tree_util.tree_map(jnp.add, total, fn(params, part, part_key(j))), None

        first = jax.tree_util.tree_map(lambda a: a[0], parts)
        shapes = jax.eval_shape(lambda: fn(params, first, part_key(0)))
        zero = jax.tree_util.tree_map(lambda t: jnp.zeros(t.shape, t.dtype), shapes)
        total, _ = jax.lax.scan(accumulate, zero, (jnp.arange(microbatches), parts))
        return jax.tree_util.tree_map(lambda t: t / microbatches, total)

    return averaged


def fit(
    loss_fn: Callable,
    model: Any,
    data: Any,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    key: PRNGKeyArray,
    batch_size: int | None = None,
    has_aux: bool = False,
    eval_fn: Callable | None = None,
    eval_every: int | None = None,
    ema_decay: float | None = None,
    checkpoint_path: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    steps_per_call: int = 100,
    progress: bool = True,
    desc: str = "training",
    opt_state: Any = None,
    mesh: Mesh | None = None,
    data_axis: str = "data",
    microbatches: int = 1,
) -> FitResult:
    """Train ``model`` to minimise ``loss_fn(model, batch, key)`` (a scalar, or ``(scalar, aux)``).

    Args:
        loss_fn: ``loss_fn(model, batch, key)``; ``key`` is distinct for every step.
        model: any pytree (usually an :class:`equinox.Module`); its inexact arrays are trained.
        data: a pytree of arrays sharing a leading sample axis (shuffled minibatches of
            ``batch_size``, or the full set when ``batch_size`` is None), or a function
            ``data(key) -> batch`` for data generated on the fly.
        optimizer: an optax transformation (learning-rate schedules included).
        num_steps: total number of optimisation steps (including those of a resumed run).
        key: PRNG key for minibatches and the loss.
        eval_fn: ``eval_fn(model) -> dict`` of metrics, every ``eval_every`` steps and at the end.
        ema_decay: keep an exponential moving average of the parameters (``result.ema_model``).
        checkpoint_path, checkpoint_every: save model, optimiser state, EMA, step and key; with
            ``resume=True`` an existing checkpoint at ``checkpoint_path`` is continued exactly.
        steps_per_call: training steps compiled into one call.
        opt_state: an optimiser state to start from (default: ``optimizer.init``).
        mesh: a :class:`jax.sharding.Mesh` for data-parallel training (e.g.
            :func:`jaxsolve.sharding.data_mesh`). Every minibatch is split along its leading
            (sample) axis over the mesh axis ``data_axis``; parameters, optimiser state, EMA and
            array data are replicated; XLA inserts the all-reduce of the gradient. The result
            equals the one-device run up to the order of floating-point additions. The batch
            size must be a multiple of the number of devices on ``data_axis``. Checkpoints are
            gathered to the host, so a run can resume with or without a mesh.
        data_axis: the mesh axis the samples are split over.
        microbatches: split every minibatch into this many equal parts along its sample axis
            and accumulate the loss and gradient over them one part at a time (a ``lax.scan``)
            before the one optimiser update. For a loss that is a mean over the batch's samples
            this is the full-batch step up to rounding, with the activations of only one part
            alive at a time: less memory, and where a step is bound by memory traffic rather
            than arithmetic (an FNO on CPU, whose activations outgrow the caches) a faster step
            — ``benchmarks/bench_operators.py`` measures it. The loss of part ``j`` gets the key
            ``fold_in(key_of_step, j)``. The minibatch size must be a multiple of
            ``microbatches`` (and, with ``mesh``, each part's size a multiple of the devices).
    """
    if not isinstance(num_steps, int) or num_steps < 0:
        raise ValueError(f"num_steps must be a non-negative int; got {num_steps!r}.")
    for name, every in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if every is not None and (not isinstance(every, int) or every < 1):
            raise ValueError(f"{name} must be a positive int; got {every!r}.")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs checkpoint_path.")
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}.")
    _check_microbatches(microbatches)

    params, static = eqx.partition(model, eqx.is_inexact_array)
    if opt_state is None:
        opt_state = optimizer.init(params)
    ema = params if ema_decay is not None else None
    data_key, loss_key = jax.random.split(key)
    start = 0
    if checkpoint_path is not None and resume and os.path.exists(checkpoint_path):
        (params, opt_state, ema), start = _checkpoint.load(
            checkpoint_path, (params, opt_state, ema)
        )
    if mesh is not None:
        _sharding.axis_size(mesh, data_axis)  # a clear error for a wrong mesh or axis name
        if not callable(data):
            data = _sharding.replicate(data, mesh)
    get_batch = _batches(data, batch_size, data_key)
    # Checked on shapes alone, before anything compiles.
    part_shape = _split_shape(jax.eval_shape(get_batch, 0), microbatches)
    if mesh is not None:
        _sharding.check_shardable(part_shape, mesh, data_axis, name="batch")
        params, opt_state, ema = _sharding.replicate((params, opt_state, ema), mesh)

    # The constraints make GSPMD split each step's work by sample and keep the state whole on
    # every device; the gradient of the batch mean then needs (and gets) an all-reduce. That
    # all-reduce adds per-device partial sums, a different order of float additions from one
    # device's, so results agree to round-off rather than bitwise.
    def place_batch(batch):
        return batch if mesh is None else _sharding.shard_batch(batch, mesh, data_axis)

    def place_state(carry):
        return carry if mesh is None else _sharding.replicate(carry, mesh)

    def objective(p, batch, k):
        out = loss_fn(eqx.combine(p, static), batch, k)
        return out if has_aux else (out, None)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def value_and_grad(params, batch, k):
        (loss, _), grads = grad_fn(params, place_batch(batch), k)
        return loss, grads

    loss_and_grad = microbatched(value_and_grad, microbatches)

    @eqx.filter_jit
    def run(params, opt_state, ema, steps):
        def one(carry, s):
            params, opt_state, ema = place_state(carry)
            loss, grads = loss_and_grad(params, get_batch(s), jax.random.fold_in(loss_key, s))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            params = eqx.apply_updates(params, updates)
            if ema is not None:
                ema = jax.tree_util.tree_map(
                    lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, params
                )
            return (params, opt_state, ema), loss

        (params, opt_state, ema), losses = jax.lax.scan(one, (params, opt_state, ema), steps)
        return params, opt_state, ema, losses

    chunk = steps_per_call
    for every in (eval_every, checkpoint_every):
        if every is not None:
            chunk = math.gcd(chunk, every)
    history: dict = {"step": [], "loss": [], "eval": []}
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, leave=False)

    def evaluate(step):
        if eval_fn is not None:
            metrics = {k: float(v) for k, v in eval_fn(eqx.combine(params, static)).items()}
            history["eval"].append((step, metrics))
            bar.set_postfix(**{k: f"{v:.3g}" for k, v in metrics.items()})

    step = start
    while step < num_steps:
        length = min(chunk - step % chunk, num_steps - step)
        params, opt_state, ema, losses = run(
            params, opt_state, ema, jnp.arange(step, step + length)
        )
        step += length
        mean_loss = float(jnp.mean(losses))
        if not np.isfinite(mean_loss):
            bar.close()
            raise FloatingPointError(
                f"the training loss became {mean_loss} between steps {step - length} and {step}."
            )
        history["step"].append(step)
        history["loss"].append(mean_loss)
        bar.update(length)
        bar.set_postfix(loss=f"{mean_loss:.4g}")
        if eval_every is not None and step % eval_every == 0:
            evaluate(step)
        if checkpoint_every is not None and step % checkpoint_every == 0:
            _checkpoint.save(
                checkpoint_path, _sharding.to_host((params, opt_state, ema)), step=step
            )
    bar.close()
    if eval_fn is not None and (not history["eval"] or history["eval"][-1][0] != step):
        evaluate(step)
    if (
        checkpoint_path is not None
        and checkpoint_every is not None
        and step % checkpoint_every != 0
    ):
        _checkpoint.save(checkpoint_path, _sharding.to_host((params, opt_state, ema)), step=step)
    return FitResult(
        model=eqx.combine(params, static),
        opt_state=opt_state,
        ema_model=None if ema is None else eqx.combine(ema, static),
        step=step,
        key=key,
        history=history,
    )
