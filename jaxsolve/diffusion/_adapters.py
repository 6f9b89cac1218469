r"""Adapters between a model's own parameterisation and the denoiser form.

The denoiser form (EDM, k-diffusion) is ``denoiser(x, sigma) -> x0_hat`` with
:math:`x = x_0 + s\,\epsilon` in VE scale. A model ``fn(x_t, t)`` lives in its own scale and time,
:math:`x_t = \alpha(t)x_0 + \sigma(t)\epsilon`; a schedule links the two by
:math:`s = \sigma/\alpha`, :math:`x_t = \alpha x`.

Each parameterisation is a pair of maps between the model output ``y`` and :math:`x_0` at fixed
:math:`(x_t, t)` — written once in :data:`PREDICTIONS` — and two generic modules use them:
:class:`ModelDenoiser` (model -> denoiser) and :class:`DenoiserModel` (denoiser -> model). With
:math:`a = \alpha(t)`, :math:`b = \sigma(t)`, dots for time derivatives:

=========  ==========================================  ============================================
kind       model output from :math:`(x_t, x_0)`          :math:`x_0` from :math:`(x_t, y)`
=========  ==========================================  ============================================
``eps``    :math:`(x_t - a x_0)/b`                      :math:`(x_t - b y)/a`
``x0``     :math:`x_0`                                  :math:`y`
``v``      :math:`a\epsilon - b x_0` (Salimans & Ho)   :math:`(a x_t - b y)/(a^2 + b^2)`
``score``  :math:`(a x_0 - x_t)/b^2`                    :math:`(x_t + b^2 y)/a` (Tweedie)
``flow``   :math:`\dot a x_0 + \dot b\epsilon`          :math:`(\dot b x_t - b y)/(a\dot b - \dot a b)`
=========  ==========================================  ============================================

Model outputs in bfloat16/float16 are cast back to the state's dtype before any arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, check_choice, expand_to
from ._schedules import AbstractSchedule


class _Coefficients(NamedTuple):
    a: Array
    b: Array
    da: Array | None
    db: Array | None


class _Prediction(NamedTuple):
    to_output: Callable  # (x_t, x0, c) -> y
    to_x0: Callable  # (x_t, y, c) -> x0
    needs_derivatives: bool = False


def _eps_of(x_t, x0, c):
    return (x_t - c.a * x0) / c.b


PREDICTIONS: dict[str, _Prediction] = {
    "eps": _Prediction(_eps_of, lambda x_t, y, c: (x_t - c.b * y) / c.a),
    "x0": _Prediction(lambda x_t, x0, c: x0, lambda x_t, y, c: y),
    "v": _Prediction(
        lambda x_t, x0, c: c.a * _eps_of(x_t, x0, c) - c.b * x0,
        lambda x_t, y, c: (c.a * x_t - c.b * y) / (c.a * c.a + c.b * c.b),
    ),
    "score": _Prediction(
        lambda x_t, x0, c: (c.a * x0 - x_t) / (c.b * c.b),
        lambda x_t, y, c: (x_t + c.b * c.b * y) / c.a,
    ),
    "flow": _Prediction(
        lambda x_t, x0, c: c.da * x0 + c.db * _eps_of(x_t, x0, c),
        lambda x_t, y, c: (c.db * x_t - c.b * y) / (c.a * c.db - c.da * c.b),
        needs_derivatives=True,
    ),
}
"""The model parameterisations by name (``"eps"``, ``"x0"``, ``"v"``, ``"score"``, ``"flow"``): each
is the pair of maps between a model output :math:`y` and :math:`x_0` at fixed :math:`(x_t, t)`
(see the module), used by :class:`ModelDenoiser` and :class:`DenoiserModel`."""


def _check_adapter(adapter, fn_name, fn, schedule):
    """Validate an adapter's arguments when it is built, not on its first call."""
    if not callable(fn):
        raise TypeError(f"{adapter}: {fn_name} must be callable; got {type(fn).__name__}.")
    if not isinstance(schedule, AbstractSchedule):
        raise TypeError(
            f"{adapter}: schedule must be a jaxsolve schedule (VPSchedule.linear/cosine/discrete, "
            f"VESchedule, FlowSchedule, ...); got {type(schedule).__name__}."
        )


