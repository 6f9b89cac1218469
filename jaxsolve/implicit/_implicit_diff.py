r"""Differentiating through a solution by the implicit function theorem: :class:`ImplicitDiff`.

**Implicit differentiation** ("Efficient and Modular Implicit Differentiation", Blondel et al.;
"Deep Equilibrium Models", Bai et al.). If :math:`F(z^*, \theta) = 0` defines :math:`z^*(\theta)`
(for a fixed point :math:`F = f - \mathrm{id}`), the implicit function theorem gives the tangent

.. math:: \partial_z F\; \dot z = -\,\partial_\theta F\; \dot\theta .

It is written as a ``custom_jvp`` whose tangent is a ``lax.custom_linear_solve`` of that system.
JAX transposes the tangent for reverse mode, so ``jax.grad`` solves the adjoint system
:math:`(\partial_z F)^\top u = \bar z` and pulls back :math:`-u^\top \partial_\theta F` — and
``jax.jvp`` / ``jax.jacfwd`` use the tangent system directly. Since the rule calls the solve
again for its primal, derivatives of any order work (``jax.hessian`` through a fixed point).
No iteration of the forward solve is stored: memory does not grow with the iteration count.

The linear system is solved by the :class:`ImplicitDiff` ``solver``: a Krylov method
(:class:`BiCGStab`, :class:`GMRES`, :class:`CG`) or any nonlinear solver (:class:`Picard`,
:class:`Anderson`, ...) run by the same driver on the linear residual :math:`A x - b` — Picard on it is exactly the
fixed-point iteration on the adjoint, :math:`u \leftarrow \bar z + (\partial_z f)^\top u`. The
backward's convergence is checked: with ``throw=True`` a failure raises at run time; with
``throw=False`` the failed solution is NaN, so the gradient is visibly NaN, never a silent zero.

**A derivative through a failed solve is NaN or raises.** The theorem holds at a solution: at
the last iterate of a solve that stopped early (``max_steps_reached``, ``diverged``) the
implicit derivatives are those of a point that is not a fixed point, finite and plausible but
wrong (for :math:`z = a \cos z`, :math:`a = 1/2`, after two Picard steps: 0.747 for the true
0.739). So the forward result code travels into the
derivative rule (the ``custom_jvp`` gets it from the primal, and the linear solve of the tangent
and of the adjoint system reads it): where the forward solve was not successful, the derivative
is NaN (``throw=False`` of the solve) or an error naming the forward failure (``throw=True``),
in forward and reverse mode and at every order. This is checked on the derivative itself, not
only on the value: ``jax.grad`` of a loss that is linear in ``z`` never evaluates the value's
check. Under ``jax.vmap`` each member has its own code, so only the derivatives of the failed
members are NaN (a gradient summed over a batch into shared weights is then NaN as a whole).
:class:`JacobianFree` and :class:`PhantomGradient` (:mod:`._unrolled`) are guarded the same way.
(:class:`DEQ` alone counts a reached iteration budget as its normal case; see its docstring.)
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float

from .._core import RESULTS, check_positive, check_step_budget
from ._base import AbstractBackward, AbstractLinearSolver, AbstractSolver
from ._convergence import Convergence, check_scalar_above
from ._krylov import BiCGStab
from ._lineax import as_linear_solver, transposed


class ImplicitDiff(AbstractBackward):
    r"""Exact derivatives by the implicit function theorem (see the module docstring).

    Args:
        solver: solves the tangent / adjoint system — :class:`BiCGStab` (the default),
            :class:`GMRES`, :class:`CG` (symmetric systems, e.g. optimality conditions of a
            convex objective; it takes a preconditioner), a nonlinear solver run on the
            linear residual (:class:`Picard` = fixed-point iteration on the adjoint,
            :class:`Anderson`, :class:`Broyden`), or any lineax solver (``lx.LU()``,
            ``lx.GMRES(...)``, ..., wrapped in :class:`LineaxSolver`; it keeps its own
            tolerances). A lineax solver that needs operator tags (``lx.CG``, ``lx.Cholesky``:
            a definite tag) or a preconditioner goes in as ``LineaxSolver(solver, tags=...,
            options={"preconditioner": M})``; the tags and ``M`` describe the tangent system's
            operator (:math:`\partial_z f - I` for a fixed point), and reverse mode hands
            lineax their transposes.
        rtol, atol: its tolerances; ``None`` takes those of the forward solve
            (:func:`custom_root`: ``eps ** 0.75`` of the dtype). The forward solve's ``norm``
            is the one a nonlinear solver tests here.
        max_steps: its step budget (matrix-vector products for a Krylov solver).
        throw: raise when the backward solve fails; ``False`` returns NaN instead.

    Why BiCGStab: the backward system of a convergent fixed point is :math:`I - J^\top` with
    :math:`\rho(J) < 1`. BiCGStab solves it with two products per step and no basis, where each
    GMRES(m) product also pays for five products with an (m + 1)-vector basis and its
    bookkeeping — under ``jax.vmap`` for every member (timings against GMRES and against
    backprop through the unrolled iterations: ``benchmarks/README.md``). BiCGStab's residual
    need not fall monotonically and the method can break down (a zero inner product); either
    way a solve that does not converge is reported (``throw``), and ``GMRES()`` (restart 20,
    residual non-increasing) is the choice for a strongly non-normal Jacobian where BiCGStab
    fails.

    A derivative through a solve whose result is not successful is NaN (``throw=False`` of the
    solve) or raises (``throw=True``), whatever this backward solve does: the implicit function
    theorem gives the derivative of a fixed point, and the last iterate of a failed solve is not
    one (see the module docstring). :func:`custom_root` has no result code of its own: there
    this ``throw`` decides, for a code the decorated solver returns in its ``aux``.

    Precision on accelerators: on GPUs and TPUs a float32 matrix product defaults to TF32 or
    bfloat16 arithmetic (relative error ~1e-3), so ``f`` and its Jacobian products are only that
    accurate, and a backward tolerance far below it may not be reached. Run under
    ``jax.default_matmul_precision("float32")``, or pass a looser ``rtol``.
    """

    solver: AbstractSolver | AbstractLinearSolver = eqx.field(
        default_factory=BiCGStab, converter=as_linear_solver
    )
    rtol: float | Float[Array, ""] | None = None
    atol: float | Float[Array, ""] | None = None
    max_steps: int | ArrayLike = 256
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not isinstance(self.solver, (AbstractSolver, AbstractLinearSolver)):
            raise TypeError(
                "ImplicitDiff solver must be a jaxsolve.implicit solver (GMRES, CG, Picard, "
                f"Anderson, Broyden, Newton) or a lineax solver; got {type(self.solver).__name__}."
            )
        for name in ("rtol", "atol"):
            if getattr(self, name) is not None:
                check_positive(f"ImplicitDiff {name}", getattr(self, name))
        check_step_budget("ImplicitDiff max_steps", self.max_steps)

    def apply(self, primal, residual, args, z0, *, convergence, throw, where):
        # This mode's own values are checked again here, not only in __check_init__: a traced
        # one (a sweep) is checked when the compiled code runs, so a negative tolerance or
        # budget is named instead of surfacing as a backward solve that failed. The forward
        # solve's tolerances, the default, were checked by it.
        own = f"{where}: ImplicitDiff"
        rtol = convergence.rtol if self.rtol is None else check_scalar_above(own, "rtol", self.rtol)
        atol = convergence.atol if self.atol is None else check_scalar_above(own, "atol", self.atol)
        max_steps = check_step_budget(f"{own} max_steps", self.max_steps)
        rule = Convergence(rtol=rtol, atol=atol, norm=convergence.norm, max_steps=max_steps)
        solve = no_grad(_BackwardSolve(self, rule, where, throw))
        return implicit_solution(residual, args, z0, primal=primal, backward=solve)


def no_grad(tree):
    """``stop_gradient`` on every inexact array leaf, other leaves untouched."""
    return jtu.tree_map(lambda x: lax.stop_gradient(x) if eqx.is_inexact_array(x) else x, tree)


# ----------------------------------------------------------------------------------------------
# Linear solves (the backward systems), with failures raised or turned into NaN.


_FAILURES = ("max_steps_reached", "nonfinite", "diverged", "linear_solve_failed")


def raise_or_nan(x, result, throw, where, hint=""):
    """Raise (``throw``) or NaN-fill ``x`` where ``result`` is not successful. The message is
    ``where: <the code's message>`` followed by ``hint``."""
    failed = result != RESULTS.successful
    if throw:
        index = sum(
            jnp.where(result == getattr(RESULTS, name), i, 0) for i, name in enumerate(_FAILURES)
        )
        msgs = [f"{where}: {RESULTS[getattr(RESULTS, name)]}{hint}" for name in _FAILURES]
        return eqx.branched_error_if(x, failed, index, msgs)
    return jtu.tree_map(lambda leaf: jnp.where(failed, jnp.nan, leaf), x)


