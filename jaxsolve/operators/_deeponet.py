r"""DeepONet and MultiONet: branch/trunk operator networks evaluated at arbitrary query points.

DeepONet ("Learning nonlinear operators via DeepONet based on the universal approximation theorem
of operators", Lu, Jin, Pang, Zhang, Karniadakis):

.. math:: \mathcal G(u)(y)_c = \sum_{k=1}^{p} b_{ck}(u)\, t_{ck}(y) + \beta_c,

with a branch network :math:`b` on the sampled input function and a trunk network :math:`t` on the
query coordinate (its last layer activated, as in DeepXDE), ``p`` latent functions per output
channel and a bias :math:`\beta`.

MultiONet ("DGenNO: a novel physics-aware neural operator for solving forward and inverse PDE
problems based on deep, generative probabilistic modeling", Zang & Koutsourelakis) keeps the
branch and trunk at the same width and sums the inner products of the last ``n_sum`` *hidden
layers* instead of only the last one,

.. math:: \mathcal G(u)(y)_c = \frac1L \sum_{l=1}^{L} w_l\,
   \langle b^{(l)}_c(u), t^{(l)}_c(y) \rangle + \beta_c,

which adds expressiveness with no new layers and ``L`` extra scalars :math:`w_l`. Here the
:math:`w_l` start at one (the reference code starts them at zero, which makes the initial output
constant); for several output channels each hidden layer is split into ``out_channels`` equal
groups (DeepXDE's "split both" strategy).

Both take one input function ``u`` of shape ``in_shape`` and query points ``y`` of shape
``(n_queries, coord_dim)`` (or a single ``(coord_dim,)``), and return ``(out_channels,
n_queries)`` (or ``(out_channels,)``). The branch runs once; the trunk is vmapped over queries.
"""

import itertools
import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import check_int, default_float, is_int
from .._core._init import draw, subkeys
from ._checks import check_widths


def _shape_tuple(in_shape):
    """``in_shape`` (an int or a tuple of ints, each >= 1) as a tuple."""
    if is_int(in_shape):
        in_shape = (in_shape,)
    try:
        shape = tuple(in_shape)
    except TypeError:
        raise TypeError(f"in_shape must be an int or a tuple of ints; got {in_shape!r}.") from None
    if not shape or not all(is_int(n) and n >= 1 for n in shape):
        raise ValueError(f"in_shape must be a non-empty tuple of positive ints; got {in_shape!r}.")
    return tuple(int(n) for n in shape)


def _check_inputs(u, y, in_shape, coord_dim, where):
    u = jnp.asarray(u)
    if u.shape != in_shape:
        if u.ndim == len(in_shape) + 1 and u.shape[1:] == in_shape:
            raise ValueError(
                f"{where} takes one input function of shape {in_shape}; got shape {u.shape}, "
                f"which looks like a batch of {u.shape[0]}. Map over the batch with jax.vmap: "
                f"jax.vmap(model, in_axes=(0, None))(u, y)."
            )
        raise ValueError(f"{where} expects u of shape in_shape={in_shape}; got {u.shape}.")
    y = jnp.asarray(y)
    single = y.ndim == 1
    if single:
        y = y[None]
    if y.ndim != 2 or y.shape[1] != coord_dim:
        raise ValueError(
            f"{where} expects query points of shape (n_queries, coord_dim={coord_dim}) or "
            f"({coord_dim},); got {jnp.shape(y)}."
        )
    return u.reshape(-1), y, single


