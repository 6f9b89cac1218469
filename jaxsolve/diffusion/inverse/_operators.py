r"""Linear measurement operators as data: masks, blurs, subsampling, dense projections.

An operator is a linear map :math:`A` from a sample of shape ``in_shape`` to a measurement of shape
``out_shape``. Everything a posterior sampler needs from it is one of four methods, each written
once per operator from its structure (no operator here builds its dense matrix unless it *is* a
dense matrix):

* ``A(x)`` — the forward map;
* ``A.transpose(y)`` — :math:`A^\top y`;
* ``A.gram_solve(y, a, b)`` — :math:`(a\,AA^\top + b\,I)^{+} y`, the pseudo-inverse where the
  matrix is singular (a mask's unobserved entries, a blur's vanishing frequencies);
* ``A.pinv(y)`` — :math:`A^{+} y = A^\top (AA^\top)^{+} y`.

Every method accepts leading batch axes before ``in_shape`` / ``out_shape``. The operators' arrays
(a mask, a blur kernel, a matrix) are fields, so ``jax.vmap`` over masks or kernels of one shape
compiles once; ``a`` and ``b`` may be traced (a noise level).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, exact_einsum, is_concrete, safe_divide


def _shape(name, shape):
    if isinstance(shape, int | np.integer):
        shape = (int(shape),)
    try:
        shape = tuple(check_int(f"{name}[{i}]", s) for i, s in enumerate(shape))
    except TypeError as e:
        raise TypeError(f"{name} must be a tuple of ints; got {shape!r}.") from e
    if not shape:
        raise ValueError(f"{name} must have at least one axis; got ().")
    return shape


def _cutoff(values, size):
    """Relative threshold below which an eigenvalue of a Gram matrix counts as zero (numpy's
    ``pinv`` rule: ``10 * size * eps`` times the largest)."""
    eps = jnp.finfo(values.dtype).eps
    return 10.0 * size * eps * jnp.max(jnp.abs(values))


class AbstractOperator(eqx.Module):
    """A linear map from ``in_shape`` to ``out_shape`` (see the module)."""

    in_shape: eqx.AbstractVar[tuple[int, ...]]

    @property
    @abc.abstractmethod
    def out_shape(self) -> tuple[int, ...]:
        """Shape of one measurement."""

    @abc.abstractmethod
    def _forward(self, x: Float[Array, "..."]) -> Float[Array, "..."]:
        """:math:`Ax` for one sample of shape ``in_shape``."""

    def _transpose(self, y):
        """:math:`A^\\top y` for one measurement; by default JAX transposes :meth:`_forward`."""
        zero = jnp.zeros(self.in_shape, y.dtype)
        (x,) = jax.linear_transpose(self._forward, zero)(y)
        return x

    def _gram_solve(self, y, a, b):
        """:math:`(aAA^\\top + bI)^+ y` for one measurement. The default builds the dense
        ``m x m`` Gram matrix from the operator (for operators without structure)."""
        m = math.prod(self.out_shape)
        basis = jnp.eye(m, dtype=y.dtype).reshape((m, *self.out_shape))
        at = jax.vmap(self._transpose)(basis).reshape(m, -1)  # rows: A^T e_i
        gram = exact_einsum("id,jd->ij", at, at)
        lam, u = jnp.linalg.eigh(a * gram + b * jnp.eye(m, dtype=y.dtype))
        inv = safe_divide(1.0, lam, 0.0)
        inv = jnp.where(jnp.abs(lam) > _cutoff(lam, m), inv, 0.0)
        flat = exact_einsum("ij,j,kj,k->i", u, inv, u, y.reshape(-1))
        return flat.reshape(self.out_shape)

    def measured(self, dtype=None) -> Float[Array, "..."]:
        """1 where an entry of ``out_shape`` is a measurement, 0 where it is structurally 0 (a
        :class:`Mask`'s unobserved entries): measurement noise is drawn only where it is 1."""
        return jnp.ones(self.out_shape, dtype or jnp.result_type(float))

    # Public methods: batch axes handled once here.
    def _batched(self, fn, z, event_shape, *extra):
        z = as_float(z)
        k = len(event_shape)
        if z.shape[z.ndim - k :] != tuple(event_shape):
            raise ValueError(
                f"{type(self).__name__}: expected trailing shape {tuple(event_shape)}; got an "
                f"array of shape {z.shape}."
            )
        batch = z.shape[: z.ndim - k]
        flat = z.reshape((-1, *event_shape))
        out = jax.vmap(lambda v: fn(v, *extra))(flat)
        return out.reshape(batch + out.shape[1:])

    def __call__(self, x: Float[ArrayLike, "*batch ..."]) -> Float[Array, "*batch ..."]:
        """:math:`Ax` for every sample of ``x`` (shape ``batch + in_shape``)."""
        return self._batched(self._forward, x, self.in_shape)

    def transpose(self, y: Float[ArrayLike, "*batch ..."]) -> Float[Array, "*batch ..."]:
        """:math:`A^\\top y` (``y`` of shape ``batch + out_shape``)."""
        return self._batched(self._transpose, y, self.out_shape)

    def gram_solve(
        self, y: Float[ArrayLike, "*batch ..."], a: ArrayLike = 1.0, b: ArrayLike = 0.0
    ) -> Float[Array, "*batch ..."]:
        """:math:`(a\\,AA^\\top + b\\,I)^{+} y`: the pseudo-inverse where the matrix is singular."""
        y = as_float(y)
        a, b = as_float(a).astype(y.dtype), as_float(b).astype(y.dtype)
        return self._batched(self._gram_solve, y, self.out_shape, a, b)

    def pinv(self, y: Float[ArrayLike, "*batch ..."]) -> Float[Array, "*batch ..."]:
        """:math:`A^{+}y = A^\\top(AA^\\top)^{+}y`, the minimum-norm least-squares solution."""
        return self.transpose(self.gram_solve(y, 1.0, 0.0))

    def matrix(self) -> Float[Array, "m d"]:
        """The dense ``(prod(out_shape), prod(in_shape))`` matrix (for tests and small problems;
        no method here uses it)."""
        d = math.prod(self.in_shape)
        basis = jnp.eye(d, dtype=jnp.result_type(float)).reshape((d, *self.in_shape))
        return jax.vmap(self._forward)(basis).reshape(d, -1).T


class LinearFunction(AbstractOperator):
    """Any linear function ``fn`` of one sample of shape ``in_shape`` as an operator: its
    transpose comes from :func:`jax.linear_transpose`, its Gram solve from the dense ``m x m``
    Gram matrix (write an :class:`AbstractOperator` with ``_gram_solve`` when ``m`` is large).
    ``fn`` must be linear; that is checked on two random points when the operator is built."""

    fn: Callable
    in_shape: tuple[int, ...] = eqx.field(static=True)
    _out_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, fn: Callable, in_shape: tuple[int, ...]):
        if not callable(fn):
            raise TypeError(f"fn must be callable; got {type(fn).__name__}.")
        self.fn = fn
        self.in_shape = _shape("in_shape", in_shape)
        out = jax.eval_shape(fn, jax.ShapeDtypeStruct(self.in_shape, jnp.result_type(float)))
        if not hasattr(out, "shape") or not out.shape:
            raise ValueError("fn must return an array with at least one axis.")
        self._out_shape = tuple(out.shape)
        u, v = np.random.default_rng(0).standard_normal((2, *self.in_shape))
        lhs = np.asarray(fn(jnp.asarray(2.0 * u - 3.0 * v)))
        rhs = 2.0 * np.asarray(fn(jnp.asarray(u))) - 3.0 * np.asarray(fn(jnp.asarray(v)))
        scale = max(1.0, float(np.max(np.abs(rhs))))
        if not np.allclose(lhs, rhs, rtol=1e-4, atol=1e-4 * scale):
            raise ValueError("fn must be linear: fn(2u - 3v) != 2 fn(u) - 3 fn(v).")

    @property
    def out_shape(self):
        return self._out_shape

    def _forward(self, x):
        return jnp.asarray(self.fn(x)).astype(x.dtype)


