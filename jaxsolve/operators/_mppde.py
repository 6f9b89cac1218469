r"""Message-passing neural PDE solver with temporal bundling.

"Message Passing Neural PDE Solvers" (Brandstetter, Worrall, Welling) solves a time-dependent PDE
on a graph whose nodes :math:`i` are points :math:`x_i` (a grid or an irregular cloud) carrying
the last ``history`` frames :math:`u_i` of the solution (stacked, ``history * C`` numbers) and
optional PDE parameters :math:`\theta`:

.. math::

    f_i^0 &= \epsilon(u_i, \theta) \\
    m_i^\ell &= \operatorname*{mean}_{j \in \mathcal N(i)}
        \phi^\ell\big(f_i^\ell, f_j^\ell, u_i - u_j, x_i - x_j, \theta\big) \\
    f_i^{\ell+1} &= \operatorname{norm}\big(f_i^\ell + \psi^\ell(f_i^\ell, m_i^\ell, \theta)\big)
        \qquad \ell = 0, \dots, M-1 \\
    u_i(t + k\,\Delta t) &= u_i(t) + k\,\Delta t\; d_{ik}, \qquad
        (d_{i1}, \dots, d_{iK}) = \delta(f_i^M), \qquad k = 1, \dots, K,

with MLPs :math:`\epsilon, \phi^\ell, \psi^\ell` (swish after every affine map), instance
normalisation over the nodes, and a shallow 1-D CNN :math:`\delta` run along each node's feature
vector (one input channel, ``C`` output channels, ``K`` output positions): *temporal bundling*
predicts the next ``K`` frames at once from the last one, :math:`u_i(t)`. The graph only enters
through differences :math:`x_i - x_j`, :math:`u_i - u_j` and sums over unordered neighbour sets,
so the solver is equivariant to node permutations and invariant to translations (on a periodic
domain the differences are wrapped, which makes it equivariant to circular shifts of a grid).
Unlike the paper's encoder, which also reads the absolute position and time, :math:`\epsilon`
sees only the solution and :math:`\theta` by default (``encode_positions=True`` adds
:math:`x_i`, at the cost of translation invariance); a time can travel in :math:`\theta`.

Neighbour lists are the fixed-size masked :class:`~jaxsolve.operators.Neighbours` of the GNO
(:func:`mppde_neighbours` builds them from :func:`~jaxsolve.operators.radius_neighbours`, with
periodic images for a periodic box and without self-loops), so everything jits and vmaps.

Training with bundles: :func:`jaxsolve.train.rollout_loss` advances models that predict one frame
from a window. :func:`bundle_trajectory` regroups a trajectory ``(T, C, *spatial)`` into
``(T // K, K * C, *spatial)``: one "frame" there is a bundle of ``K`` frames, so a
:class:`MPPDEGrid` with ``history = time_window = K`` is a one-bundle-to-one-bundle model and
``rollout_loss(model, bundle_trajectory(trajectory, K), history=1, mode="pushforward")`` is the
paper's pushforward trick (unroll without gradient, train the last step on the model's own
input distribution). :func:`unbundle_trajectory` undoes the regrouping.
"""

from collections.abc import Callable, Sequence
from itertools import product

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float, exact_einsum, is_concrete
from ._checks import check_real, check_sample, float_input
from ._gno import KernelMLP, Neighbours, _float_points, radius_neighbours
from ._spectral import periodic_grid

_DECODER_CHANNELS = 8  # hidden channels of the decoder CNN, as the paper's


def _check_period(period, dim: int):
    """``None`` or a tuple of ``dim`` positive box lengths (one number is every axis')."""
    if period is None:
        return None
    if isinstance(period, (tuple, list)):
        if len(period) != dim:
            raise ValueError(
                f"period must have one length per coordinate ({dim}); got {len(period)}."
            )
        return tuple(check_real("period", p, minimum=0.0, strict=True) for p in period)
    return (check_real("period", period, minimum=0.0, strict=True),) * dim


