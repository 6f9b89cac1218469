r"""A bridge from diffusers' scheduler configs: the grid, solver and model adapter that reproduce a
scheduler's sampling loop in jaxsolve's denoiser form.

A diffusers scheduler is a config dict (``scheduler.config``, ``scheduler_config.json``, with its
``_class_name``). :func:`from_diffusers` reads every key: a key it reproduces shapes the result,
a key at a value it cannot reproduce raises a ``ValueError`` naming the key and the value, and a
key it does not know raises too — nothing is silently ignored. Diffusers' own bookkeeping keys
(:data:`BOOKKEEPING_KEYS`) carry no sampling behaviour.

Conventions (VE form, :math:`x = x_t/\alpha`, :math:`s = \sigma/\alpha`):

* ``sigmas``: the levels the scheduler visits, decreasing, then 0. With
  ``final_sigmas_type="sigma_min"`` (or DDIM's ``set_alpha_to_one=False``) diffusers' last step
  lands on the table's smallest level :math:`s_{\min}`, not on 0: the grid is then
  ``[..., s_min, 0]`` and ``ends_at_sigma_min`` is True — the diffusers result is the state at
  ``sigmas[-2]`` (``sample(..., save_trajectory=True).trajectory[len(sigmas) - 2]``).
* ``init_noise_scale``: the initial VE state is ``init_noise_scale * z`` for standard normal ``z``
  — the latents diffusers starts from, ``z * init_noise_sigma``, carried to VE scale:
  :math:`\sqrt{1 + s_0^2}` for schedulers whose latents live in VP scale (DDIM, DDPM, PNDM,
  DPM-Solver, UniPC, DEIS, SA-Solver, LCM, TCD and the parallel variants), ``init_noise_sigma``
  itself for the Euler-type, KDPM2, LMS, DPMSolverSDE and EDM schedulers (whose latents are
  already in VE scale), :math:`1 + s_0 = 1/(1 - t_0)` for flow matching (latents
  :math:`x_t = z`), ``sigma_max`` for consistency models.
* ``denoiser_from_model(model)``: the model as diffusers calls it, ``model(x_t, timestep)`` with
  ``x_t`` in the model's own scale (what ``scheduler.scale_model_input`` returns) and the timestep
  diffusers passes (the table index for DDPM tables, ``1000 t`` for flow models,
  :math:`\tfrac14\log s` for EDM, :math:`250\log s` for consistency models), turned into
  ``denoiser(x, sigma) -> x0_hat`` by the adapter of the config's ``prediction_type``; x0
  clipping and dynamic thresholding (``clip_sample``, ``thresholding``) are applied to its output
  where diffusers uses only :math:`\hat x_0` (``denoised_transform``), inside the solver for DDIM
  (which keeps the unclipped noise prediction); a learned-variance model's extra channels are
  dropped (``variance_type="learned"``/``"learned_range"`` on DPM-Solver).

Refused (each raises naming the option): DDIM / PNDM spacings whose step ``t -> t - N // n``
skips the next timestep; Euler's ``interpolation_type="log_linear"``,
``timestep_type="continuous"`` and ``sigma_min``/``sigma_max`` overrides; ``sde-dpmsolver`` at
order 3 and EDM's ``sde-dpmsolver++`` at order 3 (diffusers has no such update); flow sigmas with
dynamic shifting, a spacing option or ``v_prediction`` on the DDPM-table schedulers; UniPC's
flow sigmas with ``final_sigmas_type="sigma_min"``, ``shift_terminal`` and ``solver_p``; spacing
options on SA-Solver (diffusers repeats its last level and returns the *corrected* state there) and
on flow matching; a custom ``tau_func``; ``invert_sigmas``, ``stochastic_sampling``;
``rescale_betas_zero_snr`` on DDIM, DDPM, LCM and TCD; PNDM's ``v_prediction`` (diffusers mixes v
outputs across steps) and PRK warm-up when ``N // n`` is odd; DDPM's learned variances,
``fixed_large_log`` and ``fixed_large`` ending above 0; thresholding on EDM's DPM-Solver, DDPM
and LCM, and clipping on LCM and Heun; and every scheduler class not in
:data:`SUPPORTED_SCHEDULERS` (IPNDM, whose first step divides by a zero alpha and replaces the
model's x0 by 0, among them).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, expand_to
from ._adapters import ModelDenoiser
from ._grids import (
    discrete_timesteps,
    dynamic_shift_mu,
    exponential_sigmas,
    flow_shift_sigmas,
    karras_sigmas,
    schedule_sigmas,
)
from ._grids.knobs import beta_sigmas
from ._schedules import (
    AbstractSchedule,
    DiscreteVPSchedule,
    FlowSchedule,
    VESchedule,
    ddpm_betas,
    zero_terminal_snr_schedule,
)
from ._solvers import (
    DDIM,
    DDPM,
    DEIS,
    DPM2,
    PNDM,
    AbstractSolver,
    DPM2Ancestral,
    DPMSolver,
    DPMSolverPP,
    DPMSolverPPSDE,
    DPMSolverPPSDE2S,
    DPMSolverSDE,
    Euler,
    EulerAncestral,
    FlowEuler,
    FlowHeun,
    Heun,
    LMSMultistepFinal,
    UniPC,
)
from ._solvers.sa_solver import sa_solver_from_diffusers_config
from ._thresholding import ClipRule, DynamicThresholdRule, TransformedDenoiser
from .fewstep._consistency import ConsistencySampler
from .fewstep._lcm import LCMSampler, TCDSampler, lcm_timesteps

BOOKKEEPING_KEYS = frozenset({"_class_name", "_diffusers_version", "_use_default_values"})

# diffusers' prediction_type -> jaxsolve's PREDICTIONS name.
_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}

_SPACING_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")

# Schedulers whose default betas are latent diffusion's range (0.00085 to 0.012), not DDPM's.
_LDM_BETA_DEFAULTS = frozenset(
    {
        "HeunDiscreteScheduler",
        "KDPM2DiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "DPMSolverSDEScheduler",
        "LCMScheduler",
        "TCDScheduler",
    }
)
# ... whose default beta_schedule is "scaled_linear" (Stable Diffusion's), not "linear".
_SCALED_LINEAR_DEFAULTS = frozenset({"LCMScheduler", "TCDScheduler"})


class DiffusersScheduler(NamedTuple):
    """What :func:`from_diffusers` returns.

    Attributes:
        sigmas: the VE grid, decreasing, ending in 0 (length ``num_steps + 1``, or ``+ 2`` when
            ``ends_at_sigma_min``).
        solver: the jaxsolve solver taking the scheduler's steps on ``sigmas``.
        schedule: the model's schedule (time ``t`` to :math:`(\\alpha, \\sigma)`).
        prediction: the model's parameterisation: ``"eps"``, ``"x0"``, ``"v"``, ``"flow"``,
            ``"edm"`` (EDM preconditioning of an ``epsilon``/``v_prediction`` network) or ``"cm"``
            (a consistency model's boundary-condition preconditioning).
        init_noise_scale: the initial VE state is ``init_noise_scale * z``, ``z`` standard normal.
        ends_at_sigma_min: diffusers stops at ``sigmas[-2]`` (see the module docstring).
        timestep_scale: the model receives ``timestep_scale * t`` (``t`` the schedule's time).
        sigma_data: EDM's :math:`\\sigma_{\\rm data}` (``prediction="edm"`` only).
        denoised_transform: a rule diffusers applies to the model's x0 inside its step
            (dynamic thresholding), applied by :meth:`denoiser_from_model`; None for none.
        learned_variance: the network outputs its mean and a variance stacked on the channel
            axis (``variance_type="learned"``/``"learned_range"``): the adapter keeps the mean.
    """

    sigmas: Float[Array, " L"]
    solver: AbstractSolver
    schedule: AbstractSchedule
    prediction: str
    init_noise_scale: Float[Array, ""]
    ends_at_sigma_min: bool
    timestep_scale: float = 1.0
    sigma_data: float | None = None
    edm_output_sign: float = 1.0
    denoised_transform: Callable | None = None
    learned_variance: bool = False

    def denoiser_from_model(self, model: Callable) -> Callable:
        """``model(x_t, timestep)`` as diffusers calls it -> ``denoiser(x, sigma) -> x0_hat``."""
        if self.prediction == "edm":
            return _EDMModelDenoiser(model, self.sigma_data, self.edm_output_sign)
        if self.prediction == "cm":
            denoiser = _CMModelDenoiser(model, self.sigma_data, float(self.schedule.sigma_min))
            if self.denoised_transform is not None:
                denoiser = TransformedDenoiser(denoiser, self.denoised_transform)
            return denoiser
        fn = _MeanChannels(model) if self.learned_variance else model
        if self.timestep_scale != 1.0:
            fn = _TimestepScaled(fn, self.timestep_scale)
        denoiser = ModelDenoiser(fn, self.schedule, self.prediction)
        if self.denoised_transform is not None:
            denoiser = TransformedDenoiser(denoiser, self.denoised_transform)
        return denoiser


class _MeanChannels(eqx.Module):
    """A learned-variance network's mean: the first half of its output's channel axis (axis 1).

    diffusers' DPM-Solver slices ``model_output[:, :3]``, the first half for the 3-channel models
    it targets (for other channel counts its step fails to broadcast); an output already shaped
    like ``x_t`` is kept whole, as that slice keeps a 3-channel output."""

    model: Callable

    def __call__(self, x_t, t):
        out = jnp.asarray(self.model(x_t, t))
        channels = x_t.shape[1]
        if out.shape[1] == channels:
            return out
        if out.shape[1] != 2 * channels or out.shape[2:] != x_t.shape[2:]:
            raise ValueError(
                f"variance_type='learned'/'learned_range': the model output of shape {out.shape} "
                f"is not the mean and variance of x_t of shape {x_t.shape} stacked on axis 1."
            )
        return out[:, :channels]


class _CMModelDenoiser(eqx.Module):
    r"""A consistency model as diffusers' ``CMStochasticIterativeScheduler`` calls it:
    :math:`f = c_{\rm skip}x + c_{\rm out}F(x/\sqrt{s^2+\sigma_d^2}, 250\log s)` with
    :math:`c_{\rm skip} = \sigma_d^2/((s-s_{\min})^2+\sigma_d^2)`,
    :math:`c_{\rm out} = (s-s_{\min})\sigma_d/\sqrt{s^2+\sigma_d^2}` ("Consistency Models",
    its boundary condition at :math:`s_{\min}`)."""

    model: Callable
    sigma_data: float
    sigma_min: float

    def __call__(self, x: Float[ArrayLike, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        x, sigma = as_float(x), as_float(sigma)
        sd2 = self.sigma_data**2
        root = jnp.sqrt(sigma * sigma + sd2)
        c_skip = expand_to(sd2 / ((sigma - self.sigma_min) ** 2 + sd2), x)
        c_out = expand_to((sigma - self.sigma_min) * self.sigma_data / root, x)
        out = jnp.asarray(self.model(x / expand_to(root, x), 250.0 * jnp.log(sigma)))
        return c_skip * x + c_out * out.astype(x.dtype)


class _TimestepScaled(eqx.Module):
    model: Callable
    scale: float

    def __call__(self, x_t, t):
        return self.model(x_t, t * self.scale)


class _EDMModelDenoiser(eqx.Module):
    r"""EDM preconditioning as diffusers' EDM schedulers apply it:
    :math:`D = c_{\rm skip}x \pm c_{\rm out}F(c_{\rm in}x, \tfrac14\log s)` (``+`` for
    ``epsilon``, ``-`` for ``v_prediction``)."""

    model: Callable
    sigma_data: float
    sign: float

    def __call__(self, x: Float[ArrayLike, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        x, sigma = as_float(x), as_float(sigma)
        sd2 = self.sigma_data**2
        s2 = sigma * sigma
        c_skip = expand_to(sd2 / (s2 + sd2), x)
        c_out = expand_to(self.sign * sigma * self.sigma_data / jnp.sqrt(s2 + sd2), x)
        c_in = expand_to(1.0 / jnp.sqrt(s2 + sd2), x)
        out = jnp.asarray(self.model(c_in * x, 0.25 * jnp.log(sigma))).astype(x.dtype)
        return c_skip * x + c_out * out


# ---------------------------------------------------------------------------------------------
# Config reading: every key is consumed or refused.


class _Config:
    """A config dict whose keys are read once each; :meth:`finish` refuses the rest."""

    def __init__(self, config: dict, class_name: str):
        self.values = {k: v for k, v in config.items() if k not in BOOKKEEPING_KEYS}
        self.class_name = class_name
        self.read: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self.values.get(key, default)

    def require(self, key: str, allowed: tuple, default: Any = None) -> Any:
        """The value of ``key``, which must be one of ``allowed`` (else it cannot be reproduced)."""
        value = self.get(key, default)
        if not any(value is a or (type(value) is type(a) and value == a) for a in allowed):
            raise ValueError(
                f"from_diffusers: {self.class_name} option {key}={value!r} cannot be "
                f"reproduced; supported: {', '.join(repr(a) for a in allowed)}."
            )
        return value

    def gated(self, *keys: str) -> None:
        """``keys`` act only through an option checked to be off (e.g. the threshold settings
        without ``thresholding``): any value reproduces."""
        self.read.update(keys)

    def check_known(self, known: frozenset) -> None:
        self._refuse(sorted(set(self.values) - known))

    def finish(self) -> None:
        self._refuse(sorted(set(self.values) - self.read))

    def _refuse(self, unknown: list) -> None:
        if unknown:
            shown = ", ".join(f"{k}={self.values[k]!r}" for k in unknown)
            raise ValueError(
                f"from_diffusers: {self.class_name} has option(s) jaxsolve does not know: {shown}. "
                "Nothing is ignored silently; drop them from the config if they have no effect."
            )


def _prediction(cfg: _Config) -> str:
    value = cfg.require("prediction_type", tuple(_PREDICTIONS), "epsilon")
    return _PREDICTIONS[value]


def _no_thresholding(cfg: _Config) -> None:
    cfg.require("thresholding", (False,), False)
    cfg.gated("dynamic_thresholding_ratio", "sample_max_value")


def _no_clipping(cfg: _Config, default: bool) -> None:
    cfg.require("clip_sample", (False,), default)
    cfg.gated("clip_sample_range")


def _no_flow_sigmas(cfg: _Config) -> None:
    cfg.require("use_flow_sigmas", (False,), False)
    cfg.require("use_dynamic_shifting", (False,), False)
    cfg.gated("flow_shift", "time_shift_type")


def _threshold_rule(cfg: _Config):
    """diffusers' ``thresholding`` (``dynamic_thresholding_ratio``, ``sample_max_value``) as the
    rule it applies to the model's x0 inside the step, or None when off."""
    if not cfg.require("thresholding", (False, True), False):
        cfg.gated("dynamic_thresholding_ratio", "sample_max_value")
        return None
    ratio = float(cfg.get("dynamic_thresholding_ratio", 0.995))
    max_value = float(cfg.get("sample_max_value", 1.0))
    # diffusers thresholds each sample (its leading axis) on its own.
    return DynamicThresholdRule(as_float(ratio), as_float(max_value), 1)


def _clip_rule(cfg: _Config, default: bool):
    """diffusers' ``clip_sample`` (``clip_sample_range``) as a rule on x0, or None when off."""
    if not cfg.require("clip_sample", (False, True), default):
        cfg.gated("clip_sample_range")
        return None
    return ClipRule(as_float(float(cfg.get("clip_sample_range", 1.0))))


def _learned_variance(cfg: _Config, prediction_type: str) -> bool:
    """``variance_type="learned"``/``"learned_range"``: the network stacks a variance on its mean
    (twice the channels); DPM-Solver keeps the mean. diffusers does so only for ``epsilon``."""
    value = cfg.require("variance_type", (None, "learned", "learned_range"), None)
    if value is not None and prediction_type != "epsilon":
        raise ValueError(
            f"from_diffusers: {cfg.class_name} option variance_type={value!r} with "
            f"prediction_type={prediction_type!r} cannot be reproduced: diffusers drops the "
            "variance channels of epsilon models only."
        )
    return value is not None


def _flow_shift(cfg: _Config):
    """``flow_shift`` when ``use_flow_sigmas`` is on (a flow-matching model on a DDPM-table
    scheduler, as Wan's and SANA's pipelines use), else None."""
    if not cfg.require("use_flow_sigmas", (False, True), False):
        _no_flow_sigmas(cfg)
        return None
    # Dynamic shifting takes the pipeline's mu per call: not a config value.
    cfg.require("use_dynamic_shifting", (False,), False)
    cfg.gated("time_shift_type")
    for key in (*_SPACING_OPTIONS, "use_lu_lambdas"):
        # diffusers then takes the spacing option's branch, with flow alpha and sigma.
        cfg.require(key, (False,), False)
    return float(cfg.get("flow_shift", 1.0))


def _flow_times_to_levels(t):
    """Flow times (diffusers keeps them, and the model and solver see them, in float32) as VE
    levels :math:`t/(1-t)`."""
    t = np.asarray(t, np.float64).astype(np.float32).astype(np.float64)
    return t / (1.0 - t)


def _flow_grid(cfg: _Config, n: int, shift: float, *, zero_snr: bool, unipc: bool):
    r"""``use_flow_sigmas``: shifted flow times :math:`t \mapsto st/(1 + (s-1)t)` as VE levels.

    DPM-Solver and DEIS shift ``1 - linspace(1, 1/N, n + 1)`` and drop its 0; UniPC shifts
    ``linspace(1, 1/N, n + 1)[:-1]`` and lowers a first time of 1 by ``1e-6``. The table is
    read for DPM-Solver's ``final_sigmas_type="sigma_min"``, whose last *flow time* is the
    table's smallest VP level (as diffusers does)."""
    schedule = _table(cfg, zero_snr=zero_snr)
    # The timesteps come from the flow times: spacing keys act only on the unused table grid.
    cfg.gated("timestep_spacing", "steps_offset", "lambda_min_clipped")
    n_train = int(cfg.get("num_train_timesteps", 1000))
    if unipc:
        t = np.linspace(1.0, 1.0 / n_train, n + 1)[:-1]
        t = shift * t / (1.0 + (shift - 1.0) * t)
        if abs(t[0] - 1.0) < 1e-6:
            t[0] -= 1e-6
    else:
        u = 1.0 - np.linspace(1.0, 1.0 / n_train, n + 1)
        t = np.flip(shift * u / (1.0 + (shift - 1.0) * u))[:-1]
    levels = _flow_times_to_levels(t)
    final = cfg.require("final_sigmas_type", ("zero",) if unipc else ("zero", "sigma_min"), "zero")
    tail = None
    if final == "sigma_min":
        tail = float(_flow_times_to_levels(_smallest_level(schedule)))
    return FlowSchedule(), _with_final(levels, tail), tail is not None, float(n_train)


def _multistep_prediction(cfg: _Config, flow: bool) -> str:
    """The model's parameterisation; with flow sigmas diffusers' x0 formulas hold for
    ``epsilon``, ``sample`` and ``flow_prediction`` (its ``v_prediction`` one assumes VP)."""
    if not flow:
        return _prediction(cfg)
    value = cfg.require("prediction_type", ("flow_prediction", "epsilon", "sample"), "epsilon")
    return {"flow_prediction": "flow", "epsilon": "eps", "sample": "x0"}[value]


def _multistep_result(
    sigmas, solver, schedule, prediction, ends, n_train, rule=None, learned=False
):
    """The :class:`DiffusersScheduler` of DPM-Solver / UniPC / DEIS (VP- or flow-scale
    latents)."""
    if isinstance(schedule, FlowSchedule):  # latents x_t = (1 - t) x0 + t eps, from x_t = z
        init, scale = as_float(1.0 + float(np.asarray(sigmas)[0])), n_train
    else:
        init, scale = _vp_scale(sigmas), 1.0
    return DiffusersScheduler(
        sigmas,
        solver,
        schedule,
        prediction,
        init,
        ends,
        scale,
        denoised_transform=rule,
        learned_variance=learned,
    )


def _betas(cfg: _Config):
    n_train = int(cfg.get("num_train_timesteps", 1000))
    # diffusers' defaults: DDPM's linear betas, except Heun's and KDPM2's (latent diffusion's).
    ldm = cfg.class_name in _LDM_BETA_DEFAULTS
    beta_start = cfg.get("beta_start", 0.00085 if ldm else 0.0001)
    beta_end = cfg.get("beta_end", 0.012 if ldm else 0.02)
    beta_schedule = cfg.get(
        "beta_schedule", "scaled_linear" if cfg.class_name in _SCALED_LINEAR_DEFAULTS else "linear"
    )
    trained = cfg.get("trained_betas")
    if trained is not None:
        return as_float(np.asarray(trained, dtype=np.float64))
    if beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
        raise ValueError(
            f"from_diffusers: {cfg.class_name} option beta_schedule={beta_schedule!r} cannot be "
            "reproduced; supported: 'linear', 'scaled_linear', 'squaredcos_cap_v2'."
        )
    return ddpm_betas(beta_schedule, n_train, beta_start, beta_end)


def _table(cfg: _Config, *, zero_snr: bool) -> DiscreteVPSchedule:
    """The DDPM table; ``rescale_betas_zero_snr`` as diffusers' Euler and multistep schedulers
    make it finite (last alpha_bar = 2**-24)."""
    betas = _betas(cfg)
    allowed = (False, True) if zero_snr else (False,)
    if cfg.require("rescale_betas_zero_snr", allowed, False):
        return zero_terminal_snr_schedule(betas)
    return DiscreteVPSchedule(betas)


def _spacing_option(cfg: _Config) -> str | None:
    """``"karras"``, ``"exponential"``, ``"beta"`` (the ``use_*_sigmas`` set) or None."""
    chosen = [k for k in _SPACING_OPTIONS if cfg.get(k, False)]
    if len(chosen) > 1:
        raise ValueError(f"from_diffusers: {cfg.class_name}: only one of {chosen} may be True.")
    return chosen[0].split("_")[1] if chosen else None


def _spaced(option, n, lo, hi):
    if option == "karras":
        return karras_sigmas(n, lo, hi, 7.0)
    if option == "exponential":
        return exponential_sigmas(n, lo, hi)
    return beta_sigmas(n, lo, hi, 0.6, 0.6)


def _final_sigma(cfg: _Config, sigma_min) -> tuple[Any, bool]:
    final = cfg.require("final_sigmas_type", ("zero", "sigma_min"), "zero")
    return (sigma_min, True) if final == "sigma_min" else (None, False)


def _with_final(levels, final):
    r"""Positive ``levels`` then ``final`` (if any) then 0.

    A ``final`` equal to the last level (a grid that already ends at :math:`s_{\min}`, e.g.
    ``"linspace"`` timesteps ending at 0 or a Karras grid over the table's range) makes diffusers'
    last step a zero-length one, the identity for every solver here: the level is listed once.
    """
    # (Equal up to round-off: a Karras grid's last level is (s_min^(1/rho))^rho.)
    # Assembled in NumPy: eager JAX operations would compile once per grid length.
    levels = np.asarray(levels)
    if final is not None and np.isclose(levels[-1], float(final), rtol=1e-12, atol=0):
        final = None
    tail = [] if final is None else [float(final)]
    return as_float(np.concatenate([levels, tail, [0.0]]).astype(levels.dtype))


def _smallest_level(schedule):
    return float(np.asarray(schedule.sigmas)[0])


def _vp_scale(sigmas):
    s0 = float(sigmas[0])
    return as_float(math.sqrt(1.0 + s0 * s0))


# ---------------------------------------------------------------------------------------------
# Scheduler families.


def _multistep_grid(cfg: _Config, n: int, *, spacing_keys: bool, zero_snr: bool):
    """DPM-Solver / UniPC / DEIS: table levels at diffusers' integer timesteps (or a spacing
    option over the table's range), then the final level."""
    schedule = _table(cfg, zero_snr=zero_snr)
    spacing = (
        cfg.require("timestep_spacing", ("linspace", "leading", "trailing"), "linspace")
        if spacing_keys
        else "linspace"
    )
    offset = int(cfg.get("steps_offset", 0)) if spacing_keys else 0
    clipped = float(cfg.get("lambda_min_clipped", -math.inf))
    option = _spacing_option(cfg)
    if cfg.get("use_lu_lambdas", False) and option != "karras":
        # Lu et al.'s grid, uniform in log-SNR = log(1/s) between the table's ends: the
        # exponential one (diffusers tries Karras first, then this, then the others).
        option = "exponential"
    if option is not None:
        if clipped != -math.inf:
            raise ValueError(
                f"from_diffusers: {cfg.class_name} option lambda_min_clipped={clipped} together "
                f"with use_{option}_sigmas cannot be reproduced."
            )
        levels = np.asarray(schedule_sigmas(schedule, n, option))[:-1]
    else:
        # discrete_sigmas' levels, indexed in NumPy (a JAX gather compiles per grid length).
        timesteps = discrete_timesteps(
            schedule, n, spacing, steps_offset=offset, lambda_min_clipped=clipped
        )
        levels = np.asarray(schedule.sigmas)[np.asarray(timesteps)]
    final, ends = _final_sigma(cfg, _smallest_level(schedule))
    return schedule, _with_final(levels, final), ends


def _dpm_solver(cfg: _Config, n: int, multistep: bool):
    shift = _flow_shift(cfg)
    prediction = _multistep_prediction(cfg, shift is not None)
    rule = _threshold_rule(cfg)
    learned = _learned_variance(cfg, cfg.values.get("prediction_type", "epsilon"))
    order = int(cfg.get("solver_order", 2))
    solver_type = cfg.require("solver_type", ("midpoint", "heun"), "midpoint")
    algo = cfg.require(
        "algorithm_type",
        ("dpmsolver++", "dpmsolver", "sde-dpmsolver++", "sde-dpmsolver")
        if multistep
        else ("dpmsolver++", "dpmsolver", "sde-dpmsolver++"),
        "dpmsolver++",
    )
    if algo == "sde-dpmsolver" and order > 2:
        raise ValueError(
            f"from_diffusers: {cfg.class_name} option algorithm_type='sde-dpmsolver' with "
            f"solver_order={order} cannot be reproduced: diffusers has no third-order update."
        )
    euler_at_final = False
    if multistep:
        lower = bool(cfg.get("lower_order_final", True))
        euler_at_final = bool(cfg.get("euler_at_final", False))
    else:
        lower = bool(cfg.get("lower_order_final", False))
        # diffusers switches lower_order_final on itself for an incomplete last group or a final
        # step to 0 (set_timesteps rewrites its config).
        final_zero = cfg.values.get("final_sigmas_type", "zero") == "zero"
        lower = lower or n % order != 0 or final_zero
    if shift is not None:
        schedule, sigmas, ends, n_train = _flow_grid(cfg, n, shift, zero_snr=multistep, unipc=False)
    else:
        schedule, sigmas, ends = _multistep_grid(cfg, n, spacing_keys=multistep, zero_snr=multistep)
        n_train = 1.0
    # diffusers' third-order updates keep the reference coefficients: legacy_third_order.
    options = dict(
        order=order,
        multistep=multistep,
        solver_type=solver_type,
        lower_order_final=lower,
        legacy_third_order=True,
        euler_at_final=euler_at_final,
        stop_before_final=ends,
    )
    if algo == "sde-dpmsolver++":  # and diffusers' sign of the 1/2 in its third-order c2
        options["diffusers_sde_sign"] = True
    cls = {
        "dpmsolver++": DPMSolverPP,
        "dpmsolver": DPMSolver,
        "sde-dpmsolver++": DPMSolverPPSDE,
        "sde-dpmsolver": DPMSolverSDE,
    }[algo]
    return _multistep_result(
        sigmas, cls(**options), schedule, prediction, ends, n_train, rule, learned
    )


def _unipc(cfg: _Config, n: int):
    shift = _flow_shift(cfg)
    prediction = _multistep_prediction(cfg, shift is not None)
    predict_x0 = cfg.require("predict_x0", (True, False), True)
    rule = _threshold_rule(cfg)
    if not predict_x0:
        rule = None  # diffusers thresholds the data prediction only
        if prediction == "flow":
            raise ValueError(
                "from_diffusers: UniPCMultistepScheduler option predict_x0=False with "
                "prediction_type='flow_prediction' cannot be reproduced (diffusers refuses it)."
            )
    disable = cfg.get("disable_corrector", [])
    if not isinstance(disable, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in disable
    ):
        raise ValueError(
            f"from_diffusers: UniPCMultistepScheduler option disable_corrector={disable!r} must "
            "be a list of step indices."
        )
    cfg.require("solver_p", (None,), None)  # another scheduler object: not a config value
    cfg.require("sigma_min", (None,), None)
    cfg.require("sigma_max", (None,), None)
    cfg.require("shift_terminal", (None,), None)
    order = int(cfg.get("solver_order", 2))
    variant = cfg.require("solver_type", ("bh1", "bh2"), "bh2")
    lower = bool(cfg.get("lower_order_final", True))
    if shift is not None:
        schedule, sigmas, ends, n_train = _flow_grid(cfg, n, shift, zero_snr=True, unipc=True)
    else:
        schedule, sigmas, ends = _multistep_grid(cfg, n, spacing_keys=True, zero_snr=True)
        n_train = 1.0
    solver = UniPC(
        order=order,
        variant=variant,
        prediction="data" if predict_x0 else "noise",
        lower_order_final=lower,
        disable_corrector=tuple(int(i) for i in disable),
        stop_before_final=ends,
    )
    return _multistep_result(sigmas, solver, schedule, prediction, ends, n_train, rule)


def _deis(cfg: _Config, n: int):
    shift = _flow_shift(cfg)
    prediction = _multistep_prediction(cfg, shift is not None)
    rule = _threshold_rule(cfg)
    cfg.require("algorithm_type", ("deis",), "deis")
    cfg.require("solver_type", ("logrho",), "logrho")
    order = int(cfg.get("solver_order", 2))
    lower = bool(cfg.get("lower_order_final", True))
    if shift is not None:
        schedule, sigmas, _, n_train = _flow_grid(cfg, n, shift, zero_snr=False, unipc=False)
    else:
        schedule, sigmas, _ = _multistep_grid(cfg, n, spacing_keys=True, zero_snr=False)
        n_train = 1.0
    if shift is not None or _spacing_option(cfg) is not None:
        # diffusers repeats the last level: its last step has zero length (the identity, counted
        # by the order lowering) and the run ends at that level.
        solver = DEIS(order=order, lower_order_final=lower)
    else:
        # DEIS's last step lands on the table's smallest level.
        sigmas = _with_final(np.asarray(sigmas)[:-1], _smallest_level(schedule))
        solver = DEIS(order=order, lower_order_final=lower, stop_before_final=True)
    return _multistep_result(sigmas, solver, schedule, prediction, True, n_train, rule)


def _ddim(cfg: _Config, n: int, eta):
    prediction = _prediction(cfg)
    # diffusers' DDIM thresholds x0, or else clips it (to [-1, 1] unless told not to), and keeps
    # the unclipped noise prediction: a DDIM option, not a denoiser wrapper.
    rule = _threshold_rule(cfg)
    if rule is None:
        rule = _clip_rule(cfg, True)
    else:
        cfg.gated("clip_sample", "clip_sample_range")
    schedule = _table(cfg, zero_snr=False)
    n_train = schedule.num_train_timesteps
    spacing = cfg.require("timestep_spacing", ("leading", "trailing", "linspace"), "leading")
    offset = int(cfg.get("steps_offset", 0))
    if spacing == "linspace":
        ts = np.linspace(0, n_train - 1, n).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        ts = (np.arange(0, n) * (n_train // n)).round()[::-1].astype(np.int64) + offset
    else:
        ts = (np.round(np.arange(n_train, 0, -n_train / n)) - 1).astype(np.int64)
    # diffusers steps from t to t - N // n, which must be the next timestep for a consistent chain.
    prev = ts - n_train // n
    if np.any(prev[:-1] != ts[1:]) or prev[-1] >= 0:
        raise ValueError(
            f"from_diffusers: DDIMScheduler option timestep_spacing={spacing!r} (steps_offset="
            f"{offset}) with num_steps={n} steps from t to t - {n_train // n}, which is not the "
            "next timestep: its chain mixes noise levels and cannot be reproduced."
        )
    final = None if cfg.get("set_alpha_to_one", True) else _smallest_level(schedule)
    sigmas = _with_final(np.asarray(schedule.sigmas)[ts], final)
    solver = DDIM(eta=eta, denoised_transform=rule)
    return DiffusersScheduler(
        sigmas, solver, schedule, prediction, _vp_scale(sigmas), final is not None
    )


def _euler_family(cfg: _Config, n: int, kind: str):
    prediction = _prediction(cfg)
    zero_snr = kind in ("euler", "euler_ancestral")
    schedule = _table(cfg, zero_snr=zero_snr)
    n_train = schedule.num_train_timesteps
    spacing = cfg.require("timestep_spacing", ("linspace", "leading", "trailing"), "linspace")
    offset = int(cfg.get("steps_offset", 0))
    if kind == "euler":
        cfg.require("interpolation_type", ("linear",), "linear")
        cfg.require("timestep_type", ("discrete",), "discrete")
        cfg.require("sigma_min", (None,), None)
        cfg.require("sigma_max", (None,), None)
    if kind == "heun":
        _no_clipping(cfg, False)
    if spacing == "linspace":
        # (DPMSolverSDE's linspace is float64, the others' float32.)
        dtype = np.float64 if kind == "dpm_sde" else np.float32
        ts = np.linspace(0, n_train - 1, n, dtype=dtype)[::-1].astype(np.float64)
    elif spacing == "leading":
        ts = (np.arange(0, n) * (n_train // n)).round()[::-1].astype(np.float64) + offset
    else:
        ts = np.arange(n_train, 0, -n_train / n).round().astype(np.float32).astype(np.float64) - 1
    table = np.asarray(schedule.sigmas)
    # diffusers interpolates the levels (not their logs) linearly between timesteps.
    levels = np.interp(ts, np.arange(n_train), table)
    option = _spacing_option(cfg)
    if option is not None:
        levels = np.asarray(_spaced(option, n, levels[-1], levels[0]))[:-1]
    final, ends = (None, False)
    if kind == "euler":
        final, ends = _final_sigma(cfg, table[0])
    sigmas = _with_final(levels, final)
    s0 = float(np.max(levels))
    # diffusers' init_noise_sigma: the latents are VE-scale (the model sees x / sqrt(1 + s^2)).
    init = as_float(s0 if spacing in ("linspace", "trailing") else math.sqrt(s0 * s0 + 1.0))
    solver = {
        "euler": Euler(),
        "euler_ancestral": EulerAncestral(),
        "heun": Heun(),
        # KDPM2: the midpoint at the geometric mean of the levels (diffusers' sigmas_interpol).
        "kdpm2": DPM2(),
        "kdpm2_ancestral": DPM2Ancestral(),
        # diffusers' LMS steps into 0 with the multistep combination too (order 4, its default).
        "lms": LMSMultistepFinal(),
        # DPMSolverSDE: both stages ancestral (eta = 1) with Brownian-path noise, the full step
        # from the midpoint's x0 alone: k-diffusion's dpmpp_sde with r = 1/2.
        "dpm_sde": DPMSolverPPSDE2S(),
    }[kind]
    return DiffusersScheduler(sigmas, solver, schedule, prediction, init, ends)


def _edm(cfg: _Config, n: int, dpm: bool):
    value = cfg.require("prediction_type", ("epsilon", "v_prediction"), "epsilon")
    sigma_min = float(cfg.get("sigma_min", 0.002))
    sigma_max = float(cfg.get("sigma_max", 80.0))
    sigma_data = float(cfg.get("sigma_data", 0.5))
    rho = float(cfg.get("rho", 7.0))
    cfg.gated("num_train_timesteps")  # EDM's levels are continuous
    spacing = cfg.require("sigma_schedule", ("karras", "exponential"), "karras")
    if spacing == "karras":
        levels = np.asarray(karras_sigmas(n, sigma_min, sigma_max, rho))[:-1]
    else:
        levels = np.asarray(exponential_sigmas(n, sigma_min, sigma_max))[:-1]
    final, ends = _final_sigma(cfg, sigma_min)
    sigmas = _with_final(levels, final)
    if dpm:
        _no_thresholding(cfg)
        order = int(cfg.get("solver_order", 2))
        solver_type = cfg.require("solver_type", ("midpoint", "heun"), "midpoint")
        algo = cfg.require("algorithm_type", ("dpmsolver++", "sde-dpmsolver++"), "dpmsolver++")
        lower = bool(cfg.get("lower_order_final", True))
        cfg.require("euler_at_final", (False,), False)
        if algo == "sde-dpmsolver++":
            if order > 2:
                raise ValueError(
                    f"from_diffusers: EDMDPMSolverMultistepScheduler option algorithm_type="
                    f"'sde-dpmsolver++' with solver_order={order} cannot be reproduced: diffusers "
                    "has no third-order SDE update there (its step fails)."
                )
            solver = DPMSolverPPSDE(order=order, solver_type=solver_type, lower_order_final=lower)
        else:
            solver = DPMSolverPP(
                order=order,
                solver_type=solver_type,
                lower_order_final=lower,
                legacy_third_order=True,
            )
    else:
        solver = Euler()
    schedule = VESchedule(sigma_min, sigma_max)
    init = as_float(math.sqrt(sigma_max**2 + 1.0))
    sign = 1.0 if value == "epsilon" else -1.0
    return DiffusersScheduler(sigmas, solver, schedule, "edm", init, ends, 1.0, sigma_data, sign)


def _flow_match_euler(cfg: _Config, n: int, mu, image_seq_len):
    n_train = int(cfg.get("num_train_timesteps", 1000))
    shift = float(cfg.get("shift", 1.0))
    dynamic = bool(cfg.get("use_dynamic_shifting", False))
    base_shift = cfg.get("base_shift", 0.5)
    max_shift = cfg.get("max_shift", 1.15)
    base_len = cfg.get("base_image_seq_len", 256)
    max_len = cfg.get("max_image_seq_len", 4096)
    time_shift_type = cfg.require("time_shift_type", ("exponential", "linear"), "exponential")
    shift_terminal = cfg.get("shift_terminal")
    cfg.require("invert_sigmas", (False,), False)
    cfg.require("stochastic_sampling", (False,), False)
    for key in _SPACING_OPTIONS:
        cfg.require(key, (False,), False)
    if dynamic:
        if mu is None and image_seq_len is None:
            raise ValueError(
                "from_diffusers: FlowMatchEulerDiscreteScheduler option use_dynamic_shifting=True "
                "needs mu= or image_seq_len= (the pipeline's resolution-dependent shift)."
            )
        if mu is None:
            mu = dynamic_shift_mu(image_seq_len, base_len, max_len, base_shift, max_shift)
    else:
        if mu is not None or image_seq_len is not None:
            raise ValueError("from_diffusers: mu= / image_seq_len= need use_dynamic_shifting=True.")
    sigmas = flow_shift_sigmas(
        n,
        shift,
        mu=mu if dynamic else None,
        time_shift_type=time_shift_type,
        shift_terminal=shift_terminal,
        num_train_timesteps=n_train,
    )
    schedule = FlowSchedule()
    solver = FlowEuler(schedule=schedule)
    return DiffusersScheduler(
        sigmas,
        solver,
        schedule,
        "flow",
        as_float(1.0 + float(np.asarray(sigmas)[0])),
        False,
        float(n_train),
    )


def _k_family(cfg: _Config, n: int, kind: str):
    # diffusers' KDPM2 and DPMSolverSDE raise NotImplementedError for prediction_type="sample".
    cfg.require("prediction_type", ("epsilon", "v_prediction"), "epsilon")
    # The Brownian tree's seed picks the draws, not their law; jaxsolve's come from its key.
    cfg.gated("noise_sampler_seed")
    return _euler_family(cfg, n, kind)


def _integer_timesteps(spacing: str, n: int, n_train: int, offset: int) -> np.ndarray:
    """The decreasing integer timesteps of PNDM's and DDPM's ``set_timesteps``."""
    if spacing == "linspace":
        return np.linspace(0, n_train - 1, n).round()[::-1].astype(np.int64)
    if spacing == "leading":
        return (np.arange(0, n) * (n_train // n)).round()[::-1].astype(np.int64) + offset
    return (np.round(np.arange(n_train, 0, -n_train / n)) - 1).astype(np.int64)


def _strided_timesteps(cfg: _Config, n: int, n_train: int):
    """PNDM's timesteps, checked to be a chain of equal strides ``N // n`` (PNDM steps from
    ``t`` to ``t - N // n`` and through the levels between), the last one stepping below 0
    (onto the final level)."""
    spacing = cfg.require("timestep_spacing", ("leading", "trailing", "linspace"), "leading")
    offset = int(cfg.get("steps_offset", 0))
    stride = n_train // n
    ts = _integer_timesteps(spacing, n, n_train, offset)
    prev = ts - stride
    if np.any(prev[:-1] != ts[1:]) or prev[-1] >= 0:
        raise ValueError(
            f"from_diffusers: {cfg.class_name} option timestep_spacing={spacing!r} (steps_offset="
            f"{offset}) with num_steps={n} steps from t to t - {stride}, which is not the next "
            "timestep: its chain mixes noise levels and cannot be reproduced."
        )
    return ts, stride


def _pndm(cfg: _Config, n: int):
    r"""PNDM: PLMS on the table's levels at equal strides, after a Runge-Kutta (PRK) or Heun
    warm-up whose half-way stages sit ``(N // n) // 2`` timesteps on: the middle of the
    interval in the model's time when the stride is even."""
    # diffusers' v_prediction combines the v outputs (PLMS weights, or the Runge-Kutta stages)
    # and converts the sum to a noise prediction with the current step's alpha_bar and state:
    # not the pseudo numerical method on noise predictions.
    cfg.require("prediction_type", ("epsilon",), "epsilon")
    schedule = _table(cfg, zero_snr=False)
    n_train = schedule.num_train_timesteps
    skip_prk = bool(cfg.get("skip_prk_steps", False))
    ts, stride = _strided_timesteps(cfg, n, n_train)
    if not skip_prk and (stride % 2 or n < 4):
        raise ValueError(
            f"from_diffusers: PNDMScheduler option skip_prk_steps=False with num_steps={n} "
            f"cannot be reproduced: the Runge-Kutta warm-up needs num_train_timesteps // num_steps "
            f"even (got {stride}), its half-way stage then being the interval's midpoint, and "
            "num_steps >= 4 (three warm-up intervals, then PLMS)."
        )
    # set_alpha_to_one=False: the last step lands on the table's first level, not on 0.
    final = None if cfg.get("set_alpha_to_one", False) else _smallest_level(schedule)
    sigmas = _with_final(np.asarray(schedule.sigmas)[ts], final)
    solver = PNDM(warmup="heun" if skip_prk else "runge_kutta", schedule=schedule)
    return DiffusersScheduler(sigmas, solver, schedule, "eps", _vp_scale(sigmas), final is not None)


def _ddpm(cfg: _Config, n: int):
    r"""DDPM's ancestral step between the listed timesteps (diffusers steps to the next listed
    one, whatever the spacing), noise drawn on every step but the one into 0."""
    prediction = _prediction(cfg)
    _no_thresholding(cfg)
    schedule = _table(cfg, zero_snr=False)
    n_train = schedule.num_train_timesteps
    variance_type = cfg.require(
        "variance_type", ("fixed_small", "fixed_small_log", "fixed_large"), "fixed_small"
    )
    clip = cfg.get("clip_sample", True)  # diffusers' DDPM clips x0 to [-1, 1] unless told not to
    clip_range = float(cfg.get("clip_sample_range", 1.0))
    solver = DDPM(variance_type=variance_type, clip_sample_range=clip_range if clip else None)
    spacing = cfg.require("timestep_spacing", ("leading", "trailing", "linspace"), "leading")
    offset = int(cfg.get("steps_offset", 0))
    ts = _integer_timesteps(spacing, n, n_train, offset)
    if variance_type == "fixed_large" and ts[-1] > 0:
        # From a last timestep above 0 diffusers adds sqrt(beta_t) z on the step into 0.
        raise ValueError(
            f"from_diffusers: DDPMScheduler option variance_type='fixed_large' with "
            f"timestep_spacing={spacing!r} (steps_offset={offset}) ends at timestep {ts[-1]} > 0, "
            "where diffusers adds noise to the returned sample: cannot be reproduced."
        )
    sigmas = _with_final(np.asarray(schedule.sigmas)[ts], None)
    return DiffusersScheduler(sigmas, solver, schedule, prediction, _vp_scale(sigmas), False)


def _flow_match_heun(cfg: _Config, n: int):
    """Heun in flow time on the shifted grid (FlowMatchEuler's without dynamic shifting); the
    step into 0 is an Euler step, the denoiser output."""
    n_train = int(cfg.get("num_train_timesteps", 1000))
    shift = float(cfg.get("shift", 1.0))
    sigmas = flow_shift_sigmas(n, shift, num_train_timesteps=n_train)
    schedule = FlowSchedule()
    return DiffusersScheduler(
        sigmas,
        FlowHeun(schedule=schedule),
        schedule,
        "flow",
        as_float(1.0 + float(np.asarray(sigmas)[0])),
        False,
        float(n_train),
    )


def _lcm_tcd(cfg: _Config, n: int, tcd: bool, eta):
    r"""LCM / TCD on the distillation grid's timesteps (:func:`.fewstep.lcm_timesteps`); TCD's
    ``eta`` is its :math:`\gamma`, and its last step lands on the table's first level."""
    prediction = _prediction(cfg)
    schedule = _table(cfg, zero_snr=False)
    original = int(cfg.get("original_inference_steps", 50))
    # Neither set_timesteps reads the spacing keys, and the final alpha_bar is never reached (LCM
    # returns its consistency output on the last step, TCD steps to timestep 0).
    cfg.gated("timestep_spacing", "steps_offset", "set_alpha_to_one")
    if tcd:  # TCD's step reads neither the x0 clipping, the thresholding nor the scaling keys
        cfg.gated("clip_sample", "clip_sample_range", "timestep_scaling")
        cfg.gated("thresholding", "dynamic_thresholding_ratio", "sample_max_value")
    else:
        _no_thresholding(cfg)
        _no_clipping(cfg, False)
    if n > original:
        raise ValueError(
            f"from_diffusers: {cfg.class_name} takes at most original_inference_steps={original} "
            f"steps; got num_steps={n}."
        )
    ts = lcm_timesteps(
        n, num_train_timesteps=schedule.num_train_timesteps, original_inference_steps=original
    )
    final = _smallest_level(schedule) if tcd else None
    sigmas = _with_final(np.asarray(schedule.sigmas)[ts], final)
    if tcd:
        solver = TCDSampler(schedule, gamma=0.3 if eta is None else float(eta))
    else:
        if eta is not None and eta != 0:
            raise ValueError(
                f"from_diffusers: eta={eta!r} is a DDIM / TCD step argument, not LCM's."
            )
        solver = LCMSampler(schedule, float(cfg.get("timestep_scaling", 10.0)))
    return DiffusersScheduler(
        sigmas, solver, schedule, prediction, _vp_scale(sigmas), final is not None
    )


def _consistency(cfg: _Config, n: int):
    r"""Multistep consistency sampling on the Karras levels of the leading timesteps
    :math:`k\,(N // n)` (ramp :math:`k (N // n)/(N - 1)`); the last step returns the consistency
    output (diffusers' step to :math:`s_{\min}` adds no noise)."""
    n_train = int(cfg.get("num_train_timesteps", 40))
    sigma_min = float(cfg.get("sigma_min", 0.002))
    sigma_max = float(cfg.get("sigma_max", 80.0))
    sigma_data = float(cfg.get("sigma_data", 0.5))
    rho = float(cfg.get("rho", 7.0))
    cfg.require("s_noise", (1.0, 1), 1.0)
    clip = cfg.require("clip_denoised", (True, False), True)
    if n > n_train:
        raise ValueError(
            f"from_diffusers: CMStochasticIterativeScheduler takes at most num_train_timesteps="
            f"{n_train} steps; got num_steps={n}."
        )
    ramp = (np.arange(0, n) * (n_train // n)) / (n_train - 1)
    lo, hi = sigma_min ** (1.0 / rho), sigma_max ** (1.0 / rho)
    levels = (hi + ramp * (lo - hi)) ** rho
    sigmas = _with_final(levels, None)
    rule = ClipRule(as_float(1.0)) if clip else None
    return DiffusersScheduler(
        sigmas,
        ConsistencySampler(sigma_min=sigma_min),
        VESchedule(sigma_min, sigma_max),
        "cm",
        as_float(sigma_max),
        False,
        sigma_data=sigma_data,
        denoised_transform=rule,
    )


def _sa_solver(cfg: _Config, n: int):
    """SA-Solver: DPM-Solver's table grid, ending (as diffusers' does) at the table's smallest
    level; ``tau_func=None`` is diffusers' window on timesteps [200, 800] (:class:`TauWindow`)."""
    prediction = _prediction(cfg)
    _no_thresholding(cfg)
    _no_flow_sigmas(cfg)
    cfg.require("variance_type", (None,), None)
    cfg.require("tau_func", (None,), None)  # a Python function is not a config value
    for key in _SPACING_OPTIONS:
        # diffusers repeats the last level: its output is then the *corrected* state at that
        # level, which a grid [..., s_last, 0] cannot express (the corrector runs one step late).
        cfg.require(key, (False,), False)
    schedule, sigmas, _ = _multistep_grid(cfg, n, spacing_keys=True, zero_snr=False)
    sigmas = _with_final(np.asarray(sigmas)[:-1], _smallest_level(schedule))
    keys = ("predictor_order", "corrector_order", "algorithm_type", "lower_order_final")
    cfg.require("algorithm_type", ("data_prediction", "noise_prediction"), "data_prediction")
    solver = sa_solver_from_diffusers_config(
        {k: cfg.get(k) for k in keys if k in cfg.values}, schedule
    )
    return DiffusersScheduler(sigmas, solver, schedule, prediction, _vp_scale(sigmas), True)


_BUILDERS: dict[str, Callable] = {
    "DDIMScheduler": lambda cfg, n, kw: _ddim(cfg, n, 0.0 if kw["eta"] is None else kw["eta"]),
    "EulerDiscreteScheduler": lambda cfg, n, kw: _euler_family(cfg, n, "euler"),
    "EulerAncestralDiscreteScheduler": lambda cfg, n, kw: _euler_family(cfg, n, "euler_ancestral"),
    "HeunDiscreteScheduler": lambda cfg, n, kw: _euler_family(cfg, n, "heun"),
    "DPMSolverMultistepScheduler": lambda cfg, n, kw: _dpm_solver(cfg, n, True),
    "DPMSolverSinglestepScheduler": lambda cfg, n, kw: _dpm_solver(cfg, n, False),
    "UniPCMultistepScheduler": lambda cfg, n, kw: _unipc(cfg, n),
    "DEISMultistepScheduler": lambda cfg, n, kw: _deis(cfg, n),
    "EDMEulerScheduler": lambda cfg, n, kw: _edm(cfg, n, False),
    "EDMDPMSolverMultistepScheduler": lambda cfg, n, kw: _edm(cfg, n, True),
    "FlowMatchEulerDiscreteScheduler": lambda cfg, n, kw: _flow_match_euler(
        cfg, n, kw["mu"], kw["image_seq_len"]
    ),
    "PNDMScheduler": lambda cfg, n, kw: _pndm(cfg, n),
    "DDPMScheduler": lambda cfg, n, kw: _ddpm(cfg, n),
    "KDPM2DiscreteScheduler": lambda cfg, n, kw: _k_family(cfg, n, "kdpm2"),
    "KDPM2AncestralDiscreteScheduler": lambda cfg, n, kw: _k_family(cfg, n, "kdpm2_ancestral"),
    "DPMSolverSDEScheduler": lambda cfg, n, kw: _k_family(cfg, n, "dpm_sde"),
    "LCMScheduler": lambda cfg, n, kw: _lcm_tcd(cfg, n, False, kw["eta"]),
    # The parallel variants' step, taken one at a time, is DDIM's / DDPM's.
    "DDIMParallelScheduler": lambda cfg, n, kw: _ddim(
        cfg, n, 0.0 if kw["eta"] is None else kw["eta"]
    ),
    "DDPMParallelScheduler": lambda cfg, n, kw: _ddpm(cfg, n),
    "CMStochasticIterativeScheduler": lambda cfg, n, kw: _consistency(cfg, n),
    "TCDScheduler": lambda cfg, n, kw: _lcm_tcd(cfg, n, True, kw["eta"]),
    "FlowMatchHeunDiscreteScheduler": lambda cfg, n, kw: _flow_match_heun(cfg, n),
    "LMSDiscreteScheduler": lambda cfg, n, kw: _euler_family(cfg, n, "lms"),
    "SASolverScheduler": lambda cfg, n, kw: _sa_solver(cfg, n),
}

SUPPORTED_SCHEDULERS = tuple(sorted(_BUILDERS))
"""The names of the diffusers scheduler classes :func:`from_diffusers` reproduces, sorted."""

# The config keys of each scheduler (diffusers 0.42), checked before anything is built.
_TABLE = {"num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas"}
_THRESHOLD = {"thresholding", "dynamic_thresholding_ratio", "sample_max_value"}
_SPACED = {"use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"}
_FLOW_OPTIONS = {"use_flow_sigmas", "flow_shift", "use_dynamic_shifting", "time_shift_type"}
_SOLVER = {"solver_order", "algorithm_type", "solver_type", "lower_order_final"}
_EDM = {"sigma_min", "sigma_max", "sigma_data", "sigma_schedule", "num_train_timesteps", "rho"}
_KNOWN_KEYS: dict[str, frozenset] = {
    name: frozenset(keys | {"prediction_type"})
    for name, keys in {
        "DDIMScheduler": _TABLE
        | _THRESHOLD
        | {"clip_sample", "clip_sample_range", "set_alpha_to_one", "steps_offset"}
        | {"timestep_spacing", "rescale_betas_zero_snr"},
        "EulerDiscreteScheduler": _TABLE
        | _SPACED
        | {"interpolation_type", "sigma_min", "sigma_max", "timestep_spacing", "timestep_type"}
        | {"steps_offset", "rescale_betas_zero_snr", "final_sigmas_type"},
        "EulerAncestralDiscreteScheduler": _TABLE
        | {"timestep_spacing", "steps_offset", "rescale_betas_zero_snr"},
        "HeunDiscreteScheduler": _TABLE
        | _SPACED
        | {"clip_sample", "clip_sample_range", "timestep_spacing", "steps_offset"},
        "DPMSolverMultistepScheduler": _TABLE
        | _THRESHOLD
        | _SPACED
        | _FLOW_OPTIONS
        | _SOLVER
        | {"euler_at_final", "use_lu_lambdas", "final_sigmas_type", "lambda_min_clipped"}
        | {"variance_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr"},
        "DPMSolverSinglestepScheduler": _TABLE
        | _THRESHOLD
        | _SPACED
        | _FLOW_OPTIONS
        | _SOLVER
        | {"final_sigmas_type", "lambda_min_clipped", "variance_type"},
        "UniPCMultistepScheduler": _TABLE
        | _THRESHOLD
        | _SPACED
        | _FLOW_OPTIONS
        | (_SOLVER - {"algorithm_type"})
        | {"predict_x0", "disable_corrector", "solver_p", "timestep_spacing", "steps_offset"}
        | {"final_sigmas_type", "rescale_betas_zero_snr", "sigma_min", "sigma_max"}
        | {"shift_terminal"},
        "DEISMultistepScheduler": _TABLE
        | _THRESHOLD
        | _SPACED
        | _FLOW_OPTIONS
        | _SOLVER
        | {"timestep_spacing", "steps_offset"},
        "EDMEulerScheduler": _EDM | {"final_sigmas_type"},
        "EDMDPMSolverMultistepScheduler": _EDM
        | _THRESHOLD
        | _SOLVER
        | {"euler_at_final", "final_sigmas_type"},
        "FlowMatchEulerDiscreteScheduler": _SPACED
        | {"num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift"}
        | {"base_image_seq_len", "max_image_seq_len", "invert_sigmas", "shift_terminal"}
        | {"time_shift_type", "stochastic_sampling"},
        "PNDMScheduler": _TABLE
        | {"skip_prk_steps", "set_alpha_to_one", "timestep_spacing", "steps_offset"},
        "DDPMScheduler": _TABLE
        | _THRESHOLD
        | {"variance_type", "clip_sample", "clip_sample_range", "timestep_spacing"}
        | {"steps_offset", "rescale_betas_zero_snr"},
        "KDPM2DiscreteScheduler": _TABLE | _SPACED | {"timestep_spacing", "steps_offset"},
        "KDPM2AncestralDiscreteScheduler": _TABLE | _SPACED | {"timestep_spacing", "steps_offset"},
        "FlowMatchHeunDiscreteScheduler": {"num_train_timesteps", "shift"},
        "LMSDiscreteScheduler": _TABLE | _SPACED | {"timestep_spacing", "steps_offset"},
        "LCMScheduler": _TABLE
        | _THRESHOLD
        | {"original_inference_steps", "clip_sample", "clip_sample_range", "set_alpha_to_one"}
        | {"steps_offset", "timestep_spacing", "timestep_scaling", "rescale_betas_zero_snr"},
        "TCDScheduler": _TABLE
        | _THRESHOLD
        | {"original_inference_steps", "clip_sample", "clip_sample_range", "set_alpha_to_one"}
        | {"steps_offset", "timestep_spacing", "timestep_scaling", "rescale_betas_zero_snr"},
        "DPMSolverSDEScheduler": _TABLE
        | _SPACED
        | {"noise_sampler_seed", "timestep_spacing", "steps_offset"},
    }.items()
}
_KNOWN_KEYS["DDIMParallelScheduler"] = _KNOWN_KEYS["DDIMScheduler"]
_KNOWN_KEYS["CMStochasticIterativeScheduler"] = frozenset(
    {"num_train_timesteps", "sigma_min", "sigma_max", "sigma_data", "s_noise", "rho"}
    | {"clip_denoised"}
)
_KNOWN_KEYS["DDPMParallelScheduler"] = _KNOWN_KEYS["DDPMScheduler"]
_KNOWN_KEYS["SASolverScheduler"] = frozenset(
    _TABLE
    | _THRESHOLD
    | _SPACED
    | {"use_flow_sigmas", "flow_shift", "predictor_order", "corrector_order", "prediction_type"}
    | {"tau_func", "algorithm_type", "lower_order_final", "lambda_min_clipped", "variance_type"}
    | {"timestep_spacing", "steps_offset"}
)


def from_diffusers(
    config: dict,
    num_steps: int,
    *,
    eta=None,
    mu=None,
    image_seq_len=None,
) -> DiffusersScheduler:
    """The jaxsolve grid, solver and model adapter that reproduce a diffusers scheduler.

    Args:
        config: the scheduler's config (``dict(scheduler.config)`` or ``scheduler_config.json``),
            with its ``_class_name``.
        num_steps: the number of inference steps (``set_timesteps(num_steps)``).
        eta: DDIM's ``eta`` (a ``step`` argument in diffusers, not a config key; None is 0), or
            TCD's gamma (its ``step``'s ``eta``; None is diffusers' 0.3).
        mu: the dynamic shift of a flow scheduler with ``use_dynamic_shifting`` (what the pipeline
            passes to ``set_timesteps``), or
        image_seq_len: the image's token count, from which ``mu`` is computed with the config's
            ``base_shift``, ``max_shift``, ``base_image_seq_len``, ``max_image_seq_len`` (Flux).

    Returns:
        a :class:`DiffusersScheduler`. Sample with
        ``sample(res.denoiser_from_model(model), res.init_noise_scale * z, res.sigmas, res.solver,
        key=...)``.

    Raises:
        ValueError: for a ``_class_name`` not in :data:`SUPPORTED_SCHEDULERS`, an option at a value
            that cannot be reproduced, or an option jaxsolve does not know (each named).
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict; got {type(config).__name__}.")
    if isinstance(num_steps, bool) or not isinstance(num_steps, (int, np.integer)) or num_steps < 1:
        raise ValueError(f"num_steps must be a positive int; got {num_steps!r}.")
    class_name = config.get("_class_name")
    if class_name not in _BUILDERS:
        raise ValueError(
            f"from_diffusers: _class_name={class_name!r} is not supported; supported: "
            f"{', '.join(SUPPORTED_SCHEDULERS)}."
        )
    cfg = _Config(config, class_name)
    cfg.check_known(_KNOWN_KEYS[class_name])
    result = _BUILDERS[class_name](
        cfg, int(num_steps), {"eta": eta, "mu": mu, "image_seq_len": image_seq_len}
    )
    cfg.finish()
    return result
