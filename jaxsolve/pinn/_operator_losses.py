r"""Physics losses for neural operators: PDE residuals on the operator's output grid.

An operator :math:`\mathcal G_\theta` trained with a residual loss needs no solution data
("Physics-Informed Neural Operator for Learning Partial Differential Equations", Li et al.;
"LordNet: An Efficient Neural Network for Learning to Solve Parametric Partial Differential
Equations without Simulated Data", Huang et al.): the loss is the mean squared residual of the
equation evaluated on the predicted field, plus a term for the condition the input prescribes.
The same loss can be added to a data loss.

The equations and their parameters are those of :mod:`jaxsolve.pde`, reused, not re-derived:

* **Evolution equations** :math:`u_t = \mathcal L u + \mathcal N(u) + f` on a periodic box
  (:class:`~jaxsolve.pde.Burgers`, :class:`~jaxsolve.pde.KuramotoSivashinsky`,
  :class:`~jaxsolve.pde.NavierStokes2D` in vorticity form, any
  :class:`~jaxsolve.pde.AbstractEquation`). The operator predicts the space-time field
  ``(1, n_t, *spatial)``: frame ``k`` is :math:`u(t_k)` on the periodic grid
  :math:`x_n = n L / N`, with the uniform time grid :math:`t_k = k T / (n_t - 1)`,
  ``k = 0 .. n_t - 1``, *including* :math:`t_0 = 0` and :math:`t_{n_t-1} = T`. (Including
  :math:`t = 0` puts the initial condition on the grid, so it is a plain penalty on the first
  frame, and the one-sided time differences at both ends stay second order.) The residual is

  .. math:: r_k = D_t u_k - \big(\mathcal L u_k + \mathcal N(u_k) + f\big),

  the right-hand side computed pseudo-spectrally by the equation itself
  (:meth:`~jaxsolve.pde.AbstractEquation.rhs`: spectral derivatives, products in physical space,
  2/3-rule de-aliasing unless the equation was built with ``dealias=False``), and :math:`D_t`
  second-order finite differences in time: :math:`(u_{k+1} - u_{k-1}) / (2\Delta t)` inside,
  :math:`\mp(3u_k - 4u_{k\pm1} + u_{k\pm2}) / (2\Delta t)` at the two ends. Time is not
  periodic, so a Fourier derivative in time would differentiate the jump from :math:`u(T)` back
  to :math:`u(0)`; finite differences do not. The loss is

  .. math:: \frac{1}{n_t N}\sum_{k,n} r_{k,n}^2 + \lambda_{\text{ic}}\,\frac1N\sum_n
     \big(u_{0,n} - u^{(0)}_n\big)^2 .

* **Darcy flow** :math:`-\nabla\cdot(a\nabla u) = f` on :math:`[0, 1]^2`, :math:`u = 0` on the
  boundary, on the node grid of :func:`~jaxsolve.pde.darcy_solve` (boundary included) and with
  its discretisation: the five-point scheme with harmonic face means of :math:`a`, so a
  :func:`~jaxsolve.pde.darcy_solve` solution has zero residual up to its tolerance. The loss is
  the mean squared residual on the interior nodes plus :math:`\lambda_{\text{bc}}` times the mean
  square of the predicted boundary values.

Every loss works on one sample, channels-first as every :mod:`jaxsolve.operators` model returns
it; batch with :func:`jax.vmap` and average. Hyper-parameters (viscosity, final time, weights)
may be traced.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, check_int, is_concrete
from ..pde._checks import check_parameter, check_traced_parameters
from ..pde._darcy import _faces
from ..pde._equations import (
    AbstractEquation,
    Burgers,
    KuramotoSivashinsky,
    NavierStokes2D,
    fno_forcing,
)


def time_derivative(
    u: Float[ArrayLike, " n_t *rest"], dt: Float[ArrayLike, ""]
) -> Float[Array, " n_t *rest"]:
    r"""Second-order finite-difference :math:`\partial_t u` along the leading axis of ``u``.

    Central differences :math:`(u_{k+1} - u_{k-1}) / (2\Delta t)` inside and the one-sided
    three-point formulas :math:`(-3u_0 + 4u_1 - u_2) / (2\Delta t)`,
    :math:`(3u_{n-1} - 4u_{n-2} + u_{n-3}) / (2\Delta t)` at the ends: every row is exact for
    quadratics in :math:`t`.

    Args:
        u: frames ``u[k] = u(k dt)``, at least 3 of them.
        dt: the time step (> 0; may be traced).

    Returns:
        the derivative, shaped as ``u``.
    """
    u = as_float(u)
    if u.ndim < 1 or u.shape[0] < 3:
        raise ValueError(
            f"time_derivative: u needs at least 3 time frames on its leading axis; got shape "
            f"{u.shape}."
        )
    check_parameter("time_derivative", "dt", dt, "positive")
    inv = 0.5 / jnp.asarray(dt, u.dtype)
    first = -3.0 * u[0] + 4.0 * u[1] - u[2]
    last = 3.0 * u[-1] - 4.0 * u[-2] + u[-3]
    inside = u[2:] - u[:-2]
    return jnp.concatenate([first[None], inside, last[None]], axis=0) * inv


class AbstractPhysicsLoss(eqx.Module):
    """A residual loss for an operator: ``__call__(output, input)`` is the residual field of the
    prediction ``output`` for the input ``input`` (one sample, channels-first); :meth:`loss` its
    mean square plus the condition term."""

    @abc.abstractmethod
    def __call__(self, output, input):
        """The residual field of ``output`` (one sample) for the operator input ``input``."""

    @abc.abstractmethod
    def loss(self, output, input):
        """A scalar: the mean squared residual plus the weighted condition term."""


def _check_weight(where, name, value):
    check_parameter(where, name, value, "non-negative")
    return value


class EvolutionPhysicsLoss(AbstractPhysicsLoss):
    r"""Residual loss of an evolution equation of :mod:`jaxsolve.pde` on a space-time output.

    The output is ``(1, n_t, *spatial)`` with frame ``k`` at :math:`t_k = k T / (n_t - 1)`
    (both ends included, ``n_t >= 3``); the residual is :math:`D_t u - \text{rhs}(u)` with the
    equation's own pseudo-spectral right-hand side and second-order finite differences in time
    (see the module docstring).

    Args:
        equation: a :class:`jaxsolve.pde.AbstractEquation` (its parameters, forcing, domain
            lengths and de-aliasing choice are the residual's).
        T: the final time (> 0; may be traced).
        ic_weight: weight :math:`\lambda_{\text{ic}} \ge 0` of the initial-condition term of
            :meth:`loss` (may be traced).
        residual_start: the first frame whose residual enters :meth:`loss` (0: all of them;
            1: the equation on :math:`(0, T]` and the initial condition at :math:`t = 0`, the
            PINN convention). :meth:`__call__` always returns every frame. For rough initial
            data the residual at :math:`t = 0` cannot vanish on any time grid: an FNO-setting
            Burgers :math:`u_0` (a Gaussian field of covariance :math:`(-\Delta + 25)^{-2}`) has
            :math:`u_t(0) = \nu u_{0,xx} - u_0 u_{0,x}` outside :math:`L^2`, whose high modes
            decay at rates :math:`\nu\xi^2` no time step resolves, so frame 0 would hold the
            exact solution's residual far from zero.
    """

    equation: AbstractEquation
    T: Float[ArrayLike, ""]
    ic_weight: Float[ArrayLike, ""]
    residual_start: int = eqx.field(static=True)

    def __init__(
        self,
        equation: AbstractEquation,
        T: Float[ArrayLike, ""] = 1.0,
        *,
        ic_weight: Float[ArrayLike, ""] = 1.0,
        residual_start: int = 0,
    ):
        if not isinstance(equation, AbstractEquation):
            raise TypeError(
                f"equation must be a jaxsolve.pde.AbstractEquation (Burgers, "
                f"KuramotoSivashinsky, NavierStokes2D, ...); got {type(equation).__name__}."
            )
        where = type(self).__name__
        check_parameter(where, "T", T, "positive")
        self.equation = equation
        self.T = T
        self.ic_weight = _check_weight(where, "ic_weight", ic_weight)
        self.residual_start = check_int("residual_start", residual_start, minimum=0)

    def _check_output(self, output):
        output = as_float(output)
        d = self.equation.num_spatial_dims
        name = type(self).__name__
        expected = "(1, n_t, " + ", ".join(f"n{j + 1}" for j in range(d)) + ")"
        if output.ndim != d + 2 or output.shape[0] != 1:
            hint = " (map over a batch with jax.vmap)" if output.ndim == d + 3 else ""
            raise ValueError(
                f"{name}: output must be one space-time sample of shape {expected}; got shape "
                f"{output.shape}{hint}."
            )
        if output.shape[1] < 3:
            raise ValueError(
                f"{name}: output needs at least 3 time frames (axis 1) for the second-order time "
                f"derivative; got shape {output.shape}."
            )
        return output

    def _initial_condition(self, input, output):
        """``u0`` of shape ``(1, *spatial)`` from ``input``: ``(1, *spatial)`` itself, or a
        space-time input ``(c, n_t, *spatial)`` whose first channel at the first frame is
        ``u0`` (PINO's input: ``u0`` broadcast over time, possibly with coordinate channels)."""
        u0 = as_float(input)
        spatial = output.shape[2:]
        name = type(self).__name__
        if u0.shape == (1, *spatial):
            return u0
        if u0.ndim == output.ndim and u0.shape[2:] == spatial and u0.shape[1] == output.shape[1]:
            return u0[:1, 0]
        raise ValueError(
            f"{name}: input must be u0 of shape {(1, *spatial)} or a space-time input of shape "
            f"(channels, {output.shape[1]}, {', '.join(map(str, spatial))}) whose channel 0 at "
            f"t = 0 is u0; got shape {u0.shape}."
        )

    def dt(self, num_times: int) -> Float[Array, ""]:
        """The time step :math:`T / (n_t - 1)` of an output with ``num_times`` frames."""
        return as_float(self.T) / (num_times - 1)

    def __call__(
        self,
        output: Float[ArrayLike, " 1 n_t *spatial"],
        input: Float[ArrayLike, " ..."] | None = None,
    ) -> Float[Array, " 1 n_t *spatial"]:
        """The residual :math:`D_t u - \\text{rhs}(u)` at every space-time grid point.

        Args:
            output: the predicted field ``(1, n_t, *spatial)`` (one sample).
            input: unused (the residual of an evolution equation does not depend on the initial
                condition); accepted so that every physics loss has one signature.

        Returns:
            the residual field, shaped as ``output``.
        """
        u = self._check_output(output)
        frames = jnp.moveaxis(u, 1, 0)  # (n_t, 1, *spatial): one equation state per frame
        T = check_traced_parameters(
            as_float(self.T), type(self).__name__, (("T", self.T, "positive"),)
        )
        dudt = time_derivative(frames, T / (u.shape[1] - 1))
        rhs = jax.vmap(self.equation.rhs)(frames)
        return jnp.moveaxis(dudt - rhs, 0, 1)

    def initial_condition_error(
        self, output: Float[ArrayLike, " 1 n_t *spatial"], input: Float[ArrayLike, " ..."]
    ) -> Float[Array, " 1 *spatial"]:
        """The first predicted frame minus the initial condition read from ``input``."""
        u = self._check_output(output)
        return u[:, 0] - self._initial_condition(input, u)

    def loss(
        self, output: Float[ArrayLike, " 1 n_t *spatial"], input: Float[ArrayLike, " ..."]
    ) -> Float[Array, ""]:
        r"""Mean squared residual plus ``ic_weight`` times the mean squared initial error.

        Args:
            output: the predicted field ``(1, n_t, *spatial)``.
            input: ``u0`` as ``(1, *spatial)``, or the operator's space-time input
                ``(channels, n_t, *spatial)`` whose channel 0 at the first frame is ``u0``.

        Returns:
            a scalar.
        """
        u = self._check_output(output)
        u0 = self._initial_condition(input, u)
        if self.residual_start >= u.shape[1]:
            raise ValueError(
                f"{type(self).__name__}: residual_start={self.residual_start} leaves no frame of "
                f"an output with {u.shape[1]} frames."
            )
        residual = self(u)[:, self.residual_start :]
        ic = u[:, 0] - u0
        weight = check_traced_parameters(
            as_float(self.ic_weight),
            type(self).__name__,
            (("ic_weight", self.ic_weight, "non-negative"),),
        )
        return jnp.mean(residual**2) + weight * jnp.mean(ic**2)


class BurgersPhysicsLoss(EvolutionPhysicsLoss):
    r"""Viscous Burgers :math:`u_t + (u^2/2)_x = \nu u_{xx}` on :math:`[0, L)` periodic
    (:class:`jaxsolve.pde.Burgers`), residual on a ``(1, n_t, n_x)`` output.

    Args:
        nu: viscosity (>= 0; the FNO setting is 0.1 on :math:`[0, 1)`, T = 1).
        length: the period :math:`L`.
        T, ic_weight, residual_start: see :class:`EvolutionPhysicsLoss`.
        dealias: 2/3-rule de-aliasing of :math:`u^2` (as the solver).
    """

    def __init__(
        self,
        nu: Float[ArrayLike, ""] = 0.1,
        *,
        length: Float[ArrayLike, ""] = 1.0,
        T: Float[ArrayLike, ""] = 1.0,
        ic_weight: Float[ArrayLike, ""] = 1.0,
        residual_start: int = 0,
        dealias: bool = True,
    ):
        equation = Burgers(nu, length=length, dealias=dealias)
        super().__init__(equation, T, ic_weight=ic_weight, residual_start=residual_start)


class KuramotoSivashinskyPhysicsLoss(EvolutionPhysicsLoss):
    r"""Kuramoto–Sivashinsky :math:`u_t + u u_x + u_{xx} + u_{xxxx} = 0` on :math:`[0, L)`
    (:class:`jaxsolve.pde.KuramotoSivashinsky`), residual on a ``(1, n_t, n_x)`` output.

    Args:
        length: the period :math:`L` (default :math:`32\pi`).
        T, ic_weight, residual_start: see :class:`EvolutionPhysicsLoss`.
        dealias: 2/3-rule de-aliasing of :math:`u^2`.
    """

    def __init__(
        self,
        *,
        length: Float[ArrayLike, ""] = 32.0 * np.pi,
        T: Float[ArrayLike, ""] = 1.0,
        ic_weight: Float[ArrayLike, ""] = 1.0,
        dealias: bool = True,
    ):
        super().__init__(
            KuramotoSivashinsky(length=length, dealias=dealias), T, ic_weight=ic_weight
        )


class NavierStokesPhysicsLoss(EvolutionPhysicsLoss):
    r"""2-D Navier–Stokes in vorticity form on a periodic box (:class:`jaxsolve.pde.NavierStokes2D`),
    :math:`w_t + u\cdot\nabla w = \nu\Delta w - \mu w + f`, residual on a ``(1, n_t, n_x, n_y)``
    vorticity output.

    Args:
        nu: viscosity (>= 0).
        forcing: ``f(x)`` of the grid coordinates ``(2, n_x, n_y)``, or None (default: the FNO
            paper's :func:`jaxsolve.pde.fno_forcing`).
        drag: linear drag :math:`\mu \ge 0`.
        lengths: the box, one length or one per axis.
        T, ic_weight, residual_start: see :class:`EvolutionPhysicsLoss`.
        dealias: 2/3-rule de-aliasing of the advection term.
    """

    def __init__(
        self,
        nu: Float[ArrayLike, ""] = 1e-3,
        *,
        forcing: Callable | None = fno_forcing,
        drag: Float[ArrayLike, ""] = 0.0,
        lengths: float | Sequence[float] = 1.0,
        T: Float[ArrayLike, ""] = 1.0,
        ic_weight: Float[ArrayLike, ""] = 1.0,
        residual_start: int = 0,
        dealias: bool = True,
    ):
        equation = NavierStokes2D(nu, forcing=forcing, drag=drag, lengths=lengths, dealias=dealias)
        super().__init__(equation, T, ic_weight=ic_weight, residual_start=residual_start)


class DarcyPhysicsLoss(AbstractPhysicsLoss):
    r"""Residual loss of Darcy flow :math:`-\nabla\cdot(a\nabla u) = f` on :math:`[0, 1]^2` with
    :math:`u = 0` on the boundary, discretised as :func:`jaxsolve.pde.darcy_solve` does it.

    On the ``s x s`` node grid :math:`x_{ij} = (i, j) h`, :math:`h = 1/(s-1)`, the residual at an
    interior node is

    .. math:: r_i = \frac{1}{h^2}\sum_{\text{4 neighbours } m} a_{im}(u_i - u_m) - f_i,
       \qquad a_{im} = \frac{2 a_i a_m}{a_i + a_m},

    using the predicted boundary values as they are (so a prediction that is not zero there is
    penalised twice: by the boundary term and through its neighbours' residuals).

    Args:
        f: the right-hand side, a number or an ``(s, s)`` / ``(1, s, s)`` field (default 1, the
            FNO paper's); may be traced.
        bc_weight: weight :math:`\lambda_{\text{bc}} \ge 0` of the mean squared boundary values
            in :meth:`loss` (may be traced).
    """

    f: Float[ArrayLike, " ..."]
    bc_weight: Float[ArrayLike, ""]

    def __init__(self, f: Float[ArrayLike, " ..."] = 1.0, *, bc_weight: Float[ArrayLike, ""] = 1.0):
        check_parameter("DarcyPhysicsLoss", "f", f, "finite")
        self.f = f
        self.bc_weight = _check_weight("DarcyPhysicsLoss", "bc_weight", bc_weight)

    @staticmethod
    def _square(name, v):
        v = as_float(v)
        if v.ndim == 3 and v.shape[0] == 1:
            v = v[0]
        if v.ndim != 2 or v.shape[0] != v.shape[1] or v.shape[0] < 3:
            raise ValueError(
                f"DarcyPhysicsLoss: {name} must be one sample of shape (1, s, s) (or (s, s)) "
                f"with s >= 3; got shape {v.shape}."
            )
        return v

    def __call__(
        self, output: Float[ArrayLike, " 1 s s"], input: Float[ArrayLike, " 1 s s"]
    ) -> Float[Array, " 1 s-2 s-2"]:
        """The residual at the interior nodes.

        Args:
            output: the predicted pressure ``u``, ``(1, s, s)``.
            input: the coefficient ``a`` at the same nodes, ``(1, s, s)``, positive.

        Returns:
            the residual on the ``(s - 2) x (s - 2)`` interior nodes, as ``(1, s - 2, s - 2)``.
        """
        u = self._square("output", output)
        a = self._square("input", input)
        if a.shape != u.shape:
            raise ValueError(
                f"DarcyPhysicsLoss: input (the coefficient a) and output must be on the same "
                f"grid; got shapes {a.shape} and {u.shape}."
            )
        if is_concrete(a) and not np.all(np.asarray(a) > 0):
            raise ValueError("DarcyPhysicsLoss: input (the coefficient a) must be positive.")
        s = u.shape[0]
        f = as_float(self.f)
        if f.ndim == 3 and f.shape[0] == 1:
            f = f[0]
        if f.ndim not in (0, 2) or (f.ndim == 2 and f.shape != (s, s)):
            raise ValueError(
                f"DarcyPhysicsLoss: f must be a number or a field on the {s} x {s} grid; got "
                f"shape {f.shape}."
            )
        f = jnp.broadcast_to(f, (s, s))[1:-1, 1:-1]
        ax, ay = _faces(a)
        fx = ax * (u[1:, :] - u[:-1, :])  # flux through the faces along axis 0
        fy = ay * (u[:, 1:] - u[:, :-1])
        div = (fx[1:, 1:-1] - fx[:-1, 1:-1]) + (fy[1:-1, 1:] - fy[1:-1, :-1])
        h2 = 1.0 / float(s - 1) ** 2
        return (-div / h2 - f)[None]

    def boundary_values(self, output: Float[ArrayLike, " 1 s s"]) -> Float[Array, " n"]:
        """The predicted values on the boundary nodes (which should be zero), as a flat array."""
        u = self._square("output", output)
        return jnp.concatenate([u[0], u[-1], u[1:-1, 0], u[1:-1, -1]])

    def loss(
        self, output: Float[ArrayLike, " 1 s s"], input: Float[ArrayLike, " 1 s s"]
    ) -> Float[Array, ""]:
        """Mean squared interior residual plus ``bc_weight`` times the mean squared boundary
        values."""
        residual = self(output, input)
        weight = check_traced_parameters(
            as_float(self.bc_weight),
            "DarcyPhysicsLoss",
            (("bc_weight", self.bc_weight, "non-negative"),),
        )
        return jnp.mean(residual**2) + weight * jnp.mean(self.boundary_values(output) ** 2)
