import os
import re
import subprocess
import sys
import textwrap

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxsolve import train


def _problem():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (256, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1
    model = eqx.nn.Linear(3, 1, key=jax.random.PRNGKey(1))

    def loss(m, batch, k):
        xb, yb = batch
        return jnp.mean((jax.vmap(m)(xb)[:, 0] - yb) ** 2)

    return model, (x, y), loss


def _arrays(m):
    return eqx.filter(m, eqx.is_array)


def _leaves(m):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(_arrays(m))]


def test_fit_converges_and_evaluates():
    model, data, loss = _problem()
    r = train.fit(
        loss,
        model,
        data,
        optimizer=optax.adam(optax.exponential_decay(3e-2, 100, 0.5)),
        num_steps=400,
        batch_size=32,
        key=jax.random.PRNGKey(2),
        eval_fn=lambda m: {"mse": loss(m, data, None)},
        eval_every=100,
        progress=False,
    )
    steps = [s for s, _ in r.history["eval"]]
    mses = [m["mse"] for _, m in r.history["eval"]]
    assert steps == [100, 200, 300, 400]
    assert mses[-1] < 1e-4 < mses[0]
    np.testing.assert_allclose(r.model.weight[0], [1.0, -2.0, 0.5], atol=1e-2)


def test_chunking_does_not_change_the_result():
    model, data, loss = _problem()
    kw = dict(
        optimizer=optax.adam(1e-2),
        num_steps=120,
        batch_size=32,
        key=jax.random.PRNGKey(3),
        progress=False,
    )
    a = train.fit(loss, model, data, steps_per_call=7, **kw)
    b = train.fit(loss, model, data, steps_per_call=120, **kw)
    chex.assert_trees_all_equal(_arrays(a.model), _arrays(b.model))


@pytest.mark.wrong_argument_types
def test_microbatches_take_the_full_batch_step(x64):
    """Accumulating a mean loss over equal parts of the minibatch is the full-batch step."""
    model, data, loss = _problem()
    kw = dict(optimizer=optax.adam(1e-2), num_steps=40, batch_size=32, progress=False)
    a = train.fit(loss, model, data, key=jax.random.PRNGKey(3), **kw)
    b = train.fit(loss, model, data, key=jax.random.PRNGKey(3), microbatches=4, **kw)
    chex.assert_trees_all_close(_arrays(a.model), _arrays(b.model), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)
    # The building block on its own, for hand-written steps (key None is allowed).
    vg = jax.value_and_grad(lambda m, b, k: loss(m, b, k))
    whole, parts = vg(model, data, None), train.microbatched(vg, 8)(model, data, None)
    chex.assert_trees_all_close(whole, parts, rtol=1e-12, atol=1e-14)
    # Each part gets its own key: fold_in(key of the step, part index).
    seen = []

    def keyed(m, batch, k):
        jax.debug.callback(lambda k: seen.append(np.asarray(k)), jax.random.key_data(k))
        return loss(m, batch, k)

    train.fit(
        keyed, model, data, key=jax.random.PRNGKey(3), **{**kw, "num_steps": 1}, microbatches=2
    )
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])
    for bad, error, match in (
        (3, ValueError, "must divide"),
        (0, ValueError, "microbatches must be >= 1"),
        (2.0, TypeError, "microbatches must be an int"),
    ):
        with pytest.raises(error, match=match):
            train.fit(loss, model, data, key=jax.random.PRNGKey(3), microbatches=bad, **kw)


