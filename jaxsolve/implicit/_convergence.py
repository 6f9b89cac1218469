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

from .._core import as_float, check_positive, is_concrete
from ._norms import max_norm


def check_tolerance(name, value):
    """A positive scalar tolerance: concrete values are checked now, traced ones at run time.

    Concreteness is judged on what the caller passed: under ``jit`` even a Python float's cast
    to an array is traced, and its check would wait for run time.
    """
    concrete = is_concrete(value)
    if concrete:
        check_positive(name, np.asarray(value))
    value = as_float(value)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got an array of shape {value.shape}.")
    if concrete:
        return value
    return eqx.error_if(value, ~(value > 0), f"{name} must be positive.")


def check_max_steps(name, max_steps):
    """``max_steps``, checked: a concrete one must be an int >= 1 (now); a traced one an integer
    scalar (now) that is >= 0 (at run time, on the returned value). A traced 0 is allowed: a
    sweep over budgets (``jax.vmap`` over ``max_steps``) may start at 0, which returns the
    initial guess with its code."""
    if isinstance(max_steps, bool):
        raise TypeError(f"{name} must be an integer; got {max_steps!r}.")
    if isinstance(max_steps, (int, np.integer)):
        if max_steps < 1:
            raise ValueError(f"{name} must be >= 1; got {max_steps}.")
        return max_steps
    a = jnp.asarray(max_steps)
    if not jnp.issubdtype(a.dtype, jnp.integer) or a.ndim != 0:
        raise TypeError(f"{name} must be an integer scalar; got {a.dtype} of shape {a.shape}.")
    if is_concrete(a):
        if int(a) < 1:
            raise ValueError(f"{name} must be >= 1; got {int(a)}.")
        return a
    return eqx.error_if(a, a < 0, f"{name} must be >= 0; got a negative traced value.")


def _check_divergence_factor(name, value):
    concrete = is_concrete(value)
    if concrete and not np.all(np.asarray(value) > 1):
        raise ValueError(f"{name} must be > 1; got {np.asarray(value)}.")
    value = as_float(value)
    if value.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {value.shape}.")
    if concrete:
        return value
    return eqx.error_if(value, ~(value > 1), f"{name} must be > 1.")


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
        max_steps = check_max_steps(f"{where}: max_steps", self.max_steps)
        divergence_factor = _check_divergence_factor(
            f"{where}: divergence_factor", self.divergence_factor
        )
        rtol = check_tolerance(f"{where}: rtol", self.rtol)
        atol = check_tolerance(f"{where}: atol", self.atol)
        return Convergence(rtol, atol, self.norm, max_steps, divergence_factor)

    def flat(self, unravel: Callable) -> Convergence:
        """This rule with its norm taken on flat vectors ``v`` as ``norm(unravel(v))`` (how the
        drivers see the user's pytree), in the vector's dtype."""
        norm = self.norm
        return dataclasses.replace(self, norm=lambda v: jnp.asarray(norm(unravel(v)), v.dtype))
