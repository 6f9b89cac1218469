r"""GINO: a graph-neural-operator encoder to a latent grid, an FNO there, a GNO decoder back.

"Geometry-Informed Neural Operator for Large-Scale 3D PDEs" (Li, Kovachki, Choy, Li, Kossaifi,
Otta, Nabian, Stadler, Hundt, Azizzadenesheli, Anandkumar): a function given on an irregular
point cloud is carried to a regular latent grid by a kernel integral (:class:`GNO`, each grid
node averaging over the input points within ``in_radius``), mapped there by a Fourier neural
operator (the lifting and Fourier blocks of an :class:`FNO`, whose hidden field of ``width``
channels is the latent embedding), and brought to arbitrary output points by a second kernel
integral over the grid nodes within ``out_radius``, followed by a pointwise projection: the
layout of neuraloperator 2.0's ``GINO`` (:func:`gino_from_neuraloperator` carries its weights).

Single sample: input points ``(n_in, d)``, input values ``(in_channels, n_in)``, output points
``(n_out, d)``, output ``(out_channels, n_out)``; batch with :func:`jax.vmap`.
"""

from collections.abc import Callable, Sequence
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import check_int, default_float
from ._bridges import (
    fno_block_from_torch,
    fno_blocks_layers,
    fno_blocks_options,
    mlp_from_torch,
    spectral_weight_from_torch,
    with_torch_block_activation,
)
from ._fno import FNO, ChannelMLP, FNOBlock
from ._gno import GNO, gno_from_neuraloperator


def _check_bounds(bounds, d: int) -> tuple[tuple[float, float], ...]:
    if bounds is None:
        return ((0.0, 1.0),) * d
    try:
        pairs = tuple((float(lo), float(hi)) for lo, hi in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"bounds must be {d} (low, high) pairs; got {bounds!r}.") from None
    if len(pairs) != d or not all(np.isfinite(p).all() and p[0] < p[1] for p in pairs):
        raise ValueError(
            f"bounds must be {d} finite (low, high) pairs with low < high; got {bounds!r}."
        )
    return pairs


def latent_grid_points(latent_shape, bounds, dtype=None) -> Float[Array, "N d"]:
    """The nodes of the latent grid, ``(prod(latent_shape), d)``, axis ``i`` running over
    ``linspace(low_i, high_i, n_i)`` (end points included), flattened in C order so the values
    of node ``(i_1, ..., i_d)`` reshape to ``(channels, *latent_shape)``."""
    dtype = default_float() if dtype is None else dtype
    axes = [
        jnp.linspace(lo, hi, n, dtype=dtype)
        for (lo, hi), n in zip(bounds, latent_shape, strict=True)
    ]
    mesh = jnp.meshgrid(*axes, indexing="ij")
    return jnp.stack([g.reshape(-1) for g in mesh], axis=-1)


