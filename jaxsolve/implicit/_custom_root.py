r"""``custom_root``: implicit differentiation of any solver from its optimality conditions.

"Efficient and Modular Implicit Differentiation" (Blondel, Berthet, Cuturi, Frostig, Hoyer,
Llinares-López, Pedregosa & Vert). The user states the optimality conditions
:math:`G(x, \theta) = 0` that the solution satisfies — a gradient that vanishes, a fixed-point
residual, KKT conditions — and decorates a solver ``solver(x0, *args) -> x`` with
``custom_root(G)``. The solver runs as written, never differentiated (it may use while loops,
callbacks, early stopping); derivatives with respect to ``args`` come from

.. math:: \partial_x G\; \dot x = -\,\partial_\theta G\; \dot\theta,

solved matrix-free (:class:`ImplicitDiff`), in forward and reverse mode and to any order.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from jax.flatten_util import ravel_pytree

from .._core import RESULTS
from ._base import Solution
from ._convergence import Convergence
from ._implicit_diff import ImplicitDiff, fresh_scalars, no_grad
from ._solve import _shape_of, check_output

_WHERE = "jaxsolve.implicit.custom_root"


class _Optimality(eqx.Module):
    fn: Callable

    def __call__(self, x, params):
        out = self.fn(x, params)
        return jtu.tree_map(lambda o, y: jnp.asarray(o).astype(y.dtype), out, x)


class _UserSolver(eqx.Module):
    fn: Callable
    has_aux: bool = eqx.field(static=True)

    def __call__(self, residual, params, x0):
        out = self.fn(x0, params)
        return out if self.has_aux else (out, None)

    def result_of(self, aux):
        """The solver's own code, where its ``aux`` is a :data:`RESULTS` or a :class:`Solution`;
        ``None`` (nothing to check) otherwise."""
        if isinstance(aux, Solution):
            return aux.result
        if isinstance(aux, RESULTS):
            return aux
        return None


def custom_root(
    optimality_fn: Callable,
    *,
    backward: ImplicitDiff | None = None,
    has_aux: bool = False,
) -> Callable[[Callable], Callable]:
    """Decorator: ``optimality_fn(x, *args) = 0`` characterises ``solver(x0, *args) -> x``.

    The decorated solver returns the same ``x`` but is differentiable in ``args`` (positional;
    arrays and pytrees of arrays) by implicit differentiation of ``optimality_fn``, which must
    return a pytree of the structure and shapes of ``x`` (a square system). With
    ``has_aux=True`` the solver returns ``(x, aux)``; ``aux`` is passed through without
    derivatives. The derivative with respect to ``x0`` is zero. ``backward``: an
    :class:`ImplicitDiff` (default: :class:`BiCGStab` with ``rtol = atol = eps ** 0.75`` of the
    solution's dtype and 256 matrix-vector products; :class:`CG` suits symmetric conditions
    such as the gradient of a convex objective).

    ``custom_root`` cannot see whether the solver converged: the derivatives are exact at a
    root of ``optimality_fn``, and at a point that is not one they are those of the equations
    there, a plausible wrong number. A solver that knows its outcome says so through ``aux``
    (``has_aux=True``): if ``aux`` is a :data:`jaxsolve.RESULTS` code or a :class:`Solution`,
    a derivative through a solve whose result is not successful is NaN
    (``ImplicitDiff(throw=False)``) or raises (``throw=True``, the default), as for
    :func:`fixed_point`. A non-finite ``x`` makes the backward solve fail, which is reported
    the same way.
    """
    backward = ImplicitDiff() if backward is None else backward
    if not isinstance(backward, ImplicitDiff):
        raise TypeError(
            "custom_root: backward must be an ImplicitDiff (the optimality conditions are "
            f"differentiated implicitly); got {type(backward).__name__}."
        )
    if not callable(optimality_fn):
        raise TypeError(
            f"custom_root: optimality_fn must be callable; got {type(optimality_fn).__name__}."
        )

    def decorator(solver: Callable) -> Callable:
        @functools.wraps(solver)
        def wrapped(x0, *args):
            x0, args = fresh_scalars((x0, args))
            solver_fn = lambda z, a: solver(z, *a)
            # filter_eval_shape: args may hold functions; a number it returns as it is.
            out_struct = jtu.tree_map(_shape_of, eqx.filter_eval_shape(solver_fn, x0, args))
            x_struct = out_struct[0] if has_aux else out_struct
            x_like = jtu.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), x_struct)
            opt = lambda x, a: optimality_fn(x, *a)
            check_output(_WHERE, "optimality_fn", "x", opt, x_like, args, "optimality_fn(x, *args)")
            residual = _Optimality(eqx.filter_closure_convert(opt, x_like, args))
            primal = no_grad(_UserSolver(eqx.filter_closure_convert(solver_fn, x0, args), has_aux))
            # The tolerances of the backward solve where ImplicitDiff gives none: there is no
            # forward solve to take them from.
            dtype = ravel_pytree(x_like)[0].dtype
            default_tol = jnp.asarray(jnp.finfo(dtype).eps ** 0.75, dtype)
            defaults = Convergence(rtol=default_tol, atol=default_tol)
            x, aux = backward.apply(
                primal, residual, args, x0, convergence=defaults, throw=backward.throw, where=_WHERE
            )
            return (x, aux) if has_aux else x

        return wrapped

    return decorator
