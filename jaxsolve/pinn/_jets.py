r"""Directional jets of a function of one point, on a whole batch of points at once.

A residual such as Burgers' :math:`u_t + u u_x - \nu u_{xx}` needs, at every collocation point
:math:`x_p`, the value :math:`u(x_p)`, first directional derivatives :math:`D u(x_p) v_i` and
pure second directional derivatives :math:`D^2 u(x_p)[v_i, v_i]`: the point's *jets* along the
directions :math:`v_i`. :func:`directional_jets` returns them as :class:`Jets`.

For any callable it maps nested forward-mode JVPs of the single-point function over the points
(``jax.vmap``). A network that derives from :class:`AbstractJetFunction` instead carries its own
rule: it pushes every jet through its layers together, feature-major (each stream an array of
shape ``(features, points)``). Through an affine layer :math:`z = W h + b` the streams are
:math:`W h' ` and :math:`W h''`; through a map :math:`a = \sigma(z)` (the chain rule for a second
directional derivative)

.. math::

    a' = D\sigma(z)\, z', \qquad a'' = D^2\sigma(z)[z', z'] + D\sigma(z)\, z'',

where :math:`D\sigma` and :math:`D^2\sigma` are JVPs of :math:`\sigma` itself, so any activation
(elementwise or not) is exact; a product obeys Leibniz,
:math:`(ab)'' = a'' b + 2 a' b' + a b''`. The numbers are those of the nested JVPs (tests check
this to round-off); what changes is the program XLA receives. Mapping the single-point network
over points puts the batch axis first in every hidden layer (batch-major products, transposes
around each bias) and nests one JVP inside another; the streams are instead plain
``(width, width) @ (width, points)`` products and one fused elementwise pass per layer
(``benchmarks/README.md``, "DeepXDE", has the measured difference).
"""

import abc
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, is_int


class Jets(NamedTuple):
    r"""Values and directional derivatives of a function of one point at ``n`` points.

    Attributes:
        value: :math:`u(x_p)`, shape ``(n, *out)``.
        first: :math:`D u(x_p)\, v_i` for every direction :math:`v_i`, shape ``(k, n, *out)``.
        second: :math:`D^2 u(x_p)[v_i, v_i]` for the directions ``i`` named by ``second`` (in
            that order), shape ``(len(second), n, *out)``.
    """

    value: Array
    first: Array
    second: Array


class AbstractJetFunction(eqx.Module):
    """A function of one point that also evaluates its :class:`Jets` on a batch of points in one
    pass (see the module doc). :func:`directional_jets` calls :meth:`jets` with checked
    arguments; the single-point ``__call__`` stays the definition the jets must agree with."""

    @abc.abstractmethod
    def __call__(self, x: Float[ArrayLike, " d"]) -> Array:
        """The function at one point ``x`` of shape ``(d,)``."""

    @abc.abstractmethod
    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """The jets at ``points`` along ``directions``, second derivatives along
        ``directions[i]`` for ``i`` in ``second`` (validated by :func:`directional_jets`)."""


def _checked(points, directions, second):
    points = as_float(points)
    if points.ndim != 2 or points.shape[0] == 0:
        raise ValueError(f"points must have shape (n, d), n >= 1; got {points.shape}.")
    d = points.shape[1]
    if directions is None:
        directions = jnp.zeros((0, d), points.dtype)
    directions = jnp.asarray(directions)
    if directions.ndim != 2 or directions.shape[1] != d:
        raise ValueError(
            f"directions must have shape (k, d) with d = {d}, the points' dimension; got "
            f"{directions.shape}."
        )
    if not jnp.issubdtype(directions.dtype, jnp.floating) or directions.dtype != points.dtype:
        directions = directions.astype(points.dtype)
    if is_int(second):
        second = (second,)
    try:
        second = tuple(second)
    except TypeError:
        raise TypeError(f"second must be a sequence of ints; got {second!r}.") from None
    k = directions.shape[0]
    for i in second:
        if not is_int(i):
            raise TypeError(f"second must hold ints (indices of directions); got {i!r}.")
        if not 0 <= int(i) < k:
            raise ValueError(f"second names direction {i}, but there are {k} directions.")
    second = tuple(int(i) for i in second)
    if len(set(second)) != len(second):
        raise ValueError(f"second must name distinct directions; got {second}.")
    return points, directions, second


