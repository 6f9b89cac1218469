r"""The one training loop: optax updates inside a compiled ``lax.scan``, chunks driven from Python.

``fit`` compiles a chunk of training steps as one ``lax.scan`` (so the Python overhead is paid per
chunk, not per step) and, between chunks, updates a tqdm bar, evaluates, and writes checkpoints.
The parts: argument checks (here), the batch sources (:mod:`._batches`), the compiled chunk
(:mod:`._train_step`, reused by later calls with the same loss, optimiser and shapes), what
identifies a run and resuming it (:mod:`._resume`), and the non-finite policy and its report
(:mod:`._nonfinite`).

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
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jaxtyping import PRNGKeyArray
from tqdm.auto import tqdm

from .._core import _sharding, check_int
from ._batches import (
    HostPlacement,
    HostStream,
    Streamed,
    batch_source,
    is_stream,
    split_shape,
)
from ._nonfinite import check_finite, first_failure, nonfinite_in_batch, nonfinite_message
from ._resume import Checkpointing, Start, describe_data, run_metadata
from ._train_step import TrainStep, describe_output, run_chunk


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
    with_step: bool = False,
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
    process_local: bool = False,
    microbatches: int = 1,
    skip_nonfinite: int = 0,
) -> FitResult:
    """Train ``model`` to minimise ``loss_fn(model, batch, key)`` (a scalar, or ``(scalar, aux)``).

    The chunk of ``steps_per_call`` steps is compiled once per ``loss_fn`` and ``optimizer``
    object, model structure, options and shapes: a later call with the same ones (another key,
    other starting values, other data of the same shapes, a resumed run) reuses it.

    Args:
        loss_fn: ``loss_fn(model, batch, key)``; ``key`` is distinct for every step. It must
            return a floating-point scalar (``TypeError`` when first traced otherwise).
        with_step: call ``loss_fn(model, batch, key, step)`` instead, with ``step`` the global
            step index (an integer array, counted from 0 across chunks and resumed runs), for
            objectives with a curriculum, e.g. ``progress = step / num_steps`` in consistency
            training (:func:`jaxsolve.diffusion.fewstep.consistency_training_loss`).
        model: any pytree (usually an :class:`equinox.Module`); its inexact arrays are trained
            and must be finite.
        data: a pytree of arrays sharing a leading sample axis (shuffled minibatches of
            ``batch_size``, or the full set when ``batch_size`` is None), a function
            ``data(key) -> batch`` for data generated on the fly, or batches read on the host
            for data larger than memory: an iterator (a generator, ...) whose item ``s`` is the
            batch of step ``s``, or a source with ``iter_from(step)`` such as
            :class:`jaxsolve.data.BatchIterator` (with ``batch_size=None``: the iterator fixes
            it). Each chunk of ``steps_per_call`` steps takes its batches from the iterator and
            holds them, stacked, on the device while it runs. A resumed run restarts the source
            at its step (``iter_from``) or skips a plain iterator's first items.
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
        process_local: with ``mesh`` and ``data`` an iterator of batches: each process's
            iterator gives only its own part of every batch (one process per host feeding its
            shard), the samples of its devices along ``data_axis``, in their order on the mesh;
            the global batch, ``process_count`` times as large on a mesh spread evenly over the
            processes, is assembled from the parts (``jax.make_array_from_process_local_data``)
            and never exists whole on any host. Each part's leading axis must be a multiple of
            the process's devices along ``data_axis`` (``ValueError`` naming ``batch``).
            ``False`` (the default): every process's iterator gives the whole batch and each
            places the slices its devices hold. In a single process the two are the same.
            Either way the streamed batches are placed split over ``data_axis``, not copied
            to every device.
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

    schedule = _Schedule.checked(num_steps, steps_per_call, eval_every, checkpoint_every)
    skip_nonfinite = check_int("skip_nonfinite", skip_nonfinite, minimum=0)
    ema_decay = _check_ema_decay(ema_decay)
    microbatches = check_int("microbatches", microbatches)
    _check_optimizer(optimizer)
    keys = _split_key(key)
    checkpoints = Checkpointing(checkpoint_path, checkpoint_every, resume)
    checkpoints.check()

    params, static = eqx.partition(model, eqx.is_inexact_array)
    if opt_state is None:
        opt_state = optimizer.init(params)
    # (Their finiteness is checked in the first chunk's program, free of extra compiles.)
    state = (params, opt_state, params if ema_decay is not None else None)
    data, batches = _place_data(data, batch_size, mesh, data_axis)
    streamed = isinstance(batches, Streamed)
    process_local = _check_process_local(process_local, mesh, streamed)
    stream = HostStream(data, HostPlacement(mesh, data_axis, process_local)) if streamed else None
    # Checked on shapes alone, before anything compiles.
    if stream is None:
        batch_shape = jax.eval_shape(lambda s: batches(data, keys[0], s), 0)
        description = describe_data(data, batch_shape)
    else:
        batch_shape = stream.batch_shape
        shapes = describe_data(batch_shape, batch_shape).removeprefix("arrays ")
        description = f"an iterator of batches {shapes}"
    part_shape = split_shape(batch_shape, microbatches)
    metadata = run_metadata(key, batch_size, microbatches, ema_decay, description, optimizer)
    start = checkpoints.start(state, metadata, schedule.num_steps)
    if stream is not None:
        stream.start(start.step)
    if mesh is not None:
        _sharding.check_shardable(part_shape, mesh, data_axis, name="batch")
        start = start._replace(state=_sharding.replicate(start.state, mesh))
    train_step = TrainStep(
        loss_fn,
        static,
        optimizer,
        batches,
        has_aux,
        bool(with_step),
        microbatches,
        ema_decay,
        skip_nonfinite,
        mesh,
        data_axis,
    )
    run = _Run(train_step, data, keys, start, checkpoints, metadata, eval_fn, stream)
    try:
        run.train(schedule, desc=desc, progress=progress)
    finally:
        if stream is not None:
            stream.close()
    return run.result(key)


