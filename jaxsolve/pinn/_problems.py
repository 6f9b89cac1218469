r"""Physics-informed problems as data: residual terms of a single-point network, and their loss.

A network is a single-point callable ``u(x)``, ``x`` of shape ``(d,)`` (``x = (t, *space)`` for a
time-dependent problem), returning a scalar or a small array; it is batched over points with
``jax.vmap``. A :class:`Term` is a residual ``r(u, x)`` at one point (any shape, zero where the
condition holds) with a name and a weight; the points it is evaluated on are given at call time.
A :class:`PINNProblem` is an ordered tuple of terms (for instance ``"pde"``, ``"ic"``,
``"bc"``), and its loss is the weighted sum of the terms' mean squared residuals,

.. math::

    \mathcal L(u) = \sum_i \lambda_i \frac{1}{n_i} \sum_{p=1}^{n_i} \|r_i(u, x^{(i)}_p)\|_2^2,

the loss of physics-informed neural networks ("Physics-informed neural networks: A deep learning
framework for solving forward and inverse problems involving nonlinear partial differential
equations", Raissi, Perdikaris & Karniadakis). The weights :math:`\lambda_i` are data (traced),
so one compiled loss serves a sweep over them, as do the problems' physical parameters (a
viscosity, a wave speed).

Derivatives are forward-mode autodiff of the single-point network: a first derivative along an
axis (or any direction) is one ``jax.jvp``, a second derivative along an axis a ``jax.jvp`` of a
``jax.jvp`` (Taylor-mode in effect: no Jacobian or Hessian is formed). The ready residuals
(:class:`BurgersResidual`, ..., :class:`Dirichlet`, :class:`Initial`) are
:class:`AbstractResidual` s: a term's residual at all its points asks the network once for
the jets it needs (:func:`~jaxsolve.pinn.directional_jets`), which the networks of
:mod:`jaxsolve.pinn` answer in one feature-major pass through their layers instead of a map of
single-point JVPs over the points; the numbers are the same.

Condition builders: :func:`dirichlet` (:math:`u - g`), :func:`neumann`
(:math:`\partial_n u - g`), :func:`initial` (:math:`u(t_0, x) - u_0(x)`), :func:`periodic`
(:math:`u(x) - u(x + s)`, optionally derivatives too). Ready problems: :func:`burgers`,
:func:`convection`, :func:`allen_cahn`, :func:`poisson`, :func:`heat`.

Where a term is evaluated is the caller's choice (the points of ``"bc"`` on the boundary, those
of ``"ic"`` at any time: :func:`initial` sets the time itself). A problem holding plain Python
functions is a closure constant under ``jax.jit``; to pass one as an argument use
``equinox.filter_jit``.
"""

import abc
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PyTree

from .._core import as_float, check_int, is_concrete
from ._derivatives import _nested_jvp, _point, value_and_first
from ._jets import directional_jets
from ._weighting import CausalWeighting, _check_real

# --------------------------------------------------------------------------------------------
# Derivatives of a single-point function (forward mode).


def _evaluate(g, x):
    """``g(x)`` for a function, ``g`` for a constant."""
    return g(x) if callable(g) else g


def _evaluate_on(g, points):
    """``g`` at every point (mapped over them) for a function, ``g`` for a constant."""
    return jax.vmap(g)(points) if callable(g) else g


def _axis_directions(points, n_axes, where):
    """The first ``n_axes`` coordinate directions of the points' space (rows of the identity)."""
    d = points.shape[1]
    if d < n_axes:
        raise ValueError(f"{where} takes points of dimension d >= {n_axes}; got d = {d}.")
    return jnp.eye(d, dtype=points.dtype)[:n_axes]


