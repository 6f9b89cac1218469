r"""Time-Shift Sampler ("Alleviating Exposure Bias in Diffusion Models through Sampling with Shifted
Time Steps").

During sampling a state :math:`\hat x_t` is not distributed like the training inputs at its
nominal time (exposure bias); the paper shows a nearby time :math:`t_s` can couple better with it,
and chooses :math:`t_s` within a window around the next time by matching the state's variance to
the variance the forward process has at :math:`t_s`. The state then *is* at :math:`t_s`: the model
is evaluated there and the solver integrates from there to the following grid time. Shifting is
only done above a cutoff time (it is harmful near the data).

**In VE form.** The reference implementation (for VP models) picks, per sample,
:math:`t_s = \arg\min_{t\in\text{window}} |\mathrm{Var}(\hat x_t) - (1-\bar\alpha_t)|`, the
element-wise sample variance of the state against the forward noise variance. With
:math:`x_{VP} = \alpha x`, :math:`\sigma_{VP}^2 = 1-\bar\alpha = \sigma^2/(1+\sigma^2)`, and the
data's variance neglected, this is :math:`\mathrm{Var}(x) \approx \sigma^2` in VE scale. We keep the
data's per-element variance :math:`v` (``data_variance``, default 0 = the paper's criterion):
the forward process gives :math:`\mathrm{Var}(x_\sigma) = v + \sigma^2`, so

.. math:: \tilde\sigma = \operatorname{clip}\Big(\sqrt{\max(\mathrm{Var}(x) - v, 0)},\
          \sigma_\text{lo},\ \sigma_\text{hi}\Big)

is the exact minimiser of :math:`|\mathrm{Var}(x) - v - \tilde\sigma^2|` over a continuous window.
**Our choices:** the window is :math:`[\sigma_{i+1}e^{-w}, \sigma_{i+1}e^{w}]` (``window`` =
:math:`w`, a half-width in log-noise, the continuous analogue of the paper's window of discrete
steps), further limited to :math:`(\sqrt{\sigma_{i+1}\sigma_{i+2}}, \sqrt{\sigma_i\sigma_{i+1}})`
so the shifted grid stays decreasing; shifting happens when :math:`\sigma_{i+1} >`
``cutoff_sigma`` (the paper's cutoff time). Each sample gets its own level, so the wrapped solver
runs per sample under ``jax.vmap`` (its history records the shifted levels). ``window = 0`` (or a
cutoff above the grid) is the wrapped solver exactly. The shift needs a solver that steps down the
grid: an adaptive one (which keeps its own levels) or one whose grid may go up (Restart) is
refused.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, check_int, check_positive
from .._solvers._base import AbstractSolver, resolve_batch_ndim
from .._solvers.ancestral import check_traced_non_negative
from ._base import AbstractWrappedSolver, require_grid_stepper


def shifted_sigma(
    x: Float[ArrayLike, " ..."],
    sigma: Float[ArrayLike, ""],
    window: Float[ArrayLike, ""],
    *,
    data_variance: Float[ArrayLike, ""] = 0.0,
    lower: Float[ArrayLike, ""] = 0.0,
    upper: Float[ArrayLike, ""] = float("inf"),
    batch_ndim: int = 1,
) -> Float[Array, "*batch"]:
    r"""The Time-Shift level of each sample nominally at ``sigma`` (see the module).

    :math:`\operatorname{clip}(\sqrt{\max(\mathrm{Var}(x) - v, 0)},
    \max(\sigma e^{-w}, \text{lower}), \min(\sigma e^{w}, \text{upper}))`, the variance taken over
    each sample's elements (the leading ``batch_ndim`` axes are the batch).
    """
    x = as_float(x)
    sigma = as_float(sigma).astype(x.dtype)
    flat = x.reshape((*x.shape[:batch_ndim], -1))
    var = jnp.var(flat, axis=-1)
    target = jnp.sqrt(jnp.maximum(var - data_variance, 0.0))
    lo = jnp.maximum(sigma * jnp.exp(-window), lower)
    hi = jnp.minimum(sigma * jnp.exp(window), upper)
    return jnp.clip(target, lo, hi)


class TimeShift(AbstractWrappedSolver):
    """Per-sample time shifting around ``solver`` (see the module).

    Args:
        solver: a jaxsolve sampler that steps down the grid (deterministic or stochastic); it runs
            per sample.
        window: half-width :math:`w` of the shift window in :math:`\\log\\sigma` (may be traced).
        cutoff_sigma: shift only while the next grid level exceeds it (the paper's cutoff time).
        data_variance: per-element variance :math:`v` of the data (0 = the paper's criterion).
        batch_ndim: leading batch axes of the state (1 by default; ``sample``'s must agree). The
            solver's state is built per sample before the driver's ``batch_ndim`` is known.
    """

    solver: AbstractSolver
    window: Float[Array, ""] | float = 0.1
    cutoff_sigma: Float[Array, ""] | float = 0.0
    data_variance: Float[Array, ""] | float = 0.0
    batch_ndim: int = 1

    def __check_init__(self):
        # inf: the whole grid range; a cutoff of inf never shifts.
        check_positive("window", self.window, allow_zero=True, allow_inf=True)
        check_positive("cutoff_sigma", self.cutoff_sigma, allow_zero=True, allow_inf=True)
        check_positive("data_variance", self.data_variance, allow_zero=True)
        check_int("batch_ndim", self.batch_ndim, minimum=0)
        require_grid_stepper(
            "TimeShift", self.solver, "the shift moves each sample between decreasing grid levels."
        )

    @property
    def step_form(self):
        return None  # the step starts from each sample's shifted level

    @staticmethod
    def _split(x, batch_ndim):
        count = math.prod(x.shape[:batch_ndim])
        return x.reshape((count, 1, *x.shape[batch_ndim:]))

    def init(self, x, sigmas):
        per_sample = self._split(x, self.batch_ndim)
        inner = jax.vmap(lambda xb: self.solver.init(xb, sigmas))(per_sample)
        levels = jnp.full((per_sample.shape[0],), sigmas[0], x.dtype)
        return inner, levels

    def inner_state(self, state):
        return state[0]

    def phase(self, ctx, state):
        # The samples advance together: each one's solver steps down the same grid (adaptive
        # solvers, the only ones whose phase depends on their state, are refused).
        inner, levels = state
        return jax.vmap(lambda s, _: self.solver.phase(ctx, s))(inner, levels)[0]

    def _run(self, method, ctx, x, state, shift):
        batch_ndim = resolve_batch_ndim(self, ctx)
        per_sample = self._split(x, batch_ndim)
        inner, levels = state

        def one(b, xb, state_b, level):
            def noise(k):
                return ctx.noise(k).reshape((-1, 1, *xb.shape[1:]))[b]

            # Each sample is a batch of one (batch_ndim 1) at its own level.
            sample_ctx = ctx.replace(noise=noise, sigma=level, batch_ndim=1)
            return ctx.evaluations_of(method, sample_ctx, xb, state_b)

        index = jnp.arange(per_sample.shape[0])
        (x_next, inner), used = jax.vmap(one)(index, per_sample, inner, levels)
        ctx.add_evaluations(used[0])  # every sample makes the same calls
        x_next = x_next.reshape(x.shape)
        if shift:
            sigma_next = ctx.sigma_next
            after = ctx.sigma_at(ctx.i + 2)
            lower = jnp.where(after > 0, jnp.sqrt(sigma_next * after), 0.0)
            upper = jnp.sqrt(ctx.sigma * sigma_next)
            # Traced (swept) options are checked as they run; concrete ones were when built.
            shifted = shifted_sigma(
                x_next,
                sigma_next,
                check_traced_non_negative("TimeShift window", self.window),
                data_variance=check_traced_non_negative(
                    "TimeShift data_variance", self.data_variance
                ),
                lower=lower,
                upper=upper,
                batch_ndim=batch_ndim,
            ).reshape(-1)
            cutoff = check_traced_non_negative("TimeShift cutoff_sigma", self.cutoff_sigma)
            levels = jnp.where(sigma_next > cutoff, shifted, sigma_next)
        return x_next, (inner, levels)

    def step(self, ctx, x, state):
        return self._run(self.solver.step, ctx, x, state, shift=True)

    def final_step(self, ctx, x, state):
        return self._run(self.solver.final_step, ctx, x, state, shift=False)
