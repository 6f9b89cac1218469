"""Pillar 2 — spectral layers and neural operators.

Every layer works on one sample ``(channels, *spatial)``; batch with :func:`jax.vmap`. Spectral
helpers keep the low modes of both signs on every axis but the last (real-FFT) one, handle odd
grids, and define the field of a truncated spectrum as the real part of a Hermitian spectrum, so
the same weights give the same function on every grid that holds their modes.

* :class:`SpectralConv` (dense, Tucker or CP weights, stored as real arrays), :class:`FNO`,
  :class:`TFNO`, :class:`T1` (Transform Once), :class:`DeepONet`, :class:`MultiONet`.
* :class:`UNO` ("U-NO: U-shaped Neural Operators": levels that change the grid and the channels,
  U-shaped skips) and :func:`resample`; :class:`LocalNO` ("Neural Operators with Localized
  Integral and Differential Kernels": :class:`DifferentialConv`, :class:`LocalIntegralConv`
  beside the spectral branch); ``*_from_neuraloperator`` carry a neuraloperator model's weights.
* :class:`GNO` / :class:`GINO` ("Neural Operator: Learning Maps Between Function Spaces";
  "Geometry-Informed Neural Operator for Large-Scale 3D PDEs"): kernel integrals over fixed-size,
  masked radius neighbour lists (:func:`radius_neighbours`, which raises on overflow) on point
  clouds; GINO puts an FNO on a latent grid between a GNO encoder and decoder.
* :class:`MgNO` ("MgNO: Efficient Parameterization of Linear Operators via Multigrid"): layers
  ``act(W v + b + vcycle(v))`` with learned multigrid stencils (:class:`VCycle`;
  :meth:`VCycle.poisson` is the classical geometric-multigrid cycle).
* :class:`MultigridPatching` (:func:`multigrid_patches`, :func:`stitch_patches`): the domain
  decomposition of "Multi-Grid Tensorized Fourier Neural Operator for High-Resolution PDEs"
  (patches with coarse context levels as channels); MG-TFNO is ``MultigridPatching(TFNO(...))``.
* :class:`SpaceTimeFNO` with "Spectral-Refiner: Accurate Fine-Tuning of Spatiotemporal Fourier
  Neural Operator for Turbulent Flows": :func:`spectral_refine` refits the last (linear) layer in
  the :func:`negative_sobolev_loss` in closed form.
* :class:`SineNet` ("SineNet: Learning Temporal Dynamics in Time-Dependent Partial Differential
  Equations"): a time-stepper of K U-Net waves composed through a residual stream; circular
  padding keeps it shift equivariant.
* :class:`LSM` ("Solving High-Dimensional PDEs with Latent Spectral Models"): a U-Net whose
  skips go through :class:`NeuralSpectralBlock` (patches to latent tokens by attention, a learned
  sine/cosine basis, back to the points); any grid, padded with masked cells and cropped.
* :class:`MPPDE` / :class:`MPPDEGrid` ("Message Passing Neural PDE Solvers"): message passing on
  fixed-size neighbour lists with temporal bundling; :func:`bundle_trajectory` lets
  :func:`jaxsolve.train.rollout_loss` train it with the pushforward trick.
* :class:`UQNO` ("Calibrated Uncertainty Quantification for Operator Learning via Conformal
  Prediction"): a base operator and a residual operator trained by :func:`uqno_residual_loss`,
  calibrated by split conformal prediction (:func:`calibrate_uqno`).
* :func:`from_neuraloperator` carries a neuraloperator 2.0 model's weights into the corresponding
  jaxsolve model (FNO, TFNO with Tucker/CP weights, UNO, LocalNO, GINO, GNO, UQNO, a single
  spectral convolution); it dispatches to the ``*_from_neuraloperator`` functions.
* PDE-Refiner ("PDE-Refiner: Achieving Accurate Long Rollouts with Neural PDE Solvers"):
  :class:`RefinerNet`, :func:`refiner_loss` / :func:`make_refiner_loss`, :func:`refine_step`,
  :func:`refiner_rollout`, :func:`refiner_noise_levels`.
* :class:`AbstractChannelsLast`: the protocol of the layers an FNO block holds (a channels-first
  ``__call__`` and a ``channels_last`` twin).
* Spectral helpers: :func:`rfft_modes` / :func:`irfft_modes` (and their matrix-product twins),
  :func:`dct_modes` / :func:`idct_modes`, :func:`spectral_derivative`, :func:`sobolev_norm`,
  :func:`dealias` (2/3 rule).
* Losses: :func:`relative_lp_loss`, :func:`h1_loss`, :func:`sobolev_loss`.
"""

