"""The Well's HDF5 files, written here in the published layout (the Well's data-format
specification): loaded as stored, as ``(n_traj, n_t, C, *spatial)`` trajectories with their
channel names, and as lazy windows read from disk."""

import numpy as np
import pytest

from jaxsolve import data
from jaxsolve.data._well import load_well, well_dataset, well_trajectories

h5py = pytest.importorskip("h5py")

N, T, X, Y = 3, 7, 8, 6


def _fields(rng):
    return {
        "pressure": rng.normal(size=(N, T, X, Y)),  # varies in everything
        "density": rng.normal(size=(N, X, Y)),  # constant in time
        "forcing": rng.normal(size=(T, X, Y)),  # the same for every trajectory
        "profile": rng.normal(size=(N, T, X)),  # constant along y (dim_varying [True, False])
        "velocity": rng.normal(size=(N, T, X, Y, 2)),
        "stress": rng.normal(size=(N, T, X, Y, 2, 2)),
    }


def _write_well(path, fields):
    """A 2-D file in the Well's layout, strings stored as h5py stores Python str lists."""
    x, y = np.linspace(0, 1, X), np.linspace(-1, 1, Y)
    t = np.linspace(0, 0.6, T)
    attrs = {  # field -> (group, sample_varying, time_varying, dim_varying)
        "pressure": ("t0_fields", True, True, [True, True]),
        "density": ("t0_fields", True, False, [True, True]),
        "forcing": ("t0_fields", False, True, [True, True]),
        "profile": ("t0_fields", True, True, [True, False]),
        "velocity": ("t1_fields", True, True, [True, True]),
        "stress": ("t2_fields", True, True, [True, True]),
    }
    with h5py.File(path, "w") as f:
        f.attrs["dataset_name"] = "tiny_flow"
        f.attrs["grid_type"] = "cartesian"
        f.attrs["n_spatial_dims"] = 2
        f.attrs["n_trajectories"] = N
        f.attrs["simulation_parameters"] = ["Re"]
        f.attrs["Re"] = 100.0
        dims = f.create_group("dimensions")
        dims.attrs["spatial_dims"] = ["x", "y"]
        for name, value in (("time", t), ("x", x), ("y", y)):
            dims[name] = value.astype(np.float32)
            dims[name].attrs["sample_varying"] = False
        bc = f.create_group("boundary_conditions").create_group("x_periodic")
        bc.attrs["associated_dims"] = ["x"]
        bc.attrs["bc_type"] = "PERIODIC"
        bc["mask"] = np.r_[True, np.zeros(X - 2, bool), True]
        scalars = f.create_group("scalars")
        scalars.attrs["field_names"] = ["Re"]
        scalars["Re"] = np.array(100.0)
        scalars["Re"].attrs.update(sample_varying=False, time_varying=False)
        for group in ("t0_fields", "t1_fields", "t2_fields"):
            names = [k for k, v in attrs.items() if v[0] == group]
            f.create_group(group).attrs["field_names"] = names
        for name, (group, sv, tv, dv) in attrs.items():
            ds = f[group].create_dataset(name, data=fields[name].astype(np.float32))
            ds.attrs.update(sample_varying=sv, time_varying=tv, dim_varying=dv)
    return {"time": t, "x": x, "y": y}


def _expected(fields):
    """The trajectories built from the published semantics alone: broadcast what is not
    stored, components in row-major order after the rank-0 fields."""
    f = {k: v.astype(np.float32) for k, v in fields.items()}
    channels = [
        f["pressure"],
        np.broadcast_to(f["forcing"], (N, T, X, Y)),
        np.broadcast_to(f["profile"][..., None], (N, T, X, Y)),
        f["velocity"][..., 0],
        f["velocity"][..., 1],
        f["stress"][..., 0, 0],
        f["stress"][..., 0, 1],
        f["stress"][..., 1, 0],
        f["stress"][..., 1, 1],
    ]
    names = ["pressure", "forcing", "profile", "velocity_x", "velocity_y"]
    names += ["stress_xx", "stress_xy", "stress_yx", "stress_yy"]
    return np.stack(channels, axis=2), tuple(names)


