"""Pillar 1 — diffusion and flow models in the denoiser form.

Schedules map a model's time to the VE noise level; grids choose the levels a sampler visits;
adapters turn any parameterisation into ``denoiser(x, sigma) -> x0_hat``; :mod:`.analytic` holds
exact oracles for measuring sampler error.
"""

from . import analytic
from ._adapters import (
    PREDICTIONS,
    DenoiserModel,
    ModelDenoiser,
    denoised_from_eps,
    eps_from_denoised,
    from_eps,
    from_flow,
    from_score,
    from_v,
    from_x0,
    score_from_denoised,
    to_eps,
    to_flow,
    to_score,
    to_v,
    to_x0,
)
from ._grids import (
    discrete_sigmas,
    discrete_timesteps,
    exponential_sigmas,
    karras_sigmas,
    logsnr_sigmas,
    polyexponential_sigmas,
    time_quadratic_sigmas,
    time_uniform_sigmas,
)
from ._guidance import ClassifierFreeGuidance, DynamicThreshold, cfg, dynamic_threshold
from ._schedules import (
    AbstractSchedule,
    CosineVPSchedule,
    DiscreteVPSchedule,
    FlowSchedule,
    LinearVPSchedule,
    VESchedule,
    VPSchedule,
    ddpm_betas,
)

__all__ = [
    "PREDICTIONS",
    "AbstractSchedule",
    "ClassifierFreeGuidance",
    "CosineVPSchedule",
    "DenoiserModel",
    "DiscreteVPSchedule",
    "DynamicThreshold",
    "FlowSchedule",
    "LinearVPSchedule",
    "ModelDenoiser",
    "VESchedule",
    "VPSchedule",
    "analytic",
    "cfg",
    "ddpm_betas",
    "denoised_from_eps",
    "discrete_sigmas",
    "discrete_timesteps",
    "dynamic_threshold",
    "eps_from_denoised",
    "exponential_sigmas",
    "from_eps",
    "from_flow",
    "from_score",
    "from_v",
    "from_x0",
    "karras_sigmas",
    "logsnr_sigmas",
    "polyexponential_sigmas",
    "score_from_denoised",
    "time_quadratic_sigmas",
    "time_uniform_sigmas",
    "to_eps",
    "to_flow",
    "to_score",
    "to_v",
    "to_x0",
]
