r"""Sigma grids by a spacing rule: decreasing VE noise levels ending in 0.

A grid for ``n`` steps has ``n`` positive levels :math:`s_0 > \dots > s_{n-1}` followed by 0, so
length ``n + 1``; a sampler takes ``n`` steps, the last one (to 0) landing on the denoiser output.

**Sweeps as data.** Every grid takes ``max_steps=``. Then ``n`` may be a traced integer in
``[1, max_steps]`` and the grid has the static length ``max_steps + 1``: the ``n + 1`` entries of the
unpadded grid, then zeros. ``jax.vmap`` over ``n`` compiles once; the sampling driver masks the
steps after the first 0.

All continuous grids are one formula :math:`s(u)` on :math:`u\in[0,1]` (``u = 0`` the largest level),
evaluated at :math:`u_i = i/(n-1)`; :func:`_grid` owns padding and validation for all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core import as_float, check_choice, check_integer_count, check_sigma_range, is_concrete
from .._schedules import AbstractSchedule, DiscreteVPSchedule


def _grid(levels: Callable, params: tuple, n, max_steps) -> Float[Array, " L"]:
    """``levels(u, *params)`` at ``u_i = i/(n-1)``, then 0, padded to ``max_steps + 1``."""
    n = check_integer_count("n", n, max_steps=max_steps)
    if max_steps is None:
        return _evaluate(levels, params, n, n)
    return _evaluate(levels, params, jnp.asarray(n), max_steps)


# One compiled program per grid rule, length and dtype. Outside jit the dozen operations of a
# rule would each compile on their own, again for every new n. Array parameters are traced (a
# new sigma_max does not recompile); Python scalars such as rho stay static, so the arithmetic
# is the same as operation by operation.
@eqx.filter_jit
def _evaluate(levels, params, n, length):
    i = jnp.arange(length + 1)
    u = i / jnp.maximum(n - 1, 1)
    sig = levels(as_float(jnp.clip(u, 0.0, 1.0)), *params)
    return jnp.where(i < n, sig, 0.0)


def _karras_levels(u, sigma_min, sigma_max, rho):
    lo, hi = as_float(sigma_min) ** (1.0 / rho), as_float(sigma_max) ** (1.0 / rho)
    # hi + u (lo - hi) loses sigma_min to cancellation when sigma_max / sigma_min is large
    # (rho = 1, a ratio of 1e5: relative error 3e-12), so the last level is taken exactly.
    return jnp.where(u >= 1.0, lo, hi + u * (lo - hi)) ** rho


def _exponential_levels(u, sigma_min, sigma_max):
    lo, hi = jnp.log(as_float(sigma_min)), jnp.log(as_float(sigma_max))
    return jnp.exp(hi + u * (lo - hi))


def _polyexponential_levels(u, sigma_min, sigma_max, rho):
    lo, hi = jnp.log(as_float(sigma_min)), jnp.log(as_float(sigma_max))
    return jnp.exp(lo + (1.0 - u) ** rho * (hi - lo))


def _time_uniform_levels(u, schedule, t_min, t_max):
    return schedule.to_ve_sigma(t_max + u * (t_min - t_max))


def _time_quadratic_levels(u, schedule, t_min, t_max):
    a, b = jnp.sqrt(t_max), jnp.sqrt(t_min)
    return schedule.to_ve_sigma((a + u * (b - a)) ** 2)


def _arrays(*values):
    """Python scalars as arrays, so that :func:`_evaluate` traces rather than bakes them in."""
    return tuple(jnp.asarray(v) for v in values)


def karras_sigmas(n, sigma_min, sigma_max, rho=7.0, *, max_steps=None) -> Float[Array, " L"]:
    r"""Grid of "Elucidating the Design Space of Diffusion-Based Generative Models" (EDM).

    :math:`s_i = \big(s_{\max}^{1/\rho} + \tfrac{i}{n-1}(s_{\min}^{1/\rho} - s_{\max}^{1/\rho})\big)^\rho`.
    """
    sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
    check_positive_rho(rho)
    return _grid(_karras_levels, (*_arrays(sigma_min, sigma_max), rho), n, max_steps)


def exponential_sigmas(n, sigma_min, sigma_max, *, max_steps=None) -> Float[Array, " L"]:
    r"""Log-uniform levels, :math:`\log s_i = \log s_{\max} + \tfrac{i}{n-1}\log(s_{\min}/s_{\max})`.

    In VE scale :math:`\lambda = -\log s`, so this is the log-SNR-uniform grid.
    """
    sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
    return _grid(_exponential_levels, _arrays(sigma_min, sigma_max), n, max_steps)


def polyexponential_sigmas(
    n, sigma_min, sigma_max, rho=1.0, *, max_steps=None
) -> Float[Array, " L"]:
    r"""k-diffusion's polyexponential grid: :math:`\log s_i = \log s_{\min} + (1-u_i)^\rho\log(s_{\max}/s_{\min})`.

    ``rho = 1`` is :func:`exponential_sigmas`; larger ``rho`` spends more steps at low noise.
    """
    sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
    check_positive_rho(rho)
    return _grid(_polyexponential_levels, (*_arrays(sigma_min, sigma_max), rho), n, max_steps)


def logsnr_sigmas(schedule: AbstractSchedule, n, *, t_min=None, t_max=None, max_steps=None):
    r"""Uniform in the half log-SNR :math:`\lambda` between ``lam(t_max)`` and ``lam(t_min)``.

    DPM-Solver's ``"logSNR"`` time steps ("DPM-Solver: A Fast ODE Solver for Diffusion
    Probabilistic Model Sampling in Around 10 Steps"). Defaults to the schedule's own time range.
    """
    t_min, t_max = _time_range(schedule, t_min, t_max)
    lo, hi = _levels(schedule, t_min, t_max)
    return exponential_sigmas(n, lo, hi, max_steps=max_steps)


def time_uniform_sigmas(schedule: AbstractSchedule, n, *, t_min=None, t_max=None, max_steps=None):
    """Uniform in the schedule's own time: :math:`t_i = t_{\\max} + u_i(t_{\\min} - t_{\\max})`."""
    t_min, t_max = _time_range(schedule, t_min, t_max)
    grid = _grid(_time_uniform_levels, (schedule, *_arrays(t_min, t_max)), n, max_steps)
    return _checked_by_levels(grid, schedule, t_min, t_max)


