"""Coordinate networks: initialisation ranges, the modified MLP's gate, PIG's Gaussian sum,
Fourier features, and jit/vmap/grad against eager evaluation and finite differences."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._networks import (
    MLP,
    SIREN,
    FourierFeatures,
    ModifiedMLP,
    PhysicsInformedGaussians,
)


def test_siren_initialisation_ranges(x64):
    net = SIREN(3, 2, 64, 3, key=jax.random.key(0))
    first = np.asarray(net.layers[0].weight)
    assert first.shape == (64, 3)
    assert np.max(np.abs(first)) <= 1 / 3 and np.max(np.abs(first)) > 0.9 / 3
    for layer in net.layers[1:]:
        w, b = np.asarray(layer.weight), np.asarray(layer.bias)
        bound = math.sqrt(6 / w.shape[1]) / 30
        assert np.max(np.abs(w)) <= bound and np.max(np.abs(w)) > 0.8 * bound
        assert np.max(np.abs(b)) <= 1 / math.sqrt(w.shape[1])
    # the first layer is sin(30 (W x + b))
    x = np.array([0.1, -0.2, 0.3])
    w = [(np.asarray(layer.weight), np.asarray(layer.bias)) for layer in net.layers]
    h = x
    for a, b in w[:-1]:
        h = np.sin(30 * (a @ h + b))
    out = w[-1][0] @ h + w[-1][1]
    np.testing.assert_allclose(eqx.filter_jit(net)(x), out, rtol=1e-12, atol=1e-14)


def test_modified_mlp_gate_zero_gives_encoder_u(x64):
    net = ModifiedMLP(2, 3, 8, 2, key=jax.random.key(1))
    x = np.array([0.3, -0.8])
    # Z = tanh(0 H + 0) = 0 in every gated layer, so H = U
    closed = eqx.tree_at(
        lambda m: [g.weight for g in m.gates] + [g.bias for g in m.gates],
        net,
        [np.zeros(g.weight.shape) for g in net.gates] + [np.zeros(g.bias.shape) for g in net.gates],
    )
    # Z = tanh(b) with a large b: Z = 1 to round-off, so H = V
    opened = eqx.tree_at(
        lambda m: [g.weight for g in m.gates] + [g.bias for g in m.gates],
        net,
        [np.zeros(g.weight.shape) for g in net.gates]
        + [np.full(g.bias.shape, 30.0) for g in net.gates],
    )
    got_closed, got_opened = eqx.filter_jit(lambda a, b: (a(x), b(x)))(closed, opened)
    n = jax.tree.map(np.asarray, net)
    u = np.tanh(n.encoder_u.weight @ x + n.encoder_u.bias)
    v = np.tanh(n.encoder_v.weight @ x + n.encoder_v.bias)
    np.testing.assert_allclose(got_closed, n.output.weight @ u + n.output.bias, rtol=1e-14)
    np.testing.assert_allclose(got_opened, n.output.weight @ v + n.output.bias, rtol=1e-14)


def _gaussian_sum(x, means, covs, feats):
    out = np.zeros(feats.shape[1])
    for mu, cov, f in zip(means, covs, feats, strict=True):
        r = x - mu
        out += f * np.exp(-0.5 * r @ np.linalg.solve(cov, r))
    return out


def test_pig_equals_closed_form_gaussian_sum(x64):
    means = np.array([[0.1, -0.3], [-0.5, 0.4]])
    scales = np.array([[0.3, 0.8], [0.5, 0.2]])
    feats = np.array([[1.0, -2.0, 0.5], [0.3, 0.7, -1.1]])
    shear = np.zeros((2, 2, 2))
    shear[:, 1, 0] = [0.9, -1.4]
    xs = np.array([[0.0, 0.0], [0.2, -0.1], [-0.7, 0.5]])
    a_diag = np.stack([np.diag(1 / s) for s in scales])
    pigs, factors = [], []
    for covariance in ("diagonal", "cholesky"):
        pig = PhysicsInformedGaussians(
            2, "scalar", 2, 3, key=jax.random.key(2), covariance=covariance
        )
        pig = eqx.tree_at(
            lambda m: (m.means, m.log_scales, m.features_),
            pig,
            (jnp.asarray(means), jnp.asarray(np.log(scales)), jnp.asarray(feats)),
        )
        if covariance == "cholesky":  # the diagonal and upper part of shear are ignored
            pig = eqx.tree_at(lambda m: m.shear, pig, jnp.asarray(shear + 5 * np.eye(2) + 3))
            shear_used = shear + 3 * np.tril(np.ones((2, 2)), -1)
        pigs.append(pig)
        factors.append(a_diag if covariance == "diagonal" else a_diag + shear_used)

    @eqx.filter_jit
    def run(pigs, x):
        return [(m.precision_factor(), jax.vmap(m.embed)(x), jax.vmap(m)(x)) for m in pigs]

    for pig, a, (factor, got, full) in zip(pigs, factors, run(pigs, xs), strict=True):
        np.testing.assert_allclose(factor, a, rtol=1e-15)
        covs = np.linalg.inv(np.einsum("nki,nkj->nij", a, a))  # Sigma = (A^T A)^-1
        expect = np.stack([_gaussian_sum(x, means, covs, feats) for x in xs])
        np.testing.assert_allclose(got, expect, rtol=1e-13)
        head = [(np.asarray(layer.weight), np.asarray(layer.bias)) for layer in pig.head]
        h = expect
        for w, b in head[:-1]:
            h = np.tanh(h @ w.T + b)
        out = (h @ head[-1][0].T + head[-1][1])[:, 0]
        np.testing.assert_allclose(full, out, rtol=1e-13)


def test_pig_initialisation(x64):
    pig = PhysicsInformedGaussians(2, 1, 64, 4, key=jax.random.key(3), bounds=(0.0, (2.0, 4.0)))
    means = np.asarray(pig.means)
    assert np.all(means >= 0) and np.all(means <= [2.0, 4.0])
    np.testing.assert_allclose(np.exp(pig.log_scales), np.broadcast_to([0.25, 0.5], (64, 2)))
    assert pig.shear is None and jax.eval_shape(pig, jnp.ones(2)).shape == (1,)


def test_fourier_features_fixed_matrix_and_formula(x64):
    ff = FourierFeatures(2, 100, sigma=3.0, key=jax.random.key(0))
    assert np.std(np.asarray(ff.B)) == pytest.approx(3.0, rel=0.1)
    x = jnp.array([0.2, -0.4])
    z = 2 * np.pi * np.asarray(ff.B) @ np.asarray(x)
    net = MLP(2, "scalar", 8, 1, key=jax.random.key(5), embedding=ff)
    learnable = FourierFeatures(2, 4, sigma=1.0, key=jax.random.key(4), trainable=True)

    @eqx.filter_jit
    def run(ff, net, learnable):
        return (
            ff(x),
            eqx.filter_grad(lambda m: m(x))(net),
            eqx.filter_grad(lambda m: jnp.sum(m(x)))(learnable),
        )

    feats, grads, grads_learnable = run(ff, net, learnable)
    expect = np.concatenate([np.cos(z), np.sin(z)])
    np.testing.assert_allclose(feats, expect, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(grads.embedding.B, 0.0)  # held fixed
    assert np.any(np.asarray(grads.layers[0].weight) != 0)
    assert np.any(np.asarray(grads_learnable.B) != 0)


def test_jit_vmap_grad(x64):
    # (MLP's gradient is checked with the Fourier features above)
    key = jax.random.key(6)
    nets = (
        ModifiedMLP(2, "scalar", 8, 2, key=key),
        SIREN(2, "scalar", 8, 2, key=key, w0=3.0, w0_hidden=3.0),
        PhysicsInformedGaussians(2, "scalar", 5, 3, key=key, covariance="cholesky"),
    )
    xs = jnp.asarray(np.random.default_rng(7).uniform(-1, 1, (3, 2)))
    eps = 1e-6

    def loss(m):
        u = jax.vmap(m)(xs)
        return jnp.sum(u**2), u

    def last_bias(m):
        if isinstance(m, ModifiedMLP):
            return m.output.bias
        return (m.head if isinstance(m, PhysicsInformedGaussians) else m.layers)[-1].bias

    @eqx.filter_jit
    def check(nets):
        out = []
        for m in nets:
            (value, u), grads = eqx.filter_value_and_grad(loss, has_aux=True)(m)
            out.append((value, u, m(xs[1]), last_bias(grads)))
        # finite difference along the gradient for PIG (centres, shapes, features, head)
        params, static = eqx.partition(nets[-1], eqx.is_inexact_array)
        g = eqx.filter(grads, eqx.is_inexact_array)

        def shifted(sign):
            moved = jax.tree.map(lambda p, d: p + sign * eps * d, params, g)
            return loss(eqx.combine(moved, static))[0]

        up, down = jax.vmap(shifted)(jnp.array([1.0, -1.0]))
        return out, (up - down) / (2 * eps), sum(jnp.sum(d * d) for d in jax.tree.leaves(g))

    out, fd, g2 = check(nets)
    for value, u, single, bias_grad in out:
        assert u.shape == (3,) and single.shape == ()
        assert single == pytest.approx(float(u[1]), rel=1e-14)  # vmap agrees with one point
        assert value == pytest.approx(float(np.sum(np.asarray(u) ** 2)), rel=1e-14)
        # d/db sum_i u_i^2 = 2 sum_i u_i for the output bias b
        np.testing.assert_allclose(bias_grad, [2 * np.sum(np.asarray(u))], rtol=1e-12)
    assert fd == pytest.approx(float(g2), rel=1e-6)


@pytest.mark.wrong_argument_types
def test_wrong_out_size_and_batch():
    with pytest.raises(ValueError, match="out_size"):
        MLP(2, "vector", 8, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        MLP(2, 1, 8, 1, key=jax.random.key(0))(jnp.zeros((5, 2)))


def test_bad_arguments(x64):
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="width"):
        ModifiedMLP(2, 1, 0, 1, key=key)
    with pytest.raises(ValueError, match="covariance"):
        PhysicsInformedGaussians(2, 1, 4, 2, key=key, covariance="full")
    with pytest.raises(ValueError, match="bounds"):
        PhysicsInformedGaussians(2, 1, 4, 2, key=key, bounds=(1.0, 0.0))
    with pytest.raises(ValueError, match="sigma"):
        FourierFeatures(2, 4, sigma=-1.0, key=key)
    with pytest.raises(ValueError, match="in_size=2"):
        MLP(2, 1, 8, 1, key=key)(jnp.zeros(3))
