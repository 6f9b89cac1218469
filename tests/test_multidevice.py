"""Multi-device runs through jax.sharding: data-parallel ``fit`` and sharded ``sample`` on 8 devices.

The 8 devices are CPU devices made by ``XLA_FLAGS=--xla_force_host_platform_device_count=8``,
which only takes effect before JAX starts, so that part runs in a fresh subprocess.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import diffusion as jd
from jaxsolve import sharding, train

SCRIPT = textwrap.dedent(
    """
    import sys
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
    from jaxsolve import diffusion as jd, sharding, train
    from jaxsolve.diffusion.analytic import GaussianMixture

    assert jax.device_count() == 8, jax.devices()
    mesh = sharding.data_mesh()
    assert mesh.shape == {"data": 8}

    def leaves(m):
        return jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))

    # ---- data-parallel fit: a small MLP regression, 8 samples per device per step ----
    x = jax.random.normal(jax.random.PRNGKey(0), (256, 3))
    y = jnp.sin(x) @ jnp.array([1.0, -2.0, 0.5])
    model = eqx.nn.MLP(3, 1, 32, 2, key=jax.random.PRNGKey(1))
    seen = []

    def loss(m, batch, key):
        # Records how the minibatch is laid out over devices once compiled.
        jax.debug.inspect_array_sharding(batch[0], callback=seen.append)
        return jnp.mean((jax.vmap(m)(batch[0])[:, 0] - batch[1]) ** 2)

    kw = dict(optimizer=optax.adam(1e-2), batch_size=64, key=jax.random.PRNGKey(2),
              ema_decay=0.9, progress=False, steps_per_call=20)
    ref = train.fit(loss, model, (x, y), num_steps=40, **kw)
    assert all(len(s.device_set) == 1 for s in seen), seen
    ck = sys.argv[1]
    seen.clear()
    # Half the run with a mesh, checkpointed; a second call resumes it from the file.
    train.fit(loss, model, (x, y), num_steps=20, mesh=mesh, checkpoint_path=ck,
              checkpoint_every=20, **kw)
    par = train.fit(loss, model, (x, y), num_steps=40, mesh=mesh, checkpoint_path=ck, **kw)
    assert par.step == 40
    # The minibatch really was split: each device held 64 / 8 samples.
    assert seen and all(len(s.device_set) == 8 and s.shard_shape((64, 3)) == (8, 3) for s in seen), seen
    for a, b in zip(leaves(ref.model) + leaves(ref.ema_model),
                    leaves(par.model) + leaves(par.ema_model), strict=True):
        assert b.sharding.is_fully_replicated and len(b.sharding.device_set) == 8, b.sharding
        # Not bitwise: the gradient all-reduce adds 8 partial sums, another float32 order.
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    # Mean loss of steps 20..40, which the resumed run took with the mesh.
    np.testing.assert_allclose(par.history["loss"][-1], ref.history["loss"][-1], rtol=1e-5)
    try:
        train.fit(loss, model, (x, y), num_steps=1, mesh=mesh, **{**kw, "batch_size": 60})
        raise AssertionError("batch_size 60 over 8 devices should be refused")
    except ValueError as err:
        assert "multiple of 8" in str(err), err
    # Micro-batches with a mesh: each of the 2 parts of 64 is split over the 8 devices.
    seen.clear()
    half = train.fit(loss, model, (x, y), num_steps=20, **kw)
    seen.clear()
    mb = train.fit(loss, model, (x, y), num_steps=20, mesh=mesh, microbatches=2, **kw)
    assert seen and all(s.shard_shape((32, 3)) == (4, 3) for s in seen), seen
    for a, b in zip(leaves(half.model), leaves(mb.model), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-5, atol=1e-6)
    try:
        train.fit(loss, model, (x, y), num_steps=1, mesh=mesh, microbatches=16, **kw)
        raise AssertionError("parts of 4 samples over 8 devices should be refused")
    except ValueError as err:
        assert "multiple of 8" in str(err), err

    # ---- sharded sampling: a Gaussian-mixture oracle, 64 samples = 8 per device ----
    angles = np.linspace(0, 2 * np.pi, 4, endpoint=False)
    mix = GaussianMixture(np.full(4, 0.25), 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1),
                          np.full((4, 2), 0.1))
    x0 = mix.sample(jax.random.PRNGKey(3), 64, sigma=20.0)
    sigmas = jd.karras_sigmas(8, 0.01, 20.0)

    def check_sharded(out, m):
        axis = m.axis_names[0]
        assert out.sharding.spec[0] == axis and len(out.sharding.device_set) == 8, out.sharding
        starts = sorted(s.index[0].start for s in out.addressable_shards)
        assert starts == list(range(0, 64, 8)), starts
        assert all(s.data.shape == (8, 2) for s in out.addressable_shards)

    explicit = jax.make_mesh((8,), ("batch",), axis_types=(jax.sharding.AxisType.Explicit,))
    cases = [(jd.DPMSolverPP(order=2), None, mesh, "data"),
             (jd.DPMSolverPPSDE(order=2), jax.random.PRNGKey(4), mesh, "data"),
             (jd.DPMSolverPPSDE(order=2), jax.random.PRNGKey(4), explicit, "batch")]
    for solver, key, m, axis in cases:
        one = jd.sample(mix, x0, sigmas, solver, key=key)
        eight = jd.sample(mix, x0, sigmas, solver, key=key, mesh=m, data_axis=axis)
        check_sharded(eight, m)
        # Each sample's arithmetic (and noise, drawn from its own index) is the same on any
        # device; only the compiled program differs, so allow float32 round-off.
        np.testing.assert_allclose(np.asarray(eight), np.asarray(one), rtol=1e-6, atol=1e-6)
        assert float(jnp.std(eight)) > 1.0  # samples, not a collapsed state

    # Under jit: the same samples, still sharded; the result code is returned, not raised.
    jitted = jax.jit(lambda z: jd.sample(mix, z, sigmas, jd.DPMSolverPP(order=2), mesh=mesh,
                                         throw=False, full_output=True))(x0)
    check_sharded(jitted.value, mesh)
    np.testing.assert_allclose(np.asarray(jitted.value), np.asarray(
        jd.sample(mix, x0, sigmas, jd.DPMSolverPP(order=2))), rtol=1e-6, atol=1e-6)
    assert int(jitted.nfe) == 8
    try:
        jax.jit(lambda z: jd.sample(mix, z, sigmas, jd.DPMSolverPP(order=2), mesh=mesh))(x0)
        raise AssertionError("throw=True under jit with a mesh should be refused")
    except ValueError as err:
        assert "throw=False" in str(err), err
    # Eagerly, throw=True raises (from the host, so no device is left waiting).
    bad = lambda z, s: jnp.where(s < 1.0, jnp.nan, mix(z, s))
    try:
        jax.block_until_ready(jd.sample(bad, x0, sigmas, jd.DPMSolverPP(order=2), mesh=mesh))
        raise AssertionError("a NaN state should raise")
    except Exception as err:  # equinox's runtime error
        assert "NaN or infinity" in str(err), err
    print("MULTIDEVICE-OK")
    """
)


@pytest.mark.slow
@pytest.mark.ci
def test_eight_devices_fit_and_sample_equal_one_device(tmp_path):
    script = tmp_path / "multidevice.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        # Added to the flags the test run uses (tests/conftest.py), not replacing them.
        "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8",
        "JAX_PLATFORMS": "cpu",
    }
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "state.eqx")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MULTIDEVICE-OK" in proc.stdout


def test_device_setup_after_importing_jaxsolve():
    """Importing jaxsolve must not start JAX's backend (no arrays built at import), so that
    XLA_FLAGS set after it (the notebooks' order) and jax.distributed.initialize() still work."""
    code = (
        "import os, jaxsolve\n"
        "os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'\n"
        "import jax\n"
        "assert jax.device_count() == 8, jax.devices()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_clear_errors_for_bad_meshes():
    mesh = sharding.data_mesh(1)
    with pytest.raises(ValueError, match="n_devices must lie in"):
        sharding.data_mesh(jax.device_count() + 1)
    with pytest.raises(TypeError, match=r"jax\.sharding\.Mesh"):
        sharding.replicate(jnp.zeros(3), "data")
    with pytest.raises(ValueError, match="scalar"):
        sharding.shard_batch(jnp.zeros(()), mesh)

    x = jnp.zeros((16, 2))
    sig = jd.karras_sigmas(4, 0.01, 1.0)
    with pytest.raises(ValueError, match="'model' is not an axis of the mesh"):
        jd.sample(lambda z, s: z, x, sig, jd.Euler(), mesh=mesh, data_axis="model")
    with pytest.raises(ValueError, match="batch_ndim must be >= 1"):
        jd.sample(lambda z, s: z, x, sig, jd.Euler(), mesh=mesh, batch_ndim=0)
    with pytest.raises(ValueError, match="'model' is not an axis of the mesh"):
        train.fit(
            lambda m, b, k: jnp.mean((b - m) ** 2),
            jnp.zeros(2),
            x,
            optimizer=optax.sgd(0.1),
            num_steps=1,
            key=jax.random.PRNGKey(0),
            mesh=mesh,
            data_axis="model",
        )


def test_one_device_mesh_round_trip():
    # The helpers on whatever devices this process has: placement keeps the values.
    mesh = sharding.data_mesh()
    tree = {"a": np.arange(2.0 * jax.device_count()).reshape(-1, 2), "b": None}
    placed = sharding.shard_batch(tree, mesh)
    assert placed["b"] is None
    np.testing.assert_array_equal(sharding.to_host(placed)["a"], tree["a"])
    np.testing.assert_array_equal(sharding.to_host(sharding.replicate(tree, mesh))["a"], tree["a"])
