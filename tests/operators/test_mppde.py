"""MP-PDE: neighbour graphs, permutation / translation / circular-shift symmetry, temporal
bundling, shapes, and training with the pushforward trick."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import train
from jaxsolve.operators import Neighbours, relative_lp_loss
from jaxsolve.operators._mppde import (
    MPPDE,
    MPPDEGrid,
    bundle_trajectory,
    grid_neighbours,
    mppde_neighbours,
    unbundle_trajectory,
)

_SMALL = {"width": 12, "num_layers": 2}
_N, _R, _K_MAX = 35, 0.3, 16  # a cloud of 35 points in the unit torus, and the 5 x 7 grid


def _random_model(cls, *args, seed, **kw):
    """``cls(*args, **kw)`` with NumPy random weights of the same shapes: traced abstractly, so
    nothing compiles (initialisation is exercised by the slow training test)."""
    abstract = eqx.filter_eval_shape(cls, *args, key=np.zeros(2, np.uint32), **kw)
    rng = np.random.default_rng(seed)

    def fill(leaf):
        fan = leaf.shape[-1] if len(leaf.shape) > 1 else 4
        return (rng.uniform(-1.0, 1.0, leaf.shape) / np.sqrt(fan)).astype(leaf.dtype)

    return jax.tree_util.tree_map(fill, abstract)


def _edge_sets(nb):
    idx, mask = np.asarray(nb.indices), np.asarray(nb.mask)
    return [set(idx[i][mask[i]].tolist()) for i in range(idx.shape[0])]


def _min_image_distances(x, period):
    dx = x[:, None] - x[None]
    if period is not None:
        dx = dx - period * np.round(dx / period)
    return np.linalg.norm(dx, axis=-1)


def _cloud():
    return np.random.default_rng(0).random((_N, 2))


def _grid_points():
    grid = np.stack(np.meshgrid(np.arange(5) / 5, np.arange(7) / 7, indexing="ij"), -1)
    return grid.reshape(-1, 2)


@eqx.filter_jit
def _search(x):
    """The graphs of ``x`` in the unit torus and in the open plane (one compiled program)."""
    return mppde_neighbours(x, _R, _K_MAX, period=1.0), mppde_neighbours(x, _R, _K_MAX)


def test_neighbours_are_the_periodic_ball_without_self_and_match_the_grid_stencil(x64):
    # A NumPy oracle (minimum-image distances, the point itself left out) for a cloud in the unit
    # torus and in the open square; the grid stencil of an odd 5 x 7 torus gives the same graph
    # as the periodic search on its points.
    x = _cloud()
    periodic, open_ = _search(x)
    for nb, period in ((periodic, 1.0), (open_, None)):
        dist = _min_image_distances(x, period)
        np.fill_diagonal(dist, np.inf)
        assert nb.indices.shape == (_N, _K_MAX) and not bool(nb.overflow)
        np.testing.assert_array_equal(nb.counts, (dist <= _R).sum(1))
        assert _edge_sets(nb) == [set(np.flatnonzero(row <= _R).tolist()) for row in dist]
    assert _edge_sets(periodic) != _edge_sets(open_)  # the wrap matters for this cloud
    on_grid = _search(_grid_points())[0]
    stencil = grid_neighbours((5, 7), 1.0, _R)
    assert stencil.indices.shape[1] == int(on_grid.counts.max()) == int(on_grid.counts.min())
    assert _edge_sets(stencil) == _edge_sets(on_grid)


_THETA = np.array([0.7])
_PUSHFORWARD = train.make_rollout_loss(history=1, mode="pushforward", pushforward_steps=1)


def _torus_model(seed):
    # Bundles of K = 3 frames of C = 2 channels, one PDE parameter, on the unit torus.
    return _random_model(MPPDE, 2, 2, time_window=3, history=2, num_params=1, dt=0.1,
                         period=1.0, dtype=jnp.float64, seed=seed, **_SMALL)  # fmt: skip


@eqx.filter_jit
def _run(model, us, xs, nbs):
    # One compiled program for the symmetry and bundling checks: a stack of inputs (field u,
    # positions x, graph) through the model (vmapped), and the decoder's differences d.
    def one(u, x, nb):
        return model(u, x, nb, _THETA), model.differences(u, x, nb, _THETA)

    return jax.vmap(one)(us, xs, nbs)


@eqx.filter_jit
def _functional_value_and_grad(model, us, xs, nbs, weights):
    def functional(m):
        out = jax.vmap(lambda u, x, nb: m(u, x, nb, _THETA))(us, xs, nbs)
        return jnp.sum(jnp.tanh(out) * weights)

    return eqx.filter_value_and_grad(functional)(model)


def _pad(nb, k):
    extra = ((0, 0), (0, k - nb.indices.shape[1]))
    return Neighbours(jnp.pad(nb.indices, extra), jnp.pad(nb.mask, extra), nb.counts, nb.overflow)


def _symmetry_inputs(rng):
    """Five inputs on the unit torus: a 2-D irregular cloud, the same with the nodes permuted,
    the same translated by a constant (positions leave [0, 1)), a field on the odd 5 x 7 grid
    and that field rolled by (2, -3); each graph built from its own positions."""
    x, grid = _cloud(), _grid_points()
    assert np.min(np.abs(_min_image_distances(x, 1.0) - _R)) > 1e-4  # the same graph shifted
    u, field = rng.standard_normal((_N, 4)), rng.standard_normal((5, 7, 4))
    p = rng.permutation(_N)
    rolled = np.roll(field, (2, -3), axis=(0, 1))
    xs = np.stack([x, x[p], x + np.array([3.25, -1.5]), grid, grid])
    us = np.stack([u, u[p], u, field.reshape(_N, 4), rolled.reshape(_N, 4)])
    graphs = [_search(xj)[0] for xj in xs[:3]]
    graphs += [_pad(grid_neighbours((5, 7), 1.0, _R), _K_MAX)] * 2
    return us, xs, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *graphs), p


def test_symmetries_and_bundling(x64):
    # (1) Outputs permute with the nodes, (2) do not move with the translation (the model only
    # sees differences) and roll with the field on the periodic grid; all to round-off in
    # float64 (summation order is all that changes), in one vmapped compiled call.
    model = _torus_model(0)
    us, xs, nbs, p = _symmetry_inputs(np.random.default_rng(1))
    out, diff = (np.asarray(a) for a in _run(model, us, xs, nbs))
    assert out.shape == (5, _N, 6) and diff.shape == (5, _N, 3, 2)
    assert np.std(out[0]) > 0.1 and np.std(out[3]) > 0.1
    np.testing.assert_allclose(out[1], out[0][p], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out[2], out[0], rtol=0, atol=1e-12)
    on_grid = out[3].reshape(5, 7, 6)
    np.testing.assert_allclose(
        out[4].reshape(5, 7, 6), np.roll(on_grid, (2, -3), axis=(0, 1)), rtol=0, atol=1e-12
    )

    # (4) Temporal bundling: frame k is u(t) + k dt d_k, with u(t) the last input frame.
    for k in range(3):
        expected = us[:, :, 2:] + ((k + 1) * 0.1) * diff[:, :, k]
        np.testing.assert_allclose(out[:, :, 2 * k : 2 * k + 2], expected, rtol=1e-15, atol=1e-15)
    # With the decoder's last convolution zeroed, d_k is its bias b for every node and k, so the
    # bundle is the closed form u(t) + k dt b whatever the graph and the other weights.
    b = np.array([0.5, -2.0])
    flat = eqx.tree_at(lambda m: (m.decoder_w2, m.decoder_b2), model,
                       (np.zeros_like(model.decoder_w2), b))  # fmt: skip
    expected = np.concatenate([us[..., 2:] + k * 0.1 * b for k in (1, 2, 3)], axis=-1)
    np.testing.assert_array_equal(np.asarray(_run(flat, us, xs, nbs)[0]), expected)


@pytest.mark.slow
def test_gradient_is_the_central_difference(x64):
    # jit + vmap + grad: the gradient of a fixed functional of the outputs on the five inputs
    # above is the central difference along its own direction, and every weight (encoder,
    # messages, updates, decoder) takes part.
    model = _torus_model(0)
    rng = np.random.default_rng(1)
    us, xs, nbs, _ = _symmetry_inputs(rng)
    weights = rng.standard_normal((5, _N, 6))

    def value_and_grad(m):
        return jax.tree_util.tree_map(
            np.asarray, _functional_value_and_grad(m, us, xs, nbs, weights)
        )

    def moved(step):
        return jax.tree_util.tree_map(lambda p, g: np.asarray(p) + step * g, model, grads)

    value, grads = value_and_grad(model)
    norm = np.sqrt(sum(np.sum(g * g) for g in jax.tree_util.tree_leaves(grads)))
    assert np.isfinite(value) and 0 < norm < np.inf
    assert all(np.any(g != 0) for g in jax.tree_util.tree_leaves(grads))
    h = 1e-5
    up, down = (value_and_grad(moved(s * h / norm))[0] for s in (1, -1))
    np.testing.assert_allclose((up - down) / (2 * h), norm, rtol=1e-6)


def _plain_differences(model, u, x, nb, params):
    """``model.differences`` with the message layer as the paper writes it: the per-edge
    concatenation ``[f_i, f_j, u_i - u_j, x_i - x_j, theta_i]`` through the whole message MLP,
    from the model's own weights (the reference for the per-node factoring of its first layer)."""
    (n, k), idx, act = nb.indices.shape, nb.indices, model.activation
    theta = [jnp.broadcast_to(params, (n, model.num_params))]
    position = [x] if model.encode_positions else []
    f = act(model.encoder(jnp.concatenate([u, *theta, *position], axis=-1)))
    dx = x[:, None] - x[idx]
    if model.period is not None:
        box = jnp.asarray(model.period)
        dx = dx - box * jnp.round(dx / box)
    edges = [u[:, None] - u[idx], dx, jnp.broadcast_to(theta[0][:, None], (n, k, 2))]
    weight = nb.mask.astype(u.dtype)
    if model.reduction == "mean":
        weight = weight / jnp.maximum(jnp.sum(nb.mask, axis=1, keepdims=True), 1)
    for phi, psi in zip(model.message_nets, model.update_nets, strict=True):
        fi = jnp.broadcast_to(f[:, None], f[idx].shape)
        m = jnp.sum(act(phi(jnp.concatenate([fi, f[idx], *edges], -1))) * weight[..., None], 1)
        f = f + act(psi(jnp.concatenate([f, m, *theta], axis=-1)))
        mean = jnp.mean(f, axis=0)
        f = (f - mean) / jnp.sqrt(jnp.mean((f - mean) ** 2, axis=0) + model.eps)
    return model._decode(f)