class Dense(AbstractOperator):
    """A dense matrix ``(m, d)`` acting on the flattened sample (compressed sensing, or any small
    operator). ``in_shape`` defaults to ``(d,)``."""

    weight: Float[Array, "m d"]
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, matrix: ArrayLike, in_shape: tuple[int, ...] | None = None):
        matrix = as_float(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"matrix must have shape (m, d); got shape {matrix.shape}.")
        in_shape = (matrix.shape[1],) if in_shape is None else _shape("in_shape", in_shape)
        if math.prod(in_shape) != matrix.shape[1]:
            raise ValueError(
                f"in_shape {in_shape} has {math.prod(in_shape)} entries; the matrix has "
                f"{matrix.shape[1]} columns."
            )
        self.weight = matrix
        self.in_shape = in_shape

    @property
    def out_shape(self):
        return (self.weight.shape[0],)

    def _forward(self, x):
        return exact_einsum("md,d->m", self.weight, x.reshape(-1))

    def _transpose(self, y):
        return exact_einsum("md,m->d", self.weight, y).reshape(self.in_shape)

    def _gram_solve(self, y, a, b):
        m = self.weight.shape[0]
        gram = exact_einsum("id,jd->ij", self.weight, self.weight)
        lam, u = jnp.linalg.eigh(a * gram + b * jnp.eye(m, dtype=y.dtype))
        inv = jnp.where(jnp.abs(lam) > _cutoff(lam, m), safe_divide(1.0, lam, 0.0), 0.0)
        return exact_einsum("ij,j,kj,k->i", u, inv, u, y)

    def matrix(self):
        return self.weight


