r"""Autoregressive training of time-stepping models on trajectories.

A model maps a window of the last ``history`` frames, stacked on the channel axis
(``(history * C, *spatial)``), to the next frame ``(C, *spatial)``. A trajectory sample is
``(frames, C, *spatial)`` (what :func:`jaxsolve.pde.navier_stokes_dataset` returns per sample).
Predictions are unrolled by :func:`jaxsolve.pde.rollout`, the one time loop, whose state is the
window. Three training modes (:func:`rollout_loss`):

* ``"unrolled"`` — predict ``horizon`` frames from the first window, feeding predictions back,
  and average the per-frame losses; gradients flow through the whole unroll (the recurrent
  training of FNO-2D in "Fourier Neural Operator for Parametric Partial Differential Equations",
  Li et al.).
* ``"teacher_forcing"`` — every frame predicted from the true window before it (one-step loss,
  averaged over all windows).
* ``"pushforward"`` — unroll ``pushforward_steps`` steps without gradient, then train one step on
  the model's own output ("Message Passing Neural PDE Solvers", Brandstetter, Worrall &
  Welling): the model sees the distribution of its own errors at the cost of one backward step.

The window start is 0, or uniform over the valid starts when a key is given and
``random_start=True``. Use with :func:`jaxsolve.train.fit` through :func:`make_rollout_loss`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import check_choice, check_int, per_sample_keys
from ..operators import relative_lp_loss
from ..pde import rollout

MODES = ("unrolled", "teacher_forcing", "pushforward")


def _relative_l2(pred, target):
    return relative_lp_loss(pred, target)


def _check_trajectory(trajectory, history):
    trajectory = jnp.asarray(trajectory)
    if trajectory.ndim < 3:
        raise ValueError(
            f"a trajectory sample must have shape (frames, channels, *spatial); got "
            f"{trajectory.shape}."
        )
    check_int("history", history)
    if trajectory.shape[0] <= history:
        raise ValueError(
            f"the trajectory has {trajectory.shape[0]} frames; history={history} needs at least "
            f"{history + 1} (a window and a target)."
        )
    return trajectory


def _step_fn(model):
    """``window (h, C, *spatial) -> window`` shifted by one model prediction."""

    def step(window):
        h, c = window.shape[0], window.shape[1]
        flat = window.reshape((h * c, *window.shape[2:]))
        nxt = jnp.asarray(model(flat)).astype(window.dtype)
        if nxt.shape != window.shape[1:]:
            raise ValueError(
                f"the model must map a window of shape {flat.shape} to one frame of shape "
                f"{window.shape[1:]}; it returned {nxt.shape}."
            )
        return jnp.concatenate([window[1:], nxt[None]], axis=0)

    return step


def autoregressive_predict(
    model: Callable,
    window: Float[ArrayLike, " history c *spatial"],
    num_steps: int,
    *,
    throw: bool = True,
) -> Float[Array, " num_steps c *spatial"]:
    """The next ``num_steps`` frames after ``window``, each model output fed back as input.

    ``throw=True`` raises if a frame becomes non-finite (a diverging model); with ``throw=False``
    such frames are returned as they are (NaN / infinite).
    """
    window = jnp.asarray(window)
    if window.ndim < 3:
        raise ValueError(
            f"window must have shape (history, channels, *spatial); got {window.shape}."
        )
    windows = rollout(_step_fn(model), window, num_steps, include_initial=False, throw=throw)
    return windows[:, -1]


def rollout_loss(
    model: Callable,
    trajectory: Float[ArrayLike, " frames c *spatial"],
    key: PRNGKeyArray | None = None,
    *,
    history: int = 1,
    horizon: int | None = None,
    mode: str = "unrolled",
    pushforward_steps: int = 1,
    random_start: bool = False,
    loss: Callable | None = None,
) -> Float[Array, ""]:
    """Autoregressive loss of ``model`` on one trajectory sample (see the module docstring).

    Args:
        model: ``(history * C, *spatial) -> (C, *spatial)``.
        trajectory: ``(frames, C, *spatial)``.
        key: picks the window start when ``random_start``.
        history: frames in the input window.
        horizon: frames predicted (``"unrolled"``; default all that follow the window) or
            windows used (``"teacher_forcing"``; default all).
        mode: ``"unrolled"``, ``"teacher_forcing"`` or ``"pushforward"``.
        pushforward_steps: steps unrolled without gradient before the trained step.
        loss: ``loss(pred, target)`` per frame; default the relative L2 error.
    """
    check_choice("mode", mode, set(MODES))
    trajectory = _check_trajectory(trajectory, history)
    loss = _relative_l2 if loss is None else loss
    frames = trajectory.shape[0]
    if mode == "pushforward":
        span = check_int("pushforward_steps", pushforward_steps, minimum=0) + 1
    else:
        span = frames - history if horizon is None else check_int("horizon", horizon)
    if history + span > frames:
        raise ValueError(
            f"history ({history}) + {'pushforward_steps + 1' if mode == 'pushforward' else 'horizon'}"
            f" ({span}) exceeds the {frames} frames of the trajectory."
        )
    last_start = frames - history - span
    if random_start and key is not None:
        start = jax.random.randint(key, (), 0, last_start + 1)
    else:
        start = 0
    segment = lax.dynamic_slice_in_dim(trajectory, start, history + span, axis=0)
    step = _step_fn(model)

    if mode == "teacher_forcing":
        # Every window of the segment, predicted from the truth: no recurrence.
        idx = jnp.arange(span)[:, None] + jnp.arange(history)[None, :]
        windows = segment[idx]
        preds = jax.vmap(lambda w: step(w)[-1])(windows)
        return jnp.mean(jax.vmap(loss)(preds, segment[history:]))
    if mode == "pushforward":
        window = lax.stop_gradient(segment[:history])
        if pushforward_steps:
            # A diverging rollout makes the loss NaN, which train.fit reports with its step (or
            # skips, with skip_nonfinite); a check here would stop inside the compiled step.
            window = rollout(step, window, pushforward_steps, every=pushforward_steps, throw=False)[
                -1
            ]
            window = lax.stop_gradient(window)
        return loss(step(window)[-1], segment[-1])
    preds = autoregressive_predict(model, segment[:history], span, throw=False)
    return jnp.mean(jax.vmap(loss)(preds, segment[history:]))


def make_rollout_loss(**options) -> Callable:
    """A :func:`~jaxsolve.train.fit` loss ``(model, batch, key) -> scalar``: the mean of
    :func:`rollout_loss` (with ``options``) over a batch ``(B, frames, C, *spatial)``, sample
    ``i`` using the key ``fold_in(key, i)``."""
    unknown = set(options) - {
        "history",
        "horizon",
        "mode",
        "pushforward_steps",
        "random_start",
        "loss",
    }
    if unknown:
        raise TypeError(f"make_rollout_loss: unknown options {sorted(unknown)}.")

    def loss_fn(model, batch, key):
        batch = jnp.asarray(batch)
        keys = per_sample_keys(key, batch.shape[0]) if key is not None else None
        if keys is None:
            return jnp.mean(jax.vmap(lambda tr: rollout_loss(model, tr, None, **options))(batch))
        return jnp.mean(jax.vmap(lambda tr, k: rollout_loss(model, tr, k, **options))(batch, keys))

    return loss_fn
