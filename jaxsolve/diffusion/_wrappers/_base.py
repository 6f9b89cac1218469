"""The base of every solver that runs another solver and changes part of what it does.

A wrapper reports what its inner solver reports — ``stochastic``, ``adaptive``,
``allows_increasing_grid``, ``step_form``, ``phase``, ``denoiser_output_shape``, ``init`` and the
final step — and overrides only what it changes, so that the driver treats ``DualFast(DPMAdaptive())``
as it treats ``DPMAdaptive()`` (it needs ``max_steps`` and reports running out of them).

Two hooks tell the base how to reach the inner solver: ``inner_state(state)`` (a wrapper with a
state of its own keeps the inner solver's inside it) and ``inner_context(ctx)`` (a wrapper that
shows its solver another grid, as :class:`~jaxsolve.diffusion.Teleport` does). By default both are
the identity. A wrapper that cannot honour an inner solver's property (a noise jump has no
adaptive counterpart) refuses it when it is built, naming the property.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx

from .._solvers._base import AbstractSolver, StepContext


class AbstractWrappedSolver(AbstractSolver):
    """A solver around an inner ``solver``, forwarding each of its properties and hooks."""

    solver: eqx.AbstractVar[AbstractSolver]

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(
                f"{type(self).__name__}: solver must be a jaxsolve sampler (AbstractSolver); got "
                f"{type(self.solver).__name__}."
            )

    # Properties: the inner solver's.
    @property
    def stochastic(self) -> bool:
        return self.solver.stochastic

    @property
    def adaptive(self) -> bool:
        return self.solver.adaptive

    @property
    def allows_increasing_grid(self) -> bool:
        return self.solver.allows_increasing_grid

    @property
    def step_form(self) -> str | None:
        return self.solver.step_form

    # How the inner solver is reached.
    def inner_state(self, state: Any) -> Any:
        """The inner solver's state inside this wrapper's."""
        return state

    def inner_context(self, ctx: StepContext) -> StepContext:
        """The context the inner solver sees."""
        return ctx

    # Hooks: the inner solver's.
    def init(self, x, sigmas):
        return self.solver.init(x, sigmas)

    def phase(self, ctx, state):
        return self.solver.phase(self.inner_context(ctx), self.inner_state(state))

    def denoiser_output_shape(self, x_shape):
        return self.solver.denoiser_output_shape(x_shape)

    def final_step(self, ctx, x, state):
        # Valid as it stands for a wrapper whose state is the inner solver's; one with a state of
        # its own overrides it.
        return self.solver.final_step(self.inner_context(ctx), x, state)


def refuse(wrapper: str, solver: AbstractSolver, prop: str, reason: str) -> None:
    """Raise the error of a wrapper that cannot honour its inner solver's ``prop``."""
    raise ValueError(f"{wrapper} cannot wrap {type(solver).__name__}, which is {prop}: {reason}")


def require_grid_stepper(
    wrapper: str, solver: AbstractSolver, reason: str, *, up: str = ""
) -> None:
    """Refuse an inner solver that does not step down the grid one level at a time: an adaptive
    one (it keeps its own levels) or one whose grid may go up (``up`` says why that matters)."""
    if not isinstance(solver, AbstractSolver):
        return  # the base names it
    if solver.adaptive:
        refuse(wrapper, solver, "adaptive (it keeps its own levels)", reason)
    if solver.allows_increasing_grid:
        refuse(wrapper, solver, f"for grids that go up{up}", reason)
