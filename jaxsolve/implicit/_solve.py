r"""Public entry points: :func:`fixed_point`, :func:`root_find` and :func:`linear_solve`.

They check their arguments, hoist closed-over arrays of ``fn`` into explicit inputs (so
derivatives with respect to them are implicit too), run the one driver of :mod:`._driver` and
hand the run to the backward mode's ``apply``, which attaches the derivatives. The tolerances,
norm and budget travel as one :class:`Convergence`, which the call's keywords build.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, PyTree

from .._core import RESULTS, check_int, promote_half
from ._anderson import Anderson
from ._base import AbstractBackward, AbstractLinearSolver, AbstractSolver, Solution
from ._convergence import Convergence
from ._driver import flatten_problem, iterate_traced
from ._implicit_diff import ImplicitDiff, fresh_scalars, no_grad, raise_or_nan
from ._krylov import GMRES
from ._lineax import as_linear_solver
from ._newton import Newton
from ._norms import max_norm

# ----------------------------------------------------------------------------------------------
# Argument checks.


def _shape_of(leaf):
    """``leaf`` as a ``jax.ShapeDtypeStruct`` when it is an array, a shape struct or a number;
    anything else (a function an output holds) unchanged."""
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return leaf
    if eqx.is_array_like(leaf):
        return jax.ShapeDtypeStruct(jnp.shape(leaf), jnp.result_type(leaf))
    return leaf


def _describe(tree):
    def one(leaf):
        s = _shape_of(leaf)
        if not isinstance(s, jax.ShapeDtypeStruct):
            return type(leaf).__name__
        return f"{s.dtype}{list(s.shape)}"

    return str(jtu.tree_map(one, tree))


def check_state(name, z0):
    """``z0`` as a pytree of floating arrays; integer or boolean states, and a pytree holding no
    array, raise (a zero-size array is a valid, trivially converged state).

    Half-precision leaves are promoted to the default float (:func:`jaxsolve._core.promote_half`):
    a tolerance test in 8 bits of mantissa means nothing (a model may still compute in bfloat16;
    its output is cast back to the state's dtype).
    """
    leaves, treedef = jtu.tree_flatten(z0)
    if not leaves:
        raise ValueError(f"{name} must be a pytree holding at least one array; got {z0!r}.")
    out = []
    for leaf in leaves:
        if not eqx.is_array_like(leaf):
            raise TypeError(f"{name} must hold only arrays; got a leaf of type {type(leaf)}.")
        a = jnp.asarray(leaf)
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise TypeError(
                f"{name} must have a real floating dtype (the solution is continuous); got a leaf "
                f"of dtype {a.dtype} and shape {a.shape}. Pass e.g. jnp.asarray({name}, float)."
            )
        out.append(promote_half(a))
    return jtu.tree_unflatten(treedef, out)


def check_output(where, fn_name, z_name, fn, z0, args, call=None):
    """``fn(z0, args)`` must return the structure and shapes of ``z0``; dtypes are cast.
    ``call`` is how the message writes the call (default ``fn_name(z, args)``)."""
    call = f"{fn_name}(z, args)" if call is None else call
    try:
        out = eqx.filter_eval_shape(fn, z0, args)
    except (TypeError, ValueError) as error:
        # Most often a state of the wrong shape (a broadcast or a matrix product in fn fails on
        # it): say which argument fn was called with, not only where inside fn it failed.
        kind = TypeError if isinstance(error, TypeError) else ValueError
        raise kind(
            f"{where}: {call} failed when called with {z_name} = {_describe(z0)} "
            f"(does {z_name} have the shape {fn_name} expects?): {error}"
        ) from error
    # filter_eval_shape (unlike jax.eval_shape, it accepts functions among the arguments, as an
    # Equinox cell holds its activation) returns numbers and other non-arrays as they are.
    out = jtu.tree_map(_shape_of, out)
    arrays = all(isinstance(o, jax.ShapeDtypeStruct) for o in jtu.tree_leaves(out))
    same_tree = arrays and jtu.tree_structure(out) == jtu.tree_structure(z0)
    same_shapes = same_tree and all(
        o.shape == jnp.shape(z)
        for o, z in zip(jtu.tree_leaves(out), jtu.tree_leaves(z0), strict=True)
    )
    # Real floating only: a complex output would be cast to the real state, dropping its
    # imaginary part, and the solve would report a fixed point of Re(fn) as a success.
    floating = arrays and all(jnp.issubdtype(o.dtype, jnp.floating) for o in jtu.tree_leaves(out))
    if not (same_tree and same_shapes and floating):
        raise ValueError(
            f"{where}: {call} must return a pytree with the structure and shapes of "
            f"{z_name} (and real floating dtypes); {z_name} is {_describe(z0)} but {fn_name} "
            f"returned {_describe(out)}."
        )


def check_norm(where, norm, z0, z_name):
    """``norm`` must map a state like ``z0`` to one real scalar: the convergence test compares it
    with 1, and a vector there failed inside the loop with a message that named no argument."""
    out = jtu.tree_map(_shape_of, eqx.filter_eval_shape(norm, z0))
    leaves = jtu.tree_leaves(out)
    # A Python number passes (as jax.eval_shape would have made it a scalar).
    if not (
        len(leaves) == 1
        and isinstance(leaves[0], jax.ShapeDtypeStruct)
        and leaves[0].shape == ()
        and jnp.issubdtype(leaves[0].dtype, jnp.number)
        and not jnp.issubdtype(leaves[0].dtype, jnp.complexfloating)
    ):
        raise ValueError(
            f"{where}: norm must return a real scalar for a state like {z_name} "
            f"({_describe(z0)}); got {_describe(out)}."
        )


def check_methods(where, solver, backward):
    """``solver`` and ``backward`` are what the drivers can call."""
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"{where}: solver must be a jaxsolve.implicit solver (Picard, Anderson, Broyden, "
            f"Newton); got {type(solver).__name__}."
        )
    if not isinstance(backward, AbstractBackward):
        raise TypeError(
            f"{where}: backward must be a jaxsolve.implicit backward mode (ImplicitDiff, "
            f"JacobianFree, PhantomGradient); got {type(backward).__name__}."
        )


# ----------------------------------------------------------------------------------------------
# The residual and the primal solve.


class _Residual(eqx.Module):
    """``F(z, args)``: ``fn(z, args) - z`` for a fixed point, ``fn(z, args)`` for a root."""

    fn: Callable
    fixed_point: bool = eqx.field(static=True)

    def __call__(self, z, args):
        out = self.fn(z, args)
        out = jtu.tree_map(lambda o, y: jnp.asarray(o).astype(y.dtype), out, z)
        if self.fixed_point:
            out = jtu.tree_map(lambda o, y: o - y, out, z)
        return out


def gradient_result(result, budget_is_normal):
    """The code that decides whether a solve's derivatives (and ``throw``) count it as failed:
    ``result`` itself, or with ``max_steps_reached`` passed as successful where a fixed budget is
    the method's normal case (:class:`DEQ`)."""
    if not budget_is_normal:
        return result
    return RESULTS.where(result == RESULTS.max_steps_reached, RESULTS.successful, result)


class _DriverPrimal(eqx.Module):
    """The forward solve a backward mode runs: the driver on the flattened residual."""

    solver: AbstractSolver
    convergence: Convergence
    budget_is_normal: bool = eqx.field(static=True, default=False)
    trace_length: int = eqx.field(static=True, default=0)

    def result_of(self, aux):
        return gradient_result(aux[0], self.budget_is_normal)

    def __call__(self, residual, params, z0):
        x0, fn_flat, unravel = flatten_problem(residual, z0)
        rule = self.convergence.flat(unravel)
        x, result, k, rnorm, trace = iterate_traced(
            fn_flat, x0, params, self.solver, rule, self.trace_length
        )
        return unravel(x), (result, k, rnorm, trace)


class ImplicitSolve(eqx.Module):
    """How a residual is solved and differentiated: the ``solver``, the ``convergence`` rule its
    ``terminate`` reads, the ``backward`` mode (default :class:`ImplicitDiff`) and whether a
    failure raises (``throw``).

    :func:`fixed_point` and :func:`root_find` build one from their keywords for each call;
    :class:`DEQ` and :class:`ConvergentGraphSolver` are one (they derive from it), so the field
    group is written once. ``max_steps``, ``rtol``, ``atol`` and ``norm`` read the rule's values
    under the names of the constructors' keywords.
    """

    solver: AbstractSolver
    backward: AbstractBackward
    convergence: Convergence
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        solver: AbstractSolver,
        backward: AbstractBackward | None,
        convergence: Convergence,
        throw: bool,
    ):
        self.solver = solver
        self.backward = ImplicitDiff() if backward is None else backward
        self.convergence = convergence
        self.throw = throw

    @property
    def max_steps(self):
        return self.convergence.max_steps

    @property
    def rtol(self):
        return self.convergence.rtol

    @property
    def atol(self):
        return self.convergence.atol

    @property
    def norm(self):
        return self.convergence.norm

    def _solve(
        self, where, residual, z0, args, *, budget_is_normal=False, trace_length=0
    ) -> Solution:
        """Solve ``residual(z, args) = 0`` from ``z0``; ``where`` names the entry point in
        messages; ``budget_is_normal`` lets a reached ``max_steps`` pass for derivatives and
        ``throw`` (it is still reported); ``trace_length > 0`` records ``Solution.trace``."""
        check_int(f"{where}: trace_length", trace_length, minimum=0)
        z_name = "z0" if residual.fixed_point else "x0"
        z0 = check_state(z_name, fresh_scalars(z0))
        args = fresh_scalars(args)
        check_methods(where, self.solver, self.backward)
        convergence = self.convergence.checked(where)
        check_output(where, "fn", z_name, residual.fn, z0, args)
        check_norm(where, convergence.norm, z0, z_name)
        fn = eqx.filter_closure_convert(residual.fn, z0, args)
        residual = _Residual(fn, residual.fixed_point)
        primal = no_grad(_DriverPrimal(self.solver, convergence, budget_is_normal, trace_length))
        z, aux = self.backward.apply(
            primal, residual, args, z0, convergence=convergence, throw=self.throw, where=where
        )
        if self.throw:
            z = raise_or_nan(z, primal.result_of(aux), True, where)
        return Solution(z, *aux)


