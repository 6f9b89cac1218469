r"""What every sampler shares: the step context the driver hands to a solver, and the solver base.

A solver is an :class:`equinox.Module` of hyper-parameters with

* ``init(x, sigmas) -> state`` — its history buffers (fixed shapes, carried by the driver's scan);
* ``step(ctx, x, state) -> (x_next, state)`` — one move from ``ctx.sigma`` to ``ctx.sigma_next > 0``;
* ``final_step(ctx, x, state) -> (x_out, state)`` — the last move, to :math:`\sigma = 0`. By
  default it lands on the denoiser output :math:`D(x, \sigma)` (a first-order step to zero noise
  *is* the denoised estimate, as in k-diffusion and diffusers' ``final_sigmas_type="zero"``).

``step`` and ``final_step`` always return the pair ``(x_next, state)``.

**Counting model evaluations (NFE) happens in one place**: the driver's denoiser ``ctx.denoise``
counts its calls while the step is traced, so a solver never reports a count. Two cases that a
trace-time count cannot see go through the context, which keeps the same tally:

* a step that calls the denoiser in only one branch of a ``lax.cond`` (Restart's noise jump, the
  teleport) branches with :meth:`StepContext.cond`, which counts the branch taken;
* a step whose calls cost more than one evaluation each (GENIE's Jacobian-vector product) adds
  the extra with :meth:`StepContext.add_evaluations`.

A wrapper that runs its solver under ``jax.vmap`` (TimeShift, per sample) counts the solver's
calls with :meth:`StepContext.evaluations_of` and adds them back once.

**Properties the driver reads** (class attributes or properties; a wrapper forwards each one of its
inner solver's, see :mod:`jaxsolve.diffusion._wrappers`):

* ``stochastic`` — draws noise (then ``sample`` requires ``key=`` or ``noise=``);
* ``adaptive`` — chooses its own steps between the grid's first two levels; the driver then runs
  ``sample(max_steps=...)`` attempts and reports ``RESULTS.max_steps_reached`` when they run out
  before the final step;
* ``allows_increasing_grid`` — the grid may go up (Restart's forward-noise jumps);
* ``step_form`` — ``"data"`` or ``"noise"`` when every step is :math:`x_n = a\,x + b\,u` with
  :math:`(a, b) = (\sigma_n/\sigma, 1-\sigma_n/\sigma)` resp. :math:`(1, \sigma_n - \sigma)` and
  :math:`u` the method's combination of model outputs (what heavy-ball momentum acts on); else
  ``None``;
* ``batch_ndim`` (a field of the solvers that split the state into samples; absent means
  ``None``) — ``None`` follows ``sample``'s, else the solver's own, which must then agree;

and the hooks ``phase(ctx, state)`` (skip, step, or the final step: an adaptive solver decides from
its state) and ``denoiser_output_shape(x_shape)``.

The driver (:func:`jaxsolve.diffusion.sample`) owns the loop, masking, NFE counting, noise and
error reporting; no solver writes a loop.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

# Phases of one driver iteration.
SKIP, FINAL, STEP = 0, 1, 2


class Evaluations:
    """The denoiser evaluations of one driver iteration, tallied while its step is traced.

    ``count`` is a Python int, or a traced integer once a :meth:`StepContext.cond` chose between
    branches. ``depth`` is how many :meth:`StepContext.cond` branches or
    :meth:`StepContext.evaluations_of` calls are being traced (0 at the step's own level).
    """

    __slots__ = ("count", "depth")

    def __init__(self):
        self.count = 0
        self.depth = 0


@dataclasses.dataclass(frozen=True)
class StepContext:
    """Everything a solver may read during one driver iteration.

    ``denoise(x, sigma)`` is the user's denoiser (counted and cast to the state's dtype);
    ``noise(k)`` the ``k``-th standard-normal draw of this step, shaped like the state, per sample
    from ``fold_in`` of the sample's key (so independent of the batch size). ``i`` is the step
    index and ``n`` the number of steps of the run (both traced integers): the grid's, or
    :func:`~jaxsolve.diffusion.sample`'s ``n_steps`` when given. ``batch_ndim`` is
    :func:`~jaxsolve.diffusion.sample`'s: the number of leading batch axes of the state (static).
    ``evaluations`` is the driver's tally of this iteration's denoiser calls (see the module).
    """

    denoise: Callable | None
    noise: Callable
    sigmas: Float[Array, " L"]
    i: Int[Array, ""]
    n: Int[Array, ""]
    sigma: Float[Array, ""]
    sigma_next: Float[Array, ""]
    batch_ndim: int = 1
    evaluations: Evaluations = dataclasses.field(default_factory=Evaluations)

    def replace(self, **changes) -> StepContext:
        return dataclasses.replace(self, **changes)

    def sigma_at(self, j) -> Float[Array, ""]:
        """Grid level at index ``j`` (clipped into the grid)."""
        return self.sigmas[jnp.clip(j, 0, self.sigmas.shape[0] - 1)]

    def evaluations_of(self, fn: Callable, *args) -> tuple[Any, Int[Array, ""]]:
        """``fn(*args)`` and the denoiser evaluations it made, which are *not* added to this step's
        tally (for code traced apart from the step, e.g. under ``jax.vmap``: add the count back
        with :meth:`add_evaluations` once outside)."""
        tally = self.evaluations
        outer = tally.count
        tally.count = 0
        tally.depth += 1
        try:
            out = fn(*args)
            used = jnp.asarray(tally.count, jnp.int32)
        finally:
            tally.count = outer
            tally.depth -= 1
        return out, used

    def add_evaluations(self, count) -> None:
        """Count ``count`` more denoiser evaluations in this step (calls that cost more than one
        evaluation, such as a Jacobian-vector product)."""
        self.evaluations.count = self.evaluations.count + count

    def cond(self, pred, true_fn: Callable, false_fn: Callable, *operands):
        """``jax.lax.cond`` whose denoiser evaluations count as those of the branch taken."""
        out, used = jax.lax.cond(
            pred,
            lambda *ops: self.evaluations_of(true_fn, *ops),
            lambda *ops: self.evaluations_of(false_fn, *ops),
            *operands,
        )
        self.add_evaluations(used)
        return out


class AbstractSolver(eqx.Module):
    """Base class of every sampler. See the module docstring for the contract."""

    #: Does the solver draw noise (then ``sample`` requires ``key=`` or ``noise=``)?
    stochastic: ClassVar[bool] = False
    #: Does it choose its own steps (then ``sample`` requires ``max_steps=``)?
    adaptive: ClassVar[bool] = False
    #: May the grid go up (Restart's forward-noise jumps)?
    allows_increasing_grid: ClassVar[bool] = False
    #: ``"data"`` / ``"noise"`` when each step is ``a x + b u`` (see the module), else ``None``.
    step_form: ClassVar[str | None] = None

    def init(self, x: Float[Array, "..."], sigmas: Float[Array, " L"]) -> Any:
        """Initial solver state (history buffers). Stateless solvers return ``None``."""
        return None

    @abc.abstractmethod
    def step(self, ctx: StepContext, x: Float[Array, "..."], state: Any) -> tuple[Array, Any]:
        """Advance ``x`` from ``ctx.sigma`` to ``ctx.sigma_next`` (> 0): ``(x_next, state)``."""

    def final_step(self, ctx: StepContext, x: Float[Array, "..."], state: Any) -> tuple[Array, Any]:
        """The last step, to sigma = 0: the denoised estimate."""
        return ctx.denoise(x, ctx.sigma), state

    def phase(self, ctx: StepContext, state: Any) -> Int[Array, ""]:
        """SKIP past the last step, FINAL into sigma = 0, else STEP."""
        return grid_phase(ctx)

    def denoiser_output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape the denoiser must return for an input of ``x_shape``: ``x0_hat`` is shaped
        like ``x``. (The driver checks it once, when it traces the first call.)"""
        return tuple(x_shape)


def grid_phase(ctx: StepContext) -> Int[Array, ""]:
    """The phase of a solver that takes one step per grid interval."""
    return jnp.where(ctx.i >= ctx.n, SKIP, jnp.where(ctx.sigma_next == 0, FINAL, STEP))


def resolve_batch_ndim(solver, ctx: StepContext) -> int:
    """``solver.batch_ndim`` where set, else the driver's; a mismatch would split the state into
    the wrong samples, so it raises."""
    own = getattr(solver, "batch_ndim", None)
    if own is not None and own != ctx.batch_ndim:
        raise ValueError(
            f"{type(solver).__name__}(batch_ndim={own}) but sample(batch_ndim={ctx.batch_ndim}): "
            "leave the solver's batch_ndim unset (it follows sample's) or pass the same value."
        )
    return ctx.batch_ndim
