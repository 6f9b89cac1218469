r"""Operator-learning losses on one sample ``(channels, *spatial)``: relative Lp, H1, H^s.

Batch them with ``jax.vmap`` and average. Norms sum over channels; the relative versions divide
by the target's norm, :math:`\|\hat u - u\| / \|u\|` (the "relative L2" of the FNO papers).
"""

from collections.abc import Sequence

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float
from ._spectral import normalize_lengths, sobolev_norm, spectral_derivative


def _check_pair(pred, target, where):
    pred, target = as_float(pred), as_float(target)
    if pred.shape != target.shape:
        raise ValueError(f"{where}: pred and target shapes differ: {pred.shape} vs {target.shape}.")
    return pred, target


def lp_norm(
    u: Float[ArrayLike, "..."],
    p: float | ArrayLike = 2.0,
    *,
    weights: Float[ArrayLike, "..."] | None = None,
) -> Float[Array, ""]:
    r""":math:`\big(\sum_n w_n |u_n|^p\big)^{1/p}` with quadrature weights ``weights``.

    ``weights`` broadcasts against ``u`` from the right (e.g. one weight per grid point of the
    spatial axes: trapezoid, Gauss or cell-volume weights); ``None`` means all ones. ``p`` may be
    traced.
    """
    u = as_float(u)
    p = jnp.asarray(p, u.dtype)
    a = jnp.abs(u) ** p
    if weights is not None:
        a = a * jnp.asarray(weights, u.dtype)
    return jnp.sum(a) ** (1.0 / p)


def relative_lp_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    p: float | ArrayLike = 2.0,
    *,
    weights: Float[ArrayLike, "..."] | None = None,
) -> Float[Array, ""]:
    r"""Relative Lp error :math:`\|\hat u - u\|_{p,w} / \|u\|_{p,w}` with quadrature weights."""
    pred, target = _check_pair(pred, target, "relative_lp_loss")
    return lp_norm(pred - target, p, weights=weights) / lp_norm(target, p, weights=weights)


def h1_norm(
    u: Float[ArrayLike, " c *spatial"], *, lengths: float | Sequence[float] = 1.0
) -> Float[Array, ""]:
    r""":math:`\|u\|_{H^1}^2 = \int_\Omega |u|^2 + |\nabla u|^2`, derivatives taken spectrally.

    The integral is the periodic rectangle rule, exact for trigonometric polynomials resolved by
    the grid, so for such fields this equals :func:`sobolev_norm` with ``s = 1``.
    """
    u = as_float(u)
    d = u.ndim - 1
    lengths = normalize_lengths(lengths, d)
    total = jnp.sum(u**2)
    for j in range(d):
        orders = tuple(1 if i == j else 0 for i in range(d))
        total = total + jnp.sum(spectral_derivative(u, orders, lengths=lengths) ** 2)
    cell = 1.0
    for n, length in zip(u.shape[1:], lengths, strict=True):
        cell = cell * jnp.asarray(length, u.dtype) / n
    return jnp.sqrt(cell * total)


def h1_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    *,
    relative: bool = True,
    lengths: float | Sequence[float] = 1.0,
) -> Float[Array, ""]:
    """H1 error of ``pred`` against ``target`` (relative by default), see :func:`h1_norm`."""
    pred, target = _check_pair(pred, target, "h1_loss")
    err = h1_norm(pred - target, lengths=lengths)
    return err / h1_norm(target, lengths=lengths) if relative else err


def sobolev_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    s: float | ArrayLike = 1.0,
    *,
    relative: bool = True,
    lengths: float | Sequence[float] = 1.0,
) -> Float[Array, ""]:
    r"""H^s error for any real ``s`` (see :func:`sobolev_norm`); ``s < 0`` is the
    Spectral-Refiner loss, which weights large scales."""
    pred, target = _check_pair(pred, target, "sobolev_loss")
    err = sobolev_norm(pred - target, s, lengths=lengths)
    return err / sobolev_norm(target, s, lengths=lengths) if relative else err
