"""Space-time FNO and Spectral-Refiner: the H^-s loss by hand, shapes, the closed-form refit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._fno import ChannelMLP
from jaxsolve.operators._spacetime import (
    SpaceTimeFNO,
    SpaceTimeHead,
    negative_sobolev_loss,
    spectral_refine,
)


def test_negative_sobolev_loss_matches_the_fourier_sum(x64):
    # Closed form: ||a sin(2 pi 3 x)||^2 = a^2 / 2 (1 + 36 pi^2)^-s, and cos(2 pi (x + 2 y)) has
    # |xi|^2 = 4 pi^2 (1 + 4), mean square 1/2.
    nx, ny, s = 16, 12, 1.5
    x, y = np.meshgrid(np.arange(nx) / nx, np.arange(ny) / ny, indexing="ij")
    a, b = 0.7, -1.3
    e = a * np.sin(2 * np.pi * 3 * x) + b * np.cos(2 * np.pi * (x + 2 * y))
    expected = a**2 / 2 * (1 + 36 * np.pi**2) ** -s + b**2 / 2 * (1 + 20 * np.pi**2) ** -s
    target = np.random.default_rng(0).normal(size=(1, nx, ny))
    loss = jax.jit(negative_sobolev_loss, static_argnames="lengths")
    np.testing.assert_allclose(loss(target + e[None], target, s), expected, rtol=1e-12)
    # A random two-channel field on a (2, 3) box (odd axis included), by the full numpy FFT.
    lengths, s = (2.0, 3.0), 0.75
    u = np.random.default_rng(1).normal(size=(2, 10, 9))
    uh = np.fft.fftn(u, axes=(1, 2)) / (10 * 9)
    k1, k2 = np.meshgrid(np.fft.fftfreq(10, 1 / 10), np.fft.fftfreq(9, 1 / 9), indexing="ij")
    xi2 = (2 * np.pi * k1 / lengths[0]) ** 2 + (2 * np.pi * k2 / lengths[1]) ** 2
    by_hand = 6.0 * np.sum((1 + xi2) ** -s * np.abs(uh) ** 2)
    got = loss(u, np.zeros_like(u), s, lengths=lengths)
    np.testing.assert_allclose(got, by_hand, rtol=1e-12)


@pytest.mark.wrong_argument_types
def test_negative_sobolev_loss_refuses_a_negative_order():
    with pytest.raises(ValueError, match="s must be"):
        negative_sobolev_loss(np.zeros((1, 4)), np.zeros((1, 4)), -1.0)
    # traced (a sweep over orders): checked when the program runs
    e = np.zeros((1, 8))
    e[0, 3] = 1.0
    loss = jax.jit(lambda s: negative_sobolev_loss(e, np.zeros((1, 8)), s))
    assert float(loss(1.0)) == pytest.approx(float(negative_sobolev_loss(e, np.zeros((1, 8)), 1.0)))
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(Exception, match="s must be a finite scalar >= 0"):
            jax.block_until_ready(loss(bad))


@pytest.mark.parametrize(
    ("d", "spatial", "time_steps", "kw"),
    [
        pytest.param(1, (13,), 7, dict(time_padding=3, head_modes=(3, 7)), marks=pytest.mark.slow),
        (2, (9, 7), 5, dict(head_modes=None)),
    ],
)
def test_space_time_fno_shapes_on_odd_grids(d, spatial, time_steps, kw):
    def build():
        return SpaceTimeFNO(
            d, 2, 3, width=4, modes=2, time_steps=time_steps, key=jax.random.key(0), **kw
        )

    model = eqx.filter_eval_shape(build)
    x = jax.ShapeDtypeStruct((2, *spatial), jnp.float32)
    assert eqx.filter_eval_shape(lambda m, x: m(x), model, x).shape == (3, time_steps, *spatial)
    batch = jax.ShapeDtypeStruct((4, 2, *spatial), jnp.float32)
    out = eqx.filter_eval_shape(lambda m, x: jax.vmap(m)(x), model, batch)
    assert out.shape == (4, 3, time_steps, *spatial)


def _model(head_modes, key=0):
    return SpaceTimeFNO(
        1,
        1,
        1,
        width=3,
        modes=3,
        time_steps=6,
        n_layers=1,
        head_modes=head_modes,
        lifting_channels=0,
        projection_channels=0,
        key=jax.random.key(key),
    )


def _flat(tree):
    return jax.flatten_util.ravel_pytree(eqx.filter(tree, eqx.is_inexact_array))[0]


class _FrozenFeatures(eqx.Module):
    """A cheap stand-in for a trained space-time network: fixed nonlinear features of the
    input over (time, space), then a head as :class:`SpaceTimeFNO`'s."""

    lift: jax.Array
    head: SpaceTimeHead

    def features(self, x):
        t = jnp.arange(6.0)[:, None] / 6
        v = jnp.tensordot(self.lift, x, axes=1)[:, None, :]  # (width, 1, n)
        return jnp.tanh(v * (1 + t) + t + jnp.roll(v, 1, axis=-1) * t**2)

    def __call__(self, x):
        return self.head(self.features(x))


