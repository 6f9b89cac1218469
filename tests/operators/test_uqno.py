"""UQNO: the conformal ranks are the closed form, the calibrated band covers fresh functions at
the promised rate (and not far above it), the residual loss is the pinball loss, bad levels
raise naming themselves."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._uqno import (
    UQNO,
    calibrate_uqno,
    conformal_ranks,
    uqno_residual_loss,
    uqno_scores,
)


class Affine(eqx.Module):
    """``a x + b`` pointwise: a stand-in operator with trainable weights."""

    a: jax.Array
    b: jax.Array

    def __call__(self, x):
        return self.a * x + self.b


class Spread(eqx.Module):
    """``c (1/2 + x^2)``: the noise level of the synthetic problem (up to ``c``)."""

    c: jax.Array

    def __call__(self, x):
        return self.c * (0.5 + x**2)


def _constant(value):
    return Affine(jnp.asarray(0.0), jnp.asarray(value))


def test_calibration_ranks_are_the_closed_form():
    # n = 9 functions of m = 10 points, alpha = 0.25, delta = 0.2:
    # k = ceil(0.75 * 10) = 8 of the points, j = ceil(10 * 0.8) = 8 of the functions, i.e. the
    # empirical quantile of level ceil((n + 1)(1 - delta)) / n = 8/9 of the per-function scores.
    n, m, alpha, delta = 9, 10, 0.25, 0.2
    assert conformal_ranks(n, m, alpha, delta) == (8, 8)
    rng = np.random.default_rng(0)
    # Inputs and errors exact in float32 (multiples of 1/8), so the ratios are too.
    x = rng.integers(-16, 16, size=(n, 1, m)) / 8.0
    base = Affine(jnp.asarray(2.0), jnp.asarray(0.0))
    errors = rng.integers(1, 24, size=(n, 1, m)) / 8.0
    y = 2.0 * x + errors * rng.choice([-1.0, 1.0], size=errors.shape)
    width = 0.5
    model = UQNO(base, _constant(width))
    scale = float(calibrate_uqno(model, x, y, alpha, delta))

    ratios = np.sort(errors.reshape(n, m) / width, axis=1)
    per_function = ratios[:, 7]  # the 8th smallest of each function
    assert scale == np.sort(per_function)[7]
    level = math.ceil((n + 1) * (1 - delta)) / n
    assert scale == np.quantile(per_function, level, method="inverted_cdf")
    # The scale keeps >= 1 - alpha of the points of at least j = 8 of the 9 functions.
    inside = (errors.reshape(n, m) <= scale * width).mean(axis=1)
    assert np.sum(inside >= 1 - alpha) >= 8
    # The band the calibrated model returns is that scale times the residual.
    pred, half = model.calibrated(scale)(jnp.asarray(x[0]))
    np.testing.assert_array_equal(pred, 2.0 * x[0])
    np.testing.assert_array_equal(half, np.full(x[0].shape, scale * width))


@pytest.mark.slow
def test_calibrated_band_covers_fresh_functions():
    r"""Synthetic problem: ``y = x + s(x) eps`` with i.i.d. normal ``eps`` per point, the base
    exact in mean and the residual ``s(x)`` exact up to that noise.

    For continuous scores the coverage given one calibration set is ``Beta(j, n + 1 - j)``
    (mean ``j / (n + 1)``); with ``n = 20``, ``delta = 0.1``: ``j = 19``, mean ``19/21 = 0.905``
    (the uncorrected rank ``ceil(n (1 - delta)) = 18`` would give ``0.857``). Over ``R = 100``
    calibration sets of ``T = 200`` fresh functions each, one run's coverage has variance
    ``19*2/(21^2*22) + 0.9*0.1/200 = 4.4e-3``, so the mean's standard error is ``0.0066``; the
    test allows ``3`` of them (``0.02``) each side of ``19/21``.
    """
    n, t_test, runs, m, alpha, delta = 20, 200, 100, 32, 0.1, 0.1
    k, j = conformal_ranks(n, m, alpha, delta)
    assert (k, j) == (29, 19)
    key = jax.random.key(0)
    kx, ke = jax.random.split(key)
    x = jax.random.uniform(kx, (runs, n + t_test, 1, m), minval=-1.0, maxval=1.0)
    spread = Spread(jnp.asarray(1.0))
    y = x + spread(x) * jax.random.normal(ke, x.shape)
    model = UQNO(Affine(jnp.asarray(1.0), jnp.asarray(0.0)), spread)

    @jax.jit
    @jax.vmap
    def coverage(x, y):  # one calibration run: the fraction of fresh functions covered
        scale = calibrate_uqno(model, x[:n], y[:n], alpha, delta)
        pred, half = jax.vmap(model.calibrated(scale))(x[n:])
        inside = jnp.mean(jnp.abs(y[n:] - pred) <= half, axis=(1, 2))
        return jnp.mean(inside >= 1 - alpha)

    mean = float(jnp.mean(coverage(x, y)))
    expected, tol = j / (n + 1), 3 * 0.0066
    assert 1 - delta <= expected <= 1 - delta + 1 / (n + 1)
    assert expected - tol <= mean <= expected + tol, mean


def test_residual_loss_is_the_pinball_loss_and_leaves_the_base_alone():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 12)).astype(np.float32)
    y = 0.3 * x + rng.standard_normal((1, 12)).astype(np.float32)
    base = Affine(jnp.asarray(0.3), jnp.asarray(0.0))
    q = 0.8
    e = np.abs(y - 0.3 * x)
    # The minimiser over a constant width is the q-quantile of the errors.
    widths = np.linspace(0.0, 3.0, 3001)
    losses = jax.jit(
        jax.vmap(lambda w: uqno_residual_loss(UQNO(base, _constant(w)), x, y, quantile=q))
    )(widths)
    for w in (0.0, 0.4, 1.3):
        r = e - w
        expected = np.mean(np.maximum(q * r, (q - 1) * r))
        assert float(losses[round(w * 1000)]) == pytest.approx(expected, rel=1e-6)
    assert widths[int(np.argmin(losses))] == pytest.approx(
        np.quantile(e, q, method="inverted_cdf"), abs=1e-3
    )
    grads = jax.jit(jax.grad(lambda mdl: uqno_residual_loss(mdl, x, y, quantile=q)))(
        UQNO(base, _constant(0.5))
    )
    assert float(grads.base.a) == 0.0 and float(grads.base.b) == 0.0
    assert float(grads.residual.b) != 0.0


def test_scores_of_zero_widths():
    model = UQNO(_constant(0.0), _constant(0.0))
    s = eqx.filter_jit(uqno_scores)(model, jnp.zeros((1, 3)), jnp.asarray([[0.0, 1.0, -2.0]]))
    np.testing.assert_array_equal(s, [[0.0, np.inf, np.inf]])


@pytest.mark.parametrize(
    ("alpha", "delta", "n", "name"),
    [
        (0.0, 0.1, 20, "alpha"),
        (1.5, 0.1, 20, "alpha"),
        pytest.param("a lot", 0.1, 20, "alpha", marks=pytest.mark.wrong_argument_types),
        (0.1, 0.0, 20, "delta"),
        (0.1, float("nan"), 20, "delta"),
        (0.1, 0.1, 5, "delta"),  # 5 functions cannot certify delta = 0.1 (needs 9)
    ],
)
def test_bad_levels_name_themselves(alpha, delta, n, name):
    model = UQNO(_constant(0.0), _constant(1.0))
    x = np.zeros((n, 1, 4), np.float32)
    with pytest.raises(ValueError, match=name):
        calibrate_uqno(model, x, x, alpha, delta)


def test_bad_quantile_and_shapes_raise():
    model = UQNO(_constant(0.0), _constant(1.0))
    with pytest.raises(ValueError, match="quantile"):
        uqno_residual_loss(model, np.zeros(3), np.zeros(3), quantile=1.0)
    with pytest.raises(ValueError, match="targets"):
        calibrate_uqno(model, np.zeros((10, 3)), np.zeros((10, 4)), 0.1, 0.1)
