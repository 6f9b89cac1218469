"""PDE-Refiner: the reduction to one-step MSE at K = 0, exact refinement under an oracle, the
paper's noise schedule, the uniform draw of the refinement step, FiLM conditioning, argument
checks, jit / vmap."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators import FNO, periodic_grid
from jaxsolve.operators._refiner import (
    RefinerNet,
    make_refiner_loss,
    refine_step,
    refiner_loss,
    refiner_noise_levels,
    refiner_rollout,
)


def _shift(u):
    """The exact solution operator of the oracle tests: a non-trivial linear map."""
    roll = jnp.roll if isinstance(u, jax.Array) else np.roll
    return 0.5 * roll(u, 1, axis=-1) - 0.25 * u


class _Oracle(eqx.Module):
    """Knows the next state: predicts it at k = 0 and the exact noise at k >= 1."""

    sigmas: jax.Array

    def __call__(self, u_prev, u_noisy, k):
        levels = jnp.concatenate([jnp.ones((1,), self.sigmas.dtype), self.sigmas])
        target = _shift(u_prev)
        return jnp.where(k == 0, target, (u_noisy - target) / levels[k])


def _conv_refiner(K, key, c=1):
    """A tiny backbone (one periodic convolution) through the conditioning wrapper."""
    op = eqx.nn.Conv1d(2 * c + 1, c, 3, padding=1, padding_mode="CIRCULAR", key=key)
    return RefinerNet(op, K)


def _fno_refiner(K, key, c=1):
    op = FNO(1, in_channels=2 * c + 1, out_channels=c, width=4, modes=3, n_layers=1, key=key)
    return RefinerNet(op, K)


def test_noise_schedule_is_the_papers(x64):
    """sigma_k = sigma_min^(k/K), k = 1..K: exponentially decreasing down to sigma_min."""
    K, smin = 4, 2e-6
    got = np.asarray(refiner_noise_levels(K, smin))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, [smin ** (k / K) for k in range(1, K + 1)], rtol=1e-14)
    assert got[-1] == pytest.approx(smin, rel=1e-14)
    np.testing.assert_allclose(got[1:] / got[:-1], smin ** (1 / K), rtol=1e-13)
    assert refiner_noise_levels(0, smin).shape == (0,)


def test_k0_is_one_step_mse_exactly():
    """K = 0: the loss is the MSE of net(u, 0, 0) against u_next and the step is net(u, 0, 0)."""
    net = _conv_refiner(0, jax.random.PRNGKey(0))
    u, v = np.random.default_rng(0).standard_normal((2, 3, 1, 16)).astype(np.float32)

    @jax.jit
    def both(net, u, v):
        plain = jax.vmap(lambda x: net(x, jnp.zeros_like(x), 0))(u)
        loss = refiner_loss(net, u, v, jax.random.PRNGKey(3), num_refinement_steps=0)
        step = jax.vmap(lambda x: refine_step(net, x, num_refinement_steps=0))(u)
        return loss, jnp.mean(jnp.mean((plain - v) ** 2, axis=(1, 2))), step, plain

    loss, plain_loss, step, plain = both(net, u, v)
    assert loss == plain_loss
    np.testing.assert_array_equal(step, plain)


def test_oracle_refinement_returns_the_exact_next_state(x64):
    """With the oracle backbone every refinement step removes exactly the noise it added (float64
    rounding only), and its loss is zero at every k."""
    K, smin = 3, 4e-7
    oracle = _Oracle(np.array([smin ** (k / K) for k in range(1, K + 1)]))
    u, eps = np.random.default_rng(1).standard_normal((2, 2, 1, 12))
    v = np.stack([_shift(x) for x in u])
    opts = dict(num_refinement_steps=K, min_noise_std=smin)

    @jax.jit
    def run(u, v, eps):
        out = refine_step(oracle, u[0], jax.random.PRNGKey(2), **opts)
        losses = [refiner_loss(oracle, u, v, None, k=k, noise=eps, **opts) for k in range(K + 1)]
        return out, jnp.stack(losses)

    out, losses = run(u, v, eps)
    np.testing.assert_allclose(out, v[0], rtol=0, atol=1e-14)
    assert np.all(losses < 1e-20), losses


@pytest.mark.slow
def test_oracle_rollout_is_the_exact_trajectory(x64):
    K, smin = 3, 4e-7
    oracle = _Oracle(refiner_noise_levels(K, smin))
    u0 = np.random.default_rng(2).standard_normal((2, 12))
    traj = refiner_rollout(
        oracle, u0, 4, jax.random.PRNGKey(2), num_refinement_steps=K, min_noise_std=smin
    )
    exact = [u0]
    for _ in range(4):
        exact.append(_shift(exact[-1]))
    np.testing.assert_allclose(traj, np.stack(exact), rtol=0, atol=1e-13)


@pytest.mark.slow
def test_loss_at_fixed_k_is_the_noise_regression(x64):
    """At k >= 1 the loss is mean((net(u, u_next + sigma_k eps, k) - eps)^2) — written out."""
    K, smin = 3, 1e-3
    net = _fno_refiner(K, jax.random.PRNGKey(0))
    u, v, eps = (jax.random.normal(jax.random.PRNGKey(i), (2, 1, 16)) for i in (1, 2, 3))
    sig = smin ** (2 / K)
    want = np.mean([np.mean((net(u[i], v[i] + sig * eps[i], 2) - eps[i]) ** 2) for i in range(2)])
    got = refiner_loss(net, u, v, None, num_refinement_steps=K, min_noise_std=smin, k=2, noise=eps)
    np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.slow
def test_refinement_step_is_drawn_uniformly():
    """A net returning k (noise 0, targets 0) has per-sample loss k^2: the mean over B samples is
    sum(k^2)/(K+1) = 3.5 for K = 3, standard error 3.5/sqrt(B); tolerance 5 standard errors."""
    K, B = 3, 10_000
    z = jnp.zeros((B, 1, 2))
    loss = refiner_loss(
        lambda a, b, k: jnp.full_like(a, k),
        z,
        z,
        jax.random.PRNGKey(0),
        num_refinement_steps=K,
        noise=z,
    )
    assert abs(float(loss) - 3.5) < 5 * 3.5 / np.sqrt(B)


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda u: refiner_noise_levels(-1, 1e-3), "num_refinement_steps"),
        (lambda u: refiner_noise_levels(2, 0.0), "min_noise_std"),
        (lambda u: refiner_noise_levels(2, 1.5), "min_noise_std"),
        (lambda u: refine_step(lambda a, b, k: a, u[0], None, num_refinement_steps=2), "key"),
        # Shapes against the annotations: jaxsolve's own messages (skipped under typecheck).
        pytest.param(
            lambda u: refiner_loss(lambda a, b, k: a, u, u[:1], jax.random.PRNGKey(0)),
            "u_next",
            marks=pytest.mark.wrong_argument_types,
        ),
        pytest.param(
            lambda u: refiner_loss(lambda a, b, k: a, u, u, None, k=0, noise=u[:, :, :1]),
            "noise",
            marks=pytest.mark.wrong_argument_types,
        ),
        (lambda u: refiner_loss(lambda a, b, k: a, u, u, None, k=5, noise=u), "k"),
        (lambda u: refiner_loss(lambda a, b, k: a, u, u, None), "key"),
        pytest.param(
            lambda u: refiner_loss(lambda a, b, k: a[0], u, u, None, k=0, noise=u),
            "model",
            marks=pytest.mark.slow,
        ),
        (lambda u: refiner_rollout(lambda a, b, k: a, u[0], 2, None), "key"),
    ],
)
def test_bad_arguments_raise_naming_them(call, name):
    u = jnp.ones((2, 1, 4))
    with pytest.raises(ValueError, match=name):
        call(u)


@pytest.mark.slow
def test_jit_vmap_and_fit_loss_with_an_fno_backbone():
    K = 2
    net = _fno_refiner(K, jax.random.PRNGKey(0))
    u = jax.random.normal(jax.random.PRNGKey(1), (3, 1, 16))
    keys = jax.random.split(jax.random.PRNGKey(2), 3)
    step = lambda m, x, k: refine_step(m, x, k, num_refinement_steps=K)
    eager = jnp.stack([step(net, u[i], keys[i]) for i in range(3)])
    batched = eqx.filter_jit(jax.vmap(step, in_axes=(None, 0, 0)))(net, u, keys)
    np.testing.assert_allclose(batched, eager, rtol=1e-5, atol=1e-6)
    loss_fn = make_refiner_loss(num_refinement_steps=K)
    val, grads = eqx.filter_jit(eqx.filter_value_and_grad(loss_fn))(net, (u, u), keys[0])
    assert np.isfinite(val)
    assert all(
        np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_array))
    )
    with pytest.raises(TypeError, match="bogus"):
        make_refiner_loss(bogus=1)


def test_film_conditioning_modulates_every_block(x64):
    """FNO's modulation is (1 + scale_i) v + shift_i after block i (checked against running the
    blocks by hand); zero modulation, and a zero FiLM table, give the unmodulated functions."""
    key = jax.random.PRNGKey(3)
    op = FNO(1, 3, 1, width=4, modes=3, n_layers=2, key=key, dtype=jnp.float64)
    x = jax.random.normal(jax.random.PRNGKey(4), (3, 16), jnp.float64)
    scale, shift = jax.random.normal(jax.random.PRNGKey(5), (2, *op.modulation_shape))
    v = jnp.moveaxis(x, 0, -1)
    grid = periodic_grid((16,), dtype=jnp.float64)
    v = jnp.concatenate([v, jnp.moveaxis(grid, 0, -1)], axis=-1)
    v = op.lifting.channels_last(v)
    for i, block in enumerate(op.blocks):
        v = (1 + scale[i]) * block(v, last=i == 1) + shift[i]
    by_hand = jnp.moveaxis(op.projection.channels_last(v), -1, 0)
    np.testing.assert_allclose(op(x, modulation=(scale, shift)), by_hand, rtol=1e-12, atol=1e-12)
    zeros = jnp.zeros(op.modulation_shape)
    assert jnp.array_equal(op(x, modulation=(zeros, zeros)), op(x))

    film, plain = RefinerNet(op, 3, conditioning="film"), RefinerNet(op, 3)
    u, w = x[:1], x[1:2]
    assert film.film_table.shape == (4, 2, *op.modulation_shape)
    assert jnp.array_equal(film(u, w, 2), plain(u, w, 2))
    # The table is a trained parameter: k = 2's row gets a gradient, the others none.
    grad = jax.grad(lambda net: jnp.sum(net(u, w, 2) ** 2))(film).film_table
    assert jnp.any(grad[2] != 0)
    assert jnp.all(grad[jnp.array([0, 1, 3])] == 0)


@pytest.mark.wrong_argument_types
def test_film_needs_a_modulated_operator():
    conv = eqx.nn.Conv1d(3, 1, 3, padding=1, key=jax.random.PRNGKey(0))
    with pytest.raises(TypeError, match="modulation_shape"):
        RefinerNet(conv, 3, conditioning="film")
    with pytest.raises(ValueError, match="conditioning"):
        RefinerNet(conv, 3, conditioning="embedding")
    op = FNO(1, 3, 1, width=4, modes=3, n_layers=2, key=jax.random.PRNGKey(1))
    with pytest.raises(ValueError, match="scale must have shape"):
        op(jnp.zeros((3, 8)), modulation=(jnp.zeros((2, 3)), jnp.zeros((2, 4))))