@eqx.filter_jit
def _factored_and_plain(models, u, x, nb, params, probe, with_grad):
    """For each model (the even ones with one shared PDE-parameter vector, the odd ones with one
    per node): ``sum(tanh(d) * probe)`` of the library's ``differences`` and of the plain
    concatenation, with its gradient (weights and inputs ``u, x, params``) when ``with_grad``."""

    def value(differences, *args):
        f = lambda a: jnp.sum(jnp.tanh(differences(a[0], a[1], a[2], nb, a[3])) * probe)
        return eqx.filter_value_and_grad(f)(args) if with_grad else (f(args), None)

    shared, fns = params[0], (MPPDE.differences, _plain_differences)
    return [[value(fn, m, u, x, params if j % 2 else shared) for fn in fns]
            for j, m in enumerate(models)]  # fmt: skip


def _check_factoring(with_grad):
    # A random graph whose masked slots hold random node indices (which must not count), one row
    # masked entirely; positions spread over several periods of the box (wrapped differences).
    rng = np.random.default_rng(5)
    n, k = 13, 6
    mask = rng.random((n, k)) < 0.6
    mask[3] = False
    nb = Neighbours(indices=jnp.asarray(rng.integers(0, n, (n, k)), jnp.int32),
                    mask=jnp.asarray(mask), counts=jnp.asarray(mask.sum(1), jnp.int32),
                    overflow=jnp.asarray(False))  # fmt: skip
    assert np.any(np.asarray(nb.indices)[~mask] != 0)
    configs = ({"reduction": "mean", "period": (1.0, 1.5)}, {"reduction": "sum", "period": 1.0},
               {"reduction": "mean", "encode_positions": True}, {"reduction": "sum"})  # fmt: skip
    common = dict(time_window=2, history=3, num_params=2, width=8, num_layers=2)
    models = [
        _random_model(MPPDE, 2, 2, dtype=jnp.float64, seed=j, **common, **c)
        for j, c in enumerate(configs)
    ]
    u, x = rng.standard_normal((n, 6)), 4.0 * rng.random((n, 2)) - 1.0
    params, probe = rng.standard_normal((n, 2)), rng.standard_normal((n, 2, 2))
    results = _factored_and_plain(models, u, x, nb, params, probe, with_grad)
    for (value, grads), (expected, expected_grads) in results:
        assert abs(float(expected)) > 0.1
        np.testing.assert_allclose(float(value), float(expected), rtol=1e-12)
        if not with_grad:
            continue
        leaves = jax.tree_util.tree_leaves(grads)
        expected_leaves = jax.tree_util.tree_leaves(expected_grads)
        # Weights: encoder, 2 x (message, update) and decoder, 2 layers of 2 arrays each, then
        # u, x and params.
        assert len(leaves) == len(expected_leaves) == 6 * 4 + 3
        for g, e in zip(leaves, expected_leaves, strict=True):
            assert np.any(np.asarray(e) != 0)
            scale = float(np.max(np.abs(e)))
            np.testing.assert_allclose(g, e, rtol=0, atol=1e-12 * scale)


