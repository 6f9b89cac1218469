r"""Picard iteration with Krasnoselskii–Mann damping.

For a fixed point :math:`z = f(z)` with residual :math:`F(z) = f(z) - z`:

.. math:: z_{k+1} = z_k + \alpha F(z_k) = (1 - \alpha)\, z_k + \alpha f(z_k),
   \qquad 0 < \alpha \le 1.

``damping = 1`` is plain fixed-point iteration; ``alpha < 1`` is the Krasnoselskii–Mann averaged
iteration, which converges for nonexpansive (not only contractive) maps ("Mean value methods in
iteration", Mann; "Two remarks on the method of successive approximations", Krasnoselskii).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core import as_float, check_positive
from ._base import AbstractSolver


class Picard(AbstractSolver):
    """Damped fixed-point (Picard / Krasnoselskii–Mann) iteration; see the module docstring.

    ``damping`` is an array, so it can be traced and swept.
    """

    damping: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)

    def __check_init__(self):
        check_positive("Picard damping", self.damping)

    def init(self, fn, x, fx, args):
        return None

    def step(self, fn, x, fx, args, state):
        return x + jnp.asarray(self.damping, x.dtype) * fx, state
