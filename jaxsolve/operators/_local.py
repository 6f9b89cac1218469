r"""Local kernels beside the spectral one: the differential kernel and the LocalNO.

("Neural Operators with Localized Integral and Differential Kernels", Liu-Schiaffini, Berner,
Bonev, Kurth, Azizzadenesheli, Anandkumar.) A Fourier layer is global and smooths; a learned
stencil scaled by the grid spacing keeps a local, resolution-consistent meaning:

.. math:: (\mathcal D u)_o(x) = \frac1h \sum_i \sum_{k} w_{o i k}\,
   \big(u_i(x + k h) - u_i(x)\big)
   \;\xrightarrow[h\to0]{}\; \sum_i \sum_j \Big(\sum_k w_{o i k}\, k_j\Big)\, \partial_j u_i(x),

a convolution with the zero-sum stencil :math:`w - (\sum_k w_k)\,\delta_0`, divided by the grid
spacing :math:`h`. The error is :math:`O(h)` (the stencil's second moment times :math:`u''`),
and a constant field gives zero (up to rounding). The offsets ``k`` run over ``-(K//2)..K//2``
on every axis of a ``K^d`` stencil (``K`` odd), and the grid is assumed to have the same spacing
on every axis: ``h = domain_length / N`` with ``N`` the size of the last axis, as neuraloperator
does.

Units of the stencil. The learned weights are :math:`w = h_{\rm ref}\,\theta`: ``theta`` is
stored and trained, and :math:`h_{\rm ref} = ` ``domain_length / reference_resolution`` is the grid
spacing of a reference resolution (neuraloperator's ``default_in_shape``, where its grid width is
1). At the reference resolution the layer is the plain stencil ``theta``, whatever the domain's
length, so its initial gain and the size of an optimiser's step do not grow with the resolution;
at another resolution it is the same derivative operator, rescaled by :math:`h_{\rm ref}/h`.
Without a reference resolution, :math:`h_{\rm ref} = 1` in the units of ``domain_length``: on a
unit domain at ``N`` points each initial block then amplifies by about ``N``, and a step of the
optimiser moves the operator ``N`` times as far: give the training resolution.

:class:`LocalIntegralConv` is the other local kernel: a learned radial kernel integrated over a
ball of fixed physical radius by the grid's quadrature. :class:`LocalNOBlock` adds these kernels
to a Fourier layer and a pointwise skip, as neuraloperator's ``LocalNOBlocks`` (whose local
integral branch, the DISCO convolution, is not reproduced); :class:`LocalNO` is lifting, blocks,
projection.
"""

import math
from collections.abc import Callable, Sequence
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float
from .._core._init import draw, subkeys
from ._bridges import (
    fno_block_from_torch,
    grid_embedding_from_torch,
    mlp_from_torch,
    mlp_hidden_channels,
    put,
    skip_kind,
    spectral_weight_from_torch,
    torch_array,
)
from ._checks import check_real, check_sample, float_input
from ._fno import ChannelMLP, lift_and_project
from ._spectral import periodic_grid
from ._spectral_conv import SpectralConv
from ._uno import _SKIPS, _make_skip

_PADDINGS = {"periodic": "wrap", "zeros": "constant", "replicate": "edge", "reflect": "reflect"}


def _padded_correlation(x, w, padding: str, groups: int):
    """``y_o(n) = sum_{i,k} w_{oik} x_i(n + k)`` on one sample, the odd, centred stencil ``w``
    reaching past the boundary by ``padding``."""
    d = x.ndim - 1
    r = w.shape[-1] // 2
    xp = jnp.pad(x, [(0, 0)] + [(r, r)] * d, mode=_PADDINGS[padding])
    return lax.conv_general_dilated(
        xp[None],
        w,
        window_strides=(1,) * d,
        padding="VALID",
        feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )[0]


