r"""Adams–Bashforth samplers on the noise prediction: LMS, DEIS, iPNDM.

In VE scale the probability-flow ODE is :math:`\mathrm{d}x/\mathrm{d}\sigma = \hat\epsilon(x, \sigma)`,
so :math:`x_n = x + \int_\sigma^{\sigma_n}\hat\epsilon\,\mathrm{d}\tau`. An Adams–Bashforth method
extrapolates :math:`\hat\epsilon` from the last ``k`` points and integrates the extrapolant:
:math:`x_n = x + \sum_j w_j\hat\epsilon_{-j}`. The methods differ only in the weights:

* :class:`DEIS` ("Fast Sampling of Diffusion Models with Exponential Integrator"): Lagrange
  extrapolation in a time variable :math:`u(\sigma)` — the model's time ``t`` of a schedule
  (tAB-DEIS, the paper's recommended variant), :math:`\log\sigma` (diffusers' log-:math:`\rho`
  DEIS) or :math:`\sigma` itself (:math:`\rho`AB-DEIS) — integrated exactly against
  :math:`\mathrm{d}\sigma`: :math:`w_j = \int_{u(\sigma)}^{u(\sigma_n)} L_j(u)\,\sigma'(u)\,\mathrm{d}u`.
  We evaluate the integral with 8-point Gauss–Legendre quadrature (exact for ``sigma``; for the
  other variables the quadrature error is far below the method's).
* :class:`LMS` (k-diffusion's ``sample_lms``, diffusers' ``LMSDiscreteScheduler``): the same with
  :math:`u = \sigma`, order 4 by default.
* :class:`IPNDM` (improved PNDM, from the DEIS paper): fixed Adams–Bashforth weights
  :math:`(1), (3, -1)/2, (23, -16, 5)/12, (55, -59, 37, -9)/24` times :math:`\sigma_n - \sigma`,
  with lower orders while the history fills. Its order 4 assumes equal steps in :math:`\sigma`;
  on other grids the fixed weights reduce the order.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._core import check_int
from .._adapters import eps_from_denoised
from .._schedules import AbstractSchedule
from . import _history as hist
from ._base import AbstractSolver

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)

_AB = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


class _AdamsBashforth(AbstractSolver):
    """Engine: history of :math:`\\hat\\epsilon` and ``x_n = x + sum_j w_j eps_j``."""

    order: int = eqx.field(static=True)
    max_order: ClassVar[int] = 4
    diffusers_lower_order_final: ClassVar[bool] = False
    step_form: ClassVar[str | None] = "noise"

    def __check_init__(self):
        check_int(f"{type(self).__name__} order", self.order, maximum=self.max_order)

    def init(self, x, sigmas):
        return hist.empty(x, self.order)

    @abc.abstractmethod
    def weights(self, k, sigmas, sigma_next):
        """Weights for the ``k`` most recent points; ``sigmas[0]`` is the current level."""

    def step(self, ctx, x, history):
        eps = eps_from_denoised(x, ctx.sigma, ctx.denoise(x, ctx.sigma))
        history = hist.push(history, eps, ctx.sigma)
        n = ctx.n - 1 if getattr(self, "stop_before_final", False) else ctx.n
        order = hist.effective_order(
            self.order, history.count - 1, ctx.i, n, self.diffusers_lower_order_final
        )
        points = [hist.recent(history, j) for j in range(self.order)]

        def update(k):
            def branch(x):
                w = self.weights(k, [s for _, s in points[:k]], ctx.sigma_next)
                return x + sum(w_j * e for w_j, (e, _) in zip(w, points[:k], strict=True))

            return branch

        return hist.switch_on_order(
            order, [update(k) for k in range(1, self.order + 1)], x
        ), history


def _lagrange_weights(u_nodes, u0, u1, dsigma_du):
    """:math:`\\int_{u_0}^{u_1} L_j(u)\\,\\sigma'(u)\\,\\mathrm{d}u` by Gauss–Legendre, for each node j."""
    half = 0.5 * (u1 - u0)
    mid = 0.5 * (u1 + u0)
    us = mid + half * jnp.asarray(_GL_NODES, dtype=jnp.result_type(u0))
    jac = dsigma_du(us) * half * jnp.asarray(_GL_WEIGHTS, dtype=jnp.result_type(u0))
    weights = []
    for j, uj in enumerate(u_nodes):
        basis = jnp.ones_like(us)
        for m, um in enumerate(u_nodes):
            if m != j:
                basis = basis * (us - um) / (uj - um)
        weights.append(jnp.sum(basis * jac))
    return weights


class DEIS(_AdamsBashforth):
    """DEIS: Adams–Bashforth in ``variable`` (``"t"`` with a ``schedule``, ``"log_sigma"``, ``"sigma"``).

    ``DEIS(order, variable="t", schedule=sched)`` is tAB-DEIS in the model's own time;
    ``variable="log_sigma"`` (the default, needs no schedule) is diffusers' ``DEISMultistepScheduler``.
    The order is lowered on the last steps as diffusers does (``lower_order_final``, when fewer
    than 15 steps); ``stop_before_final=True`` counts those steps up to the grid's last positive
    level, where diffusers' DEIS run ends (the grid ``[..., s_min, 0]``).
    """

    order: int = eqx.field(static=True, default=3)
    variable: str = eqx.field(static=True, default="log_sigma")
    schedule: AbstractSchedule | None = None
    lower_order_final: bool = eqx.field(static=True, default=True)
    stop_before_final: bool = eqx.field(static=True, default=False)
    max_order: ClassVar[int] = 3

    def __check_init__(self):
        check_int("DEIS order", self.order, maximum=3)
        if self.variable not in ("t", "log_sigma", "sigma"):
            raise ValueError(
                f"variable must be 't', 'log_sigma' or 'sigma'; got {self.variable!r}."
            )
        if self.variable == "t" and self.schedule is None:
            raise ValueError("variable='t' (tAB-DEIS) needs schedule= to define the time t(sigma).")

    @property
    def diffusers_lower_order_final(self):
        return self.lower_order_final

    def _u(self, sigma):
        if self.variable == "sigma":
            return sigma
        if self.variable == "log_sigma":
            return jnp.log(sigma)
        return self.schedule.from_ve_sigma(sigma)

    def _dsigma_du(self, u):
        if self.variable == "sigma":
            return jnp.ones_like(u)
        if self.variable == "log_sigma":
            return jnp.exp(u)
        _, ds_dt = _ve_sigma_derivative(self.schedule, u)
        return ds_dt

    def weights(self, k, sigmas, sigma_next):
        nodes = [self._u(s) for s in sigmas]
        return _lagrange_weights(nodes, nodes[0], self._u(sigma_next), self._dsigma_du)


def _ve_sigma_derivative(schedule, t):
    return jax.jvp(schedule.to_ve_sigma, (t,), (jnp.ones_like(t),))


class LMS(_AdamsBashforth):
    """Linear multistep in :math:`\\sigma` (k-diffusion ``sample_lms``), ``order`` 1-4 (default 4)."""

    order: int = eqx.field(static=True, default=4)

    def weights(self, k, sigmas, sigma_next):
        return _lagrange_weights(sigmas, sigmas[0], sigma_next, jnp.ones_like)


class IPNDM(_AdamsBashforth):
    """Improved PNDM: fixed Adams–Bashforth weights on :math:`\\hat\\epsilon` (order 4 on equal steps)."""

    order: int = eqx.field(static=True, default=4)

    def weights(self, k, sigmas, sigma_next):
        return [c * (sigma_next - sigmas[0]) for c in _AB[k]]
