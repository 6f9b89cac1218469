r"""Gaussian random fields with covariance :math:`c\,(-\Delta + \tau^2 I)^{-\alpha}`.

A centred Gaussian measure on a box :math:`\Omega = \prod_j [0, L_j]` whose covariance operator is
a negative power of the shifted Laplacian is sampled through its Karhunen–Loève expansion in the
Laplacian's orthonormal eigenfunctions :math:`e_k`,

.. math:: u = \sum_k \sqrt{\lambda_k}\, \xi_k\, e_k, \qquad
   \lambda_k = c\,(|\kappa_k|^2 + \tau^2)^{-\alpha}, \qquad \xi_k \sim N(0, 1)
   \text{ independent},

truncated to the modes the grid represents. This is the prior of "Fourier Neural Operator for
Parametric Partial Differential Equations" (Li et al.) for its Burgers, Darcy and Navier–Stokes
data, and of "Inverse problems: A Bayesian perspective" (Stuart), where the draws lie in
:math:`H^s` for :math:`s < \alpha - d/2`.

* ``boundary="periodic"``: :math:`e_k = |\Omega|^{-1/2} e^{i \kappa_k \cdot x}`,
  :math:`\kappa_k = 2\pi k / L`, on the periodic grid :math:`x_n = n L / N`. The draw is
  :math:`\hat u_k = \sqrt{\lambda_k / |\Omega|}\, \hat z_k` with :math:`\hat z` the unitary FFT
  of white noise, which has exactly the Hermitian symmetry a real field needs (and a real
  Nyquist mode).
* ``boundary="neumann"``: :math:`e_k = \prod_j \sqrt{(2 - \delta_{k_j 0}) / L_j}\,
  \cos(\pi k_j x_j / L_j)`, :math:`\kappa_k = \pi k / L`, the eigenfunctions with zero normal
  derivative, evaluated on the node grid :math:`x_n = n L / (N - 1)` that includes both ends
  (modes :math:`0 \le k_j \le N_j - 1`, a type-I cosine transform done with one real FFT of the
  even extension per axis).

``zero_mean=True`` drops the constant mode :math:`k = 0`, as the reference generators of the FNO
paper do (``GRF.m`` sets it to zero, ``GaussianRF`` zeroes ``sqrt_eig[0]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import (
    as_float,
    axis_shape,
    check_choice,
    default_float,
    grid_coordinates,
    is_int,
    normalize_lengths,
    wavevectors,
)
from ._checks import check_parameter, check_traced_parameters

BOUNDARIES = ("periodic", "neumann")


def check_shape(shape, name: str = "shape", *, minimum: int = 1) -> tuple[int, ...]:
    """``shape`` as a tuple of Python ints >= ``minimum`` (a bare int is a 1-D grid)."""
    if is_int(shape):
        shape = (int(shape),)
    try:
        shape = tuple(shape)
    except TypeError:
        raise TypeError(f"{name} must be an int or a tuple of ints; got {shape!r}.") from None
    if not shape or any(not is_int(n) or n < minimum for n in shape):
        raise ValueError(f"{name} must be a non-empty tuple of ints >= {minimum}; got {shape!r}.")
    return tuple(int(n) for n in shape)


def cosine_synthesis(c: Float[Array, " ..."], num_axes: int) -> Float[Array, " ..."]:
    r"""Values :math:`\sum_k c_k \prod_j \cos(\pi k_j n_j / (N_j - 1))` on the node grid.

    ``c`` holds the coefficients of the modes :math:`0 \le k_j \le N_j - 1` on its trailing
    ``num_axes`` axes; the result has the same shape. Per axis this is a type-I cosine transform,
    done as the real inverse FFT of length :math:`2(N - 1)` of the even extension (weights
    :math:`1, \tfrac12, \dots, \tfrac12, 1`), of which the first :math:`N` samples are kept.
    """
    for j in range(num_axes):
        ax = c.ndim - num_axes + j
        n = c.shape[ax]
        w = np.full(n, 0.5)
        w[0] = w[-1] = 1.0
        c_ax = jnp.moveaxis(c, ax, -1) * jnp.asarray(w, c.dtype)
        spectrum = c_ax.astype(jnp.result_type(c.dtype, jnp.complex64))
        vals = jnp.fft.irfft(spectrum, n=2 * (n - 1), norm="forward")[..., :n]
        c = jnp.moveaxis(vals.astype(c.dtype), -1, ax)
    return c


class GaussianRandomField(eqx.Module):
    r"""The centred Gaussian measure :math:`N\big(0,\ c\,(-\Delta + \tau^2 I)^{-\alpha}\big)`.

    See the module docstring for the expansion. ``alpha``, ``tau`` and ``scale`` (:math:`c`) may
    be traced (a sweep over them compiles once); ``boundary`` and ``zero_mean`` are static.

    >>> grf = GaussianRandomField(alpha=2.0, tau=5.0, scale=625.0)   # FNO's Burgers prior
    >>> u0 = grf.sample(jax.random.PRNGKey(0), (1024,))              # shape (1024,)
    """

    alpha: Float[ArrayLike, ""]
    tau: Float[ArrayLike, ""]
    scale: Float[ArrayLike, ""]
    lengths: float | tuple
    boundary: str = eqx.field(static=True)
    zero_mean: bool = eqx.field(static=True)

    def __init__(
        self,
        alpha: Float[ArrayLike, ""] = 2.0,
        tau: Float[ArrayLike, ""] = 3.0,
        scale: Float[ArrayLike, ""] = 1.0,
        *,
        lengths: float | Sequence[float] = 1.0,
        boundary: str = "periodic",
        zero_mean: bool = False,
    ):
        check_choice("boundary", boundary, set(BOUNDARIES))
        self.alpha, self.tau, self.scale = alpha, tau, scale
        self.lengths = tuple(lengths) if isinstance(lengths, (tuple, list)) else lengths
        self.boundary = boundary
        self.zero_mean = bool(zero_mean)
        for name, value, rule in self._rules():
            check_parameter("GaussianRandomField", name, value, rule)

    def _rules(self):
        # tau = 0 leaves the constant mode's eigenvalue infinite unless that mode is dropped.
        return (
            ("alpha", self.alpha, "positive"),
            ("scale", self.scale, "positive"),
            ("tau", self.tau, "non-negative" if self.zero_mean else "positive"),
            ("lengths", self.lengths, "positive"),
        )

    def _kappa2(self, shape, dtype):
        """:math:`|\\kappa_k|^2` on the mode grid (rfft layout, or cosine modes 0..N-1)."""
        d = len(shape)
        lengths = normalize_lengths(self.lengths, d, "GaussianRandomField")
        if self.boundary == "periodic":
            kappas = wavevectors(shape, lengths, dtype)
        else:
            kappas = tuple(
                (np.pi * jnp.arange(n, dtype=dtype) / jnp.asarray(length, dtype)).reshape(
                    axis_shape(j, d, n)
                )
                for j, (n, length) in enumerate(zip(shape, lengths, strict=True))
            )
        total = jnp.zeros((), dtype)
        for kappa in kappas:
            total = total + kappa**2
        return total

    def eigenvalues(self, shape: int | Sequence[int]) -> Float[Array, " ..."]:
        r""":math:`\lambda_k = c\,(|\kappa_k|^2 + \tau^2)^{-\alpha}` of the modes a grid holds.

        Periodic: on the ``rfftn`` layout ``(N_1, ..., N_{d-1}, N_d // 2 + 1)``; Neumann: on the
        cosine modes ``(N_1, ..., N_d)``. The constant mode is 0 when ``zero_mean``.
        """
        minimum = 2 if self.boundary == "neumann" else 1
        shape = check_shape(shape, minimum=minimum)
        dtype = default_float()
        alpha, tau, scale = (as_float(v).astype(dtype) for v in (self.alpha, self.tau, self.scale))
        kappa2 = self._kappa2(shape, dtype)
        if self.zero_mean:
            # Keep the constant mode's base positive so tau = 0 gives no inf (and no NaN gradient).
            zero = (kappa2 == 0).astype(dtype)
            lam = scale * (kappa2 + tau**2 + zero) ** (-alpha)
            lam = lam * (1 - zero)
        else:
            lam = scale * (kappa2 + tau**2) ** (-alpha)
        # A traced negative scale or alpha would give NaN draws (square roots of negative
        # variances): stop at run time, naming the parameter.
        return check_traced_parameters(lam, "GaussianRandomField", self._rules())

    def sample(self, key: PRNGKeyArray, shape: int | Sequence[int]) -> Float[Array, " *shape"]:
        """One draw on the grid ``shape`` (periodic: ``x_n = n L / N``; Neumann: nodes incl. ends)."""
        minimum = 2 if self.boundary == "neumann" else 1
        shape = check_shape(shape, minimum=minimum)
        d = len(shape)
        dtype = default_float()
        lam = self.eigenvalues(shape)
        lengths = normalize_lengths(self.lengths, d, "GaussianRandomField")
        if self.boundary == "periodic":
            volume = jnp.prod(jnp.stack([jnp.asarray(length, dtype) for length in lengths]))
            z = jax.random.normal(key, shape, dtype)
            zh = jnp.fft.rfftn(z, norm="ortho")
            return jnp.fft.irfftn(
                zh * jnp.sqrt(lam / volume).astype(dtype), s=shape, norm="forward"
            ).astype(dtype)
        xi = jax.random.normal(key, shape, dtype)
        norm = jnp.ones((), dtype)
        for j, (n, length) in enumerate(zip(shape, lengths, strict=True)):
            w = np.full(n, 2.0)
            w[0] = 1.0
            f = jnp.sqrt(jnp.asarray(w, dtype) / jnp.asarray(length, dtype))
            norm = norm * f.reshape(axis_shape(j, d, n))
        return cosine_synthesis(jnp.sqrt(lam) * norm * xi, d)

    def __call__(self, key: PRNGKeyArray, shape: int | Sequence[int]) -> Float[Array, " *shape"]:
        return self.sample(key, shape)

    def grid(self, shape: int | Sequence[int]) -> Float[Array, " dims *shape"]:
        """Coordinates of the grid :meth:`sample` draws on, stacked as ``(d, *shape)``."""
        minimum = 2 if self.boundary == "neumann" else 1
        shape = check_shape(shape, minimum=minimum)
        lengths = normalize_lengths(self.lengths, len(shape), "GaussianRandomField")
        return grid_coordinates(
            shape, lengths, dtype=default_float(), endpoint=self.boundary == "neumann"
        )


def gaussian_random_field(
    key: PRNGKeyArray,
    shape: int | Sequence[int],
    *,
    alpha: Float[ArrayLike, ""] = 2.0,
    tau: Float[ArrayLike, ""] = 3.0,
    scale: Float[ArrayLike, ""] = 1.0,
    lengths: float | Sequence[float] = 1.0,
    boundary: str = "periodic",
    zero_mean: bool = False,
) -> Float[Array, " *shape"]:
    """One draw of :class:`GaussianRandomField` (same arguments) on the grid ``shape``."""
    grf = GaussianRandomField(
        alpha, tau, scale, lengths=lengths, boundary=boundary, zero_mean=zero_mean
    )
    return grf.sample(key, shape)