def time_quadratic_sigmas(schedule: AbstractSchedule, n, *, t_min=None, t_max=None, max_steps=None):
    r"""DPM-Solver's ``"time_quadratic"`` steps: uniform in :math:`\sqrt t`.

    :math:`t_i = \big(\sqrt{t_{\max}} + u_i(\sqrt{t_{\min}} - \sqrt{t_{\max}})\big)^2`.
    """
    t_min, t_max = _time_range(schedule, t_min, t_max)
    if is_concrete(t_min) and float(np.asarray(t_min)) < 0:
        raise ValueError(f"t_min must be >= 0 for time-quadratic steps; got {float(t_min)}.")
    grid = _grid(_time_quadratic_levels, (schedule, *_arrays(t_min, t_max)), n, max_steps)
    return _checked_by_levels(grid, schedule, t_min, t_max)


# --------------------------------------------------------------------------------------------
# Discrete (diffusers) grids


def discrete_timesteps(
    schedule: DiscreteVPSchedule,
    n,
    spacing: str = "linspace",
    *,
    steps_offset: int = 0,
    lambda_min_clipped: float = -float("inf"),
    max_steps=None,
) -> Int[Array, " L"]:
    """The integer timesteps diffusers' ``DPMSolverMultistepScheduler.set_timesteps`` chooses.

    With ``N`` training steps and ``L = N - (number of table entries whose half log-SNR is below
    lambda_min_clipped)`` (``L = N`` by default):

    * ``"linspace"`` (the default): ``round(k (L-1) / n)`` for ``k = n .. 1``;
    * ``"leading"``: ``k * (L // (n+1)) + steps_offset`` for ``k = n .. 1``;
    * ``"trailing"``: ``round(L - i N / n) - 1`` for ``i = 0 .. n-1``.

    ``round`` is NumPy's: half to even, applied to the float64 values NumPy computes, so a value
    meant to be ``m + 1/2`` sometimes rounds by its float error. Those cases are reproduced exactly:
    with a concrete ``n`` the timesteps are computed as diffusers does; with a traced ``n`` exact
    integer rounding is corrected by a table of the (few) entries where float64 rounding differs.
    (For some ``n``, e.g. 61 with ``"trailing"``, diffusers' float ``arange`` yields ``n + 1``
    timesteps, the last being -1; jaxsolve returns the ``n`` intended ones.)

    With ``max_steps`` the result is padded with ``-1`` to length ``max_steps``.
    """
    if not isinstance(schedule, DiscreteVPSchedule):
        raise TypeError(
            f"schedule must be a DiscreteVPSchedule (a DDPM table); got {type(schedule).__name__}."
        )
    check_choice("spacing", spacing, {"linspace", "leading", "trailing"})
    n = check_integer_count("n", n, max_steps=max_steps)
    num_train = schedule.num_train_timesteps
    last = _last_timestep(schedule, lambda_min_clipped)
    if max_steps is None:
        if n > num_train:
            raise ValueError(f"n must be <= num_train_timesteps={num_train}; got {n}.")
        ts = _numpy_timesteps(last, num_train, n, spacing, steps_offset)
        if ts.shape[0] < n or np.any(ts < 0):
            raise ValueError(
                f"spacing={spacing!r} with lambda_min_clipped={lambda_min_clipped} leaves only "
                f"{int(np.sum(ts >= 0))} valid timesteps for n={n}; use fewer steps."
            )
        return jnp.asarray(ts)
    if max_steps > num_train:
        raise ValueError(f"max_steps must be <= num_train_timesteps={num_train}; got {max_steps}.")
    k = jnp.arange(max_steps)
    ts = _integer_timesteps(last, num_train, n, k, spacing, steps_offset)
    corr_n, corr_k, corr_delta = _float_rounding_corrections(last, num_train, max_steps, spacing)
    if corr_n.size:
        hit = (jnp.asarray(corr_n)[:, None] == n) & (jnp.asarray(corr_k)[:, None] == k[None, :])
        ts = ts + jnp.sum(jnp.where(hit, jnp.asarray(corr_delta)[:, None], 0), axis=0)
    ts = eqx.error_if(
        ts, jnp.any((k < n) & (ts < 0)), "too many steps for this spacing and lambda_min_clipped."
    )
    return jnp.where(k < n, ts, -1)


