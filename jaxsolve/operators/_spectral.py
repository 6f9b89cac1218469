r"""Spectral helpers on periodic grids: mode selection, Sobolev norms, derivatives, dealiasing.

Conventions:

* A field is ``(channels, *spatial)`` (or any leading axes followed by the spatial axes); the
  spatial axes sample a periodic box :math:`\prod_j [0, L_j)` at :math:`x_n = n L / N`.
* Transforms use the *forward* normalisation, :math:`\hat u_k = \frac1N\sum_n u_n e^{-2\pi i k n/N}`,
  so a Fourier coefficient does not depend on the grid: :math:`\cos(2\pi x)` has
  :math:`\hat u_{\pm1} = 1/2` on every grid that resolves it. This is what makes the same spectral
  weights act on any resolution (the resolution invariance of the Fourier Neural Operator).
* ``modes`` counts frequencies **per sign**, as in the original FNO code ("Fourier Neural Operator
  for Parametric Partial Differential Equations", Li et al.): on every axis but the last the
  frequencies :math:`-m, \dots, m-1` are kept (``2 m`` of them, in FFT order
  ``[0, 1, ..., m-1, -m, ..., -1]``), on the last (real-FFT) axis the frequencies
  :math:`0, \dots, m-1`.

The compact block of kept modes of a real field has shape ``(..., 2 m_1, ..., 2 m_{d-1}, m_d)``.
Because only the non-negative half of the last axis is stored, the field that such a block stands
for is

.. math:: u(x) = \operatorname{Re} \sum_{k \in K} c_k\, \hat u_k\, e^{2\pi i k\cdot x / L},
   \qquad c_k = 1 \text{ if } k_d = 0, \; 2 \text{ otherwise},

i.e. the real part of the Hermitian spectrum whose zero column :math:`k_d = 0` is the Hermitian
part of the given one. :func:`irfft_modes` enforces this explicitly (it does not rely on how a
backend's complex-to-real FFT treats a non-Hermitian zero column, which is undefined on some
GPUs), and it never keeps the last axis' Nyquist frequency, whose weight would differ between
grids. The result is the same continuous function sampled on any grid that holds the modes.
"""

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Complex, Float

from .._core import (
    as_float,
    dealias_mask,
    exact_tensordot,
    grid_coordinates,
    is_concrete,
    is_int,
    normalize_lengths,
    safe_sqrt,
    wavenumbers,
    wavevectors,
)

# ----------------------------------------------------------------------------------------------
# Static argument handling
# ----------------------------------------------------------------------------------------------


def normalize_modes(modes, num_spatial_dims: int, name: str = "modes") -> tuple[int, ...]:
    """``modes`` (an int or one int per spatial axis) as a tuple of positive Python ints."""
    if is_int(modes):
        modes = (int(modes),) * num_spatial_dims
    try:
        modes = tuple(modes)
    except TypeError:
        raise TypeError(
            f"{name} must be an int or a tuple of {num_spatial_dims} ints; got {modes!r}."
        ) from None
    if len(modes) != num_spatial_dims:
        raise ValueError(
            f"{name} must have one entry per spatial axis ({num_spatial_dims}); got {modes!r}."
        )
    out = []
    for m in modes:
        if not is_int(m) or m < 1:
            raise ValueError(f"{name} entries must be positive ints; got {modes!r}.")
        out.append(int(m))
    return tuple(out)


def _modes_tuple(modes) -> tuple[int, ...]:
    """``modes`` of a helper that takes its spatial rank from them: an int is one axis."""
    if is_int(modes):
        return normalize_modes(modes, 1)
    try:
        rank = len(modes)
    except TypeError:
        raise TypeError(f"modes must be an int or a tuple of ints; got {modes!r}.") from None
    if rank == 0:
        raise ValueError("modes must name at least one spatial axis; got ().")
    return normalize_modes(modes, rank)


def mode_shape(modes: Sequence[int]) -> tuple[int, ...]:
    """Shape of the compact block of kept modes: ``(2 m_1, ..., 2 m_{d-1}, m_d)``."""
    return (*tuple(2 * m for m in modes[:-1]), modes[-1])


