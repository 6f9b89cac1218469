r"""PDEBench's HDF5 files ("PDEBench: An Extensive Benchmark for Scientific Machine Learning",
Takamoto et al.), in the two layouts its own readers take:

* **one array per field** (1-D Advection, Burgers, diffusion-sorption single files, the CFD files,
  Darcy): a dataset ``tensor`` of shape ``(N, T, *spatial)`` for a scalar equation — or one
  dataset per field (``density``, ``pressure``, ``Vx``, ``Vy``, ``Vz``) for compressible flow —
  with the coordinates ``x-coordinate`` (``y-``, ``z-``) and ``t-coordinate``. Darcy files hold
  ``nu`` ``(N, *spatial)`` and ``tensor`` ``(N, 1, *spatial)`` instead of trajectories;
* **one group per seed** (2-D diffusion-reaction, shallow water, ...): groups ``0000``,
  ``0001``, ... each holding ``data`` of shape ``(T, *spatial, C)`` and the coordinates
  ``grid/x`` (``grid/y``) and ``grid/t``.

:func:`load_pdebench` returns the arrays as stored; :func:`pdebench_trajectories` and
:func:`pdebench_dataset` (lazy, read by sample index) give jaxsolve's trajectory layout
``(N, T, C, *spatial)`` (:mod:`jaxsolve.train`'s rollouts), with PDEBench's
``reduced_resolution`` / ``reduced_resolution_t`` subsampling as ``sub`` / ``sub_t``.
"""

from __future__ import annotations

import os

import numpy as np

from ._files import as_indices, checked_path, optional, read_rows, sample_slice, subsample

# The fields of PDEBench's compressible-flow files, in the order its readers stack them.
CFD_FIELDS = ("density", "pressure", "Vx", "Vy", "Vz")


def _open(path):
    h5py = optional("h5py", "Reading a PDEBench HDF5 file")
    path = checked_path(path)
    try:
        return h5py, h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"path={path!r} is not an HDF5 file ({err}).") from err


def _layout(h5py, f) -> tuple[str, list[str]]:
    """``("seeds", group names)`` or ``("fields", trajectory field names)``."""
    seeds = sorted(
        k
        for k, v in f.items()
        if isinstance(v, h5py.Group) and isinstance(v.get("data"), h5py.Dataset)
    )
    if seeds:
        return "seeds", seeds
    if "tensor" in f and "nu" not in f:
        return "fields", ["tensor"]
    fields = [k for k in CFD_FIELDS if k in f]
    if fields:
        return "fields", fields
    if "nu" in f:
        return "darcy", ["nu", "tensor"]
    raise ValueError(
        f"path={f.filename!r} holds neither PDEBench layout (a 'tensor' dataset, the fields "
        f"{list(CFD_FIELDS)}, or seed groups with 'data'); it holds {sorted(f.keys())}."
    )


def load_pdebench(path: str | os.PathLike, *, samples=None) -> dict:
    """The arrays of a PDEBench HDF5 file, as stored.

    Args:
        path: the file.
        samples: None (all), a count ``k`` (the first ``k``) or a slice of the samples (seeds).

    Returns:
        one-array-per-field layout: every dataset by name (``tensor`` or the fields, sliced by
        ``samples``; the coordinates whole). Per-seed layout: ``data`` the seeds' arrays stacked
        ``(N, T, *spatial, C)``, ``seeds`` their group names, and the coordinates of the first
        seed's ``grid`` by name (``x``, ``y``, ``t``; PDEBench's seeds share one grid).
    """
    h5py, f = _open(path)
    with f:
        kind, names = _layout(h5py, f)
        if kind == "seeds":
            rows = sample_slice(samples, len(names))
            chosen = names[rows]
            out = {
                "data": np.stack([np.asarray(f[s]["data"]) for s in chosen]),
                "seeds": np.asarray(chosen),
            }
            grid = f[names[0]].get("grid")
            if grid is not None:
                out.update({k: np.asarray(v) for k, v in grid.items()})
            return out
        n = f[names[0]].shape[0]
        rows = sample_slice(samples, n)
        out = {}
        for key, value in f.items():
            if isinstance(value, h5py.Dataset):
                sampled = key in names and value.ndim >= 1 and value.shape[0] == n
                out[key] = np.asarray(value[rows] if sampled else value[()])
        return out


