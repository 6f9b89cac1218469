r"""Networks on coordinates: one point ``x`` of shape ``(in_size,)`` in, one value out.

Each is an ``equinox.Module`` evaluated on a single point (vmap over collocation points) and
returns a scalar (``out_size="scalar"``) or shape ``(out_size,)``. Parameters are in
:func:`jaxsolve._core.default_float` unless ``dtype`` is given. An optional ``embedding`` (any
callable on one point, e.g. :class:`FourierFeatures` or
:class:`jaxsolve.pinn._constraints.PeriodicEmbedding`) is applied to the point first; its output
size is found by tracing it once.

* :class:`MLP`: a multilayer perceptron with Glorot-normal weights and zero biases (the PINN
  default of DeepXDE and jaxpi).
* :class:`FourierFeatures`: :math:`\gamma(x) = [\cos(2\pi B x), \sin(2\pi B x)]` with
  :math:`B_{ij} \sim N(0, \sigma^2)` ("Fourier Features Let Networks Learn High Frequency
  Functions in Low Dimensional Domains", Tancik et al.). ``B`` is fixed: it is an array field but
  passes through ``jax.lax.stop_gradient``, so its gradient is zero and a gradient optimiser
  without weight decay leaves it unchanged (``trainable=True`` lets it learn).
* :class:`ModifiedMLP` ("Understanding and mitigating gradient pathologies in physics-informed
  neural networks", Wang, Teng, Perdikaris): two encoders :math:`U = \sigma(W_u x + b_u)`,
  :math:`V = \sigma(W_v x + b_v)`, :math:`H_1 = \sigma(W_1 x + b_1)`, then for each hidden layer
  the gate :math:`Z_k = \sigma(W_{z,k} H_k + b_{z,k})` and
  :math:`H_{k+1} = (1 - Z_k) \odot U + Z_k \odot V`; the output is linear in the last :math:`H`.
* :class:`SIREN` ("Implicit Neural Representations with Periodic Activation Functions", Sitzmann
  et al.): layers :math:`\sin(\omega_0 (W x + b))`; the first layer's weights are drawn from
  :math:`U(-1/n, 1/n)` and later layers' from
  :math:`U(-\sqrt{6/n}/\omega_0, \sqrt{6/n}/\omega_0)` (``n`` the fan-in), biases from
  :math:`U(-1/\sqrt n, 1/\sqrt n)`, with :math:`\omega_0 = 30`; the output layer is linear.
* :class:`PhysicsInformedGaussians` ("PIG: Physics-Informed Gaussians as Adaptive Parametric Mesh
  Representations", Kang, Oh, Hong, Park): learnable centres :math:`\mu_i`, shapes
  :math:`\Sigma_i` and feature vectors :math:`f_i`, the embedding
  :math:`\phi(x) = \sum_i f_i \exp(-\tfrac12 (x - \mu_i)^T \Sigma_i^{-1} (x - \mu_i))`, then a small
  MLP.
"""

import itertools
import math
from collections.abc import Callable
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import check_choice, check_int, check_positive, default_float, is_concrete
from .._core._init import draw, subkeys
from ._jets import AbstractJetFunction, FeatureStreams, Jets, directional_jets


def _check_out_size(out_size):
    if isinstance(out_size, str):
        check_choice("out_size", out_size, ("scalar",))
        return "scalar"
    return check_int("out_size", out_size)


def _n_out(out_size):
    return 1 if out_size == "scalar" else out_size


def _finish(y, out_size):
    return y[0] if out_size == "scalar" else y


def _embedded_size(embedding, in_size, dtype):
    if embedding is None:
        return in_size
    shape = jax.eval_shape(embedding, jax.ShapeDtypeStruct((in_size,), dtype)).shape
    if len(shape) != 1:
        raise ValueError(f"embedding must map a point to a vector; it returned shape {shape}.")
    return shape[0]


def _input(x, in_size, dtype, where):
    x = jnp.asarray(x)
    if x.shape != (in_size,):
        raise ValueError(
            f"{where} takes one point of shape (in_size={in_size},); got shape {x.shape}. Map "
            f"over points with jax.vmap."
        )
    return x.astype(dtype)


