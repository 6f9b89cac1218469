r"""Clipping the denoised estimate: Imagen's dynamic thresholding and a fixed clip range.

Both act on :math:`\hat x_0` only, so they are denoiser wrappers for every solver that uses the
model only through :math:`\hat x_0` (DPM-Solver, DPM-Solver++, UniPC, DEIS: their noise
prediction is recomputed from the clipped :math:`\hat x_0`, as diffusers does). DDIM in diffusers
clips :math:`\hat x_0` but keeps the *unclipped* noise prediction; it takes the same rules as a
``denoised_transform`` of :class:`~jaxsolve.diffusion.DDIM` instead.

* :class:`DynamicThresholdRule` — "Photorealistic Text-to-Image Diffusion Models with Deep
  Language Understanding" (Imagen): with :math:`q` the ``ratio``-quantile of
  :math:`|\hat x_0|` over one sample (linear interpolation between order statistics, as
  ``torch.quantile`` and ``jnp.quantile``), :math:`r = \min(\max(q, 1), \text{max\_value})` and
  :math:`\hat x_0 \leftarrow \operatorname{clip}(\hat x_0, -r, r)/r`. A sample inside
  :math:`[-1, 1]` is unchanged (:math:`r = 1`). (A ``max_value`` below 1 fixes
  :math:`r = \text{max\_value}`, as diffusers' ``torch.clamp(q, min=1, max=max_value)`` does.)
* :class:`ClipRule` — :math:`\hat x_0 \leftarrow \operatorname{clip}(\hat x_0, -c, c)`
  (diffusers' ``clip_sample`` with ``clip_sample_range = c``).

The quantile is per sample: over every axis after the first ``batch_ndim`` (diffusers' and the
driver's convention, ``batch_ndim = 1``), so a sample does not change with the batch size.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, check_int, check_positive, expand_to, is_concrete


class DynamicThresholdRule(eqx.Module):
    r"""Imagen's dynamic thresholding of an :math:`\hat x_0` array (see the module)."""

    ratio: Float[Array, ""]
    max_value: Float[Array, ""]
    batch_ndim: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_int("batch_ndim", self.batch_ndim, minimum=0)
        check_positive("max_value", self.max_value, allow_inf=True)  # inf: no clipping
        if is_concrete(self.ratio):
            ratio = float(np.asarray(self.ratio))
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"ratio must lie in [0, 1]; got {ratio}.")

    def __call__(self, x0: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        x0 = jnp.asarray(x0)
        if x0.ndim <= self.batch_ndim:
            raise ValueError(
                f"dynamic thresholding: x0 of shape {x0.shape} has no axis beyond its "
                f"batch_ndim={self.batch_ndim} batch axes to take the quantile over."
            )
        # The quantile in at least float32 (half precision would move the order statistics).
        work = x0.astype(jnp.promote_types(x0.dtype, jnp.float32))
        flat = jnp.abs(work).reshape((*work.shape[: self.batch_ndim], -1))
        # Traced options (a sweep) are checked as they run; concrete ones were when built.
        ratio = _checked(self.ratio, lambda v: (v >= 0) & (v <= 1), "ratio must lie in [0, 1].")
        max_value = _checked(self.max_value, lambda v: v > 0, "max_value must be positive.")
        q = jnp.quantile(flat, ratio.astype(work.dtype), axis=-1, method="linear")
        r = jnp.minimum(jnp.maximum(q, 1.0), max_value.astype(work.dtype))
        r = expand_to(r, work)
        return (jnp.clip(work, -r, r) / r).astype(x0.dtype)


class ClipRule(eqx.Module):
    r""":math:`\hat x_0 \leftarrow \operatorname{clip}(\hat x_0, -c, c)` with ``c = clip_range``."""

    clip_range: Float[Array, ""]

    def __check_init__(self):
        check_positive("clip_range", self.clip_range, allow_inf=True)  # inf: no clipping

    def __call__(self, x0: Float[ArrayLike, "..."]) -> Float[Array, "..."]:
        x0 = jnp.asarray(x0)
        # A traced non-positive range (a sweep) would clip everything to one value.
        c = _checked(self.clip_range, lambda v: v > 0, "clip_range must be positive.")
        c = c.astype(x0.dtype)
        return jnp.clip(x0, -c, c)


def _checked(value, ok, message):
    """``value`` itself when concrete (checked when the rule was built), else wrapped so that the
    compiled program raises ``message`` unless ``ok(value)`` holds (a NaN fails it)."""
    if is_concrete(value):
        return value
    return eqx.error_if(value, ~jnp.all(ok(value)), message)


class TransformedDenoiser(eqx.Module):
    """``denoiser`` followed by ``rule`` on its output: ``rule(denoiser(x, sigma))``."""

    denoiser: Callable
    rule: Callable

    def __call__(self, x: Float[ArrayLike, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        return self.rule(self.denoiser(x, sigma))


def dynamic_thresholding(
    denoiser: Callable,
    ratio: float | Float[ArrayLike, ""] = 0.995,
    max_value: float | Float[ArrayLike, ""] = float("inf"),
    batch_ndim: int = 1,
) -> TransformedDenoiser:
    r"""``denoiser`` with Imagen's dynamic thresholding of its output (see the module).

    Args:
        denoiser: ``denoiser(x, sigma) -> x0_hat``.
        ratio: the quantile of :math:`|\hat x_0|` (diffusers' ``dynamic_thresholding_ratio``);
            may be traced.
        max_value: the largest threshold (diffusers' ``sample_max_value``, whose default 1 makes
            the rule a clip to :math:`[-1, 1]`); the default ``inf`` is Imagen's
            :math:`\max(q, 1)`; may be traced.
        batch_ndim: the leading axes that index samples; the quantile is over the rest.
    """
    return TransformedDenoiser(
        denoiser, DynamicThresholdRule(as_float(ratio), as_float(max_value), batch_ndim)
    )


def clip_denoised(
    denoiser: Callable, clip_range: float | Float[ArrayLike, ""] = 1.0
) -> TransformedDenoiser:
    """``denoiser`` with its output clipped to ``[-clip_range, clip_range]`` (diffusers'
    ``clip_sample``); ``clip_range`` may be traced."""
    return TransformedDenoiser(denoiser, ClipRule(as_float(clip_range)))