def fixed_point(
    fn: Callable[[PyTree[Array], Any], PyTree[Array]],
    z0: PyTree[ArrayLike],
    args: Any = None,
    *,
    solver: AbstractSolver | None = None,
    max_steps: int | ArrayLike = 256,
    rtol: ArrayLike = 1e-5,
    atol: ArrayLike = 1e-6,
    norm: Callable[[PyTree[Array]], Array] = max_norm,
    backward: AbstractBackward | None = None,
    throw: bool = True,
    divergence_factor: ArrayLike = 1e6,
    trace_length: int = 0,
) -> Solution:
    r"""Solve :math:`z = f(z, \text{args})` for a pytree ``z``, differentiably in ``args``.

    ``fn(z, args)`` must be pure and return the structure and shapes of ``z0`` (floating leaves;
    other precisions are cast to ``z0``'s). ``solver``: :class:`Picard`, :class:`Anderson`
    (default), :class:`Broyden` or :class:`Newton`, all on the residual :math:`F = f - z`.
    ``max_steps``, ``rtol``, ``atol``, ``norm`` and ``divergence_factor`` make the
    :class:`Convergence` rule the solver's ``terminate`` tests: converged when
    :math:`\|F(z) / (\text{atol} + \text{rtol}|z|)\| \le 1` with ``norm`` (default
    :func:`max_norm`); ``rtol``, ``atol``, ``max_steps`` and ``divergence_factor`` may be
    traced (then checked at run time; a traced ``max_steps`` may be 0, for sweeps over budgets).
    A run-time failure is a code in ``Solution.result`` (``max_steps_reached``, ``diverged`` when
    :math:`\|F\|` exceeds ``divergence_factor`` times its initial value, ``nonfinite``);
    ``throw=True`` raises it instead (under ``vmap``: if any member fails).

    ``backward`` (default :class:`ImplicitDiff`, BiCGStab) decides the derivatives with
    respect to ``args`` and to arrays ``fn`` closes over — exact implicit differentiation in both
    forward and reverse mode, or :class:`JacobianFree` / :class:`PhantomGradient`. The derivative
    with respect to ``z0`` is zero. An :class:`ImplicitDiff` without tolerances of its own uses
    ``rtol`` and ``atol`` of this call; its own, where given, take precedence for the backward
    solve.

    A derivative through a solve whose result is not successful is NaN (``throw=False``) or
    raises (``throw=True``), in forward and reverse mode and under ``vmap`` per member: the
    implicit function theorem differentiates a fixed point, and the last iterate of a failed
    solve is not one, so its derivative would be a plausible wrong number.

    ``trace_length=k > 0`` (static) records the residual norm of the first ``k`` iterates in
    ``Solution.trace`` (NaN-padded; see :class:`Solution`); the default 0 records nothing and
    leaves the solve unchanged.
    """
    solver = Anderson() if solver is None else solver
    convergence = Convergence(rtol, atol, norm, max_steps, divergence_factor)
    method = ImplicitSolve(solver, backward, convergence, throw)
    return method._solve(
        "jaxsolve.implicit.fixed_point", _Residual(fn, True), z0, args, trace_length=trace_length
    )


