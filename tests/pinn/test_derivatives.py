"""Residual operators against closed-form derivatives (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._derivatives import (
    derivative,
    divergence,
    gradient,
    hessian,
    hessian_diag,
    jacobian,
    laplacian,
    time_derivative,
)

A, B = 1.7, -0.6


def _u(z):
    """u(t, x) = sin(a x) exp(b t)."""
    return jnp.sin(A * z[1]) * jnp.exp(B * z[0])


def _points():
    rng = np.random.default_rng(0)
    return jnp.asarray(rng.uniform(-1.0, 1.0, (7, 2)))


@jax.jit
def _all_operators(z):
    out = {
        "t": jax.vmap(time_derivative(_u))(z),
        "x": jax.vmap(derivative(_u, 1))(z),
        "xx": jax.vmap(derivative(_u, -1, 2))(z),
        "grad": jax.vmap(gradient(_u))(z),
        "jac": jax.vmap(jacobian(_u))(z),
        "hess": jax.vmap(hessian(_u))(z),
    }
    for method in ("forward", "forward_over_reverse"):
        out["diag_" + method] = jax.vmap(hessian_diag(_u, method=method))(z)
        out["lap_" + method] = jax.vmap(laplacian(_u, axes=range(1, 2), method=method))(z)
    return out


def test_first_and_second_derivatives_closed_form(x64):
    z = _points()
    t, x = z[:, 0], z[:, 1]
    s, c, e = np.sin(A * x), np.cos(A * x), np.exp(B * t)
    out = _all_operators(z)
    np.testing.assert_allclose(out["t"], B * s * e, rtol=1e-13)
    np.testing.assert_allclose(out["x"], A * c * e, rtol=1e-13)
    np.testing.assert_allclose(out["xx"], -(A**2) * s * e, rtol=1e-13)
    np.testing.assert_allclose(out["grad"], np.stack([B * s * e, A * c * e], -1), rtol=1e-13)
    np.testing.assert_allclose(out["jac"], np.stack([B * s * e, A * c * e], -1), rtol=1e-13)
    np.testing.assert_allclose(out["hess"][:, 0, 1], A * B * c * e, rtol=1e-13)
    np.testing.assert_allclose(out["hess"][:, 1, 0], A * B * c * e, rtol=1e-13)
    for method in ("forward", "forward_over_reverse"):
        diag = np.stack([B**2 * s * e, -(A**2) * s * e], -1)
        np.testing.assert_allclose(out["diag_" + method], diag, rtol=1e-13)
        np.testing.assert_allclose(out["lap_" + method], -(A**2) * s * e, rtol=1e-13)


def test_higher_order_derivatives(x64):
    z = _points()
    t, x = z[:, 0], z[:, 1]

    @jax.jit
    def high(z):
        jet3 = jax.vmap(derivative(_u, 1, 3))(z)  # "auto": Taylor mode
        jvp3 = jax.vmap(derivative(_u, 1, 3, method="jvp"))(z)
        return jet3, jvp3, jax.vmap(time_derivative(_u, 4, method="jet"))(z)

    jet3, jvp3, jet4 = high(z)
    d3 = -(A**3) * np.cos(A * x) * np.exp(B * t)
    np.testing.assert_allclose(jet3, d3, rtol=1e-12)
    np.testing.assert_allclose(jvp3, d3, rtol=1e-12)
    np.testing.assert_allclose(jet4, B**4 * np.sin(A * x) * np.exp(B * t), rtol=1e-12)


def test_laplacian_of_sum_of_squares_and_vector_output(x64):
    def square(y):
        return jnp.sum(y**2)

    def vector(y):  # (x^3, x y^2): Laplacians (6x, 2x)
        return jnp.stack([y[0] ** 3, y[0] * y[1] ** 2])

    @jax.jit
    def laps(p1, p3, p5, q):
        return (
            [laplacian(square)(p) for p in (p1, p3, p5)],
            [laplacian(square, method="forward_over_reverse")(p) for p in (p1, p3, p5)],
            laplacian(vector)(q),
            hessian_diag(vector)(q),
        )

    fwd, fwd_rev, lap_v, diag_v = laps(
        *(jnp.linspace(-0.5, 0.9, d) for d in (1, 3, 5)), jnp.array([0.3, -2.0])
    )
    np.testing.assert_allclose(fwd, [2.0, 6.0, 10.0], rtol=1e-14)
    np.testing.assert_allclose(fwd_rev, [2.0, 6.0, 10.0], rtol=1e-14)
    np.testing.assert_allclose(lap_v, [1.8, 0.6], rtol=1e-13)
    np.testing.assert_allclose(diag_v, [[1.8, 0.0], [0.0, 0.6]], atol=1e-13)


def test_divergence_closed_form(x64):
    def v(y):
        return jnp.stack([y[0] ** 2 * y[1], jnp.sin(y[1]), y[2] * y[0]])

    def w(z):  # a spatial field on (t, x, y)
        return jnp.stack([z[0] * z[1], z[2] ** 2])

    x = jnp.array([0.4, -0.3, 1.1])
    div_v, div_w = jax.jit(lambda x: (divergence(v)(x), divergence(w, axes=(1, 2))(x)))(x)
    assert div_v == pytest.approx(2 * 0.4 * -0.3 + np.cos(-0.3) + 0.4, rel=1e-13)
    assert div_w == pytest.approx(0.4 + 2 * 1.1, rel=1e-13)
    with pytest.raises(ValueError, match="one component per axis"):
        jax.eval_shape(divergence(w), x)


def test_differentiable_wrt_parameters_and_jit(x64):
    x = jnp.array([0.2, 0.7])

    def residual(a):
        u = lambda z: jnp.sin(a * z[1]) * jnp.exp(B * z[0])
        return laplacian(u, axes=[1])(x) + derivative(u, 1, 3)(x)

    # d/da of -a^2 sin(a x) e - a^3 cos(a x) e, e = exp(b t)
    e, y = np.exp(B * 0.2), 0.7
    g = e * (
        -2 * A * np.sin(A * y)
        - A**2 * y * np.cos(A * y)
        - 3 * A**2 * np.cos(A * y)
        + A**3 * y * np.sin(A * y)
    )
    assert jax.jit(jax.grad(residual))(A) == pytest.approx(g, rel=1e-12)


def test_bad_input():
    with pytest.raises(ValueError, match="one point"):
        laplacian(_u)(jnp.zeros((3, 2)))
    with pytest.raises(ValueError, match="axis"):
        derivative(_u, 2)(jnp.zeros(2))
    with pytest.raises(TypeError, match="axis"):
        derivative(_u, 1.0)
    with pytest.raises(ValueError, match="order"):
        derivative(_u, 0, 0)
    with pytest.raises(ValueError, match="method"):
        laplacian(_u, method="hutchinson")
    with pytest.raises(ValueError, match="scalar-valued"):
        jax.eval_shape(gradient(lambda z: z), jnp.zeros(2))
    with pytest.raises(ValueError, match="distinct"):
        laplacian(_u, axes=(1, 1))(jnp.zeros(2))