from ._bridges import (
    fno_from_neuraloperator,
    from_neuraloperator,
    spectral_conv_from_neuraloperator,
)
from ._deeponet import DeepONet, MultiONet
from ._fno import FNO, TFNO, ChannelMLP, FNOBlock, SoftGating, count_params, padding_cells
from ._gino import GINO, gino_from_neuraloperator, latent_grid_points
from ._gno import (
    GNO,
    KernelMLP,
    Neighbours,
    gno_from_neuraloperator,
    radius_neighbours,
    sinusoidal_embedding,
)
from ._layout import AbstractChannelsLast
from ._local import (
    DifferentialConv,
    LocalIntegralConv,
    LocalNO,
    LocalNOBlock,
    differential_conv_from_neuraloperator,
    local_no_from_neuraloperator,
)
from ._losses import h1_loss, h1_norm, lp_norm, relative_lp_loss, sobolev_loss
from ._lsm import LSM, NeuralSpectralBlock
from ._mgno import MgNO, MgNOBlock, VCycle, level_shapes
from ._mppde import (
    MPPDE,
    MPPDEGrid,
    bundle_trajectory,
    grid_neighbours,
    mppde_neighbours,
    unbundle_trajectory,
)
from ._multigrid_patching import MultigridPatching, multigrid_patches, stitch_patches
from ._refiner import (
    RefinerNet,
    make_refiner_loss,
    refine_step,
    refiner_loss,
    refiner_noise_levels,
    refiner_rollout,
)
from ._sinenet import SineNet
from ._spacetime import SpaceTimeFNO, SpaceTimeHead, negative_sobolev_loss, spectral_refine
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
from ._uno import UNO, UNOBlock, resample, uno_from_neuraloperator
from ._uqno import (
    UQNO,
    calibrate_uqno,
    conformal_ranks,
    uqno_from_neuraloperator,
    uqno_residual_loss,
    uqno_scores,
)

__all__ = [
    "FNO",
    "GINO",
    "GNO",
    "LSM",
    "MPPDE",
    "T1",
    "TFNO",
    "UNO",
    "UQNO",
    "AbstractChannelsLast",
    "CPSpectralWeight",
    "ChannelMLP",
    "DeepONet",
    "DenseSpectralWeight",
    "DifferentialConv",
    "FNOBlock",
    "KernelMLP",
    "LocalIntegralConv",
    "LocalNO",
    "LocalNOBlock",
    "MPPDEGrid",
    "MgNO",
    "MgNOBlock",
    "MultiONet",
    "MultigridPatching",
    "Neighbours",
    "NeuralSpectralBlock",
    "RefinerNet",
    "SineNet",
    "SoftGating",
    "SpaceTimeFNO",
    "SpaceTimeHead",
    "SpectralConv",
    "T1Layer",
    "TuckerSpectralWeight",
    "UNOBlock",
    "VCycle",
    "bundle_trajectory",
    "calibrate_uqno",
    "check_grid",
    "conformal_ranks",
    "count_params",
    "dct_modes",
    "dealias",
    "dealias_mask",
    "differential_conv_from_neuraloperator",
    "fno_from_neuraloperator",
    "from_neuraloperator",
    "gino_from_neuraloperator",
    "gno_from_neuraloperator",
    "grid_neighbours",
    "h1_loss",
    "h1_norm",
    "idct_modes",
    "irdft_modes",
    "irfft_modes",
    "latent_grid_points",
    "level_shapes",
    "local_no_from_neuraloperator",
    "lp_norm",
    "make_refiner_loss",
    "min_grid_shape",
    "mode_shape",
    "mppde_neighbours",
    "multigrid_patches",
    "negative_sobolev_loss",
    "padding_cells",
    "periodic_grid",
    "radius_neighbours",
    "rdft_modes",
    "refine_step",
    "refiner_loss",
    "refiner_noise_levels",
    "refiner_rollout",
    "relative_lp_loss",
    "resample",
    "rfft_modes",
    "sinusoidal_embedding",
    "sobolev_loss",
    "sobolev_norm",
    "spectral_conv_from_neuraloperator",
    "spectral_derivative",
    "spectral_refine",
    "stitch_patches",
    "unbundle_trajectory",
    "uno_from_neuraloperator",
    "uqno_from_neuraloperator",
    "uqno_residual_loss",
    "uqno_scores",
    "wavenumbers",
]