def test_well_file_loads_as_stored_and_as_trajectories(tmp_path):
    fields = _fields(np.random.default_rng(0))
    path = tmp_path / "tiny_flow.hdf5"
    coords = _write_well(path, fields)
    want, names = _expected(fields)

    stored = load_well(path, samples=2)
    assert stored["attrs"]["dataset_name"] == "tiny_flow"
    assert stored["attrs"]["simulation_parameters"] == ["Re"]
    np.testing.assert_array_equal(
        stored["t1_fields"]["velocity"], fields["velocity"][:2].astype(np.float32)
    )
    assert stored["t0_fields"]["forcing"].shape == (T, X, Y)  # not sample-varying: whole
    assert stored["boundary_conditions"]["x_periodic"]["bc_type"] == "PERIODIC"
    assert stored["boundary_conditions"]["x_periodic"]["mask"].sum() == 2

    got = well_trajectories(path)
    assert got.channels == names
    np.testing.assert_array_equal(got.fields, want)
    assert got.constant_channels == ("density",)
    np.testing.assert_array_equal(
        got.constant_fields, fields["density"][:, None].astype(np.float32)
    )
    for k, v in coords.items():
        np.testing.assert_allclose(got.coordinates[k], v, rtol=1e-6)

    # A selection keeps the file's channel order; subsampling is PDEBench's [::sub].
    part = well_trajectories(
        path, ["stress_yx", "velocity", "profile"], samples=slice(1, None), sub=2, sub_t=3
    )
    assert part.channels == ("profile", "velocity_x", "velocity_y", "stress_yx")
    np.testing.assert_array_equal(part.fields, want[1:, ::3][:, :, [2, 3, 4, 7], ::2, ::2])
    assert part.constant_fields is None and part.constant_channels == ()
    np.testing.assert_allclose(part.coordinates["y"], coords["y"][::2], rtol=1e-6)
    np.testing.assert_allclose(part.coordinates["time"], coords["time"][::3], rtol=1e-6)


def test_well_windows_read_from_disk_by_index(tmp_path):
    fields = _fields(np.random.default_rng(1))
    path = tmp_path / "tiny_flow.hdf5"
    _write_well(path, fields)
    want, names = _expected(fields)
    # 3 frames, 2 steps apart, so a window spans 5 of the 7 steps; starts 0 and 2.
    with well_dataset(path, history=2, horizon=1, stride=2, sub_t=2) as ds:
        assert len(ds) == N * 2 and ds.channels == names
        assert [ds.window(i) for i in range(4)] == [(0, 0), (0, 2), (1, 0), (1, 2)]
        window3, window0 = want[1, 2:7:2], want[0, 0:5:2]  # (frames, C, X, Y)
        np.testing.assert_array_equal(ds[[3, 0, 3]], np.stack([window3, window0, window3]))
        np.testing.assert_array_equal(ds[5], want[2, 2:7:2])
        batches = data.BatchIterator(ds, 2, shuffle=False, prefetch=0)
        np.testing.assert_array_equal(batches.batch(2)[0], want[2, 0:5:2])  # window 4
    with well_dataset(path, 3, 2, fields="velocity_y", sub=3) as ds:
        assert len(ds) == N * 3 and ds.channels == ("velocity_y",)
        np.testing.assert_array_equal(ds[[7]], want[2:3, 1:6, 4:5, ::3, ::3])


def test_well_bad_names_and_arguments_are_named(tmp_path):
    path = tmp_path / "tiny_flow.hdf5"
    _write_well(path, _fields(np.random.default_rng(2)))
    with pytest.raises(ValueError, match=r"fields \['nope', 'velocity_z'\] are not in the file"):
        well_trajectories(path, ["pressure", "nope", "velocity_z"])
    with pytest.raises(TypeError, match="fields must be"):
        well_trajectories(path, 3)
    with pytest.raises(ValueError, match=r"fields \['density'\] are constant in time"):
        well_dataset(path, 1, 1, fields=["density", "pressure"])
    with pytest.raises(ValueError, match="history \\+ horizon = 8 frames"):
        well_dataset(path, 5, 3)
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        well_dataset(path, 1, 0)
    with pytest.raises(ValueError, match="samples must be <= 3"):
        well_trajectories(path, samples=4)
    with pytest.raises(FileNotFoundError, match="path="):
        load_well(tmp_path / "missing.hdf5")
    bad = _fields(np.random.default_rng(3))
    bad["velocity"] = bad["velocity"][..., :1]  # one component of a 2-D vector
    _write_well(tmp_path / "bad.hdf5", bad)
    with pytest.raises(ValueError, match=r"t1_fields/velocity has shape .* does not match"):
        well_trajectories(tmp_path / "bad.hdf5", "velocity")
    other = tmp_path / "pdebench.h5"
    with h5py.File(other, "w") as f:
        f["tensor"] = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="not in the Well's layout"):
        well_trajectories(other)
