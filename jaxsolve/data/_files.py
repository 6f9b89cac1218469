"""What every loader shares: the optional imports, path checks and sample selections."""

from __future__ import annotations

import importlib
import os

import numpy as np

from .._core import check_int

EXTRA = "jaxsolve[data]"

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def optional(module: str, what: str):
    """``import module``, or an ``ImportError`` that says which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"{what} needs {module.split('.')[0]}, which is optional: "
            f'pip install "{EXTRA}" (or pip install {module.split(".")[0]}).'
        ) from err


def checked_path(path, name: str = "path") -> str:
    """``path`` as a string, after checking that it names a readable file."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"{name} must be a str or os.PathLike; got {type(path).__name__}.")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name}={path!r} does not exist.")
    if not os.path.isfile(path):
        raise ValueError(f"{name}={path!r} is not a file.")
    return path


def is_hdf5(path: str) -> bool:
    """Whether ``path`` is an HDF5 file: the signature at offset 0, or at 512 after the 512-byte
    user block that MATLAB v7.3 writes its own header into."""
    with open(path, "rb") as f:
        head = f.read(520)
    return head[:8] == _HDF5_SIGNATURE or head[512:520] == _HDF5_SIGNATURE


def sample_slice(samples, n: int, name: str = "samples") -> slice:
    """``samples`` (None for all, a count ``k`` for the first ``k``, or a slice with a positive
    step) as a slice with non-negative bounds into ``n`` samples."""
    if samples is None:
        return slice(0, n, 1)
    if isinstance(samples, slice):
        start, stop, step = samples.indices(n)
        if step < 1:
            raise ValueError(f"{name} must have a positive step; got {samples}.")
        if stop <= start:
            raise ValueError(f"{name}={samples} selects no sample out of {n}.")
        return slice(start, stop, step)
    k = check_int(name, samples, maximum=n)
    return slice(0, k, 1)


def subsample(name: str, sub) -> slice:
    """Every ``sub``-th grid point, as the FNO and PDEBench scripts subsample (``[::sub]``)."""
    return slice(None, None, check_int(name, sub))


def as_indices(indices, n: int, name: str = "indices") -> np.ndarray:
    """Integer sample indices in ``[0, n)`` (negative ones count from the end)."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or not (np.issubdtype(idx.dtype, np.integer) or idx.size == 0):
        raise TypeError(f"{name} must be a 1-D array of integers; got {idx.dtype}{idx.shape}.")
    idx = idx.astype(np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"{name} out of range for {n} samples: {idx.min()}..{idx.max()}.")
    return np.where(idx < 0, idx + n, idx)


def read_rows(dataset, idx: np.ndarray, axis: int = 0) -> np.ndarray:
    """``dataset`` (an h5py dataset) at sample indices ``idx`` along ``axis``, in the order of
    ``idx``. HDF5 selections must be increasing and unique, so the unique sorted rows are read
    in one selection and put back in the requested order."""
    unique, inverse = np.unique(idx, return_inverse=True)
    where = [slice(None)] * dataset.ndim
    where[axis] = unique
    rows = dataset[tuple(where)]
    return np.take(rows, inverse, axis=axis)
