r"""Lagrangian PINNs: networks on characteristic coordinates for advection-dominated problems.

"Lagrangian PINNs: A causality-conforming solution to failure modes of physics-informed neural
networks" (Mojgani, Balajewicz & Hassanzadeh). For :math:`u_t + c \cdot \nabla u = D \Delta u +
f(u)` the material derivative along the characteristics :math:`\dot x = c` is
:math:`\mathrm d u / \mathrm d t = u_t + c \cdot \nabla u`, so in the characteristic (Lagrangian)
coordinates :math:`\xi = X^{-1}(t, x)`, the foot of the characteristic through :math:`(t, x)`, the
advection term disappears:

.. math:: \partial_t u\big|_{\xi} = D \Delta_\xi u + f(u),

and for a constant velocity :math:`X(t, \xi) = \xi + c t`, :math:`\xi = x - c t` and
:math:`\nabla_x = \nabla_\xi`. A network :math:`N(t, \xi)` on those coordinates no longer has
to represent the steep travelling profile that makes a plain PINN fail at large speeds.

* :class:`LagrangianNetwork` wraps a single-point network :math:`N(t, \xi)` (or :math:`N(\xi)`)
  into :math:`u(t, x) = N(t, \xi(t, x))`, again a single-point network on Eulerian points, so every
  term of :mod:`._problems` (initial, periodic, Dirichlet, Eulerian residuals) applies to it.
  Periodic boundaries: give :math:`N` a
  :class:`~jaxsolve.pinn._constraints.PeriodicEmbedding` in :math:`\xi` (an unbounded
  :math:`\xi = x - ct` is then wrapped exactly). With ``time_input=False``, :math:`u = N(\xi)`
  satisfies the transport equation :math:`u_t + c \cdot \nabla u = 0` identically (the
  tangent of :math:`\xi` along :math:`(1, c)` is exactly zero).
* :class:`LagrangianResidual`: :math:`\partial_t N|_\xi - D \Delta_\xi N - f(N)` evaluated at
  :math:`\xi(t, x)`: the residual of the paper, on Eulerian collocation points.
  :class:`ConvectionDiffusionResidual` is its Eulerian counterpart
  :math:`u_t + c \cdot \nabla u - D \Delta u - f(u)` for any network; on a
  :class:`LagrangianNetwork` the two are equal (chain rule).
* Solution-dependent velocity (Burgers, :math:`\dot x = u`): the characteristics are unknown and
  learned by a second network, as the paper does. :class:`CharacteristicModel` holds
  :math:`U(t, \xi)` (the solution carried by the characteristic from :math:`\xi`) and
  :math:`X(t, \xi) = \xi + (t - t_0)\, d(\xi)\, M(t, \xi)` (so :math:`X(t_0, \xi) = \xi` exactly,
  and :math:`X = \xi` for all times where the optional :math:`d` vanishes: fixed boundary
  characteristics). Its points are Lagrangian, :math:`p = (t, \xi)`. The residuals are
  :class:`CharacteristicResidual`, :math:`\partial_t X - a(U)`, and
  :class:`LagrangianBurgersResidual`,

  .. math:: \partial_t U - \frac{\nu}{X_\xi} \partial_\xi \Bigl(\frac{U_\xi}{X_\xi}\Bigr),

  the viscous term by the chain rule :math:`\partial_x = X_\xi^{-1} \partial_\xi`. Where the
  characteristic residual vanishes this is the Eulerian Burgers residual at :math:`(t, X)`.
  :func:`eulerian_values` reads the solution on an Eulerian grid.

Ready problems: :func:`lagrangian_convection` (constant speed, optional diffusion and reaction,
periodic) and :func:`lagrangian_burgers`, each with a constructor of its network.
"""

import math
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import as_float, check_int, is_concrete
from ._constraints import PeriodicEmbedding
from ._derivatives import _basis, _point, laplacian, value_and_first
from ._networks import MLP
from ._problems import PINNProblem, Term, _function_or_constant, dirichlet, initial
from ._weighting import _check_real

# --------------------------------------------------------------------------------------------
# Characteristic coordinates for a known velocity.


