r"""Where :func:`~jaxsolve.train.fit`'s minibatch of each step comes from, and micro-batching.

A batch source is a function of ``(data, data_key, step)``, so that the minibatch of step ``s``
does not depend on how the steps are chunked or on where a run was resumed:

* :class:`Minibatches` — shuffled epochs of ``batch_size`` samples: epoch ``e`` is the
  permutation drawn with ``fold_in(data_key, e)`` (the remainder of an epoch is dropped);
* :class:`FullBatch` — every sample at every step;
* :class:`Generated` — ``data(fold_in(data_key, s))``, data made on the fly;
* :class:`Streamed` — batches drawn on the host from an iterator (:class:`HostStream`), for data
  larger than memory: each chunk of steps gets its batches stacked, ``(stacked, first_step)``,
  as its ``data``. With a mesh the stacked batches are placed split over its data axis, from
  the whole batch on every process or from each process's own part (``process_local``).

The sources hold only what shapes the program (sizes, the generating function); the arrays come
in as an argument of the compiled chunk, so one compiled program serves any data of those shapes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._core import _sharding, check_int


class AbstractBatches(eqx.Module):
    """``batches(data, data_key, step)``: the minibatch of training step ``step``."""

    @abc.abstractmethod
    def __call__(self, data, data_key, step): ...


class Minibatches(AbstractBatches):
    """Minibatch ``step`` of shuffled epochs of ``batch_size`` out of ``n`` samples."""

    n: int = eqx.field(static=True)
    batch_size: int = eqx.field(static=True)

    def __call__(self, data, data_key, step):
        per_epoch = self.n // self.batch_size
        perm = jax.random.permutation(jax.random.fold_in(data_key, step // per_epoch), self.n)
        start = (step % per_epoch) * self.batch_size
        idx = jax.lax.dynamic_slice(perm, (start,), (self.batch_size,))
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx], data)


class FullBatch(AbstractBatches):
    """All of ``data`` at every step."""

    def __call__(self, data, data_key, step):
        del data_key, step
        return data


class Generated(AbstractBatches):
    """``data(fold_in(data_key, step))``: ``data`` is a function of a key."""

    def __call__(self, data, data_key, step):
        return data(jax.random.fold_in(data_key, step))


class Streamed(AbstractBatches):
    """Batch ``step - first_step`` of a chunk's stacked batches ``data = (stacked, first_step)``."""

    def __call__(self, data, data_key, step):
        del data_key
        stacked, first_step = data
        return jax.tree_util.tree_map(
            lambda a: jax.lax.dynamic_index_in_dim(a, step - first_step, keepdims=False), stacked
        )


def is_stream(data) -> bool:
    """Whether ``data`` is batches from the host: an iterator (a generator, ...) or a source
    that restarts at a step (``data.iter_from(step)``, e.g. :class:`jaxsolve.data.BatchIterator`)."""
    return isinstance(data, Iterator) or callable(getattr(data, "iter_from", None))


def local_data_shards(mesh: Mesh, axis: str) -> int:
    """How many of the positions along mesh axis ``axis`` this process's devices hold: the
    number of distinct slices of a batch split over ``axis`` that this process places."""
    where = mesh.axis_names.index(axis)
    me = jax.process_index()
    devices = np.asarray(mesh.devices)
    return len({i[where] for i in np.ndindex(devices.shape) if devices[i].process_index == me})


