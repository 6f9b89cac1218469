r"""Noise schedules: time :math:`t \mapsto (\alpha(t), \sigma(t))` with :math:`x_t = \alpha x_0 + \sigma\epsilon`.

Every sampler in jaxsolve works in the variance-exploding (VE) form of EDM / k-diffusion,
:math:`x = x_0 + s\,\epsilon` with noise level :math:`s = \sigma/\alpha` and :math:`x = x_t/\alpha`.
A schedule is the bridge between a model's own time and that form:

* ``to_ve_sigma(t)`` = :math:`\sigma(t)/\alpha(t)` and its inverse ``from_ve_sigma(s)``;
* ``alpha_from_ve_sigma(s)``: the scale of the family at VE level ``s`` (VP:
  :math:`1/\sqrt{1+s^2}`, VE: 1, rectified flow: :math:`1/(1+s)`), so ``alpha`` and ``sigma`` follow
  from ``s`` alone;
* ``lam(t)`` = :math:`\lambda(t) = \log(\alpha/\sigma) = -\log s`, the *half* log-SNR that
  DPM-Solver calls :math:`\lambda` (the log-SNR :math:`\log(\alpha^2/\sigma^2)` is :math:`2\lambda`).

Schedule parameters are array fields, so schedules can be built under ``jit``/``vmap`` and swept.
All arithmetic is done in float32 (float64 under x64) whatever the dtype of ``t``.
"""

from __future__ import annotations

import abc
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import (
    as_float,
    check_choice,
    check_in_open_interval,
    check_positive,
    check_sigma_range,
    is_concrete,
)

Scalarish = ArrayLike


class AbstractSchedule(eqx.Module):
    """Base class. Subclasses define ``to_ve_sigma``, ``from_ve_sigma`` and ``alpha_from_ve_sigma``.

    ``t_min``/``t_max`` bound the times a sampler should use (grids default to them).
    """

    t_min: eqx.AbstractVar[Float[Array, ""]]
    t_max: eqx.AbstractVar[Float[Array, ""]]

    @abc.abstractmethod
    def to_ve_sigma(self, t: Scalarish) -> Float[Array, "..."]:
        """:math:`s(t) = \\sigma(t)/\\alpha(t)`."""

    @abc.abstractmethod
    def from_ve_sigma(self, s: Scalarish) -> Float[Array, "..."]:
        """Inverse of :meth:`to_ve_sigma`."""

    @abc.abstractmethod
    def alpha_from_ve_sigma(self, s: Scalarish) -> Float[Array, "..."]:
        """:math:`\\alpha` as a function of the VE noise level (fixed by the schedule's family)."""

    # Everything below is derived from the three methods above.

    def alpha(self, t: Scalarish) -> Float[Array, "..."]:
        return self.alpha_from_ve_sigma(self.to_ve_sigma(t))

    def sigma(self, t: Scalarish) -> Float[Array, "..."]:
        s = self.to_ve_sigma(t)
        return s * self.alpha_from_ve_sigma(s)

    def alpha_sigma(self, t: Scalarish) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        s = self.to_ve_sigma(t)
        a = self.alpha_from_ve_sigma(s)
        return a, s * a

    def lam(self, t: Scalarish) -> Float[Array, "..."]:
        """Half log-SNR :math:`\\lambda(t) = \\log(\\alpha(t)/\\sigma(t)) = -\\log s(t)`."""
        return -jnp.log(self.to_ve_sigma(t))

    def from_lam(self, lam: Scalarish) -> Float[Array, "..."]:
        """Inverse of :meth:`lam`."""
        return self.from_ve_sigma(jnp.exp(-as_float(lam)))

    def d_alpha_sigma(self, t: Scalarish) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
        """Time derivatives :math:`(\\dot\\alpha(t), \\dot\\sigma(t))`, by forward-mode AD."""
        t = as_float(t)
        _, (da, ds) = jax.jvp(self.alpha_sigma, (t,), (jnp.ones_like(t),))
        return da, ds


