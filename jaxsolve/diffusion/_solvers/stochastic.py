r"""Stochastic samplers: EDM's churn, the reverse SDE, Langevin predictor-corrector.

* :class:`EDMStochastic` — "Elucidating the Design Space of Diffusion-Based Generative Models",
  Algorithm 2: before each step, if :math:`S_{t\min} \le \sigma \le S_{t\max}`, raise the noise
  level to :math:`\hat\sigma = (1+\gamma)\sigma`, :math:`\gamma = \min(S_\text{churn}/N, \sqrt2-1)`,
  by adding :math:`\sqrt{\hat\sigma^2 - \sigma^2}\,S_\text{noise}z`; then take the ODE step from
  :math:`\hat\sigma` to :math:`\sigma_n` with ``solver`` (Heun by default, as EDM; ``Euler()``
  gives diffusers' ``EDMEulerScheduler``). ``N`` is the number of steps.
* :class:`EulerMaruyama` — the reverse-time VE SDE
  :math:`\mathrm{d}x = -\mathrm{d}(\sigma^2)\,\nabla\log p_\sigma(x) + \sqrt{-\mathrm{d}(\sigma^2)}\,\mathrm{d}\bar w`
  ("Score-Based Generative Modeling through Stochastic Differential Equations"), one
  Euler–Maruyama step per interval:
  :math:`x_n = x + (\sigma^2 - \sigma_n^2)\nabla\log p_\sigma(x) + \sqrt{\sigma^2-\sigma_n^2}\,z`.
* :class:`PredictorCorrector` — the same paper's PC sampler: ``n_corrector`` Langevin steps at the
  current level, :math:`x \leftarrow x + \epsilon s + \sqrt{2\epsilon}\,z` with
  :math:`\epsilon = 2(r\lVert z\rVert/\lVert s\rVert)^2` (``snr`` = r, :math:`s` the score), then any
  ``predictor`` step. How the norms are taken is ``norms``:

  - ``"expected"`` (default): their values for pure noise, :math:`\lVert z\rVert^2 = d` and
    :math:`\lVert s\rVert^2 = d/\sigma^2`, i.e. :math:`\epsilon = 2(r\sigma)^2` — the annealed
    Langevin step :math:`\propto\sigma^2` of "Generative Modeling by Estimating Gradients of the
    Data Distribution". Each sample's step is independent of the others.
  - ``"batch"``: the paper's code — per-sample norms averaged over the batch. This couples the
    samples of a batch (a sample changes with the batch it is drawn in).
  - ``"sample"``: per-sample norms. Independent of the batch, but a sample that happens to sit
    where the score is tiny gets a huge step; only advisable in high dimension, where
    :math:`\lVert s\rVert` concentrates.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_positive, is_concrete
from .._adapters import score_from_denoised
from ._base import AbstractSolver, resolve_batch_ndim
from .ancestral import check_traced_non_negative
from .runge_kutta import ExplicitRK, Heun


class EDMStochastic(AbstractSolver):
    """EDM's stochastic sampler: churn, then an ODE step of ``solver`` (default :class:`Heun`).

    ``churn``, ``s_tmin``, ``s_tmax`` and ``s_noise`` may be traced. ``solver`` must be a
    single-step method (it is started afresh from the raised level every step).
    """

    churn: Float[Array, ""] | float = 0.0
    s_tmin: Float[Array, ""] | float = 0.0
    s_tmax: Float[Array, ""] | float = float("inf")
    s_noise: Float[Array, ""] | float = 1.0
    solver: AbstractSolver = Heun()

    def __check_init__(self):
        if not isinstance(self.solver, ExplicitRK):
            raise ValueError(
                "EDMStochastic's solver must be a single-step Runge-Kutta method (Euler(), Heun(), "
                f"DPM2()); got {type(self.solver).__name__}."
            )
        for name in ("churn", "s_tmin", "s_tmax", "s_noise"):
            check_positive(f"EDMStochastic {name}", getattr(self, name), allow_zero=True)

    @property
    def stochastic(self) -> bool:
        return not (is_concrete(self.churn) and float(self.churn) == 0.0)

    def _churn(self, ctx, x):
        if not self.stochastic:
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


class EulerMaruyama(AbstractSolver):
    """Euler–Maruyama for the reverse-time VE SDE (see the module docstring). Order 1/2 (strong)."""

    s_noise: Float[Array, ""] | float = 1.0

    stochastic = True

    def step(self, ctx, x, state):
        dvar = ctx.sigma**2 - ctx.sigma_next**2
        score = score_from_denoised(x, ctx.sigma, ctx.denoise(x, ctx.sigma))
        return x + dvar * score + jnp.sqrt(dvar) * self.s_noise * ctx.noise(0), state


class PredictorCorrector(AbstractSolver):
    """Langevin corrector (``n_corrector`` steps, signal-to-noise ratio ``snr``) then ``predictor``."""

    predictor: AbstractSolver = EulerMaruyama()
    snr: Float[Array, ""] | float = 0.16
    n_corrector: int = eqx.field(static=True, default=1)
    norms: str = eqx.field(static=True, default="expected")
    batch_ndim: int | None = eqx.field(static=True, default=None)  # None: sample()'s

    stochastic = True

    def __check_init__(self):
        if not isinstance(self.n_corrector, int) or self.n_corrector < 0:
            raise ValueError(f"n_corrector must be a non-negative int; got {self.n_corrector!r}.")
        if self.norms not in ("expected", "batch", "sample"):
            raise ValueError(f"norms must be 'expected', 'batch' or 'sample'; got {self.norms!r}.")

    def init(self, x, sigmas):
        return self.predictor.init(x, sigmas)

    def _step_size(self, sigma, z, score, batch_ndim):
        if self.norms == "expected":
            return 2.0 * (self.snr * sigma) ** 2

        def per_sample_norm(v):
            axes = tuple(range(batch_ndim, v.ndim))
            return jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))

        ratio = per_sample_norm(z) / per_sample_norm(score)
        if self.norms == "batch":
            ratio = jnp.mean(per_sample_norm(z)) / jnp.mean(per_sample_norm(score))
        return 2.0 * (self.snr * ratio) ** 2

    def _correct(self, ctx, x):
        batch_ndim = resolve_batch_ndim(self, ctx)
        # Corrector draws use indices 1..n_corrector; the predictor keeps draw 0 of this step.
        for k in range(self.n_corrector):
            score = score_from_denoised(x, ctx.sigma, ctx.denoise(x, ctx.sigma))
            z = ctx.noise(1 + k)
            eps = self._step_size(ctx.sigma, z, score, batch_ndim)
            x = x + eps * score + jnp.sqrt(2.0 * eps) * z
        return x

    def step(self, ctx, x, state):
        return self.predictor.step(ctx, self._correct(ctx, x), state)

    def final_step(self, ctx, x, state):
        return self.predictor.final_step(ctx, self._correct(ctx, x), state)