def test_a_second_fit_reuses_the_compiled_chunk():
    """The chunk is compiled once for a loss, optimiser, model structure and shapes: a second
    call with other values (start, key, data) traces nothing, and computes with its own values."""
    traces = []

    def loss(w, batch, key):
        traces.append(None)  # runs once per trace
        return jnp.mean((batch - w) ** 2)

    kw = dict(optimizer=optax.sgd(0.25), num_steps=3, progress=False, steps_per_call=3)
    x = jnp.full((4, 2), 1.5)
    a = train.fit(loss, jnp.zeros(2), x, key=jax.random.PRNGKey(0), **kw)
    traced = len(traces)
    b = train.fit(loss, jnp.ones(2), 2 * x, key=jax.random.PRNGKey(1), **kw)
    assert len(traces) == traced
    # SGD on mean((x - w)^2) with step 0.25 takes a quarter off the distance to x at every step.
    np.testing.assert_allclose(a.model, 1.5 * (1 - 0.75**3), rtol=1e-6)
    np.testing.assert_allclose(b.model, 3.0 - 2.0 * 0.75**3, rtol=1e-6)


def test_ema_tracks_the_parameters():
    model, data, loss = _problem()
    r = train.fit(
        loss,
        model,
        data,
        optimizer=optax.sgd(0.05),
        num_steps=300,
        batch_size=64,
        key=jax.random.PRNGKey(4),
        ema_decay=0.9,
        progress=False,
    )
    np.testing.assert_allclose(r.ema_model.weight, r.model.weight, atol=5e-2)
    assert not np.array_equal(np.asarray(r.ema_model.weight), np.asarray(r.model.weight))