class VPSchedule(AbstractSchedule):
    r"""Variance-preserving family: :math:`\alpha^2 + \sigma^2 = 1`, so :math:`\alpha = 1/\sqrt{1+s^2}`.

    Build one with :meth:`linear`, :meth:`cosine` or :meth:`discrete`.
    """

    def alpha_from_ve_sigma(self, s):
        s = as_float(s)
        return jax.lax.rsqrt(1.0 + s * s)

    @staticmethod
    def linear(beta_min=0.1, beta_max=20.0, *, t_min=1e-3, t_max=1.0) -> LinearVPSchedule:
        """Score-SDE VP schedule with linear :math:`\\beta(t)` (see :class:`LinearVPSchedule`)."""
        return LinearVPSchedule(beta_min, beta_max, t_min=t_min, t_max=t_max)

    @staticmethod
    def cosine(s=0.008, *, t_min=1e-3, t_max=0.9946) -> CosineVPSchedule:
        """Improved-DDPM cosine schedule (see :class:`CosineVPSchedule`)."""
        return CosineVPSchedule(s, t_min=t_min, t_max=t_max)

    @staticmethod
    def discrete(betas=None, *, alphas_cumprod=None) -> DiscreteVPSchedule:
        """DDPM table schedule from ``betas`` (or ``alphas_cumprod``); see :class:`DiscreteVPSchedule`."""
        return DiscreteVPSchedule(betas, alphas_cumprod=alphas_cumprod)


class LinearVPSchedule(VPSchedule):
    r"""VP-SDE of "Score-Based Generative Modeling through Stochastic Differential Equations".

    :math:`\beta(t) = \beta_{\min} + t(\beta_{\max}-\beta_{\min})` on :math:`t\in[0,1]`, so
    :math:`\log\alpha(t) = -\tfrac14 t^2(\beta_{\max}-\beta_{\min}) - \tfrac12 t\beta_{\min}` and
    :math:`s(t) = \sqrt{\operatorname{expm1}(-2\log\alpha(t))}`. The inverse solves the quadratic
    :math:`a t^2 + b t = c` with :math:`c = \tfrac12\log(1+s^2)` in the cancellation-free form
    :math:`t = 2c/(b + \sqrt{b^2 + 4ac})`.
    """

    beta_min: Float[Array, ""]
    beta_max: Float[Array, ""]
    t_min: Float[Array, ""]
    t_max: Float[Array, ""]

    def __init__(self, beta_min=0.1, beta_max=20.0, *, t_min=1e-3, t_max=1.0):
        check_positive("beta_min", beta_min, allow_zero=True)
        check_positive("beta_max", beta_max)
        if is_concrete((beta_min, beta_max)) and np.any(
            np.asarray(beta_max) < np.asarray(beta_min)
        ):
            raise ValueError(
                f"beta_max must be >= beta_min; got beta_min={beta_min}, beta_max={beta_max}."
            )
        _check_time_range(t_min, t_max, 0.0, None)
        self.beta_min = as_float(beta_min)
        self.beta_max = as_float(beta_max)
        self.t_min = as_float(t_min)
        self.t_max = as_float(t_max)
        _check_finite_levels(self)

    def log_alpha(self, t):
        t = as_float(t)
        return -0.25 * t * t * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def to_ve_sigma(self, t):
        return jnp.sqrt(jnp.expm1(-2.0 * self.log_alpha(t)))

    def from_ve_sigma(self, s):
        s = as_float(s)
        c = 0.5 * jnp.log1p(s * s)
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        return 2.0 * c / (b + jnp.sqrt(b * b + 4.0 * a * c))


