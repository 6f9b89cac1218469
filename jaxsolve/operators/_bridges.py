r"""The neuraloperator bridge: jaxsolve operators carrying a neuraloperator 2.0 model's weights.

Each ``*_from_neuraloperator`` builds the jaxsolve model of the same architecture and copies the
PyTorch weights into it, so that the two compute the same function; :func:`from_neuraloperator`
picks the right one from the torch model's class. The layers every grid operator shares (a
spectral convolution, the pointwise skips and channel MLP of a Fourier block) are copied here,
once, by :func:`fno_block_from_torch` and the functions it calls.

What differs between the two layouts, and how it is bridged:

* **Mode order.** neuraloperator keeps the modes of each leading (full-FFT) axis in centred
  order :math:`-m, \dots, m-1` (after an ``fftshift``); ours are in FFT order
  :math:`0, \dots, m-1, -m, \dots, -1`. An ``ifftshift`` along those axes moves them: of the
  dense weight, or of the rows of a Tucker / CP factor of a mode axis (a factorisation is
  equivariant under permutations of an axis's indices, so the factors move, not the tensor).
* **Factorised weights** ("Multi-Grid Tensorized Fourier Neural Operator for High-Resolution
  PDEs"): tensorly-torch's Tucker tensor :math:`W = G \times_1 U_{in} \times_2 U_{out}
  \times_3 U_1 \cdots` is :class:`TuckerSpectralWeight` factor for factor; its CP tensor
  :math:`W = \sum_r \lambda_r\, a_r \otimes b_r \otimes c^{(1)}_r \cdots` becomes
  :class:`CPSpectralWeight` with :math:`\lambda` folded into the input-channel factor. Tensor
  trains and separable (diagonal) weights have no counterpart.
* **Complex storage.** Our complex weights are real arrays with a leading axis (real, imaginary).
* **1x1 convolutions** ``(out, in, 1)`` are matrices ``(out, in)``.
"""

from collections.abc import Callable
from functools import partial

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._fno import FNO, TFNO, ChannelMLP, FNOBlock, SoftGating
from ._spectral_conv import SpectralConv


def torch_array(p) -> np.ndarray:
    """A torch tensor (or parameter) as a NumPy array."""
    return np.asarray(p.detach().cpu().numpy())


def put(module, where: Callable, values):
    """``eqx.tree_at(where, module, values)``, with each new array cast to the dtype of the one
    it replaces; a structure or shape that differs raises ``ValueError`` (``tree_at`` would
    accept it and the model would fail, or broadcast, later)."""
    old = where(module)
    flat_old, tree_old = jax.tree.flatten(old)
    flat_new, tree_new = jax.tree.flatten(values)
    if tree_old != tree_new:
        raise ValueError(f"torch_model: the layer structure {tree_new} does not match {tree_old}.")
    cast = []
    for a, b in zip(flat_old, flat_new, strict=True):
        b = jnp.asarray(b, a.dtype)
        if a.shape != b.shape:
            raise ValueError(
                f"torch_model: a weight of shape {b.shape} where ours has shape {a.shape}."
            )
        cast.append(b)
    return eqx.tree_at(where, module, jax.tree.unflatten(tree_old, cast))


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

_SKIP_KINDS = {"Flattened1dConv": "linear", "SoftGating": "soft-gating", "Identity": "identity"}


def skip_kind(torch_skip) -> str | None:
    """Our name of a neuraloperator skip connection (``None`` for none)."""
    if torch_skip is None:
        return None
    name = type(torch_skip).__name__
    if name not in _SKIP_KINDS:
        raise ValueError(f"torch_model: a {name} skip connection has no counterpart here.")
    if name == "SoftGating" and getattr(torch_skip, "bias", None) is not None:
        raise ValueError("torch_model: a soft-gating skip with a bias has no counterpart here.")
    return _SKIP_KINDS[name]


def skip_from_torch(ours, torch_skip):
    """Our skip (linear :class:`ChannelMLP`, :class:`SoftGating` or identity) carrying a
    neuraloperator skip's weights."""
    skip_kind(torch_skip)
    if isinstance(ours, ChannelMLP):
        return put(ours, lambda m: m.weights, (torch_array(torch_skip.conv.weight)[..., 0],))
    if isinstance(ours, SoftGating):
        return put(ours, lambda m: m.weight, torch_array(torch_skip.weight).reshape(-1))
    return ours