def _coefficients(schedule, t, s, needs_derivatives):
    a = schedule.alpha_from_ve_sigma(s)
    da = db = None
    if needs_derivatives:
        da, db = schedule.d_alpha_sigma(t)
    return _Coefficients(a, a * s, da, db)


class ModelDenoiser(eqx.Module):
    """A model ``fn(x_t, t)`` seen as a denoiser ``(x, sigma) -> x0_hat`` through ``schedule``.

    ``sigma`` is a scalar or has the leading (batch) axes of ``x``; ``fn`` receives ``t`` of that
    shape. Build with :func:`from_eps`, :func:`from_x0`, :func:`from_v`, :func:`from_score`,
    :func:`from_flow`.
    """

    fn: Callable
    schedule: AbstractSchedule
    prediction: str = eqx.field(static=True)

    def __check_init__(self):
        check_choice("prediction", self.prediction, set(PREDICTIONS))
        _check_adapter(f"from_{self.prediction}", "fn", self.fn, self.schedule)

    def __call__(self, x: Float[ArrayLike, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        sigma = as_float(sigma)
        x = as_float(x)
        kind = PREDICTIONS[self.prediction]
        t = self.schedule.from_ve_sigma(sigma)
        c = _coefficients(self.schedule, t, sigma, kind.needs_derivatives)
        c = _Coefficients(*(None if v is None else expand_to(v, x) for v in c))
        x_t = c.a * x
        y = jnp.asarray(self.fn(x_t, t)).astype(x.dtype)
        return kind.to_x0(x_t, y, c)


class DenoiserModel(eqx.Module):
    """A denoiser seen as a model ``fn(x_t, t)`` predicting ``prediction`` in the schedule's scale.

    The inverse of :class:`ModelDenoiser`: ``to_eps(from_eps(fn, sch), sch)`` is ``fn``.
    """

    denoiser: Callable
    schedule: AbstractSchedule
    prediction: str = eqx.field(static=True)

    def __check_init__(self):
        check_choice("prediction", self.prediction, set(PREDICTIONS))
        _check_adapter(f"to_{self.prediction}", "denoiser", self.denoiser, self.schedule)

    def __call__(self, x_t: Float[ArrayLike, "..."], t: ArrayLike) -> Float[Array, "..."]:
        t = as_float(t)
        x_t = as_float(x_t)
        kind = PREDICTIONS[self.prediction]
        s = self.schedule.to_ve_sigma(t)
        c = _coefficients(self.schedule, t, s, kind.needs_derivatives)
        c = _Coefficients(*(None if v is None else expand_to(v, x_t) for v in c))
        x0 = jnp.asarray(self.denoiser(x_t / c.a, s)).astype(x_t.dtype)
        return kind.to_output(x_t, x0, c)


def from_eps(fn: Callable, schedule: AbstractSchedule) -> ModelDenoiser:
    """Noise-prediction model :math:`\\hat\\epsilon(x_t, t)` -> denoiser: :math:`x_0 = x - s\\hat\\epsilon`."""
    return ModelDenoiser(fn, schedule, "eps")


def from_x0(fn: Callable, schedule: AbstractSchedule) -> ModelDenoiser:
    """Data-prediction model :math:`\\hat x_0(x_t, t)` -> denoiser."""
    return ModelDenoiser(fn, schedule, "x0")


def from_v(fn: Callable, schedule: AbstractSchedule) -> ModelDenoiser:
    """v-prediction model (:math:`v = \\alpha\\epsilon - \\sigma x_0`) -> denoiser."""
    return ModelDenoiser(fn, schedule, "v")


def from_score(fn: Callable, schedule: AbstractSchedule) -> ModelDenoiser:
    """Score model :math:`\\nabla_{x_t}\\log p_t(x_t)` -> denoiser, by Tweedie's formula."""
    return ModelDenoiser(fn, schedule, "score")


def from_flow(fn: Callable, schedule: AbstractSchedule) -> ModelDenoiser:
    """Velocity model :math:`\\mathrm{d}x_t/\\mathrm{d}t` (flow matching, rectified flow) -> denoiser.

    For :class:`~jaxsolve.diffusion.FlowSchedule` this is :math:`x_0 = x_t - t\\,v`.
    """
    return ModelDenoiser(fn, schedule, "flow")


def to_eps(denoiser: Callable, schedule: AbstractSchedule) -> DenoiserModel:
    r"""Denoiser -> noise-prediction model ``fn(x_t, t)``, the inverse of :func:`from_eps`.

    With :math:`a = \alpha(t)`, :math:`b = \sigma(t)` and :math:`\hat x_0 = D(x_t/a,\ b/a)`:
    :math:`\hat\epsilon(x_t, t) = (x_t - a\hat x_0)/b`, the parameterisation of "Denoising
    Diffusion Probabilistic Models". The exact oracle's denoiser gives the Bayes-optimal network.
    """
    return DenoiserModel(denoiser, schedule, "eps")


def to_x0(denoiser: Callable, schedule: AbstractSchedule) -> DenoiserModel:
    r"""Denoiser -> data-prediction model ``fn(x_t, t)``, the inverse of :func:`from_x0`.

    :math:`\hat x_0(x_t, t) = D(x_t/\alpha(t),\ \sigma(t)/\alpha(t))`: the denoiser called in
    the schedule's own time and scale.
    """
    return DenoiserModel(denoiser, schedule, "x0")


def to_v(denoiser: Callable, schedule: AbstractSchedule) -> DenoiserModel:
    r"""Denoiser -> v-prediction model ``fn(x_t, t)``, the inverse of :func:`from_v`.

    :math:`v = a\hat\epsilon - b\hat x_0` with :math:`a = \alpha(t)`, :math:`b = \sigma(t)`,
    :math:`\hat\epsilon = (x_t - a\hat x_0)/b` and :math:`\hat x_0 = D(x_t/a,\ b/a)`, the
    target of "Progressive Distillation for Fast Sampling of Diffusion Models".
    """
    return DenoiserModel(denoiser, schedule, "v")


def to_score(denoiser: Callable, schedule: AbstractSchedule) -> DenoiserModel:
    r"""Denoiser -> score model ``fn(x_t, t)``, the inverse of :func:`from_score`.

    Tweedie's formula in the schedule's scale: :math:`\nabla_{x_t}\log p_t(x_t) = (a\hat x_0 -
    x_t)/b^2` with :math:`a = \alpha(t)`, :math:`b = \sigma(t)` and :math:`\hat x_0 = D(x_t/a,\
    b/a)`, the score of "Score-Based Generative Modeling through Stochastic Differential
    Equations".
    """
    return DenoiserModel(denoiser, schedule, "score")


def to_flow(denoiser: Callable, schedule: AbstractSchedule) -> DenoiserModel:
    r"""Denoiser -> velocity model ``fn(x_t, t)``, the inverse of :func:`from_flow`.

    The probability-flow velocity :math:`\mathrm{d}x_t/\mathrm{d}t = \dot a\hat x_0 + \dot
    b\hat\epsilon` with :math:`a = \alpha(t)`, :math:`b = \sigma(t)`, :math:`\hat\epsilon =
    (x_t - a\hat x_0)/b` and :math:`\hat x_0 = D(x_t/a,\ b/a)` ("Flow Matching for Generative
    Modeling"); for :class:`~jaxsolve.diffusion.FlowSchedule` it is :math:`\hat\epsilon - \hat
    x_0`.
    """
    return DenoiserModel(denoiser, schedule, "flow")


# Pointwise conversions in VE scale, for solvers that hold (x, sigma, x0_hat).


def eps_from_denoised(x, sigma, x0):
    r""":math:`\hat\epsilon = (x - \hat x_0)/s`; also the probability-flow slope :math:`\mathrm{d}x/\mathrm{d}s`."""
    return (x - x0) / expand_to(sigma, x)


def score_from_denoised(x, sigma, x0):
    r"""VE-scale score :math:`\nabla_x\log p_s(x) = (\hat x_0 - x)/s^2` (Tweedie)."""
    s = expand_to(sigma, x)
    return (x0 - x) / (s * s)


def denoised_from_eps(x, sigma, eps):
    r"""VE-scale denoised estimate from a noise estimate: :math:`\hat x_0 = x - s\,\hat\epsilon`.

    The inverse of :func:`eps_from_denoised` at level :math:`s` = ``sigma`` (a scalar or the
    leading axes of ``x``).
    """
    return x - expand_to(sigma, x) * eps