def failed_derivative_message(where):
    """The start of the error raised for a derivative through a failed solve."""
    return f"{where}: a derivative was requested through a solve that failed"


class _BackwardSolve(eqx.Module):
    r"""The ``solve`` / ``transpose_solve`` handed to ``lax.custom_linear_solve``.

    ``convergence`` is the backward solve's rule. ``forward_result`` is the forward solve's
    code, filled in by the derivative rule (``None`` when the forward solve has none); where it
    is not successful the system is not solved (its right-hand side is zeroed, which every
    solver finishes at once) and the answer is NaN (``forward_throw=False``) or an error naming
    ``forward_where`` and the code.

    ``transpose_system`` marks the ``transpose_solve`` (reverse mode's adjoint system
    :math:`A^\top u = \bar z`): a solver that describes its operator (a lineax solver's tags
    and preconditioner) is handed the transposed description (:func:`._lineax.transposed`).
    """

    backward: ImplicitDiff
    convergence: Convergence
    forward_where: str = eqx.field(static=True, default="jaxsolve.implicit")
    forward_throw: bool = eqx.field(static=True, default=True)
    forward_result: RESULTS | None = None
    transpose_system: bool = eqx.field(static=True, default=False)

    def given(self, forward_result):
        """This solve, guarded by the forward solve's code ``forward_result`` (or ``None``)."""
        return eqx.tree_at(
            lambda s: s.forward_result, self, forward_result, is_leaf=lambda x: x is None
        )

    def transpose(self):
        """The solve of the transposed system (``lax.custom_linear_solve``'s other one)."""
        return dataclasses.replace(self, transpose_system=not self.transpose_system)

    def __call__(self, matvec, b):
        b_flat, unravel = ravel_pytree(b)
        forward_failed = None
        if self.forward_result is not None:
            forward_failed = self.forward_result != RESULTS.successful
            # A zero right-hand side, which every solver finishes at once (zero is its
            # solution), so under vmap a failed member does not keep the loop running.
            b_flat = jnp.where(forward_failed, jnp.zeros_like(b_flat), b_flat)
        mv = lambda x: ravel_pytree(matvec(unravel(x)))[0].astype(b_flat.dtype)
        rule = self.convergence.flat(unravel)
        solver = self.backward.solver
        if self.transpose_system:
            solver = transposed(solver)
        x, result, _, _ = solver.solve_linear(mv, b_flat, rule)
        where = (
            f"{self.forward_where}: the implicit-differentiation (backward/tangent) linear solve "
            f"with {type(self.backward.solver).__name__} failed ({RESULTS[RESULTS.backward_failed]})"
        )
        hint = ""
        if jnp.finfo(b_flat.dtype).bits <= 32:
            hint = (
                " (On a GPU or TPU, float32 matrix products default to TF32 / bfloat16, relative "
                "error ~1e-3, which can keep this solve from its tolerance: run under "
                "jax.default_matmul_precision('float32'), or pass a looser ImplicitDiff(rtol=...).)"
            )
        if forward_failed is not None:
            # The forward failure is the one to report; this solve's own verdict means nothing.
            result = RESULTS.where(forward_failed, RESULTS.successful, result)
        x = raise_or_nan(x, result, self.backward.throw, where, hint)
        if forward_failed is not None:
            where = failed_derivative_message(self.forward_where)
            x = raise_or_nan(x, self.forward_result, self.forward_throw, where)
        return unravel(x)


