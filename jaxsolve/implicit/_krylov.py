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
  one product :math:`Q h` and :math:`|(Q \beta e_1)_{j+1}|` is the running residual. The inverse
  of the triangular factor grows by one column per step,
  :math:`R_{j+1}^{-1} = \begin{pmatrix} R_j^{-1} & -R_j^{-1} r / \rho \\ 0 & 1/\rho
  \end{pmatrix}`, so the iterate :math:`x_0 + V R^{-1} g` needs no triangular solve. A restart
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


def _small_mv(mat, v):
    """``mat @ v`` for the small (restart-sized) matrices, as a fused multiply-reduce: XLA
    compiles a dot per use, which costs more than the work on these sizes."""
    return jnp.sum(mat * v[None, :], axis=1)


def _unit(r):
    rn = jnp.linalg.norm(r)
    return r / jnp.where(rn > 0, rn, 1), rn


class GMRES(_KrylovMethod):
    """Restarted GMRES(``restart``) (see the module docstring)."""

    restart: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        if not isinstance(self.restart, int) or isinstance(self.restart, bool) or self.restart < 1:
            raise ValueError(f"GMRES restart must be a Python int >= 1; got {self.restart!r}.")

    def _restart(self, x, r, basis):
        """A fresh Arnoldi cycle at ``x`` with residual ``r``: only row 0 of the basis is set;
        the rows after the current step are never read (inner products are masked)."""
        m = basis.shape[0] - 1
        v0, rn = _unit(r)
        first = jnp.arange(m + 1) == 0
        return dict(
            x=x,
            basis=jnp.where(first[:, None], v0[None, :], basis),
            rinv=jnp.zeros((m, m), r.dtype),
            rot=jnp.eye(m + 1, dtype=r.dtype),
            g=jnp.where(first, rn, 0.0),
            j=jnp.zeros((), jnp.int32),
            rnorm=rn,
            estimate=rn,
        )

    def init(self, matvec, b, x0):
        m = min(self.restart, b.shape[0])
        return self._restart(x0, b - matvec(x0), jnp.zeros((m + 1, b.shape[0]), b.dtype))

    def value(self, state):
        m = state["rinv"].shape[0]
        # Columns of R^{-1} beyond the current step are zero, so unused entries of g drop out.
        return state["x"] + _small_mv(state["rinv"], state["g"][:m]) @ state["basis"][:m]

    def residual_norm(self, state):
        return state["rnorm"]

    def step(self, matvec, b, tol, state):
        # Row updates use one-hot masks rather than scatters: much less for XLA to compile.
        m = state["rinv"].shape[0]
        j = state["j"]
        restart = (j >= m) | (state["estimate"] <= tol)
        x_now = self.value(state)
        basis = state["basis"]
        rows = jnp.arange(m + 1)
        jj = jnp.minimum(j, m - 1)
        at_j, at_next, live = rows == jj, rows == jj + 1, rows <= jj
        product = matvec(jnp.where(restart, x_now, basis[jj]))

        # Arnoldi: orthogonalise A v_j against v_0..v_j (twice), rotate the new column.
        h = jnp.where(live, basis @ product, 0.0)
        w = product - h @ basis
        h2 = jnp.where(live, basis @ w, 0.0)
        w = w - h2 @ basis
        v_next, hn = _unit(w)
        h = jnp.where(at_next, hn, h + h2)
        hq = _small_mv(state["rot"], h)
        a = jnp.sum(jnp.where(at_j, hq, 0.0))
        c = jnp.sum(jnp.where(at_next, hq, 0.0))
        d = jnp.sqrt(a * a + c * c)
        cs = jnp.where(d > 0, a / jnp.where(d > 0, d, 1), 1.0)
        sn = jnp.where(d > 0, c / jnp.where(d > 0, d, 1), 0.0)
        # The rotation acts on rows j and j + 1 of Q and of g = Q beta e_1.
        rot, g = state["rot"], state["g"]
        rot_j = jnp.sum(jnp.where(at_j[:, None], rot, 0.0), axis=0)
        rot_n = jnp.sum(jnp.where(at_next[:, None], rot, 0.0), axis=0)
        rot = jnp.where(at_j[:, None], cs * rot_j + sn * rot_n, rot)
        rot = jnp.where(at_next[:, None], -sn * rot_j + cs * rot_n, rot)
        g_j = jnp.sum(jnp.where(at_j, g, 0.0))
        g_n = jnp.sum(jnp.where(at_next, g, 0.0))
        g = jnp.where(at_j, cs * g_j + sn * g_n, jnp.where(at_next, -sn * g_j + cs * g_n, g))
        # New column of R: hq above the diagonal, d on it. A zero d (the Krylov space is
        # invariant and A singular on it) leaves the column at zero: a minimum-norm choice.
        cols = jnp.arange(m)
        above = jnp.where(cols < jj, hq[:m], 0.0)
        col = ((cols == jj) - _small_mv(state["rinv"], above)) / jnp.where(d > 0, d, 1)
        rinv = jnp.where((cols == jj)[None, :] & (d > 0), col[:, None], state["rinv"])
        arnoldi = dict(
            x=state["x"],
            basis=basis,
            rinv=rinv,
            rot=rot,
            g=g,
            j=j + 1,
            rnorm=state["rnorm"],
            estimate=jnp.abs(-sn * g_j + cs * g_n),
        )
        # One pass over the basis writes either the next Arnoldi vector or the restart vector.
        fresh = self._restart(x_now, b - product, basis)
        v0 = fresh["basis"][0]
        new_row = jnp.where(restart, rows == 0, at_next)
        arnoldi["basis"] = fresh["basis"] = jnp.where(
            new_row[:, None], jnp.where(restart, v0, v_next)[None, :], basis
        )
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
