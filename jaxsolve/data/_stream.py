r"""Data larger than memory: lazy datasets read by sample index, and a host-side batch iterator.

A lazy dataset is anything with ``len(ds)`` samples and ``ds[indices]`` returning those samples
as one array (a NumPy array is one). :class:`H5Dataset` is one over an HDF5 dataset that reads
only the rows asked for. :class:`BatchIterator` draws fixed-size shuffled batches from a pytree of
them and hands them to :func:`jaxsolve.train.fit`, which takes it as ``data``.

The order of the batches is that of ``fit``'s in-memory minibatches: epoch :math:`e` is the
permutation ``jax.random.permutation(fold_in(key, e), n)``, cut into ``n // batch_size`` batches
(the remainder of the epoch is dropped, so every batch has the same shape and the compiled step
serves them all). Hence ``fit(..., BatchIterator(data, b, key=data_key), key=k)`` with
``data_key = jax.random.split(k)[0]`` takes the same steps as ``fit(..., data, batch_size=b,
key=k)``, and the batch of step :math:`s` is a function of :math:`s` alone, so a resumed run
starts where it stopped (:meth:`BatchIterator.iter_from`).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator

import jax
import numpy as np

from .._core import check_int
from ._files import as_indices, checked_path, optional, read_rows


class H5Dataset:
    """The samples of one HDF5 dataset, read from disk by index.

    ``ds[indices]`` reads those samples (in the order given) without loading the rest of the
    file; ``ds[i]`` one sample. The file is opened on first use and stays open until
    :meth:`close` (or the end of a ``with`` block).

    Args:
        path: the HDF5 file.
        name: the dataset's path inside it (``"tensor"``, ``"0000/data"``, ...).
        sample_axis: the axis that indexes samples in the file; it becomes axis 0 of what is
            returned.
        matlab: the file is a MATLAB v7.3 ``.mat`` file: its arrays are stored column-major, so
            the file's axes are reversed before anything else (``sample_axis`` then counts in
            MATLAB's order, where the FNO files keep samples first).
        transform: applied to every batch read (after the axes are arranged), e.g.
            ``lambda b: b[:, None, ::8]`` for jaxsolve's ``(N, channels, *spatial)`` layout with
            subsampling.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        name: str,
        *,
        sample_axis: int = 0,
        matlab: bool = False,
        transform: Callable | None = None,
    ):
        self.path = checked_path(path)
        self.name = name
        self.matlab = bool(matlab)
        self.transform = transform
        self._file = None
        dataset = self._dataset()
        ndim = dataset.ndim
        if not isinstance(sample_axis, int) or not -ndim <= sample_axis < ndim:
            raise ValueError(
                f"sample_axis must be an axis of the {ndim}-D dataset {name!r}; got {sample_axis}."
            )
        sample_axis %= ndim
        # The file's axis holding the samples.
        self._file_axis = ndim - 1 - sample_axis if self.matlab else sample_axis
        self._ndim = ndim
        self._len = dataset.shape[self._file_axis]

    def _dataset(self):
        if self._file is None:
            h5py = optional("h5py", "H5Dataset")
            self._file = h5py.File(self.path, "r")
        if self.name not in self._file:
            names = []
            self._file.visit(lambda k: names.append(k) if hasattr(self._file[k], "shape") else None)
            raise ValueError(
                f"name={self.name!r} is not a dataset in {self.path!r}; it holds {names}."
            )
        dataset = self._file[self.name]
        if not hasattr(dataset, "shape"):
            raise ValueError(f"name={self.name!r} in {self.path!r} is a group, not a dataset.")
        return dataset

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, indices) -> np.ndarray:
        single = np.ndim(indices) == 0
        idx = as_indices(np.atleast_1d(indices), self._len)
        rows = read_rows(self._dataset(), idx, self._file_axis)
        if self.matlab:
            rows = np.transpose(rows)
        axis = self._ndim - 1 - self._file_axis if self.matlab else self._file_axis
        rows = np.moveaxis(rows, axis, 0)
        if self.transform is not None:
            rows = self.transform(rows)
        return rows[0] if single else rows

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):  # an open h5py file does not travel; reopened on first use
        return {**self.__dict__, "_file": None}


def _length(data) -> int:
    leaves = jax.tree_util.tree_leaves(data)
    if not leaves:
        raise ValueError("data is empty.")
    lengths = []
    for leaf in leaves:
        try:
            lengths.append(len(leaf))
        except TypeError as err:
            raise TypeError(
                "data must be a pytree of arrays or lazy datasets (len(ds) and ds[indices]); "
                f"got {type(leaf).__name__}."
            ) from err
    if len(set(lengths)) != 1:
        raise ValueError(f"every dataset in data needs the same number of samples; got {lengths}.")
    return lengths[0]