class DifferentialConv(eqx.Module):
    r"""Differential kernel ``(in_channels, *spatial) -> (out_channels, *spatial)`` (module doc).

    Args:
        num_spatial_dims, in_channels, out_channels: layer shape.
        key: PRNG key of the initial stencil (uniform in :math:`\pm 1/\sqrt{\text{fan-in}}`,
            PyTorch's convolution default, as neuraloperator).
        kernel_size: odd stencil width ``K`` on every axis (default 3).
        groups: channel groups (``in_channels`` gives one stencil per channel, neuraloperator's
            ``mix_derivatives=False``); must divide both channel counts.
        padding: boundary handling, ``"periodic"`` (default), ``"zeros"``, ``"replicate"`` or
            ``"reflect"``.
        domain_length: side of the (square) domain; ``h = domain_length / N_last``.
        reference_resolution: grid size ``N_ref`` whose spacing
            ``h_ref = domain_length / N_ref`` is the stencil's unit (module doc); ``None``
            (default): ``h_ref = 1``. Give the training resolution.
        dtype: of the weights (default: the default float).
    """

    weight: Float[Array, " cout cin_per_group *kernel"]
    num_spatial_dims: int = eqx.field(static=True)
    groups: int = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    domain_length: float = eqx.field(static=True)
    reference_resolution: int | None = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        key: PRNGKeyArray,
        kernel_size: int = 3,
        groups: int = 1,
        padding: str = "periodic",
        domain_length: float = 1.0,
        reference_resolution: int | None = None,
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        cin = check_int("in_channels", in_channels)
        cout = check_int("out_channels", out_channels)
        k = check_int("kernel_size", kernel_size)
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd (a centred stencil); got {kernel_size}.")
        g = check_int("groups", groups)
        if cin % g or cout % g:
            raise ValueError(
                f"groups={groups} must divide in_channels={cin} and out_channels={cout}."
            )
        check_choice("padding", padding, set(_PADDINGS))
        self.domain_length = check_real("domain_length", domain_length, minimum=0.0, strict=True)
        self.reference_resolution = (
            None
            if reference_resolution is None
            else check_int("reference_resolution", reference_resolution)
        )
        shape = (cout, cin // g) + (k,) * d
        bound = 1.0 / math.sqrt((cin // g) * k**d)
        (self.weight,) = draw(key, [("uniform", shape, bound)], dtype or default_float())
        self.num_spatial_dims = d
        self.groups = g
        self.padding = padding

    @property
    def kernel_size(self) -> int:
        return self.weight.shape[-1]

    @property
    def reference_spacing(self) -> float:
        r""":math:`h_{\rm ref}`, the unit of the stored stencil (module doc)."""
        if self.reference_resolution is None:
            return 1.0
        return self.domain_length / self.reference_resolution

    def derivative_coefficients(self) -> Float[Array, " cout cin_per_group dims"]:
        r"""The limit operator's coefficients
        :math:`b_{oij} = h_{\rm ref} \sum_k \theta_{oik} k_j`."""
        d, r = self.num_spatial_dims, self.kernel_size // 2
        offsets = np.stack(np.meshgrid(*([np.arange(-r, r + 1)] * d), indexing="ij"), axis=-1)
        b = jnp.tensordot(self.weight, jnp.asarray(offsets, self.weight.dtype), axes=d)
        return self.reference_spacing * b

    def __call__(
        self, x: Float[Array, " cin *spatial"], grid_width: float | None = None
    ) -> Float[Array, " cout *spatial"]:
        """The kernel on one sample; ``grid_width`` overrides ``h = domain_length / N_last``."""
        d = self.num_spatial_dims
        check_sample(
            x,
            channels=self.weight.shape[1] * self.groups,
            num_spatial_dims=d,
            where="DifferentialConv",
        )
        x = float_input(x, self.weight.dtype)
        h = self.domain_length / x.shape[-1] if grid_width is None else grid_width
        # The stencil's unit over the grid's spacing: 1 at the reference resolution.
        scale = self.reference_spacing / h
        r = self.kernel_size // 2
        w = self.weight.astype(x.dtype)
        # The zero-sum stencil w - (sum w) delta_0: a constant gives zero up to rounding.
        centre = (slice(None), slice(None)) + (r,) * d
        w = w.at[centre].add(-jnp.sum(w, axis=tuple(range(2, 2 + d))))
        return _padded_correlation(x, w, self.padding, self.groups) * scale


def _ball_volume(d: int, radius: float) -> float:
    return math.pi ** (d / 2) * radius**d / math.gamma(d / 2 + 1)


class LocalIntegralConv(eqx.Module):
    r"""Local integral kernel: a radial kernel integrated over a ball of fixed physical radius.

    .. math:: (\mathcal I u)_o(x) = \frac1{|B_R|}\sum_i \int_{|z|<R} \kappa_{oi}(|z|)\,
       u_i(x - z)\,dz + b_o,\qquad
       \kappa_{oi}(r) = \sum_{l=0}^{L-1} \theta_{oil}\, \phi_l(r / R),

    with hat functions :math:`\phi_l(\rho) = \max(0, 1 - L|\rho - l/L|)`, all zero at
    :math:`\rho = 1`, so the kernel is continuous and compactly supported. The integral is the
    grid's quadrature :math:`h^d \sum_k \kappa(|k| h)\, u(x - k h)`, a convolution whose stencil
    grows with the resolution while the operator stays the same: the output converges as the grid
    is refined (the idea of the paper's DISCO convolutions; their basis, normalisation and
    angular dependence are not reproduced).

    Args:
        num_spatial_dims, in_channels, out_channels: layer shape.
        key: PRNG key (weights uniform in :math:`\pm 1/\sqrt{\text{in} \cdot L}`).
        radius: :math:`R`, in the units of ``domain_length`` (less than half of it).
        n_basis: number of hat functions :math:`L`.
        padding: ``"periodic"`` (default) or ``"zeros"``.
        domain_length: side of the (square) domain; ``h = domain_length / N_last``.
        use_bias: add a per-channel constant.
        dtype: of the weights.
    """

    weight: Float[Array, " cout cin basis"]
    bias: Float[Array, " cout"] | None
    num_spatial_dims: int = eqx.field(static=True)
    radius: float = eqx.field(static=True)
    padding: str = eqx.field(static=True)
    domain_length: float = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        key: PRNGKeyArray,
        radius: float = 0.1,
        n_basis: int = 3,
        padding: str = "periodic",
        domain_length: float = 1.0,
        use_bias: bool = True,
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        cin = check_int("in_channels", in_channels)
        cout = check_int("out_channels", out_channels)
        n_basis = check_int("n_basis", n_basis)
        check_choice("padding", padding, {"periodic", "zeros"})
        self.domain_length = check_real("domain_length", domain_length, minimum=0.0, strict=True)
        self.radius = check_real("radius", radius, minimum=0.0, strict=True)
        if self.radius >= self.domain_length / 2:
            raise ValueError(
                f"radius={radius} must be less than half the domain_length={domain_length}."
            )
        bound = 1.0 / math.sqrt(cin * n_basis)
        specs = [("uniform", (cout, cin, n_basis), bound)]
        if use_bias:
            specs.append(("uniform", (cout,), bound))
        arrays = draw(key, specs, dtype or default_float())
        self.weight = arrays[0]
        self.bias = arrays[1] if use_bias else None
        self.num_spatial_dims = d
        self.padding = padding

    def stencil(self, spatial_shape: Sequence[int], dtype) -> Float[Array, " cout cin *kernel"]:
        """Quadrature stencil ``h^d kappa(|k| h) / |B_R|`` on a grid of ``spatial_shape``."""
        d = self.num_spatial_dims
        h = self.domain_length / spatial_shape[-1]
        r = math.ceil(self.radius / h)
        if 2 * r + 1 > min(spatial_shape):
            raise ValueError(
                f"radius={self.radius} spans {2 * r + 1} cells, more than the grid "
                f"{tuple(spatial_shape)} holds."
            )
        offsets = np.stack(np.meshgrid(*([np.arange(-r, r + 1)] * d), indexing="ij"))
        rho = np.sqrt((offsets**2).sum(0)) * h / self.radius
        n_basis = self.weight.shape[-1]
        centres = np.arange(n_basis) / n_basis
        hats = np.maximum(0.0, 1.0 - n_basis * np.abs(rho[..., None] - centres))
        hats = hats * (rho < 1)[..., None] * (h**d / _ball_volume(d, self.radius))
        return jnp.tensordot(self.weight.astype(dtype), jnp.asarray(hats, dtype), axes=([2], [d]))

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        d = self.num_spatial_dims
        check_sample(
            x, channels=self.weight.shape[1], num_spatial_dims=d, where="LocalIntegralConv"
        )
        x = float_input(x, self.weight.dtype)
        w = self.stencil(x.shape[1:], x.dtype)
        # The kernel is radial, so correlation and convolution agree.
        y = _padded_correlation(x, w, self.padding, 1)
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * d).astype(y.dtype)
        return y


class LocalNOBlock(eqx.Module):
    """``act(conv(x) + diff(x) + integral(x) + skip(x))``, then optionally
    ``mlp(.) + mlp_skip(x)`` and ``act``
    (neuraloperator's post-activation ``LocalNOBlocks`` layer; no activation after the last)."""

    conv: SpectralConv
    differential: DifferentialConv | None
    integral: LocalIntegralConv | None
    skip: eqx.Module | None
    mlp: ChannelMLP | None
    mlp_skip: eqx.Module | None
    activation: Callable = eqx.field(static=True)

    def __call__(self, x: Float[Array, " c *spatial"], *, last: bool = False):
        y = self.conv(x)
        if self.differential is not None:
            y = y + self.differential(x)
        if self.integral is not None:
            y = y + self.integral(x)
        if self.skip is not None:
            y = y + self.skip(x)
        if self.mlp is not None or not last:
            y = self.activation(y)
        if self.mlp is not None:
            y = self.mlp(y)
            if self.mlp_skip is not None:
                y = y + self.mlp_skip(x)
            if not last:
                y = self.activation(y)
        return y


def _per_block(name, value, n):
    if isinstance(value, bool):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(b, bool) for b in value):
        raise ValueError(f"{name} must be a bool or {n} bools; got {value!r}.")
    return value


class LocalNO(eqx.Module):
    r"""Local Neural Operator: FNO blocks with a differential kernel beside the Fourier layer.

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: hidden channels; modes: frequencies kept per sign (see :class:`SpectralConv`).
        n_layers: number of blocks.
        key: PRNG key of the initial weights.
        diff_layers: a bool, or one per block: which blocks carry a differential kernel.
        kernel_size, padding, domain_length, reference_resolution: of the differential
            kernels (:class:`DifferentialConv`); give ``reference_resolution``, the grid size
            trained on (neuraloperator's ``default_in_shape``): without it the stencils' unit is
            a length of 1, and on a unit domain the blocks start amplifying by about ``N``.
        integral_layers: a bool, or one per block: which blocks carry a
            :class:`LocalIntegralConv` (default none, as in neuraloperator without DISCO).
        radius, n_basis: of the local integral kernels.
        mix_derivatives: one stencil per (out, in) channel pair; ``False`` gives one per channel.
        lifting_channels, projection_channels: hidden widths (default ``2 * width``; 0: linear).
        skip, channel_mlp_skip: ``"linear"`` / ``"identity"`` / ``"soft-gating"`` / ``None``.
        channel_mlp_expansion: ``None`` (default, no channel MLP) or its hidden ratio.
        activation: default :func:`jax.nn.gelu` (neuraloperator: exact GELU).
        positional_embedding: append the periodic grid coordinates as inputs.
        dtype: of the weights.
    """

    lifting: ChannelMLP
    blocks: tuple[LocalNOBlock, ...]
    projection: ChannelMLP
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
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
        diff_layers: bool | Sequence[bool] = True,
        integral_layers: bool | Sequence[bool] = False,
        radius: float = 0.1,
        n_basis: int = 3,
        kernel_size: int = 3,
        padding: str = "periodic",
        domain_length: float = 1.0,
        reference_resolution: int | None = None,
        mix_derivatives: bool = True,
        lifting_channels: int | None = None,
        projection_channels: int | None = None,
        skip: str | None = "linear",
        channel_mlp_skip: str | None = "soft-gating",
        channel_mlp_expansion: float | None = None,
        activation: Callable = jax.nn.gelu,
        positional_embedding: bool = True,
        dtype=None,
    ):
        check_int("width", width)
        n = check_int("n_layers", n_layers)
        check_choice("skip", skip, _SKIPS)
        check_choice("channel_mlp_skip", channel_mlp_skip, _SKIPS)
        diff_layers = _per_block("diff_layers", diff_layers, n)
        integral_layers = _per_block("integral_layers", integral_layers, n)
        if channel_mlp_expansion is not None:
            ratio = check_real(
                "channel_mlp_expansion", channel_mlp_expansion, minimum=0.0, strict=True
            )
            if round(width * ratio) < 1:
                raise ValueError(
                    f"channel_mlp_expansion={channel_mlp_expansion!r} leaves no hidden channels."
                )
        dtype = dtype or default_float()
        self.lifting, self.projection, rest = lift_and_project(
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
        d = int(num_spatial_dims)
        blocks = []
        for i, kb in enumerate(subkeys(rest, n)):
            kc, kd, ks, km, kms, ki = subkeys(kb, 6)
            conv = SpectralConv(d, width, width, modes, key=kc, use_bias=True, dtype=dtype)
            diff = None
            if diff_layers[i]:
                diff = DifferentialConv(
                    d,
                    width,
                    width,
                    key=kd,
                    kernel_size=kernel_size,
                    groups=1 if mix_derivatives else width,
                    padding=padding,
                    domain_length=domain_length,
                    reference_resolution=reference_resolution,
                    dtype=dtype,
                )
            integral = None
            if integral_layers[i]:
                integral = LocalIntegralConv(
                    d,
                    width,
                    width,
                    key=ki,
                    radius=radius,
                    n_basis=n_basis,
                    padding="periodic" if padding == "periodic" else "zeros",
                    domain_length=domain_length,
                    dtype=dtype,
                )
            mlp = mlp_skip = None
            if channel_mlp_expansion is not None:
                hidden = round(width * channel_mlp_expansion)
                mlp = ChannelMLP(
                    width, width, hidden, 2, key=km, activation=activation, dtype=dtype
                )
                mlp_skip = _make_skip(
                    channel_mlp_skip, width, width, kms, dtype, "channel_mlp_skip"
                )
            blocks.append(
                LocalNOBlock(
                    conv,
                    diff,
                    integral,
                    _make_skip(skip, width, width, ks, dtype, "skip"),
                    mlp,
                    mlp_skip,
                    activation,
                )
            )
        self.blocks = tuple(blocks)
        self.num_spatial_dims = d
        self.in_channels = int(in_channels)
        self.positional_embedding = bool(positional_embedding)

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="LocalNO"
        )
        x = jnp.asarray(x)
        if self.positional_embedding:
            x = jnp.concatenate([x, periodic_grid(x.shape[1:], dtype=x.dtype).astype(x.dtype)])
        v = self.lifting(x)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            v = block(v, last=i == n - 1)
        return self.projection(v)


