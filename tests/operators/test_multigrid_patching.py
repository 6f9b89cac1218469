"""MG-TFNO's multigrid patching: exact round trips, context windows, shift equivariance."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators import TFNO
from jaxsolve.operators._multigrid_patching import (
    MultigridPatching,
    multigrid_patches,
    stitch_patches,
)


def _field(shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("levels", "patches", "padding"))
def _patch_and_stitch(x, *, levels, patches, padding):
    """The patches and the level-0 channels stitched back, one compiled program."""
    p = multigrid_patches(x, levels=levels, patches=patches, padding=padding)
    counts = (2**levels,) * (x.ndim - 1) if patches is None else patches
    return p, stitch_patches(p[:, : x.shape[0]], patches=counts, padding=padding)


def test_patch_then_stitch_is_exact_without_levels_or_padding():
    # An odd 2-D grid (levels=0 needs only equal patches) and a 1-D one.
    for shape, patches in (((3, 9, 7), (3, 7)), ((2, 15), (5,))):
        x = _field(shape)
        p, back = _patch_and_stitch(x, levels=0, patches=patches, padding=0)
        cells = tuple(n // k for n, k in zip(shape[1:], patches, strict=True))
        assert p.shape == (np.prod(patches), shape[0], *cells)
        np.testing.assert_array_equal(back, x)


@pytest.mark.parametrize(
    ("shape", "levels", "patches", "padding"),
    [
        ((2, 16, 8), 2, None, (2, 1)),
        pytest.param((1, 12, 24), 1, (3, 4), 5, marks=pytest.mark.slow),
    ],
)
def test_halo_crop_restores_the_input(shape, levels, patches, padding):
    x = _field(shape)
    p, back = _patch_and_stitch(x, levels=levels, patches=patches, padding=padding)
    c, d = shape[0], len(shape) - 1
    counts = (2**levels,) * d if patches is None else patches
    halo = (padding,) * d if isinstance(padding, int) else padding
    assert p.shape == (
        np.prod(counts),
        c * (levels + 1),
        *(n // k + 2 * h for n, k, h in zip(shape[1:], counts, halo, strict=True)),
    )
    np.testing.assert_array_equal(back, x)


def _nearest_window(n, count, halo, level, i):
    """Brute force: the start of the coarse window whose centre is nearest the patch centre."""
    s, f = n // count, 2**level
    width = s + 2 * halo
    starts = np.arange(-3 * n, 3 * n)
    centre = f * (starts + (width - 1) / 2)  # fine coordinate of the window centre
    distance = np.abs(centre - (i * s + (s - 1) / 2))
    a = starts[np.argmin(distance)]
    assert np.sort(distance)[1] > distance.min()  # never a tie
    return (a + np.arange(width)) % (n // f)


@pytest.mark.parametrize(
    ("shape", "levels", "patches", "padding"),
    [
        ((1, 16, 12), 2, (2, 3), (1, 0)),
        # s = 4: s / 4 = 1 is odd at the coarsest level.
        pytest.param((2, 16), 2, None, 2, marks=pytest.mark.slow),
        # P not a power of two; the windows wrap more than once.
        pytest.param((1, 24), 3, 3, 1, marks=pytest.mark.slow),
    ],
)
def test_context_level_is_the_subsampled_field_around_the_patch(shape, levels, patches, padding):
    x = _field(shape, 1)
    d = len(shape) - 1
    counts = (
        (2**levels,) * d
        if patches is None
        else (patches,) * d
        if np.ndim(patches) == 0
        else patches
    )
    halo = (padding,) * d if isinstance(padding, int) else padding
    p = np.asarray(_patch_and_stitch(x, levels=levels, patches=patches, padding=padding)[0])
    c = shape[0]
    for level in range(levels + 1):
        coarse = x[(slice(None),) + (slice(None, None, 2**level),) * d]
        for flat, index in enumerate(np.ndindex(*counts)):
            rows = [
                _nearest_window(shape[1 + j], counts[j], halo[j], level, index[j]) for j in range(d)
            ]
            expected = coarse[np.ix_(range(c), *rows)]
            np.testing.assert_array_equal(p[flat, level * c : (level + 1) * c], expected)


@pytest.mark.wrong_argument_types
def test_grids_that_do_not_split_evenly_raise():
    with pytest.raises(ValueError, match="levels=1 subsamples spatial axis 0"):
        multigrid_patches(np.zeros((1, 15)), levels=1, patches=1)
    with pytest.raises(ValueError, match="patches=3 on spatial axis 1"):
        multigrid_patches(np.zeros((1, 16, 16)), levels=0, patches=(2, 3))
    with pytest.raises(ValueError, match="levels=2 subsamples"):
        multigrid_patches(np.zeros((1, 12, 6)), levels=2, patches=2)
    with pytest.raises(ValueError, match="needs 4"):
        stitch_patches(np.zeros((3, 1, 4, 4)), patches=2)
    with pytest.raises(ValueError, match="padding"):
        multigrid_patches(np.zeros((1, 16)), levels=0, padding=-1)


def _level0(p):
    return p[:2]


def _mixing(p):
    # A nonlinear model that reads every context channel and neighbouring cells.
    return jnp.tanh(jnp.sum(p, axis=0, keepdims=True) * p[:1] + jnp.roll(p[1:2], 1, axis=-1))


@pytest.mark.parametrize(
    ("shape", "padding"), [pytest.param((2, 24), 3, marks=pytest.mark.slow), ((2, 16, 8), (2, 1))]
)
def test_wrapper_with_the_level_zero_model_returns_the_input(shape, padding):
    x = _field(shape, 2)
    wrapped = MultigridPatching(_level0, levels=2, padding=padding)
    np.testing.assert_array_equal(eqx.filter_jit(wrapped)(x), x)


def test_shift_by_one_patch_commutes_with_the_wrapper():
    # Shifting the field by one patch (a multiple of 2**levels cells) shifts every window by a
    # whole coarse cell count: the patches are permuted, so the output shifts with the input.
    x = _field((2, 32, 16), 3)
    wrapped = eqx.filter_jit(MultigridPatching(_mixing, levels=2, padding=(2, 1)))
    y = wrapped(x)
    for axis, s in ((1, 8), (2, 4)):
        np.testing.assert_allclose(
            wrapped(np.roll(x, s, axis=axis)), np.roll(y, s, axis=axis), rtol=0, atol=0
        )


@pytest.mark.parametrize(
    ("d", "shape"), [pytest.param(1, (3, 40), marks=pytest.mark.slow), (2, (3, 16, 24))]
)
def test_mg_tfno_shapes(d, shape):
    levels = 2

    def build():
        tfno = TFNO(d, 3 * (levels + 1), 1, width=4, modes=2, n_layers=1, key=jax.random.key(0))
        return MultigridPatching(tfno, levels=levels, padding=1)

    model = eqx.filter_eval_shape(build)
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    out = eqx.filter_eval_shape(
        lambda m, x: jax.vmap(m)(x), model, jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    )
    assert out.shape == (2, 1, *shape[1:])
    assert eqx.filter_eval_shape(lambda m, x: m(x), model, x).shape == (1, *shape[1:])


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "levels", "padding"), [((32, 32), 2, 2), ((64, 32), 2, 3)])
def test_same_patches_and_stitching_as_neuraloperator(shape, levels, padding):
    torch = pytest.importorskip("torch")
    patching = pytest.importorskip("neuralop.training.patching")
    # Grids where s / 2**l is even at every level: there the windows coincide (module doc).
    x = _field((2, 3, *shape), 4).astype(np.float64)
    ref_module = patching.MultigridPatching2D(
        torch.nn.Identity(),
        levels=levels,
        padding_fraction=[padding / shape[0], padding / shape[1]],
    )
    ref = ref_module._make_mg_patches(torch.tensor(x)).numpy()
    ours = np.concatenate(
        [np.asarray(multigrid_patches(xi, levels=levels, padding=padding)) for xi in x]
    )
    np.testing.assert_array_equal(ours, ref)
    # Stitching the level-0 channels: neuraloperator crops then stitches.
    ref_out = ref_module._stitch(ref_module._unpad(torch.tensor(ref[:, :3]))).numpy()
    per_sample = ours.reshape(2, -1, *ours.shape[1:])[:, :, :3]
    stitched = np.stack(
        [np.asarray(stitch_patches(p, patches=2**levels, padding=padding)) for p in per_sample]
    )
    np.testing.assert_array_equal(stitched, ref_out)
    np.testing.assert_array_equal(stitched, x)
