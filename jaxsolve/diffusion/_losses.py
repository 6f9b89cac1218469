r"""Training objectives of diffusion models: denoising score matching and its parameterisations.

* :class:`Precond` — EDM preconditioning ("Elucidating the Design Space of Diffusion-Based
  Generative Models", Table 1): :math:`D(x, \sigma) = c_\text{skip}x + c_\text{out}F(c_\text{in}x, c_\text{noise})`
  with :math:`c_\text{skip} = \sigma_d^2/(\sigma^2+\sigma_d^2)`,
  :math:`c_\text{out} = \sigma\sigma_d/\sqrt{\sigma^2+\sigma_d^2}`,
  :math:`c_\text{in} = 1/\sqrt{\sigma^2+\sigma_d^2}`, :math:`c_\text{noise} = \tfrac14\ln\sigma`.
* :func:`dsm_loss` — :math:`\mathbb E\,w(\sigma)\lVert D(x_0+\sigma n, \sigma) - x_0\rVert^2`, the
  squared error averaged over the elements of each sample, then over the batch.
* :func:`edm_loss` — the EDM recipe: :math:`\ln\sigma\sim\mathcal N(P_\text{mean}, P_\text{std}^2)`,
  weight :math:`\lambda(\sigma) = (\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2` (which makes the
  effective target of :math:`F` unit-variance).
* :func:`eps_loss`, :func:`v_loss` — noise- and v-prediction for a model ``fn(x_t, t)`` in the
  scale and time of a (VP) schedule, :math:`t` uniform on the schedule's range (or given).

* :func:`x0_loss` — data prediction for a model ``fn(x_t, t)`` in a schedule's scale and time.

The minimiser of :func:`dsm_loss` at each :math:`\sigma` is the exact denoiser
:math:`\mathbb E[x_0\mid x]`; its loss is the posterior variance (tested on the Gaussian oracle).

Two training add-ons apply to every loss here:

* ``input_perturbation`` :math:`\gamma` ("Input Perturbation Reduces Exposure Bias in Diffusion
  Models", DDPM-IP): the network sees :math:`x = \alpha x_0 + \sigma(\epsilon + \gamma\xi)` with
  an independent :math:`\xi\sim\mathcal N(0, I)` while the target keeps the clean
  :math:`\epsilon` (or :math:`x_0`, or :math:`v` built from :math:`\epsilon`). In the denoiser
  form the input noise has variance :math:`\sigma^2(1+\gamma^2)`, so the minimiser is the
  posterior mean at the inflated level :math:`\sigma\sqrt{1+\gamma^2}` (the paper's remedy for
  exposure bias: at sampling time the input carries the model's own accumulated error).
* ``noise`` (coupled noise; "Rectified Diffusion: Straightness Is Not Your Need in Rectified
  Flow"): train on the pairs :math:`(x_0, \epsilon)` a pretrained model's ODE produces
  (:func:`~jaxsolve.diffusion.fewstep.rectified_pairs`) instead of an independent
  :math:`\epsilon`. Where the noisy input determines the pair (Gaussian data, whose ODE coupling
  is linear), the optimal predictor has zero loss and its ODE trajectory is first-order: a single
  Euler (DDIM) step is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import as_float, check_positive, expand_to, is_concrete
from ._schedules import AbstractSchedule


class Precond(eqx.Module):
    """A raw network ``net(x_in, c_noise)`` (single sample) turned into an EDM denoiser.

    The denoiser takes ``x`` with ``batch_ndim`` leading batch axes and ``sigma`` scalar or per
    sample, and maps ``net`` over the batch with ``jax.vmap``.
    """

    net: Callable
    sigma_data: float = 0.5
    batch_ndim: int = eqx.field(static=True, default=1)

    def coefficients(self, sigma):
        """``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma``."""
        sigma = as_float(sigma)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (sigma**2 + sd2)
        c_out = sigma * self.sigma_data * jax.lax.rsqrt(sigma**2 + sd2)
        c_in = jax.lax.rsqrt(sigma**2 + sd2)
        c_noise = 0.25 * jnp.log(sigma)
        return c_skip, c_out, c_in, c_noise

    def __call__(self, x: Float[Array, " *shape"], sigma: ArrayLike) -> Float[Array, " *shape"]:
        return preconditioned(self.net, self.coefficients, x, sigma, self.batch_ndim)


def preconditioned(net, coefficients, x, sigma, batch_ndim):
    r""":math:`c_\text{skip}x + c_\text{out}F(c_\text{in}x, c_\text{noise})` with the single-sample
    network ``F`` mapped over ``batch_ndim`` leading axes and ``coefficients(sigma) -> (c_skip,
    c_out, c_in, c_noise)`` per sample (EDM's preconditioning; consistency models use it with
    their own ``c_skip``, ``c_out``)."""
    x = as_float(x)
    batch = x.shape[:batch_ndim]
    sigma = jnp.broadcast_to(as_float(sigma), batch).astype(x.dtype)
    c_skip, c_out, c_in, c_noise = coefficients(sigma)
    f = net
    for _ in range(batch_ndim):
        f = jax.vmap(f)
    out = jnp.asarray(f(expand_to(c_in, x) * x, c_noise)).astype(x.dtype)
    return expand_to(c_skip, x) * x + expand_to(c_out, x) * out


def _per_sample(name, value, x0):
    """``value`` (a noise level or a time) broadcast to one entry per sample of ``x0``: a scalar
    or shape ``(batch,)``; anything else names the argument (broadcasting's own error did not)."""
    value = as_float(value)
    batch = x0.shape[:1]
    if value.shape not in ((), batch):
        raise ValueError(
            f"{name} must be a scalar or have shape {batch} (one per sample of x0); got shape "
            f"{value.shape}."
        )
    return jnp.broadcast_to(value, batch)


def _per_sample_mean(err, batch_ndim=1):
    return jnp.mean(err.reshape((*err.shape[:batch_ndim], -1)), axis=-1)


def lognormal_sigmas(key: PRNGKeyArray, shape, p_mean: float = -1.2, p_std: float = 1.2):
    """EDM's training noise levels: :math:`\\ln\\sigma \\sim \\mathcal N(P_\\text{mean}, P_\\text{std}^2)`."""
    return jnp.exp(p_mean + p_std * jax.random.normal(key, shape))


def edm_weight(sigma, sigma_data: float = 0.5):
    """EDM's loss weight :math:`\\lambda(\\sigma) = (\\sigma^2+\\sigma_d^2)/(\\sigma\\sigma_d)^2`."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _noises(key, x0, noise, input_perturbation):
    r"""``(target, input)`` noise: :math:`\epsilon` drawn from ``key`` (or the coupled ``noise``
    given) and :math:`\epsilon + \gamma\xi` with :math:`\xi` drawn from ``fold_in(key, 1)``, so
    ``gamma = 0`` uses the key exactly as without the add-on."""
    check_positive("input_perturbation", input_perturbation, allow_zero=True)
    if noise is None:
        eps = jax.random.normal(key, x0.shape, x0.dtype)
    else:
        eps = as_float(noise).astype(x0.dtype)
        if eps.shape != x0.shape:
            raise ValueError(f"noise must have the shape of x0, {x0.shape}; got {eps.shape}.")
    if is_concrete(input_perturbation) and float(input_perturbation) == 0.0:
        return eps, eps
    xi = jax.random.normal(jax.random.fold_in(key, 1), x0.shape, x0.dtype)
    return eps, eps + jnp.asarray(input_perturbation, x0.dtype) * xi


def dsm_loss(
    denoiser: Callable,
    x0: Float[ArrayLike, "batch ..."],
    sigma: ArrayLike,
    key: PRNGKeyArray,
    weight: Callable | None = None,
    *,
    input_perturbation: ArrayLike = 0.0,
    noise: Float[ArrayLike, "batch ..."] | None = None,
) -> Float[Array, ""]:
    r"""Denoising score matching in the denoiser form at noise levels ``sigma`` (scalar or ``(batch,)``).

    Args:
        denoiser: ``denoiser(x, sigma) -> x0_hat`` on the batch.
        x0: clean data, one leading batch axis.
        sigma: noise levels, scalar or ``(batch,)``.
        key: PRNG key of the noise (and of the input perturbation).
        weight: optional ``weight(sigma)`` per sample.
        input_perturbation: DDPM-IP's :math:`\gamma \ge 0`: the input is
            :math:`x_0 + \sigma(\epsilon + \gamma\xi)`, the target stays :math:`x_0`.
        noise: coupled noise :math:`\epsilon` of the shape of ``x0`` (Rectified Diffusion), used
            in place of a fresh draw.
    """
    x0 = as_float(x0)
    sigma = _per_sample("sigma", sigma, x0)
    _, n = _noises(key, x0, noise, input_perturbation)
    x = x0 + expand_to(sigma, x0) * n
    err = _per_sample_mean((denoiser(x, sigma) - x0) ** 2)
    w = 1.0 if weight is None else weight(sigma)
    return jnp.mean(w * err)


def edm_loss(
    denoiser: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
    input_perturbation: ArrayLike = 0.0,
    noise: Float[ArrayLike, "batch ..."] | None = None,
) -> Float[Array, ""]:
    """EDM training loss: log-normal noise levels and the :func:`edm_weight` (add-ons as in
    :func:`dsm_loss`)."""
    k_sigma, k_noise = jax.random.split(key)
    sigma = lognormal_sigmas(k_sigma, x0.shape[:1], p_mean, p_std)
    return dsm_loss(
        denoiser,
        x0,
        sigma,
        k_noise,
        weight=lambda s: edm_weight(s, sigma_data),
        input_perturbation=input_perturbation,
        noise=noise,
    )


def _prediction_loss(
    model, schedule: AbstractSchedule, x0, key, t, noise, input_perturbation, target
):
    """Mean squared error of ``model(x_t, t)`` against ``target(x0, eps, alpha, sigma)`` with
    :math:`x_t = \\alpha x_0 + \\sigma(\\epsilon + \\gamma\\xi)`."""
    x0 = as_float(x0)
    k_t, k_n = jax.random.split(key)
    if t is None:
        t = jax.random.uniform(k_t, x0.shape[:1], minval=schedule.t_min, maxval=schedule.t_max)
    t = _per_sample("t", t, x0)
    eps, n = _noises(k_n, x0, noise, input_perturbation)
    a, s = schedule.alpha_sigma(t)
    a, s = expand_to(a, x0), expand_to(s, x0)
    x_t = a * x0 + s * n
    return jnp.mean(_per_sample_mean((model(x_t, t) - target(x0, eps, a, s)) ** 2))


def eps_loss(
    model: Callable,
    schedule: AbstractSchedule,
    x0,
    key,
    t=None,
    *,
    input_perturbation: ArrayLike = 0.0,
    noise: Float[ArrayLike, "batch ..."] | None = None,
) -> Float[Array, ""]:
    """Noise prediction: :math:`\\mathbb E\\lVert \\hat\\epsilon(\\alpha x_0 + \\sigma\\epsilon, t) - \\epsilon\\rVert^2`.

    :math:`t` is uniform on the schedule's range (or given). ``input_perturbation`` (DDPM-IP's
    :math:`\\gamma`) perturbs the input noise only; ``noise`` is coupled noise used in place of a
    fresh draw (Rectified Diffusion); see :func:`dsm_loss`.
    """
    target = lambda x0, eps, a, s: eps
    return _prediction_loss(model, schedule, x0, key, t, noise, input_perturbation, target)


def v_loss(
    model: Callable,
    schedule: AbstractSchedule,
    x0,
    key,
    t=None,
    *,
    input_perturbation: ArrayLike = 0.0,
    noise: Float[ArrayLike, "batch ..."] | None = None,
) -> Float[Array, ""]:
    """v-prediction ("Progressive Distillation"): target :math:`v = \\alpha\\epsilon - \\sigma x_0`.

    Add-ons as in :func:`eps_loss` (the target is built from the clean :math:`\\epsilon`).
    """
    target = lambda x0, eps, a, s: a * eps - s * x0
    return _prediction_loss(model, schedule, x0, key, t, noise, input_perturbation, target)


def x0_loss(
    model: Callable,
    schedule: AbstractSchedule,
    x0,
    key,
    t=None,
    *,
    input_perturbation: ArrayLike = 0.0,
    noise: Float[ArrayLike, "batch ..."] | None = None,
) -> Float[Array, ""]:
    """Data prediction: :math:`\\mathbb E\\lVert \\hat x_0(\\alpha x_0 + \\sigma\\epsilon, t) - x_0\\rVert^2`.

    Add-ons as in :func:`eps_loss`.
    """
    target = lambda x0, eps, a, s: x0
    return _prediction_loss(model, schedule, x0, key, t, noise, input_perturbation, target)