def directional_jets(
    u: Callable[..., Any],
    points: Float[ArrayLike, "n d"],
    directions: Float[ArrayLike, "k d"] | None = None,
    *,
    second: int | Sequence[int] = (),
) -> Jets:
    r"""The value, first and pure second directional derivatives of ``u`` at every point.

    Args:
        u: a function of one point ``x`` of shape ``(d,)`` returning a scalar or an array.
            An :class:`AbstractJetFunction` (the networks of :mod:`jaxsolve.pinn` and the hard-
            constraint ansätze) evaluates all points in one feature-major pass; any other
            callable is mapped over the points with nested JVPs.
        points: shape ``(n, d)``.
        directions: shape ``(k, d)`` (``None``: none, the value only).
        second: indices ``i`` of the directions along which to take
            :math:`D^2 u[v_i, v_i]` too (static ints).

    Returns:
        :class:`Jets` with ``value (n, *out)``, ``first (k, n, *out)`` and
        ``second (len(second), n, *out)``.
    """
    points, directions, second = _checked(points, directions, second)
    if isinstance(u, AbstractJetFunction):
        return u.jets(points, directions, second)
    return pointwise_jets(u, points, directions, second)


def pointwise_jets(
    u: Callable[..., Any],
    points: Float[Array, "n d"],
    directions: Float[Array, "k d"],
    second: tuple[int, ...],
) -> Jets:
    """:func:`directional_jets` by nested JVPs of the single-point ``u``, mapped over points
    (arguments already checked): the definition every faster rule is tested against."""

    def at(x):
        value, first, curv = None, [], {}
        for i, v in enumerate(directions):
            if i in second:
                value, d1, curv[i] = _value_first_second(u, x, v)
            else:
                value, d1 = jax.jvp(u, (x,), (v,))
            first.append(d1)
        if value is None:
            value = u(x)
        return value, _stack(first, value), _stack([curv[i] for i in second], value)

    if points.shape[0] == 1:
        # One point (a single-point residual's call, itself mapped over points): no inner vmap,
        # whose batch of one would make every layer a batched matrix product.
        value, first, curv = at(points[0])
        return Jets(value[None], first[:, None], curv[:, None])
    value, first, curv = jax.vmap(at)(points)
    return Jets(value, jnp.moveaxis(first, 0, 1), jnp.moveaxis(curv, 0, 1))


def _value_first_second(u, x, v):
    (value, first), (_, second) = jax.jvp(lambda y: jax.jvp(u, (y,), (v,)), (x,), (v,))
    return value, first, second


def _stack(arrays, like):
    """``arrays`` stacked on a new leading axis, or an empty ``(0, *like.shape)``."""
    if not arrays:
        return jnp.zeros((0, *like.shape), like.dtype)
    return jnp.stack(arrays)


def _trailing(a, ndim):
    """``a`` with singleton axes appended up to ``ndim`` (a scalar-valued factor's jets against
    a vector-valued one's)."""
    return a.reshape(a.shape + (1,) * (ndim - a.ndim))