def _check_ema_decay(ema_decay):
    if ema_decay is None:
        return None
    if isinstance(ema_decay, bool) or not isinstance(ema_decay, int | float | np.floating):
        raise ValueError(f"ema_decay must be a float in [0, 1); got {ema_decay!r}.")
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must lie in [0, 1); got {ema_decay}.")
    return float(ema_decay)


def _check_process_local(process_local, mesh, streamed: bool) -> bool:
    if not isinstance(process_local, bool | np.bool_):
        raise TypeError(f"process_local must be a bool; got {type(process_local).__name__}.")
    if process_local and (mesh is None or not streamed):
        raise ValueError(
            "process_local=True needs mesh= and data given as an iterator of batches (each "
            "process feeding its part of every batch)."
        )
    return bool(process_local)


def _check_optimizer(optimizer):
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            f"optimizer must be an optax.GradientTransformation; got {type(optimizer).__name__}."
        )


def _split_key(key):
    """``(data_key, loss_key)``: the keys of the minibatches and of the loss."""
    try:
        data_key, loss_key = jax.random.split(key)
    except (TypeError, ValueError) as err:
        raise TypeError(
            "key must be a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed)); got "
            f"{describe_output(key)}."
        ) from err
    return data_key, loss_key


def _place_data(data, batch_size, mesh, data_axis):
    """``(data, batches)``: array data as JAX arrays (replicated over ``mesh``), so that every
    chunk takes them as they are, and the source of the minibatches."""
    if mesh is not None:
        _sharding.axis_size(mesh, data_axis)  # a clear error for a wrong mesh or axis name
    batches = batch_source(data, batch_size)
    if not callable(data) and not is_stream(data):
        data = jax.tree_util.tree_map(jnp.asarray, data)
        if mesh is not None:
            data = _sharding.replicate(data, mesh)
    return data, batches


class _Schedule(NamedTuple):
    """How many steps, and how they are cut into chunks: a chunk ends at every multiple of
    ``steps_per_call``, ``eval_every`` and ``checkpoint_every`` (their gcd, ``chunk``)."""

    num_steps: int
    chunk: int
    eval_every: int | None

    @classmethod
    def checked(cls, num_steps, steps_per_call, eval_every, checkpoint_every):
        num_steps = check_int("num_steps", num_steps, minimum=0)
        for name, every in (("eval_every", eval_every), ("checkpoint_every", checkpoint_every)):
            if every is not None:
                check_int(name, every)
        chunk = check_int("steps_per_call", steps_per_call)
        for every in (eval_every, checkpoint_every):
            if every is not None:
                chunk = math.gcd(chunk, every)
        return cls(num_steps, chunk, eval_every)

    def length(self, step: int) -> int:
        """The length of the chunk that starts at ``step``."""
        return min(self.chunk - step % self.chunk, self.num_steps - step)

    def evaluates(self, step: int) -> bool:
        return self.eval_every is not None and step % self.eval_every == 0


