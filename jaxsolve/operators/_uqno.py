r"""UQNO: calibrated uncertainty bands around a neural operator's prediction.

"Calibrated Uncertainty Quantification for Operator Learning via Conformal Prediction" (Ma, Pitt,
Azizzadenesheli, Anandkumar). A trained *base* operator :math:`\mathcal G` gives the point
prediction; a *residual* operator :math:`E` is trained to predict the pointwise size of the
base's error, :math:`|u(x) - \mathcal G(a)(x)|`, with the quantile (pinball) loss
(:func:`uqno_residual_loss`); split-conformal calibration on held-out functions
(:func:`calibrate_uqno`) then gives one scale :math:`\lambda` such that the band

.. math:: \mathcal G(a)(x) \pm \lambda\, |E(a)(x)|

holds, with probability at least :math:`1 - \delta` over a new input function, at least a
fraction :math:`1 - \alpha` of that function's points. The guarantee needs only that the
calibration functions and the new one are exchangeable (e.g. i.i.d.); it holds whatever the
quality of :math:`E`, which decides only how narrow the band is.
"""

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, check_in_open_interval, check_int, is_concrete, safe_divide


class UQNO(eqx.Module):
    r"""A base operator and a residual operator: ``(prediction, band half-width)``.

    ``uqno(x)`` on one sample returns :math:`\mathcal G(x)` and :math:`\lambda |E(x)|`, both of
    the base's output shape. The base is frozen (a stop-gradient: it is trained first, on its
    own); ``scale`` :math:`\lambda` is 1 until :meth:`calibrated` sets the value that
    :func:`calibrate_uqno` returns. Batch with :func:`jax.vmap`.

    Args:
        base: the trained point-prediction operator, ``base(x) -> y``.
        residual: the operator trained to predict ``|y - base(x)|`` (same output shape as the
            base; often the same architecture, as neuraloperator's default copy of the base).
        scale: the calibrated scale :math:`\lambda` (default 1).
    """

    base: Callable
    residual: Callable
    scale: Float[Array, ""]

    def __init__(self, base: Callable, residual: Callable, scale: float | ArrayLike = 1.0):
        self.base = base
        self.residual = residual
        self.scale = as_float(scale)
        if self.scale.shape != ():
            raise ValueError(f"scale must be a scalar; got shape {self.scale.shape}.")
        if is_concrete(scale) and not np.all(np.asarray(scale, np.float64) >= 0):  # also NaN
            # A negative scale gives negative half-widths, a NaN one a band that is no band.
            raise ValueError(
                f"scale must be >= 0 (inf allowed: the scale calibrate_uqno gives when a needed "
                f"width is zero); got {scale!r}."
            )

    def widths(self, x) -> tuple[Array, Array]:
        """``(base(x), |residual(x)|)``: the prediction and the uncalibrated half-width."""
        prediction = lax.stop_gradient(jnp.asarray(self.base(x)))
        width = jnp.abs(jnp.asarray(self.residual(x)))
        if width.shape != prediction.shape:
            raise ValueError(
                f"UQNO: the residual's output shape {width.shape} differs from the base's "
                f"{prediction.shape}."
            )
        return prediction, width

    def __call__(self, x) -> tuple[Array, Array]:
        prediction, width = self.widths(x)
        return prediction, self.scale.astype(width.dtype) * width

    def calibrated(self, scale: float | ArrayLike) -> "UQNO":
        """The same model with scale :math:`\\lambda` = ``scale``."""
        return UQNO(self.base, self.residual, scale)


