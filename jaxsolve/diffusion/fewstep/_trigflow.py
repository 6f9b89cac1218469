r"""TrigFlow: conversions to the denoiser form, and the sCM tangent by ``jax.jvp``.

From "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models" (Lu & Song). The
TrigFlow process is :math:`x_t = \cos(t)\,x_0 + \sin(t)\,z`, :math:`z \sim \mathcal N(0,
\sigma_d^2 I)`, :math:`t \in [0, \pi/2]`. Dividing by :math:`\cos t`,

.. math::
    x_t/\cos t = x_0 + \sigma_d\tan(t)\,\epsilon,

so TrigFlow time :math:`t` is VE noise level :math:`s = \sigma_d\tan t` with VE state
:math:`x = x_t/\cos t` (equivalently :math:`x_t = \cos(t)\,x`).

A TrigFlow network :math:`F_\theta(x_t/\sigma_d, t)` predicts the (scaled) velocity: the
probability-flow ODE is :math:`\mathrm{d}x_t/\mathrm{d}t = \sigma_d F_\theta(x_t/\sigma_d, t)`, and
for the exact velocity :math:`\mathbb E[-\sin(t)x_0 + \cos(t)z \mid x_t]` one finds
:math:`\sigma_d F = (\cos(t)\,x_t - \hat x_0)/\sin t`. Hence the data prediction, which is also
sCM's consistency function,

.. math::
    f_\theta(x_t, t) = \cos(t)\,x_t - \sin(t)\,\sigma_d F_\theta(x_t/\sigma_d, t).

:func:`from_trigflow` and :func:`to_trigflow` convert between ``F`` and a denoiser
``(x, sigma) -> x0_hat`` through these identities, exactly (inverse to each other up to
round-off); :func:`scm_tangent` is the total derivative :math:`\mathrm{d}f_{\theta^-}/\mathrm{d}t`
along the ODE, the quantity sCM's continuous-time objective regresses on.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, check_int, check_positive, expand_to, safe_sqrt


def trigflow_time(sigma: ArrayLike, sigma_data: ArrayLike = 0.5) -> Array:
    r"""TrigFlow time of a VE noise level: :math:`t = \arctan(s/\sigma_d)`, in :math:`[0, \pi/2]`."""
    check_positive("sigma_data", sigma_data)
    return jnp.arctan2(as_float(sigma), as_float(sigma_data))


def trigflow_sigma(t: ArrayLike, sigma_data: ArrayLike = 0.5) -> Array:
    r"""VE noise level of a TrigFlow time: :math:`s = \sigma_d\tan t`."""
    check_positive("sigma_data", sigma_data)
    return as_float(sigma_data) * jnp.tan(as_float(t))


def _check_callable(where, name, fn):
    if not callable(fn):
        raise TypeError(f"{where}: {name} must be callable; got {type(fn).__name__}.")


class TrigFlowDenoiser(eqx.Module):
    r"""A TrigFlow network ``F(x_t / sigma_data, t)`` seen as a denoiser ``(x, sigma) -> x0_hat``.

    With :math:`t = \arctan(s/\sigma_d)` and :math:`x_t = \cos(t)\,x`:
    :math:`\hat x_0 = \cos(t)\,x_t - \sin(t)\,\sigma_d F(x_t/\sigma_d, t)`. For a consistency
    model this is its consistency function :math:`f_\theta`; at :math:`s = 0` it is the identity.
    ``sigma`` is a scalar or has the leading (batch) axes of ``x``; ``F`` receives ``t`` of that
    shape. Defined for :math:`0 \le s < \infty`. Build with :func:`from_trigflow`.
    """

    fn: Callable
    sigma_data: float | Array

    def __check_init__(self):
        _check_callable("from_trigflow", "F", self.fn)
        check_positive("sigma_data", self.sigma_data)

    def __call__(self, x: Float[ArrayLike, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        x = as_float(x)
        sigma = as_float(sigma)
        sd = as_float(self.sigma_data)
        t = trigflow_time(sigma, sd)
        cos, sin = expand_to(jnp.cos(t), x), expand_to(jnp.sin(t), x)
        x_t = cos * x
        y = jnp.asarray(self.fn(x_t / sd, t)).astype(x.dtype)
        return cos * x_t - sin * sd * y


class TrigFlowModel(eqx.Module):
    r"""A denoiser seen as a TrigFlow network ``F(x_t / sigma_data, t)``.

    With :math:`s = \sigma_d\tan t` and :math:`\hat x_0 = D(x_t/\cos t, s)`:
    :math:`F = (\cos(t)\,x_t - \hat x_0)/(\sigma_d\sin t)`, the exact velocity divided by
    :math:`\sigma_d` when ``D`` is the exact denoiser. The inverse of :class:`TrigFlowDenoiser`.
    ``t`` must lie in the open interval :math:`(0, \pi/2)` (0/0 at :math:`t = 0`, an infinite VE
    state at :math:`t = \pi/2`). Build with :func:`to_trigflow`.
    """

    denoiser: Callable
    sigma_data: float | Array

    def __check_init__(self):
        _check_callable("to_trigflow", "denoiser", self.denoiser)
        check_positive("sigma_data", self.sigma_data)

    def __call__(self, x_scaled: Float[ArrayLike, "..."], t: ArrayLike) -> Float[Array, "..."]:
        x_scaled = as_float(x_scaled)
        t = as_float(t)
        sd = as_float(self.sigma_data)
        cos, sin = expand_to(jnp.cos(t), x_scaled), expand_to(jnp.sin(t), x_scaled)
        x_t = sd * x_scaled
        x0 = jnp.asarray(self.denoiser(x_t / cos, trigflow_sigma(t, sd))).astype(x_t.dtype)
        return (cos * x_t - x0) / (sd * sin)


def from_trigflow(F: Callable, sigma_data: ArrayLike = 0.5) -> TrigFlowDenoiser:
    """TrigFlow network ``F(x_t / sigma_data, t)`` -> denoiser; see :class:`TrigFlowDenoiser`."""
    return TrigFlowDenoiser(F, sigma_data)


def to_trigflow(denoiser: Callable, sigma_data: ArrayLike = 0.5) -> TrigFlowModel:
    """Denoiser -> TrigFlow network ``F(x_t / sigma_data, t)``; see :class:`TrigFlowModel`."""
    return TrigFlowModel(denoiser, sigma_data)


def trigflow_consistency(
    F: Callable, x_t: Float[ArrayLike, "..."], t: ArrayLike, sigma_data: ArrayLike = 0.5
) -> Float[Array, "..."]:
    r"""sCM's consistency function :math:`f(x_t, t) = \cos(t)\,x_t - \sin(t)\,\sigma_d F(x_t/\sigma_d, t)`.

    In TrigFlow coordinates (``x_t``, not the VE state); ``t`` scalar or per sample.
    """
    x_t = as_float(x_t)
    t = as_float(t)
    sd = as_float(sigma_data)
    y = jnp.asarray(F(x_t / sd, t)).astype(x_t.dtype)
    return expand_to(jnp.cos(t), x_t) * x_t - expand_to(jnp.sin(t), x_t) * sd * y


def scm_tangent(
    F: Callable,
    x_t: Float[ArrayLike, "..."],
    t: ArrayLike,
    sigma_data: ArrayLike,
    dxt_dt: Float[ArrayLike, "..."],
    *,
    warmup_ratio: ArrayLike = 1.0,
) -> Float[Array, "..."]:
    r"""The sCM tangent: the total derivative of :math:`f_{\theta^-}` along the probability-flow ODE.

    From "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models" (Lu & Song).
    With :math:`f = \cos(t)\,x_t - \sin(t)\,\sigma_d F(x_t/\sigma_d, t)` and
    :math:`v = \mathrm{d}x_t/\mathrm{d}t`,

    .. math::
        \frac{\mathrm{d}f}{\mathrm{d}t} = -\cos(t)\,(\sigma_d F - v)
            - r\,\sin(t)\,\Big(x_t + \sigma_d \frac{\mathrm{d}F}{\mathrm{d}t}\Big),
        \qquad \frac{\mathrm{d}F}{\mathrm{d}t} = \partial_x F\cdot\frac{v}{\sigma_d} + \partial_t F,

    with ``warmup_ratio`` :math:`r = 1` (the paper's tangent warmup ramps :math:`r` from 0 to 1;
    only :math:`r = 1` is the derivative). :math:`F` and :math:`\mathrm{d}F/\mathrm{d}t` come from
    one ``jax.jvp`` of ``F`` at :math:`(x_t/\sigma_d, t)` with tangents :math:`(v/\sigma_d, 1)`.
    The paper's training loop multiplies the tangent by :math:`\cos t` (its tangents
    :math:`\cos t\sin t\,(v, \sigma_d)` in the jvp); that factor belongs to the loss's weighting,
    not to the derivative returned here.

    The result is wrapped in ``jax.lax.stop_gradient`` (:math:`\theta^-`): it is a regression
    target.

    Args:
        F: the TrigFlow network ``F(x_t / sigma_data, t)``.
        x_t: the TrigFlow state, with leading batch axes matching ``t``'s.
        t: TrigFlow time, scalar or per sample.
        sigma_data: :math:`\sigma_d`.
        dxt_dt: the ODE velocity :math:`v` at ``(x_t, t)``: :math:`\cos(t)z - \sin(t)x_0` for
            consistency training, :math:`\sigma_d F_{\text{teacher}}(x_t/\sigma_d, t)` for
            distillation.
        warmup_ratio: the tangent-warmup factor :math:`r`.
    """
    x_t = as_float(x_t)
    t = as_float(t)
    sd = as_float(sigma_data)
    check_positive("sigma_data", sigma_data)
    v = jnp.asarray(dxt_dt).astype(x_t.dtype)
    if v.shape != x_t.shape:
        raise ValueError(f"dxt_dt must have x_t's shape {x_t.shape}; got {v.shape}.")

    def F_of(x_scaled, time):
        return jnp.asarray(F(x_scaled, time)).astype(x_t.dtype)

    y, dy = jax.jvp(F_of, (x_t / sd, t), (v / sd, jnp.ones_like(t)))
    cos, sin = expand_to(jnp.cos(t), x_t), expand_to(jnp.sin(t), x_t)
    tangent = -cos * (sd * y - v) - as_float(warmup_ratio) * sin * (x_t + sd * dy)
    return jax.lax.stop_gradient(tangent)


def tangent_normalization(
    g: Float[ArrayLike, "..."], c: ArrayLike = 0.1, *, batch_ndim: int = 1
) -> Float[Array, "..."]:
    r"""sCM's tangent normalisation :math:`g/(\lVert g\rVert + c)`, per sample.

    The norm is taken over all axes after the first ``batch_ndim`` (``batch_ndim=0``: one sample,
    the norm of all of ``g``). Bounds the tangent's norm by 1, which is what keeps the
    continuous-time objective's gradient from exploding ("Simplifying, Stabilizing and Scaling
    Continuous-Time Consistency Models").
    """
    g = as_float(g)
    batch_ndim = check_int("batch_ndim", batch_ndim, minimum=0, maximum=g.ndim)
    check_positive("c", c)
    axes = tuple(range(batch_ndim, g.ndim))
    # safe_sqrt: a zero tangent has a finite gradient.
    norm = safe_sqrt(jnp.sum(g * g, axis=axes, keepdims=True))
    return g / (norm + as_float(c))