def min_grid_shape(modes: Sequence[int]) -> tuple[int, ...]:
    """Smallest grid that holds ``modes``: ``2 m`` points on leading axes, ``2 m - 1`` on the last.

    On a leading axis the ``2 m`` kept frequencies must have distinct FFT indices; on the last axis
    the highest kept frequency ``m - 1`` must lie strictly below the Nyquist frequency ``N / 2``.
    """
    return (*tuple(2 * m for m in modes[:-1]), 2 * modes[-1] - 1)


def check_grid(modes: Sequence[int], spatial_shape: Sequence[int], name: str = "modes") -> None:
    """Raise ``ValueError`` (naming both numbers) when the grid cannot hold ``modes``."""
    d = len(modes)
    if len(spatial_shape) != d:
        raise ValueError(
            f"expected {d} spatial axes for {name}={tuple(modes)!r}; got spatial shape "
            f"{tuple(spatial_shape)!r}."
        )
    for j, (m, n) in enumerate(zip(modes, spatial_shape, strict=True)):
        if j < d - 1 and 2 * m > n:
            raise ValueError(
                f"{name}[{j}]={m} keeps the 2*{m}={2 * m} frequencies -{m}..{m - 1} on spatial "
                f"axis {j}, so that axis needs at least {2 * m} points; the grid has {n}."
            )
        if j == d - 1 and 2 * m - 1 > n:
            raise ValueError(
                f"{name}[{j}]={m} keeps the frequencies 0..{m - 1} on the last (real-FFT) spatial "
                f"axis, strictly below the Nyquist frequency, so that axis needs at least "
                f"{2 * m - 1} points; the grid has {n}."
            )


# ----------------------------------------------------------------------------------------------
# Forward / inverse transforms restricted to the kept modes
# ----------------------------------------------------------------------------------------------


def _take_both_signs(a, m: int, axis: int):
    """Frequencies ``0..m-1`` and ``-m..-1`` of an FFT-ordered axis, in that order."""
    n = a.shape[axis]
    return jnp.concatenate(
        [lax.slice_in_dim(a, 0, m, axis=axis), lax.slice_in_dim(a, n - m, n, axis=axis)], axis=axis
    )


def _scatter_both_signs(a, n: int, axis: int):
    """Inverse of :func:`_take_both_signs`: place the block on an FFT-ordered axis of length n."""
    m = a.shape[axis] // 2
    if n == 2 * m:
        return a
    zshape = list(a.shape)
    zshape[axis] = n - 2 * m
    zeros = jnp.zeros(zshape, a.dtype)
    return jnp.concatenate(
        [lax.slice_in_dim(a, 0, m, axis=axis), zeros, lax.slice_in_dim(a, m, 2 * m, axis=axis)],
        axis=axis,
    )


def rfft_modes(
    x: Float[ArrayLike, " *batch_and_spatial"], modes: int | Sequence[int], *, pruned: bool = False
) -> Complex[Array, " *batch_and_modes"]:
    """Forward-normalised real FFT over the trailing ``len(modes)`` axes, keeping only ``modes``.

    Returns the compact block ``(..., 2 m_1, ..., 2 m_{d-1}, m_d)`` (frequencies in FFT order on
    the leading axes). With ``pruned=False`` this is one multi-dimensional FFT followed by a
    gather; with ``pruned=True`` it is one 1-D transform per axis, each on the already-truncated
    array (less work on large grids, more transform calls).
    """
    x = jnp.asarray(x)
    modes = _modes_tuple(modes)
    d = len(modes)
    if x.ndim < d:
        raise ValueError(f"rfft_modes: {d} spatial axes requested; x has shape {x.shape}.")
    spatial = x.shape[x.ndim - d :]
    check_grid(modes, spatial)
    x = as_float(x)
    axes = tuple(range(x.ndim - d, x.ndim))
    if pruned:
        xh = jnp.fft.rfft(x, axis=-1, norm="forward")[..., : modes[-1]]
        for ax, m in zip(axes[:-1], modes[:-1], strict=True):
            xh = _take_both_signs(jnp.fft.fft(xh, axis=ax, norm="forward"), m, ax)
        return xh
    xh = jnp.fft.rfftn(x, axes=axes, norm="forward")[..., : modes[-1]]
    for ax, m in zip(axes[:-1], modes[:-1], strict=True):
        xh = _take_both_signs(xh, m, ax)
    return xh