RESUME_SCRIPT = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp, equinox as eqx, optax, numpy as np
    from jaxsolve import train
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (256, 3)); y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.1
    model = eqx.nn.MLP(3, 1, 16, 2, key=jax.random.PRNGKey(1))
    loss = lambda m, b, k: jnp.mean((jax.vmap(m)(b[0])[:, 0] - b[1]) ** 2)
    steps, path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    r = train.fit(loss, model, (x, y), optimizer=optax.adamw(1e-2), num_steps=steps, batch_size=32,
                  key=jax.random.PRNGKey(5), checkpoint_path=path if path != "-" else None,
                  checkpoint_every=20 if path != "-" else None, progress=False, steps_per_call=13)
    np.save(out, np.concatenate([np.ravel(a) for a in jax.tree_util.tree_leaves(eqx.filter(r.model, eqx.is_array))]))
    """
)


@pytest.mark.compares_with_fresh_interpreter
def test_exact_resume_in_a_new_process(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RESUME_SCRIPT)
    ck = str(tmp_path / "state.eqx")

    def run(steps, path, out):
        subprocess.run(
            [sys.executable, str(script), str(steps), path, str(out)],
            check=True,
            env={**os.environ, "JAX_PLATFORMS": "cpu"},
        )
        return np.load(out)

    run(60, ck, tmp_path / "b.npy")  # first half, checkpointed at 60
    resumed = run(120, ck, tmp_path / "c.npy")  # a new process picks it up
    # The uninterrupted run, here in this process.
    namespace = {"__name__": "straight"}
    exec(RESUME_SCRIPT.split("steps, path, out")[0], namespace)
    straight = train.fit(
        namespace["loss"],
        namespace["model"],
        (namespace["x"], namespace["y"]),
        optimizer=optax.adamw(1e-2),
        num_steps=120,
        batch_size=32,
        key=jax.random.PRNGKey(5),
        progress=False,
        steps_per_call=50,
    )
    flat = np.concatenate([np.ravel(a) for a in _leaves(straight.model)])
    np.testing.assert_array_equal(resumed, flat)


def test_checkpoint_errors(tmp_path):
    model, data, loss = _problem()
    path = str(tmp_path / "ck.eqx")
    train.fit(
        loss,
        model,
        data,
        optimizer=optax.adam(1e-2),
        num_steps=10,
        key=jax.random.PRNGKey(6),
        checkpoint_path=path,
        checkpoint_every=10,
        progress=False,
    )
    raw = open(path, "rb").read()
    cut = str(tmp_path / "cut.eqx")
    open(cut, "wb").write(raw[: len(raw) - 7])
    with pytest.raises(ValueError, match="truncated"):
        train.fit(
            loss,
            model,
            data,
            optimizer=optax.adam(1e-2),
            num_steps=20,
            key=jax.random.PRNGKey(6),
            checkpoint_path=cut,
            checkpoint_every=10,
            progress=False,
        )
    other = eqx.nn.MLP(3, 1, 8, 1, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="different model"):
        train.fit(
            lambda m, b, k: loss(m, b, k),
            other,
            data,
            optimizer=optax.adam(1e-2),
            num_steps=20,
            key=jax.random.PRNGKey(6),
            checkpoint_path=path,
            checkpoint_every=10,
            progress=False,
        )
    junk = str(tmp_path / "junk.eqx")
    open(junk, "wb").write(b"\x00\xff not a checkpoint")
    with pytest.raises(ValueError, match="not a jaxsolve checkpoint"):
        train.load_checkpoint(junk, model)


def test_generated_data_and_bad_arguments():
    model, data, loss = _problem()
    gen = lambda k: (jax.random.normal(k, (32, 3)), jnp.zeros((32,)))
    r = train.fit(
        loss,
        model,
        gen,
        optimizer=optax.adam(1e-2),
        num_steps=50,
        key=jax.random.PRNGKey(7),
        progress=False,
    )
    assert r.step == 50 and len(r.history["loss"]) == 1
    with pytest.raises(ValueError, match="batch_size"):
        train.fit(
            loss,
            model,
            data,
            optimizer=optax.adam(1e-2),
            num_steps=5,
            batch_size=1000,
            key=jax.random.PRNGKey(0),
        )
    with pytest.raises(ValueError, match="leading"):
        train.fit(
            loss,
            model,
            (data[0], data[1][:10]),
            optimizer=optax.adam(1e-2),
            num_steps=5,
            batch_size=8,
            key=jax.random.PRNGKey(0),
        )
    with pytest.raises(FloatingPointError, match="loss became nan"):
        train.fit(
            lambda m, b, k: loss(m, b, k) * jnp.nan,
            model,
            data,
            optimizer=optax.adam(1e-2),
            num_steps=5,
            key=jax.random.PRNGKey(0),
            progress=False,
        )


def test_normalizer_round_trip_and_statistics():
    x = (
        3.0
        + 2.0
        * jax.random.normal(jax.random.PRNGKey(8), (50, 2, 16, 16))
        * jnp.array([1.0, 5.0])[:, None, None]
    )
    norm = train.Normalizer.fit(x)
    z = norm.encode(x)
    np.testing.assert_allclose(jnp.mean(z, axis=(0, 2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.std(z, axis=(0, 2, 3)), 1.0, atol=1e-4)
    np.testing.assert_allclose(norm.decode(norm.encode(x[0])), x[0], rtol=1e-5, atol=1e-5)


def test_normalizer_refuses_non_finite_data_and_bad_eps():
    x = jnp.ones((4, 2, 8)).at[1, 0, 3].set(jnp.nan)
    with pytest.raises(ValueError, match="1 NaN or infinite"):
        train.Normalizer.fit(x)
    with pytest.raises(ValueError, match="eps"):
        train.Normalizer.fit(jnp.ones((4, 2, 8)), eps=0.0)
    # Under jit the check runs with the data.
    with pytest.raises(Exception, match="NaN or infinite"):
        jax.block_until_ready(jax.jit(lambda a: train.Normalizer.fit(a).mean)(x))
    # A constant channel encodes to zeros (eps keeps the division finite).
    const = jnp.stack([jnp.full((4, 8), 2.0), jnp.arange(32.0).reshape(4, 8)], axis=1)
    z = train.Normalizer.fit(const).encode(const)
    assert bool(jnp.all(z[:, 0] == 0.0)) and bool(jnp.all(jnp.isfinite(z)))


# ---- issue 17: no non-finite model or checkpoint, resume checks, arguments named ----


def _norm(w, batch, key):
    # Finite everywhere; its gradient w / |w| is 0 / 0 = NaN at w = 0.
    return jnp.sqrt(jnp.sum(w**2))


_IGNORED = jnp.zeros((4, 1))  # data the loss does not read


def test_a_nonfinite_step_raises_and_keeps_the_last_good_checkpoint(tmp_path):
    """From w = (2, 0), SGD with step 0.5 on |w| walks w = 2, 1.5, 1, 0.5, 0 in exact steps; at
    step 4 the loss is 0 but the gradient NaN. Nothing non-finite may be saved or returned."""
    path = str(tmp_path / "ck.eqx")
    kw = dict(optimizer=optax.sgd(0.5), key=jax.random.PRNGKey(0), progress=False)
    kw.update(steps_per_call=2, checkpoint_path=path, checkpoint_every=2)
    with pytest.raises(
        FloatingPointError, match=r"at step 4 .*loss was finite \(0\) but the param"
    ):
        train.fit(_norm, jnp.array([2.0, 0.0]), _IGNORED, num_steps=6, **kw)
    template = (jnp.zeros(2), optax.sgd(0.5).init(jnp.zeros(2)), None)
    (w, _, _), step = train.load_checkpoint(path, template)
    assert step == 4 and np.array_equal(w, [0.0, 0.0])  # the last good state, kept
    (w, _, _), step = train.load_checkpoint(path + ".prev", template)
    assert step == 2 and np.array_equal(w, [1.0, 0.0])
    # Resumed with skipping allowed (not part of what a resume must match): w stays 0, and the
    # third NaN step in a row is one too many; the step-6 checkpoint of w = 0 is the last good.
    with pytest.raises(
        FloatingPointError, match=r"at step 6 .*steps 4 to 6 were all non-finite"
    ) as e:
        train.fit(_norm, jnp.array([2.0, 0.0]), _IGNORED, num_steps=8, skip_nonfinite=2, **kw)
    assert f"last good checkpoint, step 6 at {path!r}" in str(e.value)
    # The issue's case: w = 0 from the start. Before, step 1's checkpoint held NaN and, without
    # a checkpoint, fit returned a NaN model.
    first = str(tmp_path / "first.eqx")
    with pytest.raises(FloatingPointError, match=r"at step 0 .*No checkpoint had been written"):
        train.fit(_norm, jnp.zeros(2), _IGNORED, num_steps=1, **{**kw, "checkpoint_path": first})
    assert not os.path.exists(first)
    with pytest.raises(FloatingPointError, match=r"at step 0 .*No model is returned"):
        train.fit(
            _norm,
            jnp.zeros(2),
            _IGNORED,
            num_steps=1,
            **{**kw, "checkpoint_path": None, "checkpoint_every": None},
        )
    # An optimiser state that overflows while the parameters stay finite: Adam's second moment
    # of a gradient of 1e20 is inf in float32, its update 0. Checked per chunk.
    with pytest.raises(FloatingPointError, match=r"between steps 0 and 1 .*: the optimiser state"):
        train.fit(
            lambda w, b, k: 1e20 * jnp.sum(w),
            jnp.zeros(2),
            _IGNORED,
            num_steps=1,
            optimizer=optax.adam(1.0),
            key=jax.random.PRNGKey(0),
            progress=False,
        )


def test_skip_nonfinite_trains_on_the_finite_steps():
    """loss = nan_to_num(-w.x) is finite, with gradient -x: NaN for the rows holding NaN or inf.
    SGD with step 1 adds x to w, so one epoch of one-sample steps ends, in any order, at the sum
    of the finite rows, and the optimiser's step count counts only the steps applied."""
    x = np.arange(16.0, dtype=np.float32).reshape(8, 2)
    x[1], x[4], x[5, 0] = np.nan, np.inf, -np.inf
    r = train.fit(
        lambda w, b, k: jnp.nan_to_num(-jnp.vdot(w, b[0])),
        jnp.zeros(2),
        jnp.asarray(x),
        optimizer=optax.sgd(optax.constant_schedule(1.0)),
        num_steps=8,
        batch_size=1,
        key=jax.random.PRNGKey(0),
        progress=False,
        steps_per_call=3,
        skip_nonfinite=3,  # at most 3 bad rows can follow each other
    )
    finite_rows = np.isfinite(x).all(axis=1)
    np.testing.assert_array_equal(r.model, x[finite_rows].sum(axis=0))
    assert r.history["step"] == [3, 6, 8] and sum(r.history["skipped"]) == 3
    assert [int(c) for c in jax.tree_util.tree_leaves(r.opt_state)] == [5]
    assert np.all(np.isfinite(r.history["loss"]))


