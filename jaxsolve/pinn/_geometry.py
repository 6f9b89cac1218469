r"""Geometries for physics-informed training: signed distances, membership, sampling, normals.

Every geometry is an :class:`equinox.Module` whose parameters are arrays (so a geometry can be
traced, vmapped and differentiated through) and whose dimension is static. Points are arrays of
shape ``(..., dim)``; every method broadcasts over the leading axes.

Common interface (:class:`AbstractGeometry`):

- ``signed_distance(x)``: :math:`\phi(x) < 0` inside, :math:`> 0` outside, :math:`0` on the
  boundary. Exact Euclidean distance for :class:`Interval`, :class:`Box` (corners included),
  :class:`Disk` and a :class:`SpaceTime` product of those.
- ``contains(x)``: :math:`\phi(x) \le 0` (the closed domain).
- ``bounds``: the bounding box ``(lower, upper)``, arrays of shape ``(dim,)``.
- ``sample_interior(key, n)``: ``n`` points uniform in the domain (by its volume).
- ``sample_boundary(key, n)``: ``n`` points uniform on the boundary (by its surface measure).
- ``boundary_normal(x)``: the outward unit normal at a boundary point, :math:`\nabla\phi`.
- ``distance(x)``: a smooth function that is exactly zero on the boundary and positive inside, for
  hard-constraint ansätze :math:`u = g + d(x)\,N(x)` ("Exact imposition of boundary conditions",
  Sukumar & Srivastava, and Lagaris et al.'s trial functions). Each class documents its choice:
  the boxes, intervals and disks are normalised to 1 at the centre; :class:`SpaceTime` multiplies
  the time fraction by the spatial one (0.5 at the space-time centre), and :class:`SignedDistance`
  uses the user's function as it is.
- ``from_unit_cube(u)``: maps points of :math:`[0, 1)^{dim}` into the domain and returns
  ``(points, inside)``; a measure-preserving map where one is known (``exact_map``), otherwise the
  affine map onto the bounding box with ``inside`` marking the points to keep. Collocation
  samplers (``jaxsolve.pinn._sampling``) use it.

Geometries without an exact map sample by rejection from the bounding box with a fixed
oversampling factor, so shapes stay static; if too few candidates land inside, the call raises
(an :func:`equinox.error_if` check, so inside ``jit`` the compiled program raises when it runs).
"""

import abc
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from .._core import as_float, check_int, is_concrete, safe_divide, safe_sqrt

_OVERSAMPLE = 16

_Vector = Float[ArrayLike, " dim"] | Sequence[float]
_Scalar = float | Float[ArrayLike, ""]


def _float_param(name, value, ndim):
    x = as_float(value)
    if x.ndim != ndim:
        what = "a scalar" if ndim == 0 else "a 1-D array"
        raise ValueError(f"{name} must be {what}; got shape {x.shape}.")
    if is_concrete(x) and not np.all(np.isfinite(np.asarray(x))):
        raise ValueError(f"{name} must be finite; got {np.asarray(x)!r}.")
    return x


def _checked_when_run(params, ok, message):
    """Traced geometry parameters (a sweep over domains) checked when the program runs, as
    concrete ones are at construction: a reversed interval or a negative radius samples points
    outside the domain and flips the sign of the distance, without an error otherwise."""
    if is_concrete(params):
        return params
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in params]))
    return eqx.error_if(params, ~(finite & ok(*params)), message)


