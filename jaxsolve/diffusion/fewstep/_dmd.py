r"""Distribution-matching distillation: a one-step generator trained by a difference of scores.

"One-step Diffusion with Distribution Matching Distillation" (DMD; Yin, Gharbi, Zhang, Shechtman,
Durand, Freeman, Park) trains a generator :math:`x = G_\theta(z)` to minimise the reverse KL
divergence between its noised distribution :math:`q_\sigma` and the data's :math:`p_\sigma` (VE
scale, :math:`x_\sigma = x + \sigma\epsilon`). Its gradient needs no density, only two scores:

.. math::

    \nabla_\theta\,\mathrm{KL}(q_\sigma\,\Vert\,p_\sigma)
      = \mathbb E_{z,\epsilon}\Big[\big(s_\text{fake}(x_\sigma, \sigma) - s_\text{real}(x_\sigma,
        \sigma)\big)^{\!\top}\,\frac{\partial G_\theta(z)}{\partial\theta}\Big],

with :math:`s_\text{real}` the teacher's score and :math:`s_\text{fake}` the score of the
generator's own distribution, learned online by denoising score matching on generator samples. In
the denoiser form :math:`s(x, \sigma) = (D(x, \sigma) - x)/\sigma^2`, so the difference is
:math:`(D_\text{fake} - D_\text{real})/\sigma^2`.

"One-step Diffusion Models with f-Divergence Distribution Matching" (f-distill; Xu, Nie, Vahdat)
replaces the reverse KL by any f-divergence :math:`D_f(p\Vert q) = \int q\,f(p/q)`. Perturbing
:math:`q` by moving its samples gives :math:`\delta D_f = \int \delta q\,(f(r) - rf'(r))` with
:math:`r = p_\sigma/q_\sigma`, and since :math:`\nabla_x(f(r) - rf'(r)) = -r^2 f''(r)\,
(\nabla\log p_\sigma - \nabla\log q_\sigma)`,

.. math::

    \nabla_\theta D_f(p_\sigma\Vert q_\sigma) = \mathbb E_{z,\epsilon}\Big[h(r)\,
        \big(s_\text{fake} - s_\text{real}\big)^{\!\top}\frac{\partial G_\theta}{\partial\theta}
        \Big],\qquad h(r) = r^2 f''(r):

reverse KL (:math:`f = -\ln r`) has :math:`h = 1` (DMD), forward KL (:math:`f = r\ln r`) has
:math:`h = r`, Jensen-Shannon (:math:`f = r\ln r - (1+r)\ln\frac{1+r}{2}`) has
:math:`h = r/(1+r)`. The density ratio comes from ``log_ratio`` (a discriminator in the paper;
exact ``log_prob`` differences for the oracles of :mod:`jaxsolve.diffusion.analytic`).

* :func:`dmd_generator_loss` — a surrogate whose gradient with respect to the generator is the
  estimate above (stop-gradients on everything but :math:`G_\theta(z)`);
* :func:`dmd_fake_score_loss` — the fake denoiser's denoising loss on generator samples;
* :func:`dmd_regression_loss` — DMD's optional regression of :math:`G(z)` onto the teacher's ODE
  output from the same noise;
* :func:`dmd_step` — one training step of the two optimisers (fake score, then generator).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_choice, check_int, expand_to, safe_divide
from .._flow_matching import pseudo_huber
from .._losses import _per_sample_mean, dsm_loss, edm_loss, lognormal_sigmas

_DIVERGENCES = {"reverse_kl", "forward_kl", "jensen_shannon"}


def divergence_weight(divergence: str, log_ratio: ArrayLike) -> Array:
    r"""f-distill's weight :math:`h(r) = r^2 f''(r)` of the score difference, from :math:`\ln r`.

    :math:`r = p_\sigma/q_\sigma` is the density ratio of data to generator ("One-step Diffusion
    Models with f-Divergence Distribution Matching"): ``"reverse_kl"`` gives 1, ``"forward_kl"``
    :math:`r`, ``"jensen_shannon"`` :math:`r/(1+r)` (a sigmoid of :math:`\ln r`, so it never
    overflows).

    Args:
        divergence: ``"reverse_kl"``, ``"forward_kl"`` or ``"jensen_shannon"``.
        log_ratio: :math:`\ln r`, any shape.
    """
    check_choice("divergence", divergence, _DIVERGENCES)
    log_ratio = as_float(log_ratio)
    if divergence == "reverse_kl":
        return jnp.ones_like(log_ratio)
    if divergence == "forward_kl":
        return jnp.exp(log_ratio)
    return jax.nn.sigmoid(log_ratio)


def _noise_levels(sigma, key, batch, dtype, p_mean, p_std):
    """Per-sample levels: drawn (EDM's log-normal or a callable) or given."""
    if sigma is None:
        sigma = lognormal_sigmas(key, (batch,), p_mean, p_std)
    elif callable(sigma):
        sigma = sigma(key, (batch,))
    return jnp.broadcast_to(as_float(sigma), (batch,)).astype(dtype)


def dmd_generator_loss(
    generator: Callable,
    real_denoiser: Callable,
    fake_denoiser: Callable,
    z: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    *,
    sigma: ArrayLike | Callable | None = None,
    weight: str | Callable = "dmd",
    divergence: str = "reverse_kl",
    log_ratio: Callable | None = None,
    normalize_ratio: bool = False,
    noise: Float[ArrayLike, "batch ..."] | None = None,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Float[Array, ""]:
    r"""The distribution-matching loss of a one-step generator (DMD, f-distill).

    With :math:`x_i = G_\theta(z_i)`, :math:`x_{\sigma,i} = x_i + \sigma_i\epsilon_i` and the
    (stop-gradient) per-sample direction

    .. math::

        g_i = h(r_i)\,w_i\,\big(D_\text{fake}(x_{\sigma,i}, \sigma_i) -
            D_\text{real}(x_{\sigma,i}, \sigma_i)\big),

    the returned value is :math:`\frac1B\sum_i \tfrac12\lVert g_i\rVert^2` and its gradient with
    respect to the generator is exactly :math:`\frac1B\sum_i g_i^\top\,\partial G_\theta(z_i)/
    \partial\theta`, the Monte-Carlo estimate of the distribution-matching gradient (DMD's
    surrogate :math:`\tfrac12\lVert x - \operatorname{sg}(x - g)\rVert^2`, written so that the
    gradient carries no cancellation error). Neither denoiser is differentiated.

    Weights :math:`w_i` (``weight``):

    * ``"dmd"`` — DMD's normalisation :math:`w_i = 1/\operatorname{mean}|x_i -
      D_\text{real}(x_{\sigma,i}, \sigma_i)|` (mean over the elements of a sample), i.e. the paper's
      :math:`\sigma^2 C/\lVert x - \mu_\text{real}\rVert_1` times the score difference;
    * ``"score"`` — :math:`w_i = 1/\sigma_i^2`: :math:`g` is the score difference
      :math:`s_\text{fake} - s_\text{real}` and the gradient that of the divergence itself,
      averaged over the drawn levels;
    * a callable ``w(sigma)`` on per-sample levels — :math:`w_i = w(\sigma_i)/\sigma_i^2`, the
      gradient of :math:`\mathbb E_\sigma\,w(\sigma)D(p_\sigma, q_\sigma)`.

    Args:
        generator: :math:`G_\theta`, maps the batch ``z`` to a batch of samples ``(batch, ...)``
            (e.g. a teacher-initialised denoiser at :math:`\sigma_\text{max}` applied to
            :math:`\sigma_\text{max}z`).
        real_denoiser: the teacher ``(x, sigma) -> x0_hat`` (a trained model or an exact oracle).
        fake_denoiser: the denoiser of the generator's distribution (trained with
            :func:`dmd_fake_score_loss`, or exact).
        z: the generator's inputs, ``(batch, ...)``.
        key: PRNG key (levels and noise).
        sigma: noise levels: scalar or ``(batch,)``, a callable ``(key, shape) -> sigma``, or
            ``None`` for EDM's log-normal levels (``p_mean``, ``p_std``).
        weight: ``"dmd"``, ``"score"`` or a callable ``w(sigma)`` (above).
        divergence: ``"reverse_kl"`` (DMD), ``"forward_kl"`` or ``"jensen_shannon"``
            (:func:`divergence_weight`).
        log_ratio: ``(x, sigma) -> ln(p_sigma(x)/q_sigma(x))`` per sample, ``(batch,)``; needed
            for every divergence but the reverse KL.
        normalize_ratio: divide :math:`h(r_i)` by its batch mean (f-distill's normalisation,
            which bounds the gradient's scale; the estimate is then no longer unbiased).
        noise: the :math:`\epsilon_i`, shaped like the samples; drawn from ``key`` if ``None``
            (given, it allows common random numbers or quadrature).
        p_mean, p_std: the log-normal level distribution when ``sigma`` is ``None``.

    Returns:
        The scalar surrogate loss.
    """
    check_choice("divergence", divergence, _DIVERGENCES)
    if isinstance(weight, str):
        check_choice("weight", weight, {"dmd", "score"})
    elif not callable(weight):
        raise TypeError(
            f"weight must be 'dmd', 'score' or a callable; got {type(weight).__name__}."
        )
    if divergence != "reverse_kl" and log_ratio is None:
        raise ValueError(f"divergence={divergence!r} needs log_ratio (the data/generator ratio).")
    x = as_float(generator(as_float(z)))
    batch = x.shape[0]
    drawn = noise is None or sigma is None or callable(sigma)
    k_sigma, k_noise = jax.random.split(key) if drawn else (key, key)
    levels = _noise_levels(sigma, k_sigma, batch, x.dtype, p_mean, p_std)
    if noise is None:
        noise = jax.random.normal(k_noise, x.shape, x.dtype)
    noise = jnp.broadcast_to(as_float(noise), x.shape).astype(x.dtype)
    x_const = jax.lax.stop_gradient(x)
    x_noisy = x_const + expand_to(levels, x) * noise
    d_real = jax.lax.stop_gradient(as_float(real_denoiser(x_noisy, levels)).astype(x.dtype))
    d_fake = jax.lax.stop_gradient(as_float(fake_denoiser(x_noisy, levels)).astype(x.dtype))
    if isinstance(weight, str) and weight == "dmd":
        # Both the difference and the normaliser are O(sigma^2 * score): the ratio is scale-free.
        w = safe_divide(1.0, _per_sample_mean(jnp.abs(x_const - d_real)), 0.0)
    elif isinstance(weight, str):
        w = 1.0 / levels**2
    else:
        w = as_float(weight(levels)) / levels**2
    if divergence != "reverse_kl":
        h = divergence_weight(divergence, log_ratio(x_noisy, levels)).astype(x.dtype)
        if normalize_ratio:
            h = h / jnp.mean(h)
        w = w * h
    g = jax.lax.stop_gradient(expand_to(jnp.broadcast_to(w, (batch,)), x) * (d_fake - d_real))
    # Value 0.5|g|^2 (a diagnostic); gradient g . dx exactly (x - sg(x) is 0 with derivative 1).
    per_sample = jnp.sum((g * (x - x_const) + 0.5 * g**2).reshape(batch, -1), axis=1)
    return jnp.mean(per_sample)


def dmd_fake_score_loss(
    fake_denoiser: Callable,
    generator: Callable,
    z: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    *,
    sigma: ArrayLike | Callable | None = None,
    weight: Callable | None = None,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Float[Array, ""]:
    r"""Denoising score matching of the fake denoiser on the generator's samples (DMD).

    :math:`\mathbb E\,\lambda(\sigma)\lVert D_\text{fake}(x + \sigma\epsilon, \sigma) - x\rVert^2`
    with :math:`x = \operatorname{sg}G_\theta(z)`; its minimiser is the exact denoiser of the
    generator's distribution, so :math:`D_\text{fake}` tracks :math:`q_\theta` as it moves. The
    generator is not differentiated.

    Args:
        fake_denoiser: the denoiser being trained.
        generator: :math:`G_\theta`.
        z: the generator's inputs, ``(batch, ...)``.
        key: PRNG key.
        sigma: ``None`` for :func:`~jaxsolve.diffusion.edm_loss` (log-normal levels and EDM's
            weight, ``sigma_data``, ``p_mean``, ``p_std``); otherwise levels (scalar,
            ``(batch,)`` or a callable ``(key, shape) -> sigma``) for
            :func:`~jaxsolve.diffusion.dsm_loss` with ``weight``.
        weight: :math:`\lambda(\sigma)` when ``sigma`` is given (1 by default).
        sigma_data, p_mean, p_std: EDM's parameters when ``sigma`` is ``None``.
    """
    x = jax.lax.stop_gradient(as_float(generator(as_float(z))))
    if sigma is None:
        return edm_loss(fake_denoiser, x, key, sigma_data=sigma_data, p_mean=p_mean, p_std=p_std)
    k_sigma, k_noise = jax.random.split(key)
    levels = _noise_levels(sigma, k_sigma, x.shape[0], x.dtype, p_mean, p_std)
    return dsm_loss(fake_denoiser, x, levels, k_noise, weight=weight)


def dmd_regression_loss(
    generator: Callable,
    z: Float[ArrayLike, "batch ..."],
    target: Float[ArrayLike, "batch ..."],
    *,
    metric: str = "l2",
) -> Float[Array, ""]:
    r"""DMD's regression loss :math:`\mathbb E\,d(G_\theta(z), y)` on stored pairs :math:`(z, y)`.

    :math:`y` is the teacher's deterministic (probability-flow) sample started from the same
    noise, e.g. ``sample(teacher, sigma_max * z, sigmas, Heun())``; the pairs are computed once
    and anchor the generator's large-scale structure (the paper uses LPIPS as :math:`d`).

    Args:
        generator: :math:`G_\theta`.
        z: the stored noise, ``(batch, ...)``.
        target: the teacher's outputs from ``z``, shaped like ``generator(z)``.
        metric: ``"l2"`` (mean squared error per element) or ``"pseudo_huber"``
            (:func:`~jaxsolve.diffusion.pseudo_huber`).
    """
    check_choice("metric", metric, {"l2", "pseudo_huber"})
    x = as_float(generator(as_float(z)))
    diff = x - jax.lax.stop_gradient(as_float(target)).astype(x.dtype)
    if diff.shape != x.shape:
        raise ValueError(f"target must have the generator's output shape {x.shape}.")
    dist = pseudo_huber(diff) if metric == "pseudo_huber" else _per_sample_mean(diff**2)
    return jnp.mean(dist)


def dmd_step(
    generator: eqx.Module,
    fake_denoiser: eqx.Module,
    generator_state: optax.OptState,
    fake_state: optax.OptState,
    real_denoiser: Callable,
    z: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    generator_optimizer: optax.GradientTransformation,
    fake_optimizer: optax.GradientTransformation,
    *,
    fake_updates: int = 1,
    generator_loss: Callable | None = None,
    fake_loss: Callable | None = None,
):
    r"""One DMD training step: ``fake_updates`` steps on the fake denoiser, then one generator step.

    The fake denoiser is fitted to the current generator first (DMD2's two time-scale rule uses
    several fake steps per generator step), then the generator follows the score difference of
    :func:`dmd_generator_loss`. DMD initialises both the generator and the fake denoiser from the
    teacher. Only the inexact arrays of the two modules are trained
    (``eqx.filter``); wrap the call in ``eqx.filter_jit`` and initialise the states with
    ``optimizer.init(eqx.filter(module, eqx.is_inexact_array))``.

    Args:
        generator, fake_denoiser: the two trained modules.
        generator_state, fake_state: their optimiser states.
        real_denoiser: the teacher (not trained).
        z: the generator's inputs for this step.
        key: PRNG key.
        generator_optimizer, fake_optimizer: optax transformations.
        fake_updates: fake-denoiser steps per generator step (static).
        generator_loss: ``(generator, real, fake, z, key) -> loss``; default
            :func:`dmd_generator_loss` with its defaults (bind options with a lambda, e.g. the
            f-divergence, or add :func:`dmd_regression_loss`).
        fake_loss: ``(fake, generator, z, key) -> loss``; default :func:`dmd_fake_score_loss`.

    Returns:
        ``(generator, fake_denoiser, generator_state, fake_state, (generator_loss_value,
        fake_loss_value))``, the fake loss being that of the last fake step.
    """
    fake_updates = check_int("fake_updates", fake_updates, minimum=1)
    generator_loss = dmd_generator_loss if generator_loss is None else generator_loss
    fake_loss = dmd_fake_score_loss if fake_loss is None else fake_loss
    k_fake, k_gen = jax.random.split(key)

    @eqx.filter_value_and_grad
    def fake_value_and_grad(fake, k):
        return fake_loss(fake, generator, z, k)

    fake_value = None
    # A few unrolled steps (static count): each is a full update of the small fake denoiser.
    for k in jax.random.split(k_fake, fake_updates):
        fake_value, grads = fake_value_and_grad(fake_denoiser, k)
        params = eqx.filter(fake_denoiser, eqx.is_inexact_array)
        updates, fake_state = fake_optimizer.update(grads, fake_state, params)
        fake_denoiser = eqx.apply_updates(fake_denoiser, updates)

    @eqx.filter_value_and_grad
    def generator_value_and_grad(gen):
        return generator_loss(gen, real_denoiser, fake_denoiser, z, k_gen)

    gen_value, grads = generator_value_and_grad(generator)
    params = eqx.filter(generator, eqx.is_inexact_array)
    updates, generator_state = generator_optimizer.update(grads, generator_state, params)
    generator = eqx.apply_updates(generator, updates)
    return generator, fake_denoiser, generator_state, fake_state, (gen_value, fake_value)
