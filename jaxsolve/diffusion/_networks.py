r"""Small reference networks for toy diffusion and flow models (single-sample convention).

* :class:`NoiseMLP` — ``net(x, c) -> y`` for vectors ``x`` of shape ``(d,)`` and a scalar
  conditioning ``c`` (a noise level's ``c_noise``, or a flow time), embedded with random Fourier
  features (or fixed sinusoidal ones, :class:`PositionalEmbedding`) and added to every hidden
  layer.
* :class:`UNet2D` — a small U-Net for images ``(channels, H, W)``: two resolution levels of
  residual blocks with group normalisation and the embedding added per block, skip connections
  between matching levels. ``H`` and ``W`` must be divisible by 4.

Both are plain :class:`equinox.Module` s: batch them with ``jax.vmap`` (as :class:`Precond` does).
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray


class FourierEmbedding(eqx.Module):
    """:math:`c \\mapsto [\\cos(2\\pi f c), \\sin(2\\pi f c)]` with fixed random frequencies ``f``."""

    freqs: Float[Array, " half"]

    def __init__(self, dim: int, scale: float = 16.0, *, key: PRNGKeyArray):
        if dim % 2:
            raise ValueError(f"embedding dim must be even; got {dim}.")
        self.freqs = scale * jax.random.normal(key, (dim // 2,))

    def __call__(self, c: Float[ArrayLike, ""]) -> Float[Array, " dim"]:
        phase = 2.0 * math.pi * jax.lax.stop_gradient(self.freqs) * c
        return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)])


class PositionalEmbedding(eqx.Module):
    r""":math:`c \mapsto [\cos(f_k c), \sin(f_k c)]` with fixed geometric frequencies
    :math:`f_k = P^{-k/h}`, :math:`k = 0..h-1`, :math:`h` = ``dim // 2`` (the sinusoidal
    embedding of "Attention Is All You Need", on a continuous :math:`c`).

    Every frequency is at most 1, so :math:`\lVert \mathrm d e/\mathrm dc\rVert \le \sqrt h`:
    with :math:`c_\text{noise}(t) = t` this is sCM's stable time conditioning ("Simplifying,
    Stabilizing and Scaling Continuous-Time Consistency Models"), where a Fourier embedding with a
    large scale makes the time derivative in the continuous-time objective, and so the training,
    unstable.
    """

    freqs: Float[Array, " half"]

    def __init__(self, dim: int, max_period: float = 10000.0):
        if dim % 2 or dim < 2:
            raise ValueError(f"embedding dim must be even and positive; got {dim}.")
        if not max_period >= 1.0:
            raise ValueError(f"max_period must be at least 1; got {max_period}.")
        half = dim // 2
        self.freqs = jnp.exp(-math.log(max_period) * jnp.arange(half) / half)

    def __call__(self, c: Float[ArrayLike, ""]) -> Float[Array, " dim"]:
        phase = jax.lax.stop_gradient(self.freqs) * c
        return jnp.concatenate([jnp.cos(phase), jnp.sin(phase)])


class NoiseMLP(eqx.Module):
    """MLP on ``(d,)`` inputs conditioned on a scalar through a Fourier embedding (or, with
    ``embedding="positional"``, a :class:`PositionalEmbedding`: sCM's stable time conditioning for
    a TrigFlow network fed :math:`t` itself)."""

    embed: FourierEmbedding | PositionalEmbedding
    embed_proj: eqx.nn.Linear
    layers: list
    cond_layers: list
    out: eqx.nn.Linear

    def __init__(
        self,
        dim: int,
        width: int = 128,
        depth: int = 3,
        embed_dim: int = 64,
        *,
        embedding: str = "fourier",
        key: PRNGKeyArray,
    ):
        if embedding not in ("fourier", "positional"):
            raise ValueError(f"embedding must be 'fourier' or 'positional'; got {embedding!r}.")
        keys = jax.random.split(key, 3 + 2 * depth)
        if embedding == "fourier":
            self.embed = FourierEmbedding(embed_dim, scale=1.0, key=keys[0])
        else:
            self.embed = PositionalEmbedding(embed_dim)
        self.embed_proj = eqx.nn.Linear(embed_dim, width, key=keys[1])
        self.layers = [
            eqx.nn.Linear(dim if i == 0 else width, width, key=keys[2 + i]) for i in range(depth)
        ]
        self.cond_layers = [
            eqx.nn.Linear(width, width, key=keys[2 + depth + i]) for i in range(depth)
        ]
        self.out = eqx.nn.Linear(width, dim, key=keys[-1])

    def __call__(self, x: Float[Array, " d"], c: Float[ArrayLike, ""]) -> Float[Array, " d"]:
        e = jax.nn.silu(self.embed_proj(self.embed(c)))
        h = x
        for layer, cond in zip(self.layers, self.cond_layers, strict=True):
            h = jax.nn.silu(layer(h) + cond(e))
        return self.out(h)


class _ResBlock(eqx.Module):
    norm1: eqx.nn.GroupNorm
    conv1: eqx.nn.Conv2d
    cond: eqx.nn.Linear
    norm2: eqx.nn.GroupNorm
    conv2: eqx.nn.Conv2d
    skip: eqx.nn.Conv2d | None

    def __init__(self, cin, cout, embed_dim, groups, *, key):
        k = jax.random.split(key, 4)
        self.norm1 = eqx.nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = eqx.nn.Conv2d(cin, cout, 3, padding=1, key=k[0])
        self.cond = eqx.nn.Linear(embed_dim, cout, key=k[1])
        self.norm2 = eqx.nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = eqx.nn.Conv2d(cout, cout, 3, padding=1, key=k[2])
        self.skip = eqx.nn.Conv2d(cin, cout, 1, key=k[3]) if cin != cout else None

    def __call__(self, x, e):
        h = self.conv1(jax.nn.silu(self.norm1(x)))
        h = h + self.cond(e)[:, None, None]
        h = self.conv2(jax.nn.silu(self.norm2(h)))
        return h + (x if self.skip is None else self.skip(x))


class UNet2D(eqx.Module):
    """A two-level U-Net for ``(channels, H, W)`` images conditioned on a scalar."""

    embed: FourierEmbedding
    embed_proj: eqx.nn.Linear
    stem: eqx.nn.Conv2d
    down: list
    downsample: list
    mid: _ResBlock
    up: list
    upsample: list
    head: eqx.nn.Conv2d
    channels: int = eqx.field(static=True)

    def __init__(
        self,
        channels: int = 1,
        width: int = 32,
        embed_dim: int = 64,
        groups: int = 8,
        *,
        key: PRNGKeyArray,
    ):
        k = iter(jax.random.split(key, 16))
        widths = (width, 2 * width, 2 * width)
        self.channels = channels
        self.embed = FourierEmbedding(embed_dim, scale=1.0, key=next(k))
        self.embed_proj = eqx.nn.Linear(embed_dim, embed_dim, key=next(k))
        self.stem = eqx.nn.Conv2d(channels, widths[0], 3, padding=1, key=next(k))
        self.down = [
            _ResBlock(widths[i], widths[i + 1], embed_dim, groups, key=next(k)) for i in range(2)
        ]
        self.downsample = [
            eqx.nn.Conv2d(widths[i + 1], widths[i + 1], 3, stride=2, padding=1, key=next(k))
            for i in range(2)
        ]
        self.mid = _ResBlock(widths[2], widths[2], embed_dim, groups, key=next(k))
        self.up = [
            _ResBlock(2 * widths[2 - i], widths[1 - i], embed_dim, groups, key=next(k))
            for i in range(2)
        ]
        self.upsample = [
            eqx.nn.ConvTranspose2d(
                widths[2 - i], widths[2 - i], 4, stride=2, padding=1, key=next(k)
            )
            for i in range(2)
        ]
        self.head = eqx.nn.Conv2d(widths[0], channels, 3, padding=1, key=next(k))

    def __call__(self, x: Float[Array, "c h w"], c: Float[ArrayLike, ""]) -> Float[Array, "c h w"]:
        if x.ndim != 3 or x.shape[0] != self.channels:
            raise ValueError(
                f"UNet2D expects one image of shape ({self.channels}, H, W); got {x.shape}. "
                "Batch with jax.vmap."
            )
        if x.shape[1] % 4 or x.shape[2] % 4:
            raise ValueError(f"UNet2D needs H and W divisible by 4; got {x.shape[1:]}.")
        e = jax.nn.silu(self.embed_proj(self.embed(c)))
        h = self.stem(x)
        skips = []
        for block, down in zip(self.down, self.downsample, strict=True):
            h = block(h, e)
            skips.append(h)
            h = down(h)
        h = self.mid(h, e)
        for block, up in zip(self.up, self.upsample, strict=True):
            h = up(h)
            h = block(jnp.concatenate([h, skips.pop()]), e)
        return self.head(jax.nn.silu(h))
