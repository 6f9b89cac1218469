r"""Graph neural operator: a kernel integral over the sources within a radius of each query.

"Neural Operator: Learning Maps Between Function Spaces" (Kovachki, Li, Liu, Azizzadenesheli,
Bhattacharya, Stuart, Anandkumar) writes one layer of a neural operator as the kernel integral

.. math::

    (\mathcal K f)(y) = \int_{B_r(y)} \kappa\big(x, y[, f(x)]\big)\, f(x)\, \mathrm d x
    \approx \sum_{x_j \in B_r(y)} \kappa\big(x_j, y[, f(x_j)]\big)\, f(x_j)\, w_j ,

with a learned kernel :math:`\kappa` (an MLP) and quadrature weights :math:`w_j` (the volume
each source point stands for). Without weights the sum is either a plain sum or, with
``reduction="mean"``, the average over the neighbourhood (a Monte-Carlo estimate of the
integral divided by the ball's volume).

Neighbourhoods are fixed-size, masked lists (:func:`radius_neighbours`) so the whole layer jits
and vmaps: each query holds at most ``k_max`` neighbours, and a query with more is reported
(``Neighbours.overflow``) and, by default, raised through :func:`equinox.error_if` rather than
silently truncated.

Point clouds are ``(n, d)`` coordinate arrays; functions on them are channels-first
``(channels, n)``, as every other layer of this pillar (``(channels, *spatial)`` with one
"spatial" axis running over the points).
"""

import itertools
from collections.abc import Callable, Sequence
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PRNGKeyArray

from .._core import check_choice, check_int, default_float, exact_einsum, is_concrete
from ._bridges import torch_array
from ._checks import check_real, check_widths

_TRANSFORMS = ("linear_kernelonly", "linear", "nonlinear_kernelonly", "nonlinear")
_EMBEDDINGS = ("transformer", "nerf", None)


class Neighbours(eqx.Module):
    """Fixed-size neighbour lists of ``m`` queries among ``n`` sources.

    Attributes:
        indices: ``(m, k_max)`` source indices; the in-radius sources of each query come first,
            in increasing index order, and padded slots hold 0.
        mask: ``(m, k_max)``, true on the slots that hold a neighbour.
        counts: ``(m,)`` the number of sources within the radius (may exceed ``k_max``).
        overflow: scalar bool, true when some query has more than ``k_max`` neighbours (its list
            then holds only the ``k_max`` of lowest index).
    """

    indices: Int[Array, "m k"]
    mask: Bool[Array, "m k"]
    counts: Int[Array, " m"]
    overflow: Bool[Array, ""]


def _check_points(name: str, points, dim: int | None = None) -> None:
    shape = tuple(np.shape(points))
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"{name} must be an (n, d) array of n >= 1 points; got shape {shape}.")
    if dim is not None and shape[1] != dim:
        raise ValueError(f"{name} must hold {dim}-dimensional points; got shape {shape}.")


def _float_points(points):
    """``points`` as a float array: integers become the default float, floats keep their dtype."""
    points = jnp.asarray(points)
    if not jnp.issubdtype(points.dtype, jnp.floating):
        points = points.astype(default_float())
    return points


def _check_chunk(chunk_size) -> None:
    if chunk_size is not None:
        check_int("chunk_size", chunk_size)


