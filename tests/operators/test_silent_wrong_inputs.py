"""Inputs that used to give plausible but wrong numbers: integer fields and points, misshaped
weights and targets, NaN in calibration data or coordinates, a traced radius out of range."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import operators as ops

_KEY = jax.random.PRNGKey(0)


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def test_h1_needs_a_spatial_axis(x64):
    # A bare (n,) field was read as n channels and no spatial axis: the "H1" error was the L2
    # error, with no derivative term. u = sin(2 pi x) + sin(2 pi 4 x), pred = 2 u on a 1-D grid.
    x = np.arange(32) / 32
    u = np.sin(2 * np.pi * x) + np.sin(8 * np.pi * x)
    with pytest.raises(ValueError, match="spatial"):
        ops.h1_loss(2 * u, u)
    with pytest.raises(ValueError, match="spatial"):
        ops.h1_norm(u)
    # With the channel axis the derivative term is there: ||u||_H1^2 = sum_k (1 + 4 pi^2 k^2) / 2.
    expected = np.sqrt(((1 + 4 * np.pi**2) + (1 + 64 * np.pi**2)) / 2)
    np.testing.assert_allclose(ops.h1_norm(u[None]), expected, rtol=1e-12)
    np.testing.assert_allclose(ops.h1_loss(2 * u[None], u[None]), 1.0, rtol=1e-12)


def test_lp_weights_must_broadcast_to_the_field(x64):
    u = np.random.default_rng(0).normal(size=(1, 7, 5))
    with pytest.raises(ValueError, match="weights"):
        ops.lp_norm(u, weights=np.ones(3))
    # Extra leading axes would broadcast the field instead: the sum, so the norm, grew.
    with pytest.raises(ValueError, match="weights"):
        ops.lp_norm(u, weights=np.ones((3, 1, 7, 5)))
    # Weights that fit: per point, per last axis.
    np.testing.assert_allclose(
        ops.lp_norm(u, weights=np.full(5, 0.25)), 0.5 * np.sqrt(np.sum(u**2)), rtol=1e-12
    )


# ----------------------------------------------------------------------------------------------
# Neighbour search
# ----------------------------------------------------------------------------------------------


def _ball_counts(queries, sources, r):
    d2 = ((np.asarray(queries, float)[:, None] - np.asarray(sources, float)[None]) ** 2).sum(-1)
    return (d2 <= r * r).sum(1)


@pytest.mark.wrong_argument_types
def test_integer_points_are_not_rounded():
    # Integer queries used to cast the sources (and the radius) to integers.
    queries = np.arange(4)[:, None]
    sources = np.arange(4)[:, None] + 0.5
    got = ops.radius_neighbours(queries, sources, 0.6, 4)
    np.testing.assert_array_equal(got.counts, _ball_counts(queries, sources, 0.6))  # [1, 2, 2, 2]
    # Both integer: a radius of 1.5 is not 1.
    got = ops.radius_neighbours(queries, queries, 1.5, 4)
    np.testing.assert_array_equal(got.counts, _ball_counts(queries, queries, 1.5))  # [2, 3, 3, 2]
    # The periodic images of integer positions: a period of 4.5 is not 4 (with 4, point 4 would
    # sit on point 0 and be its neighbour, and point 3 too).
    positions = np.arange(5)[:, None]
    as_int = ops.mppde_neighbours(positions, 1.0, 4, period=4.5)
    as_float = ops.mppde_neighbours(positions.astype(float), 1.0, 4, period=4.5)
    np.testing.assert_array_equal(as_int.counts, [2, 2, 2, 2, 2])
    np.testing.assert_array_equal(as_int.counts, as_float.counts)
    np.testing.assert_array_equal(
        np.where(as_int.mask, as_int.indices, -1), np.where(as_float.mask, as_float.indices, -1)
    )


def test_traced_radius_is_checked():
    points = np.linspace(0.0, 1.0, 6, dtype=np.float32)[:, None]
    search = jax.jit(lambda r: ops.radius_neighbours(points, points, r, 6))
    # A traced positive radius gives the concrete answer ...
    np.testing.assert_array_equal(search(0.25).counts, _ball_counts(points, points, 0.25))
    # ... a negative one used to act as its absolute value, a NaN one as an empty ball.
    for bad in (-0.25, np.nan):
        with pytest.raises(Exception, match="radius must be > 0"):
            jax.block_until_ready(search(bad))
    # On a torus a traced radius of half the period used to meet a point and its image, so a
    # pair at distance L / 2 was counted twice.
    ring = np.arange(6)[:, None] / 6.0
    graph = jax.jit(lambda r: ops.mppde_neighbours(ring, r, 6, period=1.0).counts)
    np.testing.assert_array_equal(graph(0.2), [2] * 6)
    with pytest.raises(Exception, match="below half the period"):
        jax.block_until_ready(graph(0.5))


def test_non_finite_coordinates_raise():
    points = np.linspace(0.0, 1.0, 6, dtype=np.float32)[:, None]
    bad = points.copy()
    bad[2] = np.nan
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(ops.radius_neighbours(points, bad, 0.25, 6).indices)
    # With throw=False the NaN point is nobody's neighbour (documented), and nothing raises.
    got = ops.radius_neighbours(points, bad, 0.25, 6, throw=False)
    assert not np.any(np.asarray(got.indices)[np.asarray(got.mask)] == 2)
    # A GNO with a NaN source coordinate used to drop that source's term and return finite
    # numbers.
    gno = ops.GNO(1, 2, 2, radius=0.25, k_max=6, key=_KEY, hidden_widths=(8,))
    f = np.ones((2, 6), np.float32)
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(gno(bad, points, f))


# ----------------------------------------------------------------------------------------------
# UQNO calibration
# ----------------------------------------------------------------------------------------------


def _uqno_data():
    # Base: the first channel; residual: ones (so a function's scores are |y - x| itself).
    model = ops.UQNO(lambda x: x[:1], lambda x: jnp.ones_like(x[:1]))
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(20, 1, 8)).astype(np.float32)
    targets = inputs + 0.1 * rng.normal(size=(20, 1, 8)).astype(np.float32)
    return model, inputs, targets


def test_calibration_targets_must_have_the_output_shape():
    model, inputs, targets = _uqno_data()
    # The closed form: k = ceil(0.9 * 8) = 8, j = ceil(21 * 0.9) = 19.
    scores = np.abs(targets - inputs).reshape(20, 8)
    expected = np.sort(np.sort(scores, axis=1)[:, 7])[18]
    np.testing.assert_allclose(ops.calibrate_uqno(model, inputs, targets, 0.1, 0.1), expected)
    # (8, 1) targets against (1, 8) predictions used to broadcast to 64 "points" per function.
    swapped = np.swapaxes(targets, 1, 2)
    with pytest.raises(ValueError, match="targets"):
        ops.calibrate_uqno(model, inputs, swapped, 0.1, 0.1)
    with pytest.raises(ValueError, match="targets"):
        ops.uqno_scores(model, inputs, swapped)
    with pytest.raises(ValueError, match="n_functions"):
        ops.calibrate_uqno(model, inputs[:0], targets[:0], 0.1, 0.1)


def test_nan_in_calibration_data_gives_nan_scale():
    # jnp.sort puts NaN last: a NaN score used to pass as a large finite one.
    model, inputs, targets = _uqno_data()
    targets[3, 0, 2] = np.nan
    assert np.isnan(ops.calibrate_uqno(model, inputs, targets, 0.1, 0.1))
    # Zero widths still give inf (documented), not NaN.
    zero = ops.UQNO(lambda x: x[:1], lambda x: jnp.zeros_like(x[:1]))
    _, inputs, targets = _uqno_data()
    assert np.isposinf(ops.calibrate_uqno(zero, inputs, targets, 0.1, 0.1))


def test_uqno_scale_must_be_non_negative():
    model, inputs, _ = _uqno_data()
    for bad in (-2.0, np.nan):
        with pytest.raises(ValueError, match="scale"):
            ops.UQNO(model.base, model.residual, bad)
        with pytest.raises(ValueError, match="scale"):
            model.calibrated(bad)
    # inf is the scale calibration gives when a needed width is zero.
    _, width = model.calibrated(np.inf)(inputs[0])
    assert np.all(np.isposinf(width))
    # Traced scales (a vmap over calibrated models) are not checked at trace time.
    widths = jax.vmap(lambda s: model.calibrated(s)(inputs[0])[1])(jnp.array([0.5, 2.0]))
    np.testing.assert_allclose(widths, [[[0.5] * 8], [[2.0] * 8]])


# ----------------------------------------------------------------------------------------------
# Integer inputs of the public layers
# ----------------------------------------------------------------------------------------------

_LAYERS = {
    "ChannelMLP": lambda: ops.ChannelMLP(4, 3, 5, 2, key=_KEY),
    "SoftGating": lambda: eqx.tree_at(lambda g: g.weight, ops.SoftGating(4), jnp.full(4, 0.3)),
    "DifferentialConv": lambda: ops.DifferentialConv(1, 4, 4, key=_KEY),
    "LocalIntegralConv": lambda: ops.LocalIntegralConv(1, 4, 4, key=_KEY),
    "NeuralSpectralBlock": lambda: ops.NeuralSpectralBlock(1, 4, key=_KEY, heads=2, patch_size=2),
    "VCycle": lambda: ops.VCycle(1, 4, levels=2, key=_KEY),
    "SineNet": lambda: ops.SineNet(1, 4, 2, width=4, waves=2, depth=2, key=_KEY),
}


@pytest.mark.wrong_argument_types
@pytest.mark.parametrize("name", sorted(_LAYERS))
def test_integer_input_is_the_float_input(name):
    # These layers compute in the input's dtype with their weights cast to it: an integer field
    # truncated the weights to integers (SineNet failed in its scan instead).
    layer = _LAYERS[name]()
    x = np.arange(32).reshape(4, 8) % 3
    want = layer(x.astype(np.float32))
    got = layer(x)
    assert got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    if name == "ChannelMLP":
        np.testing.assert_allclose(layer.channels_last(x.T), want.T, rtol=1e-6, atol=1e-6)
    if name == "SoftGating":
        np.testing.assert_allclose(got, 0.3 * x, rtol=1e-6)


@pytest.mark.wrong_argument_types
def test_integer_field_through_resample():
    # resample cast its matrices, and MPPDEGrid its output, to the input's (integer) dtype.
    x = (np.arange(8) % 3)[None]
    n = np.arange(5) / 5
    # A float copy is the oracle; the mean (the k = 0 coefficient) is kept on the coarser grid.
    got = ops.resample(x, (5,))
    np.testing.assert_allclose(got, ops.resample(x.astype(np.float32), (5,)), rtol=1e-6)
    np.testing.assert_allclose(np.mean(got), np.mean(x), rtol=1e-6)
    u = np.cos(2 * np.pi * np.arange(9) / 9)[None]
    np.testing.assert_allclose(ops.resample(u, (5,)), np.cos(2 * np.pi * n)[None], atol=1e-6)
    for bad in ((0,), (4.5,)):
        with pytest.raises((TypeError, ValueError), match="out_shape"):
            ops.resample(x, bad)


@pytest.mark.wrong_argument_types
def test_integer_field_through_mppde_grid():
    x = (np.arange(8) % 3)[None]
    model = ops.MPPDEGrid(1, 1, 1, width=8, key=_KEY, num_layers=1)
    got = model(x)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, model(x.astype(np.float32)), rtol=1e-6)


@pytest.mark.wrong_argument_types
def test_fractional_sizes_are_refused():
    # GINO truncated a fractional latent size with int(); MultigridPatching failed on a float
    # patch count with an unnamed TypeError.
    kw = dict(width=4, modes=2, in_radius=0.3, out_radius=0.3, in_k_max=4, out_k_max=4, key=_KEY)
    with pytest.raises(TypeError, match=r"latent_shape\[0\]"):
        ops.GINO(2, 1, 1, latent_shape=(8.7, 8), **kw)
    with pytest.raises(ValueError, match=r"latent_shape\[1\]"):
        ops.GINO(2, 1, 1, latent_shape=(8, 1), **kw)
    with pytest.raises(TypeError, match="patches"):
        ops.MultigridPatching(lambda x: x, levels=1, patches=2.5)
    with pytest.raises(TypeError, match="padding"):
        ops.MultigridPatching(lambda x: x, levels=1, padding=0.5)


# ----------------------------------------------------------------------------------------------
# Spectral helpers
# ----------------------------------------------------------------------------------------------


def test_odd_leading_mode_block_and_bad_orders_name_themselves():
    block = np.ones((1, 3, 2), np.complex64)  # a leading mode axis must hold 2 m frequencies
    for inverse in (ops.irfft_modes, ops.irdft_modes):
        with pytest.raises(ValueError, match="even length"):
            inverse(block, (6, 5))
    for orders in (1.0, True):
        with pytest.raises(TypeError, match="orders"):
            ops.spectral_derivative(np.ones((1, 8)), orders)


# ----------------------------------------------------------------------------------------------
# PDE-Refiner
# ----------------------------------------------------------------------------------------------


def _net(u_prev, u_noisy, k):
    # Predicts 2 u_prev at k = 0 and the noise 0 at k >= 1.
    return jnp.where(k == 0, 2.0 * u_prev, 0.0 * u_noisy)


class _Operator:
    """Returns the conditioning channel (the last input channel), plus the FiLM scale's sum."""

    modulation_shape = (1,)

    def __call__(self, x, modulation=None):
        out = x[-1:]
        return out if modulation is None else out + jnp.sum(modulation[0])


