"""Datasets: distributions, nesting across sizes and resolutions, on-disk cache, errors.

Small grids here (the paper's sizes run in benchmarks/reproduce_fno_table.py).
"""

import os
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import pde
from jaxsolve.pde import _datasets


def test_burgers_dataset_is_nested_cached_and_solves_burgers(tmp_path):
    key = jax.random.PRNGKey(0)
    kw = dict(fine_resolution=256, dt=0.02, cache_dir=tmp_path, progress=False, chunk_size=4)
    u0, ut = pde.burgers_dataset(key, 6, 64, **kw)
    chex.assert_shape([u0, ut], (6, 1, 64))
    assert u0.dtype == jnp.float32
    # Sample i comes from fold_in(key, i): a subset at another offset and a coarser grid is the
    # same data (the padded last chunk does not leak into the result).
    v0, vt = pde.burgers_dataset(key, 3, 32, offset=2, **kw)
    np.testing.assert_array_equal(v0, u0[2:5, :, ::2])
    np.testing.assert_allclose(vt, ut[2:5, :, ::2], rtol=1e-6, atol=1e-7)
    # Cached: one file per parameter set, and a second call reads it back.
    files = sorted(os.listdir(tmp_path / "."))
    assert len(files) == 2 and all(f.startswith("burgers-") for f in files)
    again = pde.burgers_dataset(key, 6, 64, **kw)
    np.testing.assert_array_equal(again[1], ut)
    assert len(os.listdir(tmp_path)) == 2
    # u0 is the prior's draw on the fine grid, subsampled; u(T) is what the solver gives for it.
    fine0 = pde.GaussianRandomField(2.0, 5.0, 625.0, zero_mean=True).sample(
        jax.random.fold_in(key, 1), (256,)
    )[None]
    np.testing.assert_array_equal(fine0[:, ::4], u0[1])
    # Zero mean (the constant mode is dropped) on the fine grid, kept by Burgers: u(T) is smooth,
    # so its coarse samples have mean zero too (u0's do not: its high modes alias).
    assert abs(float(jnp.mean(fine0))) < 1e-6
    np.testing.assert_allclose(jnp.mean(ut, axis=-1), 0.0, atol=1e-7)
    stepper = pde.ETDRK(pde.Burgers(0.1), 0.02, (256,))
    direct = jax.jit(lambda u: pde.rollout(stepper, u, 50, every=50)[-1])(fine0)
    np.testing.assert_allclose(direct[:, ::4], ut[1], rtol=1e-4, atol=1e-6)


def test_darcy_dataset_values_boundary_and_subsampling():
    key = jax.random.PRNGKey(1)
    a, u = pde.darcy_dataset(key, 3, 9, fine_resolution=17, cache_dir=None, progress=False)
    chex.assert_shape([a, u], (3, 1, 9, 9))
    assert set(np.unique(np.asarray(a)).tolist()) == {3.0, 12.0}
    un = np.asarray(u)
    assert np.all(un[..., 0, :] == 0) and np.all(un[..., -1] == 0)
    assert np.all(un[..., 1:-1, 1:-1] > 0)
    full_a, full_u = pde.darcy_dataset(
        key, 3, 17, fine_resolution=17, cache_dir=None, progress=False
    )
    np.testing.assert_array_equal(full_a[..., ::2, ::2], a)
    np.testing.assert_array_equal(full_u[..., ::2, ::2], u)
    direct = jax.jit(lambda a: pde.darcy_solve(a).u)(full_a[0])
    np.testing.assert_allclose(direct, full_u[0], rtol=1e-6, atol=1e-9)


