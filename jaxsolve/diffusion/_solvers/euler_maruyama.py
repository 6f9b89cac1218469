r"""Euler–Maruyama for the reverse-time VE SDE ("Score-Based Generative Modeling through
Stochastic Differential Equations").

The reverse-time SDE
:math:`\mathrm{d}x = -\mathrm{d}(\sigma^2)\,\nabla\log p_\sigma(x) + \sqrt{-\mathrm{d}(\sigma^2)}\,\mathrm{d}\bar w`,
one Euler–Maruyama step per interval:

.. math:: x_n = x + (\sigma^2 - \sigma_n^2)\nabla\log p_\sigma(x) + \sqrt{\sigma^2-\sigma_n^2}\,z .

The same paper's predictor-corrector sampler is :class:`~jaxsolve.diffusion.PredictorCorrector`
(a wrapper: Langevin corrector steps before any predictor, this one by default).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._adapters import score_from_denoised
from ._base import AbstractSolver


class EulerMaruyama(AbstractSolver):
    """Euler–Maruyama for the reverse-time VE SDE (see the module docstring). Order 1/2 (strong)."""

    s_noise: Float[Array, ""] | float = 1.0

    stochastic = True

    def step(self, ctx, x, state):
        dvar = ctx.sigma**2 - ctx.sigma_next**2
        score = score_from_denoised(x, ctx.sigma, ctx.denoise(x, ctx.sigma))
        return x + dvar * score + jnp.sqrt(dvar) * self.s_noise * ctx.noise(0), state
