"""Inverse problems and guidance with diffusion priors: measurement operators as data, posterior
samplers as denoiser transforms or solvers on :func:`jaxsolve.diffusion.sample`.

Every method is measured against an exact posterior: ``oracle.condition(A, y, noise_std)`` of
:mod:`jaxsolve.diffusion.analytic` returns it for Gaussian and Gaussian-mixture priors.
"""

from ._guidance import DDNM, DPS, AbstractGuidance, LikelihoodGuidance, PiGDM
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

__all__ = [
    "DDNM",
    "DPS",
    "AbstractGuidance",
    "AbstractOperator",
    "Blur",
    "Dense",
    "LikelihoodGuidance",
    "LinearFunction",
    "Mask",
    "Measurement",
    "PiGDM",
    "Subsample",
    "as_operator",
    "box_blur",
    "gaussian_blur",
    "measure",
    "random_projection",
]
