r"""The grid vocabulary that :mod:`jaxsolve.pde` and :mod:`jaxsolve.operators` share.

A box :math:`\prod_j [0, L_j]` is sampled on ``shape`` points per axis: the periodic grid
:math:`x_n = n L / N` (both pillars' spectral methods) or the node grid
:math:`x_n = n L / (N - 1)`, which includes both ends (the Neumann random fields). Spectra are
``rfftn`` layouts over the trailing axes: FFT order (``fftfreq``) on every axis but the last,
the non-negative half (``rfftfreq``) on the last, with wavevectors :math:`\xi_k = 2\pi k / L`.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from ._dtypes import default_float
from ._errors import is_concrete


def normalize_lengths(lengths, num_spatial_dims: int, where: str | None = None) -> tuple:
    """Box lengths, one number or one per spatial axis, as a tuple of ``num_spatial_dims``.

    Args:
        lengths: a number (every axis) or a sequence of one number per axis; entries may be
            traced (a sweep over the domain size compiles once).
        num_spatial_dims: how many spatial axes the box has.
        where: who asks (a class or function name), put in front of the error messages.

    Returns:
        a tuple of ``num_spatial_dims`` lengths, as given.

    Raises ``ValueError`` (naming ``lengths``) for a wrong count or a concrete length that is not
    a finite number > 0, and ``TypeError`` for a complex or non-numeric one. Traced lengths pass
    here; the caller checks them at run time where it matters.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(lengths, (tuple, list)):
        if len(lengths) != num_spatial_dims:
            raise ValueError(
                f"{prefix}lengths must have one entry per spatial axis ({num_spatial_dims}); "
                f"got {len(lengths)}."
            )
        out = tuple(lengths)
    else:
        out = (lengths,) * num_spatial_dims
    for length in out:
        if not is_concrete(length):
            continue
        value = np.asarray(length)
        if not (np.issubdtype(value.dtype, np.floating) or np.issubdtype(value.dtype, np.integer)):
            raise TypeError(f"{prefix}lengths must be real numbers; got {lengths!r}.")
        if value.ndim or not np.isfinite(value) or not value > 0:
            raise ValueError(f"{prefix}lengths must be finite numbers > 0; got {lengths!r}.")
    return out


def wavenumbers(n: int, *, real: bool = False, odd: bool = False) -> np.ndarray:
    """Integer frequencies of an FFT-ordered axis of ``n`` points (``rfftfreq`` if ``real``).

    ``odd=True`` sets the Nyquist frequency of an even ``n`` to 0: an odd derivative of that mode
    is not a real function on the grid (Trefethen, "Spectral Methods in MATLAB"), so symbols of
    odd order use these.
    """
    k = np.fft.rfftfreq(n, 1.0 / n) if real else np.fft.fftfreq(n, 1.0 / n)
    if odd and n % 2 == 0:
        k = np.where(np.abs(k) == n // 2, 0.0, k)
    return k


def axis_shape(j: int, d: int, n: int) -> list[int]:
    """``[1, ..., n, ..., 1]``: a per-axis vector shaped to broadcast along axis ``j`` of ``d``."""
    shape = [1] * d
    shape[j] = n
    return shape


def wavevectors(
    spatial_shape: Sequence[int], lengths, dtype, *, real_last: bool = True, odd: bool = False
) -> tuple:
    r"""Wavevector components :math:`\xi_j = 2\pi k_j / L_j`, one per axis, each shaped to
    broadcast against the ``rfftn`` layout (the ``fftn`` layout if not ``real_last``).

    Args:
        spatial_shape: grid points per axis.
        lengths: one box length per axis (see :func:`normalize_lengths`); may be traced.
        dtype: the dtype of the components (a complex dtype gives complex components).
        real_last: the last axis holds the ``rfftfreq`` half.
        odd: zero the Nyquist frequency of even axes (see :func:`wavenumbers`).

    Returns:
        a tuple of ``len(spatial_shape)`` arrays.
    """
    d = len(spatial_shape)
    out = []
    for j, (n, length) in enumerate(zip(spatial_shape, lengths, strict=True)):
        k = wavenumbers(n, real=real_last and j == d - 1, odd=odd)
        xi = 2.0 * np.pi * jnp.asarray(k, dtype) / jnp.asarray(length, dtype)
        out.append(xi.reshape(axis_shape(j, d, xi.shape[0])))
    return tuple(out)


def grid_coordinates(
    spatial_shape: Sequence[int], lengths, *, dtype=None, endpoint: bool = False
) -> jnp.ndarray:
    """Grid points stacked as ``(d, *spatial_shape)``.

    Args:
        spatial_shape: grid points per axis.
        lengths: one box length per axis (see :func:`normalize_lengths`); may be traced.
        dtype: default: the default float (:func:`default_float`).
        endpoint: ``False``: the periodic grid ``x_n = n L / N``; ``True``: the node grid
            ``x_n = n L / (N - 1)`` that includes both ends.

    Returns:
        the coordinates, ``x[j]`` varying along spatial axis ``j``.
    """
    dtype = dtype or default_float()
    axes = [
        jnp.arange(n, dtype=dtype) * (jnp.asarray(length, dtype) / (n - 1 if endpoint else n))
        for n, length in zip(spatial_shape, lengths, strict=True)
    ]
    return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=0)


def dealias_mask(spatial_shape: Sequence[int]) -> np.ndarray:
    """Boolean ``rfftn``-shaped mask of Orszag's 2/3 rule: keep :math:`3|k_j| < N_j` on every axis.

    A product of two fields whose spectra lie in the mask has no aliased component inside the mask
    ("On the Elimination of Aliasing in Finite-Difference Schemes by Filtering High-Wavenumber
    Components", Orszag 1971): a sum frequency above ``N/2`` folds back by ``N``, which for
    :math:`|k| < N/3` on both factors lands outside the mask.
    """
    d = len(spatial_shape)
    mask = np.ones((), bool)
    for j, n in enumerate(spatial_shape):
        k = wavenumbers(int(n), real=j == d - 1)
        mask = mask & (3 * np.abs(k) < n).reshape(axis_shape(j, d, k.shape[0]))
    return mask