def test_factored_message_layer_is_the_concatenation(x64):
    # The per-node factoring of the message MLP's first layer (A_i + B_j + W_x dx_ij) against the
    # per-edge concatenation through the same weights, to round-off: both reductions, periodic
    # (box (1, 1.5) and the unit square) and open (with positions in the encoder), PDE
    # parameters per node and shared.
    _check_factoring(with_grad=False)


@pytest.mark.slow
def test_factored_message_layer_gradients_are_the_concatenations(x64):
    # The same four models, with the gradients with respect to every weight and to the field,
    # the positions and the PDE parameters.
    _check_factoring(with_grad=True)


def _advection(frames, n, shift=1):
    """A periodic profile moved by ``shift`` cells per frame: ``(frames, 1, n)``."""
    xg = np.arange(n) / n
    base = np.sin(2 * np.pi * xg) + 0.5 * np.cos(4 * np.pi * xg)
    return np.stack([np.roll(base, shift * t)[None] for t in range(frames)]).astype(np.float32)


def _bundled_advection(n, shifts=(1, -1)):
    trajectories = np.stack([_advection(7, n, shift) for shift in shifts])
    return np.stack([np.asarray(bundle_trajectory(t, 2)) for t in trajectories])


@pytest.mark.slow
def test_grid_wrapper_circular_shift_equivariance_odd_grid(x64):
    # MPPDEGrid itself on a 2-D odd 5 x 7 periodic box of sides (1, 1.4): rolling the input
    # field rolls the output.
    model = MPPDEGrid(2, 4, 4, channels=2, width=12, num_layers=2, key=jax.random.PRNGKey(4),
                      lengths=(1.0, 1.4), radius=0.35, dtype=jnp.float64)  # fmt: skip
    field = np.random.default_rng(3).standard_normal((4, 5, 7))
    shifted = np.roll(field, (2, -3), axis=(1, 2))
    out = np.asarray(eqx.filter_jit(jax.vmap(lambda m, a: m(a), (None, 0)))(
        model, np.stack([field, shifted])))  # fmt: skip
    assert out.shape == (2, 4, 5, 7)
    assert np.std(out[0]) > 0.1
    np.testing.assert_allclose(out[1], np.roll(out[0], (2, -3), axis=(1, 2)), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_pushforward_trick_and_tiny_training_with_fit():
    # Bundles of K = 2 frames on a 1-D grid: the grid wrapper maps one bundle to the next, so
    # rollout_loss(history=1, mode="pushforward") on the bundled trajectories is the paper's
    # trick: its value and gradient are those of the loss of the third bundle predicted from
    # the gradient-stopped prediction of the second. 100 Adam steps of train.fit cut it
    # by more than four.
    model = MPPDEGrid(1, 2, 2, channels=1, width=16, num_layers=2, key=jax.random.PRNGKey(6),
                      dt=0.5)  # fmt: skip
    data = _bundled_advection(17)
    assert data.shape == (2, 3, 2, 17)
    np.testing.assert_array_equal(unbundle_trajectory(data[0], 1), _advection(6, 17))

    def by_hand(m, bundles):
        one = lambda b: relative_lp_loss(m(jax.lax.stop_gradient(m(b[0]))), b[2])
        return jnp.mean(jax.vmap(one)(bundles))

    @eqx.filter_jit
    def both(m):
        pushed = eqx.filter_value_and_grad(lambda m: _PUSHFORWARD(m, data, None))(m)
        return pushed, eqx.filter_value_and_grad(lambda m: by_hand(m, data))(m)

    (before, grads), (expected, expected_grads) = both(model)
    np.testing.assert_allclose(float(before), float(expected), rtol=1e-6)
    for g, e in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(expected_grads),
                    strict=True):  # fmt: skip
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6 * float(np.max(np.abs(e))))
    result = train.fit(_PUSHFORWARD, model, data, optimizer=optax.adam(3e-3), num_steps=100,
                       key=jax.random.PRNGKey(0), batch_size=2, progress=False)  # fmt: skip
    after = float(eqx.filter_jit(_PUSHFORWARD)(result.model, data, None))
    assert after < 0.25 * float(before), (float(before), after)


