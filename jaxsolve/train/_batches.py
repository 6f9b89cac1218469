r"""Where :func:`~jaxsolve.train.fit`'s minibatch of each step comes from, and micro-batching.

A batch source is a function of ``(data, data_key, step)``, so that the minibatch of step ``s``
does not depend on how the steps are chunked or on where a run was resumed:

* :class:`Minibatches` — shuffled epochs of ``batch_size`` samples: epoch ``e`` is the
  permutation drawn with ``fold_in(data_key, e)`` (the remainder of an epoch is dropped);
* :class:`FullBatch` — every sample at every step;
* :class:`Generated` — ``data(fold_in(data_key, s))``, data made on the fly;
* :class:`Streamed` — batches drawn on the host from an iterator (:class:`HostStream`), for data
  larger than memory: each chunk of steps gets its batches stacked, ``(stacked, first_step)``,
  as its ``data``.

The sources hold only what shapes the program (sizes, the generating function); the arrays come
in as an argument of the compiled chunk, so one compiled program serves any data of those shapes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import check_int


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


class HostStream:
    """The host side of :class:`Streamed`: batch ``s`` of a run is item ``s`` of the iterator.

    A source with ``iter_from(step)`` is restarted there when a run resumes; a plain iterator is
    taken to start at step 0 and its first items are skipped. Every batch must have the first
    one's structure, shapes and dtypes (``ValueError`` naming the step otherwise).
    """

    def __init__(self, data):
        self.source = data
        self.restartable = callable(getattr(data, "iter_from", None))
        self.iterator = data.iter_from(0) if self.restartable else data
        self.position = 0
        first = self._next()
        self.pending = [first]
        self.batch_shape = jax.eval_shape(lambda: first)
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
        """``(stacked, first_step)``: the next ``length`` batches stacked on a new leading axis."""
        batches = [self.pending.pop(0) if self.pending else self._next() for _ in range(length)]
        for j, batch in enumerate(batches):
            shape = jax.eval_shape(lambda b=batch: b)
            if shape != self.batch_shape:
                raise ValueError(
                    f"data: the batch of step {first_step + j} has shapes {shape}; every batch "
                    f"needs those of the first, {self.batch_shape}."
                )
        stacked = jax.tree_util.tree_map(lambda *b: jnp.asarray(np.stack(b)), *batches)
        return stacked, jnp.asarray(first_step, jnp.int32)

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
