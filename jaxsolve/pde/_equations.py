r"""Semilinear PDEs on periodic boxes, split as :math:`u_t = \mathcal L u + \mathcal N(u) + f`.

Each equation gives the Fourier symbol of its linear part (:meth:`linear`), the Fourier transform
of its nonlinear part (:meth:`nonlinear`, products formed in physical space and de-aliased with
Orszag's 2/3 rule unless ``dealias=False``) and an optional time-independent forcing. The
:class:`ETDRK` engine integrates any of them; :meth:`rhs` evaluates :math:`u_t` for checks.

The state is one sample ``(1, *spatial)`` (one channel), as everywhere in jaxsolve.

Parameters are checked where they are known. A concrete parameter outside its physical range (a
negative viscosity, a non-finite coefficient, a non-positive domain length) raises ``ValueError``
when the equation is built, naming it; a traced one (a sweep under ``jit``/``vmap``) is checked
when the compiled code runs (:meth:`AbstractEquation.check_traced`, called by :class:`ETDRK` and
:meth:`~AbstractEquation.rhs`), since a negative viscosity turns the heat semigroup into the
backward heat equation, whose modes grow like :math:`e^{|\nu|\xi^2 t}` until they overflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float

from .._core import as_float, check_int, is_concrete
from ._checks import check_parameter, check_traced_parameters
from ._spectral import SpectralGrid


class AbstractEquation(eqx.Module):
    """Base class: a scalar field equation :math:`u_t = \\mathcal L u + \\mathcal N(u) + f`.

    Subclasses define ``num_spatial_dims``, ``lengths``, :meth:`linear` and, when nonlinear,
    :meth:`nonlinear`; :meth:`forcing` defaults to none.
    """

    num_channels = 1

    def parameter_rules(self) -> tuple[tuple[str, object, str], ...]:
        """``(name, value, rule)`` of every parameter with a physical range; ``rule`` is
        ``"finite"``, ``"non-negative"`` or ``"positive"``. The domain lengths are always among
        them; a subclass adds its own parameters."""
        return (("lengths", self.lengths, "positive"),)

    def __check_init__(self):
        # Runs after every subclass's __init__ (equinox): concrete parameters fail here, once.
        for name, value, rule in self.parameter_rules():
            check_parameter(type(self).__name__, name, value, rule)

    def check_traced(self, x):
        """``x``, unchanged, behind a run-time check of the traced parameters.

        Concrete parameters were checked when the equation was built; a traced one (say a
        viscosity swept under ``jax.vmap``) raises through :func:`equinox.error_if` when the
        compiled code runs, naming it (with ``EQX_ON_ERROR=nan``, ``x`` becomes NaN instead,
        which :func:`rollout` then reports as ``RESULTS.nonfinite``).
        """
        return check_traced_parameters(x, type(self).__name__, self.parameter_rules())

    def linear(self, grid: SpectralGrid) -> Array:
        """Symbol :math:`L_\\xi` of the linear part, broadcastable to ``grid.spectral_shape``."""
        raise TypeError(f"{type(self).__name__} does not define its linear part.")

    def nonlinear(self, uh: Complex[Array, " c *modes"], grid: SpectralGrid) -> Array | None:
        """:math:`\\widehat{\\mathcal N(u)}` from the coefficients ``uh``; None if linear."""
        return None

    def forcing(self, grid: SpectralGrid) -> Float[Array, " c *spatial"] | None:
        """Time-independent forcing on the grid (physical space), or None."""
        return None

    def check_state(self, u, shape: Sequence[int] | None = None) -> Float[Array, " c *spatial"]:
        u = as_float(u)
        d = self.num_spatial_dims
        name = type(self).__name__
        expected = "(1, " + ", ".join(f"n{j + 1}" for j in range(d)) + ")"
        if u.ndim != d + 1 or u.shape[0] != self.num_channels:
            hint = " (map over a batch with jax.vmap)" if u.ndim == d + 2 else ""
            raise ValueError(
                f"{name} takes one sample of shape {expected}; got shape {u.shape}{hint}."
            )
        if shape is not None and tuple(u.shape[1:]) != tuple(shape):
            raise ValueError(
                f"{name}: the stepper was built for the grid {tuple(shape)}; got a state of "
                f"spatial shape {tuple(u.shape[1:])}."
            )
        return u

    def rhs(self, u: Float[ArrayLike, " c *spatial"]) -> Float[Array, " c *spatial"]:
        """:math:`u_t = \\mathcal L u + \\mathcal N(u) + f` of one sample, pseudo-spectrally."""
        u = self.check_state(u)
        grid = SpectralGrid(u.shape[1:], self.lengths)
        uh = grid.rfft(u)
        out = jnp.asarray(self.linear(grid)) * uh
        n = self.nonlinear(uh, grid)
        if n is not None:
            out = out + n
        f = self.forcing(grid)
        if f is not None:
            out = out + grid.rfft(as_float(f))
        return self.check_traced(grid.irfft(out).astype(u.dtype))


def _physical(uh, grid, dealias):
    """The field of ``uh``, restricted to the 2/3-rule modes when de-aliasing."""
    if dealias:
        uh = jnp.where(grid.dealias_mask(), uh, 0)
    return grid.irfft(uh)


def _to_spectral(v, grid, dealias):
    vh = grid.rfft(v)
    return jnp.where(grid.dealias_mask(), vh, 0) if dealias else vh


def _half_ddx_square(uh, grid, dealias):
    r""":math:`\widehat{(u^2/2)_x}`, the conservative form of :math:`u u_x` (1-D)."""
    u = _physical(uh, grid, dealias)
    (xi,) = grid.wavenumbers(odd=True)
    return 0.5j * xi * _to_spectral(u * u, grid, dealias)


def _callable_forcing(forcing, grid):
    if forcing is None:
        return None
    f = as_float(forcing(grid.coordinates()))
    if f.shape == grid.shape:
        f = f[None]
    if f.shape != (1, *grid.shape):
        raise ValueError(
            f"forcing(x) must return shape {grid.shape} or (1, *{grid.shape}); got {f.shape}."
        )
    return f


class AdvectionDiffusion(AbstractEquation):
    r""":math:`u_t + c\cdot\nabla u = \nu \Delta u + f(x)` in ``num_spatial_dims`` dimensions.

    Linear, so an exponential integrator is exact: :math:`\hat u_\xi(t) =
    e^{(-\nu|\xi|^2 - i c\cdot\xi) t}\hat u_\xi(0)` (plus :math:`\varphi_1` times the forcing).
    ``velocity=None`` is the heat equation. ``nu`` and ``velocity`` may be traced.
    """

    nu: Float[ArrayLike, ""]
    velocity: tuple | None
    lengths: tuple | float
    num_spatial_dims: int = eqx.field(static=True)
    source: Callable | None = eqx.field(static=True)

    def __init__(
        self,
        nu: Float[ArrayLike, ""] = 0.01,
        velocity: float | Sequence[float] | None = None,
        *,
        num_spatial_dims: int = 1,
        lengths: float | Sequence[float] = 1.0,
        forcing: Callable | None = None,
    ):
        self.nu = nu
        self.num_spatial_dims = check_int("num_spatial_dims", num_spatial_dims)
        if velocity is not None:
            velocity = tuple(velocity) if isinstance(velocity, (tuple, list)) else (velocity,)
            if len(velocity) != num_spatial_dims:
                raise ValueError(
                    f"velocity needs one component per spatial axis ({num_spatial_dims}); got "
                    f"{len(velocity)}."
                )
        self.velocity = velocity
        self.lengths = tuple(lengths) if isinstance(lengths, (tuple, list)) else lengths
        self.source = forcing

    def parameter_rules(self):
        return (
            ("nu", self.nu, "non-negative"),
            ("velocity", self.velocity, "finite"),
            *super().parameter_rules(),
        )

    def linear(self, grid):
        symbol = as_float(self.nu) * grid.laplacian()
        if self.velocity is None:
            return symbol
        adv = sum(
            as_float(c) * xi
            for c, xi in zip(self.velocity, grid.wavenumbers(odd=True), strict=True)
        )
        return symbol - 1j * adv

    def forcing(self, grid):
        return _callable_forcing(self.source, grid)

    def exact(self, u0: Float[ArrayLike, " c *spatial"], t: Float[ArrayLike, ""]) -> Array:
        """The exact solution at time ``t >= 0`` (without forcing): each mode times its
        exponential. ``t`` may be traced (checked when the compiled code runs); a negative time
        runs the diffusion backwards, whose high modes overflow (an ill-posed problem)."""
        u0 = self.check_state(u0)
        if self.source is not None:
            raise ValueError("exact() covers the unforced equation only.")
        check_parameter("AdvectionDiffusion.exact", "t", t, "non-negative")
        grid = SpectralGrid(u0.shape[1:], self.lengths)
        factor = jnp.exp(jnp.asarray(self.linear(grid)) * as_float(t))
        out = self.check_traced(grid.irfft(factor * grid.rfft(u0)).astype(u0.dtype))
        return check_traced_parameters(out, "AdvectionDiffusion.exact", (("t", t, "non-negative"),))


class Burgers(AbstractEquation):
    r"""Viscous Burgers, :math:`u_t + (u^2/2)_x = \nu u_{xx}`, on :math:`[0, L)` periodic.

    The conservative form keeps the mean exactly: the :math:`k = 0` mode of
    :math:`\widehat{(u^2)_x}` is zero. The FNO paper's setting is ``nu=0.1`` on :math:`[0, 1)`.
    """

    nu: Float[ArrayLike, ""]
    lengths: float | tuple
    dealias: bool = eqx.field(static=True)
    num_spatial_dims = 1

    def __init__(self, nu: Float[ArrayLike, ""] = 0.1, *, length=1.0, dealias: bool = True):
        self.nu, self.lengths, self.dealias = nu, length, bool(dealias)

    def parameter_rules(self):
        return (("nu", self.nu, "non-negative"), *super().parameter_rules())

    def linear(self, grid):
        return as_float(self.nu) * grid.laplacian()

    def nonlinear(self, uh, grid):
        return -_half_ddx_square(uh, grid, self.dealias)

    def cole_hopf(self, x, t, *, a: float = 2.0, b: float = 1.0, k: int = 1) -> Array:
        r"""An exact solution through the Cole–Hopf transform :math:`u = -2\nu\phi_x/\phi`.

        :math:`\phi = a + b\, e^{-\nu\kappa^2 t}\cos(\kappa x)` solves the heat equation, with
        :math:`\kappa = 2\pi k / L` and :math:`a > b > 0` keeping :math:`\phi > 0`, so
        :math:`u = 2\nu\kappa b\, e^{-\nu\kappa^2 t}\sin(\kappa x) / \phi` solves Burgers.
        """
        if not (np.isfinite(a) and np.isfinite(b) and a > abs(b)):
            raise ValueError(
                f"cole_hopf: a > |b| keeps phi = a + b exp(...) cos(...) positive; got a={a!r}, "
                f"b={b!r}."
            )
        nu = as_float(self.nu)
        kappa = 2.0 * np.pi * k / as_float(self.lengths)
        decay = b * jnp.exp(-nu * kappa**2 * as_float(t))
        return 2.0 * nu * kappa * decay * jnp.sin(kappa * x) / (a + decay * jnp.cos(kappa * x))


class KuramotoSivashinsky(AbstractEquation):
    r"""Kuramoto–Sivashinsky, :math:`u_t + u u_x + u_{xx} + u_{xxxx} = 0`, on :math:`[0, L)`.

    Symbol :math:`\xi^2 - \xi^4`; Kassam & Trefethen's test case is :math:`L = 32\pi` with
    :math:`u_0 = \cos(x/16)(1 + \sin(x/16))`.
    """

    lengths: float | tuple
    dealias: bool = eqx.field(static=True)
    num_spatial_dims = 1

    def __init__(self, *, length=32.0 * np.pi, dealias: bool = True):
        self.lengths, self.dealias = length, bool(dealias)

    def linear(self, grid):
        (xi,) = grid.wavenumbers()
        return xi**2 - xi**4

    def nonlinear(self, uh, grid):
        return -_half_ddx_square(uh, grid, self.dealias)


class KortewegDeVries(AbstractEquation):
    r"""Korteweg–de Vries, :math:`u_t + a\,u u_x + b\,u_{xxx} = 0`, on :math:`[0, L)`.

    Defaults :math:`a = 6, b = 1`; the soliton
    :math:`u = \frac{3c}{a}\operatorname{sech}^2\big(\tfrac12\sqrt{c/b}\,(x - ct)\big)`
    travels at speed :math:`c` (:meth:`soliton`). The dispersive symbol :math:`i b \xi^3` is
    purely imaginary, so the exponential coefficients are complex.
    """

    convection: Float[ArrayLike, ""]
    dispersion: Float[ArrayLike, ""]
    lengths: float | tuple
    dealias: bool = eqx.field(static=True)
    num_spatial_dims = 1

    def __init__(self, *, length=40.0, convection=6.0, dispersion=1.0, dealias: bool = True):
        self.lengths, self.convection, self.dispersion = length, convection, dispersion
        self.dealias = bool(dealias)

    def parameter_rules(self):
        return (
            ("convection", self.convection, "finite"),
            ("dispersion", self.dispersion, "finite"),
            *super().parameter_rules(),
        )

    def linear(self, grid):
        (xi,) = grid.wavenumbers(odd=True)
        return 1j * as_float(self.dispersion) * xi**3

    def nonlinear(self, uh, grid):
        return -as_float(self.convection) * _half_ddx_square(uh, grid, self.dealias)

    def soliton(self, x, t, *, speed: float = 1.0, x0: float = 0.0) -> Array:
        """The soliton of speed ``speed`` centred at ``x0 + speed * t`` (on the whole line)."""
        if is_concrete((speed, self.dispersion)) and not float(speed) * float(self.dispersion) > 0:
            raise ValueError(
                f"soliton: speed and dispersion must have the same sign (the width is "
                f"sqrt(dispersion / speed)); got speed={speed!r}, dispersion={self.dispersion!r}."
            )
        c = as_float(speed)
        arg = 0.5 * jnp.sqrt(c / as_float(self.dispersion)) * (x - x0 - c * as_float(t))
        return 3.0 * c / as_float(self.convection) / jnp.cosh(arg) ** 2


def fno_forcing(x: Float[ArrayLike, " 2 *spatial"]) -> Float[Array, " *spatial"]:
    r"""The forcing of the FNO paper's Navier–Stokes data,
    :math:`f(x) = 0.1\,(\sin(2\pi(x_1 + x_2)) + \cos(2\pi(x_1 + x_2)))` on :math:`[0, 1)^2`."""
    s = 2.0 * np.pi * (x[0] + x[1])
    return 0.1 * (jnp.sin(s) + jnp.cos(s))


class NavierStokes2D(AbstractEquation):
    r"""2-D incompressible Navier–Stokes in vorticity form on a periodic box,

    .. math:: w_t + u\cdot\nabla w = \nu\Delta w - \mu w + f(x), \qquad
       u = (\partial_y\psi, -\partial_x\psi), \qquad -\Delta\psi = w,

    as in "Fourier Neural Operator for Parametric Partial Differential Equations" (Li et al.,
    :math:`[0,1)^2`, ``nu`` in {1e-3, 1e-4, 1e-5}, ``forcing=fno_forcing``, no drag). The
    advection :math:`u\cdot\nabla w` is formed in physical space from de-aliased fields.
    The Taylor–Green vortex :math:`w = \cos(2\pi x)\cos(2\pi y)` has :math:`\psi \propto w`, so
    its advection vanishes and it decays as :math:`e^{-8\pi^2\nu t}` without forcing.
    """

    nu: Float[ArrayLike, ""]
    drag: Float[ArrayLike, ""]
    lengths: float | tuple
    source: Callable | None = eqx.field(static=True)
    dealias: bool = eqx.field(static=True)
    num_spatial_dims = 2

    def __init__(
        self,
        nu: Float[ArrayLike, ""] = 1e-3,
        *,
        forcing: Callable | None = fno_forcing,
        drag: Float[ArrayLike, ""] = 0.0,
        lengths=1.0,
        dealias: bool = True,
    ):
        self.nu, self.drag, self.source, self.dealias = nu, drag, forcing, bool(dealias)
        self.lengths = tuple(lengths) if isinstance(lengths, (tuple, list)) else lengths

    def parameter_rules(self):
        return (
            ("nu", self.nu, "non-negative"),
            ("drag", self.drag, "non-negative"),
            *super().parameter_rules(),
        )

    def linear(self, grid):
        return as_float(self.nu) * grid.laplacian() - as_float(self.drag)

    def velocity_hat(self, wh, grid):
        """Fourier coefficients of :math:`(u, v) = (\\psi_y, -\\psi_x)` from those of ``w``."""
        lap = grid.laplacian()
        inv = jnp.where(lap == 0, 0.0, -1.0 / jnp.where(lap == 0, 1.0, lap))  # psi = w / |xi|^2
        psi = wh * inv
        kx, ky = grid.wavenumbers(odd=True)
        return 1j * ky * psi, -1j * kx * psi

    def nonlinear(self, wh, grid):
        if self.dealias:
            wh = jnp.where(grid.dealias_mask(), wh, 0)
        uh, vh = self.velocity_hat(wh, grid)
        kx, ky = grid.wavenumbers(odd=True)
        u, v = grid.irfft(uh), grid.irfft(vh)
        wx, wy = grid.irfft(1j * kx * wh), grid.irfft(1j * ky * wh)
        return -_to_spectral(u * wx + v * wy, grid, self.dealias)

    def forcing(self, grid):
        return _callable_forcing(self.source, grid)