def _check_points(x, dim):
    x = jnp.asarray(x)
    if x.ndim == 0 or x.shape[-1] != dim:
        raise ValueError(
            f"x must have a last axis of size {dim} (the geometry's dim); got {x.shape}."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = as_float(x)
    return x


def _norm(v):
    """Euclidean norm over the last axis, with a finite gradient at 0."""
    return safe_sqrt(jnp.sum(v * v, axis=-1))


def _check_n(n):
    return check_int("n", n, minimum=1)


def _first_accepted(candidates, inside, n):
    """The first ``n`` rows of ``candidates`` with ``inside`` (order kept), and how many there were;
    raises (at run time when traced) if fewer than ``n``."""
    order = jnp.argsort(~inside, stable=True)
    count = jnp.sum(inside)
    points = candidates[order[:n]]
    return eqx.error_if(
        points,
        count < n,
        f"rejection sampling accepted fewer than n={n} of {candidates.shape[0]} candidates; "
        "increase the geometry's oversample or give tighter bounds.",
    )


@eqx.filter_jit
def _jit_sample(geometry, method, key, n):
    # One compiled program per geometry type and n, also when called outside jit.
    return getattr(geometry, method)(key, n)


class AbstractGeometry(eqx.Module):
    """A domain in :math:`\\mathbb R^{dim}`; see the module docstring for the interface."""

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Number of coordinates of a point."""

    @property
    @abc.abstractmethod
    def bounds(self) -> tuple[Float[Array, " dim"], Float[Array, " dim"]]:
        """The bounding box ``(lower, upper)``."""

    @abc.abstractmethod
    def signed_distance(self, x: Float[ArrayLike, "*batch dim"]) -> Float[Array, "*batch"]:
        """Signed distance to the boundary, negative inside."""

    @abc.abstractmethod
    def distance(self, x: Float[ArrayLike, "*batch dim"]) -> Float[Array, "*batch"]:
        """Smooth hard-constraint factor: zero on the boundary, positive inside."""

    @abc.abstractmethod
    def _boundary(self, key, n):
        """Implementation of :meth:`sample_boundary` (traced, ``n`` checked)."""

    def sample_boundary(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` points uniform on the boundary (by its surface measure)."""
        return _jit_sample(self, "_boundary", key, _check_n(n))

    def sample_interior(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` points uniform in the domain (by volume)."""
        return _jit_sample(self, "_interior", key, _check_n(n))

    @property
    def exact_map(self) -> bool:
        """Whether :meth:`from_unit_cube` is a measure-preserving map onto the domain (all points
        inside), rather than the bounding box with a membership mask."""
        return False

    @property
    def oversample_factor(self) -> int:
        """Candidates per requested point when sampling by rejection."""
        return _OVERSAMPLE

    def contains(self, x: Float[ArrayLike, "*batch dim"]) -> Bool[Array, "*batch"]:
        """Whether ``x`` lies in the closed domain (``signed_distance(x) <= 0``)."""
        return self.signed_distance(x) <= 0

    def boundary_normal(self, x: Float[ArrayLike, "*batch dim"]) -> Float[Array, "*batch dim"]:
        """Outward unit normal, the normalised gradient of the signed distance."""
        x = _check_points(x, self.dim)

        def one(p):
            g = jax.grad(lambda q: self.signed_distance(q))(p)
            return g / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(g.dtype).tiny)

        return jnp.vectorize(one, signature="(d)->(d)")(x)

    def from_unit_cube(
        self, u: Float[ArrayLike, "*batch dim"]
    ) -> tuple[Float[Array, "*batch dim"], Bool[Array, "*batch"]]:
        """Affine map of :math:`[0, 1)^{dim}` onto the bounding box, and which images are inside."""
        u = _check_points(u, self.dim)
        lower, upper = self.bounds
        x = lower + u * (upper - lower)
        return x, self.contains(x)

    def _interior(self, key, n):
        """Implementation of :meth:`sample_interior`; by default rejection from the bounds."""
        lower, _ = self.bounds
        if self.exact_map:
            u = jax.random.uniform(key, (n, self.dim), dtype=lower.dtype)
            return self.from_unit_cube(u)[0]
        m = self.oversample_factor * n
        u = jax.random.uniform(key, (m, self.dim), dtype=lower.dtype)
        x, inside = self.from_unit_cube(u)
        return _first_accepted(x, inside, n)


class Interval(AbstractGeometry):
    """The interval :math:`[a, b]`, points of shape ``(..., 1)``.

    ``distance(x) = 4 (x - a)(b - x) / (b - a)^2`` (1 at the midpoint). The boundary measure is
    counting measure on :math:`\\{a, b\\}`: each endpoint with probability 1/2.

    Args:
        a, b: the endpoints, ``a < b``.
    """

    a: Float[Array, ""]
    b: Float[Array, ""]

    def __init__(self, a: _Scalar, b: _Scalar):
        self.a = _float_param("a", a, 0)
        self.b = _float_param("b", b, 0)
        if is_concrete((self.a, self.b)) and not float(self.a) < float(self.b):
            raise ValueError(f"Interval needs a < b; got a={float(self.a)}, b={float(self.b)}.")
        self.a, self.b = _checked_when_run(
            (self.a, self.b), lambda a, b: a < b, "Interval needs finite a < b."
        )

    @property
    def dim(self) -> int:
        return 1

    @property
    def exact_map(self) -> bool:
        return True

    @property
    def bounds(self):
        return self.a[None], self.b[None]

    @property
    def measure(self) -> Float[Array, ""]:
        """Length :math:`b - a`."""
        return self.b - self.a

    @property
    def boundary_measure(self) -> Float[Array, ""]:
        """Counting measure of the two endpoints: 2."""
        return jnp.asarray(2.0, self.a.dtype)

    def signed_distance(self, x):
        x = _check_points(x, 1)[..., 0]
        return jnp.abs(x - 0.5 * (self.a + self.b)) - 0.5 * (self.b - self.a)

    def distance(self, x):
        x = _check_points(x, 1)[..., 0]
        return 4 * (x - self.a) * (self.b - x) / (self.b - self.a) ** 2

    def boundary_normal(self, x):
        x = _check_points(x, 1)
        return jnp.where(x >= 0.5 * (self.a + self.b), 1.0, -1.0).astype(x.dtype)

    def from_unit_cube(self, u):
        u = _check_points(u, 1)
        return self.a + u * (self.b - self.a), jnp.ones(u.shape[:-1], bool)

    def _boundary(self, key, n):
        n = _check_n(n)
        right = jax.random.bernoulli(key, 0.5, (n, 1))
        return jnp.where(right, self.b, self.a)


class Box(AbstractGeometry):
    """The box :math:`\\prod_i [l_i, u_i]` in any dimension.

    Exact signed distance, corners included: with :math:`q = |x - c| - h` (centre :math:`c`,
    half-widths :math:`h`), :math:`\\phi = \\lVert \\max(q, 0) \\rVert + \\min(\\max_i q_i, 0)`.
    ``distance(x) = prod_i 4 (x_i - l_i)(u_i - x_i) / (u_i - l_i)^2`` (1 at the centre).
    Boundary points pick a face with probability proportional to its area, then a point uniform
    on it.

    Args:
        lower, upper: 1-D arrays of the same length, ``lower < upper``.
    """

    lower: Float[Array, " dim"]
    upper: Float[Array, " dim"]

    def __init__(self, lower: _Vector, upper: _Vector):
        self.lower = _float_param("lower", lower, 1)
        self.upper = _float_param("upper", upper, 1)
        if self.lower.shape != self.upper.shape or self.lower.shape[0] == 0:
            raise ValueError(
                f"lower and upper must have the same non-zero length; got {self.lower.shape} "
                f"and {self.upper.shape}."
            )
        if is_concrete((self.lower, self.upper)) and not np.all(
            np.asarray(self.lower) < np.asarray(self.upper)
        ):
            raise ValueError(f"Box needs lower < upper; got {self.lower} and {self.upper}.")
        self.lower, self.upper = _checked_when_run(
            (self.lower, self.upper),
            lambda lo, hi: jnp.all(lo < hi),
            "Box needs finite lower < upper.",
        )

    @property
    def dim(self) -> int:
        return self.lower.shape[0]

    @property
    def exact_map(self) -> bool:
        return True

    @property
    def bounds(self):
        return self.lower, self.upper

    @property
    def measure(self) -> Float[Array, ""]:
        """Volume."""
        return jnp.prod(self.upper - self.lower)

    @property
    def face_areas(self) -> Float[Array, " dim"]:
        """Area of each of the two faces normal to axis ``i`` (the product of the other widths)."""
        w = self.upper - self.lower
        return jnp.stack([jnp.prod(jnp.delete(w, i)) for i in range(self.dim)])

    @property
    def boundary_measure(self) -> Float[Array, ""]:
        """Surface area, twice the sum of the face areas."""
        return 2 * jnp.sum(self.face_areas)

    def _q(self, x):
        x = _check_points(x, self.dim)
        c = 0.5 * (self.lower + self.upper)
        return x, c, jnp.abs(x - c) - 0.5 * (self.upper - self.lower)

    def signed_distance(self, x):
        _, _, q = self._q(x)
        return _norm(jnp.maximum(q, 0)) + jnp.minimum(jnp.max(q, axis=-1), 0)

    def distance(self, x):
        x = _check_points(x, self.dim)
        w = self.upper - self.lower
        return jnp.prod(4 * (x - self.lower) * (self.upper - x) / w**2, axis=-1)

    def boundary_normal(self, x):
        x, c, q = self._q(x)
        side = jnp.where(x >= c, 1.0, -1.0).astype(x.dtype)
        out = jnp.maximum(q, 0)
        outside = safe_divide(out, _norm(out)[..., None], 0.0)
        face = jax.nn.one_hot(jnp.argmax(q, axis=-1), self.dim, dtype=x.dtype)
        return side * jnp.where((jnp.max(q, axis=-1) > 0)[..., None], outside, face)

    def from_unit_cube(self, u):
        u = _check_points(u, self.dim)
        return self.lower + u * (self.upper - self.lower), jnp.ones(u.shape[:-1], bool)

    def _boundary(self, key, n):
        n = _check_n(n)
        k_axis, k_side, k_point = jax.random.split(key, 3)
        areas = self.face_areas
        axis = jax.random.categorical(k_axis, jnp.log(areas), shape=(n,))
        high = jax.random.bernoulli(k_side, 0.5, (n,))
        x = self.sample_interior(k_point, n)
        value = jnp.where(high, self.upper[axis], self.lower[axis])
        on_face = jax.nn.one_hot(axis, self.dim, dtype=bool)
        return jnp.where(on_face, value[:, None], x)


class Disk(AbstractGeometry):
    """The disk :math:`|x - c| \\le r` (a ball when ``center`` has more than two entries).

    Exact signed distance :math:`|x - c| - r`; ``distance(x) = 1 - |x - c|^2 / r^2`` (1 at the
    centre). Interior points are uniform by area (:math:`r\\sqrt{U}` radially in 2-D; direction
    times :math:`r U^{1/d}` in d dimensions); boundary points uniform on the circle (sphere).

    Args:
        center: 1-D array of length ``dim >= 2``.
        radius: positive scalar.
    """

    center: Float[Array, " dim"]
    radius: Float[Array, ""]

    def __init__(self, center: _Vector, radius: _Scalar):
        self.center = _float_param("center", center, 1)
        if self.center.shape[0] < 2:
            raise ValueError(f"center must have at least 2 entries; got {self.center.shape}.")
        self.radius = _float_param("radius", radius, 0)
        if is_concrete(self.radius) and not float(self.radius) > 0:
            raise ValueError(f"radius must be positive; got {float(self.radius)}.")
        self.center, self.radius = _checked_when_run(
            (self.center, self.radius), lambda c, r: r > 0, "Disk needs a finite radius > 0."
        )

    @property
    def dim(self) -> int:
        return self.center.shape[0]

    @property
    def exact_map(self) -> bool:
        return self.dim == 2

    @property
    def bounds(self):
        return self.center - self.radius, self.center + self.radius

    @property
    def measure(self) -> Float[Array, ""]:
        """Area (volume) :math:`\\pi^{d/2} r^d / \\Gamma(d/2 + 1)`."""
        d = self.dim
        return math.pi ** (d / 2) / math.gamma(d / 2 + 1) * self.radius**d

    @property
    def boundary_measure(self) -> Float[Array, ""]:
        """Circumference (surface area) :math:`d\\,\\pi^{d/2} r^{d-1} / \\Gamma(d/2 + 1)`."""
        d = self.dim
        return d * math.pi ** (d / 2) / math.gamma(d / 2 + 1) * self.radius ** (d - 1)

    def signed_distance(self, x):
        x = _check_points(x, self.dim)
        return _norm(x - self.center) - self.radius

    def distance(self, x):
        x = _check_points(x, self.dim)
        return 1 - jnp.sum((x - self.center) ** 2, axis=-1) / self.radius**2

    def boundary_normal(self, x):
        x = _check_points(x, self.dim)
        v = x - self.center
        return safe_divide(v, _norm(v)[..., None], 0.0)

    def from_unit_cube(self, u):
        if self.dim != 2:
            return super().from_unit_cube(u)
        u = _check_points(u, 2)
        r = self.radius * jnp.sqrt(u[..., 0])
        theta = 2 * jnp.pi * u[..., 1]
        x = self.center + r[..., None] * jnp.stack([jnp.cos(theta), jnp.sin(theta)], axis=-1)
        return x, jnp.ones(u.shape[:-1], bool)

    def _directions(self, key, n):
        g = jax.random.normal(key, (n, self.dim), dtype=self.center.dtype)
        return g / jnp.linalg.norm(g, axis=-1, keepdims=True)

    def _interior(self, key, n):
        n = _check_n(n)
        k_dir, k_rad = jax.random.split(key)
        u = jax.random.uniform(k_rad, (n, 1), dtype=self.center.dtype)
        return self.center + self.radius * u ** (1 / self.dim) * self._directions(k_dir, n)

    def _boundary(self, key, n):
        n = _check_n(n)
        return self.center + self.radius * self._directions(key, n)


class SpaceTime(AbstractGeometry):
    """The space-time cylinder :math:`[t_0, t_1] \\times \\Omega`; points are ``(t, *x)``: time
    first, then the spatial coordinates.

    Signed distance of the product, exact when the spatial one is: with
    :math:`q = (|t - m| - \\tfrac{t_1 - t_0}{2}, \\phi_\\Omega(x))`,
    :math:`\\phi = \\lVert \\max(q, 0) \\rVert + \\min(\\max q, 0)`.
    ``distance(t, x) = (t - t_0)/(t_1 - t_0) \\cdot d_\\Omega(x)``: zero on the initial slice and
    on the lateral boundary, positive elsewhere (the final slice :math:`t = t_1` is no constraint
    of an initial-boundary value problem). Boundary samples are uniform on the whole surface
    (initial and final slices weighted by the spatial measure, the lateral surface by
    :math:`(t_1 - t_0)` times the spatial boundary measure, which needs ``space.measure`` and a
    boundary measure); :meth:`sample_initial` and :meth:`sample_lateral` give each part alone.

    Args:
        space: the spatial geometry.
        t0, t1: the time interval, ``t0 < t1``.
    """

    space: AbstractGeometry
    t0: Float[Array, ""]
    t1: Float[Array, ""]

    def __init__(
        self,
        space: AbstractGeometry,
        t0: _Scalar,
        t1: _Scalar,
    ):
        if not isinstance(space, AbstractGeometry):
            raise TypeError(f"space must be a geometry; got {type(space).__name__}.")
        self.space = space
        self.t0 = _float_param("t0", t0, 0)
        self.t1 = _float_param("t1", t1, 0)
        if is_concrete((self.t0, self.t1)) and not float(self.t0) < float(self.t1):
            raise ValueError(
                f"SpaceTime needs t0 < t1; got t0={float(self.t0)}, t1={float(self.t1)}."
            )
        self.t0, self.t1 = _checked_when_run(
            (self.t0, self.t1), lambda t0, t1: t0 < t1, "SpaceTime needs finite t0 < t1."
        )

    @property
    def dim(self) -> int:
        return 1 + self.space.dim

    @property
    def exact_map(self) -> bool:
        return self.space.exact_map

    @property
    def oversample_factor(self) -> int:
        return self.space.oversample_factor

    @property
    def bounds(self):
        lower, upper = self.space.bounds
        return (
            jnp.concatenate([self.t0[None].astype(lower.dtype), lower]),
            jnp.concatenate([self.t1[None].astype(upper.dtype), upper]),
        )

    @property
    def measure(self) -> Float[Array, ""]:
        """Space-time volume :math:`(t_1 - t_0) |\\Omega|`."""
        return (self.t1 - self.t0) * self.space.measure

    def signed_distance(self, x):
        x = _check_points(x, self.dim)
        qt = jnp.abs(x[..., 0] - 0.5 * (self.t0 + self.t1)) - 0.5 * (self.t1 - self.t0)
        q = jnp.stack([qt, self.space.signed_distance(x[..., 1:])], axis=-1)
        return _norm(jnp.maximum(q, 0)) + jnp.minimum(jnp.max(q, axis=-1), 0)

    def distance(self, x):
        x = _check_points(x, self.dim)
        return (x[..., 0] - self.t0) / (self.t1 - self.t0) * self.space.distance(x[..., 1:])

    def boundary_normal(self, x):
        x = _check_points(x, self.dim)
        mid = 0.5 * (self.t0 + self.t1)
        qt = jnp.abs(x[..., 0] - mid) - 0.5 * (self.t1 - self.t0)
        qs = self.space.signed_distance(x[..., 1:])
        nt = jnp.where(x[..., 0] >= mid, 1.0, -1.0).astype(x.dtype)
        ns = self.space.boundary_normal(x[..., 1:])
        q = jnp.stack([jnp.maximum(qt, 0), jnp.maximum(qs, 0)], axis=-1)
        w = safe_divide(q, _norm(q)[..., None], 0.0)
        outside = jnp.concatenate([w[..., :1] * nt[..., None], w[..., 1:] * ns], axis=-1)
        time_face = (qt >= qs)[..., None]
        inside = jnp.where(
            time_face,
            jnp.concatenate([nt[..., None], jnp.zeros_like(ns)], axis=-1),
            jnp.concatenate([jnp.zeros_like(nt[..., None]), ns], axis=-1),
        )
        return jnp.where((jnp.maximum(qt, qs) > 0)[..., None], outside, inside)

    def from_unit_cube(self, u):
        u = _check_points(u, self.dim)
        t = self.t0 + u[..., :1] * (self.t1 - self.t0)
        x, inside = self.space.from_unit_cube(u[..., 1:])
        return jnp.concatenate([t.astype(x.dtype), x], axis=-1), inside

    def _interior(self, key, n):
        n = _check_n(n)
        k_t, k_x = jax.random.split(key)
        x = self.space.sample_interior(k_x, n)
        t = jax.random.uniform(k_t, (n, 1), dtype=x.dtype, minval=self.t0, maxval=self.t1)
        return jnp.concatenate([t, x], axis=-1)

    def sample_initial(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` points ``(t0, x)`` with ``x`` uniform in the spatial domain."""
        x = self.space.sample_interior(key, _check_n(n))
        return jnp.concatenate([jnp.full((n, 1), self.t0, x.dtype), x], axis=-1)

    def sample_lateral(self, key: PRNGKeyArray, n: int) -> Float[Array, "n dim"]:
        """``n`` points ``(t, x)``, ``t`` uniform in :math:`[t_0, t_1]` and ``x`` uniform on the
        spatial boundary."""
        n = _check_n(n)
        k_t, k_x = jax.random.split(key)
        x = self.space.sample_boundary(k_x, n)
        t = jax.random.uniform(k_t, (n, 1), dtype=x.dtype, minval=self.t0, maxval=self.t1)
        return jnp.concatenate([t, x], axis=-1)

    def _boundary(self, key, n):
        n = _check_n(n)
        if not hasattr(self.space, "measure") or not hasattr(self.space, "boundary_measure"):
            raise ValueError(
                "SpaceTime.sample_boundary needs the spatial geometry's measure and "
                "boundary_measure; use sample_initial and sample_lateral instead."
            )
        k_part, k_ini, k_fin, k_lat = jax.random.split(key, 4)
        cap = self.space.measure
        lateral = (self.t1 - self.t0) * self.space.boundary_measure
        part = jax.random.categorical(k_part, jnp.log(jnp.stack([cap, cap, lateral])), shape=(n,))
        initial = self.sample_initial(k_ini, n)
        final = self.sample_initial(k_fin, n).at[:, 0].set(self.t1)
        side = self.sample_lateral(k_lat, n)
        part = part[:, None]
        return jnp.where(part == 0, initial, jnp.where(part == 1, final, side))


class SignedDistance(AbstractGeometry):
    """A domain given by a user's signed distance function, negative inside.

    ``fn`` maps one point of shape ``(dim,)`` to a scalar. Interior points come by rejection from
    ``bounds`` with ``oversample`` candidates per point; boundary points by rejection from the
    band :math:`|\\phi| < w` (``band``, default 5% of the bounding box's diagonal), then projected
    onto :math:`\\phi = 0` by ``projection_steps`` Newton steps
    :math:`x \\leftarrow x - \\phi \\nabla\\phi / |\\nabla\\phi|^2`: uniform on the boundary up to
    terms of order :math:`w` times the curvature. Fewer accepted candidates than requested points
    raise. ``distance(x) = -fn(x)`` (only as smooth as ``fn``); ``boundary_normal`` is
    :math:`\\nabla\\phi / |\\nabla\\phi|`.

    Args:
        fn: the signed distance of one point.
        bounds: ``(lower, upper)``, a box that contains the domain.
        oversample: candidates per requested point (static int).
        band: half-width of the band for boundary sampling (default: 5% of the diagonal).
        projection_steps: Newton steps onto the zero level set (static int).
    """

    fn: Callable = eqx.field(static=True)
    lower: Float[Array, " dim"]
    upper: Float[Array, " dim"]
    oversample: int = eqx.field(static=True)
    band: Float[Array, ""]
    projection_steps: int = eqx.field(static=True)

    def __init__(
        self,
        fn: Callable,
        bounds: Sequence[_Vector],
        *,
        oversample: int = _OVERSAMPLE,
        band: _Scalar | None = None,
        projection_steps: int = 3,
    ):
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {type(fn).__name__}.")
        if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
            raise ValueError("bounds must be a pair (lower, upper).")
        box = Box(*bounds)
        self.fn = fn
        self.lower, self.upper = box.lower, box.upper
        self.oversample = check_int("oversample", oversample, minimum=1)
        self.projection_steps = check_int("projection_steps", projection_steps, minimum=0)
        if band is None:
            band = 0.05 * jnp.linalg.norm(self.upper - self.lower)
        self.band = _float_param("band", band, 0)
        if is_concrete(self.band) and not float(self.band) > 0:
            raise ValueError(f"band must be positive; got {float(self.band)}.")

    @property
    def dim(self) -> int:
        return self.lower.shape[0]

    @property
    def oversample_factor(self) -> int:
        return self.oversample

    @property
    def bounds(self):
        return self.lower, self.upper

    def signed_distance(self, x):
        x = _check_points(x, self.dim)
        return jnp.vectorize(lambda p: jnp.asarray(self.fn(p), p.dtype), signature="(d)->()")(x)

    def distance(self, x):
        return -self.signed_distance(x)

    def _boundary(self, key, n):
        n = _check_n(n)
        m = self.oversample * n
        u = jax.random.uniform(key, (m, self.dim), dtype=self.lower.dtype)
        x = self.lower + u * (self.upper - self.lower)
        near = jnp.abs(self.signed_distance(x)) < self.band
        x = _first_accepted(x, near, n)

        def newton(p):
            for _ in range(self.projection_steps):
                phi, g = jax.value_and_grad(lambda q: self.signed_distance(q))(p)
                p = p - phi * g / jnp.maximum(jnp.sum(g * g), jnp.finfo(g.dtype).tiny)
            return p

        return jax.vmap(newton)(x)
