r"""PFGM++'s perturbation kernel, in the denoiser form's noise level.

From "PFGM++: Unlocking the Potential of Physics-Inspired Generative Models" (Xu et al.). Data
:math:`y \in \mathbb R^N` is augmented with :math:`D` extra dimensions; the electric field of the
data, restricted to the hyperplane at augmented radius :math:`r`, perturbs :math:`y` with the
kernel

.. math::
    p_r(x \mid y) \propto \frac{1}{(\lVert x - y\rVert^2 + r^2)^{(N+D)/2}}.

Its radius :math:`R = \lVert x - y\rVert` has density :math:`\propto R^{N-1}/(R^2 + r^2)^{(N+D)/2}`,
so :math:`R^2/r^2 \sim \mathrm{BetaPrime}(N/2, D/2)`, and its direction is uniform on the
sphere. With the paper's alignment :math:`r = \sigma\sqrt D`, the kernel is the multivariate
Student-t with :math:`D` degrees of freedom and scale :math:`\sigma`: second moment
:math:`\mathbb E\lVert x - y\rVert^2 = r^2 N/(D - 2) = \sigma^2 N D/(D-2)` for :math:`D > 2`, and
:math:`D \to \infty` recovers EDM's :math:`\mathcal N(0, \sigma^2 I)`.

Under the same alignment the probability-flow ODE in :math:`\sigma` is EDM's,
:math:`\mathrm dx/\mathrm d\sigma = (x - D(x, \sigma))/\sigma`, and the training objective is
EDM's with the Gaussian perturbation replaced by this kernel (:func:`pfgmpp_loss`). So a PFGM++
model is a denoiser: it samples with every solver of :func:`jaxsolve.diffusion.sample`, starting
from :func:`pfgmpp_prior`. Only the prior and the training noise depend on :math:`D`.

Every draw here is :math:`\sigma\,g\,\sqrt{D/\chi^2_D}` with :math:`g` the normal draw EDM makes
from the same key and :math:`\chi^2_D` independent (the Student-t construction), so
:math:`D = \infty` reproduces EDM's numbers exactly and a finite :math:`D` differs from them by
the factor :math:`\sqrt{D/\chi^2_D} = 1 + O(D^{-1/2})` per sample (standard deviation
:math:`1/\sqrt{2D}`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import (
    as_float,
    check_int,
    check_positive,
    default_float,
    expand_to,
    is_concrete,
)
from .._losses import dsm_loss, edm_weight, lognormal_sigmas


def pfgmpp_radius(sigma: ArrayLike, D: ArrayLike) -> Array:
    r"""The augmented radius aligned with noise level :math:`\sigma`: :math:`r = \sigma\sqrt D`."""
    check_positive("D", D, allow_inf=True)  # D = inf: the EDM limit
    return as_float(sigma) * jnp.sqrt(as_float(D))


def pfgmpp_sigma(r: ArrayLike, D: ArrayLike) -> Array:
    r"""The noise level aligned with augmented radius :math:`r`: :math:`\sigma = r/\sqrt D`."""
    check_positive("D", D, allow_inf=True)  # D = inf: the EDM limit
    return as_float(r) / jnp.sqrt(as_float(D))


def pfgmpp_perturb(
    key: PRNGKeyArray,
    x0: Float[ArrayLike, "batch ..."],
    sigma: ArrayLike,
    D: ArrayLike,
    *,
    batch_ndim: int = 1,
) -> Float[Array, "batch ..."]:
    r"""Sample :math:`x \sim p_r(\cdot \mid x_0)`, PFGM++'s perturbation kernel at :math:`r = \sigma\sqrt D`.

    From "PFGM++: Unlocking the Potential of Physics-Inspired Generative Models" (Xu et al.): the
    radius :math:`R = r\sqrt{B}`, :math:`B \sim \mathrm{BetaPrime}(N/2, D/2)`, and an independent
    uniform direction :math:`u`, with :math:`N` the number of elements of one sample. A
    beta-prime variate is a ratio of gammas :math:`G_{N/2}/G_{D/2}`; taking
    :math:`G_{N/2} = \lVert g\rVert^2/2` and :math:`u = g/\lVert g\rVert` for one Gaussian draw
    :math:`g \sim \mathcal N(0, I_N)` (norm and direction of a Gaussian are independent, and
    :math:`\lVert g\rVert^2/2 \sim \mathrm{Gamma}(N/2)`) gives the same law with

    .. math::
        x = x_0 + R\,u = x_0 + \sigma\,g\,\sqrt{\frac{D/2}{G_{D/2}}},

    which never divides by :math:`\lVert g\rVert` and whose factor tends to 1 as
    :math:`D \to \infty`. Here ``g = normal(key, x0.shape)`` is the draw EDM's losses make from
    ``key``, so ``D = inf`` is exactly their :math:`x_0 + \sigma g`.

    Args:
        key: a PRNG key.
        x0: clean data, ``batch_ndim`` leading batch axes; :math:`N` is the size of the rest.
        sigma: noise level, scalar or per sample (the batch shape).
        D: the number of augmented dimensions, positive (``inf`` allowed).
        batch_ndim: the number of leading batch axes of ``x0`` (0: one sample).
    """
    x0 = as_float(x0)
    batch_ndim = check_int("batch_ndim", batch_ndim, minimum=0, maximum=x0.ndim)
    check_positive("sigma", sigma, allow_zero=True)
    sigma = jnp.broadcast_to(as_float(sigma), x0.shape[:batch_ndim])
    return x0 + expand_to(sigma, x0) * _kernel_noise(key, x0.shape, x0.dtype, D, batch_ndim)


def _kernel_noise(key, shape, dtype, D, batch_ndim):
    r"""The unit-scale kernel draw :math:`g\sqrt{(D/2)/G_{D/2}}`: ``g = normal(key, shape)`` (EDM's
    draw for this key) and the gamma variate from ``fold_in(key, 2)``, one per sample (the
    losses' input perturbation takes ``fold_in(key, 1)``)."""
    check_positive("D", D, allow_inf=True)  # D = inf: the EDM limit
    g = jax.random.normal(key, shape, dtype)
    if is_concrete(D) and math.isinf(float(D)):
        return g
    batch = shape[:batch_ndim]
    D = as_float(D)
    infinite = jnp.isinf(D)
    half_d = jnp.where(infinite, 1.0, D / 2).astype(dtype)
    gamma = jax.random.gamma(jax.random.fold_in(key, 2), half_d, batch, dtype)
    scale = jnp.where(infinite, 1.0, jnp.sqrt(half_d / gamma))
    return expand_to(scale, g) * g


def pfgmpp_prior(
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    sigma_max: ArrayLike,
    D: ArrayLike,
    *,
    batch_ndim: int = 1,
) -> Float[Array, " *shape"]:
    r"""Draws from PFGM++'s prior: the kernel around 0 at the largest level, :math:`r_\max = \sigma_\max\sqrt D`.

    The initial state of :func:`jaxsolve.diffusion.sample` (whose first grid level is
    ``sigma_max``); ``D = inf`` gives EDM's ``sigma_max * normal(key, shape)`` exactly.

    Args:
        key: a PRNG key.
        shape: the shape of the draws, ``batch_ndim`` leading batch axes.
        sigma_max: the largest noise level.
        D: the number of augmented dimensions, positive (``inf`` allowed).
        batch_ndim: the number of leading batch axes (one radius per sample).
    """
    check_positive("sigma_max", sigma_max)
    batch_ndim = check_int("batch_ndim", batch_ndim, minimum=0, maximum=len(shape))
    noise = _kernel_noise(key, tuple(shape), default_float(), D, batch_ndim)
    return as_float(sigma_max) * noise


def pfgmpp_loss(
    denoiser: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    D: ArrayLike,
    *,
    sigma_data: float = 0.5,
    p_mean: float = -1.2,
    p_std: float = 1.2,
) -> Float[Array, ""]:
    r"""PFGM++'s training loss in the denoiser form.

    From "PFGM++: Unlocking the Potential of Physics-Inspired Generative Models" (Xu et al.): EDM's
    objective (log-normal :math:`\sigma`, weight :math:`(\sigma^2+\sigma_d^2)/(\sigma\sigma_d)^2`,
    the same denoiser and preconditioning) with :math:`x = x_0 + \sigma g\sqrt{D/\chi^2_D}` drawn
    from the kernel at :math:`r = \sigma\sqrt D`,

    .. math::
        \mathbb E\,\lambda(\sigma)\lVert \hat x_0(x, \sigma) - x_0\rVert^2,

    with :math:`\hat x_0` the ``denoiser``.

    The keys are used as in :func:`~jaxsolve.diffusion.edm_loss`, so ``D = inf`` returns its
    value exactly and a large ``D`` differs by :math:`O(D^{-1/2})` relative.

    Args:
        denoiser: ``denoiser(x, sigma) -> x0_hat`` on the batch (e.g. a
            :class:`~jaxsolve.diffusion.Precond`).
        x0: clean data, one leading batch axis.
        key: a PRNG key.
        D: the number of augmented dimensions, positive (``inf`` allowed: EDM).
        sigma_data: :math:`\sigma_d` of the weight.
        p_mean, p_std: the log-normal distribution of :math:`\sigma`.
    """
    x0 = as_float(x0)
    k_sigma, k_noise = jax.random.split(key)
    sigma = lognormal_sigmas(k_sigma, x0.shape[:1], p_mean, p_std)
    noise = _kernel_noise(k_noise, x0.shape, x0.dtype, D, 1)
    return dsm_loss(
        denoiser, x0, sigma, k_noise, weight=lambda s: edm_weight(s, sigma_data), noise=noise
    )
