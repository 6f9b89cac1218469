r"""Heavy-ball momentum on a sampler's update ("Diffusion Sampling with Momentum for Mitigating
Divergence Artifacts"); the same paper's generalised heavy ball is :class:`~jaxsolve.diffusion.GHVB`.

Many samplers take a step of the form

.. math:: x_n = a\,x + b\,u, \qquad
          (a, b) = \begin{cases} (\sigma_n/\sigma,\ 1 - \sigma_n/\sigma) & \text{data form (DPM-Solver++)}\\
                                 (1,\ \sigma_n - \sigma) & \text{noise form (DDIM, PLMS/iPNDM, LMS, DEIS, DPM-Solver, explicit Runge--Kutta, GENIE)}
                   \end{cases}

where :math:`u` is the method's combination of model outputs (for DPM-Solver++(2M),
:math:`u = D_0 + \tfrac12 D_1`; for PLMS the Adams–Bashforth combination of
:math:`\hat\epsilon`; for Heun the mean of its two slopes). A solver says which form its step has
with its ``step_form``. **HB** replaces :math:`u` by a velocity with momentum,

.. math:: v_{n+1} = (1-\beta)\,v_n + \beta\,u_n, \qquad x_{n+1} = a\,x_n + b\,v_{n+1},
          \qquad v_1 = u_0,

which enlarges the stability region at the price of first-order convergence (the paper proves
order 1; ``tests/diffusion`` measures it). :class:`HeavyBall` wraps a solver and recovers
:math:`u` from its step as :math:`(x_n^{\text{base}} - a x)/b`, so it needs no access to the
solver's internals; ``beta = 1`` reproduces the base solver. The last step, into
:math:`\sigma = 0`, is the base solver's (it lands on the denoiser output).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._core import is_concrete
from .._solvers._base import AbstractSolver
from .._solvers.ancestral import check_traced
from ._base import AbstractWrappedSolver


def _check_beta(beta):
    if is_concrete(beta):
        b = float(np.asarray(beta))
        if not 0.0 < b <= 1.0:
            raise ValueError(f"beta must lie in (0, 1]; got {b}.")


class HeavyBall(AbstractWrappedSolver):
    """Polyak heavy-ball momentum on a sampler's update (see the module).

    ``beta`` in ``(0, 1]`` (may be traced); ``beta = 1`` is the base ``solver``, which must have
    a ``step_form`` (an update ``a x + b u``). The paper's "DPM-Solver++ with HB" is
    ``HeavyBall(DPMSolverPP(order=2), beta)`` and "PLMS with HB" is
    ``HeavyBall(IPNDM(order), beta)``.
    """

    solver: AbstractSolver
    beta: Float[Array, ""] | float = 0.8

    def __check_init__(self):
        if isinstance(self.solver, AbstractSolver) and self.solver.step_form is None:
            raise TypeError(
                "HeavyBall wraps a sampler whose step is x_next = a x + b u (a step_form): Euler "
                "(= DDIM), Heun, DPM2, GENIE, multistep DPMSolver / DPMSolverPP, DEIS, LMS or "
                f"IPNDM (PLMS); got {type(self.solver).__name__}"
                f"{'' if getattr(self.solver, 'multistep', True) else ' (singlestep)'}."
            )
        _check_beta(self.beta)

    def _coefficients(self, sigma, sigma_next):
        if self.step_form == "data":
            ratio = sigma_next / sigma
            return ratio, 1.0 - ratio
        return jnp.ones_like(sigma), sigma_next - sigma

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas), jnp.zeros_like(x), jnp.zeros((), bool)

    def inner_state(self, state):
        return state[0]

    def step(self, ctx, x, state):
        inner, velocity, started = state
        x_base, inner = self.solver.step(ctx, x, inner)
        a, b = self._coefficients(ctx.sigma, ctx.sigma_next)
        u = (x_base - a * x) / b
        beta = check_traced(
            "HeavyBall beta", self.beta, lambda b: (b > 0) & (b <= 1), "lie in (0, 1]"
        )
        velocity = jnp.where(started, (1.0 - beta) * velocity + beta * u, u)
        return a * x + b * velocity, (inner, velocity, jnp.ones((), bool))

    def final_step(self, ctx, x, state):
        inner, velocity, started = state
        x_out, inner = self.solver.final_step(ctx, x, inner)
        return x_out, (inner, velocity, started)
