r"""The one training loop: optax updates inside a compiled ``lax.scan``, chunks driven from Python.

``fit`` compiles a chunk of training steps as one ``lax.scan`` (so the Python overhead is paid per
chunk, not per step) and, between chunks, updates a tqdm bar, evaluates, and writes checkpoints.

Everything random is a function of ``(key, step)``: the minibatch of step ``s`` comes from a
permutation drawn with ``fold_in(data_key, epoch)``, the loss's key is ``fold_in(loss_key, s)``.
Hence a run resumed from a checkpoint at step ``k`` takes exactly the steps the uninterrupted run
takes, whatever the chunking.

Nothing non-finite is returned or saved. Every step checks that its loss and the parameters it
produced are finite, and every chunk that the optimiser state and EMA are, before any checkpoint;
the first failure raises, naming its step, and leaves the last good checkpoint on disk. With
``skip_nonfinite=k`` a step whose loss, parameters, optimiser state or EMA would go non-finite is
not applied (the state stays the last good one), up to ``k`` such steps in a row.
"""

from __future__ import annotations

import math
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
from . import _checkpoint, _fingerprint


class FitResult(eqx.Module):
    """Outcome of :func:`fit`. ``history`` holds, per chunk, the step reached (``"step"``), the mean
    loss of the steps applied (``"loss"``) and the number of non-finite steps skipped
    (``"skipped"``, see ``skip_nonfinite``), and the evaluation metrics (``"eval"``)."""

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
    for path, leaf in jax.tree_util.tree_leaves_with_path(data):
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype") or np.ndim(leaf) < 1:
            raise ValueError(
                f"data{jax.tree_util.keystr(path)} must be an array with a leading (sample) axis; "
                f"got {type(leaf).__name__} of shape {np.shape(leaf)}."
            )
    n = leaves[0].shape[0]
    if any(leaf.shape[0] != n for leaf in leaves):
        raise ValueError(
            f"every array in data needs the same leading (sample) axis; got {[leaf.shape for leaf in leaves]}."
        )
    if batch_size is None:
        return lambda s: data
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, int | np.integer)
        or not 1 <= batch_size <= n
    ):
        raise ValueError(
            f"batch_size must be an int in [1, {n}] (the number of samples); got {batch_size!r}."
        )
    batch_size = int(batch_size)
    per_epoch = n // batch_size

    def batch(s):
        perm = jax.random.permutation(jax.random.fold_in(data_key, s // per_epoch), n)
        idx = jax.lax.dynamic_slice(perm, ((s % per_epoch) * batch_size,), (batch_size,))
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx], data)

    return batch


