r"""Adaptive-step DPM-Solver-12 / 23 (DPM-Solver paper §4; k-diffusion's ``dpm_adaptive``).

Each attempt from :math:`\lambda_s` to :math:`\lambda_t = \min(\lambda_\text{end}, \lambda_s + h)`
computes a lower- and a higher-order DPM-Solver estimate sharing model calls — DPM-Solver-1 and
DPM-Solver-2 (:math:`r_1 = 1/2`) for ``order=2``, DPM-Solver-2 (:math:`r_1 = 1/3`) and
DPM-Solver-3 (:math:`r_1 = 1/3, r_2 = 2/3`) for ``order=3`` — and the error

.. math:: E = \Big\lVert \frac{x_\text{low} - x_\text{high}}{\max(a_\text{tol},\ r_\text{tol}\max(|x_\text{low}|, |x_\text{prev}|))}\Big\rVert_\text{RMS}.

A PID controller on :math:`1/E` (exponents :math:`(p+i+d)/o`, :math:`-(p+2d)/o`, :math:`d/o`, the
factor passed through :math:`1 + \arctan(f - 1)`) accepts the step when the factor is at least
``accept_safety`` and rescales :math:`h` either way. Accepted steps keep :math:`x_\text{high}`.

With :func:`jaxsolve.diffusion.sample` use the grid ``[sigma_max, sigma_min, 0]`` and pass
``max_steps`` (the number of attempts, accepted or rejected); every attempt costs ``order``
model calls. After reaching ``sigma_min`` the driver's final step denoises (k-diffusion stops at
``sigma_min``). A longer grid is integrated from its first level to its last positive one (the
levels between are not visited). The solver is ``adaptive``: the driver requires ``max_steps``
and reports ``RESULTS.max_steps_reached`` (the sample NaN) when the attempts run out before the
final step. The error is an RMS over the whole state; ``jax.vmap`` over samples gives each its own
step sizes (k-diffusion shares one step size across a batch).
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ..._core import check_int
from .._adapters import eps_from_denoised
from ._base import FINAL, STEP, AbstractSolver


class _AdaptiveState(NamedTuple):
    lam: Float[Array, ""]  # current half log-SNR
    h: Float[Array, ""]  # proposed step in lambda
    x_prev: Float[Array, "..."]
    inv_errors: Float[Array, " 3"]
    started: Bool[Array, ""]
    done: Bool[Array, ""]  # reached sigma_min
    accepted: Float[Array, ""]
    rejected: Float[Array, ""]


class DPMAdaptive(AbstractSolver):
    """Adaptive DPM-Solver-12 (``order=2``) or -23 (``order=3``, default), k-diffusion's defaults."""

    order: int = eqx.field(static=True, default=3)
    rtol: float = 0.05
    atol: float = 0.0078
    h_init: float = 0.05
    pcoeff: float = 0.0
    icoeff: float = 1.0
    dcoeff: float = 0.0
    accept_safety: float = 0.81

    adaptive = True

    def __check_init__(self):
        check_int("DPMAdaptive order", self.order, minimum=2, maximum=3)

    def _ends(self, ctx):
        # Grid [sigma_max, sigma_min, 0]: integrate in lambda from -log sigma_max to -log sigma_min.
        # sigma_min is the last positive level (sigmas[n - 1]), so a longer or zero-padded grid
        # ends there too, not at sigmas[1].
        return -jnp.log(ctx.sigmas[0]), -jnp.log(_last_level(ctx))

    def init(self, x, sigmas):
        zero = jnp.zeros((), x.dtype)
        return _AdaptiveState(
            lam=-jnp.log(sigmas[0]).astype(x.dtype),
            h=jnp.asarray(self.h_init, x.dtype),
            x_prev=x,
            inv_errors=jnp.ones((3,), x.dtype),
            started=jnp.zeros((), bool),
            done=jnp.zeros((), bool),
            accepted=zero,
            rejected=zero,
        )

    def phase(self, ctx, state):
        # Once the final step is taken the driver skips the remaining attempts.
        return jnp.where(state.done, FINAL, STEP)

    def step(self, ctx, x, state):
        lam_start, lam_end = self._ends(ctx)
        lam_s = jnp.where(state.done, lam_start, state.lam)  # harmless values when not stepping
        lam_t = jnp.minimum(lam_end, lam_s + state.h)
        h = jnp.maximum(lam_t - lam_s, 1e-6)
        sig = lambda lam: jnp.exp(-lam)

        def eps(y, lam):
            s = sig(lam)
            return eps_from_denoised(y, s, ctx.denoise(y, s))

        e_s = eps(x, lam_s)
        if self.order == 2:
            x_low = x - sig(lam_s + h) * jnp.expm1(h) * e_s
            s1 = lam_s + 0.5 * h
            e_1 = eps(x - sig(s1) * jnp.expm1(0.5 * h) * e_s, s1)
            x_high = x_low - sig(lam_s + h) * jnp.expm1(h) * (e_1 - e_s)  # 1/(2 r1) = 1
        else:
            r1, r2 = 1.0 / 3.0, 2.0 / 3.0
            s1, s2 = lam_s + r1 * h, lam_s + r2 * h
            e_1 = eps(x - sig(s1) * jnp.expm1(r1 * h) * e_s, s1)
            base = x - sig(lam_s + h) * jnp.expm1(h) * e_s
            x_low = base - sig(lam_s + h) / (2.0 * r1) * jnp.expm1(h) * (e_1 - e_s)
            u2 = (
                x
                - sig(s2) * jnp.expm1(r2 * h) * e_s
                - sig(s2) * (r2 / r1) * (jnp.expm1(r2 * h) / (r2 * h) - 1.0) * (e_1 - e_s)
            )
            e_2 = eps(u2, s2)
            x_high = base - sig(lam_s + h) / r2 * (jnp.expm1(h) / h - 1.0) * (e_2 - e_s)

        delta = jnp.maximum(
            self.atol, self.rtol * jnp.maximum(jnp.abs(x_low), jnp.abs(state.x_prev))
        )
        error = jnp.sqrt(jnp.mean(((x_low - x_high) / delta) ** 2))
        inv = 1.0 / (error + 1e-8)
        errs = jnp.where(state.started, state.inv_errors, jnp.full((3,), inv)).at[0].set(inv)
        b1 = (self.pcoeff + self.icoeff + self.dcoeff) / self.order
        b2 = -(self.pcoeff + 2.0 * self.dcoeff) / self.order
        b3 = self.dcoeff / self.order
        factor = errs[0] ** b1 * errs[1] ** b2 * errs[2] ** b3
        factor = 1.0 + jnp.arctan(factor - 1.0)
        accept = factor >= self.accept_safety
        errs = jnp.where(accept, jnp.stack([errs[0], errs[0], errs[1]]), errs)
        lam_new = jnp.where(accept, lam_t, lam_s)
        new_state = _AdaptiveState(
            lam=lam_new,
            h=state.h * factor,
            x_prev=jnp.where(accept, x_low, state.x_prev),
            inv_errors=errs,
            started=jnp.ones((), bool),
            done=lam_new >= lam_end - 1e-5,
            accepted=state.accepted + accept,
            rejected=state.rejected + (~accept),
        )
        return jnp.where(accept, x_high, x), new_state

    def final_step(self, ctx, x, state):
        return ctx.denoise(x, _last_level(ctx)), state


def _last_level(ctx):
    """The grid's last positive level, where the integration stops and the sample is denoised."""
    return ctx.sigma_at(ctx.n - 1)