def _streams_in(embedding, points, directions, second, in_size, dtype, where):
    """The input's feature-major jets (through ``embedding`` when there is one)."""
    if points.shape[1] != in_size:
        raise ValueError(
            f"{where} takes points of shape (n, in_size={in_size}); got shape {points.shape}."
        )
    points, directions = points.astype(dtype), directions.astype(dtype)
    if embedding is None:
        return FeatureStreams.of_points(points, directions, second)
    return FeatureStreams.of_jets(
        directional_jets(embedding, points, directions, second=second), second
    )


class _Linear(eqx.Module):
    """``W x + b``."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __call__(self, x):
        return self.weight @ x + self.bias


def _glorot(sizes, key, dtype, *, pairs=None):
    """Linear layers ``sizes[k] -> sizes[k + 1]`` (or the given ``(fan_in, fan_out)`` pairs) with
    Glorot-normal weights, std ``sqrt(2 / (fan_in + fan_out))``, and zero biases."""
    specs = []
    for a, b in itertools.pairwise(sizes) if pairs is None else pairs:
        specs += [("normal", (b, a), math.sqrt(2.0 / (a + b))), ("zeros", (b,), 0.0)]
    arrays = draw(key, specs, dtype)
    return tuple(_Linear(w, b) for w, b in zip(arrays[0::2], arrays[1::2], strict=True))


def _widths(width, depth):
    return check_int("width", width), check_int("depth", depth)


class FourierFeatures(eqx.Module):
    r"""Random Fourier features :math:`[\cos(2\pi B x), \sin(2\pi B x)]`, ``B`` of shape
    ``(n_features, in_size)`` with entries :math:`N(0, \sigma^2)`.

    Args:
        in_size: dimension of the point.
        n_features: rows of ``B``; the output has ``2 * n_features`` entries.
        sigma: standard deviation of ``B`` (larger: higher frequencies); may be traced.
        key: PRNG key for ``B``.
        trainable: let ``B`` receive gradients (default ``False``: ``B`` is held fixed by
            ``jax.lax.stop_gradient``).
        dtype: parameter dtype (default :func:`default_float`).
    """

    B: Float[Array, "nf d"]
    trainable: bool = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        n_features: int,
        sigma: float | Float[ArrayLike, ""] = 1.0,
        *,
        key: PRNGKeyArray,
        trainable: bool = False,
        dtype: Any = None,
    ):
        in_size = check_int("in_size", in_size)
        n_features = check_int("n_features", n_features)
        check_positive("sigma", sigma)
        dtype = dtype or default_float()
        (b,) = draw(key, [("normal", (n_features, in_size), 1.0)], dtype)
        if is_concrete((sigma, key)):  # NumPy: nothing to compile at construction
            self.B = jnp.asarray(np.asarray(sigma, dtype) * np.asarray(b), dtype)
        else:
            self.B = jnp.asarray(sigma, dtype) * b
        self.trainable = bool(trainable)

    def __call__(self, x: Float[ArrayLike, " d"]) -> Float[Array, " f"]:
        B = self.B if self.trainable else jax.lax.stop_gradient(self.B)
        z = 2 * jnp.pi * (B @ _input(x, B.shape[1], B.dtype, "FourierFeatures"))
        return jnp.concatenate([jnp.cos(z), jnp.sin(z)])


class MLP(AbstractJetFunction):
    """Multilayer perceptron on one point: ``depth`` hidden layers of ``width`` (see module doc).

    Args:
        in_size: dimension of the point.
        out_size: output size, or ``"scalar"`` for a scalar output.
        width: hidden width.
        depth: number of hidden layers.
        key: PRNG key.
        activation: hidden activation (default ``tanh``).
        embedding: optional callable applied to the point first (e.g. :class:`FourierFeatures`).
        dtype: parameter dtype (default :func:`default_float`).
    """

    layers: tuple[_Linear, ...]
    embedding: Callable | None
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: Callable = jnp.tanh,
        embedding: Callable | None = None,
        dtype: Any = None,
    ):
        self.in_size = check_int("in_size", in_size)
        self.out_size = _check_out_size(out_size)
        width, depth = _widths(width, depth)
        dtype = dtype or default_float()
        n_in = _embedded_size(embedding, self.in_size, dtype)
        self.layers = _glorot([n_in, *[width] * depth, _n_out(self.out_size)], key, dtype)
        self.embedding = embedding
        self.activation = activation

    def __call__(self, x: Float[ArrayLike, " d"]) -> Float[Array, " *out"]:
        h = _input(x, self.in_size, self.layers[0].weight.dtype, "MLP")
        if self.embedding is not None:
            h = self.embedding(h)
        for layer in self.layers[:-1]:
            h = self.activation(layer(h))
        return _finish(self.layers[-1](h), self.out_size)

    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """All points' jets in one feature-major pass (:mod:`jaxsolve.pinn._jets`)."""
        dtype = self.layers[0].weight.dtype
        h = _streams_in(self.embedding, points, directions, second, self.in_size, dtype, "MLP")
        for layer in self.layers[:-1]:
            h = h.affine(layer.weight, layer.bias).map(self.activation)
        last = self.layers[-1]
        return h.affine(last.weight, last.bias).to_jets(self.out_size == "scalar")


