"""Shared types of the implicit pillar: the returned :class:`Solution` and the interfaces a method
plugs into its driver through.

- :class:`AbstractSolver`: ``init`` / ``step`` / ``terminate`` of a nonlinear solver; the driver
  in :mod:`._driver` calls ``step`` until ``terminate`` (the solver's verdict) or the budget ends.
- :class:`AbstractLinearSolver`: a Krylov method with its own loop and verdict.
- :class:`AbstractBackward`: how derivatives flow through a solve; the driver calls its
  ``apply`` and never asks which mode it is.

Solvers work on one flat vector: the driver ravels the user's pytree state once, so Anderson
histories and Broyden updates are plain matrix algebra. A solver never loops.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PyTree

from .._core import RESULTS
from ._convergence import Convergence
from ._driver import iterate

#: ``fn(x, args) -> residual`` on flat vectors, as the driver hands it to a solver.
FlatFn = Callable[[Float[Array, " n"], Any], Float[Array, " n"]]


class Solution(eqx.Module):
    """What :func:`fixed_point`, :func:`root_find` and :func:`linear_solve` return.

    - ``value``: the solution, a pytree of the same structure as the initial guess.
    - ``result``: a :data:`jaxsolve.RESULTS` code; ``RESULTS.successful`` when converged.
    - ``num_steps``: solver steps taken (matrix-vector products for a Krylov solve).
    - ``residual``: the norm of the residual at ``value`` (``fn(z) - z`` for a fixed point,
      ``F(x)`` for a root, ``A x - b`` for a linear system), with the norm the solve used.
    - ``trace``: ``None`` unless asked for (``trace_length=k`` of :func:`fixed_point`,
      :func:`root_find`, :class:`DEQ`): then a length-``k`` array whose entry ``i`` is that
      residual norm at iterate ``i`` (entry 0 at the initial guess) for ``i <= num_steps``,
      padded with NaN after the last step (steps past ``k - 1`` are not recorded).

    Under ``jax.vmap`` every field is batched, so each member has its own code and step count.
    """

    value: PyTree[Array]
    result: RESULTS
    num_steps: Int[Array, ""]
    residual: Float[Array, ""]
    trace: Float[Array, " trace_length"] | None = None

    @property
    def successful(self):
        """Boolean array: ``result == RESULTS.successful`` (per member under vmap)."""
        return self.result == RESULTS.successful


class AbstractSolver(eqx.Module):
    r"""A nonlinear solver for ``F(x) = 0`` on a flat vector, driven by :mod:`._driver`.

    ``init(fn, x, fx, args)`` builds the solver state (histories, Jacobian approximations) from
    the initial iterate and its residual ``fx = fn(x, args)``; ``step(fn, x, fx, args, state)``
    returns the next iterate and state. The driver evaluates ``fn`` at the new iterate once and
    passes it to the next ``step``, so a solver that only needs residuals costs one evaluation of
    ``fn`` per step. For a fixed point ``z = f(z)`` the residual is ``F(z) = f(z) - z``.

    ``terminate`` is the solver's verdict on an iterate (as optimistix's): whether to stop and
    with which code. The default is the :class:`Convergence` test; a solver that can tell more
    (a breakdown of its own) overrides it. The driver alone ends the budget
    (``RESULTS.max_steps_reached``).
    """

    @abc.abstractmethod
    def init(self, fn: FlatFn, x: Array, fx: Array, args: Any) -> PyTree[Array]:
        """Initial solver state."""

    @abc.abstractmethod
    def step(
        self, fn: FlatFn, x: Array, fx: Array, args: Any, state: PyTree[Array]
    ) -> tuple[Array, PyTree[Array]]:
        """One iteration: ``(x_next, state_next)``."""

    def terminate(
        self,
        x: Array,
        fx: Array,
        state: PyTree[Array],
        convergence: Convergence,
        initial_norm: Float[Array, ""],
    ) -> tuple[Bool[Array, ""], RESULTS]:
        r"""``(done, result)`` at the iterate ``x`` with residual ``fx``; ``result`` is read
        only where ``done``.

        Done when :math:`\|F / (\text{atol} + \text{rtol}|x|)\| \le 1` (``successful``), when
        :math:`\|F\|` exceeds ``divergence_factor`` times ``initial_norm``, its value at the
        initial guess (``diverged``), or when ``x`` or ``fx`` is not finite (``nonfinite``).
        """
        c = convergence
        scale = c.atol + c.rtol * jnp.abs(x)
        # Both norms in one batched reduction (one pass over fx instead of two).
        scaled, rnorm = jax.vmap(c.norm)(jnp.stack([fx / scale, fx]))
        # A NaN or infinity in the residual makes its norm non-finite, and a NaN in x makes the
        # scale, hence the scaled norm, NaN: no separate pass over the state is needed.
        finite = jnp.isfinite(rnorm) & jnp.isfinite(scaled)
        converged = scaled <= 1
        diverged = rnorm > c.divergence_factor * initial_norm
        result = RESULTS.where(
            finite,
            RESULTS.where(converged, RESULTS.successful, RESULTS.diverged),
            RESULTS.nonfinite,
        )
        return (~finite) | converged | diverged, result

    def solve_linear(
        self, matvec: Callable[[Array], Array], b: Array, convergence: Convergence, x0=None
    ) -> tuple[Array, RESULTS, Int[Array, ""], Float[Array, ""]]:
        """Solve ``matvec(x) = b`` by running this solver on the residual ``A x - b`` (from
        ``x0``, default zero); ``(x, result, num_steps, residual_norm)``. :class:`Picard` on it
        is the Richardson iteration."""
        x0 = jnp.zeros_like(b) if x0 is None else x0
        return iterate(lambda x, _: matvec(x) - b, x0, None, self, convergence)


class AbstractLinearSolver(eqx.Module):
    """A Krylov method for ``A x = b`` with ``A`` given only as a matrix-vector product.

    ``solve_linear(matvec, b, convergence, x0=None)`` returns ``(x, result, num_matvecs,
    residual_norm)`` on flat vectors; it stops when ``||b - A x||_2 <= atol + rtol ||b||_2``
    (a preconditioned :class:`CG`: the same with ``M^{-1}`` applied to both vectors;
    ``convergence``'s tolerances; its ``max_steps`` counts matrix-vector products, its norm and
    divergence bound are not used). ``x0=None`` starts from zero without spending a product on
    ``A 0``. Nonlinear solvers have the same method, so a driver calls either kind alike.
    """

    @abc.abstractmethod
    def solve_linear(
        self, matvec: Callable[[Array], Array], b: Array, convergence: Convergence, x0=None
    ) -> tuple[Array, RESULTS, Int[Array, ""], Float[Array, ""]]:
        """Solve ``A x = b``."""

    def solve(
        self,
        matvec: Callable[[Array], Array],
        b: Array,
        x0: Array | None,
        rtol: Array,
        atol: Array,
        max_steps: Array,
    ) -> tuple[Array, RESULTS, Array, Array]:
        """:meth:`solve_linear` with the tolerances as separate arguments."""
        convergence = Convergence(rtol=rtol, atol=atol, max_steps=max_steps)
        return self.solve_linear(matvec, b, convergence, x0)


class AbstractBackward(eqx.Module):
    """How a solve is differentiated: :class:`ImplicitDiff`, :class:`JacobianFree`,
    :class:`PhantomGradient`, or a new mode as one subclass; the drivers only call
    :meth:`apply`.

    A mode must keep the guarantee of every driver: a derivative through a solve whose result
    is not successful is NaN (``throw=False``) or raises (``throw=True``), in forward and
    reverse mode and per member under ``jax.vmap``.
    """

    @abc.abstractmethod
    def apply(
        self,
        primal: Callable,
        residual: Callable,
        args: PyTree,
        z0: PyTree[Array],
        *,
        convergence: Convergence,
        throw: bool,
        where: str,
    ) -> tuple[PyTree[Array], Any]:
        """Run the solve and attach this mode's derivatives: ``(z, aux)``.

        Args:
            primal: ``primal(residual, args, z0) -> (z, aux)`` runs the solve (without
                derivatives of its own); ``primal.result_of(aux)`` is its code, the one that
                decides whether derivatives are NaN or raise (``None``: no code to check).
            residual: ``residual(z, args)``, zero at the solution; ``z`` is differentiated with
                respect to ``args`` and the arrays ``residual`` holds.
            args: the differentiable inputs.
            z0: the initial guess (zero derivative).
            convergence: the forward solve's rule, the default of a mode's own tolerances.
            throw: the forward solve's ``throw``, which decides between NaN and an error.
            where: the entry point, for messages.
        """