# ----------------------------------------------------------------------------------------------
# The custom_jvp.


def _split_perturbed(tree, tangents):
    """Leaves of ``tree`` that carry a (non-symbolic-zero) tangent, and a rebuild function."""
    leaves, treedef = jtu.tree_flatten(tree, is_leaf=lambda x: x is None)
    # The tangents mirror the tree with None for non-arrays and symbolic zeros, so both
    # flatten to the same number of leaves when None counts as a leaf.
    t_leaves = jtu.tree_leaves(tangents, is_leaf=lambda x: x is None)
    idx = [i for i, t in enumerate(t_leaves) if t is not None]

    def rebuild(new):
        full = list(leaves)
        for i, leaf in zip(idx, new, strict=True):
            full[i] = leaf
        return jtu.tree_unflatten(treedef, full)

    return [leaves[i] for i in idx], [t_leaves[i] for i in idx], rebuild


def fresh_scalars(tree):
    """Python floats become arrays; scalar float tracers get a fresh primal (``x * 1``).

    ``jax.jvp(f, (0.7,), ...)`` keeps the Python float ``0.7`` as the primal of its tracer, and a
    custom-JVP rule would then see a non-array primal and drop its tangent. Multiplying by one
    binds a primitive, whose primal output is an array; XLA removes the multiply.
    """

    def fix(x):
        if isinstance(x, (float, complex)) and not isinstance(x, bool):
            return jnp.asarray(x)
        if isinstance(x, jax.core.Tracer) and jnp.ndim(x) == 0 and eqx.is_inexact_array(x):
            return x * 1
        return x

    return jtu.tree_map(fix, tree)


