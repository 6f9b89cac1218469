r"""What every sampler shares: the step context the driver hands to a solver, and the solver base.

A solver is an :class:`equinox.Module` of hyper-parameters with

* ``init(x, sigmas) -> state`` — its history buffers (fixed shapes, carried by the driver's scan);
* ``step(ctx, x, state) -> (x_next, state)`` — one move from ``ctx.sigma`` to ``ctx.sigma_next > 0``;
* ``final_step(ctx, x, state)`` — the last move, to :math:`\sigma = 0`. By default it lands on the
  denoiser output :math:`D(x, \sigma)` (a first-order step to zero noise *is* the denoised
  estimate, as in k-diffusion and diffusers' ``final_sigmas_type="zero"``).

The driver (:func:`jaxsolve.diffusion.sample`) owns the loop, masking, NFE counting, noise and
error reporting; no solver writes a loop.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ..._core import RESULTS

# Phases of one driver iteration.
SKIP, FINAL, STEP = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class StepContext:
    """Everything a solver may read during one driver iteration.

    ``denoise(x, sigma)`` is the user's denoiser (counted and cast to the state's dtype);
    ``noise(k)`` the ``k``-th standard-normal draw of this step, shaped like the state, per sample
    from ``fold_in`` of the sample's key (so independent of the batch size). ``i`` is the step
    index and ``n`` the number of steps of the grid (both traced integers). ``batch_ndim`` is
    :func:`~jaxsolve.diffusion.sample`'s: the number of leading batch axes of the state (static).
    """

    denoise: Callable
    noise: Callable
    sigmas: Float[Array, " L"]
    i: Int[Array, ""]
    n: Int[Array, ""]
    sigma: Float[Array, ""]
    sigma_next: Float[Array, ""]
    batch_ndim: int = 1

    def replace(self, **changes) -> StepContext:
        return dataclasses.replace(self, **changes)

    def sigma_at(self, j) -> Float[Array, ""]:
        """Grid level at index ``j`` (clipped into the grid)."""
        return self.sigmas[jnp.clip(j, 0, self.sigmas.shape[0] - 1)]


class AbstractSolver(eqx.Module):
    """Base class of every sampler. See the module docstring for the contract."""

    #: Does the solver draw noise (then ``sample`` requires ``key=`` or ``noise=``)?
    stochastic: ClassVar[bool] = False
    #: May the grid go up (Restart's forward-noise jumps)?
    allows_increasing_grid: ClassVar[bool] = False

    def init(self, x: Float[Array, "..."], sigmas: Float[Array, " L"]) -> Any:
        """Initial solver state (history buffers). Stateless solvers return ``None``."""
        return None

    @abc.abstractmethod
    def step(self, ctx: StepContext, x: Float[Array, "..."], state: Any) -> tuple[Array, Any]:
        """Advance ``x`` from ``ctx.sigma`` to ``ctx.sigma_next`` (> 0).

        May return ``(x_next, state, nfe)`` when the number of denoiser calls is data-dependent.
        """

    def final_step(self, ctx: StepContext, x: Float[Array, "..."], state: Any) -> tuple[Array, Any]:
        """The last step, to sigma = 0: the denoised estimate."""
        return ctx.denoise(x, ctx.sigma), state

    def phase(self, ctx: StepContext, state: Any) -> Int[Array, ""]:
        """SKIP past the last step, FINAL into sigma = 0, else STEP."""
        return jnp.where(ctx.i >= ctx.n, SKIP, jnp.where(ctx.sigma_next == 0, FINAL, STEP))

    def denoiser_output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape the denoiser must return for an input of ``x_shape``: ``x0_hat`` is shaped
        like ``x``. (The driver checks it once, when it traces the first call.)"""
        return tuple(x_shape)

    def terminal_result(self, state: Any):
        """Result code once the scan is over (adaptive solvers report running out of steps)."""
        return RESULTS.successful

    def num_iterations(self, grid_steps: int, max_steps: int | None) -> int:
        """Length of the driver's scan. Grid solvers take one iteration per grid interval."""
        if max_steps is not None and max_steps != grid_steps:
            raise ValueError(
                f"max_steps={max_steps} is only for adaptive solvers; {type(self).__name__} takes "
                f"one step per grid interval ({grid_steps})."
            )
        return grid_steps


def resolve_batch_ndim(solver, ctx: StepContext) -> int:
    """``solver.batch_ndim`` where set, else the driver's; a mismatch would split the state into
    the wrong samples, so it raises."""
    own = solver.batch_ndim
    if own is not None and own != ctx.batch_ndim:
        raise ValueError(
            f"{type(solver).__name__}(batch_ndim={own}) but sample(batch_ndim={ctx.batch_ndim}): "
            "leave the solver's batch_ndim unset (it follows sample's) or pass the same value."
        )
    return ctx.batch_ndim


def check_order(name: str, order: int, allowed) -> int:
    if not isinstance(order, int) or isinstance(order, bool) or order not in allowed:
        raise ValueError(f"{name} order must be one of {sorted(allowed)}; got {order!r}.")
    return order


def lam(sigma):
    """Half log-SNR in VE scale, :math:`\\lambda = -\\log\\sigma`."""
    return -jnp.log(sigma)
