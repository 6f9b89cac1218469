"""Classical solvers that make data for learned ones.

* Random fields: :class:`GaussianRandomField` / :func:`gaussian_random_field`, centred Gaussian
  measures with covariance :math:`c(-\\Delta + \\tau^2 I)^{-\\alpha}` (periodic or zero-Neumann).
* Pseudo-spectral time stepping: :class:`ETDRK` runs any exponential Runge–Kutta tableau
  (:data:`ETDRK1` ... :data:`ETDRK4`, Kassam–Trefethen contour-integral coefficients) on an
  equation split as :math:`u_t = \\mathcal L u + \\mathcal N(u) + f`: :class:`AdvectionDiffusion`
  (heat), :class:`Burgers`, :class:`KuramotoSivashinsky`, :class:`KortewegDeVries`,
  :class:`NavierStokes2D` (vorticity form, :func:`fno_forcing`).
* Elliptic: :func:`darcy_solve`, five-point finite differences with harmonic face means, solved
  by fast-Poisson-preconditioned conjugate gradients.
* :func:`rollout` is the one time loop (a ``lax.scan`` over a stepper).
* Datasets with the FNO paper's distributions, cached on disk: :func:`burgers_dataset`,
  :func:`darcy_dataset`, :func:`navier_stokes_dataset`.

States are one sample ``(channels, *spatial)``; batch with :func:`jax.vmap`.
"""

from .._core._rollout import Rollout, rollout
from ._darcy import DarcySolution, darcy_operator, darcy_solve
from ._datasets import burgers_dataset, darcy_dataset, default_cache_dir, navier_stokes_dataset
from ._equations import (
    AbstractEquation,
    AdvectionDiffusion,
    Burgers,
    KortewegDeVries,
    KuramotoSivashinsky,
    NavierStokes2D,
    fno_forcing,
)
from ._etdrk import (
    ETDRK,
    ETDRK1,
    ETDRK2,
    ETDRK3,
    ETDRK4,
    ExpRKTableau,
    PhiExpr,
    phi,
    phi_functions,
)
from ._grf import GaussianRandomField, gaussian_random_field
from ._spectral import SpectralGrid

__all__ = [
    "ETDRK",
    "ETDRK1",
    "ETDRK2",
    "ETDRK3",
    "ETDRK4",
    "AbstractEquation",
    "AdvectionDiffusion",
    "Burgers",
    "DarcySolution",
    "ExpRKTableau",
    "GaussianRandomField",
    "KortewegDeVries",
    "KuramotoSivashinsky",
    "NavierStokes2D",
    "PhiExpr",
    "Rollout",
    "SpectralGrid",
    "burgers_dataset",
    "darcy_dataset",
    "darcy_operator",
    "darcy_solve",
    "default_cache_dir",
    "fno_forcing",
    "gaussian_random_field",
    "navier_stokes_dataset",
    "phi",
    "phi_functions",
    "rollout",
]
