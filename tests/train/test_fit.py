import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

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


def _leaves(m):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(eqx.filter(m, eqx.is_array))]


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
    for u, v in zip(_leaves(a.model), _leaves(b.model), strict=True):
        np.testing.assert_array_equal(u, v)


def test_microbatches_take_the_full_batch_step(x64):
    """Accumulating a mean loss over equal parts of the minibatch is the full-batch step."""
    model, data, loss = _problem()
    kw = dict(optimizer=optax.adam(1e-2), num_steps=40, batch_size=32, progress=False)
    a = train.fit(loss, model, data, key=jax.random.PRNGKey(3), **kw)
    b = train.fit(loss, model, data, key=jax.random.PRNGKey(3), microbatches=4, **kw)
    for u, v in zip(_leaves(a.model), _leaves(b.model), strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-12)
    # The building block on its own, for hand-written steps (key None is allowed).
    vg = jax.value_and_grad(lambda m, b, k: loss(m, b, k))
    whole, parts = vg(model, data, None), train.microbatched(vg, 8)(model, data, None)
    for u, v in zip(
        jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(parts), strict=True
    ):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-14)
    # Each part gets its own key: fold_in(key of the step, part index).
    seen = []

    def keyed(m, batch, k):
        jax.debug.callback(lambda k: seen.append(np.asarray(k)), jax.random.key_data(k))
        return loss(m, batch, k)

    train.fit(
        keyed, model, data, key=jax.random.PRNGKey(3), **{**kw, "num_steps": 1}, microbatches=2
    )
    assert len(seen) == 2 and not np.array_equal(seen[0], seen[1])
    for bad, match in ((3, "must divide"), (0, "positive int"), (2.0, "positive int")):
        with pytest.raises(ValueError, match=match):
            train.fit(loss, model, data, key=jax.random.PRNGKey(3), microbatches=bad, **kw)


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
