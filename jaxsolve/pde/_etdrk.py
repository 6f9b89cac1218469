r"""Exponential time differencing Runge–Kutta (ETDRK) steppers for stiff semilinear PDEs.

For :math:`u_t = \mathcal L u + \mathcal N(u)` with :math:`\mathcal L` diagonal in Fourier space
(symbol :math:`L_k`), an exponential Runge–Kutta step of size :math:`h` treats the linear part
exactly. With :math:`z = h L_k` and :math:`N_j = \widehat{\mathcal N}(U_j)`,

.. math:: \hat U_i = \varphi_0(c_i z)\, \hat u_n + h \sum_{j<i} a_{ij}(z)\, N_j, \qquad
   \hat u_{n+1} = \varphi_0(z)\, \hat u_n + h \sum_i b_i(z)\, N_i,

where :math:`\varphi_0(z) = e^z` and :math:`\varphi_{k+1}(z) = (\varphi_k(z) - 1/k!)/z`. The
coefficients :math:`a_{ij}, b_i` are polynomials in :math:`\varphi_k(c z)`, so a method is *data*:
an :class:`ExpRKTableau` of such expressions, run by the one engine :class:`ETDRK`. The methods
are those of "Exponential Time Differencing for Stiff Systems" (Cox & Matthews): ETD1 (exponential
Euler), ETD2RK, ETD3RK and the fourth-order ETDRK4

.. math:: a_{21} = a_{32} = \tfrac12\varphi_1(\tfrac z2),\quad
   a_{41} = \tfrac12\varphi_1(\tfrac z2)(\varphi_0(\tfrac z2) - 1),\quad
   a_{43} = \varphi_1(\tfrac z2),\\
   b_1 = \varphi_1 - 3\varphi_2 + 4\varphi_3,\quad b_2 = b_3 = 2\varphi_2 - 4\varphi_3,\quad
   b_4 = 4\varphi_3 - \varphi_2 .

The :math:`\varphi_k` suffer cancellation near :math:`z = 0` (:math:`\varphi_3` loses
:math:`|z|^{-3}` digits). Following "Fourth-Order Time-Stepping for Stiff PDEs" (Kassam &
Trefethen), they are evaluated there as the mean over points on a circle around :math:`z`, which
by Cauchy's formula equals :math:`\varphi_k(z)` for these entire functions and never evaluates
near the singular point. We use the contour where :math:`|z| < 1` (radius 2, so every contour
point has :math:`|w| \ge 1`) and the closed form elsewhere, where it is exact to rounding: the
coefficients are then accurate to a few ulps for every mode, in float32 as in float64, and the
time step, the viscosity and any other coefficient of :math:`L` may be traced.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float

from .._core import as_float, check_choice, check_int, default_float
from ._checks import check_parameter, check_traced_parameters
from ._equations import AbstractEquation
from ._grf import check_shape
from ._spectral import SpectralGrid

# ----------------------------------------------------------------------------------------------
# Coefficients as data: polynomials in phi_k(c z)
# ----------------------------------------------------------------------------------------------


class PhiExpr:
    r"""A polynomial in :math:`\varphi_k(c\,z)`: ``{((k, c), ...): weight}``, hashable.

    ``phi(k, c)`` is one factor; sums, differences and products with numbers and other
    expressions build the coefficients of a tableau.
    """

    __slots__ = ("terms",)

    def __init__(self, terms):
        items = terms.items() if isinstance(terms, dict) else terms
        merged: dict = {}
        for factors, weight in items:
            key = tuple(sorted(factors))
            merged[key] = merged.get(key, 0.0) + float(weight)
        self.terms = tuple(sorted((k, w) for k, w in merged.items() if w != 0.0))

    @staticmethod
    def _lift(other):
        return other if isinstance(other, PhiExpr) else PhiExpr({(): float(other)})

    def __add__(self, other):
        return PhiExpr(self.terms + self._lift(other).terms)

    __radd__ = __add__

    def __neg__(self):
        return PhiExpr({k: -w for k, w in self.terms})

    def __sub__(self, other):
        return self + (-self._lift(other))

    def __rsub__(self, other):
        return self._lift(other) - self

    def __mul__(self, other):
        other = self._lift(other)
        out: dict = {}
        for fa, wa in self.terms:
            for fb, wb in other.terms:
                key = tuple(sorted(fa + fb))
                out[key] = out.get(key, 0.0) + wa * wb
        return PhiExpr(out)

    __rmul__ = __mul__

    def __eq__(self, other):
        return isinstance(other, PhiExpr) and self.terms == other.terms

    def __hash__(self):
        return hash(self.terms)

    def __repr__(self):
        parts = []
        for factors, w in self.terms:
            f = "*".join(f"phi{k}({c:g}z)" for k, c in factors) or "1"
            parts.append(f"{w:+g}*{f}")
        return " ".join(parts) or "0"

    def factors(self):
        return {f for factors, _ in self.terms for f in factors}

    def evaluate(self, table):
        """Value given ``table[(k, c)] = phi_k(c z)``."""
        total = 0.0
        for factors, w in self.terms:
            term = w
            for f in factors:
                term = term * table[f]
            total = total + term
        return total


def phi(k: int, c: float = 1.0) -> PhiExpr:
    r"""The expression :math:`\varphi_k(c\,z)`."""
    k = check_int("k", k, minimum=0)
    return PhiExpr({((k, float(c)),): 1.0})


class ExpRKTableau(eqx.Module):
    r"""An exponential Runge–Kutta method: nodes ``c``, stage weights ``a`` and weights ``b``.

    ``a[i]`` lists :math:`a_{ij}` for :math:`j < i` (``None`` for a zero entry); every entry is
    a :class:`PhiExpr`. Consistency requires :math:`\sum_j a_{ij} = c_i\varphi_1(c_i z)` and
    :math:`\sum_i b_i = \varphi_1(z)`, checked at construction on a few points.
    """

    name: str = eqx.field(static=True)
    order: int = eqx.field(static=True)
    c: tuple = eqx.field(static=True)
    a: tuple = eqx.field(static=True)
    b: tuple = eqx.field(static=True)

    def __init__(self, name, order, c, a, b):
        c = tuple(float(ci) for ci in c)
        a = tuple(tuple(a_ij for a_ij in row) for row in a)
        b = tuple(b)
        s = len(c)
        if len(b) != s or len(a) != s or any(len(row) != i for i, row in enumerate(a)):
            raise ValueError(
                f"ExpRKTableau {name!r}: need len(c) = len(b) = stages and a[i] with i entries; "
                f"got c={len(c)}, b={len(b)}, a rows={[len(r) for r in a]}."
            )
        if c[0] != 0.0:
            raise ValueError(f"ExpRKTableau {name!r}: the first node must be 0; got {c[0]}.")
        self.name, self.order, self.c, self.a, self.b = name, int(order), c, a, b
        # Consistency on a few sample points (exact formulas, float64, away from z = 0).
        for z in (-0.7 + 0.2j, 1.3j, -2.5):
            table = _phi_table_numpy(self.factors(), z)
            for i, row in enumerate(a):
                got = sum((e.evaluate(table) for e in row if e is not None), 0.0)
                want = c[i] * _phi_numpy(1, c[i] * z) if c[i] else 0.0
                if abs(got - want) > 1e-10:
                    raise ValueError(
                        f"ExpRKTableau {name!r}: row {i} of a sums to {got}, not c_i*phi1(c_i z) "
                        f"= {want} at z={z}."
                    )
            total = sum(e.evaluate(table) for e in b)
            if abs(total - _phi_numpy(1, z)) > 1e-10:
                raise ValueError(f"ExpRKTableau {name!r}: b sums to {total}, not phi1(z).")

    def factors(self) -> set:
        out = {(0, 1.0)} | {(0, ci) for ci in self.c}
        for row in self.a:
            for e in row:
                if e is not None:
                    out |= e.factors()
        for e in self.b:
            out |= e.factors()
        return out


def _phi_numpy(k, z):
    z = complex(z)
    value = np.exp(z)
    for j in range(k):
        value = (value - 1.0 / math.factorial(j)) / z
    return value


def _phi_table_numpy(factors, z):
    return {(k, c): _phi_numpy(k, c * z) for k, c in factors}


ETDRK1 = ExpRKTableau("etdrk1", 1, (0.0,), ((),), (phi(1),))
"""Exponential Euler: :math:`\\hat u_{n+1} = e^z \\hat u_n + h\\varphi_1(z) N(u_n)`."""

ETDRK2 = ExpRKTableau("etdrk2", 2, (0.0, 1.0), ((), (phi(1),)), (phi(1) - phi(2), phi(2)))
"""Cox & Matthews' ETD2RK."""

