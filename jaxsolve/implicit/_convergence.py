r"""When an iterative solve stops: :class:`Convergence`, one object for the tolerances, the norm,
the step budget and the divergence bound.

:func:`fixed_point` and :func:`root_find` build it from their keywords, :class:`DEQ` and
:class:`ConvergentGraphSolver` hold one, and a solver's ``terminate`` reads it (the default test,
as in optimistix and Hairer's codes, is per element scaled):

.. math:: \Big\| \frac{F(x_k)}{\text{atol} + \text{rtol}\,|x_k|} \Big\| \le 1 .

A Krylov method reads ``rtol``, ``atol`` and ``max_steps`` only: it tests the 2-norm,
:math:`\|b - Ax\|_2 \le \text{atol} + \text{rtol}\,\|b\|_2`, and its budget counts
matrix-vector products.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree

from .._core import as_float, check_step_budget, is_concrete
from ._norms import max_norm


def check_scalar_above(where, name, value, bound=0, what="positive"):
    """:func:`_check_scalar_above` with the message ``where: name must be what``."""
    return _check_scalar_above(f"{where}: {name}", value, bound, what)


def _check_scalar_above(name, value, bound, what):
    """``value`` as a float scalar > ``bound``: a concrete value is checked now, a traced one when
    the compiled code runs (on the returned value); messages say ``name`` must be ``what``.

    Concreteness is judged on what the caller passed: under ``jit`` even a Python float's cast
    to an array is traced, and its check would wait for run time.
    """
    concrete = is_concrete(value)
    if concrete and not np.all(np.asarray(value) > bound):  # NaN fails too
        raise ValueError(f"{name} must be {what}; got {np.asarray(value)}.")
    value = as_float(value)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got an array of shape {value.shape}.")
    if concrete:
        return value
    return eqx.error_if(value, ~(value > bound), f"{name} must be {what}.")


class Convergence(eqx.Module):
    r"""When an iterative solve stops (see the module docstring).

    Args:
        rtol, atol: positive tolerances of the scaled test
            :math:`\|F(x) / (\text{atol} + \text{rtol}|x|)\| \le 1`.
        norm: ``norm(pytree) -> scalar`` of that test (default :func:`max_norm`).
        max_steps: the step budget; ``RESULTS.max_steps_reached`` when it runs out first.
        divergence_factor: ``RESULTS.diverged`` when :math:`\|F\|` exceeds this multiple of its
            initial value (> 1).

    ``rtol``, ``atol``, ``max_steps`` and ``divergence_factor`` may be traced (so a sweep over
    them is one ``jax.vmap``); they are checked when a solve uses them (:meth:`checked`), a
    concrete value at trace time, a traced one when the compiled code runs. A traced
    ``max_steps`` may be 0 (a sweep over budgets may start there).
    """

    rtol: ArrayLike = 1e-5
    atol: ArrayLike = 1e-6
    norm: Callable[[PyTree[Array]], Array] = eqx.field(static=True, default=max_norm)
    max_steps: int | ArrayLike = 256
    divergence_factor: ArrayLike = 1e6

    def checked(self, where: str) -> Convergence:
        """This rule with every value checked and the tolerances as float arrays; errors name
        ``where`` and the argument."""
        if not callable(self.norm):
            raise TypeError(f"{where}: norm must be callable; got {type(self.norm).__name__}.")
        max_steps = check_step_budget(f"{where}: max_steps", self.max_steps)
        divergence_factor = _check_scalar_above(
            f"{where}: divergence_factor", self.divergence_factor, 1, "> 1"
        )
        rtol = _check_scalar_above(f"{where}: rtol", self.rtol, 0, "positive")
        atol = _check_scalar_above(f"{where}: atol", self.atol, 0, "positive")
        return Convergence(rtol, atol, self.norm, max_steps, divergence_factor)

    def flat(self, unravel: Callable) -> Convergence:
        """This rule with its norm taken on flat vectors ``v`` as ``norm(unravel(v))`` (how the
        drivers see the user's pytree), in the vector's dtype."""
        norm = self.norm
        return dataclasses.replace(self, norm=lambda v: jnp.asarray(norm(unravel(v)), v.dtype))
