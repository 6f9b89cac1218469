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


@pytest.mark.wrong_argument_types
def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shapes differ"):
        ops.relative_lp_loss(jnp.zeros((1, 8)), jnp.zeros((1, 9)))


def test_zero_target_and_gradient_at_a_perfect_prediction(x64):
    """Issue 17: a zero target gave inf, and the gradient at pred == target was NaN. The loss of
    a zero target is the absolute error (documented), and every gradient is finite: zero at a
    perfect prediction, the closed form (pred - u) / (||pred - u|| ||u||) elsewhere."""
    rng = np.random.default_rng(3)
    pred, target = rng.normal(size=(2, 2, 8))
    zeros = np.zeros_like(target)
    np.testing.assert_allclose(ops.relative_lp_loss(pred, zeros), np.linalg.norm(pred), rtol=1e-14)
    np.testing.assert_allclose(
        ops.relative_lp_loss(pred, zeros, 3.0), np.sum(np.abs(pred) ** 3) ** (1 / 3), rtol=1e-14
    )
    assert float(ops.relative_lp_loss(zeros, zeros)) == 0.0

    @jax.jit
    def gradients(pred, target):
        zeros = jnp.zeros_like(target)
        rel = jax.grad(ops.relative_lp_loss)
        at_each_p = jax.vmap(  # p traced: 2, 1, 1/2 and 3 in one program
            lambda p: (rel(target, target, p), rel(zeros, zeros, p)), out_axes=0
        )(jnp.array([2.0, 1.0, 0.5, 3.0]))
        others = [
            (jax.grad(loss)(target, target), jax.grad(loss)(pred, zeros), loss(zeros, zeros))
            for loss in (ops.h1_loss, ops.sobolev_loss)
        ]
        return at_each_p, others, rel(pred, target)

    at_each_p, others, general = gradients(pred, target)
    np.testing.assert_array_equal(at_each_p[0], 0.0)  # at pred == target
    np.testing.assert_array_equal(at_each_p[1], 0.0)  # at pred == target == 0
    for perfect, toward_zero, value in others:  # H1 and H^s
        np.testing.assert_array_equal(perfect, 0.0)
        assert np.all(np.isfinite(toward_zero)) and float(value) == 0.0
    e = pred - target
    np.testing.assert_allclose(
        general, e / (np.linalg.norm(e) * np.linalg.norm(target)), rtol=1e-12
    )
    # One zero entry with p = 1 (|u_n| is not differentiable there): 0, in the subdifferential.
    u = jnp.array([0.0, 2.0, -1.0])
    np.testing.assert_array_equal(jax.jit(jax.grad(ops.lp_norm))(u, 1.0), [0.0, 1.0, -1.0])


def test_p_must_be_positive_and_inf_is_the_max_norm():
    u = jnp.array([[3.0, -4.0]])
    for p in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="p must be > 0"):
            ops.relative_lp_loss(u, 2 * u, p)
    with pytest.raises(Exception, match="p must be > 0"):
        jax.block_until_ready(jax.jit(lambda p: ops.lp_norm(u, p))(-1.0))
    # p = inf was 1 (|u|^inf summed, to the power 0); it is max |u|.
    assert float(ops.lp_norm(u, float("inf"))) == 4.0
    assert float(ops.lp_norm(u, float("inf"), weights=jnp.array([1.0, 0.0]))) == 3.0
    # Large p or magnitudes no longer overflow in float32 (|u|^p was inf).
    np.testing.assert_allclose(ops.lp_norm(1e20 * u, 2.0), 5e20, rtol=1e-6)
    np.testing.assert_allclose(ops.lp_norm(u, 200.0), 4.0 * (1 + 0.75**200) ** (1 / 200), rtol=1e-6)
    with pytest.raises(ValueError, match="weights must be finite and >= 0"):
        ops.lp_norm(u, weights=jnp.array([1.0, -1.0]))
    with pytest.raises(ValueError, match="lengths must be finite numbers > 0"):
        ops.h1_norm(u, lengths=0.0)
    with pytest.raises(ValueError, match="s must be finite"):
        ops.sobolev_loss(u, u, float("nan"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_non_finite_field_never_gives_a_finite_loss(bad):
    # The safe-norm guards once tested "> 0", which is false for NaN: a NaN prediction then had
    # a relative L2 loss of exactly 0.
    u = jnp.ones((1, 8))
    spoilt = u.at[0, 3].set(bad)
    for loss in (
        lambda a, b: ops.relative_lp_loss(a, b),
        lambda a, b: ops.relative_lp_loss(a, b, p=1.0),
        lambda a, b: ops.h1_loss(a, b),
        lambda a, b: ops.sobolev_loss(a, b, 1.0),
    ):
        assert not np.isfinite(loss(spoilt, u)) and not np.isfinite(loss(u, spoilt))
    norm = float(ops.lp_norm(spoilt))
    assert norm == np.inf if bad == np.inf else np.isnan(norm)
    assert np.isnan(ops.lp_norm(u.at[0, 1].set(np.nan).at[0, 2].set(np.inf)))
