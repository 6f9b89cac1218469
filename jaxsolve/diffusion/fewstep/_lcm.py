r"""The LCM and TCD samplers of diffusers' ``LCMScheduler`` and ``TCDScheduler``, in denoiser form.

Both run a distilled model on a discrete DDPM table (:class:`~jaxsolve.diffusion.DiscreteVPSchedule`,
integer timestep :math:`k` with :math:`\bar\alpha_k`, VE level
:math:`s_k = \sqrt{(1-\bar\alpha_k)/\bar\alpha_k}`). The driver works in VE scale,
:math:`x = x_{\rm vp}/\sqrt{\bar\alpha}`, and the model is the house denoiser
:math:`D(x, \sigma) = \hat x_0` (an :math:`\epsilon`-model gives
:math:`\hat x_0 = (x_{\rm vp} - \sqrt{1-\bar\alpha}\,\hat\epsilon)/\sqrt{\bar\alpha}`, the same thing).
Where a step needs the timestep it is derived from the grid level through the schedule,
:math:`t = ` ``schedule.from_ve_sigma(sigma)``, which is the exact integer at the table's levels.

**Timesteps** (:func:`lcm_timesteps`, both schedulers' default): the distillation grid
:math:`k\,(N/M) - 1`, :math:`k = 1..M` (:math:`M` = ``original_inference_steps``), from which
``n`` entries are taken at evenly spaced indices from the top (``[999, 759, 499, 259]`` for
:math:`n = 4`, :math:`N = 1000`, :math:`M = 50`).

**LCM** ("Latent Consistency Models: Synthesizing High-Resolution Images with Few-Step Inference";
"LCM-LoRA: A Universal Stable-Diffusion Acceleration Module"). Each step evaluates the consistency
function in its discrete-time boundary-condition form, with :math:`\tau = t\cdot` ``timestep_scaling``
and :math:`\sigma_d = 0.5`,

.. math::
    f(x, t) = c_{\rm skip}(t)\,x_{\rm vp} + c_{\rm out}(t)\,D(x, \sigma), \qquad
    c_{\rm skip} = \frac{\sigma_d^2}{\tau^2+\sigma_d^2},\quad c_{\rm out} = \frac{\tau}{\sqrt{\tau^2+\sigma_d^2}}

(the skip term acts on the VP-scale sample :math:`x_{\rm vp} = x/\sqrt{1+\sigma^2}`, as in diffusers),
then re-noises it to the next level with fresh noise, :math:`x_n = f + \sigma_n z`; the last step
returns :math:`f` itself.

**TCD** ("Trajectory Consistency Distillation"). With :math:`\gamma` (diffusers' ``eta``) and the
next timestep :math:`t_n`, the intermediate timestep is :math:`t_s = \lfloor(1-\gamma)\,t_n\rfloor`.
A DDIM step goes to its level :math:`\sigma_s`, then forward noise brings it back up to
:math:`\sigma_n`:

.. math::
    x_s = D + \sigma_s\,\frac{x - D}{\sigma}, \qquad x_n = x_s + \sqrt{\sigma_n^2 - \sigma_s^2}\; z .

:math:`\gamma = 0` is deterministic DDIM, :math:`\gamma = 1` re-noises the denoised estimate at the
table's first level (multistep consistency sampling). The step into :math:`\sigma = 0` returns
:math:`D` (the DDIM step to zero noise). diffusers' last TCD step lands instead on the table's first
level :math:`t = 0` (:math:`s_0 > 0`, VP-scaled): a grid that ends ``[..., s_0, 0]`` reproduces it
step for step (its step to :math:`s_0` adds no noise), the output being the state at :math:`s_0`.
"""

from __future__ import annotations

from typing import ClassVar

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._core import as_float, check_int, is_concrete
from .._schedules import DiscreteVPSchedule
from .._solvers._base import AbstractSolver


def lcm_timesteps(
    num_steps: int, *, num_train_timesteps: int = 1000, original_inference_steps: int = 50
) -> np.ndarray:
    """The integer timesteps of diffusers' ``LCMScheduler`` / ``TCDScheduler.set_timesteps(n)``.

    Args:
        num_steps: number of sampling steps ``n`` (at most ``original_inference_steps``).
        num_train_timesteps: size ``N`` of the DDPM table.
        original_inference_steps: size ``M`` of the distillation grid ``k (N // M) - 1``.

    Returns:
        ``n`` decreasing integer timesteps (NumPy ``int64``).
    """
    num_train_timesteps = check_int("num_train_timesteps", num_train_timesteps, minimum=2)
    original_inference_steps = check_int(
        "original_inference_steps", original_inference_steps, maximum=num_train_timesteps
    )
    num_steps = check_int("num_steps", num_steps, maximum=original_inference_steps)
    stride = num_train_timesteps // original_inference_steps
    origin = (np.arange(1, original_inference_steps + 1) * stride - 1)[::-1]
    indices = np.floor(np.linspace(0, len(origin), num=num_steps, endpoint=False)).astype(np.int64)
    return origin[indices].astype(np.int64)


