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
:class:`DEQ` and :class:`ConvergentGraphSolver` are Equinox layers built on the same pieces.
"""

from ._anderson import Anderson
from ._base import AbstractBackward, AbstractLinearSolver, AbstractSolver, Solution
from ._broyden import Broyden
from ._convergence import Convergence
from ._custom_root import custom_root
from ._deq import DEQ, DEQOutput, hutchinson_frobenius
from ._graph_solver import ConvergentGraphSolver
from ._implicit_diff import ImplicitDiff
from ._krylov import CG, GMRES, BiCGStab
from ._lineax import LineaxSolver
from ._newton import Newton
from ._norms import max_norm, rms_norm, two_norm
from ._picard import Picard
from ._solve import fixed_point, linear_solve, root_find
from ._unrolled import JacobianFree, PhantomGradient

__all__ = [
    "CG",
    "DEQ",
    "GMRES",
    "AbstractBackward",
    "AbstractLinearSolver",
    "AbstractSolver",
    "Anderson",
    "BiCGStab",
    "Broyden",
    "Convergence",
    "ConvergentGraphSolver",
    "DEQOutput",
    "ImplicitDiff",
    "JacobianFree",
    "LineaxSolver",
    "Newton",
    "PhantomGradient",
    "Picard",
    "Solution",
    "custom_root",
    "fixed_point",
    "hutchinson_frobenius",
    "linear_solve",
    "max_norm",
    "rms_norm",
    "root_find",
    "two_norm",
]
