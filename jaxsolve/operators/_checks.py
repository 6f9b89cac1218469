"""Shape checks for the single-sample convention ``(channels, *spatial)``.

Every layer of this pillar works on one sample; a batch goes through :func:`jax.vmap`. A leading
batch axis passed by mistake is the most common error, so it gets its own message.
"""

import math

import jax.numpy as jnp

from .._core import is_int


def check_sample(x, *, channels: int, num_spatial_dims: int, where: str) -> None:
    """Raise ``ValueError`` unless ``x`` has shape ``(channels, *spatial)`` with the right rank."""
    shape = tuple(x.shape)
    expected = (
        f"(in_channels={channels}, " + ", ".join(f"n{j + 1}" for j in range(num_spatial_dims)) + ")"
    )
    if len(shape) == num_spatial_dims + 2 and shape[1] == channels:
        raise ValueError(
            f"{where} takes a single sample of shape {expected}; got shape {shape}, which looks "
            f"like a batch of {shape[0]} samples. Map over the batch with jax.vmap: "
            f"jax.vmap(model)(x)."
        )
    if len(shape) != num_spatial_dims + 1:
        raise ValueError(
            f"{where} expects an input of shape {expected} ({num_spatial_dims} spatial axes); "
            f"got shape {shape}."
        )
    if shape[0] != channels:
        raise ValueError(
            f"{where} expects {channels} input channels, shape {expected}; got shape {shape} "
            f"with {shape[0]} channels."
        )


def check_widths(name: str, widths) -> tuple[int, ...]:
    """A sequence of positive ints (hidden layer widths), as a tuple; ``ValueError`` naming
    ``name`` otherwise (a width of 0 would give a layer with no units and a 1/sqrt(0) scale)."""
    if is_int(widths):
        raise TypeError(
            f"{name} must be a sequence of ints (one per hidden layer); got {widths!r}."
        )
    try:
        widths = tuple(widths)
    except TypeError:
        raise TypeError(
            f"{name} must be a sequence of ints (one per hidden layer); got {widths!r}."
        ) from None
    if not all(is_int(w) and w >= 1 for w in widths):
        raise ValueError(f"{name} must hold positive ints; got {list(widths)!r}.")
    return tuple(int(w) for w in widths)


def check_real(name: str, value, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite float (``> minimum`` if ``strict``, else ``>= minimum``)."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number; got {value!r}.")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number; got {value!r}.") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite; got {value!r}.")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}; got {value!r}.")
    return v


def float_input(x, dtype):
    """``x`` as an array, cast to ``dtype`` (the layer's weights) when it is not floating.

    The layers compute in the input's floating dtype, their weights cast to it; an integer or
    bool input would truncate the weights to integers and give silently wrong numbers.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(dtype)
    return x