def _toy(seed):
    linear = ChannelMLP(3, 1, n_layers=1, key=jax.random.key(seed))
    lift = np.random.default_rng(seed).normal(size=(3, 1))
    return _FrozenFeatures(jnp.asarray(lift), SpaceTimeHead(linear, None))


@eqx.filter_jit
def _targets_and_loss(model, other, inputs):
    """``other``'s outputs and ``model``'s summed H^-1 loss against them, one program."""
    targets = jax.vmap(other)(inputs)
    loss = jax.vmap(lambda x, y: negative_sobolev_loss(model(x), y, 1.0))(inputs, targets)
    return targets, jnp.sum(loss)


def test_spectral_refine_recovers_an_exactly_learnable_head(x64):
    # Frozen features, a pointwise head: the targets come from the same features and another
    # head, so the H^-1 minimiser is that head and the loss goes to round-off.
    model = _toy(0)
    other = eqx.tree_at(lambda m: m.head, model, _toy(1).head)
    rng = np.random.default_rng(2)
    inputs = jnp.asarray(rng.normal(size=(3, 1, 9)))
    targets, start_loss = _targets_and_loss(model, other, inputs)
    refined, before, after = spectral_refine(model, inputs, targets, s=1.0)
    assert before > 1e-3
    assert after <= 1e-24 * before
    np.testing.assert_allclose(_flat(refined.head), _flat(other.head), rtol=1e-9)
    # The reported loss is negative_sobolev_loss summed over the batch.
    np.testing.assert_allclose(before, start_loss, rtol=1e-10)
    # Targets it cannot fit (same shapes: no new compilation): the loss still does not grow.
    noise = jnp.asarray(rng.normal(size=targets.shape))
    _, before, after = spectral_refine(model, inputs, noise, s=1.0)
    assert after < before


@eqx.filter_jit
def _batched(f, x):
    return jax.vmap(f)(x)


@pytest.mark.slow
def test_spectral_refine_with_a_spectral_head_is_optimal_and_never_worse(x64):
    # A pointwise plus spectral head on targets it cannot fit (noise): the refit is the
    # minimiser (zero gradient of the H^-s loss with respect to the head), below the start.
    model = _model((3, 4))
    inputs = jax.random.normal(jax.random.key(3), (4, 1, 9))
    targets = jax.random.normal(jax.random.key(4), (4, 1, 6, 9))
    s = 0.5
    refined, before, after = spectral_refine(model, inputs, targets, s=s)

    def loss(head, features):
        per = jax.vmap(lambda f, y: negative_sobolev_loss(head(f), y, s))
        return jnp.sum(per(features, targets))

    features = _batched(model.features, inputs)
    np.testing.assert_allclose(after, loss(refined.head, features), rtol=1e-10)
    assert after < before
    grad0 = _flat(eqx.filter_grad(loss)(model.head, features))
    grad1 = _flat(eqx.filter_grad(loss)(refined.head, features))
    assert np.linalg.norm(grad1) < 1e-9 * np.linalg.norm(grad0)
    # Exactly learnable through the spectral head too: the loss goes to round-off.
    other = eqx.tree_at(lambda m: m.head, model, _model((3, 4), key=5).head)
    _, before, after = spectral_refine(model, inputs, _batched(other, inputs), s=s)
    assert after <= 1e-24 * before


@pytest.mark.slow
def test_space_time_fno_forward_varies_in_time_on_an_odd_2d_grid():
    # The input is the same at every time step; the time coordinate of the positional embedding
    # is what makes the frames differ.
    model = SpaceTimeFNO(
        2, 2, 1, width=4, modes=2, time_steps=5, time_padding=2, n_layers=1, key=jax.random.key(0)
    )
    y = _batched(model, jax.random.normal(jax.random.key(1), (2, 2, 9, 7)))
    assert y.shape == (2, 1, 5, 9, 7)
    assert bool(jnp.all(jnp.isfinite(y)))
    assert float(jnp.min(jnp.std(y, axis=2))) > 1e-4