class HostPlacement(NamedTuple):
    """Where a chunk of host batches goes: one device (``mesh`` None), or split over mesh axis
    ``data_axis`` with every other axis replicated.

    With ``process_local=False`` every process holds the whole batch and places the slices its
    devices need (``jax.make_array_from_callback``). With ``process_local=True`` each process
    holds only its own part, the samples of its devices along ``data_axis`` in their order, and
    the global batch is assembled from the parts (``jax.make_array_from_process_local_data``):
    ``local batch * data_axis size / this process's positions on it`` samples. In one process
    the two are the same.
    """

    mesh: Mesh | None
    data_axis: str
    process_local: bool

    def global_shape(self, batch_shape):
        """The shapes of the global batch whose (local) part has ``batch_shape``; checks that a
        process-local part divides over this process's devices (``ValueError`` naming the
        leaf of ``batch`` otherwise)."""
        if self.mesh is None or not self.process_local:
            return batch_shape
        size = _sharding.axis_size(self.mesh, self.data_axis)
        local = local_data_shards(self.mesh, self.data_axis)

        def refused(where, shape):
            return (
                f"{where} has shape {shape}; with process_local=True each process's batch is "
                f"split over its {local} positions on mesh axis {self.data_axis!r}, so its "
                f"leading (sample) axis must be a multiple of {local}."
            )

        return rescaled(batch_shape, local, size, refused)

    def __call__(self, stacked, first_step: int):
        """``(stacked, first_step)`` on the devices: ``stacked`` holds host batches stacked on
        a new leading axis (NumPy arrays), placed with the batch axis (axis 1) split."""
        stacked = jax.tree_util.tree_map(
            lambda a: np.asarray(a, jax.dtypes.canonicalize_dtype(a.dtype)), stacked
        )
        first_step = np.asarray(first_step, np.int32)
        if self.mesh is None:
            return jax.tree_util.tree_map(jnp.asarray, stacked), jnp.asarray(first_step)
        sharding = NamedSharding(self.mesh, PartitionSpec(None, self.data_axis))
        if self.process_local:
            size = _sharding.axis_size(self.mesh, self.data_axis)
            local = local_data_shards(self.mesh, self.data_axis)

            def place(a):
                shape = (a.shape[0], a.shape[1] // local * size, *a.shape[2:])
                return jax.make_array_from_process_local_data(sharding, a, shape)

        else:

            def place(a):
                return jax.make_array_from_callback(a.shape, sharding, lambda i: a[i])

        placed = jax.tree_util.tree_map(place, stacked)
        return placed, _sharding.replicate(first_step, self.mesh)


class HostStream:
    """The host side of :class:`Streamed`: batch ``s`` of a run is item ``s`` of the iterator.

    A source with ``iter_from(step)`` is restarted there when a run resumes; a plain iterator is
    taken to start at step 0 and its first items are skipped. Every batch must have the first
    one's structure, shapes and dtypes (``ValueError`` naming the step otherwise).
    ``batch_shape`` is the shape of the global batch (see :class:`HostPlacement`).
    """

    def __init__(self, data, placement: HostPlacement | None = None):
        self.source = data
        self.placement = HostPlacement(None, "data", False) if placement is None else placement
        self.restartable = callable(getattr(data, "iter_from", None))
        self.iterator = data.iter_from(0) if self.restartable else data
        self.position = 0
        first = self._next()
        self.pending = [first]
        self.host_shape = jax.eval_shape(lambda: first)
        self.batch_shape = self.placement.global_shape(self.host_shape)
        self.structure = jax.tree_util.tree_structure(first)

    def _next(self):
        try:
            batch = next(self.iterator)
        except StopIteration:
            raise ValueError(
                f"data (an iterator of batches) ran out after {self.position} batches."
            ) from None
        self.position += 1
        return batch

    def start(self, step: int) -> None:
        """Position the stream so that the next batch is that of ``step``."""
        if step == 0:
            return
        if self.restartable:
            self.close()
            self.iterator, self.position, self.pending = self.source.iter_from(step), step, []
            return
        self.pending = []
        while self.position < step:
            self._next()

    def chunk(self, first_step: int, length: int):
        """``(stacked, first_step)``: the next ``length`` batches stacked on a new leading axis,
        placed on the device(s)."""
        batches = [self.pending.pop(0) if self.pending else self._next() for _ in range(length)]
        for j, batch in enumerate(batches):
            shape = jax.eval_shape(lambda b=batch: b)
            if shape != self.host_shape:
                raise ValueError(
                    f"data: the batch of step {first_step + j} has shapes {shape}; every batch "
                    f"needs those of the first, {self.host_shape}."
                )
        stacked = jax.tree_util.tree_map(lambda *b: np.stack([np.asarray(x) for x in b]), *batches)
        return self.placement(stacked, first_step)

    def close(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close is not None and self.restartable:
            close()


def batch_source(data, batch_size) -> AbstractBatches:
    """The source of ``fit``'s minibatches for ``data`` and ``batch_size``, after checking that
    ``data`` is a function or arrays sharing a leading sample axis (``ValueError`` otherwise)."""
    if is_stream(data):
        if batch_size is not None:
            raise ValueError(
                "batch_size must be None when data is an iterator of batches: the iterator "
                f"fixes the batch size (got batch_size={batch_size})."
            )
        return Streamed()
    if callable(data):
        return Generated()
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
            "every array in data needs the same leading (sample) axis; got "
            f"{[leaf.shape for leaf in leaves]}."
        )
    if batch_size is None:
        return FullBatch()
    return Minibatches(int(n), check_int("batch_size", batch_size, maximum=n))


def split_shape(batch_shape, microbatches):
    """Shape of one of ``microbatches`` equal parts of a minibatch; ``ValueError`` if it does not
    split."""
    if microbatches == 1:
        return batch_shape

    def refused(where, shape):
        return (
            f"microbatches={microbatches} must divide the minibatch's sample axis; "
            f"{where} has shape {shape}."
        )

    return rescaled(batch_shape, microbatches, 1, refused)


def rescaled(batch_shape, divisor: int, factor: int, refused: Callable[[str, tuple], str]):
    """``batch_shape`` with every leaf's leading (sample) axis ``n`` made ``n // divisor *
    factor``; ``ValueError(refused(where, shape))`` for a leaf whose ``n`` ``divisor`` does not
    divide (or a scalar), ``where`` naming it as ``batch[...]``."""

    def one(path, leaf):
        n = leaf.shape[0] if leaf.shape else None
        if n is None or n % divisor:
            raise ValueError(refused(f"batch{jax.tree_util.keystr(path)}", tuple(leaf.shape)))
        return jax.ShapeDtypeStruct((n // divisor * factor, *leaf.shape[1:]), leaf.dtype)

    return jax.tree_util.tree_map_with_path(one, batch_shape)


def microbatched(fn: Callable, microbatches: int) -> Callable:
    """``fn(params, batch, key)`` averaged over ``microbatches`` equal parts of ``batch``.

    ``fn`` returns any pytree of batch means (typically ``(loss, grads)`` from
    ``jax.value_and_grad``); the parts are taken along every leaf's leading (sample) axis and
    evaluated one after another in a ``lax.scan``, so only one part's intermediates are alive
    at a time. Part ``j`` gets the key ``fold_in(key, j)`` (``key`` may be ``None``). For
    per-sample means this equals ``fn`` on the whole batch up to rounding; it is what
    :func:`fit` does with ``microbatches=k``, for hand-written training steps.
    """
    check_int("microbatches", microbatches)
    if microbatches == 1:
        return fn

    def averaged(params, batch, key):
        split_shape(jax.eval_shape(lambda: batch), microbatches)
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
