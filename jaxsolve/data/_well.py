r"""The Well's HDF5 files ("The Well: a Large-Scale Collection of Diverse Physics Simulations for
Machine Learning", Ohana et al.), read with h5py alone (the ``the_well`` package is not needed).

Every file of the Well follows one specification. The root's attributes name the data set
(``dataset_name``, ``grid_type``, ``n_spatial_dims``, ``n_trajectories``,
``simulation_parameters`` and one attribute per parameter); its groups are

* ``dimensions`` — ``time`` and one coordinate array per spatial axis, named by the group's
  ``spatial_dims`` attribute (``x``, ``y``, ...);
* ``boundary_conditions`` — one group per condition: ``bc_type`` (periodic, wall, open),
  ``associated_dims``, a boolean ``mask`` over the axis and optional ``values``;
* ``scalars`` — non-spatial quantities, listed by ``field_names``;
* ``t0_fields``, ``t1_fields``, ``t2_fields`` — scalar, vector and rank-2 tensor fields, listed
  by each group's ``field_names``. A field is stored ``(n_traj, n_t, *spatial, *[D] * rank)``
  with ``D = n_spatial_dims``, less the axes it does not vary along: its attributes
  ``sample_varying`` and ``time_varying`` say whether the trajectory and time axes are stored,
  and ``dim_varying`` (one flag per spatial axis) which spatial axes are. An axis that is not
  stored holds the same values along it; it is broadcast back here, as the Well's reader tiles it.

**Channels.** A field of rank :math:`r` gives :math:`D^r` channels, its components in row-major
order, named as the Well's reader names them: ``pressure``; ``velocity_x``, ``velocity_y``;
``stress_xx``, ``stress_xy``, ``stress_yx``, ``stress_yy``. The channels are ordered by rank
(``t0_fields``, then ``t1_fields``, then ``t2_fields``), within a rank by the group's
``field_names``, within a field by component. Fields constant in time (``time_varying`` false,
e.g. a medium's density) are kept apart from the trajectories, as ``constant_fields``.

:func:`load_well` returns the file as stored; :func:`well_trajectories` gives jaxsolve's
trajectory layout ``(n_traj, n_t, C, *spatial)`` with the channel names and coordinates;
:func:`well_dataset` is a lazy dataset of the windows of ``history + horizon`` frames that
:func:`jaxsolve.train.make_rollout_loss` trains on, read from disk by window index (for
:class:`jaxsolve.data.BatchIterator` and data larger than memory).
"""

from __future__ import annotations

import itertools
import os
from typing import NamedTuple

import numpy as np

from .._core import check_int
from ._files import as_indices, checked_path, optional, read_rows, sample_slice, subsample

TENSOR_GROUPS = ("t0_fields", "t1_fields", "t2_fields")