def _velocity(velocity):
    if callable(velocity) or isinstance(velocity, bool):
        raise TypeError(f"velocity must be a number or a 1-D array; got {velocity!r}.")
    try:
        c = as_float(velocity)
    except TypeError:
        raise TypeError(f"velocity must be a number or a 1-D array; got {velocity!r}.") from None
    if c.ndim > 1:
        raise ValueError(f"velocity must be a scalar or have shape (space_dim,); got {c.shape}.")
    c = jnp.atleast_1d(c)
    if is_concrete(c) and not bool(jnp.all(jnp.isfinite(c))):
        raise ValueError(f"velocity must be finite; got {c}.")
    return c


class LagrangianNetwork(eqx.Module):
    r""":math:`u(t, x) = N(t, \xi(t, x))`: a network on characteristic coordinates, seen as a
    network on Eulerian points ``(t, *x)``.

    Args:
        network: the trainable single-point network :math:`N` on Lagrangian points
            ``(t, *xi)`` (``time_input=True``) or on ``xi`` alone. For a periodic domain give it a
            :class:`~jaxsolve.pinn._constraints.PeriodicEmbedding` in ``xi``.
        velocity: the constant velocity :math:`c` (a scalar for one space dimension, or shape
            ``(space_dim,)``; may be traced; held by ``jax.lax.stop_gradient``):
            :math:`\xi = x - c\,t`. Exactly one of ``velocity`` and ``inverse_flow``.
        inverse_flow: a known characteristic map :math:`(t, x) \mapsto \xi = X^{-1}(t, x)` for a
            general known velocity field, a callable on ``(t, x)`` (``x`` of shape
            ``(space_dim,)``) returning ``xi`` of the same shape.
        time_input: whether :math:`N` takes the time too (default); without it :math:`u` is
            constant along characteristics (pure transport holds exactly).
    """

    network: Callable
    velocity: Float[Array, " s"] | None
    inverse_flow: Callable | None
    time_input: bool = eqx.field(static=True)

    def __init__(
        self,
        network: Callable,
        velocity: float
        | Float[ArrayLike, ""]
        | Float[ArrayLike, " s"]
        | Sequence[float]
        | None = None,
        *,
        inverse_flow: Callable | None = None,
        time_input: bool = True,
    ):
        if not callable(network):
            raise TypeError(f"network must be callable; got {type(network).__name__}.")
        if (velocity is None) == (inverse_flow is None):
            raise ValueError("give exactly one of velocity and inverse_flow.")
        if inverse_flow is not None and not callable(inverse_flow):
            raise TypeError(f"inverse_flow must be callable; got {type(inverse_flow).__name__}.")
        if not isinstance(time_input, bool):
            raise TypeError(f"time_input must be a bool; got {time_input!r}.")
        self.network = network
        self.velocity = None if velocity is None else _velocity(velocity)
        self.inverse_flow = inverse_flow
        self.time_input = time_input

    def lagrangian_point(self, x: Float[ArrayLike, " d"]) -> Float[Array, " d"]:
        r"""The Lagrangian point :math:`(t, \xi(t, x))` of the Eulerian point ``x = (t, *x)``."""
        x = _point(x, "LagrangianNetwork")
        if x.shape[0] < 2:
            raise ValueError(
                f"LagrangianNetwork takes space-time points (t, x_1, ...); got shape {x.shape}."
            )
        t, space = x[0], x[1:]
        if self.velocity is not None:
            c = jax.lax.stop_gradient(self.velocity).astype(x.dtype)
            if c.shape[0] != space.shape[0]:
                raise ValueError(
                    f"LagrangianNetwork: velocity has {c.shape[0]} components but the point has "
                    f"{space.shape[0]} space dimensions."
                )
            xi = space - c * t
        else:
            xi = jnp.asarray(self.inverse_flow(t, space))
            if xi.shape != space.shape:
                raise ValueError(
                    f"inverse_flow must return xi of shape {space.shape}; got {xi.shape}."
                )
        return jnp.concatenate([t[None], xi.astype(x.dtype)])

    def on_lagrangian(self, p: Float[ArrayLike, " d"]) -> Array:
        r""":math:`N` at the Lagrangian point ``p = (t, *xi)`` (the time ignored without
        ``time_input``)."""
        p = jnp.asarray(p)
        return self.network(p if self.time_input else p[1:])

    def __call__(self, x: Float[ArrayLike, " d"]) -> Array:
        return self.on_lagrangian(self.lagrangian_point(x))


