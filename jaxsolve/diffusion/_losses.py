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

The minimiser of :func:`dsm_loss` at each :math:`\sigma` is the exact denoiser
:math:`\mathbb E[x_0\mid x]`; its loss is the posterior variance (tested on the Gaussian oracle).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import as_float, expand_to
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


def _per_sample_mean(err, batch_ndim=1):
    return jnp.mean(err.reshape((*err.shape[:batch_ndim], -1)), axis=-1)


def lognormal_sigmas(key: PRNGKeyArray, shape, p_mean: float = -1.2, p_std: float = 1.2):
    """EDM's training noise levels: :math:`\\ln\\sigma \\sim \\mathcal N(P_\\text{mean}, P_\\text{std}^2)`."""
    return jnp.exp(p_mean + p_std * jax.random.normal(key, shape))


def edm_weight(sigma, sigma_data: float = 0.5):
    """EDM's loss weight :math:`\\lambda(\\sigma) = (\\sigma^2+\\sigma_d^2)/(\\sigma\\sigma_d)^2`."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def dsm_loss(
    denoiser: Callable,
    x0: Float[Array, "batch ..."],
    sigma: ArrayLike,
    key: PRNGKeyArray,
    weight: Callable | None = None,
) -> Float[Array, ""]:
    """Denoising score matching in the denoiser form at noise levels ``sigma`` (scalar or ``(batch,)``)."""
    x0 = as_float(x0)
    sigma = jnp.broadcast_to(as_float(sigma), x0.shape[:1])
    noise = jax.random.normal(key, x0.shape, x0.dtype)
    x = x0 + expand_to(sigma, x0) * noise
    err = _per_sample_mean((denoiser(x, sigma) - x0) ** 2)
    w = 1.0 if weight is None else weight(sigma)
    return jnp.mean(w * err)


def edm_loss(
    denoiser: Callable,
    x0: Float[Array, "batch ..."],
    key: PRNGKeyArray,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Float[Array, ""]:
    """EDM training loss: log-normal noise levels and the :func:`edm_weight`."""
    k_sigma, k_noise = jax.random.split(key)
    sigma = lognormal_sigmas(k_sigma, x0.shape[:1], p_mean, p_std)
    return dsm_loss(denoiser, x0, sigma, k_noise, weight=lambda s: edm_weight(s, sigma_data))


def _schedule_sample(schedule: AbstractSchedule, x0, key, t):
    k_t, k_n = jax.random.split(key)
    if t is None:
        t = jax.random.uniform(k_t, x0.shape[:1], minval=schedule.t_min, maxval=schedule.t_max)
    t = jnp.broadcast_to(as_float(t), x0.shape[:1])
    eps = jax.random.normal(k_n, x0.shape, x0.dtype)
    a, s = schedule.alpha_sigma(t)
    a, s = expand_to(a, x0), expand_to(s, x0)
    return t, a, s, eps, a * x0 + s * eps


def eps_loss(model: Callable, schedule: AbstractSchedule, x0, key, t=None) -> Float[Array, ""]:
    """Noise prediction: :math:`\\mathbb E\\lVert \\hat\\epsilon(\\alpha x_0 + \\sigma\\epsilon, t) - \\epsilon\\rVert^2`."""
    x0 = as_float(x0)
    t, _, _, eps, x_t = _schedule_sample(schedule, x0, key, t)
    return jnp.mean(_per_sample_mean((model(x_t, t) - eps) ** 2))


def v_loss(model: Callable, schedule: AbstractSchedule, x0, key, t=None) -> Float[Array, ""]:
    """v-prediction ("Progressive Distillation"): target :math:`v = \\alpha\\epsilon - \\sigma x_0`."""
    x0 = as_float(x0)
    t, a, s, eps, x_t = _schedule_sample(schedule, x0, key, t)
    return jnp.mean(_per_sample_mean((model(x_t, t) - (a * eps - s * x0)) ** 2))
