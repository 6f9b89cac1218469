"""The channels-last protocol: a layer that also runs on ``(*spatial, channels)``.

Every public layer of this pillar takes one sample channels-first, ``(channels, *spatial)``. The
FNO keeps its hidden state channels-last instead: every pointwise layer is then a matrix product
on the last axis and every truncated transform a product along a spatial axis, so under
:func:`jax.vmap` the batch axis stays in front and no full-size activation is transposed around
each 1x1 convolution. A layer that can sit inside an :class:`FNOBlock` therefore implements both
layouts.
"""

import abc

import equinox as eqx
from jaxtyping import Array, Float


class AbstractChannelsLast(eqx.Module):
    """A layer with a channels-first and a channels-last entry point computing the same map.

    Subclasses implement

    * ``__call__(x)`` on ``x`` of shape ``(in_channels, *spatial)``, and
    * ``channels_last(x)`` on ``x`` of shape ``(*spatial, in_channels)``, returning
      ``(*spatial, out_channels)``: the same values as
      ``jnp.moveaxis(self(jnp.moveaxis(x, -1, 0)), 0, -1)``, computed without those transposes.
    """

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        """The layer on a channels-first sample ``(in_channels, *spatial)``."""

    @abc.abstractmethod
    def channels_last(self, x: Float[Array, "*spatial cin"]) -> Float[Array, "*spatial cout"]:
        """The same map on a channels-last field ``(*spatial, in_channels)``."""
