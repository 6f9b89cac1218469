"""Training objectives: ``jaxsolve.diffusion.losses`` gathers the losses of the diffusion pillar.

Denoising score matching (:func:`dsm_loss`, :func:`edm_loss`), noise / v / data
prediction (:func:`eps_loss`, :func:`v_loss`, :func:`x0_loss`; each with DDPM-IP's
``input_perturbation`` and Rectified Diffusion's coupled ``noise``), flow matching (:func:`flow_matching_loss`) and the stochastic
interpolant losses (methods of :class:`~jaxsolve.diffusion.StochasticInterpolant`).
"""

from ._flow_matching import flow_matching_loss, pseudo_huber
from ._losses import dsm_loss, edm_loss, edm_weight, eps_loss, lognormal_sigmas, v_loss, x0_loss

__all__ = [
    "dsm_loss",
    "edm_loss",
    "edm_weight",
    "eps_loss",
    "flow_matching_loss",
    "lognormal_sigmas",
    "pseudo_huber",
    "v_loss",
    "x0_loss",
]
