r"""The one time loop: ``rollout(stepper, u0, n)``, a ``lax.scan`` over a stepper's steps.

A stepper is any function ``state -> state`` (an :class:`ETDRK` stepper, its
:meth:`~ETDRK.step_spectral`, a learned model, ...); the state may be any pytree. Every solver and
every autoregressive model in jaxsolve is advanced by this driver, so saving, masking and
failure reporting live here once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Int

from ._errors import check_int, check_integer_count
from ._results import RESULTS


class Rollout(eqx.Module):
    """What :func:`rollout` returns with ``full_output=True``.

    ``trajectory``: the saved states (leading axis = time), what :func:`rollout` returns by
    default (also as ``value``, the name every jaxsolve solution uses); ``final``: the state after
    the last step; ``result``: :data:`~jaxsolve.RESULTS` ``.nonfinite`` if a NaN or infinity
    appeared in a saved or the final state, else ``.successful``.
    """

    trajectory: Any
    final: Any
    result: RESULTS

    @property
    def value(self):
        """The trajectory (the same array :func:`rollout` returns without ``full_output``)."""
        return self.trajectory


def _finite(tree):
    leaves = [leaf for leaf in jax.tree_util.tree_leaves(tree) if _is_inexact(leaf)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))


def _is_inexact(leaf):
    return jnp.issubdtype(jnp.result_type(leaf), jnp.inexact)


def _describe(tree):
    """``float32[1,16]``-style description of the leaves of a pytree of arrays."""
    return jax.tree_util.tree_map(lambda a: f"{jnp.result_type(a).name}{list(jnp.shape(a))}", tree)


def _check_step(u, new):
    """The stepper must map a state to a state of the same structure, shapes and dtypes (the
    carry of ``lax.scan``); say so, at trace time, rather than scan's "carry type mismatch"."""
    same = jax.tree_util.tree_structure(u) == jax.tree_util.tree_structure(new) and all(
        jnp.shape(a) == jnp.shape(b) and jnp.result_type(a) == jnp.result_type(b)
        for a, b in zip(jax.tree_util.tree_leaves(u), jax.tree_util.tree_leaves(new), strict=True)
    )
    if not same:
        raise ValueError(
            f"rollout: stepper must return a state like u0 (same structure, shapes and dtypes); "
            f"u0 is {_describe(u)} but stepper(u0) is {_describe(new)}."
        )


def rollout(
    stepper: Callable[[Any], Any],
    u0: Any,
    num_steps: int | Int[Array, ""],
    *,
    every: int = 1,
    include_initial: bool = True,
    max_steps: int | None = None,
    full_output: bool = False,
    throw: bool = True,
):
    """Advance ``u0`` by ``num_steps`` applications of ``stepper``, saving every ``every`` steps.

    Args:
        stepper: ``state -> state`` (pure; closes over its parameters).
        u0: the initial state (an array, e.g. one sample ``(channels, *spatial)``, or a pytree).
        num_steps: number of steps. A Python int (a multiple of ``every``), or, with a static
            ``max_steps``, a traced integer in ``[0, max_steps]``: the loop then runs
            ``max_steps`` iterations and leaves the state unchanged after ``num_steps`` (so
            ``jax.vmap`` over step counts compiles once).
        every: save the state after every ``every`` steps (static).
        include_initial: put ``u0`` first in the trajectory.
        full_output: return a :class:`Rollout` (trajectory, final state, result code).
        throw: raise (through :func:`equinox.error_if`) if a saved or the final state is not
            finite. On by default: a time step beyond the stepper's stability region gives a
            NaN trajectory that would otherwise look like any other array. Pass
            ``throw=False, full_output=True`` to read the code instead (e.g. when sweeping
            time steps under ``jax.vmap``, where one failure would stop the whole batch).

    Returns:
        The trajectory, a pytree like ``u0`` whose leaves have a leading time axis of length
        ``num_steps // every`` (``max_steps // every`` with ``max_steps``), plus one with
        ``include_initial``; or a :class:`Rollout`.
    """
    check_int("every", every)
    if not callable(stepper):
        raise TypeError(f"stepper must be a callable state -> state; got {type(stepper).__name__}.")
    u0 = jax.tree_util.tree_map(jnp.asarray, u0)
    if not jax.tree_util.tree_leaves(u0):
        raise ValueError("rollout: u0 must hold at least one array.")
    if max_steps is None:
        n = check_integer_count("num_steps", num_steps, minimum=0)
        if n % every:
            raise ValueError(
                f"num_steps ({n}) must be a multiple of every ({every}) so that the saved "
                f"states are equally spaced."
            )
        total, active = n, None
    else:
        active = check_integer_count("num_steps", num_steps, max_steps=max_steps, minimum=0)
        if max_steps % every:
            raise ValueError(f"max_steps ({max_steps}) must be a multiple of every ({every}).")
        total = max_steps

    def inner(carry, _):
        u, i = carry
        new = stepper(u)
        _check_step(u, new)
        if active is not None:
            keep = i < active
            new = jax.tree_util.tree_map(lambda a, b: jnp.where(keep, a, b), new, u)
        return (new, i + 1), None

    def outer(carry, _):
        carry, _ = lax.scan(inner, carry, None, length=every)
        return carry, carry[0]

    start = (u0, jnp.zeros((), jnp.int32))
    (final, _), saved = lax.scan(outer, start, None, length=total // every)
    if include_initial:
        saved = jax.tree_util.tree_map(
            lambda first, rest: jnp.concatenate([jnp.asarray(first)[None], rest], axis=0),
            u0,
            saved,
        )
    result = RESULTS.where(_finite(saved) & _finite(final), RESULTS.successful, RESULTS.nonfinite)
    if throw:
        saved = eqx.error_if(
            saved,
            result != RESULTS.successful,
            "rollout: the state became non-finite (a NaN or infinity): the initial state may "
            "hold one, or the time step is too large for the stepper's stability region. Pass "
            "throw=False, full_output=True to get the trajectory and RESULTS.nonfinite instead.",
        )
    if full_output:
        return Rollout(saved, final, result)
    return saved
