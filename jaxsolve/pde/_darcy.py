r"""Darcy flow :math:`-\nabla\cdot(a\nabla u) = f` on :math:`[0,1]^2`, :math:`u = 0` on the boundary.

Discretisation (second order for smooth :math:`a`): the node grid of :math:`s \times s` points
:math:`x_{ij} = (i, j)\,h`, :math:`h = 1/(s-1)`, boundary included; the five-point scheme

.. math:: \frac{1}{h^2}\sum_{\text{4 neighbours } m} a_{\,i m}\,(u_i - u_m) = f_i

on interior nodes, with the coefficient on the face between two nodes the harmonic mean
:math:`a_{im} = 2 a_i a_m / (a_i + a_m)` (the series conductance of the two half cells, which
keeps fluxes continuous across a jump in :math:`a`, the FNO paper's piecewise-constant fields).

The symmetric positive definite system is solved by conjugate gradients preconditioned with the
constant-coefficient Dirichlet Laplacian, inverted exactly by a type-I sine transform (one real
FFT of the odd extension per axis). Since
:math:`\min_f a_f\, L \preceq A \preceq \max_f a_f\, L`, the preconditioned condition number is at
most :math:`\max a / \min a` whatever the grid: for the FNO fields (:math:`a \in \{3, 12\}`) about
20 iterations reach :math:`10^{-8}` at every resolution ("Methods of Conjugate Gradients for
Solving Linear Systems", Hestenes & Stiefel; fast Poisson preconditioning as in Concus & Golub).
The iteration is :class:`jaxsolve.implicit.CG` with that preconditioner :math:`P`: it stops on the
preconditioned residual of the returned :math:`u`, :math:`\|P(f - Au)\|_2 \le \text{atol} +
\text{rtol}\,\|Pf\|_2`. Since :math:`PA` is spectrally equivalent to the identity, this residual
is close to the relative error of :math:`u`; the plain residual :math:`f - Au` cannot be measured
below the rounding of :math:`Au`, about :math:`\varepsilon \max a \,|u| / h^2`, which in float32
lies above :math:`10^{-5}\|f\|` from :math:`s \approx 65` on.

Derivatives with respect to :math:`a` and :math:`f` come from the implicit function theorem
(``lax.custom_linear_solve``): the adjoint system is the same symmetric system. A derivative taken
through a solve that failed would be the derivative at a point that solves nothing: it raises
with ``throw=True`` (the default) and is NaN with ``throw=False``, as is the gradient when the
adjoint solve itself fails; never a plausible number.

The scheme needs :math:`a > 0` everywhere: with :math:`a \le 0` somewhere the matrix is no longer
positive definite (a harmonic face mean of opposite signs can even be infinite), and for
:math:`a < 0` everywhere CG "converges" to :math:`-u`, a solution of a different equation.
A concrete ``a`` that is not positive and finite raises ``ValueError``; a traced one is checked at
run time (:func:`equinox.error_if`).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int

from .._core import RESULTS, as_float, check_step_budget, default_float, is_concrete
from ..implicit import CG, Convergence
from ._checks import check_parameter


class DarcySolution(eqx.Module):
    """Solution of :func:`darcy_solve`: ``u`` (same layout as ``a``, zero on the boundary), the
    :data:`~jaxsolve.RESULTS` code, the matrix-vector products CG spent (its iterations and the
    products that measured the residual of the returned ``u``) and the final relative residual
    :math:`\\|f - A u\\|_2 / \\|f\\|_2` on the interior nodes (unpreconditioned, so in float32 at
    least its rounding floor; see the module docstring)."""

    u: Float[Array, " ..."]
    result: RESULTS
    num_steps: Int[Array, ""]
    residual: Float[Array, ""]


def _faces(a):
    """Harmonic means of nodal ``a`` on the faces along axis 0 and along axis 1."""
    ax = 2.0 * a[1:, :] * a[:-1, :] / (a[1:, :] + a[:-1, :])
    ay = 2.0 * a[:, 1:] * a[:, :-1] / (a[:, 1:] + a[:, :-1])
    return ax, ay


def darcy_operator(a: Float[Array, " s s"]):
    r"""The matrix-free operator :math:`u_{\text{interior}} \mapsto (A u)_{\text{interior}}`."""
    s = a.shape[-1]
    h2 = 1.0 / float(s - 1) ** 2
    ax, ay = _faces(a)

    def matvec(v):
        u = jnp.pad(v, 1)
        fx = ax * (u[1:, :] - u[:-1, :])  # flux through the faces along axis 0
        fy = ay * (u[:, 1:] - u[:, :-1])
        div = (fx[1:, 1:-1] - fx[:-1, 1:-1]) + (fy[1:-1, 1:] - fy[1:-1, :-1])
        return -div / h2

    return matvec


def _dst1(v, axis):
    r"""Type-I sine transform :math:`\sum_{j=1}^{n} v_j \sin(\pi j k/(n+1))`, ``k = 1..n``."""
    v = jnp.moveaxis(v, axis, -1)
    n = v.shape[-1]
    zero = jnp.zeros((*v.shape[:-1], 1), v.dtype)
    ext = jnp.concatenate([zero, v, zero, -jnp.flip(v, axis=-1)], axis=-1)
    out = -0.5 * jnp.imag(jnp.fft.rfft(ext, axis=-1))[..., 1 : n + 1]
    return jnp.moveaxis(out.astype(v.dtype), -1, axis)


def poisson_inverse(s: int, dtype):
    r"""Exact inverse of the five-point Dirichlet Laplacian :math:`-\Delta_h` on the interior
    of the ``s x s`` node grid (the preconditioner)."""
    n = s - 2
    h2 = 1.0 / float(s - 1) ** 2
    k = np.arange(1, n + 1)
    lam1 = 4.0 * np.sin(np.pi * k / (2.0 * (n + 1))) ** 2 / h2
    inv = 1.0 / (lam1[:, None] + lam1[None, :])
    scale = (2.0 / (n + 1)) ** 2  # S @ S = (n + 1)/2 I per axis
    inv = jnp.asarray(inv * scale, dtype)

    def apply(r):
        return _dst1(_dst1(_dst1(_dst1(r, 0), 1) * inv, 0), 1)

    return apply


def _on_grid(fn, shape):
    """``fn``, a map between ``shape`` grids, as a map between flat vectors (what CG works on)."""
    return lambda v: fn(v.reshape(shape)).reshape(-1)


_FAILED = (
    "darcy_solve: CG did not converge (it reached max_steps, or a NaN or infinity appeared in a "
    "or f). Pass throw=False to read the result code instead."
)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _derivative_only_if(x, ok, throw):
    """``x``; its derivatives are NaN where ``ok`` is False (a failed solve), or raise when
    ``throw``."""
    return x


@_derivative_only_if.defjvp
def _derivative_only_if_jvp(throw, primals, tangents):
    x, ok = primals
    tx, _ = tangents
    scale = jnp.where(ok, 1.0, jnp.nan).astype(tx.dtype)
    if throw:
        # On the scale, not on x: under jax.grad the primal output is discarded (and with it a
        # check placed on x), while the scale is a residual the backward pass needs.
        scale = eqx.error_if(scale, ~ok, _FAILED)
    # A product with a constant, so the tangent stays linear (reverse mode transposes it).
    return x, tx * scale


def _check_field(name, v):
    """A real array; when concrete, finite (and, for the coefficient ``a``, positive).

    Called on the argument as given: inside a trace even a conversion of a constant (``astype``)
    gives a tracer, whose value can no longer be read.
    """
    if jnp.iscomplexobj(v):
        raise TypeError(f"darcy_solve: {name} must be real; got dtype {jnp.result_type(v)}.")
    if not is_concrete(v):
        return
    values = np.asarray(v, np.float64)
    bad = ~np.isfinite(values)
    if name == "a":
        bad |= values <= 0
    if np.any(bad):
        rule = "positive and finite" if name == "a" else "finite"
        first = tuple(int(i) for i in np.argwhere(bad)[0]) if values.ndim else ()
        raise ValueError(
            f"darcy_solve: {name} must be {rule} at every node; got {values[first].item()!r} at "
            f"index {first} ({int(bad.sum())} of {values.size} nodes)."
        )


def darcy_solve(
    a: Float[ArrayLike, " *c s s"],
    f: Float[ArrayLike, " *c s s"] | float = 1.0,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
    max_steps: int | Int[ArrayLike, ""] = 500,
    throw: bool = True,
) -> DarcySolution:
    r"""Solve :math:`-\nabla\cdot(a\nabla u) = f` on :math:`[0,1]^2` with :math:`u = 0` on the
    boundary, on the ``s x s`` node grid of ``a`` (see the module docstring).

    Args:
        a: positive, finite coefficient at the nodes, shape ``(s, s)`` or one sample
            ``(1, s, s)``. Concrete: checked now (``ValueError`` naming the first bad node);
            traced: a non-positive value raises when the compiled code runs (a NaN or infinity
            gives ``RESULTS.nonfinite``).
        f: right-hand side, a number or an array like ``a`` (its boundary values are unused).
        rtol, atol: stop when :math:`\|P(f - Au)\|_2 \le \text{atol} + \text{rtol}\,\|Pf\|_2`
            on the interior, with :math:`P` the Poisson inverse (the preconditioner; see the
            module docstring), so ``rtol`` is about the relative error of ``u``. ``rtol``
            defaults to 1e-6 in float32 (a few times the rounding floor of that residual for a
            contrast :math:`\max a / \min a` near 4; it grows with the contrast) and 1e-10 in
            float64, and must be below 1 (at ``rtol >= 1`` the zero field passes the test).
        max_steps: most matrix-vector products of CG (an int >= 1, or a traced integer).
        throw: raise if the solve did not succeed. On by default, as everywhere a result code
            exists: pass ``throw=False`` to read ``result`` instead (say, for a batch under
            ``jax.vmap``, where one failure would stop all).

    One solve; batch with ``jax.vmap``. With ``throw=False`` a failed solve returns the last CG
    iterate with a non-successful ``result``, and derivatives through it are NaN (with
    ``throw=True`` they raise, as the solve does).
    """
    _check_field("a", a)
    _check_field("f", f)
    a = as_float(a)
    squeeze = a.ndim == 3
    if squeeze:
        if a.shape[0] != 1:
            raise ValueError(f"a must have shape (s, s) or (1, s, s); got {a.shape}.")
        a = a[0]
    if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < 3:
        raise ValueError(f"a must be a square grid (s, s) with s >= 3; got shape {a.shape}.")
    s = a.shape[0]
    f = as_float(f)
    if f.ndim == 0:
        f = jnp.full((s, s), f, a.dtype)
    elif f.shape == (1, s, s):
        f = f[0]
    if f.shape != (s, s):
        raise ValueError(f"f must be a number or have the shape of a, {a.shape}; got {f.shape}.")
    dtype = jnp.result_type(a.dtype, f.dtype)
    a, f = a.astype(dtype), f.astype(dtype)
    if rtol is None:
        rtol = 1e-10 if dtype == jnp.float64 else 1e-6
    check_parameter("darcy_solve", "rtol", rtol, "non-negative")
    check_parameter("darcy_solve", "atol", atol, "non-negative")
    if is_concrete(rtol) and not float(rtol) < 1:
        raise ValueError(
            f"darcy_solve: rtol must be < 1 (at rtol >= 1 the zero field meets the tolerance); "
            f"got {rtol!r}."
        )
    max_steps = check_step_budget("max_steps", max_steps)
    # A traced coefficient: checked when the compiled code runs (a concrete one was checked
    # above). NaN passes this test on purpose: CG stops on it and reports RESULTS.nonfinite.
    if not is_concrete(a):
        a = eqx.error_if(
            a, jnp.any(a <= 0), "darcy_solve: a must be positive at every node (a traced value)."
        )

    matvec = darcy_operator(a)
    interior = (s - 2, s - 2)
    cg = CG(preconditioner=_on_grid(poisson_inverse(s, dtype), interior))
    convergence = Convergence(rtol=rtol, atol=atol, max_steps=max_steps)
    b = f[1:-1, 1:-1]

    def solve(mv, rhs):
        x, result, k, rnorm = cg.solve_linear(_on_grid(mv, interior), rhs.reshape(-1), convergence)
        return x.reshape(interior), (result, k, rnorm)

    def adjoint_solve(mv, rhs):
        # The backward pass's solve: if it fails, the gradient is NaN rather than wrong.
        x, aux = solve(mv, rhs)
        return jnp.where(aux[0] == RESULTS.successful, x, jnp.nan), aux

    x, (result, k, _) = lax.custom_linear_solve(
        matvec, b, solve, adjoint_solve, symmetric=True, has_aux=True
    )
    x = _derivative_only_if(x, result == RESULTS.successful, bool(throw))
    if throw:
        x = eqx.error_if(x, result != RESULTS.successful, _FAILED)
    u = jnp.pad(x, 1)
    bnorm = jnp.linalg.norm(b)
    rel = jnp.linalg.norm(b - matvec(x)) / jnp.where(
        bnorm > 0, bnorm, jnp.ones((), default_float())
    )
    return DarcySolution(u[None] if squeeze else u, result, k, rel)
