r"""The ``.mat`` files of "Fourier Neural Operator for Parametric Partial Differential Equations"
(Li et al.): MATLAB v5 files through ``scipy.io.loadmat``, v7.3 files (HDF5 inside) through h5py.

MATLAB stores arrays column-major. ``scipy.io.loadmat`` hands them back with MATLAB's shape; an
HDF5 reader sees the same bytes as a row-major array of the reversed shape, i.e. the transpose. A
v7.3 array is therefore read with its axes reversed, and both formats give the same array in the
published layout:

* Burgers (``burgers_data_R10.mat``): ``a``, ``u`` of shape ``(N, s)``, :math:`u_0` and
  :math:`u(\cdot, 1)`;
* Darcy (``piececonst_r421_N1024_smooth*.mat``): ``coeff``, ``sol`` of shape ``(N, s, s)``;
* Navier–Stokes (``ns_V1e-3_N5000_T50.mat``): ``a`` ``(N, 64, 64)`` (:math:`w_0`), ``u``
  ``(N, 64, 64, T)`` (:math:`w` at the times ``t``, :math:`t_j = j + 1`), ``t`` ``(1, T)``.

The pair helpers turn these into jaxsolve's layout ``(N, channels, *spatial)`` with the FNO
scripts' subsampling ``[::sub]`` on every grid axis; from a v7.3 file they read only the selected
samples and grid points.
"""

from __future__ import annotations

import os

import numpy as np

from ._files import checked_path, is_hdf5, optional, sample_slice, subsample

_MATLAB_META = ("__header__", "__version__", "__globals__")


class _MatFile:
    """One ``.mat`` file of either format: its variable names, and reads of slices of a variable
    in MATLAB's (published) axis order."""

    def __init__(self, path):
        self.path = checked_path(path)
        self.hdf5 = is_hdf5(self.path)
        if self.hdf5:
            h5py = optional("h5py", "Reading a MATLAB v7.3 .mat file")
            self._file = h5py.File(self.path, "r")
            self.names = [k for k, v in self._file.items() if isinstance(v, h5py.Dataset)]
            self._v5 = None
        else:
            sio = optional("scipy.io", "Reading a MATLAB v5 .mat file")
            try:
                self.names = [name for name, _, _ in sio.whosmat(self.path)]
            except Exception as err:
                raise ValueError(
                    f"path={self.path!r} is not a MATLAB .mat file that scipy or h5py can read "
                    f"({type(err).__name__}: {err})."
                ) from err
            self._v5 = {}
            self._sio = sio

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.hdf5:
            self._file.close()

    def check(self, keys) -> list[str]:
        if keys is None:
            return list(self.names)
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in self.names]
        if missing:
            raise ValueError(
                f"keys {missing} are not in {self.path!r}; it holds {sorted(self.names)}."
            )
        return keys

    def shape(self, key) -> tuple[int, ...]:
        if self.hdf5:
            return tuple(reversed(self._file[key].shape))
        return self.read(key).shape

    def read(self, key, where=()) -> np.ndarray:
        """``key[where]`` in MATLAB's axis order (``where`` a tuple of slices, one per leading
        axis)."""
        if self.hdf5:
            dataset = self._file[key]
            full = [slice(None)] * dataset.ndim
            full[: len(where)] = where
            # HDF5 axis i is MATLAB axis ndim - 1 - i.
            return np.transpose(dataset[tuple(reversed(full))])
        if key not in self._v5:
            self._v5.update(self._sio.loadmat(self.path, variable_names=[key]))
        return self._v5[key][tuple(where)]


def load_mat(path: str | os.PathLike, keys: str | list[str] | None = None) -> dict:
    """The variables of a MATLAB ``.mat`` file, as NumPy arrays with MATLAB's shapes.

    v5 (and v4/v6/v7) files are read with ``scipy.io.loadmat``; v7.3 files, which are HDF5 files,
    with h5py, reversing the axes so that both give the same arrays (MATLAB writes column-major).
    MATLAB vectors keep MATLAB's two axes (``t`` of the Navier–Stokes files is ``(1, T)``).

    Args:
        path: the file.
        keys: a variable name or a list of them (default: every numeric variable).

    Returns:
        ``{name: array}``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a name in ``keys`` is not in the file (the message lists those that are),
            or the file is not a ``.mat`` file.
        ImportError: scipy (v5) or h5py (v7.3) is not installed (``pip install "jaxsolve[data]"``).
    """
    with _MatFile(path) as mat:
        return {key: np.asarray(mat.read(key)) for key in mat.check(keys)}