# ----------------------------------------------------------------------------------------------
# neuraloperator bridge
# ----------------------------------------------------------------------------------------------

_TORCH_PADDING = {
    "circular": "periodic",
    "zeros": "zeros",
    "replicate": "replicate",
    "reflect": "reflect",
}


def differential_conv_from_neuraloperator(
    torch_conv, *, default_in_size: int, domain_length: float = 1.0, dtype=None
) -> DifferentialConv:
    """Our :class:`DifferentialConv` equal to neuraloperator's ``FiniteDifferenceConvolution``
    called as ``LocalNOBlocks`` calls it, with ``grid_width = default_in_size / N_last``.

    That grid width is ours over the reference spacing, ``(domain_length / N_last) /
    (domain_length / default_in_size)``: with ``reference_resolution = default_in_size`` the
    weights carry over unchanged, whatever ``domain_length``.
    """
    w = torch_array(torch_conv.conv.weight)
    d = w.ndim - 2
    ours = DifferentialConv(
        d,
        w.shape[1] * torch_conv.groups,
        w.shape[0],
        key=jax.random.key(0),
        kernel_size=w.shape[-1],
        groups=torch_conv.groups,
        padding=_TORCH_PADDING[torch_conv.padding_mode],
        domain_length=domain_length,
        reference_resolution=default_in_size,
        dtype=dtype or jnp.float32,
    )
    return put(ours, lambda c: c.weight, w)


