r"""The pillar's nonlinear solvers as optimistix solvers: :func:`as_optimistix`.

``optx.fixed_point(fn, ji.as_optimistix(ji.Anderson()), y0)`` and
``optx.root_find(fn, ji.as_optimistix(ji.Broyden()), y0)`` run :class:`Anderson`,
:class:`Broyden`, :class:`Picard` or :class:`Newton` inside optimistix's own loop, with its
adjoints (``optx.ImplicitAdjoint`` and its lineax ``linear_solver``), its ``throw`` and result
codes, and its ``has_aux``. Optimistix has no Anderson acceleration and no Broyden method.

**An adapter, not a shared base.** :class:`OptimistixSolver` is an ``optx.AbstractRootFinder``
that holds one of our solvers; our solvers do not derive from optimistix's classes. The two
contracts use the same method names for different things, so one class cannot serve both
drivers unchanged:

- optimistix calls ``init(fn, y, args, options, f_struct, aux_struct, tags)`` and
  ``step(fn, y, args, options, state, tags) -> (y, state, aux)`` on the user's pytree, and a
  step evaluates ``fn`` itself (``fn`` returning ``(value, aux)``); our driver calls
  ``init(fn, x, fx, args)`` and ``step(fn, x, fx, args, state) -> (x, state)`` on one flat
  vector and hands the step the residual it has already evaluated, so a step costs one
  evaluation of ``fn``.
- optimistix's ``terminate(fn, y, args, options, state, tags)`` reads tolerances from the
  solver (``rtol``, ``atol`` and ``norm`` are abstract fields of every optimistix solver);
  ours reads them from a :class:`Convergence` rule the driver passes, so one solver object
  serves any tolerance and a sweep over tolerances is a ``vmap`` over the rule, not over
  solvers.
- optimistix would become a base of every solver of the pillar, and a change in its abstract
  methods a change in ours; our driver (:mod:`._driver`) and every solver stay as they are.

The adapter carries the tolerances optimistix asks of a solver (``rtol``, ``atol``, ``norm``,
with ours as defaults, and ``divergence_factor``) and runs our ``init`` / ``step`` /
``terminate`` on the flattened problem.

**Same iterates, same verdict, same count.** Optimistix evaluates ``terminate`` before the
first step and after every step, on the state the step returned; the adapter's state holds
the iterate, its residual (one evaluation of ``fn`` per step, as in our driver) and our
solver's verdict on them, so it stops at the same iterate as :func:`fixed_point` /
:func:`root_find` with the same rule, after the same number of steps, and returns that
iterate. Optimistix's ``max_steps`` is the budget (``RESULTS.nonlinear_max_steps_reached``);
our codes map to optimistix's: ``diverged`` to ``nonlinear_divergence``, ``nonfinite`` to
``nonfinite``, ``linear_solve_failed`` to ``breakdown`` (any other failure to
``nonlinear_divergence``). ``optx.fixed_point`` hands a root finder
:math:`F(y) = f(y) - y` — the residual our solvers take for a fixed point — so one adapter
serves both entry points. The final residual norm is in ``sol.stats["residual"]``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optimistix as optx
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Bool, Float, PyTree

from .._core import RESULTS
from ._base import AbstractSolver
from ._convergence import Convergence
from ._norms import max_norm

_WHERE = "jaxsolve.implicit.as_optimistix"


def to_optimistix_result(result: RESULTS) -> optx.RESULTS:
    """A :data:`jaxsolve.RESULTS` code as the ``optx.RESULTS`` code closest to it."""
    out = optx.RESULTS.where(
        result == RESULTS.linear_solve_failed,
        optx.RESULTS.breakdown,
        optx.RESULTS.nonlinear_divergence,
    )
    for ours, theirs in (
        (RESULTS.successful, optx.RESULTS.successful),
        (RESULTS.nonfinite, optx.RESULTS.nonfinite),
        (RESULTS.max_steps_reached, optx.RESULTS.nonlinear_max_steps_reached),
    ):
        out = optx.RESULTS.where(result == ours, theirs, out)
    return out


class _Problem(eqx.Module):
    """The flat view of optimistix's ``fn(y, args) -> (F, aux)``: ``unravel`` of the state
    and ``flat(x, args)``, the residual raveled in the state's dtypes (our solvers' ``fn``)."""

    fn: Callable
    unravel: Callable
    dtypes: tuple = eqx.field(static=True)

    def evaluate(self, x, args):
        """``(F(x) flat, aux)``."""
        value, aux = self.fn(self.unravel(x), args)
        leaves, treedef = jtu.tree_flatten(value)
        leaves = [jnp.asarray(v).astype(d) for v, d in zip(leaves, self.dtypes, strict=True)]
        flat, _ = ravel_pytree(jtu.tree_unflatten(treedef, leaves))
        return flat.astype(x.dtype), aux

    def flat(self, x, args):
        return self.evaluate(x, args)[0]


class _State(eqx.Module):
    """The iterate ``x`` (flat), its residual ``fx``, our solver's ``inner`` state, its verdict
    (``done``, ``result``) on ``x``, and the residual norm at the initial guess (the
    divergence test's reference)."""

    x: Float[Array, " n"]
    fx: Float[Array, " n"]
    inner: PyTree
    done: Bool[Array, ""]
    result: optx.RESULTS
    initial_norm: Float[Array, ""]


class OptimistixSolver(optx.AbstractRootFinder):
    r"""One of the pillar's nonlinear solvers as an ``optx.AbstractRootFinder`` (see the module
    docstring); build it with :func:`as_optimistix`.

    Args:
        solver: :class:`Picard`, :class:`Anderson`, :class:`Broyden` or :class:`Newton`.
        rtol, atol, norm: the test of our ``terminate``,
            :math:`\|F(y) / (\text{atol} + \text{rtol}|y|)\| \le 1` (``norm`` on the pytree;
            ``optx.max_norm``, ``optx.rms_norm``, ``optx.two_norm`` or ours).
        divergence_factor: ``nonlinear_divergence`` when :math:`\|F\|` exceeds this multiple of
            its value at ``y0`` (> 1).
    """

    solver: AbstractSolver
    rtol: float | Float[Array, ""] = 1e-5
    atol: float | Float[Array, ""] = 1e-6
    norm: Callable[[PyTree[Array]], Array] = eqx.field(static=True, default=max_norm)
    divergence_factor: float | Float[Array, ""] = 1e6

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(
                f"{_WHERE}: solver must be a jaxsolve.implicit nonlinear solver (Picard, "
                f"Anderson, Broyden, Newton); got {type(self.solver).__name__}."
            )
        # Concrete values are checked now; traced ones when the solve runs (init).
        self._rule(None)

    def _rule(self, unravel, dtype=None) -> Convergence:
        """The :class:`Convergence` our ``terminate`` reads, checked (its ``max_steps`` is not
        read: optimistix keeps the budget), with the norm on flat vectors via ``unravel`` and
        the tolerances in ``dtype``."""
        rule = Convergence(self.rtol, self.atol, self.norm, 1, self.divergence_factor)
        rule = rule.checked(_WHERE)
        if unravel is None:
            return rule
        rule = rule.flat(unravel)
        return dataclasses.replace(
            rule,
            rtol=jnp.asarray(rule.rtol, dtype),
            atol=jnp.asarray(rule.atol, dtype),
            divergence_factor=jnp.asarray(rule.divergence_factor, dtype),
        )

    def _problem(self, fn, y):
        x, unravel = ravel_pytree(y)
        dtypes = tuple(jnp.result_type(leaf) for leaf in jtu.tree_leaves(y))
        return x, _Problem(fn, unravel, dtypes)

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        del options, aux_struct, tags
        y_struct = jax.eval_shape(lambda: y)
        same = jtu.tree_structure(f_struct) == jtu.tree_structure(y_struct) and all(
            f.shape == s.shape
            for f, s in zip(jtu.tree_leaves(f_struct), jtu.tree_leaves(y_struct), strict=True)
        )
        if not same:
            raise ValueError(
                f"{_WHERE}: fn(y, args) must return a pytree with the structure and shapes of y "
                f"(our solvers solve square systems); y is {y_struct} but fn returned "
                f"{f_struct}."
            )
        x, problem = self._problem(fn, y)
        rule = self._rule(problem.unravel, x.dtype)
        fx, _ = problem.evaluate(x, args)
        r0 = rule.norm(fx)
        inner = self.solver.init(problem.flat, x, fx, args)
        done, result = self.solver.terminate(x, fx, inner, rule, r0)
        return _State(x, fx, inner, done, to_optimistix_result(result), r0)

    def step(self, fn, y, args, options, state, tags):
        del options, tags
        _, problem = self._problem(fn, y)
        rule = self._rule(problem.unravel, state.x.dtype)
        x, inner = self.solver.step(problem.flat, state.x, state.fx, args, state.inner)
        fx, aux = problem.evaluate(x, args)
        done, result = self.solver.terminate(x, fx, inner, rule, state.initial_norm)
        new = _State(x, fx, inner, done, to_optimistix_result(result), state.initial_norm)
        return problem.unravel(x), new, aux

    def terminate(self, fn, y, args, options, state, tags):
        del fn, y, args, options, tags
        # The verdict is on the iterate the last step returned (held in the state), as our
        # driver's; result is read by optimistix only where done.
        return state.done, optx.RESULTS.where(state.done, state.result, optx.RESULTS.successful)

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        del fn, args, options, tags, result
        unravel = ravel_pytree(y)[1]
        residual = self._rule(unravel, state.x.dtype).norm(state.fx)
        return y, aux, {"residual": residual}


def as_optimistix(
    solver: AbstractSolver,
    *,
    rtol: ArrayLike = 1e-5,
    atol: ArrayLike = 1e-6,
    norm: Callable[[PyTree[Array]], Array] = max_norm,
    divergence_factor: ArrayLike = 1e6,
) -> OptimistixSolver:
    r"""``solver`` (:class:`Picard`, :class:`Anderson`, :class:`Broyden`, :class:`Newton`) as an
    optimistix root finder, for ``optx.fixed_point`` and ``optx.root_find`` (module docstring).

    ``rtol``, ``atol``, ``norm`` and ``divergence_factor`` are those of :func:`fixed_point`
    (same defaults, same test), so ``optx.fixed_point(fn, as_optimistix(s, rtol=r, atol=a),
    y0, args, max_steps=m)`` stops at the iterate ``ji.fixed_point(fn, y0, args, solver=s,
    rtol=r, atol=a, max_steps=m)`` returns, after as many steps.
    """
    return OptimistixSolver(solver, rtol, atol, norm, divergence_factor)
