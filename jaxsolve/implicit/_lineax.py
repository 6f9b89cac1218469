"""Lineax solvers for the linear systems of this pillar (the backward solves of
:class:`ImplicitDiff` and :func:`linear_solve`): :class:`LineaxSolver` wraps one, and both accept
a lineax solver directly (``ImplicitDiff(lx.LU())``), wrapping it themselves.

Lineax ("lineax: unified linear solves and linear least-squares in JAX", Rader, Lyons & Kidger)
brings direct solvers (LU, QR, Cholesky, SVD) for small dense systems and its own Krylov methods.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import RESULTS
from ._base import AbstractLinearSolver, AbstractSolver


class LineaxSolver(AbstractLinearSolver):
    """A :mod:`lineax` solver as a linear solver of this pillar.

    Args:
        solver: a ``lineax.AbstractLinearSolver`` (``lx.LU()``, ``lx.GMRES(rtol, atol)``, ...).
        tags: lineax operator tags that its solver needs and the matrix-free operator cannot
            tell, e.g. ``lx.positive_semidefinite_tag`` for ``lx.CG``.

    The lineax solver keeps its own tolerances and budget (lineax's iterative solvers take
    ``rtol``, ``atol`` and ``max_steps``); the :class:`Convergence` rule handed to
    :meth:`solve_linear` is not read. ``num_steps`` is lineax's count where it reports one
    (0 for a direct solver); the residual is the true :math:`\\|b - Ax\\|_2` (one product). A
    lineax failure is ``RESULTS.max_steps_reached`` where lineax reached its budget,
    ``RESULTS.nonfinite`` where ``x`` or the residual is not finite, and
    ``RESULTS.linear_solve_failed`` otherwise (a singular matrix, a breakdown).
    """

    solver: Any
    tags: Any = eqx.field(static=True, default=())

    def solve_linear(self, matvec, b, convergence, x0=None):
        import lineax as lx

        del convergence  # the lineax solver carries its own
        operator = lx.FunctionLinearOperator(
            matvec, jax.ShapeDtypeStruct(b.shape, b.dtype), tags=self.tags
        )
        options = {} if x0 is None else {"y0": x0}
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


def as_linear_solver(solver):
    """``solver`` as the pillar's drivers call it: a lineax solver wrapped in
    :class:`LineaxSolver`, anything else unchanged (and checked by the caller)."""
    if isinstance(solver, (AbstractSolver, AbstractLinearSolver)):
        return solver
    import lineax as lx

    return LineaxSolver(solver) if isinstance(solver, lx.AbstractLinearSolver) else solver
