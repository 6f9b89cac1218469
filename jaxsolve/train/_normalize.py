"""Per-channel normalisation of fields stored as ``(samples, channels, *spatial)``."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float


class Normalizer(eqx.Module):
    """Affine map to zero mean and unit variance per channel (statistics over samples and space).

    Works on a single sample ``(channels, *spatial)`` and on batches ``(..., channels, *spatial)``.
    """

    mean: Float[Array, "channels ..."]
    std: Float[Array, "channels ..."]

    @classmethod
    def fit(cls, x: Float[Array, "samples channels *spatial"], eps: float = 1e-6) -> Normalizer:
        x = jnp.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"x must have shape (samples, channels, *spatial); got {x.shape}.")
        axes = (0, *range(2, x.ndim))
        mean = jnp.mean(x, axis=axes, keepdims=True)[0]
        std = jnp.std(x, axis=axes, keepdims=True)[0] + eps
        return cls(mean, std)

    def encode(self, x):
        return (x - self.mean) / self.std

    def decode(self, y):
        return y * self.std + self.mean
