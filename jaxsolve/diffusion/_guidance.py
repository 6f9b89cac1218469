r"""Model-side tricks as denoiser wrappers: classifier-free guidance and thresholding.

Both map a denoiser to a denoiser, so every sampler gets them for free. Their parameters are array
fields: a guidance scale can be traced and swept with ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, expand_to, is_concrete


class ClassifierFreeGuidance(eqx.Module):
    r"""Classifier-free guidance ("Classifier-Free Diffusion Guidance", Ho & Salimans).

    :math:`D_w(x, s) = D_u(x, s) + w\,(D_c(x, s) - D_u(x, s))`. Because :math:`\hat x_0` and
    :math:`\hat\epsilon` are affine in each other at fixed :math:`(x, s)`, guiding the denoised
    estimate equals guiding the noise prediction. ``scale = 1`` is the conditional model, ``0`` the
    unconditional one. ``scale`` may be a scalar or carry the leading (batch) axes of ``x``.
    """

    cond: Callable
    uncond: Callable
    scale: Float[Array, "..."]

    def __call__(self, x: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        d_c = jnp.asarray(self.cond(x, sigma))
        d_u = jnp.asarray(self.uncond(x, sigma))
        w = expand_to(self.scale, d_c).astype(d_c.dtype)
        return d_u + w * (d_c - d_u)


def cfg(cond: Callable, uncond: Callable, scale: ArrayLike) -> ClassifierFreeGuidance:
    """Classifier-free guidance of two denoisers with an array ``scale`` (see the class)."""
    return ClassifierFreeGuidance(cond, uncond, as_float(scale))


class DynamicThreshold(eqx.Module):
    r"""Dynamic thresholding of the denoised estimate (Imagen; DPM-Solver++ §5; diffusers).

    "Photorealistic Text-to-Image Diffusion Models with Deep Language Understanding": with
    :math:`q` the ``percentile`` quantile of :math:`|\hat x_0|` over one sample,
    :math:`r = \operatorname{clip}(q, 1, \text{max\_value})` and
    :math:`\hat x_0 \leftarrow \operatorname{clip}(\hat x_0, -r, r)/r`.
    With the default ``max_value = inf`` this is Imagen's / DPM-Solver++'s ``max(q, 1)``; a finite
    ``max_value`` is diffusers' ``sample_max_value``. Inside :math:`[-1, 1]` it is the identity.

    The quantile is taken per sample: over all axes of ``x`` beyond those of ``sigma`` (a single
    sample under the single-sample convention; per batch entry when ``sigma`` has shape ``(B,)``).
    """

    denoiser: Callable
    percentile: Float[Array, ""]
    max_value: Float[Array, ""]

    def __check_init__(self):
        if is_concrete(self.percentile):
            p = float(np.asarray(self.percentile))
            if not 0.0 < p <= 1.0:
                raise ValueError(f"percentile must lie in (0, 1]; got {p}.")
        if is_concrete(self.max_value) and not float(np.asarray(self.max_value)) >= 1.0:
            raise ValueError(f"max_value must be >= 1; got {float(np.asarray(self.max_value))}.")

    def __call__(self, x: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        x0 = jnp.asarray(self.denoiser(x, sigma))
        batch_ndim = jnp.ndim(sigma)
        flat = jnp.abs(x0).reshape((*x0.shape[:batch_ndim], -1))
        q = jnp.quantile(flat, self.percentile, axis=-1)
        r = expand_to(jnp.clip(q, 1.0, self.max_value), x0).astype(x0.dtype)
        return jnp.clip(x0, -r, r) / r


def dynamic_threshold(
    denoiser: Callable, percentile: float = 0.995, max_value: float = float("inf")
) -> DynamicThreshold:
    """Wrap ``denoiser`` with dynamic thresholding (see :class:`DynamicThreshold`)."""
    return DynamicThreshold(denoiser, as_float(percentile), as_float(max_value))
