r"""Fourier Neural Operator (FNO) and its Tucker-factorised variant (TFNO).

.. math:: v_0 = P(u \oplus x),\qquad
   v_{l+1} = \sigma\big(\mathcal K_l v_l + S_l v_l\big),\qquad
   \mathcal G(u) = Q(v_L)

("Fourier Neural Operator for Parametric Partial Differential Equations", Li et al.): a pointwise
lifting MLP :math:`P` (on the input and, optionally, the grid coordinates :math:`x`), ``n_layers``
Fourier blocks of a :class:`SpectralConv` :math:`\mathcal K_l` plus a pointwise skip :math:`S_l`
(linear, identity or soft-gating), and a pointwise projection MLP :math:`Q`; no activation after
the last block. Optionally each block also carries a pointwise channel MLP with its own skip, as
neuraloperator's ``FNOBlocks`` (``channel_mlp_expansion``). TFNO is the same network with Tucker
weights ("Multi-Grid Tensorized Fourier Neural Operator for High-Resolution PDEs", Kossaifi et al.).

Domain padding extends the box by a fraction of each axis before the Fourier blocks (for
non-periodic data) and crops it after. The fraction is applied *exactly*: a fraction ``f`` on an
axis of ``N`` points pads ``f N`` cells, which must be a whole number. Rounding ``f N`` (as
neuraloperator's ``DomainPadding`` does) changes the padded period from one resolution to the
next, so the spectral weights would act on different physical frequencies and a model evaluated
at a higher resolution would no longer be the model that was trained.
"""

import itertools
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float
from .._core._init import draw, subkeys
from ._checks import check_real, check_sample, float_input
from ._layout import AbstractChannelsLast
from ._spectral import periodic_grid
from ._spectral_conv import SpectralConv

_SKIPS = {"linear", "identity", "soft-gating", None}


class ChannelMLP(AbstractChannelsLast):
    """Pointwise MLP over the channel axis of ``(channels, *spatial)``: a 1x1 convolution stack.

    With ``init="uniform"`` weights and biases start uniform in :math:`\\pm 1/\\sqrt{\\text{fan-in}}`
    (PyTorch's default for ``Conv1d``, as neuraloperator's ``ChannelMLP``); ``init="normal"`` draws
    weights from :math:`N(0, 1/\\text{fan-in})` with zero biases (variance-preserving for linear
    maps). ``activation`` between layers, not after the last.

    Args:
        in_channels, out_channels: channels in and out.
        hidden_channels: width of the hidden layers (default ``in_channels``).
        n_layers: number of linear maps (1: one 1x1 convolution, no activation).
        key: PRNG key of the initial weights.
        activation: the nonlinearity between layers (default :func:`jax.nn.gelu`).
        use_bias: whether each layer adds a bias.
        init: ``"uniform"`` or ``"normal"`` (see above).
        dtype: of the weights (default: the default float).
    """

    weights: tuple[Float[Array, " cout cin"], ...]
    biases: tuple[Float[Array, " cout"], ...] | None
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        hidden_channels: int | None = None,
        n_layers: int = 2,
        *,
        key: PRNGKeyArray,
        activation: Callable = jax.nn.gelu,
        use_bias: bool = True,
        init: str = "uniform",
        dtype=None,
    ):
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("n_layers", n_layers)
        if hidden_channels is not None:
            check_int("hidden_channels", hidden_channels)
        check_choice("init", init, {"uniform", "normal"})
        hidden = in_channels if hidden_channels is None else hidden_channels
        sizes = [in_channels] + [hidden] * (n_layers - 1) + [out_channels]
        specs = []
        for a, b in itertools.pairwise(sizes):
            if init == "uniform":
                bound = 1.0 / math.sqrt(a)
                specs += [("uniform", (b, a), bound), ("uniform", (b,), bound)]
            else:
                specs += [("normal", (b, a), 1.0 / math.sqrt(a)), ("zeros", (b,), 0.0)]
        arrays = draw(key, specs, dtype)
        self.weights = tuple(arrays[0::2])
        self.biases = tuple(arrays[1::2]) if use_bias else None
        self.activation = activation

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        x = float_input(x, self.weights[0].dtype)
        n = len(self.weights)
        for i, w in enumerate(self.weights):
            x = jnp.tensordot(w.astype(x.dtype), x, axes=1)
            if self.biases is not None:
                x = x + self.biases[i].reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)
            if i < n - 1:
                x = self.activation(x)
        return x

    @classmethod
    def pointwise(
        cls,
        in_channels: int,
        out_channels: int,
        hidden_channels: int,
        *,
        key: PRNGKeyArray,
        activation: Callable = jax.nn.gelu,
        init: str = "uniform",
        dtype=None,
    ) -> "ChannelMLP":
        """The lifting or projection map of an operator: one linear map when
        ``hidden_channels`` is 0, else two with ``hidden_channels`` between them."""
        n_layers = 2 if hidden_channels else 1
        return cls(
            in_channels,
            out_channels,
            hidden_channels or None,
            n_layers,
            key=key,
            activation=activation,
            init=init,
            dtype=dtype,
        )

    def channels_last(self, x: Float[Array, "*spatial cin"]) -> Float[Array, "*spatial cout"]:
        """The same map on a channels-last field (the FNO's internal layout)."""
        x = float_input(x, self.weights[0].dtype)
        n = len(self.weights)
        for i, w in enumerate(self.weights):
            x = x @ w.T.astype(x.dtype)
            if self.biases is not None:
                x = x + self.biases[i].astype(x.dtype)
            if i < n - 1:
                x = self.activation(x)
        return x


