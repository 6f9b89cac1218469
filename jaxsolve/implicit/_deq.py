r"""Deep equilibrium layer: the output is the fixed point of a cell, trained implicitly.

"Deep Equilibrium Models" (Bai, Kolter & Koltun): :math:`z^* = f_\theta(z^*, x)`, found by a
root / fixed-point solver and differentiated by the implicit function theorem (or JFB / phantom
gradients, see :mod:`._implicit_diff`). Warm start: pass the previous fixed point as ``z0``.

Jacobian regularisation ("Stabilizing Equilibrium Models by Jacobian Regularization", Bai,
Koltun & Kolter): the Hutchinson estimate

.. math:: \|J_f(z^*)\|_F^2 = \mathbb{E}_{\epsilon \sim \mathcal N(0, I)} \|J_f(z^*)\,\epsilon\|_2^2
   \approx \frac1M \sum_{m=1}^M \|J_f(z^*)\,\epsilon_m\|_2^2

is returned as ``jacobian_loss`` (unbiased for :math:`\|J\|_F^2`; the paper's code divides by
the state dimension). It is differentiable, so adding a multiple of it to the loss keeps the
cell's Jacobian small and the equilibrium easy to find. Jacobian-vector products are used
(forward mode; same expectation as the paper's vector-Jacobian products).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._core import check_int
from ._anderson import Anderson
from ._base import AbstractBackward, AbstractSolver, Solution
from ._convergence import Convergence
from ._norms import max_norm
from ._solve import ImplicitSolve, _Residual


class DEQOutput(eqx.Module):
    """``value`` (the equilibrium), ``solution`` (codes and counts) and ``jacobian_loss``
    (Hutchinson estimate of :math:`\\|J_f\\|_F^2`, or ``None`` when ``jacobian_samples = 0``)."""

    value: PyTree[Array]
    solution: Solution
    jacobian_loss: Float[Array, ""] | None


def _call_cell(z, args):
    cell, x = args
    return cell(z, x)


def hutchinson_frobenius(fn: Callable, z: PyTree[Array], key: PRNGKeyArray, samples: int):
    """Unbiased estimate of :math:`\\|J_{fn}(z)\\|_F^2` from ``samples`` Gaussian probes."""
    # The count fixes an array length: 0 would average nothing (NaN) and 2.5 would draw 3.
    samples = check_int("hutchinson_frobenius samples", samples)
    leaves, treedef = jtu.tree_flatten(z)

    def one(k):
        probe = [
            jax.random.normal(jax.random.fold_in(k, i), jnp.shape(leaf), jnp.result_type(leaf))
            for i, leaf in enumerate(leaves)
        ]
        _, jv = jax.jvp(fn, (z,), (jtu.tree_unflatten(treedef, probe),))
        return sum(jnp.sum(jnp.square(leaf)) for leaf in jtu.tree_leaves(jv))

    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(samples))
    return jnp.mean(jax.vmap(one)(keys))


class DEQ(ImplicitSolve):
    r"""Equilibrium layer around ``cell(z, x) -> z`` (an Equinox module holding the weights).

    ``__call__(x, z0=None, *, key=None) -> DEQOutput`` solves ``z = cell(z, x)`` from ``z0``
    (warm start) or from ``state_init(x)`` (default: zeros shaped like ``x``). ``solver``,
    ``backward``, ``max_steps``, ``rtol``, ``atol`` and ``norm`` are those of
    :func:`fixed_point`; the last four are held as one :class:`Convergence`
    (``deq.convergence``) and read under their own names too (``deq.rtol``). With
    ``jacobian_samples > 0`` a ``key`` is required and ``jacobian_loss`` is estimated. Single-sample convention: ``jax.vmap`` over a batch. Solver
    hyper-parameters get zero gradients (exclude them from weight decay). ``trace_length=k``
    records the first ``k`` residual norms of each solve in ``solution.trace`` (see
    :class:`Solution`); training tools (normalisation, fixed-point correction, initial-guess
    policies, a multiscale cell) are in :mod:`._deq_training`.

    Failures. A DEQ in training runs a fixed iteration budget, and reaching it is the normal
    case, not an error: the DEQ papers and torchdeq run ``max_steps`` iterations (or stop at the
    tolerance), take the last iterate and differentiate it implicitly all the same, since for a
    small residual :math:`r = f(z) - z` the implicit gradient there is off by :math:`O(\|r\|)`
    — an approximation that training absorbs, and that one member of a batch must not turn into
    a NaN gradient for all the shared weights. So, with ``require_convergence=False`` (the
    default), a solve ending in ``max_steps_reached`` returns its last iterate, reports the
    code in ``solution.result`` and has the implicit derivatives at that iterate; a solve that
    went ``nonfinite`` or ``diverged`` is an error (``throw=True``, the default) or, with
    ``throw=False``, a reported code with NaN derivatives — never a NaN passed on as success.
    ``require_convergence=True`` treats the budget as :func:`fixed_point` does (for inference,
    or to test convergence): ``max_steps_reached`` raises too (``throw``), or gives NaN
    derivatives.
    """

    cell: Callable
    require_convergence: bool = eqx.field(static=True)
    jacobian_samples: int = eqx.field(static=True)
    state_init: Callable | None = eqx.field(static=True)
    trace_length: int = eqx.field(static=True)

    def __init__(
        self,
        cell: Callable,
        *,
        solver: AbstractSolver | None = None,
        backward: AbstractBackward | None = None,
        max_steps: int = 50,
        rtol: float | Array = 1e-4,
        atol: float | Array = 1e-5,
        norm: Callable = max_norm,
        throw: bool = True,
        require_convergence: bool = False,
        jacobian_samples: int = 0,
        state_init: Callable | None = None,
        trace_length: int = 0,
    ):
        if not callable(cell):
            raise TypeError(f"DEQ cell must be callable; got {type(cell).__name__}.")
        check_int("DEQ jacobian_samples", jacobian_samples, minimum=0)
        check_int("DEQ trace_length", trace_length, minimum=0)
        for name, flag in dict(throw=throw, require_convergence=require_convergence).items():
            if not isinstance(flag, bool):
                raise TypeError(f"DEQ {name} must be a bool; got {flag!r}.")
        solver = Anderson() if solver is None else solver
        super().__init__(solver, backward, Convergence(rtol, atol, norm, max_steps), throw)
        self.cell = cell
        self.require_convergence = require_convergence
        self.jacobian_samples = jacobian_samples
        self.state_init = state_init
        self.trace_length = trace_length

    def __call__(
        self, x: PyTree[Array], z0: PyTree[Array] | None = None, *, key: PRNGKeyArray | None = None
    ) -> DEQOutput:
        return self.run(x, z0, key=key)

    def initial_state(self, x: PyTree[Array]) -> PyTree[Array]:
        """The default initial guess: ``state_init(x)``, or zeros shaped like ``x``."""
        if self.state_init is not None:
            return self.state_init(x)
        return jtu.tree_map(jnp.zeros_like, x)

    def run(
        self,
        x: PyTree[Array],
        z0: PyTree[Array] | None = None,
        *,
        key: PRNGKeyArray | None = None,
        max_steps: int | Array | None = None,
        jacobian: bool = True,
    ) -> DEQOutput:
        """``__call__`` with two overrides: ``max_steps`` (this call's budget instead of
        ``self.max_steps``) and ``jacobian=False`` (skip the Hutchinson estimate). Used for the
        segments of :func:`fixed_point_correction`."""
        want_jacobian = jacobian and self.jacobian_samples > 0
        if want_jacobian and key is None:
            raise ValueError(
                f"DEQ with jacobian_samples={self.jacobian_samples} needs a key= for the "
                "Hutchinson probes; got key=None."
            )
        if z0 is None:
            z0 = self.initial_state(x)
        method = self
        if max_steps is not None:
            method = eqx.tree_at(lambda d: d.convergence.max_steps, self, max_steps)
        sol = method._solve(
            "jaxsolve.implicit.DEQ",
            _Residual(_call_cell, True),
            z0,
            (self.cell, x),
            budget_is_normal=not self.require_convergence,
            trace_length=self.trace_length,
        )
        jac = None
        if want_jacobian:
            jac = hutchinson_frobenius(
                lambda z: self.cell(z, x), sol.value, key, self.jacobian_samples
            )
        return DEQOutput(sol.value, sol, jac)
