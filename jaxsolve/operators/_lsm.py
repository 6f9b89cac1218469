r"""Latent Spectral Model (LSM): a U-Net whose skips pass through latent spectral solvers.

("Solving High-Dimensional PDEs with Latent Spectral Models", Wu, Hu, Luo, Wang, Long.) The
lifted field goes down a convolutional U-Net: level ``l`` has ``width * channel_multipliers[l]``
channels on a grid halved ``l`` times (a stride-2 convolution, then two 3^d convolutions); it comes
back up by stride-2 transposed convolutions, each joined with the level's skip. Every skip, and
the coarsest level, first goes through a :class:`NeuralSpectralBlock`:

1. *Patches.* The level's grid is cut into patches of ``patch_size`` cells per axis.
2. *Hierarchical projection.* In each patch, ``num_tokens`` learned queries attend to the
   patch's points (multi-head attention; keys and values are a linear map of the points):

   .. math:: T = \mathrm{softmax}\big(Q K(x)^\top / \sqrt{d_h}\big)\, V(x) + Q,

   a weighted mean over the points, so the tokens summarise the patch as a *set* (invariant to
   the order of its points).
3. *Latent spectral solver.* Each token channel goes through a learned expansion in the
   trigonometric basis :math:`\{\sin \omega_m t, \cos \omega_m t\}`,
   :math:`\omega_m = \pi m / M`, :math:`m = 0, \dots, M-1` (``M = num_basis``):

   .. math:: T'_{kc} = T_{kc} + \sum_{m=0}^{M-1}
      \big(a_{cm} \sin(\omega_m T_{kc}) + b_{cm} \cos(\omega_m T_{kc})\big)

   (coefficients per channel, shared by the tokens as in the paper; ``per_token_coefficients``
   gives each token its own ``a_{kcm}, b_{kcm}``).
4. *Back to the points.* Each point queries the tokens:
   :math:`y = \mathrm{softmax}(Q(x) T'^\top / \sqrt{d_h})\, T' + x`.

Grids of any size, odd included. The U-Net and the patches need every axis to be a multiple of
``2**(levels - 1) * patch_size`` (``levels = len(channel_multipliers)``), so the lifted field is
padded at the end of each axis up to the next multiple (:meth:`LSM.padded_shape`) and the result
cropped back. The padded cells are *masked*: they are set to zero after every layer (a coarse
cell is valid when it covers a valid fine cell), the attention from tokens to points ignores
them, and convolutions pad with zeros, so a valid cell sees the same zero extension past the
boundary whatever the padding. The output on the input grid therefore does not depend on how
far the field is padded (:meth:`LSM.__call__`'s ``padded_shape``). Patches are anchored at the
first cell, so padding only adds patches beyond the grid.

The padding costs cells: with the default five levels and patches of 4 the multiple is 64, so
choose ``patch_size`` (and the levels) to bring the multiple just above the grid, e.g. patches
of 6 pad an 85-point axis to 96, as the authors' Darcy set-up does.

Differences from the authors' code: the 2x down-sampling is a stride-2 convolution rather than
max pooling, the up-sampling a stride-2 transposed convolution (their code's non-bilinear
option); there is no batch normalisation (one sample at a time), so the convolutions start from
variance-preserving weights (normal, variance ``2 / fan-in``, zero bias); the attention logits
are scaled by :math:`1/\sqrt{d_h}`; the masking above is ours.
"""

import functools
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from .._core import check_int, default_float, exact_einsum, exact_tensordot
from .._core._init import draw, subkeys
from ._checks import check_sample, float_input
from ._fno import ChannelMLP, lift_and_project
from ._spectral import periodic_grid

_HIGHEST = lax.Precision.HIGHEST


def _per_axis(name: str, value, d: int) -> tuple[int, ...]:
    """An int or one int per axis, as a d-tuple of positive ints."""
    values = tuple(value) if isinstance(value, (list, tuple)) else (value,) * d
    if len(values) != d:
        raise ValueError(f"{name} needs one value per spatial axis ({d}); got {value!r}.")
    return tuple(check_int(name, v) for v in values)


def _masked_softmax(logits, mask):
    """Softmax over the last axis, the entries where ``mask`` is False left out (weight 0).

    The masked logits become the dtype's most negative number (not ``-inf``): their exponential
    is exactly 0 beside any valid entry, and a row with no valid entry gets uniform weights, not
    ``nan`` (its result is masked out by the caller)."""
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    return jax.nn.softmax(logits, axis=-1)


# ----------------------------------------------------------------------------------------------
# Convolutions on one sample (channels, *spatial)
# ----------------------------------------------------------------------------------------------


