"""Hard constraints hold exactly: Dirichlet data on the boundary, the initial condition at t0,
periodicity from the Fourier embedding (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._constraints import HardDirichlet, HardInitial, PeriodicEmbedding
from jaxsolve.pinn._derivatives import derivative
from jaxsolve.pinn._networks import MLP


def _g(x):
    return jnp.sin(3 * x[0]) + x[1] ** 2


def _square_distance(x):
    return (1 - x[0] ** 2) * (1 - x[1] ** 2)


def test_hard_dirichlet_exact_on_square_boundary(x64):
    net = MLP(2, "scalar", 16, 1, key=jax.random.key(0))
    u = HardDirichlet(net, _g, _square_distance)
    s = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, 16))
    one = jnp.ones_like(s)
    boundary = jnp.concatenate(
        [jnp.stack(p, -1) for p in ((one, s), (-one, s), (s, one), (s, -one))]
    )
    interior = jnp.stack([s, s[::-1]], -1) * 0.9

    @eqx.filter_jit
    def run(u, boundary, interior):
        return (
            jax.vmap(u)(boundary),
            jax.vmap(_g)(boundary),
            jax.vmap(u)(interior) - jax.vmap(_g)(interior),
            jax.vmap(u.distance)(interior) * jax.vmap(u.network)(interior),
        )

    ub, gb, ui, expect = run(u, boundary, interior)
    np.testing.assert_allclose(ub, gb, rtol=0, atol=4e-16)
    np.testing.assert_allclose(ui, expect, rtol=1e-12, atol=1e-15)
    assert np.min(np.abs(ui)) > 0  # the network is active inside
    with pytest.raises(ValueError, match="distance must return a scalar"):
        HardDirichlet(net, _g, lambda x: x)(jnp.zeros(2))


@pytest.mark.wrong_argument_types
def test_hard_dirichlet_needs_callables():
    with pytest.raises(TypeError, match="g must be callable"):
        HardDirichlet(_g, 1.0, _square_distance)


def test_hard_initial_exact_at_t0_and_boundary(x64):
    net = MLP(2, "scalar", 16, 1, key=jax.random.key(1))

    def u0(x):
        return -jnp.sin(jnp.pi * x[0])

    def wall(x):
        return 1 - x[0] ** 2

    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (12, 1)))
    t = jnp.full((12, 1), 0.7)

    @eqx.filter_jit
    def run(tau, t0):
        u_lin = HardInitial(net, u0, distance=wall, t0=t0)
        u_exp = HardInitial(net, u0, distance=wall, tau=tau, t0=t0)
        start = jnp.concatenate([jnp.full_like(x, t0), x], -1)
        walls = jnp.array([[0.7, -1.0], [0.7, 1.0], [0.3, 1.0]])
        inside = jnp.concatenate([t, x], -1)
        return (
            [jax.vmap(u)(start) - jax.vmap(u0)(x) for u in (u_lin, u_exp)],
            [jax.vmap(u)(walls) - jax.vmap(u0)(walls[:, 1:]) for u in (u_lin, u_exp)],
            jax.vmap(u_exp)(inside) - jax.vmap(u0)(x),
            (1 - jnp.exp(-(0.7 - t0) / tau)) * jax.vmap(wall)(x) * jax.vmap(net)(inside),
        )

    # a traced tau and t0: a sweep over them is one vmap
    starts, walls, inside, expect = jax.vmap(run)(jnp.array([0.1, 0.5]), jnp.array([0.0, 0.2]))
    for a in starts + walls:
        np.testing.assert_array_equal(a, 0.0)
    np.testing.assert_allclose(inside, expect, rtol=1e-12)
    with pytest.raises(ValueError, match="tau"):
        HardInitial(net, u0, tau=0.0)
    with pytest.raises(ValueError, match="space-time point"):
        HardInitial(net, u0)(jnp.zeros(1))


def test_periodic_embedding_makes_network_periodic(x64):
    emb = PeriodicEmbedding((None, 2.0), n_harmonics=3)
    assert emb.out_size == 7
    net = MLP(2, "scalar", 16, 1, key=jax.random.key(2), embedding=emb)
    rng = np.random.default_rng(3)
    z = jnp.asarray(rng.uniform(-1, 1, (8, 2)))
    shift = jnp.array([0.0, 2.0])

    @eqx.filter_jit
    def run(net, z):
        u_x = derivative(net, 1)
        feats = jax.vmap(emb)(z)
        return (
            jax.vmap(net)(z),
            jax.vmap(net)(z + shift),
            jax.vmap(net)(z - 3 * shift),
            jax.vmap(u_x)(z),
            jax.vmap(u_x)(z + shift),
            feats,
            eqx.filter_grad(lambda e: jnp.sum(jax.vmap(e)(z)))(emb).periods,
        )

    u, u_plus, u_minus, ux, ux_plus, feats, period_grad = run(net, z)
    np.testing.assert_allclose(u_plus, u, rtol=0, atol=1e-13)
    np.testing.assert_allclose(u_minus, u, rtol=0, atol=1e-13)
    np.testing.assert_allclose(ux_plus, ux, rtol=0, atol=1e-12)
    w = np.pi * np.arange(1, 4) * np.asarray(z[:, 1:2])
    expect = np.concatenate([np.asarray(z[:, :1]), np.cos(w), np.sin(w)], -1)
    np.testing.assert_allclose(feats, expect, rtol=1e-14, atol=1e-15)
    np.testing.assert_array_equal(period_grad, 0.0)  # problem data, not a parameter
    with pytest.raises(ValueError, match="at least one periodic"):
        PeriodicEmbedding((None, None))
    with pytest.raises(ValueError, match="periods"):
        PeriodicEmbedding((None, -1.0))
    with pytest.raises(ValueError, match="dimension 2"):
        emb(jnp.zeros(3))