def _open(path):
    h5py = optional("h5py", "Reading a Well HDF5 file")
    path = checked_path(path)
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"path={path!r} is not an HDF5 file ({err}).") from err


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _names(value) -> list[str]:
    """An attribute holding names (a string, or an array of bytes or str) as a list of str."""
    if isinstance(value, str | bytes):
        return [_text(value)]
    return [_text(v) for v in np.atleast_1d(np.asarray(value)).tolist()]


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.dtype.kind in "OSU":
        return _names(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _flag(obj, name: str, default: bool = True) -> bool:
    return bool(obj.attrs.get(name, default))


class _Field(NamedTuple):
    """One stored field and where its channels go."""

    name: str
    rank: int
    sample_varying: bool
    time_varying: bool
    dim_varying: tuple[bool, ...]
    channels: tuple[str, ...]


class _Layout(NamedTuple):
    """What a Well file holds: its fields (by channel order), spatial axes and sizes."""

    spatial_dims: tuple[str, ...]
    sizes: tuple[int, ...]
    n_trajectories: int
    n_steps: int
    fields: tuple[_Field, ...]


def _layout(f) -> _Layout:
    missing = [g for g in ("dimensions", *TENSOR_GROUPS) if g not in f]
    if missing:
        raise ValueError(
            f"path={f.filename!r} is not in the Well's layout: it lacks the groups {missing} "
            f"(it holds {sorted(f.keys())})."
        )
    dims = f["dimensions"]
    spatial = tuple(_names(dims.attrs["spatial_dims"]))
    n_dims = int(f.attrs.get("n_spatial_dims", len(spatial)))
    if len(spatial) != n_dims:
        raise ValueError(
            f"path={f.filename!r}: n_spatial_dims={n_dims} but dimensions lists {list(spatial)}."
        )
    sizes = tuple(int(dims[d].shape[-1]) for d in spatial)
    fields = []
    for rank, group_name in enumerate(TENSOR_GROUPS):
        group = f[group_name]
        components = ["".join(c) for c in itertools.product(spatial, repeat=rank)]
        for name in _names(group.attrs.get("field_names", [])):
            if name not in group:
                raise ValueError(
                    f"path={f.filename!r}: {group_name} lists {name!r}, which it does not hold."
                )
            ds = group[name]
            varying = tuple(bool(v) for v in np.atleast_1d(ds.attrs.get("dim_varying", True)))
            if len(varying) == 1:
                varying = varying * n_dims
            if len(varying) != n_dims:
                raise ValueError(
                    f"path={f.filename!r}: {group_name}/{name} has dim_varying {list(varying)}; "
                    f"it needs one flag per spatial axis {list(spatial)}."
                )
            channels = tuple(f"{name}_{c}" if c else name for c in components)
            fields.append(
                _Field(
                    name,
                    rank,
                    _flag(ds, "sample_varying"),
                    _flag(ds, "time_varying"),
                    varying,
                    channels,
                )
            )
    n_traj = int(f.attrs.get("n_trajectories", 0)) or next(
        (f[TENSOR_GROUPS[fd.rank]][fd.name].shape[0] for fd in fields if fd.sample_varying), 1
    )
    return _Layout(spatial, sizes, n_traj, int(dims["time"].shape[-1]), tuple(fields))


def _select(layout: _Layout, fields, *, constant_allowed: bool = True):
    """The fields and channels chosen by ``fields`` (None: all; else names of fields, e.g.
    ``"velocity"`` for all its components, or of channels, e.g. ``"velocity_x"``), in the
    file's channel order: ``(variable, constant)``, each a list of ``(field, component indices)``."""
    if fields is None:
        chosen = {fd.name: list(range(len(fd.channels))) for fd in layout.fields}
    else:
        if isinstance(fields, str):
            fields = [fields]
        try:
            wanted = [str(w) if isinstance(w, str) else None for w in fields]
        except TypeError as err:
            raise TypeError(
                f"fields must be None, a name or a list of names; got {type(fields).__name__}."
            ) from err
        if not wanted or None in wanted:
            raise TypeError(
                f"fields must be None, a name or a non-empty list of names; got {fields!r}."
            )
        known = {fd.name: fd for fd in layout.fields}
        channel_of = {c: (fd.name, j) for fd in layout.fields for j, c in enumerate(fd.channels)}
        unknown = [w for w in wanted if w not in known and w not in channel_of]
        if unknown:
            raise ValueError(
                f"fields {unknown} are not in the file; its fields are {list(known)} and its "
                f"channels {list(channel_of)}."
            )
        chosen = {}
        for w in wanted:
            if w in known:
                name, comps = w, range(len(known[w].channels))
            else:
                name, comps = channel_of[w][0], [channel_of[w][1]]
            chosen.setdefault(name, set()).update(comps)
    variable, constant = [], []
    for fd in layout.fields:
        if fd.name in chosen:
            (variable if fd.time_varying else constant).append((fd, sorted(chosen[fd.name])))
    if constant and not constant_allowed and fields is not None:
        raise ValueError(
            f"fields {[fd.name for fd, _ in constant]} are constant in time, so they have no "
            "windows; read them with well_trajectories (its constant_fields)."
        )
    return variable, constant


class _Closing:
    """``with`` closes it (``self.close()``)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _WellFile(_Closing):
    """An open Well file, reading chosen fields as ``(n, [t,] C, *spatial)`` arrays."""

    def __init__(self, path, sub):
        self.path = checked_path(path)
        self._grid = subsample("sub", sub)
        self._file = _open(self.path)
        try:
            self.layout = _layout(self._file)
        except BaseException:
            self.close()
            raise
        self.sizes = tuple(len(range(n)[self._grid]) for n in self.layout.sizes)

    def _group(self, fd: _Field):
        return self._file[TENSOR_GROUPS[fd.rank]][fd.name]

    def read(self, fd: _Field, comps, idx, time) -> np.ndarray:
        """Field ``fd``'s components ``comps`` at trajectories ``idx`` (an index array, or one
        int for a single window) and times ``time`` (a slice; ignored for a constant field):
        ``(len(idx), [n_t,] len(comps), *spatial)`` (no leading axis for an int)."""
        ds = self._group(fd)
        single = np.ndim(idx) == 0
        if fd.sample_varying and single:
            where = (int(idx), time) if fd.time_varying else (int(idx),)
            data = ds[where]
        elif fd.sample_varying:
            data = read_rows(ds, idx)
            if fd.time_varying:
                data = data[:, time]
        else:
            data = ds[time] if fd.time_varying else ds[()]
        data = np.asarray(data)
        lead = int(not single and fd.sample_varying) + int(fd.time_varying)
        # The spatial axes: subsampled where stored, broadcast where not.
        spatial_where = tuple(self._grid for varying in fd.dim_varying if varying)
        data = data[(slice(None),) * lead + spatial_where]
        for axis, varying in enumerate(fd.dim_varying):
            if not varying:
                data = np.expand_dims(data, lead + axis)
        n_dims = len(self.sizes)
        stored = tuple(n if v else 1 for n, v in zip(self.sizes, fd.dim_varying, strict=True))
        if data.shape[lead:] != stored + (n_dims,) * fd.rank:
            raise ValueError(
                f"{self.path!r}: {TENSOR_GROUPS[fd.rank]}/{fd.name} has shape {ds.shape}, which "
                f"does not match its attributes and the dimensions' sizes {self.layout.sizes} "
                f"(rank {fd.rank}, dim_varying {list(fd.dim_varying)})."
            )
        data = data.reshape(*data.shape[: lead + n_dims], -1)[..., comps]  # components last
        data = np.moveaxis(data, -1, lead)  # ([n,] [t,] C, *spatial)
        if not single and not fd.sample_varying:
            data = data[None]
        shape = data.shape[: data.ndim - n_dims] + self.sizes
        if not single:
            shape = (len(idx), *shape[1:])
        data = np.broadcast_to(data, shape)
        return np.ascontiguousarray(data)

    def coordinates(self, time: slice, idx=None) -> dict:
        """``time`` and the spatial coordinates (by the file's names), subsampled; a coordinate
        that varies by trajectory is given at ``idx`` (all trajectories for None)."""
        dims = self._file["dimensions"]
        out = {}
        for name in ("time", *self.layout.spatial_dims):
            ds = dims[name]
            value = np.asarray(ds[()])
            if ds.ndim == 2 and idx is not None:
                value = value[idx]
            out[name] = value[..., time if name == "time" else self._grid]
        return out

    def close(self):
        self._file.close()


def _concat(parts, axis):
    return np.concatenate(parts, axis=axis) if parts else None


class WellTrajectories(NamedTuple):
    """A Well file in jaxsolve's trajectory layout (:func:`well_trajectories`).

    Attributes:
        fields: the time-varying fields, ``(n_traj, n_t, C, *spatial)``.
        channels: the names of the ``C`` channels, in order.
        coordinates: ``time`` and the spatial coordinates by the file's names (``x``, ``y``,
            ...), subsampled as the fields are.
        constant_fields: the fields constant in time, ``(n_traj, C_const, *spatial)``, or None
            when the selection holds none.
        constant_channels: their names.
    """

    fields: np.ndarray | None
    channels: tuple[str, ...]
    coordinates: dict
    constant_fields: np.ndarray | None
    constant_channels: tuple[str, ...]


def _channel_names(chosen) -> tuple[str, ...]:
    return tuple(fd.channels[j] for fd, comps in chosen for j in comps)


def well_trajectories(
    path: str | os.PathLike,
    fields=None,
    *,
    samples=None,
    sub: int = 1,
    sub_t: int = 1,
) -> WellTrajectories:
    """A Well file's trajectories ``(n_traj, n_t, C, *spatial)``, with the channel names (in the
    order of the module docstring) and the coordinates.

    Args:
        path: a Well HDF5 file.
        fields: None (every field), or the names of fields (``"velocity"``: all its components)
            or of channels (``"velocity_x"``), in any order (the channels keep the file's order).
        samples: None (all), a count ``k`` (the first ``k``) or a slice of the trajectories.
        sub: keep every ``sub``-th grid point on each spatial axis.
        sub_t: keep every ``sub_t``-th time step.
    """
    time = subsample("sub_t", sub_t)
    with _WellFile(path, sub) as wf:
        variable, constant = _select(wf.layout, fields)
        rows = sample_slice(samples, wf.layout.n_trajectories)
        idx = np.arange(rows.start, rows.stop, rows.step)
        return WellTrajectories(
            fields=_concat([wf.read(fd, c, idx, time) for fd, c in variable], axis=2),
            channels=_channel_names(variable),
            coordinates=wf.coordinates(time, idx),
            constant_fields=_concat([wf.read(fd, c, idx, time) for fd, c in constant], axis=1),
            constant_channels=_channel_names(constant),
        )


class _Windows(_Closing):
    """Lazy windows of ``frames`` time steps of a Well file's time-varying fields."""

    def __init__(self, path, history, horizon, fields, stride, sub, sub_t):
        history = check_int("history", history)
        horizon = check_int("horizon", horizon)
        self.stride = check_int("stride", stride)
        self.sub_t = check_int("sub_t", sub_t)
        self.frames = history + horizon
        self._file = _WellFile(path, sub)
        try:
            layout = self._file.layout
            self.chosen, _ = _select(layout, fields, constant_allowed=False)
            if not self.chosen:
                raise ValueError(f"fields={fields!r} selects no time-varying field.")
            span = (self.frames - 1) * self.sub_t + 1  # time steps one window covers
            if span > layout.n_steps:
                raise ValueError(
                    f"history + horizon = {self.frames} frames every sub_t={self.sub_t} steps "
                    f"span {span} time steps; the file has {layout.n_steps}."
                )
            self.span = span
            self.per_trajectory = (layout.n_steps - span) // self.stride + 1
            self._len = layout.n_trajectories * self.per_trajectory
        except BaseException:
            self._file.close()
            raise
        self.path = self._file.path
        self.channels = _channel_names(self.chosen)

    def __len__(self):
        return self._len

    def window(self, i: int) -> tuple[int, int]:
        """``(trajectory, first time step)`` of window ``i``."""
        trajectory, j = divmod(int(i), self.per_trajectory)
        return trajectory, j * self.stride

    def __getitem__(self, indices) -> np.ndarray:
        single = np.ndim(indices) == 0
        idx = as_indices(np.atleast_1d(indices), self._len)
        out = []
        for i in idx:
            trajectory, start = self.window(i)
            time = slice(start, start + self.span, self.sub_t)
            parts = [self._file.read(fd, c, trajectory, time) for fd, c in self.chosen]
            out.append(np.concatenate(parts, axis=1))
        out = np.stack(out)
        return out[0] if single else out

    def coordinates(self) -> dict:
        """The spatial coordinates (subsampled) and ``time`` of the whole file."""
        return self._file.coordinates(subsample("sub_t", self.sub_t))

    def close(self):
        self._file.close()


def well_dataset(
    path: str | os.PathLike,
    history: int,
    horizon: int,
    *,
    fields=None,
    stride: int = 1,
    sub: int = 1,
    sub_t: int = 1,
) -> _Windows:
    """A lazy dataset of the windows of a Well file's trajectories, read from disk by index.

    Window ``i`` is trajectory ``i // m`` from time step ``(i % m) * stride``: ``history +
    horizon`` frames ``sub_t`` steps apart, ``(history + horizon, C, *spatial)`` — a trajectory
    sample for :func:`jaxsolve.train.make_rollout_loss` with the same ``history`` and
    ``horizon`` (the Well's ``n_steps_input`` / ``n_steps_output``). ``m`` windows fit in each
    trajectory of ``n_t`` steps: every start whose last frame is inside it, ``stride`` apart.
    ``ds[indices]`` reads those windows (one hyperslab per field and window) as
    ``(len(indices), history + horizon, C, *spatial)``; ``ds.channels`` names the channels,
    ``ds.window(i)`` gives ``(trajectory, first step)``, ``ds.coordinates()`` the coordinates.

    Args:
        path: a Well HDF5 file.
        history, horizon: input and target frames per window.
        fields: as in :func:`well_trajectories`, time-varying fields only.
        stride: time steps between the starts of successive windows.
        sub: keep every ``sub``-th grid point on each spatial axis.
        sub_t: time steps between the frames of a window.
    """
    return _Windows(path, history, horizon, fields, stride, sub, sub_t)


def load_well(path: str | os.PathLike, *, samples=None) -> dict:
    """A Well file as stored: ``attrs`` (the root's attributes), ``dimensions``, ``scalars``,
    ``t0_fields``, ``t1_fields``, ``t2_fields`` (arrays by name, with the axes the file stores;
    sample-varying ones cut to ``samples``) and ``boundary_conditions`` (per condition its
    attributes, ``mask`` and ``values`` when stored).

    Args:
        path: a Well HDF5 file.
        samples: None (all), a count ``k`` (the first ``k``) or a slice of the trajectories.
    """
    f = _open(path)
    with f:
        layout = _layout(f)
        rows = sample_slice(samples, layout.n_trajectories)

        def arrays(group_name):
            group = f.get(group_name)
            if group is None:
                return {}
            out = {}
            for name, ds in group.items():
                if not hasattr(ds, "shape"):
                    continue
                sampled = _flag(ds, "sample_varying", False) and ds.ndim >= 1
                out[name] = np.asarray(ds[rows] if sampled else ds[()])
            return out

        conditions = {}
        for name, group in f.get("boundary_conditions", {}).items():
            entry = {k: _attr_value(v) for k, v in group.attrs.items()}
            entry.update({k: np.asarray(v[()]) for k, v in group.items() if hasattr(v, "shape")})
            conditions[name] = entry
        out = {"attrs": {k: _attr_value(v) for k, v in f.attrs.items()}}
        for group_name in ("dimensions", "scalars", *TENSOR_GROUPS):
            out[group_name] = arrays(group_name)
        out["boundary_conditions"] = conditions
        return out
