"""Solvers by family; every solver is a step on :func:`jaxsolve.diffusion.sample`.

=========================  =====================================================================
file                       solvers (paper)
=========================  =====================================================================
``_base.py``               :class:`AbstractSolver`, :class:`StepContext`: the step contract
``runge_kutta.py``         :class:`Euler`, :class:`Heun`, :class:`DPM2`, :class:`ExplicitRK`,
                           :class:`FlowEuler`, :class:`FlowHeun`, :class:`FlowMidpoint`
                           ("Elucidating the Design Space of Diffusion-Based Generative Models")
``ancestral.py``           :class:`DDIM`, :class:`EulerAncestral` ("Denoising Diffusion Implicit
                           Models")
``dpm_solver.py``          :class:`DPMSolver`, :class:`DPMSolverPP`, :class:`DPMSolverPPSDE`,
                           :class:`DPMSolverSDE`
                           ("DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model
                           Sampling in Around 10 Steps", "DPM-Solver++: Fast Solver for Guided
                           Sampling of Diffusion Probabilistic Models")
``dpm_solver_v3.py``       :class:`DPMSolverV3`, :class:`EMS`, :func:`estimate_ems`
                           ("DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model
                           Statistics")
``adaptive.py``            :class:`DPMAdaptive` (DPM-Solver, adaptive step size)
``linear_multistep.py``    :class:`DEIS`, :class:`IPNDM`, :class:`LMS` ("Fast Sampling of
                           Diffusion Models with Exponential Integrator")
``ghvb.py``                :class:`GHVB` ("Diffusion Sampling with Momentum for Mitigating
                           Divergence Artifacts")
``unipc.py``               :class:`UniPC` ("UniPC: A Unified Predictor-Corrector Framework for
                           Fast Sampling of Diffusion Models")
``dc_solver.py``           :class:`DCSolver`, :func:`fit_dc_ratios`, :func:`reference_states`,
                           :class:`CascadeRatioRegression` ("DC-Solver: Improving
                           Predictor-Corrector Diffusion Sampler via Dynamic Compensation")
``genie.py``               :class:`GENIE` ("GENIE: Higher-Order Denoising Diffusion Solvers")
``bdia.py``                :class:`BDIA`, :func:`bdia_invert` ("Exact Diffusion Inversion via
                           Bi-directional Integration Approximation")
``euler_maruyama.py``      :class:`EulerMaruyama` ("Score-Based Generative Modeling through
                           Stochastic Differential Equations")
``kdiffusion.py``          k-diffusion's samplers: :class:`DPM2Ancestral`,
                           :class:`DPMSolverPP2SAncestral`, :class:`DPMSolverPPSDE2S`
                           (``dpmpp_sde``), :class:`DPMFast`, :class:`LMSMultistepFinal`,
                           :class:`DPMSolverPP3MSDEKDiffusion`, :func:`brownian_tree_noise`
                           ("DPM-Solver++: Fast Solver for Guided Sampling of Diffusion
                           Probabilistic Models", "Elucidating the Design Space of
                           Diffusion-Based Generative Models")
``pndm.py``                :class:`PNDM` ("Pseudo Numerical Methods for Diffusion Models on
                           Manifolds")
``ddpm.py``                :class:`DDPM` ("Denoising Diffusion Probabilistic Models")
``sa_solver.py``           :class:`SASolver`, :class:`TauWindow` ("SA-Solver: Stochastic Adams
                           Solver for Fast Sampling of Diffusion Models")
``cfgpp.py``               :class:`CFGPlusPlus` ("CFG++: Manifold-constrained Classifier Free
                           Guidance for Diffusion Models"; with
                           :func:`~jaxsolve.diffusion.cfg_pair`)
=========================  =====================================================================

Solvers that wrap another solver are in :mod:`jaxsolve.diffusion._wrappers`.
"""

from ._base import AbstractSolver, StepContext
from .adaptive import DPMAdaptive
from .ancestral import DDIM, EulerAncestral
from .bdia import BDIA, bdia_invert
from .cfgpp import CFGPlusPlus
from .dc_solver import CascadeRatioRegression, DCSolver, fit_dc_ratios, reference_states
from .ddpm import DDPM
from .dpm_solver import DPMSolver, DPMSolverPP, DPMSolverPPSDE, DPMSolverSDE
from .dpm_solver_v3 import EMS, DPMSolverV3, estimate_ems
from .euler_maruyama import EulerMaruyama
from .genie import GENIE
from .ghvb import GHVB
from .kdiffusion import (
    DPM2Ancestral,
    DPMFast,
    DPMSolverPP2SAncestral,
    DPMSolverPP3MSDEKDiffusion,
    DPMSolverPPSDE2S,
    LMSMultistepFinal,
    brownian_tree_noise,
    dpm_fast_orders,
    dpm_fast_sigmas,
)
from .linear_multistep import DEIS, IPNDM, LMS
from .pndm import PNDM
from .runge_kutta import (
    DPM2,
    ButcherTableau,
    Euler,
    ExplicitRK,
    FlowEuler,
    FlowHeun,
    FlowMidpoint,
    FlowRK,
    Heun,
)
from .sa_solver import SASolver, TauWindow
from .unipc import UniPC

__all__ = [
    "BDIA",
    "DDIM",
    "DDPM",
    "DEIS",
    "DPM2",
    "EMS",
    "GENIE",
    "GHVB",
    "IPNDM",
    "LMS",
    "PNDM",
    "AbstractSolver",
    "ButcherTableau",
    "CFGPlusPlus",
    "CascadeRatioRegression",
    "DCSolver",
    "DPM2Ancestral",
    "DPMAdaptive",
    "DPMFast",
    "DPMSolver",
    "DPMSolverPP",
    "DPMSolverPP2SAncestral",
    "DPMSolverPP3MSDEKDiffusion",
    "DPMSolverPPSDE",
    "DPMSolverPPSDE2S",
    "DPMSolverSDE",
    "DPMSolverV3",
    "Euler",
    "EulerAncestral",
    "EulerMaruyama",
    "ExplicitRK",
    "FlowEuler",
    "FlowHeun",
    "FlowMidpoint",
    "FlowRK",
    "Heun",
    "LMSMultistepFinal",
    "SASolver",
    "StepContext",
    "TauWindow",
    "UniPC",
    "bdia_invert",
    "brownian_tree_noise",
    "dpm_fast_orders",
    "dpm_fast_sigmas",
    "estimate_ems",
    "fit_dc_ratios",
    "reference_states",
]