def test_resume_refuses_a_different_run(tmp_path):
    model, data, loss = _problem()
    path = str(tmp_path / "ck.eqx")
    kw = dict(
        optimizer=optax.adam(1e-2),
        num_steps=10,
        batch_size=32,
        key=jax.random.PRNGKey(6),
        checkpoint_path=path,
        checkpoint_every=5,
        progress=False,
    )
    done = train.fit(loss, model, data, **kw)
    for change, match in (
        (
            {"key": jax.random.PRNGKey(7)},
            r"key: 'uint32\[2\] \[0, 6\]' in the checkpoint, "
            r"'uint32\[2\] \[0, 7\]' in this call",
        ),
        ({"batch_size": 16}, "batch_size: 32 in the checkpoint, 16 in this call"),
        (
            {"optimizer": optax.adam(2e-2)},
            "optimizer: .*step_size is -0.01 in the checkpoint and -0.02 in this call",
        ),
        ({"microbatches": 2}, "microbatches: 1 in the checkpoint, 2 in this call"),
        ({"ema_decay": 0.9}, "ema_decay: None in the checkpoint, 0.9 in this call"),
        ({"num_steps": 5}, r"num_steps=5 is smaller than the step of the checkpoint .*\(10\)"),
    ):
        with pytest.raises(ValueError, match=match):
            train.fit(loss, model, data, **{**kw, "num_steps": 20, **change})
    with pytest.raises(ValueError, match=r"data: 'arrays float32\[256, 3\], float32\[256\]' in"):
        train.fit(loss, model, (data[0][:128], data[1][:128]), **{**kw, "num_steps": 20})
    # Same arguments, nothing left to do: the checkpoint is the result (nothing recompiled).
    same = train.fit(loss, model, data, **kw)
    assert same.step == 10 and same.history["step"] == []
    chex.assert_trees_all_equal(_arrays(same.model), _arrays(done.model))
    # A flipped bit, in the payload or in the header's step, fails the checksum.
    raw = open(path, "rb").read()
    template = (
        eqx.filter(model, eqx.is_inexact_array),
        optax.adam(1e-2).init(eqx.filter(model, eqx.is_inexact_array)),
        None,
    )
    for i in (len(raw) - 20, raw.index(b'"step":10') + 8):
        flipped = bytearray(raw)
        flipped[i] ^= 1
        open(tmp_path / "flip.eqx", "wb").write(flipped)
        with pytest.raises(ValueError, match="SHA-256 checksum does not match"):
            train.load_checkpoint(str(tmp_path / "flip.eqx"), template)
    # The same corruption at `path` names the previous checkpoint kept beside it.
    open(path, "wb").write(flipped)
    with pytest.raises(ValueError, match=r"corrupt.*previous checkpoint .*ck\.eqx\.prev"):
        train.fit(loss, model, data, **kw)
    # A crash between the two renames of a save leaves only `.prev`: resumed from, with a warning.
    os.remove(path)
    with pytest.warns(UserWarning, match="resuming from it"):
        back = train.fit(loss, model, data, **{**kw, "num_steps": 5})
    assert back.step == 5
    # A file of the previous format is refused by name.
    old = tmp_path / "old.eqx"
    old.write_bytes(b'{"format": "jaxsolve-checkpoint-1", "step": 3}\n')
    with pytest.raises(ValueError, match=r"old format 'jaxsolve-checkpoint-1'.*resume=False"):
        train.load_checkpoint(str(old), template)


