"""Derivatives and terms beside a failed solve: NaN, never a plausible number.

A solve that stops early (``max_steps``) leaves constants in its outputs (diffrax's ``inf``
fill, the last accepted state); differentiated naively they give an exact zero gradient, and
the global regulariser's sum stops at a finite value. These tests fail on both, for the ODE,
SDE and CDE drivers and their losses, and check that a loss which selects a failed sample away
keeps the gradient of the samples that succeeded (the solo solve's gradient).
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS, ode


class Decay(eqx.Module):
    """dy/dt = -w * a * y (``a`` from args): y(t) = y0 exp(-w a t)."""

    w: jax.Array

    def __call__(self, t, y, args):
        return -self.w * args * y


TS = np.linspace(0.0, 1.0, 4)
# a = 1 takes a few steps; a = 1e3 needs far more than max_steps = 30 (stiff for Tsit5).
RATES = (1.0, 1e3)


def _node(**kwargs):
    controller = dfx.PIDController(rtol=1e-8, atol=1e-8)
    return ode.NeuralODE(
        Decay(jnp.array(1.0)), None, controller, max_steps=30, throw=False, **kwargs
    )


@eqx.filter_jit
@eqx.filter_value_and_grad(has_aux=True)
def _loss_and_grad(model, a):
    sol = model(jnp.asarray(TS), jnp.ones(2), a)
    return jnp.sum(sol.ys**2), sol.result


def test_gradient_through_a_failed_ode_solve_is_nan(x64):
    node = _node()
    (_, result), grad = _loss_and_grad(node, RATES[1])
    assert result == RESULTS.max_steps_reached
    assert np.isnan(grad.vector_field.w)  # was an exact 0: the unreached times are constants
    # A successful solve's gradient against the closed form sum_t 2 y^2 * (-a t), y = e^{-t}.
    (_, result), grad = _loss_and_grad(node, RATES[0])
    assert result == RESULTS.successful
    y = np.exp(-TS)
    np.testing.assert_allclose(grad.vector_field.w, np.sum(2 * 2 * y**2 * -TS), rtol=1e-6)


def test_parameters_closed_over_by_a_plain_function_get_the_nan_derivative(x64):
    """A vector field written as a plain function of a traced parameter (not a pytree leaf of
    the field) got an exact 0 through a failed solve; now NaN, and the successful solve keeps
    the closed form, also when the failed sample is selected out of a batch."""

    def loss(w, skip):
        def one(a):
            node = ode.NeuralODE(
                lambda t, y, args: -w * args * y,
                None,
                dfx.PIDController(rtol=1e-8, atol=1e-8),
                max_steps=30,
                throw=False,
            )
            return node(jnp.asarray(TS), jnp.ones(2), a)

        sol = jax.vmap(one)(jnp.asarray(RATES))
        ok = (sol.result == RESULTS.successful)[:, None, None]
        return jnp.sum(jnp.where(skip & ~ok, 0.0, sol.ys) ** 2)

    grad = jax.jit(jax.grad(loss))  # one compilation: skip is traced
    y = np.exp(-TS)
    # The failed sample selected away: the successful one's closed form.
    np.testing.assert_allclose(grad(1.0, True), np.sum(4 * y**2 * -TS), rtol=1e-6)
    # Kept in the loss: NaN (it was the same plausible closed form, the failed solve adding 0).
    assert np.isnan(grad(1.0, False))


@pytest.mark.slow
def test_a_failed_sample_selected_away_keeps_the_others_gradient(x64):
    """Only a cotangent that reaches the failed solve's outputs turns NaN: selecting the failed
    sample out of the loss (as ``throw=False`` allows) leaves the successful sample's gradient."""

    @eqx.filter_jit
    @eqx.filter_grad
    def loss(m, skip):
        sol = jax.vmap(lambda a: m(jnp.asarray(TS), jnp.ones(2), a))(jnp.asarray(RATES))
        ok = sol.result == RESULTS.successful
        ys = jnp.where(skip & ok[:, None, None], sol.ys, jnp.where(skip, 0.0, sol.ys))
        return jnp.sum(ys**2)

    node = _node()
    y = np.exp(-TS)
    np.testing.assert_allclose(loss(node, True).vector_field.w, np.sum(4 * y**2 * -TS), rtol=1e-6)
    assert np.isnan(loss(node, False).vector_field.w)


@pytest.mark.parametrize("adjoint", [dfx.DirectAdjoint(), dfx.ForwardMode()])
def test_forward_mode_adjoints_run_and_mark_failures(x64, adjoint):
    """DirectAdjoint and ForwardMode (listed as discretise-then-optimise adjoints) failed inside
    diffrax on the wrapped solver (no ``scan_kind``); their tangent through a failed solve is
    NaN, through a successful one the closed form d/dw y(1) = -a exp(-w a)."""
    node = _node(adjoint=adjoint)

    @eqx.filter_jit
    def tangent(a):
        def last(w):
            model = eqx.tree_at(lambda m: m.vector_field.w, node, w)
            return model(jnp.asarray(TS), jnp.ones(2), a).ys[-1, 0]

        return jax.jvp(last, (jnp.array(1.0),), (jnp.ones(()),))[1]

    np.testing.assert_allclose(tangent(RATES[0]), -np.exp(-1.0), rtol=1e-6)
    assert np.isnan(tangent(RATES[1]))


def _regularised(m, a, reg):
    sol = m(jnp.asarray(TS), jnp.ones(2), a, regulariser=reg)
    return sol.error_estimate, (sol.stiffness_estimate, sol.result)


