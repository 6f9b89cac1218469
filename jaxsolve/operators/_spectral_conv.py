r"""Spectral convolution: the Fourier layer of FNO, with dense or factorised (Tucker, CP) weights.

.. math:: (\mathcal K u)(x) = \operatorname{Re} \sum_{k\in K} c_k
   \Big(\sum_i W_{i o k}\, \hat u_{i k}\Big) e^{2\pi i k\cdot x} + b_o

("Fourier Neural Operator for Parametric Partial Differential Equations", Li et al.), with
:math:`K` the kept modes (``modes`` per sign on every axis but the last, see
:mod:`._spectral`), :math:`\hat u` the forward-normalised coefficients and :math:`c_k` the
Hermitian multiplicity. The complex weights :math:`W` are stored as real arrays with a leading
axis of two (real, imaginary), so optax and every JAX transformation see ordinary real
parameters. Factorised weights ("Multi-Grid Tensorized Fourier Neural Operator for
High-Resolution PDEs", Kossaifi et al.) are contracted with the data factor by factor; the dense
``(in, out, *modes)`` tensor is never built (:meth:`to_dense` exists for inspection only).
"""

import math
from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Complex, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float, is_int
from .._core._init import draw
from ._checks import check_real, check_sample
from ._layout import AbstractChannelsLast
from ._spectral import (
    check_grid,
    irdft_modes_last,
    irfft_modes,
    mode_shape,
    normalize_modes,
    rdft_modes_last,
    rfft_modes,
)

_TRANSFORMS = {"auto", "dft", "fft", "pruned-fft"}


def _resolve_transform(transform: str, modes, spatial) -> str:
    """``"auto"``: truncated DFTs as matrix products unless the kept modes are many for the grid.

    A product costs ``2 * kept`` multiply-adds per grid point and axis against ``O(log N)`` for an
    FFT, but it is a GEMM and, in the FNO's channels-last layout, needs none of the transposes an
    FFT forces under ``vmap``. The products are chosen while ``2 * kept <= max(64, N / 6)``: a
    fixed allowance of a GEMM's worth of modes, growing with the grid (``benchmarks/README.md``
    has the timings behind the bound).
    """
    if transform != "auto":
        return transform
    for j, (m, n) in enumerate(zip(modes, spatial, strict=True)):
        kept = m if j == len(modes) - 1 else 2 * m
        if 2 * kept > max(64, n / 6):
            return "pruned-fft"
    return "dft"


_MODE_LETTERS = "xyzuvw"


def _letters(d: int) -> str:
    if d > len(_MODE_LETTERS):
        raise ValueError(f"at most {len(_MODE_LETTERS)} spatial axes are supported; got {d}.")
    return _MODE_LETTERS[:d]


def _complex(w):
    """Complex array from a real ``(2, ...)`` array holding (real, imaginary) parts."""
    return lax.complex(w[0], w[1])


def _complex_normal_spec(shape, var):
    """Spec of a real ``(2, *shape)`` storage of a circular complex normal, ``E|w|^2 = var``."""
    return ("normal", (2, *shape), math.sqrt(var / 2.0))


class DenseSpectralWeight(eqx.Module):
    """Dense complex weight ``W[i, o, *modes]`` stored as a real ``(2, in, out, *modes)`` array."""

    weight: Float[Array, " 2 cin cout *modes"]

    @staticmethod
    def specs(dims, var):
        return [_complex_normal_spec(dims, var)]

    @classmethod
    def from_arrays(cls, arrays):
        return cls(arrays[0])

    def contract(self, xh: Complex[Array, " cin *modes"]) -> Complex[Array, " cout *modes"]:
        k = _letters(xh.ndim - 1)
        return jnp.einsum(f"i{k},io{k}->o{k}", xh, _complex(self.weight).astype(xh.dtype))

    def to_dense(self) -> Complex[Array, " cin cout *modes"]:
        return _complex(self.weight)

    @staticmethod
    def num_params(dims) -> int:
        return 2 * math.prod(dims)