class SoftGating(AbstractChannelsLast):
    """Per-channel scaling ``w_c x_c`` (weights start at one), neuraloperator's soft-gating skip."""

    weight: Float[Array, " c"]

    def __init__(self, channels: int, dtype=None):
        check_int("channels", channels)
        self.weight = jnp.asarray(np.ones((channels,)), dtype or default_float())

    def __call__(self, x):
        x = float_input(x, self.weight.dtype)
        return self.weight.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype) * x

    def channels_last(self, x):
        x = float_input(x, self.weight.dtype)
        return self.weight.astype(x.dtype) * x


class _Identity(AbstractChannelsLast):
    def __call__(self, x):
        return x

    def channels_last(self, x):
        return x


def _make_skip(kind, channels, key, dtype):
    check_choice("skip", kind, _SKIPS)
    if kind == "linear":
        return ChannelMLP(channels, channels, n_layers=1, key=key, use_bias=False, dtype=dtype)
    if kind == "soft-gating":
        return SoftGating(channels, dtype)
    if kind == "identity":
        return _Identity()
    return None


class FNOBlock(eqx.Module):
    """One Fourier block: ``conv(x) + skip(x)``, then (optionally) ``mlp(.) + mlp_skip(x)``.

    Every layer it holds is an :class:`AbstractChannelsLast`: the block runs channels-last.
    """

    conv: SpectralConv
    skip: AbstractChannelsLast | None
    mlp: ChannelMLP | None
    mlp_skip: AbstractChannelsLast | None
    activation: Callable = eqx.field(static=True)

    def __call__(self, x: Float[Array, "*spatial c"], *, last: bool) -> Float[Array, "*spatial c"]:
        """The block on a channels-last field ``(*spatial, width)``, the FNO's internal layout."""
        y = self.conv.channels_last(x)
        if self.skip is not None:
            y = y + self.skip.channels_last(x)
        if not last:
            y = self.activation(y)
        if self.mlp is not None:
            y = self.mlp.channels_last(y)
            if self.mlp_skip is not None:
                # The channel-MLP skip starts from the block input, as in neuraloperator.
                y = y + self.mlp_skip.channels_last(x)
            if not last:
                y = self.activation(y)
        return y


def _normalize_padding(domain_padding, d):
    """One finite fraction >= 0 per spatial axis, or None for no padding."""
    if domain_padding is None:
        return None
    if isinstance(domain_padding, (tuple, list)):
        if len(domain_padding) != d:
            raise ValueError(
                f"domain_padding needs one fraction per spatial axis ({d}); got {domain_padding!r}."
            )
        fr = tuple(check_real("domain_padding", f, minimum=0.0) for f in domain_padding)
    else:
        fr = (check_real("domain_padding", domain_padding, minimum=0.0),) * d
    return None if all(f == 0 for f in fr) else fr