def discrete_sigmas(
    schedule: DiscreteVPSchedule,
    n,
    spacing: str = "linspace",
    *,
    steps_offset: int = 0,
    lambda_min_clipped: float = -float("inf"),
    max_steps=None,
) -> Float[Array, " L"]:
    """The sigmas of diffusers' ``DPMSolverMultistepScheduler`` (default configuration).

    The table levels at :func:`discrete_timesteps`, then 0 (``final_sigmas_type="zero"``).
    """
    ts = discrete_timesteps(
        schedule,
        n,
        spacing,
        steps_offset=steps_offset,
        lambda_min_clipped=lambda_min_clipped,
        max_steps=max_steps,
    )
    sig = jnp.where(ts >= 0, schedule.sigmas[jnp.clip(ts, 0)], 0.0)
    return jnp.concatenate([sig, jnp.zeros((1,), sig.dtype)])


def _last_timestep(schedule: DiscreteVPSchedule, lambda_min_clipped) -> int:
    if lambda_min_clipped == -float("inf"):
        return schedule.num_train_timesteps
    if not is_concrete(schedule.sigmas):
        raise TypeError("lambda_min_clipped needs a concrete (non-traced) schedule table.")
    lam = -np.log(np.asarray(schedule.sigmas, dtype=np.float64))
    clipped = int(np.searchsorted(lam[::-1], lambda_min_clipped, side="left"))
    return schedule.num_train_timesteps - clipped


