r"""Model-side tricks as denoiser wrappers: classifier-free guidance and thresholding.

Both map a denoiser to a denoiser, so every sampler gets them for free. Their parameters are array
fields: a guidance scale, a rescale weight and a guidance interval can be traced and swept with
``jax.vmap``. CFG++ changes the step, not the denoiser: :func:`cfg_pair` hands both branches to the
:class:`~jaxsolve.diffusion.CFGPlusPlus` solver.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, check_choice, check_int, check_positive, expand_to, is_concrete

#: Where guidance rescale measures and scales the prediction: at fixed ``(x, sigma)`` each is
#: ``a x + b D`` (up to a factor that the rescale does not see), ``(a, b)`` below.
RESCALE_SPACES = ("v", "eps", "x0")


def _affine_prediction(space, sigma):
    r"""``(a, b)`` with the ``space`` prediction ``= a x + b D`` up to a positive factor (VE scale,
    :math:`x = D + \sigma\epsilon`): :math:`\sigma\hat\epsilon = x - D`;
    :math:`\sigma\sqrt{1+\sigma^2}\,\hat v = x - (1+\sigma^2) D`; :math:`\hat x_0 = D`."""
    if space == "eps":
        return 1.0, -1.0
    if space == "v":
        return 1.0, -(1.0 + sigma**2)
    return 0.0, 1.0


def _guide(guidance, x, sigma, d_c, d_u):
    """The guided denoised estimate of ``guidance`` (a CFG module) from its two branches."""
    w = expand_to(guidance.scale, d_c).astype(d_c.dtype)
    guided = d_u + w * (d_c - d_u)
    if guidance.rescale is not None:
        batch_ndim = min(guidance.batch_ndim, d_c.ndim)
        s = expand_to(jnp.asarray(sigma, d_c.dtype), d_c)
        a, b = _affine_prediction(guidance.rescale_space, s)
        p_c = a * x + b * d_c
        p_w = a * x + b * guided
        axes = tuple(range(batch_ndim, d_c.ndim))
        std_c = jnp.std(p_c, axis=axes, keepdims=True)
        std_w = jnp.std(p_w, axis=axes, keepdims=True)
        phi = expand_to(guidance.rescale, d_c).astype(d_c.dtype)
        factor = phi * (std_c / std_w) + (1 - phi)
        guided = (factor * p_w - a * x) / b
    if guidance.interval is not None:
        lo, hi = guidance.interval
        inside = (lo < jnp.asarray(sigma)) & (jnp.asarray(sigma) <= hi)
        guided = jnp.where(expand_to(inside, d_c), guided, d_c)
    return guided


def _check_guidance(guidance):
    check_choice("rescale_space", guidance.rescale_space, RESCALE_SPACES)
    check_int("batch_ndim", guidance.batch_ndim, minimum=0)
    if guidance.rescale is not None:
        check_positive("rescale", guidance.rescale, allow_zero=True)
        if is_concrete(guidance.rescale) and np.any(np.asarray(guidance.rescale) > 1):
            raise ValueError(f"rescale must lie in [0, 1]; got {np.asarray(guidance.rescale)}.")
    if guidance.interval is not None:
        lo, hi = guidance.interval
        check_positive("interval[0]", lo, allow_zero=True)
        if is_concrete(lo) and is_concrete(hi) and np.any(np.asarray(lo) >= np.asarray(hi)):
            raise ValueError(
                f"interval must be (sigma_lo, sigma_hi) with sigma_lo < sigma_hi; got "
                f"({np.asarray(lo)}, {np.asarray(hi)})."
            )


def _rescale(value):
    """The rescale weight as an array; a traced one (built under ``jit`` / ``vmap``) is checked
    as it runs, as a concrete one is when the module is built."""
    if value is None:
        return None
    value = as_float(value)
    if is_concrete(value):
        return value
    return eqx.error_if(value, ~((value >= 0) & (value <= 1)), "rescale must lie in [0, 1].")


def _interval(interval):
    """The guidance interval as arrays; traced ends are checked as they run (an empty or
    reversed interval would silently never guide)."""
    if interval is None:
        return None
    lo, hi = interval
    lo, hi = as_float(lo), as_float(hi)
    if is_concrete((lo, hi)):
        return lo, hi
    bad = ~((lo >= 0) & (lo < hi))
    message = "interval must be (sigma_lo, sigma_hi) with 0 <= sigma_lo < sigma_hi."
    return eqx.error_if(lo, bad, message), eqx.error_if(hi, bad, message)


class AbstractGuidance(eqx.Module):
    """Classifier-free guidance from the two branches ``branches(x, sigma) -> (D_c, D_u)``: the
    scale and the options (see :class:`ClassifierFreeGuidance`) live here, the way the branches
    are evaluated in the subclasses."""

    rescale: Float[Array, "..."] | None = eqx.field(default=None, kw_only=True, converter=_rescale)
    interval: tuple[Float[Array, "..."], Float[Array, "..."]] | None = eqx.field(
        default=None, kw_only=True, converter=_interval
    )
    rescale_space: str = eqx.field(default="v", kw_only=True, static=True)
    batch_ndim: int = eqx.field(default=1, kw_only=True, static=True)

    def __check_init__(self):
        _check_guidance(self)

    @abc.abstractmethod
    def branches(self, x, sigma) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """The conditional and unconditional denoised estimates at ``(x, sigma)``."""

    def __call__(self, x: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        d_c, d_u = self.branches(x, sigma)
        return _guide(self, x, sigma, jnp.asarray(d_c), jnp.asarray(d_u))


class ClassifierFreeGuidance(AbstractGuidance):
    r"""Classifier-free guidance ("Classifier-Free Diffusion Guidance", Ho & Salimans).

    :math:`D_w(x, s) = D_u(x, s) + w\,(D_c(x, s) - D_u(x, s))`. Because :math:`\hat x_0` and
    :math:`\hat\epsilon` are affine in each other at fixed :math:`(x, s)`, guiding the denoised
    estimate equals guiding the noise prediction. ``scale = 1`` is the conditional model, ``0`` the
    unconditional one. ``scale`` may be a scalar or carry the leading (batch) axes of ``x``.

    **Guidance rescale** ("Common Diffusion Noise Schedules and Sample Steps are Flawed", Lin et
    al., §3.4), ``rescale = phi``: with :math:`P` a prediction of the model,
    :math:`P_r = P_w\,\operatorname{std}(P_c)/\operatorname{std}(P_w)` and
    :math:`P \leftarrow \phi P_r + (1-\phi) P_w`, the std taken per sample (over the axes of ``x``
    after its ``batch_ndim`` leading ones). Unlike guidance itself this is not invariant under a
    change of parameterisation (the std ignores the offset :math:`a x` of
    :math:`P = a x + b D`, the scaling does not), so the space matters. ``rescale_space="v"``
    (default) is the paper's: its models predict :math:`v` (the parameterisation that stays
    well-posed at zero terminal SNR, where the paper's over-exposure appears). In VE scale
    :math:`\sigma\sqrt{1+\sigma^2}\,v = x - (1+\sigma^2) D`; the factor is common to a sample
    and cancels in the ratio of stds, so the rescale acts on :math:`x - (1+\sigma^2)D` and maps
    back.
    ``"eps"`` (:math:`x - D`) is diffusers' ``guidance_rescale`` with an :math:`\epsilon`-model,
    ``"x0"`` rescales :math:`D` itself.

    **Guidance interval** ("Applying Guidance in a Limited Interval Improves Sample and
    Distribution Quality in Diffusion Models", Kynkäänniemi et al.), ``interval=(lo, hi)``: the
    guided estimate for :math:`\sigma \in (lo, hi]`, the conditional one outside. Both ends may be
    traced (swept with ``vmap``), so both branches are evaluated at every level.
    """

    cond: Callable
    uncond: Callable
    scale: Float[Array, "..."] = eqx.field(converter=as_float)

    def branches(self, x, sigma):
        return self.cond(x, sigma), self.uncond(x, sigma)


def cfg(
    cond: Callable,
    uncond: Callable,
    scale: ArrayLike,
    *,
    rescale: ArrayLike | None = None,
    interval: tuple[ArrayLike, ArrayLike] | None = None,
    rescale_space: str = "v",
    batch_ndim: int = 1,
) -> ClassifierFreeGuidance:
    """Classifier-free guidance of two denoisers (see :class:`ClassifierFreeGuidance`).

    Args:
        cond: the conditional denoiser ``cond(x, sigma) -> x0_hat``.
        uncond: the unconditional one.
        scale: the guidance weight ``w`` (array; may be traced).
        rescale: guidance rescale ``phi`` in ``[0, 1]`` (None: no rescale).
        interval: ``(sigma_lo, sigma_hi)``: guide only for ``sigma_lo < sigma <= sigma_hi``.
        rescale_space: ``"v"`` (the paper's), ``"eps"`` or ``"x0"``: the prediction rescaled.
        batch_ndim: leading axes of ``x`` that index samples (the rescale's std is per sample;
            0 for a denoiser that sees one sample, e.g. under :class:`TimeShift`'s ``vmap``).
    """
    return ClassifierFreeGuidance(
        cond,
        uncond,
        scale,
        rescale=rescale,
        interval=interval,
        rescale_space=rescale_space,
        batch_ndim=batch_ndim,
    )


def _concatenate(a, b):
    return jax.tree_util.tree_map(lambda u, v: jnp.concatenate([u, v], axis=0), a, b)


class BatchedClassifierFreeGuidance(AbstractGuidance):
    """Classifier-free guidance with both branches in one model call, as pipelines run it.

    ``model(x, sigma, c)`` is evaluated once on ``x`` stacked twice along its first (batch) axis,
    with the conditioning ``concat([cond, uncond_cond])`` (leaf by leaf, along axis 0) and
    ``sigma`` stacked likewise when it is per sample; the halves are the conditional and
    unconditional estimates. The model must act sample by sample. ``scale``, ``rescale``,
    ``interval``, ``rescale_space`` and ``batch_ndim`` are :class:`ClassifierFreeGuidance`'s.
    """

    model: Callable
    cond: object
    uncond_cond: object
    scale: Float[Array, "..."] = eqx.field(converter=as_float)

    def __check_init__(self):
        if self.batch_ndim < 1:
            raise ValueError(
                "batched guidance stacks the branches on the batch axis: batch_ndim >= 1."
            )

    def branches(self, x, sigma):
        if jnp.ndim(x) < 1:
            raise ValueError("batched guidance needs a batch axis on x (stacked with itself).")
        sigma2 = _concatenate(sigma, sigma) if jnp.ndim(sigma) >= 1 else sigma
        both = self.model(_concatenate(x, x), sigma2, _concatenate(self.cond, self.uncond_cond))
        b = jnp.shape(x)[0]
        return both[:b], both[b:]


def cfg_batched(
    model: Callable,
    cond,
    uncond_cond,
    scale: ArrayLike,
    **options,
) -> BatchedClassifierFreeGuidance:
    """Classifier-free guidance of ``model(x, sigma, c)`` with conditionings ``cond`` and
    ``uncond_cond`` in one model call (see :class:`BatchedClassifierFreeGuidance`; the keyword
    ``options`` are :func:`cfg`'s). Equals ``cfg(lambda x, s: model(x, s, cond), lambda x, s:
    model(x, s, uncond_cond), scale)`` for a model that acts sample by sample."""
    return BatchedClassifierFreeGuidance(model, cond, uncond_cond, scale, **options)


class GuidancePair(eqx.Module):
    """Both branches of classifier-free guidance, stacked: ``pair(x, sigma)`` is
    ``stack([cond(x, sigma), uncond(x, sigma)])``, shape ``(2, *x.shape)``. The denoiser of
    :class:`~jaxsolve.diffusion.CFGPlusPlus`, which guides and renoises with the branches apart."""

    cond: Callable
    uncond: Callable

    def __call__(self, x: Float[Array, "..."], sigma: ArrayLike) -> Float[Array, "2 ..."]:
        return jnp.stack([jnp.asarray(self.cond(x, sigma)), jnp.asarray(self.uncond(x, sigma))])


def cfg_pair(cond: Callable, uncond: Callable) -> GuidancePair:
    """The stacked conditional and unconditional denoisers (see :class:`GuidancePair`)."""
    return GuidancePair(cond, uncond)
