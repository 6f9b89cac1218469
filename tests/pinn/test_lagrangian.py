import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._constraints import PeriodicEmbedding
from jaxsolve.pinn._lagrangian import (
    CharacteristicModel,
    LagrangianNetwork,
    convection_diffusion_residual,
    eulerian_values,
    lagrangian_burgers,
    lagrangian_convection,
    lagrangian_residual,
)
from jaxsolve.pinn._networks import MLP
from jaxsolve.pinn._problems import BurgersResidual, ConvectionResidual


def _key(seed):
    return jax.random.key(seed, impl="rbg")


def _points(seed, n, lo, hi):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(lo, hi, size=(n, len(lo))))


def _random_network(seed, embedding, n_in, width=16):
    """A fixed random two-layer network on ``embedding(p)`` (NumPy weights: nothing to compile
    at construction)."""
    rng = np.random.default_rng(seed)
    w1 = jnp.asarray(rng.normal(size=(n_in, width)))
    b1 = jnp.asarray(rng.normal(size=width))
    w2 = jnp.asarray(rng.normal(size=width) / np.sqrt(width))
    return lambda p: jnp.tanh(embedding(p) @ w1 + b1) @ w2


def test_wrapped_network_transports_exactly_and_is_periodic(x64):
    beta, length = 30.0, 2 * math.pi
    problem, _ = lagrangian_convection(beta)
    assert problem.names == ("pde", "ic")
    emb = PeriodicEmbedding((None, length), 2)
    u = LagrangianNetwork(_random_network(0, emb, 5), beta)
    v = LagrangianNetwork(
        _random_network(1, PeriodicEmbedding((length,), 2), 4), beta, time_input=False
    )
    pts = _points(0, 64, [0.0, 0.0], [1.0, length])

    @jax.jit
    def run(pts):
        euler = ConvectionResidual(jnp.asarray(beta))
        r_e = jax.vmap(lambda x: euler(u, x))(pts)
        r_l = jax.vmap(lambda x: problem.terms[0].residual(u, x))(pts)
        r0 = jax.vmap(lambda x: euler(v, x))(pts)
        t = pts[:, :1]
        left = jnp.concatenate([t, jnp.zeros_like(t)], 1)
        right = jnp.concatenate([t, jnp.full_like(t, length)], 1)
        ic = jax.vmap(lambda x: problem.terms[1].residual(u, x))(pts)
        direct = jax.vmap(lambda x: u.network(jnp.stack([0.0, x[1]])) - jnp.sin(x[1]))(pts)
        return (
            r_e,
            r_l,
            r0,
            jax.vmap(u)(left),
            jax.vmap(u)(right),
            ic,
            direct,
        )

    r_e, r_l, r0, u_l, u_r, ic, direct = run(pts)
    # u_t + beta u_x = N_t|xi by the chain rule (the tangent of xi along (1, beta) is exactly 0)
    np.testing.assert_allclose(r_e, r_l, rtol=1e-12, atol=1e-12)
    assert float(jnp.max(jnp.abs(r_l))) > 1e-3  # a random N(t, xi) does depend on t
    # with N(xi) alone the transport equation holds identically, for any network: the tangent
    # of xi along (1, beta) is beta - beta * 1 = 0 exactly
    np.testing.assert_array_equal(r0, 0.0)
    # exact periodicity in x through the embedding in xi: u(t, 0) = u(t, L)
    np.testing.assert_allclose(u_l, u_r, atol=1e-12)
    # the initial condition term: u(0, x) - sin x with u(0, x) = N(0, x)
    np.testing.assert_allclose(ic, direct, atol=1e-14)


@pytest.mark.slow
def test_lagrangian_residual_equals_eulerian_with_diffusion_and_reaction(x64):
    c, nu = jnp.asarray([2.0, -1.5]), 0.05

    def f(u):
        return 3.0 * u * (1 - u)

    net = MLP(3, "scalar", 12, 2, key=_key(2), embedding=PeriodicEmbedding((None, 1.0, 2.0)))
    u = LagrangianNetwork(net, c)
    pts = _points(1, 32, [0.0, 0.0, 0.0], [1.0, 1.0, 2.0])
    r_l = jax.vmap(lambda x: lagrangian_residual(nu, reaction=f)(u, x))(pts)
    r_e = jax.vmap(lambda x: convection_diffusion_residual(c, nu, reaction=f)(u, x))(pts)
    np.testing.assert_allclose(r_l, r_e, rtol=1e-10, atol=1e-12)
    # a closed form: u = exp(-nu k^2 t) sin(k (x - c t)) solves u_t + c u_x = nu u_xx
    k = 3.0
    exact = LagrangianNetwork(lambda p: jnp.exp(-nu * k**2 * p[0]) * jnp.sin(k * p[1]), c[:1])
    pts2 = pts[:, :2]
    r = jax.vmap(lambda x: lagrangian_residual(nu)(exact, x))(pts2)
    np.testing.assert_allclose(r, 0.0, atol=1e-13)
    r = jax.vmap(lambda x: convection_diffusion_residual(c[:1], nu)(exact, x))(pts2)
    np.testing.assert_allclose(r, 0.0, atol=1e-12)
    # a known inverse flow: rotation-free shear xi = x - t^2 (velocity 2t)
    shear = LagrangianNetwork(net, inverse_flow=lambda t, x: x - jnp.stack([t**2, 0.0]))
    r = jax.vmap(
        lambda x: (
            jax.jvp(shear, (x,), (jnp.stack([1.0, 2 * x[0], 0.0]),))[1]
            - jax.jvp(net, (shear.lagrangian_point(x),), (jnp.asarray([1.0, 0.0, 0.0]),))[1]
        )
    )(pts)
    np.testing.assert_allclose(r, 0.0, atol=1e-12)


