r"""Krylov solvers for ``A x = b`` given only ``v -> A v``: restarted GMRES, CG and BiCGStab.

They solve the backward (tangent / adjoint) systems of implicit differentiation, the Newton
systems of :class:`Newton`, and are public through :func:`linear_solve`. One driver,
:func:`krylov_iterate`, runs a ``lax.while_loop`` over a method's ``step``; every step costs
``products_per_step`` matrix-vector products and updates a residual norm the loop tests,
:math:`\|b - A x\|_2 \le \text{atol} + \text{rtol}\,\|b\|_2` (a preconditioned :class:`CG`
applies :math:`M^{-1}` to both vectors). The verdict uses the true residual of the returned
``x``; otherwise the code is ``RESULTS.max_steps_reached`` or
``RESULTS.nonfinite``. ``max_steps`` counts matrix-vector products and may be traced; a zero
initial guess (``x0=None``) costs none.

- GMRES: "GMRES: A Generalized Minimal Residual Algorithm for Solving Nonsymmetric Linear
  Systems" (Saad & Schultz). Arnoldi with classical Gram–Schmidt applied twice (as accurate as
  modified Gram–Schmidt, as four products with the basis). The Hessenberg column is reduced by
  Givens rotations: rows :math:`< j` of their product :math:`Q` are final once rotated and the
  rows past :math:`j + 1` are the identity's, so only the current row :math:`q = Q_j` is kept,
  the rotated entry is :math:`q \cdot h` and :math:`g = Q \beta e_1` never needs storing (its
  entry :math:`j` is :math:`\beta c\, q_0`, the running residual :math:`|\beta s\, q_0|`). The
  inverse of the triangular factor grows by one column per step,
  :math:`R_{j+1}^{-1} = \begin{pmatrix} R_j^{-1} & -R_j^{-1} r / \rho \\ 0 & 1/\rho
  \end{pmatrix}` with :math:`r = (Q h)_{<j}`; the product :math:`R_j^{-1} r` is
  :math:`M^\top h` for :math:`M = \sum_{i<j} Q_i^\top (R^{-\top})_i`, updated by one outer
  product per step, and the coefficients :math:`y = R^{-1} g` gain one column times
  :math:`g_j`. So a step is five products with the basis, one with the small :math:`M` and
  element-wise updates: no triangular solve, no gathers, no per-step pass over :math:`Q`, which
  keeps the step cheap under ``jax.vmap`` (where every array op runs for the whole batch and a
  small op costs about as much as a large one). A restart (after ``restart`` vectors, when the
  running residual passes the tolerance, or when the budget ends) spends its product on the
  true residual :math:`b - A x`, so the loop only stops on a true residual and the returned
  ``x`` needs no further product.
- CG: "Methods of Conjugate Gradients for Solving Linear Systems" (Hestenes & Stiefel), for
  symmetric definite ``A`` (positive or negative), with an optional preconditioner
  :math:`M^{-1}` (:class:`CG`).
- BiCGStab: "Bi-CGSTAB: A Fast and Smoothly Converging Variant of Bi-CG for the Solution of
  Nonsymmetric Linear Systems" (van der Vorst), for general ``A``: two products per step and a
  state of five vectors, no basis. Where GMRES(m) spends five products with an (m + 1)-vector
  basis per matrix-vector product, a BiCGStab step is a handful of vector operations; under
  ``jax.vmap`` over many small systems that is the cheaper solve (see
  ``benchmarks/bench_implicit.py``), at the price of a residual that need not decrease
  monotonically.

CG and BiCGStab update their residual by a recurrence, :math:`r \leftarrow r - \alpha A p`,
which in floating point drifts from the true residual :math:`b - A x`: the gap grows like
:math:`\varepsilon \max_k \|r_k\|` ("Reliable updated residuals in hybrid Bi-CG methods",
Sleijpen & van der Vorst), so after a peak of the residual (a near-breakdown of BiCGStab) the
recurrence can pass the tolerance while the true residual does not (in float32, after a peak
far above the starting residual, the gap is of the order of the tolerance itself). So a run
of steps ends when the recurrence claims convergence (or the method breaks down), the true
residual of the iterate is measured (one product, the one that gives the verdict), and
where it misses the tolerance while the budget lasts the method restarts from that iterate
with that residual (for BiCGStab a new shadow residual :math:`\hat r_0 = r`): the restarted
recurrence starts from a small residual and leaves a gap at rounding level. Only a true
residual is ever accepted. A solve that needs no restart spends its steps and the one
measurement that gives the verdict (none at all for ``b = 0``); a measurement that leads to a
restart counts in ``num_steps`` and in the budget (the last one may go past ``max_steps``, as
the verdict's measurement does). A BiCGStab breakdown (a zero
:math:`\langle \hat r_0, r\rangle`, :math:`\langle \hat r_0, A p\rangle` or
:math:`\langle A s, s \rangle`, an undefined ratio the step takes as 0) ends a run of steps the
same way, since the recurrence cannot go on: the new shadow residual makes
:math:`\langle \hat r_0, r\rangle = \|r\|^2 > 0`. Where :math:`\langle A r, r\rangle = 0` (a
skew ``A``) the restarted step breaks down again without moving, and the budget ends as
``max_steps_reached`` with the true residual, never a silent zero. (Restarting inside the step
from the recurrence residual would save the product but keep the gap; a breakdown is rare, and
the measurement is what tells whether the iterate is done.)
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array

from .._core import RESULTS, check_int, exact_dot
from ._base import AbstractLinearSolver


def krylov_iterate(method, matvec, b, x0, convergence):
    """Run ``method`` on ``A x = b`` from ``x0`` (``None``: zero, which saves a product) until
    ``convergence``'s 2-norm test or budget; ``(x, result, num_matvecs, residual_norm)`` with
    the true residual norm of ``x``."""
    dtype = b.dtype
    rtol, atol = jnp.asarray(convergence.rtol, dtype), jnp.asarray(convergence.atol, dtype)
    tol = atol + rtol * method.reference_norm(b)
    k0 = jnp.asarray(0 if x0 is None else 1, jnp.int32)
    x, rnorm, k = method.run(matvec, b, x0, tol, convergence.max_steps, k0)
    result = RESULTS.where(
        jnp.isfinite(rnorm) & jnp.all(jnp.isfinite(x)),
        RESULTS.where(rnorm <= tol, RESULTS.successful, RESULTS.max_steps_reached),
        RESULTS.nonfinite,
    )
    return x, result, k, rnorm


def run_steps(method, matvec, b, tol, max_steps, state, k):
    """``method.step`` until its residual norm passes ``tol``, the budget of ``max_steps``
    products ends, the norm is not finite or the method breaks down; ``(state, k)``."""

    def cond(carry):
        state, k = carry
        rn = method.residual_norm(state)
        return (rn > tol) & (k < max_steps) & jnp.isfinite(rn) & ~method.broke_down(state)

    per = method.products_per_step

    def body(carry):
        state, k = carry
        return method.step(matvec, b, tol, state, k + per >= max_steps), k + per

    return lax.while_loop(cond, body, (state, k))


class _KrylovMethod(AbstractLinearSolver):
    # Matrix-vector products one ``step`` spends (the driver's budget counts products).
    products_per_step = 1

    @abc.abstractmethod
    def run(self, matvec, b, x0, tol, max_steps, k):
        """``(x, true residual norm of x, k + products spent)`` from ``x0``."""

    @abc.abstractmethod
    def step(self, matvec, b, tol, state, last):
        """Next state (``products_per_step`` products); ``last``: no product is left after it."""

    @abc.abstractmethod
    def residual_norm(self, state):
        """The residual norm the loop tests."""

    def broke_down(self, state):
        """Whether the last step could not continue the recurrence (ends a run of steps)."""
        return jnp.zeros((), bool)

    def reference_norm(self, b):
        """The norm of ``b`` that ``rtol`` is relative to: the one ``residual_norm`` takes of
        the residual, applied to ``b`` (the residual of ``x = 0``)."""
        return jnp.linalg.norm(b)

    def solve_linear(self, matvec, b, convergence, x0=None):
        return krylov_iterate(self, matvec, b, x0, convergence)


def _start(matvec, b, x0):
    """``(x0, b - A x0)``; a zero initial guess (``None``) costs no product."""
    return (jnp.zeros_like(b), b) if x0 is None else (x0, b - matvec(x0))


def _unit(r):
    rn = jnp.linalg.norm(r)
    return r / jnp.where(rn > 0, rn, 1), rn


class GMRES(_KrylovMethod):
    """Restarted GMRES(``restart``) (see the module docstring)."""

    restart: int = eqx.field(static=True, default=20)

    def __check_init__(self):
        check_int("GMRES restart", self.restart)

    def run(self, matvec, b, x0, tol, max_steps, k):
        m = min(self.restart, b.shape[0])
        x0, r0 = _start(matvec, b, x0)
        state = self._cycle(x0, r0, jnp.zeros((m + 1, b.shape[0]), b.dtype))
        state, k = run_steps(self, matvec, b, tol, max_steps, state, k)
        # The loop only stops after a restart (on its true residual, or forced by ``last``),
        # which leaves the iterate at x with the residual norm already measured.
        return state["x"], state["rnorm"], k

    @staticmethod
    def _cycle(x, r, basis):
        """A fresh Arnoldi cycle at ``x`` with residual ``r``: basis (v_0, 0, ..., 0)."""
        v0, rn = _unit(r)
        first = jnp.arange(basis.shape[0]) == 0
        return dict(
            x=x,
            basis=jnp.where(first[:, None], v0, 0.0),
            q=first.astype(r.dtype),
            m=jnp.zeros((basis.shape[0],) * 2, r.dtype),
            y=jnp.zeros(basis.shape[0], r.dtype),
            beta=rn,
            j=jnp.zeros((), jnp.int32),
            rnorm=rn,
            estimate=rn,
        )

    def residual_norm(self, state):
        return state["rnorm"]

    def step(self, matvec, b, tol, state, last):
        basis, q, mat, y, beta, j = (state[k] for k in ("basis", "q", "m", "y", "beta", "j"))
        m1 = basis.shape[0]
        rows = jnp.arange(m1)
        restart = (j >= m1 - 1) | (state["estimate"] <= tol) | last
        at_j, at_next = rows == j, rows == j + 1
        # One product with the basis gives either the restart point x + V y or v_j.
        coef = jnp.where(restart, y, at_j.astype(y.dtype))
        point = jnp.where(restart, state["x"], 0.0) + exact_dot(coef, basis)
        product = matvec(point)

        # Arnoldi: orthogonalise A v_j against v_0..v_j, twice (CGS2), as four products. Rows
        # of the basis past j are zero, so they take no part.
        h = exact_dot(basis, product)
        w = product - exact_dot(h, basis)
        h2 = exact_dot(basis, w)
        w = w - exact_dot(h2, basis)
        v_next, hn = _unit(w)
        h = h + h2
        # Givens rotation j on the column (h, hn): rows < j of Q are final, row j is q (rows
        # past j are the identity's), so the rotated entry j is q . h.
        a = exact_dot(q, h)
        d = jnp.sqrt(a * a + hn * hn)
        ok = d > 0
        safe = jnp.where(ok, d, 1)
        cs = jnp.where(ok, a / safe, 1.0)
        sn = jnp.where(ok, hn / safe, 0.0)
        e_next = at_next.astype(q.dtype)
        q_final = cs * q + sn * e_next
        # g = Q beta e_1: entry j is final now; entry j + 1 is the residual estimate.
        g_j = beta * cs * q[0]
        estimate = jnp.abs(beta * sn * q[0])
        # Column j of R^{-1} is [-R^{-1} r / d ; 1 / d] with r = (Q h)_{<j}, and
        # (Q h)_{<j}^T R^{-T} = h^T M for M = sum_i Q_i^T (R^{-T})_i over the final rows i.
        # y = R^{-1} g gains that column times g_j. A zero d (the Krylov space is invariant
        # and A singular on it) leaves y unchanged: a minimum-norm choice.
        col = jnp.where(ok, (at_j.astype(h.dtype) - exact_dot(h, mat)) / safe, 0.0)
        arnoldi = dict(
            x=state["x"],
            basis=jnp.where(at_next[:, None], v_next, basis),
            q=cs * e_next - sn * q,
            m=mat + q_final[:, None] * col[None, :],
            y=y + g_j * col,
            beta=beta,
            j=j + 1,
            rnorm=state["rnorm"],
            estimate=estimate,
        )
        # A restart spent the product on the true residual b - A x of the restart point.
        fresh = self._cycle(point, b - product, basis)
        return {k: jnp.where(restart, fresh[k], arnoldi[k]) for k in fresh}


class _RecurrenceResidual(_KrylovMethod):
    """A method whose residual is updated by a recurrence, which drifts from the true one:
    runs of steps, each ended by a measurement of the true residual and, where that misses the
    tolerance, followed by a restart from the iterate (see the module docstring)."""

    @abc.abstractmethod
    def restart(self, x, r):
        """The state that starts the method at ``x`` with residual ``r = b - A x``."""

    def run(self, matvec, b, x0, tol, max_steps, k):
        # The carry is always the method (re)started at a true residual, and a run of steps
        # first tests what this loop's cond tests: under vmap a member this loop has finished
        # does not keep the steps' loop running.
        def cond(carry):
            state, k = carry
            rn = self.residual_norm(state)
            return (rn > tol) & (k < max_steps) & jnp.isfinite(rn)

        def body(carry):
            state, k = run_steps(self, matvec, b, tol, max_steps, *carry)
            x = state["x"]
            return self.restart(x, b - matvec(x)), k + 1

        start = (self.restart(*_start(matvec, b, x0)), k)
        state, k = lax.while_loop(cond, body, start)
        return state["x"], self.residual_norm(state), k


class CG(_RecurrenceResidual):
    r"""Conjugate gradients for symmetric (positive or negative) definite operators, optionally
    preconditioned.

    Args:
        preconditioner: ``None``, or a function :math:`v \mapsto M^{-1} v` with :math:`M`
            symmetric positive definite and :math:`M^{-1} A` better conditioned than :math:`A`
            (a Jacobi preconditioner: ``lambda v: v / diagonal``; a fast Poisson solver for a
            variable-coefficient Laplacian, as :func:`jaxsolve.pde.darcy_solve` uses). The
            iteration is that of CG on :math:`M^{-1/2} A M^{-1/2}`, whose condition number sets
            the rate. A preconditioner that holds traced arrays should be an
            :class:`equinox.Module` or a :class:`jax.tree_util.Partial`, so that they are leaves
            of the solver rather than closed over.

    Preconditioned CG ("Methods of Conjugate Gradients for Solving Linear Systems", Hestenes &
    Stiefel; the preconditioned form as in Concus, Golub & O'Leary, "A Generalized Conjugate
    Gradient Method for the Numerical Solution of Elliptic Partial Differential Equations"):
    with :math:`z_k = M^{-1} r_k`,

    .. math:: \alpha_k = \frac{r_k^\top z_k}{p_k^\top A p_k}, \quad
       x_{k+1} = x_k + \alpha_k p_k, \quad r_{k+1} = r_k - \alpha_k A p_k, \quad
       p_{k+1} = z_{k+1} + \frac{r_{k+1}^\top z_{k+1}}{r_k^\top z_k}\, p_k .

    With a preconditioner the test is on the preconditioned residual,
    :math:`\|M^{-1}(b - Ax)\|_2 \le \text{atol} + \text{rtol}\,\|M^{-1} b\|_2`, and that
    norm is the one reported (as PETSc's default for preconditioned CG). The reason: computing
    :math:`Ax` rounds with an error of about :math:`\varepsilon\, |A|\,|x|`, so the plain
    residual of an ill-conditioned :math:`A` cannot be measured below that floor — for a
    discretised elliptic operator it grows like the square of the grid size, and in float32 it
    passes :math:`10^{-5}\|b\|` on moderate grids. That rounding noise is rough, and a good
    :math:`M^{-1}` (an approximate inverse of :math:`A`) damps it to about
    :math:`\varepsilon\,\kappa(M^{-1}A)\,\|x\|`, while for an exact solve
    :math:`M^{-1}(b - Ax) = M^{-1}A\,(x^* - x)` bounds the error:
    :math:`\|x^* - x\|_M \le \|M^{-1}(b - Ax)\|_M / \lambda_{\min}(M^{-1}A)`.
    """

    preconditioner: Callable[[Array], Array] | None = None

    def __check_init__(self):
        if self.preconditioner is not None and not callable(self.preconditioner):
            raise TypeError(
                "CG preconditioner must be a function v -> M^{-1} v or None; got "
                f"{type(self.preconditioner).__name__}."
            )

    def _precondition(self, r):
        """``(z, r . z, ||z||_2)`` with ``z = M^{-1} r`` (``z = r`` without a preconditioner,
        whose norm is then the square root of the product already taken)."""
        if self.preconditioner is None:
            rz = exact_dot(r, r)
            return r, rz, jnp.sqrt(rz)
        z = jnp.asarray(self.preconditioner(r)).astype(r.dtype)
        return z, exact_dot(r, z), jnp.sqrt(exact_dot(z, z))

    def reference_norm(self, b):
        return self._precondition(b)[2]

    def restart(self, x, r):
        z, rz, znorm = self._precondition(r)
        return dict(x=x, r=r, p=z, rz=rz, znorm=znorm)

    def residual_norm(self, state):
        return state["znorm"]

    def step(self, matvec, b, tol, state, last):
        x, r, p, rz = state["x"], state["r"], state["p"], state["rz"]
        ap = matvec(p)
        alpha = rz / exact_dot(p, ap)
        x = x + alpha * p
        r = r - alpha * ap
        z, rz_new, znorm = self._precondition(r)
        return dict(x=x, r=r, p=z + (rz_new / rz) * p, rz=rz_new, znorm=znorm)


def _ratio(num, den):
    """``num / den``, and 0 where ``den`` is 0 (a breakdown: the step skips that update, and
    the run of steps ends)."""
    ok = den != 0
    return jnp.where(ok, num / jnp.where(ok, den, 1), 0.0)


class BiCGStab(_RecurrenceResidual):
    """BiCGStab (see the module docstring): a step is one BiCG half-step and one minimal-residual
    smoothing step, two matrix-vector products."""

    products_per_step = 2

    def restart(self, x, r):
        one = jnp.ones((), r.dtype)
        zero = jnp.zeros_like(r)
        # The shadow residual is the (re)starting one; rho = alpha = omega = 1 makes the first
        # direction p = r.
        return dict(
            x=x,
            r=r,
            shadow=r,
            p=zero,
            v=zero,
            rho=one,
            alpha=one,
            omega=one,
            broke_down=jnp.zeros((), bool),
        )

    def residual_norm(self, state):
        return jnp.linalg.norm(state["r"])

    def broke_down(self, state):
        return state["broke_down"]

    def step(self, matvec, b, tol, state, last):
        x, r, shadow = state["x"], state["r"], state["shadow"]
        rho = exact_dot(shadow, r)
        beta = _ratio(rho, state["rho"]) * _ratio(state["alpha"], state["omega"])
        p = r + beta * (state["p"] - state["omega"] * state["v"])
        v = matvec(p)
        shadow_v = exact_dot(shadow, v)
        alpha = _ratio(rho, shadow_v)
        s = r - alpha * v
        t = matvec(s)
        omega = _ratio(exact_dot(t, s), exact_dot(t, t))
        return dict(
            x=x + alpha * p + omega * s,
            r=s - omega * t,
            shadow=shadow,
            p=p,
            v=v,
            rho=rho,
            alpha=alpha,
            omega=omega,
            # A zero ratio above stands for an undefined one: the next step's beta (or this
            # alpha) has no meaning, so the run ends and the method restarts.
            broke_down=(rho == 0) | (shadow_v == 0) | (omega == 0),
        )