class TuckerSpectralWeight(eqx.Module):
    r"""Tucker factorisation :math:`W = G \times_1 U_{in} \times_2 U_{out} \times_3 U_1 \cdots`.

    ``core`` is ``(2, r_in, r_out, *r_modes)`` and ``factors`` holds ``(2, n, r)`` arrays for the
    input channels, output channels and each mode axis. The contraction projects the input
    channels first, expands the core along the mode axes only (``r_in * r_out * prod(modes)``
    numbers, computed once per batch under :func:`jax.vmap`), contracts, and lifts to the output
    channels last.
    """

    core: Float[Array, " 2 ..."]
    factors: tuple[Float[Array, " 2 _n _r"], ...]

    @staticmethod
    def specs(dims, ranks, var):
        # Each factor has E|u|^2 = 1/r, so the reconstructed entries have E|W|^2 = E|G|^2 = var.
        return [_complex_normal_spec(tuple(ranks), var)] + [
            _complex_normal_spec((n, r), 1.0 / r) for n, r in zip(dims, ranks, strict=True)
        ]

    @classmethod
    def from_arrays(cls, arrays):
        return cls(arrays[0], tuple(arrays[1:]))

    def _mode_core(self, dtype):
        """Core expanded along the mode axes: ``(r_in, r_out, *modes)``."""
        d = len(self.factors) - 2
        c = _letters(d).upper()
        k = _letters(d)
        ops = [_complex(self.core).astype(dtype)] + [
            _complex(f).astype(dtype) for f in self.factors[2:]
        ]
        spec = f"ab{c}," + ",".join(f"{k[j]}{c[j]}" for j in range(d)) + f"->ab{k}"
        return jnp.einsum(spec, *ops, optimize="greedy")

    def contract(self, xh: Complex[Array, " cin *modes"]) -> Complex[Array, " cout *modes"]:
        k = _letters(xh.ndim - 1)
        u_in, u_out = (_complex(f).astype(xh.dtype) for f in self.factors[:2])
        z = jnp.einsum(f"i{k},ia->a{k}", xh, u_in)
        z = jnp.einsum(f"a{k},ab{k}->b{k}", z, self._mode_core(xh.dtype))
        return jnp.einsum(f"b{k},ob->o{k}", z, u_out)

    def to_dense(self) -> Complex[Array, " cin cout *modes"]:
        d = len(self.factors) - 2
        k = _letters(d)
        u_in, u_out = (_complex(f) for f in self.factors[:2])
        g = self._mode_core(u_in.dtype)
        return jnp.einsum(f"ab{k},ia,ob->io{k}", g, u_in, u_out)

    @staticmethod
    def num_params(dims, ranks) -> int:
        return 2 * (math.prod(ranks) + sum(n * r for n, r in zip(dims, ranks, strict=True)))


class CPSpectralWeight(eqx.Module):
    r"""CP factorisation :math:`W_{i o k} = \sum_r A_{ir} B_{or} \prod_j C^{(j)}_{k_j r}`.

    ``factors`` holds ``(2, n, R)`` arrays for input channels, output channels and each mode
    axis. The contraction is ``(R, *modes)``-sized: project the input channels on ``A``, multiply
    by the mode factors, sum against ``B``.
    """

    factors: tuple[Float[Array, " 2 _n _r"], ...]

    @staticmethod
    def specs(dims, rank, var):
        # E|W|^2 = R * prod_f E|f|^2: share the variance equally between the factors.
        fvar = (var / rank) ** (1.0 / len(dims))
        return [_complex_normal_spec((n, rank), fvar) for n in dims]

    @classmethod
    def from_arrays(cls, arrays):
        return cls(tuple(arrays))

    def _mode_factor(self, dtype):
        d = len(self.factors) - 2
        k = _letters(d)
        ops = [_complex(f).astype(dtype) for f in self.factors[2:]]
        return jnp.einsum(",".join(f"{k[j]}r" for j in range(d)) + f"->r{k}", *ops)

    def contract(self, xh: Complex[Array, " cin *modes"]) -> Complex[Array, " cout *modes"]:
        k = _letters(xh.ndim - 1)
        a, b = (_complex(f).astype(xh.dtype) for f in self.factors[:2])
        z = jnp.einsum(f"i{k},ir->r{k}", xh, a) * self._mode_factor(xh.dtype)
        return jnp.einsum(f"r{k},or->o{k}", z, b)

    def to_dense(self) -> Complex[Array, " cin cout *modes"]:
        a, b = (_complex(f) for f in self.factors[:2])
        k = _letters(len(self.factors) - 2)
        return jnp.einsum(f"ir,or,r{k}->io{k}", a, b, self._mode_factor(a.dtype))

    @staticmethod
    def num_params(dims, rank) -> int:
        return 2 * rank * sum(dims)


