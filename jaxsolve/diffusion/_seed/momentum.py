r"""Momentum for multistep samplers ("Diffusion Sampling with Momentum for Mitigating Divergence
Artifacts"): Polyak's heavy ball (HB) and the generalised heavy ball (GHVB).

Every explicit multistep sampler in jaxsolve takes a step of the form

.. math:: x_n = a\,x + b\,u, \qquad
          (a, b) = \begin{cases} (\sigma_n/\sigma,\ 1 - \sigma_n/\sigma) & \text{data form (DPM-Solver++)}\\
                                 (1,\ \sigma_n - \sigma) & \text{noise form (DDIM, PLMS/iPNDM, LMS, DEIS, DPM-Solver)}
                   \end{cases}

where :math:`u` is the method's combination of model outputs (for DPM-Solver++(2M),
:math:`u = D_0 + \tfrac12 D_1`; for PLMS the Adams–Bashforth combination of
:math:`\hat\epsilon`). **HB** replaces :math:`u` by a velocity with momentum,

.. math:: v_{n+1} = (1-\beta)\,v_n + \beta\,u_n, \qquad x_{n+1} = a\,x_n + b\,v_{n+1},
          \qquad v_1 = u_0,

which enlarges the stability region at the price of first-order convergence (the paper proves
order 1; ``tests/diffusion`` measures it). :class:`HeavyBall` wraps a solver and recovers
:math:`u` from its step as :math:`(x_n^{\text{base}} - a x)/b`, so it needs no access to the
solver's internals; ``beta = 1`` reproduces the base solver. The last step, into
:math:`\sigma = 0`, is the base solver's (it lands on the denoiser output).

**GHVB** of order :math:`r\in(0, 4]` puts the momentum *before* the multistep combination:
with :math:`k = \lceil r\rceil` and :math:`\beta = r - \lfloor r\rfloor` (1 when :math:`r` is an
integer),

.. math:: v_{n+1} = (1-\beta)\,v_n + \beta\,\hat\epsilon_n, \qquad
          x_{n+1} = x_n + (\sigma_{n+1} - \sigma_n)\,\frac1\beta\sum_{j<k} c_j(\beta)\,v_{n+1-j},

with the paper's :math:`\beta`-dependent Adams–Bashforth weights
:math:`c(\beta) = (\beta)`, :math:`((2+\beta), -(2-\beta))/2`,
:math:`((18+5\beta), -(24-8\beta), (6-\beta))/12`,
:math:`((46+9\beta), -(78-19\beta), (42-5\beta), -(10-\beta))/24` (lower orders while the
history fills). For :math:`\beta = 1` these are the Adams–Bashforth weights, so GHVB of an integer
order is PLMS, i.e. :class:`~jaxsolve.diffusion.IPNDM` of that order; for
:math:`\beta < 1` the weights cancel the lag of the moving average to leading order, so
``GHVB(r)`` keeps order :math:`\lceil r\rceil` on equal steps (the tests measure 2 and 3 for
``r = 1.5, 2.5``; the geometric start-up transient of the average only delays the asymptotic
rate). Like iPNDM, the fixed weights assume equal steps in :math:`\sigma`.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._core import is_concrete
from .._adapters import eps_from_denoised
from .._solvers import _history as hist
from .._solvers._base import AbstractSolver
from .._solvers.dpm_solver import DPMSolver, DPMSolverPP
from .._solvers.linear_multistep import DEIS, IPNDM, LMS
from .._solvers.runge_kutta import Euler


def _form(solver) -> str:
    """'data' or 'noise': the (a, b) of the solver's step (see the module)."""
    if isinstance(solver, DPMSolverPP) and solver.multistep:
        return "data"
    if isinstance(solver, DPMSolver) and solver.multistep:
        return "noise"
    if isinstance(solver, (Euler, DEIS, LMS, IPNDM)):
        return "noise"
    raise TypeError(
        "HeavyBall wraps an explicit one-update-per-step sampler: Euler (= DDIM), multistep "
        "DPMSolver / DPMSolverPP, DEIS, LMS or IPNDM (PLMS); got "
        f"{type(solver).__name__}{'' if getattr(solver, 'multistep', True) else ' (singlestep)'}."
    )


