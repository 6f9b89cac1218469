r"""CFG++: DDIM / Euler-ancestral that re-noises with the *unconditional* noise estimate.

"CFG++: Manifold-constrained Classifier Free Guidance for Diffusion Models" (Chung et al.): with
:math:`\hat x_{0,\lambda} = \hat x_{0,u} + \lambda(\hat x_{0,c} - \hat x_{0,u})`,
:math:`\lambda \in [0, 1]`, the DDIM step is

.. math::
    x_{t-1} = \sqrt{\bar\alpha_{t-1}}\,\hat x_{0,\lambda}
    + \sqrt{1-\bar\alpha_{t-1}}\,\hat\epsilon_u

instead of CFG's re-noising with the guided :math:`\hat\epsilon_\lambda`. Dividing by
:math:`\sqrt{\bar\alpha_{t-1}}` (VE scale, :math:`\sigma^2 = (1-\bar\alpha)/\bar\alpha`) gives

.. math::
    x_n = D_\lambda + \sigma_n\,\hat\epsilon_u, \qquad \hat\epsilon_u = (x - D_u)/\sigma,

and with ancestral noise (``eta > 0``, as k-diffusion's Euler-ancestral)
:math:`x_n = D_\lambda + \sigma_\downarrow\hat\epsilon_u + \sigma_\uparrow z`. The final step lands
on :math:`D_\lambda`.

The step needs both branches apart, so the denoiser is a pair: ``denoiser(x, sigma)`` returns
``stack([D_c, D_u])`` (:func:`~jaxsolve.diffusion.cfg_pair`), and the guidance scale is the
solver's (an array field: traced and swept with ``vmap``). The solver declares that output shape,
so the driver checks it as it checks any denoiser.
"""

from __future__ import annotations

from jaxtyping import Array, Float

from ..._core import as_float, check_positive, expand_to, is_concrete
from ._base import AbstractSolver
from .ancestral import ancestral_levels, check_traced_non_negative


class CFGPlusPlus(AbstractSolver):
    """DDIM (``eta = 0``) or Euler-ancestral (``eta = 1``) with CFG++ guidance (see the module).

    Args:
        scale: the guidance weight :math:`\\lambda` (the paper's range is ``[0, 1]``; may be traced
            and may carry the leading batch axes of ``x``).
        eta: ancestral noise scale (0: deterministic DDIM CFG++).
        s_noise: scale of the drawn noise.

    The denoiser must return ``stack([D_c, D_u])`` (:func:`~jaxsolve.diffusion.cfg_pair`).
    """

    scale: Float[Array, "..."] | float = 1.0
    eta: Float[Array, ""] | float = 0.0
    s_noise: Float[Array, ""] | float = 1.0

    def __check_init__(self):
        check_positive("CFGPlusPlus eta", self.eta, allow_zero=True)
        check_positive("CFGPlusPlus s_noise", self.s_noise, allow_zero=True)

    @property
    def stochastic(self) -> bool:
        return not (is_concrete(self.eta) and float(self.eta) == 0.0)

    def denoiser_output_shape(self, x_shape):
        return (2, *x_shape)

    def _branches(self, ctx, x):
        d_c, d_u = ctx.denoise(x, ctx.sigma)
        w = expand_to(as_float(self.scale), d_c).astype(d_c.dtype)
        return d_u + w * (d_c - d_u), d_u

    def step(self, ctx, x, state):
        guided, d_u = self._branches(ctx, x)
        eps_u = (x - d_u) / ctx.sigma
        if not self.stochastic:
            return guided + ctx.sigma_next * eps_u, state
        eta = check_traced_non_negative("CFGPlusPlus eta", self.eta)
        down, up = ancestral_levels(ctx.sigma, ctx.sigma_next, eta)
        return guided + down * eps_u + (self.s_noise * up) * ctx.noise(0), state

    def final_step(self, ctx, x, state):
        return self._branches(ctx, x)[0], state
