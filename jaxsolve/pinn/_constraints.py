r"""Hard constraints: ansätze around a network so that conditions hold by construction.

* :class:`HardDirichlet`, :math:`u(x) = g(x) + d(x)\, N(x)`: with a distance-like function
  :math:`d` that vanishes exactly on the boundary (and nowhere inside), :math:`u = g` there to
  round-off for any network :math:`N`, and the loss needs no boundary term.
* :class:`HardInitial`, for a space-time point :math:`(t, x)`:
  :math:`u(t, x) = u_0(x) + \varphi(t)\, d(x)\, N(t, x)` with :math:`\varphi(t) = t - t_0`, or
  the smooth :math:`\varphi(t) = 1 - e^{-(t - t_0)/\tau}` that saturates after a few
  :math:`\tau`; :math:`u(t_0, x) = u_0(x)` exactly. The optional spatial distance :math:`d` (else
  1) also imposes :math:`u = u_0` on the boundary for all times, which is the Dirichlet condition
  when the boundary data do not depend on time and agree with :math:`u_0` there (Burgers:
  :math:`u_0 = -\sin \pi x` vanishes at :math:`x = \pm 1`).
* :class:`PeriodicEmbedding`: the periodic coordinates :math:`x_j` of period :math:`L_j` are
  replaced by :math:`[\cos(2\pi k x_j / L_j), \sin(2\pi k x_j / L_j)]_{k=1..K}` (the others pass
  through), so any network on top of it is exactly :math:`L_j`-periodic in :math:`x_j` with all
  its derivatives ("A method for representing periodic functions and enforcing exactly periodic
  boundary conditions with deep neural networks", Dong and Ni).

All are ``equinox.Module``\ s on one point (vmap over points); the network is a trainable field,
the problem data (``g``, ``u0``, distances) are callables, and numeric settings (``tau``,
``t0``, periods) are arrays held by ``jax.lax.stop_gradient`` (they may be traced, so a sweep is
a ``jax.vmap``, and they receive no gradient).
"""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import check_int, check_positive, default_float, is_concrete
from ._derivatives import _point
from ._jets import AbstractJetFunction, Jets, directional_jets, jets_product, jets_sum


def _check_finite_positive(name, value):
    """``check_positive`` and, when concrete, finite: an infinite time scale or period passes
    ``> 0`` but switches the network off (:math:`\\varphi \\equiv 0`, or a constant embedding)."""
    check_positive(name, value)
    if is_concrete(value) and not np.all(np.isfinite(np.asarray(value, np.float64))):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    return value


def _scalar_distance(d, where):
    if jnp.shape(d) != ():
        raise ValueError(f"{where}: distance must return a scalar; got shape {jnp.shape(d)}.")
    return d


def _scalar_jets(jets, where):
    if jets.value.ndim != 1:
        raise ValueError(
            f"{where}: distance must return a scalar; got shape {jets.value.shape[1:]}."
        )
    return jets


class HardDirichlet(AbstractJetFunction):
    r""":math:`u(x) = g(x) + d(x)\, N(x)`: Dirichlet data ``g`` imposed exactly.

    Args:
        network: the trainable callable :math:`N` on one point.
        g: the boundary data extended to the domain, a callable on one point (any smooth
            extension; only its boundary values are imposed).
        distance: a callable on one point returning a scalar that is zero exactly on the
            boundary and nonzero inside (a signed distance, or a product such as
            :math:`(1 - x^2)(1 - y^2)` on :math:`[-1, 1]^2`).
    """

    network: Callable
    g: Callable
    distance: Callable

    def __init__(self, network: Callable, g: Callable, distance: Callable):
        for name, f in (("network", network), ("g", g), ("distance", distance)):
            if not callable(f):
                raise TypeError(f"{name} must be callable; got {type(f).__name__}.")
        self.network, self.g, self.distance = network, g, distance

    def __call__(self, x: Float[ArrayLike, " d"]) -> Array:
        x = _point(x, "HardDirichlet")
        d = _scalar_distance(self.distance(x), "HardDirichlet")
        return self.g(x) + d * self.network(x)

    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """Leibniz on :math:`g + d N`: the network's jets by its own rule, ``g``'s and ``d``'s
        mapped over points."""

        def of(f):
            return directional_jets(f, points, directions, second=second)

        d = _scalar_jets(of(self.distance), "HardDirichlet")
        return jets_sum(of(self.g), jets_product(d, of(self.network), second))