class ModifiedMLP(AbstractJetFunction):
    """The gated "modified MLP" of Wang, Teng and Perdikaris (see module doc).

    Args:
        in_size: dimension of the point.
        out_size: output size, or ``"scalar"``.
        width: hidden width (shared by the encoders ``U``, ``V`` and every ``H``).
        depth: number of gated hidden layers (``depth >= 1``).
        key: PRNG key.
        activation: the activation :math:`\\sigma` (default ``tanh``).
        embedding: optional callable applied to the point first.
        dtype: parameter dtype (default :func:`default_float`).
    """

    encoder_u: _Linear
    encoder_v: _Linear
    first: _Linear
    gates: tuple[_Linear, ...]
    output: _Linear
    embedding: Callable | None
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: Callable = jnp.tanh,
        embedding: Callable | None = None,
        dtype: Any = None,
    ):
        self.in_size = check_int("in_size", in_size)
        self.out_size = _check_out_size(out_size)
        width, depth = _widths(width, depth)
        dtype = dtype or default_float()
        n_in = _embedded_size(embedding, self.in_size, dtype)
        k_enc, k_hid = subkeys(key, 2)
        self.encoder_u, self.encoder_v, self.first = _glorot(
            None, k_enc, dtype, pairs=[(n_in, width)] * 3
        )
        hidden = _glorot([width] * (depth + 1) + [_n_out(self.out_size)], k_hid, dtype)
        self.gates, self.output = hidden[:-1], hidden[-1]
        self.embedding = embedding
        self.activation = activation

    def __call__(self, x: Float[ArrayLike, " d"]) -> Float[Array, " *out"]:
        x = _input(x, self.in_size, self.output.weight.dtype, "ModifiedMLP")
        if self.embedding is not None:
            x = self.embedding(x)
        u = self.activation(self.encoder_u(x))
        v = self.activation(self.encoder_v(x))
        h = self.activation(self.first(x))
        for gate in self.gates:
            z = self.activation(gate(h))
            h = (1 - z) * u + z * v
        return _finish(self.output(h), self.out_size)

    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """All points' jets in one feature-major pass (:mod:`jaxsolve.pinn._jets`)."""
        dtype = self.output.weight.dtype
        x = _streams_in(
            self.embedding, points, directions, second, self.in_size, dtype, "ModifiedMLP"
        )

        def layer(h, linear):
            return h.affine(linear.weight, linear.bias).map(self.activation)

        u, v, h = layer(x, self.encoder_u), layer(x, self.encoder_v), layer(x, self.first)
        for gate in self.gates:
            z = layer(h, gate)
            h = u + z * (v - u)  # (1 - z) u + z v
        return h.affine(self.output.weight, self.output.bias).to_jets(self.out_size == "scalar")


