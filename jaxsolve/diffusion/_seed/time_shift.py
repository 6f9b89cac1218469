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
cutoff above the grid) is the wrapped solver exactly.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, check_positive
from .._solvers._base import AbstractSolver, resolve_batch_ndim


def shifted_sigma(
    x: Float[ArrayLike, "*batch ..."],
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


class TimeShift(AbstractSolver):
    """Per-sample time shifting around ``solver`` (see the module).

    Args:
        solver: any jaxsolve sampler (deterministic or stochastic); it runs per sample.
        window: half-width :math:`w` of the shift window in :math:`\\log\\sigma` (may be traced).
        cutoff_sigma: shift only while the next grid level exceeds it (the paper's cutoff time).
        data_variance: per-element variance :math:`v` of the data (0 = the paper's criterion).
        batch_ndim: leading batch axes of the state (1 by default).
    """

    solver: AbstractSolver
    window: Float[Array, ""] | float = 0.1
    cutoff_sigma: Float[Array, ""] | float = 0.0
    data_variance: Float[Array, ""] | float = 0.0
    batch_ndim: int = 1

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(f"solver must be a jaxsolve sampler; got {type(self.solver).__name__}.")
        check_positive("window", self.window, allow_zero=True)
        check_positive("cutoff_sigma", self.cutoff_sigma, allow_zero=True)
        check_positive("data_variance", self.data_variance, allow_zero=True)
        if not isinstance(self.batch_ndim, int) or self.batch_ndim < 0:
            raise ValueError(f"batch_ndim must be a non-negative int; got {self.batch_ndim!r}.")

    @property
    def stochastic(self) -> bool:
        return self.solver.stochastic

    def _split(self, x):
        lead = x.shape[: self.batch_ndim]
        count = math.prod(lead)
        return lead, x.reshape((count, 1, *x.shape[self.batch_ndim :]))

    def init(self, x, sigmas):
        _, per_sample = self._split(x)
        inner = jax.vmap(lambda xb: self.solver.init(xb, sigmas))(per_sample)
        levels = jnp.full((per_sample.shape[0],), sigmas[0], x.dtype)
        return inner, levels

    def _run(self, method, ctx, x, state, shift):
        resolve_batch_ndim(self, ctx)  # its batch_ndim must be sample()'s
        _, per_sample = self._split(x)
        inner, levels = state
        calls = [0]

        def one(b, xb, state_b, level):
            def denoise(y, s):
                calls[0] += 1
                return ctx.denoise(y, s)

            def noise(k):
                return ctx.noise(k).reshape((-1, 1, *xb.shape[1:]))[b]

            out = method(ctx.replace(denoise=denoise, noise=noise, sigma=level), xb, state_b)
            used = out[2] if len(out) == 3 else calls[0]
            return out[0], out[1], jnp.asarray(used, jnp.int32)

        index = jnp.arange(per_sample.shape[0])
        x_next, inner, used = jax.vmap(one)(index, per_sample, inner, levels)
        x_next = x_next.reshape(x.shape)
        if shift:
            sigma_next = ctx.sigma_next
            after = ctx.sigma_at(ctx.i + 2)
            lower = jnp.where(after > 0, jnp.sqrt(sigma_next * after), 0.0)
            upper = jnp.sqrt(ctx.sigma * sigma_next)
            shifted = shifted_sigma(
                x_next,
                sigma_next,
                self.window,
                data_variance=self.data_variance,
                lower=lower,
                upper=upper,
                batch_ndim=self.batch_ndim,
            ).reshape(-1)
            levels = jnp.where(sigma_next > self.cutoff_sigma, shifted, sigma_next)
        return x_next, (inner, levels), used[0]

    def step(self, ctx, x, state):
        return self._run(self.solver.step, ctx, x, state, shift=True)

    def final_step(self, ctx, x, state):
        return self._run(self.solver.final_step, ctx, x, state, shift=False)
