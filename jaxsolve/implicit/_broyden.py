r"""Limited-memory Broyden's ("good") method in compact form.

"A Class of Methods for Solving Nonlinear Simultaneous Equations" (Broyden); the compact
representation is Theorem 6.1 of "Representations of quasi-Newton matrices and their use in
limited memory methods" (Byrd, Nocedal & Schnabel). Broyden's good update
:math:`B_{k+1} = B_k + (y_k - B_k s_k)\,s_k^\top / s_k^\top s_k` of the Jacobian
:math:`B \approx J_F`, started from :math:`B_0 = j_0 I` and applied to the pairs
:math:`s_i = x_{i+1} - x_i`, :math:`y_i = F_{i+1} - F_i` stacked as columns of :math:`S, Y`, is

.. math:: B = j_0 I + U N^{-1} S^\top, \qquad U = Y - j_0 S, \qquad
   N_{ij} = s_i^\top s_j \ \text{for } i \le j \text{ (else 0)},

and by Sherman–Morrison–Woodbury the step :math:`x_{k+1} = x_k - \alpha B^{-1} F_k` costs one
``memory x memory`` solve:
:math:`B^{-1} F = \big(F - U (N + S^\top U / j_0)^{-1} S^\top F / j_0\big) / j_0`.
The limited-memory method rebuilds :math:`B` from :math:`B_0` and the last ``memory`` pairs at
every step (as L-BFGS does), which stays a consistent Broyden matrix; overwriting the oldest
rank-one term of a product-form inverse (as some DEQ codes do) does not, and can diverge.
With ``memory`` at least the number of steps this is exactly Broyden's method.

``jacobian_init`` :math:`j_0`: the default ``-1`` suits a fixed point, where
:math:`F = f - \mathrm{id}` has Jacobian :math:`J_f - I \approx -I` (the first step is then a
Picard step); use a positive value for roots of increasing maps. Pairs with :math:`s = 0` are
skipped.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core import as_float, check_int, check_positive, exact_dot, is_concrete
from ._base import AbstractSolver


class Broyden(AbstractSolver):
    """Limited-memory Broyden solver (see the module docstring)."""

    memory: int = eqx.field(static=True, default=20)
    damping: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)
    jacobian_init: Float[Array, ""] = eqx.field(converter=as_float, default=-1.0)

    def __check_init__(self):
        check_int("Broyden memory", self.memory)
        check_positive("Broyden damping", self.damping)
        if is_concrete(self.jacobian_init) and float(self.jacobian_init) == 0.0:
            raise ValueError("Broyden jacobian_init must be nonzero; got 0.0.")

    def init(self, fn, x, fx, args):
        m, n = self.memory, x.shape[0]
        return dict(
            s=jnp.zeros((m, n), x.dtype),
            y=jnp.zeros((m, n), x.dtype),
            age=jnp.full((m,), -1, jnp.int32),
            x_prev=x,
            f_prev=fx,
            k=jnp.zeros((), jnp.int32),
        )

    def step(self, fn, x, fx, args, state):
        m = self.memory
        k = state["k"]
        j0 = jnp.asarray(self.jacobian_init, x.dtype)
        s_new = x - state["x_prev"]
        store = (k > 0) & (jnp.sum(s_new * s_new) > 0)
        # Circular buffer: the pair stored at step k goes to slot (k - 1) mod m; its age
        # orders the pairs chronologically for the triangular matrix N.
        slot = jnp.maximum(k - 1, 0) % m
        s = jnp.where(store, state["s"].at[slot].set(s_new), state["s"])
        y = jnp.where(store, state["y"].at[slot].set(fx - state["f_prev"]), state["y"])
        age = jnp.where(store, state["age"].at[slot].set(k), state["age"])
        valid = age >= 0

        u = y - j0 * s
        upper = (age[:, None] <= age[None, :]) & valid[:, None] & valid[None, :]
        n_mat = jnp.where(upper, exact_dot(s, s.T), 0.0)
        mid = n_mat + jnp.where(valid[:, None] & valid[None, :], exact_dot(s, u.T), 0.0) / j0
        mid = mid + jnp.diag(jnp.where(valid, 0.0, 1.0))
        coef = jnp.linalg.solve(mid, exact_dot(s, fx))
        direction = (fx - exact_dot(coef, u) / j0) / j0
        x_new = x - jnp.asarray(self.damping, x.dtype) * direction
        return x_new, dict(s=s, y=y, age=age, x_prev=x, f_prev=fx, k=k + 1)