class GINO(eqx.Module):
    r"""Geometry-informed neural operator on one point-cloud sample.

    Args:
        coord_dim: dimension ``d`` of the points (and of the latent grid).
        in_channels, out_channels: channels of the input and output functions.
        latent_shape: nodes per axis of the latent grid.
        width: hidden channels of the latent FNO.
        modes: Fourier modes per sign kept by the FNO (see :class:`FNO`).
        in_radius, out_radius: radii of the encoder and decoder kernel integrals.
        in_k_max, out_k_max: neighbour slots per query of the two (overflow raises).
        key: PRNG key of the initial weights.
        bounds: ``d`` pairs ``(low, high)`` of the latent box (default the unit cube).
        n_layers: Fourier blocks.
        encoder_channels: output channels of a ``*_kernelonly`` encoder (the ``linear`` /
            ``nonlinear`` ones keep ``in_channels``).
        in_transform_type, out_transform_type: :class:`GNO` transform types (default
            ``"linear"``; an encoder of type ``"linear_kernelonly"`` takes no input function).
        out_reduction: decoder reduction (default ``"sum"``, neuraloperator's; the encoder
            averages, so the latent field does not depend on the input density).
        in_hidden_widths, out_hidden_widths: kernel MLP hidden layers (defaults
            ``(80, 80, 80)`` and ``(512, 256)``, neuraloperator's GINO).
        embedding_frequencies: sinusoidal embedding frequencies per coordinate (default 32).
        projection_channels: hidden width of the final pointwise projection (default
            ``4 * width``).
        activation: nonlinearity of the kernels and projection (default :func:`jax.nn.gelu`).
        fno_kwargs: further keyword arguments of :class:`FNO` for its lifting and blocks (e.g.
            ``channel_mlp_expansion``, ``skip``, ``factorization``, ``lifting_channels``); its
            positional embedding is off (the encoder already saw the coordinates) and domain
            padding is not supported.
        chunk_size: optional queries per chunk in both kernel integrals.
        dtype: of the weights.
    """

    encoder: GNO
    lifting: ChannelMLP
    blocks: tuple[FNOBlock, ...]
    decoder: GNO
    projection: ChannelMLP
    latent_shape: tuple[int, ...] = eqx.field(static=True)
    bounds: tuple[tuple[float, float], ...] = eqx.field(static=True)

    def __init__(
        self,
        coord_dim: int,
        in_channels: int,
        out_channels: int,
        *,
        latent_shape: Sequence[int],
        width: int,
        modes: int | Sequence[int],
        in_radius: float,
        out_radius: float,
        in_k_max: int,
        out_k_max: int,
        key: PRNGKeyArray,
        bounds=None,
        n_layers: int = 4,
        encoder_channels: int = 3,
        in_transform_type: str = "linear",
        out_transform_type: str = "linear",
        out_reduction: str = "sum",
        in_hidden_widths: Sequence[int] = (80, 80, 80),
        out_hidden_widths: Sequence[int] = (512, 256),
        embedding_frequencies: int = 32,
        projection_channels: int | None = None,
        activation: Callable = jax.nn.gelu,
        fno_kwargs: dict | None = None,
        chunk_size: int | None = None,
        dtype=None,
    ):
        check_int("coord_dim", coord_dim)
        check_int("width", width)
        check_int("encoder_channels", encoder_channels)
        try:
            latent_shape = tuple(latent_shape)
        except TypeError:
            raise ValueError(
                f"latent_shape must be a sequence of ints; got {latent_shape!r}."
            ) from None
        # int() would truncate a fractional size.
        latent_shape = tuple(
            check_int(f"latent_shape[{j}]", n, minimum=2) for j, n in enumerate(latent_shape)
        )
        if len(latent_shape) != coord_dim:
            raise ValueError(
                f"latent_shape must give coord_dim={coord_dim} axes of >= 2 nodes; got "
                f"{latent_shape!r}."
            )
        self.latent_shape = latent_shape
        self.bounds = _check_bounds(bounds, coord_dim)
        projection_channels = 4 * width if projection_channels is None else projection_channels
        kwargs = {"activation": activation, **(fno_kwargs or {})}
        for name in ("positional_embedding", "domain_padding", "projection_channels"):
            if kwargs.get(name) not in (None, False):
                raise ValueError(f"fno_kwargs: {name} has no place in GINO's latent FNO.")
            kwargs.pop(name, None)
        k_enc, k_fno, k_dec, k_proj = jax.random.split(key, 4)
        enc_out = encoder_channels if in_transform_type.endswith("kernelonly") else in_channels
        self.encoder = GNO(
            coord_dim, in_channels, enc_out, radius=in_radius, k_max=in_k_max, key=k_enc,
            transform_type=in_transform_type, reduction="mean", hidden_widths=in_hidden_widths,
            activation=activation, embedding_frequencies=embedding_frequencies,
            chunk_size=chunk_size, dtype=dtype,
        )  # fmt: skip
        # The FNO's projection is dropped: its hidden field is the latent embedding.
        fno = FNO(
            coord_dim, enc_out, 1, width=width, modes=modes, n_layers=n_layers, key=k_fno,
            projection_channels=0, positional_embedding=False, dtype=dtype, **kwargs,
        )  # fmt: skip
        self.lifting, self.blocks = fno.lifting, fno.blocks
        self.decoder = GNO(
            coord_dim, width, width,
            radius=out_radius, k_max=out_k_max, key=k_dec, transform_type=out_transform_type,
            reduction=out_reduction, hidden_widths=out_hidden_widths, activation=activation,
            embedding_frequencies=embedding_frequencies, chunk_size=chunk_size, dtype=dtype,
        )  # fmt: skip
        self.projection = ChannelMLP(
            self.decoder.out_channels, out_channels, projection_channels, 2, key=k_proj,
            activation=activation, dtype=dtype,
        )  # fmt: skip

    @property
    def in_channels(self) -> int:
        return self.encoder.in_channels

    def latent_points(self) -> Float[Array, "N d"]:
        """The latent grid nodes (see :func:`latent_grid_points`)."""
        return latent_grid_points(self.latent_shape, self.bounds, self.projection.weights[0].dtype)

    def __call__(
        self,
        in_points: Float[ArrayLike, "n d"],
        f: Float[ArrayLike, "cin n"] | None,
        out_points: Float[ArrayLike, "m d"],
        weights: Float[ArrayLike, " n"] | None = None,
    ) -> Float[Array, "cout m"]:
        """``f`` on ``in_points`` (``None`` for a ``linear_kernelonly`` encoder, which sees only
        the geometry) to the output function on ``out_points``; ``weights`` are optional
        quadrature weights of the input points."""
        grid = self.latent_points()
        latent = self.encoder(in_points, grid, f, weights)  # (c, N)
        latent = latent.reshape(latent.shape[0], *self.latent_shape)
        v = self.lifting.channels_last(jnp.moveaxis(latent, 0, -1))  # (*latent_shape, width)
        for i, block in enumerate(self.blocks):
            v = block(v, last=i == len(self.blocks) - 1)
        latent = jnp.moveaxis(v.reshape(-1, v.shape[-1]), -1, 0)  # (width, N)
        out = self.decoder(grid, out_points, latent)
        return self.projection(out)


