"""Pillar 1 — diffusion and flow models in the denoiser form.

Schedules map a model's time to the VE noise level; grids choose the levels a sampler visits
(``_grids/``); adapters turn any parameterisation into ``denoiser(x, sigma) -> x0_hat``;
:func:`sample` is the one driver that runs every solver as a step of a ``lax.scan``, solvers by
family in ``_solvers/`` and the solvers that wrap another in ``_wrappers/``; how gradients flow
through sampling is an adjoint object (``_adjoint.py``); :mod:`.analytic` holds exact oracles for
measuring sampler error (and exact posteriors); :mod:`.inverse` holds measurement operators and the
posterior samplers measured against them. ``_inversion.py`` runs the probability-flow ODE from
data to noise on a reversed sampling grid (:func:`invert`) and DDIB translation
(:func:`ddib_translate`). ``_from_diffusers.py`` turns a diffusers scheduler config into the
grid, solver and model adapter that reproduce it (:func:`from_diffusers`).
"""

from . import _solvers, _wrappers, analytic, fewstep, inverse, losses
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
from ._adjoint import AbstractAdjoint, AdjointDPM, Backprop, Checkpointed
from ._flow_matching import (
    flow_matching_loss,
    generate,
    logit_normal_times,
    pseudo_huber,
    reflow_pairs,
    straightness,
    u_shaped_times,
)
from ._from_diffusers import SUPPORTED_SCHEDULERS, DiffusersScheduler, from_diffusers
from ._grids import (
    AYS_TABLES,
    OSSResult,
    ays_sigmas,
    beta_quantile,
    beta_sigmas,
    discrete_sigmas,
    discrete_timesteps,
    dynamic_shift_mu,
    exponential_sigmas,
    flow_shift_sigmas,
    flow_shift_times,
    karras_sigmas,
    logsnr_sigmas,
    optimal_sigmas,
    polyexponential_sigmas,
    restart_sigmas,
    schedule_sigmas,
    teleport_sigmas,
    time_quadratic_sigmas,
    time_uniform_sigmas,
)
from ._guidance import (
    AbstractGuidance,
    BatchedClassifierFreeGuidance,
    ClassifierFreeGuidance,
    GuidancePair,
    cfg,
    cfg_batched,
    cfg_pair,
)
from ._interpolants import (
    InterpolantSolver,
    StochasticInterpolant,
    interpolant_grid,
    interpolant_model,
)
from ._inversion import ddib_translate, invert
from ._losses import (
    Precond,
    dsm_loss,
    edm_loss,
    edm_weight,
    eps_loss,
    lognormal_sigmas,
    v_loss,
    x0_loss,
)
from ._metrics import mmd, sliced_wasserstein
from ._networks import FourierEmbedding, NoiseMLP, PositionalEmbedding, UNet2D
from ._sample import SampleSolution, sample
from ._schedules import (
    AbstractSchedule,
    CosineVPSchedule,
    DiscreteVPSchedule,
    FlowSchedule,
    LinearVPSchedule,
    VESchedule,
    VPSchedule,
    ddpm_betas,
    rescale_zero_terminal_snr,
    zero_terminal_snr_schedule,
)
from ._solvers import *  # noqa: F403 (the names of _solvers/__init__.py's __all__)
from ._thresholding import ClipRule, DynamicThresholdRule, clip_denoised, dynamic_thresholding
from ._wrappers import *  # noqa: F403 (the names of _wrappers/__init__.py's __all__)

__all__ = [
    "AYS_TABLES",
    "PREDICTIONS",
    "SUPPORTED_SCHEDULERS",
    "AbstractAdjoint",
    "AbstractGuidance",
    "AbstractSchedule",
    "AdjointDPM",
    "Backprop",
    "BatchedClassifierFreeGuidance",
    "Checkpointed",
    "ClassifierFreeGuidance",
    "ClipRule",
    "CosineVPSchedule",
    "DenoiserModel",
    "DiffusersScheduler",
    "DiscreteVPSchedule",
    "DynamicThresholdRule",
    "FlowSchedule",
    "FourierEmbedding",
    "GuidancePair",
    "InterpolantSolver",
    "LinearVPSchedule",
    "ModelDenoiser",
    "NoiseMLP",
    "OSSResult",
    "PositionalEmbedding",
    "Precond",
    "SampleSolution",
    "StochasticInterpolant",
    "UNet2D",
    "VESchedule",
    "VPSchedule",
    "analytic",
    "ays_sigmas",
    "beta_quantile",
    "beta_sigmas",
    "cfg",
    "cfg_batched",
    "cfg_pair",
    "clip_denoised",
    "ddib_translate",
    "ddpm_betas",
    "denoised_from_eps",
    "discrete_sigmas",
    "discrete_timesteps",
    "dsm_loss",
    "dynamic_shift_mu",
    "dynamic_thresholding",
    "edm_loss",
    "edm_weight",
    "eps_from_denoised",
    "eps_loss",
    "exponential_sigmas",
    "fewstep",
    "flow_matching_loss",
    "flow_shift_sigmas",
    "flow_shift_times",
    "from_diffusers",
    "from_eps",
    "from_flow",
    "from_score",
    "from_v",
    "from_x0",
    "generate",
    "interpolant_grid",
    "interpolant_model",
    "inverse",
    "invert",
    "karras_sigmas",
    "logit_normal_times",
    "lognormal_sigmas",
    "logsnr_sigmas",
    "losses",
    "mmd",
    "optimal_sigmas",
    "polyexponential_sigmas",
    "pseudo_huber",
    "reflow_pairs",
    "rescale_zero_terminal_snr",
    "restart_sigmas",
    "sample",
    "schedule_sigmas",
    "score_from_denoised",
    "sliced_wasserstein",
    "straightness",
    "teleport_sigmas",
    "time_quadratic_sigmas",
    "time_uniform_sigmas",
    "to_eps",
    "to_flow",
    "to_score",
    "to_v",
    "to_x0",
    "u_shaped_times",
    "v_loss",
    "x0_loss",
    "zero_terminal_snr_schedule",
]
__all__ += _solvers.__all__
__all__ += _wrappers.__all__