class _Conv(eqx.Module):
    """``y_o(n) = b_o + sum_{i,k} w_{oik} x_i(s n + k - r)``: a ``kernel^d`` convolution with
    stride ``s``, zero padding ``r = kernel // 2`` when ``s = 1`` and none when ``s = kernel``."""

    weight: Float[Array, " cout cin *kernel"]
    bias: Float[Array, " cout"]
    stride: int = eqx.field(static=True)

    def __init__(self, d, cin, cout, kernel, stride, *, key, dtype):
        std = math.sqrt(2.0 / (cin * kernel**d))  # variance-preserving before the activation
        self.weight, self.bias = draw(
            key, [("normal", (cout, cin) + (kernel,) * d, std), ("zeros", (cout,), 0.0)], dtype
        )
        self.stride = stride

    def __call__(self, x):
        d = x.ndim - 1
        r = self.weight.shape[-1] // 2 if self.stride == 1 else 0
        y = lax.conv_general_dilated(
            x[None],
            self.weight.astype(x.dtype),
            window_strides=(self.stride,) * d,
            padding=[(r, r)] * d,
            precision=_HIGHEST,
        )[0]
        return y + self.bias.reshape((-1,) + (1,) * d).astype(y.dtype)


class _UpConv(eqx.Module):
    """Stride-2 transposed convolution: ``y_o(2n + a) = b_o + sum_i w_{oia} x_i(n)``,
    ``a in {0, 1}^d`` (every fine cell reads only the coarse cell that covers it)."""

    weight: Float[Array, " cout cin *two"]
    bias: Float[Array, " cout"]

    def __init__(self, d, cin, cout, *, key, dtype):
        std = 1.0 / math.sqrt(cin)  # each fine cell: one linear map of one coarse cell
        self.weight, self.bias = draw(
            key, [("normal", (cout, cin) + (2,) * d, std), ("zeros", (cout,), 0.0)], dtype
        )

    def __call__(self, x):
        d = x.ndim - 1
        y = exact_tensordot(self.weight.astype(x.dtype), x, axes=([1], [0]))  # (o, *a, *n)
        # (o, n_1, a_1, n_2, a_2, ...) -> (o, 2 n_1, 2 n_2, ...)
        perm = [0] + [i for j in range(d) for i in (1 + d + j, 1 + j)]
        y = jnp.transpose(y, perm).reshape((y.shape[0], *(2 * n for n in x.shape[1:])))
        return y + self.bias.reshape((-1,) + (1,) * d).astype(y.dtype)


class _DoubleConv(eqx.Module):
    """Two 3^d convolutions, each followed by the activation; masked cells kept at zero."""

    first: _Conv
    second: _Conv
    activation: Callable = eqx.field(static=True)

    def __init__(self, d, cin, cout, *, key, activation, dtype):
        k1, k2 = subkeys(key, 2)
        self.first = _Conv(d, cin, cout, 3, 1, key=k1, dtype=dtype)
        self.second = _Conv(d, cout, cout, 3, 1, key=k2, dtype=dtype)
        self.activation = activation

    def __call__(self, x, mask):
        x = jnp.where(mask, self.activation(self.first(x)), 0.0)
        return jnp.where(mask, self.activation(self.second(x)), 0.0)


# ----------------------------------------------------------------------------------------------
# The neural spectral block
# ----------------------------------------------------------------------------------------------