# --------------------------------------------------------------------------------------------
# Residuals of the constant-velocity problem.


def _reaction(f, value):
    return 0.0 if f is None else f(value)


class LagrangianResidual(eqx.Module):
    r""":math:`\partial_t N|_\xi - D \Delta_\xi N - f(N)` at :math:`(t, \xi(t, x))`, for a
    :class:`LagrangianNetwork` ``u`` with a constant velocity, at Eulerian points ``x = (t, *x)``
    (the velocity is the network's)."""

    diffusion: Float[Array, ""]
    reaction: Callable | None

    def __call__(self, u: Callable, x: Float[ArrayLike, " d"]) -> Float[Array, "*shape"]:
        if not isinstance(u, LagrangianNetwork) or u.velocity is None:
            raise TypeError(
                "LagrangianResidual needs a LagrangianNetwork with a constant velocity; got "
                f"{type(u).__name__}."
            )
        p = u.lagrangian_point(x)
        value, ut = value_and_first(u.on_lagrangian, p, _basis(p, 0))
        lap = laplacian(u.on_lagrangian, range(1, p.shape[0]))(p)
        return ut - self.diffusion * lap - _reaction(self.reaction, value)


class ConvectionDiffusionResidual(eqx.Module):
    r""":math:`u_t + c \cdot \nabla u - D \Delta u - f(u)` at ``x = (t, *x)`` for any network
    (the advective derivative is one forward-mode derivative along :math:`(1, c)`)."""

    velocity: Float[Array, " s"]
    diffusion: Float[Array, ""]
    reaction: Callable | None

    def __call__(self, u: Callable, x: Float[ArrayLike, " d"]) -> Float[Array, "*shape"]:
        x = _point(x, "ConvectionDiffusionResidual")
        c = self.velocity.astype(x.dtype)
        if x.shape[0] != 1 + c.shape[0]:
            raise ValueError(
                f"ConvectionDiffusionResidual: a point (t, *x) with {c.shape[0]} space dimensions "
                f"has shape ({1 + c.shape[0]},); got {x.shape}."
            )
        value, adv = value_and_first(u, x, jnp.concatenate([jnp.ones((1,), x.dtype), c]))
        lap = laplacian(u, range(1, x.shape[0]))(x)
        return adv - self.diffusion * lap - _reaction(self.reaction, value)


def lagrangian_residual(
    diffusion: float | Float[ArrayLike, ""] = 0.0, *, reaction: Callable | None = None
) -> LagrangianResidual:
    r"""The residual :math:`\partial_t N|_\xi - D \Delta_\xi N - f(N)` of a
    :class:`LagrangianNetwork`.

    Args:
        diffusion: :math:`D \ge 0` (may be traced).
        reaction: :math:`f(u)`, a function of the value, or ``None``.
    """
    if reaction is not None and not callable(reaction):
        raise TypeError(f"reaction must be callable or None; got {type(reaction).__name__}.")
    return LagrangianResidual(_check_real("diffusion", diffusion, positive=True), reaction)


def convection_diffusion_residual(
    velocity: float | Float[ArrayLike, ""] | Float[ArrayLike, " s"] | Sequence[float],
    diffusion: float | Float[ArrayLike, ""] = 0.0,
    *,
    reaction: Callable | None = None,
) -> ConvectionDiffusionResidual:
    r"""The Eulerian residual :math:`u_t + c \cdot \nabla u - D \Delta u - f(u)`.

    Args:
        velocity: :math:`c`, a scalar or shape ``(space_dim,)`` (may be traced).
        diffusion: :math:`D \ge 0` (may be traced).
        reaction: :math:`f(u)`, a function of the value, or ``None``.
    """
    if reaction is not None and not callable(reaction):
        raise TypeError(f"reaction must be callable or None; got {type(reaction).__name__}.")
    return ConvectionDiffusionResidual(
        _velocity(velocity), _check_real("diffusion", diffusion, positive=True), reaction
    )


