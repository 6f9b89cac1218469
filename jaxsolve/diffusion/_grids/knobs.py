r"""Schedule knobs of diffusers' schedulers as grids: beta-distribution levels, Karras /
exponential / beta spacing over any schedule's range, and the flow-matching time shifts of SD3 and
Flux.

Every grid follows :mod:`.spacing`'s convention: ``n`` decreasing positive VE levels then 0, padded
with zeros to ``max_steps + 1`` when ``max_steps`` is given (``n`` may then be traced).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..._core import (
    as_float,
    check_choice,
    check_in_open_interval,
    check_positive,
    check_sigma_range,
    is_concrete,
)
from .._schedules import AbstractSchedule
from .spacing import _arrays, _grid, _levels, _time_range, exponential_sigmas, karras_sigmas

# Bisection halves [0, 1] to below float64 resolution in 64 steps.
_BISECTION_STEPS = 64


@jax.jit
def beta_quantile(p: Float[ArrayLike, "..."], alpha, beta) -> Float[Array, "..."]:
    r"""Quantile of the Beta(``alpha``, ``beta``) distribution: the :math:`x` with
    :math:`I_x(\alpha, \beta) = p`.

    Bisection on the regularized incomplete beta function (monotone in :math:`x`), so it is exact
    up to the accuracy of ``jax.scipy.special.betainc``; ``p = 0`` and ``p = 1`` give 0 and 1.
    """
    p = as_float(p)
    a, b = as_float(alpha).astype(p.dtype), as_float(beta).astype(p.dtype)

    def halve(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        below = jax.scipy.special.betainc(a, b, mid) < p
        return jnp.where(below, mid, lo), jnp.where(below, hi, mid)

    lo, hi = jax.lax.fori_loop(0, _BISECTION_STEPS, halve, (jnp.zeros_like(p), jnp.ones_like(p)))
    return jnp.where(p <= 0, 0.0, jnp.where(p >= 1, 1.0, 0.5 * (lo + hi)))


def beta_sigmas(
    n, sigma_min, sigma_max, alpha=0.6, beta=0.6, *, max_steps=None
) -> Float[Array, " L"]:
    r"""Levels at the quantiles of a Beta distribution ("Beta Sampling is All You Need: Efficient
    Image Generation Strategy for Diffusion Models via Stepwise Spectral Analysis").

    :math:`s_i = s_{\min} + F^{-1}_{\alpha,\beta}(1 - u_i)\,(s_{\max} - s_{\min})`,
    :math:`u_i = i/(n-1)`, with :math:`F^{-1}` the Beta quantile. ``alpha = beta = 0.6`` (diffusers'
    ``use_beta_sigmas``) puts more steps at both ends of the range than in the middle.
    """
    sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
    check_positive("alpha", alpha)
    check_positive("beta", beta)
    return _grid(_beta_levels, _arrays(sigma_min, sigma_max, alpha, beta), n, max_steps)


def _beta_levels(u, sigma_min, sigma_max, alpha, beta):
    lo, hi = as_float(sigma_min), as_float(sigma_max)
    return lo + beta_quantile(1.0 - u, alpha, beta) * (hi - lo)


def schedule_sigmas(
    schedule: AbstractSchedule,
    n,
    spacing: str = "karras",
    *,
    rho=7.0,
    alpha=0.6,
    beta=0.6,
    t_min=None,
    t_max=None,
    max_steps=None,
) -> Float[Array, " L"]:
    r"""A spacing rule over a schedule's noise range: diffusers' ``use_karras_sigmas``,
    ``use_exponential_sigmas`` and ``use_beta_sigmas``.

    The range is :math:`[s(t_{\min}), s(t_{\max})]` (the schedule's own time range by default; for a
    :class:`~jaxsolve.diffusion.DiscreteVPSchedule` the first and last table levels, as diffusers'
    multistep schedulers and its Euler schedulers with ``"linspace"`` spacing take it), then:

    * ``"karras"``: :func:`karras_sigmas` (``rho``);
    * ``"exponential"``: :func:`exponential_sigmas` (the same grid as :func:`logsnr_sigmas`);
    * ``"beta"``: :func:`beta_sigmas` (``alpha``, ``beta``).

    Diffusers' Euler schedulers with ``"leading"``/``"trailing"`` spacing take the range from the
    spaced timesteps instead: pass those levels to the grid functions directly.
    """
    check_choice("spacing", spacing, {"karras", "exponential", "beta"})
    lo, hi = _levels(schedule, *_time_range(schedule, t_min, t_max))
    if spacing == "karras":
        return karras_sigmas(n, lo, hi, rho, max_steps=max_steps)
    if spacing == "exponential":
        return exponential_sigmas(n, lo, hi, max_steps=max_steps)
    return beta_sigmas(n, lo, hi, alpha, beta, max_steps=max_steps)


# --------------------------------------------------------------------------------------------
# Flow matching (SD3, Flux): time shifting of the flow time t in [0, 1], noise at t = 1.


def dynamic_shift_mu(
    seq_len,
    base_seq_len: int = 256,
    max_seq_len: int = 4096,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
) -> Float[Array, ""]:
    r"""Flux's resolution-dependent shift :math:`\mu`: linear in the image's token count.

    :math:`\mu = \text{base\_shift} + (\text{seq\_len} - \text{base\_seq\_len})
    \frac{\text{max\_shift} - \text{base\_shift}}{\text{max\_seq\_len} - \text{base\_seq\_len}}`
    (extrapolated outside the two anchors), in diffusers' operation order. Pass it as ``mu`` to
    :func:`flow_shift_sigmas`.
    """
    if max_seq_len == base_seq_len:
        raise ValueError(f"max_seq_len must differ from base_seq_len; both are {max_seq_len}.")
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    intercept = base_shift - slope * base_seq_len
    return as_float(seq_len) * slope + intercept


def flow_shift_times(
    n,
    shift=1.0,
    *,
    mu=None,
    time_shift_type: str = "exponential",
    shift_terminal=None,
    num_train_timesteps: int = 1000,
    max_steps=None,
) -> Float[Array, " L"]:
    r"""The flow times of diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps`` (its
    ``sigmas``), ``n`` of them from 1 down, then 0.

    The shift :math:`t' = ct/(1 + (c-1)t)` (SD3's ``shift``, :math:`c` = ``shift``) moves steps
    towards high noise; it is the exponential time shift
    :math:`e^\mu/(e^\mu + (1/t - 1))` of Flux with :math:`c = e^\mu` (``time_shift_type``
    ``"linear"``: :math:`c = \mu`). As in diffusers, the unshifted times are ``n`` uniform points
    from 1 to the training schedule's last level, :math:`1/N` with ``mu`` (dynamic shifting) and
    the already shifted :math:`c/N/(1 + (c-1)/N)` with a static ``shift``, and are then shifted.
    ``shift_terminal`` (LTX-Video) stretches :math:`1 - t'` so the last time is ``shift_terminal``.

    Args:
        n: the number of steps (may be traced with ``max_steps``).
        shift: the static shift :math:`c` (ignored when ``mu`` is given, as in diffusers).
        mu: the dynamic shift (e.g. :func:`dynamic_shift_mu`), diffusers' ``use_dynamic_shifting``.
        time_shift_type: ``"exponential"`` or ``"linear"``, how ``mu`` gives :math:`c`.
        shift_terminal: the last positive time after stretching, or None.
        num_train_timesteps: :math:`N`.
        max_steps: pad to ``max_steps + 1`` entries.
    """
    check_choice("time_shift_type", time_shift_type, {"exponential", "linear"})
    if num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be >= 1; got {num_train_timesteps}.")
    if mu is None:
        check_positive("shift", shift)
        factor = as_float(shift)
    elif time_shift_type == "linear":
        check_positive("mu", mu)
        factor = as_float(mu)
    else:
        factor = jnp.exp(as_float(mu))

    def shifted(t):
        return factor * t / (1.0 + (factor - 1.0) * t)

    last = as_float(1.0 / num_train_timesteps)
    if mu is None:
        last = shifted(last)
    final = shifted(last)
    if shift_terminal is not None:
        check_in_open_interval("shift_terminal", shift_terminal, 0.0, 1.0)
        stretch = (1.0 - final) / (1.0 - as_float(shift_terminal))
    else:
        stretch = 1.0

    return _grid(_shifted_flow_levels, _arrays(factor, last, stretch), n, max_steps)


def _shifted_flow_levels(u, factor, last, stretch):
    t = 1.0 + u * (last - 1.0)
    t = factor * t / (1.0 + (factor - 1.0) * t)
    return 1.0 - (1.0 - t) / stretch


def flow_shift_sigmas(
    n,
    shift=1.0,
    *,
    mu=None,
    time_shift_type: str = "exponential",
    shift_terminal=None,
    num_train_timesteps: int = 1000,
    t_max=1.0 - 2.0**-24,
    max_steps=None,
) -> Float[Array, " L"]:
    r""":func:`flow_shift_times` as VE levels :math:`s = t/(1-t)`, for
    :func:`~jaxsolve.diffusion.sample` with a flow model (:func:`~jaxsolve.diffusion.from_flow` and
    :class:`~jaxsolve.diffusion.FlowSchedule`).

    The first time is 1, pure noise, whose VE level is infinite; it is lowered to ``t_max``
    (default :math:`1 - 2^{-24}`, the largest float32 below 1: the model sees the time 1 to float32
    precision, and a first-order step from :math:`s_0 = t_{\max}/(1-t_{\max})` differs from the step
    from pure noise by :math:`O(1/s_0)`). Start from the VE state :math:`s_0\epsilon` (the flow
    state :math:`x_1 = \epsilon` with its vanishing data part dropped).
    """
    t = flow_shift_times(
        n,
        shift,
        mu=mu,
        time_shift_type=time_shift_type,
        shift_terminal=shift_terminal,
        num_train_timesteps=num_train_timesteps,
        max_steps=max_steps,
    )
    if is_concrete(t_max):
        check_in_open_interval("t_max", t_max, 0.0, 1.0)
    t = jnp.minimum(t, as_float(t_max).astype(t.dtype))
    return t / (1.0 - t)
