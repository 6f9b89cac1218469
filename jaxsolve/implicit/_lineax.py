r"""Lineax solvers for the linear systems of this pillar (the backward solves of
:class:`ImplicitDiff` and :func:`linear_solve`): :class:`LineaxSolver` wraps one, and both accept
a lineax solver directly (``ImplicitDiff(lx.LU())``), wrapping it themselves.

Lineax ("lineax: unified linear solves and linear least-squares in JAX", Rader, Lyons & Kidger)
brings direct solvers (LU, QR, SVD, Cholesky, and Triangular / Diagonal / Tridiagonal for tagged
structure) and its own Krylov methods (CG, GMRES, BiCGStab) with preconditioners.

The operator lineax sees is the matrix-free :math:`A` of the system on one flat vector (the
drivers ravel the user's pytree): for the backward solve of a fixed point
:math:`z = f(z, \theta)` it is :math:`\partial_z f - I`, for a root of :math:`F` it is
:math:`\partial_z F` (optimistix's convention for its ``tags``), and in reverse mode its
transpose. A direct solver materialises it (``n`` products, through lineax's
``FunctionLinearOperator``); a Krylov solver only applies it.

**Tags** say what lineax cannot tell from a function: ``lx.CG`` and ``lx.Cholesky`` need
``lx.positive_semidefinite_tag`` or ``lx.negative_semidefinite_tag`` (a symmetric contraction's
:math:`\partial_z f - I` is negative definite; the Jacobian of the gradient of a strictly convex
function is positive definite), ``lx.Triangular`` a triangular tag, ``lx.Diagonal`` the diagonal
tag. Reverse mode solves with :math:`A^\top`, so :meth:`LineaxSolver.transpose` hands lineax the
transposed tags (lower and upper triangular swap) and the transposed preconditioner: giving the
transposed system the tags of :math:`A` would make ``lx.Triangular`` read the wrong triangle and
return a plausible wrong gradient.

**Preconditioners** go in ``options={"preconditioner": M}`` as lineax takes them: a lineax
operator :math:`M \approx A^{-1}` (positive definite for ``lx.CG``, which negates a negative
definite :math:`A` and so wants :math:`M \approx -A^{-1}`). ``M`` may act on the pytree of the
state (``in_structure`` that of ``z``) or on the flat vector; it is raveled to the flat system.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jax.flatten_util import ravel_pytree

from .._core import RESULTS
from ._base import AbstractLinearSolver, AbstractSolver

# Lineax solvers that read options["preconditioner"]; the direct solvers would ignore it.
_PRECONDITIONED = (lx.CG, lx.GMRES, lx.BiCGStab, lx.Normal)
_DEFINITE_TAGS = frozenset({lx.positive_semidefinite_tag, lx.negative_semidefinite_tag})
_KNOWN_OPTIONS = ("preconditioner",)


def _tags(tags):
    """``tags`` (one tag or an iterable of them) as a frozenset."""
    if isinstance(tags, (frozenset, set, tuple, list)):
        return frozenset(tags)
    return frozenset([tags])


def _needed_tags(solver):
    """``(tags, what)``: one of ``tags`` must be given for ``solver`` (lineax refuses it
    otherwise), or ``None`` where it needs none."""
    if isinstance(solver, (lx.CG, lx.Cholesky)):
        return _DEFINITE_TAGS, (
            "lx.positive_semidefinite_tag or lx.negative_semidefinite_tag (for a fixed point the "
            "operator is d f/dz - I, negative definite for a symmetric contraction; for a root "
            "of F it is dF/dz)"
        )
    if isinstance(solver, lx.Triangular):
        tri = frozenset({lx.lower_triangular_tag, lx.upper_triangular_tag})
        return tri, "lx.lower_triangular_tag or lx.upper_triangular_tag"
    if isinstance(solver, lx.Diagonal):
        return frozenset({lx.diagonal_tag}), "lx.diagonal_tag"
    if isinstance(solver, lx.Tridiagonal):
        return frozenset({lx.tridiagonal_tag}), "lx.tridiagonal_tag"
    return None


def _flat_operator(operator, structure):
    """The lineax ``operator`` as one on the flat vector of ``structure`` (a
    ``jax.ShapeDtypeStruct``): as it is where it already acts there, else raveled around its
    own (pytree) ``in_structure``, keeping the tags lineax's solvers check."""
    in_struct = operator.in_structure()
    if eqx.tree_equal(in_struct, structure) is True:
        return operator
    if jtu.tree_structure(in_struct) != jtu.tree_structure(operator.out_structure()):
        raise ValueError(
            "LineaxSolver options['preconditioner'] must map the state's space to itself; got "
            f"in_structure {in_struct} and out_structure {operator.out_structure()}."
        )
    zeros = jtu.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), in_struct)
    flat, unravel = ravel_pytree(zeros)
    if flat.shape != structure.shape:
        raise ValueError(
            "LineaxSolver options['preconditioner'] must act on the state (size "
            f"{structure.shape[0]}); its in_structure {in_struct} has size {flat.shape[0]}."
        )
    tags = [
        tag
        for tag, holds in (
            (lx.symmetric_tag, lx.is_symmetric),
            (lx.positive_semidefinite_tag, lx.is_positive_semidefinite),
            (lx.negative_semidefinite_tag, lx.is_negative_semidefinite),
            (lx.diagonal_tag, lx.is_diagonal),
        )
        if holds(operator)
    ]

    def mv(v):
        return ravel_pytree(operator.mv(unravel(v.astype(flat.dtype))))[0].astype(structure.dtype)

    return lx.FunctionLinearOperator(mv, structure, tags=tags)


