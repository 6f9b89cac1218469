r"""BDIA: bi-directional integration approximation ("Exact Diffusion Inversion via Bi-directional
Integration Approximation").

With the DDIM increment of state :math:`x_k` at level :math:`\sigma_k` towards a level
:math:`\sigma'` written in VE form,

.. math:: \Delta(\sigma_k \to \sigma' \mid x_k) = (\sigma' - \sigma_k)\,\hat\epsilon(x_k, \sigma_k),
          \qquad \hat\epsilon = (x - D(x, \sigma))/\sigma ,

BDIA-DDIM takes a plain DDIM step first, :math:`x_1 = x_0 + \Delta(\sigma_0\to\sigma_1\mid x_0)`,
and then, using the state two levels back,

.. math:: x_{k+1} = \gamma\big(x_{k-1} - \Delta(\sigma_k \to \sigma_{k-1} \mid x_k)\big)
                    + (1-\gamma)\,x_k + \Delta(\sigma_k \to \sigma_{k+1} \mid x_k):

the backward DDIM step from :math:`x_k` re-estimates the integral over
:math:`[\sigma_k, \sigma_{k-1}]` that produced :math:`x_k`, and :math:`\gamma\in(0, 1]` weights how
much of that re-estimate replaces the forward one (``gamma = 0`` is DDIM; the paper's BDIA-DDIM
uses :math:`\gamma = 1`, our default). The last step, into :math:`\sigma = 0`, is the same update
with :math:`\Delta(\sigma_k \to 0 \mid x_k) = D(x_k) - x_k` (for ``gamma = 0`` it lands on the
denoiser output, as every jaxsolve solver's last step does).

The update is an explicit linear combination of :math:`(x_{k-1}, x_k, \hat\epsilon(x_k))`, so it
inverts exactly: given the last two states,

.. math:: x_{k-1} = \big(x_{k+1} - (1-\gamma)x_k - \Delta(\sigma_k\to\sigma_{k+1}\mid x_k)\big)/\gamma
                    + \Delta(\sigma_k \to \sigma_{k-1} \mid x_k),

one model evaluation per step and no fixed-point iteration. :func:`bdia_invert` runs this
backward recursion through :func:`~jaxsolve.diffusion.sample` (one scan, no new loop) and
recovers the initial noise to round-off for *any* denoiser — the first DDIM step is never inverted
on its own, because the step producing :math:`x_2` already used :math:`x_0` explicitly.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core import as_float, check_positive, is_concrete
from ._base import SKIP, STEP, AbstractSolver
from .ancestral import check_traced


def _eps(ctx, x, sigma):
    return (x - ctx.denoise(x, sigma)) / sigma


def _check_gamma(gamma, allow_zero):
    if is_concrete(gamma):
        g = float(np.asarray(gamma))
        if not ((0.0 <= g if allow_zero else 0.0 < g) and g <= 1.0):
            lo = "[0, 1]" if allow_zero else "(0, 1]"
            raise ValueError(f"gamma must lie in {lo}; got {g}.")


class BDIA(AbstractSolver):
    """BDIA-DDIM sampler (see the module); ``gamma`` in ``[0, 1]`` may be traced.

    The solver state is the previous state :math:`x_{k-1}` and whether it exists. Invert a run with
    :func:`bdia_invert` from its last two states (``sample(..., save_trajectory=True)``).
    """

    gamma: Float[Array, ""] | float = 1.0

    def __check_init__(self):
        _check_gamma(self.gamma, allow_zero=True)

    def init(self, x, sigmas):
        return x, jnp.zeros((), bool)

    def _update(self, ctx, x, state):
        previous, started = state
        sigma, sigma_next = ctx.sigma, ctx.sigma_next
        sigma_prev = ctx.sigma_at(ctx.i - 1)
        eps = _eps(ctx, x, sigma)
        forward = x + (sigma_next - sigma) * eps
        backward = previous - (sigma_prev - sigma) * eps
        gamma = check_traced(
            "BDIA gamma", self.gamma, lambda g: (g >= 0) & (g <= 1), "lie in [0, 1]"
        )
        bdia = gamma * backward + (1.0 - gamma) * x + (sigma_next - sigma) * eps
        return jnp.where(started, bdia, forward), (x, jnp.ones((), bool))

    def step(self, ctx, x, state):
        return self._update(ctx, x, state)

    def final_step(self, ctx, x, state):
        # sigma_next = 0: Delta(sigma -> 0 | x) = D(x) - x, the same update as every other step.
        return self._update(ctx.replace(sigma_next=jnp.zeros_like(ctx.sigma)), x, state)


class _BDIAInverse(AbstractSolver):
    """The backward recursion on the stacked pair ``(x_k, x_{k+1})``; driver iteration ``i`` undoes
    sampling step ``k = n - 1 - i`` (``n - 1`` iterations for ``n`` sampling steps)."""

    gamma: Float[Array, ""] | float = 1.0

    def phase(self, ctx, state):
        return jnp.where(ctx.i < ctx.n - 1, STEP, SKIP)

    def step(self, ctx, pair, state):
        k = ctx.n - 1 - ctx.i
        sigma = ctx.sigma_at(k)
        sigma_next = ctx.sigma_at(k + 1)
        sigma_prev = ctx.sigma_at(k - 1)
        x_k, x_next = pair[0], pair[1]
        eps = _eps(ctx, x_k, sigma)
        x_prev = (x_next - (1.0 - self.gamma) * x_k - (sigma_next - sigma) * eps) / self.gamma + (
            sigma_prev - sigma
        ) * eps
        return jnp.stack([x_prev, x_k]), state

    def final_step(self, ctx, pair, state):
        # Never taken (phase is STEP or SKIP), but traced by the driver's switch: a no-op that
        # calls no denoiser on the stacked pair.
        return pair, state


def bdia_invert(
    denoiser: Callable,
    x_before_last: Float[ArrayLike, " *shape"],
    x_last: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    gamma: Float[ArrayLike, ""] | float = 1.0,
    *,
    n_steps: int | Int[Array, ""] | None = None,
    throw: bool = True,
) -> Float[Array, " *shape"]:
    r"""Recover the initial state of a :class:`BDIA` run exactly from its last two states.

    Args:
        denoiser: the denoiser the run used.
        x_before_last, x_last: the states after ``n - 1`` and ``n`` steps (``trajectory[n - 1]`` and
            ``trajectory[n]`` of ``sample(..., full_output=True, save_trajectory=True)``).
        sigmas: the grid of the run.
        gamma: the run's :math:`\gamma` (must be positive: :math:`\gamma = 0` is DDIM, which has no
            exact inverse).
        n_steps: the run's ``n_steps`` if it stopped early (default: the whole grid, at least 2).
        throw: raise if the recursion becomes non-finite (dividing by a small ``gamma`` amplifies
            the model's errors); with ``throw=False`` the returned state is then NaN / infinite.

    Returns:
        The initial state :math:`x_0` (``n - 1`` model evaluations, one ``lax.scan``).
    """
    from .._sample import sample  # here: the driver imports this package

    _check_gamma(gamma, allow_zero=False)
    check_positive("gamma", gamma)
    x_before_last, x_last = as_float(x_before_last), as_float(x_last)
    if x_before_last.shape != x_last.shape:
        raise ValueError(
            f"x_before_last and x_last must have the same shape; got {x_before_last.shape} and "
            f"{x_last.shape}."
        )
    sig = jnp.asarray(sigmas)
    if n_steps is None and is_concrete(sig):
        n = int(jnp.argmax(sig == 0))
        if n < 2:
            raise ValueError(f"BDIA inversion needs a run of at least 2 steps; the grid has {n}.")
    elif is_concrete(n_steps) and n_steps is not None and int(n_steps) < 2:
        raise ValueError(f"BDIA inversion needs a run of at least 2 steps; got n_steps={n_steps}.")
    pair = jnp.stack([x_before_last, x_last])
    out = sample(
        denoiser, pair, sigmas, _BDIAInverse(gamma), n_steps=n_steps, batch_ndim=0, throw=throw
    )
    return out[0]