class CosineVPSchedule(VPSchedule):
    r"""Cosine schedule of "Improved Denoising Diffusion Probabilistic Models".

    :math:`\bar\alpha(t) = f(t)/f(0)`, :math:`f(t) = \cos^2\theta(t)`,
    :math:`\theta(t) = \frac{t+s}{1+s}\frac{\pi}{2}`, so :math:`\alpha(t) = \cos\theta/\cos\theta_0`.
    Then :math:`s(t)^2 = (\cos^2\theta_0 - \cos^2\theta)/\cos^2\theta
    = \sin(\theta-\theta_0)\sin(\theta+\theta_0)/\cos^2\theta`, a form without cancellation at small
    ``t``. :math:`\alpha \to 0` as :math:`t\to 1`; the default ``t_max = 0.9946`` is DPM-Solver's.
    """

    s: Float[Array, ""]
    t_min: Float[Array, ""]
    t_max: Float[Array, ""]

    def __init__(self, s=0.008, *, t_min=1e-3, t_max=0.9946):
        check_positive("s", s)
        # alpha(1) = 0: the VE noise level is infinite at t = 1.
        _check_time_range(t_min, t_max, 0.0, 1.0, high_open=True)
        self.s = as_float(s)
        self.t_min = as_float(t_min)
        self.t_max = as_float(t_max)
        _check_finite_levels(self)

    def _theta(self, t):
        return (t + self.s) / (1.0 + self.s) * (0.5 * math.pi)

    def to_ve_sigma(self, t):
        t = as_float(t)
        th, th0 = self._theta(t), self._theta(0.0)
        dth = t / (1.0 + self.s) * (0.5 * math.pi)
        return jnp.sqrt(jnp.sin(dth) * jnp.sin(th + th0)) / jnp.cos(th)

    def from_ve_sigma(self, s):
        s = as_float(s)
        th0 = self._theta(0.0)
        c0, s0 = jnp.cos(th0), jnp.sin(th0)
        # cos(theta) = alpha * cos(theta0); sin(theta) from a sum of positive terms.
        cos_th = c0 * jax.lax.rsqrt(1.0 + s * s)
        sin_th = jnp.sqrt(s0 * s0 + c0 * c0 * (s * s) / (1.0 + s * s))
        th = jnp.arctan2(sin_th, cos_th)
        return (th - th0) * (1.0 + self.s) * (2.0 / math.pi)


class DiscreteVPSchedule(VPSchedule):
    r"""A DDPM table: integer timestep ``k`` has :math:`\bar\alpha_k` = ``alphas_cumprod[k]``.

    Diffusers' convention: ``alphas_cumprod = cumprod(1 - betas)``, ``k = 0 .. N-1``, and the VE
    noise level of step ``k`` is :math:`s_k = \sqrt{(1-\bar\alpha_k)/\bar\alpha_k}`.

    Between table points, :math:`\log s` is interpolated linearly in ``t`` — the interpolation of
    k-diffusion's ``DiscreteSchedule.t_to_sigma`` / ``sigma_to_t`` and of diffusers'
    ``_sigma_to_t``. It is exact at the table points (the table value itself is returned), monotone
    between them (``s_k`` increases with ``k``), and its inverse is exact. Times are clamped to
    ``[0, N-1]`` as both libraries do; an adapter still scales its input by the true
    :math:`\alpha(s) = 1/\sqrt{1+s^2}` of any ``s``, as k-diffusion's ``c_in`` does.
    """

    sigmas: Float[Array, " N"]
    t_min: Float[Array, ""]
    t_max: Float[Array, ""]

    def __init__(self, betas=None, *, alphas_cumprod=None):
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("pass exactly one of betas= or alphas_cumprod=.")
        if betas is not None:
            betas = as_float(betas)
            _check_table("betas", betas)
            check_in_open_interval("betas", betas, 0.0, 1.0)
            alphas_cumprod = jnp.cumprod(1.0 - betas)
        else:
            alphas_cumprod = as_float(alphas_cumprod)
            _check_table("alphas_cumprod", alphas_cumprod)
            check_in_open_interval("alphas_cumprod", alphas_cumprod, 0.0, 1.0)
            if is_concrete(alphas_cumprod) and np.any(np.diff(np.asarray(alphas_cumprod)) >= 0):
                raise ValueError("alphas_cumprod must be strictly decreasing.")
        # Same operation order as diffusers: ((1 - acp) / acp) ** 0.5.
        self.sigmas = _check_finite_table(
            "betas" if betas is not None else "alphas_cumprod",
            jnp.sqrt((1.0 - alphas_cumprod) / alphas_cumprod),
        )
        self.t_min = as_float(0.0)
        self.t_max = as_float(alphas_cumprod.shape[0] - 1)

    @property
    def num_train_timesteps(self) -> int:
        return self.sigmas.shape[0]

    @property
    def alphas_cumprod(self):
        return 1.0 / (1.0 + self.sigmas * self.sigmas)

    def to_ve_sigma(self, t):
        t = jnp.clip(as_float(t), 0.0, self.num_train_timesteps - 1)
        lo = jnp.clip(jnp.floor(t), 0, self.num_train_timesteps - 2).astype(jnp.int32)
        w = t - lo
        s_lo, s_hi = self.sigmas[lo], self.sigmas[lo + 1]
        interp = jnp.exp((1.0 - w) * jnp.log(s_lo) + w * jnp.log(s_hi))
        return jnp.where(w == 0, s_lo, jnp.where(w == 1, s_hi, interp))

    def from_ve_sigma(self, s):
        log_s = jnp.log(as_float(s))
        log_table = jnp.log(self.sigmas)
        hi = jnp.searchsorted(log_table, log_s, side="left")
        lo = jnp.clip(hi - 1, 0, self.num_train_timesteps - 2)
        w = (log_s - log_table[lo]) / (log_table[lo + 1] - log_table[lo])
        return lo + jnp.clip(w, 0.0, 1.0)