def test_navier_stokes_dataset_frames():
    w = pde.navier_stokes_dataset(
        jax.random.PRNGKey(2),
        2,
        8,
        T=0.5,
        record_every=0.25,
        fine_resolution=16,
        dt=0.05,
        cache_dir=None,
        progress=False,
    )
    chex.assert_shape(w, (2, 3, 1, 8, 8))
    # Frames are the solver's states at 0, 0.25, 0.5 (subsampled); the mean vorticity is zero
    # and stays zero (advection is a divergence, the forcing has zero mean).
    grf = pde.GaussianRandomField(2.5, 7.0, 7.0**1.5, zero_mean=True)
    w0 = grf.sample(jax.random.fold_in(jax.random.PRNGKey(2), 0), (16, 16))[None]
    stepper = pde.ETDRK(pde.NavierStokes2D(1e-3), 0.05, (16, 16))
    traj = jax.jit(lambda u: pde.rollout(stepper, u, 10, every=5))(w0)
    np.testing.assert_allclose(traj[:, :, ::2, ::2], w[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(jnp.mean(traj, axis=(-1, -2)), 0.0, atol=1e-6)


def test_dataset_argument_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="multiple of resolution"):
        pde.burgers_dataset(key, 2, 100, fine_resolution=256, cache_dir=None)
    with pytest.raises(ValueError, match=r"\(resolution - 1\)"):
        pde.darcy_dataset(key, 2, 10, fine_resolution=17, cache_dir=None)
    with pytest.raises(ValueError, match="n_samples"):
        pde.darcy_dataset(key, 0, 9, fine_resolution=17, cache_dir=None)
    with pytest.raises(ValueError, match="record_every"):
        pde.navier_stokes_dataset(key, 1, 8, T=1.0, record_every=0.3, cache_dir=None)
    # Non-finite or unphysical numbers are named before anything is computed (T = inf was an
    # OverflowError, record_every = 0 a ZeroDivisionError, nu < 0 a NaN dataset).
    for call, message in (
        (lambda: pde.burgers_dataset(key, 2, T=np.inf, cache_dir=None), "burgers_dataset: T"),
        (lambda: pde.burgers_dataset(key, 2, nu=-0.1, cache_dir=None), "Burgers: nu"),
        (lambda: pde.burgers_dataset(key, 2, dt=np.nan, cache_dir=None), "burgers_dataset: dt"),
        (
            lambda: pde.navier_stokes_dataset(key, 1, 8, record_every=0.0, cache_dir=None),
            "navier_stokes_dataset: record_every must be finite and > 0",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def test_a_corrupt_cache_file_is_named_and_regenerated(tmp_path):
    """Issue 17: a truncated or overwritten cache file failed with numpy's pickle error or
    BadZipFile. Now it is named in a warning, regenerated (the same data) and rewritten. The
    cache is the unit under test, so a toy sampler stands in for a PDE solve."""
    traces = []

    def sample(k):
        traces.append(1)  # runs when the sampler is traced, i.e. when data are generated
        return (0.5 * k.astype(jnp.float32)[None],)  # distinct per sample, compiles at once

    def generate():
        return _datasets._generate(
            "toy", {"n": 4}, sample, jax.random.PRNGKey(0), 3, 0, 4, tmp_path, False
        )[0]

    data = generate()
    (path,) = tmp_path.iterdir()
    assert generate() is not None and len(traces) == 1  # read back, not regenerated
    original = path.read_bytes()
    middle = bytearray(original)
    middle[len(middle) // 2] ^= 0xFF  # a flipped byte inside the array: zip's CRC-32 fails
    for corrupt in (b"not a cache file" * 4, original[: len(original) // 2], bytes(middle)):
        path.write_bytes(corrupt)
        with pytest.warns(RuntimeWarning, match=re.escape(str(path)) + ".*regenerating"):
            again = generate()
        np.testing.assert_array_equal(again, data)
        with np.load(path) as stored:  # rewritten, readable, the same numbers
            np.testing.assert_array_equal(stored["out0"], data)
    assert len(traces) == 4


def test_an_unwritable_cache_dir_fails_before_generating(tmp_path, monkeypatch):
    """Issue 17: an unwritable cache_dir was found only after the data had been generated."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    def no_generation(*args, **kwargs):
        raise AssertionError("data were generated before cache_dir was checked")

    monkeypatch.setattr(_datasets, "per_sample_keys", no_generation)
    with pytest.raises(ValueError, match=r"cache_dir=.*a-file.*not a writable directory"):
        pde.burgers_dataset(key=jax.random.PRNGKey(0), n_samples=2, cache_dir=blocker / "sub")


def test_a_blow_up_is_reported_at_its_chunk_naming_the_sample(monkeypatch):
    """A blown-up sample (inviscid Burgers, a time step far beyond stability) was reported only
    after every chunk had been generated: hours late on the paper's sizes. Now the first chunk
    holding one raises, naming the sample."""
    calls = []
    keys = _datasets.per_sample_keys

    def counted(*args):
        calls.append(args)
        return keys(*args)

    monkeypatch.setattr(_datasets, "per_sample_keys", counted)
    with pytest.raises(FloatingPointError, match=r"NaN or infinity \(first: sample 3;"):
        pde.burgers_dataset(
            jax.random.PRNGKey(0),
            4,
            16,
            fine_resolution=64,
            nu=0.0,
            dt=0.5,
            offset=3,
            chunk_size=1,
            cache_dir=None,
            progress=False,
        )
    assert len(calls) == 1