def test_checkpoint_writes_survive_a_crash_and_only_process_0_writes(tmp_path, monkeypatch):
    from jaxsolve.train import _checkpoint

    path = str(tmp_path / "ck.eqx")
    tree = {"w": np.arange(3.0)}
    train.save_checkpoint(path, tree, step=1)
    train.save_checkpoint(path, {"w": np.arange(3.0) + 1}, step=2)
    assert train.load_checkpoint(path + ".prev", tree)[1] == 1

    def crash(*args):
        raise OSError("simulated crash")

    # Killed while the new file is being written: the checkpoint on disk is untouched.
    with monkeypatch.context() as m:
        m.setattr(_checkpoint.os, "fsync", crash)
        with pytest.raises(OSError, match="simulated"):
            train.save_checkpoint(path, {"w": np.zeros(3)}, step=3)
    loaded, step = train.load_checkpoint(path, tree)
    assert step == 2 and np.array_equal(loaded["w"], np.arange(3.0) + 1)
    # Killed after the old checkpoint became `.prev`, before the new one took its place.
    replace = os.replace
    with monkeypatch.context() as m:
        m.setattr(_checkpoint.os, "replace", lambda a, b: crash() if b == path else replace(a, b))
        with pytest.raises(OSError, match="simulated"):
            train.save_checkpoint(path, {"w": np.zeros(3)}, step=3)
    with pytest.warns(UserWarning, match="previous one"):
        loaded, step = train.load_checkpoint(path, tree)
    assert step == 2 and np.array_equal(loaded["w"], np.arange(3.0) + 1)
    # In a multi-process job the other processes write nothing.
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    train.save_checkpoint(str(tmp_path / "other.eqx"), tree, step=1)
    assert not os.path.exists(tmp_path / "other.eqx")


