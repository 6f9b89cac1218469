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

from .._core import dealias_mask, default_float, grid_coordinates, normalize_lengths, wavevectors
from ._grf import check_shape


class SpectralGrid(eqx.Module):
    """A periodic box :math:`\\prod_j [0, L_j)` sampled on ``shape`` points.

    ``lengths`` may be traced (a sweep over the domain size compiles once).
    """

    shape: tuple[int, ...] = eqx.field(static=True)
    lengths: tuple

    def __init__(
        self, shape: int | Sequence[int], lengths: float | Float[ArrayLike, ""] | Sequence = 1.0
    ):
        self.shape = check_shape(shape)
        self.lengths = normalize_lengths(lengths, len(self.shape), "SpectralGrid")

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
        return wavevectors(self.shape, self.lengths, default_float(), odd=odd)

    def laplacian(self) -> Float[Array, " ..."]:
        """Symbol of the Laplacian, :math:`-|\\xi|^2`, broadcast to :attr:`spectral_shape`."""
        total = jnp.zeros(self.spectral_shape, default_float())
        for xi in self.wavenumbers():
            total = total - xi**2
        return total

    def dealias_mask(self) -> np.ndarray:
        """Orszag's 2/3-rule mask on the ``rfftn`` layout (as :func:`operators.dealias_mask`)."""
        return dealias_mask(self.shape)

    def coordinates(self) -> Float[Array, " dims *spatial"]:
        """Grid points ``x_n = n L / N`` stacked as ``(d, *shape)``."""
        return grid_coordinates(self.shape, self.lengths, dtype=default_float())

    def rfft(self, u: Float[ArrayLike, " ..."]) -> Complex[Array, " ..."]:
        u = jnp.asarray(u)
        axes = tuple(range(u.ndim - self.num_spatial_dims, u.ndim))
        return jnp.fft.rfftn(u, axes=axes, norm="forward")

    def irfft(self, uh: Complex[ArrayLike, " ..."]) -> Float[Array, " ..."]:
        uh = jnp.asarray(uh)
        axes = tuple(range(uh.ndim - self.num_spatial_dims, uh.ndim))
        return jnp.fft.irfftn(uh, s=self.shape, axes=axes, norm="forward")
