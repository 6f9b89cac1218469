"""SineNet: shapes on any grid, shift equivariance with (and only with) circular padding, the
waves composed through the residual stream, the authors' parameter count, and training through
the rollout loss."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve.operators import count_params
from jaxsolve.operators._sinenet import SineNet
from jaxsolve.train import rollout_loss


def _tiny(d, cin=2, cout=1, **kw):
    options = dict(width=4, waves=2, depth=2, channel_multiplier=2.0) | kw
    return SineNet(d, cin, cout, key=jax.random.key(0), **options)


@eqx.filter_jit
def _apply(model, x):
    return jax.vmap(model)(x)


def test_shapes_on_odd_and_even_grids():
    # Grids not divisible by 2^depth = 4 are padded and cropped inside each wave.
    for d, shapes in ((1, [(7,), (16,)]), (2, [(5, 9), (8, 12)]), (3, [(3, 5, 6)])):
        model = eqx.filter_eval_shape(_tiny, d, cin=6, cout=3)
        for shape in shapes:
            x = jax.ShapeDtypeStruct((6, *shape), jnp.float32)
            assert eqx.filter_eval_shape(model, x).shape == (3, *shape)
            assert eqx.filter_eval_shape(model.latent_states, x).shape == (3, 4, *shape)


@pytest.mark.wrong_argument_types
def test_a_batch_or_wrong_channels_raise():
    model = eqx.filter_eval_shape(_tiny, 1)
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((3, 2, 8), jnp.float32))
    with pytest.raises(ValueError, match="3 channels"):
        eqx.filter_eval_shape(model, jax.ShapeDtypeStruct((3, 8), jnp.float32))


@pytest.mark.parametrize(
    ("kw", "name"),
    [
        (dict(padding="reflect"), "padding"),
        (dict(depth=0), "depth"),
        (dict(waves=0), "waves"),
        (dict(channel_multiplier=0.1), "channel_multiplier"),
        (dict(num_groups=3), "num_groups"),
    ],
)
def test_bad_arguments_name_themselves(kw, name):
    with pytest.raises(ValueError, match=name):
        eqx.filter_eval_shape(_tiny, 1, **kw)


def _equivariance_gaps(d, shape, shifts, zeros_options=None, **kw):
    """Max |model(shift x) - shift model(x)| for each shift, circular and zero padding (the
    latter with ``zeros_options`` added, if given)."""
    axes = tuple(range(1, d + 1))
    # Host-side inputs and shifts: no eager programs compiled besides the models.
    x = np.random.default_rng(1).standard_normal((2, *shape))
    xs = jnp.asarray(np.stack([x] + [np.roll(x, s, axes) for s in shifts]))
    gaps = {}
    for padding in ("circular", "zeros"):
        extra = (zeros_options or {}) if padding == "zeros" else {}
        y = np.asarray(_apply(_tiny(d, padding=padding, **kw, **extra), xs))
        scale = np.max(np.abs(y[0]))
        gaps[padding] = [
            np.max(np.abs(y[i + 1] - np.roll(y[0], s, axes))) / scale for i, s in enumerate(shifts)
        ]
    return gaps


def test_circular_padding_is_equivariant_to_shifts_by_multiples_of_2_to_the_depth(x64):
    # depth 1: shifts by even numbers of cells commute with the pooling and interpolation.
    # (The zero-padded model without its group norms compiles in half the time; the norms are
    # global, so they neither make nor break the symmetry. The 2-D test keeps them.)
    gaps = _equivariance_gaps(1, (12,), [2, -4, 6, 1, 3], dict(norm=False), depth=1)
    assert max(gaps["circular"][:3]) < 1e-13
    # Odd shifts change which cells are pooled together: not a symmetry of the network.
    assert min(gaps["circular"][3:]) > 1e-3
    # Zero padding breaks the symmetry at the boundary even for the even shifts.
    assert min(gaps["zeros"][:3]) > 1e-3


@pytest.mark.slow
def test_circular_padding_is_shift_equivariant_in_2d(x64):
    # depth 2: shifts by multiples of 4.
    gaps = _equivariance_gaps(2, (8, 12), [(4, -8), (0, 4), (1, 0), (2, 0)])
    assert max(gaps["circular"][:2]) < 1e-13
    assert min(gaps["circular"][2:]) > 1e-3
    assert min(gaps["zeros"][:2]) > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("d", [1, 2])
def test_constant_fields_stay_constant_on_odd_grids_only_with_circular_padding(x64, d):
    """A wrap-padded constant is constant, so with circular padding a constant input gives the
    same constant on an odd grid (padded and cropped inside each wave) as on a divisible one;
    with zero padding the boundary shows."""
    out = {}
    for padding in ("circular", "zeros"):
        model = _tiny(d, padding=padding)
        out[padding] = [
            np.asarray(_apply(model, jnp.full((1, 2) + (n,) * d, 0.7)))[0] for n in (7, 8)
        ]
    odd, even = out["circular"]
    assert odd.shape == (1,) + (7,) * d
    np.testing.assert_allclose(odd, np.full_like(odd, even.flat[0]), rtol=0, atol=1e-12)
    np.testing.assert_allclose(even, np.full_like(even, even.flat[0]), rtol=0, atol=1e-12)
    for y in out["zeros"]:
        assert np.ptp(y) > 1e-3


def _conv_count(d, cin, cout, k):
    return cout * cin * k**d + cout


def _expected_params(
    d, cin, cout, width, waves, depth, channel_multiplier, disentangle=True, norm=True
):
    """Parameters of SineNet as the paper builds it, counted independently of the code."""
    c = [int(width * channel_multiplier**level) for level in range(depth + 1)]

    def block(c_conv, c_short, c_out):
        return (
            _conv_count(d, c_conv, c_out, 3)
            + _conv_count(d, c_out, c_out, 3)
            + _conv_count(d, c_short, c_out, 1)
            + (4 * c_out if norm else 0)
        )

    wave = sum(
        block(c[lev - 1] + (width if disentangle and lev > 1 else 0), c[lev - 1], c[lev])
        for lev in range(1, depth + 1)
    ) + sum(block(c[lev] + c[lev - 1], c[lev], c[lev - 1]) for lev in range(1, depth + 1))
    return _conv_count(d, cin, width, 3) + waves * wave + _conv_count(d, width, cout, 3)


def _abstract_count(*args, **kw):
    model = eqx.filter_eval_shape(SineNet, *args, key=jax.random.key(0), **kw)
    return sum(math.prod(a.shape) for a in jax.tree_util.tree_leaves(model))


@pytest.mark.parametrize(
    ("d", "waves", "extra"),
    [
        (1, 1, {}),
        (2, 3, dict(disentangle=False)),
        (3, 2, dict(depth=3, channel_multiplier=1.5, norm=False)),
    ],
)
def test_parameter_count_is_the_papers(d, waves, extra):
    kw = dict(width=6, waves=waves, depth=2, channel_multiplier=2.0) | extra
    got = _abstract_count(d, 5, 2, **kw)
    assert got == _expected_params(d, 5, 2, **kw)
    # K waves: the ends once, K identical U-Nets.
    one = _abstract_count(d, 5, 2, **(kw | dict(waves=1)))
    wave = _expected_params(d, 5, 2, **(kw | dict(waves=2))) - _expected_params(
        d, 5, 2, **(kw | dict(waves=1))
    )
    assert got == one + (waves - 1) * wave


def test_sinenet8_has_the_authors_parameter_count():
    # The authors' SineNet-8 for 2-D incompressible Navier-Stokes: 4 frames of (scalar, 2-vector)
    # in, one frame out, width 64, multiplier 1.425, 4 levels; 35,490,219 parameters as recorded
    # in their model registry.
    assert _abstract_count(2, 12, 3, width=64, waves=8, depth=4, channel_multiplier=1.425) == (
        35_490_219
    )


def _silence(model, k):
    """``model`` with wave ``k``'s update set to zero: the last block's output is
    act(norm2(.)) + shortcut(.), and a zero scale and shift of norm2 and a zero shortcut make it
    act(0) + 0 = 0. The waves are stacked: index ``k`` of every array is wave ``k``."""

    def zero_k(a):
        a = np.array(a)  # on the host: no compiled scatter per array shape
        a[k] = 0
        return jnp.asarray(a)

    last = lambda m: m.waves.up[-1]
    where = lambda m: [
        last(m).norm2.scale,
        last(m).norm2.shift,
        last(m).shortcut.weight,
        last(m).shortcut.bias,
    ]
    return eqx.tree_at(where, model, replace_fn=zero_k)


def _reorder_waves(model, order):
    waves = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)[list(order)]), model.waves)
    return eqx.tree_at(lambda m: m.waves, model, waves)


def test_a_silenced_wave_is_the_identity_on_the_residual_stream(x64):
    # The configuration and input shape of the equivariance test's circular model: one program.
    model = _tiny(1, depth=1)
    assert model.num_waves == 2
    silenced = _silence(model, 0)
    x = jnp.asarray(np.random.default_rng(2).standard_normal((6, 2, 12)))
    y_model, y_silenced, y_moved = (
        np.asarray(_apply(m, x)) for m in (model, silenced, _reorder_waves(silenced, (1, 0)))
    )
    # v + 0 = v exactly: the silenced wave commutes with the other, wherever it sits.
    np.testing.assert_array_equal(y_moved, y_silenced)
    # Untouched, the wave does change the output.
    assert np.max(np.abs(y_model - y_silenced)) > 1e-3 * np.max(np.abs(y_model))


@pytest.mark.slow
def test_latent_states_pass_a_silenced_wave_through_unchanged():
    model = _tiny(1, waves=3)
    silenced = _silence(model, 1)
    moved = _reorder_waves(silenced, (0, 2, 1))
    # An odd grid: each wave pads 13 -> 16 and crops back.
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 2, 13)), jnp.float32)
    states = eqx.filter_jit(lambda m, x: jax.vmap(m.latent_states)(x))
    s_model, s_silenced, s_moved = (np.asarray(states(m, x)) for m in (model, silenced, moved))
    assert s_model.shape == (2, 4, 4, 13)
    # Exact: v + 0 = v wherever the silenced wave sits; the waves before it are untouched, and
    # the stream after it is the stream of the other two waves alone.
    np.testing.assert_array_equal(s_silenced[:, 2], s_silenced[:, 1])
    np.testing.assert_array_equal(s_silenced[:, :2], s_model[:, :2])
    np.testing.assert_array_equal(s_moved[:, 3], s_moved[:, 2])
    np.testing.assert_array_equal(s_moved[:, 2], s_silenced[:, 3])
    np.testing.assert_array_equal(
        np.asarray(_apply(model, x)), np.asarray(jax.vmap(model.projection)(s_model[:, -1]))
    )
    # Untouched, the wave does move the state.
    assert np.max(np.abs(s_model[:, 2] - s_model[:, 1])) > 1e-3


def _advection(n_traj, frames, n, history):
    """Trajectories of random smooth periodic fields moving one cell per frame."""
    rng = np.random.default_rng(0)
    x = np.arange(n) / n
    u0 = sum(
        rng.standard_normal((n_traj, 1))
        * np.cos(2 * np.pi * k * x + rng.uniform(0, 6, (n_traj, 1)))
        for k in (1, 2, 3)
    )
    frames_ = np.stack([np.roll(u0, t, axis=-1) for t in range(frames)], axis=1)
    return jnp.asarray(frames_[:, :, None], jnp.float32)  # (B, frames, C=1, n)


@pytest.mark.slow
def test_jit_vmap_grad_and_pushforward_training_lowers_the_loss():
    history = 2
    data = _advection(4, 5, 16, history)
    model = _tiny(1, cin=history, cout=1)

    def loss(m, batch):
        per = lambda tr: rollout_loss(m, tr, history=history, mode="pushforward")
        return jnp.mean(jax.vmap(per)(batch))

    opt = optax.adam(3e-3)

    @eqx.filter_jit
    def step(m, s, batch):
        val, grads = eqx.filter_value_and_grad(loss)(m, batch)
        upd, s = opt.update(grads, s, eqx.filter(m, eqx.is_inexact_array))
        return eqx.apply_updates(m, upd), s, val, grads

    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    model, state, first, grads = step(model, state, data)
    # Every parameter takes part (each wave, each level), and the gradient is finite.
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert len(leaves) > 0 and sum(x.size for x in leaves) == count_params(model)
    assert all(bool(jnp.all(jnp.isfinite(g))) and float(jnp.max(jnp.abs(g))) > 0 for g in leaves)
    losses = [float(first)]
    for _ in range(7):
        model, state, val, _ = step(model, state, data)
        losses.append(float(val))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0], losses