def _pairs(path, in_key, out_key, sub, samples, ndim):
    with _MatFile(path) as mat:
        mat.check([in_key, out_key])
        n = mat.shape(in_key)[0]
        rows = sample_slice(samples, n)
        grid = subsample("sub", sub)
        where = (rows, *([grid] * ndim))
        a = mat.read(in_key, where)
        u = mat.read(out_key, where)
    for key, x in ((in_key, a), (out_key, u)):
        if x.ndim != ndim + 1:
            raise ValueError(
                f"{key!r} in {path!r} has shape {x.shape}; expected (N, {', '.join('s' * ndim)})."
            )
    return a[:, None], u[:, None]


def fno_burgers_pairs(
    path: str | os.PathLike, *, sub: int = 8, samples=None
) -> tuple[np.ndarray, np.ndarray]:
    r"""``(a, u)`` of the FNO paper's Burgers file as ``(N, 1, s)`` arrays.

    ``a`` is :math:`u_0`, ``u`` is :math:`u(\cdot, 1)`, both ``[:, ::sub]`` of the 8192-point
    fields (``sub=8`` gives the paper's ``s = 1024``).

    Args:
        path: e.g. ``burgers_data_R10.mat`` (variables ``a`` and ``u``, ``(N, 8192)``).
        sub: keep every ``sub``-th grid point.
        samples: None (all), a count ``k`` (the first ``k``) or a slice (``slice(-200, None)``
            for the last 200, as the scripts take the test set).
    """
    return _pairs(path, "a", "u", sub, samples, 1)


def fno_darcy_pairs(
    path: str | os.PathLike, *, sub: int = 5, samples=None
) -> tuple[np.ndarray, np.ndarray]:
    r"""``(coeff, sol)`` of the FNO paper's Darcy files as ``(N, 1, s, s)`` arrays.

    Both are ``[:, ::sub, ::sub]`` of the 421-node fields; ``sub=5`` gives the paper's ``s = 85``
    (``(421 - 1) / 5 + 1``), the layout of :func:`jaxsolve.pde.darcy_dataset`.

    Args:
        path: e.g. ``piececonst_r421_N1024_smooth1.mat`` (``coeff``, ``sol``, ``(N, 421, 421)``).
        sub: keep every ``sub``-th node on each axis.
        samples: as in :func:`fno_burgers_pairs`.
    """
    return _pairs(path, "coeff", "sol", sub, samples, 2)


def fno_navier_stokes(
    path: str | os.PathLike, *, sub: int = 1, samples=None, include_initial: bool = True
) -> np.ndarray:
    r"""Vorticity trajectories of the FNO paper's Navier–Stokes file as ``(N, frames, 1, s, s)``.

    The layout of :func:`jaxsolve.pde.navier_stokes_dataset`: frame ``j`` is the vorticity at time
    ``j`` — frame 0 is ``a`` (:math:`w_0`) and frame ``j >= 1`` is ``u[..., j - 1]``. With
    ``include_initial=False`` the frames are ``u``'s alone (frame ``j`` at time ``j + 1``), which
    is what the paper's scripts train on: ``u[..., :10]`` to ``u[..., 10:50]``.

    Args:
        path: e.g. ``ns_V1e-3_N5000_T50.mat`` (``a`` ``(N, 64, 64)``, ``u`` ``(N, 64, 64, T)``).
        sub: keep every ``sub``-th grid point on each axis.
        samples: as in :func:`fno_burgers_pairs`.
        include_initial: put ``a`` in front as frame 0.
    """
    with _MatFile(path) as mat:
        keys = mat.check(["a", "u"] if include_initial else ["u"])
        n = mat.shape("u")[0]
        grid = subsample("sub", sub)
        where = (sample_slice(samples, n), grid, grid)
        u = mat.read("u", where)
        if u.ndim != 4:
            raise ValueError(f"'u' in {mat.path!r} has shape {u.shape}; expected (N, s, s, T).")
        frames = np.moveaxis(u, -1, 1)[:, :, None]
        if "a" in keys:
            a = mat.read("a", where)
            frames = np.concatenate([a[:, None, None].astype(frames.dtype), frames], axis=1)
    return frames