class _Trajectories:
    """Lazy ``(T, C, *spatial)`` samples of a PDEBench file of either layout."""

    def __init__(self, path, sub, sub_t):
        self.path = checked_path(path)
        self._grid = subsample("sub", sub)
        self._time = subsample("sub_t", sub_t)
        self._h5py, self._file = _open(self.path)
        self.kind, self.names = _layout(self._h5py, self._file)
        if self.kind == "darcy":
            self.close()
            raise ValueError(
                f"path={self.path!r} is a PDEBench Darcy file (nu -> tensor), not trajectories; "
                "use load_pdebench."
            )
        if self.kind == "seeds":
            self._len = len(self.names)
        else:
            shapes = {k: self._file[k].shape for k in self.names}
            if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) < 3:
                self.close()
                raise ValueError(
                    f"the fields of {self.path!r} need one shape (N, T, *spatial); got {shapes}."
                )
            self._len = shapes[self.names[0]][0]

    def __len__(self):
        return self._len

    def _where(self, ndim_spatial):
        return (self._time, *([self._grid] * ndim_spatial))

    def __getitem__(self, indices) -> np.ndarray:
        single = np.ndim(indices) == 0
        idx = as_indices(np.atleast_1d(indices), self._len)
        if self.kind == "seeds":
            frames = []
            for i in idx:
                data = np.asarray(self._file[self.names[i]]["data"])  # (T, *spatial, C)
                data = data[self._where(data.ndim - 2)]
                frames.append(np.moveaxis(data, -1, 1))
            out = np.stack(frames)
        else:
            fields = [read_rows(self._file[k], idx) for k in self.names]  # (n, T, *spatial)
            out = np.stack(fields, axis=2)
            out = out[(slice(None), self._time, slice(None), *([self._grid] * (out.ndim - 3)))]
        return out[0] if single else out

    def coordinates(self) -> dict:
        """The coordinates, subsampled as the samples are (``x``, ``y``, ``z``, ``t``)."""
        if self.kind == "seeds":
            grid = self._file[self.names[0]].get("grid", {})
            coords = {k: np.asarray(v) for k, v in grid.items()}
        else:
            coords = {
                k.removesuffix("-coordinate"): np.asarray(v)
                for k, v in self._file.items()
                if k.endswith("-coordinate")
            }
        return {k: v[self._time if k == "t" else self._grid] for k, v in coords.items()}

    def close(self):
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def pdebench_dataset(path: str | os.PathLike, *, sub: int = 1, sub_t: int = 1) -> _Trajectories:
    """A lazy dataset of a PDEBench file's trajectories: ``ds[indices]`` reads those samples
    (seeds) from disk as ``(len(indices), T, C, *spatial)``; ``ds.coordinates()`` gives the
    subsampled coordinates. For :class:`BatchIterator` and data larger than memory.

    Args:
        path: a PDEBench HDF5 file in either layout (not Darcy).
        sub: keep every ``sub``-th grid point on each spatial axis.
        sub_t: keep every ``sub_t``-th time step.
    """
    return _Trajectories(path, sub, sub_t)


def pdebench_trajectories(
    path: str | os.PathLike, *, samples=None, sub: int = 1, sub_t: int = 1
) -> tuple[np.ndarray, dict]:
    """``(trajectories, coordinates)`` of a PDEBench file: ``(N, T, C, *spatial)`` (one channel
    for a scalar equation, ``density, pressure, Vx, ...`` for compressible flow, the seed
    arrays' last axis in the per-seed layout) and the coordinates by name.

    Args:
        path: a PDEBench HDF5 file in either layout (not Darcy).
        samples: None (all), a count ``k`` (the first ``k``) or a slice.
        sub, sub_t: as in :func:`pdebench_dataset`.
    """
    with _Trajectories(path, sub, sub_t) as ds:
        rows = sample_slice(samples, len(ds))
        return ds[np.arange(rows.start, rows.stop, rows.step)], ds.coordinates()