def mlp_from_torch(ours: ChannelMLP, torch_mlp) -> ChannelMLP:
    """Our :class:`ChannelMLP` carrying a neuraloperator ``ChannelMLP``'s weights (1x1
    convolutions ``(out, in, 1)``)."""
    ws = tuple(torch_array(f.weight).reshape(f.weight.shape[0], -1) for f in torch_mlp.fcs)
    bs = tuple(torch_array(f.bias) for f in torch_mlp.fcs)
    return put(ours, lambda m: (m.weights, m.biases), (ws, bs))


def mlp_hidden_channels(torch_mlp) -> int:
    """Hidden width of a neuraloperator lifting / projection ``ChannelMLP`` (0: one layer)."""
    return torch_mlp.fcs[0].weight.shape[0] if len(torch_mlp.fcs) > 1 else 0


def _complex_pair(w) -> np.ndarray:
    return np.stack([w.real, w.imag])


def spectral_weight_from_torch(torch_conv, d: int):
    """A neuraloperator ``SpectralConv``'s weight in our storage.

    Returns:
        ``(factorization, arrays, modes, rank)``: our ``factorization`` (``None``, ``"tucker"``,
        ``"cp"``), the real ``(2, ...)`` arrays of the matching ``*SpectralWeight`` (FFT mode
        order), the ``modes`` in our convention and the ``rank`` that builds that weight.
    """
    c = torch_conv
    if getattr(c, "separable", False):
        raise ValueError("torch_model: separable spectral weights have no counterpart here.")
    if getattr(c, "complex_data", False):
        raise ValueError("torch_model: complex_data=True has no counterpart here.")
    if getattr(c, "fno_block_precision", "full") != "full":
        raise ValueError(
            f"torch_model: fno_block_precision={c.fno_block_precision!r} has no counterpart "
            f"here (only 'full')."
        )
    if getattr(c, "fft_norm", "forward") != "forward":
        raise ValueError(
            f"torch_model: fft_norm={c.fft_norm!r} has no counterpart (only 'forward')."
        )
    w = c.weight
    kind = type(w).__name__
    lead = tuple(range(d - 1))  # the mode axes kept in centred order

    def shifted_factor(f, j):
        f = torch_array(f)
        return np.fft.ifftshift(f, axes=0) if j in lead else f

    if kind == "TuckerTensor":
        fac = "tucker"
        factors = [torch_array(f) for f in w.factors[:2]]
        factors += [shifted_factor(f, j) for j, f in enumerate(w.factors[2:])]
        arrays = [_complex_pair(torch_array(w.core))] + [_complex_pair(f) for f in factors]
        mode_shape = tuple(f.shape[0] for f in factors[2:])
        rank = tuple(torch_array(w.core).shape)
    elif kind == "CPTensor":
        fac = "cp"
        lam = torch_array(w.weights)
        factors = [torch_array(w.factors[0]) * lam[None, :], torch_array(w.factors[1])]
        factors += [shifted_factor(f, j) for j, f in enumerate(w.factors[2:])]
        arrays = [_complex_pair(f) for f in factors]
        mode_shape = tuple(f.shape[0] for f in factors[2:])
        rank = int(lam.shape[0])
    elif kind in ("DenseTensor", "Tensor", "Parameter"):
        fac, rank = None, None
        dense = torch_array(getattr(w, "tensor", w))
        mode_shape = dense.shape[2:]
        arrays = [_complex_pair(np.fft.ifftshift(dense, axes=tuple(2 + j for j in lead)))]
    else:
        raise ValueError(
            f"torch_model: spectral weights of type {kind} have no counterpart here (supported: "
            f"dense, Tucker, CP)."
        )
    if len(mode_shape) != d:
        raise ValueError(f"torch_model: a {len(mode_shape)}-d spectral weight in a {d}-d model.")
    if tuple(c.n_modes) != tuple(mode_shape):
        raise ValueError(
            f"torch_model: its spectral weight holds modes {tuple(mode_shape)} but uses "
            f"{tuple(c.n_modes)} (max_n_modes larger than n_modes has no counterpart here)."
        )
    if any(mode_shape[j] % 2 for j in lead):
        raise ValueError(
            f"torch_model: only even n_modes on the leading axes have a counterpart here (ours keep "
            f"-m..m-1); got leading mode sizes {mode_shape[:-1]}."
        )
    modes = (*(mode_shape[j] // 2 for j in lead), mode_shape[-1])
    return fac, arrays, modes, rank


def spectral_conv_from_torch(ours: SpectralConv, torch_conv) -> SpectralConv:
    """Our :class:`SpectralConv` (of the same shape, factorisation and modes) carrying a
    neuraloperator ``SpectralConv``'s weights and bias."""
    fac, arrays, modes, _ = spectral_weight_from_torch(torch_conv, ours.num_spatial_dims)
    if fac != ours.factorization or modes != ours.modes:
        raise ValueError(
            f"torch_model: a spectral convolution with factorization={fac!r}, modes={modes} where "
            f"ours has factorization={ours.factorization!r}, modes={ours.modes}."
        )
    if (torch_conv.bias is None) != (ours.bias is None):
        raise ValueError("torch_model: a spectral convolution's bias is present on one side only.")
    dtype = jax.tree.leaves(ours.weights)[0].dtype
    weights = type(ours.weights).from_arrays([jnp.asarray(a, dtype) for a in arrays])
    new = put(ours, lambda c: c.weights, weights)
    if ours.bias is None:
        return new
    return put(new, lambda c: c.bias, torch_array(torch_conv.bias).reshape(-1))


def spectral_conv_from_neuraloperator(torch_conv, *, transform: str = "auto", dtype=None):
    """Our :class:`SpectralConv` computing the same function as a neuraloperator 2.0
    ``SpectralConv`` (dense, Tucker or CP weights; even ``n_modes`` on the leading axes; no
    resolution scaling)."""
    c = torch_conv
    if getattr(c, "resolution_scaling_factor", None) is not None:
        raise ValueError("torch_conv: resolution scaling has no counterpart here.")
    d = len(c.n_modes)
    fac, _, modes, rank = spectral_weight_from_torch(c, d)
    ours = SpectralConv(
        d,
        c.in_channels,
        c.out_channels,
        modes,
        key=jax.random.key(0),
        factorization=fac,
        rank=rank,
        use_bias=c.bias is not None,
        transform=transform,
        dtype=dtype or jnp.float32,
    )
    return spectral_conv_from_torch(ours, c)


# ----------------------------------------------------------------------------------------------
# Fourier blocks
# ----------------------------------------------------------------------------------------------


def fno_block_from_torch(ours, *, conv, skip=None, mlp=None, mlp_skip=None):
    """One of our Fourier blocks (any module with fields ``conv``, ``skip``, ``mlp``,
    ``mlp_skip``: :class:`FNOBlock`, :class:`UNOBlock`, :class:`LocalNOBlock`) carrying the
    weights of the corresponding neuraloperator layers (``None`` where the block has none)."""
    new = eqx.tree_at(lambda b: b.conv, ours, spectral_conv_from_torch(ours.conv, conv))
    for name, layer, copy in (
        ("skip", skip, skip_from_torch),
        ("mlp", mlp, mlp_from_torch),
        ("mlp_skip", mlp_skip, skip_from_torch),
    ):
        mine = getattr(ours, name)
        if (mine is None) != (layer is None):
            raise ValueError(f"torch_model: a block's {name} is present on one side only.")
        if mine is not None:
            new = eqx.tree_at(lambda b, name=name: getattr(b, name), new, copy(mine, layer))
    return new


def fno_blocks_layers(torch_blocks, i: int) -> dict:
    """The layers of block ``i`` of a neuraloperator ``FNOBlocks``, as keywords of
    :func:`fno_block_from_torch`."""
    b = torch_blocks
    mlp = b.channel_mlp[i] if b.use_channel_mlp else None
    mlp_skips = b.channel_mlp_skips if b.use_channel_mlp else None
    return dict(
        conv=b.convs[i],
        skip=None if b.fno_skips is None else b.fno_skips[i],
        mlp=mlp,
        mlp_skip=None if mlp_skips is None else mlp_skips[i],
    )


def _gelu_twice(x):
    exact = partial(jax.nn.gelu, approximate=False)
    return exact(exact(x))


def with_torch_block_activation(blocks, torch_blocks):
    """Our :class:`FNOBlock` s with the nonlinearity neuraloperator's ``FNOBlocks`` applies:
    without a channel MLP it applies its nonlinearity twice between blocks (once after the
    Fourier layer, once after where the channel MLP would be)."""
    if torch_blocks.use_channel_mlp:
        return blocks
    return tuple(FNOBlock(b.conv, b.skip, b.mlp, b.mlp_skip, _gelu_twice) for b in blocks)


def fno_blocks_options(torch_blocks) -> dict:
    """Our block keywords (``skip``, ``channel_mlp_expansion``, ``channel_mlp_skip``) for a
    neuraloperator ``FNOBlocks``; what has no counterpart raises ``ValueError`` naming it."""
    import torch.nn.functional as F  # torch is present if a torch model is

    b = torch_blocks
    for name, value, unsupported in (
        ("norm", None if b.norm is None else type(b.norm[0]).__name__, b.norm is not None),
        ("stabilizer", b.stabilizer, b.stabilizer is not None),
        ("preactivation", b.preactivation, bool(b.preactivation)),
        ("complex_data", b.complex_data, bool(b.complex_data)),
    ):
        if unsupported:
            raise ValueError(f"torch_model: {name}={value!r} has no counterpart here.")
    if b.non_linearity is not F.gelu:
        raise ValueError(
            f"torch_model: the Fourier blocks' non_linearity {b.non_linearity!r} has no "
            f"counterpart here (only F.gelu, the exact GELU its channel MLPs always use)."
        )
    # The ratio itself, not hidden / out of one block: levels of other widths round it alike.
    expansion = b.channel_mlp_expansion if b.use_channel_mlp else None
    return dict(
        skip=skip_kind(None if b.fno_skips is None else b.fno_skips[0]),
        channel_mlp_expansion=expansion,
        channel_mlp_skip=skip_kind(b.channel_mlp_skips[0])
        if b.use_channel_mlp and b.channel_mlp_skips is not None
        else None,
    )


# ----------------------------------------------------------------------------------------------
# FNO / TFNO
# ----------------------------------------------------------------------------------------------


def grid_embedding_from_torch(m, d: int) -> bool:
    """Whether a model appends neuraloperator's grid embedding (checked to be ours: the
    coordinates ``n / N`` of the box ``[0, 1]^d``)."""
    pe = m.positional_embedding
    if pe is None:
        return False
    bounds = getattr(pe, "grid_boundaries", None)
    if type(pe).__name__ not in ("GridEmbeddingND", "GridEmbedding2D") or bounds is None:
        raise ValueError(f"torch_model: positional embedding {type(pe).__name__} is not supported.")
    if [[float(a), float(b)] for a, b in bounds] != [[0.0, 1.0]] * d:
        raise ValueError(
            f"torch_model: grid_boundaries={bounds!r} have no counterpart (ours are [0, 1])."
        )
    return True


def fno_from_neuraloperator(torch_model, *, transform: str = "auto", dtype=None) -> FNO:
    """Our :class:`FNO` (:class:`TFNO` for Tucker or CP weights) computing the same function as a
    neuraloperator 2.0 ``FNO`` / ``TFNO``.

    Supported: dense, Tucker and CP spectral weights (``implementation`` "factorized" or
    "reconstructed": the same function) with even ``n_modes`` on the leading axes, the
    ``"grid"`` positional embedding or none, any skip kinds, the channel MLP or none, and
    domain padding whose fraction times the grid size is a whole number of cells (what
    neuraloperator rounds, ours requires; see :class:`FNO`). Not supported (``ValueError``
    naming it): normalisation, pre-activation, stabilizer, complex data, half precision,
    resolution scaling, separable or tensor-train weights, a nonlinearity other than the exact
    GELU. The result uses the exact GELU, ``partial(jax.nn.gelu, approximate=False)``.

    Args:
        torch_model: a ``neuralop.models.FNO`` or ``TFNO``.
        transform: of our spectral convolutions (see :class:`SpectralConv`): speed only.
        dtype: of our weights (default float32, the torch model's).
    """
    m = torch_model
    blocks_t = m.fno_blocks
    options = fno_blocks_options(blocks_t)
    if m.resolution_scaling_factor is not None:
        raise ValueError("torch_model: resolution_scaling_factor has no counterpart here.")
    d = m.n_dim
    fac, _, modes, rank = spectral_weight_from_torch(blocks_t.convs[0], d)
    padding = None if m.domain_padding is None else m.domain_padding.domain_padding
    cls = FNO if fac is None else TFNO
    ours = cls(
        d,
        m.in_channels,
        m.out_channels,
        width=m.hidden_channels,
        modes=modes,
        n_layers=m.n_layers,
        key=jax.random.key(0),
        lifting_channels=mlp_hidden_channels(m.lifting),
        projection_channels=mlp_hidden_channels(m.projection),
        activation=partial(jax.nn.gelu, approximate=False),
        domain_padding=padding,
        padding_mode="symmetric",
        positional_embedding=grid_embedding_from_torch(m, d),
        factorization=fac,
        rank=rank,
        spectral_bias=blocks_t.convs[0].bias is not None,
        transform=transform,
        dtype=dtype or jnp.float32,
        **options,
    )
    if m.non_linearity is not blocks_t.non_linearity:
        raise ValueError("torch_model: the lifting / projection non_linearity must be F.gelu.")
    blocks = tuple(
        fno_block_from_torch(b, **fno_blocks_layers(blocks_t, i)) for i, b in enumerate(ours.blocks)
    )
    blocks = with_torch_block_activation(blocks, blocks_t)
    return eqx.tree_at(
        lambda f: (f.lifting, f.blocks, f.projection),
        ours,
        (
            mlp_from_torch(ours.lifting, m.lifting),
            blocks,
            mlp_from_torch(ours.projection, m.projection),
        ),
    )


# ----------------------------------------------------------------------------------------------
# Dispatcher
# ----------------------------------------------------------------------------------------------

# neuraloperator class name -> (our module, our function); imported when used (the modules of
# UNO, LocalNO and GINO import this one).
_CONVERTERS = {
    "FNO": ("._bridges", "fno_from_neuraloperator"),
    "TFNO": ("._bridges", "fno_from_neuraloperator"),
    "UNO": ("._uno", "uno_from_neuraloperator"),
    "LocalNO": ("._local", "local_no_from_neuraloperator"),
    "GINO": ("._gino", "gino_from_neuraloperator"),
    "GNOBlock": ("._gno", "gno_from_neuraloperator"),
    "UQNO": ("._uqno", "uqno_from_neuraloperator"),
    "SpectralConv": ("._bridges", "spectral_conv_from_neuraloperator"),
    "FiniteDifferenceConvolution": ("._local", "differential_conv_from_neuraloperator"),
}


def from_neuraloperator(model, **kwargs):
    """The jaxsolve model computing the same function as a neuraloperator 2.0 model, chosen by
    the model's class (the first neuraloperator class of its MRO that has a counterpart):

    ========================================  ===============================================
    neuraloperator                            jaxsolve
    ========================================  ===============================================
    ``FNO``, ``TFNO``                         :func:`fno_from_neuraloperator`
    ``UNO``                                   :func:`uno_from_neuraloperator`
    ``LocalNO``                               :func:`local_no_from_neuraloperator`
    ``GINO``                                  :func:`gino_from_neuraloperator`
    ``GNOBlock``                              :func:`gno_from_neuraloperator`
    ``UQNO``                                  :func:`uqno_from_neuraloperator`
    ``SpectralConv``                          :func:`spectral_conv_from_neuraloperator`
    ``FiniteDifferenceConvolution``           :func:`differential_conv_from_neuraloperator`
    ========================================  ===============================================

    Args:
        model: the torch module.
        **kwargs: passed to that function (e.g. ``latent_shape``, ``in_k_max`` and
            ``out_k_max`` for GINO, ``k_max`` for a GNO block, ``dtype`` for all).

    Raises:
        TypeError: for a model of no supported class, listing the supported ones.
    """
    import importlib

    for cls in type(model).__mro__:
        if cls.__module__.split(".")[0] == "neuralop" and cls.__name__ in _CONVERTERS:
            module, name = _CONVERTERS[cls.__name__]
            return getattr(importlib.import_module(module, __package__), name)(model, **kwargs)
    raise TypeError(
        f"from_neuraloperator: {type(model).__module__}.{type(model).__qualname__} has no "
        f"jaxsolve counterpart; supported neuraloperator classes: {', '.join(_CONVERTERS)}."
    )