class VESchedule(AbstractSchedule):
    r"""Variance-exploding SDE of "Score-Based Generative Modeling through SDEs".

    :math:`\alpha = 1`, :math:`\sigma(t) = \sigma_{\min}(\sigma_{\max}/\sigma_{\min})^t` on
    :math:`t\in[0,1]`; the inverse is :math:`t = \log(s/\sigma_{\min})/\log(\sigma_{\max}/\sigma_{\min})`.
    """

    sigma_min: Float[Array, ""]
    sigma_max: Float[Array, ""]
    t_min: Float[Array, ""]
    t_max: Float[Array, ""]

    def __init__(self, sigma_min=0.01, sigma_max=50.0, *, t_min=0.0, t_max=1.0):
        sigma_min, sigma_max = check_sigma_range(sigma_min, sigma_max)
        _check_time_range(t_min, t_max, None, None)
        self.sigma_min = as_float(sigma_min)
        self.sigma_max = as_float(sigma_max)
        self.t_min = as_float(t_min)
        self.t_max = as_float(t_max)
        _check_finite_levels(self)

    def alpha_from_ve_sigma(self, s):
        return jnp.ones_like(as_float(s))

    def to_ve_sigma(self, t):
        t = as_float(t)
        return self.sigma_min * jnp.exp(t * jnp.log(self.sigma_max / self.sigma_min))

    def from_ve_sigma(self, s):
        return jnp.log(as_float(s) / self.sigma_min) / jnp.log(self.sigma_max / self.sigma_min)


class FlowSchedule(AbstractSchedule):
    r"""Rectified flow / linear interpolant: :math:`\alpha = 1 - t`, :math:`\sigma = t`
    ("Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow").

    :math:`s = t/(1-t)`, :math:`t = s/(1+s)`, :math:`\alpha = 1/(1+s)`. The VE form cannot hold
    :math:`t = 1` exactly (:math:`s = \infty`), so the default ``t_max`` stops just short of it.
    """

    t_min: Float[Array, ""]
    t_max: Float[Array, ""]

    def __init__(self, *, t_min=1e-3, t_max=1.0 - 1e-3):
        # s = t / (1 - t) is infinite at t = 1.
        _check_time_range(t_min, t_max, 0.0, 1.0, high_open=True)
        self.t_min = as_float(t_min)
        self.t_max = as_float(t_max)
        _check_finite_levels(self)

    def alpha_from_ve_sigma(self, s):
        return 1.0 / (1.0 + as_float(s))

    def to_ve_sigma(self, t):
        t = as_float(t)
        return t / (1.0 - t)

    def from_ve_sigma(self, s):
        s = as_float(s)
        return s / (1.0 + s)