@pytest.mark.slow
def test_shapes_3d_cloud_1d_cloud_and_open_grid():
    rng = np.random.default_rng(7)
    options = ({"encode_positions": True}, {"reduction": "sum"})
    for (d, n), extra in zip(((1, 11), (3, 23)), options, strict=True):
        model = MPPDE(d, 1, time_window=2, key=jax.random.PRNGKey(d), **_SMALL, **extra)
        x = rng.random((n, d)).astype(np.float32)
        u = rng.standard_normal((2, n, 2)).astype(np.float32)
        nb = eqx.filter_jit(mppde_neighbours)(x, 0.6, n - 1)
        out = eqx.filter_jit(jax.vmap(MPPDE.__call__, (None, 0, None, None)))(model, u, x, nb)
        assert out.shape == (2, n, 2) and np.all(np.isfinite(out))
    grid = MPPDEGrid(2, 3, 1, width=12, num_layers=1, key=jax.random.PRNGKey(8), periodic=False)
    assert eqx.filter_jit(lambda m, a: m(a))(grid, rng.random((3, 6, 9))).shape == (1, 6, 9)


@pytest.mark.wrong_argument_types
def test_bad_arguments():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="width"):
        MPPDE(1, 1, time_window=20, width=8, key=key)
    with pytest.raises(ValueError, match="reduction"):
        MPPDE(1, 1, time_window=2, width=8, key=key, reduction="max")
    with pytest.raises(ValueError, match="period"):
        MPPDE(2, 1, time_window=2, width=8, key=key, period=(1.0,))
    with pytest.raises(ValueError, match="channels"):
        MPPDEGrid(1, 3, 2, width=8, key=key)
    with pytest.raises(ValueError, match="radius"):
        mppde_neighbours(np.zeros((4, 1)), 0.5, 3, period=1.0)
    with pytest.raises(ValueError, match="radius"):
        grid_neighbours((8,), 1.0, 0.6)
    # Shapes are checked before any arithmetic: abstract weights suffice (nothing compiles).
    model = eqx.filter_eval_shape(MPPDE, 1, 1, time_window=2, width=8, key=key, num_layers=1)
    x = np.linspace(0, 1, 5)[:, None]
    nb = Neighbours(indices=np.zeros((5, 4), np.int32), mask=np.ones((5, 4), bool),
                    counts=np.full(5, 4, np.int32), overflow=np.asarray(False))  # fmt: skip
    with pytest.raises(ValueError, match="u_hist"):
        model(np.zeros((5, 3)), x, nb)
    with pytest.raises(ValueError, match="positions"):
        model(np.zeros((5, 2)), np.zeros((5, 2)), nb)
    with pytest.raises(ValueError, match="neighbours"):
        model(np.zeros((5, 2)), x, Neighbours(nb.indices[:4], nb.mask[:4], nb.counts[:4], False))
    with pytest.raises(ValueError, match="params"):
        model(np.zeros((5, 2)), x, nb, np.ones(1))
    grid = eqx.filter_eval_shape(MPPDEGrid, 1, 2, 1, width=8, key=key)
    with pytest.raises(ValueError, match="batch"):
        grid(np.zeros((3, 2, 8)))
