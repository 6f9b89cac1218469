"""Loaders of the FNO paper's .mat files and PDEBench's HDF5 files, written here in the published
layouts, and streaming them into ``train.fit``."""

import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import data, train

h5py = pytest.importorskip("h5py")
sio = pytest.importorskip("scipy.io")

_MATLAB_73_HEADER = (
    b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Sun Dec  6 2026 HDF5 schema 1.00 ."
)


def _write_v73(path, arrays):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 behind a 512-byte header, every array
    column-major (so HDF5 sees the transpose), with its MATLAB class."""
    with h5py.File(path, "w", userblock_size=512) as f:
        for name, a in arrays.items():
            f.create_dataset(name, data=np.asarray(a).T)
            f[name].attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as f:
        f.write(_MATLAB_73_HEADER.ljust(116) + b"\x00" * 8 + b"\x00\x02" + b"IM")


def _fno_files(tmp_path):
    rng = np.random.default_rng(0)
    n, s, t = 4, 9, 5
    files = {
        "burgers": {"a": rng.normal(size=(n, 16)), "u": rng.normal(size=(n, 16))},
        "darcy": {"coeff": rng.normal(size=(n, s, s)), "sol": rng.normal(size=(n, s, s))},
        "ns": {
            "a": rng.normal(size=(n, 8, 8)),
            "u": rng.normal(size=(n, 8, 8, t)),
            "t": np.arange(1.0, t + 1)[None],
        },
    }
    paths = {}
    for name, arrays in files.items():
        v5, v73 = tmp_path / f"{name}_v5.mat", tmp_path / f"{name}_v73.mat"
        sio.savemat(v5, arrays)
        _write_v73(v73, arrays)
        paths[name] = (v5, v73)
    return files, paths


def test_mat_v5_and_v73_load_to_the_published_arrays(tmp_path):
    files, paths = _fno_files(tmp_path)
    for name, arrays in files.items():
        v5, v73 = paths[name]
        with h5py.File(v73, "r") as f:  # the file really holds the transposes
            assert all(f[k].shape == arrays[k].shape[::-1] for k in arrays)
        for path in (v5, v73):
            loaded = data.load_mat(path)
            assert sorted(loaded) == sorted(arrays)
            for key, a in arrays.items():
                np.testing.assert_array_equal(loaded[key], a, err_msg=f"{path.name}:{key}")
    assert list(data.load_mat(paths["ns"][1], keys="u")) == ["u"]


def test_fno_pairs_in_jaxsolve_layout(tmp_path):
    files, paths = _fno_files(tmp_path)
    b, d, ns = files["burgers"], files["darcy"], files["ns"]
    for v in (0, 1):  # the same from both formats
        a, u = data.fno_burgers_pairs(paths["burgers"][v], sub=2, samples=3)
        np.testing.assert_array_equal(a, b["a"][:3, None, ::2])
        np.testing.assert_array_equal(u, b["u"][:3, None, ::2])
        a, u = data.fno_darcy_pairs(paths["darcy"][v], sub=2, samples=slice(-2, None))
        assert a.shape == (2, 1, 5, 5)  # (9 - 1) / 2 + 1 nodes, the scripts' s
        np.testing.assert_array_equal(a, d["coeff"][-2:, None, ::2, ::2])
        np.testing.assert_array_equal(u, d["sol"][-2:, None, ::2, ::2])
        w = data.fno_navier_stokes(paths["ns"][v], sub=2)
        assert w.shape == (4, 6, 1, 4, 4)  # frame j at time j: w0, then u's 5 frames
        np.testing.assert_array_equal(w[:, 0, 0], ns["a"][:, ::2, ::2])
        for j in range(1, 6):
            np.testing.assert_array_equal(w[:, j, 0], ns["u"][:, ::2, ::2, j - 1])
        u_only = data.fno_navier_stokes(paths["ns"][v], include_initial=False)
        np.testing.assert_array_equal(u_only, np.moveaxis(ns["u"], -1, 1)[:, :, None])


def _pdebench_files(tmp_path):
    rng = np.random.default_rng(1)
    single = tmp_path / "1D_Advection_Sols_beta0.1.hdf5"
    tensor = rng.normal(size=(5, 7, 12)).astype(np.float32)  # (N, T, X)
    x, t = np.linspace(0, 1, 12), np.linspace(0, 2, 8)  # PDEBench stores T + 1 times here
    with h5py.File(single, "w") as f:
        f["tensor"], f["x-coordinate"], f["t-coordinate"] = tensor, x, t
    cfd = tmp_path / "1D_CFD_Rand.hdf5"
    fields = {k: rng.normal(size=(5, 7, 12)) for k in ("density", "pressure", "Vx")}
    with h5py.File(cfd, "w") as f:
        for k, v in fields.items():
            f[k] = v
        f["x-coordinate"], f["t-coordinate"] = x, t[:-1]
    seeds = tmp_path / "2D_diff-react_NA_NA.h5"
    per_seed = rng.normal(size=(3, 6, 8, 10, 2))  # seeds of (T, X, Y, C)
    grid = {"x": np.linspace(-1, 1, 8), "y": np.linspace(-1, 1, 10), "t": np.linspace(0, 5, 6)}
    with h5py.File(seeds, "w") as f:
        for i, d in enumerate(per_seed):
            g = f.create_group(f"{i:04d}")
            g["data"] = d
            for k, v in grid.items():
                g[f"grid/{k}"] = v
    return (single, tensor, x, t), (cfd, fields), (seeds, per_seed, grid)


def test_pdebench_layouts_load_as_stored_and_as_trajectories(tmp_path):
    (single, tensor, x, t), (cfd, fields), (seeds, per_seed, grid) = _pdebench_files(tmp_path)
    stored = data.load_pdebench(single, samples=3)
    np.testing.assert_array_equal(stored["tensor"], tensor[:3])
    np.testing.assert_array_equal(stored["x-coordinate"], x)
    np.testing.assert_array_equal(stored["t-coordinate"], t)
    traj, coords = data.pdebench_trajectories(single, sub=2, sub_t=3)
    np.testing.assert_array_equal(traj, tensor[:, ::3, None, ::2])
    np.testing.assert_array_equal(coords["x"], x[::2])

    traj, _ = data.pdebench_trajectories(cfd)  # channels in PDEBench's order
    expect = np.stack([fields["density"], fields["pressure"], fields["Vx"]], axis=2)
    np.testing.assert_array_equal(traj, expect)

    stored = data.load_pdebench(seeds)
    np.testing.assert_array_equal(stored["data"], per_seed)
    assert list(stored["seeds"]) == ["0000", "0001", "0002"]
    for k, v in grid.items():
        np.testing.assert_array_equal(stored[k], v)
    traj, coords = data.pdebench_trajectories(seeds, samples=slice(1, None), sub=2)
    np.testing.assert_array_equal(traj, np.moveaxis(per_seed[1:], -1, 2)[..., ::2, ::2])
    np.testing.assert_array_equal(coords["y"], grid["y"][::2])
    with data.pdebench_dataset(seeds) as lazy:  # read by index, in the order asked
        assert len(lazy) == 3
        np.testing.assert_array_equal(lazy[[2, 0, 2]], np.moveaxis(per_seed[[2, 0, 2]], -1, 2))
        np.testing.assert_array_equal(lazy[1], np.moveaxis(per_seed[1], -1, 1))


def test_h5dataset_reads_rows_by_index(tmp_path):
    (single, tensor, _, _), _, _ = _pdebench_files(tmp_path)
    files, paths = _fno_files(tmp_path)
    with data.H5Dataset(single, "tensor", transform=lambda b: b[:, :, None]) as ds:
        assert len(ds) == 5
        np.testing.assert_array_equal(ds[np.array([4, 1, 1, -1])], tensor[[4, 1, 1, -1], :, None])
    u = files["ns"]["u"]
    ds = data.H5Dataset(paths["ns"][1], "u", matlab=True)  # v7.3: samples are MATLAB's axis 0
    assert len(ds) == 4
    np.testing.assert_array_equal(ds[[3, 0]], u[[3, 0]])
    ds = data.H5Dataset(paths["ns"][1], "u", matlab=True, sample_axis=-1)  # by time frame
    np.testing.assert_array_equal(ds[[1]], np.moveaxis(u, -1, 0)[[1]])


def test_bad_paths_keys_and_arguments_are_named(tmp_path, monkeypatch):
    _, paths = _fno_files(tmp_path)
    (single, *_), _, _ = _pdebench_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="path="):
        data.load_mat(tmp_path / "missing.mat")
    with pytest.raises(FileNotFoundError, match="path="):
        data.load_pdebench(tmp_path / "missing.h5")
    for path in paths["burgers"]:
        with pytest.raises(ValueError, match=r"keys \['w'\] are not in .*holds \['a', 'u'\]"):
            data.load_mat(path, keys=["a", "w"])
        with pytest.raises(ValueError, match="samples must be <= 4"):
            data.fno_burgers_pairs(path, samples=5)
        with pytest.raises(ValueError, match="sub must be >= 1"):
            data.fno_burgers_pairs(path, sub=0)
    with pytest.raises(ValueError, match=r"keys .*'coeff'"):
        data.fno_darcy_pairs(paths["burgers"][0])
    with pytest.raises(ValueError, match="name='nope' is not a dataset"):
        data.H5Dataset(single, "nope")
    junk = tmp_path / "junk.mat"
    junk.write_text("not a .mat file")
    with pytest.raises(ValueError, match=r"not a MATLAB \.mat file"):
        data.load_mat(junk)
    with pytest.raises(ValueError, match="neither PDEBench layout"):
        data.load_pdebench(paths["burgers"][1])
    with pytest.raises(ValueError, match="batch_size must be <= 5"):
        data.BatchIterator(np.zeros((5, 2)), 6, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="same number of samples"):
        data.BatchIterator((np.zeros((5, 2)), np.zeros(4)), 2, shuffle=False)
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
    with pytest.raises(ImportError, match=r"jaxsolve\[data\]"):
        data.load_mat(paths["burgers"][1])


def _regression(n=48):
    x = np.random.default_rng(2).normal(size=(n, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + 0.1
    model = eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(1))

    def loss(m, batch, k):
        xb, yb = batch
        return jnp.mean((jax.vmap(m)(xb)[:, 0] - yb) ** 2)

    return model, x, y, loss


def _same_weights(got, want):
    jax.tree_util.tree_map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
        eqx.filter(got.model, eqx.is_array),
        eqx.filter(want.model, eqx.is_array),
    )


def _streaming_setup(tmp_path):
    model, x, y, loss = _regression()
    path = tmp_path / "xy.h5"
    with h5py.File(path, "w") as f:
        f["x"], f["y"] = x, y
    key = jax.random.PRNGKey(3)
    data_key = jax.random.split(key)[0]  # fit's key of the minibatches
    kw = dict(optimizer=optax.sgd(5e-2), key=key, progress=False)
    memory = train.fit(loss, model, (x, y), batch_size=8, num_steps=20, **kw)
    assert not np.allclose(memory.model.weight, model.weight)  # it trained
    disk = (data.H5Dataset(path, "x"), data.H5Dataset(path, "y"))
    return model, x, y, loss, data_key, kw, memory, disk


def test_streaming_fit_equals_in_memory_fit(tmp_path):
    """The same batches read from disk (h5py, a prefetch thread) or from a plain generator, and
    taken from memory, give the same weights to round-off."""
    model, x, y, loss, data_key, kw, memory, disk = _streaming_setup(tmp_path)
    streamed = data.BatchIterator(disk, 8, key=data_key, prefetch=3)
    stream = train.fit(loss, model, streamed, num_steps=20, steps_per_call=10, **kw)
    assert stream.step == 20 and len(stream.history["loss"]) == 2

    source = data.BatchIterator((x, y), 8, key=data_key, prefetch=0)
    generator = (source.batch(s) for s in range(10**6))  # a plain iterator of the same batches
    plain = train.fit(loss, model, generator, num_steps=20, steps_per_call=10, **kw)
    for got in (stream, plain):
        _same_weights(got, memory)
    with pytest.raises(ValueError, match="batch_size must be None"):
        train.fit(loss, model, iter([(x[:8], y[:8])]), batch_size=8, num_steps=1, **kw)
    with pytest.raises(ValueError, match="ran out after 1 batches"):
        train.fit(loss, model, iter([(x[:8], y[:8])]), num_steps=2, **kw)
    bad = iter([(x[:8], y[:8]), (x[:4], y[:4])])
    with pytest.raises(ValueError, match="batch of step 1 has shapes"):
        train.fit(loss, model, bad, num_steps=2, **kw)


@pytest.mark.slow
def test_streaming_fit_resumes_at_its_step(tmp_path):
    """Stopped at step 10 and resumed from its checkpoint with a fresh iterator (restarted at
    step 10 by ``iter_from``), or a plain generator (its first 10 batches skipped), the run ends
    where the uninterrupted in-memory one does."""
    model, x, y, loss, data_key, kw, memory, disk = _streaming_setup(tmp_path)
    source = data.BatchIterator((x, y), 8, key=data_key, prefetch=0)
    for name, make in (
        ("restarted", lambda: data.BatchIterator(disk, 8, key=data_key, prefetch=3)),
        ("skipped", lambda: (source.batch(s) for s in range(10**6))),
    ):
        ckpt = str(tmp_path / f"{name}.ckpt")
        for steps in (10, 20):
            run = train.fit(loss, model, make(), num_steps=steps, checkpoint_path=ckpt, **kw)
        assert run.step == 20
        _same_weights(run, memory)