def test_an_unwritable_checkpoint_path_fails_before_training(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    traced = []

    def loss(w, batch, key):
        traced.append(True)
        return jnp.sum(w**2)

    for bad in (str(blocker / "ck.eqx"), str(tmp_path)):
        with pytest.raises(ValueError, match="checkpoint_path"):
            train.fit(
                loss,
                jnp.ones(2),
                _IGNORED,
                optimizer=optax.sgd(0.1),
                num_steps=1,
                key=jax.random.PRNGKey(0),
                checkpoint_path=bad,
                checkpoint_every=1,
                progress=False,
            )
    assert traced == []


def test_optimizer_fingerprint_sees_learning_rates_and_schedules():
    from jaxsolve.train._fingerprint import first_difference, hyperparameters

    assert hyperparameters(optax.adam(1e-3)) == hyperparameters(optax.adam(1e-3))
    ns1, ns2 = {}, {}
    exec("LR = 0.1\ndef schedule(count):\n    return LR * 0.5**count", ns1)
    exec("LR = 0.2\ndef schedule(count):\n    return LR * 0.5**count", ns2)
    decay = optax.exponential_decay
    for a, b, match in (
        (optax.sgd(0.1), optax.sgd(0.2), "step_size is -0.1 in the checkpoint and -0.2"),
        (optax.adam(1e-3, b1=0.9), optax.adam(1e-3, b1=0.8), "b1 is 0.9 in the checkpoint"),
        (
            optax.adam(decay(1e-2, 100, 0.5)),
            optax.adam(decay(1e-2, 200, 0.5)),
            "transition_steps is 100 in the checkpoint and 200",
        ),
        (
            optax.sgd(lambda c: 0.1 * 0.99**c),
            optax.sgd(lambda c: 0.1 * 0.98**c),
            r"constants is \[0.1, 0.99\] in the checkpoint and \[0.1, 0.98\]",
        ),
        (optax.sgd(ns1["schedule"]), optax.sgd(ns2["schedule"]), "LR is 0.1 in the checkpoint"),
        (
            optax.sgd(jax.jit(lambda c: 0.1 + 0 * c)),
            optax.sgd(jax.jit(lambda c: 0.2 + 0 * c)),
            r"constants is \[0.1, 0\] in the checkpoint and \[0.2, 0\]",
        ),
        (
            optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
            optax.inject_hyperparams(optax.adam)(learning_rate=2e-3),
            r"\['learning_rate'\] is 0.001 in the checkpoint and 0.002",
        ),
        (
            optax.MultiSteps(optax.adam(1e-3), 4).gradient_transformation(),
            optax.MultiSteps(optax.adam(2e-3), 4).gradient_transformation(),
            "step_size is -0.001 in the checkpoint and -0.002",
        ),
        (
            optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3)),
            optax.adam(1e-3),
            "init_fns.0. is function .*in the checkpoint and function",
        ),
    ):
        assert re.search(match, first_difference(hyperparameters(a), hyperparameters(b))), match


