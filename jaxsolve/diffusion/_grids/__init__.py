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
``ays.py``                 :func:`ays_sigmas` ("Align Your Steps: Optimizing Sampling Schedules
                           in Diffusion Models": the published tables, log-linear interpolation)
``knobs.py``               diffusers' schedule knobs: :func:`beta_sigmas` ("Beta Sampling is All
                           You Need"), Karras / exponential / beta spacing over any schedule
                           (:func:`schedule_sigmas`), SD3 / Flux flow shift
                           (:func:`flow_shift_sigmas`, :func:`flow_shift_times`,
                           :func:`dynamic_shift_mu`)
=========================  =====================================================================
"""

from .ays import AYS_TABLES, ays_sigmas
from .knobs import (
    beta_quantile,
    beta_sigmas,
    dynamic_shift_mu,
    flow_shift_sigmas,
    flow_shift_times,
    schedule_sigmas,
)
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
    "AYS_TABLES",
    "OSSResult",
    "ays_sigmas",
    "beta_quantile",
    "beta_sigmas",
    "discrete_sigmas",
    "discrete_timesteps",
    "dynamic_shift_mu",
    "exponential_sigmas",
    "flow_shift_sigmas",
    "flow_shift_times",
    "karras_sigmas",
    "logsnr_sigmas",
    "optimal_sigmas",
    "polyexponential_sigmas",
    "restart_sigmas",
    "schedule_sigmas",
    "teleport_sigmas",
    "time_quadratic_sigmas",
    "time_uniform_sigmas",
]
