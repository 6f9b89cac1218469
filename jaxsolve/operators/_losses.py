r"""Operator-learning losses on one sample ``(channels, *spatial)``: relative Lp, H1, H^s.

Batch them with ``jax.vmap`` and average. Norms sum over channels; the relative versions divide
by the target's norm, :math:`\|\hat u - u\| / \|u\|` (the "relative L2" of the FNO papers).

Two conventions keep every value and gradient finite, where the plain formulas give inf or NaN:

* **Zero target.** :math:`\|\hat u - u\| / \|u\|` is undefined at :math:`u = 0`. The relative
  losses return the absolute error :math:`\|\hat u\|` there: zero exactly when the prediction is,
  with a finite gradient, and unchanged for every nonzero target. (A batch of fields that may
  vanish is better served by ``relative=False`` or a normalisation of the data.)
* **Gradient at zero.** A norm is not differentiable at :math:`0` (nor :math:`|u_n|^p` at
  :math:`u_n = 0` for :math:`p \le 1`); the gradient there is taken as :math:`0`, an element of
  the subdifferential, so the gradient of a loss at ``pred == target`` is exactly zero rather
  than NaN (the "safe norm" of the two-``where`` trick: the non-differentiable branch is never
  evaluated at the singular point).
"""

import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, is_concrete, normalize_lengths, safe_divide, safe_sqrt
from ._spectral import sobolev_norm, spectral_derivative


def _check_pair(pred, target, where):
    pred, target = as_float(pred), as_float(target)
    if pred.shape != target.shape:
        raise ValueError(f"{where}: pred and target shapes differ: {pred.shape} vs {target.shape}.")
    return pred, target


def _check_p(p, dtype):
    """``p`` > 0: a Python float (``inf`` allowed: the max norm), or a traced array checked when
    the compiled code runs."""
    if is_concrete(p):
        try:
            value = float(p)
        except (TypeError, ValueError):
            raise TypeError(f"p must be a number > 0; got {p!r}.") from None
        if not value > 0:  # also NaN
            raise ValueError(
                f"p must be > 0 (the exponent of the Lp norm; p = inf is the max norm); got {p!r}."
            )
        return value
    p = jnp.asarray(p, dtype)
    if p.ndim:
        raise ValueError(f"p must be a scalar; got shape {p.shape}.")
    return eqx.error_if(p, ~(p > 0), "p must be > 0 (a traced value).")


def _safe_divide(num, den):
    """``num / den``, or ``num`` where ``den == 0`` (the relative error of a zero target is the
    absolute one); the unused branch never divides by zero, so gradients stay finite, and a NaN
    target gives NaN."""
    return safe_divide(num, den, num)


def lp_norm(
    u: Float[ArrayLike, "..."],
    p: float | ArrayLike = 2.0,
    *,
    weights: Float[ArrayLike, "..."] | None = None,
) -> Float[Array, ""]:
    r""":math:`\big(\sum_n w_n |u_n|^p\big)^{1/p}` with quadrature weights ``weights``.

    ``weights`` (non-negative) broadcasts against ``u`` from the right (e.g. one weight per grid
    point of the spatial axes: trapezoid, Gauss or cell-volume weights); ``None`` means all ones.
    ``p > 0`` may be traced; ``p = inf`` (concrete) is the max norm over points of positive
    weight.

    Computed as :math:`m\,(\sum_n w_n (|u_n|/m)^p)^{1/p}` with :math:`m = \max_n |u_n|`, which
    neither overflows nor underflows for large ``p`` or extreme magnitudes; the gradient at
    ``u = 0`` (and of :math:`|u_n|^p` at :math:`u_n = 0`) is 0, see the module docstring. Negative
    traced weights that make the sum negative give NaN.
    """
    u = as_float(u)
    p = _check_p(p, u.dtype)
    a = jnp.abs(u)
    w = None
    if weights is not None:
        if is_concrete(weights):
            wn = np.asarray(weights, np.float64)
            if not np.all(np.isfinite(wn) & (wn >= 0)):
                raise ValueError("weights must be finite and >= 0 (quadrature weights).")
        w = jnp.asarray(weights, u.dtype)
        try:
            fits = np.broadcast_shapes(w.shape, u.shape) == u.shape
        except ValueError:
            fits = False
        if not fits:
            # Extra leading axes would broadcast the field instead and multiply the sum.
            raise ValueError(
                f"weights of shape {w.shape} do not broadcast to the field's shape {u.shape} "
                f"(they align from the right, e.g. one weight per grid point)."
            )
    if isinstance(p, float) and math.isinf(p):
        return jnp.max(a if w is None else jnp.where(w > 0, a, 0.0))
    return _scaled_lp_norm(a, jnp.asarray(p, u.dtype), w)


