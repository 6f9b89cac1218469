"""Solvers that run another solver and change part of what it does.

Every one derives from :class:`AbstractWrappedSolver`, which forwards each property and hook of
the inner solver (``stochastic``, ``adaptive``, ``allows_increasing_grid``, ``step_form``,
``phase``, ``init``, the final step, ``denoiser_output_shape``); a wrapper overrides only what it
changes.

==========================  ==================================================================
file                        wrapper (paper)
==========================  ==================================================================
``_base.py``                :class:`AbstractWrappedSolver`
``dualfast.py``             :class:`DualFast` ("DualFast: Dual-Speedup Framework for Fast
                            Sampling of Diffusion Models")
``edm_stochastic.py``       :class:`EDMStochastic` ("Elucidating the Design Space of
                            Diffusion-Based Generative Models", Algorithm 2)
``heavy_ball.py``           :class:`HeavyBall` ("Diffusion Sampling with Momentum for Mitigating
                            Divergence Artifacts")
``predictor_corrector.py``  :class:`PredictorCorrector` ("Score-Based Generative Modeling through
                            Stochastic Differential Equations")
``restart.py``              :class:`Restart` ("Restart Sampling for Improving Generative
                            Processes")
``teleport.py``             :class:`Teleport`, :func:`gaussian_approximation` ("The Unreasonable
                            Effectiveness of Gaussian Score Approximation for Diffusion Models
                            and its Applications")
``time_shift.py``           :class:`TimeShift`, :func:`shifted_sigma` ("Alleviating Exposure Bias
                            in Diffusion Models through Sampling with Shifted Time Steps")
==========================  ==================================================================
"""

from ._base import AbstractWrappedSolver
from .dualfast import DualFast
from .edm_stochastic import EDMStochastic
from .heavy_ball import HeavyBall
from .predictor_corrector import PredictorCorrector
from .restart import Restart
from .teleport import Teleport, gaussian_approximation
from .time_shift import TimeShift, shifted_sigma

__all__ = [
    "AbstractWrappedSolver",
    "DualFast",
    "EDMStochastic",
    "HeavyBall",
    "PredictorCorrector",
    "Restart",
    "Teleport",
    "TimeShift",
    "gaussian_approximation",
    "shifted_sigma",
]
