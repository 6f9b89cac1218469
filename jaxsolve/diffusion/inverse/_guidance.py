r"""Posterior sampling by guiding the denoiser: likelihood guidance, DPS, PiGDM and DDNM.

Every method here maps a denoiser to a denoiser, so every solver of :func:`~jaxsolve.diffusion.sample`
samples with it. They rest on one identity. The posterior of the noised state, :math:`p_s(x\mid y)
\propto p_s(x)\,p(y\mid x)`, has the score :math:`\nabla\log p_s(x) + \nabla_x\log p(y\mid x)`, and
Tweedie's formula for the posterior turns a score correction :math:`g` into a denoiser correction:

.. math:: D_y(x, s) = \mathbb E[x_0 \mid x, y] = D(x, s) + s^2\,\nabla_x \log p(y \mid x_s = x).

The methods differ in how they approximate :math:`p(y\mid x_s) = \int p(y\mid x_0)\,p(x_0\mid
x_s)\,\mathrm dx_0`:

* :class:`LikelihoodGuidance` / :class:`DPS` — :math:`p(x_0\mid x_s) \approx
  \delta(x_0 - D(x, s))`, so :math:`\nabla_x\log p(y\mid x_s) \approx J_D^\top \nabla\ell(D)` with
  :math:`J_D = \partial D/\partial x` (a vector-Jacobian product through the denoiser);
* :class:`PiGDM` — :math:`p(x_0\mid x_s) \approx \mathcal N(D, r_s^2 I)`, so :math:`y\mid x_s \sim
  \mathcal N(AD, r_s^2AA^\top + \sigma_y^2 I)`;
* :class:`DDNM` — the same Gaussian, conditioned directly: :math:`D + r_s^2A^\top(r_s^2AA^\top +
  \sigma_y^2I)^+(y - AD)`, with no Jacobian.

For a Gaussian prior :math:`\mathcal N(m, vI)` the Gaussian approximation is exact
(:math:`r_s^2 = vs^2/(v + s^2)`, :math:`J_D = v/(v+s^2)\,I`), so PiGDM and DDNM then give the exact
posterior denoiser and coincide; DPS does not (it ignores :math:`r_s^2`). Guidance scales and noise
levels are array fields: a ``jax.vmap`` over them compiles once.

The driver counts one model evaluation per call of a guided denoiser; a vector-Jacobian product
(DPS, PiGDM, likelihood guidance) costs about two more.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, check_positive, expand_to, is_concrete, safe_divide
from ._measurement import Measurement, check_measurement


class AbstractGuidance(eqx.Module):
    r"""A denoiser :math:`D(x, s) + \text{scale}\cdot s^2\,J_D^\top c(D(x, s), s)`, where the
    subclass gives the cotangent :math:`c = \nabla_{x_0}\log p(y\mid x_0)` (or its stand-in) at
    the denoised estimate. One denoiser evaluation and its vector-Jacobian product per call."""

    denoiser: eqx.AbstractVar[Callable]
    scale: eqx.AbstractVar[Float[Array, "..."]]

    @abc.abstractmethod
    def cotangent(self, x0_hat: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        """:math:`c`, shaped like ``x0_hat``: the gradient of the per-sample log-likelihood at the
        denoised estimate."""

    def __call__(self, x: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        x0_hat, pullback = jax.vjp(lambda z: jnp.asarray(self.denoiser(z, sigma)), x)
        (grad_x,) = pullback(
            jax.lax.stop_gradient(self.cotangent(x0_hat, sigma)).astype(x0_hat.dtype)
        )
        s2 = expand_to(as_float(sigma) ** 2, x0_hat).astype(x0_hat.dtype)
        w = expand_to(self.scale, x0_hat).astype(x0_hat.dtype)
        return x0_hat + w * s2 * grad_x


class LikelihoodGuidance(AbstractGuidance):
    r"""Guidance by any differentiable ``log_likelihood(x0_hat)`` (classifier guidance on the
    denoised estimate, a reward, a measurement likelihood).

    :math:`D_\text{guided}(x, s) = D + \text{scale}\cdot s^2\,\nabla_x\,\ell(D(x, s))`.
    ``log_likelihood`` receives the denoised batch (what the denoiser returned) and returns one value
    per sample; samples must not interact (the gradient of the sum is taken). ``scale`` may be traced
    or carry the leading batch axes.
    """

    denoiser: Callable
    log_likelihood: Callable
    scale: Float[Array, "..."]

    def __init__(self, denoiser: Callable, log_likelihood: Callable, scale: ArrayLike = 1.0):
        if not callable(log_likelihood):
            raise TypeError(
                f"log_likelihood must be callable; got {type(log_likelihood).__name__}."
            )
        self.denoiser = denoiser
        self.log_likelihood = log_likelihood
        self.scale = as_float(scale)

    def cotangent(self, x0_hat, sigma):
        return jax.grad(lambda z: jnp.sum(self.log_likelihood(z)))(x0_hat)


class DPS(AbstractGuidance):
    r"""Diffusion posterior sampling ("Diffusion Posterior Sampling for General Noisy Inverse
    Problems", Chung et al.).

    The likelihood of the denoised estimate guides the score:
    :math:`\nabla_x\log p(y\mid x_s) \approx \nabla_x\log\mathcal N(y;\,AD(x, s),\,\sigma_y^2 I)
    = J_D^\top A^\top (y - AD)/\sigma_y^2` (``normalized=False``, needs ``noise_std > 0``), or
    the paper's step, normalised by the residual, :math:`-\zeta\,\nabla_x\lVert y - AD\rVert^2 /
    \lVert y - AD\rVert = 2\zeta\,J_D^\top A^\top (y - AD)/\lVert y - AD\rVert`
    (``normalized=True``, the default; :math:`\zeta` = ``scale``).

    The paper subtracts :math:`\zeta_i\nabla\lVert y - A\hat x_0\rVert^2` from the *state* after
    each ancestral step of a 1000-step sampler; here it corrects the score, so the same ``scale``
    means the same guidance at every number of steps. DPS ignores the spread of :math:`x_0` given
    :math:`x_s` and is biased (overconfident) at large noise levels; with ``scale = 1`` and
    ``normalized=False`` it is the plain Tweedie-point approximation.
    """

    denoiser: Callable
    measurement: Measurement
    scale: Float[Array, "..."]
    normalized: bool = eqx.field(static=True)

    def __init__(
        self,
        denoiser: Callable,
        measurement: Measurement,
        scale: ArrayLike = 1.0,
        *,
        normalized: bool = True,
    ):
        check_measurement("DPS", measurement)
        if not normalized and is_concrete(measurement.noise_std):
            if float(np.asarray(measurement.noise_std)) == 0.0:
                raise ValueError(
                    "DPS(normalized=False) uses the Gaussian likelihood 1/noise_std^2, which needs "
                    "noise_std > 0; use normalized=True for a noiseless measurement."
                )
        self.denoiser = denoiser
        self.measurement = measurement
        self.scale = as_float(scale)
        self.normalized = bool(normalized)

    def cotangent(self, x0_hat, sigma):
        m = self.measurement
        r = m.residual(x0_hat)
        if self.normalized:
            norm = jnp.sqrt(m.event_sum(r * r))
            weight = 2.0 * safe_divide(1.0, norm, 0.0)
        else:
            weight = 1.0 / m.noise_std**2
        return m.operator.transpose(expand_to(weight, r) * r)


class PiGDM(AbstractGuidance):
    r"""Pseudoinverse-guided diffusion ("Pseudoinverse-Guided Diffusion Models for Inverse
    Problems", Song, Vahdat, Mardani, Kautz).

    :math:`p(x_0\mid x_s) \approx \mathcal N(D(x, s), r_s^2 I)` with
    :math:`r_s^2 = v s^2/(v + s^2)` (the posterior variance for data of variance
    :math:`v` = ``data_variance``, the paper's :math:`\sigma_t^2/(1+\sigma_t^2)` at :math:`v = 1`),
    so :math:`\nabla_x\log p(y\mid x_s) \approx J_D^\top A^\top(r_s^2AA^\top + \sigma_y^2I)^{+}
    (y - AD)`. The solve uses the operator's structure (``gram_solve``). Exact for a Gaussian
    prior :math:`\mathcal N(m, vI)`; ``scale = 1`` is the paper's unweighted guidance.
    """

    denoiser: Callable
    measurement: Measurement
    scale: Float[Array, "..."]
    data_variance: Float[Array, ""]

    def __init__(
        self,
        denoiser: Callable,
        measurement: Measurement,
        scale: ArrayLike = 1.0,
        data_variance: ArrayLike = 1.0,
    ):
        check_measurement("PiGDM", measurement)
        self.denoiser = denoiser
        self.measurement = measurement
        self.scale = as_float(scale)
        self.data_variance = _data_variance(data_variance)

    def cotangent(self, x0_hat, sigma):
        m = self.measurement
        r2 = _tweedie_variance(sigma, self.data_variance)
        solved = _gram_solve_per_sample(m, m.residual(x0_hat), r2)
        return m.operator.transpose(solved)


class DDNM(eqx.Module):
    r"""Range-null-space decomposition ("Zero-Shot Image Restoration Using Denoising Diffusion
    Null-Space Model", Wang, Yu, Zhang).

    Noiseless (``noise_std = 0``), the paper's rule: keep the denoised estimate's null-space part
    and take the range-space part from the measurement,
    :math:`D_y = D + A^{+}(y - AD) = A^{+}y + (I - A^{+}A)D`.

    Noisy (our choice): the same Gaussian conditioning PiGDM assumes, applied to the estimate
    without a Jacobian, :math:`D_y = D + r_s^2A^\top(r_s^2AA^\top + \sigma_y^2I)^{+}(y - AD)` with
    :math:`r_s^2 = vs^2/(v + s^2)` — per singular direction of :math:`A` (singular value
    :math:`\lambda`) the projection is damped by :math:`r_s^2\lambda^2/(r_s^2\lambda^2 +
    \sigma_y^2)`, the role DDNM+'s :math:`\lambda_t` plays in the paper's VP ancestral step. At
    ``noise_std = 0`` it is the noiseless rule for every :math:`s > 0`. One denoiser evaluation per
    call, no gradient.
    """

    denoiser: Callable
    measurement: Measurement
    data_variance: Float[Array, ""]

    def __init__(
        self, denoiser: Callable, measurement: Measurement, data_variance: ArrayLike = 1.0
    ):
        check_measurement("DDNM", measurement)
        self.denoiser = denoiser
        self.measurement = measurement
        self.data_variance = _data_variance(data_variance)

    def __call__(self, x: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        m = self.measurement
        x0_hat = jnp.asarray(self.denoiser(x, sigma))
        r2 = _tweedie_variance(sigma, self.data_variance)
        solved = _gram_solve_per_sample(m, m.residual(x0_hat), r2)
        return x0_hat + expand_to(r2, x0_hat).astype(x0_hat.dtype) * m.operator.transpose(solved)


def _data_variance(value):
    """:math:`v > 0` as an array: a concrete value is checked now, a traced one (a sweep) as it
    runs (:math:`v \\le 0` would give a negative or zero posterior variance :math:`r_s^2`)."""
    check_positive("data_variance", value)
    value = as_float(value)
    if is_concrete(value):
        return value
    return eqx.error_if(value, ~(value > 0), "data_variance must be positive.")


def _tweedie_variance(sigma, data_variance):
    """:math:`r_s^2 = vs^2/(v + s^2)`, the variance of :math:`x_0` given :math:`x_s` for data of
    variance :math:`v` per coordinate (isotropic Gaussian)."""
    s2 = as_float(sigma) ** 2
    return data_variance * s2 / (data_variance + s2)


def _gram_solve_per_sample(m: Measurement, residual, r2):
    r""":math:`(r^2AA^\top + \sigma_y^2I)^+\,\text{residual}` with ``r2`` a scalar or one value per
    sample (a per-sample noise level)."""
    if jnp.ndim(r2) == 0:
        return m.operator.gram_solve(residual, r2, m.noise_std**2)
    k = len(m.operator.out_shape)
    batch = residual.shape[: residual.ndim - k]
    r2 = jnp.broadcast_to(r2.reshape(r2.shape + (1,) * (len(batch) - r2.ndim)), batch)
    flat = residual.reshape((-1, *m.operator.out_shape))
    solve = jax.vmap(lambda r, a: m.operator.gram_solve(r, a, m.noise_std**2))
    return solve(flat, r2.reshape(-1)).reshape(residual.shape)


__all__ = ["DDNM", "DPS", "AbstractGuidance", "LikelihoodGuidance", "PiGDM"]
