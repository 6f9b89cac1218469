r"""Pillar 4 — neural ODEs on diffrax, solver-heuristic regularisers, exact likelihoods.

* :class:`NeuralODE` — an Equinox module over a diffrax solve (solver, step-size controller and
  adjoint are fields) returning an :class:`ODESolution` with accepted/rejected steps and the exact
  number of function evaluations (NFE).
* :class:`GlobalRegulariser` ("Opening the Blackbox: Accelerating Neural Differential Equations by
  Regularizing Internal Solver Heuristics") and :class:`LocalRegulariser` ("Locally Regularized
  Neural Differential Equations") — the adaptive solver's error and stiffness estimates as loss
  terms, so that training prefers dynamics that are cheap to solve.
  Both are :class:`AbstractRegulariser` objects: the ``NeuralODE`` hands its solve to the
  regulariser, which instruments it and returns its terms, so a new regulariser is a new class.
* :func:`log_likelihood` — the exact log-density of a diffusion or flow model (a denoiser in the
  form of :mod:`jaxsolve.diffusion`) through its probability-flow ODE, with the divergence from
  an :class:`AbstractDivergence` (:class:`ExactDivergence`, :class:`HutchinsonDivergence`).
"""

from ._divergence import AbstractDivergence, ExactDivergence, HutchinsonDivergence
from ._likelihood import LogLikelihood, gaussian_prior_log_prob, log_likelihood
from ._neural_ode import MLPField, NeuralODE, ODESolution
from ._regularisers import AbstractRegulariser, GlobalRegulariser, LocalRegulariser

__all__ = [
    "AbstractDivergence",
    "AbstractRegulariser",
    "ExactDivergence",
    "GlobalRegulariser",
    "HutchinsonDivergence",
    "LocalRegulariser",
    "LogLikelihood",
    "MLPField",
    "NeuralODE",
    "ODESolution",
    "gaussian_prior_log_prob",
    "log_likelihood",
]