def _check_beta(beta):
    if is_concrete(beta):
        b = float(np.asarray(beta))
        if not 0.0 < b <= 1.0:
            raise ValueError(f"beta must lie in (0, 1]; got {b}.")


class HeavyBall(AbstractSolver):
    """Polyak heavy-ball momentum on a multistep sampler's update (see the module).

    ``beta`` in ``(0, 1]`` (may be traced); ``beta = 1`` is the base ``solver``. The paper's
    "DPM-Solver++ with HB" is ``HeavyBall(DPMSolverPP(order=2), beta)`` and "PLMS with HB" is
    ``HeavyBall(IPNDM(order), beta)``.
    """

    solver: AbstractSolver
    beta: Float[Array, ""] | float = 0.8

    def __check_init__(self):
        _form(self.solver)
        _check_beta(self.beta)

    def _coefficients(self, sigma, sigma_next):
        if _form(self.solver) == "data":
            ratio = sigma_next / sigma
            return ratio, 1.0 - ratio
        return jnp.ones_like(sigma), sigma_next - sigma

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas), jnp.zeros_like(x), jnp.zeros((), bool)

    def step(self, ctx, x, state):
        inner, velocity, started = state
        x_base, inner = self.solver.step(ctx, x, inner)[:2]
        a, b = self._coefficients(ctx.sigma, ctx.sigma_next)
        u = (x_base - a * x) / b
        velocity = jnp.where(started, (1.0 - self.beta) * velocity + self.beta * u, u)
        return a * x + b * velocity, (inner, velocity, jnp.ones((), bool))

    def final_step(self, ctx, x, state):
        inner, velocity, started = state
        x_out, inner = self.solver.final_step(ctx, x, inner)[:2]
        return x_out, (inner, velocity, started)


def _ghvb_weights(k: int, beta):
    """Weights of v_{n+1}, v_n, ... for GHVB of integer part k (already divided by beta)."""
    b = beta
    if k == 1:
        w = (b,)
    elif k == 2:
        w = ((2 + b) / 2, -(2 - b) / 2)
    elif k == 3:
        w = ((18 + 5 * b) / 12, -(24 - 8 * b) / 12, (6 - b) / 12)
    else:
        w = ((46 + 9 * b) / 24, -(78 - 19 * b) / 24, (42 - 5 * b) / 24, -(10 - b) / 24)
    return [wj / b for wj in w]


class GHVB(AbstractSolver):
    """Generalised heavy ball of order ``r`` in ``(0, 4]`` on :math:`\\hat\\epsilon` (see the module).

    ``r`` is static (it fixes the history length ``ceil(r)``). ``GHVB(k)`` for an integer ``k``
    is PLMS of order ``k`` (= ``IPNDM(order=k)``); ``GHVB(1.5)`` is the paper's usual choice.
    """

    r: float = 1.5

    def __check_init__(self):
        if not isinstance(self.r, (int, float)) or isinstance(self.r, bool):
            raise TypeError(f"GHVB order r must be a Python number; got {type(self.r).__name__}.")
        if not 0.0 < self.r <= 4.0:
            raise ValueError(f"GHVB order r must lie in (0, 4]; got {self.r}.")

    @property
    def k(self) -> int:
        return math.ceil(self.r - 1e-12)

    @property
    def beta(self) -> float:
        frac = self.r - math.floor(self.r)
        return frac if frac > 1e-12 else 1.0

    def init(self, x, sigmas):
        return hist.empty(x, self.k), jnp.zeros_like(x)

    def step(self, ctx, x, state):
        history, velocity = state
        eps = eps_from_denoised(x, ctx.sigma, ctx.denoise(x, ctx.sigma))
        velocity = jnp.where(history.count > 0, (1.0 - self.beta) * velocity + self.beta * eps, eps)
        history = hist.push(history, velocity, ctx.sigma)
        order = jnp.minimum(history.count, self.k)
        points = [hist.recent(history, j)[0] for j in range(self.k)]

        def update(k):
            def branch(x):
                w = _ghvb_weights(k, self.beta)
                return x + (ctx.sigma_next - ctx.sigma) * sum(
                    wj * v for wj, v in zip(w, points[:k], strict=True)
                )

            return branch

        x_next = hist.switch_on_order(order, [update(k) for k in range(1, self.k + 1)], x)
        return x_next, (history, velocity)
