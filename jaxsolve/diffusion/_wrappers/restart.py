r"""Restart sampling ("Restart Sampling for Improving Generative Processes", Xu et al.).

Restart alternates an ODE solver with large forward-noise jumps: when the trajectory reaches the
lower end :math:`\sigma_j` of a restart interval :math:`[\sigma_j, \sigma_\text{max}]`, it is
re-noised to :math:`\sigma_\text{max}` by :math:`x \leftarrow x + \sqrt{\sigma_\text{max}^2 -
\sigma_j^2}\,z` (exactly the forward process, so the added noise contracts earlier errors) and
integrated back down to :math:`\sigma_j` with ``n_restart`` steps; this repeats ``k`` times before
the main trajectory continues.

In jaxsolve the restarts are *data*: :func:`~jaxsolve.diffusion.restart_sigmas` builds the
augmented grid (a jump is an increase of :math:`\sigma`), and :class:`Restart` takes a jump where
the grid goes up and a step of its ``solver`` where it goes down — no extra loop. The jumps follow
the grid, so an adaptive solver (which keeps its own levels) is refused.
"""

from __future__ import annotations

import jax.numpy as jnp

from .._solvers._base import AbstractSolver
from .._solvers.runge_kutta import Heun
from ._base import AbstractWrappedSolver, refuse


class Restart(AbstractWrappedSolver):
    """Forward-noise jumps where the grid increases, ``solver`` steps (default Heun) elsewhere.

    Use with a grid from :func:`~jaxsolve.diffusion.restart_sigmas`. A multistep ``solver``
    restarts its history after each jump.
    """

    solver: AbstractSolver = Heun()
    s_noise: float = 1.0

    stochastic = True
    allows_increasing_grid = True
    step_form = None

    def __check_init__(self):
        if isinstance(self.solver, AbstractSolver) and self.solver.adaptive:
            refuse(
                "Restart",
                self.solver,
                "adaptive (it keeps its own levels)",
                "Restart's noise jumps are where the grid goes up.",
            )

    def step(self, ctx, x, state):
        going_up = ctx.sigma_next > ctx.sigma
        # Under vmap both branches run: keep the ODE branch away from an upward "step".
        ode_ctx = ctx.replace(sigma_next=jnp.where(going_up, 0.5 * ctx.sigma, ctx.sigma_next))

        def jump(x, state):
            x_up = x + self.s_noise * jnp.sqrt(ctx.sigma_next**2 - ctx.sigma**2) * ctx.noise(0)
            return x_up, self.solver.init(x, ctx.sigmas)

        def ode(x, state):
            return self.solver.step(ode_ctx, x, state)

        return ctx.cond(going_up, jump, ode, x, state)
