"""Grid constructions: the levels a sampler visits.

=========================  =====================================================================
file                       what it builds
=========================  =====================================================================
``spacing.py``             grids by a spacing rule: Karras, exponential, log-SNR, time-uniform,
                           diffusers' discrete timesteps, ...
``optimal_steps.py``       :func:`optimal_sigmas` ("Optimal Stepsize for Diffusion Sampling")
``restart.py``             :func:`restart_sigmas` ("Restart Sampling for Improving Generative
                           Processes")
``teleport.py``            :func:`teleport_sigmas` ("The Unreasonable Effectiveness of Gaussian
                           Score Approximation for Diffusion Models and its Applications")
=========================  =====================================================================
"""

from .optimal_steps import OSSResult, optimal_sigmas
from .restart import restart_sigmas
from .spacing import (
    discrete_sigmas,
    discrete_timesteps,
    exponential_sigmas,
    karras_sigmas,
    logsnr_sigmas,
    polyexponential_sigmas,
    time_quadratic_sigmas,
    time_uniform_sigmas,
)
from .teleport import teleport_sigmas

__all__ = [
    "OSSResult",
    "discrete_sigmas",
    "discrete_timesteps",
    "exponential_sigmas",
    "karras_sigmas",
    "logsnr_sigmas",
    "optimal_sigmas",
    "polyexponential_sigmas",
    "restart_sigmas",
    "teleport_sigmas",
    "time_quadratic_sigmas",
    "time_uniform_sigmas",
]
