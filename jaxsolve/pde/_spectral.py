r"""The periodic grid the pseudo-spectral solvers work on.

Points :math:`x_n = n L / N` per axis; transforms are ``rfftn`` over the trailing ``d`` axes with
the *forward* normalisation (as :mod:`jaxsolve.operators`), so a Fourier coefficient does not
depend on the grid size; wavevectors are :math:`\xi_k = 2\pi k / L`.
"""

from __future__ import annotations

from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Complex, Float

from .._core import default_float
from ..operators import dealias_mask
from ._grf import check_shape, normalize_lengths


class SpectralGrid(eqx.Module):
    """A periodic box :math:`\\prod_j [0, L_j)` sampled on ``shape`` points.

    ``lengths`` may be traced (a sweep over the domain size compiles once).
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    lengths: tuple

    def __init__(self, shape: int | Sequence[int], lengths: float | Sequence = 1.0):
        self.shape = check_shape(shape)
        self.lengths = normalize_lengths(lengths, len(self.shape))

    @property
    def num_spatial_dims(self) -> int:
        return len(self.shape)

    @property
    def spectral_shape(self) -> tuple[int, ...]:
        """Shape of the ``rfftn`` coefficients: ``(N_1, ..., N_{d-1}, N_d // 2 + 1)``."""
        return (*self.shape[:-1], self.shape[-1] // 2 + 1)

    def wavenumbers(self, *, odd: bool = False) -> tuple[Float[Array, " ..."], ...]:
        r"""Wavevector components :math:`\xi_j = 2\pi k_j / L_j`, each shaped to broadcast
        against :attr:`spectral_shape`.

        ``odd=True`` sets the Nyquist frequency of even axes to 0: an odd derivative of that mode
        is not a real function on the grid (Trefethen, "Spectral Methods in MATLAB"), so symbols
        of odd order (advection, dispersion, a first derivative in a nonlinear term) use these.
        """
        d = self.num_spatial_dims
        dtype = default_float()
        out = []
        for j, (n, length) in enumerate(zip(self.shape, self.lengths, strict=True)):
            k = np.fft.rfftfreq(n, 1.0 / n) if j == d - 1 else np.fft.fftfreq(n, 1.0 / n)
            if odd and n % 2 == 0:
                k = np.where(np.abs(k) == n // 2, 0.0, k)
            xi = 2.0 * np.pi * jnp.asarray(k, dtype) / jnp.asarray(length, dtype)
            shape = [1] * d
            shape[j] = xi.shape[0]
            out.append(xi.reshape(shape))
        return tuple(out)

    def laplacian(self) -> Float[Array, " ..."]:
        """Symbol of the Laplacian, :math:`-|\\xi|^2`, broadcast to :attr:`spectral_shape`."""
        total = jnp.zeros(self.spectral_shape, default_float())
        for xi in self.wavenumbers():
            total = total - xi**2
        return total

    def dealias_mask(self) -> np.ndarray:
        """Orszag's 2/3-rule mask on the ``rfftn`` layout (see :func:`operators.dealias_mask`)."""
        return dealias_mask(self.shape)

    def coordinates(self) -> Float[Array, " dims *spatial"]:
        """Grid points ``x_n = n L / N`` stacked as ``(d, *shape)``."""
        dtype = default_float()
        axes = [
            jnp.arange(n, dtype=dtype) * (jnp.asarray(length, dtype) / n)
            for n, length in zip(self.shape, self.lengths, strict=True)
        ]
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=0)

    def rfft(self, u: Float[ArrayLike, " ... *spatial"]) -> Complex[Array, " ... *modes"]:
        u = jnp.asarray(u)
        axes = tuple(range(u.ndim - self.num_spatial_dims, u.ndim))
        return jnp.fft.rfftn(u, axes=axes, norm="forward")

    def irfft(self, uh: Complex[ArrayLike, " ... *modes"]) -> Float[Array, " ... *spatial"]:
        uh = jnp.asarray(uh)
        axes = tuple(range(uh.ndim - self.num_spatial_dims, uh.ndim))
        return jnp.fft.irfftn(uh, s=self.shape, axes=axes, norm="forward")
