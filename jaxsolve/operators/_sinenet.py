r"""SineNet: a time-stepper made of sequentially connected U-Nets ("waves").

"SineNet: Learning Temporal Dynamics in Time-Dependent Partial Differential Equations", Zhang,
Xu, Ji et al. A U-Net maps the last frames to the next one in a single pass, so its skip
connections carry features of the *input* time to the decoder, which must produce the *output*
time: the features are misaligned in time (the larger the time step, the worse). SineNet splits
the step into :math:`K` stages, each a small U-Net :math:`V_k` (a "wave") that moves a latent
state a fraction of the way, with a residual between waves:

.. math:: v_0 = P(u^{t-h+1}, \dots, u^t),\qquad v_k = v_{k-1} + V_k(v_{k-1})
   \quad (k = 1, \dots, K),\qquad u^{t+1} = Q(v_K),

with :math:`P` and :math:`Q` 3-wide convolutions (the input frames stacked on the channel axis,
``(history * C, *spatial) -> (C, *spatial)``, the signature of
:func:`jaxsolve.train.rollout_loss` and :func:`jaxsolve.pde.rollout`). Each wave is a U-Net of
``depth`` levels, channels :math:`c_l = \lfloor w\, m^l \rfloor` at level ``l`` (width :math:`w`,
``channel_multiplier`` :math:`m`):

* down, level :math:`l = 1..L`: average pooling by 2, then a block; with ``disentangle`` the
  block (from level 2 on) also receives the wave's input :math:`v_{k-1}` pooled to the same grid,
  concatenated on the channels (the paper's disentangled downsampling: each level sees the
  input at its own scale directly — parallel multi-scale processing — beside the features of
  the level above — sequential processing);
* up, level :math:`l = L..1`: linear interpolation by 2, concatenation with the down path's
  features on that grid (the skip connection within the wave), then a block;
* a block is ``conv3-norm-act-conv3-norm-act`` plus a pointwise (1-wide) linear shortcut of the
  pooled (down) or interpolated (up) features, as in the authors' code; the norm is a group norm
  over the channels of a group and the whole grid.

The last up block's output is the wave's update :math:`V_k(v_{k-1})`; a wave whose last
normalisation has zero scale and shift and whose last shortcut is zero is exactly the identity on
the residual stream (``act(0) = 0`` for GELU, ReLU, SiLU, tanh).

Boundaries: ``padding="circular"`` (periodic problems: every convolution wraps, interpolation
wraps, and the whole map commutes with circular shifts by multiples of :math:`2^L` on grids
divisible by :math:`2^L` — the paper's argument for circular padding: shift equivariance is the
translation symmetry of the PDE) or ``"zeros"`` (convolutions see zeros beyond the boundary,
interpolation repeats the edge value).

Any number of spatial axes and any grid: each wave pads its input on every axis to the next
multiple of :math:`2^L` (``extra // 2`` cells before, the rest after; ``"circular"`` wraps
the field around, ``"zeros"`` appends zeros) and crops its update back, so the residual stream,
:math:`P` and :math:`Q` always live on the input grid. On a grid that is not a multiple of
:math:`2^L` the padded cells are an approximation (with ``"circular"`` a seam where the wrapped
field meets itself on the padded period, and the shift equivariance holds only on divisible
grids).

Differences from the authors' code: linear instead of bicubic interpolation (the same stencil on
every axis, for any number of axes), and the pad-and-crop for grids not divisible by
:math:`2^L`. With ``waves=8, depth=4, width=64, channel_multiplier=1.425`` in 2-D it has the
authors' SineNet-8 structure and parameter count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float, exact_tensordot
from .._core._init import draw
from ._checks import check_real, check_sample, float_input
from ._local import _padded_correlation

_PADDINGS = {"circular", "zeros"}
# The names the local kernels' correlation and jnp.pad use for the same boundary conditions.
_CORRELATION_PADDING = {"circular": "periodic", "zeros": "zeros"}
_PAD_MODE = {"circular": "wrap", "zeros": "constant"}


class _Conv(eqx.Module):
    """Convolution with an odd, centred ``kernel_size^d`` stencil and a bias. Built with empty
    weights (with leading ``stack`` axes for the waves); :func:`_draw_convs` fills those of a
    whole network in one draw."""

    weight: Float[Array, " cout cin *kernel"]
    bias: Float[Array, " cout"]
    padding: str = eqx.field(static=True)

    def __init__(self, d, cin, cout, kernel_size, padding, stack=()):
        self.weight = np.empty((*stack, cout, cin) + (kernel_size,) * d)
        self.bias = np.empty((*stack, cout))
        self.padding = padding

    def __call__(self, x):
        d = x.ndim - 1
        w = self.weight.astype(x.dtype)
        if w.shape[-1] == 1:
            y = exact_tensordot(w.reshape(w.shape[:2]), x, axes=1)
        else:
            y = _padded_correlation(x, w, _CORRELATION_PADDING[self.padding], 1)
        return y + self.bias.astype(x.dtype).reshape((-1,) + (1,) * d)


class _GroupNorm(eqx.Module):
    """Normalisation over the channels of each group and the whole grid, then a per-channel
    scale and shift (PyTorch's ``GroupNorm``, ``eps = 1e-5``)."""

    scale: Float[Array, " c"]
    shift: Float[Array, " c"]
    groups: int = eqx.field(static=True)

    def __init__(self, channels, groups, dtype, stack=()):
        if channels % groups:
            raise ValueError(
                f"num_groups={groups} must divide the channels of every block; {channels} is "
                f"not a multiple."
            )
        # NumPy, then one transfer: no compiled program per shape at construction.
        self.scale = jnp.asarray(np.ones((*stack, channels)), dtype)
        self.shift = jnp.asarray(np.zeros((*stack, channels)), dtype)
        self.groups = groups

    def __call__(self, x):
        c, spatial = x.shape[0], x.shape[1:]
        g = x.reshape((self.groups, -1))
        mean = jnp.mean(g, axis=1, keepdims=True)
        var = jnp.mean(jnp.square(g - mean), axis=1, keepdims=True)
        g = (g - mean) * jax.lax.rsqrt(var + 1e-5)
        bcast = (c,) + (1,) * len(spatial)
        scale = self.scale.astype(x.dtype).reshape(bcast)
        shift = self.shift.astype(x.dtype).reshape(bcast)
        return g.reshape(x.shape) * scale + shift


class _Block(eqx.Module):
    """``act(norm(conv3(act(norm(conv3(a)))))) + shortcut(s)``: ``a`` the block's input (with
    any concatenated skip or disentangled branch), ``s`` the features it refines."""

    conv1: _Conv
    norm1: _GroupNorm | None
    conv2: _Conv
    norm2: _GroupNorm | None
    shortcut: _Conv
    activation: Callable = eqx.field(static=True)

    def __init__(self, d, cin, cshort, cout, *, padding, groups, norm, activation, dtype, stack):
        self.conv1 = _Conv(d, cin, cout, 3, padding, stack)
        self.conv2 = _Conv(d, cout, cout, 3, padding, stack)
        self.norm1 = _GroupNorm(cout, groups, dtype, stack) if norm else None
        self.norm2 = _GroupNorm(cout, groups, dtype, stack) if norm else None
        self.shortcut = _Conv(d, cshort, cout, 1, padding, stack)
        self.activation = activation

    def __call__(self, a, s):
        h = self.conv1(a)
        h = self.activation(h if self.norm1 is None else self.norm1(h))
        h = self.conv2(h)
        h = self.activation(h if self.norm2 is None else self.norm2(h))
        return h + self.shortcut(s)


def _draw_convs(tree, key, dtype):
    """``tree`` with the weights and biases of all its convolutions drawn in one call, uniform
    in :math:`\\pm 1/\\sqrt{\\text{fan-in}}` (PyTorch's default): one random program for the
    whole network instead of one per weight shape."""

    def convs(t):
        nodes = jax.tree_util.tree_leaves(t, is_leaf=lambda n: isinstance(n, _Conv))
        return [n for n in nodes if isinstance(n, _Conv)]

    specs = []
    for conv in convs(tree):
        fan_in = conv.weight.size // conv.bias.size  # (*stack, cout, cin, *kernel) / (*stack, cout)
        bound = 1.0 / math.sqrt(fan_in)
        specs += [("uniform", conv.weight.shape, bound), ("uniform", conv.bias.shape, bound)]
    arrays = draw(key, specs, dtype)
    return eqx.tree_at(lambda t: [a for c in convs(t) for a in (c.weight, c.bias)], tree, arrays)


def _pool(x):
    """Average over non-overlapping ``2^d`` cells (every spatial size even)."""
    d = x.ndim - 1
    split = [x.shape[0]]
    for n in x.shape[1:]:
        split += [n // 2, 2]
    return jnp.mean(x.reshape(split), axis=tuple(range(2, 2 * d + 1, 2)))


def _upsample(x, padding: str):
    r"""Linear interpolation to twice the grid on every axis, cell-centred: fine cell
    :math:`2j` is :math:`\tfrac34 x_j + \tfrac14 x_{j-1}`, fine cell :math:`2j+1` is
    :math:`\tfrac34 x_j + \tfrac14 x_{j+1}`; the neighbour past the boundary wraps
    (``"circular"``) or is the edge value (``"zeros"``, as PyTorch's ``interpolate``)."""
    for axis in range(1, x.ndim):
        if padding == "circular":
            before, after = jnp.roll(x, 1, axis), jnp.roll(x, -1, axis)
        else:
            n = x.shape[axis]
            first = jax.lax.slice_in_dim(x, 0, 1, axis=axis)
            last = jax.lax.slice_in_dim(x, n - 1, n, axis=axis)
            before = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
            after = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last], axis)
        even = 0.75 * x + 0.25 * before
        odd = 0.75 * x + 0.25 * after
        both = jnp.stack([even, odd], axis=axis + 1)
        shape = list(x.shape)
        shape[axis] *= 2
        x = both.reshape(shape)
    return x


