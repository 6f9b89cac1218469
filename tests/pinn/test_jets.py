"""Directional jets: every network's feature-major Taylor rule against nested JVPs of its
single-point call, closed forms, the residuals' batched evaluation against the single-point
residuals, gradients through both, and the argument checks."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import pinn
from jaxsolve.pinn._jets import pointwise_jets


def _networks(key):
    k = jax.random.split(key, 6)
    mlp = pinn.MLP(2, "scalar", 8, 3, key=k[0])
    vec = pinn.MLP(2, 3, 8, 2, key=k[1], activation=jax.nn.gelu)
    return {
        "mlp": mlp,
        "mlp_vector_gelu": vec,
        # Not elementwise: the rule applies the activation to each point's feature vector.
        "mlp_normalising_activation": pinn.MLP(
            2, 2, 8, 2, key=k[2], activation=lambda z: z / jnp.sqrt(1 + jnp.sum(z**2))
        ),
        "mlp_fourier": pinn.MLP(
            2, "scalar", 8, 2, key=k[3], embedding=pinn.FourierFeatures(2, 4, 1.0, key=k[4])
        ),
        "mlp_periodic": pinn.MLP(
            2, "scalar", 8, 2, key=k[3], embedding=pinn.PeriodicEmbedding((None, 2.0), 2)
        ),
        "modified_mlp": pinn.ModifiedMLP(2, 2, 8, 2, key=k[5]),
        "siren": pinn.SIREN(2, "scalar", 8, 2, key=k[0]),
        "pig": pinn.PhysicsInformedGaussians(2, "scalar", 5, 3, key=k[1], covariance="cholesky"),
        "hard_dirichlet": pinn.HardDirichlet(
            mlp, lambda x: jnp.sin(x[0]) * x[1], lambda x: (1 - x[0] ** 2) * (1 - x[1] ** 2)
        ),
        "hard_initial_vector": pinn.HardInitial(
            vec,
            lambda s: jnp.stack([s[0], s[0] ** 2, 1.0]),
            distance=lambda s: 1 - s[0] ** 2,
            tau=0.3,
        ),
    }


NETWORKS = list(_networks(jax.random.key(0)))
DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [0.3, -2.0]])


@pytest.mark.parametrize("name", NETWORKS)
@pytest.mark.parametrize(("n", "second"), [(7, (2, 0)), (1, (0, 1, 2))])
def test_network_rule_equals_nested_jvps(x64, name, n, second):
    net = _networks(jax.random.key(0))[name]
    points = jax.random.uniform(jax.random.key(1), (n, 2), minval=-1.0, maxval=1.0)
    directions = jnp.asarray(DIRECTIONS)
    fast = eqx.filter_jit(lambda m, x: pinn.directional_jets(m, x, directions, second=second))
    ref = eqx.filter_jit(lambda m, x: pointwise_jets(m, x, directions, second))
    fast, ref = fast(net, points), ref(net, points)
    out = ref.value.shape[1:]
    assert fast.value.shape == (n, *out)
    assert fast.first.shape == (3, n, *out)
    assert fast.second.shape == (len(second), n, *out)
    for a, b in zip(fast, ref, strict=True):
        scale = max(1.0, float(jnp.max(jnp.abs(b))))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-13 * scale)
    # and the value is the single-point call's
    np.testing.assert_allclose(fast.value, jax.vmap(net)(points), rtol=1e-14, atol=1e-14)


def test_closed_form_jets(x64):
    def u(x):
        return jnp.sin(x[0]) * jnp.exp(2 * x[1])

    points = jnp.array([[0.3, -0.5], [1.1, 0.2]])
    v = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    jets = pinn.directional_jets(u, points, v, second=(0, 1, 2))
    s, c, e = jnp.sin(points[:, 0]), jnp.cos(points[:, 0]), jnp.exp(2 * points[:, 1])
    np.testing.assert_allclose(jets.value, s * e, rtol=1e-14)
    np.testing.assert_allclose(
        jets.first, jnp.stack([c * e, 2 * s * e, (c + 2 * s) * e]), rtol=1e-14
    )
    # D^2 u[(1, 1), (1, 1)] = u_00 + 2 u_01 + u_11
    curv = jnp.stack([-s * e, 4 * s * e, (-s + 4 * c + 4 * s) * e])
    np.testing.assert_allclose(jets.second, curv, rtol=1e-13)


def _problems():
    return {
        "burgers": (pinn.burgers(0.07), 2),
        "convection": (pinn.convection(3.0), 2),
        "allen_cahn": (pinn.allen_cahn(0.01, 5.0), 2),
        "heat_2d": (pinn.heat(lambda s: jnp.sin(s[0]) * s[1], 0.3, g=lambda x: x[0] * x[1]), 3),
        "poisson_3d": (pinn.poisson(lambda x: jnp.sum(x**2), lambda x: x[0]), 3),
    }


def _network(kind, d, key):
    network = {"mlp": pinn.MLP, "modified_mlp": pinn.ModifiedMLP}[kind]
    return network(d, "scalar", 10, 2, key=key)


@pytest.mark.parametrize("name", list(_problems()))
@pytest.mark.parametrize("network", ["mlp", "modified_mlp"])
def test_batched_residuals_equal_single_point_residuals(x64, name, network):
    problem, d = _problems()[name]
    key = jax.random.key(2)
    net = _network(network, d, key)
    points = jax.random.uniform(key, (9, d), minval=-1.0, maxval=1.0)
    pts = dict.fromkeys(problem.names, points)
    batched = eqx.filter_jit(problem.residuals)(net, pts)
    single = eqx.filter_jit(
        lambda m: {t.name: jax.vmap(lambda x, r=t.residual: r(m, x))(points) for t in problem.terms}
    )(net)
    for name_ in problem.names:
        np.testing.assert_allclose(batched[name_], single[name_], rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("name", "network"), [("burgers", "mlp"), ("heat_2d", "modified_mlp")])
def test_loss_gradient_through_the_rule_equals_nested_jvps(x64, name, network):
    """The gradient of the loss with respect to the parameters, through the network's rule and
    through nested JVPs (the network hidden behind a plain function)."""
    problem, d = _problems()[name]
    key = jax.random.key(3)
    net = _network(network, d, key)
    pts = dict.fromkeys(problem.names, jax.random.uniform(key, (9, d), minval=-1.0, maxval=1.0))
    params, static = eqx.partition(net, eqx.is_inexact_array)

    def loss(p, plain):
        m = eqx.combine(p, static)
        return problem.loss((lambda x: m(x)) if plain else m, pts)[0]

    g_fast = jax.jit(jax.grad(loss), static_argnums=1)(params, False)
    g_ref = jax.jit(jax.grad(loss), static_argnums=1)(params, True)
    for a, b in zip(jax.tree.leaves(g_fast), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_burgers_residual_of_a_closed_form(x64):
    nu = 0.05

    def u(x):
        return jnp.exp(-x[0]) * jnp.sin(jnp.pi * x[1])

    points = jnp.array([[0.1, 0.2], [0.5, -0.7], [0.9, 0.33]])
    t, x = points[:, 0], points[:, 1]
    value = jnp.exp(-t) * jnp.sin(jnp.pi * x)
    ut, ux = -value, jnp.pi * jnp.exp(-t) * jnp.cos(jnp.pi * x)
    uxx = -(jnp.pi**2) * value
    expected = ut + value * ux - nu * uxx
    r = pinn.BurgersResidual(jnp.asarray(nu))
    np.testing.assert_allclose(r.on_points(u, points), expected, rtol=1e-13)
    np.testing.assert_allclose(jax.vmap(lambda p: r(u, p))(points), expected, rtol=1e-13)


def test_nan_point_gives_nan_jets(x64):
    net = pinn.MLP(2, "scalar", 6, 2, key=jax.random.key(0))
    points = jnp.array([[0.1, 0.2], [jnp.nan, 0.3]])
    jets = pinn.directional_jets(net, points, jnp.eye(2), second=(1,))
    for a in jets:
        assert np.all(np.isfinite(a[..., 0])) and np.all(np.isnan(a[..., 1]))


@pytest.mark.wrong_argument_types
def test_argument_checks():
    net = pinn.MLP(2, "scalar", 6, 2, key=jax.random.key(0))
    points = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="points"):
        pinn.directional_jets(net, jnp.zeros((2,)), jnp.eye(2))
    with pytest.raises(ValueError, match="directions"):
        pinn.directional_jets(net, points, jnp.eye(3))
    with pytest.raises(ValueError, match="second"):
        pinn.directional_jets(net, points, jnp.eye(2), second=(2,))
    with pytest.raises(ValueError, match="second"):
        pinn.directional_jets(net, points, jnp.eye(2), second=(1, 1))
    with pytest.raises(TypeError, match="second"):
        pinn.directional_jets(net, points, jnp.eye(2), second=(0.5,))
    with pytest.raises(ValueError, match="in_size=2"):
        pinn.directional_jets(net, jnp.zeros((4, 3)), jnp.eye(3))
    with pytest.raises(ValueError, match="d >= 2"):
        pinn.BurgersResidual(jnp.asarray(0.1)).on_points(net, jnp.zeros((4, 1)))
    # No directions: the value only.
    jets = pinn.directional_jets(net, points)
    assert jets.first.shape == (0, 4) and jets.second.shape == (0, 4)