class AbstractResidual(eqx.Module):
    """A residual ``r(u, x)`` that evaluates all points of a term at once.

    :meth:`on_points` is the definition: it asks for the network's jets once for all points
    (:func:`~jaxsolve.pinn.directional_jets`, which a network with its own Taylor rule answers
    in one feature-major pass) rather than mapping a single-point residual over them; the
    single-point call is :meth:`on_points` of one point. Any other callable ``r(u, x)`` works
    as a residual too, mapped over points with ``jax.vmap``.
    """

    @abc.abstractmethod
    def on_points(self, u: Callable, points: Float[Array, "n d"]) -> Float[Array, " n *shape"]:
        """The residual at every point of ``points`` (shape ``(n, d)``, already checked)."""

    def __call__(self, u: Callable, x: Float[ArrayLike, " d"]) -> Float[Array, "*shape"]:
        # u behind a plain function: at one point the jets come from nested JVPs. This is the
        # call that gets mapped over points, and a feature-major pass of one point mapped over
        # points turns every layer into a batch of matrix-vector products, slower than the JVPs.
        return self.on_points(lambda y: u(y), _point(x, type(self).__name__)[None])[0]


def residual_on_points(
    residual: Callable, u: Callable, points: Float[Array, "n d"]
) -> Float[Array, " n *shape"]:
    """``residual(u, x)`` at every point: :meth:`AbstractResidual.on_points`, or the single-point
    residual mapped over the points."""
    if isinstance(residual, AbstractResidual):
        return residual.on_points(u, points)
    return jax.vmap(lambda x: residual(u, x))(points)


def _function_or_constant(name, g):
    if callable(g):
        return g
    try:
        return as_float(g)
    except TypeError:
        raise TypeError(f"{name} must be a function of a point or a number; got {g!r}.") from None


# --------------------------------------------------------------------------------------------
# Conditions.


class Dirichlet(AbstractResidual):
    r"""Residual :math:`u(x) - g(x)` (a Dirichlet or data condition)."""

    g: Any

    def on_points(self, u: Callable, points: Float[Array, "n d"]) -> Float[Array, " n *shape"]:
        return directional_jets(u, points).value - _evaluate_on(self.g, points)


class Neumann(eqx.Module):
    r"""Residual :math:`\nabla u(x) \cdot n(x) - g(x)`, one forward-mode derivative along the
    normal."""

    g: Any
    normal: Any

    def __call__(self, u: Callable, x: Float[ArrayLike, " d"]) -> Float[Array, "*shape"]:
        x = _point(x, "Neumann")
        n = jnp.asarray(_evaluate(self.normal, x))
        if n.shape != x.shape:
            raise ValueError(
                f"Neumann: the normal must have the point's shape {x.shape}; got {n.shape}."
            )
        _, dn = value_and_first(u, x, n)
        return dn - _evaluate(self.g, x)


class Initial(AbstractResidual):
    r"""Residual :math:`u(t_0, x) - u_0(x)`: the time coordinate of the point is replaced by
    :math:`t_0`, and :math:`u_0` gets the spatial coordinates (shape ``(d - 1,)``)."""

    u0: Any
    t0: Float[Array, ""]
    time_axis: int = eqx.field(static=True)

    def on_points(self, u: Callable, points: Float[Array, "n d"]) -> Float[Array, " n *shape"]:
        k = self.time_axis
        if points.shape[1] <= k:
            raise ValueError(
                f"Initial: points of dimension {points.shape[1]} have no time axis {k}."
            )
        space = jnp.concatenate([points[:, :k], points[:, k + 1 :]], axis=1)
        at_t0 = points.at[:, k].set(self.t0.astype(points.dtype))
        return directional_jets(u, at_t0).value - _evaluate_on(self.u0, space)


class Periodic(eqx.Module):
    r"""Residual :math:`u(x) - u(x + s)`, and with ``orders = m`` also
    :math:`D^k_e u(x) - D^k_e u(x + s)` for :math:`k = 1..m` along :math:`e = s / \|s\|`,
    stacked on a new leading axis (shape ``(m + 1, *u.shape)``)."""

    shift: Float[Array, " d"]
    orders: int = eqx.field(static=True)

    def __call__(self, u: Callable, x: Float[ArrayLike, " d"]) -> Float[Array, " m1 *shape"]:
        x = _point(x, "Periodic")
        s = self.shift.astype(x.dtype)
        if s.shape != x.shape:
            raise ValueError(
                f"Periodic: the shift must have the point's shape {x.shape}; got {s.shape}."
            )
        e = s / jnp.linalg.norm(s)
        out = []
        for k in range(self.orders + 1):
            out.append(_nested_jvp(u, x, e, k) - _nested_jvp(u, x + s, e, k))
        return jnp.stack(out)