def _sine(s):
    return jnp.sin(s[0])


def lagrangian_convection(
    beta: float | Float[ArrayLike, ""] = 30.0,
    *,
    diffusion: float | Float[ArrayLike, ""] = 0.0,
    reaction: Callable | None = None,
    u0: Callable | None = None,
    length: float | Float[ArrayLike, ""] = 2 * math.pi,
    n_harmonics: int = 1,
    time_input: bool = True,
) -> tuple[PINNProblem, Callable[..., LagrangianNetwork]]:
    r"""Convection(-diffusion) :math:`u_t + \beta u_x = D u_{xx} + f(u)`, periodic on
    :math:`[0, L]`, :math:`t \in [0, 1]`, :math:`u(0, x) = u_0(x)` (default :math:`\sin x`), as a
    Lagrangian PINN: the network is :math:`N(t, \xi)`, :math:`\xi = x - \beta t`, with a periodic
    embedding in :math:`\xi`.

    The problem has the terms ``"pde"`` (:class:`LagrangianResidual`, at Eulerian points
    ``(t, x)``) and ``"ic"`` (:func:`~jaxsolve.pinn._problems.initial`); periodicity holds exactly
    through the embedding, so there is no boundary term. With ``D = 0`` and no reaction the
    solution is :math:`u_0(x - \beta t)`.

    Args:
        beta: the speed :math:`\beta` (may be traced; it lives in the network).
        diffusion: :math:`D \ge 0` (may be traced).
        reaction: :math:`f(u)` or ``None``.
        u0: the initial condition, a function of the spatial point ``(1,)``.
        length: the period :math:`L > 0`.
        n_harmonics: harmonics :math:`K` of the periodic embedding.
        time_input: whether the network takes :math:`t` (default); ``False`` makes the pure
            transport equation hold identically (for ``D = 0`` and no reaction only the initial
            condition is left to fit).

    Returns:
        ``(problem, make_network)``; ``make_network(*, key, width=64, depth=4, network=MLP,
        **kwargs)`` builds the :class:`LagrangianNetwork` around ``network(in_size, "scalar",
        width, depth, key=key, embedding=..., **kwargs)`` (any network class of
        :mod:`._networks` taking an ``embedding``).
    """
    beta = _check_real("beta", beta)
    length = _check_real("length", length, positive=True, allow_zero=False)
    n_harmonics = check_int("n_harmonics", n_harmonics)
    if not isinstance(time_input, bool):
        raise TypeError(f"time_input must be a bool; got {time_input!r}.")
    pde = lagrangian_residual(diffusion, reaction=reaction)
    u0 = _sine if u0 is None else _function_or_constant("u0", u0)
    problem = PINNProblem((Term("pde", pde), Term("ic", initial(u0))))

    def make_network(
        *,
        key: PRNGKeyArray,
        width: int = 64,
        depth: int = 4,
        network: Callable[..., Any] = MLP,
        **kwargs: Any,
    ) -> LagrangianNetwork:
        periods = (None, length) if time_input else (length,)
        embedding = PeriodicEmbedding(periods, n_harmonics)
        net = network(len(periods), "scalar", width, depth, key=key, embedding=embedding, **kwargs)
        return LagrangianNetwork(net, beta, time_input=time_input)

    return problem, make_network


# --------------------------------------------------------------------------------------------
# Learned characteristics (solution-dependent velocity).