class HardInitial(AbstractJetFunction):
    r""":math:`u(t, x) = u_0(x) + \varphi(t)\, d(x)\, N(t, x)`: the initial condition exactly.

    Points are ``(t, x_1, ..., x_n)``; ``u0`` and ``distance`` receive the spatial part ``x``,
    the network the whole point.

    Args:
        network: the trainable callable :math:`N` on one space-time point.
        u0: the initial data, a callable on one spatial point.
        distance: optional spatial distance (zero exactly on the boundary); then also
            :math:`u = u_0` on the boundary at all times.
        tau: ``None`` for :math:`\varphi(t) = t - t_0`, else the time scale of
            :math:`\varphi(t) = 1 - e^{-(t - t_0)/\tau}` (positive; may be traced).
        t0: the initial time (may be traced).
    """

    network: Callable
    u0: Callable
    distance: Callable | None
    tau: Float[Array, ""] | None
    t0: Float[Array, ""]

    def __init__(
        self,
        network: Callable,
        u0: Callable,
        *,
        distance: Callable | None = None,
        tau: float | Float[ArrayLike, ""] | None = None,
        t0: float | Float[ArrayLike, ""] = 0.0,
    ):
        for name, f in (("network", network), ("u0", u0)):
            if not callable(f):
                raise TypeError(f"{name} must be callable; got {type(f).__name__}.")
        if distance is not None and not callable(distance):
            raise TypeError(f"distance must be callable or None; got {type(distance).__name__}.")
        self.network, self.u0, self.distance = network, u0, distance
        if tau is not None:
            _check_finite_positive("tau", tau)
            tau = jnp.asarray(tau, default_float())
            if tau.shape != ():
                raise ValueError(f"tau must be a scalar; got shape {tau.shape}.")
        self.tau = tau
        self.t0 = jnp.asarray(t0, default_float())
        if self.t0.shape != ():
            raise ValueError(f"t0 must be a scalar; got shape {self.t0.shape}.")
        # A NaN or infinite t0 makes phi(t), and so u, NaN at every point.
        if is_concrete(self.t0) and not np.isfinite(np.asarray(self.t0)):
            raise ValueError(f"t0 must be finite; got {t0!r}.")

    def factor(self, t: Float[ArrayLike, ""]) -> Array:
        r"""The time factor :math:`\varphi(t)`, zero at :math:`t_0`."""
        s = t - jax.lax.stop_gradient(self.t0)
        if self.tau is None:
            return s
        return -jnp.expm1(-s / jax.lax.stop_gradient(self.tau))

    def _scale(self, z):
        r""":math:`\varphi(t)\, d(x)` at one space-time point."""
        scale = self.factor(z[0])
        if self.distance is not None:
            scale = scale * _scalar_distance(self.distance(z[1:]), "HardInitial")
        return scale

    def _u0(self, z):
        return self.u0(z[1:])

    @staticmethod
    def _check_dim(d):
        if d < 2:
            raise ValueError(
                f"HardInitial takes space-time points (t, x_1, ..., x_n), d >= 2; got d = {d}."
            )

    def __call__(self, z: Float[ArrayLike, " d"]) -> Array:
        z = _point(z, "HardInitial")
        self._check_dim(z.shape[0])
        return self._u0(z) + self._scale(z) * self.network(z)

    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """Leibniz on :math:`u_0 + \varphi d N`: the network's jets by its own rule, the
        others' mapped over points."""
        self._check_dim(points.shape[1])

        def of(f):
            return directional_jets(f, points, directions, second=second)

        return jets_sum(of(self._u0), jets_product(of(self._scale), of(self.network), second))


class PeriodicEmbedding(eqx.Module):
    r"""Fourier embedding of the periodic coordinates (see module doc).

    The output lists the coordinates in order: a non-periodic one as itself, a periodic one as
    :math:`\cos(2\pi k x_j / L_j)` for :math:`k = 1..K` then :math:`\sin(2\pi k x_j / L_j)` for
    :math:`k = 1..K`. Pass it as ``embedding=`` to a network of :mod:`._networks` (or compose).

    Args:
        periods: one entry per coordinate: the period :math:`L_j > 0` (may be traced), or
            ``None`` for a coordinate that is not periodic. E.g. ``(None, 2.0)`` for ``(t, x)``
            with ``x`` periodic on ``[-1, 1]``.
        n_harmonics: :math:`K \geq 1`.
    """

    periods: Float[Array, " p"]
    periodic: tuple[bool, ...] = eqx.field(static=True)
    n_harmonics: int = eqx.field(static=True)

    def __init__(self, periods: Sequence[Any], n_harmonics: int = 1):
        try:
            periods = tuple(periods)
        except TypeError:
            raise TypeError(
                f"periods must be a sequence with one period (or None) per coordinate; got "
                f"{periods!r}."
            ) from None
        self.periodic = tuple(p is not None for p in periods)
        if not any(self.periodic):
            raise ValueError("periods must name at least one periodic coordinate (not None).")
        lengths = [p for p in periods if p is not None]
        for p in lengths:
            _check_finite_positive("periods", p)
        self.periods = jnp.stack([jnp.asarray(p, default_float()) for p in lengths])
        if self.periods.ndim != 1:
            raise ValueError("periods must hold scalars (or None).")
        self.n_harmonics = check_int("n_harmonics", n_harmonics)

    @property
    def out_size(self) -> int:
        """Length of the embedding."""
        n_per = sum(self.periodic)
        return len(self.periodic) - n_per + 2 * self.n_harmonics * n_per

    def __call__(self, x: Float[ArrayLike, " d"]) -> Float[Array, " f"]:
        x = _point(x, "PeriodicEmbedding")
        if x.shape[0] != len(self.periodic):
            raise ValueError(
                f"PeriodicEmbedding was built for points of dimension {len(self.periodic)}; got "
                f"shape {x.shape}."
            )
        lengths = jax.lax.stop_gradient(self.periods).astype(x.dtype)
        k = jnp.arange(1, self.n_harmonics + 1, dtype=x.dtype)
        parts, j = [], 0
        for i, periodic in enumerate(self.periodic):
            if periodic:
                w = 2 * jnp.pi * k * x[i] / lengths[j]
                parts += [jnp.cos(w), jnp.sin(w)]
                j += 1
            else:
                parts.append(x[i : i + 1])
        return jnp.concatenate(parts)
