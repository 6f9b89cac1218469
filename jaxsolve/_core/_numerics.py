"""Square roots and quotients whose derivatives stay finite at 0, and which never hide a NaN.

:math:`\\sqrt{x}` has an infinite derivative at 0, so a norm's gradient at 0 is ``inf * 0 = NaN``
(e.g. a loss at ``pred == target``). The usual fix, a ``where`` around the singular point, must
test ``x == 0`` and not ``x > 0``: ``NaN > 0`` is false, and a test on the sign turns a NaN into a
plausible 0 (a NaN prediction with a relative loss of 0).
"""

import jax.numpy as jnp


def safe_sqrt(x):
    """:math:`\\sqrt{x}`, with derivative 0 (not infinity) at ``x = 0``; NaN stays NaN and a
    negative ``x`` gives NaN."""
    zero = x == 0
    return jnp.where(zero, jnp.zeros_like(x), jnp.sqrt(jnp.where(zero, jnp.ones_like(x), x)))


def safe_divide(num, den, where_zero):
    """``num / den``, or ``where_zero`` where ``den == 0`` exactly (no ``0 / 0`` in either branch,
    so gradients stay finite); a NaN ``den`` gives NaN."""
    zero = den == 0
    return jnp.where(zero, where_zero, num / jnp.where(zero, jnp.ones_like(den), den))