def root_find(
    fn: Callable[[PyTree[Array], Any], PyTree[Array]],
    x0: PyTree[ArrayLike],
    args: Any = None,
    *,
    solver: AbstractSolver | None = None,
    max_steps: int | ArrayLike = 256,
    rtol: ArrayLike = 1e-5,
    atol: ArrayLike = 1e-6,
    norm: Callable[[PyTree[Array]], Array] = max_norm,
    backward: AbstractBackward | None = None,
    throw: bool = True,
    divergence_factor: ArrayLike = 1e6,
    trace_length: int = 0,
) -> Solution:
    r"""Solve :math:`F(x, \text{args}) = 0` (a square system on a pytree ``x``).

    Same contract as :func:`fixed_point` with ``fn = F`` and the default solver :class:`Newton`.
    The convergence test scales :math:`F` like :math:`x`,
    :math:`\|F(x) / (\text{atol} + \text{rtol}|x|)\| \le 1`, so ``F`` should be in the units of
    ``x`` (as :math:`f(x) - x` or a preconditioned residual is). :class:`Picard` and
    :class:`Anderson` iterate :math:`x + \alpha F(x)`, i.e. they treat :math:`F` as
    :math:`g(x) - x`; so do :class:`JacobianFree` and :class:`PhantomGradient`.
    """
    solver = Newton() if solver is None else solver
    convergence = Convergence(rtol, atol, norm, max_steps, divergence_factor)
    method = ImplicitSolve(solver, backward, convergence, throw)
    return method._solve(
        "jaxsolve.implicit.root_find", _Residual(fn, False), x0, args, trace_length=trace_length
    )