def gino_from_neuraloperator(
    torch_model, *, latent_shape, in_k_max: int, out_k_max: int, bounds=None, dtype=None
) -> GINO:
    """Our :class:`GINO` computing the same function as a neuraloperator 2.0 ``GINO``.

    neuraloperator's call ``model(input_geom, latent_queries, output_queries, x=f)`` with
    ``latent_queries`` the nodes of :func:`latent_grid_points` ``(latent_shape, bounds)``
    reshaped to ``(1, *latent_shape, d)`` corresponds to ``gino(input_geom[0], f[0].T,
    output_queries[0]).T``. Supported: dense, Tucker or CP spectral weights with even ``n_modes``
    on the leading axes (the latent FNO's blocks as :func:`fno_from_neuraloperator`), no normalisation, no AdaIN, no latent features, no output ``tanh``, no
    weighting function; kernels as :func:`gno_from_neuraloperator`.
    """
    m = torch_model
    if m.latent_feature_channels is not None or m.fno_norm is not None or m.out_gno_tanh:
        raise ValueError("torch_model: latent features, norm and tanh have no counterpart here.")
    blocks_t = m.fno_blocks
    d = m.gno_coord_dim
    if len(blocks_t.convs[0].n_modes) != d:
        raise ValueError("torch_model: the FNO and the GNOs must share one dimension.")
    fac, _, modes, rank = spectral_weight_from_torch(blocks_t.convs[0], d)
    enc = gno_from_neuraloperator(m.gno_in, k_max=in_k_max, dtype=dtype)
    dec = gno_from_neuraloperator(m.gno_out, k_max=out_k_max, dtype=dtype)
    width = m.fno_hidden_channels
    options = fno_blocks_options(blocks_t)
    ours = GINO(
        d, m.in_channels, m.out_channels, latent_shape=latent_shape, width=width, modes=modes,
        in_radius=m.in_gno_radius, out_radius=m.out_gno_radius, in_k_max=in_k_max,
        out_k_max=out_k_max, key=jax.random.PRNGKey(0), bounds=bounds,
        n_layers=blocks_t.n_layers, encoder_channels=enc.out_channels,
        in_transform_type=enc.transform_type, out_transform_type=dec.transform_type,
        out_reduction=dec.reduction, in_hidden_widths=(1,), out_hidden_widths=(1,),
        embedding_frequencies=enc.embedding_frequencies,
        projection_channels=m.projection.fcs[0].weight.shape[0],
        activation=partial(jax.nn.gelu, approximate=False),
        fno_kwargs={
            "lifting_channels": m.lifting.fcs[0].weight.shape[0], "factorization": fac,
            "rank": rank, "spectral_bias": blocks_t.convs[0].bias is not None, **options,
        },
        dtype=dtype,
    )  # fmt: skip
    if ours.encoder.out_channels != enc.out_channels:
        raise ValueError("torch_model: its encoder's output channels have no counterpart here.")
    blocks = tuple(
        fno_block_from_torch(b, **fno_blocks_layers(blocks_t, i)) for i, b in enumerate(ours.blocks)
    )
    blocks = with_torch_block_activation(blocks, blocks_t)
    return eqx.tree_at(
        lambda g: (g.encoder, g.decoder, g.lifting, g.blocks, g.projection),
        ours,
        (
            enc,
            dec,
            mlp_from_torch(ours.lifting, m.lifting),
            blocks,
            mlp_from_torch(ours.projection, m.projection),
        ),
    )


__all__ = ["GINO", "gino_from_neuraloperator", "latent_grid_points"]
