"""Shared types of the implicit pillar: the returned :class:`Solution` and the solver interfaces.

Solvers work on one flat vector: the driver ravels the user's pytree state once, so Anderson
histories and Broyden updates are plain matrix algebra. A solver never loops; the driver in
:mod:`._driver` calls its ``step`` until the convergence test passes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
from jaxtyping import Array, Float, Int, PyTree

from .._core import RESULTS

#: ``fn(x, args) -> residual`` on flat vectors, as the driver hands it to a solver.
FlatFn = Callable[[Float[Array, " n"], Any], Float[Array, " n"]]


class Solution(eqx.Module):
    """What :func:`fixed_point`, :func:`root_find` and :func:`linear_solve` return.

    - ``value``: the solution, a pytree of the same structure as the initial guess.
    - ``result``: a :data:`jaxsolve.RESULTS` code; ``RESULTS.successful`` when converged.
    - ``num_steps``: solver steps taken (matrix-vector products for a Krylov solve).
    - ``residual``: the norm of the residual at ``value`` (``fn(z) - z`` for a fixed point,
      ``F(x)`` for a root, ``A x - b`` for a linear system), with the norm the solve used.

    Under ``jax.vmap`` every field is batched, so each member has its own code and step count.
    """

    value: PyTree[Array]
    result: RESULTS
    num_steps: Int[Array, ""]
    residual: Float[Array, ""]

    @property
    def successful(self):
        """Boolean array: ``result == RESULTS.successful`` (per member under vmap)."""
        return self.result == RESULTS.successful


class AbstractSolver(eqx.Module):
    """A nonlinear solver for ``F(x) = 0`` on a flat vector, driven by :mod:`._driver`.

    ``init(fn, x, fx, args)`` builds the solver state (histories, Jacobian approximations) from
    the initial iterate and its residual ``fx = fn(x, args)``; ``step(fn, x, fx, args, state)``
    returns the next iterate and state. The driver evaluates ``fn`` at the new iterate once and
    passes it to the next ``step``, so a solver that only needs residuals costs one evaluation of
    ``fn`` per step. For a fixed point ``z = f(z)`` the residual is ``F(z) = f(z) - z``.
    """

    @abc.abstractmethod
    def init(self, fn: FlatFn, x: Array, fx: Array, args: Any) -> PyTree[Array]:
        """Initial solver state."""

    @abc.abstractmethod
    def step(
        self, fn: FlatFn, x: Array, fx: Array, args: Any, state: PyTree[Array]
    ) -> tuple[Array, PyTree[Array]]:
        """One iteration: ``(x_next, state_next)``."""


class AbstractLinearSolver(eqx.Module):
    """A Krylov method for ``A x = b`` with ``A`` given only as a matrix-vector product.

    ``solve(matvec, b, x0, rtol, atol, max_steps)`` returns ``(x, result, num_matvecs,
    residual_norm)`` on flat vectors; it stops when ``||b - A x||_2 <= atol + rtol ||b||_2``.
    ``x0=None`` starts from zero without spending a product on ``A 0``.
    """

    @abc.abstractmethod
    def solve(
        self,
        matvec: Callable[[Array], Array],
        b: Array,
        x0: Array | None,
        rtol: Array,
        atol: Array,
        max_steps: Array,
    ) -> tuple[Array, RESULTS, Array, Array]:
        """Solve ``A x = b``."""
