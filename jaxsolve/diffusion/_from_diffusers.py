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
  :math:`\sqrt{1 + s_0^2}` for schedulers whose latents live in VP scale (DDIM, DPM-Solver, UniPC,
  DEIS), ``init_noise_sigma`` itself for the Euler-type and EDM schedulers (whose latents are
  already in VE scale), :math:`1 + s_0 = 1/(1 - t_0)` for flow matching (latents :math:`x_t = z`).
* ``denoiser_from_model(model)``: the model as diffusers calls it, ``model(x_t, timestep)`` with
  ``x_t`` in the model's own scale (what ``scheduler.scale_model_input`` returns) and the timestep
  diffusers passes (the table index for DDPM tables, ``1000 t`` for flow models,
  :math:`\tfrac14\log s` for EDM), turned into ``denoiser(x, sigma) -> x0_hat`` by the adapter of
  the config's ``prediction_type``.

Refused (each raises naming the option): x0 clipping and dynamic thresholding (``clip_sample``,
``thresholding``), DDIM spacings whose step ``t -> t - N // n`` skips the next timestep,
``use_lu_lambdas``, flow sigmas and dynamic shifting on the DDPM-table schedulers,
``variance_type``, ``euler_at_final``, ``algorithm_type="sde-dpmsolver"``, Euler's
``interpolation_type="log_linear"``, ``timestep_type="continuous"`` and ``sigma_min``/``sigma_max``
overrides, UniPC's ``predict_x0=False`` / ``disable_corrector`` / ``solver_p``, spacing options on
DEIS (diffusers repeats its last level) and on flow matching, ``invert_sigmas``,
``stochastic_sampling``, ``rescale_betas_zero_snr`` on DDIM, and every scheduler class not in
:data:`SUPPORTED_SCHEDULERS`.
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
    DEIS,
    AbstractSolver,
    DPMSolver,
    DPMSolverPP,
    DPMSolverPPSDE,
    Euler,
    EulerAncestral,
    FlowEuler,
    Heun,
    UniPC,
)

BOOKKEEPING_KEYS = frozenset({"_class_name", "_diffusers_version", "_use_default_values"})

# diffusers' prediction_type -> jaxsolve's PREDICTIONS name.
_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}

_SPACING_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")