def _wrap(dx, period):
    """Differences of coordinates wrapped into :math:`[-L/2, L/2]` on periodic axes."""
    if period is None:
        return dx
    box = jnp.asarray(period, dx.dtype)
    return dx - box * jnp.round(dx / box)


def _check_points(name, points, n=None, dim=None):
    shape = tuple(np.shape(points))
    if len(shape) != 2 or shape[0] < 1:
        raise ValueError(f"{name} must be an (n, d) array of n >= 1 points; got shape {shape}.")
    if (n is not None and shape[0] != n) or (dim is not None and shape[1] != dim):
        raise ValueError(
            f"{name} must have shape (n={n if n is not None else shape[0]}, d="
            f"{dim if dim is not None else shape[1]}); got {shape}."
        )


def mppde_neighbours(
    positions: Float[ArrayLike, "n d"],
    radius,
    k_max: int,
    *,
    period: float | Sequence[float] | None = None,
    self_loops: bool = False,
    chunk_size: int | None = None,
    throw: bool = True,
) -> Neighbours:
    r"""The graph of an :class:`MPPDE`: for every point, the other points within ``radius``.

    Distances are Euclidean, or, with ``period``, measured in the periodic box (the minimum over
    periodic images): the sources are the points and their images shifted by
    :math:`\{-L, 0, L\}` along each axis (:math:`3^d n` of them), searched by
    :func:`~jaxsolve.operators.radius_neighbours`, and the indices folded back modulo ``n``.
    A point then meets each other point at most once only when ``radius < L / 2`` on every
    axis, which is required.

    Args:
        positions: ``(n, d)`` points (inside ``[0, L)`` per axis when periodic).
        radius: ball radius.
        k_max: neighbour slots per point (excluding the point itself unless ``self_loops``).
        period: box length, one number or one per axis; ``None`` for an open domain.
        self_loops: keep each point in its own list (the paper's graphs have none).
        chunk_size: optional number of points searched at a time.
        throw: raise when a point has more than ``k_max`` neighbours (else see ``overflow``).

    Returns:
        A :class:`~jaxsolve.operators.Neighbours` of ``(n, k_max)`` lists; ``counts`` excludes
        the point itself unless ``self_loops``.
    """
    _check_points("positions", positions)
    check_int("k_max", k_max)
    # Float before the periodic images are formed: integer positions would round the period.
    positions = _float_points(positions)
    n, d = positions.shape
    period = _check_period(period, d)
    if period is not None and is_concrete(radius):
        r = check_real("radius", radius, minimum=0.0, strict=True)
        if r >= min(period) / 2:
            raise ValueError(
                f"radius must be below half the period ({min(period) / 2}) so that a point meets "
                f"each periodic image of another at most once; got {r}."
            )
    if period is not None and not is_concrete(radius):
        # The images would double-count a pair at a distance near L / 2, silently.
        radius = jnp.asarray(radius, positions.dtype)
        radius = eqx.error_if(
            radius,
            radius >= min(period) / 2,
            "mppde_neighbours: radius must be below half the period (a traced value).",
        )
    sources = positions
    if period is not None:
        shifts = jnp.asarray(list(product((0.0, -1.0, 1.0), repeat=d)), positions.dtype)
        images = shifts * jnp.asarray(period, positions.dtype)  # (3^d, d), the unshifted first
        sources = (positions[None] + images[:, None]).reshape(-1, d)
    slots = k_max if self_loops else k_max + 1  # the point itself takes one slot of the search
    found = radius_neighbours(positions, sources, radius, slots, chunk_size=chunk_size, throw=throw)
    idx = found.indices % n
    mask, counts = found.mask, found.counts
    if not self_loops:
        mask = mask & (idx != jnp.arange(n, dtype=idx.dtype)[:, None])
        counts = counts - 1
        # Move the freed slot to the end (a stable sort keeps the others in order), drop it.
        order = jnp.argsort(~mask, axis=1, stable=True)[:, :k_max]
        idx = jnp.take_along_axis(idx, order, axis=1)
        mask = jnp.take_along_axis(mask, order, axis=1)
    idx = jnp.where(mask, idx, 0)
    return Neighbours(indices=idx, mask=mask, counts=counts, overflow=jnp.any(counts > k_max))


