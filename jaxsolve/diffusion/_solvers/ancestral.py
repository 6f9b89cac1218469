r"""Ancestral sampling: DDIM with :math:`\eta`, identical to k-diffusion's Euler-ancestral.

DDIM ("Denoising Diffusion Implicit Models") steps from :math:`\sigma` to :math:`\sigma_n` by
re-noising the denoised estimate. In VE form, with :math:`\hat\epsilon = (x - D)/\sigma`,

.. math::
    \sigma_{\uparrow} = \min\Big(\sigma_n,\ \eta\,\frac{\sigma_n}{\sigma}\sqrt{\sigma^2 - \sigma_n^2}\Big),
    \qquad \sigma_{\downarrow} = \sqrt{\sigma_n^2 - \sigma_{\uparrow}^2},
    \qquad x_n = D + \sigma_{\downarrow}\hat\epsilon + \sigma_{\uparrow} z .

Dividing DDIM's VP update :math:`\sqrt{\bar\alpha_{n}}\hat x_0 + \sqrt{1-\bar\alpha_n-c^2}\hat\epsilon + c z`
(with :math:`c^2 = \eta^2\frac{1-\bar\alpha_n}{1-\bar\alpha}(1-\bar\alpha/\bar\alpha_n)`) by
:math:`\sqrt{\bar\alpha_n}` gives exactly this, so :class:`DDIM` and :class:`EulerAncestral` are one
method: the Euler step to :math:`\sigma_\downarrow` plus fresh noise of level :math:`\sigma_\uparrow`
(k-diffusion's ``get_ancestral_step``). ``eta = 0`` is deterministic DDIM = :class:`Euler`.

**Clipping the data estimate.** diffusers' ``DDIMScheduler`` (``clip_sample``, ``thresholding``)
clips :math:`\hat x_0` but keeps the noise prediction of the *unclipped* one:
:math:`x_n = T(D) + \sigma_\downarrow\hat\epsilon + \sigma_\uparrow z` with
:math:`\hat\epsilon = (x - D)/\sigma` and :math:`T` the clipping rule. That is not a denoiser
wrapper (which would clip both), so :class:`DDIM` takes :math:`T` as ``denoised_transform``
(e.g. :class:`~jaxsolve.diffusion._thresholding.ClipRule`,
:class:`~jaxsolve.diffusion._thresholding.DynamicThresholdRule`).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_positive, is_concrete
from ._base import AbstractSolver


def check_traced_non_negative(name, value):
    """A traced hyper-parameter (swept with ``vmap``) that must be >= 0, checked as it runs
    (concrete ones are checked when the solver is built)."""
    if is_concrete(value):
        return value
    return eqx.error_if(value, ~(value >= 0), f"{name} must be non-negative.")


def check_traced(name, value, ok, expected):
    """A traced hyper-parameter (swept with ``vmap``) checked as it runs: ``ok(value)`` must hold
    everywhere (a NaN fails it); ``expected`` completes the message ``"{name} must ..."``.
    Concrete values are checked when the solver is built and pass unchanged."""
    if is_concrete(value):
        return value
    value = jnp.asarray(value)
    return eqx.error_if(value, ~jnp.all(ok(value)), f"{name} must {expected}.")


def ancestral_levels(sigma, sigma_next, eta):
    """(sigma_down, sigma_up) of an ancestral step."""
    up = jnp.minimum(
        sigma_next, eta * sigma_next / sigma * jnp.sqrt(jnp.maximum(sigma**2 - sigma_next**2, 0.0))
    )
    down = jnp.sqrt(jnp.maximum(sigma_next**2 - up**2, 0.0))
    return down, up


class EulerAncestral(AbstractSolver):
    """Euler step to :math:`\\sigma_\\downarrow` plus noise :math:`\\sigma_\\uparrow z` (see the module).

    ``eta`` scales the injected noise (1 = ancestral sampling, 0 = deterministic); ``s_noise``
    scales the drawn noise itself. Both may be traced (swept with ``vmap``).
    """

    eta: Float[Array, ""] | float = 1.0
    s_noise: Float[Array, ""] | float = 1.0

    def __check_init__(self):
        # A negative eta enters only through |eta| below and would silently act as -eta.
        check_positive(f"{type(self).__name__} eta", self.eta, allow_zero=True)
        check_positive(f"{type(self).__name__} s_noise", self.s_noise, allow_zero=True)

    @property
    def stochastic(self) -> bool:
        # eta = 0 (as a concrete number) is deterministic and needs no key.
        return not (is_concrete(self.eta) and float(self.eta) == 0.0)

    def step(self, ctx, x, state):
        denoised = ctx.denoise(x, ctx.sigma)
        eta = check_traced_non_negative(f"{type(self).__name__} eta", self.eta)
        down, up = ancestral_levels(ctx.sigma, ctx.sigma_next, eta)
        x_next = self._data_estimate(denoised) + down * (x - denoised) / ctx.sigma
        if not self.stochastic:
            return x_next, state
        return x_next + (self.s_noise * up) * ctx.noise(0), state

    def _data_estimate(self, denoised):
        return denoised


class DDIM(EulerAncestral):
    r"""DDIM with stochasticity ``eta`` (0 by default: the deterministic DDIM sampler).

    ``denoised_transform`` (optional) maps :math:`\hat x_0` before it enters the update, the noise
    prediction staying that of the untransformed one (diffusers' ``clip_sample`` /
    ``thresholding``; see the module). The final step to :math:`\sigma = 0` returns the
    transformed :math:`\hat x_0`.
    """

    eta: Float[Array, ""] | float = 0.0
    denoised_transform: Callable | None = None

    def _data_estimate(self, denoised):
        if self.denoised_transform is None:
            return denoised
        return jnp.asarray(self.denoised_transform(denoised)).astype(denoised.dtype)

    def final_step(self, ctx, x, state):
        return self._data_estimate(ctx.denoise(x, ctx.sigma)), state