class SIREN(AbstractJetFunction):
    """Sine-activated network with the SIREN initialisation (see module doc).

    Args:
        in_size: dimension of the point.
        out_size: output size, or ``"scalar"``.
        width: hidden width.
        depth: number of sine layers (``depth >= 1``).
        key: PRNG key.
        w0: frequency :math:`\\omega_0` of the first layer (30 in the paper).
        w0_hidden: frequency of the later sine layers (30 in the paper).
        embedding: optional callable applied to the point first.
        dtype: parameter dtype (default :func:`default_float`).
    """

    layers: tuple[_Linear, ...]
    embedding: Callable | None
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)
    w0: float = eqx.field(static=True)
    w0_hidden: float = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        w0: float = 30.0,
        w0_hidden: float = 30.0,
        embedding: Callable | None = None,
        dtype: Any = None,
    ):
        self.in_size = check_int("in_size", in_size)
        self.out_size = _check_out_size(out_size)
        width, depth = _widths(width, depth)
        check_positive("w0", w0)
        check_positive("w0_hidden", w0_hidden)
        self.w0, self.w0_hidden = float(w0), float(w0_hidden)
        dtype = dtype or default_float()
        sizes = [_embedded_size(embedding, self.in_size, dtype), *[width] * depth]
        sizes.append(_n_out(self.out_size))
        specs = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            bound = 1.0 / a if i == 0 else math.sqrt(6.0 / a) / self.w0_hidden
            specs += [("uniform", (b, a), bound), ("uniform", (b,), 1.0 / math.sqrt(a))]
        arrays = draw(key, specs, dtype)
        self.layers = tuple(_Linear(w, b) for w, b in zip(arrays[0::2], arrays[1::2], strict=True))
        self.embedding = embedding

    def __call__(self, x: Float[ArrayLike, " d"]) -> Float[Array, " *out"]:
        h = _input(x, self.in_size, self.layers[0].weight.dtype, "SIREN")
        if self.embedding is not None:
            h = self.embedding(h)
        for i, layer in enumerate(self.layers[:-1]):
            h = jnp.sin((self.w0 if i == 0 else self.w0_hidden) * layer(h))
        return _finish(self.layers[-1](h), self.out_size)

    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """All points' jets in one feature-major pass (:mod:`jaxsolve.pinn._jets`)."""
        dtype = self.layers[0].weight.dtype
        h = _streams_in(self.embedding, points, directions, second, self.in_size, dtype, "SIREN")
        for i, layer in enumerate(self.layers[:-1]):
            w = self.w0 if i == 0 else self.w0_hidden
            h = h.affine(layer.weight, layer.bias).map(lambda z, w=w: jnp.sin(w * z))
        last = self.layers[-1]
        return h.affine(last.weight, last.bias).to_jets(self.out_size == "scalar")