def dirichlet(g: Callable | float | ArrayLike = 0.0) -> Dirichlet:
    r"""The residual :math:`u(x) - g(x)`.

    Args:
        g: the boundary values, a function of the point ``x`` (shape ``(d,)``) or a constant.
    """
    return Dirichlet(_function_or_constant("g", g))


def neumann(g: Callable | float | ArrayLike, normal: Callable | Float[ArrayLike, " d"]) -> Neumann:
    r"""The residual :math:`\partial_n u - g = \nabla u(x) \cdot n(x) - g(x)`.

    Args:
        g: the normal derivative, a function of the point or a constant.
        normal: the outward normal, a function ``x -> (d,)`` or a fixed ``(d,)`` vector (for a
            space-time point its time component is 0).
    """
    return Neumann(_function_or_constant("g", g), _function_or_constant("normal", normal))


def initial(
    u0: Callable | float | ArrayLike,
    *,
    t0: float | Float[ArrayLike, ""] = 0.0,
    time_axis: int = 0,
) -> Initial:
    r"""The residual :math:`u(t_0, x) - u_0(x)` of an initial condition.

    Args:
        u0: the initial values, a function of the spatial point (the point without its time
            coordinate) or a constant.
        t0: the initial time (may be traced); the points' own time coordinate is ignored.
        time_axis: which coordinate is time.
    """
    return Initial(
        _function_or_constant("u0", u0),
        _check_real("t0", t0),
        check_int("time_axis", time_axis, minimum=0),
    )


def periodic(shift: Float[ArrayLike, " d"], *, orders: int = 0) -> Periodic:
    r"""The residual :math:`u(x) - u(x + s)` of a periodic boundary, evaluated on points of one
    side (:math:`x + s` is the other).

    Args:
        shift: the period vector :math:`s` (shape ``(d,)``, nonzero), e.g. ``(0, L)`` for the
            spatial period ``L`` of a point ``(t, x)``.
        orders: also match the directional derivatives along :math:`s` up to this order (1 for a
            second-order equation whose flux must be periodic too).
    """
    s = as_float(shift)
    if s.ndim != 1:
        raise ValueError(f"shift must have shape (d,); got {s.shape}.")
    if is_concrete(s):
        a = np.asarray(s)
        # A NaN or infinite period makes every residual NaN (the direction s / |s| too).
        if not np.all(np.isfinite(a)):
            raise ValueError(f"shift must be finite; got {a.tolist()}.")
        if not np.any(a != 0):
            raise ValueError("shift must be nonzero.")
    return Periodic(s, check_int("orders", orders, minimum=0))


# --------------------------------------------------------------------------------------------
# Terms and problems.