def _tucker_ranks(dims, rank) -> tuple[int, ...]:
    """Tucker ranks from an int (every axis, capped), a tuple, or a float parameter fraction."""
    if isinstance(rank, (tuple, list)):
        if not all(is_int(r) for r in rank):
            raise ValueError(f"Tucker ranks must be ints; got {rank!r}.")
        ranks = tuple(int(r) for r in rank)
        if len(ranks) != len(dims):
            raise ValueError(
                f"a Tucker rank tuple needs one rank per weight axis (in, out, *modes) = "
                f"{len(dims)}; got {len(ranks)}."
            )
        for n, r in zip(dims, ranks, strict=True):
            if not 1 <= r <= n:
                raise ValueError(f"Tucker ranks must lie in [1, dim]; got {ranks} for dims {dims}.")
        return ranks
    if is_int(rank):
        return tuple(min(check_int("rank", rank), n) for n in dims)
    frac = _rank_fraction(rank)
    budget = frac * math.prod(dims)

    def ranks_for(f):
        return tuple(max(1, min(n, round(f * n))) for n in dims)

    def count(f):
        r = ranks_for(f)
        return math.prod(r) + sum(n * q for n, q in zip(dims, r, strict=True))

    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if count(mid) <= budget else (lo, mid)
    return ranks_for(lo)


def _cp_rank(dims, rank) -> int:
    if is_int(rank):
        return check_int("rank", rank)
    frac = _rank_fraction(rank)
    return max(1, round(frac * math.prod(dims) / sum(dims)))


def _rank_fraction(rank) -> float:
    """A float rank: the fraction of the dense parameter count, finite and > 0."""
    frac = check_real("rank", rank)
    if not 0.0 < frac:
        raise ValueError(
            f"a float rank is a fraction of the dense parameter count, > 0; got {rank!r}."
        )
    return frac


