"""UNO: grids follow the scalings, levels resample exactly, same function as neuraloperator."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._spectral import periodic_grid
from jaxsolve.operators._uno import UNO, UNOBlock, resample, uno_from_neuraloperator


@eqx.filter_jit
def _apply(model, x):
    # One compilation of the whole model: far cheaper than op-by-op dispatch.
    return jax.vmap(model)(x)


def _small_uno(d, **kw):
    args = dict(
        width=4,
        layer_channels=[4, 6, 6, 3],
        layer_modes=[3, 2, 2, 3],
        layer_scalings=[1.0, 0.5, 1.0, 2.0],
        key=jax.random.key(0),
        lifting_channels=0,
        projection_channels=4,
    )
    args.update(kw)
    return UNO(d, 2, 1, **args)


_GRIDS = [
    # Two levels: 21 -> round(10.5) = 10 -> round(21 * 0.5 * 2) = 21 (not 2 * 10: the last
    # level's grid is the input grid times the product of the scalings).
    ((21,), [0.5, 2.0], [(10,), (21,)], "neuraloperator"),
    (
        (13, 11),
        [[1, 1], [0.5, 1], [1, 2], [2, 0.5]],
        [(13, 11), (6, 11), (6, 22), (13, 11)],
        "spectral",
    ),
    ((12, 9), [1.0, 2.0, 1.0, 1.5], [(12, 9), (24, 18), (24, 18), (36, 27)], "neuraloperator"),
]


@pytest.mark.parametrize(("shape", "scalings", "expected", "method"), _GRIDS)
def test_output_grid_follows_the_scalings_on_odd_grids(shape, scalings, expected, method):
    n = len(scalings)
    kw = dict(
        layer_scalings=scalings,
        resample=method,
        layer_channels=[4, 6, 6, 3][-n:],
        layer_modes=[3, 2, 2, 3][-n:],
    )
    # Shapes only: an abstract model and an abstract forward pass (no weights drawn, no compile).
    model = eqx.filter_eval_shape(_small_uno, len(shape), **kw)
    assert model.level_shapes(shape) == tuple(expected)
    assert model.output_shape(shape) == expected[-1]
    x = jax.ShapeDtypeStruct((3, 2, *shape), jnp.float32)
    assert eqx.filter_eval_shape(lambda m, x: jax.vmap(m)(x), model, x).shape == (
        3,
        1,
        *expected[-1],
    )


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spectral", "neuraloperator"])
def test_forward_pass_on_an_odd_2d_grid(method):
    shape, scalings, expected, _ = _GRIDS[1]
    model = _small_uno(2, layer_scalings=scalings, resample=method)
    y = _apply(model, jax.random.normal(jax.random.key(1), (3, 2, *shape)))
    assert y.shape == (3, 1, *expected[-1])
    assert bool(jnp.all(jnp.isfinite(y)))


def _band_limited(shape, channels, kmax, seed=0):
    """Sum of low-frequency cosines/sines, sampled on ``shape`` (periodic grid on [0, 1))."""
    rng = np.random.default_rng(seed)
    x = np.asarray(periodic_grid(shape, dtype=jnp.float64))
    out = np.zeros((channels, *shape))
    for c in range(channels):
        for _ in range(4):
            k = rng.integers(-kmax, kmax + 1, size=len(shape))
            phase = 2 * np.pi * np.tensordot(k, x, axes=1) + rng.uniform(0, 2 * np.pi)
            out[c] += rng.standard_normal() * np.cos(phase)
    return jnp.asarray(out)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(15,), (9, 11)])
def test_spectral_resample_is_exact_on_band_limited_fields(x64, shape):
    u = lambda s: _band_limited(s, 2, kmax=2)
    for scale in (2.0, 0.7):
        out = tuple(round(n * scale) for n in shape)
        np.testing.assert_allclose(resample(u(shape), out), u(out), atol=1e-12)


@pytest.mark.slow
def test_a_level_gives_the_same_function_on_every_grid(x64):
    """A level evaluated from a coarse grid onto a fine one equals the level run on the fine grid:
    the spectral convolution and the spectral resampling of the skips see only the kept modes."""
    model = _small_uno(2, skip="linear", channel_mlp_expansion=None, positional_embedding=False)
    block: UNOBlock = model.blocks[1]
    coarse, fine = (9, 11), (18, 22)
    u = lambda s: _band_limited(s, block.conv.in_channels, kmax=2)
    run = eqx.filter_jit(lambda b, x, shape: b(x, shape))
    np.testing.assert_allclose(run(block, u(coarse), fine), run(block, u(fine), fine), atol=1e-12)
    np.testing.assert_allclose(
        run(block, u(fine), coarse), run(block, u(coarse), coarse), atol=1e-12
    )


def test_default_skips_are_u_shaped_and_concatenate_channels():
    model = eqx.filter_eval_shape(
        _small_uno,
        1,
        layer_channels=[4, 5, 6, 7, 3],
        layer_modes=[2] * 5,
        layer_scalings=[1.0, 0.5, 1.0, 2.0, 1.0],
    )
    assert model.skips == ((3, 1), (4, 0))
    # Level 3 takes level 2's 6 channels plus level 1's 5; level 4 takes 7 + 4.
    assert model.blocks[3].conv.in_channels == 11
    assert model.blocks[4].conv.in_channels == 11


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        (dict(layer_modes=[3, 2, 2]), "layer_modes"),
        (dict(layer_scalings=[1.0, 0.0, 1.0, 1.0]), "layer_scalings"),
        (dict(layer_scalings=[[1, 1], 1, 1, 1]), "layer_scalings"),
        (dict(skips={1: 3}), "skips"),
        (dict(resample="linear"), "resample"),
        (dict(skip="soft-gating"), "skip"),
        (dict(channel_mlp_skip="identity"), "channel_mlp_skip"),
        (dict(layer_channels=[]), "layer_channels"),
    ],
)
def test_bad_arguments_name_themselves(kw, name):
    with pytest.raises(ValueError, match=name):
        eqx.filter_eval_shape(_small_uno, 1, **kw)


def test_modes_that_the_coarse_level_cannot_hold_raise():
    model = eqx.filter_eval_shape(_small_uno, 1, layer_modes=[3, 6, 2, 3])
    with pytest.raises(ValueError, match="modes"):
        eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((2, 16), jnp.float32))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("shape", "n_modes", "scalings"),
    [
        ((30,), [[6], [4], [4], [6]], [[1.0], [0.5], [1.0], [2.0]]),
        ((25,), [[5], [4], [4], [5]], [[1.0], [1.6], [1.0], [0.625]]),
        # neuraloperator's spectral convolution misplaces the modes of a leading axis that changes
        # size or has odd length, so the leading axis stays even and unscaled here.
        ((16, 15), [[6, 6], [4, 4], [4, 4], [6, 6]], [[1, 1], [1, 0.5], [1, 1], [1, 2]]),
    ],
)
def test_same_function_as_neuraloperator(shape, n_modes, scalings):
    torch = pytest.importorskip("torch")
    neuralop_uno = pytest.importorskip("neuralop.models.uno")
    torch.manual_seed(0)
    ref = neuralop_uno.UNO(
        2,
        3,
        5,
        lifting_channels=8,
        projection_channels=8,
        n_layers=4,
        uno_out_channels=[5, 7, 7, 4],
        uno_n_modes=n_modes,
        uno_scalings=scalings,
        channel_mlp_skip="linear",
    )
    ours = uno_from_neuraloperator(ref)
    x = np.random.default_rng(0).standard_normal((2, 2, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = np.asarray(_apply(ours, jnp.asarray(x)))
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))
