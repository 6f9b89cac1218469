r"""Consistency objectives that need no teacher: CT / iCT / ECT, and sCM's continuous-time loss.

* :func:`consistency_training_loss` — consistency training ("Consistency Models", Algorithm 3):
  the two adjacent levels share one noise draw, :math:`x_\text{hi} = x_0 + \sigma_\text{hi}z`,
  :math:`x_\text{lo} = x_0 + \sigma_\text{lo}z`, so no ODE step (and no teacher) is needed. Two
  level schedules: ``"ict"`` ("Improved Techniques for Training Consistency Models": Karras grid
  whose size doubles along training, levels drawn with lognormal weights) and ``"ect"``
  ("Consistency Models Made Easy": continuous lognormal :math:`t`, and the gap to the lower level
  shrinks geometrically with training progress);
* :func:`ict_num_levels`, :func:`ict_level_probabilities`, :func:`ect_gap` — those schedules;
* :func:`scm_loss` — the continuous-time sCM objective ("Simplifying, Stabilizing and Scaling
  Continuous-Time Consistency Models") in TrigFlow form, with the tangent of
  :func:`~jaxsolve.diffusion.fewstep.scm_tangent` (one ``jax.jvp``), tangent normalisation and
  the adaptive weighting; teacher-free (sCT) or from a teacher denoiser (sCD).

Training progress is data (a traced scalar in :math:`[0, 1]`), so one compiled step serves the
whole curriculum.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from ..._core import as_float, check_choice, check_int, check_positive, expand_to, safe_divide
from .._losses import _per_sample_mean, lognormal_sigmas
from ._consistency import consistency_distance, draw_intervals, ict_level_probabilities
from ._trigflow import scm_tangent, tangent_normalization, to_trigflow, trigflow_time

# --- schedules ---------------------------------------------------------------------------------


def ict_num_levels(progress: ArrayLike, s0: int = 10, s1: int = 1280) -> Int[Array, ""]:
    r"""iCT's discretisation curriculum: the number of levels :math:`N` at training progress ``p``.

    "Improved Techniques for Training Consistency Models" (Song & Dhariwal), exponential schedule:
    :math:`N(k) = \min(s_0 2^{\lfloor k/K'\rfloor}, s_1) + 1` with
    :math:`K' = \lfloor K/(\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor`; with :math:`p = k/K` the
    stage is :math:`\lfloor p\,(\log_2\lfloor s_1/s_0\rfloor + 1)\rfloor`. ``progress`` may be
    traced.
    """
    s0 = check_int("s0", s0, minimum=1)
    s1 = check_int("s1", s1, minimum=s0)
    n_stages = int(np.log2(s1 // s0)) + 1
    p = jnp.clip(as_float(progress), 0.0, 1.0)
    stage = jnp.floor(p * n_stages).astype(jnp.int32)
    return jnp.minimum(s0 * 2**stage, s1) + 1


def _karras_levels(num_levels, size, sigma_min, sigma_max, rho):
    """Increasing Karras grid of ``num_levels`` (traced) levels, padded to ``size`` entries."""
    i = jnp.minimum(jnp.arange(size), num_levels - 1)
    frac = i / (num_levels - 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (lo + frac * (hi - lo)) ** rho


def ect_gap(
    sigma: ArrayLike,
    progress: ArrayLike,
    *,
    q: float = 2.0,
    k: float = 8.0,
    b: float = 1.0,
    n_stages: int = 8,
) -> Array:
    r"""ECT's relative gap :math:`(t - r)/(t - \sigma_\text{min})` between the two levels, in (0, 1].

    "Consistency Models Made Easy" (Geng et al.), the sigmoid mapping function:
    :math:`t - r = t\,(1/q)^{\lceil i/d\rceil}\,n(t)`, :math:`n(t) = 1 + k\,\mathrm{sigmoid}(-bt)`,
    with :math:`i/d` the stage of training (here :math:`\lceil p\cdot\texttt{n\_stages}\rceil` at
    progress :math:`p`). At :math:`p = 0` the gap is the whole interval (denoising pretraining,
    the lower level is the boundary); each stage divides it by :math:`q`. Here the gap is measured
    from :math:`\sigma_\text{min}` (the boundary of :class:`ConsistencyFunction`) and capped at 1:
    :math:`r = t - (t - \sigma_\text{min})\,\mathrm{gap}`.
    """
    check_positive("q", q)
    n_stages = check_int("n_stages", n_stages, minimum=1)
    p = jnp.clip(as_float(progress), 0.0, 1.0)
    stage = jnp.ceil(p * n_stages)
    n_t = 1.0 + k * jax.nn.sigmoid(-b * as_float(sigma))
    return jnp.minimum(q ** (-stage) * n_t, 1.0)


# --- consistency training ----------------------------------------------------------------------


def _levels(
    key, batch, dtype, schedule, progress, sigma_min, sigma_max, rho, p_mean, p_std, s0, s1, ect
):
    """Per-sample ``(sigma_hi, sigma_lo)``."""
    if schedule == "ict":
        num_levels = ict_num_levels(progress, s0, s1)
        grid = _karras_levels(num_levels, s1 + 1, sigma_min, sigma_max, rho).astype(dtype)
        probs = ict_level_probabilities(grid, num_levels, p_mean, p_std)
        n = draw_intervals(key, probs, batch, num_levels - 1)
        return grid[n + 1], grid[n]
    t = jnp.clip(lognormal_sigmas(key, (batch,), p_mean, p_std).astype(dtype), sigma_min, sigma_max)
    r = t - (t - sigma_min) * ect_gap(t, progress, **ect).astype(dtype)
    return t, r


def consistency_training_loss(
    student: Callable,
    target_student: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    *,
    progress: ArrayLike = 0.0,
    schedule: str = "ict",
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    p_mean: float = -1.1,
    p_std: float = 2.0,
    s0: int = 10,
    s1: int = 1280,
    ect_q: float = 2.0,
    ect_k: float = 8.0,
    ect_b: float = 1.0,
    ect_stages: int = 8,
    metric: str = "pseudo_huber",
    weight: Callable | None = None,
) -> Float[Array, ""]:
    r"""Consistency training ("Consistency Models", Algorithm 3), with iCT's or ECT's schedule.

    Per sample, a level pair :math:`\sigma_\text{hi} > \sigma_\text{lo}` is drawn and one noise
    :math:`z \sim \mathcal N(0, I)` serves both levels:

    .. math::

        \mathbb E\;\lambda(\sigma_\text{hi}, \sigma_\text{lo})\,
        d\big(f_\theta(x_0 + \sigma_\text{hi}z, \sigma_\text{hi}),\;
        \operatorname{sg} f_{\theta^-}(x_0 + \sigma_\text{lo}z, \sigma_\text{lo})\big).

    :math:`x_0 + \sigma_\text{lo}z` stands in for the ODE step of consistency distillation; it is
    the one-step Euler solution of the PF-ODE with the *single-sample* denoiser
    :math:`D = x_0`, so for an exact consistency function the loss is not 0 but
    :math:`O((\sigma_\text{hi}-\sigma_\text{lo})^2)` per sample (squared metric), vanishing as
    the discretisation is refined.

    Schedules (``progress`` :math:`p\in[0,1]` may be traced):

    * ``"ict"`` — "Improved Techniques for Training Consistency Models": adjacent levels of the
      Karras grid (:math:`\sigma_\text{min}, \sigma_\text{max}, \rho`) with
      :func:`ict_num_levels` levels, drawn with :func:`ict_level_probabilities`;
    * ``"ect"`` — "Consistency Models Made Easy": :math:`\ln\sigma_\text{hi} \sim \mathcal
      N(P_\text{mean}, P_\text{std}^2)` (clipped to :math:`[\sigma_\text{min},
      \sigma_\text{max}]`), :math:`\sigma_\text{lo}` from :func:`ect_gap`.

    Args:
        student: the consistency function :math:`f_\theta(x, \sigma)` (batch, one level per
            sample), e.g. a :class:`ConsistencyFunction` with the same ``sigma_min``.
        target_student: :math:`f_{\theta^-}` (iCT and ECT use the student itself; or an EMA).
        x0: data, ``(batch, ...)``.
        key: PRNG key (levels and noise).
        progress: training progress in :math:`[0, 1]`.
        schedule: ``"ict"`` or ``"ect"``.
        sigma_min, sigma_max, rho: the level range (and the Karras grid's :math:`\rho`).
        p_mean, p_std: the lognormal level distribution.
        s0, s1: iCT's initial and final number of intervals.
        ect_q, ect_k, ect_b, ect_stages: ECT's :math:`q`, :math:`k`, :math:`b` and number of stages.
        metric: ``"pseudo_huber"`` (:func:`~jaxsolve.diffusion.pseudo_huber`) or ``"l2"`` (mean
            squared error per element).
        weight: :math:`\lambda(\sigma_\text{hi}, \sigma_\text{lo})` on per-sample levels;
            default :math:`1/(\sigma_\text{hi}-\sigma_\text{lo})` (iCT's and ECT's).

    Returns:
        The scalar loss, averaged over the batch.
    """
    check_choice("metric", metric, {"pseudo_huber", "l2"})
    check_choice("schedule", schedule, {"ict", "ect"})
    check_positive("sigma_min", sigma_min)
    if not sigma_max > sigma_min:
        raise ValueError(f"sigma_max must exceed sigma_min; got {sigma_max} <= {sigma_min}.")
    check_positive("p_std", p_std)
    x0 = as_float(x0)
    batch = x0.shape[0]
    k_level, k_z = jax.random.split(key)
    ect = dict(q=ect_q, k=ect_k, b=ect_b, n_stages=ect_stages)
    sigma_hi, sigma_lo = _levels(
        k_level, batch, x0.dtype, schedule, progress, sigma_min, sigma_max, rho, p_mean, p_std,
        s0, s1, ect,
    )  # fmt: skip
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    x_hi = x0 + expand_to(sigma_hi, x0) * z
    x_lo = x0 + expand_to(sigma_lo, x0) * z
    target = jax.lax.stop_gradient(target_student(x_lo, sigma_lo))
    dist = consistency_distance(student(x_hi, sigma_hi) - target, metric)
    if weight is None:
        # A pair clipped together (sigma_hi = sigma_min) has diff 0: weight 0, not 1/0.
        w = safe_divide(1.0, sigma_hi - sigma_lo, 0.0)
    else:
        w = weight(sigma_hi, sigma_lo)
    return jnp.mean(w * dist)


# --- sCM ---------------------------------------------------------------------------------------


def scm_loss(
    F: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    sigma_data: ArrayLike = 0.5,
    *,
    teacher: Callable | None = None,
    adaptive_weight: Callable | None = None,
    normalize_tangent: bool = True,
    tangent_c: float = 0.1,
    warmup_ratio: ArrayLike = 1.0,
    p_mean: float = -1.0,
    p_std: float = 1.4,
) -> Float[Array, ""]:
    r"""sCM's continuous-time consistency objective in TrigFlow form.

    "Simplifying, Stabilizing and Scaling Continuous-Time Consistency Models" (Lu & Song). Per
    sample: :math:`\tan t = e^\tau/\sigma_d`, :math:`\tau\sim\mathcal N(P_\text{mean},
    P_\text{std}^2)`; :math:`x_t = \cos(t)x_0 + \sin(t)z`, :math:`z\sim\mathcal N(0,\sigma_d^2I)`;
    the ODE direction :math:`v = \mathrm{d}x_t/\mathrm{d}t` is the conditional one,
    :math:`\cos(t)z - \sin(t)x_0` (consistency training, sCT), or the teacher's,
    :math:`\sigma_d F_\text{teacher}(x_t/\sigma_d, t)` with ``F_teacher = to_trigflow(teacher)``
    (distillation, sCD). The target is

    .. math::

        g = \cos(t)\,\frac{\mathrm{d}f_{\theta^-}}{\mathrm{d}t}
          = -\cos^2(t)(\sigma_d F_{\theta^-} - v)
            - r\cos(t)\sin(t)\Big(x_t + \sigma_d\frac{\mathrm{d}F_{\theta^-}}{\mathrm{d}t}\Big),

    (:func:`~jaxsolve.diffusion.fewstep.scm_tangent` times the paper's :math:`\cos t`), then
    :math:`g \leftarrow g/(\lVert g\rVert + c)` when ``normalize_tangent``, and the loss is

    .. math::

        \frac1D\lVert F_\theta - F_{\theta^-} - g\rVert^2
        \quad\text{or, with an adaptive weight } w(t):\quad
        \frac{e^{w(t)}}{D}\lVert F_\theta - F_{\theta^-} - g\rVert^2 - w(t),

    :math:`F_{\theta^-} = \operatorname{sg}F_\theta`, both at :math:`(x_t/\sigma_d, t)`. Its value
    is :math:`\lVert g\rVert^2/D` (so 0 for the exact consistency function under sCD, where
    :math:`g = 0`); its gradient is :math:`-\tfrac2D g\cdot\nabla_\theta F_\theta` (the paper's
    continuous-time gradient), plus the weight's own term.

    The paper's stable time conditioning feeds the network :math:`t` itself (not :math:`1000t`)
    through sinusoidal embeddings of bounded frequency, e.g.
    ``NoiseMLP(d, embedding="positional")``, so that :math:`\partial_t F` in the tangent stays
    of order one.

    Args:
        F: the TrigFlow network ``F(x_t / sigma_data, t)`` (batch, ``t`` of shape ``(batch,)``).
        x0: data, ``(batch, ...)``.
        key: PRNG key (times and noise).
        sigma_data: :math:`\sigma_d`.
        teacher: a denoiser ``(x, sigma) -> x0_hat`` (VE scale) for distillation; ``None`` for
            consistency training.
        adaptive_weight: ``w(t) -> (batch,)`` log-weights (e.g. a small ``eqx.Module`` trained
            with ``F``); ``None`` for :math:`w = 0` without the :math:`-w` term.
        normalize_tangent: divide :math:`g` by :math:`\lVert g\rVert + c`, per sample.
        tangent_c: the :math:`c` of the normalisation.
        warmup_ratio: the tangent warmup :math:`r \in [0, 1]` (may be traced).
        p_mean, p_std: the proposal of :math:`\tau` (the paper: -1.0, 1.4 for sCT; -0.8, 1.6
            for sCD).

    Returns:
        The scalar loss, averaged over the batch.
    """
    check_positive("sigma_data", sigma_data)
    check_positive("p_std", p_std)
    x0 = as_float(x0)
    sd = as_float(sigma_data).astype(x0.dtype)
    batch = x0.shape[0]
    k_t, k_z = jax.random.split(key)
    # tan t = e^tau / sigma_d: t is the TrigFlow time of a lognormal VE level e^tau.
    t = trigflow_time(lognormal_sigmas(k_t, (batch,), p_mean, p_std).astype(x0.dtype), sd)
    z = sd * jax.random.normal(k_z, x0.shape, x0.dtype)
    cos, sin = expand_to(jnp.cos(t), x0), expand_to(jnp.sin(t), x0)
    x_t = cos * x0 + sin * z
    if teacher is None:
        v = cos * z - sin * x0
    else:
        v = jax.lax.stop_gradient(sd * to_trigflow(teacher, sd)(x_t / sd, t))
    g = cos * scm_tangent(F, x_t, t, sd, v, warmup_ratio=warmup_ratio)
    if normalize_tangent:
        g = tangent_normalization(g, tangent_c, batch_ndim=1)
    out = jnp.asarray(F(x_t / sd, t)).astype(x0.dtype)
    residual = out - jax.lax.stop_gradient(out) - g
    per_sample = _per_sample_mean(residual**2)
    if adaptive_weight is None:
        return jnp.mean(per_sample)
    w = jnp.broadcast_to(jnp.asarray(adaptive_weight(t)).astype(x0.dtype), (batch,))
    return jnp.mean(jnp.exp(w) * per_sample - w)