class Term(eqx.Module):
    """A named residual ``residual(u, x)`` at one point, with its weight in the loss (data)."""

    name: str = eqx.field(static=True)
    residual: Callable
    weight: Float[Array, ""]

    def __init__(self, name: str, residual: Callable, weight: float | Float[ArrayLike, ""] = 1.0):
        """
        Args:
            name: the term's name (the key of its points, residuals and loss).
            residual: ``residual(u, x)`` for a network ``u`` and one point ``x`` of shape
                ``(d,)``; zero where the condition holds.
            weight: the term's default weight :math:`\\lambda \\ge 0` (may be traced).
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty str; got {name!r}.")
        if not callable(residual):
            raise TypeError(f"residual must be a function r(u, x); got {residual!r}.")
        self.name = name
        self.residual = residual
        self.weight = _check_real("weight", weight, positive=True)


def _squared_norm(r):
    """``|r_p|^2`` per point of a residual ``(n, ...)``."""
    r = jnp.asarray(r)
    return jnp.sum(jnp.abs(r.reshape(r.shape[0], -1)) ** 2, axis=1)


def point_array(name: str, x: Any, *, finite: bool = True) -> Array:
    """The points of term ``name`` as a float array of shape ``(n, d)``, ``n >= 1``; with
    ``finite``, also checks (when concrete) that every coordinate is finite, a host round trip
    done once where points enter (the driver, :class:`~jaxsolve.pinn.Collocation`), not on
    every loss evaluation (a NaN point gives a NaN loss there, which nothing hides)."""
    x = as_float(x)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"points[{name!r}] must have shape (n, d), n >= 1; got {x.shape}.")
    # NumPy, not jnp: under a trace a jnp test on a closed-over concrete array is a tracer.
    if finite and is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"points[{name!r}] holds NaN or infinite coordinates.")
    return x


class PINNProblem(eqx.Module):
    """An ordered tuple of :class:`Term` s with distinct names; see the module docstring."""

    terms: tuple[Term, ...]

    def __init__(self, terms: Sequence[Term]):
        terms = tuple(terms)
        if not terms or not all(isinstance(t, Term) for t in terms):
            raise TypeError("terms must be a non-empty sequence of Term.")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"terms must have distinct names; got {names}.")
        self.terms = terms

    @property
    def names(self) -> tuple[str, ...]:
        """The term names, in order."""
        return tuple(t.name for t in self.terms)

    def _check_names(self, points, what="(n, d) array"):
        """``points`` must be a mapping with exactly one entry per term."""
        if not isinstance(points, Mapping):
            raise TypeError(f"points must be a dict term name -> {what}; got {type(points)}.")
        missing = [n for n in self.names if n not in points]
        extra = [n for n in points if n not in self.names]
        if missing or extra:
            raise ValueError(
                f"points must have one entry per term {list(self.names)}; "
                f"missing {missing}, unknown {extra}."
            )

    def _points(self, points):
        self._check_names(points)
        return {name: point_array(name, points[name], finite=False) for name in self.names}

    def residuals(
        self, u: Callable, points: Mapping[str, Float[ArrayLike, " _n _d"]]
    ) -> dict[str, Float[Array, " _n *_shape"]]:
        """Each term's residual at each of its points (:meth:`AbstractResidual.on_points`, or a
        plain single-point residual mapped over the points with ``jax.vmap``).

        Args:
            u: the single-point network.
            points: term name -> its points, shape ``(n, d)`` (one entry per term).

        Returns:
            term name -> residuals of shape ``(n, *residual_shape)``.
        """
        points = self._points(points)
        return {t.name: residual_on_points(t.residual, u, points[t.name]) for t in self.terms}

    def _checked_causal(self, causal):
        if causal is not None:
            if not isinstance(causal, CausalWeighting):
                raise TypeError(f"causal must be a CausalWeighting; got {type(causal).__name__}.")
            unknown = [n for n in causal.terms if n not in self.names]
            if unknown:
                raise ValueError(f"causal names terms {unknown} the problem does not have.")
        return causal

    def _point_weights(self, point_weights, points):
        """Term name -> ``(n,)`` weights of its points (ones where not given)."""
        if point_weights is None:
            point_weights = {}
        if not isinstance(point_weights, Mapping):
            raise TypeError(
                f"point_weights must be a dict term name -> (n,) array; got {type(point_weights)}."
            )
        unknown = [n for n in point_weights if n not in self.names]
        if unknown:
            raise ValueError(f"point_weights names unknown terms {unknown}; terms: {self.names}.")
        out = {}
        for name in self.names:
            n = points[name].shape[0]
            w = point_weights.get(name)
            w = jnp.ones((n,), points[name].dtype) if w is None else as_float(w)
            if w.shape != (n,):
                raise ValueError(
                    f"point_weights[{name!r}] must have shape ({n},), one weight per point; "
                    f"got {w.shape}."
                )
            out[name] = w
        return out

    def _evaluated(self, u, points, causal, point_weights):
        """The checked causal weighting, points and point weights, and the residuals."""
        causal = self._checked_causal(causal)
        points = self._points(points)
        point_weights = self._point_weights(point_weights, points)
        return causal, points, point_weights, self.residuals(u, points)

    def term_losses(
        self,
        u: Callable,
        points: Mapping[str, Float[ArrayLike, " _n _d"]],
        *,
        causal: CausalWeighting | None = None,
        point_weights: Mapping[str, Float[ArrayLike, " _n"]] | None = None,
    ) -> dict[str, Float[Array, ""]]:
        r"""Each term's unweighted loss: the mean over its points of :math:`w_p \|r_p\|_2^2`
        (:math:`w_p = 1` unless ``point_weights`` gives them, as an adaptive sampler's gate
        does), or the causal loss of those for the terms ``causal`` names."""
        causal, points, weights, res = self._evaluated(u, points, causal, point_weights)
        losses = {}
        for name in self.names:
            sq = weights[name] * _squared_norm(res[name])
            if causal is not None and name in causal.terms:
                losses[name] = causal(sq, points[name])
            else:
                losses[name] = jnp.mean(sq)
        return losses

    def _term_weights(self, weights):
        chosen = {t.name: t.weight for t in self.terms}
        if weights is not None:
            if not isinstance(weights, Mapping):
                raise TypeError(f"weights must be a dict term name -> weight; got {type(weights)}.")
            unknown = [n for n in weights if n not in chosen]
            if unknown:
                raise ValueError(f"weights name unknown terms {unknown}; terms: {list(chosen)}.")
            for name, w in weights.items():
                if jnp.ndim(w):
                    raise ValueError(
                        f"weights[{name!r}] must be a scalar; got shape {jnp.shape(w)}."
                    )
                # As a Term's own weight: a negative weight makes the loss unbounded below (the
                # optimiser then drives that term's residual up), a NaN one makes it NaN.
                chosen[name] = _check_real(f"weights[{name!r}]", w, positive=True)
        return chosen

    def residual_scales(
        self,
        u: Callable,
        points: Mapping[str, Float[ArrayLike, " _n _d"]],
        weights: Mapping[str, float | Float[ArrayLike, ""]] | None = None,
        *,
        causal: CausalWeighting | None = None,
        point_weights: Mapping[str, Float[ArrayLike, " _n"]] | None = None,
    ) -> tuple[dict[str, Float[Array, " _n"]], dict[str, Float[Array, " _n _k"]]]:
        r"""The scale :math:`s_p` of every point's squared residual in the loss, and the
        residuals (flattened per point to ``(n, k)``), term by term:
        :math:`\mathcal L = \sum_i \sum_p s_p \|r_i(x_p)\|^2`.

        For a point of term :math:`i`, :math:`s_p = \lambda_i w_p / n_i`, or
        :math:`\lambda_i w_p c_{k(p)} / (M n_{k(p)})` for a causal term (:math:`c_k` the causal
        weight of the point's time chunk :math:`k(p)`, :math:`n_k` its number of points). The
        scales carry no gradient. Arguments as in :meth:`loss`.
        """
        lam = self._term_weights(weights)
        causal, points, pw, res = self._evaluated(u, points, causal, point_weights)
        scales, flat = {}, {}
        for name in self.names:
            r = jnp.asarray(res[name])
            r = r.reshape(r.shape[0], -1)
            n = r.shape[0]
            if causal is not None and name in causal.terms:
                chunk = causal.chunk_index(points[name])
                m = causal.num_chunks
                sq = pw[name] * jnp.sum(jnp.abs(r) ** 2, axis=1)
                chunk_loss = causal.chunk_losses(sq, points[name])
                counts = jax.ops.segment_sum(jnp.ones((n,), r.dtype), chunk, num_segments=m)
                per_chunk = causal.weights(chunk_loss) / (m * jnp.maximum(counts, 1))
                scale = per_chunk[chunk]
            else:
                scale = jnp.full((n,), 1.0 / n, r.dtype)
            scales[name] = jax.lax.stop_gradient(lam[name] * pw[name] * scale).astype(r.dtype)
            flat[name] = r
        return scales, flat

    def residual_vector(
        self,
        u: Callable,
        points: Mapping[str, Float[ArrayLike, " _n _d"]],
        weights: Mapping[str, float | Float[ArrayLike, ""]] | None = None,
        *,
        causal: CausalWeighting | None = None,
        point_weights: Mapping[str, Float[ArrayLike, " _n"]] | None = None,
    ) -> Float[Array, " m"]:
        r"""Every residual component at every point, scaled so that its squared norm is the loss:
        :math:`\rho = (\sqrt{s_p}\, r_i(x_p))_{i, p}` with :math:`\|\rho\|^2 =` :meth:`loss`
        (:math:`s_p` from :meth:`residual_scales`; terms in order, points in order, components
        last). The scales carry no gradient, so the Jacobian of :math:`\rho` is that of a
        Gauss-Newton method (:class:`~jaxsolve.pinn.GaussNewton`). Arguments as in :meth:`loss`.
        """
        scales, res = self.residual_scales(
            u, points, weights, causal=causal, point_weights=point_weights
        )
        parts = [(jnp.sqrt(scales[n])[:, None] * res[n]).reshape(-1) for n in self.names]
        return jnp.concatenate(parts)

    def loss(
        self,
        u: Callable,
        points: Mapping[str, Float[ArrayLike, " _n _d"]],
        weights: Mapping[str, float | Float[ArrayLike, ""]] | None = None,
        *,
        causal: CausalWeighting | None = None,
        point_weights: Mapping[str, Float[ArrayLike, " _n"]] | None = None,
    ) -> tuple[Float[Array, ""], dict[str, Float[Array, ""]]]:
        r""":math:`\sum_i \lambda_i L_i` and the term losses :math:`L_i` (unweighted).

        Args:
            u: the single-point network.
            points: term name -> its points ``(n, d)``.
            weights: term name -> weight :math:`\lambda_i` (scalars, may be traced: a sweep or
                :func:`~jaxsolve.pinn._weighting.grad_norm_weighting` compiles nothing new);
                a term left out keeps its own weight, ``None`` keeps them all.
            causal: a :class:`~jaxsolve.pinn._weighting.CausalWeighting` for the time-dependent
                terms it names.
            point_weights: term name -> ``(n,)`` weights :math:`w_p \ge 0` of its points'
                squared residuals (an adaptive sampler's causal gate); ones where not given.

        Returns:
            ``(total, {name: L_i})``.
        """
        chosen = self._term_weights(weights)
        losses = self.term_losses(u, points, causal=causal, point_weights=point_weights)
        total = sum(chosen[n] * losses[n] for n in self.names)
        return total, losses

    def term_gradients(
        self,
        model: PyTree,
        points: Mapping[str, Float[ArrayLike, " _n _d"]],
        *,
        causal: CausalWeighting | None = None,
        point_weights: Mapping[str, Float[ArrayLike, " _n"]] | None = None,
    ) -> dict[str, PyTree]:
        """Term name -> the gradient of its unweighted loss with respect to the floating-point
        arrays of ``model`` (a callable pytree such as an :class:`equinox.Module`), for
        :func:`~jaxsolve.pinn._weighting.grad_norm_weighting`."""
        return eqx.filter_jacrev(
            lambda m: self.term_losses(m, points, causal=causal, point_weights=point_weights)
        )(model)


# --------------------------------------------------------------------------------------------
# PDE residuals of the benchmark problems (x = (t, x) in one space dimension).


class BurgersResidual(AbstractResidual):
    r""":math:`u_t + u u_x - \nu u_{xx}` at ``x = (t, x)``."""

    nu: Float[Array, ""]

    def on_points(self, u: Callable, points: Float[Array, "n 2"]) -> Float[Array, " n *shape"]:
        tx = _axis_directions(points, 2, "BurgersResidual")
        value, (ut, ux), (uxx,) = directional_jets(u, points, tx, second=1)
        return ut + value * ux - self.nu * uxx


class ConvectionResidual(AbstractResidual):
    r""":math:`u_t + \beta u_x` at ``x = (t, x)``: one derivative along :math:`(1, \beta)`."""

    beta: Float[Array, ""]

    def on_points(self, u: Callable, points: Float[Array, "n 2"]) -> Float[Array, " n *shape"]:
        tx = _axis_directions(points, 2, "ConvectionResidual")
        # jnp.asarray: the wave speed may be given as a plain number (ConvectionResidual(30.0)).
        beta = jnp.asarray(self.beta, points.dtype)
        _, (d,), _ = directional_jets(u, points, (tx[0] + beta * tx[1])[None])
        return d


class AllenCahnResidual(AbstractResidual):
    r""":math:`u_t - D u_{xx} + k (u^3 - u)` at ``x = (t, x)``."""

    diffusion: Float[Array, ""]
    reaction: Float[Array, ""]

    def on_points(self, u: Callable, points: Float[Array, "n 2"]) -> Float[Array, " n *shape"]:
        tx = _axis_directions(points, 2, "AllenCahnResidual")
        value, (ut, _), (uxx,) = directional_jets(u, points, tx, second=1)
        return ut - self.diffusion * uxx + self.reaction * (value**3 - value)


class HeatResidual(AbstractResidual):
    r""":math:`u_t - \kappa \Delta u` at ``x = (t, *space)`` (any number of space dimensions)."""

    kappa: Float[Array, ""]

    def on_points(self, u: Callable, points: Float[Array, "n d"]) -> Float[Array, " n *shape"]:
        d = points.shape[1]
        if d < 2:
            raise ValueError(f"HeatResidual: points (t, *space) need d >= 2; got d = {d}.")
        axes = _axis_directions(points, d, "HeatResidual")
        _, first, second = directional_jets(u, points, axes, second=range(1, d))
        return first[0] - self.kappa * jnp.sum(second, axis=0)


class PoissonResidual(AbstractResidual):
    r""":math:`-\Delta u - f` at a point ``x`` of any dimension."""

    f: Any

    def on_points(self, u: Callable, points: Float[Array, "n d"]) -> Float[Array, " n *shape"]:
        d = points.shape[1]
        axes = _axis_directions(points, d, "PoissonResidual")
        _, _, second = directional_jets(u, points, axes, second=range(d))
        return -jnp.sum(second, axis=0) - _evaluate_on(self.f, points)


# --------------------------------------------------------------------------------------------
# Ready problems.


def burgers(nu: float | Float[ArrayLike, ""] = 0.01 / math.pi) -> PINNProblem:
    r"""Viscous Burgers, the classic PINN benchmark: :math:`u_t + u u_x = \nu u_{xx}` on
    :math:`x \in [-1, 1]`, :math:`t \in [0, 1]`, :math:`u(0, x) = -\sin(\pi x)`,
    :math:`u(t, \pm 1) = 0`.

    Terms ``"pde"`` (interior points ``(t, x)``), ``"ic"`` (any points; time set to 0) and
    ``"bc"`` (points with :math:`x = \pm 1`).

    Args:
        nu: the viscosity :math:`\nu \ge 0` (default :math:`0.01/\pi`; may be traced).
    """
    nu = _check_real("nu", nu, positive=True)
    return PINNProblem(
        (
            Term("pde", BurgersResidual(nu)),
            Term("ic", initial(lambda s: -jnp.sin(jnp.pi * s[0]))),
            Term("bc", dirichlet(0.0)),
        )
    )


def _sine(s):
    return jnp.sin(s[0])


def convection(
    beta: float | Float[ArrayLike, ""] = 30.0,
    *,
    u0: Callable | None = None,
    length: float | Float[ArrayLike, ""] = 2 * math.pi,
) -> PINNProblem:
    r"""Convection :math:`u_t + \beta u_x = 0`, periodic on :math:`x \in [0, L]` (:math:`L = 2\pi`),
    :math:`t \in [0, 1]`, :math:`u(0, x) = \sin x`; the solution is :math:`u_0(x - \beta t)`.

    Terms ``"pde"``, ``"ic"`` and ``"bc"`` (periodic: points ``(t, 0)``, compared with
    ``(t, L)``).

    Args:
        beta: the wave speed (may be traced).
        u0: the initial condition, a function of the spatial point ``(1,)`` (default
            :math:`\sin x`).
        length: the period :math:`L > 0`.
    """
    beta = _check_real("beta", beta)
    length = _check_real("length", length, positive=True, allow_zero=False)
    if u0 is None:
        u0 = _sine
    return PINNProblem(
        (
            Term("pde", ConvectionResidual(beta)),
            Term("ic", initial(u0)),
            Term("bc", periodic(jnp.stack([jnp.zeros_like(length), length]))),
        )
    )


def allen_cahn(
    diffusion: float | Float[ArrayLike, ""] = 1e-4,
    reaction: float | Float[ArrayLike, ""] = 5.0,
    *,
    length: float | Float[ArrayLike, ""] = 2.0,
) -> PINNProblem:
    r"""Allen-Cahn :math:`u_t - D u_{xx} + k (u^3 - u) = 0` (:math:`D = 10^{-4}`, :math:`k = 5`),
    periodic on :math:`x \in [-1, 1]`, :math:`t \in [0, 1]`,
    :math:`u(0, x) = x^2 \cos(\pi x)` (the benchmark of the R3 and jaxpi papers).

    Terms ``"pde"``, ``"ic"`` and ``"bc"`` (periodic in :math:`u` and :math:`u_x`: points
    ``(t, -1)``, compared with ``(t, -1 + L)``).

    Args:
        diffusion: :math:`D \ge 0` (may be traced).
        reaction: :math:`k` (may be traced).
        length: the period :math:`L > 0`.
    """
    diffusion = _check_real("diffusion", diffusion, positive=True)
    reaction = _check_real("reaction", reaction)
    length = _check_real("length", length, positive=True, allow_zero=False)
    return PINNProblem(
        (
            Term("pde", AllenCahnResidual(diffusion, reaction)),
            Term("ic", initial(lambda s: s[0] ** 2 * jnp.cos(jnp.pi * s[0]))),
            Term("bc", periodic(jnp.stack([jnp.zeros_like(length), length]), orders=1)),
        )
    )


def poisson(f: Callable | float | ArrayLike, g: Callable | float | ArrayLike = 0.0) -> PINNProblem:
    r"""Poisson :math:`-\Delta u = f` with :math:`u = g` on the boundary, in any dimension.

    Terms ``"pde"`` (interior points) and ``"bc"`` (boundary points).

    Args:
        f: the source, a function of the point or a constant.
        g: the boundary values, a function of the point or a constant.
    """
    return PINNProblem(
        (
            Term("pde", PoissonResidual(_function_or_constant("f", f))),
            Term("bc", dirichlet(g)),
        )
    )


def heat(
    u0: Callable | float | ArrayLike,
    kappa: float | Float[ArrayLike, ""] = 1.0,
    *,
    g: Callable | float | ArrayLike = 0.0,
) -> PINNProblem:
    r"""Heat :math:`u_t = \kappa \Delta u` at points ``(t, *space)``, :math:`u(0, x) = u_0(x)`,
    :math:`u = g` on the boundary.

    Terms ``"pde"``, ``"ic"`` and ``"bc"``.

    Args:
        u0: the initial values, a function of the spatial point or a constant.
        kappa: the diffusivity :math:`\kappa \ge 0` (may be traced).
        g: the boundary values, a function of the space-time point or a constant.
    """
    kappa = _check_real("kappa", kappa, positive=True)
    return PINNProblem(
        (
            Term("pde", HeatResidual(kappa)),
            Term("ic", initial(u0)),
            Term("bc", dirichlet(g)),
        )
    )