def test_global_regulariser_term_of_a_failed_solve_is_nan(x64):
    """The sums over the accepted steps of a solve that stopped early were finite numbers next
    to a failed code; they are NaN."""
    reg = ode.GlobalRegulariser(error=True, stiffness=True)
    term = eqx.filter_jit(lambda m, a: _regularised(m, a, reg))
    error, (stiffness, result) = term(_node(), RATES[1])
    assert result == RESULTS.max_steps_reached
    assert np.isnan(error) and np.isnan(stiffness)
    error, (stiffness, result) = term(_node(), RATES[0])
    assert result == RESULTS.successful and 0 < error < np.inf and 0 < stiffness < np.inf


@pytest.mark.slow
@pytest.mark.parametrize(
    "reg", [ode.GlobalRegulariser(), ode.LocalRegulariser("biased")], ids=["global", "local"]
)
def test_regulariser_term_gradient_of_a_failed_solve_is_nan(x64, reg):
    def term(m, a):
        error, (_, result) = _regularised_key(m, a, reg)
        return error, result

    grad = eqx.filter_jit(eqx.filter_value_and_grad(term, has_aux=True))
    (error, result), g = grad(_node(), RATES[1])
    assert result != RESULTS.successful and np.isnan(error) and np.isnan(g.vector_field.w)
    (error, result), g = grad(_node(), RATES[0])
    assert result == RESULTS.successful and np.isfinite(error) and np.isfinite(g.vector_field.w)


def _regularised_key(m, a, reg):
    sol = m(jnp.asarray(TS), jnp.ones(2), a, regulariser=reg, key=jax.random.PRNGKey(0))
    return sol.error_estimate, (sol.stiffness_estimate, sol.result)


@pytest.mark.slow  # ~20 s: differentiating through the virtual Brownian tree compiles long
def test_gradient_through_a_failed_sde_solve_is_nan(x64):
    """Euler-Maruyama on dy = -a y dt + 0.1 dW, steps of 0.1: with a = 1e40 the state grows by
    1e39 per step and overflows at the 8th step (``nonfinite``), after the save at t = 0.3,
    whose gradient was then a finite, plausible number. With a = 1 it is the derivative of the
    same Brownian path's solution (central differences; y(0.3) is a cubic in a)."""
    sde = ode.NeuralSDE(
        lambda t, y, a: -a * y,
        lambda t, y, a: 0.1 * jnp.ones_like(y),
        dt0=0.1,
        throw=False,
    )
    ts = jnp.array([0.0, 0.3, 1.0])

    @eqx.filter_jit
    def value_and_grad(a):
        def loss(a):
            sol = sde(ts, jnp.ones(1), a, key=jax.random.PRNGKey(0))
            return sol.ys[1, 0], sol.result

        return jax.value_and_grad(loss, has_aux=True)(a)

    (_, result), g = value_and_grad(1e40)
    assert result == RESULTS.nonfinite and np.isnan(g)
    (_, result), g = value_and_grad(1.0)
    assert result == RESULTS.successful
    h = 1e-4
    (up, _), _ = value_and_grad(1.0 + h)
    (down, _), _ = value_and_grad(1.0 - h)
    np.testing.assert_allclose(g, (up - down) / (2 * h), rtol=1e-6)


class BoundedReadout(eqx.Module):
    """A bounded readout (tanh): it maps the failed solve's +inf state to the finite logit 1,
    so the losses looked plausible (finite, with accuracy 1)."""

    def __call__(self, z):
        return jnp.tanh(jnp.sum(z, keepdims=True))


class StiffField(eqx.Module):
    """dz = -w z dX on both channels: stiff for Tsit5 with w = 1e3 and max_steps = 10."""

    w: jax.Array

    def __call__(self, t, z, args):
        return -self.w * z[:, None] * jnp.ones((z.shape[0], 2))


def _cde(w):
    return ode.NeuralCDE(
        lambda x: jnp.ones(1),
        StiffField(jnp.asarray(w)),
        BoundedReadout(),
        max_steps=10,
        throw=False,
    )


def _controls():
    ts = jnp.linspace(0.0, 1.0, 4)
    xs = jnp.linspace(0.0, 1.0, 4)[None, :, None]
    return ts, ode.interpolate_batch(ts, xs, observed=None)


def test_classification_loss_of_a_failed_solve_is_nan(x64):
    _, controls = _controls()
    labels = jnp.array([1])
    classify = eqx.filter_jit(lambda m: ode.classification_loss(m, controls, labels))
    loss, accuracy = classify(_cde(1e3))
    assert np.isnan(loss) and np.isnan(accuracy)  # were finite: 0.31 and 1.0
    loss, accuracy = classify(_cde(1e-3))
    assert np.isfinite(loss) and accuracy == 1.0


@pytest.mark.slow
def test_forecasting_loss_gradient_of_a_failed_solve_is_nan(x64):
    ts, controls = _controls()
    loss = lambda m: ode.forecasting_loss(m, controls, ts[None], ts[None, :, None])
    forecast = eqx.filter_jit(eqx.filter_value_and_grad(loss))
    value, grad = forecast(_cde(1e3))
    assert np.isnan(value) and np.isnan(grad.vector_field.w)  # were finite
    value, grad = forecast(_cde(1e-3))
    assert np.isfinite(value) and np.isfinite(grad.vector_field.w) and grad.vector_field.w != 0