def ddpm_betas(
    beta_schedule: str = "linear",
    num_train_timesteps: int = 1000,
    beta_start: float = 0.0001,
    beta_end: float = 0.02,
    *,
    max_beta: float = 0.999,
) -> Float[Array, " N"]:
    """The beta tables of diffusers, by the names of its ``beta_schedule`` option.

    * ``"linear"``: ``linspace(beta_start, beta_end, N)`` (DDPM);
    * ``"scaled_linear"``: ``linspace(sqrt(beta_start), sqrt(beta_end), N) ** 2`` (latent diffusion);
    * ``"squaredcos_cap_v2"``: :math:`\\beta_i = \\min(1 - \\bar\\alpha(\\tfrac{i+1}{N})/\\bar\\alpha(\\tfrac{i}{N}), \\text{max\\_beta})`
      with the improved-DDPM cosine :math:`\\bar\\alpha` (``s = 0.008``).

    Computed in float32 like diffusers' tables (float64 under x64).
    """
    check_choice("beta_schedule", beta_schedule, {"linear", "scaled_linear", "squaredcos_cap_v2"})
    if num_train_timesteps < 2:
        raise ValueError(f"num_train_timesteps must be >= 2; got {num_train_timesteps}.")
    n = num_train_timesteps
    if beta_schedule == "linear":
        return jnp.linspace(beta_start, beta_end, n, dtype=as_float(0.0).dtype)
    if beta_schedule == "scaled_linear":
        return jnp.linspace(beta_start**0.5, beta_end**0.5, n, dtype=as_float(0.0).dtype) ** 2
    # Evaluated in float64 on the host as diffusers does, then cast.
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    betas = [min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)]
    return as_float(np.asarray(betas, dtype=np.float32))


def _check_table(name, table):
    if table.ndim != 1 or table.shape[0] < 2:
        raise ValueError(
            f"{name} must be a 1-D table with at least 2 entries; got shape {table.shape}."
        )


def _check_time_range(t_min, t_max, low, high, *, high_open=False):
    if not is_concrete((t_min, t_max)):
        return
    lo, hi = float(np.asarray(t_min)), float(np.asarray(t_max))
    if not lo < hi:
        raise ValueError(f"t_min must be smaller than t_max; got t_min={lo}, t_max={hi}.")
    if low is not None and lo < low:
        raise ValueError(f"t_min must be >= {low}; got {lo}.")
    if high is not None and (hi >= high if high_open else hi > high):
        relation = "<" if high_open else "<="
        raise ValueError(f"t_max must be {relation} {high}; got {hi}.")


def _check_finite_levels(schedule):
    """The VE noise levels at ``t_min`` and ``t_max`` must be finite, ``s(t_max) > 0`` (concrete
    schedules; a grid built from an infinite level would start the sampler at infinity)."""
    if not is_concrete((schedule.t_min, schedule.t_max)):
        return
    for name in ("t_min", "t_max"):
        t = getattr(schedule, name)
        level = float(np.asarray(schedule.to_ve_sigma(t)))
        if not (np.isfinite(level) and level >= 0.0):
            raise ValueError(
                f"{type(schedule).__name__}: {name}={float(t)} gives the VE noise level "
                f"sigma/alpha = {level:.6g}; it must be finite and non-negative (in "
                f"{as_float(0.0).dtype}). Choose a smaller t_max."
            )
    if not float(np.asarray(schedule.to_ve_sigma(schedule.t_max))) > 0.0:
        raise ValueError(f"{type(schedule).__name__}: the noise level at t_max must be positive.")


def _check_finite_table(name, sigmas):
    """Every table level finite: ``alphas_cumprod`` underflowing to 0 makes it infinite."""
    if not is_concrete(sigmas):
        return eqx.error_if(
            sigmas,
            ~jnp.all(jnp.isfinite(sigmas)),
            f"{name} give infinite noise levels (alphas_cumprod underflows to 0).",
        )
    bad = np.nonzero(~np.isfinite(np.asarray(sigmas)))[0]
    if bad.size:
        raise ValueError(
            f"{name} give infinite noise levels at {bad.size} of {sigmas.shape[0]} timesteps (from "
            f"index {int(bad[0])} on): alphas_cumprod = cumprod(1 - betas) underflows to 0 in "
            f"{sigmas.dtype}. Use smaller betas or fewer timesteps."
        )
    return sigmas