def grid_neighbours(
    spatial_shape: Sequence[int],
    lengths: float | Sequence[float] = 1.0,
    radius: float | None = None,
    *,
    periodic: bool = True,
) -> Neighbours:
    r"""The :func:`mppde_neighbours` graph of the grid :math:`x_n = n L / N`, built from the
    stencil of integer offsets :math:`o \ne 0` with :math:`\|o \odot h\| \le r` (``h`` the
    spacings; a relative slack of 1e-12 keeps offsets lying on the sphere inside whatever the
    rounding of :math:`o \odot h`): every point gets the same stencil, with :math:`O(n k)` work
    and no distance computed between points.

    ``k_max`` is the stencil's size; near an open boundary the missing points are masked.
    ``radius`` defaults to 2.5 of the largest spacing. Nodes are the grid points in C order.
    """
    shape = tuple(check_int(f"spatial_shape[{j}]", s) for j, s in enumerate(spatial_shape))
    d = len(shape)
    box = _check_period(lengths, d)
    spacing = np.array([b / s for b, s in zip(box, shape, strict=True)])
    r = (
        2.5 * spacing.max()
        if radius is None
        else check_real("radius", radius, minimum=0.0, strict=True)
    )
    if periodic and r >= min(box) / 2:
        raise ValueError(
            f"radius must be below half the box ({min(box) / 2}) on a periodic grid; got {r}."
        )
    reach = [int(np.floor(r / h)) for h in spacing]
    offsets = np.array(list(product(*[range(-m, m + 1) for m in reach])), dtype=np.int64)
    dist2 = np.sum((offsets * spacing) ** 2, axis=1)
    offsets = offsets[(dist2 <= r * r * (1 + 1e-12)) & np.any(offsets != 0, axis=1)]
    coords = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    coords = coords.reshape(-1, d)
    nbr = coords[:, None, :] + offsets[None]  # (n, k, d)
    if periodic:
        mask = np.ones(nbr.shape[:2], bool)
        nbr = nbr % np.array(shape)
    else:
        mask = np.all((nbr >= 0) & (nbr < np.array(shape)), axis=-1)
        nbr = np.clip(nbr, 0, np.array(shape) - 1)
    idx = np.where(mask, np.ravel_multi_index(tuple(nbr.transpose(2, 0, 1)), shape), 0)
    return Neighbours(
        indices=jnp.asarray(idx, jnp.int32),
        mask=jnp.asarray(mask),
        counts=jnp.asarray(mask.sum(1), jnp.int32),
        overflow=jnp.asarray(False),
    )