@pytest.mark.wrong_argument_types
def test_refinement_steps_must_be_integers_in_range():
    u = np.ones((4, 1, 8), np.float32)
    zeros = np.zeros_like(u)
    # The closed form at k = 0: mean (2 u - 2 u)^2 = 0; at k = 1 with noise 1: mean (0 - 1)^2 = 1.
    assert ops.refiner_loss(_net, u, 2 * u, None, k=0, noise=zeros) == 0.0
    assert ops.refiner_loss(_net, u, 2 * u, None, k=1, noise=np.ones_like(u)) == 1.0
    # A fractional or boolean step used to be truncated to an int.
    for bad in (1.5, True, np.array([0.0, 0.0, 0.0, 0.5])):
        with pytest.raises(TypeError, match="k must be an integer"):
            ops.refiner_loss(_net, u, 2 * u, None, k=bad, noise=zeros)
    with pytest.raises(ValueError, match="batch=4"):
        ops.refiner_loss(_net, u, 2 * u, None, k=np.array([0, 1]), noise=zeros)
    # A network built for fewer steps than the loss draws: the channel k/K left [0, 1] and the
    # FiLM table clamped its index, silently.
    for conditioning in ("channel", "film"):
        net = ops.RefinerNet(_Operator(), 3, conditioning=conditioning)
        # The conditioning channel is k / K.
        np.testing.assert_allclose(net(u[0], u[0], 3), np.ones((1, 8)))
        np.testing.assert_allclose(net(u[0], u[0], 1), np.full((1, 8), 1 / 3), rtol=1e-6)
        for bad in (4, -1):
            with pytest.raises(ValueError, match="RefinerNet: k"):
                net(u[0], u[0], bad)
    with pytest.raises(Exception, match="RefinerNet: k"):
        jax.block_until_ready(ops.refiner_loss(net, u, 2 * u, _KEY, num_refinement_steps=5, k=5))


def test_refinement_output_shape_is_checked():
    # At k >= 1 a (1, 1, 8) "noise" broadcast the state to (1, 1, 8) without a word.
    def net(u_prev, u_noisy, k):
        return 2.0 * u_prev if int(k) == 0 else u_noisy[None] * 0.0

    u = np.ones((1, 8), np.float32)
    with pytest.raises(ValueError, match="refinement step 1"):
        ops.refine_step(net, u, _KEY, num_refinement_steps=2, min_noise_std=0.1)
    np.testing.assert_allclose(ops.refine_step(net, u, num_refinement_steps=0), 2.0 * u)


def test_traced_min_noise_std_is_checked():
    levels = jax.jit(lambda s: ops.refiner_noise_levels(3, s))
    np.testing.assert_allclose(levels(1e-3), [1e-1, 1e-2, 1e-3], rtol=1e-5)
    # A traced sigma_min >= 1 used to give increasing noise levels.
    with pytest.raises(Exception, match="min_noise_std"):
        jax.block_until_ready(levels(2.0))