def _level_channels(width: int, depth: int, channel_multiplier: float) -> tuple[int, ...]:
    r"""Channels :math:`c_l = \lfloor w\, m^l \rfloor` of the levels ``l = 0..depth`` of a wave
    (level 0 is the residual stream's ``width``)."""
    return tuple(int(width * channel_multiplier**level) for level in range(depth + 1))


class _Wave(eqx.Module):
    """One wave :math:`V_k` of :class:`SineNet`: a U-Net on a grid divisible by ``2^depth``
    (the module doc), ``(width, *spatial) -> (width, *spatial)``. Built with leading ``stack``
    axes on every array, it holds several waves of the same structure."""

    down: tuple[_Block, ...]
    up: tuple[_Block, ...]
    padding: str = eqx.field(static=True)
    disentangle: bool = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims,
        channels,
        *,
        padding,
        groups,
        norm,
        activation,
        disentangle,
        dtype,
        stack=(),
    ):
        d, depth = num_spatial_dims, len(channels) - 1
        kw = dict(
            padding=padding,
            groups=groups,
            norm=norm,
            activation=activation,
            dtype=dtype,
            stack=stack,
        )
        down = []
        for level in range(1, depth + 1):
            # The disentangled branch joins from level 2 on (at level 1 it is the features).
            branch = channels[0] if disentangle and level > 1 else 0
            cin, cout = channels[level - 1], channels[level]
            down.append(_Block(d, cin + branch, cin, cout, **kw))
        up = []
        for level in range(depth, 0, -1):
            cin, cout = channels[level], channels[level - 1]
            up.append(_Block(d, cin + cout, cin, cout, **kw))
        self.down = tuple(down)
        self.up = tuple(up)
        self.padding = padding
        self.disentangle = bool(disentangle)

    def __call__(self, v):
        features = [v]
        h = branch = v
        for level, block in enumerate(self.down, start=1):
            h = _pool(h)
            if self.disentangle:
                branch = _pool(branch)
            a = jnp.concatenate([h, branch], axis=0) if self.disentangle and level > 1 else h
            h = block(a, h)
            features.append(h)
        h = features.pop()
        for block in self.up:
            u = _upsample(h, self.padding)
            h = block(jnp.concatenate([features.pop(), u], axis=0), u)
        return h