def _decoder_geometry(width: int, time_window: int, kernel: int | None, stride: int | None):
    """Kernel sizes and stride of the two decoder convolutions so that a ``width``-long feature
    vector becomes ``time_window`` outputs: ``L1 = (width - k1) // s + 1 >= K`` and
    ``k2 = L1 - K + 1``."""
    if time_window > width:
        raise ValueError(
            f"width ({width}) must be at least time_window ({time_window}): the decoder CNN reads "
            f"the {width} features of a node as a signal and outputs {time_window} positions."
        )
    k1 = min(15, width - time_window + 1) if kernel is None else check_int("decoder_kernel", kernel)
    if k1 > width:
        raise ValueError(f"decoder_kernel must be at most width ({width}); got {k1}.")
    if stride is None:
        stride = max(1, min(4, (width - k1) // time_window))
    stride = check_int("decoder_stride", stride)
    length = (width - k1) // stride + 1
    if length < time_window:
        raise ValueError(
            f"decoder_kernel={k1} with decoder_stride={stride} leaves {length} positions from "
            f"width {width}, fewer than time_window={time_window}."
        )
    return k1, stride, length - time_window + 1


def _after_first_layer(mlp: KernelMLP, v):
    """The rest of ``mlp`` applied to the output ``v`` of its first affine layer (the activation
    before each later layer, none after the last, as :class:`KernelMLP` does)."""
    for w, b in zip(mlp.weights[1:], mlp.biases[1:], strict=True):
        v = exact_einsum("...i,oi->...o", mlp.activation(v), w) + b
    return v


def _instance_norm(h, eps):
    """Each feature normalised to mean 0, variance 1 over the nodes (no affine part)."""
    mean = jnp.mean(h, axis=0)
    var = jnp.mean((h - mean) ** 2, axis=0)
    return (h - mean) * jax.lax.rsqrt(var + eps)


class MPPDE(eqx.Module):
    r"""Message-passing PDE solver on a point cloud (see the module docstring for the maths).

    ``model(u_hist, positions, neighbours, params)`` maps the last ``history`` frames at ``n``
    points, ``u_hist`` of shape ``(n, history * C)`` (frame-major: column ``t * C + c`` is
    channel ``c`` of frame ``t``, the oldest first), to the next ``time_window`` frames,
    ``(n, time_window * C)`` in the same layout.

    Args:
        coord_dim: dimension ``d`` of the points.
        channels: ``C``, the solution's components.
        time_window: ``K``, frames predicted per call (temporal bundle).
        width: hidden features per node.
        key: PRNG key of the weights.
        history: frames read per node (default ``time_window``, as the paper).
        num_layers: message-passing layers ``M`` (default 6).
        num_params: length of the PDE-parameter vector :math:`\theta` (default 0).
        dt: time step between frames (static).
        period: box length(s) of a periodic domain (positions differences are wrapped);
            ``None`` for an open one.
        reduction: ``"mean"`` (the paper's) or ``"sum"`` over neighbours.
        normalise: instance normalisation after each layer (default true).
        encode_positions: give the encoder the absolute position (breaks translation
            invariance).
        activation: nonlinearity (default swish).
        decoder_kernel, decoder_stride: first decoder convolution (default: kernel
            ``min(15, width - K + 1)``, the largest stride up to 4 that leaves ``K`` positions).
        eps: of the normalisation.
        dtype: of the weights.
    """

    encoder: KernelMLP
    message_nets: tuple[KernelMLP, ...]
    update_nets: tuple[KernelMLP, ...]
    decoder_w1: Float[Array, "hidden k1"]
    decoder_b1: Float[Array, " hidden"]
    decoder_w2: Float[Array, "c hidden k2"]
    decoder_b2: Float[Array, " c"]
    coord_dim: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)
    time_window: int = eqx.field(static=True)
    history: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    num_params: int = eqx.field(static=True)
    dt: float = eqx.field(static=True)
    period: tuple[float, ...] | None = eqx.field(static=True)
    reduction: str = eqx.field(static=True)
    normalise: bool = eqx.field(static=True)
    encode_positions: bool = eqx.field(static=True)
    decoder_stride: int = eqx.field(static=True)
    eps: float = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        coord_dim: int,
        channels: int,
        *,
        time_window: int,
        width: int,
        key: PRNGKeyArray,
        history: int | None = None,
        num_layers: int = 6,
        num_params: int = 0,
        dt: float = 1.0,
        period: float | Sequence[float] | None = None,
        reduction: str = "mean",
        normalise: bool = True,
        encode_positions: bool = False,
        activation: Callable = jax.nn.swish,
        decoder_kernel: int | None = None,
        decoder_stride: int | None = None,
        eps: float = 1e-5,
        dtype=None,
    ):
        dtype = default_float() if dtype is None else dtype
        d = check_int("coord_dim", coord_dim)
        c = check_int("channels", channels)
        k = check_int("time_window", time_window)
        h = check_int("width", width)
        hist = k if history is None else check_int("history", history)
        layers = check_int("num_layers", num_layers, minimum=0)
        p = check_int("num_params", num_params, minimum=0)
        check_choice("reduction", reduction, {"mean", "sum"})
        k1, stride, k2 = _decoder_geometry(h, k, decoder_kernel, decoder_stride)
        period = _check_period(period, d)
        keys = jax.random.split(key, 2 * layers + 2)
        u_feat = hist * c
        enc_in = u_feat + p + (d if encode_positions else 0)
        mlp = dict(activation=activation, dtype=dtype)
        self.encoder = KernelMLP((enc_in, h, h), key=keys[0], **mlp)
        self.message_nets = tuple(
            KernelMLP((2 * h + u_feat + d + p, h, h), key=keys[1 + j], **mlp) for j in range(layers)
        )
        self.update_nets = tuple(
            KernelMLP((2 * h + p, h, h), key=keys[1 + layers + j], **mlp) for j in range(layers)
        )
        # Decoder weights uniform in +-1/sqrt(fan-in) (PyTorch's Conv1d), from one draw.
        hid = _DECODER_CHANNELS
        sizes = np.cumsum([hid * k1, hid, c * hid * k2])
        flat = jax.random.uniform(keys[-1], (int(sizes[-1]) + c,), dtype, -1.0, 1.0)
        first, second = flat[: sizes[1]] / np.sqrt(k1), flat[sizes[1] :] / np.sqrt(hid * k2)
        self.decoder_w1 = first[: hid * k1].reshape(hid, k1)
        self.decoder_b1 = first[hid * k1 :]
        self.decoder_w2 = second[: c * hid * k2].reshape(c, hid, k2)
        self.decoder_b2 = second[c * hid * k2 :]
        self.coord_dim, self.channels, self.time_window, self.history = d, c, k, hist
        self.width, self.num_params = h, p
        self.dt = check_real("dt", dt, minimum=0.0, strict=True)
        self.period = period
        self.reduction = reduction
        self.normalise = bool(normalise)
        self.encode_positions = bool(encode_positions)
        self.decoder_stride = stride
        self.eps = check_real("eps", eps, minimum=0.0)
        self.activation = activation

    def neighbours(self, positions: Float[ArrayLike, "n d"], radius, k_max: int, **options):
        """:func:`mppde_neighbours` with this model's ``period``."""
        return mppde_neighbours(positions, radius, k_max, period=self.period, **options)

    def _check_inputs(self, u_hist, positions, neighbours, params):
        n = np.shape(u_hist)[0] if np.ndim(u_hist) == 2 else None
        if n is None or np.shape(u_hist)[1] != self.history * self.channels:
            raise ValueError(
                f"u_hist must have shape (n, history * channels = {self.history * self.channels})"
                f"; got {tuple(np.shape(u_hist))}."
            )
        _check_points("positions", positions, n, self.coord_dim)
        if (
            not isinstance(neighbours, Neighbours)
            or np.ndim(neighbours.indices) != 2
            or (np.shape(neighbours.indices)[0] != n)
        ):
            raise ValueError(
                f"neighbours must be a Neighbours with (n={n}, k_max) lists (mppde_neighbours)."
            )
        if self.num_params == 0:
            if params is not None:
                raise ValueError("params must be None for a model built with num_params=0.")
            return
        if params is None or np.shape(params) not in ((self.num_params,), (n, self.num_params)):
            got = None if params is None else tuple(np.shape(params))
            raise ValueError(
                f"params must have shape (num_params={self.num_params},) or (n={n}, "
                f"{self.num_params}); got {got}."
            )

    def differences(
        self,
        u_hist: Float[ArrayLike, "n hc"],
        positions: Float[ArrayLike, "n d"],
        neighbours: Neighbours,
        params: Float[ArrayLike, "*np p"] | None = None,
    ) -> Float[Array, "n k c"]:
        """The decoder's output :math:`d_{ik}`, ``(n, time_window, channels)``: the call returns
        :math:`u_i(t) + k\\,\\Delta t\\, d_{ik}`."""
        self._check_inputs(u_hist, positions, neighbours, params)
        dtype = self.decoder_w1.dtype
        u = jnp.asarray(u_hist, dtype)
        x = jnp.asarray(positions, dtype)
        n = u.shape[0]
        extras = []
        if params is not None:
            extras.append(jnp.broadcast_to(jnp.asarray(params, dtype), (n, self.num_params)))
        act = self.activation
        enc_in = [u, *extras] + ([x] if self.encode_positions else [])
        f = act(self.encoder(jnp.concatenate(enc_in, axis=-1)))
        idx, mask = neighbours.indices, neighbours.mask
        # The one per-edge input that is not an affine function of node values: the (wrapped)
        # x_i - x_j. It does not change between layers.
        dx = _wrap(x[:, None, :] - x[idx], self.period)
        theta = extras[0] if extras else None
        weight = mask.astype(dtype)
        if self.reduction == "mean":
            weight = weight / jnp.maximum(jnp.sum(mask, axis=1, keepdims=True), 1).astype(dtype)
        for phi, psi in zip(self.message_nets, self.update_nets, strict=True):
            pre = self._first_message_layer(phi, f, u, dx, idx, theta)
            messages = act(_after_first_layer(phi, pre))
            m = jnp.sum(messages * weight[..., None], axis=1)
            f = f + act(psi(jnp.concatenate([f, m, *extras], axis=-1)))
            if self.normalise:
                f = _instance_norm(f, self.eps)
        return self._decode(f)

    def _first_message_layer(self, phi, f, u, dx, idx, theta):
        r"""The first (affine) layer of the message MLP :math:`\phi`, factored per node.

        On the edge :math:`(i, j)` that layer is :math:`W [f_i; f_j; u_i - u_j; x_i - x_j;
        \theta_i] + b`. Splitting :math:`W` by columns into :math:`(W_f, W_g, W_u, W_x,
        W_\theta)`, linearity gives

        .. math::

            \underbrace{W_f f_i + W_u u_i + W_\theta \theta_i + b}_{A_i}
            + \underbrace{W_g f_j - W_u u_j}_{B_j} + W_x (x_i - x_j),

        so :math:`A` and :math:`B` are computed once per node (``(n, h)`` each) and only the
        gather :math:`B_{j}`, the ``d``-column product with the wrapped position difference
        (not linear in the positions on a periodic box) and the sums are per edge: with
        ``h = width`` and ``m = history * channels``, the layer costs :math:`(d + 2) h` per edge
        instead of :math:`(2h + m + d + p) h`, and the ``(n, k, 2h + m + d + p)`` concatenation
        is never formed. Same weights, same result up to the order of floating-point additions
        (:math:`u_i - u_j` now enters as :math:`W_u u_i - W_u u_j`, rounded like the other
        terms of the sum).
        """
        h, hc, d = self.width, u.shape[-1], dx.shape[-1]
        w, b = phi.weights[0], phi.biases[0]
        w_f, w_g, w_u, w_x, w_theta = jnp.split(w, np.cumsum([h, h, hc, d]), axis=1)
        proj_u = exact_einsum("nc,hc->nh", u, w_u)
        node_i = exact_einsum("nc,hc->nh", f, w_f) + proj_u + b
        if theta is not None:
            node_i = node_i + exact_einsum("np,hp->nh", theta, w_theta)
        node_j = exact_einsum("nc,hc->nh", f, w_g) - proj_u
        return node_i[:, None] + node_j[idx] + exact_einsum("nkd,hd->nkh", dx, w_x)

    def _decode(self, f):
        """Shallow 1-D CNN along each node's feature vector: ``(n, width) -> (n, K, C)``."""
        k1 = self.decoder_w1.shape[1]
        k2 = self.decoder_w2.shape[2]
        length = self.time_window + k2 - 1
        taps1 = self.decoder_stride * np.arange(length)[:, None] + np.arange(k1)[None]
        hidden = exact_einsum("nlj,oj->nol", f[:, taps1], self.decoder_w1)
        hidden = self.activation(hidden + self.decoder_b1[:, None])  # (n, 8, L1)
        taps2 = np.arange(self.time_window)[:, None] + np.arange(k2)[None]
        out = exact_einsum("nikj,cij->nkc", hidden[:, :, taps2], self.decoder_w2)
        return out + self.decoder_b2

    def __call__(
        self,
        u_hist: Float[ArrayLike, "n hc"],
        positions: Float[ArrayLike, "n d"],
        neighbours: Neighbours,
        params: Float[ArrayLike, "*np p"] | None = None,
    ) -> Float[Array, "n kc"]:
        r"""The next ``time_window`` frames, :math:`u_i(t + k\Delta t) = u_i(t) +
        k\,\Delta t\, d_{ik}`, ``(n, time_window * channels)``.

        Args:
            u_hist: ``(n, history * channels)`` frames at the points, oldest first.
            positions: ``(n, coord_dim)`` coordinates.
            neighbours: the graph, ``(n, k_max)`` lists (:func:`mppde_neighbours`).
            params: PDE parameters, ``(num_params,)`` or per point ``(n, num_params)``.
        """
        d = self.differences(u_hist, positions, neighbours, params)
        u = jnp.asarray(u_hist, d.dtype)
        last = u[:, (self.history - 1) * self.channels :]  # u(t), (n, C)
        steps = self.dt * jnp.arange(1, self.time_window + 1, dtype=d.dtype)
        out = last[:, None, :] + steps[:, None] * d
        return out.reshape(u.shape[0], self.time_window * self.channels)