@pytest.mark.slow
def test_learned_characteristics_residuals(x64):
    nu = 0.02
    # inviscid linear data u0 = xi: X = xi (1 + t), U = xi solve both equations exactly
    model = CharacteristicModel(lambda p: p[1], lambda p: p[1])
    problem, make = lagrangian_burgers(nu)
    pts = _points(3, 32, [0.0, -1.0], [1.0, 1.0])
    res = problem.residuals(model, {n: pts for n in problem.names})
    np.testing.assert_allclose(res["pde"], 0.0, atol=1e-14)
    np.testing.assert_allclose(res["characteristic"], 0.0, atol=1e-14)
    # on an Eulerian grid that is u = x / (1 + t) (inside the outermost characteristics)
    t, x = jnp.linspace(0, 1, 5), jnp.linspace(-0.9, 0.9, 7)
    u = eulerian_values(model, t, x, jnp.linspace(-1, 1, 11))
    np.testing.assert_allclose(u, x[None] / (1 + t[:, None]), atol=1e-14)

    # any Eulerian field u and any characteristics X: with U(t, xi) = u(t, X(t, xi)),
    # r_L = r_E(t, X) + (X_t - U) u_x (chain rule), r_E the Eulerian Burgers residual
    def u_e(z):
        return jnp.exp(-z[0]) * jnp.sin(2.0 * z[1]) + 0.3 * z[1] ** 2

    model = CharacteristicModel(
        lambda p: u_e(jnp.stack([p[0], p[1] + p[0] * jnp.sin(p[1]) * (1 + p[0])])),
        lambda p: jnp.sin(p[1]) * (1 + p[0]),
    )
    res = problem.residuals(model, {n: pts for n in problem.names})
    z = jax.vmap(model.eulerian_point)(pts)
    r_e = jax.vmap(lambda q: BurgersResidual(jnp.asarray(nu))(u_e, q))(z)
    u_x = jax.vmap(lambda q: jax.grad(u_e)(q)[1])(z)
    np.testing.assert_allclose(res["pde"], r_e + res["characteristic"] * u_x, rtol=1e-10)
    # hard constraints: X(0, xi) = xi, X(t, +-1) = +-1; and the builder's model
    m = make(key=_key(4), width=8, depth=1)
    t = pts[:, 0]
    np.testing.assert_allclose(
        jax.vmap(m.position)(jnp.stack([0 * t, pts[:, 1]], 1)), pts[:, 1], atol=0
    )
    for side in (-1.0, 1.0):
        ends = jnp.stack([t, jnp.full_like(t, side)], 1)
        np.testing.assert_allclose(jax.vmap(m.position)(ends), side, atol=1e-15)
    total, losses = problem.loss(m, {n: pts for n in problem.names})
    assert np.isfinite(float(total)) and set(losses) == set(problem.names)


@pytest.mark.slow
def test_jit_and_grad_through_the_wrapper():
    problem, make = lagrangian_convection(50.0, diffusion=0.01)
    u = make(key=_key(5), width=8, depth=1)
    pts = _points(4, 16, [0.0, 0.0], [1.0, 2 * math.pi]).astype(jnp.float32)

    @jax.jit
    def loss(model, beta):
        model = LagrangianNetwork(model.network, beta)
        return problem.loss(model, {"pde": pts, "ic": pts})[0]

    g = jax.grad(loss)(u, jnp.asarray(50.0))
    leaves = jax.tree_util.tree_leaves(g)
    assert all(bool(jnp.all(jnp.isfinite(a))) for a in leaves)
    # the velocity is data: held by stop_gradient
    assert float(jnp.max(jnp.abs(g.velocity))) == 0.0
    assert np.isclose(loss(u, jnp.asarray(50.0)), problem.loss(u, {"pde": pts, "ic": pts})[0])