def _pad_widths(spatial, multiple):
    """Cells added before and after each axis to reach the next multiple of ``multiple``."""
    widths = []
    for n in spatial:
        extra = -n % multiple
        widths.append((extra // 2, extra - extra // 2))
    return widths


class SineNet(eqx.Module):
    r"""SineNet time-stepper ``(in_channels, *spatial) -> (out_channels, *spatial)`` on one
    sample (the module doc); batch with :func:`jax.vmap`.

    For time stepping, ``in_channels = history * C`` (the last ``history`` frames stacked on the
    channel axis, oldest first) and ``out_channels = C``.

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: channels of the residual stream between waves (the paper's hidden channels).
        key: PRNG key of the initial weights.
        waves: number :math:`K` of U-Nets connected in sequence (default 8, SineNet-8).
        depth: downsamplings by 2 in each wave (default 4); grids are padded to multiples of
            ``2**depth`` inside each wave.
        channel_multiplier: channel growth per level, :math:`c_l = \lfloor w m^l \rfloor`
            (default 1.425, the authors' SineNet-8).
        padding: ``"circular"`` (default; periodic problems, shift equivariant) or ``"zeros"``.
        num_groups: groups of the group norms (default 1); must divide every level's channels.
        norm: use the group norms (default True).
        disentangle: feed each wave's pooled input to its down blocks (default True).
        activation: default :func:`jax.nn.gelu`; must map 0 to 0 for the identity-wave
            property of the module doc.
        dtype: of the weights (default: the default float).

    Attributes:
        lifting, projection: :math:`P` and :math:`Q`.
        waves: the :math:`K` waves as one module whose arrays carry a leading axis of length
            :math:`K` (index ``k`` is wave ``k``), run by :func:`jax.lax.scan`: tracing and
            compilation do not grow with :math:`K`.
    """

    lifting: _Conv
    waves: _Wave
    projection: _Conv
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    padding: str = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        key: PRNGKeyArray,
        waves: int = 8,
        depth: int = 4,
        channel_multiplier: float = 1.425,
        padding: str = "circular",
        num_groups: int = 1,
        norm: bool = True,
        disentangle: bool = True,
        activation: Callable = jax.nn.gelu,
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        cin = check_int("in_channels", in_channels)
        cout = check_int("out_channels", out_channels)
        width = check_int("width", width)
        num_waves = check_int("waves", waves)
        depth = check_int("depth", depth)
        mult = check_real("channel_multiplier", channel_multiplier, minimum=0.0, strict=True)
        check_choice("padding", padding, _PADDINGS)
        groups = check_int("num_groups", num_groups)
        if not callable(activation):
            raise TypeError(f"activation must be callable; got {activation!r}.")
        channels = _level_channels(width, depth, mult)
        if min(channels) < 1:
            raise ValueError(
                f"channel_multiplier={channel_multiplier} gives levels with no channels: "
                f"{list(channels)} for width={width}, depth={depth}."
            )
        if norm and any(c % groups for c in channels):
            raise ValueError(
                f"num_groups={num_groups} must divide the channels of every level, "
                f"{list(channels)}."
            )
        dtype = dtype or default_float()
        # The K waves share one structure: one module whose arrays have a leading axis K, run
        # by lax.scan, so tracing and compilation do not grow with K.
        waves = _Wave(
            d,
            channels,
            padding=padding,
            groups=groups,
            norm=bool(norm),
            activation=activation,
            disentangle=disentangle,
            dtype=dtype,
            stack=(num_waves,),
        )
        layers = (
            _Conv(d, cin, width, 3, padding),
            waves,
            _Conv(d, width, cout, 3, padding),
        )
        self.lifting, self.waves, self.projection = _draw_convs(layers, key, dtype)
        self.num_spatial_dims = d
        self.in_channels = cin
        self.out_channels = cout
        self.depth = depth
        self.padding = padding

    def _stream(self, x, keep_states: bool):
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="SineNet"
        )
        x = float_input(x, self.lifting.weight.dtype)
        spatial = x.shape[1:]
        widths = _pad_widths(spatial, 2**self.depth)
        crop = (
            slice(None),
            *(slice(lo, lo + n) for (lo, _), n in zip(widths, spatial, strict=True)),
        )
        v0 = self.lifting(x)

        def wave_step(v, wave):
            padded = jnp.pad(v, [(0, 0), *widths], mode=_PAD_MODE[self.padding])
            v = v + wave(padded)[crop]
            return v, (v if keep_states else None)

        v, states = lax.scan(wave_step, v0, self.waves)
        return v, (jnp.concatenate([v0[None], states]) if keep_states else None)

    @property
    def num_waves(self) -> int:
        """:math:`K`, the leading axis of every array of :attr:`waves`."""
        return jax.tree_util.tree_leaves(self.waves)[0].shape[0]

    def latent_states(
        self, x: Float[Array, " cin *spatial"]
    ) -> Float[Array, " waves_plus_one width *spatial"]:
        r"""The residual stream :math:`v_0, \dots, v_K`, shape ``(K + 1, width, *spatial)``."""
        return self._stream(x, keep_states=True)[1]

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        return self.projection(self._stream(x, keep_states=False)[0])