def _map_queries(fn: Callable, arrays: tuple, chunk_size: int | None):
    """``jax.vmap(fn)`` over the leading (query) axis of ``arrays``; with ``chunk_size``, over
    chunks of that many queries in sequence (``lax.map``), so only one chunk's temporaries live
    at a time. The last chunk is padded by repeating query 0 and the padding is cut off."""
    m = arrays[0].shape[0]
    if chunk_size is None or chunk_size >= m:
        return jax.vmap(fn)(*arrays)
    n_chunks = -(-m // chunk_size)
    pad = n_chunks * chunk_size - m

    def pad_and_split(a):
        a = jnp.concatenate([a, jnp.broadcast_to(a[:1], (pad, *a.shape[1:]))]) if pad else a
        return a.reshape(n_chunks, chunk_size, *a.shape[1:])

    out = jax.lax.map(lambda xs: jax.vmap(fn)(*xs), tuple(pad_and_split(a) for a in arrays))
    return jax.tree_util.tree_map(lambda o: o.reshape(-1, *o.shape[2:])[:m], out)


def radius_neighbours(
    queries: Float[ArrayLike, "m d"],
    sources: Float[ArrayLike, "n d"],
    radius,
    k_max: int,
    *,
    chunk_size: int | None = None,
    throw: bool = True,
) -> Neighbours:
    r"""The sources within ``radius`` of each query, :math:`\|x_j - y_i\| \le r`, as fixed-size
    masked lists (brute force: every query-source distance is formed).

    Memory is :math:`O(m n)` (one distance row per query); with ``chunk_size`` the queries go
    through in chunks of that many, :math:`O(\text{chunk\_size}\cdot n)` at a time.

    Args:
        queries: ``(m, d)`` points at which neighbourhoods are centred.
        sources: ``(n, d)`` points searched.
        radius: the ball radius (a positive number, or a traced scalar, checked when the
            compiled code runs).
        k_max: slots per query. A query with more in-radius sources sets ``overflow``.
        chunk_size: optional number of queries per chunk.
        throw: raise (through :func:`equinox.error_if`, so also under ``jit``) when some
            neighbourhood overflows or a coordinate is not finite; with ``False`` check
            ``overflow`` yourself (a point with a NaN coordinate then has no neighbours and is
            nobody's neighbour).

    Integer coordinates become the default float, and queries and sources share the wider of
    their float dtypes, so that neither the points nor the radius are rounded.

    Returns:
        A :class:`Neighbours`.
    """
    _check_points("queries", queries)
    _check_points("sources", sources, np.shape(queries)[1])
    check_int("k_max", k_max)
    _check_chunk(chunk_size)
    if is_concrete(radius):
        check_real("radius", radius, minimum=0.0, strict=True)
    queries, sources = _float_points(queries), _float_points(sources)
    # One float dtype for both: casting the sources to integer queries' dtype (or the radius to
    # it) would round them and silently change who is whose neighbour.
    dtype = jnp.promote_types(queries.dtype, sources.dtype)
    queries, sources = queries.astype(dtype), sources.astype(dtype)
    n = sources.shape[0]
    k = min(k_max, n)
    # Ranks n, n-1, ..., 1 on the in-radius sources and 0 elsewhere: top_k returns the in-radius
    # ones in increasing index order, a choice independent of how the sources are ordered
    # whenever nothing overflows.
    rank = jnp.arange(n, 0, -1, dtype=jnp.int32)
    r = jnp.asarray(radius, dtype=dtype)
    if not is_concrete(radius):
        # A negative radius would pass as its absolute value (only r^2 is used), a NaN would give
        # empty neighbourhoods.
        r = eqx.error_if(r, ~(r > 0), "radius_neighbours: radius must be > 0 (a traced value).")
    r2 = r**2

    def one(y):
        # Differences, not |x|^2 - 2 x.y + |y|^2, so points on the sphere are classified as
        # the exact distance says (the expansion cancels catastrophically near the radius).
        within = jnp.sum((sources - y) ** 2, axis=-1) <= r2
        top, idx = jax.lax.top_k(jnp.where(within, rank, 0), k)
        return idx.astype(jnp.int32), top > 0, jnp.sum(within, dtype=jnp.int32)

    idx, mask, counts = _map_queries(one, (queries,), chunk_size)
    if k < k_max:  # fewer sources than slots: pad the lists to the promised width
        idx = jnp.pad(idx, ((0, 0), (0, k_max - k)))
        mask = jnp.pad(mask, ((0, 0), (0, k_max - k)))
    idx = jnp.where(mask, idx, 0)
    overflow = jnp.any(counts > k_max)
    if throw:
        # A NaN coordinate fails every "distance <= radius" test: its point would silently drop
        # out of every neighbourhood (and a kernel integral lose its term).
        finite = jnp.all(jnp.isfinite(queries)) & jnp.all(jnp.isfinite(sources))
        idx = eqx.error_if(
            idx,
            ~finite,
            "radius_neighbours: queries or sources hold a non-finite (NaN or inf) coordinate.",
        )
        idx = eqx.error_if(
            idx,
            overflow,
            "radius_neighbours: a query has more than k_max neighbours within the radius; raise "
            "k_max or lower the radius (throw=False returns the truncated lists with "
            "overflow=True).",
        )
    return Neighbours(indices=idx, mask=mask, counts=counts, overflow=overflow)


def sinusoidal_embedding(
    points: Float[ArrayLike, "n d"],
    num_frequencies: int,
    kind: str = "transformer",
    max_positions: float = 10000.0,
) -> Float[Array, "n e"]:
    r"""Sines and cosines of each coordinate at ``L = num_frequencies`` frequencies.

    ``"transformer"`` ("Attention Is All You Need"): :math:`\omega_k = P^{-2k/L}` with
    :math:`P` = ``max_positions``; ``"nerf"`` ("NeRF: Representing Scenes as Neural Radiance
    Fields for View Synthesis"): :math:`\omega_k = 2^k \pi`. The output has ``2 L d`` channels,
    ordered coordinate, then frequency, then (sin, cos), as neuraloperator's
    ``SinusoidalEmbedding``.
    """
    dtype = points.dtype
    k = jnp.arange(num_frequencies, dtype=dtype)
    if kind == "nerf":
        freqs = (2.0**k) * jnp.pi
    else:
        freqs = (1.0 / max_positions) ** (2.0 * k / num_frequencies)
    phase = points[..., :, None] * freqs  # (n, d, L)
    emb = jnp.stack([jnp.sin(phase), jnp.cos(phase)], axis=-1)  # (n, d, L, 2)
    return emb.reshape(*points.shape[:-1], -1)


class KernelMLP(eqx.Module):
    """The kernel network: a stack of affine maps on the last axis, ``activation`` between them.

    Weights start uniform in :math:`\\pm 1/\\sqrt{\\text{fan-in}}` (PyTorch's ``Linear``, as
    neuraloperator's ``LinearChannelMLP``).
    """

    weights: tuple[Float[Array, "cout cin"], ...]
    biases: tuple[Float[Array, " cout"], ...]
    activation: Callable = eqx.field(static=True)

    def __init__(self, widths: Sequence[int], *, key, activation=jax.nn.gelu, dtype=None):
        dtype = default_float() if dtype is None else dtype
        # One draw for every weight and bias (one random-number kernel to compile, not one per
        # layer shape), cut into layers and scaled to each layer's bound.
        sizes = [cout * (cin + 1) for cin, cout in itertools.pairwise(widths)]
        flat = jax.random.uniform(key, (sum(sizes),), dtype, -1.0, 1.0)
        ws, bs, start = [], [], 0
        for (cin, cout), size in zip(itertools.pairwise(widths), sizes, strict=True):
            block = flat[start : start + size].reshape(cout, cin + 1) / np.sqrt(cin)
            ws.append(block[:, :cin])
            bs.append(block[:, cin])
            start += size
        self.weights, self.biases = tuple(ws), tuple(bs)
        self.activation = activation

    def __call__(self, v: Float[Array, "... cin"]) -> Float[Array, "... cout"]:
        last = len(self.weights) - 1
        for j, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            v = exact_einsum("...i,oi->...o", v, w) + b
            if j < last:
                v = self.activation(v)
        return v


class GNO(eqx.Module):
    r"""Kernel integral layer from ``(in_channels, n)`` values on source points to
    ``(out_channels, m)`` values on query points.

    With :math:`e(\cdot)` the optional sinusoidal embedding of the coordinates and
    :math:`\kappa` the kernel MLP, the four ``transform_type`` (neuraloperator's names) are

    * ``"linear_kernelonly"``: :math:`\sum_j \kappa(e(x_j), e(y))\, w_j` (no input function),
    * ``"linear"``: :math:`\sum_j \kappa(e(x_j), e(y)) \odot f(x_j)\, w_j`,
    * ``"nonlinear_kernelonly"``: :math:`\sum_j \kappa(e(x_j), e(y), f(x_j))\, w_j`,
    * ``"nonlinear"``: :math:`\sum_j \kappa(e(x_j), e(y), f(x_j)) \odot f(x_j)\, w_j`,

    over the sources :math:`x_j` within ``radius`` of the query :math:`y`. The kernel is
    diagonal (an elementwise product), so the ``linear`` / ``nonlinear`` forms need
    ``out_channels == in_channels``. With quadrature weights ``w`` the sum is weighted
    (whatever ``reduction``, as neuraloperator); without, ``reduction="sum"`` takes
    :math:`w_j = 1` and ``"mean"`` divides by the neighbourhood size (an empty neighbourhood
    gives 0). The sum runs over an unordered set, so permuting the sources leaves the output
    unchanged and permuting the queries permutes it.

    Args:
        coord_dim: dimension ``d`` of the points.
        in_channels, out_channels: channels of ``f`` and of the output.
        radius: neighbourhood radius.
        k_max: neighbour slots per query (see :func:`radius_neighbours`; overflow raises).
        key: PRNG key of the kernel weights.
        transform_type: one of the four above (default ``"linear"``).
        reduction: ``"sum"`` (default) or ``"mean"``.
        hidden_widths: hidden layers of the kernel MLP (default ``(128, 256, 128)``, as
            neuraloperator's ``GNOBlock``).
        activation: nonlinearity of the kernel MLP (default :func:`jax.nn.gelu`).
        pos_embedding: ``"transformer"`` (default), ``"nerf"`` or ``None`` (raw coordinates).
        embedding_frequencies: frequencies per coordinate of the embedding (default 32).
        max_positions: the transformer embedding's base (default 10000).
        chunk_size: optional number of queries evaluated at a time (memory
            :math:`O(\text{chunk\_size}\cdot(n + k_{\max} \cdot \text{width}))`).
        dtype: of the weights (default: the default float).
    """

    kernel: KernelMLP
    coord_dim: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    radius: float = eqx.field(static=True)
    k_max: int = eqx.field(static=True)
    transform_type: str = eqx.field(static=True)
    reduction: str = eqx.field(static=True)
    pos_embedding: str | None = eqx.field(static=True)
    embedding_frequencies: int = eqx.field(static=True)
    max_positions: float = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)

    def __init__(
        self,
        coord_dim: int,
        in_channels: int,
        out_channels: int,
        *,
        radius: float,
        k_max: int,
        key: PRNGKeyArray,
        transform_type: str = "linear",
        reduction: str = "sum",
        hidden_widths: Sequence[int] = (128, 256, 128),
        activation: Callable = jax.nn.gelu,
        pos_embedding: str | None = "transformer",
        embedding_frequencies: int = 32,
        max_positions: float = 10000.0,
        chunk_size: int | None = None,
        dtype=None,
    ):
        check_int("coord_dim", coord_dim)
        check_int("in_channels", in_channels)
        check_int("out_channels", out_channels)
        check_int("k_max", k_max)
        check_choice("transform_type", transform_type, set(_TRANSFORMS))
        check_choice("reduction", reduction, {"sum", "mean"})
        if pos_embedding not in _EMBEDDINGS:
            raise ValueError(
                f"pos_embedding must be 'transformer', 'nerf' or None; got {pos_embedding!r}."
            )
        check_int("embedding_frequencies", embedding_frequencies)
        _check_chunk(chunk_size)
        hidden = check_widths("hidden_widths", hidden_widths)
        self.radius = check_real("radius", radius, minimum=0.0, strict=True)
        self.max_positions = check_real("max_positions", max_positions, minimum=0.0, strict=True)
        if transform_type in ("linear", "nonlinear") and out_channels != in_channels:
            raise ValueError(
                f"transform_type={transform_type!r} multiplies the kernel by f elementwise, so "
                f"out_channels must equal in_channels={in_channels}; got out_channels="
                f"{out_channels}."
            )
        coord_features = (
            coord_dim if pos_embedding is None else 2 * embedding_frequencies * coord_dim
        )
        kernel_in = 2 * coord_features
        if transform_type.startswith("nonlinear"):
            kernel_in += in_channels
        self.kernel = KernelMLP(
            (kernel_in, *hidden, out_channels), key=key, activation=activation, dtype=dtype
        )
        self.coord_dim = int(coord_dim)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.k_max = int(k_max)
        self.transform_type = transform_type
        self.reduction = reduction
        self.pos_embedding = pos_embedding
        self.embedding_frequencies = int(embedding_frequencies)
        self.chunk_size = chunk_size

    def _embed(self, points):
        if self.pos_embedding is None:
            return points
        return sinusoidal_embedding(
            points, self.embedding_frequencies, self.pos_embedding, self.max_positions
        )

    def __call__(
        self,
        sources: Float[ArrayLike, "n d"],
        queries: Float[ArrayLike, "m d"],
        f: Float[ArrayLike, "cin n"] | None = None,
        weights: Float[ArrayLike, " n"] | None = None,
        *,
        neighbours: Neighbours | None = None,
    ) -> Float[Array, "cout m"]:
        """Evaluate the kernel integral at ``queries``.

        Args:
            sources: ``(n, d)`` points where ``f`` is given.
            queries: ``(m, d)`` output points.
            f: ``(in_channels, n)`` input function; required unless
                ``transform_type="linear_kernelonly"`` (where it must be ``None``).
            weights: optional ``(n,)`` quadrature weights of the sources.
            neighbours: precomputed :func:`radius_neighbours` of ``queries`` among ``sources``
                (e.g. to share one search between layers); searched here otherwise.
        """
        _check_points("sources", sources, self.coord_dim)
        _check_points("queries", queries, self.coord_dim)
        n, m = np.shape(sources)[0], np.shape(queries)[0]
        if self.transform_type == "linear_kernelonly":
            if f is not None:
                raise ValueError("f must be None for transform_type='linear_kernelonly'.")
        else:
            if f is None or tuple(np.shape(f)) != (self.in_channels, n):
                got = None if f is None else tuple(np.shape(f))
                raise ValueError(
                    f"f must have shape (in_channels={self.in_channels}, n={n}) for "
                    f"transform_type={self.transform_type!r}; got {got}."
                )
        if weights is not None and tuple(np.shape(weights)) != (n,):
            raise ValueError(f"weights must have shape (n={n},); got {tuple(np.shape(weights))}.")
        if neighbours is None:
            neighbours = radius_neighbours(
                queries, sources, self.radius, self.k_max, chunk_size=self.chunk_size
            )
        elif tuple(neighbours.indices.shape) != (m, self.k_max):
            raise ValueError(
                f"neighbours must hold (m={m}, k_max={self.k_max}) lists; got "
                f"{tuple(neighbours.indices.shape)}."
            )
        dtype = self.kernel.weights[0].dtype
        src_feat = self._embed(jnp.asarray(sources, dtype))
        qry_feat = self._embed(jnp.asarray(queries, dtype))
        f_rows = None if f is None else jnp.moveaxis(jnp.asarray(f, dtype), 0, -1)  # (n, cin)
        w = None if weights is None else jnp.asarray(weights, dtype)

        def one(q, idx, mask):
            # One query: gather its neighbours, evaluate the kernel on each (source, query) pair,
            # mask the empty slots, reduce.
            feats = [src_feat[idx], jnp.broadcast_to(q, (idx.shape[0], q.shape[-1]))]
            fx = None if f_rows is None else f_rows[idx]
            if self.transform_type.startswith("nonlinear"):
                feats.append(fx)
            vals = self.kernel(jnp.concatenate(feats, axis=-1))  # (k, cout)
            if self.transform_type in ("linear", "nonlinear"):
                vals = vals * fx
            if w is None:
                scale = mask.astype(dtype)
            else:
                scale = jnp.where(mask, w[idx], 0)
            total = jnp.sum(vals * scale[:, None], axis=0)
            if w is None and self.reduction == "mean":
                total = total / jnp.maximum(jnp.sum(mask), 1).astype(dtype)
            return total

        out = _map_queries(
            one, (qry_feat, neighbours.indices, neighbours.mask), self.chunk_size
        )  # (m, cout)
        return jnp.moveaxis(out, -1, 0)