@pytest.mark.wrong_argument_types
def test_bad_arguments_are_named():
    kw = dict(optimizer=optax.sgd(0.1), num_steps=1, key=jax.random.PRNGKey(0), progress=False)
    x = jnp.ones((4, 2))
    sq = lambda w, b, k: jnp.mean((b - w) ** 2)
    for change, error, match in (
        ({"steps_per_call": 0}, ValueError, "steps_per_call must be >= 1"),
        ({"batch_size": True}, TypeError, "batch_size must be an int"),
        ({"num_steps": 2.0}, TypeError, "num_steps must be an int"),
        ({"skip_nonfinite": -1}, ValueError, "skip_nonfinite must be >= 0"),
        ({"key": 0}, TypeError, "key must be a PRNG key"),
        (
            {"loss_fn": lambda w, b, k: (b - w) ** 2},
            TypeError,
            r"loss_fn must return a floating-point scalar .*shape \(4, 2\)",
        ),
        ({"loss_fn": lambda w, b, k: (sq(w, b, k), 1.0)}, TypeError, "needs has_aux=True"),
        ({"has_aux": True}, TypeError, r"has_aux=True, loss_fn must return a pair"),
        ({"model": jnp.array([0.0, jnp.nan])}, ValueError, "model holds non-finite values"),
        ({"data": (x, 3.0)}, ValueError, r"data\[1\] must be an array with a leading"),
    ):
        args = {"loss_fn": sq, "model": jnp.zeros(2), "data": x, **kw, **change}
        with pytest.raises(error, match=match):
            train.fit(args.pop("loss_fn"), args.pop("model"), args.pop("data"), **args)
    bad = x.at[2, 1].set(jnp.inf)
    with pytest.raises(FloatingPointError, match=r"loss became inf.*non-finite values in data"):
        train.fit(sq, jnp.zeros(2), bad, **kw)


# Each fault breaks one argument of a tiny fit that is otherwise solvable exactly, and lists the
# names an error about it may give. A non-finite y is where the loss never looks: that trains.
_FAULTS = {
    "x_nonfinite": ("data",),
    "y_nonfinite": (),
    "leading_axes": ("data",),
    "batch_size": ("batch_size",),
    "num_steps": ("num_steps",),
    "steps_per_call": ("steps_per_call",),
    "loss_shape": ("loss_fn",),
    "loss_dtype": ("loss_fn",),
    "model_nonfinite": ("model",),
    "key": ("key",),
    "skip_nonfinite": ("skip_nonfinite",),
    "ema_decay": ("ema_decay",),
    "microbatches": ("microbatches",),
}