def lift_and_project(
    key,
    num_spatial_dims,
    in_channels,
    out_channels,
    width,
    *,
    lifting_channels,
    projection_channels,
    positional_embedding,
    activation,
    init,
    dtype,
):
    """The pointwise ends of an operator: lifting ``P`` and projection ``Q`` (:class:`FNO`,
    :class:`T1`).

    Args:
        key: split as ``(P, Q, rest)``.
        num_spatial_dims, in_channels, out_channels, width: the operator's sizes (positive ints).
        lifting_channels, projection_channels: hidden widths of ``P`` and ``Q`` (ints >= 0; 0
            is one linear map).
        positional_embedding: ``P`` also takes the ``num_spatial_dims`` grid coordinates.
        activation, init, dtype: as :class:`ChannelMLP`.

    Returns:
        ``(lifting, projection, rest)``, ``rest`` the key left for the layers between them.
    """
    for name, size in (
        ("num_spatial_dims", num_spatial_dims),
        ("in_channels", in_channels),
        ("out_channels", out_channels),
        ("width", width),
    ):
        check_int(name, size)
    check_int("lifting_channels", lifting_channels, minimum=0)
    check_int("projection_channels", projection_channels, minimum=0)
    k_lift, k_proj, rest = subkeys(key, 3)
    lift_in = in_channels + (num_spatial_dims if positional_embedding else 0)
    kw = dict(activation=activation, init=init, dtype=dtype)
    lifting = ChannelMLP.pointwise(lift_in, width, lifting_channels, key=k_lift, **kw)
    projection = ChannelMLP.pointwise(width, out_channels, projection_channels, key=k_proj, **kw)
    return lifting, projection, rest


def padding_cells(fractions: Sequence[float], spatial_shape: Sequence[int]) -> tuple[int, ...]:
    """Cells ``f N`` added per axis; ``ValueError`` unless each is a whole number.

    A whole number of cells at every resolution is what keeps the padded period a fixed multiple
    of the box, so that super-resolution evaluates the trained operator.
    """
    cells = []
    for j, (f, n) in enumerate(zip(fractions, spatial_shape, strict=True)):
        p = f * n
        q = round(p)
        if abs(p - q) > 1e-6 * max(1.0, p):
            lo, hi = math.floor(p), math.ceil(p)
            raise ValueError(
                f"domain_padding={f} on spatial axis {j} with {n} points asks for {p:g} cells; the "
                f"padding must be a whole number of cells so that the padded period is the same "
                f"fraction of the box at every resolution (rounding would change the operator "
                f"between resolutions). Use e.g. {lo}/{n}={lo / n:g} or {hi}/{n}={hi / n:g}, or "
                f"a grid where {f} * N is an integer."
            )
        cells.append(int(q))
    return tuple(cells)


