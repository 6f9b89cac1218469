"""Losses: relative Lp with quadrature weights, H1 via spectral derivatives, H^s; closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import operators as ops


def test_relative_l2_closed_form(x64):
    n = 64
    x = np.arange(n) / n
    u = np.sin(2 * np.pi * 3 * x)[None]
    e = 0.1 * np.cos(2 * np.pi * 5 * x)[None]
    # ||e|| / ||u|| = 0.1 (both mean squares are 1/2).
    np.testing.assert_allclose(ops.relative_lp_loss(u + e, u), 0.1, rtol=1e-12)
    # Traced p, vmapped: p = 1 gives mean |0.1 cos| / mean |sin| = 0.1.
    ps = jnp.array([1.0, 2.0])
    got = jax.vmap(lambda p: ops.relative_lp_loss(u + e, u, p))(ps)
    np.testing.assert_allclose(got, [0.1, 0.1], rtol=1e-10)


def test_quadrature_weights_give_the_integral(x64):
    # Non-periodic grid on [0, 1] with trapezoid weights: ||x^2 - 0||_2 / ||1||_2 = sqrt(1/5).
    n = 2001
    t = np.linspace(0, 1, n)
    w = np.full(n, 1.0 / (n - 1))
    w[[0, -1]] /= 2
    got = ops.relative_lp_loss(t[None] ** 2 + 1.0, np.ones((1, n)), weights=w)
    np.testing.assert_allclose(got, np.sqrt(1 / 5), rtol=1e-6)
    np.testing.assert_allclose(ops.lp_norm(t[None], 3.0, weights=w), (1 / 4) ** (1 / 3), rtol=1e-6)
    # Uniform weights change nothing in a relative error.
    u, v = np.random.default_rng(0).normal(size=(2, 1, 50))
    np.testing.assert_allclose(
        ops.relative_lp_loss(u, v, weights=np.full(50, 0.3)), ops.relative_lp_loss(u, v), rtol=1e-12
    )


def test_h1_via_spectral_derivative_matches_closed_form(x64):
    n = 48
    x = np.arange(n) / n
    h1, hs = jax.jit(ops.h1_norm), jax.jit(ops.sobolev_norm)
    for k in (1, 4):
        u = np.sin(2 * np.pi * k * x)[None]
        expected = np.sqrt((1 + 4 * np.pi**2 * k**2) / 2)
        np.testing.assert_allclose(h1(u), expected, rtol=1e-12)
        np.testing.assert_allclose(h1(u), hs(u, 1.0), rtol=1e-12)
    # Two channels, 2-D, box of lengths (2, 1): sum of the channels' H1 norms squared.
    xs, ys = np.arange(16) * 2.0 / 16, np.arange(12) / 12
    xx, yy = np.meshgrid(xs, ys, indexing="ij")
    f = np.stack([np.sin(np.pi * xx) * np.cos(2 * np.pi * yy), np.cos(2 * np.pi * 2 * yy)])
    h1_sq = 2.0 * ((1 + np.pi**2 + 4 * np.pi**2) / 4 + (1 + 16 * np.pi**2) / 2)
    both = jax.jit(
        lambda f: (ops.h1_norm(f, lengths=(2.0, 1.0)), ops.sobolev_norm(f, 1.0, lengths=(2.0, 1.0)))
    )(f)
    np.testing.assert_allclose(np.square(both), h1_sq, rtol=1e-12)


@pytest.mark.parametrize("s", [-1.0, 1.0, 2.0])
def test_sobolev_loss_closed_form(x64, s):
    n = 64
    x = np.arange(n) / n
    u = np.sin(2 * np.pi * 2 * x)[None]
    e = 0.2 * np.sin(2 * np.pi * 6 * x)[None]
    lam = lambda k: (1 + 4 * np.pi**2 * k**2) ** s
    expected = 0.2 * np.sqrt(lam(6) / lam(2))
    np.testing.assert_allclose(ops.sobolev_loss(u + e, u, s), expected, rtol=1e-12)
    np.testing.assert_allclose(
        ops.sobolev_loss(u + e, u, s, relative=False), 0.2 * np.sqrt(lam(6) / 2), rtol=1e-12
    )
    if s == 1.0:
        np.testing.assert_allclose(ops.h1_loss(u + e, u), expected, rtol=1e-12)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        ops.relative_lp_loss(jnp.zeros((1, 8)), jnp.zeros((1, 9)))
