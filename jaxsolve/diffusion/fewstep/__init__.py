"""Few-step generation: consistency models, TrigFlow / sCM, flow maps (MeanFlow) and PFGM++.

Every model here samples through :func:`jaxsolve.diffusion.sample` (a denoiser, or a solver that
holds the model when a step needs two time levels); teachers may be exact oracles of
:mod:`jaxsolve.diffusion.analytic`, so what a student loses is measured alone.

=====================  ===========================================================================
file                   what (paper)
=====================  ===========================================================================
``_consistency.py``    :class:`ConsistencyFunction`, :func:`consistency_scalings`,
                       :class:`ConsistencySampler`, :func:`consistency_distillation_loss`
                       ("Consistency Models")
``_trigflow.py``       TrigFlow <-> VE conversions, the sCM tangent by ``jax.jvp``, tangent
                       normalisation ("Simplifying, Stabilizing and Scaling Continuous-Time
                       Consistency Models")
``_meanflow.py``       average velocity, the MeanFlow identity by ``jax.jvp``, its loss and
                       one-/few-step sampling ("Mean Flows for One-step Generative Modeling")
``_training.py``       consistency training with the iCT and ECT schedules ("Improved Techniques
                       for Training Consistency Models", "Consistency Models Made Easy"); sCM's
                       continuous-time loss with adaptive weighting
``_lcm.py``            :class:`LCMSampler`, :class:`TCDSampler`, :func:`lcm_timesteps`,
                       :func:`lcm_sigmas` (diffusers' LCM / TCD schedulers; "Latent Consistency
                       Models", "Trajectory Consistency Distillation")
``_decoupled.py``      :class:`DecoupledFlowMap` (a flow network's last blocks read the target time
                       ``r``), :func:`decoupled_noise_mlp`, :func:`decoupled_meanflow_loss`
                       ("Decoupled MeanFlow: Turning Flow Models into Flow Maps for Accelerated
                       Sampling")
``_dmd.py``            distribution-matching distillation: :func:`dmd_generator_loss` (reverse KL
                       and f-divergences), :func:`dmd_fake_score_loss`,
                       :func:`dmd_regression_loss`, :func:`dmd_step`, :func:`divergence_weight`
                       ("One-step Diffusion with Distribution Matching Distillation"; "One-step
                       Diffusion Models with f-Divergence Distribution Matching")
``_pfgmpp.py``         PFGM++'s perturbation kernel, training loss and prior, and the
                       ``r = sigma sqrt(D)`` map ("PFGM++: Unlocking the Potential of
                       Physics-Inspired Generative Models")
``_rectified.py``      :func:`rectified_pairs`: a pretrained model's own (noise, sample) couplings
                       for any loss's ``noise=`` ("Rectified Diffusion: Straightness Is Not Your
                       Need in Rectified Flow")
=====================  ===========================================================================
"""

from ._consistency import (
    ConsistencyFunction,
    ConsistencySampler,
    consistency_distillation_loss,
    consistency_scalings,
)
from ._decoupled import DecoupledFlowMap, decoupled_meanflow_loss, decoupled_noise_mlp
from ._dmd import (
    divergence_weight,
    dmd_fake_score_loss,
    dmd_generator_loss,
    dmd_regression_loss,
    dmd_step,
)
from ._lcm import LCMSampler, TCDSampler, lcm_sigmas, lcm_timesteps
from ._meanflow import (
    MeanFlowSolver,
    meanflow_denoiser,
    meanflow_loss,
    meanflow_sample,
    meanflow_target,
    meanflow_times,
)
from ._pfgmpp import pfgmpp_loss, pfgmpp_perturb, pfgmpp_prior, pfgmpp_radius, pfgmpp_sigma
from ._rectified import rectified_pairs
from ._training import (
    consistency_training_loss,
    ect_gap,
    ict_level_probabilities,
    ict_num_levels,
    scm_loss,
)
from ._trigflow import (
    TrigFlowDenoiser,
    TrigFlowModel,
    from_trigflow,
    scm_tangent,
    tangent_normalization,
    to_trigflow,
    trigflow_consistency,
    trigflow_sigma,
    trigflow_time,
)

__all__ = [
    "ConsistencyFunction",
    "ConsistencySampler",
    "DecoupledFlowMap",
    "LCMSampler",
    "MeanFlowSolver",
    "TCDSampler",
    "TrigFlowDenoiser",
    "TrigFlowModel",
    "consistency_distillation_loss",
    "consistency_scalings",
    "consistency_training_loss",
    "decoupled_meanflow_loss",
    "decoupled_noise_mlp",
    "divergence_weight",
    "dmd_fake_score_loss",
    "dmd_generator_loss",
    "dmd_regression_loss",
    "dmd_step",
    "ect_gap",
    "from_trigflow",
    "ict_level_probabilities",
    "ict_num_levels",
    "lcm_sigmas",
    "lcm_timesteps",
    "meanflow_denoiser",
    "meanflow_loss",
    "meanflow_sample",
    "meanflow_target",
    "meanflow_times",
    "pfgmpp_loss",
    "pfgmpp_perturb",
    "pfgmpp_prior",
    "pfgmpp_radius",
    "pfgmpp_sigma",
    "rectified_pairs",
    "scm_loss",
    "scm_tangent",
    "tangent_normalization",
    "to_trigflow",
    "trigflow_consistency",
    "trigflow_sigma",
    "trigflow_time",
]