def random_projection(key: PRNGKeyArray, m: int, d: int) -> Dense:
    r"""Compressed sensing: a Gaussian matrix with entries :math:`\mathcal N(0, 1/m)` (so
    :math:`\mathbb E\lVert Ax\rVert^2 = \lVert x\rVert^2`)."""
    m, d = check_int("m", m), check_int("d", d)
    return Dense(jax.random.normal(key, (m, d)) / np.sqrt(m))


class Mask(AbstractOperator):
    r"""Inpainting: :math:`Ax = m \odot x` with a 0/1 ``mask`` of the sample's shape.

    The measurement keeps the sample's shape, with zeros where nothing is observed;
    :math:`AA^\top = \operatorname{diag}(m)`, so its pseudo-inverse leaves those entries at 0.
    The mask is an array field: a sweep over masks of one shape compiles once.
    """

    mask: Float[Array, "..."]
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, mask: ArrayLike):
        mask = as_float(mask)
        if mask.ndim == 0:
            raise ValueError("mask must have the sample's shape (at least one axis); got a scalar.")
        if is_concrete(mask):
            values = np.asarray(mask)
            if not np.all((values == 0) | (values == 1)):
                raise ValueError("mask must hold only 0 (unobserved) and 1 (observed).")
        self.mask = mask
        self.in_shape = tuple(mask.shape)

    @property
    def out_shape(self):
        return self.in_shape

    def _forward(self, x):
        return self.mask.astype(x.dtype) * x

    def _transpose(self, y):
        return self.mask.astype(y.dtype) * y

    def _gram_solve(self, y, a, b):
        return safe_divide(y, a * self.mask.astype(y.dtype) + b, 0.0)

    def measured(self, dtype=None):
        return self.mask.astype(dtype or self.mask.dtype)


