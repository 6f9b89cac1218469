r"""Multigrid domain decomposition of MG-TFNO: patches with coarse context, and their stitching.

"Multi-Grid Tensorized Fourier Neural Operator for High-Resolution PDEs" (Kossaifi et al.) trains
an operator on patches of a large field instead of the whole field. Each axis of a periodic
sample ``(C, N_1, ..., N_d)`` is cut into ``P_j`` equal patches of ``s_j = N_j / P_j`` cells; the
model sees, per patch, ``C (L + 1)`` channels on a grid of ``s_j + 2 p_j`` cells:

* level 0: the patch itself with a halo of ``p_j`` cells on each side (periodic wrap);
* level :math:`l = 1..L`: the whole field subsampled by :math:`2^l`, :math:`u[2^l k]`, cropped
  to the window of ``s_j + 2 p_j`` coarse cells whose centre is nearest the patch centre, so a
  patch sees a region :math:`2^l` times larger at :math:`2^l` times coarser resolution.

On axis ``j``, the window of patch ``i`` at level ``l`` starts at the coarse index

.. math:: a_i^l = \Big\lfloor \frac{2 i s + s - 1 - 2^l (s + 2p - 2)}{2^{l+1}} \Big\rfloor,

the integer nearest to :math:`\big(i s + \tfrac{s-1}{2}\big)/2^l - \tfrac{s + 2p - 1}{2}` (patch
centre in coarse units minus the window's half-width; never a tie), taken modulo
:math:`N / 2^l`. At level 0 it is :math:`i s - p`, the patch with its halo. When
:math:`s / 2^l` is even this is neuraloperator's ``MultigridPatching2D`` window; when it is odd
neuraloperator's (a ceiling where the nearest integer is one cell lower) sits one coarse cell
further from the centre, and this one is kept.

The model runs on the ``prod(P_j)`` patches as a batch; :func:`stitch_patches` crops each output
patch's halo and puts the patches back in place. Patches are ordered row-major over the patch
grid (the last axis fastest), channels level by level (level 0's ``C`` channels first), as
neuraloperator.

**Grids.** Every axis needs ``N_j`` divisible by ``P_j`` (equal patches) and by :math:`2^L` (the
subsampled field :math:`u[2^l k]` is then a uniform periodic grid of :math:`N_j / 2^l` points;
on other grids its last spacing would be shorter than the rest). Other grids raise
``ValueError``; odd grids are allowed with ``levels=0``.
"""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import check_int, is_int
from ._checks import check_sample


def _per_axis(name, value, d, minimum):
    """One int ``>= minimum`` per spatial axis (an int is used on every axis)."""
    if is_int(value):
        values = (value,) * d
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise TypeError(
                f"{name} must be an int or one int per spatial axis; got {value!r}."
            ) from None
        if len(values) != d:
            raise ValueError(f"{name} needs one int per spatial axis ({d}); got {value!r}.")
    for v in values:
        if not is_int(v):
            raise TypeError(f"{name} must hold ints; got {value!r}.")
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}; got {value!r}.")
    return tuple(int(v) for v in values)


def _as_static(value, name):
    """An int or a tuple of them (checked per axis when the grid is known), ``TypeError`` naming
    ``name`` otherwise."""
    if is_int(value):
        return value
    try:
        return tuple(value)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or one int per spatial axis; got {value!r}."
        ) from None


def _check_layout(spatial_shape, levels, patches, padding):
    """Patch counts and halo widths per axis, after checking the grid (see the module doc)."""
    d = len(spatial_shape)
    check_int("levels", levels, minimum=0)
    counts = _per_axis("patches", 2**levels if patches is None else patches, d, 1)
    halo = _per_axis("padding", padding, d, 0)
    for j, (n, p) in enumerate(zip(spatial_shape, counts, strict=True)):
        if n % p:
            raise ValueError(
                f"patches={p} on spatial axis {j} with {n} points: the axis must split into equal "
                f"patches, so {n} must be a multiple of {p}."
            )
        if n % 2**levels:
            raise ValueError(
                f"levels={levels} subsamples spatial axis {j} by up to 2**{levels}={2**levels}, "
                f"which needs a multiple of {2**levels} points for the coarse field to be a "
                f"uniform periodic grid; the axis has {n}. Use levels <= "
                f"{(n & -n).bit_length() - 1} or a grid of a multiple of {2**levels} points."
            )
    return counts, halo


