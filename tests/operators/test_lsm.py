"""LSM: any grid (padded, masked, cropped: the padding leaves no trace), tokens summarise a patch
as a set, the latent spectral solver is its basis expansion, and the model trains."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve.operators._lsm import LSM, NeuralSpectralBlock
from jaxsolve.train import fit


def _small_lsm(d, **kw):
    args = dict(
        width=4,
        key=jax.random.key(0),
        channel_multipliers=(1, 2),
        patch_size=2,
        num_tokens=2,
        num_basis=3,
        heads=2,
        projection_channels=8,
    )
    args.update(kw)
    return LSM(d, 2, 1, **args)


def _numpy_weights(make, *args, seed=0, **kw):
    """``make(*args, **kw)`` in float64 with every weight and bias drawn in NumPy (nonzero biases,
    and no compilation of random draws per array shape): the abstract module, filled."""
    abstract = eqx.filter_eval_shape(make, *args, dtype=jnp.float64, **kw)
    rng = np.random.default_rng(seed)

    def fill(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        scale = 0.1 if len(leaf.shape) < 2 else 1.0 / np.sqrt(np.prod(leaf.shape[1:]))
        return jnp.asarray(scale * rng.normal(size=leaf.shape))

    return jax.tree.map(fill, abstract, is_leaf=lambda a: isinstance(a, jax.ShapeDtypeStruct))


def test_padded_grid_is_the_next_multiple_of_levels_and_patches():
    # Three levels (two halvings) and patches of (3, 2): every axis a multiple of (12, 8).
    model = eqx.filter_eval_shape(_small_lsm, 2, channel_multipliers=(1, 2, 2), patch_size=(3, 2))
    assert model.multiple == (12, 8)
    assert model.padded_shape((9, 7)) == (12, 8)
    assert model.padded_shape((12, 16)) == (12, 16)  # already a multiple: no padding
    assert model.padded_shape((13, 17)) == (24, 24)
    assert model.padded_shape((1, 1)) == (12, 8)


@pytest.mark.parametrize("shape", [(16,), (9, 7), (12, 5), (5, 6, 3)])
def test_output_shape_on_odd_and_even_grids(shape):
    # (An odd 1-D grid runs for real in the padding test below.)
    # Shapes only: an abstract model and forward pass (nothing drawn, nothing compiled).
    model = eqx.filter_eval_shape(_small_lsm, len(shape))
    x = jax.ShapeDtypeStruct((3, 2, *shape), jnp.float32)
    out = eqx.filter_eval_shape(lambda m, x: jax.vmap(m)(x), model, x)
    assert out.shape == (3, 1, *shape)


@pytest.mark.parametrize(
    ("shape", "larger"),
    [
        pytest.param((13,), (24,), id="1d"),
        pytest.param((9, 7), (16, 12), id="2d", marks=pytest.mark.slow),
    ],
)
def test_output_does_not_depend_on_how_far_the_grid_is_padded(x64, shape, larger):
    # The pointwise projection after the crop plays no part here; ReLU compiles faster than GELU.
    model = _numpy_weights(_small_lsm, len(shape), projection_channels=0, activation=jax.nn.relu)
    assert all(p < q for p, q in zip(model.padded_shape(shape), larger, strict=True))
    x = np.random.default_rng(1).normal(size=(3, 2, *shape))

    @jax.jit
    def both(x):  # jit and vmap, one compilation
        return jax.vmap(model)(x), jax.vmap(lambda u: model(u, padded_shape=larger))(x)

    y_min, y_far = both(x)
    assert y_min.shape == (3, 1, *shape)
    # The masked cells are zero at every layer, so the valid cells see the same zeros past the
    # boundary however many padded cells (and patches) follow; without the mask the extra cells
    # would carry the biases into the boundary cells through the convolutions.
    np.testing.assert_allclose(y_far, y_min, rtol=0, atol=1e-13)
    assert np.mean(np.std(np.asarray(y_min), axis=0)) > 1e-3  # the output does depend on x


def _block(**kw):
    return _numpy_weights(
        NeuralSpectralBlock,
        2,
        4,
        key=jax.random.key(2),
        patch_size=(2, 3),
        num_tokens=3,
        num_basis=4,
        heads=2,
        **kw,
    )


def test_tokens_summarise_a_patch_as_a_set(x64):
    block = _block()
    rng = np.random.default_rng(0)
    points = rng.normal(size=(6, 4))
    mask = np.array([True, True, False, True, True, False])
    perm = rng.permutation(6)
    padding_changed = np.where(mask[:, None], points, 1e3)
    valid_changed = points.copy()
    valid_changed[0] += 1.0

    @jax.jit
    def run(points, masks):  # one compilation for every evaluation below
        tokens = jax.vmap(block.encode)(points, masks)
        back = jax.vmap(block.decode, in_axes=(0, None))(points[:2], tokens[0])
        return tokens, back

    tokens, back = run(
        np.stack([points, points[perm], padding_changed, valid_changed]),
        np.stack([mask, mask[perm], mask, mask]),
    )
    # Invariant to the order of the points...
    np.testing.assert_allclose(tokens[1], tokens[0], rtol=0, atol=1e-14)
    # ... blind to the masked ones (padding) ...
    np.testing.assert_allclose(tokens[2], tokens[0], rtol=0, atol=1e-14)
    # ... and not to the valid ones (a test that can fail).
    assert np.max(np.abs(tokens[3] - tokens[0])) > 1e-3
    # Going back, each point queries the tokens by itself: the map is equivariant.
    np.testing.assert_allclose(back[1], back[0][perm], rtol=0, atol=1e-14)


@pytest.mark.parametrize("per_token", [False, True])
def test_latent_spectral_solver_is_its_basis_expansion(x64, per_token):
    block = _block(per_token_coefficients=per_token)
    rng = np.random.default_rng(1)
    coef = rng.normal(size=block.coefficients.shape)
    block = eqx.tree_at(lambda b: b.coefficients, block, jnp.asarray(coef))
    tokens = rng.normal(size=(3, 4)) * 2.0
    out = np.asarray(eqx.filter_jit(NeuralSpectralBlock.latent_spectral)(block, tokens))
    m = 4
    expected = np.empty_like(tokens)
    for k in range(3):
        for c in range(4):
            a = coef[k if per_token else 0, c]
            t = tokens[k, c]
            expected[k, c] = t + sum(
                a[j] * np.sin(np.pi * j / m * t) + a[m + j] * np.cos(np.pi * j / m * t)
                for j in range(m)
            )
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-13)


def test_block_works_patch_by_patch(x64):
    # The block on a grid is, on each patch of contiguous cells, decode(encode -> solver).
    block = _block()
    x = np.random.default_rng(2).normal(size=(4, 4, 6))
    corners = [(0, 0), (0, 3), (2, 0), (2, 3)]
    patches = np.stack([x[:, i : i + 2, j : j + 3].reshape(4, -1).T for i, j in corners])

    @jax.jit
    def run(x, patches):
        def one(pts):
            return block.decode(pts, block.latent_spectral(block.encode(pts)))

        return block(x), jax.vmap(one)(patches)

    y, expected = run(x, patches)
    got = np.stack([np.asarray(y)[:, i : i + 2, j : j + 3].reshape(4, -1).T for i, j in corners])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-13)


@pytest.mark.slow
def test_jit_vmap_grad_and_a_short_fit():
    # train.fit compiles the vmapped loss and its gradient; a few Adam steps lower the loss.
    model = _small_lsm(1)
    grid = jnp.arange(11) / 11
    a = jax.random.normal(jax.random.key(3), (8, 1, 1))
    x = jnp.concatenate([jnp.sin(2 * jnp.pi * a * grid), jnp.broadcast_to(a, (8, 1, 11))], 1)
    data = (x, jnp.cos(2 * jnp.pi * a * grid))

    def loss(model, batch, key=None):
        x, target = batch
        return jnp.mean((jax.vmap(model)(x) - target) ** 2)

    before = float(eqx.filter_jit(loss)(model, data))
    result = fit(
        loss,
        model,
        data,
        optimizer=optax.adam(1e-2),
        num_steps=40,
        key=jax.random.key(4),
        steps_per_call=40,
        progress=False,
    )
    after = float(eqx.filter_jit(loss)(result.model, data))
    assert np.isfinite(after) and after < 0.5 * before


@pytest.mark.wrong_argument_types
def test_bad_arguments():
    with pytest.raises(ValueError, match="heads"):
        NeuralSpectralBlock(1, 6, key=jax.random.key(0), heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        NeuralSpectralBlock(2, 4, key=jax.random.key(0), heads=2, patch_size=(2, 2, 2))
    model = eqx.filter_eval_shape(_small_lsm, 1)
    with pytest.raises(ValueError, match="padded_shape"):
        model(jnp.zeros((2, 13)), padded_shape=(18,))
    with pytest.raises(ValueError, match=r"batch of 3.*jax\.vmap"):
        model(jnp.zeros((3, 2, 13)))