class DiffusersScheduler(NamedTuple):
    """What :func:`from_diffusers` returns.

    Attributes:
        sigmas: the VE grid, decreasing, ending in 0 (length ``num_steps + 1``, or ``+ 2`` when
            ``ends_at_sigma_min``).
        solver: the jaxsolve solver taking the scheduler's steps on ``sigmas``.
        schedule: the model's schedule (time ``t`` to :math:`(\\alpha, \\sigma)`).
        prediction: the model's parameterisation: ``"eps"``, ``"x0"``, ``"v"``, ``"flow"`` or
            ``"edm"`` (EDM preconditioning of an ``epsilon``/``v_prediction`` network).
        init_noise_scale: the initial VE state is ``init_noise_scale * z``, ``z`` standard normal.
        ends_at_sigma_min: diffusers stops at ``sigmas[-2]`` (see the module docstring).
        timestep_scale: the model receives ``timestep_scale * t`` (``t`` the schedule's time).
        sigma_data: EDM's :math:`\\sigma_{\\rm data}` (``prediction="edm"`` only).
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

    def denoiser_from_model(self, model: Callable) -> Callable:
        """``model(x_t, timestep)`` as diffusers calls it -> ``denoiser(x, sigma) -> x0_hat``."""
        if self.prediction == "edm":
            return _EDMModelDenoiser(model, self.sigma_data, self.edm_output_sign)
        fn = model
        if self.timestep_scale != 1.0:
            fn = _TimestepScaled(model, self.timestep_scale)
        return ModelDenoiser(fn, self.schedule, self.prediction)


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


def _betas(cfg: _Config):
    n_train = int(cfg.get("num_train_timesteps", 1000))
    # diffusers' defaults: DDPM's linear betas, except Heun's (latent diffusion's range).
    heun = cfg.class_name == "HeunDiscreteScheduler"
    beta_start = cfg.get("beta_start", 0.00085 if heun else 0.0001)
    beta_end = cfg.get("beta_end", 0.012 if heun else 0.02)
    beta_schedule = cfg.get("beta_schedule", "linear")
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
    cfg.require("use_lu_lambdas", (False,), False)
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
    prediction = _prediction(cfg)
    _no_thresholding(cfg)
    _no_flow_sigmas(cfg)
    cfg.require("variance_type", (None,), None)
    order = int(cfg.get("solver_order", 2))
    solver_type = cfg.require("solver_type", ("midpoint", "heun"), "midpoint")
    algo = cfg.require(
        "algorithm_type",
        ("dpmsolver++", "dpmsolver", "sde-dpmsolver++")
        if multistep
        else ("dpmsolver++", "dpmsolver"),
        "dpmsolver++",
    )
    if multistep:
        lower = bool(cfg.get("lower_order_final", True))
        cfg.require("euler_at_final", (False,), False)
    else:
        lower = bool(cfg.get("lower_order_final", False))
        # diffusers switches lower_order_final on itself for an incomplete last group or a final
        # step to 0 (set_timesteps rewrites its config).
        final_zero = cfg.values.get("final_sigmas_type", "zero") == "zero"
        lower = lower or n % order != 0 or final_zero
    schedule, sigmas, ends = _multistep_grid(cfg, n, spacing_keys=multistep, zero_snr=multistep)
    if algo == "sde-dpmsolver++":
        solver = DPMSolverPPSDE(order=order, solver_type=solver_type, lower_order_final=lower)
    else:
        cls = DPMSolverPP if algo == "dpmsolver++" else DPMSolver
        # diffusers' third-order multistep keeps the reference coefficient: legacy_third_order.
        solver = cls(
            order=order,
            multistep=multistep,
            solver_type=solver_type,
            lower_order_final=lower,
            legacy_third_order=True,
        )
    return DiffusersScheduler(sigmas, solver, schedule, prediction, _vp_scale(sigmas), ends)


def _unipc(cfg: _Config, n: int):
    prediction = _prediction(cfg)
    _no_thresholding(cfg)
    _no_flow_sigmas(cfg)
    cfg.require("predict_x0", (True,), True)
    cfg.require("disable_corrector", ([],), [])
    cfg.require("solver_p", (None,), None)
    cfg.require("sigma_min", (None,), None)
    cfg.require("sigma_max", (None,), None)
    cfg.require("shift_terminal", (None,), None)
    order = int(cfg.get("solver_order", 2))
    variant = cfg.require("solver_type", ("bh1", "bh2"), "bh2")
    lower = bool(cfg.get("lower_order_final", True))
    schedule, sigmas, ends = _multistep_grid(cfg, n, spacing_keys=True, zero_snr=True)
    solver = UniPC(order=order, variant=variant, lower_order_final=lower)
    return DiffusersScheduler(sigmas, solver, schedule, prediction, _vp_scale(sigmas), ends)


def _deis(cfg: _Config, n: int):
    prediction = _prediction(cfg)
    _no_thresholding(cfg)
    _no_flow_sigmas(cfg)
    cfg.require("algorithm_type", ("deis",), "deis")
    cfg.require("solver_type", ("logrho",), "logrho")
    order = int(cfg.get("solver_order", 2))
    lower = bool(cfg.get("lower_order_final", True))
    for key in _SPACING_OPTIONS:  # diffusers then repeats the last level: a zero-length step
        cfg.require(key, (False,), False)
    schedule, sigmas, _ = _multistep_grid(cfg, n, spacing_keys=True, zero_snr=False)
    # DEIS's last step lands on the table's smallest level.
    sigmas = _with_final(np.asarray(sigmas)[:-1], _smallest_level(schedule))
    solver = DEIS(order=order, lower_order_final=lower)
    return DiffusersScheduler(sigmas, solver, schedule, prediction, _vp_scale(sigmas), True)


def _ddim(cfg: _Config, n: int, eta):
    prediction = _prediction(cfg)
    _no_thresholding(cfg)
    _no_clipping(cfg, True)  # diffusers' DDIM clips x0 to [-1, 1] unless told not to
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
    solver = DDIM(eta=eta)
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
        ts = np.linspace(0, n_train - 1, n, dtype=np.float32)[::-1].astype(np.float64)
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
    solver = {"euler": Euler(), "euler_ancestral": EulerAncestral(), "heun": Heun()}[kind]
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


_BUILDERS: dict[str, Callable] = {
    "DDIMScheduler": lambda cfg, n, kw: _ddim(cfg, n, kw["eta"]),
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
}

SUPPORTED_SCHEDULERS = tuple(sorted(_BUILDERS))

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
    }.items()
}


def from_diffusers(
    config: dict,
    num_steps: int,
    *,
    eta=0.0,
    mu=None,
    image_seq_len=None,
) -> DiffusersScheduler:
    """The jaxsolve grid, solver and model adapter that reproduce a diffusers scheduler.

    Args:
        config: the scheduler's config (``dict(scheduler.config)`` or ``scheduler_config.json``),
            with its ``_class_name``.
        num_steps: the number of inference steps (``set_timesteps(num_steps)``).
        eta: DDIM's ``eta`` (a ``step`` argument in diffusers, not a config key).
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
