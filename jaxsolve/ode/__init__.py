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
* :class:`NeuralSDE` — neural SDEs (diagonal or general noise, Itô or Stratonovich, a virtual
  Brownian tree per sample) with :class:`GlobalRegulariser` and :class:`LocalRegulariser` (the
  SDE hands its solve to :meth:`AbstractRegulariser.solve_sde`); :class:`LatentSDE` (Li et al.).
* :func:`signature_kernel` (the untruncated signature kernel by its Goursat PDE, "The Signature
  Kernel is the solution of a Goursat PDE"), :func:`signature_mmd` and
  :func:`signature_kernel_score` ("Non-adversarial training of Neural SDEs with signature kernel
  scores") — training losses for a :class:`NeuralSDE` with no discriminator.
* :class:`NeuralCDE` ("Neural Controlled Differential Equations for Irregular Time Series") over
  cubic, linear or rectilinear interpolations of irregular, partly missing series.
* :class:`CNF` — continuous normalising flows (FFJORD) with :class:`RNODE`, :class:`TayNODE` and
  the solver-heuristic regularisers.
"""

from ._cnf import (
    CNF,
    RNODE,
    AbstractIntegralRegulariser,
    CNFDensity,
    CNFSample,
    TayNODE,
    total_derivative,
)
from ._divergence import AbstractDivergence, ExactDivergence, HutchinsonDivergence
from ._likelihood import LogLikelihood, gaussian_prior_log_prob, log_likelihood
from ._neural_cde import (
    CDEField,
    CDESolution,
    NeuralCDE,
    classification_loss,
    forecasting_loss,
    interpolate,
    interpolate_batch,
)
from ._neural_ode import MLPField, NeuralODE, ODESolution
from ._neural_sde import LatentSDE, NeuralSDE, SDESolution, euler_transition_nll
from ._regularisers import AbstractRegulariser, GlobalRegulariser, LocalRegulariser
from ._signature import (
    signature_kernel,
    signature_kernel_matrix,
    signature_kernel_score,
    signature_mmd,
)

__all__ = [
    "CNF",
    "RNODE",
    "AbstractDivergence",
    "AbstractIntegralRegulariser",
    "AbstractRegulariser",
    "CDEField",
    "CDESolution",
    "CNFDensity",
    "CNFSample",
    "ExactDivergence",
    "GlobalRegulariser",
    "HutchinsonDivergence",
    "LatentSDE",
    "LocalRegulariser",
    "LogLikelihood",
    "MLPField",
    "NeuralCDE",
    "NeuralODE",
    "NeuralSDE",
    "ODESolution",
    "SDESolution",
    "TayNODE",
    "classification_loss",
    "euler_transition_nll",
    "forecasting_loss",
    "gaussian_prior_log_prob",
    "interpolate",
    "interpolate_batch",
    "log_likelihood",
    "signature_kernel",
    "signature_kernel_matrix",
    "signature_kernel_score",
    "signature_mmd",
    "total_derivative",
]
