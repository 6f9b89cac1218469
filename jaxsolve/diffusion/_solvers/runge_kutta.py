r"""Explicit Runge–Kutta samplers, each method a Butcher tableau over one engine.

**Denoiser form** (k-diffusion, EDM): the probability-flow ODE in VE scale is
:math:`\mathrm{d}x/\mathrm{d}\sigma = (x - D(x, \sigma))/\sigma`; a tableau ``(a, b, c)``
integrates it in :math:`\sigma` with stage levels :math:`\sigma + c_j(\sigma_{n} - \sigma)`.

* :class:`Euler` — one stage; equals DDIM and DPM-Solver-1 in this form.
* :class:`Heun` — EDM's second-order sampler ("Elucidating the Design Space of Diffusion-Based
  Generative Models", Algorithm 1).
* :class:`DPM2` — k-diffusion's ``sample_dpm_2``: the explicit midpoint rule with the midpoint
  stage at the *geometric* mean :math:`\sqrt{\sigma\sigma_n}` (midpoint in :math:`\log\sigma`).

**Flow time**: :class:`FlowEuler`, :class:`FlowHeun`, :class:`FlowMidpoint` integrate
:math:`\mathrm{d}x_t/\mathrm{d}t = v(x_t, t)` in the model's own scale and time (rectified flow,
flow matching), with the velocity obtained from the denoiser through a schedule. For the linear
interpolant :math:`x_t = (1-t)x_0 + t\epsilon`, flow-Euler coincides with :class:`Euler`; Heun and
midpoint in flow time differ from their denoiser-form namesakes.

Every method's last step (into :math:`\sigma = 0`) lands on the denoiser output.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import equinox as eqx

from .._adapters import PREDICTIONS, _Coefficients
from .._schedules import AbstractSchedule, FlowSchedule
from ._base import AbstractSolver


class ButcherTableau(NamedTuple):
    """Explicit tableau: stage ``j`` uses ``a[j-1]`` (weights of stages ``0..j-1``), node ``c[j]``."""

    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    c: tuple[float, ...]


EULER = ButcherTableau(a=(), b=(1.0,), c=(0.0,))
HEUN = ButcherTableau(a=((1.0,),), b=(0.5, 0.5), c=(0.0, 1.0))
MIDPOINT = ButcherTableau(a=((0.5,),), b=(0.0, 1.0), c=(0.0, 0.5))


def _rk_increment(tableau, f, y, s, s_next, geometric_nodes=False):
    """Generic explicit RK step from ``s`` to ``s_next`` for ``dy/ds = f(y, s)``.

    With ``geometric_nodes`` stage ``j`` sits at :math:`s^{1-c_j}s_{n}^{c_j}` and its row of ``a``
    is rescaled so the stage stays consistent (row sum = its actual fractional position).
    """
    ds = s_next - s
    ks = []
    for j, c in enumerate(tableau.c):
        if j == 0:
            y_j, s_j = y, s
        else:
            row = tableau.a[j - 1]
            if geometric_nodes:
                s_j = s ** (1.0 - c) * s_next**c
                scale = (s_j - s) / (c * ds)
            else:
                s_j, scale = s + c * ds, 1.0
            y_j = y + (scale * ds) * sum(w * k for w, k in zip(row, ks, strict=False) if w != 0.0)
        ks.append(f(y_j, s_j))
    return y + ds * sum(w * k for w, k in zip(tableau.b, ks, strict=True) if w != 0.0)


class ExplicitRK(AbstractSolver):
    """Runge–Kutta in :math:`\\sigma` for :math:`\\mathrm{d}x/\\mathrm{d}\\sigma = (x - D)/\\sigma`."""

    tableau: ClassVar[ButcherTableau]
    geometric_nodes: ClassVar[bool] = False
    step_form: ClassVar[str | None] = "noise"  # x + (sigma_n - sigma) sum_j b_j k_j

    def step(self, ctx, x, state):
        def slope(y, s):
            return (y - ctx.denoise(y, s)) / s

        return _rk_increment(
            self.tableau, slope, x, ctx.sigma, ctx.sigma_next, self.geometric_nodes
        ), state


class Euler(ExplicitRK):
    r"""Euler in :math:`\sigma`: :math:`x_{n} = x + (\sigma_n - \sigma)(x - D(x,\sigma))/\sigma`. Order 1."""

    tableau: ClassVar[ButcherTableau] = EULER


class Heun(ExplicitRK):
    """Heun's method (EDM Algorithm 1, deterministic). Order 2; 2 NFE per step, 1 for the last."""

    tableau: ClassVar[ButcherTableau] = HEUN


class DPM2(ExplicitRK):
    """Midpoint rule with the midpoint at :math:`\\sqrt{\\sigma\\sigma_n}` (k-diffusion ``dpm_2``). Order 2."""

    tableau: ClassVar[ButcherTableau] = MIDPOINT
    geometric_nodes: ClassVar[bool] = True


class FlowRK(AbstractSolver):
    r"""Runge–Kutta in a schedule's own time and scale: :math:`\mathrm{d}x_t/\mathrm{d}t = v(x_t, t)`.

    The velocity comes from the denoiser: with :math:`x_t = \alpha x`, :math:`s = \sigma/\alpha`,
    :math:`v = \dot\alpha\hat x_0 + \dot\sigma\hat\epsilon`. The step runs from
    ``t = schedule.from_ve_sigma(sigma)`` to the next level's time and maps back to VE scale.
    """

    # A factory, not an instance: building arrays at import would start JAX's backend before
    # a user can configure it (XLA_FLAGS, jax.distributed.initialize).
    schedule: AbstractSchedule = eqx.field(default_factory=FlowSchedule)
    tableau: ClassVar[ButcherTableau]

    def step(self, ctx, x, state):
        sch = self.schedule
        flow = PREDICTIONS["flow"]

        def velocity(y, t):
            s = sch.to_ve_sigma(t)
            a = sch.alpha_from_ve_sigma(s)
            da, db = sch.d_alpha_sigma(t)
            x0 = ctx.denoise(y / a, s)
            return flow.to_output(y, x0, _Coefficients(a, a * s, da, db))

        t, t_next = sch.from_ve_sigma(ctx.sigma), sch.from_ve_sigma(ctx.sigma_next)
        y = sch.alpha_from_ve_sigma(ctx.sigma) * x
        y_next = _rk_increment(self.tableau, velocity, y, t, t_next)
        return y_next / sch.alpha_from_ve_sigma(ctx.sigma_next), state


class FlowEuler(FlowRK):
    """Euler in flow time. For the linear interpolant it equals :class:`Euler` (and DDIM)."""

    tableau: ClassVar[ButcherTableau] = EULER


class FlowHeun(FlowRK):
    """Heun in flow time (the usual second-order rectified-flow sampler). Order 2."""

    tableau: ClassVar[ButcherTableau] = HEUN


class FlowMidpoint(FlowRK):
    """Explicit midpoint in flow time. Order 2."""

    tableau: ClassVar[ButcherTableau] = MIDPOINT
