"""Concrete checks of physical parameters, shared by the equations, the steppers and the grids.

A parameter outside its range (a negative viscosity, an infinite time step, a NaN domain length)
raises ``ValueError`` naming it when its value is known at trace time; traced values are checked
when the compiled code runs (see :meth:`AbstractEquation.check_traced`).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._core import as_float, is_concrete

# What each rule asks of a parameter (all of them: finite, so NaN and infinity never pass).
RULES = {
    "finite": "finite",
    "non-negative": "finite and >= 0",
    "positive": "finite and > 0",
}


def rule_holds(value, rule):
    """Elementwise test of ``rule`` on a NumPy or JAX array (NaN fails every rule)."""
    xp = np if isinstance(value, np.ndarray) else jnp
    ok = xp.isfinite(value)
    if rule == "non-negative":
        ok = ok & (value >= 0)
    elif rule == "positive":
        ok = ok & (value > 0)
    return ok


def check_parameter(where: str, name: str, value, rule: str) -> None:
    """Raise ``ValueError`` naming ``name`` when a concrete ``value`` breaks ``rule``.

    ``rule`` is ``"finite"``, ``"non-negative"`` or ``"positive"`` (each implies finite). Traced
    values pass here; :meth:`AbstractEquation.check_traced` checks them at run time.
    """
    for leaf in jax.tree_util.tree_leaves(value):
        if not is_concrete(leaf):
            continue
        a = np.asarray(leaf)
        if np.iscomplexobj(a) or not (
            np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        ):
            raise TypeError(f"{where}: {name} must be a real number; got dtype {a.dtype}.")
        a = a.astype(np.float64)
        if not np.all(rule_holds(a, rule)):
            if a.ndim == 0:
                shown = repr(a.item())
            else:
                shown = f"{a[~rule_holds(a, rule)][0].item()!r} in {a.tolist()}"
            raise ValueError(f"{where}: {name} must be {RULES[rule]}; got {shown}.")


def check_traced_parameters(x, where: str, rules):
    """``x``, unchanged, behind a run-time check of every traced value in ``rules``.

    ``rules`` holds ``(name, value, rule)`` as :func:`check_parameter` takes them; concrete
    values are skipped (they were checked at trace time). A traced value that breaks its rule
    raises through :func:`equinox.error_if` when the compiled code runs, naming it (with
    ``EQX_ON_ERROR=nan``, ``x`` becomes NaN instead, which the drivers report as
    ``RESULTS.nonfinite``).
    """
    for name, value, rule in rules:
        for leaf in jax.tree_util.tree_leaves(value):
            if is_concrete(leaf):
                continue
            bad = ~jnp.all(rule_holds(as_float(leaf), rule))
            x = eqx.error_if(x, bad, f"{where}: {name} must be {RULES[rule]} (a traced value).")
    return x
