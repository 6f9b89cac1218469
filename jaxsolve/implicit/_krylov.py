r"""Krylov solvers for ``A x = b`` given only ``v -> A v``: restarted GMRES and conjugate gradients.

They solve the backward (tangent / adjoint) systems of implicit differentiation, the Newton
systems of :class:`Newton`, and are public through :func:`linear_solve`. One driver,
:func:`krylov_iterate`, runs a ``lax.while_loop`` over a method's ``step``; every step costs
exactly one matrix-vector product and updates a residual norm the driver tests,
:math:`\|b - A x\|_2 \le \text{atol} + \text{rtol}\,\|b\|_2`. The verdict uses the true residual
of the returned ``x`` (one more product); otherwise the code is ``RESULTS.max_steps_reached``
or ``RESULTS.nonfinite``. ``max_steps`` counts matrix-vector products and may be traced.

- GMRES: "GMRES: A Generalized Minimal Residual Algorithm for Solving Nonsymmetric Linear
  Systems" (Saad & Schultz). Arnoldi with classical Gram–Schmidt applied twice (as accurate as
  modified Gram–Schmidt, as two matrix products). The Hessenberg matrix is reduced by Givens
  rotations whose product :math:`Q` is kept as a small dense matrix, so rotating a new column is
  one product :math:`Q h` and :math:`|(Q \beta e_1)_{j+1}|` is the running residual. A restart
  (after ``restart`` vectors, or when the running residual passes the tolerance) spends its
  product on the true residual :math:`b - A x`, so the driver only ever stops on a true residual.
- CG: "Methods of Conjugate Gradients for Solving Linear Systems" (Hestenes & Stiefel), for
  symmetric definite ``A`` (positive or negative); the driver tests the recurrence residual.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jax.scipy.linalg import solve_triangular

from .._core import RESULTS
from ._base import AbstractLinearSolver


def krylov_iterate(method, matvec, b, x0, rtol, atol, max_steps):
    """Run ``method`` on ``A x = b``; ``(x, result, num_matvecs, residual_norm)``."""
    dtype = b.dtype
    tol = jnp.asarray(atol, dtype) + jnp.asarray(rtol, dtype) * jnp.linalg.norm(b)
    state = method.init(matvec, b, x0)

    def cond(carry):
        state, k = carry
        rn = method.residual_norm(state)
        return (rn > tol) & (k < max_steps) & jnp.isfinite(rn)

    def body(carry):
        state, k = carry
        return method.step(matvec, b, tol, state), k + 1

    state, k = lax.while_loop(cond, body, (state, jnp.ones((), jnp.int32)))
    x = method.value(state)
    rnorm = jnp.linalg.norm(b - matvec(x))
    result = RESULTS.where(
        jnp.isfinite(rnorm) & jnp.all(jnp.isfinite(x)),
        RESULTS.where(rnorm <= tol, RESULTS.successful, RESULTS.max_steps_reached),
        RESULTS.nonfinite,
    )
    return x, result, k + 1, rnorm


class _KrylovMethod(AbstractLinearSolver):
    @abc.abstractmethod
    def init(self, matvec, b, x0):
        """State at ``x0`` (one matrix-vector product)."""

    @abc.abstractmethod
    def step(self, matvec, b, tol, state):
        """Next state (one matrix-vector product)."""

    @abc.abstractmethod
    def value(self, state):
        """The current iterate."""

    @abc.abstractmethod
    def residual_norm(self, state):
        """The residual norm the driver tests."""

    def solve(self, matvec, b, x0, rtol, atol, max_steps):
        return krylov_iterate(self, matvec, b, x0, rtol, atol, max_steps)


def _unit(r):
    rn = jnp.linalg.norm(r)
    return r / jnp.where(rn > 0, rn, 1), rn


class GMRES(_KrylovMethod):
    """Restarted GMRES(``restart``) (see the module docstring)."""

    restart: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        if not isinstance(self.restart, int) or isinstance(self.restart, bool) or self.restart < 1:
            raise ValueError(f"GMRES restart must be a Python int >= 1; got {self.restart!r}.")

    def _cycle(self, x, r):
        """A fresh Arnoldi cycle at ``x`` with residual ``r``."""
        m = min(self.restart, r.shape[0])
        v0, rn = _unit(r)
        return dict(
            x=x,
            basis=jnp.zeros((m + 1, r.shape[0]), r.dtype).at[0].set(v0),
            upper=jnp.zeros((m + 1, m), r.dtype),
            rot=jnp.eye(m + 1, dtype=r.dtype),
            g=jnp.zeros((m + 1,), r.dtype).at[0].set(rn),
            j=jnp.zeros((), jnp.int32),
            rnorm=rn,
            estimate=rn,
        )

    def init(self, matvec, b, x0):
        return self._cycle(x0, b - matvec(x0))

    def value(self, state):
        m = state["upper"].shape[1]
        used = jnp.arange(m) < state["j"]
        upper = jnp.where(used[:, None] & used[None, :], state["upper"][:m], 0.0)
        upper = upper + jnp.diag(jnp.where(used, 0.0, 1.0))
        y = solve_triangular(upper, jnp.where(used, state["g"][:m], 0.0), lower=False)
        return state["x"] + state["basis"][:m].T @ y

    def residual_norm(self, state):
        return state["rnorm"]

    def step(self, matvec, b, tol, state):
        m = state["upper"].shape[1]
        j = state["j"]
        restart = (j >= m) | (state["estimate"] <= tol)
        x_now = self.value(state)
        basis = state["basis"]
        product = matvec(jnp.where(restart, x_now, basis[jnp.minimum(j, m)]))

        # Arnoldi: orthogonalise A v_j against the basis (twice), rotate the new column.
        h = basis @ product
        w = product - basis.T @ h
        h2 = basis @ w
        w = w - basis.T @ h2
        h = h + h2
        v_next, hn = _unit(w)
        jj = jnp.minimum(j, m - 1)
        h = h.at[jj + 1].set(hn)
        hq = state["rot"] @ h
        a, c = hq[jj], hq[jj + 1]
        d = jnp.hypot(a, c)
        cs = jnp.where(d > 0, a / jnp.where(d > 0, d, 1), 1.0)
        sn = jnp.where(d > 0, c / jnp.where(d > 0, d, 1), 0.0)
        rot, g = state["rot"], state["g"]
        rot = (
            rot.at[jj]
            .set(cs * rot[jj] + sn * rot[jj + 1])
            .at[jj + 1]
            .set(-sn * rot[jj] + cs * rot[jj + 1])
        )
        g = g.at[jj].set(cs * g[jj] + sn * g[jj + 1]).at[jj + 1].set(-sn * g[jj] + cs * g[jj + 1])
        arnoldi = dict(
            x=state["x"],
            basis=basis.at[jj + 1].set(v_next),
            upper=state["upper"].at[:, jj].set(hq.at[jj].set(d).at[jj + 1].set(0.0)),
            rot=rot,
            g=g,
            j=j + 1,
            rnorm=state["rnorm"],
            estimate=jnp.abs(g[jj + 1]),
        )
        fresh = self._cycle(x_now, b - product)
        return {k: jnp.where(restart, fresh[k], arnoldi[k]) for k in fresh}


class CG(_KrylovMethod):
    """Conjugate gradients, for symmetric (positive or negative) definite operators."""

    def init(self, matvec, b, x0):
        r = b - matvec(x0)
        return dict(x=x0, r=r, p=r, rs=r @ r)

    def value(self, state):
        return state["x"]

    def residual_norm(self, state):
        return jnp.sqrt(state["rs"])

    def step(self, matvec, b, tol, state):
        x, r, p, rs = state["x"], state["r"], state["p"], state["rs"]
        ap = matvec(p)
        alpha = rs / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        return dict(x=x, r=r, p=r + (rs_new / rs) * p, rs=rs_new)