# ----------------------------------------------------------------------------------------------
# Linear solves.


class _LinearResidual(eqx.Module):
    """``F(x, b) = A x - b``; ``matvec`` is kept for the primal solve."""

    matvec: Callable

    def __call__(self, x, b):
        out = self.matvec(x)
        return jtu.tree_map(lambda o, y: jnp.asarray(o).astype(y.dtype) - y, out, b)


class _LinearPrimal(eqx.Module):
    solver: AbstractLinearSolver | AbstractSolver
    convergence: Convergence

    def __call__(self, residual, b, _):
        flat, unravel = ravel_pytree(b)
        mv_flat = lambda x: ravel_pytree(residual.matvec(unravel(x)))[0].astype(flat.dtype)
        x, result, k, rnorm = self.solver.solve_linear(
            mv_flat, flat, self.convergence.flat(unravel)
        )
        return unravel(x), (result, k, rnorm)

    def result_of(self, aux):
        return aux[0]


def linear_solve(
    matvec: Callable[[PyTree[Array]], PyTree[Array]],
    b: PyTree[ArrayLike],
    *,
    solver: AbstractLinearSolver | AbstractSolver | lx.AbstractLinearSolver | None = None,
    rtol: ArrayLike = 1e-6,
    atol: ArrayLike = 1e-8,
    max_steps: int | ArrayLike = 256,
    norm: Callable[[PyTree[Array]], Array] = max_norm,
    throw: bool = True,
) -> Solution:
    r"""Solve :math:`A x = b` with :math:`A` given as ``matvec`` (linear in its argument).

    ``solver``: :class:`GMRES` (default), :class:`CG` (symmetric definite ``A``) — both stop at
    :math:`\|b - Ax\|_2 \le \text{atol} + \text{rtol}\|b\|_2` and report that 2-norm (a
    :class:`CG` with a preconditioner :math:`M^{-1}`: the same test and norm of
    :math:`M^{-1}(b - Ax)` and :math:`M^{-1}b`), a lineax solver (its own tolerances; see
    :class:`LineaxSolver`) — or a
    nonlinear solver run by the fixed-point driver on :math:`Ax - b` (its convergence test and
    ``norm``; :class:`Picard` is the Richardson iteration :math:`x + (Ax - b)`, which converges
    when :math:`\rho(I + A) < 1`). Differentiable with respect to ``b`` and to arrays ``matvec``
    closes over, in forward and reverse mode (implicit differentiation of :math:`Ax - b = 0`:
    the tangent and the transposed systems reuse ``solver``, its tolerances and budget, and a
    failure of theirs is raised or NaN as ``throw`` says). As for :func:`fixed_point`, a
    derivative through a solve whose result is not successful is NaN (``throw=False``) or
    raises (``throw=True``).
    """
    solver = as_linear_solver(GMRES() if solver is None else solver)
    if not isinstance(solver, (AbstractLinearSolver, AbstractSolver)):
        raise TypeError(
            f"jaxsolve.implicit.linear_solve: solver must be a jaxsolve.implicit solver or a "
            f"lineax solver; got {type(solver).__name__}."
        )
    where = "jaxsolve.implicit.linear_solve"
    b = check_state("b", b)
    convergence = Convergence(rtol, atol, norm, max_steps).checked(where)
    check_output(where, "matvec", "b", lambda x, _: matvec(x), b, None, "matvec(x)")
    check_norm(where, convergence.norm, b, "b")
    # The residual A x - b and its solution go through the same implicit rule as fixed_point:
    # lax.custom_linear_solve would run the tangent solve without the forward code, and so give
    # a derivative of the solution where the solve had failed. The tangent and adjoint systems
    # reuse the solver, its tolerances and its budget.
    residual = _LinearResidual(eqx.filter_closure_convert(matvec, b))
    primal = no_grad(_LinearPrimal(solver, convergence))
    backward = ImplicitDiff(solver, max_steps=convergence.max_steps, throw=throw)
    x, aux = backward.apply(
        primal, residual, b, b, convergence=convergence, throw=throw, where=where
    )
    if throw:
        x = raise_or_nan(x, primal.result_of(aux), True, where)
    return Solution(x, *aux)