class CharacteristicModel(eqx.Module):
    r"""The solution :math:`U(t, \xi)` and the characteristics
    :math:`X(t, \xi) = \xi + (t - t_0)\, d(\xi)\, M(t, \xi)` on Lagrangian points
    ``p = (t, xi)`` (one space dimension); calling the model gives :math:`U`, so initial and
    Dirichlet terms of :mod:`._problems` apply to it directly.

    Args:
        solution: the network :math:`U` on ``(t, xi)``, scalar output.
        displacement: the network :math:`M` on ``(t, xi)``, scalar output.
        distance: optional :math:`d(\xi)` (a function of ``xi`` of shape ``(1,)``) that vanishes
            where the characteristics are fixed (a Dirichlet boundary with zero velocity);
            ``None`` for 1.
        t0: the initial time (may be traced).
    """

    solution: Callable
    displacement: Callable
    distance: Callable | None
    t0: Float[Array, ""]

    def __init__(
        self,
        solution: Callable,
        displacement: Callable,
        *,
        distance: Callable | None = None,
        t0: float | Float[ArrayLike, ""] = 0.0,
    ):
        for name, f in (("solution", solution), ("displacement", displacement)):
            if not callable(f):
                raise TypeError(f"{name} must be callable; got {type(f).__name__}.")
        if distance is not None and not callable(distance):
            raise TypeError(f"distance must be callable or None; got {type(distance).__name__}.")
        self.solution, self.displacement, self.distance = solution, displacement, distance
        self.t0 = _check_real("t0", t0)

    def _check(self, p):
        p = _point(p, "CharacteristicModel")
        if p.shape[0] != 2:
            raise ValueError(f"CharacteristicModel takes points (t, xi); got shape {p.shape}.")
        return p

    def position(self, p: Float[ArrayLike, " 2"]) -> Float[Array, ""]:
        r"""The characteristic :math:`X(t, \xi)` through ``p = (t, xi)``."""
        p = self._check(p)
        scale = p[0] - jax.lax.stop_gradient(self.t0).astype(p.dtype)
        if self.distance is not None:
            scale = scale * jnp.asarray(self.distance(p[1:])).reshape(())
        return p[1] + scale * jnp.asarray(self.displacement(p)).reshape(())

    def eulerian_point(self, p: Float[ArrayLike, " 2"]) -> Float[Array, " 2"]:
        r"""The Eulerian point :math:`(t, X(t, \xi))` where :math:`U(p)` is the solution."""
        p = self._check(p)
        return jnp.stack([p[0], self.position(p)])

    def __call__(self, p: Float[ArrayLike, " 2"]) -> Array:
        return self.solution(self._check(p))


def eulerian_values(
    model: CharacteristicModel,
    t: Float[ArrayLike, " nt"],
    x: Float[ArrayLike, " nx"],
    xi: Float[ArrayLike, " m"],
) -> Float[Array, "nt nx"]:
    r"""The solution of a :class:`CharacteristicModel` on an Eulerian grid, ``u[i, j] = u(t_i,
    x_j)``: at each time the values :math:`U(t_i, \xi_k)` sit at :math:`X(t_i, \xi_k)` and are
    linearly interpolated to ``x`` (``jnp.interp``; constant beyond the outermost
    characteristics). Valid while the characteristics have not crossed (:math:`X` increasing in
    :math:`\xi`), which the viscous problem keeps.

    Args:
        model: the trained model.
        t: the times, shape ``(nt,)``.
        x: the positions, shape ``(nx,)``.
        xi: increasing Lagrangian labels covering the domain, shape ``(m,)`` (many more than
            ``nx`` near a steep front).

    Returns:
        shape ``(nt, nx)``.
    """
    model = _as_characteristic(model, "eulerian_values")
    t, x, xi = (jnp.asarray(a) for a in (t, x, xi))
    for name, a in (("t", t), ("x", x), ("xi", xi)):
        if a.ndim != 1:
            raise ValueError(f"{name} must be 1-D; got shape {a.shape}.")

    def at(ti):
        p = jnp.stack([jnp.broadcast_to(ti, xi.shape), xi], axis=1)
        pos = jax.vmap(model.position)(p)
        return jnp.interp(x, pos, jax.vmap(model)(p))

    return jax.vmap(at)(t)


def _as_characteristic(model, where):
    if not isinstance(model, CharacteristicModel):
        raise TypeError(f"{where} needs a CharacteristicModel; got {type(model).__name__}.")
    return model