def jets_sum(a: Jets, b: Jets) -> Jets:
    """The jets of ``u + w`` from those of ``u`` and ``w`` (same points and directions)."""
    nd = max(a.value.ndim, b.value.ndim)
    return Jets(
        *(
            _trailing(x, nd + (i > 0)) + _trailing(y, nd + (i > 0))
            for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    )


def jets_product(a: Jets, b: Jets, second: tuple[int, ...]) -> Jets:
    """The jets of ``u w`` (Leibniz; one of the two may be scalar-valued)."""
    nd = max(a.value.ndim, b.value.ndim)
    av, bv = _trailing(a.value, nd), _trailing(b.value, nd)
    a1, b1 = _trailing(a.first, nd + 1), _trailing(b.first, nd + 1)
    a2, b2 = _trailing(a.second, nd + 1), _trailing(b.second, nd + 1)
    idx = jnp.asarray(second, jnp.int32)
    first = a1 * bv + av * b1
    curv = a2 * bv + 2 * a1[idx] * b1[idx] + av * b2
    return Jets(av * bv, first, curv)


class FeatureStreams:
    """Jets held feature-major while a network pushes them through its layers (internal).

    ``value`` has shape ``(f, n)``; ``first[i]`` shape ``(f, n)`` or ``(f, 1)`` (the same at
    every point, as the input's directions are); ``second[j]`` is the second-derivative stream
    along ``first[second_of[j]]``, or ``None`` where it is identically zero (a network's input
    has no curvature, and an affine layer keeps it so).
    """

    def __init__(self, value, first, second, second_of):
        self.value, self.first, self.second = value, list(first), list(second)
        self.second_of = second_of

    @classmethod
    def of_points(
        cls, points: Array, directions: Array, second: tuple[int, ...]
    ) -> "FeatureStreams":
        """The identity's streams: the points, the directions, no curvature."""
        return cls(points.T, [v[:, None] for v in directions], [None] * len(second), second)

    @classmethod
    def of_jets(cls, jets: Jets, second: tuple[int, ...]) -> "FeatureStreams":
        """Streams from point-major jets of a vector-valued function (an embedding)."""
        if jets.value.ndim != 2:
            raise ValueError(
                f"an embedding must map a point to a vector; it returned shape "
                f"{jets.value.shape[1:]}."
            )
        first = list(jnp.swapaxes(jets.first, 1, 2))
        return cls(jets.value.T, first, list(jnp.swapaxes(jets.second, 1, 2)), second)

    def _replace(self, value, first, second):
        return FeatureStreams(value, first, second, self.second_of)

    def affine(self, weight: Array, bias: Array | None = None) -> "FeatureStreams":
        """Streams of :math:`W h + b`."""
        value = weight @ self.value
        if bias is not None:
            value = value + bias[:, None]
        return self._replace(
            value,
            [weight @ t for t in self.first],
            [None if s is None else weight @ s for s in self.second],
        )

    def map(self, fn: Callable) -> "FeatureStreams":
        """Streams of ``fn`` applied to each point's feature vector (chain rule, module doc)."""
        f = jax.vmap(fn, in_axes=1, out_axes=1)
        z = self.value
        full = lambda t: jnp.broadcast_to(t, z.shape)

        def d1(t):
            return jax.jvp(f, (z,), (full(t),))[1]

        second = []
        for i, s in zip(self.second_of, self.second, strict=True):
            t = full(self.first[i])
            curv = jax.jvp(lambda y, t=t: jax.jvp(f, (y,), (t,))[1], (z,), (t,))[1]
            second.append(curv if s is None else curv + d1(s))
        return self._replace(f(z), [d1(t) for t in self.first], second)

    def __mul__(self, other: "FeatureStreams") -> "FeatureStreams":
        """Streams of the elementwise product (Leibniz)."""
        a, b = self, other
        second = []
        for i, sa, sb in zip(a.second_of, a.second, b.second, strict=True):
            curv = 2 * a.first[i] * b.first[i]
            if sa is not None:
                curv = curv + sa * b.value
            if sb is not None:
                curv = curv + a.value * sb
            second.append(curv)
        first = [ta * b.value + a.value * tb for ta, tb in zip(a.first, b.first, strict=True)]
        return self._replace(a.value * b.value, first, second)

    def __add__(self, other: "FeatureStreams") -> "FeatureStreams":
        return self._combine(other, 1)

    def __sub__(self, other: "FeatureStreams") -> "FeatureStreams":
        return self._combine(other, -1)

    def _combine(self, other, sign):
        def add(x, y):
            if y is None:
                return x
            y = y if sign > 0 else -y
            return y if x is None else x + y

        return self._replace(
            add(self.value, other.value),
            [add(x, y) for x, y in zip(self.first, other.first, strict=True)],
            [add(x, y) for x, y in zip(self.second, other.second, strict=True)],
        )

    def to_jets(self, scalar: bool) -> Jets:
        """Point-major :class:`Jets` (a scalar output drops its feature axis of size 1)."""

        def point_major(a):
            a = jnp.broadcast_to(jnp.zeros_like(self.value) if a is None else a, self.value.shape)
            return a[0] if scalar else a.T

        value = point_major(self.value)
        return Jets(
            value,
            _stack([point_major(t) for t in self.first], value),
            _stack([point_major(s) for s in self.second], value),
        )