class BatchIterator:
    """Shuffled fixed-size batches of ``data`` read on the host, for :func:`jaxsolve.train.fit`.

    Iterating gives the batches of steps 0, 1, 2, ... without end (epoch after epoch); ``fit``
    takes ``num_steps`` of them. Batch :math:`s` holds the samples
    ``perm_e[j b : (j + 1) b]`` with :math:`e = \\lfloor s / m \\rfloor`, :math:`j = s \\bmod m`,
    :math:`m = \\lfloor n / b \\rfloor` batches per epoch and ``perm_e`` the permutation drawn
    with ``jax.random.fold_in(key, e)`` — ``fit``'s own in-memory order for the data key.

    With ``prefetch > 0`` a background thread reads up to ``prefetch`` batches ahead, so reading
    from disk overlaps the training steps.

    Args:
        data: a pytree (tuple, dict, ...) of arrays or lazy datasets (:class:`H5Dataset`,
            :class:`PDEBenchSeeds`, a NumPy array) with the same number of samples.
        batch_size: samples per batch (at most the number of samples).
        key: PRNG key of the shuffle; for ``fit``'s in-memory order, ``jax.random.split(k)[0]``
            where ``k`` is ``fit``'s key.
        shuffle: draw the permutations; ``False`` takes the samples in order every epoch.
        prefetch: batches read ahead in a background thread (0: read when asked).
    """

    def __init__(
        self,
        data,
        batch_size: int,
        *,
        key=None,
        shuffle: bool = True,
        prefetch: int = 2,
    ):
        self.data = data
        self.n = _length(data)
        self.batch_size = check_int("batch_size", batch_size, maximum=self.n)
        self.shuffle = bool(shuffle)
        if self.shuffle:
            if key is None:
                raise ValueError("key is needed to shuffle (or pass shuffle=False).")
            try:
                jax.random.fold_in(key, 0)
            except (TypeError, ValueError) as err:
                raise TypeError(f"key must be a PRNG key; got {type(key).__name__}.") from err
        self.key = key
        self.prefetch = check_int("prefetch", prefetch, minimum=0)
        self.steps_per_epoch = self.n // self.batch_size
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def indices(self, step: int) -> np.ndarray:
        """The sample indices of the batch of ``step``."""
        epoch, j = divmod(int(step), self.steps_per_epoch)
        if not self.shuffle:
            perm = np.arange(self.n)
        elif self._perm_cache is not None and self._perm_cache[0] == epoch:
            perm = self._perm_cache[1]
        else:
            with jax.default_device(jax.devices("cpu")[0]):
                perm = np.asarray(
                    jax.random.permutation(jax.random.fold_in(self.key, epoch), self.n)
                )
            self._perm_cache = (epoch, perm)
        return perm[j * self.batch_size : (j + 1) * self.batch_size]

    def batch(self, step: int):
        """The batch of ``step``, read now."""
        idx = self.indices(step)
        return jax.tree_util.tree_map(lambda ds: np.asarray(ds[idx]), self.data)

    def iter_from(self, step: int) -> Iterator:
        """The batches of steps ``step``, ``step + 1``, ... (what a resumed ``fit`` asks for)."""
        step = check_int("step", step, minimum=0)
        if self.prefetch == 0:
            return _Sequential(self, step)
        return _Prefetched(self, step, self.prefetch)

    def __iter__(self) -> Iterator:
        return self.iter_from(0)


class _Sequential:
    def __init__(self, source: BatchIterator, step: int):
        self.source, self.step = source, step

    def __iter__(self):
        return self

    def __next__(self):
        batch = self.source.batch(self.step)
        self.step += 1
        return batch

    def close(self):
        pass


class _Prefetched:
    """Batches read by a daemon thread into a bounded queue; an error in the thread is raised
    by the ``next`` that would have returned its batch. ``close`` (or dropping the iterator)
    stops the thread: it holds the queue and the stop flag, never the iterator itself."""

    def __init__(self, source: BatchIterator, step: int, depth: int):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=_fill,
            args=(self._queue, self._stop, source, step),
            daemon=True,
            name="jaxsolve-prefetch",
        )
        self._thread.start()

    def __iter__(self):
        return self

    def __next__(self):
        if self._stop.is_set():
            raise StopIteration
        batch, err = self._queue.get()
        if err is not None:
            self.close()
            raise err
        return batch

    def close(self):
        self._stop.set()
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def __del__(self):
        self._stop.set()


def _fill(batches: queue.Queue, stop: threading.Event, source: BatchIterator, step: int):
    """The prefetch thread: the batches of ``step``, ``step + 1``, ... into ``batches`` until
    ``stop``; an error goes into the queue for the consumer, never lost in the thread."""

    def put(item):
        while not stop.is_set():
            try:
                batches.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    try:
        while not stop.is_set():
            put((source.batch(step), None))
            step += 1
    except BaseException as err:
        put((None, err))
