"""Shape checks for the single-sample convention ``(channels, *spatial)``.

Every layer of this pillar works on one sample; a batch goes through :func:`jax.vmap`. A leading
batch axis passed by mistake is the most common error, so it gets its own message.
"""

import numpy as np


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


def check_option(name: str, value, choices) -> None:
    """``ValueError`` unless ``value`` is one of ``choices`` (which may include ``None``)."""
    if value not in choices:
        shown = ", ".join(repr(c) for c in sorted(choices, key=lambda c: (c is not None, str(c))))
        raise ValueError(f"{name} must be one of {shown}; got {value!r}.")


def check_sizes(**sizes) -> None:
    """Raise ``ValueError`` naming the first of ``sizes`` that is not a positive int."""
    for name, v in sizes.items():
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be a positive int; got {v!r}.")
