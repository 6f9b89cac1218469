"""Autoregressive rollout training: predictions, the three losses in closed form, gradients of the
pushforward trick, and training a time stepper with fit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import pde, train

N, DT, NU = 32, 0.02, 0.05


def _heat_stepper():
    return pde.ETDRK(pde.AdvectionDiffusion(NU, velocity=0.3), DT, (N,))


@jax.jit
def _trajectories(keys):
    """Advection-diffusion trajectories of random fields: (batch, 9 frames, 1, N)."""
    grf = pde.GaussianRandomField(2.0, 3.0, 50.0)
    stepper = _heat_stepper()
    return jax.vmap(lambda k: pde.rollout(stepper, grf.sample(k, (N,))[None], 8))(keys)


class Scaled(eqx.Module):
    """theta * (exact one-step map of the last frame in the window)."""

    theta: jax.Array

    def __call__(self, window):
        return self.theta * _heat_stepper()(window[-1:])


def test_predictions_and_losses_in_closed_form():
    traj = _trajectories(jax.random.split(jax.random.PRNGKey(0), 1))[0]

    @jax.jit
    def evaluate(theta):
        m = Scaled(theta)
        pred = train.autoregressive_predict(m, traj[:2], 5)
        return (
            pred,
            train.rollout_loss(m, traj, history=2, horizon=4),
            train.rollout_loss(m, traj, history=1, mode="teacher_forcing"),
            train.rollout_loss(m, traj, history=1, mode="pushforward", pushforward_steps=3),
        )

    pred, unrolled, teacher, push = evaluate(jnp.asarray(1.0))
    np.testing.assert_allclose(pred, traj[2:7], rtol=1e-5, atol=1e-6)
    assert max(float(unrolled), float(teacher), float(push)) < 1e-5
    # theta = 1.1: the k-th prediction is 1.1^k times the truth, so its relative error is 1.1^k - 1.
    _, unrolled, teacher, push = evaluate(jnp.asarray(1.1))
    np.testing.assert_allclose(unrolled, np.mean(1.1 ** np.arange(1, 5) - 1), rtol=1e-4)
    np.testing.assert_allclose(teacher, 0.1, rtol=1e-4)
    np.testing.assert_allclose(push, 1.1**4 - 1, rtol=1e-4)
    # A diverging model: the prediction raises by default (pde.rollout's throw=True), the
    # training losses are NaN, which train.fit reports with the step (or skips).
    nan = jnp.asarray(jnp.nan)
    with pytest.raises(Exception, match=r"non-finite|NaN"):
        jax.block_until_ready(train.autoregressive_predict(Scaled(nan), traj[:2], 5))
    losses = jax.jit(
        lambda m: [
            train.rollout_loss(m, traj, history=2, horizon=4),
            train.rollout_loss(m, traj, history=1, mode="pushforward", pushforward_steps=3),
        ]
    )(Scaled(nan))
    assert np.all(np.isnan(losses))


def test_pushforward_gradient_stops_at_the_unrolled_steps():
    """After p steps the relative error is theta^(p+1) - 1. The pushforward loss differentiates only
    the last step: theta^p. The unrolled loss over p + 1 frames, mean_k (theta^k - 1), has the full
    derivative mean_k k theta^(k-1)."""
    traj = _trajectories(jax.random.split(jax.random.PRNGKey(1), 1))[0]
    theta, p = 1.2, 3

    def loss(t, **kw):
        return train.rollout_loss(Scaled(t), traj, history=1, **kw)

    grads = jax.jit(
        lambda t: (
            jax.grad(lambda t: loss(t, mode="pushforward", pushforward_steps=p))(t),
            jax.grad(lambda t: loss(t, horizon=p + 1, mode="unrolled"))(t),
        )
    )
    g_push, g_full = grads(jnp.asarray(theta))
    k = np.arange(1, p + 2)
    np.testing.assert_allclose(g_push, theta**p, rtol=1e-4)
    np.testing.assert_allclose(g_full, np.mean(k * theta ** (k - 1)), rtol=1e-4)


class FourierMultiplier(eqx.Module):
    """A learnable linear, translation-invariant one-step map: u_hat_k -> (w_k + i v_k) u_hat_k."""

    re: jax.Array
    im: jax.Array

    def __call__(self, window):
        uh = jnp.fft.rfft(window[-1:])
        return jnp.fft.irfft((self.re + 1j * self.im) * uh, n=window.shape[-1])


def test_training_a_stepper_with_fit_and_the_unrolled_loss():
    """fit + make_rollout_loss learn the exact advection-diffusion propagator (a Fourier
    multiplier): a held-out 8-step autoregressive prediction is accurate afterwards."""
    data = _trajectories(jax.random.split(jax.random.PRNGKey(2), 64))
    test = _trajectories(jax.random.split(jax.random.PRNGKey(3), 4))
    model = FourierMultiplier(jnp.full((N // 2 + 1,), 0.5), jnp.zeros((N // 2 + 1,)))
    loss_fn = train.make_rollout_loss(history=1, horizon=3, random_start=True)

    @eqx.filter_jit
    def held_out(m):
        pred = jax.vmap(lambda tr: train.autoregressive_predict(m, tr[:1], 8))(test)
        return {"rel": jnp.mean(jnp.linalg.norm(pred - test[:, 1:]) / jnp.linalg.norm(test[:, 1:]))}

    before = float(held_out(model)["rel"])
    result = train.fit(
        loss_fn,
        model,
        data,
        # A constant step of 3e-2 leaves Adam oscillating between 3e-3 and 3e-2 of held-out error
        # (where it stops depended on the compiler's rounding); decayed to 0 it converges.
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-2, 300)),
        num_steps=300,
        batch_size=16,
        key=jax.random.PRNGKey(4),
        eval_fn=held_out,
        progress=False,
        steps_per_call=150,
    )
    after = result.history["eval"][-1][1]["rel"]
    assert before > 0.3 and after < 1e-3, (before, after)


def test_bad_arguments():
    traj = jnp.zeros((4, 1, 8))
    m = lambda w: w[-1:]
    with pytest.raises(ValueError, match="frames, channels"):
        train.rollout_loss(m, jnp.zeros((4, 8)))
    with pytest.raises(ValueError, match="history=4"):
        train.rollout_loss(m, traj, history=4)
    with pytest.raises(ValueError, match="exceeds"):
        train.rollout_loss(m, traj, history=2, horizon=3)
    with pytest.raises(ValueError, match="mode"):
        train.rollout_loss(m, traj, mode="scheduled")
    with pytest.raises(ValueError, match="one frame"):
        train.rollout_loss(lambda w: w, traj, history=2)
    with pytest.raises(TypeError, match="unknown options"):
        train.make_rollout_loss(horizon=2, stride=3)
