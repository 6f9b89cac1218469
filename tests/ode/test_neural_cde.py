"""NeuralCDE: closed form, sampling invariance, missing values, batching, result codes, training.

The full training run is ``benchmarks/bench_cde.py``; the slow test here reaches 95% on a smaller
budget.
"""

import re

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import RESULTS
from jaxsolve.ode._neural_cde import (
    CDEField,
    NeuralCDE,
    classification_loss,
    forecasting_loss,
    interpolate,
    interpolate_batch,
)


class Constant(eqx.Module):
    """zeta(x) = z0, whatever x."""

    z0: jax.Array

    def __call__(self, x):
        return self.z0


class LinearField(eqx.Module):
    """f(z) = A z as a (hidden, 1) matrix: dz = A z dX for a scalar control X."""

    matrix: jax.Array

    def __call__(self, t, z, args):
        return (self.matrix @ z)[:, None]


class NaNField(eqx.Module):
    def __call__(self, t, z, args):
        return jnp.where(t > 0.5, jnp.nan, 1.0) * jnp.ones((z.shape[0], 3))


class ExactPath(dfx.AbstractPath):
    """X(t) = (t, sin 2t, cos t) with its closed-form derivative: the continuous control."""

    t0: float = 0.0
    t1: float = 3.0

    def evaluate(self, t0, t1=None, left=True):
        if t1 is not None:
            return self.evaluate(t1) - self.evaluate(t0)
        return jnp.stack([t0, jnp.sin(2 * t0), jnp.cos(t0)])

    def derivative(self, t, left=True):
        return jnp.stack([jnp.ones_like(t), 2 * jnp.cos(2 * t), -jnp.sin(t)])


def irregular_times(key, n, t1, shape=()):
    """n strictly increasing times from 0 to t1, gaps uniform in [0.2, 1.8] x the mean gap."""
    gaps = jax.random.uniform(key, (*shape, n - 1), minval=0.2, maxval=1.8)
    ts = jnp.concatenate([jnp.zeros((*shape, 1)), jnp.cumsum(gaps, axis=-1)], axis=-1)
    return ts * (t1 / ts[..., -1:])


def spirals(key, n_series, n_times=40, drop=0.3, t1=6.0):
    """Clockwise (0) vs anticlockwise (1) noisy 2-D spirals, random phase, radius and speed,
    irregular times, a fraction ``drop`` of the observations NaN."""
    k = jax.random.split(key, 7)
    ts = irregular_times(k[0], n_times, t1, (n_series,))
    labels = jax.random.bernoulli(k[1], 0.5, (n_series,)).astype(jnp.int32)
    phase = jax.random.uniform(k[2], (n_series, 1), maxval=2 * jnp.pi)
    radius = jax.random.uniform(k[3], (n_series, 1), minval=0.5, maxval=1.5)
    speed = jax.random.uniform(k[4], (n_series, 1), minval=0.6, maxval=1.4)
    angle = phase + jnp.where(labels[:, None] == 1, 1.0, -1.0) * speed * ts
    r = radius * jnp.exp(-0.1 * ts)
    xs = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], axis=-1)
    xs = xs + 0.05 * jax.random.normal(k[5], xs.shape)
    return ts, jnp.where(jax.random.bernoulli(k[6], drop, xs.shape), jnp.nan, xs), labels


