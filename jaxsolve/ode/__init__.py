r"""Pillar 4 — neural ODEs on diffrax, solver-heuristic regularisers, exact likelihoods.

* :class:`NeuralODE` — an Equinox module over a diffrax solve (solver, step-size controller and
  adjoint are fields) returning an :class:`ODESolution` with accepted/rejected steps and the exact
  number of function evaluations (NFE).
* :class:`GlobalRegulariser` ("Opening the Blackbox: Accelerating Neural Differential Equations by
  Regularizing Internal Solver Heuristics") and :class:`LocalRegulariser` ("Locally Regularized
  Neural Differential Equations") — the adaptive solver's error and stiffness estimates as loss
  terms, so that training prefers dynamics that are cheap to solve.
* :func:`log_likelihood` — the exact log-density of a diffusion or flow model (a denoiser in the
  form of :mod:`jaxsolve.diffusion`) through its probability-flow ODE.
"""

from ._likelihood import LogLikelihood, gaussian_prior_log_prob, log_likelihood
from ._neural_ode import MLPField, NeuralODE, ODESolution
from ._regularisers import GlobalRegulariser, LocalRegulariser

__all__ = [
    "GlobalRegulariser",
    "LocalRegulariser",
    "LogLikelihood",
    "MLPField",
    "NeuralODE",
    "ODESolution",
    "gaussian_prior_log_prob",
    "log_likelihood",
]