@eqx.filter_custom_jvp
def implicit_solution(residual, params, z0, *, primal, backward):
    """``primal(residual, params, z0) -> (z, aux)`` with ``residual(z, params) = 0`` at ``z``.

    ``z`` is differentiated implicitly with respect to ``residual``'s and ``params``' arrays;
    ``aux`` (codes, counts) is not differentiated; ``z0`` has a zero derivative. ``backward``
    is a :class:`_BackwardSolve`; ``primal.result_of(aux)`` (the forward code, or ``None``)
    guards it, so a derivative through a failed solve is NaN or raises.
    """
    return primal(residual, params, z0)


@implicit_solution.def_jvp
def _implicit_solution_jvp(primals, tangents, *, primal, backward):
    residual, params, z0 = primals
    t_residual, t_params, _ = tangents
    out = implicit_solution(residual, params, z0, primal=primal, backward=backward)
    z, aux = out
    none_aux = jtu.tree_map(lambda _: None, aux)
    diff, t_diff, rebuild = _split_perturbed((residual, params), (t_residual, t_params))
    if not diff:
        return out, (jtu.tree_map(lambda _: None, z), none_aux)

    def residual_of(leaves):
        res, par = rebuild(leaves)
        return res(z, par)

    _, rhs = jax.jvp(residual_of, (diff,), (t_diff,))
    _, lin = jax.linearize(lambda y: residual(y, params), z)
    neg_rhs = jtu.tree_map(jnp.negative, rhs)
    # The forward code goes into the linear solve, which serves the tangent system here and,
    # transposed, the adjoint system of reverse mode: one guard for both modes.
    solve = backward.given(primal.result_of(aux))
    z_dot = lax.custom_linear_solve(lin, neg_rhs, solve=solve, transpose_solve=solve.transpose())
    return out, (z_dot, none_aux)