ETDRK3 = ExpRKTableau(
    "etdrk3",
    3,
    (0.0, 0.5, 1.0),
    ((), (0.5 * phi(1, 0.5),), (-phi(1), 2 * phi(1))),
    (
        phi(1) - 3 * phi(2) + 4 * phi(3),
        4 * phi(2) - 8 * phi(3),
        4 * phi(3) - phi(2),
    ),
)
"""Cox & Matthews' ETD3RK."""

ETDRK4 = ExpRKTableau(
    "etdrk4",
    4,
    (0.0, 0.5, 0.5, 1.0),
    (
        (),
        (0.5 * phi(1, 0.5),),
        (None, 0.5 * phi(1, 0.5)),
        (0.5 * phi(1, 0.5) * (phi(0, 0.5) - 1), None, phi(1, 0.5)),
    ),
    (
        phi(1) - 3 * phi(2) + 4 * phi(3),
        2 * phi(2) - 4 * phi(3),
        2 * phi(2) - 4 * phi(3),
        4 * phi(3) - phi(2),
    ),
)
"""Cox & Matthews' ETDRK4, the method of Kassam & Trefethen."""

METHODS = {t.name: t for t in (ETDRK1, ETDRK2, ETDRK3, ETDRK4)}


# ----------------------------------------------------------------------------------------------
# phi functions, stably
# ----------------------------------------------------------------------------------------------