def _window_indices(n, count, halo, level):
    """``(count, s + 2 p)`` indices into the level-``level`` coarse axis (``n / 2**level`` points)
    of each patch's window, wrapped periodically."""
    s, f = n // count, 2**level
    width = s + 2 * halo
    i = np.arange(count)
    start = (2 * i * s + s - 1 - f * (width - 2)) // (2 * f)  # floor division: the nearest start
    return (start[:, None] + np.arange(width)[None, :]) % (n // f)


def multigrid_patches(
    x: Float[ArrayLike, " c *spatial"],
    *,
    levels: int,
    patches: int | Sequence[int] | None = None,
    padding: int | Sequence[int] = 0,
) -> Float[Array, " num_patches c_levels *patch"]:
    r"""Cut a periodic sample into patches, each with ``levels`` coarser context levels.

    Args:
        x: one sample ``(C, N_1, ..., N_d)``, periodic on every spatial axis.
        levels: :math:`L \ge 0`, the number of coarse context levels (subsampled by
            :math:`2, 4, \dots, 2^L`).
        patches: patches per axis (an int for every axis, or one per axis); default
            :math:`2^L` (MG-TFNO's choice, as neuraloperator).
        padding: halo cells per side (an int or one per axis), wrapped periodically.

    Returns:
        ``(prod(P), C (L + 1), s_1 + 2 p_1, ..., s_d + 2 p_d)``, see the module docstring for the
        layout and the grid conditions (``ValueError`` otherwise).
    """
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must have shape (channels, *spatial); got shape {x.shape}.")
    spatial = x.shape[1:]
    d = len(spatial)
    counts, halo = _check_layout(spatial, levels, patches, padding)
    # One gather from the flattened field for every level, patch and cell: the flat index of a
    # window cell is the sum over axes of (fine index on that axis) * (row-major stride).
    strides = np.cumprod((1, *spatial[:0:-1]))[::-1]
    index = []
    for level in range(levels + 1):
        flat = 0
        for j in range(d):
            fine = 2**level * _window_indices(spatial[j], counts[j], halo[j], level)
            shape = [1] * (2 * d)
            shape[j], shape[d + j] = fine.shape
            flat = flat + strides[j] * fine.reshape(shape)
        index.append(flat.reshape((math.prod(counts), *flat.shape[d:])))
    index = np.stack(index, axis=1)  # (P, L + 1, w_1, ..., w_d)
    v = x.reshape(x.shape[0], -1)[:, index]  # (C, P, L + 1, w_1, ..., w_d)
    v = jnp.moveaxis(v, 0, 2)
    return v.reshape((v.shape[0], -1, *v.shape[3:]))


def stitch_patches(
    y: Float[ArrayLike, " num_patches c *patch"],
    *,
    patches: int | Sequence[int],
    padding: int | Sequence[int] = 0,
) -> Float[Array, " c *spatial"]:
    """Put per-patch outputs back together: crop each patch's halo and place it on the grid.

    Args:
        y: ``(prod(P), C, s_1 + 2 p_1, ..., s_d + 2 p_d)``, patches in the order of
            :func:`multigrid_patches`.
        patches: patches per axis, as given to :func:`multigrid_patches`.
        padding: halo cells per side, as given to :func:`multigrid_patches`.

    Returns:
        ``(C, P_1 s_1, ..., P_d s_d)``. ``stitch_patches(multigrid_patches(x, ...)[:, :C], ...)``
        is ``x``.
    """
    y = jnp.asarray(y)
    d = y.ndim - 2
    if d < 1:
        raise ValueError(f"y must have shape (num_patches, channels, *patch); got {y.shape}.")
    counts = _per_axis("patches", patches, d, 1)
    halo = _per_axis("padding", padding, d, 0)
    if y.shape[0] != math.prod(counts):
        raise ValueError(
            f"y holds {y.shape[0]} patches; patches={counts} needs {math.prod(counts)}."
        )
    for j, (w, p) in enumerate(zip(y.shape[2:], halo, strict=True)):
        if w <= 2 * p:
            raise ValueError(
                f"patch axis {j} has {w} cells, no more than the 2 * padding = {2 * p} halo cells."
            )
    widths = y.shape[2:]
    cells = tuple(w - 2 * p for w, p in zip(widths, halo, strict=True))
    # One gather: the point n of the stitched grid is cell n mod s (after the halo) of patch
    # n // s on every axis, read from y as (C, P, w_1, ..., w_d) flattened.
    patch_strides = np.cumprod((1, *counts[:0:-1]))[::-1]
    cell_strides = np.cumprod((1, *widths[:0:-1]))[::-1]
    flat = 0
    for j in range(d):
        n = np.arange(counts[j] * cells[j])
        term = (n // cells[j]) * patch_strides[j] * math.prod(widths) + (
            n % cells[j] + halo[j]
        ) * cell_strides[j]
        flat = flat + term.reshape([-1 if i == j else 1 for i in range(d)])
    return jnp.moveaxis(y, 1, 0).reshape(y.shape[1], -1)[:, flat]


class MultigridPatching(eqx.Module):
    """A model evaluated by MG-TFNO's multigrid domain decomposition.

    ``__call__(x)``: :func:`multigrid_patches`, the model on every patch (``jax.vmap``), then
    :func:`stitch_patches`. MG-TFNO is ``MultigridPatching(TFNO(d, C (L + 1), C_out, ...),
    levels=L)``; the wrapped model takes ``in_channels * (levels + 1)`` channels and must keep the
    patch grid (a grid operator's ``(C, *spatial) -> (C_out, *spatial)``).

    Args:
        model: single-sample model on one patch ``(C (L + 1), s_1 + 2 p_1, ...)``.
        levels: coarse context levels :math:`L`.
        patches: patches per axis (default :math:`2^L`).
        padding: halo cells per side (periodic), cropped from the model's output.
    """

    model: Callable
    levels: int = eqx.field(static=True)
    patches: int | tuple[int, ...] | None = eqx.field(static=True)
    padding: int | tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        model: Callable,
        *,
        levels: int,
        patches: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
    ):
        self.model = model
        self.levels = check_int("levels", levels, minimum=0)
        self.patches = patches if patches is None else _as_static(patches, "patches")
        self.padding = _as_static(padding, "padding")

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        x = jnp.asarray(x)
        in_channels = getattr(self.model, "in_channels", None)
        if isinstance(in_channels, int) and in_channels % (self.levels + 1) == 0:
            check_sample(
                x,
                channels=in_channels // (self.levels + 1),
                num_spatial_dims=getattr(self.model, "num_spatial_dims", x.ndim - 1),
                where="MultigridPatching",
            )
        counts, _ = _check_layout(x.shape[1:], self.levels, self.patches, self.padding)
        y = jax.vmap(self.model)(
            multigrid_patches(x, levels=self.levels, patches=counts, padding=self.padding)
        )
        return stitch_patches(y, patches=counts, padding=self.padding)