def rescale_zero_terminal_snr(betas: Float[ArrayLike, " N"]) -> Float[Array, " N"]:
    r"""Betas rescaled to zero terminal SNR ("Common Diffusion Noise Schedules and Sample Steps are
    Flawed", Algorithm 1).

    With :math:`r_k = \sqrt{\bar\alpha_k}` of the given table, the rescaled table is
    :math:`r'_k = (r_k - r_{N-1})\,r_0/(r_0 - r_{N-1})`: the first level keeps its signal
    (:math:`r'_0 = r_0`), the last has none (:math:`\bar\alpha'_{N-1} = 0`, so the last beta is 1),
    and in between the map is affine in :math:`\sqrt{\bar\alpha}`. Betas are read back from
    :math:`\bar\alpha'_k/\bar\alpha'_{k-1}`. Same operation order as diffusers.

    The last level is pure noise: its VE noise level is infinite, so
    :class:`DiscreteVPSchedule` (VE form) cannot hold it; see :func:`zero_terminal_snr_schedule`.
    At that level :math:`x_t = \epsilon`, an eps-prediction model carries no information about
    :math:`x_0` (:math:`x_0 = (x_t - \sigma\hat\epsilon)/\alpha` divides by :math:`\alpha = 0`), which
    is why the paper trains with v-prediction (:math:`x_0 = \alpha x_t - \sigma v = -v` there).
    """
    betas = as_float(betas)
    _check_table("betas", betas)
    check_in_open_interval("betas", betas, 0.0, 1.0)
    root = jnp.sqrt(jnp.cumprod(1.0 - betas))
    first, last = root[0], root[-1]
    root = (root - last) * (first / (first - last))
    alphas_cumprod = root * root
    alphas = jnp.concatenate([alphas_cumprod[:1], alphas_cumprod[1:] / alphas_cumprod[:-1]])
    return 1.0 - alphas


def zero_terminal_snr_schedule(
    betas: Float[ArrayLike, " N"], *, terminal_alphas_cumprod: float = 2.0**-24
) -> DiscreteVPSchedule:
    r"""The :class:`DiscreteVPSchedule` of :func:`rescale_zero_terminal_snr` ``(betas)``, its last
    :math:`\bar\alpha` (exactly 0) replaced by ``terminal_alphas_cumprod``.

    A VE sampler needs a finite first level; diffusers' Euler-type schedulers make the same
    replacement (:math:`2^{-24}`, VE level :math:`\approx 4096`); it must stay below the previous
    :math:`\bar\alpha` (DDPM's linear betas rescale to :math:`\bar\alpha_{N-2}\approx 4\cdot 10^{-9}`:
    pass a smaller value there). Start from pure noise in the
    model's scale, :math:`x_t = \epsilon`, i.e. the VE state :math:`x = \epsilon\sqrt{1+s_0^2}`, and
    use a v-prediction model (:func:`~jaxsolve.diffusion.from_v`). A first-order step from that
    level differs from the step from infinite noise (:math:`x_1 = \hat x_0 + s_1\epsilon`) by
    :math:`O(s_1/s_0)`.
    """
    if not 0.0 < terminal_alphas_cumprod < 1.0:
        raise ValueError(
            f"terminal_alphas_cumprod must lie in (0, 1); got {terminal_alphas_cumprod}."
        )
    alphas_cumprod = jnp.cumprod(1.0 - rescale_zero_terminal_snr(betas))
    if is_concrete(alphas_cumprod) and not terminal_alphas_cumprod < float(alphas_cumprod[-2]):
        # diffusers sets 2**-24 regardless, which makes its last levels non-monotone here.
        raise ValueError(
            f"terminal_alphas_cumprod={terminal_alphas_cumprod:.6g} must be below the rescaled "
            f"table's previous alpha_bar {float(alphas_cumprod[-2]):.6g}; pass a smaller value."
        )
    alphas_cumprod = alphas_cumprod.at[-1].set(terminal_alphas_cumprod)
    return DiscreteVPSchedule(alphas_cumprod=alphas_cumprod)
