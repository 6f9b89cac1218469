r"""Limited-memory Broyden's ("good") method on the inverse Jacobian.

"A Class of Methods for Solving Nonlinear Simultaneous Equations" (Broyden), in the low-rank,
limited-memory form used for equilibrium models ("Deep Equilibrium Models", Bai, Kolter & Koltun).
:math:`H_k \approx J_F(x_k)^{-1}` is kept as :math:`H_0 + \sum_i u_i v_i^\top` with
:math:`H_0 = I / j_0`. With :math:`s = x_{k} - x_{k-1}` and :math:`y = F_k - F_{k-1}` the secant
update (Sherman–Morrison on the "good" Broyden Jacobian update) is

.. math:: H_{k} = H_{k-1} + \frac{(s - H_{k-1} y)\, s^\top H_{k-1}}{s^\top H_{k-1} y},
   \qquad x_{k+1} = x_k - \alpha\, H_k F_k .

Only the last ``memory`` rank-one terms are kept (the oldest is overwritten). ``jacobian_init``
:math:`j_0` is the initial Jacobian guess :math:`J_0 = j_0 I`: the default ``-1`` suits a fixed
point, where :math:`F = f - \mathrm{id}` has Jacobian :math:`J_f - I \approx -I`, and makes the
first step a Picard step; use a positive value for roots of increasing maps. Updates whose
denominator is negligible are skipped.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core import as_float, check_positive, is_concrete
from ._anderson import _check_history
from ._base import AbstractSolver


class Broyden(AbstractSolver):
    """Limited-memory Broyden solver (see the module docstring)."""

    memory: int = eqx.field(static=True, default=20)
    damping: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)
    jacobian_init: Float[Array, ""] = eqx.field(converter=as_float, default=-1.0)

    def __check_init__(self):
        _check_history("Broyden memory", self.memory)
        check_positive("Broyden damping", self.damping)
        if is_concrete(self.jacobian_init) and float(self.jacobian_init) == 0.0:
            raise ValueError("Broyden jacobian_init must be nonzero; got 0.0.")

    def init(self, fn, x, fx, args):
        m, n = self.memory, x.shape[0]
        return dict(
            u=jnp.zeros((m, n), x.dtype),
            v=jnp.zeros((m, n), x.dtype),
            x_prev=x,
            f_prev=fx,
            k=jnp.zeros((), jnp.int32),
            slot=jnp.zeros((), jnp.int32),
        )

    def step(self, fn, x, fx, args, state):
        u, v = state["u"], state["v"]
        h0 = 1.0 / jnp.asarray(self.jacobian_init, x.dtype)
        apply_h = lambda w: h0 * w + u.T @ (v @ w)
        apply_ht = lambda w: h0 * w + v.T @ (u @ w)

        s = x - state["x_prev"]
        y = fx - state["f_prev"]
        hy = apply_h(y)
        denom = s @ hy
        tiny = jnp.finfo(x.dtype).eps * jnp.linalg.norm(s) * jnp.linalg.norm(hy)
        update = (state["k"] > 0) & (jnp.abs(denom) > tiny) & jnp.isfinite(denom)
        safe = jnp.where(update, denom, 1.0)
        new_u = (s - hy) / safe
        new_v = apply_ht(s)
        slot = state["slot"]
        u = jnp.where(update, u.at[slot].set(new_u), u)
        v = jnp.where(update, v.at[slot].set(new_v), v)
        slot = jnp.where(update, (slot + 1) % self.memory, slot)

        alpha = jnp.asarray(self.damping, x.dtype)
        x_new = x - alpha * (h0 * fx + u.T @ (v @ fx))
        return x_new, dict(u=u, v=v, x_prev=x, f_prev=fx, k=state["k"] + 1, slot=slot)
