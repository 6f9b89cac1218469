"""SpectralConv: equivariance, resolution invariance, both-sign modes, factorisations, errors."""

import math

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import operators as ops

from ._helpers import apply, trig_field, trig_interpolant


def _identity_weights(layer):
    """The layer with W[i, o, k] = delta_io: it then keeps exactly the modes it holds."""
    eye = jnp.eye(layer.in_channels, layer.out_channels, dtype=layer.weights.weight.dtype)
    w = jnp.broadcast_to(eye.reshape(eye.shape + (1,) * layer.num_spatial_dims), layer.weight_shape)
    return eqx.tree_at(lambda m: m.weights.weight, layer, jnp.stack([w, jnp.zeros_like(w)]))


@pytest.mark.parametrize("shape", [(33,), (15, 13)])
def test_roll_commutes_exactly_and_the_layer_is_linear_and_real(x64, shape):
    d = len(shape)
    modes = tuple(min(5, n // 2) for n in shape)
    layer = ops.SpectralConv(d, 3, 2, modes, key=jax.random.PRNGKey(0))
    x, z = jax.random.normal(jax.random.PRNGKey(1), (2, 3, *shape))
    for axis in range(d):
        for shift in (1, shape[axis] // 2 + 1):
            a = apply(layer, jnp.roll(x, shift, axis=1 + axis))
            b = jnp.roll(apply(layer, x), shift, axis=1 + axis)
            np.testing.assert_allclose(a, b, atol=1e-12)
    np.testing.assert_allclose(
        apply(layer, 1.7 * x - 0.3 * z), 1.7 * apply(layer, x) - 0.3 * apply(layer, z), atol=1e-12
    )
    out = apply(layer, x)
    assert out.shape == (2, *shape) and out.dtype == jnp.float64 and not jnp.iscomplexobj(out)
    leaves = jax.tree_util.tree_leaves(eqx.filter(layer, eqx.is_array))
    assert all(not jnp.iscomplexobj(w) for w in leaves)
    # The bias is a constant per output channel, and shifts commute with it too.
    biased = ops.SpectralConv(d, 3, 2, modes, key=jax.random.PRNGKey(0), use_bias=True)
    np.testing.assert_allclose(
        apply(biased, x) - apply(layer, x),
        jnp.broadcast_to(biased.bias.reshape((-1,) + (1,) * d), out.shape),
        atol=1e-12,
    )


@pytest.mark.parametrize("transform", ["fft", "dft"])
def test_band_limited_input_gives_the_same_function_on_every_grid(x64, transform):
    # Input frequencies 0..6 (beyond the 5 kept modes, but resolved without aliasing on all
    # grids): the output is the same trigonometric polynomial sampled on N, 2N and an odd N.
    m = 5
    layer = ops.SpectralConv(1, 2, 3, m, key=jax.random.PRNGKey(2), transform=transform)
    rng = np.random.default_rng(0)
    coefs = rng.normal(size=(2, 7)) + 1j * rng.normal(size=(2, 7))
    coefs[:, 0] = coefs[:, 0].real

    def sample(n):
        x = np.arange(n) / n
        return np.real(
            np.einsum(
                "ck,kn->cn",
                coefs * np.where(np.arange(7) == 0, 1, 2),
                np.exp(2j * np.pi * np.outer(np.arange(7), x)),
            )
        )

    outs = {n: np.asarray(apply(layer, jnp.asarray(sample(n)))) for n in (16, 32, 21)}
    np.testing.assert_allclose(outs[32][:, ::2], outs[16], atol=1e-12)
    points = np.arange(21) / 21
    np.testing.assert_allclose(trig_interpolant(outs[16], points), outs[21], atol=1e-12)
    np.testing.assert_allclose(trig_interpolant(outs[32], points), outs[21], atol=1e-12)
    # The output's spectrum is exactly the kept modes, identical across grids.
    for n in (16, 32, 21):
        np.testing.assert_allclose(
            ops.rfft_modes(outs[n], (m,)), ops.rfft_modes(outs[16], (m,)), atol=1e-12
        )


def test_band_limited_resolution_invariance_2d(x64):
    layer = ops.SpectralConv(2, 1, 2, (3, 4), key=jax.random.PRNGKey(3))
    rng = np.random.default_rng(1)
    yh = rng.normal(size=(1, 6, 4)) + 1j * rng.normal(size=(1, 6, 4))
    yh[:, 3] = 0.0  # keep |k_1| < 3 so that the input is a real field inside the modes

    outs = {s: apply(layer, jnp.asarray(trig_field(yh, s))) for s in [(8, 8), (16, 16), (9, 11)]}
    np.testing.assert_allclose(outs[(16, 16)][:, ::2, ::2], outs[(8, 8)], atol=1e-12)
    ref = ops.rfft_modes(outs[(8, 8)], (3, 4))
    for s, out in outs.items():
        np.testing.assert_allclose(ops.rfft_modes(out, (3, 4)), ref, atol=1e-12)
        np.testing.assert_allclose(out, ops.irfft_modes(ref, s), atol=1e-12)


@pytest.mark.parametrize("transform", ["pruned-fft", "fft", "dft"])
def test_both_sign_modes_are_kept(transform):
    # cos(2 pi (3x - 2y)) lives at (k1, k2) = (+-3, -+2); in the real-FFT half plane that is
    # (-3, 2): only a layer that keeps negative frequencies on the first axis sees it.
    n = 16
    xx, yy = np.meshgrid(np.arange(n) / n, np.arange(n) / n, indexing="ij")
    layer = _identity_weights(
        ops.SpectralConv(2, 1, 1, (4, 4), key=jax.random.PRNGKey(0), transform=transform)
    )
    for u in (
        np.cos(2 * np.pi * (3 * xx - 2 * yy)),
        np.cos(2 * np.pi * (3 * xx + 2 * yy)),
        np.sin(2 * np.pi * (-2 * xx + 3 * yy)),
    ):
        out = apply(layer, jnp.asarray(u[None], jnp.float32))
        np.testing.assert_allclose(out[0], u, atol=1e-5)
    # A mode outside the kept box is removed.
    out = apply(layer, jnp.asarray(np.cos(2 * np.pi * (5 * xx - 2 * yy))[None], jnp.float32))
    np.testing.assert_allclose(out, 0.0, atol=1e-5)


@pytest.mark.parametrize("factorization", ["tucker", "cp"])
def test_factorised_contraction_equals_its_dense_tensor(x64, factorization):
    # The factor-by-factor contraction equals the dense layer built from the reconstructed tensor.
    layer = ops.SpectralConv(
        2, 2, 3, (2, 3), key=jax.random.PRNGKey(6), factorization=factorization, rank=0.4
    )
    dense = ops.SpectralConv(2, 2, 3, (2, 3), key=jax.random.PRNGKey(0))
    w = layer.to_dense()
    dense = eqx.tree_at(lambda m: m.weights.weight, dense, jnp.stack([w.real, w.imag]))
    x = jax.random.normal(jax.random.PRNGKey(7), (2, 8, 7))
    np.testing.assert_allclose(apply(layer, x), apply(dense, x), atol=1e-12)


def test_full_rank_factorisations_equal_the_dense_layer(x64):
    cin, cout, modes = 2, 3, (2, 3)
    dense = ops.SpectralConv(2, cin, cout, modes, key=jax.random.PRNGKey(8))
    w = dense.to_dense()  # (cin, cout, 4, 3)
    dims = w.shape
    x = jax.random.normal(jax.random.PRNGKey(9), (cin, 8, 7))

    def store(a):
        return jnp.stack([jnp.real(a), jnp.imag(a)])

    # Tucker at full rank: core = W, factors = identities.
    tucker = ops.SpectralConv(
        2, cin, cout, modes, key=jax.random.PRNGKey(1), factorization="tucker", rank=dims
    )
    tucker = eqx.tree_at(
        lambda m: (m.weights.core, m.weights.factors),
        tucker,
        (store(w), tuple(store(jnp.eye(n, dtype=w.dtype)) for n in dims)),
    )
    np.testing.assert_allclose(apply(tucker, x), apply(dense, x), atol=1e-12)
    # CP with one rank-one term per (i, o, k_1): rank cin * cout * 4 is enough for any tensor.
    rank = cin * cout * dims[2]
    a = np.zeros((cin, rank), complex)
    b = np.zeros((cout, rank), complex)
    c1 = np.zeros((dims[2], rank), complex)
    c2 = np.zeros((dims[3], rank), complex)
    r = 0
    for i in range(cin):
        for o in range(cout):
            for k in range(dims[2]):
                a[i, r] = b[o, r] = c1[k, r] = 1.0
                c2[:, r] = np.asarray(w[i, o, k])
                r += 1
    cp = ops.SpectralConv(
        2, cin, cout, modes, key=jax.random.PRNGKey(1), factorization="cp", rank=rank
    )
    cp = eqx.tree_at(
        lambda m: m.weights.factors, cp, tuple(store(jnp.asarray(f)) for f in (a, b, c1, c2))
    )
    np.testing.assert_allclose(apply(cp, x), apply(dense, x), atol=1e-12)


def test_parameter_counts_match_their_formulas():
    cin, cout, modes = 6, 5, (4, 3)
    dims = (cin, cout, 8, 3)
    key = jax.random.PRNGKey(0)
    dense = ops.SpectralConv(2, cin, cout, modes, key=key, use_bias=True)
    assert ops.count_params(dense) == 2 * cin * cout * 8 * 3 + cout
    tucker = ops.SpectralConv(
        2, cin, cout, modes, key=key, factorization="tucker", rank=(3, 2, 4, 2)
    )
    assert ops.count_params(tucker) == 2 * (3 * 2 * 4 * 2 + 6 * 3 + 5 * 2 + 8 * 4 + 3 * 2)
    cp = ops.SpectralConv(2, cin, cout, modes, key=key, factorization="cp", rank=7)
    assert ops.count_params(cp) == 2 * 7 * sum(dims)
    # A float rank is a fraction of the dense count; the factorisation stays within it.
    for frac in (0.1, 0.5):
        t = ops.SpectralConv(2, cin, cout, modes, key=key, factorization="tucker", rank=frac)
        c = ops.SpectralConv(2, cin, cout, modes, key=key, factorization="cp", rank=frac)
        dense_count = 2 * math.prod(dims)
        assert ops.count_params(t) <= frac * dense_count
        assert abs(ops.count_params(c) - frac * dense_count) <= 2 * sum(dims)


def test_factorised_forward_never_builds_the_dense_tensor():
    # The jaxpr of a factorised layer holds no intermediate of the dense weight's size.
    cin = cout = 16
    layer = ops.SpectralConv(
        2, cin, cout, (6, 6), key=jax.random.PRNGKey(0), factorization="tucker", rank=0.05
    )
    dense_size = cin * cout * 12 * 6
    jaxpr = jax.make_jaxpr(layer)(jnp.zeros((cin, 16, 16)))

    def sizes(jx):
        for eqn in jx.eqns:
            for v in eqn.outvars:
                yield math.prod(v.aval.shape)
            for p in eqn.params.values():
                inner = getattr(p, "jaxpr", p)
                if hasattr(inner, "eqns"):
                    yield from sizes(inner)

    assert max(sizes(jaxpr.jaxpr)) < dense_size


def test_weights_are_real_and_one_optax_adam_step_works():
    layer = ops.SpectralConv(1, 2, 2, 4, key=jax.random.PRNGKey(0), factorization="cp", rank=3)
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 2, 16))
    target = jnp.roll(x, 3, axis=-1)
    opt = optax.adam(1e-2)
    params, static = eqx.partition(layer, eqx.is_inexact_array)
    state = opt.init(params)

    def loss(p):
        return jnp.mean((jax.vmap(eqx.combine(p, static))(x) - target) ** 2)

    @jax.jit
    def step(p, s):
        val, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, val

    p1, state, l0 = step(params, state)
    chex.assert_type(jax.tree_util.tree_leaves(p1), jnp.float32)
    chex.assert_tree_all_finite(p1)
    _, _, l1 = step(p1, state)
    assert l1 < l0


def test_bad_inputs_raise_clear_errors():
    layer = ops.SpectralConv(2, 3, 4, (5, 4), key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"modes\[0\]=5.*at least 10 points.*has 8"):
        layer(jnp.zeros((3, 8, 16)))
    with pytest.raises(ValueError, match=r"modes\[1\]=4.*at least 7 points.*has 6"):
        layer(jnp.zeros((3, 16, 6)))
    with pytest.raises(
        ValueError, match=r"expects 3 input channels, shape \(in_channels=3, n1, n2\)"
    ):
        layer(jnp.zeros((2, 16, 16)))
    with pytest.raises(ValueError, match=r"batch of 7 samples.*jax\.vmap"):
        layer(jnp.zeros((7, 3, 16, 16)))
    with pytest.raises(ValueError, match="2 spatial axes"):
        layer(jnp.zeros((3, 16)))
    with pytest.raises(ValueError, match="factorization"):
        ops.SpectralConv(1, 1, 1, 2, key=jax.random.PRNGKey(0), factorization="tt")
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        ops.SpectralConv(2, 1, 1, (2, 2, 2), key=jax.random.PRNGKey(0))
    # Under vmap, a batch is fine.
    assert jax.vmap(layer)(jnp.zeros((7, 3, 16, 16))).shape == (7, 4, 16, 16)