class NeuralSpectralBlock(eqx.Module):
    r"""Patches -> latent tokens (attention) -> latent spectral solver -> points (attention).

    See the module doc for the maths. Works on one field ``(channels, *spatial)`` whose every
    axis is a multiple of ``patch_size``; the three steps are public methods on one patch's
    points ``(num_points, channels)``.

    Args:
        num_spatial_dims: axes of the field.
        channels: channels of the field (and of the tokens); a multiple of ``heads``.
        key: PRNG key of the initial weights.
        patch_size: cells per patch, an int or one per axis.
        num_tokens: latent tokens per patch.
        num_basis: ``M``, sine/cosine pairs of the latent spectral solver.
        heads: attention heads.
        per_token_coefficients: one set of basis coefficients per token instead of one shared.
        dtype: of the weights (default: the default float).
    """

    queries: Float[Array, " heads tokens head_dim"]
    key_value: Float[Array, " c two_c"]
    key_value_bias: Float[Array, " two_c"]
    point_query: Float[Array, " c c"]
    point_query_bias: Float[Array, " c"]
    coefficients: Float[Array, " token_or_1 c two_m"]
    patch_size: tuple[int, ...] = eqx.field(static=True)
    heads: int = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        channels: int,
        *,
        key: PRNGKeyArray,
        patch_size: int | Sequence[int] = 4,
        num_tokens: int = 4,
        num_basis: int = 12,
        heads: int = 8,
        per_token_coefficients: bool = False,
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        c = check_int("channels", channels)
        k = check_int("num_tokens", num_tokens)
        m = check_int("num_basis", num_basis)
        h = check_int("heads", heads)
        if c % h:
            raise ValueError(f"channels={c} must be a multiple of heads={h}.")
        self.patch_size = _per_axis("patch_size", patch_size, d)
        self.heads = h
        bound = 1.0 / math.sqrt(c)
        (
            self.queries,
            self.key_value,
            self.key_value_bias,
            self.point_query,
            self.point_query_bias,
            self.coefficients,
        ) = draw(
            key,
            [
                ("normal", (h, k, c // h), bound),
                ("uniform", (c, 2 * c), bound),
                ("uniform", (2 * c,), bound),
                ("uniform", (c, c), bound),
                ("uniform", (c,), bound),
                ("uniform", (k if per_token_coefficients else 1, c, 2 * m), 1.0 / c),
            ],
            dtype or default_float(),
        )

    @property
    def frequencies(self) -> np.ndarray:
        r""":math:`\omega_m = \pi m / M`, ``m = 0, ..., M - 1``."""
        m = self.coefficients.shape[-1] // 2
        return np.pi * np.arange(m) / m

    def _split_heads(self, a):  # (n, c) -> (heads, n, c / heads)
        return jnp.swapaxes(a.reshape(a.shape[0], self.heads, -1), 0, 1)

    def encode(
        self,
        points: Float[Array, "n c"],
        mask: Bool[Array, " n"] | None = None,
    ) -> Float[Array, "tokens c"]:
        """The patch's latent tokens: the learned queries attend to the points (``mask`` False:
        a point left out, e.g. padding)."""
        kv = exact_tensordot(points, self.key_value.astype(points.dtype), axes=1)
        kv = kv + self.key_value_bias.astype(points.dtype)
        keys, values = (self._split_heads(a) for a in jnp.split(kv, 2, axis=-1))
        q = self.queries.astype(points.dtype)
        logits = exact_einsum("htc,hsc->hts", q, keys) / math.sqrt(q.shape[-1])
        weights = _masked_softmax(logits, None if mask is None else mask[None, None, :])
        tokens = exact_einsum("hts,hsc->htc", weights, values) + q
        return jnp.swapaxes(tokens, 0, 1).reshape(tokens.shape[1], -1)

    def latent_spectral(self, tokens: Float[Array, "tokens c"]) -> Float[Array, "tokens c"]:
        """The latent spectral solver (module doc): each channel through its learned
        sine/cosine expansion, plus the identity."""
        w = jnp.asarray(self.frequencies, tokens.dtype)
        phase = tokens[..., None] * w  # (tokens, c, M)
        basis = jnp.concatenate([jnp.sin(phase), jnp.cos(phase)], axis=-1)
        coef = self.coefficients.astype(tokens.dtype)
        return tokens + jnp.sum(basis * coef, axis=-1)

    def decode(
        self, points: Float[Array, "n c"], tokens: Float[Array, "tokens c"]
    ) -> Float[Array, "n c"]:
        """Back to the points: each point queries the tokens (keys = values = tokens)."""
        q = exact_tensordot(points, self.point_query.astype(points.dtype), axes=1)
        q = self._split_heads(q + self.point_query_bias.astype(points.dtype))
        t = self._split_heads(tokens)
        logits = exact_einsum("hnc,htc->hnt", q, t) / math.sqrt(q.shape[-1])
        out = exact_einsum("hnt,htc->hnc", jax.nn.softmax(logits, axis=-1), t)
        return jnp.swapaxes(out, 0, 1).reshape(points.shape) + points

    def __call__(
        self, x: Float[Array, " c *spatial"], mask: Bool[Array, " *spatial"] | None = None
    ) -> Float[Array, " c *spatial"]:
        """The block on a field whose axes are multiples of ``patch_size``: patches of contiguous
        cells (anchored at the first cell) through :meth:`encode`, :meth:`latent_spectral` and
        :meth:`decode`. Cells where ``mask`` is False are left out of the tokens and set to 0."""
        x = float_input(x, self.point_query.dtype)
        c, spatial = x.shape[0], x.shape[1:]
        p = self.patch_size
        if len(spatial) != len(p) or any(n % q for n, q in zip(spatial, p, strict=True)):
            raise ValueError(
                f"NeuralSpectralBlock needs a grid whose axes are multiples of patch_size={p}; "
                f"got {tuple(spatial)}."
            )
        d = len(spatial)
        counts = tuple(n // q for n, q in zip(spatial, p, strict=True))
        split = [s for q, m in zip(p, counts, strict=True) for s in (m, q)]
        # (c, m_1, p_1, ..., m_d, p_d) -> (m_1, ..., m_d, p_1, ..., p_d, c)
        to_patches = [1 + 2 * j for j in range(d)] + [2 + 2 * j for j in range(d)] + [0]
        patches = jnp.transpose(x.reshape(c, *split), to_patches)
        patches = patches.reshape(math.prod(counts), math.prod(p), c)
        if mask is None:
            tokens = jax.vmap(self.encode)(patches)
        else:
            to_patch_mask = [i - 1 for i in to_patches[:-1]]  # the same, without channels
            pm = jnp.transpose(mask.reshape(split), to_patch_mask).reshape(patches.shape[:2])
            tokens = jax.vmap(self.encode)(patches, pm)
        tokens = jax.vmap(self.latent_spectral)(tokens)
        y = jax.vmap(self.decode)(patches, tokens)
        y = y.reshape(*counts, *p, c)
        y = jnp.transpose(y, np.argsort(to_patches)).reshape(x.shape)
        return y if mask is None else jnp.where(mask, y, 0.0)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class _Down(eqx.Module):
    reduce: _Conv
    convs: _DoubleConv

    def __call__(self, x, mask):
        return self.convs(jnp.where(mask, self.reduce(x), 0.0), mask)


class _Up(eqx.Module):
    expand: _UpConv
    convs: _DoubleConv

    def __call__(self, coarse, skip, mask):
        x = jnp.where(mask, self.expand(coarse), 0.0)
        return self.convs(jnp.concatenate([skip, x], axis=0), mask)


class LSM(eqx.Module):
    r"""Latent Spectral Model on one sample ``(in_channels, *spatial)``; batch with ``jax.vmap``.

    See the module doc ("Solving High-Dimensional PDEs with Latent Spectral Models").

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: channels after the lifting (the finest level's).
        key: PRNG key of the initial weights.
        channel_multipliers: level ``l`` has ``width * channel_multipliers[l]`` channels; the
            number of levels (grids) is its length. Default ``(1, 2, 4, 8, 8)``: the paper's five
            scales.
        patch_size: cells per patch on every level, an int or one per axis.
        num_tokens: latent tokens per patch.
        num_basis: sine/cosine pairs of each latent spectral solver.
        heads: attention heads (must divide every level's channels).
        per_token_coefficients: see :class:`NeuralSpectralBlock`.
        projection_channels: hidden width of the projection MLP (0: one linear map).
        activation: of the convolutions and the projection (default :func:`jax.nn.gelu`).
        positional_embedding: append the grid coordinates ``n / N`` as inputs.
        dtype: of the weights (default: the default float).
    """

    lifting: ChannelMLP
    first: _DoubleConv
    downs: tuple[_Down, ...]
    ups: tuple[_Up, ...]
    blocks: tuple[NeuralSpectralBlock, ...]
    projection: ChannelMLP
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    patch_size: tuple[int, ...] = eqx.field(static=True)
    positional_embedding: bool = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        key: PRNGKeyArray,
        channel_multipliers: Sequence[int] = (1, 2, 4, 8, 8),
        patch_size: int | Sequence[int] = 4,
        num_tokens: int = 4,
        num_basis: int = 12,
        heads: int = 8,
        per_token_coefficients: bool = False,
        projection_channels: int = 128,
        activation: Callable = jax.nn.gelu,
        positional_embedding: bool = True,
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        check_int("width", width)
        check_int("heads", heads)
        if not isinstance(channel_multipliers, (list, tuple)) or not channel_multipliers:
            raise ValueError(
                f"channel_multipliers must be a non-empty list of ints; got {channel_multipliers!r}."
            )
        channels = [width * check_int("channel_multipliers", m) for m in channel_multipliers]
        for c in channels:
            if c % heads:
                raise ValueError(
                    f"heads={heads} must divide every level's channels width * "
                    f"channel_multipliers = {channels}."
                )
        dtype = dtype or default_float()
        self.patch_size = _per_axis("patch_size", patch_size, d)
        self.lifting, self.projection, rest = lift_and_project(
            key,
            d,
            in_channels,
            out_channels,
            width,
            lifting_channels=0,
            projection_channels=projection_channels,
            positional_embedding=positional_embedding,
            activation=activation,
            init="uniform",
            dtype=dtype,
        )
        k_first, k_down, k_up, k_blocks = subkeys(rest, 4)
        conv_kw = dict(activation=activation, dtype=dtype)
        self.first = _DoubleConv(d, width, width, key=k_first, **conv_kw)
        downs, ups = [], []
        for lvl, (kd, ku) in enumerate(
            zip(subkeys(k_down, len(channels) - 1), subkeys(k_up, len(channels) - 1), strict=True)
        ):
            fine, coarse = channels[lvl], channels[lvl + 1]
            k1, k2 = subkeys(kd, 2)
            downs.append(
                _Down(
                    _Conv(d, fine, coarse, 2, 2, key=k1, dtype=dtype),
                    _DoubleConv(d, coarse, coarse, key=k2, **conv_kw),
                )
            )
            k1, k2 = subkeys(ku, 2)
            ups.append(
                _Up(
                    _UpConv(d, coarse, fine, key=k1, dtype=dtype),
                    _DoubleConv(d, 2 * fine, fine, key=k2, **conv_kw),
                )
            )
        self.downs, self.ups = tuple(downs), tuple(ups)
        self.blocks = tuple(
            NeuralSpectralBlock(
                d,
                c,
                key=kb,
                patch_size=self.patch_size,
                num_tokens=num_tokens,
                num_basis=num_basis,
                heads=heads,
                per_token_coefficients=per_token_coefficients,
                dtype=dtype,
            )
            for c, kb in zip(channels, subkeys(k_blocks, len(channels)), strict=True)
        )
        self.num_spatial_dims = d
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.positional_embedding = bool(positional_embedding)

    @property
    def multiple(self) -> tuple[int, ...]:
        """Every padded axis is a multiple of ``2**(levels - 1) * patch_size``."""
        scale = 2 ** (len(self.blocks) - 1)
        return tuple(scale * p for p in self.patch_size)

    def padded_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """The smallest grid holding ``spatial_shape`` whose axes are multiples of
        :attr:`multiple` (what :meth:`__call__` pads to by default)."""
        return tuple(-(-int(n) // m) * m for n, m in zip(spatial_shape, self.multiple, strict=True))

    def _level_masks(self, spatial, padded):
        """Valid cells of each level: a coarse cell is valid when it covers a valid fine cell."""
        masks, valid, shape = [], tuple(spatial), tuple(padded)
        for _ in self.blocks:
            d = len(shape)
            axes = [
                (np.arange(s) < v).reshape((-1,) + (1,) * (d - 1 - j))
                for j, (s, v) in enumerate(zip(shape, valid, strict=True))
            ]
            masks.append(jnp.asarray(functools.reduce(np.logical_and, axes)))
            valid = tuple(-(-v // 2) for v in valid)
            shape = tuple(s // 2 for s in shape)
        return masks

    def __call__(
        self,
        x: Float[Array, " cin *spatial"],
        *,
        padded_shape: Sequence[int] | None = None,
    ) -> Float[Array, " cout *spatial"]:
        """The operator on one sample.

        Args:
            x: ``(in_channels, *spatial)``, any grid size.
            padded_shape: the grid the U-Net runs on (default :meth:`padded_shape`); each axis
                at least the input's and a multiple of :attr:`multiple`. The output does not
                depend on it (module doc).
        """
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="LSM"
        )
        x = jnp.asarray(x)
        spatial = x.shape[1:]
        if padded_shape is None:
            padded = self.padded_shape(spatial)
        else:
            padded = tuple(int(n) for n in padded_shape)
            if len(padded) != len(spatial) or any(
                p < n or p % m for p, n, m in zip(padded, spatial, self.multiple, strict=True)
            ):
                raise ValueError(
                    f"padded_shape must hold the grid {tuple(spatial)} with every axis a "
                    f"multiple of {self.multiple}; got {padded_shape!r}."
                )
        if self.positional_embedding:
            grid = periodic_grid(spatial, dtype=x.dtype)
            x = jnp.concatenate([x, grid.astype(x.dtype)], axis=0)
        v = self.lifting(x)
        v = jnp.pad(v, [(0, 0)] + [(0, p - n) for p, n in zip(padded, spatial, strict=True)])
        masks = self._level_masks(spatial, padded)
        features = [self.first(v, masks[0])]
        for down, mask in zip(self.downs, masks[1:], strict=True):
            features.append(down(features[-1], mask))
        y = self.blocks[-1](features[-1], masks[-1])
        for lvl in reversed(range(len(self.ups))):
            skip = self.blocks[lvl](features[lvl], masks[lvl])
            y = self.ups[lvl](y, skip, masks[lvl])
        y = y[(slice(None), *(slice(0, n) for n in spatial))]
        return self.projection(y)