class MPPDEGrid(eqx.Module):
    r"""An :class:`MPPDE` on the points of a regular grid, with the time-stepper signature
    ``(history * C, *spatial) -> (time_window * C, *spatial)``.

    The grid is :math:`x_n = n L / N` per axis; the graph joins points within ``radius``
    (:func:`grid_neighbours`, built from the static grid shape when traced, so any grid size
    works). With ``periodic`` the domain is the torus of side ``lengths`` and the model is
    equivariant to circular shifts of the field.

    Args:
        num_spatial_dims: grid dimension.
        in_channels: ``history * C``.
        out_channels: ``time_window * C``.
        width: hidden node features.
        key: PRNG key.
        channels: ``C`` (default ``out_channels``: one frame per call, the house time stepper
            ``(history * C) -> C``).
        lengths: box side(s).
        periodic: periodic box (default true).
        radius: neighbourhood radius (default 2.5 of the largest grid spacing of each call's
            grid).
        **options: the rest of :class:`MPPDE` (``num_layers``, ``num_params``, ``dt``, ...).
    """

    mppde: MPPDE
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    lengths: tuple[float, ...] = eqx.field(static=True)
    periodic: bool = eqx.field(static=True)
    radius: float | None = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        key: PRNGKeyArray,
        channels: int | None = None,
        lengths: float | Sequence[float] = 1.0,
        periodic: bool = True,
        radius: float | None = None,
        **options,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        cin = check_int("in_channels", in_channels)
        cout = check_int("out_channels", out_channels)
        c = cout if channels is None else check_int("channels", channels)
        if cin % c or cout % c:
            raise ValueError(
                f"in_channels ({cin}) and out_channels ({cout}) must be multiples of channels "
                f"({c}): they stack history and time_window frames of {c} channels."
            )
        for name in ("period", "history", "time_window"):
            if name in options:
                raise TypeError(f"MPPDEGrid sets {name} itself; got {name}={options[name]!r}.")
        self.lengths = _check_period(lengths, d)
        self.periodic = bool(periodic)
        self.radius = (
            None if radius is None else check_real("radius", radius, minimum=0.0, strict=True)
        )
        self.mppde = MPPDE(
            d, c, time_window=cout // c, history=cin // c, width=width, key=key,
            period=self.lengths if self.periodic else None, **options,
        )  # fmt: skip
        self.num_spatial_dims, self.in_channels, self.out_channels = d, cin, cout

    def graph(self, spatial_shape: Sequence[int]):
        """Node positions ``(n, d)`` and :class:`~jaxsolve.operators.Neighbours` of a grid."""
        dtype = self.mppde.decoder_w1.dtype
        coords = periodic_grid(spatial_shape, self.lengths, dtype=dtype)
        positions = coords.reshape(self.num_spatial_dims, -1).T
        nb = grid_neighbours(spatial_shape, self.lengths, self.radius, periodic=self.periodic)
        return positions, nb

    def __call__(
        self,
        x: Float[ArrayLike, " cin *spatial"],
        params: Float[ArrayLike, " p"] | None = None,
    ) -> Float[Array, " cout *spatial"]:
        """Advance one sample ``(history * C, *spatial)`` by ``time_window`` frames."""
        check_sample(x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims,
                     where="MPPDEGrid")  # fmt: skip
        # The output takes the input's dtype: an integer field would truncate the prediction.
        x = float_input(x, self.mppde.decoder_b1.dtype)
        spatial = x.shape[1:]
        positions, nb = self.graph(spatial)
        nodes = x.reshape(self.in_channels, -1).T
        out = self.mppde(nodes, positions, nb, params)
        return out.T.reshape(self.out_channels, *spatial).astype(x.dtype)