def phi_functions(
    z: Complex[ArrayLike, " ..."],
    max_order: int,
    *,
    contour_points: int = 32,
    radius: float = 2.0,
    threshold: float = 1.0,
) -> list[Complex[Array, " ..."]]:
    r"""``[phi_0(z), ..., phi_max_order(z)]`` elementwise, accurate for every ``z``.

    Where :math:`|z| <` ``threshold`` each :math:`\varphi_k(z)` is the mean of the closed form at
    ``contour_points`` points :math:`z + R e^{2\pi i (j + 1/2)/M}` (Kassam & Trefethen's contour
    integral; the trapezoidal rule on a circle is spectrally accurate for entire functions);
    elsewhere the closed form :math:`\varphi_{k+1} = (\varphi_k - 1/k!)/z`, which has no
    cancellation there. ``radius - threshold`` bounds the contour points away from 0.
    """
    max_order = check_int("max_order", max_order, minimum=0)
    # contour_points = 0 would average over no point (NaN); a NaN radius or threshold passes a
    # comparison as False, so each is checked on its own before radius > threshold.
    contour_points = check_int("contour_points", contour_points)
    check_parameter("phi_functions", "radius", radius, "positive")
    check_parameter("phi_functions", "threshold", threshold, "positive")
    z = jnp.asarray(z)
    if not jnp.iscomplexobj(z):
        z = z.astype(jnp.result_type(z.dtype, jnp.complex64))
    if radius <= threshold:
        raise ValueError(f"radius ({radius}) must exceed threshold ({threshold}).")

    def closed(w):
        out = [jnp.exp(w)]
        for j in range(max_order):
            out.append((out[-1] - 1.0 / math.factorial(j)) / w)
        return out

    small = jnp.abs(z) < threshold
    far = closed(jnp.where(small, jnp.asarray(radius, z.dtype), z))
    theta = 2.0 * np.pi * (np.arange(contour_points) + 0.5) / contour_points
    ring = jnp.asarray(radius * np.exp(1j * theta), z.dtype)
    near = [jnp.mean(v, axis=-1) for v in closed(z[..., None] + ring)]
    return [jnp.exp(z)] + [jnp.where(small, n, f) for n, f in zip(near[1:], far[1:], strict=True)]