@settings(
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    faults=st.sets(st.sampled_from(sorted(_FAULTS)), max_size=2),
    batch_size=st.sampled_from([None, 4]),
    num_steps=st.sampled_from([0, 1, 2]),
    numpy_data=st.booleans(),
    where=st.tuples(st.integers(0, 7), st.integers(0, 1)),
    bad_value=st.sampled_from([np.nan, np.inf, -np.inf]),
    choice=st.integers(0, 4),
)
def test_fit_returns_the_exact_model_or_names_what_is_wrong(
    faults, batch_size, num_steps, numpy_data, where, bad_value, choice
):
    """Rows all 1.5 and loss mean((x - w)^2): SGD with step 0.25 from w = 0 gives
    w_n = 1.5 (1 - 0.75^n) exactly, whatever the minibatches. Any call either returns that, or
    raises naming a broken argument; never a non-finite or different model."""
    x, y = np.full((8, 2), 1.5, np.float32), np.zeros(8, np.float32)
    if "x_nonfinite" in faults:
        x[where] = bad_value
    if "y_nonfinite" in faults:
        y[where[0]] = bad_value
    data = (x, y) if numpy_data else (jnp.asarray(x), jnp.asarray(y))
    if "leading_axes" in faults:
        data = (data[0], data[1][:7])

    def pick(*options):
        return options[choice % len(options)]

    def loss(w, batch, key):
        if "loss_shape" in faults:
            return pick((batch[0] - w) ** 2, jnp.mean(batch[0] - w, axis=0))
        if "loss_dtype" in faults:
            return pick(jnp.sum(batch[0] > w), jnp.mean(batch[0] - w) + 0j)
        return jnp.mean((batch[0] - w) ** 2)

    model = pick(jnp.array([jnp.nan, 0.0]), jnp.array([0.0, -jnp.inf]))
    kw = dict(
        optimizer=optax.sgd(0.25),
        num_steps=num_steps,
        batch_size=batch_size,
        key=jax.random.PRNGKey(0),
        progress=False,
        steps_per_call=2,
    )
    for fault, name, bad in (
        ("batch_size", "batch_size", (0, 9, True, 2.5, "4")),
        ("num_steps", "num_steps", (-1, 1.5, True, None, "2")),
        ("steps_per_call", "steps_per_call", (0, -2, 1.0)),
        ("key", "key", (0, jnp.zeros(2), None)),
        ("skip_nonfinite", "skip_nonfinite", (-1, 0.5, True)),
        ("ema_decay", "ema_decay", (1.0, -0.1, float("nan"))),
        ("microbatches", "microbatches", (0, 3, 1.0)),
    ):
        if fault in faults:
            kw[name] = pick(*bad)
    names = {name for fault in faults for name in _FAULTS[fault]}
    try:
        result = train.fit(loss, model if "model_nonfinite" in faults else jnp.zeros(2), data, **kw)
    except (ValueError, TypeError, FloatingPointError) as err:
        assert any(name in str(err) for name in names), (faults, err)
        return
    # Only a fault that this run never met may remain: a non-finite value the loss never read.
    assert faults <= {"x_nonfinite", "y_nonfinite"}, faults
    expected = 1.5 * (1 - 0.75**num_steps)
    np.testing.assert_allclose(np.asarray(result.model), [expected, expected], rtol=1e-6)


def test_with_step_passes_the_global_step_across_chunks_and_resumes(tmp_path):
    # loss = -step * w with SGD at rate 1: w grows by the step index at every step, so the final w
    # is the sum of the steps the loss saw, 0 + 1 + ... + (n - 1), however the run is chunked.
    def loss(model, batch, key, step):
        return -step.astype(model.dtype) * model[0] + 0.0 * jnp.sum(batch)

    data = jnp.zeros((4, 1))
    kw = dict(optimizer=optax.sgd(1.0), key=jax.random.PRNGKey(0), progress=False, with_step=True)
    r = train.fit(loss, jnp.zeros(1), data, num_steps=7, steps_per_call=3, **kw)
    assert float(r.model[0]) == sum(range(7))
    path = str(tmp_path / "ckpt.eqx")
    train.fit(loss, jnp.zeros(1), data, num_steps=4, steps_per_call=2, checkpoint_path=path, **kw)
    resumed = train.fit(
        loss, jnp.zeros(1), data, num_steps=7, steps_per_call=3, checkpoint_path=path, **kw
    )
    assert float(resumed.model[0]) == sum(range(7))