class _Linear(eqx.Module):
    """``W x + b`` with PyTorch's default ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` start."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __call__(self, x):
        return self.weight @ x + self.bias


def _linears(sizes, key, dtype):
    specs = []
    for a, b in itertools.pairwise(sizes):
        bound = 1.0 / math.sqrt(a)
        specs += [("uniform", (b, a), bound), ("uniform", (b,), bound)]
    arrays = draw(key, specs, dtype)
    return tuple(_Linear(w, b) for w, b in zip(arrays[0::2], arrays[1::2], strict=True))


class DeepONet(eqx.Module):
    """Unstacked DeepONet with ``latent`` basis functions per output channel (see module doc)."""

    branch: tuple[_Linear, ...]
    trunk: tuple[_Linear, ...]
    bias: Float[Array, " cout"]
    in_shape: tuple[int, ...] = eqx.field(static=True)
    coord_dim: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    latent: int = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_shape: int | Sequence[int],
        coord_dim: int,
        out_channels: int = 1,
        *,
        latent: int,
        branch_widths: Sequence[int],
        trunk_widths: Sequence[int],
        key: PRNGKeyArray,
        activation: Callable = jnp.tanh,
        dtype=None,
    ):
        self.in_shape = _shape_tuple(in_shape)
        self.coord_dim = check_int("coord_dim", coord_dim)
        self.out_channels = check_int("out_channels", out_channels)
        self.latent = check_int("latent", latent)
        branch_widths = check_widths("branch_widths", branch_widths)
        trunk_widths = check_widths("trunk_widths", trunk_widths)
        self.activation = activation
        dtype = dtype or default_float()
        kb, kt = subkeys(key, 2)
        p = self.out_channels * self.latent
        self.branch = _linears([int(np.prod(self.in_shape)), *branch_widths, p], kb, dtype)
        self.trunk = _linears([self.coord_dim, *trunk_widths, p], kt, dtype)
        self.bias = jnp.asarray(np.zeros((self.out_channels,)), dtype)

    def _branch(self, u):
        for i, lin in enumerate(self.branch):
            u = lin(u)
            if i < len(self.branch) - 1:
                u = self.activation(u)
        return u

    def _trunk(self, y):
        for lin in self.trunk:
            y = self.activation(lin(y))
        return y

    def __call__(
        self, u: Float[ArrayLike, " *in_shape"], y: Float[ArrayLike, " *n dim"]
    ) -> Float[Array, " cout *n"]:
        u, y, single = _check_inputs(u, y, self.in_shape, self.coord_dim, "DeepONet")
        b = self._branch(u.astype(self.bias.dtype)).reshape(self.out_channels, self.latent)
        t = jax.vmap(self._trunk)(y.astype(self.bias.dtype))
        t = t.reshape(-1, self.out_channels, self.latent)
        out = jnp.einsum("ck,nck->cn", b, t) + self.bias[:, None]
        return out[:, 0] if single else out


class MultiONet(eqx.Module):
    """MultiONet: sum of inner products over the last ``n_sum`` hidden layers (see module doc)."""

    branch: tuple[_Linear, ...]
    trunk: tuple[_Linear, ...]
    layer_weights: Float[Array, " n_sum"]
    bias: Float[Array, " cout"]
    in_shape: tuple[int, ...] = eqx.field(static=True)
    coord_dim: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    n_sum: int = eqx.field(static=True)
    branch_activation: Callable = eqx.field(static=True)
    trunk_activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        in_shape: int | Sequence[int],
        coord_dim: int,
        out_channels: int = 1,
        *,
        width: int,
        depth: int,
        key: PRNGKeyArray,
        n_sum: int | None = None,
        branch_activation: Callable = jax.nn.silu,
        trunk_activation: Callable = jnp.tanh,
        dtype=None,
    ):
        self.in_shape = _shape_tuple(in_shape)
        self.coord_dim = check_int("coord_dim", coord_dim)
        self.out_channels = check_int("out_channels", out_channels)
        width = check_int("width", width)
        depth = check_int("depth", depth)
        n_sum = check_int("n_sum", depth if n_sum is None else n_sum, maximum=depth)
        if width % self.out_channels:
            raise ValueError(
                f"width={width} must be divisible by out_channels={self.out_channels}: each "
                f"hidden layer is split into one group per output channel."
            )
        self.n_sum = n_sum
        self.branch_activation = branch_activation
        self.trunk_activation = trunk_activation
        dtype = dtype or default_float()
        kb, kt = subkeys(key, 2)
        self.branch = _linears([int(np.prod(self.in_shape))] + [width] * depth, kb, dtype)
        self.trunk = _linears([self.coord_dim] + [width] * depth, kt, dtype)
        self.layer_weights = jnp.asarray(np.ones((n_sum,)), dtype)
        self.bias = jnp.asarray(np.zeros((self.out_channels,)), dtype)

    @staticmethod
    def _hidden(layers, x, activation):
        hs = []
        for lin in layers:
            x = activation(lin(x))
            hs.append(x)
        return jnp.stack(hs)

    def __call__(
        self, u: Float[ArrayLike, " *in_shape"], y: Float[ArrayLike, " *n dim"]
    ) -> Float[Array, " cout *n"]:
        u, y, single = _check_inputs(u, y, self.in_shape, self.coord_dim, "MultiONet")
        dtype = self.bias.dtype
        hb = self._hidden(self.branch, u.astype(dtype), self.branch_activation)[-self.n_sum :]
        ht = jax.vmap(lambda q: self._hidden(self.trunk, q, self.trunk_activation))(y.astype(dtype))
        ht = ht[:, -self.n_sum :]
        c = self.out_channels
        hb = hb.reshape(self.n_sum, c, -1)
        ht = ht.reshape(ht.shape[0], self.n_sum, c, -1)
        out = jnp.einsum("l,lck,nlck->cn", self.layer_weights, hb, ht) / self.n_sum
        out = out + self.bias[:, None]
        return out[:, 0] if single else out