def lcm_sigmas(
    schedule: DiscreteVPSchedule, num_steps: int, *, original_inference_steps: int = 50
) -> Float[Array, " L"]:
    """The VE grid of :func:`lcm_timesteps` on ``schedule``'s table, then 0.

    Args:
        schedule: the model's DDPM table.
        num_steps: number of sampling steps.
        original_inference_steps: size of the distillation grid.
    """
    ts = lcm_timesteps(
        num_steps,
        num_train_timesteps=schedule.num_train_timesteps,
        original_inference_steps=original_inference_steps,
    )
    sig = schedule.sigmas[jnp.asarray(ts)]
    return jnp.concatenate([sig, jnp.zeros((1,), sig.dtype)])


def _check_schedule(name, schedule):
    if not isinstance(schedule, DiscreteVPSchedule):
        raise TypeError(f"{name} schedule must be a DiscreteVPSchedule, got {type(schedule)}.")


class LCMSampler(AbstractSolver):
    r"""The Latent Consistency Model sampler (diffusers' ``LCMScheduler``), see the module.

    Args:
        schedule: the model's DDPM table (the timestep of a level comes from it).
        timestep_scaling: the factor of the timestep in the boundary condition (diffusers' 10).
        sigma_data: :math:`\sigma_d` of the boundary condition (diffusers' 0.5).
    """

    schedule: DiscreteVPSchedule
    timestep_scaling: float = 10.0
    sigma_data: float = 0.5

    stochastic: ClassVar[bool] = True

    def __check_init__(self):
        _check_schedule("LCMSampler", self.schedule)
        for name in ("timestep_scaling", "sigma_data"):
            value = getattr(self, name)
            if is_concrete(value) and not float(value) > 0:
                raise ValueError(f"LCMSampler {name} must be positive, got {value}.")

    def scalings(self, sigma) -> tuple[Float[Array, ""], Float[Array, ""]]:
        """``(c_skip, c_out)`` of the boundary condition at VE level ``sigma``."""
        tau = self.schedule.from_ve_sigma(sigma) * self.timestep_scaling
        sd2 = jnp.square(as_float(self.sigma_data))
        return sd2 / (tau**2 + sd2), tau / jnp.sqrt(tau**2 + sd2)

    def consistency(self, ctx, x) -> Float[Array, "..."]:
        """The consistency function :math:`f(x, t)` at ``ctx.sigma`` (one model evaluation)."""
        denoised = ctx.denoise(x, ctx.sigma)
        c_skip, c_out = self.scalings(ctx.sigma)
        c_skip, c_out = c_skip.astype(x.dtype), c_out.astype(x.dtype)
        return c_out * denoised + (c_skip / jnp.sqrt(1 + ctx.sigma**2)) * x

    def step(self, ctx, x, state):
        return self.consistency(ctx, x) + ctx.sigma_next * ctx.noise(0), state

    def final_step(self, ctx, x, state):
        return self.consistency(ctx, x), state


class TCDSampler(AbstractSolver):
    r"""The Trajectory Consistency Distillation sampler (diffusers' ``TCDScheduler``), see the module.

    Args:
        schedule: the model's DDPM table (the timesteps of the levels come from it).
        gamma: stochasticity in ``[0, 1]`` (diffusers' ``eta``, 0.3 in its pipeline).
    """

    schedule: DiscreteVPSchedule
    gamma: float = 0.3

    def __check_init__(self):
        _check_schedule("TCDSampler", self.schedule)
        if not is_concrete(self.gamma):
            raise TypeError("TCDSampler gamma must be a concrete number (it decides stochastic).")
        if not 0.0 <= float(self.gamma) <= 1.0:
            raise ValueError(f"TCDSampler gamma must be in [0, 1], got {self.gamma}.")

    @property
    def stochastic(self) -> bool:
        return float(self.gamma) > 0.0

    def intermediate_sigma(self, sigma_next) -> Float[Array, ""]:
        r"""The level :math:`\sigma_s` of :math:`t_s = \lfloor(1-\gamma)\,t_n\rfloor` (``t_n`` rounded
        to the table's integer timestep, as diffusers' timesteps are)."""
        t_next = jnp.round(self.schedule.from_ve_sigma(sigma_next))
        t_s = jnp.floor((1.0 - float(self.gamma)) * t_next)
        return self.schedule.to_ve_sigma(t_s)

    def step(self, ctx, x, state):
        denoised = ctx.denoise(x, ctx.sigma)
        sigma_s = jnp.minimum(self.intermediate_sigma(ctx.sigma_next), ctx.sigma_next)
        sigma_s = sigma_s.astype(x.dtype)
        x_s = denoised + (sigma_s / ctx.sigma) * (x - denoised)
        if not self.stochastic:
            return x_s, state
        up = jnp.sqrt(jnp.maximum(ctx.sigma_next**2 - sigma_s**2, 0.0))
        return x_s + up * ctx.noise(0), state