def local_no_from_neuraloperator(torch_model, *, dtype=None) -> LocalNO:
    """Our :class:`LocalNO` computing the same function as a neuraloperator 2.0 ``LocalNO``
    built with ``disco_layers=False`` (dense weights, even ``n_modes`` on leading axes and even
    leading grid sizes, no padding, norm or resolution scaling; exact GELU)."""
    m = torch_model
    blk = m.local_no_blocks
    if any(blk.disco_layers):
        raise ValueError("torch_model: DISCO (local integral) layers have no counterpart here.")
    if m.domain_padding is not None or blk.norm is not None or blk.preactivation:
        raise ValueError("torch_model: domain padding / norm / preactivation are not supported.")
    if blk.resolution_scaling_factor is not None:
        raise ValueError("torch_model: resolution scaling is not supported.")
    d = blk.n_dim
    dtype = dtype or jnp.float32
    modes = spectral_weight_from_torch(blk.convs[0], d)[2]
    mlp_t = blk.mlp
    expansion = None if mlp_t is None else mlp_t[0].fcs[0].weight.shape[0] / blk.out_channels
    skips_t = blk.local_no_skips
    mlp_skips_t = blk.channel_mlp_skips if mlp_t is not None else None
    ours = LocalNO(
        d,
        m.in_channels,
        m.out_channels,
        width=blk.in_channels,
        modes=modes,
        n_layers=blk.n_layers,
        key=jax.random.key(0),
        diff_layers=list(blk.diff_layers),
        kernel_size=blk.fin_diff_kernel_size,
        padding=_TORCH_PADDING.get(blk.conv_padding_mode, blk.conv_padding_mode),
        reference_resolution=blk.default_in_shape[0],
        mix_derivatives=blk.mix_derivatives,
        lifting_channels=mlp_hidden_channels(m.lifting),
        projection_channels=mlp_hidden_channels(m.projection),
        skip=skip_kind(None if skips_t is None else skips_t[0]),
        channel_mlp_skip=skip_kind(None if mlp_skips_t is None else mlp_skips_t[0]),
        channel_mlp_expansion=expansion,
        activation=partial(jax.nn.gelu, approximate=False),
        positional_embedding=grid_embedding_from_torch(m, d),
        dtype=dtype,
    )
    blocks = []
    for i, ob in enumerate(ours.blocks):
        new = fno_block_from_torch(
            ob,
            conv=blk.convs[i],
            skip=None if skips_t is None else skips_t[i],
            mlp=None if mlp_t is None else mlp_t[i],
            mlp_skip=None if mlp_skips_t is None else mlp_skips_t[i],
        )
        j = blk.differential_idx_list[i]
        if j != -1:
            diff = differential_conv_from_neuraloperator(
                blk.differential[j], default_in_size=blk.default_in_shape[0], dtype=dtype
            )
            new = eqx.tree_at(lambda b: b.differential, new, diff)
        blocks.append(new)
    return eqx.tree_at(
        lambda u: (u.lifting, u.blocks, u.projection),
        ours,
        (
            mlp_from_torch(ours.lifting, m.lifting),
            tuple(blocks),
            mlp_from_torch(ours.projection, m.projection),
        ),
    )