class Subsample(AbstractOperator):
    r"""Super-resolution: the mean over blocks of ``factor`` entries along every axis.

    For a sample of shape ``(n_1, ..., n_k)`` the measurement has shape
    ``(n_1/f, ..., n_k/f)``; each entry is the mean of an :math:`f^k` block (DDRM's and DPS's
    super-resolution operator). :math:`AA^\top = f^{-k} I`.
    """

    factor: int = eqx.field(static=True)
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, factor: int, in_shape: tuple[int, ...]):
        self.factor = check_int("factor", factor)
        self.in_shape = _shape("in_shape", in_shape)
        bad = [n for n in self.in_shape if n % self.factor]
        if bad:
            raise ValueError(
                f"factor={self.factor} must divide every axis of in_shape={self.in_shape}."
            )

    @property
    def out_shape(self):
        return tuple(n // self.factor for n in self.in_shape)

    @property
    def _block_size(self):
        return self.factor ** len(self.in_shape)

    def _forward(self, x):
        split = []
        for n in self.in_shape:
            split += [n // self.factor, self.factor]
        blocks = x.reshape(split)
        return blocks.mean(axis=tuple(range(1, 2 * len(self.in_shape), 2)))

    def _transpose(self, y):
        for axis in range(y.ndim):
            y = jnp.repeat(y, self.factor, axis=axis)
        return y / self._block_size

    def _gram_solve(self, y, a, b):
        return safe_divide(y, a / self._block_size + b, 0.0)


class Blur(AbstractOperator):
    r"""Circular convolution with a ``kernel`` over every axis, applied by FFT.

    ``kernel`` has the sample's shape with its centre at index 0 (use :func:`box_blur` or
    :func:`gaussian_blur`). In Fourier space :math:`A = \operatorname{diag}(\hat k)`, so
    :math:`(aAA^\top + bI)^+` is a division by :math:`a|\hat k|^2 + b` (frequencies the kernel
    removes are left at 0 by the pseudo-inverse).
    """

    kernel: Float[Array, "..."]
    in_shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, kernel: ArrayLike):
        kernel = as_float(kernel)
        if kernel.ndim == 0:
            raise ValueError("kernel must have the sample's shape; got a scalar.")
        self.kernel = kernel
        self.in_shape = tuple(kernel.shape)

    @property
    def out_shape(self):
        return self.in_shape

    def _spectrum(self, dtype):
        return jnp.fft.fftn(self.kernel.astype(dtype))

    def _forward(self, x):
        return jnp.fft.ifftn(self._spectrum(x.dtype) * jnp.fft.fftn(x)).real.astype(x.dtype)

    def _transpose(self, y):
        k_hat = jnp.conj(self._spectrum(y.dtype))
        return jnp.fft.ifftn(k_hat * jnp.fft.fftn(y)).real.astype(y.dtype)

    def _gram_solve(self, y, a, b):
        power = jnp.abs(self._spectrum(y.dtype)) ** 2
        den = a * power + b
        inv = jnp.where(den > _cutoff(den, den.size), safe_divide(1.0, den, 0.0), 0.0)
        return jnp.fft.ifftn(inv * jnp.fft.fftn(y)).real.astype(y.dtype)


def _centred_kernel(weights_per_axis, shape):
    """Outer product of 1-D weights (indexed by offsets ``-r..r``), wrapped onto ``shape``."""
    kernel = np.ones(shape)
    for axis, (n, w) in enumerate(zip(shape, weights_per_axis, strict=True)):
        r = (len(w) - 1) // 2
        line = np.zeros(n)
        for offset, value in zip(range(-r, r + 1), w, strict=True):
            line[offset % n] += value
        kernel = kernel * line.reshape([n if a == axis else 1 for a in range(len(shape))])
    return kernel


def box_blur(in_shape: tuple[int, ...], size: int) -> Blur:
    """Mean over a centred box of ``size`` (odd) entries along every axis, circularly."""
    in_shape = _shape("in_shape", in_shape)
    size = check_int("size", size)
    if size % 2 == 0 or any(size > n for n in in_shape):
        raise ValueError(
            f"size must be odd and at most every axis of in_shape={in_shape}; got {size}."
        )
    w = np.full(size, 1.0 / size)
    return Blur(_centred_kernel([w] * len(in_shape), in_shape))


def gaussian_blur(in_shape: tuple[int, ...], std: float, radius: int | None = None) -> Blur:
    r"""A normalised Gaussian kernel :math:`\propto e^{-k^2/2\,\text{std}^2}`, ``|k| <= radius``
    (default ``ceil(3 std)``) along every axis, circularly (a kernel wider than an axis wraps
    around it)."""
    in_shape = _shape("in_shape", in_shape)
    std = float(std)
    if not std > 0:
        raise ValueError(f"std must be positive; got {std}.")
    radius = math.ceil(3 * std) if radius is None else check_int("radius", radius, minimum=0)
    k = np.arange(-radius, radius + 1)
    w = np.exp(-0.5 * (k / std) ** 2)
    return Blur(_centred_kernel([w / w.sum()] * len(in_shape), in_shape))


__all__ = [
    "AbstractOperator",
    "Blur",
    "Dense",
    "LinearFunction",
    "Mask",
    "Subsample",
    "box_blur",
    "gaussian_blur",
    "random_projection",
]