def test_bad_arguments_raise():
    def net(p):
        return jnp.sum(p**2)

    with pytest.raises(ValueError, match="exactly one"):
        LagrangianNetwork(net)
    with pytest.raises(ValueError, match="exactly one"):
        LagrangianNetwork(net, 1.0, inverse_flow=lambda t, x: x)
    with pytest.raises(ValueError, match="velocity"):
        LagrangianNetwork(net, float("nan"))
    with pytest.raises(ValueError, match="components"):
        LagrangianNetwork(net, [1.0, 2.0])(jnp.ones(2))
    with pytest.raises(ValueError, match="space-time"):
        LagrangianNetwork(net, 1.0)(jnp.ones(1))
    with pytest.raises(ValueError, match="diffusion"):
        lagrangian_residual(-1.0)
    with pytest.raises(ValueError, match="length"):
        lagrangian_convection(length=0.0)
    with pytest.raises(ValueError, match="nu"):
        lagrangian_burgers(-0.1)
    with pytest.raises(TypeError, match="LagrangianNetwork"):
        lagrangian_residual()(net, jnp.ones(2))
    with pytest.raises(TypeError, match="CharacteristicModel"):
        lagrangian_burgers()[0].residuals(
            net, {n: jnp.ones((2, 2)) for n in lagrangian_burgers()[0].names}
        )
    with pytest.raises(ValueError, match="shape"):
        convection_diffusion_residual([1.0, 2.0])(net, jnp.ones(2))


@pytest.mark.wrong_argument_types
def test_wrong_argument_types_raise():
    def net(p):
        return jnp.sum(p**2)

    with pytest.raises(TypeError, match="network"):
        LagrangianNetwork(3.0, 1.0)
    with pytest.raises(TypeError, match="velocity"):
        LagrangianNetwork(net, "fast")
    with pytest.raises(ValueError, match="velocity"):
        LagrangianNetwork(net, jnp.ones((2, 2)))
    with pytest.raises(TypeError, match="time_input"):
        LagrangianNetwork(net, 1.0, time_input=1)
    with pytest.raises(TypeError, match="reaction"):
        lagrangian_residual(0.1, reaction=2.0)
    with pytest.raises(ValueError, match=r"\(t, xi\)"):
        CharacteristicModel(net, net).position(jnp.ones(3))
    with pytest.raises(TypeError, match="CharacteristicModel"):
        eulerian_values(net, jnp.ones(2), jnp.ones(2), jnp.ones(2))
    with pytest.raises(ValueError, match="t must be 1-D"):
        eulerian_values(CharacteristicModel(net, net), jnp.ones((2, 2)), jnp.ones(2), jnp.ones(2))
    with pytest.raises(TypeError, match="displacement"):
        CharacteristicModel(net, 2.0)


@pytest.mark.slow
def test_lagrangian_pinn_solves_fast_convection():
    # The convection benchmark at beta = 50, where a plain PINN fails: in the characteristic
    # frame the network only has to learn N(0, xi) = sin xi and N_t = 0. 800 full-batch Adam
    # steps reach a relative L2 error of about 2e-3 on the standard grid (the issue asks for
    # <= 5e-2).
    import equinox as eqx
    import optax

    beta, steps = 50.0, 800
    problem, make = lagrangian_convection(beta)
    model = make(key=jax.random.key(0), width=32, depth=3)
    rng = np.random.default_rng(0)
    dtype = jax.tree_util.tree_leaves(model)[0].dtype
    pts = {
        "pde": jnp.asarray(rng.uniform([0, 0], [1, 2 * math.pi], (1000, 2)), dtype),
        "ic": jnp.asarray(rng.uniform([0, 0], [1, 2 * math.pi], (256, 2)), dtype),
    }
    opt = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
    params, static = eqx.partition(model, eqx.is_inexact_array)

    @jax.jit
    def train(params):
        def body(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(lambda q: problem.loss(eqx.combine(q, static), pts)[0])(p)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return p, losses

    params, losses = train(params)
    u = eqx.combine(params, static)
    t = jnp.linspace(0, 1, 100)
    x = jnp.linspace(0, 2 * math.pi, 256, endpoint=False)
    tt, xx = jnp.meshgrid(t, x, indexing="ij")
    pred = jax.vmap(u)(jnp.stack([tt.ravel(), xx.ravel()], 1)).reshape(tt.shape)
    exact = jnp.sin(xx - beta * tt)
    err = float(jnp.linalg.norm(pred - exact) / jnp.linalg.norm(exact))
    assert float(losses[-1]) < 1e-4
    assert err < 1e-2
