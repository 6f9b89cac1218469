r"""EDM's stochastic sampler ("Elucidating the Design Space of Diffusion-Based Generative Models",
Algorithm 2).

Before each step, if :math:`S_{t\min} \le \sigma \le S_{t\max}`, raise the noise level to
:math:`\hat\sigma = (1+\gamma)\sigma`, :math:`\gamma = \min(S_\text{churn}/N, \sqrt2-1)`, by adding
:math:`\sqrt{\hat\sigma^2 - \sigma^2}\,S_\text{noise}z`; then take the ODE step from
:math:`\hat\sigma` to :math:`\sigma_n` with ``solver`` (Heun by default, as EDM; ``Euler()`` gives
diffusers' ``EDMEulerScheduler``). ``N`` is the number of steps. The solver is started afresh from
the raised level every step, so it must be a single-step Runge–Kutta method.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_positive, is_concrete
from .._solvers._base import AbstractSolver
from .._solvers.ancestral import check_traced_non_negative
from .._solvers.runge_kutta import ExplicitRK, Heun
from ._base import AbstractWrappedSolver


class EDMStochastic(AbstractWrappedSolver):
    """EDM's stochastic sampler: churn, then an ODE step of ``solver`` (default :class:`Heun`).

    ``churn``, ``s_tmin``, ``s_tmax`` and ``s_noise`` may be traced. ``solver`` must be a
    single-step method (it is started afresh from the raised level every step).
    """

    churn: Float[Array, ""] | float = 0.0
    s_tmin: Float[Array, ""] | float = 0.0
    s_tmax: Float[Array, ""] | float = float("inf")
    s_noise: Float[Array, ""] | float = 1.0
    solver: AbstractSolver = Heun()

    step_form = None  # the step starts from the churned state

    def __check_init__(self):
        if not isinstance(self.solver, ExplicitRK):
            raise ValueError(
                "EDMStochastic's solver must be a single-step Runge-Kutta method (Euler(), Heun(), "
                f"DPM2()); got {type(self.solver).__name__}."
            )
        for name in ("churn", "s_tmin", "s_tmax", "s_noise"):
            # s_tmax = inf: churn at every level above s_tmin (EDM's default).
            check_positive(
                f"EDMStochastic {name}",
                getattr(self, name),
                allow_zero=True,
                allow_inf=name == "s_tmax",
            )

    @property
    def _churns(self) -> bool:
        return not (is_concrete(self.churn) and float(self.churn) == 0.0)

    @property
    def stochastic(self) -> bool:
        return self._churns or self.solver.stochastic

    def _churn(self, ctx, x):
        if not self._churns:
            return ctx, x
        n = jnp.maximum(ctx.n, 1).astype(ctx.sigma.dtype)
        churn = check_traced_non_negative("EDMStochastic churn", self.churn)
        in_range = (ctx.sigma >= self.s_tmin) & (ctx.sigma <= self.s_tmax)
        gamma = jnp.where(in_range, jnp.minimum(churn / n, math.sqrt(2.0) - 1.0), 0.0)
        sigma_hat = ctx.sigma * (1.0 + gamma)
        # sigma_hat^2 - sigma^2 written as sigma^2 gamma (2 + gamma): never negative, even when a
        # fused multiply-add rounds the difference of squares below zero at gamma = 0.
        x_hat = x + ctx.sigma * jnp.sqrt(gamma * (2.0 + gamma)) * self.s_noise * ctx.noise(0)
        return ctx.replace(sigma=sigma_hat), x_hat

    def step(self, ctx, x, state):
        ctx_hat, x_hat = self._churn(ctx, x)
        return self.solver.step(ctx_hat, x_hat, state)

    def final_step(self, ctx, x, state):
        ctx_hat, x_hat = self._churn(ctx, x)
        return self.solver.final_step(ctx_hat, x_hat, state)
