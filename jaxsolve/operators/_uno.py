r"""U-shaped Neural Operator (UNO): Fourier blocks that change the grid and the width per level.

.. math:: v_0 = P(u \oplus x),\qquad
   v_{l+1} = \mathcal K_l v_l\big|_{G_{l+1}} + R_{l+1} S_l v_l
             \;\to\; M_l(\cdot) + R_{l+1} S'_l v_l,\qquad
   \mathcal G(u) = Q(v_L)

("U-NO: U-shaped Neural Operators", Rahman, Ross, Azizzadenesheli): each level ``l`` maps
``c_l`` channels on a grid :math:`G_l` to ``c_{l+1}`` channels on a grid :math:`G_{l+1}` whose
size is ``round(N * scaling)`` per axis. The spectral convolution :math:`\mathcal K_l` keeps its
``modes`` of the input and evaluates the output Fourier series directly on the new grid (an exact
spectral up/down-sampling of the band-limited result). The pointwise skips :math:`S_l, S'_l`
(linear, identity or soft-gating) are moved to the new grid by a resampling :math:`R`, and
:math:`M_l` is the block's channel MLP. Horizontal ("U") skips concatenate the (skip-mapped,
resampled) output of an earlier level to the input of a later one along the channels.

As in neuraloperator's ``UNO`` each level is a one-layer ``FNOBlocks``, so the only nonlinearity
inside a level is the channel MLP's: there is no activation between the spectral sum and the MLP.

Resampling of the skip paths (``resample``):

* ``"spectral"`` (default): trigonometric interpolation keeping the frequencies
  :math:`|k| \le (\min(N_{in}, N_{out}) - 1) / 2` on each axis (Nyquist excluded, so it is real
  and exact for band-limited fields, on odd and even grids alike).
* ``"neuraloperator"``: what neuraloperator 2.0's ``resample`` does in 1-D and 2-D: linear
  interpolation (1-D) and bicubic interpolation with ``a = -0.75`` (2-D), both with
  ``align_corners=True``, i.e. the grid treated as *including* both end points. Kept for weight
  transplants; with three or more axes it falls back to ``"spectral"``.
"""

import math
from collections.abc import Callable, Sequence
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float, exact_tensordot
from .._core._init import subkeys
from ._bridges import (
    fno_block_from_torch,
    fno_blocks_layers,
    fno_blocks_options,
    grid_embedding_from_torch,
    mlp_from_torch,
    mlp_hidden_channels,
    skip_from_torch,
    skip_kind,
    spectral_weight_from_torch,
)
from ._checks import check_real, check_sample, float_input
from ._fno import ChannelMLP, SoftGating, _Identity
from ._spectral import irfft_modes, periodic_grid, rfft_modes
from ._spectral_conv import SpectralConv

_SKIPS = {"linear", "identity", "soft-gating", None}
_RESAMPLES = {"spectral", "neuraloperator"}


# ----------------------------------------------------------------------------------------------
# Resampling between grids (separable: one (N_out, N_in) matrix per axis)
# ----------------------------------------------------------------------------------------------


def _spectral_matrix(n_in: int, n_out: int) -> np.ndarray:
    r""":math:`M_{oi} = \frac1{N_{in}}\big(1 + 2\sum_{k=1}^{K}\cos 2\pi k(o/N_{out} - i/N_{in})
    \big)`,
    ``K = (min(N_in, N_out) - 1) // 2``: the band-limited interpolant sampled on the new grid."""
    kmax = (min(n_in, n_out) - 1) // 2
    phase = np.arange(n_out)[:, None] / n_out - np.arange(n_in)[None, :] / n_in
    k = np.arange(1, kmax + 1)
    return (1.0 + 2.0 * np.cos(2 * np.pi * phase[..., None] * k).sum(-1)) / n_in