class _Run:
    """The Python side of one ``fit``: the state between compiled chunks, the history, the
    evaluations and the checkpoints."""

    def __init__(
        self, train_step, data, keys, start: Start, checkpoints, metadata, eval_fn, stream=None
    ):
        self.train_step = train_step
        self.data = data
        self.stream = stream
        self.keys = keys
        self.start = start
        self.checkpoints = checkpoints
        self.metadata = metadata
        self.eval_fn = eval_fn
        self.state, self.step = start.state, start.step
        self.nonfinite_run, self.last_checkpoint = start.nonfinite_run, start.last_checkpoint
        self.history: dict = {"step": [], "loss": [], "skipped": [], "eval": []}

    def train(self, schedule: _Schedule, *, desc: str, progress: bool) -> None:
        """Every chunk up to ``num_steps``, under a progress bar."""
        bar = tqdm(
            total=schedule.num_steps,
            initial=self.step,
            desc=desc,
            disable=not progress,
            leave=False,
        )
        try:
            self._chunks(schedule, bar)
        finally:
            bar.close()

    def _chunks(self, schedule: _Schedule, bar) -> None:
        """Every chunk up to ``num_steps``, with the evaluations and checkpoints due after each;
        then the final evaluation and checkpoint."""
        while self.step < schedule.num_steps:
            length = schedule.length(self.step)
            self.advance(length)
            bar.update(length)
            bar.set_postfix(loss=f"{self.history['loss'][-1]:.4g}")
            if schedule.evaluates(self.step):
                self.evaluate(bar)
            if self.checkpoints.due(self.step):
                self.save()
        if self.step == self.start.step:  # nothing ran, so the compiled chunk's check did not
            check_finite(self.start.state_names, self.state[:2])
        evaluated = self.history["eval"] and self.history["eval"][-1][0] == self.step
        if self.eval_fn is not None and not evaluated:
            self.evaluate(bar)
        ran = self.step > self.start.step
        if ran and self.checkpoints.every is not None and not self.checkpoints.due(self.step):
            self.save()

    def advance(self, length: int) -> None:
        """The next ``length`` steps, as one compiled chunk; raises on a failure it finds."""
        state_in = self.state
        steps = jnp.arange(self.step, self.step + length)
        nonfinite_run = jnp.asarray(self.nonfinite_run, jnp.int32)
        if self.stream is not None:  # this chunk's batches, from the host, on the devices
            self.data = self.stream.chunk(self.step, length)
        outcome = run_chunk(self.train_step, state_in, nonfinite_run, steps, self.keys, self.data)
        if self.step == self.start.step and int(outcome.start_bits):
            check_finite(self.start.state_names, state_in[:2])
        failure = first_failure(outcome, self.step, length)
        if failure is not None:
            raise FloatingPointError(self._failure_message(failure))
        self.state, self.nonfinite_run = outcome.state, int(outcome.run_length)
        losses, taken = np.asarray(outcome.losses), np.asarray(outcome.bits) == 0
        self.step += length
        mean_loss = float(np.mean(losses[taken], dtype=np.float64)) if taken.any() else np.nan
        self.history["step"].append(self.step)
        self.history["loss"].append(mean_loss)
        self.history["skipped"].append(int(length - taken.sum()))

    def _failure_message(self, failure) -> str:
        data_where = None
        if failure.step >= 0:
            batch = lambda s: self.train_step.batches(self.data, self.keys[0], s)
            data_where = nonfinite_in_batch(self.data, batch, failure.step)
        return nonfinite_message(
            failure,
            self.train_step.skip_nonfinite,
            data_where,
            self.checkpoints.path,
            self.last_checkpoint,
        )

    def evaluate(self, bar) -> None:
        params, _, _ = self.state
        model = eqx.combine(params, self.train_step.static)
        metrics = {k: float(v) for k, v in self.eval_fn(model).items()}
        self.history["eval"].append((self.step, metrics))
        bar.set_postfix(**{k: f"{v:.3g}" for k, v in metrics.items()})

    def result(self, key) -> FitResult:
        params, opt_state, ema = self.state
        static = self.train_step.static
        return FitResult(
            model=eqx.combine(params, static),
            opt_state=opt_state,
            ema_model=None if ema is None else eqx.combine(ema, static),
            step=self.step,
            key=key,
            history=self.history,
        )

    def save(self) -> None:
        self.last_checkpoint = self.checkpoints.save(
            self.state, self.step, self.metadata, self.nonfinite_run
        )
