r"""Data parallelism through :mod:`jax.sharding`: shard the sample axis, replicate the rest.

The same code runs on one CPU, on the eight devices of a TPU host or GPU node, and on a multi-host
pod: a :class:`jax.sharding.Mesh` names the devices, a :class:`~jax.sharding.NamedSharding` says
how an array is laid out over them, and XLA's SPMD partitioner (GSPMD, from "GSPMD: General and
Scalable Parallelization for ML Computation Graphs") splits every computation accordingly and
inserts the collectives it needs — for data-parallel training, the all-reduce that sums the
per-device gradient contributions.

The helpers work both on concrete arrays (``jax.device_put``) and inside ``jit`` (a sharding
constraint on the traced value). Meshes whose axes are ``AxisType.Auto`` (what :func:`data_mesh`
builds, and ``jax.sharding.Mesh``'s default) get ``with_sharding_constraint``; meshes with
``Explicit`` axes (``jax.make_mesh``'s default) get ``jax.sharding.reshard``.

Without accelerators, ``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (set before JAX is
imported) gives eight CPU devices to try all of this on.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import PyTree

from ._errors import check_int, is_concrete


def data_mesh(n_devices: int | None = None, axis: str = "data", *, devices=None) -> Mesh:
    """A one-axis mesh over the first ``n_devices`` devices (default: all of them).

    Args:
        n_devices: how many devices to use; default ``len(devices)``.
        axis: the name of the mesh axis (what ``data_axis=`` refers to elsewhere).
        devices: the devices to choose from (default :func:`jax.devices`, i.e. every device of
            every host in a multi-host job).

    Returns:
        a :class:`jax.sharding.Mesh` with one ``Auto`` axis named ``axis`` (GSPMD propagates
        shardings through the computation from the constraints :func:`shard_batch` and
        :func:`replicate` put on it).
    """
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(axis, str) or not axis:
        raise ValueError(f"axis must be a non-empty string; got {axis!r}.")
    if n_devices is None:
        n_devices = len(devices)
    n_devices = check_int("n_devices", n_devices, minimum=None)
    if not 1 <= n_devices <= len(devices):
        raise ValueError(
            f"n_devices must lie in [1, {len(devices)}] (the devices available); got {n_devices}."
        )
    return Mesh(np.asarray(devices[:n_devices]), (axis,), axis_types=(jax.sharding.AxisType.Auto,))


def axis_size(mesh: Mesh, axis: str) -> int:
    """The number of devices along ``axis`` of ``mesh``.

    Args:
        mesh: a :class:`jax.sharding.Mesh` (``TypeError`` otherwise).
        axis: one of its axis names (``ValueError`` otherwise).

    Returns:
        the size of that axis.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    if axis not in mesh.axis_names:
        raise ValueError(
            f"data_axis {axis!r} is not an axis of the mesh; its axes are {tuple(mesh.axis_names)}."
        )
    return int(mesh.shape[axis])


def _explicit(mesh: Mesh) -> bool:
    types = getattr(mesh, "axis_types", None) or ()
    return any(t == jax.sharding.AxisType.Explicit for t in types)


def _place(leaf, sharding: NamedSharding):
    if is_concrete(leaf):
        return jax.device_put(leaf, sharding)
    if _explicit(sharding.mesh):
        return jax.sharding.reshard(leaf, sharding)
    return jax.lax.with_sharding_constraint(leaf, sharding)


def _is_array(leaf) -> bool:
    # Tracers are jax.Array instances too.
    return isinstance(leaf, jax.Array | np.ndarray)


def check_shardable(tree: PyTree, mesh: Mesh, axis: str = "data", *, name: str = "batch") -> int:
    """Check that every array leaf of ``tree`` can be split along its leading axis over ``axis``.

    Args:
        tree: arrays, tracers or :class:`jax.ShapeDtypeStruct` (other leaves are skipped).
        mesh: the device mesh.
        axis: the mesh axis the leading (sample) axis is split over.
        name: what ``tree`` is, for the error messages.

    Returns:
        the number of devices on ``axis``; raises ``ValueError`` naming the offending leaf when
        one is a scalar or its leading axis does not divide over them.
    """
    size = axis_size(mesh, axis)
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        if not (_is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)):
            continue
        where = f"{name}{jax.tree_util.keystr(path)}"
        shape = tuple(leaf.shape)
        if not shape:
            raise ValueError(
                f"{where} is a scalar; sharding over {axis!r} needs a leading sample axis."
            )
        if shape[0] % size:
            raise ValueError(
                f"{where} has {shape[0]} samples on its leading axis, which does not divide over "
                f"the {size} devices of mesh axis {axis!r}; use a batch size that is a multiple "
                f"of {size}."
            )
    return size


def shard_batch(tree: PyTree, mesh: Mesh, axis: str = "data") -> PyTree:
    """Split the leading (sample) axis of every array in ``tree`` over mesh axis ``axis``.

    Trailing axes, and every other mesh axis, are replicated. Works on concrete arrays
    (``device_put``) and on traced values inside ``jit`` (a sharding constraint, which tells the
    SPMD partitioner how to split the computation that produces and consumes them).

    Args:
        tree: a pytree; the leading axis of every array must be divisible by the number of
            devices along ``axis`` (``ValueError`` otherwise).
        mesh: the device mesh.
        axis: the mesh axis to split over.

    Returns:
        ``tree`` with its arrays sharded; non-array leaves unchanged.
    """
    check_shardable(tree, mesh, axis)
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    return jax.tree_util.tree_map(lambda a: _place(a, sharding) if _is_array(a) else a, tree)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """Put a full copy of every array in ``tree`` on every device of ``mesh``.

    For the parameters, optimiser states and other values every device needs whole (concrete
    arrays are copied with ``device_put``; traced ones get a replicated sharding constraint).

    Args:
        tree: a pytree.
        mesh: the device mesh.

    Returns:
        ``tree`` with its arrays replicated; non-array leaves (``None``, Python scalars,
        functions) unchanged.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh; got {type(mesh).__name__}.")
    sharding = NamedSharding(mesh, PartitionSpec())
    return jax.tree_util.tree_map(lambda a: _place(a, sharding) if _is_array(a) else a, tree)


def to_host(tree: PyTree) -> PyTree:
    """Copy every JAX array in ``tree`` to a NumPy array holding its full (global) value.

    A replicated array is read from one local copy; an array sharded over devices of several
    hosts is gathered from all processes first (``multihost_utils.process_allgather``), so every
    process ends up with the same full value, e.g. to write a checkpoint.

    Args:
        tree: a pytree.

    Returns:
        ``tree`` with NumPy arrays in place of its JAX arrays; PRNG key arrays and non-array
        leaves unchanged.
    """

    def one(a):
        if not isinstance(a, jax.Array) or jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
            return a
        if a.is_fully_addressable:
            return np.asarray(a)
        if a.is_fully_replicated:
            return np.asarray(a.addressable_data(0))
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(a, tiled=True))

    return jax.tree_util.tree_map(one, tree)


__all__ = ["axis_size", "check_shardable", "data_mesh", "replicate", "shard_batch", "to_host"]
