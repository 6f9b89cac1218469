"""Per-channel normalisation of fields stored as ``(samples, channels, *spatial)``."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import default_float, is_concrete


class Normalizer(eqx.Module):
    r"""Affine map to zero mean and unit variance per channel (statistics over samples and space):
    :math:`\mathrm{encode}(x)_c = (x_c - \mu_c) / \sigma_c`, with :math:`\mu_c` and
    :math:`\sigma_c - \varepsilon` the mean and (population) standard deviation of channel
    :math:`c` over every sample and grid point of the data it was fitted on; ``decode`` inverts it.

    Works on a single sample ``(channels, *spatial)`` and on batches ``(..., channels, *spatial)``.
    """

    mean: Float[Array, "channels ..."]
    std: Float[Array, "channels ..."]

    @classmethod
    def fit(cls, x: Float[ArrayLike, "samples channels *spatial"], eps: float = 1e-6) -> Normalizer:
        """The statistics of ``x``.

        Args:
            x: the data, ``(samples, channels, *spatial)``, finite.
            eps: added to every standard deviation (``> 0``), so that a constant channel
                encodes to zeros rather than dividing by zero.

        Raises:
            ValueError: ``x`` has fewer than two axes or holds NaN or infinite values (whose
                statistics would be NaN and turn every encoded field into NaN), or ``eps`` is
                not positive. Under ``jax.jit`` the non-finite check runs with the data
                (``equinox.error_if``).
        """
        x = jnp.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"x must have shape (samples, channels, *spatial); got {x.shape}.")
        if is_concrete(eps) and not float(eps) > 0:
            raise ValueError(f"eps must be > 0; got {eps!r}.")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(default_float())
        if is_concrete(x):
            bad = int(np.sum(~np.isfinite(np.asarray(x))))
            if bad:
                raise ValueError(
                    f"x holds {bad} NaN or infinite values; their per-channel statistics would "
                    f"be NaN. Clean or mask the data before fitting the Normalizer."
                )
        else:
            x = eqx.error_if(
                x, ~jnp.all(jnp.isfinite(x)), "Normalizer.fit: x holds NaN or infinite values."
            )
        axes = (0, *range(2, x.ndim))
        mean = jnp.mean(x, axis=axes, keepdims=True)[0]
        std = jnp.std(x, axis=axes, keepdims=True)[0] + eps
        return cls(mean, std)

    def encode(self, x: Float[ArrayLike, "*batch channels *spatial"]) -> Float[Array, "..."]:
        """:math:`(x - \\mu) / \\sigma`, per channel."""
        return (x - self.mean) / self.std

    def decode(self, y: Float[ArrayLike, "*batch channels *spatial"]) -> Float[Array, "..."]:
        """:math:`y \\sigma + \\mu`, per channel (the inverse of :meth:`encode`)."""
        return y * self.std + self.mean