def _linear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation with ``align_corners=True`` (PyTorch's ``F.interpolate``)."""
    m = np.zeros((n_out, n_in))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for o in range(n_out):
        src = scale * o
        i0 = min(int(src), n_in - 1)
        i1 = i0 + (1 if i0 < n_in - 1 else 0)
        t = src - i0
        m[o, i0] += 1.0 - t
        m[o, i1] += t
    return m


def _cubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """Keys cubic convolution (``a = -0.75``), ``align_corners=True``, border indices clamped
    (PyTorch's bicubic ``F.interpolate``, one axis)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    m = np.zeros((n_out, n_in))
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    for o in range(n_out):
        src = scale * o
        i0 = math.floor(src)
        t = src - i0
        for off, w in zip(
            (-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t)), strict=True
        ):
            m[o, min(max(i0 + off, 0), n_in - 1)] += w
    return m


def resample(
    x: Float[Array, " c *spatial"], out_shape: Sequence[int], method: str = "spectral"
) -> Float[Array, " c *out_spatial"]:
    """Resample a field ``(channels, *spatial)`` to ``out_shape`` (see the module doc for
    ``method``); the identity when the shapes agree."""
    check_choice("method", method, _RESAMPLES)
    # The resampling matrices are cast to the field's dtype: an integer field would truncate them.
    x = float_input(x, default_float())
    spatial = x.shape[1:]
    try:
        out_shape = tuple(out_shape)
    except TypeError:
        raise TypeError(f"out_shape must be a sequence of ints; got {out_shape!r}.") from None
    # int() would truncate a fractional size; an empty axis has nothing to resample to.
    out_shape = tuple(check_int(f"out_shape[{j}]", n) for j, n in enumerate(out_shape))
    if len(out_shape) != len(spatial):
        raise ValueError(f"out_shape needs {len(spatial)} sizes; got {out_shape!r}.")
    if tuple(spatial) == out_shape:
        return x
    d = len(spatial)
    if method == "spectral" or d > 2:
        make = _spectral_matrix
    else:
        make = _linear_matrix if d == 1 else _cubic_matrix
    for j, (n_in, n_out) in enumerate(zip(spatial, out_shape, strict=True)):
        if n_in == n_out and method == "spectral":
            continue
        mat = jnp.asarray(make(n_in, n_out), x.dtype)
        x = jnp.moveaxis(exact_tensordot(mat, x, axes=([1], [1 + j])), 0, 1 + j)
    return x


def _scaled_shape(shape, factors):
    return tuple(round(n * f) for n, f in zip(shape, factors, strict=True))


def _make_skip(kind, cin, cout, key, dtype, name):
    check_choice(name, kind, _SKIPS)
    if kind in ("soft-gating", "identity") and cin != cout:
        raise ValueError(
            f"{name}={kind!r} needs equal channels in and out; got {cin} -> {cout} (use 'linear')."
        )
    if kind == "linear":
        return ChannelMLP(cin, cout, n_layers=1, key=key, use_bias=False, dtype=dtype)
    if kind == "soft-gating":
        return SoftGating(cin, dtype)
    if kind == "identity":
        return _Identity()
    return None


def _apply(layer, x):
    return x if layer is None else layer(x)


class UNOBlock(eqx.Module):
    """One UNO level: ``conv(x)|_out + R skip(x)``, then ``mlp(.) + R mlp_skip(x)``
    (channels-first, ``(in_channels, *spatial) -> (out_channels, *out_shape)``)."""

    conv: SpectralConv
    skip: eqx.Module | None
    mlp: ChannelMLP | None
    mlp_skip: eqx.Module | None
    resample: str = eqx.field(static=True)

    def __call__(self, x, out_shape: Sequence[int]):
        out_shape = tuple(out_shape)
        conv = self.conv
        # The kept modes of the input, mixed, summed as a Fourier series on the output grid.
        y = irfft_modes(conv.spectral(rfft_modes(x, conv.modes)), out_shape)
        if conv.bias is not None:
            y = y + conv.bias.reshape((-1,) + (1,) * len(out_shape)).astype(y.dtype)
        if self.skip is not None:
            y = y + resample(self.skip(x), out_shape, self.resample)
        if self.mlp is not None:
            y = self.mlp(y)
            if self.mlp_skip is not None:
                y = y + resample(self.mlp_skip(x), out_shape, self.resample)
        return y


def _per_layer(name, value, n_layers, d, check):
    """One d-tuple per layer from a scalar, a per-layer list of scalars or of d-tuples."""
    if not isinstance(value, (list, tuple)) or len(value) != n_layers:
        raise ValueError(f"{name} needs one entry per layer ({n_layers}); got {value!r}.")
    out = []
    for v in value:
        v = tuple(v) if isinstance(v, (list, tuple)) else (v,) * d
        if len(v) != d:
            raise ValueError(
                f"each entry of {name} needs {d} values (one per axis); got {value!r}."
            )
        out.append(tuple(check(name, e) for e in v))
    return tuple(out)


class UNO(eqx.Module):
    r"""U-shaped Neural Operator on one sample ``(in_channels, *spatial)``; batch with ``jax.vmap``.

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: channels after the lifting (neuraloperator's ``hidden_channels``).
        layer_channels: output channels of each level (``uno_out_channels``).
        layer_modes: per level, an int or one int per axis: frequencies kept per sign (see
            :class:`SpectralConv`; from neuraloperator's ``uno_n_modes`` ``n``: ``n // 2`` on
            leading axes, ``n // 2 + 1`` on the last).
        layer_scalings: per level, a float or one float per axis: the level's output grid is
            ``round(N * s)`` of its input grid (the last level's is ``round(N_0 * prod s)`` of the
            input grid, as neuraloperator).
        key: PRNG key of the initial weights.
        skips: ``{later: earlier}`` horizontal skips: level ``later`` also receives level
            ``earlier``'s output, concatenated after its own input channels. Default: the
            U-shape ``{n-1: 0, n-2: 1, ...}`` over the first ``n // 2`` levels.
        lifting_channels, projection_channels: hidden widths of the lifting / projection MLPs
            (default 256, as neuraloperator; 0 makes a single linear map).
        skip, horizontal_skip, channel_mlp_skip: ``"linear"``, ``"identity"``,
            ``"soft-gating"`` or ``None``: the level's skip, the map applied to a level's output
            before it is passed along a horizontal skip, and the channel MLP's skip.
        channel_mlp_expansion: hidden ratio of each level's channel MLP (``None``: no MLP).
        activation: of the MLPs (default :func:`jax.nn.gelu`; neuraloperator's is the exact
            ``partial(jax.nn.gelu, approximate=False)``).
        positional_embedding: append the periodic grid coordinates ``n / N`` as inputs.
        resample: how skip paths change grid, ``"spectral"`` or ``"neuraloperator"`` (module doc).
        dtype: of the weights (default: the default float).
    """

    lifting: ChannelMLP
    blocks: tuple[UNOBlock, ...]
    horizontal: tuple[eqx.Module | None, ...]
    projection: ChannelMLP
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    scalings: tuple[tuple[float, ...], ...] = eqx.field(static=True)
    skips: tuple[tuple[int, int], ...] = eqx.field(static=True)
    positional_embedding: bool = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        layer_channels: Sequence[int],
        layer_modes: Sequence[int | Sequence[int]],
        layer_scalings: Sequence[float | Sequence[float]],
        key: PRNGKeyArray,
        skips: dict[int, int] | None = None,
        lifting_channels: int = 256,
        projection_channels: int = 256,
        skip: str | None = "linear",
        horizontal_skip: str | None = "linear",
        channel_mlp_skip: str | None = "linear",
        channel_mlp_expansion: float | None = 0.5,
        activation: Callable = jax.nn.gelu,
        positional_embedding: bool = True,
        resample: str = "spectral",
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        check_int("width", width)
        check_choice("resample", resample, _RESAMPLES)
        for name, kind in (
            ("skip", skip),
            ("horizontal_skip", horizontal_skip),
            ("channel_mlp_skip", channel_mlp_skip),
        ):
            check_choice(name, kind, _SKIPS)
        if not isinstance(layer_channels, (list, tuple)) or not layer_channels:
            raise ValueError(
                f"layer_channels must be a non-empty list of ints; got {layer_channels!r}."
            )
        channels = tuple(check_int("layer_channels", c) for c in layer_channels)
        n = len(channels)
        modes = _per_layer("layer_modes", layer_modes, n, d, check_int)
        scalings = _per_layer(
            "layer_scalings", layer_scalings, n, d, partial(check_real, minimum=0.0, strict=True)
        )
        if skips is None:
            skips = {n - 1 - i: i for i in range(n // 2)}
        if not isinstance(skips, dict):
            raise ValueError(f"skips must be a dict {{later: earlier}}; got {skips!r}.")
        for b, a in skips.items():
            if not (isinstance(a, int) and isinstance(b, int) and 0 <= a < b < n):
                raise ValueError(
                    f"skips must map a later level to an earlier one, 0 <= earlier < later < {n}; "
                    f"got {b}: {a}."
                )
        if channel_mlp_expansion is not None:
            ratio = check_real(
                "channel_mlp_expansion", channel_mlp_expansion, minimum=0.0, strict=True
            )
            if min(round(c * ratio) for c in channels) < 1:
                raise ValueError(
                    f"channel_mlp_expansion={channel_mlp_expansion!r} gives a channel MLP with no "
                    f"hidden channels for layer_channels={list(channels)}."
                )
        dtype = dtype or default_float()
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("lifting_channels", lifting_channels, minimum=0)
        check_int("projection_channels", projection_channels, minimum=0)
        k_lift, k_proj, rest = subkeys(key, 3)
        kw = dict(activation=activation, dtype=dtype)
        lift_in = in_channels + (d if positional_embedding else 0)
        self.lifting = ChannelMLP.pointwise(lift_in, width, lifting_channels, key=k_lift, **kw)
        # The projection takes the last level's channels.
        self.projection = ChannelMLP.pointwise(
            channels[-1], out_channels, projection_channels, key=k_proj, **kw
        )
        blocks, horizontal = [], []
        prev = int(width)
        for i, kb in enumerate(subkeys(rest, n)):
            kc, ks, km, kms, kh = subkeys(kb, 5)
            cin = prev + (channels[skips[i]] if i in skips else 0)
            cout = channels[i]
            conv = SpectralConv(d, cin, cout, modes[i], key=kc, use_bias=True, dtype=dtype)
            mlp = mlp_skip = None
            if channel_mlp_expansion is not None:
                hidden = round(cout * channel_mlp_expansion)
                mlp = ChannelMLP(cout, cout, hidden, 2, key=km, activation=activation, dtype=dtype)
                mlp_skip = _make_skip(channel_mlp_skip, cin, cout, kms, dtype, "channel_mlp_skip")
            blocks.append(
                UNOBlock(
                    conv, _make_skip(skip, cin, cout, ks, dtype, "skip"), mlp, mlp_skip, resample
                )
            )
            sends = i in skips.values()
            horizontal.append(
                _make_skip(horizontal_skip, cout, cout, kh, dtype, "horizontal_skip")
                if sends
                else None
            )
            prev = cout
        self.blocks = tuple(blocks)
        self.horizontal = tuple(horizontal)
        self.num_spatial_dims = d
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.scalings = scalings
        self.skips = tuple(sorted(skips.items()))
        self.positional_embedding = bool(positional_embedding)

    def output_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Grid of the output for an input grid: ``round(N * prod_l s_l)`` per axis."""
        total = [math.prod(s[j] for s in self.scalings) for j in range(self.num_spatial_dims)]
        return _scaled_shape(spatial_shape, total)

    def level_shapes(self, spatial_shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
        """Output grid of each level for an input grid."""
        shapes, shape = [], tuple(spatial_shape)
        for s in self.scalings:
            shape = _scaled_shape(shape, s)
            shapes.append(shape)
        shapes[-1] = self.output_shape(spatial_shape)
        return tuple(shapes)

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *out_spatial"]:
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="UNO"
        )
        x = jnp.asarray(x)
        if self.positional_embedding:
            grid = periodic_grid(x.shape[1:], dtype=x.dtype)
            x = jnp.concatenate([x, grid.astype(x.dtype)], axis=0)
        v = self.lifting(x)
        skips = dict(self.skips)
        outputs = {}
        resample_method = self.blocks[0].resample
        for i, (block, shape) in enumerate(
            zip(self.blocks, self.level_shapes(x.shape[1:]), strict=True)
        ):
            if i in skips:
                earlier = resample(outputs[skips[i]], v.shape[1:], resample_method)
                v = jnp.concatenate([v, earlier], axis=0)
            v = block(v, shape)
            if self.horizontal[i] is not None or i in skips.values():
                outputs[i] = _apply(self.horizontal[i], v)
        return self.projection(v)


# ----------------------------------------------------------------------------------------------
# neuraloperator bridge
# ----------------------------------------------------------------------------------------------


def uno_from_neuraloperator(torch_model, *, dtype=None) -> UNO:
    """Our :class:`UNO` computing the same function as a neuraloperator 2.0 ``UNO``.

    Supported: dense spectral weights with even ``n_modes`` on leading axes, no domain padding,
    no normalisation, the ``"grid"`` positional embedding or none. The result uses the exact
    GELU and ``resample="neuraloperator"``. neuraloperator's spectral convolution places the
    modes of a *leading* axis wrongly when that axis changes size (``irfftn(..., s=...)`` pads /
    trims the FFT-ordered spectrum at its end) and on odd leading axes (two ``fftshift``); ours
    does not, so outputs agree when the leading axes keep an even size at every level.
    """
    m = torch_model
    if m.domain_padding is not None:
        raise ValueError("torch_model: domain padding has no counterpart here.")
    blocks_t = m.fno_blocks
    d = m.n_dim
    options = fno_blocks_options(blocks_t[0])
    modes = [spectral_weight_from_torch(blk.convs[0], d)[2] for blk in blocks_t]
    hz = next(iter(m.horizontal_skips.values()), None)
    scalings = [list(s) if isinstance(s, (list, tuple)) else [s] * d for s in m.uno_scalings]
    ours = UNO(
        d,
        m.in_channels,
        m.out_channels,
        width=m.hidden_channels,
        layer_channels=list(m.uno_out_channels),
        layer_modes=modes,
        layer_scalings=scalings,
        key=jax.random.key(0),
        skips=dict(m.horizontal_skips_map),
        lifting_channels=mlp_hidden_channels(m.lifting),
        projection_channels=mlp_hidden_channels(m.projection),
        horizontal_skip=skip_kind(hz) if hz is not None else "linear",
        activation=partial(jax.nn.gelu, approximate=False),
        positional_embedding=grid_embedding_from_torch(m, d),
        resample="neuraloperator",
        dtype=dtype or jnp.float32,
        **options,
    )
    blocks = tuple(
        fno_block_from_torch(ob, **fno_blocks_layers(tb, 0))
        for ob, tb in zip(ours.blocks, blocks_t, strict=True)
    )
    horizontal = tuple(
        None if h is None else skip_from_torch(h, m.horizontal_skips[str(i)])
        for i, h in enumerate(ours.horizontal)
    )
    return eqx.tree_at(
        lambda u: (u.lifting, u.blocks, u.horizontal, u.projection),
        ours,
        (
            mlp_from_torch(ours.lifting, m.lifting),
            blocks,
            horizontal,
            mlp_from_torch(ours.projection, m.projection),
        ),
        is_leaf=lambda x: x is None,
    )