class LineaxSolver(AbstractLinearSolver):
    """A :mod:`lineax` solver as a linear solver of this pillar (see the module docstring).

    Args:
        solver: a ``lineax.AbstractLinearSolver`` (``lx.LU()``, ``lx.GMRES(rtol, atol)``, ...).
        tags: lineax operator tags (one or several) that its solver needs and the matrix-free
            operator cannot tell: ``lx.positive_semidefinite_tag`` or
            ``lx.negative_semidefinite_tag`` for ``lx.CG`` and ``lx.Cholesky`` (which raise
            without one), a triangular tag for ``lx.Triangular``. They describe the operator of
            the system as written (for a fixed point :math:`\\partial_z f - I`); reverse mode
            transposes them.
        options: lineax's run-time options for ``solver``: ``{"preconditioner": M}`` with a
            lineax operator ``M`` (``lx.CG``, ``lx.GMRES``, ``lx.BiCGStab``, ``lx.Normal``).

    The lineax solver keeps its own tolerances and budget (lineax's iterative solvers take
    ``rtol``, ``atol`` and ``max_steps``); the :class:`Convergence` rule handed to
    :meth:`solve_linear` is not read. ``num_steps`` is lineax's count where it reports one
    (0 for a direct solver); the residual is the true :math:`\\|b - Ax\\|_2` (one product). A
    lineax failure is ``RESULTS.max_steps_reached`` where lineax reached its budget,
    ``RESULTS.nonfinite`` where ``x`` or the residual is not finite, and
    ``RESULTS.linear_solve_failed`` otherwise (a singular matrix, a breakdown).

    Known limitation of lineax 0.1.1: outside ``jax_enable_x64`` its ``lx.BiCGStab`` declares a
    breakdown when ``alpha``, ``omega`` or ``rho`` is below 1e-16 — signed, so any negative
    value — and on the negative definite backward system of a contractive fixed point ``alpha``
    is negative at the first step: in float32 ``ImplicitDiff(lx.BiCGStab(...))`` then reports
    the failure (NaN or an error, never a wrong number). Our :class:`BiCGStab` (the default) and
    ``lx.GMRES`` do not have this problem.
    """

    solver: Any
    tags: frozenset = eqx.field(static=True, default=frozenset(), converter=_tags)
    options: dict[str, Any] | None = None

    def __check_init__(self):
        if not isinstance(self.solver, lx.AbstractLinearSolver):
            raise TypeError(
                "LineaxSolver solver must be a lineax.AbstractLinearSolver (lx.LU(), "
                f"lx.GMRES(...), ...); got {type(self.solver).__name__}."
            )
        needed = _needed_tags(self.solver)
        if needed is not None and not (needed[0] & self.tags):
            raise ValueError(
                f"LineaxSolver tags: lx.{type(self.solver).__name__} needs {needed[1]}; got "
                f"tags={set(self.tags) or '{}'}. Pass ji.LineaxSolver(lx."
                f"{type(self.solver).__name__}(...), tags=...) where ImplicitDiff or "
                "linear_solve takes a solver."
            )
        if self.options is None:
            return
        if not isinstance(self.options, dict):
            raise TypeError(
                f"LineaxSolver options must be a dict; got {type(self.options).__name__}."
            )
        unknown = sorted(set(self.options) - set(_KNOWN_OPTIONS))
        if unknown:
            raise ValueError(
                f"LineaxSolver options: unknown keys {unknown}; accepted: {list(_KNOWN_OPTIONS)} "
                "(the initial guess comes from the solve itself)."
            )
        preconditioner = self.options.get("preconditioner")
        if preconditioner is not None:
            if not isinstance(preconditioner, lx.AbstractLinearOperator):
                raise TypeError(
                    "LineaxSolver options['preconditioner'] must be a lineax linear operator "
                    f"(lx.MatrixLinearOperator, lx.DiagonalLinearOperator, ...); got "
                    f"{type(preconditioner).__name__}."
                )
            if not isinstance(self.solver, _PRECONDITIONED):
                raise ValueError(
                    f"LineaxSolver options['preconditioner']: lx.{type(self.solver).__name__} "
                    "takes no preconditioner (lx.CG, lx.GMRES, lx.BiCGStab and lx.Normal do)."
                )

    def transpose(self) -> LineaxSolver:
        """This solver for the transposed system :math:`A^\\top x = b`: transposed tags and
        preconditioner (what reverse mode solves)."""
        options = self.options
        if options is not None and options.get("preconditioner") is not None:
            options = dict(options, preconditioner=options["preconditioner"].transpose())
        return LineaxSolver(self.solver, lx.transpose_tags(self.tags), options)

    def solve_linear(self, matvec, b, convergence, x0=None):
        del convergence  # the lineax solver carries its own
        structure = jax.ShapeDtypeStruct(b.shape, b.dtype)
        operator = lx.FunctionLinearOperator(matvec, structure, tags=self.tags)
        options = {} if x0 is None else {"y0": x0}
        preconditioner = (self.options or {}).get("preconditioner")
        if preconditioner is not None:
            options["preconditioner"] = _flat_operator(preconditioner, structure)
        sol = lx.linear_solve(operator, b, self.solver, options=options, throw=False)
        x = sol.value
        rnorm = jnp.linalg.norm(b - matvec(x))
        failure = RESULTS.where(
            sol.result == lx.RESULTS.max_steps_reached,
            RESULTS.max_steps_reached,
            RESULTS.linear_solve_failed,
        )
        result = RESULTS.where(
            jnp.isfinite(rnorm) & jnp.all(jnp.isfinite(x)),
            RESULTS.where(sol.result == lx.RESULTS.successful, RESULTS.successful, failure),
            RESULTS.nonfinite,
        )
        num_steps = jnp.asarray(sol.stats.get("num_steps", 0), jnp.int32)
        return x, result, num_steps, rnorm


def transposed(solver):
    """``solver`` for the transposed system: :meth:`LineaxSolver.transpose` for a lineax
    solver; the pillar's own solvers need nothing (a Krylov method only calls the transposed
    product it is given; :class:`CG`'s preconditioner is symmetric)."""
    return solver.transpose() if isinstance(solver, LineaxSolver) else solver


def as_linear_solver(solver):
    """``solver`` as the pillar's drivers call it: a lineax solver wrapped in
    :class:`LineaxSolver`, anything else unchanged (and checked by the caller)."""
    if isinstance(solver, (AbstractSolver, AbstractLinearSolver)):
        return solver
    return LineaxSolver(solver) if isinstance(solver, lx.AbstractLinearSolver) else solver
