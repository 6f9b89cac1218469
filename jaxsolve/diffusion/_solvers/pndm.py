r"""PNDM and PLMS: pseudo numerical methods on the noise prediction (diffusers' ``PNDMScheduler``).

From "Pseudo Numerical Methods for Diffusion Models on Manifolds". The paper's *transfer* part,
its equation (9),

.. math::

    x_{t-\delta} = \sqrt{\bar\alpha_{t-\delta}/\bar\alpha_t}\,x_t
      - \frac{\bar\alpha_{t-\delta} - \bar\alpha_t}
             {\bar\alpha_t\sqrt{1-\bar\alpha_{t-\delta}}
              + \sqrt{\bar\alpha_t(1-\bar\alpha_t)\bar\alpha_{t-\delta}}}\,\hat\epsilon,

is, in VE scale (:math:`x = x_t/\sqrt{\bar\alpha_t}`,
:math:`\sigma = \sqrt{(1-\bar\alpha_t)/\bar\alpha_t}`), exactly the DDIM step
:math:`\phi(x, \sigma \to \sigma_n, \hat\epsilon) = x + (\sigma_n - \sigma)\,\hat\epsilon`
(write :math:`\bar\alpha_{t-\delta} - \bar\alpha_t` as a difference of squares). The *gradient*
part combines noise predictions:

* **Runge–Kutta warm-up** (pseudo Runge–Kutta, PRK): the first three intervals each take four
  evaluations, with :math:`\sigma_m` the level half-way in the model's time,

  .. math::

      e_1 = \hat\epsilon(x, \sigma),\quad
      e_2 = \hat\epsilon(\phi(x, \sigma\to\sigma_m, e_1), \sigma_m),\quad
      e_3 = \hat\epsilon(\phi(x, \sigma\to\sigma_m, e_2), \sigma_m),\quad
      e_4 = \hat\epsilon(\phi(x, \sigma\to\sigma_n, e_3), \sigma_n),

  :math:`x_n = \phi(x, \sigma\to\sigma_n, (e_1 + 2e_2 + 2e_3 + e_4)/6)`; only :math:`e_1` enters
  the history.
* **Linear multistep** (pseudo linear multistep, PLMS): :math:`x_n = \phi(x, \sigma\to\sigma_n,
  (55e_0 - 59e_{-1} + 37e_{-2} - 9e_{-3})/24)` with :math:`e_{-j}` the predictions at the
  previous levels — Adams–Bashforth weights for equal steps in the model's time.

:class:`PNDM` with ``warmup="runge_kutta"`` is diffusers' ``skip_prk_steps=False``: three PRK
intervals, then fourth-order PLMS. ``warmup="heun"`` is ``skip_prk_steps=True``: the first
interval is a Heun step (:math:`e_0` and the prediction at the Euler point, averaged; the second
does not enter the history), then PLMS of order 2, 3 and 4 while the history fills.

The step into :math:`\sigma = 0` is the same combination (diffusers with ``set_alpha_to_one``),
not the denoiser output. The half-way level needs the model's time: with ``schedule=`` it is
``schedule.to_ve_sigma((t + t_n)/2)`` (with a :class:`~jaxsolve.diffusion.DiscreteVPSchedule`
and timesteps an even number apart, the table level diffusers uses), else the geometric mean
:math:`\sqrt{\sigma\sigma_n}`. The fixed weights assume equal steps in that time; on other grids
the order falls (iPNDM, :class:`~jaxsolve.diffusion.IPNDM`, is the same multistep with an Euler
first step).

diffusers steps by a fixed ``num_train_timesteps // num_inference_steps`` timesteps and puts the
half-way stages ``(num_train_timesteps // num_inference_steps) // 2`` timesteps on; these are the
grid's next level and its half-way level when the timesteps are a chain of that stride
(``"leading"`` spacing, or ``"trailing"`` when the step count divides ``num_train_timesteps``)
and, for the Runge–Kutta warm-up, the stride is even. (Otherwise diffusers evaluates the model at
a listed timestep while its state sits at another; that is not reproduced, and
:func:`~jaxsolve.diffusion.from_diffusers` refuses it.)
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from ..._core import check_choice
from .._adapters import eps_from_denoised
from .._schedules import AbstractSchedule
from . import _history as hist
from ._base import AbstractSolver
from .linear_multistep import _AB as _PLMS  # Adams–Bashforth for equal steps, newest first

# Intervals taken by the Runge–Kutta warm-up (diffusers' pndm_order - 1).
_PRK_STEPS = 3


class PNDM(AbstractSolver):
    """Pseudo numerical methods (PRK warm-up then PLMS) in VE form.

    Args:
        warmup: ``"runge_kutta"`` (diffusers' ``skip_prk_steps=False``, four evaluations on each of
            the first three intervals) or ``"heun"`` (``skip_prk_steps=True``: one Heun interval,
            then PLMS of rising order).
        schedule: the model's schedule, which defines the half-way level of the Runge–Kutta
            stages; ``None`` takes the geometric mean of the two levels.
    """

    warmup: str = eqx.field(static=True, default="runge_kutta")
    schedule: AbstractSchedule | None = None
    step_form: ClassVar[str | None] = "noise"

    def __check_init__(self):
        check_choice("warmup", self.warmup, {"runge_kutta", "heun"})

    def init(self, x, sigmas):
        return hist.empty(x, 4)

    def _midpoint(self, sigma, sigma_next):
        if self.schedule is None:
            return jnp.sqrt(sigma * sigma_next)
        t = self.schedule.from_ve_sigma(sigma)
        t_next = self.schedule.from_ve_sigma(sigma_next)
        return self.schedule.to_ve_sigma(0.5 * (t + t_next)).astype(sigma.dtype)

    def _eps(self, ctx, x, sigma):
        return eps_from_denoised(x, sigma, ctx.denoise(x, sigma))

    def _runge_kutta(self, ctx, x, e1, sigma, sigma_next):
        sigma_mid = self._midpoint(sigma, sigma_next)
        e2 = self._eps(ctx, x + (sigma_mid - sigma) * e1, sigma_mid)
        e3 = self._eps(ctx, x + (sigma_mid - sigma) * e2, sigma_mid)
        e4 = self._eps(ctx, x + (sigma_next - sigma) * e3, sigma_next)
        return x + (sigma_next - sigma) * (e1 + 2 * e2 + 2 * e3 + e4) / 6

    def _heun(self, ctx, x, e1, sigma, sigma_next):
        e2 = self._eps(ctx, x + (sigma_next - sigma) * e1, sigma_next)
        return x + (sigma_next - sigma) * (e1 + e2) / 2

    def _linear_multistep(self, x, history, sigma, sigma_next):
        # The history holds the current prediction and those of earlier levels (the Heun stage's
        # second prediction and the Runge-Kutta stages never enter it): PLMS of that order, up to 4.
        points = [hist.recent(history, j)[0] for j in range(4)]

        def update(k):
            def branch(x):
                combo = sum(w * e for w, e in zip(_PLMS[k], points[:k], strict=False))
                return x + (sigma_next - sigma) * combo

            return branch

        return hist.switch_on_order(history.count, [update(k) for k in range(1, 5)], x)

    def _warm(self, ctx):
        return ctx.i < (_PRK_STEPS if self.warmup == "runge_kutta" else 1)

    def step(self, ctx, x, history):
        sigma, sigma_next = ctx.sigma, ctx.sigma_next
        e = self._eps(ctx, x, sigma)
        history = hist.push(history, e, sigma)
        start = self._runge_kutta if self.warmup == "runge_kutta" else self._heun
        x_next = ctx.cond(
            self._warm(ctx),
            lambda x, e, h: start(ctx, x, e, sigma, sigma_next),
            lambda x, e, h: self._linear_multistep(x, h, sigma, sigma_next),
            x,
            e,
            history,
        )
        return x_next, history

    def final_step(self, ctx, x, history):
        # PLMS into sigma = 0; a grid too short to finish the warm-up ends on the denoiser output
        # (the first-order step into 0), which evaluates the model at no zero level.
        e = self._eps(ctx, x, ctx.sigma)
        history = hist.push(history, e, ctx.sigma)
        zero = jnp.zeros_like(ctx.sigma)
        multistep = self._linear_multistep(x, history, ctx.sigma, zero)
        return jnp.where(self._warm(ctx), x - ctx.sigma * e, multistep), history
