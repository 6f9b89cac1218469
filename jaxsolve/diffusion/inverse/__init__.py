"""Inverse problems and guidance with diffusion priors: measurement operators as data, posterior
samplers as denoiser transforms or solvers on :func:`jaxsolve.diffusion.sample`.

Every method is measured against an exact posterior: ``oracle.condition(A, y, noise_std)`` of
:mod:`jaxsolve.diffusion.analytic` returns it for Gaussian, Gaussian-mixture and empirical priors.

====================  ==========================================================================
file                  what (paper)
====================  ==========================================================================
``_operators.py``     :class:`Mask`, :class:`Subsample`, :class:`Blur`, :class:`Dense`,
                      :class:`LinearFunction`: ``A``, ``A.T``, Gram solves, pseudo-inverse
``_measurement.py``   :class:`Measurement` (``y``, noise level), :func:`measure`
``_guidance.py``      denoiser transforms: :class:`LikelihoodGuidance`, :class:`DPS` ("Diffusion
                      Posterior Sampling for General Noisy Inverse Problems"), :class:`PiGDM`
                      ("Pseudoinverse-Guided Diffusion Models for Inverse Problems"),
                      :class:`DDNM` ("Zero-Shot Image Restoration Using Denoising Diffusion
                      Null-Space Model")
``_second_order.py``  :class:`STSL` ("Beyond First-Order Tweedie: Solving Inverse Problems using
                      Latent Diffusion")
``_mcg.py``           :class:`MCG` ("Improving Diffusion Models for Inverse Problems using
                      Manifold Constraints")
``_repaint.py``       :class:`RePaint`, :func:`repaint_sigmas` ("RePaint: Inpainting using
                      Denoising Diffusion Probabilistic Models")
``_red_diff.py``      :class:`REDDiff` ("A Variational Perspective on Solving Inverse Problems
                      with Diffusion Models")
``_svdd.py``          :class:`SVDD` ("Derivative-Free Guidance in Continuous and Discrete
                      Diffusion Models with Soft Value-Based Decoding"); :class:`WeightedSVDD`,
                      :func:`weighted_sample`, :func:`effective_sample_size` (the same choices
                      with importance weights: twisted SMC, "Practical and Asymptotically Exact
                      Conditional Sampling in Diffusion Models")
====================  ==========================================================================
"""

from ._guidance import DDNM, DPS, AbstractGuidance, LikelihoodGuidance, PiGDM
from ._mcg import MCG
from ._measurement import Measurement, as_operator, measure
from ._operators import (
    AbstractOperator,
    Blur,
    Dense,
    LinearFunction,
    Mask,
    Subsample,
    box_blur,
    gaussian_blur,
    random_projection,
)
from ._red_diff import REDDiff, paper_adam
from ._repaint import RePaint, repaint_sigmas
from ._second_order import STSL
from ._svdd import SVDD, WeightedSVDD, WeightedSVDDState, effective_sample_size, weighted_sample

__all__ = [
    "DDNM",
    "DPS",
    "MCG",
    "STSL",
    "SVDD",
    "AbstractGuidance",
    "AbstractOperator",
    "Blur",
    "Dense",
    "LikelihoodGuidance",
    "LinearFunction",
    "Mask",
    "Measurement",
    "PiGDM",
    "REDDiff",
    "RePaint",
    "Subsample",
    "WeightedSVDD",
    "WeightedSVDDState",
    "as_operator",
    "box_blur",
    "effective_sample_size",
    "gaussian_blur",
    "measure",
    "paper_adam",
    "random_projection",
    "repaint_sigmas",
    "weighted_sample",
]
