"""Argument checks that raise at trace time, naming the argument, what was expected and what came.

A value that is concrete (a Python number, a NumPy array, a JAX array outside ``jit``) is checked
immediately and raises ``ValueError``. A traced value cannot be inspected at trace time; checks that
matter for traced values use :func:`equinox.error_if`, which raises when the compiled code runs.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np


def is_concrete(x) -> bool:
    """True when ``x`` (possibly a pytree) holds no tracers, so its value can be inspected."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def _describe(x):
    a = np.asarray(x)
    if a.ndim == 0:
        return repr(a.item())
    return f"array of shape {a.shape}"


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices`` (which may include ``None``); else ``ValueError``
    naming ``name`` and listing the choices."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set
        ok = False
    if isinstance(value, bool):  # True == 1: a flag is no order or size
        ok = any(c is value for c in choices)
    if not ok:
        shown = ", ".join(repr(c) for c in sorted(choices, key=lambda c: (c is not None, str(c))))
        raise ValueError(f"{name} must be one of {shown}; got {value!r}.")
    return value


def is_int(value) -> bool:
    """A Python or NumPy integer: not a bool, not a float that happens to be whole."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(name, value, *, minimum=1, maximum=None):
    """``value`` as a Python int in ``[minimum, maximum]`` (a static size, count or order).

    A bool, a float or an array is refused with ``TypeError``, a value out of range with
    ``ValueError``; both messages name ``name``. For a count that may be traced, see
    :func:`check_integer_count`.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int; got {value!r} ({type(value).__name__}).")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}.")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}; got {value}.")
    return value


def check_positive(name, value, *, allow_zero=False, allow_inf=False):
    """``value`` > 0 (or >= 0) and finite everywhere (``allow_inf``: or ``+inf``, where infinity
    means something, e.g. "no upper limit"); concrete values raise ValueError, traced ones pass.

    Infinity is refused by default: an infinite step size, tolerance or scale passes ``> 0`` and
    then gives NaN, or a result that stops at once and reports success."""
    if is_concrete(value):
        a = np.asarray(value)
        bad = (a < 0) if allow_zero else (a <= 0)
        if not allow_inf:
            bad = bad | np.isinf(a)
        if np.any(bad) or np.any(np.isnan(a)):
            what = "non-negative" if allow_zero else "positive"
            what = what if allow_inf else f"{what} and finite"
            raise ValueError(f"{name} must be {what}; got {_describe(a)}.")
    return value


def check_in_open_interval(name, value, low, high):
    """``low < value < high`` everywhere, for concrete values."""
    if is_concrete(value):
        a = np.asarray(value)
        if not (np.all(a > low) and np.all(a < high)):
            bad = a[(a <= low) | (a >= high) | np.isnan(a)] if a.ndim else a
            raise ValueError(
                f"{name} must lie in the open interval ({low}, {high}); got {_describe(bad)}"
                + (f" among {a.shape[0]} entries." if a.ndim else ".")
            )
    return value


def check_sigma_range(sigma_min, sigma_max, *, names=("sigma_min", "sigma_max")):
    """``0 < sigma_min < sigma_max < inf``; returns ``(sigma_min, sigma_max)``.

    Concrete values raise ``ValueError`` now. Traced ones come back wrapped in
    :func:`equinox.error_if`, so the compiled code raises when it runs (use the returned values).
    """
    check_positive(names[0], sigma_min)
    check_positive(names[1], sigma_max)
    if is_concrete((sigma_min, sigma_max)):
        lo, hi = np.asarray(sigma_min), np.asarray(sigma_max)
        if not np.all(np.isfinite(hi)):
            raise ValueError(f"{names[1]} must be finite; got {_describe(hi)}.")
        if np.any(lo >= hi):
            raise ValueError(
                f"{names[0]} must be smaller than {names[1]}; got {names[0]}={_describe(lo)}, "
                f"{names[1]}={_describe(hi)}."
            )
        return sigma_min, sigma_max
    lo, hi = jnp.asarray(sigma_min), jnp.asarray(sigma_max)
    bad = ~((lo > 0) & (lo < hi) & jnp.isfinite(hi))
    message = f"{names[0]} and {names[1]} must satisfy 0 < {names[0]} < {names[1]} < inf."
    return eqx.error_if(lo, bad, message), eqx.error_if(hi, bad, message)


def check_integer_count(name, n, *, max_steps=None, minimum=1):
    """Validate a step count ``n``.

    Without ``max_steps``, ``n`` must be a concrete integer >= ``minimum`` (it fixes an array
    length). With ``max_steps`` (a static int), ``n`` may be traced; a concrete ``n`` is checked now
    and a traced one when the compiled code runs. Returns ``n`` (an int, or an int32 array when
    traced, wrapped in a runtime check).
    """
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps, minimum=minimum)
    if is_concrete(n):
        a = np.asarray(n)
        if (
            a.ndim != 0
            or a.dtype == bool  # True == 1: a flag is no count
            or not (np.issubdtype(a.dtype, np.integer) or float(a) == int(a))
        ):
            raise ValueError(f"{name} must be an integer; got {_describe(a)}.")
        value = int(a)
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}; got {value}.")
        if max_steps is not None and value > max_steps:
            raise ValueError(f"{name} must be <= max_steps={max_steps}; got {value}.")
        return value
    if max_steps is None:
        raise TypeError(
            f"{name} is traced, so it cannot fix an array length: pass a static max_steps= and "
            f"{name} may then be any traced integer in [{minimum}, max_steps]."
        )
    n = _traced_integer_scalar(name, n)
    bad = (n < minimum) | (n > max_steps)
    return eqx.error_if(n, bad, f"{name} must lie in [{minimum}, max_steps={max_steps}].")


def check_step_budget(name, max_steps):
    """A loop's step budget: a concrete integer >= 1, or a traced integer scalar.

    A budget bounds a ``while_loop`` and fixes no array length, so, unlike
    :func:`check_integer_count`, it may be traced with no static upper bound (a sweep over budgets
    is one ``jax.vmap``). A concrete value is checked now; a traced one must be a scalar of
    integer dtype (now) and >= 0 (when the compiled code runs, on the returned value). A traced 0
    is allowed: a sweep may start there, and a solve with no steps returns its initial guess.
    """
    if is_concrete(max_steps):
        return check_integer_count(name, max_steps)
    budget = _traced_integer_scalar(name, max_steps)
    return eqx.error_if(budget, budget < 0, f"{name} must be >= 0; got a negative traced value.")


def _traced_integer_scalar(name, n):
    n = jnp.asarray(n)
    if not jnp.issubdtype(n.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype; got {n.dtype}.")
    if n.ndim != 0:
        raise ValueError(f"{name} must be a scalar; got shape {n.shape}.")
    return n