class PhysicsInformedGaussians(AbstractJetFunction):
    r"""A learnable Gaussian mixture embedding followed by a small MLP (PIG; see module doc).

    Shapes are parametrised through the Cholesky-type factor of the precision,
    :math:`\Sigma_i^{-1} = A_i^T A_i` with :math:`A_i = \mathrm{diag}(e^{-s_i}) + L_i` (``L_i``
    strictly lower triangular, present only for ``covariance="cholesky"``), so the exponent is
    :math:`-\tfrac12 \lVert A_i (x - \mu_i) \rVert^2` and any parameter values give a valid
    Gaussian; :math:`e^{s_i}` are the per-axis scales.

    Initialisation: centres uniform in the box ``bounds``; log-scales :math:`s_i` so that every
    scale equals the box side over :math:`N^{1/d}` (the spacing of ``N`` Gaussians on a regular
    grid, so neighbours overlap); ``L_i = 0``; features :math:`f_i \sim U(-1, 1)`; the MLP as
    :class:`MLP`.

    Args:
        in_size: dimension ``d`` of the point.
        out_size: output size, or ``"scalar"``.
        n_gaussians: number ``N`` of Gaussians.
        n_features: length of each feature vector :math:`f_i`.
        key: PRNG key.
        width: hidden width of the MLP head.
        depth: hidden layers of the MLP head (``0``: the head is linear).
        covariance: ``"diagonal"`` or ``"cholesky"`` (full covariance).
        bounds: ``(low, high)`` of the box the centres start in (scalars or ``(d,)`` arrays).
        activation: the head's activation (default ``tanh``).
        dtype: parameter dtype (default :func:`default_float`).
    """

    means: Float[Array, "n d"]
    log_scales: Float[Array, "n d"]
    shear: Float[Array, "n d d"] | None
    features_: Float[Array, "n f"]
    head: tuple[_Linear, ...]
    in_size: int = eqx.field(static=True)
    out_size: int | str = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_size: int,
        out_size: int | Literal["scalar"],
        n_gaussians: int,
        n_features: int,
        *,
        key: PRNGKeyArray,
        width: int = 16,
        depth: int = 1,
        covariance: str = "diagonal",
        bounds: tuple[Any, Any] = (-1.0, 1.0),
        activation: Callable = jnp.tanh,
        dtype: Any = None,
    ):
        self.in_size = d = check_int("in_size", in_size)
        self.out_size = _check_out_size(out_size)
        n = check_int("n_gaussians", n_gaussians)
        nf = check_int("n_features", n_features)
        width = check_int("width", width)
        depth = check_int("depth", depth, minimum=0)
        check_choice("covariance", covariance, ("diagonal", "cholesky"))
        dtype = dtype or default_float()
        try:
            low, high = bounds
        except (TypeError, ValueError):
            raise ValueError(f"bounds must be a pair (low, high); got {bounds!r}.") from None
        # NumPy when everything is concrete: no small programs to compile at construction
        xp = np if is_concrete((low, high, key)) else jnp
        low = xp.broadcast_to(xp.asarray(low, dtype), (d,))
        high = xp.broadcast_to(xp.asarray(high, dtype), (d,))
        if xp is np and not np.all(high > low):
            raise ValueError(f"bounds must have high > low on every axis; got {bounds!r}.")
        k_mix, k_head = subkeys(key, 2)
        unit, feats = draw(k_mix, [("uniform", (n, d), 1.0), ("uniform", (n, nf), 1.0)], dtype)
        unit = np.asarray(unit) if xp is np else unit
        self.means = jnp.asarray(low + (high - low) * (unit + 1) / 2, dtype)
        scales = xp.log((high - low) / n ** (1.0 / d))
        self.log_scales = jnp.asarray(xp.broadcast_to(scales, (n, d)), dtype)
        self.shear = jnp.zeros((n, d, d), dtype) if covariance == "cholesky" else None
        self.features_ = feats
        self.head = _glorot([nf, *[width] * depth, _n_out(self.out_size)], k_head, dtype)
        self.activation = activation

    def precision_factor(self) -> Float[Array, "n d d"]:
        """The factors :math:`A_i`, with :math:`\\Sigma_i^{-1} = A_i^T A_i`."""
        a = jax.vmap(jnp.diag)(jnp.exp(-self.log_scales))
        if self.shear is not None:
            a = a + jnp.tril(self.shear, -1)
        return a

    def embed(self, x: Float[ArrayLike, " d"]) -> Float[Array, " f"]:
        r"""The Gaussian feature embedding :math:`\sum_i f_i \exp(-\tfrac12 \lVert A_i (x -
        \mu_i)\rVert^2)`."""
        x = _input(x, self.in_size, self.means.dtype, "PhysicsInformedGaussians")
        diff = x - self.means
        if self.shear is None:
            z = diff * jnp.exp(-self.log_scales)
        else:
            z = jnp.einsum("nij,nj->ni", self.precision_factor(), diff)
        weights = jnp.exp(-0.5 * jnp.sum(z * z, axis=-1))
        return weights @ self.features_

    def __call__(self, x: Float[ArrayLike, " d"]) -> Float[Array, " *out"]:
        h = self.embed(x)
        for layer in self.head[:-1]:
            h = self.activation(layer(h))
        return _finish(self.head[-1](h), self.out_size)

    def jets(
        self, points: Float[Array, "n d"], directions: Float[Array, "k d"], second: tuple[int, ...]
    ) -> Jets:
        """The Gaussian embedding's jets mapped over points, then the head in one feature-major
        pass (:mod:`jaxsolve.pinn._jets`)."""
        h = _streams_in(
            self.embed,
            points,
            directions,
            second,
            self.in_size,
            self.means.dtype,
            "PhysicsInformedGaussians",
        )
        for layer in self.head[:-1]:
            h = h.affine(layer.weight, layer.bias).map(self.activation)
        last = self.head[-1]
        return h.affine(last.weight, last.bias).to_jets(self.out_size == "scalar")
