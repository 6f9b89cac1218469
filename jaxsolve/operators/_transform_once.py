r"""Transform Once (T1): one forward transform, layers on the kept frequencies, one inverse.

"Transform Once: Efficient Operator Learning in Frequency Domain" (Poli, Massaroli, Berto, Park,
Dao, Ré, Ermon): instead of a forward and an inverse FFT around every Fourier layer, transform
once, learn directly on a reduced spectrum, and transform back once,

.. math:: \mathcal G(u) = Q\big(\mathcal T^{-1}\, f_\theta\, S_m\, \mathcal T\, P(u)\big),

with :math:`P, Q` pointwise lifting / projection, :math:`\mathcal T` a real FFT (periodic data)
or a DCT (non-periodic data, no wrap-around discontinuity), :math:`S_m` the selection of the
kept modes and :math:`f_\theta` a stack of frequency-domain layers. Each layer here is

.. math:: Z \mapsto \sigma\Big( M_d \times_d \cdots M_1 \times_1 \big(\textstyle\sum_i W_{i o k} Z_{i k}\big) + B \Big),

a per-mode channel mixing :math:`W` (an FNO weight), followed by dense mixing across the kept
frequencies of each axis (:math:`M_j`, which a per-layer-FFT model cannot do) and a learned bias
spectrum :math:`B`. For the real FFT the coefficients are complex and :math:`\sigma` acts on real
and imaginary parts separately.

Variance-preserving initialisation (the paper derives one for reduced-order frequency-domain
models; the rule below is our derivation of the same principle for exactly these layers): with
:math:`N` grid points and the spectrum truncated to :math:`K` modes, the inverse transform of a
spectrum whose coefficients have the input's variance returns a field whose variance is smaller
by :math:`K_\text{eff}/N`, so standard fan-in initialisation collapses the output. Here every layer preserves coefficient
variance (:math:`\mathbb E|W|^2 = 1/C_\text{in}`, :math:`\mathbb E|M_j|^2 = 1/m_j`) and the last
layer's weights are scaled by :math:`N/K_\text{eff}` in variance, so that white noise in gives
unit-variance-ratio out at the grid given as ``grid_shape``. :math:`K_\text{eff}` counts each
kept frequency with its weight in Parseval's identity: :math:`\prod_j m_j` for the DCT; for the
real FFT, 2 per mode with :math:`k_d > 0` and 1/2 per mode of the (Hermitian-projected) zero
column.
"""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float
from .._core._init import draw, subkeys
from ._checks import check_sample
from ._fno import ChannelMLP, lift_and_project
from ._spectral import (
    _check_dct_grid,
    check_grid,
    dct_modes,
    idct_modes,
    irfft_modes,
    mode_shape,
    normalize_modes,
    periodic_grid,
    rfft_modes,
)
from ._spectral_conv import _letters


def _normal_spec(shape, var, complex_: bool):
    """``(2, *shape)`` complex (E|w|^2 = var) or ``(1, *shape)`` real normal weights."""
    if complex_:
        return ("normal", (2, *shape), math.sqrt(var / 2.0))
    return ("normal", (1, *shape), math.sqrt(var))


def _as_field(w):
    """A stored weight ``(2, ...)`` (complex) or ``(1, ...)`` (real) as an array."""
    return lax.complex(w[0], w[1]) if w.shape[0] == 2 else w[0]


class T1Layer(eqx.Module):
    """One frequency-domain layer of :class:`T1` (see the module doc for the formula)."""

    channel: Float[Array, " p cin cout *modes"]
    mixers: tuple[Float[Array, " p _m _m"], ...]
    bias: Float[Array, " p cout *modes"]

    def __call__(self, z, activation, last: bool):
        k = _letters(z.ndim - 1)
        w = _as_field(self.channel).astype(z.dtype)
        z = jnp.einsum(f"i{k},io{k}->o{k}", z, w)
        for j, m in enumerate(self.mixers):
            z = jnp.moveaxis(
                jnp.tensordot(z, _as_field(m).astype(z.dtype), axes=((j + 1,), (1,))), -1, j + 1
            )
        z = z + _as_field(self.bias).astype(z.dtype)
        if last:
            return z
        if jnp.iscomplexobj(z):
            return lax.complex(activation(jnp.real(z)), activation(jnp.imag(z)))
        return activation(z)


def _k_eff(modes, transform):
    if transform == "dct":
        return float(math.prod(modes))
    lead = math.prod(2 * m for m in modes[:-1])
    return 2.0 * lead * (modes[-1] - 1) + 0.5 * lead


