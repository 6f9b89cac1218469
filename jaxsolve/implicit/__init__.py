"""Pillar 3 — implicit layers: fixed points, roots, implicit differentiation, DEQ layers.

:func:`fixed_point` and :func:`root_find` run one ``lax.while_loop`` driver over a solver's
``step`` (:class:`Picard`, :class:`Anderson`, :class:`Broyden`, :class:`Newton`) on any pytree
state and return a :class:`Solution` with a :data:`jaxsolve.RESULTS` code. Derivatives with
respect to the arguments come from the implicit function theorem in forward and reverse mode
(:class:`ImplicitDiff`, whose linear system is solved by :class:`GMRES`, :class:`BiCGStab`,
:class:`CG`, any of the solvers or a lineax solver), or from the cheaper :class:`JacobianFree` and
:class:`PhantomGradient`; each is an :class:`AbstractBackward` whose ``apply`` the drivers call.
A solver's ``terminate`` decides convergence against one :class:`Convergence` rule
(tolerances, norm, budget, divergence bound).
:func:`custom_root` makes any solver differentiable from its optimality conditions;
:class:`DEQ` and :class:`ConvergentGraphSolver` are Equinox layers built on the same pieces;
``_deq_training`` adds torchdeq's training toolkit (spectral / weight normalisation, the
fixed-point correction loss, initial-guess policies, a multiscale cell).
:class:`DCDM` is the learned Deep Conjugate Direction Method for SPD systems.
:func:`hypergradient` and :func:`bilevel_minimize` solve bilevel problems (implicit, unrolled or
penalty hypergradients); :func:`as_optimistix` runs this pillar's solvers inside optimistix.
"""

from ._anderson import Anderson
from ._base import AbstractBackward, AbstractLinearSolver, AbstractSolver, Solution
from ._bilevel import (
    AbstractHypergradient,
    BilevelResult,
    Hypergradient,
    ImplicitHypergradient,
    OptaxSolver,
    PenaltyHypergradient,
    UnrolledHypergradient,
    bilevel_minimize,
    hypergradient,
)
from ._broyden import Broyden
from ._convergence import Convergence
from ._custom_root import custom_root
from ._dcdm import DCDM, DirectionNet, dcdm_loss
from ._deq import DEQ, DEQOutput, hutchinson_frobenius
from ._deq_training import (
    AbstractInit,
    CorrectionOutput,
    MultiscaleCell,
    Previous,
    RandomNormal,
    RandomRestart,
    SpectralNormCell,
    WeightNormCell,
    Zeros,
    fixed_point_correction,
    spectral_norm,
    update_spectral_norm,
    weight_norm,
    with_solvers,
)
from ._graph_solver import ConvergentGraphSolver
from ._implicit_diff import ImplicitDiff
from ._krylov import CG, GMRES, BiCGStab
from ._lineax import LineaxSolver
from ._newton import Newton
from ._norms import max_norm, rms_norm, two_norm
from ._optimistix import OptimistixSolver, as_optimistix
from ._picard import Picard
from ._solve import fixed_point, linear_solve, root_find
from ._unrolled import JacobianFree, PhantomGradient

__all__ = [
    "CG",
    "DCDM",
    "DEQ",
    "GMRES",
    "AbstractBackward",
    "AbstractHypergradient",
    "AbstractInit",
    "AbstractLinearSolver",
    "AbstractSolver",
    "Anderson",
    "BiCGStab",
    "BilevelResult",
    "Broyden",
    "Convergence",
    "ConvergentGraphSolver",
    "CorrectionOutput",
    "DEQOutput",
    "DirectionNet",
    "Hypergradient",
    "ImplicitDiff",
    "ImplicitHypergradient",
    "JacobianFree",
    "LineaxSolver",
    "MultiscaleCell",
    "Newton",
    "OptaxSolver",
    "OptimistixSolver",
    "PenaltyHypergradient",
    "PhantomGradient",
    "Picard",
    "Previous",
    "RandomNormal",
    "RandomRestart",
    "Solution",
    "SpectralNormCell",
    "UnrolledHypergradient",
    "WeightNormCell",
    "Zeros",
    "as_optimistix",
    "bilevel_minimize",
    "custom_root",
    "dcdm_loss",
    "fixed_point",
    "fixed_point_correction",
    "hutchinson_frobenius",
    "hypergradient",
    "linear_solve",
    "max_norm",
    "rms_norm",
    "root_find",
    "spectral_norm",
    "two_norm",
    "update_spectral_norm",
    "weight_norm",
    "with_solvers",
]
