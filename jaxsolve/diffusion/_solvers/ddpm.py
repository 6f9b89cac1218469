r"""DDPM ancestral sampling: the posterior :math:`q(x_{t'} \mid x_t, \hat x_0)` (diffusers' ``DDPMScheduler``).

From "Denoising Diffusion Probabilistic Models". Between two levels of a discrete VP table,
:math:`\bar\alpha` at the current and :math:`\bar\alpha'` at the next timestep, the forward process
has :math:`\beta = 1 - \bar\alpha/\bar\alpha'`, and the posterior given the model's
:math:`\hat x_0` has mean :math:`\frac{\sqrt{\bar\alpha'}\beta}{1-\bar\alpha}\hat x_0 +
\frac{\sqrt{1-\beta}\,(1-\bar\alpha')}{1-\bar\alpha}x_t` and variance
:math:`\tilde\beta = \frac{1-\bar\alpha'}{1-\bar\alpha}\beta`. In VE scale
(:math:`x = x_t/\sqrt{\bar\alpha}`, :math:`\sigma^2 = (1-\bar\alpha)/\bar\alpha`) the mean is

.. math::

    x_n = \frac{\sigma_n^2}{\sigma^2}\,x + \Bigl(1 - \frac{\sigma_n^2}{\sigma^2}\Bigr)\hat x_0
          + s\,z,\qquad z \sim \mathcal N(0, I),

with the standard deviation :math:`s` of ``variance_type``:

* ``"fixed_small"`` (and ``"fixed_small_log"``, the same variance through its logarithm):
  :math:`s^2 = \tilde\beta/\bar\alpha' = \sigma_n^2(1 - \sigma_n^2/\sigma^2)` — the step is then
  exactly :class:`~jaxsolve.diffusion.EulerAncestral` and DDIM with :math:`\eta = 1`;
* ``"fixed_large"``: :math:`s^2 = \beta/\bar\alpha'
  = (\sigma^2 - \sigma_n^2)(1+\sigma_n^2)/(1+\sigma^2)` — the forward step's variance, which uses
  the VP scale :math:`\bar\alpha = 1/(1+\sigma^2)` of a DDPM table;
* ``"fixed_large_log"``: the same variance stored as a logarithm. (diffusers 0.42's ``step``
  takes the square root of that logarithm, a NaN; this is the variance the name means.)

``"learned"`` and ``"learned_range"`` interpolate with a variance the *model* predicts, which the
denoiser contract (``denoiser(x, sigma) -> x0_hat``) does not carry: they raise.
``clip_sample_range`` clamps :math:`\hat x_0` to ``[-r, r]`` first (diffusers' ``clip_sample``, on
by default there with ``r = 1``). The last step, into :math:`\sigma = 0`
(:math:`\bar\alpha' = 1`), is the posterior mean :math:`\hat x_0` and draws no noise, as diffusers'
step at timestep 0. (From a last timestep above 0 — ``steps_offset`` or ``"trailing"``
spacing — diffusers' ``"fixed_large"`` adds :math:`\sqrt{1-\bar\alpha}\,z` on that
step, noise in the returned sample; that is not reproduced.)
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..._core import check_positive
from ._base import AbstractSolver

_VARIANCE_TYPES = ("fixed_small", "fixed_small_log", "fixed_large", "fixed_large_log")


class DDPM(AbstractSolver):
    """DDPM's ancestral step (the posterior given :math:`\\hat x_0`), diffusers' variance types.

    Args:
        variance_type: ``"fixed_small"`` (the default), ``"fixed_small_log"``, ``"fixed_large"``
            or ``"fixed_large_log"`` (see the module).
        clip_sample_range: clamp the denoiser's :math:`\\hat x_0` to ``[-r, r]``; ``None`` (the
            default) does not clamp.
    """

    variance_type: str = eqx.field(static=True, default="fixed_small")
    clip_sample_range: float | None = eqx.field(static=True, default=None)
    stochastic: ClassVar[bool] = True

    def __check_init__(self):
        if self.variance_type in ("learned", "learned_range"):
            raise ValueError(
                f"variance_type={self.variance_type!r} interpolates with a variance the model "
                "predicts, which denoiser(x, sigma) -> x0_hat does not return; use one of "
                f"{_VARIANCE_TYPES}."
            )
        if self.variance_type not in _VARIANCE_TYPES:
            raise ValueError(
                f"variance_type must be one of {_VARIANCE_TYPES}; got {self.variance_type!r}."
            )
        if self.clip_sample_range is not None:
            check_positive("clip_sample_range", self.clip_sample_range, allow_inf=True)

    def _denoised(self, ctx, x, sigma):
        d = ctx.denoise(x, sigma)
        if self.clip_sample_range is not None:
            d = jnp.clip(d, -self.clip_sample_range, self.clip_sample_range)
        return d

    def step(self, ctx, x, state):
        sigma, sigma_next = ctx.sigma, ctx.sigma_next
        d = self._denoised(ctx, x, sigma)
        ratio = (sigma_next / sigma) ** 2
        mean = ratio * x + (1.0 - ratio) * d
        if self.variance_type in ("fixed_small", "fixed_small_log"):
            variance = sigma_next**2 * (1.0 - ratio)
        else:
            variance = (sigma**2 - sigma_next**2) * (1.0 + sigma_next**2) / (1.0 + sigma**2)
        return mean + jnp.sqrt(variance) * ctx.noise(0), state

    def final_step(self, ctx, x, state):
        return self._denoised(ctx, x, ctx.sigma), state
