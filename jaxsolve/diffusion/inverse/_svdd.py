r"""SVDD ("Derivative-Free Guidance in Continuous and Discrete Diffusion Models with Soft Value-Based
Decoding", Li et al.).

SVDD steers a pretrained diffusion model toward high reward :math:`r(x_0)` without differentiating
the reward. Its target is the reward-tilted distribution :math:`p^{(\alpha)}(x_0) \propto
p(x_0)\,e^{r(x_0)/\alpha}`; at every reverse step it draws :math:`M` candidates from the pretrained
reverse kernel and keeps one by importance resampling with the *soft value* of each:

.. math::
    x^{(j)} \sim p(x_{\sigma_n} \mid x_\sigma),\ j = 1..M, \qquad
    v_j = r\big(D(x^{(j)}, \sigma_n)\big), \qquad
    x_{\sigma_n} = x^{(J)},\ \ P(J = j) = \operatorname{softmax}_j(v / \alpha) .

:math:`v_j` is SVDD-PM's value: the reward of the posterior-mean estimate :math:`\hat x_0 =
D(x^{(j)}, \sigma_n)`, an approximation of the soft value :math:`\alpha\log\mathbb E[e^{r(x_0)/\alpha}
\mid x^{(j)}]`. Temperature :math:`\alpha = 0` keeps the best candidate (the paper's recommended
setting). A reward may be :math:`-\infty` (a hard constraint: the log-density of a region); when
every candidate of a sample is :math:`-\infty` one is kept uniformly at random.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jaxtyping import Array, Float

from ..._core import check_int, check_positive
from .._solvers._base import AbstractSolver
from .._solvers.ancestral import check_traced_non_negative
from .._wrappers._base import AbstractWrappedSolver, refuse


def _select(candidates, index, batch_ndim, event_ndim):
    """From ``candidates`` of shape ``(M, *pre, *batch, *event)`` keep, for each sample ``b`` of
    the batch, candidate ``index[b]``."""
    moved = jnp.moveaxis(candidates, 0, candidates.ndim - batch_ndim - event_ndim - 1)
    lead = moved.ndim - batch_ndim - event_ndim - 1
    shape = (1,) * lead + (1, *index.shape) + (1,) * event_ndim
    picked = jnp.take_along_axis(moved, index.reshape(shape), axis=lead)
    return jnp.squeeze(picked, axis=lead)


class SVDD(AbstractWrappedSolver):
    r"""Soft value-based decoding around a stochastic ``solver`` (see the module).

    At each step to :math:`\sigma_n > 0`: ``num_particles`` candidate steps of ``solver`` (candidate
    ``j`` sees the step's draw ``k`` as draw ``k (M+1) + j``, so a sample does not depend on the
    batch size), their values :math:`v_j = r(D(x^{(j)}, \sigma_n))`, and one candidate per sample
    kept with probability :math:`\operatorname{softmax}(v/\alpha)` by Gumbel-max,
    :math:`\arg\max_j v_j + \alpha g_j` with :math:`g_j = -\log(-\log\Phi(z_j))` from the step's
    draws :math:`z` of index :math:`k (M+1) + M`, which no candidate uses. The step into
    :math:`\sigma = 0` is ``solver``'s. With one particle it samples as ``solver`` does (from
    other draws).

    **Evaluations.** The candidates run under ``jax.vmap``: a denoiser call on the step's input
    state (``solver``'s first, in every one-call solver) is the same for all and is computed, and
    counted, once; every other call counts once per candidate. The values add ``num_particles``.
    So :class:`EulerAncestral`, :class:`EulerMaruyama` and :class:`DPMSolverPPSDE` cost
    :math:`1 + M` evaluations per step, while ``EDMStochastic(churn > 0, solver=Heun())``, whose
    two calls both see the candidate's churn noise, costs :math:`2M + M`.

    A multistep ``solver``'s history follows the kept candidate: state leaves shaped like ``(...,
    *x.shape)`` are selected per sample; any other leaf must be the same for every candidate.

    Args:
        solver: a stochastic sampler (:class:`EulerAncestral`, :class:`EulerMaruyama`,
            :class:`DPMSolverPPSDE`, ...); a deterministic one would give ``num_particles`` equal
            candidates and is refused, as is an adaptive one.
        reward: ``reward(x0_hat) -> values``: the reward of each sample of a batch of denoised
            estimates (shaped like the state; one value per sample, shape ``x.shape[:batch_ndim]``).
            Finite or ``-inf`` (NaN is an error); no gradient is taken. The log-density of a
            region (0 inside, ``-inf`` outside) aims at the prior restricted to it; the
            posterior-mean value makes that approximate (greedy: a step sees only whether each
            candidate's denoised estimate lies inside).
        num_particles: candidates per step :math:`M` (static).
        temperature: :math:`\alpha \ge 0` (0 keeps the best candidate); may be traced.
        value: in place of SVDD-PM's :math:`r(D(x, \sigma_n))`, a soft value function
            ``value(x, sigma) -> values`` (one per sample) of the candidates: the paper's
            Monte-Carlo estimate :math:`\alpha\log\frac1K\sum_k e^{r(x_0^{(k)})/\alpha}` from
            rollouts, a learned value network, or an exact one (an oracle's). Then ``reward`` is
            ``None``. Its own model calls are not counted by the driver.
    """

    solver: AbstractSolver
    reward: Callable | None
    num_particles: int = eqx.field(static=True, default=4)
    temperature: Float[Array, ""] | float = 0.0
    value: Callable | None = None

    stochastic = True
    step_form = None

    def __check_init__(self):
        check_int("num_particles", self.num_particles)
        check_positive("temperature", self.temperature, allow_zero=True)
        if jnp.ndim(self.temperature) != 0:
            raise ValueError(
                f"temperature must be a scalar; got shape {jnp.shape(self.temperature)}."
            )
        if (self.reward is None) == (self.value is None):
            raise ValueError("SVDD needs exactly one of reward (SVDD-PM) and value.")
        for name in ("reward", "value"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable; got {type(fn).__name__}.")
        if not isinstance(self.solver, AbstractSolver):
            return  # the base names it
        if self.solver.adaptive:
            refuse(
                "SVDD",
                self.solver,
                "adaptive (it keeps its own levels)",
                "the candidates of one step must reach the same level.",
            )
        if not self.solver.stochastic:
            refuse(
                "SVDD",
                self.solver,
                "deterministic",
                "its candidates would all be the same. Use a stochastic solver such as "
                "EulerAncestral() or EulerMaruyama().",
            )

    def step(self, ctx, x, state):
        M = self.num_particles
        batch_ndim = ctx.batch_ndim
        batch_shape = x.shape[:batch_ndim]
        event_ndim = x.ndim - batch_ndim
        tally = ctx.evaluations
        shared = [0]

        def candidate(j):
            depth = tally.depth

            def denoise(y, s):
                # A call on the step's own input at the candidate step's top level does not
                # depend on j: vmap computes it once.
                if y is x and tally.depth == depth:
                    shared[0] += 1
                return ctx.denoise(y, s)

            cand_ctx = ctx.replace(denoise=denoise, noise=lambda k: ctx.noise(k * (M + 1) + j))
            return self.solver.step(cand_ctx, x, state)

        (xs, states), used = ctx.evaluations_of(jax.vmap(candidate), jnp.arange(M))
        ctx.add_evaluations(shared[0] + M * (used - shared[0]))

        def value(xj):
            if self.value is None:
                v, what = self.reward(ctx.denoise(xj, ctx.sigma_next)), "reward"
            else:
                v, what = self.value(xj, ctx.sigma_next), "value"
            if jnp.shape(v) != batch_shape:
                raise ValueError(
                    f"{what} must return one value per sample, shape {batch_shape}; got shape "
                    f"{jnp.shape(v)}."
                )
            return jnp.asarray(v).astype(x.dtype)

        values, used = ctx.evaluations_of(jax.vmap(value), xs)
        ctx.add_evaluations(M * used)
        values = eqx.error_if(values, jnp.any(jnp.isnan(values)), "SVDD: a value is NaN.")
        values = jax.lax.stop_gradient(values)

        # Gumbel-max: per sample, uniforms from the step's normal draws through the normal CDF.
        size = math.prod(x.shape[batch_ndim:])
        count = -(-M // size)  # draws needed for M numbers per sample
        draws = jax.vmap(lambda k: ctx.noise(k * (M + 1) + M))(jnp.arange(count))
        normals = jnp.moveaxis(draws.reshape((count, *batch_shape, size)), 0, -2)
        normals = normals.reshape((*batch_shape, count * size))[..., :M]
        u = jsp.ndtr(jnp.moveaxis(normals, -1, 0))
        tiny = jnp.finfo(x.dtype).tiny
        gumbel = -jnp.log(-jnp.log(jnp.clip(u, tiny, 1.0 - jnp.finfo(x.dtype).epsneg)))
        temperature = check_traced_non_negative("SVDD temperature", self.temperature)
        scores = values + temperature * gumbel
        none_allowed = jnp.all(values == -jnp.inf, axis=0)
        scores = jnp.where(none_allowed, gumbel, scores)
        index = jnp.argmax(scores, axis=0)

        x_next = _select(xs, index, batch_ndim, event_ndim)

        def keep(leaf):
            if leaf.ndim >= x.ndim + 1 and leaf.shape[leaf.ndim - x.ndim :] == x.shape:
                return _select(leaf, index, batch_ndim, event_ndim)
            return leaf[0]

        return x_next, jax.tree_util.tree_map(keep, states)


__all__ = ["SVDD"]