class T1(eqx.Module):
    r"""Transform-Once neural operator on one sample ``(in_channels, *spatial)``.

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: channels of the frequency-domain layers.
        modes: for ``transform="rfft"``, frequencies per sign as in :class:`SpectralConv`; for
            ``transform="dct"``, the cosine modes ``0..m-1`` kept on each axis.
        grid_shape: the training grid; the variance-preserving initialisation depends on its
            size. The model evaluates on any grid that holds the modes.
        key: PRNG key of the initial weights.
        n_layers: number of frequency-domain layers.
        transform: ``"rfft"`` (periodic grid ``x_n = n/N``) or ``"dct"`` (cell centres
            ``(n + 1/2)/N``).
        init: ``"vp"`` (variance-preserving, default; see the module doc) or ``"standard"``
            (fan-in only, which shrinks the output variance by ``K_eff / N``).
        activation: applied in frequency space (to real and imaginary parts for the FFT).
        lifting_channels, projection_channels: hidden width of the pointwise lifting /
            projection (``0``, the default, is one linear map, which keeps the initialisation
            exactly variance-preserving).
        positional_embedding: append the grid coordinates (periodic or cell-centred, as the
            transform) as channels.
        dtype: of the weights (default: the default float).

    Exactly one forward and one inverse transform appear in the computation, whatever
    ``n_layers`` is.
    """

    lifting: ChannelMLP
    layers: tuple[T1Layer, ...]
    projection: ChannelMLP
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    modes: tuple[int, ...] = eqx.field(static=True)
    transform: str = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)
    positional_embedding: bool = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        modes: int | Sequence[int],
        grid_shape: int | Sequence[int],
        key: PRNGKeyArray,
        n_layers: int = 4,
        transform: str = "rfft",
        init: str = "vp",
        activation: Callable = jax.nn.gelu,
        lifting_channels: int = 0,
        projection_channels: int = 0,
        positional_embedding: bool = False,
        dtype=None,
    ):
        check_int("n_layers", n_layers)
        check_choice("transform", transform, {"rfft", "dct"})
        check_choice("init", init, {"vp", "standard"})
        dtype = dtype or default_float()
        # Weights N(0, 1/fan-in), zero biases: variance-preserving pointwise ends.
        self.lifting, self.projection, k_layers = lift_and_project(
            key,
            num_spatial_dims,
            in_channels,
            out_channels,
            width,
            lifting_channels=lifting_channels,
            projection_channels=projection_channels,
            positional_embedding=positional_embedding,
            activation=activation,
            init="normal",
            dtype=dtype,
        )
        d = int(num_spatial_dims)
        self.num_spatial_dims = d
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.modes = normalize_modes(modes, d)
        self.transform = transform
        self.activation = activation
        self.positional_embedding = bool(positional_embedding)
        grid_shape = normalize_modes(grid_shape, d, name="grid_shape")
        if transform == "rfft":
            check_grid(self.modes, grid_shape)
            kshape = mode_shape(self.modes)
        else:
            _check_dct_grid(self.modes, grid_shape)
            kshape = self.modes
        cplx = transform == "rfft"
        gain = math.prod(grid_shape) / _k_eff(self.modes, transform) if init == "vp" else 1.0
        p = 2 if cplx else 1
        layers = []
        for i, kl in enumerate(subkeys(k_layers, n_layers)):
            # Coefficient variance is preserved layer by layer; the last layer also makes up
            # for the K_eff / N that the inverse transform of a truncated spectrum loses.
            var = (gain if i == n_layers - 1 else 1.0) / width
            specs = [_normal_spec((width, width, *kshape), var, cplx)]
            specs += [_normal_spec((n, n), 1.0 / n, cplx) for n in kshape]
            specs += [("zeros", (p, width, *kshape), 0.0)]
            arrays = draw(kl, specs, dtype)
            layers.append(T1Layer(arrays[0], tuple(arrays[1:-1]), arrays[-1]))
        self.layers = tuple(layers)

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="T1"
        )
        spatial = x.shape[1:]
        x = jnp.asarray(x)
        if self.transform == "rfft":
            check_grid(self.modes, spatial)
        else:
            _check_dct_grid(self.modes, spatial)
        if self.positional_embedding:
            grid = periodic_grid(spatial, dtype=x.dtype)
            if self.transform == "dct":
                grid = grid + jnp.stack(
                    [jnp.full(spatial, 0.5 / n, x.dtype) for n in spatial], axis=0
                )
            x = jnp.concatenate([x, grid], axis=0)
        v = self.lifting(x)
        if self.transform == "rfft":
            z = rfft_modes(v, self.modes)
        else:
            z = dct_modes(v, self.modes)
        n = len(self.layers)
        for i, layer in enumerate(self.layers):
            z = layer(z, self.activation, i == n - 1)
        v = irfft_modes(z, spatial) if self.transform == "rfft" else idct_modes(z, spatial)
        return self.projection(v)
