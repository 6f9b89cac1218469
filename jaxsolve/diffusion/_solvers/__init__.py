"""One file per sampler family; every solver is a step on :func:`jaxsolve.diffusion.sample`."""

from ._base import AbstractSolver, StepContext
from .adaptive import DPMAdaptive
from .ancestral import DDIM, EulerAncestral
from .dpm_solver import DPMSolver, DPMSolverPP, DPMSolverPPSDE
from .linear_multistep import DEIS, IPNDM, LMS
from .restart import Restart, restart_sigmas
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
from .stochastic import EDMStochastic, EulerMaruyama, PredictorCorrector
from .unipc import UniPC

__all__ = [
    "DDIM",
    "DEIS",
    "DPM2",
    "IPNDM",
    "LMS",
    "AbstractSolver",
    "ButcherTableau",
    "DPMAdaptive",
    "DPMSolver",
    "DPMSolverPP",
    "DPMSolverPPSDE",
    "EDMStochastic",
    "Euler",
    "EulerAncestral",
    "EulerMaruyama",
    "ExplicitRK",
    "FlowEuler",
    "FlowHeun",
    "FlowMidpoint",
    "FlowRK",
    "Heun",
    "PredictorCorrector",
    "Restart",
    "StepContext",
    "UniPC",
    "restart_sigmas",
]