def gno_from_neuraloperator(torch_block, *, k_max: int, chunk_size=None, dtype=None) -> GNO:
    """Our :class:`GNO` computing the same function as a neuraloperator 2.0 ``GNOBlock``.

    neuraloperator's call ``block(y, x, f_y)`` (sources ``y``, queries ``x``, ``f_y`` of shape
    ``(n, in_channels)``) corresponds to ``gno(y, x, f_y.T).T``. Supported: a
    ``LinearChannelMLP`` kernel with the exact GELU (its default) or another activation passed
    through unchanged only when it is ``F.gelu``, no weighting function (mollified GNO), and the
    sinusoidal embeddings or none. ``k_max`` has no counterpart there (its neighbour lists are
    ragged) and must cover the largest neighbourhood.
    """
    import torch.nn.functional as F  # torch is present if a torch model is

    b = torch_block
    it = b.integral_transform
    if it.weighting_fn is not None:
        raise ValueError("torch_block: a weighting function (mollified GNO) has no counterpart.")
    mlp = it.channel_mlp
    if not hasattr(mlp, "fcs") or getattr(mlp, "dropout", None) is not None:
        raise ValueError(
            "torch_block: only a LinearChannelMLP kernel without dropout is supported."
        )
    if mlp.non_linearity is not F.gelu:
        raise ValueError("torch_block: only the GELU kernel activation is supported.")
    pe = b.pos_embedding
    if pe is None:
        kind, freqs, max_pos = None, 1, 10000.0
    else:
        kind, freqs, max_pos = pe.embedding_type, pe.num_frequencies, float(pe.max_positions)
    widths = [fc.weight.shape[0] for fc in mlp.fcs]
    dtype = default_float() if dtype is None else dtype
    ours = GNO(
        b.coord_dim,
        b.in_channels,
        b.out_channels,
        radius=float(b.radius),
        k_max=k_max,
        key=jax.random.PRNGKey(0),
        transform_type=it.transform_type,
        reduction=it.reduction,
        hidden_widths=tuple(widths[:-1]),
        activation=partial(jax.nn.gelu, approximate=False),
        pos_embedding=kind,
        embedding_frequencies=freqs,
        max_positions=max_pos,
        chunk_size=chunk_size,
        dtype=dtype,
    )
    ws = tuple(jnp.asarray(torch_array(fc.weight), dtype) for fc in mlp.fcs)
    bs = tuple(jnp.asarray(torch_array(fc.bias), dtype) for fc in mlp.fcs)
    if any(w.shape != v.shape for w, v in zip(ws, ours.kernel.weights, strict=True)):
        raise ValueError("torch_block: kernel MLP widths do not match its coordinates/channels.")
    return eqx.tree_at(lambda g: (g.kernel.weights, g.kernel.biases), ours, (ws, bs))


__all__ = [
    "GNO",
    "KernelMLP",
    "Neighbours",
    "gno_from_neuraloperator",
    "radius_neighbours",
    "sinusoidal_embedding",
]
