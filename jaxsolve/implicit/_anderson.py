r"""Anderson acceleration (type II, in the difference form of Walker & Ni).

"Anderson Acceleration for Fixed-Point Iterations" (Walker & Ni), after Anderson's "Iterative
Procedures for Nonlinear Integral Equations".
With residuals :math:`F_k = f(z_k) - z_k` and the last :math:`m` differences
:math:`\Delta z_i = z_{i+1} - z_i`, :math:`\Delta F_i = F_{i+1} - F_i` stacked as columns of
:math:`\Delta Z, \Delta F`:

.. math::
   \theta_k = \arg\min_\theta \|F_k - \Delta F\,\theta\|_2^2 + \lambda \|D\theta\|_2^2, \qquad
   z_{k+1} = z_k + \beta F_k - (\Delta Z + \beta\,\Delta F)\,\theta_k,

which equals the mixing :math:`z_{k+1} = \sum_i \gamma_i\,((1-\beta) z_i + \beta f(z_i))` with
:math:`\sum_i \gamma_i = 1`. ``ridge`` :math:`\lambda` is relative: the normal equations are
solved with the columns of :math:`\Delta F` scaled to unit length (:math:`D` holds their norms),
so it does not depend on the size of the residual, and eigenvalues of the scaled Gram matrix
below a precision-dependent floor are dropped (a pseudo-inverse), which keeps float32 stable when
the history becomes nearly collinear close to convergence. The first step (no history yet) is
a damped Picard step.

Safeguard (``safeguard=True``, the default): Anderson's extrapolation is not a descent method,
and on a map that is contractive only near its fixed point it can wander indefinitely where
plain iteration converges (a trained DEQ cell can do so on a few inputs). So an extrapolated
iterate whose residual :math:`\|F\|_2` exceeds that of the point it was extrapolated from is
rejected: the solver goes back to that point, takes a damped Picard step from it, and restarts
the history. This is the monotone variant of the safeguarding in "Globally Convergent Type-I
Anderson Acceleration for Non-Smooth Fixed-Point Iterations" (Zhang, O'Donoghue & Boyd), which
falls back to the plain iteration whenever the accelerated step fails a residual test; a Picard
step is always accepted, so the solver converges wherever Picard iteration does. The rejected
evaluation is the only cost.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core import as_float, check_int, check_positive, exact_dot
from ._base import AbstractSolver


class Anderson(AbstractSolver):
    """Anderson acceleration with ``history`` past differences, ridge regularisation ``ridge``
    (relative, see the module docstring), mixing / damping ``damping`` (:math:`\\beta`), and a
    residual safeguard that falls back to a Picard step (``safeguard``, see the module).
    """

    history: int = eqx.field(static=True, default=5)
    ridge: Float[Array, ""] = eqx.field(converter=as_float, default=1e-10)
    damping: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)
    safeguard: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_int("Anderson history", self.history)
        check_positive("Anderson ridge", self.ridge, allow_zero=True)
        check_positive("Anderson damping", self.damping)

    def init(self, fn, x, fx, args):
        m, n = self.history, x.shape[0]
        return dict(
            dx=jnp.zeros((m, n), x.dtype),
            df=jnp.zeros((m, n), x.dtype),
            x_prev=x,
            f_prev=fx,
            k=jnp.zeros((), jnp.int32),
            r_prev=jnp.linalg.norm(fx),
            extrapolated=jnp.zeros((), bool),
        )

    def step(self, fn, x, fx, args, state):
        m = self.history
        k = state["k"]
        slot = jnp.maximum(k - 1, 0) % m
        has_prev = k > 0
        dx = jnp.where(has_prev, state["dx"].at[slot].set(x - state["x_prev"]), state["dx"])
        df = jnp.where(has_prev, state["df"].at[slot].set(fx - state["f_prev"]), state["df"])
        valid = jnp.arange(m) < jnp.minimum(k, m)

        # Normal equations of the least-squares problem with unit-length columns.
        gram = exact_dot(df, df.T)
        col = jnp.sqrt(jnp.diagonal(gram))
        ok = valid & (col > 0)
        s = jnp.where(ok, col, 1.0)
        both = ok[:, None] & ok[None, :]
        g = jnp.where(both, gram / (s[:, None] * s[None, :]), 0.0)
        ridge = jnp.asarray(self.ridge, x.dtype)
        g = g + jnp.diag(jnp.where(ok, ridge, 1.0))
        rhs = jnp.where(ok, exact_dot(df, fx) / s, 0.0)
        evals, evecs = jnp.linalg.eigh(g)
        floor = 10 * m * jnp.finfo(x.dtype).eps * jnp.max(evals)
        inv = jnp.where(evals > floor, 1.0 / jnp.where(evals > floor, evals, 1.0), 0.0)
        theta = jnp.where(ok, exact_dot(evecs, inv * exact_dot(evecs.T, rhs)) / s, 0.0)

        beta = jnp.asarray(self.damping, x.dtype)
        x_new = x + beta * fx - exact_dot(theta, dx + beta * df)
        r = jnp.linalg.norm(fx)  # fx is the residual F(x) = f(x) - x (the driver's form)
        accepted = dict(
            dx=dx, df=df, x_prev=x, f_prev=fx, k=k + 1, r_prev=r, extrapolated=jnp.any(ok)
        )
        if not self.safeguard:
            return x_new, accepted
        # Reject an extrapolated x whose residual grew (NaN included): a Picard step from the
        # point it came from, with the history restarted (k = 1 keeps only the new difference).
        reject = state["extrapolated"] & ~(r <= state["r_prev"])
        x_prev, f_prev = state["x_prev"], state["f_prev"]
        fallback = dict(
            dx=dx,
            df=df,
            x_prev=x_prev,
            f_prev=f_prev,
            k=jnp.ones((), jnp.int32),
            r_prev=state["r_prev"],
            extrapolated=jnp.zeros((), bool),
        )
        x_new = jnp.where(reject, x_prev + beta * f_prev, x_new)
        return x_new, {key: jnp.where(reject, fallback[key], accepted[key]) for key in accepted}
