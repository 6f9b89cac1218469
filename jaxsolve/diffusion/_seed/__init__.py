"""Samplers from the seed papers, each a solver, a grid search or a wrapper on the one driver.

=========================  =====================================================================
file                       method (paper)
=========================  =====================================================================
``dpm_solver_v3.py``       :class:`DPMSolverV3`, :class:`EMS`, :func:`estimate_ems`
                           ("DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model
                           Statistics")
``dc_solver.py``           :class:`DCSolver`, :func:`fit_dc_ratios`, :func:`reference_states`,
                           :class:`CascadeRatioRegression` ("DC-Solver: Improving
                           Predictor-Corrector Diffusion Sampler via Dynamic Compensation")
``dualfast.py``            :class:`DualFast` ("DualFast: Dual-Speedup Framework for Fast Sampling
                           of Diffusion Models")
``genie.py``               :class:`GENIE` ("GENIE: Higher-Order Denoising Diffusion Solvers")
``optimal_steps.py``       :func:`optimal_sigmas` ("Optimal Stepsize for Diffusion Sampling")
``time_shift.py``          :class:`TimeShift`, :func:`shifted_sigma` ("Alleviating Exposure Bias
                           in Diffusion Models through Sampling with Shifted Time Steps")
``momentum.py``            :class:`HeavyBall`, :class:`GHVB` ("Diffusion Sampling with Momentum
                           for Mitigating Divergence Artifacts")
``bdia.py``                :class:`BDIA`, :func:`bdia_invert` ("Exact Diffusion Inversion via
                           Bi-directional Integration Approximation")
``teleport.py``            :class:`Teleport`, :func:`teleport_sigmas`,
                           :func:`gaussian_approximation` ("The Unreasonable Effectiveness of
                           Gaussian Score Approximation for Diffusion Models and its
                           Applications")
=========================  =====================================================================
"""

from .bdia import BDIA, bdia_invert
from .dc_solver import CascadeRatioRegression, DCSolver, fit_dc_ratios, reference_states
from .dpm_solver_v3 import EMS, DPMSolverV3, estimate_ems
from .dualfast import DualFast
from .genie import GENIE
from .momentum import GHVB, HeavyBall
from .optimal_steps import OSSResult, optimal_sigmas
from .teleport import Teleport, gaussian_approximation, teleport_sigmas
from .time_shift import TimeShift, shifted_sigma

__all__ = [
    "BDIA",
    "EMS",
    "GENIE",
    "GHVB",
    "CascadeRatioRegression",
    "DCSolver",
    "DPMSolverV3",
    "DualFast",
    "HeavyBall",
    "OSSResult",
    "Teleport",
    "TimeShift",
    "bdia_invert",
    "estimate_ems",
    "fit_dc_ratios",
    "gaussian_approximation",
    "optimal_sigmas",
    "reference_states",
    "shifted_sigma",
    "teleport_sigmas",
]