def _hermitian_zero_column(yh, d: int):
    """Replace the ``k_d = 0`` column of a full-length spectrum by its Hermitian part.

    ``(Y[k] + conj(Y[-k])) / 2`` over the leading spatial axes (indices mod N), so that the
    column is the spectrum of a real function. In 1-D this is ``Re Y[0]``.
    """
    col = yh[..., 0]
    lead = tuple(range(col.ndim - (d - 1), col.ndim))
    if lead:
        mirrored = jnp.roll(jnp.flip(col, axis=lead), 1, axis=lead)
        sym = 0.5 * (col + jnp.conj(mirrored))
    else:
        sym = jnp.real(col).astype(col.dtype)
    return jnp.concatenate([sym[..., None], yh[..., 1:]], axis=-1)


def _check_even_lead(bshape, where: str) -> None:
    """A compact block's leading mode axes hold ``2 m`` frequencies each (both signs)."""
    if any(b % 2 for b in bshape[:-1]):
        raise ValueError(
            f"{where}: leading mode axes must have even length 2*m; got block shape {bshape}."
        )


def irfft_modes(
    yh: Complex[ArrayLike, " *batch_and_modes"],
    spatial_shape: Sequence[int],
    *,
    pruned: bool = False,
) -> Float[Array, " *batch_and_spatial"]:
    r"""Real field on ``spatial_shape`` from a compact block of kept modes (see the module doc).

    Evaluates :math:`\operatorname{Re}\sum_{k\in K} c_k \hat y_k e^{2\pi i k\cdot x}` on the grid,
    with the zero column of the last axis made Hermitian explicitly. ``pruned=False`` is one
    multi-dimensional inverse FFT; ``pruned=True`` inverts the leading axes one at a time on the
    truncated last axis and then takes the real part of the zero column, which is the same
    projection in physical space.
    """
    yh = jnp.asarray(yh)
    spatial_shape = tuple(int(n) for n in spatial_shape)
    d = len(spatial_shape)
    bshape = yh.shape[yh.ndim - d :]
    modes = (*tuple(b // 2 for b in bshape[:-1]), bshape[-1])
    _check_even_lead(bshape, "irfft_modes")
    check_grid(modes, spatial_shape)
    axes = tuple(range(yh.ndim - d, yh.ndim))
    if pruned:
        for ax, n in zip(axes[:-1], spatial_shape[:-1], strict=True):
            yh = jnp.fft.ifft(_scatter_both_signs(yh, n, ax), axis=ax, norm="forward")
        # After the leading inverse transforms the zero column is a function of the leading
        # coordinates; its Hermitian part in frequency is its real part in space.
        yh = jnp.concatenate([jnp.real(yh[..., :1]).astype(yh.dtype), yh[..., 1:]], axis=-1)
        return jnp.fft.irfft(yh, n=spatial_shape[-1], axis=-1, norm="forward")
    for ax, n in zip(axes[:-1], spatial_shape[:-1], strict=True):
        yh = _scatter_both_signs(yh, n, ax)
    yh = _hermitian_zero_column(yh, d)
    return jnp.fft.irfftn(yh, s=spatial_shape, axes=axes, norm="forward")


# ----------------------------------------------------------------------------------------------
# The same transforms as matrix products (truncated DFTs)
# ----------------------------------------------------------------------------------------------
#
# With few kept modes a truncated DFT is a thin matrix product, O(N m) per row instead of
# O(N log N), but it is a GEMM. Under ``jax.vmap`` it has a second, bigger advantage: the FFT's
# batching rule moves the batch axis to the front, while a product with a constant matrix leaves it
# where it is. A network whose pointwise layers keep the batch next to the channels,
# ``(channels, batch, *spatial)``, can then run every 1x1 convolution and every transform as a
# plain GEMM without a single transpose of a full-size activation. The products are at full
# precision (``exact_tensordot``): a truncated DFT stands in for an FFT and must be as accurate as
# one, where a GPU's default float32 product is TF32 (10 mantissa bits: cos(pi/4) becomes 0.70703).


def _rdft_matrices(n: int, m: int, dtype):
    """``(n, 2m)`` forward matrix ``[cos | -sin] / n`` for frequencies ``0..m-1`` of the last axis,
    and the ``(2m, n)`` inverse ``[c cos ; -c sin]`` with ``c = 1`` at ``k = 0`` else ``2``."""
    k = np.arange(m)
    t = 2.0 * np.pi * np.outer(np.arange(n), k) / n
    fwd = np.concatenate([np.cos(t), -np.sin(t)], axis=1) / n
    c = np.where(k == 0, 1.0, 2.0)
    inv = np.concatenate([c[:, None] * np.cos(t.T), -c[:, None] * np.sin(t.T)], axis=0)
    return jnp.asarray(fwd, dtype), jnp.asarray(inv, dtype)


def _dft_matrices(n: int, m: int, dtype):
    """Complex ``(2m, n)`` forward rows (frequencies ``0..m-1, -m..-1``, divided by ``n``) and the
    ``(n, 2m)`` inverse columns of a leading axis."""
    k = np.concatenate([np.arange(m), np.arange(-m, 0)])
    t = 2.0 * np.pi * np.outer(k, np.arange(n)) / n
    return jnp.asarray(np.exp(-1j * t) / n, dtype), jnp.asarray(np.exp(1j * t).T, dtype)


def rdft_modes(x: Float[ArrayLike, " *batch_and_spatial"], modes: Sequence[int]):
    """:func:`rfft_modes` computed with matrix products; returns the compact complex block."""
    x = as_float(jnp.asarray(x))
    modes = _modes_tuple(modes)
    d = len(modes)
    spatial = x.shape[x.ndim - d :]
    check_grid(modes, spatial)
    ctype = jnp.result_type(x.dtype, jnp.complex64)
    fwd, _ = _rdft_matrices(spatial[-1], modes[-1], x.dtype)
    xr = exact_tensordot(x, fwd, axes=1)
    xh = lax.complex(xr[..., : modes[-1]], xr[..., modes[-1] :])
    for j in range(d - 1):
        ax = x.ndim - d + j
        e, _ = _dft_matrices(spatial[j], modes[j], ctype)
        xh = jnp.moveaxis(exact_tensordot(xh, e, axes=((ax,), (1,))), -1, ax)
    return xh


def irdft_modes(yh: Complex[ArrayLike, " *batch_and_modes"], spatial_shape: Sequence[int]):
    """:func:`irfft_modes` computed with matrix products (Hermitian zero column by construction:
    the imaginary part of a ``k_d = 0`` coefficient multiplies ``sin 0 = 0``)."""
    yh = jnp.asarray(yh)
    spatial_shape = tuple(int(n) for n in spatial_shape)
    d = len(spatial_shape)
    bshape = yh.shape[yh.ndim - d :]
    _check_even_lead(bshape, "irdft_modes")
    modes = (*tuple(b // 2 for b in bshape[:-1]), bshape[-1])
    check_grid(modes, spatial_shape)
    for j in range(d - 1):
        ax = yh.ndim - d + j
        _, e = _dft_matrices(spatial_shape[j], modes[j], yh.dtype)
        yh = jnp.moveaxis(exact_tensordot(yh, e, axes=((ax,), (1,))), -1, ax)
    rtype = jnp.real(yh).dtype
    m = modes[-1]
    _, inv = _rdft_matrices(spatial_shape[-1], m, rtype)
    # Two products rather than one on concatenated (re, im): a concatenation would move vmap's
    # batch axis to the front.
    return exact_tensordot(jnp.real(yh), inv[:m], axes=1) + exact_tensordot(
        jnp.imag(yh), inv[m:], axes=1
    )


def _dft_parts(n: int, m: int, dtype):
    """Real and imaginary parts of the complex DFT rows (forward, ``/n``) and columns (inverse)
    of a leading axis, frequencies ``0..m-1, -m..-1``."""
    k = np.concatenate([np.arange(m), np.arange(-m, 0)])
    t = 2.0 * np.pi * np.outer(k, np.arange(n)) / n
    fwd_re, fwd_im = np.cos(t) / n, -np.sin(t) / n  # (2m, n)
    inv_re, inv_im = np.cos(t).T, np.sin(t).T  # (n, 2m)
    return tuple(jnp.asarray(a, dtype) for a in (fwd_re, fwd_im, inv_re, inv_im))


def _contract_axis(a, mat, axis):
    """``sum_n a[..., n (at axis), ...] * mat[k, n]``, the result's new axis in place of ``axis``."""
    return jnp.moveaxis(exact_tensordot(a, mat, axes=((axis,), (1,))), -1, axis)


def _complex_axis_product(re, im, mr, mi, axis):
    """``(mr + i mi) @ (re + i im)`` along ``axis`` as one real product with the block matrix
    ``[[mr, -mi], [mi, mr]]`` on the stacked ``[re; im]`` (one GEMM instead of four)."""
    k = mr.shape[0]
    block = jnp.concatenate(
        [jnp.concatenate([mr, -mi], axis=1), jnp.concatenate([mi, mr], axis=1)], axis=0
    )
    out = _contract_axis(jnp.concatenate([re, im], axis=axis), block, axis)
    return lax.slice_in_dim(out, 0, k, axis=axis), lax.slice_in_dim(out, k, 2 * k, axis=axis)


def rdft_modes_last(
    x: Float[ArrayLike, "*spatial channels"], modes: Sequence[int]
) -> tuple[Float[Array, "*modes channels"], Float[Array, "*modes channels"]]:
    """:func:`rfft_modes` for a channels-last field ``(*spatial, C)``, by matrix products.

    Returns the real and imaginary parts of the compact block ``(2 m_1, ..., m_d, C)``. In this
    layout every transform is a product with a constant matrix along a spatial axis, which keeps
    ``jax.vmap``'s batch axis in front (no full-size transposes; see the FNO's notes on layout).
    """
    x = as_float(jnp.asarray(x))
    modes = _modes_tuple(modes)
    d = len(modes)
    spatial = x.shape[x.ndim - d - 1 : x.ndim - 1]
    check_grid(modes, spatial)
    last = x.ndim - 2
    fwd, _ = _rdft_matrices(spatial[-1], modes[-1], x.dtype)
    both = jnp.moveaxis(exact_tensordot(x, fwd, axes=((last,), (0,))), -1, last)
    re = lax.slice_in_dim(both, 0, modes[-1], axis=last)
    im = lax.slice_in_dim(both, modes[-1], 2 * modes[-1], axis=last)
    for j in range(d - 1):
        ax = x.ndim - d - 1 + j
        er, ei, _, _ = _dft_parts(spatial[j], modes[j], x.dtype)
        re, im = _complex_axis_product(re, im, er, ei, ax)
    return re, im


def irdft_modes_last(
    re: Float[ArrayLike, "*modes channels"],
    im: Float[ArrayLike, "*modes channels"],
    spatial_shape: Sequence[int],
) -> Float[Array, "*spatial channels"]:
    """:func:`irfft_modes` for a channels-last block given as real and imaginary parts.

    The last spatial axis is evaluated as ``sum_k c_k (Re Y_k cos - Im Y_k sin)``, so the
    imaginary part of the zero column multiplies ``sin 0 = 0``: the Hermitian projection is exact
    by construction.
    """
    re, im = jnp.asarray(re), jnp.asarray(im)
    spatial_shape = tuple(int(n) for n in spatial_shape)
    d = len(spatial_shape)
    bshape = re.shape[re.ndim - d - 1 : re.ndim - 1]
    _check_even_lead(bshape, "irdft_modes_last")
    modes = (*tuple(b // 2 for b in bshape[:-1]), bshape[-1])
    check_grid(modes, spatial_shape)
    for j in range(d - 1):
        ax = re.ndim - d - 1 + j
        _, _, vr, vi = _dft_parts(spatial_shape[j], modes[j], re.dtype)
        re, im = _complex_axis_product(re, im, vr, vi, ax)
    _, inv = _rdft_matrices(spatial_shape[-1], modes[-1], re.dtype)
    last = re.ndim - 2
    both = jnp.concatenate([re, im], axis=last)  # one product with the stacked [cos; -sin]
    return jnp.moveaxis(exact_tensordot(both, inv, axes=((last,), (0,))), -1, last)


# ----------------------------------------------------------------------------------------------
# Cosine transform restricted to the kept modes, one real FFT each way
# ----------------------------------------------------------------------------------------------


def _check_dct_grid(modes, spatial_shape):
    if len(modes) != len(spatial_shape):
        raise ValueError(f"expected {len(modes)} spatial axes; got shape {tuple(spatial_shape)}.")
    for j, (m, n) in enumerate(zip(modes, spatial_shape, strict=True)):
        if m > n:
            raise ValueError(
                f"modes[{j}]={m} cosine modes need at least {m} points on spatial axis {j}; the "
                f"grid has {n}."
            )


def dct_modes(
    x: Float[ArrayLike, " *batch_and_spatial"], modes: int | Sequence[int]
) -> Float[Array, " *batch_and_modes"]:
    r"""Cosine-series amplitudes :math:`a_k`, ``0 <= k_j < m_j``, of a field on cell centres.

    The grid is :math:`t_n = (n + 1/2)/N` on :math:`[0, 1]` per axis (no periodicity assumed), and
    :math:`x(t) = \sum_k a_k \prod_j \cos(\pi k_j t_j)`; this is the DCT-II, scaled so that the
    amplitudes do not depend on the grid (``a = (1/N) * DCT-II`` at ``k = 0``, ``(2/N) * DCT-II``
    otherwise, per axis). It is computed with a single real FFT of the even extension
    :math:`[x, \mathrm{flip}(x)]` on every axis: :math:`\hat y_k e^{-i\pi k/2N}` is real and is
    the DCT-II up to that scale.
    """
    x = as_float(jnp.asarray(x))
    modes = _modes_tuple(modes)
    d = len(modes)
    spatial = x.shape[x.ndim - d :]
    _check_dct_grid(modes, spatial)
    axes = tuple(range(x.ndim - d, x.ndim))
    ext = x
    for ax in axes:
        ext = jnp.concatenate([ext, jnp.flip(ext, axis=ax)], axis=ax)
    yh = jnp.fft.rfftn(ext, axes=axes, norm="forward")
    for ax, m in zip(axes, modes, strict=True):
        yh = lax.slice_in_dim(yh, 0, m, axis=ax)
    scale = np.ones((), np.complex128)
    for j, (n, m) in enumerate(zip(spatial, modes, strict=True)):
        k = np.arange(m)
        f = np.exp(-1j * np.pi * k / (2 * n)) * np.where(k == 0, 1.0, 2.0)
        shape = [1] * d
        shape[j] = m
        scale = scale * f.reshape(shape)
    return jnp.real(yh * jnp.asarray(scale, yh.dtype))


def idct_modes(
    a: Float[ArrayLike, " *batch_and_modes"], spatial_shape: Sequence[int]
) -> Float[Array, " *batch_and_spatial"]:
    r"""Evaluate :math:`\sum_k a_k \prod_j \cos(\pi k_j t_j)` on cell centres (inverse of
    :func:`dct_modes`), with a single inverse real FFT on the doubled grid.

    Each cosine is :math:`(e^{i\theta} \omega^{kn} + e^{-i\theta}\omega^{-kn})/2` with
    :math:`\theta = \pi k / 2N` and :math:`\omega = e^{2\pi i/2N}`, so the amplitudes are placed
    at :math:`\pm k` of the :math:`2N` grid with those phases (a Hermitian spectrum) and the first
    :math:`N` samples of the inverse transform are kept.
    """
    a = as_float(jnp.asarray(a))
    spatial_shape = tuple(int(n) for n in spatial_shape)
    d = len(spatial_shape)
    modes = a.shape[a.ndim - d :]
    _check_dct_grid(modes, spatial_shape)
    axes = tuple(range(a.ndim - d, a.ndim))
    ctype = jnp.result_type(a.dtype, jnp.complex64)
    z = a.astype(ctype)
    for j, (ax, n, m) in enumerate(zip(axes, spatial_shape, modes, strict=True)):
        k = np.arange(m)
        theta = np.pi * k / (2 * n)
        shape = [1] * (a.ndim - ax)
        shape[0] = m
        pos_f = np.where(k == 0, 1.0, 0.5) * np.exp(1j * theta)
        pos = z * jnp.asarray(pos_f.reshape(shape), ctype)
        if j == d - 1:
            z = pos  # the negative half of the last axis is implied by Hermitian symmetry
            continue
        neg_f = 0.5 * np.exp(-1j * theta[1:])
        neg = lax.slice_in_dim(z, 1, m, axis=ax) * jnp.asarray(
            neg_f.reshape([m - 1, *shape[1:]]), ctype
        )
        zshape = list(z.shape)
        zshape[ax] = 2 * n - 2 * m + 1
        z = jnp.concatenate([pos, jnp.zeros(zshape, ctype), jnp.flip(neg, axis=ax)], axis=ax)
    full = tuple(2 * n for n in spatial_shape)
    x = jnp.fft.irfftn(z, s=full, axes=axes, norm="forward")
    for ax, n in zip(axes, spatial_shape, strict=True):
        x = lax.slice_in_dim(x, 0, n, axis=ax)
    return x


# ----------------------------------------------------------------------------------------------
# Wavenumbers, derivatives, Sobolev norms, dealiasing
# ----------------------------------------------------------------------------------------------


def _full_spectrum_weights(spatial_shape):
    """Multiplicity of each ``rfftn`` coefficient in the full spectrum (Parseval weights).

    2 for ``0 < k_d < N_d / 2`` (the coefficient stands for itself and its mirror), 1 for the zero
    and the Nyquist column.
    """
    n = spatial_shape[-1]
    w = np.full(n // 2 + 1, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return w


def _wavevector_norm2(spatial_shape, lengths, real_last: bool, dtype):
    """:math:`|\\xi_k|^2 = \\sum_j (2\\pi k_j / L_j)^2` on the (r)fft grid."""
    total = 0.0
    for xi in wavevectors(spatial_shape, lengths, dtype, real_last=real_last):
        total = total + xi**2
    return total


def _split_spatial(u, num_spatial_dims):
    u = as_float(u)
    d = u.ndim - 1 if num_spatial_dims is None else int(num_spatial_dims)
    if d < 1 or d > u.ndim:
        raise ValueError(
            f"num_spatial_dims must lie in [1, u.ndim={u.ndim}]; got {d} for shape {u.shape}."
        )
    return u, d


def sobolev_norm(
    u: Float[ArrayLike, " *lead_and_spatial"],
    s: float | ArrayLike = 1.0,
    *,
    num_spatial_dims: int | None = None,
    lengths: float | Sequence[float] = 1.0,
) -> Float[Array, ""]:
    r"""Periodic Sobolev norm :math:`\|u\|_{H^s}` for any real ``s`` (negative allowed, traced ok).

    .. math:: \|u\|_{H^s}^2 = |\Omega| \sum_k (1 + |\xi_k|^2)^s\, |\hat u_k|^2,
       \qquad \xi_k = 2\pi k / L,

    summed over all leading (channel) axes, with :math:`\hat u` the forward-normalised Fourier
    coefficients, so ``s = 0`` is the :math:`L^2(\Omega)` norm (Parseval). For
    :math:`u = \sin(2\pi k x)` on :math:`[0, 1)`: :math:`\|u\|_{H^s}^2 = (1 + 4\pi^2k^2)^s / 2`.
    Negative ``s`` weights low frequencies and is the training loss of "Spectral-Refiner: Accurate
    Fine-Tuning of Spatiotemporal Fourier Neural Operator for Turbulent Flows". By default
    ``num_spatial_dims = u.ndim - 1`` (one channel axis, the single-sample convention).
    """
    u, d = _split_spatial(u, num_spatial_dims)
    lengths = normalize_lengths(lengths, d, "sobolev_norm")
    if is_concrete(s) and not np.all(np.isfinite(np.asarray(s, np.float64))):
        raise ValueError(f"s must be finite (the Sobolev order); got {s!r}.")
    spatial = u.shape[u.ndim - d :]
    axes = tuple(range(u.ndim - d, u.ndim))
    uh = jnp.fft.rfftn(u, axes=axes, norm="forward")
    power = jnp.real(uh) ** 2 + jnp.imag(uh) ** 2
    lead = tuple(range(u.ndim - d))
    power = jnp.sum(power, axis=lead) if lead else power
    xi2 = _wavevector_norm2(spatial, lengths, True, u.dtype)
    weight = jnp.power(1.0 + xi2, jnp.asarray(s, u.dtype)) * _full_spectrum_weights(spatial)
    volume = 1.0
    for length in lengths:
        volume = volume * jnp.asarray(length, u.dtype)
    squared = volume * jnp.sum(weight * power)
    # sqrt with derivative 0 at u = 0 (not inf * 0 = NaN), so a loss at pred == target has a
    # zero gradient.
    return safe_sqrt(squared)


def spectral_derivative(
    u: Float[ArrayLike, " *lead_and_spatial"],
    orders: int | Sequence[int],
    *,
    lengths: float | Sequence[float] = 1.0,
) -> Float[Array, " *lead_and_spatial"]:
    r"""Mixed partial derivative :math:`\partial^{\alpha} u` of a periodic field, spectrally.

    ``orders`` holds one non-negative order per spatial axis (the trailing ``len(orders)`` axes;
    an int means one spatial axis). Multiplies :math:`\hat u_k` by
    :math:`\prod_j (2\pi i k_j / L_j)^{\alpha_j}`. For odd :math:`\alpha_j` the Nyquist mode of an
    even axis is zeroed: its derivative is not a real function on the grid (the usual rule for
    spectral differentiation, e.g. Trefethen, "Spectral Methods in MATLAB").
    """
    if is_int(orders):
        orders = (int(orders),)
    try:
        orders = tuple(orders)
    except TypeError:
        raise TypeError(
            f"orders must be a non-negative int or one per spatial axis; got {orders!r}."
        ) from None
    if not orders or any(not is_int(a) or a < 0 for a in orders):
        # A fractional order would be truncated: say so rather than differentiate less.
        raise ValueError(f"orders must be non-negative ints, one per spatial axis; got {orders}.")
    orders = tuple(int(a) for a in orders)
    u = as_float(u)
    d = len(orders)
    if u.ndim < d:
        raise ValueError(f"spectral_derivative: {d} orders for a field of shape {u.shape}.")
    lengths = normalize_lengths(lengths, d, "spectral_derivative")
    spatial = u.shape[u.ndim - d :]
    axes = tuple(range(u.ndim - d, u.ndim))
    uh = jnp.fft.rfftn(u, axes=axes, norm="forward")
    ctype = uh.dtype
    factor = jnp.ones((), ctype)
    for j, (n, a, length) in enumerate(zip(spatial, orders, lengths, strict=True)):
        if a == 0:
            continue
        k = wavenumbers(n, real=j == d - 1, odd=a % 2 == 1)
        ik = 2j * np.pi * jnp.asarray(k, ctype) / jnp.asarray(length, ctype)
        shape = [1] * d
        shape[j] = ik.shape[0]
        factor = factor * (ik**a).reshape(shape)
    return jnp.fft.irfftn(uh * factor, s=spatial, axes=axes, norm="forward")


def dealias(
    u: Float[ArrayLike, " *lead_and_spatial"], *, num_spatial_dims: int | None = None
) -> Float[Array, " *lead_and_spatial"]:
    """Remove the modes outside the 2/3-rule mask (see :func:`dealias_mask`)."""
    u, d = _split_spatial(u, num_spatial_dims)
    spatial = u.shape[u.ndim - d :]
    axes = tuple(range(u.ndim - d, u.ndim))
    uh = jnp.fft.rfftn(u, axes=axes, norm="forward")
    uh = jnp.where(dealias_mask(spatial), uh, 0)
    return jnp.fft.irfftn(uh, s=spatial, axes=axes, norm="forward")


def periodic_grid(
    spatial_shape: Sequence[int], lengths: float | Sequence[float] = 1.0, *, dtype=None
) -> Float[Array, " dims *spatial"]:
    """Coordinates ``x_n = n L / N`` of a periodic grid, stacked as ``(d, *spatial_shape)``."""
    lengths = normalize_lengths(lengths, len(spatial_shape), "periodic_grid")
    return grid_coordinates(spatial_shape, lengths, dtype=dtype)