class CharacteristicResidual(eqx.Module):
    r""":math:`\partial_t X(t, \xi) - a(U(t, \xi))` at a Lagrangian point (Burgers: :math:`a(u)
    = u`)."""

    speed: Callable | None

    def __call__(self, model: Callable, p: Float[ArrayLike, " 2"]) -> Float[Array, ""]:
        model = _as_characteristic(model, "CharacteristicResidual")
        p = model._check(p)
        _, xt = value_and_first(model.position, p, _basis(p, 0))
        value = model(p)
        return xt - (value if self.speed is None else self.speed(value))


class LagrangianBurgersResidual(eqx.Module):
    r""":math:`\partial_t U - \nu X_\xi^{-1} \partial_\xi (U_\xi / X_\xi)` at a Lagrangian point."""

    nu: Float[Array, ""]

    def __call__(self, model: Callable, p: Float[ArrayLike, " 2"]) -> Float[Array, ""]:
        model = _as_characteristic(model, "LagrangianBurgersResidual")
        p = model._check(p)
        e_t, e_xi = _basis(p, 0), _basis(p, 1)

        def ux(q):  # U_x = U_xi / X_xi
            _, u_xi = value_and_first(model, q, e_xi)
            _, x_xi = value_and_first(model.position, q, e_xi)
            return u_xi / x_xi

        _, ut = value_and_first(model, p, e_t)
        _, x_xi = value_and_first(model.position, p, e_xi)
        _, ux_xi = value_and_first(ux, p, e_xi)
        return ut - self.nu * ux_xi / x_xi


def _minus_sin_pi(s):
    return -jnp.sin(jnp.pi * s[0])


def _unit_interval_distance(s):
    return 1.0 - s[0] ** 2


def lagrangian_burgers(
    nu: float | Float[ArrayLike, ""] = 0.01 / math.pi,
) -> tuple[PINNProblem, Callable[..., CharacteristicModel]]:
    r"""Viscous Burgers :math:`u_t + u u_x = \nu u_{xx}` on :math:`[-1, 1] \times [0, 1]`,
    :math:`u(0, x) = -\sin \pi x`, :math:`u(t, \pm 1) = 0`, as a Lagrangian PINN with learned
    characteristics :math:`\dot X = U`.

    All points are Lagrangian ``(t, xi)`` in :math:`[0, 1] \times [-1, 1]`. Terms: ``"pde"``
    (:class:`LagrangianBurgersResidual`), ``"characteristic"`` (:class:`CharacteristicResidual`),
    ``"ic"`` (:math:`U(0, \xi) + \sin \pi\xi`; :math:`X(0, \xi) = \xi` holds by construction) and
    ``"bc"`` (:math:`U(t, \pm 1) = 0`; the boundary characteristics :math:`X(t, \pm 1) = \pm 1`
    hold by construction, :math:`d(\xi) = 1 - \xi^2`).

    Args:
        nu: the viscosity :math:`\nu \ge 0` (may be traced).

    Returns:
        ``(problem, make_model)``; ``make_model(*, key, width=64, depth=4, network=MLP,
        **kwargs)`` builds a :class:`CharacteristicModel` of two networks ``network(2, "scalar",
        width, depth, key=..., **kwargs)``.
    """
    nu = _check_real("nu", nu, positive=True)
    problem = PINNProblem(
        (
            Term("pde", LagrangianBurgersResidual(nu)),
            Term("characteristic", CharacteristicResidual(None)),
            Term("ic", initial(_minus_sin_pi)),
            Term("bc", dirichlet(0.0)),
        )
    )

    def make_model(
        *,
        key: PRNGKeyArray,
        width: int = 64,
        depth: int = 4,
        network: Callable[..., Any] = MLP,
        **kwargs: Any,
    ) -> CharacteristicModel:
        k_u, k_x = jax.random.split(key)
        return CharacteristicModel(
            network(2, "scalar", width, depth, key=k_u, **kwargs),
            network(2, "scalar", width, depth, key=k_x, **kwargs),
            distance=_unit_interval_distance,
        )

    return problem, make_model