def _check_count(name, value, *, minimum):
    """``value`` as an int >= ``minimum``; ``ValueError`` naming ``name`` otherwise (a bool, a
    float such as ``2.0``, or a string is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        what = {0: "a non-negative int", 1: "a positive int"}.get(minimum, f"an int >= {minimum}")
        raise ValueError(f"{name} must be {what}; got {value!r}.")
    return int(value)


def _check_microbatches(microbatches):
    return _check_count("microbatches", microbatches, minimum=1)


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


# Bits of the per-step report: which part of a step's outcome was not finite.
_LOSS, _PARAMS, _OPT_STATE, _EMA = 1, 2, 4, 8
_PART_NAMES = ((_PARAMS, "parameters"), (_OPT_STATE, "optimiser state"), (_EMA, "EMA"))


def _all_finite(tree) -> jax.Array:
    checks = [
        jnp.all(jnp.isfinite(leaf))
        for leaf in jax.tree_util.tree_leaves(tree)
        if eqx.is_inexact_array(leaf)
    ]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)


def _nonfinite_bits(loss, params, opt_state, ema) -> jax.Array:
    """An int32 of the ``_LOSS | _PARAMS | _OPT_STATE | _EMA`` bits of the parts not finite."""
    bits = jnp.int32(0)
    for bit, tree in ((_LOSS, loss), (_PARAMS, params), (_OPT_STATE, opt_state), (_EMA, ema)):
        bits = bits | jnp.where(_all_finite(tree), 0, bit).astype(jnp.int32)
    return bits


def _check_finite(names, trees):
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


def _split_loss(out, has_aux):
    """``(loss, aux)`` from what ``loss_fn`` returned, checked when traced (``TypeError``)."""
    if has_aux:
        if not (isinstance(out, tuple | list) and len(out) == 2):
            raise TypeError(
                "with has_aux=True, loss_fn must return a pair (loss, aux); it returned "
                f"{_describe_output(out)}."
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
            f"{_describe_output(loss)}{hint}."
        )
    return loss, aux


def _describe_output(out) -> str:
    if isinstance(out, jax.Array | np.ndarray | np.generic):
        return f"an array of shape {tuple(out.shape)} and dtype {out.dtype}"
    if isinstance(out, tuple | list):
        return f"a {type(out).__name__} of {len(out)}"
    return f"a {type(out).__name__}"


def _describe_data(data, batch_shape) -> str:
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


def _nonfinite_in_batch(data, get_batch, step) -> str | None:
    """Where the minibatch of ``step`` holds a non-finite value (``"data[0]"``), if it does."""
    try:
        batch = get_batch(step)
    except Exception:  # a diagnosis only: never hide the error it is called for
        return None
    for path, leaf in jax.tree_util.tree_leaves_with_path(batch):
        if eqx.is_inexact_array(leaf) and not bool(jnp.all(jnp.isfinite(leaf))):
            where = jax.tree_util.keystr(path)
            return f"batch{where} of data(key)" if callable(data) else f"data{where}"
    return None


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
    skip_nonfinite: int = 0,
) -> FitResult:
    """Train ``model`` to minimise ``loss_fn(model, batch, key)`` (a scalar, or ``(scalar, aux)``).

    Args:
        loss_fn: ``loss_fn(model, batch, key)``; ``key`` is distinct for every step. It must
            return a floating-point scalar (``TypeError`` when first traced otherwise).
        model: any pytree (usually an :class:`equinox.Module`); its inexact arrays are trained
            and must be finite.
        data: a pytree of arrays sharing a leading sample axis (shuffled minibatches of
            ``batch_size``, or the full set when ``batch_size`` is None), or a function
            ``data(key) -> batch`` for data generated on the fly.
        optimizer: an optax transformation (learning-rate schedules included).
        num_steps: total number of optimisation steps (including those of a resumed run).
        key: PRNG key for minibatches and the loss.
        eval_fn: ``eval_fn(model) -> dict`` of metrics, every ``eval_every`` steps and at the end.
        ema_decay: keep an exponential moving average of the parameters (``result.ema_model``).
        checkpoint_path, checkpoint_every: every ``checkpoint_every`` steps (and at the end) save
            the model, optimiser state, EMA and step, with what identifies the run: the key, the
            batch size, ``microbatches``, ``ema_decay``, the shapes of ``data`` and the
            optimiser's hyper-parameters (the values its functions close over, schedules
            included — see :mod:`jaxsolve.train._fingerprint` for what that sees). With
            ``resume=True`` an existing checkpoint at ``checkpoint_path`` is continued exactly,
            after checking its SHA-256 checksum and that every one of those matches this call
            (``ValueError`` naming each field that differs, with both values). ``num_steps``
            smaller than the checkpoint's step is an error, not a silent no-op. Each save keeps
            the checkpoint it replaces as ``<checkpoint_path>.prev`` and never leaves a
            half-written file (see :mod:`jaxsolve.train._checkpoint`); only process 0 writes.
            The path is checked to be writable before any training (``ValueError``). The data's
            values and ``loss_fn`` are not fingerprinted: changing them is the caller's affair.
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
        skip_nonfinite: how many non-finite steps in a row to skip. A step is non-finite when
            its loss, or the parameters, optimiser state or EMA it produces, hold a NaN or an
            infinity (a NaN in the data, a gradient that is NaN where the loss is not, such as
            that of ``sqrt`` at 0, an overflowing update). A skipped step is not applied: the
            state stays as it was (so the optimiser's step count, and a schedule, fall behind
            the step by the number skipped), and the next step takes the next minibatch. One
            more in a row than allowed raises. The default 0 raises at the first: a NaN usually
            means a bug or a learning rate too high, which skipping would hide; a run with rare
            bad batches can allow a few (``history["skipped"]`` counts them). Unlike
            ``optax.apply_if_finite`` (which looks at the gradient) this looks at the outcome,
            so it also catches an update that overflows, and it never lets a non-finite value
            through.

    Raises:
        FloatingPointError: a step went non-finite (see ``skip_nonfinite``). The message names
            the step, what went non-finite, the minibatch's non-finite values if it has any,
            and the last good checkpoint, which stays on disk untouched. Nothing non-finite is
            ever returned or saved.
    """
    num_steps = _check_count("num_steps", num_steps, minimum=0)
    for name, every in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
        if every is not None:
            _check_count(name, every, minimum=1)
    steps_per_call = _check_count("steps_per_call", steps_per_call, minimum=1)
    skip_nonfinite = _check_count("skip_nonfinite", skip_nonfinite, minimum=0)
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs checkpoint_path.")
    if ema_decay is not None:
        if isinstance(ema_decay, bool) or not isinstance(ema_decay, int | float | np.floating):
            raise ValueError(f"ema_decay must be a float in [0, 1); got {ema_decay!r}.")
        if not 0.0 <= ema_decay < 1.0:
            raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}.")
        ema_decay = float(ema_decay)
    microbatches = _check_microbatches(microbatches)
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}."
        )
    try:
        data_key, loss_key = jax.random.split(key)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got "
            f"{_describe_output(key)}."
        ) from err
    if checkpoint_path is not None:
        # Before any work: a run that cannot save should not find out at its first checkpoint.
        _checkpoint.check_writable(checkpoint_path)

    params, static = eqx.partition(model, eqx.is_inexact_array)
    if opt_state is None:
        opt_state = optimizer.init(params)
    # (Their finiteness is checked in the first chunk's program, free of extra compiles.)
    state_names = ("model", "opt_state")
    ema = params if ema_decay is not None else None
    if mesh is not None:
        _sharding.axis_size(mesh, data_axis)  # a clear error for a wrong mesh or axis name
        if not callable(data):
            data = _sharding.replicate(data, mesh)
    get_batch = _batches(data, batch_size, data_key)
    # Checked on shapes alone, before anything compiles.
    batch_shape = jax.eval_shape(get_batch, 0)
    part_shape = _split_shape(batch_shape, microbatches)
    # What a checkpoint of this run records, and a resumed checkpoint must match.
    run_metadata = {
        "key": _fingerprint.describe_array(key),
        "batch_size": None if batch_size is None else int(batch_size),
        "microbatches": microbatches,
        "ema_decay": ema_decay,
        "data": _describe_data(data, batch_shape),
        "optimizer": _fingerprint.hyperparameters(optimizer),
    }
    start = 0
    nonfinite_run = 0  # non-finite steps skipped in a row just before `start`
    last_checkpoint: tuple[int, str] | None = None
    if checkpoint_path is not None and resume and _checkpoint.exists(checkpoint_path):
        (params, opt_state, ema), start, saved, read = _checkpoint.load_verified(
            checkpoint_path, (params, opt_state, ema), expect=run_metadata
        )
        if start > num_steps:
            raise ValueError(
                f"num_steps={num_steps} is smaller than the step of the checkpoint at {read!r} "
                f"({start}): a run cannot be resumed backwards. Pass num_steps >= {start} to "
                "continue it, or resume=False to start over."
            )
        nonfinite_run = int(saved.get("nonfinite_run", 0))
        last_checkpoint = (start, read)
        state_names = (f"the model in {read!r}", f"the opt_state in {read!r}")
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
        return _split_loss(loss_fn(eqx.combine(p, static), batch, k), has_aux)

    grad_fn = jax.value_and_grad(objective, has_aux=True)

    def value_and_grad(params, batch, k):
        (loss, _), grads = grad_fn(params, place_batch(batch), k)
        return loss, grads

    loss_and_grad = microbatched(value_and_grad, microbatches)

    @eqx.filter_jit
    def run(state, nonfinite_run, steps):
        def one(carry, s):
            state, run_length, failed_at = carry
            params, opt_state, ema = place_state(state)
            loss, grads = loss_and_grad(params, get_batch(s), jax.random.fold_in(loss_key, s))
            updates, new_opt_state = optimizer.update(grads, opt_state, params)
            new_params = eqx.apply_updates(params, updates)
            new_ema = ema
            if ema is not None:
                new_ema = jax.tree_util.tree_map(
                    lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema, new_params
                )
            new_state = (new_params, new_opt_state, new_ema)
            if skip_nonfinite:
                bits = _nonfinite_bits(loss, new_params, new_opt_state, new_ema)
            else:
                # Raising at the first failure, the loss and parameters name its step; the
                # optimiser state and EMA are checked once per chunk, below. (Each check is a
                # reduction over the state: about 1% of a small MLP's step on a CPU.)
                bits = _nonfinite_bits(loss, new_params, None, None)
            run_length = jnp.where(bits == 0, 0, run_length + 1)
            failed_at = jnp.where((failed_at < 0) & (run_length > skip_nonfinite), s, failed_at)
            if skip_nonfinite:
                # A non-finite step is not applied, nor any after a failure: the carry stays
                # the last good state. The select and the per-step check of the whole state cost
                # a few per cent of a small MLP's step on a CPU, hence only when skipping.
                take = (bits == 0) & (failed_at < 0)
                new_state = jax.tree_util.tree_map(
                    lambda new, old: jnp.where(take, new, old) if eqx.is_array(new) else new,
                    new_state,
                    (params, opt_state, ema),
                )
            return (new_state, run_length, failed_at), (loss, bits)

        start_bits = _nonfinite_bits(None, *state)
        first = (state, nonfinite_run, jnp.asarray(-1, steps.dtype))
        (state, run_length, failed_at), (losses, bits) = jax.lax.scan(one, first, steps)
        _, opt_state, ema = state
        end_bits = _nonfinite_bits(None, None, opt_state, ema)
        return state, run_length, failed_at, losses, bits, start_bits, end_bits

    chunk = steps_per_call
    for every in (eval_every, checkpoint_every):
        if every is not None:
            chunk = math.gcd(chunk, every)
    history: dict = {"step": [], "loss": [], "skipped": [], "eval": []}
    bar = tqdm(total=num_steps, initial=start, desc=desc, disable=not progress, leave=False)

    def evaluate(step):
        if eval_fn is not None:
            metrics = {k: float(v) for k, v in eval_fn(eqx.combine(params, static)).items()}
            history["eval"].append((step, metrics))
            bar.set_postfix(**{k: f"{v:.3g}" for k, v in metrics.items()})

    def save(step):
        state = _sharding.to_host((params, opt_state, ema))
        metadata = {**run_metadata, "nonfinite_run": nonfinite_run}
        _checkpoint.save(checkpoint_path, state, step=step, metadata=metadata)
        return (step, checkpoint_path)

    step = start
    try:
        while step < num_steps:
            length = min(chunk - step % chunk, num_steps - step)
            state_in = (params, opt_state, ema)
            out = run(
                state_in, jnp.asarray(nonfinite_run, jnp.int32), jnp.arange(step, step + length)
            )
            (params, opt_state, ema), run_length, failed_at, losses, bits, start_bits, end_bits = (
                out
            )
            if step == start and int(start_bits):
                _check_finite(state_names, state_in[:2])
            failed_at, end_bits = int(failed_at), int(end_bits)
            if failed_at >= 0:
                i = failed_at - step
                where, bits_at, loss_at = f"at step {failed_at}", int(bits[i]), float(losses[i])
            elif end_bits:
                where, bits_at, loss_at = (
                    f"between steps {step} and {step + length}",
                    end_bits,
                    None,
                )
            if failed_at >= 0 or end_bits:
                raise FloatingPointError(
                    _nonfinite_message(
                        where,
                        failed_at,
                        bits_at,
                        loss_at,
                        skip_nonfinite,
                        _nonfinite_in_batch(data, get_batch, failed_at) if failed_at >= 0 else None,
                        checkpoint_path,
                        last_checkpoint,
                    )
                )
            nonfinite_run = int(run_length)
            losses, taken = np.asarray(losses), np.asarray(bits) == 0
            step += length
            mean_loss = float(np.mean(losses[taken], dtype=np.float64)) if taken.any() else np.nan
            history["step"].append(step)
            history["loss"].append(mean_loss)
            history["skipped"].append(int(length - taken.sum()))
            bar.update(length)
            bar.set_postfix(loss=f"{mean_loss:.4g}")
            if eval_every is not None and step % eval_every == 0:
                evaluate(step)
            if checkpoint_every is not None and step % checkpoint_every == 0:
                last_checkpoint = save(step)
    finally:
        bar.close()
    if step == start:  # nothing ran, so the check in the compiled chunk did not either
        _check_finite(state_names, (params, opt_state))
    if eval_fn is not None and (not history["eval"] or history["eval"][-1][0] != step):
        evaluate(step)
    if checkpoint_every is not None and step % checkpoint_every != 0 and step > start:
        last_checkpoint = save(step)
    return FitResult(
        model=eqx.combine(params, static),
        opt_state=opt_state,
        ema_model=None if ema is None else eqx.combine(ema, static),
        step=step,
        key=key,
        history=history,
    )


def _nonfinite_message(
    where, failed_at, bits, loss, skip_nonfinite, data_where, checkpoint_path, last_checkpoint
) -> str:
    """Why :func:`fit` stopped (``where``: "at step 7"), what it kept, and what to do."""
    parts = " and the ".join(name for bit, name in _PART_NAMES if bits & bit)
    if bits & _LOSS:
        what = f"the loss became {loss}" + (f", and the {parts} with it" if parts else "")
    elif loss is not None:
        what = (
            f"the loss was finite ({loss:.6g}) but the {parts} became non-finite: the gradient "
            "or the optimiser's update was not finite"
        )
    else:
        what = f"the {parts} became non-finite while the loss and parameters stayed finite"
    message = f"training went non-finite {where} (steps count from 0): {what}"
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
    if checkpoint_path is None:
        message += " No model is returned (and no checkpoint_path was given)."
    elif last_checkpoint is None:
        message += f" No checkpoint had been written to {checkpoint_path!r} yet."
    else:
        message += (
            f" The last good checkpoint, step {last_checkpoint[0]} at {last_checkpoint[1]!r}, "
            "was kept untouched."
        )
    if not skip_nonfinite:
        message += " skip_nonfinite=k skips up to k such steps in a row instead of stopping."
    return message