TIGHT = dfx.PIDController(rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("method", [pytest.param("linear", marks=pytest.mark.slow), "cubic"])
def test_linear_cde_matches_matrix_exponential(x64, method):
    """dz = A z dX with scalar X has z(t) = expm(A (X(t) - X(t0))) z0, for any path X: here a
    piecewise linear or cubic path through a random walk at irregular times."""
    key = jax.random.PRNGKey(0)
    ts = irregular_times(key, 12, 2.0)
    xs = jnp.cumsum(jax.random.normal(jax.random.fold_in(key, 1), (12, 1)), axis=0) * 0.4
    control = interpolate(ts, xs, method=method, include_time=False, observed=None)
    a = jnp.array([[-0.2, 1.5, 0.0], [-1.5, -0.2, 0.3], [0.1, 0.0, -0.5]])
    z0 = jnp.array([1.0, -0.5, 0.25])
    model = NeuralCDE(Constant(z0), LinearField(a), lambda z: z, dfx.Tsit5(), TIGHT)
    sol = eqx.filter_jit(model)(control, ts)
    expected = jax.vmap(lambda x: jax.scipy.linalg.expm(a * (x - xs[0, 0])) @ z0)(xs[:, 0])
    np.testing.assert_allclose(sol.zs, expected, rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(sol.ys, sol.zs)  # identity readout
    assert sol.result == RESULTS.successful
    if method == "cubic":  # steps end at the knots (step_ts): Tsit5 counts as in NeuralODE
        assert int(sol.nfe) == 2 + 1 + 6 * int(sol.num_steps)
    else:  # knots are jumps of dX/dt (jump_ts): fresh evaluations after each, count unknown
        assert int(sol.nfe) == -1


@pytest.mark.slow  # four compiles (~30 s on 2 shared cores); the default run has the next test
def test_output_converges_to_the_continuous_control_as_sampling_densifies(x64):
    """A fixed, untrained model: the path sampled at irregular times and interpolated gives the
    output on the exact control up to an interpolation error that shrinks as the sampling
    densifies; two different samplings of the same path agree to that error."""
    exact_path = ExactPath()
    model = NeuralCDE.mlp(3, 4, 2, width=16, depth=1, key=jax.random.PRNGKey(3), solver=dfx.Tsit5())
    model = eqx.tree_at(lambda m: m.stepsize_controller, model, TIGHT)
    solve = eqx.filter_jit(jax.vmap(lambda c: model(c).ys[-1]))
    exact = eqx.filter_jit(lambda c: model(c).ys[-1])(exact_path)
    errors, spreads = [], []
    for n in (8, 32, 128):
        ts = irregular_times(jax.random.PRNGKey(n), n, 3.0, (2,))  # two samplings
        xs = jax.vmap(jax.vmap(exact_path.evaluate))(ts)[..., 1:]
        out = solve(interpolate_batch(ts, xs, observed=None))
        errors.append(float(jnp.max(jnp.abs(out - exact))))
        spreads.append(float(jnp.max(jnp.abs(out[0] - out[1]))))
    # Second-order in the spacing (measured ratios ~16 per factor 4): demand at least 6.
    assert errors[0] > 6 * errors[1] > 36 * errors[2], errors
    assert spreads[2] <= 2 * errors[2] and errors[2] < 1e-3, (spreads, errors)


def test_two_samplings_of_one_path_give_the_same_output(x64):
    """The same path sampled at two different irregular sets of 64 times: the outputs agree to
    the interpolation error (~1e-5 here, measured against the exact control in the slow test),
    while the outputs themselves are O(1) and differ between the path and a time-reversed one."""
    exact_path = ExactPath()
    model = NeuralCDE.mlp(3, 4, 2, width=16, depth=1, key=jax.random.PRNGKey(3), solver=dfx.Tsit5())
    model = eqx.tree_at(lambda m: m.stepsize_controller, model, TIGHT)
    ts = irregular_times(jax.random.PRNGKey(64), 64, 3.0, (3,))
    xs = jax.vmap(jax.vmap(exact_path.evaluate))(ts)[..., 1:]
    xs = xs.at[2].set(xs[2, ::-1])  # a different path on the same times
    out = eqx.filter_jit(jax.vmap(lambda c: model(c).ys[-1]))(
        interpolate_batch(ts, xs, observed=None)
    )
    assert float(jnp.max(jnp.abs(out[0] - out[1]))) < 1e-4
    assert float(jnp.max(jnp.abs(out[0] - out[2]))) > 1e-2


def test_missing_values_are_filled_and_counted():
    """Interior NaN: interpolated over; leading: first observed value; trailing: carried
    forward; never-observed channel: 0. Count channels are the cumulative mask / n."""
    ts = jnp.array([0.0, 1.0, 2.0, 4.0, 5.0])
    nan = jnp.nan
    xs = jnp.array(
        [[nan, 1.0, nan], [2.0, nan, nan], [3.0, 5.0, nan], [nan, 7.0, nan], [6.0, nan, nan]]
    )
    path = interpolate(ts, xs, method="linear")
    values = jax.vmap(path.evaluate)(ts)
    expected_x = np.array(
        [[2.0, 1.0, 0.0], [2.0, 3.0, 0.0], [3.0, 5.0, 0.0], [5.0, 7.0, 0.0], [6.0, 7.0, 0.0]]
    )
    counts = np.cumsum(~np.isnan(np.asarray(xs)), axis=0) / 5
    np.testing.assert_allclose(values, np.concatenate([ts[:, None], expected_x, counts], 1))
    mask_path = interpolate(ts, xs, method="cubic", observed="mask")
    mask_values = jax.vmap(mask_path.evaluate)(ts)
    np.testing.assert_allclose(mask_values[:, 4:], ~np.isnan(np.asarray(xs)))
    # Cubic knots take the same filled values, except at interior gaps, which the Hermite
    # spline spans with its own curve rather than a chord.
    interior = np.zeros((5, 4), bool)
    interior[3, 1] = interior[1, 2] = True
    np.testing.assert_allclose(mask_values[:, :4][~interior], values[:, :4][~interior], atol=1e-6)
    grid = jnp.linspace(0.0, 5.0, 41)
    assert jnp.all(jnp.isfinite(jax.vmap(mask_path.evaluate)(grid)))
    assert jnp.all(jnp.isfinite(jax.vmap(mask_path.derivative)(grid)))
    # Rectilinear: observation i at parameter 2i, the data held while time advances.
    rect = interpolate(ts, xs, method="rectilinear", observed=None)
    assert float(rect.t1) == 8.0
    # Parameter 3 is (time of observation 2, data of observation 1); rectilinear paths fill
    # interior gaps forward (causally), so channel 1 still holds its value at t0.
    np.testing.assert_allclose(rect.evaluate(3.0), [ts[2], 2.0, 1.0, 0.0])


def _hermite(t, t_p, y_p, m_p, t_q, y_q):
    """The cubic through (t_p, y_p) and (t_q, y_q) with slopes m_p and the chord, in the
    Hermite basis (a different arithmetic from the power form under test)."""
    h = t_q - t_p
    s = (t - t_p) / h
    chord = (y_q - y_p) / h
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y_p + h10 * h * m_p + h01 * y_q + h11 * h * chord


def test_cubic_path_is_c1_over_gaps(x64):
    """Without gaps the coefficients are diffrax's backward_hermite_coefficients, bit for bit.
    With gaps (one missing value, and a run of three) the path passes through the observations,
    is C^1 at every knot, and over each gap is the one Hermite cubic from the observation before
    (slope: the chord before it) to the observation after (slope: the chord across the gap);
    changing an observation after the gap leaves the path before the gap's end unchanged."""
    key = jax.random.PRNGKey(7)
    ts = irregular_times(key, 12, 3.0)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (12, 2))
    full = interpolate(ts, xs, include_time=False, observed=None)
    reference = dfx.backward_hermite_coefficients(ts, xs)
    for got, want in zip(full.coeffs, reference, strict=True):
        np.testing.assert_array_equal(got, want)

    gappy = xs.at[4, 0].set(jnp.nan).at[6:9, 1].set(jnp.nan)
    path = interpolate(ts, gappy, include_time=False, observed=None)
    seen = ~np.isnan(np.asarray(gappy))
    np.testing.assert_allclose(jax.vmap(path.evaluate)(ts)[seen], gappy[seen], atol=1e-13)
    # One-sided value and derivative at each interior knot, from the polynomial of the
    # interval before it (at its end) and of the interval after it (at its start).
    d, c, b, a = path.coeffs
    h = jnp.diff(ts)[:-1, None]
    np.testing.assert_allclose(a[:-1] + h * (b[:-1] + h * (c[:-1] + h * d[:-1])), a[1:], atol=1e-13)
    np.testing.assert_allclose(b[:-1] + h * (2 * c[:-1] + 3 * h * d[:-1]), b[1:], atol=1e-11)
    for channel, p, q in ((0, 3, 5), (1, 5, 9)):
        slope = (xs[p, channel] - xs[p - 1, channel]) / (ts[p] - ts[p - 1])
        grid = jnp.linspace(ts[p], ts[q], 23)
        expected = _hermite(grid, ts[p], xs[p, channel], slope, ts[q], xs[q, channel])
        np.testing.assert_allclose(jax.vmap(path.evaluate)(grid)[:, channel], expected, atol=1e-12)
        later = interpolate(
            ts, gappy.at[q + 1 :, channel].add(1.0), include_time=False, observed=None
        )
        np.testing.assert_array_equal(jax.vmap(later.evaluate)(grid), jax.vmap(path.evaluate)(grid))


def test_constant_field_cde_over_cubic_paths_with_gaps_is_exact(x64):
    """A constant matrix field M solves dz = M dX in closed form, z(t) = z0 + M (X(t) - X(t0)),
    for any path. On cubic paths over data with gaps (single values and runs missing), at the
    default tolerances, batched under jit and vmap, Tsit5 stepping to the knots gets it to
    rounding: each step integrates a quadratic dX/dt, which Tsit5 does exactly, as long as the
    slope it reuses across a knot (FSAL) is the slope after it, i.e. the path is C^1. (Diffrax's
    own backward-Hermite path over such data errs by ~0.1 here.) NFE keeps its exact count
    (Tsit5: 2 controller + 1 FSAL + 6 per step), as without gaps."""
    ts, xs, _ = spirals(jax.random.PRNGKey(11), 4, n_times=16)
    xs = xs.at[0].set(jnp.sin(3 * ts[0])[:, None] * jnp.ones(2))  # one series without gaps
    xs = xs.at[1, 5:9, 0].set(jnp.nan)  # and a run of four missing values
    controls = interpolate_batch(ts, xs)
    matrix = jax.random.normal(jax.random.PRNGKey(12), (3, 5))
    z0 = jnp.array([0.5, -1.0, 2.0])

    class ConstantField(eqx.Module):
        def __call__(self, t, z, args):
            return matrix

    model = NeuralCDE(Constant(z0), ConstantField(), lambda z: z)
    sol = eqx.filter_jit(jax.vmap(model))(controls, ts)
    values = jax.vmap(jax.vmap(lambda c, t: c.evaluate(t), (None, 0)))(controls, ts)
    expected = z0 + (values - values[:, :1]) @ matrix.T
    np.testing.assert_allclose(sol.zs, expected, rtol=0, atol=1e-12)
    assert np.all(sol.result == RESULTS.successful)
    np.testing.assert_array_equal(sol.nfe, 2 + 1 + 6 * sol.num_steps)


def test_batch_matches_one_series_at_a_time(x64):  # two compiles: ~6-12 s on 2 shared cores
    """In float64 the batched solve takes each series' very steps (float32 rounding differs
    between batched and single matrix products, which can flip an accept/reject decision)."""
    """interpolate_batch + vmap gives each series' own solve (own times, own NaNs)."""
    ts, xs, _ = spirals(jax.random.PRNGKey(1), 3, n_times=16)
    model = NeuralCDE.mlp(5, 4, 1, width=16, depth=1, key=jax.random.PRNGKey(2))
    batched = eqx.filter_jit(jax.vmap(model))(interpolate_batch(ts, xs))
    solve = eqx.filter_jit(model)
    for b in range(3):
        one = solve(interpolate(ts[b], xs[b]))
        np.testing.assert_allclose(batched.ys[b], one.ys, rtol=1e-12, atol=1e-12)
        assert int(batched.nfe[b]) == int(one.nfe)
        assert float(batched.ts[b, -1]) == float(ts[b, -1])
    assert len(set(np.asarray(batched.nfe).tolist())) > 1  # own adaptive steps per series


def test_failed_solve_is_a_result_code_never_a_plausible_number():
    """A field that turns NaN at t > 0.5 stops the solve there (``step_size_too_small``, as for
    NeuralODE: no step past 0.5 can be finite); the outputs beyond are not finite, the loss is
    not finite, and ``throw=True`` raises."""
    ts = jnp.linspace(0.0, 1.0, 5)
    control = interpolate(ts, jnp.ones((5, 2)), observed=None)
    parts = (
        eqx.nn.Linear(3, 2, key=jax.random.PRNGKey(0)),
        NaNField(),
        eqx.nn.Linear(2, 1, key=jax.random.PRNGKey(1)),
    )
    solve = eqx.filter_jit(lambda m, c: m(c, ts))
    sol = solve(NeuralCDE(*parts, throw=False), control)
    assert sol.result == RESULTS.step_size_too_small
    assert np.all(np.isfinite(np.asarray(sol.ys[:3]))) and not np.any(np.isfinite(sol.ys[3:]))
    with pytest.raises(Exception, match="step size fell below"):
        jax.block_until_ready(solve(NeuralCDE(*parts), control))


def test_forecasting_loss_leaves_out_missing_targets():
    ts, xs, _ = spirals(jax.random.PRNGKey(4), 2, n_times=8)
    controls = interpolate_batch(ts, xs)
    model = NeuralCDE.mlp(
        5,
        4,
        2,
        width=8,
        depth=1,
        key=jax.random.PRNGKey(5),
        solver=dfx.Euler(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=0.5,
    )
    ys = jax.vmap(lambda c, t: model(c, t).ys)(controls, ts)
    targets = xs  # NaN where dropped
    seen = ~np.isnan(np.asarray(targets))
    expected = np.sum((np.asarray(ys) - np.nan_to_num(np.asarray(targets)))[seen] ** 2) / seen.sum()
    loss, grads = eqx.filter_value_and_grad(forecasting_loss)(model, controls, ts, targets)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_training_smoke_reduces_the_loss():
    """A few Adam steps on a small spiral batch (the full run: benchmarks/bench_cde.py)."""
    ts, xs, labels = spirals(jax.random.PRNGKey(0), 32, n_times=12)
    controls = interpolate_batch(ts, xs)
    model = NeuralCDE.mlp(
        5,
        4,
        1,
        width=16,
        depth=1,
        key=jax.random.PRNGKey(1),
        solver=dfx.Heun(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=0.5,
    )
    optim = optax.adam(1e-2)
    opt_state = optim.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state):
        (loss, _), grads = eqx.filter_value_and_grad(classification_loss, has_aux=True)(
            model, controls, labels
        )
        updates, opt_state = optim.update(grads, opt_state)
        return eqx.apply_updates(model, updates), opt_state, loss

    losses = []
    for _ in range(15):
        model, opt_state, loss = step(model, opt_state)
        losses.append(float(loss))
    assert np.all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0], losses


@pytest.mark.slow  # ~1 min on 2 cores; benchmarks/bench_cde.py runs the full budget
def test_spiral_direction_reaches_95_percent():
    ts, xs, labels = spirals(jax.random.PRNGKey(0), 512)
    ts_test, xs_test, labels_test = spirals(jax.random.PRNGKey(1), 256)
    controls, controls_test = interpolate_batch(ts, xs), interpolate_batch(ts_test, xs_test)
    model = NeuralCDE.mlp(
        5,
        8,
        1,
        width=32,
        depth=1,
        key=jax.random.PRNGKey(2),
        solver=dfx.Heun(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=6.0 / 40,
    )
    optim = optax.adam(3e-3)
    opt_state = optim.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, idx):
        batch = jax.tree_util.tree_map(lambda a: a[idx], controls)
        (loss, _), grads = eqx.filter_value_and_grad(classification_loss, has_aux=True)(
            model, batch, labels[idx]
        )
        updates, opt_state = optim.update(grads, opt_state)
        return eqx.apply_updates(model, updates), opt_state, loss

    for i in range(100):
        idx = jax.random.choice(jax.random.PRNGKey(100 + i), 512, (128,), replace=False)
        model, opt_state, _ = step(model, opt_state, idx)
    _, accuracy = eqx.filter_jit(classification_loss)(model, controls_test, labels_test)
    assert float(accuracy) >= 0.95


def _model():
    return NeuralCDE.mlp(5, 4, 1, width=8, depth=1, key=jax.random.PRNGKey(0))


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: interpolate(jnp.zeros((3, 1)), jnp.zeros((3, 2))), ValueError, "ts must be a 1-D"),
        (lambda: interpolate(jnp.arange(3.0), jnp.zeros((4, 2))), ValueError, "xs must have shape"),
        (
            lambda: interpolate(jnp.array([0.0, 1.0, 1.0]), jnp.zeros((3, 2))),
            ValueError,
            "ts must be strictly increasing",
        ),
        (
            lambda: interpolate(jnp.arange(3.0), jnp.zeros((3, 2)), method="spline"),
            ValueError,
            "method must be one of",
        ),
        (
            lambda: interpolate(jnp.arange(3.0), jnp.zeros((3, 2)), observed="yes"),
            ValueError,
            "observed must be one of",
        ),
        (
            lambda: interpolate_batch(jnp.arange(3.0), jnp.zeros((3, 2))),
            ValueError,
            "xs must have shape (batch",
        ),
        (
            lambda: interpolate_batch(jnp.zeros((2, 4)), jnp.zeros((2, 3, 2))),
            ValueError,
            "ts must have shape (batch, n)",
        ),
        (lambda: _model()(jnp.zeros((3, 5))), TypeError, "control must be a diffrax path"),
        (
            lambda: _model()(interpolate(jnp.arange(3.0), jnp.zeros((3, 3)))),
            ValueError,
            "initial(x0) fails",
        ),
        (
            lambda: NeuralCDE(
                eqx.nn.Linear(5, 4, key=jax.random.PRNGKey(0)),
                CDEField(4, 3, 8, 1, key=jax.random.PRNGKey(0)),
                eqx.nn.Linear(4, 1, key=jax.random.PRNGKey(0)),
            )(interpolate(jnp.arange(3.0), jnp.zeros((3, 2)))),
            ValueError,
            "vector_field(t, z, None) must return",
        ),
        (lambda: NeuralCDE(None, None, None), TypeError, "initial must be callable"),
        (
            lambda: NeuralCDE.mlp(5, 0, 1, width=8, depth=1, key=jax.random.PRNGKey(0)),
            ValueError,
            "hidden_size must be >= 1",
        ),
        (
            lambda: classification_loss(
                _model(),
                interpolate_batch(jnp.arange(3.0), jnp.zeros((2, 3, 2))),
                jnp.array([0.5, 1.0]),
            ),
            TypeError,
            "labels must be",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_cde_field_shapes():
    field = CDEField(4, 3, 8, 1, key=jax.random.PRNGKey(0))
    assert field(0.0, jnp.ones(4)).shape == (4, 3)
    with pytest.raises(ValueError, match=re.escape("z must have shape (4,)")):
        field(0.0, jnp.ones(5))


def test_infinite_observation_is_rejected():
    """NaN marks a missing value; an inf was taken as observed and the cubic path held NaN on
    the intervals around it (inf - inf), posing as interpolated data."""
    ts = jnp.arange(4.0)
    xs = jnp.array([[1.0], [2.0], [jnp.inf], [4.0]])
    with pytest.raises(ValueError, match="xs must be finite where observed"):
        interpolate(ts, xs)
    with pytest.raises(ValueError, match="xs must be finite where observed"):
        interpolate_batch(ts, xs[None])
    traced = jax.jit(lambda x: interpolate(ts, x).evaluate(1.5))
    assert np.isfinite(traced(xs.at[2].set(3.0))).all()
    with pytest.raises(Exception, match="xs must be finite where observed"):
        jax.block_until_ready(traced(xs))