# ----------------------------------------------------------------------------------------------
# The engine
# ----------------------------------------------------------------------------------------------


class ETDRK(eqx.Module):
    r"""An exponential Runge–Kutta stepper of a semilinear equation on a periodic grid.

    ``ETDRK(equation, dt, shape, method="etdrk4")`` precomputes the coefficient arrays for the
    grid ``shape`` and the step ``dt`` (either may come from a traced computation: build the
    stepper inside ``jit``/``vmap`` to sweep ``dt`` or the equation's parameters). Calling it
    advances one sample ``(channels, *shape)`` by ``dt``; :meth:`step_spectral` does the same on
    the ``rfftn`` coefficients (what :func:`rollout` uses to avoid two transforms per step).

    ``dt`` must be finite and positive and the equation's parameters in their physical ranges:
    concrete values are checked here (``ValueError`` naming the parameter), traced ones when the
    stepper runs (:func:`equinox.error_if`). A ``dt`` that is valid but too large for the
    nonlinear term's stability region shows up as a non-finite state, which :func:`rollout`
    reports as ``RESULTS.nonfinite`` (and raises by default).
    """

    equation: eqx.Module
    dt: Float[Array, ""]
    grid: SpectralGrid
    tableau: ExpRKTableau = eqx.field(static=True)
    stage_exp: tuple
    a: tuple
    b: tuple
    exp_full: Array
    forcing_hat: Array | None

    def __init__(
        self,
        equation,
        dt: Float[ArrayLike, ""],
        shape: int | Sequence[int],
        method: str | ExpRKTableau = "etdrk4",
        *,
        contour_points: int = 32,
    ):
        if isinstance(method, str):
            check_choice("method", method, set(METHODS))
            method = METHODS[method]
        if not isinstance(method, ExpRKTableau):
            raise TypeError(
                f"method must be a name or an ExpRKTableau; got {type(method).__name__}."
            )
        needed = ("num_spatial_dims", "lengths", "linear", "nonlinear", "forcing")
        if not isinstance(equation, AbstractEquation) and not all(
            hasattr(equation, n) for n in needed
        ):
            raise TypeError(
                f"equation must be an AbstractEquation (Burgers, NavierStokes2D, ...) or define "
                f"{', '.join(needed)}; got {type(equation).__name__}."
            )
        check_int("contour_points", contour_points)
        shape = check_shape(shape)
        d = equation.num_spatial_dims
        if len(shape) != d:
            raise ValueError(
                f"shape must have {d} entries for {type(equation).__name__} "
                f"({d} spatial axes); got {shape}."
            )
        # A step must be positive and finite: dt <= 0 runs a diffusion backwards (modes grow
        # like exp(|dt| nu xi^2)), and an infinite dt makes every coefficient NaN.
        check_parameter("ETDRK", "dt", dt, "positive")
        if jnp.ndim(dt) != 0:
            raise ValueError(
                f"ETDRK: dt must be a scalar (vmap over a sweep of steps); got shape "
                f"{jnp.shape(dt)}."
            )
        self.equation = equation
        self.tableau = method
        self.grid = SpectralGrid(shape, equation.lengths)
        dtype = default_float()
        self.dt = as_float(dt).astype(dtype)
        symbol = jnp.asarray(equation.linear(self.grid))
        real = not jnp.iscomplexobj(symbol)
        ctype = jnp.result_type(dtype, jnp.complex64)
        z = (self.dt * symbol).astype(ctype)
        z = jnp.broadcast_to(z, self.grid.spectral_shape)

        factors = method.factors()
        max_k = max(k for k, _ in factors)
        table = {}
        for c in sorted({c for _, c in factors}):
            values = phi_functions(c * z, max_k, contour_points=contour_points)
            for k in range(max_k + 1):
                table[(k, c)] = values[k]

        def finish(v):
            return jnp.real(v).astype(dtype) if real else v.astype(ctype)

        # Every step multiplies by exp_full: the run-time checks of traced parameters (the
        # equation's and dt) sit on it, so they run whenever the stepper is used.
        exp_full = finish(table[(0, 1.0)])
        if isinstance(equation, AbstractEquation):
            exp_full = equation.check_traced(exp_full)
        self.exp_full = check_traced_parameters(exp_full, "ETDRK", (("dt", self.dt, "positive"),))
        self.stage_exp = tuple(finish(table[(0, c)]) for c in method.c)
        self.a = tuple(
            tuple(None if e is None else finish(self.dt * e.evaluate(table)) for e in row)
            for row in method.a
        )
        self.b = tuple(finish(self.dt * e.evaluate(table)) for e in method.b)
        force = equation.forcing(self.grid)
        self.forcing_hat = None if force is None else self.grid.rfft(as_float(force))

    @property
    def shape(self) -> tuple[int, ...]:
        return self.grid.shape

    def nonlinear(self, uh):
        """:math:`\\hat{\\mathcal N}(u)` plus the (time-independent) forcing, in Fourier space."""
        n = self.equation.nonlinear(uh, self.grid)
        if self.forcing_hat is not None:
            f = self.forcing_hat.astype(uh.dtype)
            n = f if n is None else n + f
        return n

    def step_spectral(self, uh: Complex[Array, " c *modes"]) -> Complex[Array, " c *modes"]:
        """One step on the ``rfftn`` coefficients (forward normalisation)."""
        expected = (self.equation.num_channels, *self.grid.spectral_shape)
        if jnp.shape(uh) != expected:
            raise ValueError(
                f"ETDRK.step_spectral takes the rfftn coefficients of one sample, shape "
                f"{expected} for the grid {self.grid.shape} (see to_spectral); got shape "
                f"{jnp.shape(uh)}."
            )
        first = self.nonlinear(uh)
        if first is None:  # a linear equation without forcing: the exact propagator
            return self.exp_full * uh
        ns = [first]
        for i in range(1, len(self.tableau.c)):
            stage = self.stage_exp[i] * uh
            for j, a_ij in enumerate(self.a[i]):
                if a_ij is not None:
                    stage = stage + a_ij * ns[j]
            ns.append(self.nonlinear(stage))
        out = self.exp_full * uh
        for b_i, n_i in zip(self.b, ns, strict=True):
            out = out + b_i * n_i
        return out

    def __call__(self, u: Float[ArrayLike, " c *spatial"]) -> Float[Array, " c *spatial"]:
        """One step of size ``dt`` of one sample ``(channels, *shape)``."""
        u = self.equation.check_state(u, self.grid.shape)
        return self.grid.irfft(self.step_spectral(self.grid.rfft(u))).astype(u.dtype)

    def to_spectral(self, u: Float[ArrayLike, " c *spatial"]) -> Complex[Array, " c *modes"]:
        u = self.equation.check_state(u, self.grid.shape)
        return self.grid.rfft(u)

    def from_spectral(self, uh: Complex[Array, " c *modes"]) -> Float[Array, " c *spatial"]:
        return self.grid.irfft(uh)
