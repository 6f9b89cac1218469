r"""PDE-Refiner: a one-step predictor refined by a few denoising steps at decreasing noise levels.

"PDE-Refiner: Achieving Accurate Long Rollouts with Neural PDE Solvers", Lippe, Veeling,
Perdikaris, Turner & Brandstetter. One network :math:`f_\theta(u_\text{prev}, \tilde u, k)`,
conditioned on the refinement step :math:`k \in \{0, \dots, K\}`, does two jobs:

* :math:`k = 0` predicts the next state from the current one, with a zero second input:
  :math:`\hat u^0 = f_\theta(u_t, 0, 0)` (a plain one-step predictor);
* :math:`k \ge 1` denoises: given :math:`\tilde u = u_{t+1} + \sigma_k\epsilon` it predicts the
  noise :math:`\epsilon`, with the exponentially decreasing standard deviations
  :math:`\sigma_k = \sigma_\text{min}^{k/K}` (:func:`refiner_noise_levels`).

Training (:func:`refiner_loss`) draws :math:`k` uniformly from :math:`\{0, \dots, K\}` and takes
the squared error on the target (:math:`u_{t+1}` at :math:`k = 0`, :math:`\epsilon` at
:math:`k \ge 1`). Predicting the noise weights an error :math:`\delta` in the refined state by
:math:`1/\sigma_k^2`, so step :math:`k` learns the components of :math:`u_{t+1}` of amplitude
about :math:`\sigma_k` and below — the low-amplitude (high-frequency) parts that a one-step MSE
loss neglects — which is the point of the method. Inference (:func:`refine_step`):

.. math::
    \hat u^k = \tilde u^k - \sigma_k f_\theta(u_t, \tilde u^k, k), \qquad
    \tilde u^k = \hat u^{k-1} + \sigma_k \epsilon_k, \quad k = 1, \dots, K.

With :math:`K = 0` both reduce exactly to one-step MSE training and prediction.

Why not :mod:`jaxsolve.diffusion`'s losses and samplers: those integrate a denoiser over a
continuous noise-level grid from pure noise (:func:`~jaxsolve.diffusion.sample`) and draw a
continuous time (:func:`~jaxsolve.diffusion.eps_loss`). The refiner starts from a deterministic
prediction, uses :math:`K` discrete conditioning steps (one of which has a different target),
re-noises the current estimate with fresh noise at every step, and has no signal scaling. (The
authors' code expresses a schedule of this form through a DDPM scheduler with v-prediction; here
the paper's equations are implemented directly.)

The network is any callable ``net(u_prev, u_noisy, k)`` on one sample ``(C, *spatial)``;
:class:`RefinerNet` makes one from any operator ``(2C + 1, *spatial) -> (C, *spatial)`` (e.g. an
:class:`~jaxsolve.operators.FNO`) by stacking the two states and a constant channel
:math:`k / K` on the channel axis.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import as_float, check_choice, check_int, check_positive, is_concrete, per_sample_keys
from .._core._rollout import rollout as _rollout


def refiner_noise_levels(
    num_refinement_steps: int, min_noise_std: float | Float[ArrayLike, ""], dtype=None
) -> Array:
    r"""The noise standard deviations :math:`\sigma_k = \sigma_\text{min}^{k/K}`,
    :math:`k = 1, \dots, K` (shape ``(K,)``; empty for ``K = 0``); :math:`\sigma_K =
    \sigma_\text{min}`."""
    K = check_int("num_refinement_steps", num_refinement_steps, minimum=0)
    min_noise_std = _check_min_noise_std(min_noise_std)
    dtype = as_float(0.0).dtype if dtype is None else dtype
    k = jnp.arange(1, K + 1, dtype=dtype)
    return jnp.asarray(min_noise_std, dtype) ** (k / max(K, 1))


def _check_min_noise_std(min_noise_std):
    """``min_noise_std`` in (0, 1): concrete values now, traced ones when the code runs."""
    check_positive("min_noise_std", min_noise_std)
    if is_concrete(min_noise_std):
        if not float(min_noise_std) < 1.0:
            raise ValueError(
                f"min_noise_std must be in (0, 1) so that the noise levels decrease; got "
                f"{min_noise_std}."
            )
        return min_noise_std
    s = jnp.asarray(min_noise_std)
    # A traced value >= 1 would give increasing (or NaN) levels and still train.
    return eqx.error_if(
        s, ~((s > 0) & (s < 1)), "min_noise_std must be in (0, 1) (a traced value)."
    )


class RefinerNet(eqx.Module):
    r"""``net(u_prev, u_noisy, k)`` from an operator ``(2C + 1, *spatial) -> (C, *spatial)``.

    The input of ``operator`` is ``[u_prev, u_noisy, k/K]`` stacked on the channel axis, the last
    a constant channel (the conditioning on the refinement step; ``K = 0`` gives a zero channel).
    With ``conditioning="film"`` the network is also conditioned on :math:`k` in every layer, as
    the paper's U-Net is through embeddings in each block: a learned table gives each
    :math:`k \in \{0, \dots, K\}` a ``(scale, shift)`` pair per layer, passed to the operator as
    ``operator(x, modulation=(scale, shift))`` (feature-wise linear modulation; the operator
    declares their shape by a ``modulation_shape`` attribute, as
    :class:`~jaxsolve.operators.FNO` does). The table starts at zero, where both conditionings
    give the same function.

    Args:
        operator: e.g. ``FNO(num_spatial_dims, in_channels=2 * C + 1, out_channels=C, ...)``.
        num_refinement_steps: ``K``, to scale the conditioning channel to ``[0, 1]``.
        conditioning: ``"channel"`` (the constant channel only) or ``"film"`` (and FiLM).
    """

    operator: Callable
    film_table: Float[Array, "steps 2 layers width"] | None
    num_refinement_steps: int = eqx.field(static=True)

    def __init__(
        self, operator: Callable, num_refinement_steps: int, *, conditioning: str = "channel"
    ):
        if not callable(operator):
            raise TypeError(f"operator must be callable; got {type(operator).__name__}.")
        check_choice("conditioning", conditioning, {"channel", "film"})
        self.operator = operator
        self.num_refinement_steps = check_int(
            "num_refinement_steps", num_refinement_steps, minimum=0
        )
        if conditioning == "film":
            shape = getattr(operator, "modulation_shape", None)
            if shape is None:
                raise TypeError(
                    f"conditioning='film' needs an operator that takes modulation=(scale, shift) "
                    f"and declares modulation_shape (e.g. operators.FNO); got "
                    f"{type(operator).__name__}."
                )
            self.film_table = jnp.zeros((self.num_refinement_steps + 1, 2, *shape))
        else:
            self.film_table = None

    def __call__(
        self,
        u_prev: Float[ArrayLike, " c *spatial"],
        u_noisy: Float[ArrayLike, " c *spatial"],
        k: Int[ArrayLike, ""],
    ) -> Float[Array, " c *spatial"]:
        u_prev, u_noisy = jnp.asarray(u_prev), jnp.asarray(u_noisy)
        if u_prev.shape != u_noisy.shape:
            raise ValueError(
                f"u_prev and u_noisy must have the same shape; got {u_prev.shape} and "
                f"{u_noisy.shape}."
            )
        k = _check_steps(k, self.num_refinement_steps, "RefinerNet: k")
        level = jnp.asarray(k, u_prev.dtype) / max(self.num_refinement_steps, 1)
        channel = jnp.broadcast_to(level, (1, *u_prev.shape[1:]))
        x = jnp.concatenate([u_prev, u_noisy, channel], axis=0)
        if self.film_table is None:
            return self.operator(x)
        scale, shift = self.film_table[k].astype(u_prev.dtype)
        return self.operator(x, modulation=(scale, shift))


def _check_steps(k, K: int, name: str):
    """Refinement steps ``k`` as int32, each in ``[0, K]``: concrete values raise ``ValueError``
    (``TypeError`` for a non-integer), traced ones are checked when the code runs. A step past
    ``K`` (e.g. a loss and a network built with different ``num_refinement_steps``) would
    otherwise condition on a level the network was not built for, and a FiLM table lookup
    would clamp it silently; a fractional step would be truncated."""
    message = f"{name} must be an integer in [0, num_refinement_steps={K}]"
    if is_concrete(k):
        a = np.asarray(k)
        if a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"{message}; got {k!r}.")
        if not np.all((a >= 0) & (a <= K)):
            raise ValueError(f"{message}; got {k!r}.")
        return jnp.asarray(a, jnp.int32)
    k = jnp.asarray(k)
    if not jnp.issubdtype(k.dtype, jnp.integer):
        raise TypeError(f"{message}; got a traced array of dtype {k.dtype}.")
    k = k.astype(jnp.int32)
    return eqx.error_if(k, (k < 0) | (k > K), message + " (a traced value).")


def _check_pair(u_t, u_next):
    u_t, u_next = as_float(u_t), as_float(u_next)
    if u_t.ndim < 2:
        raise ValueError(f"u_t must have shape (batch, channels, *spatial); got {u_t.shape}.")
    if u_next.shape != u_t.shape:
        raise ValueError(f"u_next must have the shape of u_t, {u_t.shape}; got {u_next.shape}.")
    return u_t, u_next


def refiner_loss(
    model: Callable,
    u_t: Float[ArrayLike, "batch c *spatial"],
    u_next: Float[ArrayLike, "batch c *spatial"],
    key: PRNGKeyArray | None,
    *,
    num_refinement_steps: int = 3,
    min_noise_std: float | Float[ArrayLike, ""] = 4e-7,
    k: Int[ArrayLike, " batch"] | int | None = None,
    noise: Float[ArrayLike, "batch c *spatial"] | None = None,
) -> Float[Array, ""]:
    r"""The PDE-Refiner training loss on a batch of pairs :math:`(u_t, u_{t+1})`.

    Per sample: :math:`k \sim \mathcal U\{0, \dots, K\}`; at :math:`k = 0` the squared error of
    :math:`f_\theta(u_t, 0, 0)` against :math:`u_{t+1}`, at :math:`k \ge 1` that of
    :math:`f_\theta(u_t, u_{t+1} + \sigma_k\epsilon, k)` against :math:`\epsilon`; averaged over
    the elements of each sample, then over the batch. Sample ``i`` uses ``fold_in(key, i)``.

    Args:
        model: ``model(u_prev, u_noisy, k)`` on one sample (e.g. a :class:`RefinerNet`).
        u_t, u_next: ``(batch, C, *spatial)``.
        key: draws the steps and the noise (unused when both ``k`` and ``noise`` are given).
        num_refinement_steps: ``K`` (``0``: plain one-step MSE).
        min_noise_std: :math:`\sigma_\text{min} \in (0, 1)`, the last (smallest) level.
        k: the refinement step of every sample (scalar or ``(batch,)``) instead of drawing it.
        noise: the standard normal noise :math:`\epsilon` instead of drawing it.
    """
    u_t, u_next = _check_pair(u_t, u_next)
    sigmas = refiner_noise_levels(num_refinement_steps, min_noise_std, u_t.dtype)
    K = sigmas.shape[0]
    batch = u_t.shape[0]
    keys = per_sample_keys(key, batch) if key is not None else None
    if k is None:
        if keys is None:
            raise ValueError("key is required unless both k and noise are given.")
        k = jax.vmap(lambda kk: jax.random.randint(jax.random.fold_in(kk, 0), (), 0, K + 1))(keys)
    else:
        k = _check_steps(k, K, "k")
        if k.ndim > 1 or k.size not in (1, batch):
            raise ValueError(f"k must be a scalar or have shape (batch={batch},); got {k.shape}.")
        k = jnp.broadcast_to(k, (batch,))
    if noise is None:
        if keys is None:
            raise ValueError("key is required unless both k and noise are given.")
        noise = jax.vmap(
            lambda kk: jax.random.normal(jax.random.fold_in(kk, 1), u_t.shape[1:], u_t.dtype)
        )(keys)
    else:
        noise = as_float(noise).astype(u_t.dtype)
        if noise.shape != u_t.shape:
            raise ValueError(f"noise must have the shape of u_t, {u_t.shape}; got {noise.shape}.")
    # Level 0 stands for the prediction step (zero input, target u_next); levels 1..K index sigmas.
    levels = jnp.concatenate([jnp.zeros((1,), u_t.dtype), sigmas])

    def one(u, target_u, kk, eps):
        sigma = levels[kk]
        predicting = kk == 0
        u_noisy = jnp.where(predicting, jnp.zeros_like(target_u), target_u + sigma * eps)
        target = jnp.where(predicting, target_u, eps)
        pred = jnp.asarray(model(u, u_noisy, kk))
        if pred.shape != target.shape:
            # (pred - target) would broadcast silently.
            raise ValueError(
                f"model must return a state of shape {target.shape}; got {pred.shape}."
            )
        return jnp.mean((pred - target) ** 2)

    return jnp.mean(jax.vmap(one)(u_t, u_next, k, noise))


def make_refiner_loss(**options) -> Callable:
    """A :func:`jaxsolve.train.fit` loss ``(model, (u_t, u_next), key) -> scalar``:
    :func:`refiner_loss` with ``options`` (``num_refinement_steps``, ``min_noise_std``)."""
    unknown = set(options) - {"num_refinement_steps", "min_noise_std"}
    if unknown:
        raise TypeError(f"make_refiner_loss: unknown options {sorted(unknown)}.")

    def loss_fn(model, batch, key):
        u_t, u_next = batch
        return refiner_loss(model, u_t, u_next, key, **options)

    return loss_fn


def refine_step(
    model: Callable,
    u_t: Float[ArrayLike, " c *spatial"],
    key: PRNGKeyArray | None = None,
    *,
    num_refinement_steps: int = 3,
    min_noise_std: float | Float[ArrayLike, ""] = 4e-7,
) -> Float[Array, " c *spatial"]:
    r"""One PDE-Refiner time step of one sample: the prediction :math:`\hat u^0 = f_\theta(u_t,
    0, 0)` refined ``K`` times (see the module docstring), the noise of step :math:`k` drawn from
    ``fold_in(key, k)``.

    Args:
        model: ``model(u_prev, u_noisy, k)`` on one sample.
        u_t: ``(C, *spatial)``.
        key: required when ``num_refinement_steps > 0``.
        num_refinement_steps, min_noise_std: as in :func:`refiner_loss`.
    """
    u_t = as_float(u_t)
    if u_t.ndim < 1:
        raise ValueError(f"u_t must have shape (channels, *spatial); got {u_t.shape}.")
    sigmas = refiner_noise_levels(num_refinement_steps, min_noise_std, u_t.dtype)
    if sigmas.shape[0] and key is None:
        raise ValueError("key is required when num_refinement_steps > 0 (the refinement noise).")
    u = jnp.asarray(model(u_t, jnp.zeros_like(u_t), jnp.asarray(0, jnp.int32))).astype(u_t.dtype)
    if u.shape != u_t.shape:
        raise ValueError(f"model must return a state of shape {u_t.shape}; got {u.shape}.")
    # K is small (a few steps) and static: unroll rather than scan.
    for k in range(1, sigmas.shape[0] + 1):
        sigma = sigmas[k - 1]
        eps = jax.random.normal(jax.random.fold_in(key, k), u_t.shape, u_t.dtype)
        noisy = u + sigma * eps
        predicted = jnp.asarray(model(u_t, noisy, jnp.asarray(k, jnp.int32)))
        if predicted.shape != u_t.shape:
            # (noisy - sigma * predicted) would broadcast silently.
            raise ValueError(
                f"model must return a noise of shape {u_t.shape} at refinement step {k}; got "
                f"{predicted.shape}."
            )
        u = noisy - sigma * predicted
    return u


def refiner_rollout(
    model: Callable,
    u0: Float[ArrayLike, " c *spatial"],
    num_steps: int,
    key: PRNGKeyArray | None = None,
    *,
    num_refinement_steps: int = 3,
    min_noise_std: float | Float[ArrayLike, ""] = 4e-7,
    include_initial: bool = True,
    throw: bool = True,
) -> Float[Array, " frames c *spatial"]:
    """``num_steps`` :func:`refine_step` steps from ``u0`` through the rollout driver (:func:`jaxsolve.pde.rollout`)
    (step ``s`` uses ``fold_in(key, s)``); the trajectory ``(frames, C, *spatial)``."""
    n = check_int("num_steps", num_steps, minimum=0)
    if num_refinement_steps and key is None:
        # Checked here too: inside the loop the missing key would surface as a trace error.
        check_int("num_refinement_steps", num_refinement_steps, minimum=0)
        raise ValueError("key is required when num_refinement_steps > 0 (the refinement noise).")
    u0 = as_float(u0)

    def step(state):
        u, s = state
        sub = None if key is None else jax.random.fold_in(key, s)
        u = refine_step(
            model,
            u,
            sub,
            num_refinement_steps=num_refinement_steps,
            min_noise_std=min_noise_std,
        ).astype(u.dtype)
        return u, s + 1

    states = _rollout(
        step, (u0, jnp.asarray(0, jnp.int32)), n, include_initial=include_initial, throw=throw
    )
    return states[0]
