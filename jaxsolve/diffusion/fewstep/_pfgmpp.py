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
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, check_positive, expand_to, is_concrete


def pfgmpp_radius(sigma: ArrayLike, D: ArrayLike) -> Array:
    r"""The augmented radius aligned with noise level :math:`\sigma`: :math:`r = \sigma\sqrt D`."""
    check_positive("D", D)
    return as_float(sigma) * jnp.sqrt(as_float(D))


def pfgmpp_sigma(r: ArrayLike, D: ArrayLike) -> Array:
    r"""The noise level aligned with augmented radius :math:`r`: :math:`\sigma = r/\sqrt D`."""
    check_positive("D", D)
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
    :math:`D \to \infty`. ``D = inf`` is EDM's :math:`x_0 + \sigma g` with the same ``g`` for the
    same ``key``.

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
    check_positive("D", D)
    batch = x0.shape[:batch_ndim]
    sigma = jnp.broadcast_to(as_float(sigma), batch)
    key_direction, key_radius = jax.random.split(key)
    g = jax.random.normal(key_direction, x0.shape, x0.dtype)
    if is_concrete(D) and math.isinf(float(D)):
        scale = jnp.ones(batch, x0.dtype)
    else:
        D = as_float(D)
        infinite = jnp.isinf(D)
        half_d = jnp.where(infinite, 1.0, D / 2).astype(x0.dtype)
        gamma = jax.random.gamma(key_radius, half_d, batch, x0.dtype)
        scale = jnp.where(infinite, 1.0, jnp.sqrt(half_d / gamma))
    return x0 + expand_to(sigma * scale, x0) * g
