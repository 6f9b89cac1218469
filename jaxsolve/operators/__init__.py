"""Pillar 2 — spectral layers and neural operators.

Every layer works on one sample ``(channels, *spatial)``; batch with :func:`jax.vmap`. Spectral
helpers keep the low modes of both signs on every axis but the last (real-FFT) one, handle odd
grids, and define the field of a truncated spectrum as the real part of a Hermitian spectrum, so
the same weights give the same function on every grid that holds their modes.

* :class:`SpectralConv` (dense, Tucker or CP weights, stored as real arrays), :class:`FNO`,
  :class:`TFNO`, :class:`T1` (Transform Once), :class:`DeepONet`, :class:`MultiONet`.
* :class:`AbstractChannelsLast`: the protocol of the layers an FNO block holds (a channels-first
  ``__call__`` and a ``channels_last`` twin).
* Spectral helpers: :func:`rfft_modes` / :func:`irfft_modes` (and their matrix-product twins),
  :func:`dct_modes` / :func:`idct_modes`, :func:`spectral_derivative`, :func:`sobolev_norm`,
  :func:`dealias` (2/3 rule).
* Losses: :func:`relative_lp_loss`, :func:`h1_loss`, :func:`sobolev_loss`.
"""

from ._deeponet import DeepONet, MultiONet
from ._fno import FNO, TFNO, ChannelMLP, FNOBlock, SoftGating, count_params, padding_cells
from ._layout import AbstractChannelsLast
from ._losses import h1_loss, h1_norm, lp_norm, relative_lp_loss, sobolev_loss
from ._spectral import (
    check_grid,
    dct_modes,
    dealias,
    dealias_mask,
    idct_modes,
    irdft_modes,
    irfft_modes,
    min_grid_shape,
    mode_shape,
    periodic_grid,
    rdft_modes,
    rfft_modes,
    sobolev_norm,
    spectral_derivative,
    wavenumbers,
)
from ._spectral_conv import (
    CPSpectralWeight,
    DenseSpectralWeight,
    SpectralConv,
    TuckerSpectralWeight,
)
from ._transform_once import T1, T1Layer

__all__ = [
    "FNO",
    "T1",
    "TFNO",
    "AbstractChannelsLast",
    "CPSpectralWeight",
    "ChannelMLP",
    "DeepONet",
    "DenseSpectralWeight",
    "FNOBlock",
    "MultiONet",
    "SoftGating",
    "SpectralConv",
    "T1Layer",
    "TuckerSpectralWeight",
    "check_grid",
    "count_params",
    "dct_modes",
    "dealias",
    "dealias_mask",
    "h1_loss",
    "h1_norm",
    "idct_modes",
    "irdft_modes",
    "irfft_modes",
    "lp_norm",
    "min_grid_shape",
    "mode_shape",
    "padding_cells",
    "periodic_grid",
    "rdft_modes",
    "relative_lp_loss",
    "rfft_modes",
    "sobolev_loss",
    "sobolev_norm",
    "spectral_derivative",
    "wavenumbers",
]
