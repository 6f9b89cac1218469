"""Streaming ``fit`` with ``mesh=``: host batches placed split over the mesh's data axis, whole
on every process or each process feeding its own part (``process_local=True``).

Several devices need ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` before JAX starts,
so the checks on 4 CPU devices run in a fresh subprocess (as tests/test_multidevice.py does).
"""

import os
import socket
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import sharding, train

# Shared by the script and the in-process checks: a linear regression whose minibatches come
# from a plain generator of host (NumPy) batches.
COMMON = textwrap.dedent(
    """
    import equinox as eqx, jax, jax.numpy as jnp, numpy as np, optax
    from jaxsolve import sharding, train

    X = np.random.default_rng(0).normal(size=(48, 3)).astype(np.float32)
    Y = (X @ np.array([1.0, -2.0, 0.5]) + 0.1).astype(np.float32)
    MODEL = eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(1))
    KW = dict(optimizer=optax.sgd(5e-2), key=jax.random.PRNGKey(3), progress=False,
              num_steps=12, steps_per_call=6)
    SEEN = []

    def loss(m, batch, key):
        xb, yb = batch
        jax.debug.inspect_array_sharding(xb, callback=SEEN.append)
        return jnp.mean((jax.vmap(m)(xb)[:, 0] - yb) ** 2)

    def batches(size=8, part=slice(None)):
        # Step s: fit's in-memory minibatch s (epoch permutations drawn from fold_in(data_key,
        # epoch)), or the slice `part` of it.
        data_key = jax.random.split(KW["key"])[0]
        per_epoch = len(X) // size
        for s in range(10**6):
            perm = np.asarray(jax.random.permutation(jax.random.fold_in(data_key, s // per_epoch), len(X)))
            idx = perm[(s % per_epoch) * size : (s % per_epoch + 1) * size][part]
            yield X[idx], Y[idx]

    def weights(result):
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(
            sharding.to_host(eqx.filter(result.model, eqx.is_array)))]
    """
)

FOUR_DEVICES = COMMON + textwrap.dedent(
    """
    assert jax.device_count() == 4, jax.devices()
    mesh = sharding.data_mesh()
    memory = train.fit(loss, MODEL, (X, Y), batch_size=8, **KW)  # one device, in memory
    assert all(len(s.device_set) == 1 for s in SEEN), SEEN
    for process_local in (False, True):
        SEEN.clear()
        streamed = train.fit(loss, MODEL, batches(), mesh=mesh, process_local=process_local, **KW)
        # Each device held 8 / 4 samples of every minibatch (seen when the chunk compiled; the
        # second run reuses the first's program: the placement does not change it).
        assert process_local or SEEN, SEEN
        assert all(len(s.device_set) == 4 and s.shard_shape((8, 3)) == (2, 3) for s in SEEN), SEEN
        # float32; not bitwise: the gradient all-reduce adds 4 partial sums, another order.
        for a, b in zip(weights(memory), weights(streamed), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(streamed.history["loss"], memory.history["loss"], rtol=1e-5)
        for size in (6, 2 if process_local else 10):
            try:
                train.fit(loss, MODEL, batches(size), mesh=mesh, process_local=process_local, **KW)
                raise AssertionError(f"a batch of {size} over 4 devices should be refused")
            except ValueError as err:
                assert str(err).startswith("batch[0] has") and "multiple of 4" in str(err), err
    print("SHARDED-STREAM-OK")
    """
)


# Two processes of 2 CPU devices each, joined by jax.distributed (gloo collectives) into one
# 4-device mesh: each feeds its half of every batch (process_local=True), or the whole batch.
TWO_PROCESSES = (
    textwrap.dedent(
        """
    import sys
    import jax

    pid, port = int(sys.argv[1]), int(sys.argv[2])
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    """
    )
    + COMMON
    + textwrap.dedent(
        """
    assert jax.process_count() == 2 and jax.device_count() == 4, jax.devices()
    mesh = sharding.data_mesh()
    memory = train.fit(loss, MODEL, (X, Y), batch_size=8, **KW)  # this process, one device
    # This process's devices are positions 2 pid, 2 pid + 1 of the mesh: samples 4 pid ... + 4.
    for process_local, part in ((True, slice(4 * pid, 4 * pid + 4)), (False, slice(None))):
        streamed = train.fit(loss, MODEL, batches(part=part), mesh=mesh,
                             process_local=process_local, **KW)
        for a, b in zip(weights(memory), weights(streamed), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(streamed.history["loss"], memory.history["loss"], rtol=1e-5)
    try:
        train.fit(loss, MODEL, batches(3), mesh=mesh, process_local=True, **KW)
        raise AssertionError("a part of 3 over 2 local devices should be refused")
    except ValueError as err:
        assert "multiple of 2" in str(err), err
    print("TWO-PROCESSES-OK", pid)
    """
    )
)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _run(script, tmp_path, name, devices, args=()):
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    env = {
        **os.environ,
        # Added to the flags the test run uses (tests/conftest.py), not replacing them.
        "XLA_FLAGS": (
            f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
        ),
        "JAX_PLATFORMS": "cpu",
    }
    return subprocess.Popen(
        [sys.executable, str(path), *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, timeout=300):
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out + err


@pytest.mark.slow
def test_streaming_fit_over_four_devices_equals_one_device_in_memory(tmp_path):
    """The same minibatches streamed from a host generator onto a 4-device mesh (the whole
    batch, or each process's part: in one process the same) and taken from memory on one
    device give the same weights and losses to float32 round-off (rtol 1e-5, atol 1e-6); a
    batch that does not divide over the devices is refused naming ``batch``."""
    code, out = _finish(_run(FOUR_DEVICES, tmp_path, "four_devices", 4))
    assert code == 0, out[-4000:]
    assert "SHARDED-STREAM-OK" in out


@pytest.mark.slow
def test_two_processes_each_feeding_its_part_equal_one_device_in_memory(tmp_path):
    """One process per host feeding its shard: two processes, each streaming only its half of
    every minibatch (``process_local=True``), train on the global batch assembled from the
    halves, the in-memory one-device run to float32 round-off (rtol 1e-5, atol 1e-6); feeding
    the whole batch from both (the default) gives the same."""
    port = _free_port()
    procs = [_run(TWO_PROCESSES, tmp_path, "two_processes", 2, (i, port)) for i in range(2)]
    results = [_finish(p) for p in procs]
    for i, (code, out) in enumerate(results):
        assert code == 0, f"process {i}: " + out[-4000:]
        assert f"TWO-PROCESSES-OK {i}" in out


def test_process_local_needs_a_mesh_and_a_stream():
    x = np.zeros((8, 3), np.float32)
    kw = dict(optimizer=optax.sgd(0.1), num_steps=1, key=jax.random.PRNGKey(0), progress=False)

    def loss(m, b, k):
        return jnp.mean((b - m) ** 2)

    with pytest.raises(ValueError, match="process_local=True needs mesh="):
        train.fit(loss, np.zeros(3), iter([x]), process_local=True, **kw)
    with pytest.raises(ValueError, match="process_local=True needs mesh="):
        mesh = sharding.data_mesh(1)
        train.fit(loss, np.zeros(3), x, batch_size=8, mesh=mesh, process_local=True, **kw)
    with pytest.raises(TypeError, match="process_local must be a bool"):
        train.fit(loss, np.zeros(3), iter([x]), process_local="yes", **kw)
