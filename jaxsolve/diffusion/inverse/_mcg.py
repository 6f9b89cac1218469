r"""Manifold-constrained gradients ("Improving Diffusion Models for Inverse Problems using Manifold
Constraints", Chung, Sim, Ryu, Ye).

MCG alternates two corrections around every step of an unconditional sampler:

1. the **manifold-constrained gradient** — the step's denoiser is guided by the gradient of the
   measurement misfit of the denoised estimate, taken through the denoiser (so the correction stays
   on the data manifold the denoiser knows): :class:`~jaxsolve.diffusion.inverse.DPS`'s guidance,
   with the paper's residual-normalised step;
2. the **data-consistency projection** — after the step to :math:`\sigma_n` the state is projected
   onto the measurement noised to that level, :math:`x_n \leftarrow x_n + A^{+}(y + \sigma_n Az -
   Ax_n)` (for inpainting, the observed entries replaced by :math:`y + \sigma_n z`; the same
   projection as :class:`~jaxsolve.diffusion.inverse.RePaint`, without its jumps).

The final step lands on the guided denoised estimate projected onto :math:`Ax_0 = y`. The paper
targets noiseless measurements; with ``noise_std > 0`` the projection still copies the noisy
:math:`y` into the row space (as RePaint does), which biases the samples — the benchmark measures
how much.
"""

from __future__ import annotations

from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float
from .._solvers._base import AbstractSolver
from .._wrappers._base import AbstractWrappedSolver, require_grid_stepper
from ._guidance import DPS
from ._measurement import Measurement, check_measurement
from ._repaint import _project


class MCG(AbstractWrappedSolver):
    """``solver`` with DPS guidance of its denoiser and a projection onto the measurement after
    every step (see the module). Stochastic whatever ``solver`` is: draw 0 of a step is the
    projection's, draw ``k`` of ``solver`` is the step's draw ``k + 1``.

    Args:
        solver: the unconditional sampler (the paper's is ancestral); not adaptive, not one that
            jumps up the grid.
        measurement: a :class:`~jaxsolve.diffusion.inverse.Measurement`.
        scale: the gradient step :math:`\\zeta` of the normalised DPS guidance (may be traced).
    """

    solver: AbstractSolver
    measurement: Measurement
    scale: Float[Array, "..."]

    stochastic = True
    allows_increasing_grid = False
    step_form = None

    def __init__(self, solver: AbstractSolver, measurement: Measurement, scale: ArrayLike = 1.0):
        self.solver = solver
        self.measurement = measurement
        self.scale = as_float(scale)

    def __check_init__(self):
        check_measurement("MCG", self.measurement)
        require_grid_stepper("MCG", self.solver, "MCG projects after every grid step.")

    def inner_context(self, ctx):
        guided = DPS(ctx.denoise, self.measurement, self.scale) if ctx.denoise else None
        return ctx.replace(noise=lambda k: ctx.noise(k + 1), denoise=guided)

    def step(self, ctx, x, state):
        x_next, state = self.solver.step(self.inner_context(ctx), x, state)
        return _project(self.measurement, x_next, ctx.sigma_next, ctx.noise(0)), state

    def final_step(self, ctx, x, state):
        x0, state = self.solver.final_step(self.inner_context(ctx), x, state)
        return _project(self.measurement, x0, 0.0, None), state


__all__ = ["MCG"]