class FNO(eqx.Module):
    r"""Fourier Neural Operator on one sample ``(in_channels, *spatial)``; batch with ``jax.vmap``.

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: hidden channels of the Fourier blocks.
        modes: frequencies kept per sign on each axis (see :class:`SpectralConv` for the
            conversion from neuraloperator's ``n_modes``).
        n_layers: number of Fourier blocks.
        key: PRNG key of the initial weights.
        lifting_channels, projection_channels: hidden width of the lifting / projection MLPs
            (default ``2 * width``; ``0`` makes the MLP a single linear layer).
        skip: ``"linear"`` (default), ``"identity"``, ``"soft-gating"`` or ``None``.
        activation: pointwise nonlinearity (default :func:`jax.nn.gelu`).
        channel_mlp_expansion: ``None`` (default, the original FNO block) or the hidden ratio of
            a per-block channel MLP (neuraloperator uses 0.5) with skip ``channel_mlp_skip``.
        channel_mlp_skip: the skip of that channel MLP (same choices as ``skip``).
        domain_padding, padding_mode: fraction of each axis to pad (a float or one per axis) and
            ``"symmetric"`` (``f N`` cells on both ends) or ``"one-sided"`` (``f N`` cells at the
            end); see the module doc.
        positional_embedding: append the periodic grid coordinates
            :math:`x_n = n / N \in [0, 1)` as extra input channels.
        factorization, rank: spectral weight factorisation (``None``, ``"tucker"``, ``"cp"``);
            see :class:`SpectralConv`.
        spectral_bias: a per-channel bias in each spectral convolution (neuraloperator's
            placement).
        transform: how the truncated Fourier transforms are computed (``"auto"``, ``"dft"``,
            ``"fft"``, ``"pruned-fft"``; see :class:`SpectralConv`): the same function, different
            speed.
        dtype: of the weights (default: the default float).

    With ``channel_mlp_expansion=0.5`` and ``activation=partial(jax.nn.gelu,
    approximate=False)`` this is neuraloperator 2.0's default ``FNO`` with
    ``n_modes = (2 m_1, ..., 2 m_{d-1}, 2 m_d - 2)``: same parameter count, and with the same
    weights the same function (``benchmarks/bench_operators.py`` checks it).
    """

    lifting: ChannelMLP
    blocks: tuple[FNOBlock, ...]
    projection: ChannelMLP
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    modes: tuple[int, ...] = eqx.field(static=True)
    domain_padding: tuple[float, ...] | None = eqx.field(static=True)
    padding_mode: str = eqx.field(static=True)
    positional_embedding: bool = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        modes: int | Sequence[int],
        n_layers: int = 4,
        key: PRNGKeyArray,
        lifting_channels: int | None = None,
        projection_channels: int | None = None,
        skip: str | None = "linear",
        activation: Callable = jax.nn.gelu,
        channel_mlp_expansion: float | None = None,
        channel_mlp_skip: str | None = "soft-gating",
        domain_padding: float | Sequence[float] | None = None,
        padding_mode: str = "symmetric",
        positional_embedding: bool = True,
        factorization: str | None = None,
        rank: float | int | Sequence[int] | None = None,
        spectral_bias: bool = True,
        transform: str = "auto",
        dtype=None,
    ):
        check_int("width", width)  # before 2 * width below
        check_int("n_layers", n_layers)
        check_choice("padding_mode", padding_mode, {"symmetric", "one-sided"})
        check_choice("skip", skip, _SKIPS)
        check_choice("channel_mlp_skip", channel_mlp_skip, _SKIPS)
        self.lifting, self.projection, k_blocks = lift_and_project(
            key,
            num_spatial_dims,
            in_channels,
            out_channels,
            width,
            lifting_channels=2 * width if lifting_channels is None else lifting_channels,
            projection_channels=2 * width if projection_channels is None else projection_channels,
            positional_embedding=positional_embedding,
            activation=activation,
            init="uniform",
            dtype=dtype,
        )
        if channel_mlp_expansion is not None:
            ratio = check_real(
                "channel_mlp_expansion", channel_mlp_expansion, minimum=0.0, strict=True
            )
            if round(width * ratio) < 1:
                raise ValueError(
                    f"channel_mlp_expansion={channel_mlp_expansion!r} gives a channel MLP of "
                    f"round({width} * {channel_mlp_expansion!r}) = 0 hidden channels; use a ratio "
                    f"of at least 1/width = {1 / width:g}."
                )
        d = int(num_spatial_dims)
        self.num_spatial_dims = d
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.width = int(width)
        self.domain_padding = _normalize_padding(domain_padding, d)
        self.padding_mode = padding_mode
        self.positional_embedding = bool(positional_embedding)
        blocks = []
        for kb in subkeys(k_blocks, n_layers):
            kc, ks, km, kms = subkeys(kb, 4)
            conv = SpectralConv(
                d,
                width,
                width,
                modes,
                key=kc,
                factorization=factorization,
                rank=rank,
                use_bias=spectral_bias,
                transform=transform,
                dtype=dtype,
            )
            if channel_mlp_expansion is not None:
                hidden = round(width * channel_mlp_expansion)
                cm = ChannelMLP(width, width, hidden, 2, key=km, activation=activation, dtype=dtype)
                cm_skip = _make_skip(channel_mlp_skip, width, kms, dtype)
            else:
                cm, cm_skip = None, None
            blocks.append(
                FNOBlock(conv, _make_skip(skip, width, ks, dtype), cm, cm_skip, activation)
            )
        self.blocks = tuple(blocks)
        self.modes = self.blocks[0].conv.modes

    def _pad(self, v):
        spatial = v.shape[:-1]
        cells = padding_cells(self.domain_padding, spatial)
        if self.padding_mode == "symmetric":
            widths = [(p, p) for p in cells] + [(0, 0)]
        else:
            widths = [(0, p) for p in cells] + [(0, 0)]
        return jnp.pad(v, widths), widths

    @staticmethod
    def _crop(v, widths):
        index = tuple(slice(lo, v.shape[j] - hi) for j, (lo, hi) in enumerate(widths))
        return v[index]

    @property
    def modulation_shape(self) -> tuple[int, int]:
        """``(n_layers, width)``: the shape of each of the ``(scale, shift)`` arrays that
        ``__call__``'s ``modulation`` takes."""
        return (len(self.blocks), self.width)

    def __call__(
        self,
        x: Float[Array, " cin *spatial"],
        *,
        modulation: tuple[Float[Array, "layers width"], Float[Array, "layers width"]] | None = None,
    ) -> Float[Array, " cout *spatial"]:
        r"""The operator on one sample.

        Args:
            x: ``(in_channels, *spatial)``.
            modulation: optional ``(scale, shift)``, each ``(n_layers, width)``
                (:attr:`modulation_shape`): feature-wise linear modulation ("FiLM: Visual
                Reasoning with a General Conditioning Layer") of every block's output,
                :math:`v \mapsto (1 + \text{scale}_i) \odot v + \text{shift}_i`, the way a
                network is conditioned on a scalar (a diffusion or refinement step) through every
                layer; zeros give the unmodulated operator exactly.
        """
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="FNO"
        )
        if modulation is not None:
            scale, shift = (jnp.asarray(m) for m in modulation)
            for name, m in (("scale", scale), ("shift", shift)):
                if m.shape != self.modulation_shape:
                    raise ValueError(
                        f"modulation's {name} must have shape (n_layers, width) = "
                        f"{self.modulation_shape}; got {m.shape}."
                    )
        x = jnp.asarray(x)
        dtype = x.dtype if jnp.issubdtype(x.dtype, jnp.floating) else None
        # Inside, the hidden state is channels-last, (*spatial, width), and every layer runs
        # through its channels_last entry point (AbstractChannelsLast): pointwise layers are
        # matrix products on the last axis and the spectral transforms products along the
        # spatial axes, which under jax.vmap keeps the batch axis in front without the
        # full-size transposes a channels-first layout forces around each 1x1 convolution.
        # Only the input and output are transposed.
        v = jnp.moveaxis(x, 0, -1)
        if self.positional_embedding:
            grid = jnp.moveaxis(periodic_grid(x.shape[1:], dtype=dtype), 0, -1)
            v = jnp.concatenate([v, grid.astype(v.dtype)], axis=-1)
        v = self.lifting.channels_last(v)
        widths = None
        if self.domain_padding is not None:
            v, widths = self._pad(v)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            v = block(v, last=i == n - 1)
            if modulation is not None:
                v = (1 + scale[i]) * v + shift[i]
        if widths is not None:
            v = self._crop(v, widths)
        return jnp.moveaxis(self.projection.channels_last(v), -1, 0)


class TFNO(FNO):
    """FNO with Tucker-factorised spectral weights (default ``rank=0.1``, as neuraloperator)."""

    def __init__(self, *args, factorization: str | None = "tucker", rank=0.1, **kwargs):
        super().__init__(*args, factorization=factorization, rank=rank, **kwargs)


def count_params(model) -> int:
    """Number of real parameters (inexact array leaves) of a model; complex counts twice."""
    leaves = jax.tree_util.tree_leaves(eqx.filter(model, eqx.is_inexact_array))
    return int(sum(x.size * (2 if jnp.iscomplexobj(x) else 1) for x in leaves))