def bundle_trajectory(
    trajectory: Float[ArrayLike, " frames c *spatial"], time_window: int
) -> Float[Array, " bundles kc *spatial"]:
    """Group ``K = time_window`` consecutive frames on the channel axis: ``(T, C, *spatial)``
    becomes ``(T // K, K * C, *spatial)`` (a trailing partial bundle is dropped), frame-major,
    so a bundle is what a :class:`MPPDEGrid` with ``history = time_window = K`` reads and
    returns and :func:`jaxsolve.train.rollout_loss` (``history=1``) can train it."""
    k = check_int("time_window", time_window)
    trajectory = jnp.asarray(trajectory)
    if trajectory.ndim < 2 or trajectory.shape[0] < k:
        raise ValueError(
            f"trajectory must have shape (frames >= time_window={k}, channels, *spatial); got "
            f"{trajectory.shape}."
        )
    t, c, *spatial = trajectory.shape
    b = t // k
    return trajectory[: b * k].reshape(b, k * c, *spatial)


def unbundle_trajectory(
    bundles: Float[ArrayLike, " bundles kc *spatial"], channels: int
) -> Float[Array, " frames c *spatial"]:
    """The inverse of :func:`bundle_trajectory`: ``(B, K * C, *spatial) -> (B * K, C, ...)``."""
    c = check_int("channels", channels)
    bundles = jnp.asarray(bundles)
    if bundles.ndim < 2 or bundles.shape[1] % c:
        raise ValueError(
            f"bundles must have shape (bundles, K * channels, *spatial) with channels={c}; got "
            f"{bundles.shape}."
        )
    b, kc, *spatial = bundles.shape
    return bundles.reshape(b * (kc // c), c, *spatial)


__all__ = [
    "MPPDE",
    "MPPDEGrid",
    "bundle_trajectory",
    "grid_neighbours",
    "mppde_neighbours",
    "unbundle_trajectory",
]