class SpectralConv(AbstractChannelsLast):
    r"""Fourier layer on one sample ``(in_channels, *spatial) -> (out_channels, *spatial)``.

    Args:
        num_spatial_dims, in_channels, out_channels: layer shape; batch with :func:`jax.vmap`.
        modes: an int or one int per spatial axis: frequencies kept **per sign**, as in the
            original FNO code. Leading axes keep :math:`-m, \dots, m-1`; the last (real-FFT) axis
            keeps :math:`0, \dots, m-1`. Conversion from neuraloperator 2.0's ``n_modes`` (its
            ``SpectralConv`` keeps ``n`` centred frequencies on leading axes and ``n // 2 + 1``
            on the last): ``modes[j] = n_modes[j] // 2`` on leading axes (for even
            ``n_modes[j]``) and ``modes[-1] = n_modes[-1] // 2 + 1`` on the last axis;
            conversely our ``modes`` equal its ``n_modes = (2*m_1, ..., 2*m_{d-1}, 2*m_d - 2)``.
            With ``n_modes = 2*m`` on the last axis too, neuraloperator keeps one more frequency
            (``m``) there.
        key: PRNG key of the initial weights.
        factorization: ``None`` (dense), ``"tucker"`` or ``"cp"``.
        rank: factorisation rank: a float is a fraction of the dense parameter count (default
            0.5); an int is the CP rank / the Tucker rank of every axis (capped at the axis
            size); a tuple gives the Tucker ranks of ``(in, out, *modes)``.
        use_bias: adds a per-output-channel constant (neuraloperator puts the FNO block's bias
            here).
        transform: how the truncated transforms are computed; the result is the same up to
            rounding. ``"dft"``: products with constant DFT matrices (fastest for few modes, and
            free of the transposes an FFT forces under ``jax.vmap``); ``"pruned-fft"``: one FFT
            per axis on the already truncated array; ``"fft"``: one multi-dimensional FFT each
            way; ``"auto"`` (default) picks ``"dft"`` when the kept modes are few for the grid,
            else ``"pruned-fft"``.
        dtype: of the weights (default: the default float).

    The same weights evaluate on any grid that holds the modes (see :func:`check_grid`), and a
    band-limited input gives the same continuous output function on every such grid.
    """

    weights: DenseSpectralWeight | TuckerSpectralWeight | CPSpectralWeight
    bias: Float[Array, " cout"] | None
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    modes: tuple[int, ...] = eqx.field(static=True)
    factorization: str | None = eqx.field(static=True)
    transform: str = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        modes: int | Sequence[int],
        *,
        key: PRNGKeyArray,
        factorization: str | None = None,
        rank: float | int | Sequence[int] | None = None,
        use_bias: bool = False,
        transform: str = "auto",
        dtype=None,
    ):
        self.num_spatial_dims = check_int("num_spatial_dims", num_spatial_dims)
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        check_choice("factorization", factorization, {None, "tucker", "cp", "dense"})
        factorization = None if factorization == "dense" else factorization
        self.modes = normalize_modes(modes, self.num_spatial_dims)
        self.factorization = factorization
        self.transform = check_choice("transform", transform, _TRANSFORMS)
        dtype = dtype or default_float()
        dims = (self.in_channels, self.out_channels, *mode_shape(self.modes))
        # Glorot-like variance of the complex entries, E|W|^2 = 2 / (in + out), as neuraloperator.
        var = 2.0 / (self.in_channels + self.out_channels)
        if factorization is None:
            if rank is not None:
                raise ValueError("rank is only used with factorization='tucker' or 'cp'.")
            cls, specs = DenseSpectralWeight, DenseSpectralWeight.specs(dims, var)
        elif factorization == "tucker":
            ranks = _tucker_ranks(dims, 0.5 if rank is None else rank)
            cls, specs = TuckerSpectralWeight, TuckerSpectralWeight.specs(dims, ranks, var)
        else:
            r = _cp_rank(dims, 0.5 if rank is None else rank)
            cls, specs = CPSpectralWeight, CPSpectralWeight.specs(dims, r, var)
        if use_bias:
            specs = [*specs, ("normal", (self.out_channels,), math.sqrt(var / 2.0))]
        arrays = draw(key, specs, dtype)
        if use_bias:
            self.weights, self.bias = cls.from_arrays(arrays[:-1]), arrays[-1]
        else:
            self.weights, self.bias = cls.from_arrays(arrays), None

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """Shape of the (complex) dense weight this layer represents: ``(in, out, *mode_shape)``."""
        return (self.in_channels, self.out_channels, *mode_shape(self.modes))

    def to_dense(self) -> Complex[Array, " cin cout *modes"]:
        """The dense complex weight (for inspection and tests; the forward pass never builds it)."""
        return self.weights.to_dense()

    def spectral(self, xh: Complex[Array, " cin *modes"]) -> Complex[Array, " cout *modes"]:
        """The layer on a compact block of kept modes (what T1-style models chain)."""
        return self.weights.contract(xh)

    def _channels_first(self, x, transform):
        spatial = x.shape[1:]
        if transform == "dft":
            y = jnp.moveaxis(self._last(jnp.moveaxis(x, 0, -1), "dft"), -1, 0)
            return y
        xh = rfft_modes(x, self.modes, pruned=transform == "pruned-fft")
        y = irfft_modes(self.weights.contract(xh), spatial, pruned=transform == "pruned-fft")
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * self.num_spatial_dims).astype(y.dtype)
        return y

    def channels_last(self, x: Float[Array, "*spatial cin"]) -> Float[Array, "*spatial cout"]:
        """The layer on a channels-last field ``(*spatial, in_channels)`` (used inside the FNO)."""
        return self._last(x, None)

    def _last(self, x, transform):
        spatial = x.shape[:-1]
        check_grid(self.modes, spatial)
        transform = transform or _resolve_transform(self.transform, self.modes, spatial)
        if transform != "dft":
            y = self._channels_first(jnp.moveaxis(x, -1, 0), transform)
            return jnp.moveaxis(y, 0, -1)
        re, im = rdft_modes_last(x, self.modes)
        # The kept block is small: contract it channels-first with the weights' own routine.
        xh = jnp.moveaxis(lax.complex(re, im), -1, 0)
        yh = jnp.moveaxis(self.weights.contract(xh), 0, -1)
        y = irdft_modes_last(jnp.real(yh), jnp.imag(yh), spatial)
        if self.bias is not None:
            y = y + self.bias.astype(y.dtype)
        return y

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        check_sample(
            x,
            channels=self.in_channels,
            num_spatial_dims=self.num_spatial_dims,
            where="SpectralConv",
        )
        spatial = x.shape[1:]
        check_grid(self.modes, spatial)
        return self._channels_first(x, _resolve_transform(self.transform, self.modes, spatial))