@jax.jit  # one small program instead of a dozen dispatches when called outside jit
def _scaled_lp_norm(a, p, w):
    """:func:`lp_norm` of ``a = |u|`` for finite ``p > 0``."""
    # The scale is a constant for differentiation: ||u|| = m ||u / m|| for any fixed m > 0.
    # Every test is "== 0", never "> 0": NaN > 0 is false, and a NaN must come out as NaN.
    peak = lax.stop_gradient(jnp.max(a))
    scale = jnp.where((peak == 0) | jnp.isinf(peak), 1.0, peak)
    r = a / scale
    zero = r == 0
    terms = jnp.where(zero, 0.0, jnp.where(zero, 1.0, r) ** p)
    if w is not None:
        terms = terms * w
    total = jnp.sum(terms)
    norm = scale * jnp.where(total == 0, 1.0, total) ** (1.0 / p)
    # An infinite entry (scale 1) makes the total, and so the norm, infinite; a NaN makes it NaN.
    return jnp.where(total == 0, 0.0, norm)


def relative_lp_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    p: float | ArrayLike = 2.0,
    *,
    weights: Float[ArrayLike, "..."] | None = None,
) -> Float[Array, ""]:
    r"""Relative Lp error :math:`\|\hat u - u\|_{p,w} / \|u\|_{p,w}` with quadrature weights.

    ``p > 0`` (``ValueError`` otherwise; traced: checked at run time). Where the target is zero
    the relative error is undefined and the absolute error :math:`\|\hat u\|_{p,w}` is returned;
    the gradient at ``pred == target`` is 0 (see the module docstring).
    """
    pred, target = _check_pair(pred, target, "relative_lp_loss")
    num = lp_norm(pred - target, p, weights=weights)
    return _safe_divide(num, lp_norm(target, p, weights=weights))


def h1_norm(
    u: Float[ArrayLike, " c *spatial"], *, lengths: float | Sequence[float] = 1.0
) -> Float[Array, ""]:
    r""":math:`\|u\|_{H^1}^2 = \int_\Omega |u|^2 + |\nabla u|^2`, derivatives taken spectrally.

    The integral is the periodic rectangle rule, exact for trigonometric polynomials resolved by
    the grid, so for such fields this equals :func:`sobolev_norm` with ``s = 1``.
    """
    u = as_float(u)
    d = u.ndim - 1
    if d < 1:
        # A bare (n,) field would be read as n channels and no spatial axis: the "H1" norm would
        # then silently be the L2 norm, with no derivative term.
        raise ValueError(
            f"h1_norm takes one sample of shape (channels, *spatial) with at least one spatial "
            f"axis; got shape {u.shape} (a 1-D field is u[None])."
        )
    lengths = normalize_lengths(lengths, d, "h1_norm")
    total = jnp.sum(u**2)
    for j in range(d):
        orders = tuple(1 if i == j else 0 for i in range(d))
        total = total + jnp.sum(spectral_derivative(u, orders, lengths=lengths) ** 2)
    cell = 1.0
    for n, length in zip(u.shape[1:], lengths, strict=True):
        cell = cell * jnp.asarray(length, u.dtype) / n
    return safe_sqrt(cell * total)


def h1_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    *,
    relative: bool = True,
    lengths: float | Sequence[float] = 1.0,
) -> Float[Array, ""]:
    """H1 error of ``pred`` against ``target`` (relative by default; absolute where the target is
    zero), see :func:`h1_norm` and the module docstring."""
    pred, target = _check_pair(pred, target, "h1_loss")
    err = h1_norm(pred - target, lengths=lengths)
    return _safe_divide(err, h1_norm(target, lengths=lengths)) if relative else err


def sobolev_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    s: float | ArrayLike = 1.0,
    *,
    relative: bool = True,
    lengths: float | Sequence[float] = 1.0,
) -> Float[Array, ""]:
    r"""H^s error for any real ``s`` (see :func:`sobolev_norm`); ``s < 0`` is the
    Spectral-Refiner loss, which weights large scales. Relative by default, absolute where the
    target is zero (see the module docstring)."""
    pred, target = _check_pair(pred, target, "sobolev_loss")
    err = sobolev_norm(pred - target, s, lengths=lengths)
    return _safe_divide(err, sobolev_norm(target, s, lengths=lengths)) if relative else err