def _unit_interval(name: str, value) -> float:
    """A Python float in the open interval (0, 1), or ``ValueError`` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1); got {value!r}.") from None
    return float(check_in_open_interval(name, v, 0.0, 1.0))


def _ceil(v: float) -> int:
    """``ceil`` that ignores the last-bit rounding of a product such as ``(n + 1)(1 - delta)``."""
    return math.ceil(v * (1.0 - 1e-12))


def uqno_residual_loss(model: UQNO, x, y, *, quantile: float) -> Float[Array, ""]:
    r"""Quantile (pinball) loss of the residual operator on one sample, averaged over its points:

    .. math:: \frac1m\sum_x \rho_q\big(|y(x) - \mathcal G(a)(x)| - |E(a)(x)|\big),\qquad
       \rho_q(r) = \max(q\, r,\ (q - 1)\, r),

    whose minimiser over :math:`E(a)(x)` is the ``quantile``-quantile of the base's pointwise
    error given the input (the paper's residual training, with ``quantile`` near
    :math:`1 - \alpha`). The base gets no gradient. Batch with :func:`jax.vmap` and average.

    Args:
        model: the :class:`UQNO` whose residual is trained.
        x: one input sample; y: its target (the base's output shape).
        quantile: the level :math:`q \in (0, 1)`.
    """
    q = _unit_interval("quantile", quantile)
    prediction, width = model.widths(x)
    y = jnp.asarray(y)
    if y.shape != prediction.shape:
        raise ValueError(f"y has shape {y.shape}; the base's output has shape {prediction.shape}.")
    r = jnp.abs(y - prediction).astype(width.dtype) - width
    return jnp.mean(jnp.maximum(q * r, (q - 1.0) * r))


def conformal_ranks(n_functions: int, n_points: int, alpha: float, delta: float):
    r"""The two order statistics of :func:`calibrate_uqno`, 1-based:
    ``k = ceil((1 - alpha) m)`` among a function's ``m`` points and
    ``j = ceil((n + 1)(1 - delta))`` among the ``n`` calibration functions.

    Raises ``ValueError`` naming ``alpha`` / ``delta`` outside :math:`(0, 1)`, and naming
    ``delta`` when ``j > n`` (fewer than :math:`1/\delta - 1` functions cannot certify it).
    """
    n = check_int("n_functions", n_functions)
    m = check_int("n_points", n_points)
    alpha = _unit_interval("alpha", alpha)
    delta = _unit_interval("delta", delta)
    k = max(1, _ceil((1.0 - alpha) * m))
    j = _ceil((n + 1) * (1.0 - delta))
    if j > n:
        raise ValueError(
            f"delta={delta} needs at least ceil(1/delta) - 1 = {math.ceil(1 / delta) - 1} "
            f"calibration functions (ceil((n + 1)(1 - delta)) <= n); got n = {n}."
        )
    return k, max(j, 1)


def uqno_scores(model: UQNO, inputs, targets) -> Float[Array, "n m"]:
    r"""Per function and point, :math:`|u - \mathcal G(a)| / |E(a)|` (the scale that point needs;
    0 where both vanish, ``inf`` where only the width does), flattened over channels and
    points: shape ``(n_functions, points)``."""

    def one(x, y):
        prediction, width = model.widths(x)
        y = jnp.asarray(y)
        if y.shape != prediction.shape:
            # |y - prediction| would broadcast: (m, 1) against (1, m) gives m^2 "points".
            raise ValueError(
                f"targets: each function has shape {y.shape}; the model returns {prediction.shape}."
            )
        err = jnp.abs(y - prediction).astype(width.dtype)
        ratio = safe_divide(err, width, jnp.where(err == 0, 0.0, jnp.inf).astype(width.dtype))
        return ratio.reshape(-1)

    return jax.vmap(one)(inputs, targets)


@eqx.filter_jit
def _calibrate(model, inputs, targets, k, j):
    scores = uqno_scores(model, inputs, targets)
    per_function = jnp.sort(scores, axis=1)[:, k - 1]  # smallest scale covering k of m points
    scale = jnp.sort(per_function)[j - 1]
    # jnp.sort puts NaN last, where a NaN score would pass as a large but finite one and the
    # order statistics would come out plausible; a NaN anywhere makes the scale NaN.
    return jnp.where(jnp.any(jnp.isnan(scores)), jnp.nan, scale)


def calibrate_uqno(
    model: UQNO,
    inputs: Float[ArrayLike, "n ..."],
    targets: Float[ArrayLike, "n ..."],
    alpha: float,
    delta: float,
) -> Float[Array, ""]:
    r"""Split-conformal scale :math:`\lambda` of a :class:`UQNO` from ``n`` held-out functions.

    For function :math:`i` with :math:`m` points (channels times grid points), the pointwise
    ratios :math:`r_{i,x} = |u_i(x) - \mathcal G(a_i)(x)| / |E(a_i)(x)|` are sorted and its
    score is the :math:`k`-th smallest, :math:`k = \lceil (1-\alpha) m\rceil`: the least scale
    whose band holds at least a fraction :math:`1 - \alpha` of its points. The scale is the
    :math:`j`-th smallest of the :math:`n` scores, with the finite-sample correction

    .. math:: j = \big\lceil (n + 1)(1 - \delta) \big\rceil,

    i.e. the empirical quantile of level :math:`\lceil (n+1)(1-\delta)\rceil / n` rather than
    :math:`1 - \delta`. For a new function exchangeable with the calibration ones, its score
    is at most :math:`\lambda` (so at least a fraction :math:`1 - \alpha` of its points lie in
    the band :math:`\mathcal G(a) \pm \lambda |E(a)|`) with probability at least
    :math:`1 - \delta`, and, when scores do not tie, at most :math:`1 - \delta + 1/(n + 1)`.
    The model's own ``scale`` is ignored; set the result with :meth:`UQNO.calibrated`.

    Args:
        model: the :class:`UQNO` (base and trained residual).
        inputs, targets: the ``n`` calibration functions, stacked on a leading axis (one sample
            each as the model takes / returns), not used to train either operator.
        alpha: the fraction of points per function allowed outside the band, in ``(0, 1)``.
        delta: the probability over functions of failing that, in ``(0, 1)``; needs
            :math:`n \ge \lceil 1/\delta\rceil - 1`.

    Returns:
        The scale :math:`\lambda` (a scalar array; ``inf`` if a needed width is zero, NaN if any
        ratio is NaN: a NaN target, prediction or width).
    """
    inputs, targets = jnp.asarray(inputs), jnp.asarray(targets)
    if inputs.ndim == 0 or targets.ndim == 0 or inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets need one leading axis of n functions each; got shapes "
            f"{inputs.shape} and {targets.shape}."
        )
    n = check_int("n_functions (the leading axis of inputs)", inputs.shape[0])
    out = jax.eval_shape(lambda x: model.widths(x)[1], inputs[0]).shape
    if targets.shape[1:] != out:
        raise ValueError(
            f"targets: each function has shape {targets.shape[1:]}; the model returns {out}."
        )
    m = math.prod(out)
    k, j = conformal_ranks(n, m, alpha, delta)
    return _calibrate(model, inputs, targets, k, j)


def uqno_from_neuraloperator(torch_model, **kwargs) -> UQNO:
    """Our :class:`UQNO` from a neuraloperator 2.0 ``UQNO``: its base and residual models
    carried by :func:`from_neuraloperator` (``kwargs`` go to both; scale 1, uncalibrated)."""
    from ._bridges import from_neuraloperator

    return UQNO(
        from_neuraloperator(torch_model.base_model, **kwargs),
        from_neuraloperator(torch_model.residual_model, **kwargs),
    )
