"""DeepONet and MultiONet: the defining formulas, query batching, a small fit, errors."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import operators as ops

from ._helpers import apply


def _mlp(layers, x, act, act_last):
    for i, lin in enumerate(layers):
        x = np.asarray(lin.weight) @ x + np.asarray(lin.bias)
        if act_last or i < len(layers) - 1:
            x = act(x)
    return x


def test_deeponet_is_the_branch_trunk_inner_product(x64):
    model = ops.DeepONet(
        (2, 10), 2, 3, latent=4, branch_widths=[16], trunk_widths=[8, 8], key=jax.random.PRNGKey(0)
    )
    model = eqx.tree_at(lambda m: m.bias, model, jnp.array([0.1, -0.2, 0.3]))
    rng = np.random.default_rng(0)
    u, y = rng.normal(size=(2, 10)), rng.uniform(size=(7, 2))
    out = apply(model, u, y)
    chex.assert_shape(out, (3, 7))
    b = _mlp(model.branch, u.reshape(-1), np.tanh, False).reshape(3, 4)
    expected = np.stack(
        [(b * _mlp(model.trunk, q, np.tanh, True).reshape(3, 4)).sum(-1) for q in y], axis=1
    )
    np.testing.assert_allclose(out, expected + np.array([0.1, -0.2, 0.3])[:, None], atol=1e-12)
    # One query point is the matching column; vmap over functions is the batch.
    np.testing.assert_allclose(apply(model, u, y[3]), out[:, 3], atol=1e-12)
    batched = jax.vmap(model, in_axes=(0, None))(jnp.stack([u, 2 * u]), y)
    np.testing.assert_allclose(batched[0], out, atol=1e-12)


def test_multionet_sums_inner_products_over_hidden_layers(x64):
    model = ops.MultiONet(12, 1, 2, width=6, depth=4, n_sum=3, key=jax.random.PRNGKey(1))
    model = eqx.tree_at(
        lambda m: (m.layer_weights, m.bias),
        model,
        (jnp.array([0.5, -1.0, 2.0]), jnp.array([0.25, 0.0])),
    )
    rng = np.random.default_rng(1)
    u, y = rng.normal(size=12), rng.uniform(size=(5, 1))

    def hidden(layers, x, act):
        hs = []
        for lin in layers:
            x = act(np.asarray(lin.weight) @ x + np.asarray(lin.bias))
            hs.append(x)
        return hs

    silu = lambda v: v / (1 + np.exp(-v))
    hb = hidden(model.branch, u, silu)[-3:]
    expected = np.zeros((2, 5))
    for n, q in enumerate(y):
        ht = hidden(model.trunk, q, np.tanh)[-3:]
        for w, b, t in zip([0.5, -1.0, 2.0], hb, ht, strict=True):
            expected[:, n] += w * (b.reshape(2, 3) * t.reshape(2, 3)).sum(-1) / 3
    np.testing.assert_allclose(
        apply(model, u, y), expected + np.array([0.25, 0.0])[:, None], atol=1e-12
    )
    # n_sum = 1 with one output is a DeepONet whose latent size is the width.
    assert ops.MultiONet(4, 1, width=5, depth=2, n_sum=1, key=jax.random.PRNGKey(0)).n_sum == 1


def test_multionet_learns_an_antiderivative():
    # G(u)(y) = int_0^y u for u = a cos(2 pi x) + b: a small linear operator, fitted to < 5%.
    sensors = jnp.linspace(0, 1, 16)
    queries = jnp.linspace(0, 1, 12)[:, None]

    def data(key, n):
        a, b = jax.random.normal(key, (2, n, 1))
        u = a * jnp.cos(2 * jnp.pi * sensors) + b
        g = a * jnp.sin(2 * jnp.pi * queries[:, 0]) / (2 * jnp.pi) + b * queries[:, 0]
        return u, g[:, None, :]

    u_tr, g_tr = data(jax.random.PRNGKey(0), 64)
    u_te, g_te = data(jax.random.PRNGKey(1), 32)
    model = ops.MultiONet(16, 1, width=24, depth=3, key=jax.random.PRNGKey(2))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(3e-3)

    def loss(p, u, g):
        pred = jax.vmap(eqx.combine(p, static), in_axes=(0, None))(u, queries)
        return jnp.mean(jax.vmap(ops.relative_lp_loss)(pred, g))

    @jax.jit
    def fit(p):
        def body(c, _):
            p, s = c
            val, gr = jax.value_and_grad(loss)(p, u_tr, g_tr)
            upd, s = opt.update(gr, s, p)
            return (optax.apply_updates(p, upd), s), val

        (p, _), hist = jax.lax.scan(body, (p, opt.init(p)), None, length=600)
        return hist, loss(p, u_te, g_te)

    hist, test = fit(params)
    assert float(hist[0]) > 0.5 and float(test) < 0.05


def test_bad_inputs():
    model = ops.DeepONet(
        8, 2, latent=3, branch_widths=[4], trunk_widths=[4], key=jax.random.PRNGKey(0)
    )
    with pytest.raises(ValueError, match=r"batch of 5.*jax\.vmap"):
        apply(model, jnp.zeros((5, 8)), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"in_shape=\(8,\)"):
        apply(model, jnp.zeros(7), jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"coord_dim=2"):
        apply(model, jnp.zeros(8), jnp.zeros((3, 3)))
    with pytest.raises(ValueError, match="divisible"):
        ops.MultiONet(8, 1, 3, width=4, depth=2, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="n_sum"):
        ops.MultiONet(8, 1, width=4, depth=2, n_sum=3, key=jax.random.PRNGKey(0))


@pytest.mark.wrong_argument_types
def test_bad_sizes_name_the_argument():
    """Issue 17: DeepONet(branch_widths=[0]) raised ZeroDivisionError; a NaN size "cannot
    convert float NaN to integer"; MultiONet(out_channels=0) ZeroDivisionError."""
    key = jax.random.PRNGKey(0)
    kw = dict(latent=3, branch_widths=[4], trunk_widths=[4], key=key)
    cases = [
        (lambda: ops.DeepONet(8, 2, **{**kw, "branch_widths": [0]}), "branch_widths must hold"),
        (lambda: ops.DeepONet(8, 2, **{**kw, "trunk_widths": [4, -1]}), "trunk_widths"),
        (lambda: ops.DeepONet(8, 2, **{**kw, "latent": float("nan")}), "latent"),
        (lambda: ops.DeepONet(8, 0, **kw), "coord_dim"),
        (lambda: ops.DeepONet((8, 0), 2, **kw), "in_shape"),
        (lambda: ops.DeepONet(8, 2, 2.5, **kw), "out_channels"),
        (lambda: ops.MultiONet(8, 1, 0, width=4, depth=2, key=key), "out_channels"),
        (lambda: ops.MultiONet(8, 1, width=0, depth=2, key=key), "width"),
        (lambda: ops.MultiONet(8, 0, width=4, depth=2, key=key), "coord_dim"),
        (lambda: ops.MultiONet(8, 1, width=4, depth=2, n_sum=1.5, key=key), "n_sum"),
    ]
    for build, name in cases:
        # A non-int size (nan, 2.5, 1.5) is a TypeError, an int out of range a ValueError.
        with pytest.raises((ValueError, TypeError), match=name):
            build()
    with pytest.raises(TypeError, match="trunk_widths must be a sequence"):
        ops.DeepONet(8, 2, **{**kw, "trunk_widths": 4})