def _numpy_timesteps(last, num_train, n, spacing, steps_offset) -> np.ndarray:
    """diffusers' own float64 NumPy arithmetic, trimmed to ``n`` entries."""
    if spacing == "linspace":
        ts = np.linspace(0, last - 1, n + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ts = (np.arange(0, n + 1) * (last // (n + 1))).round()[::-1][:-1] + steps_offset
    else:
        ts = np.arange(last, 0, -num_train / n).round()[:n] - 1
    return ts.astype(np.int32)


def _round_half_even_div(num, den):
    """round(num / den) with ties to even, exactly, for non-negative integers."""
    q, r = num // den, num % den
    up = (2 * r > den) | ((2 * r == den) & (q % 2 == 1))
    return q + up.astype(q.dtype)


def _integer_timesteps(last, num_train, n, k, spacing, steps_offset):
    xp = jnp if isinstance(k, jnp.ndarray) else np
    if spacing == "linspace":
        return _round_half_even_div((last - 1) * (n - k), xp.maximum(n, 1))
    if spacing == "leading":
        return (n - k) * (last // (n + 1)) + steps_offset
    # round(last - k N / n) = round((last n - k N) / n); values below 0 only past the n-th entry.
    return _round_half_even_div(xp.maximum(last * n - k * num_train, 0), xp.maximum(n, 1)) - 1


@functools.lru_cache(maxsize=32)
def _float_rounding_corrections(last, num_train, max_steps, spacing):
    """(n, k, delta) where diffusers' float64 rounding differs from exact half-to-even rounding."""
    rows = []
    if spacing != "leading":
        for n in range(1, max_steps + 1):
            k = np.arange(n)
            exact = _integer_timesteps(last, num_train, n, k, spacing, 0)
            ref = _numpy_timesteps(last, num_train, n, spacing, 0)
            m = min(ref.shape[0], n)  # clipped trailing grids can be short; those n are refused
            for kk in np.nonzero(ref[:m] != exact[:m])[0]:
                rows.append((n, int(kk), int(ref[kk] - exact[kk])))
    arr = np.asarray(rows, dtype=np.int32).reshape(-1, 3)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def _time_range(schedule, t_min, t_max):
    t_min = schedule.t_min if t_min is None else as_float(t_min)
    t_max = schedule.t_max if t_max is None else as_float(t_max)
    if is_concrete((t_min, t_max)) and not float(np.asarray(t_min)) < float(np.asarray(t_max)):
        raise ValueError(
            f"t_min must be smaller than t_max; got t_min={float(t_min)}, t_max={float(t_max)}."
        )
    return t_min, t_max


def _levels(schedule, t_min, t_max):
    """The schedule's VE noise levels at the ends of the time range, checked now when concrete:
    ``0 < s(t_min) < s(t_max) < inf``."""
    lo, hi = schedule.to_ve_sigma(t_min), schedule.to_ve_sigma(t_max)
    if not is_concrete((lo, hi)):
        return lo, hi
    names = tuple(
        f"the schedule's noise level at {name}={float(np.asarray(t)):.6g}"
        for name, t in (("t_min", t_min), ("t_max", t_max))
    )
    return check_sigma_range(lo, hi, names=names)


def _checked_by_levels(grid, schedule, t_min, t_max):
    """``grid``, raising (now, or when it runs if traced) unless :func:`_levels` holds."""
    lo, hi = _levels(schedule, t_min, t_max)
    if is_concrete((lo, hi)):
        return grid
    ok = (lo > 0) & (lo < hi) & jnp.isfinite(hi)
    return eqx.error_if(
        grid, ~ok, "the schedule's noise levels must satisfy 0 < s(t_min) < s(t_max) < inf."
    )


def check_positive_rho(rho: ArrayLike) -> None:
    if is_concrete(rho) and not float(np.asarray(rho)) > 0:
        raise ValueError(f"rho must be positive; got {float(np.asarray(rho))}.")
