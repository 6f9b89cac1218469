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

The kept samples are not weighted, so they follow the tilted target only approximately: the
value approximation and the finite number of candidates both bias them (the choice among
:math:`M` candidates is importance resampling, exact only as :math:`M \to \infty`).
:class:`WeightedSVDD` makes the same choices and carries importance weights that remove both
biases (twisted sequential Monte Carlo); :func:`weighted_sample` returns the samples with their
log-weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import check_choice, check_int, check_positive, is_concrete
from .._adjoint import AbstractAdjoint
from .._sample import sample
from .._solvers._base import AbstractSolver, resolve_batch_ndim
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
        _check_candidates("SVDD", self, allow_zero=True)
        if (self.reward is None) == (self.value is None):
            raise ValueError("SVDD needs exactly one of reward (SVDD-PM) and value.")
        for name in ("reward", "value"):
            fn = getattr(self, name)
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be callable; got {type(fn).__name__}.")

    def step(self, ctx, x, state):
        xs, states, values = _candidates(self, ctx, x, state)
        temperature = check_traced_non_negative("SVDD temperature", self.temperature)
        gumbel = _gumbel(ctx, x, self.num_particles)
        scores = values + temperature * gumbel
        none_allowed = jnp.all(values == -jnp.inf, axis=0)
        scores = jnp.where(none_allowed, gumbel, scores)
        index = jnp.argmax(scores, axis=0)
        return _keep(xs, states, index, x, ctx.batch_ndim)


def _check_candidates(name, wrapper, *, allow_zero):
    """The checks :class:`SVDD` and :class:`WeightedSVDD` share: the number of candidates, the
    temperature, and an inner solver whose candidates differ and reach the same level."""
    check_int("num_particles", wrapper.num_particles)
    check_positive("temperature", wrapper.temperature, allow_zero=allow_zero)
    if jnp.ndim(wrapper.temperature) != 0:
        raise ValueError(
            f"temperature must be a scalar; got shape {jnp.shape(wrapper.temperature)}."
        )
    solver = wrapper.solver
    if not isinstance(solver, AbstractSolver):
        return  # the base names it
    if solver.adaptive:
        refuse(
            name,
            solver,
            "adaptive (it keeps its own levels)",
            "the candidates of one step must reach the same level.",
        )
    if not solver.stochastic:
        refuse(
            name,
            solver,
            "deterministic",
            "its candidates would all be the same. Use a stochastic solver such as "
            "EulerAncestral() or EulerMaruyama().",
        )


def _candidates(wrapper, ctx, x, state):
    """``wrapper.num_particles`` candidate steps of ``wrapper.solver`` from ``(x, state)``, their
    states and their values (SVDD-PM's ``reward(D(x_j, sigma_next))``, or ``wrapper.value``),
    shaped ``(M, *batch)``, with the evaluations counted as :class:`SVDD` says."""
    M = wrapper.num_particles
    batch_shape = x.shape[: ctx.batch_ndim]
    tally = ctx.evaluations
    shared = [0]

    def candidate(j):
        depth = tally.depth

        def denoise(y, s):
            # A call on the step's own input at the candidate step's top level does not depend
            # on j: vmap computes it once.
            if y is x and tally.depth == depth:
                shared[0] += 1
            return ctx.denoise(y, s)

        cand_ctx = ctx.replace(denoise=denoise, noise=lambda k: ctx.noise(k * (M + 1) + j))
        return wrapper.solver.step(cand_ctx, x, state)

    (xs, states), used = ctx.evaluations_of(jax.vmap(candidate), jnp.arange(M))
    ctx.add_evaluations(shared[0] + M * (used - shared[0]))

    def value(xj):
        if wrapper.value is None:
            v = _per_sample(wrapper.reward(ctx.denoise(xj, ctx.sigma_next)), batch_shape, "reward")
        else:
            v = _per_sample(wrapper.value(xj, ctx.sigma_next), batch_shape, "value")
        return v.astype(x.dtype)

    values, used = ctx.evaluations_of(jax.vmap(value), xs)
    ctx.add_evaluations(M * used)
    values = eqx.error_if(values, jnp.any(jnp.isnan(values)), "SVDD: a value is NaN.")
    return xs, states, jax.lax.stop_gradient(values)


def _per_sample(v, batch_shape, what):
    """``v`` as an array, after checking that it holds one value per sample."""
    if jnp.shape(v) != batch_shape:
        raise ValueError(
            f"{what} must return one value per sample, shape {batch_shape}; got shape "
            f"{jnp.shape(v)}."
        )
    return jnp.asarray(v)


def _uniforms(ctx, x, k, count):
    """``count`` uniforms per sample, shape ``(count, *batch)``: the step's normal draws of index
    ``k``, ``k + M + 1``, ... (as many as needed) through the normal CDF, kept inside (0, 1)."""
    batch_ndim = ctx.batch_ndim
    batch_shape = x.shape[:batch_ndim]
    size = math.prod(x.shape[batch_ndim:])
    draws_needed = -(-count // size)
    draws = jax.vmap(lambda d: ctx.noise(k(d)))(jnp.arange(draws_needed))
    normals = jnp.moveaxis(draws.reshape((draws_needed, *batch_shape, size)), 0, -2)
    normals = normals.reshape((*batch_shape, draws_needed * size))[..., :count]
    u = jsp.ndtr(jnp.moveaxis(normals, -1, 0))
    return jnp.clip(u, jnp.finfo(x.dtype).tiny, 1.0 - jnp.finfo(x.dtype).epsneg)


def _gumbel(ctx, x, M):
    """Gumbel noise ``-log(-log u)``, shape ``(M, *batch)``, from the step's draws of index
    ``d (M+1) + M``, which no candidate uses."""
    u = _uniforms(ctx, x, lambda d: d * (M + 1) + M, M)
    return -jnp.log(-jnp.log(u))


def _keep(xs, states, index, x, batch_ndim):
    """The kept candidate ``index[b]`` of each sample, and its solver state: state leaves shaped
    like ``(..., *x.shape)`` are selected per sample, any other must be the same for every
    candidate."""
    event_ndim = x.ndim - batch_ndim
    x_next = _select(xs, index, batch_ndim, event_ndim)

    def keep(leaf):
        if leaf.ndim >= x.ndim + 1 and leaf.shape[leaf.ndim - x.ndim :] == x.shape:
            return _select(leaf, index, batch_ndim, event_ndim)
        return leaf[0]

    return x_next, jax.tree_util.tree_map(keep, states)


class WeightedSVDDState(eqx.Module):
    r"""The state of :class:`WeightedSVDD`: the inner solver's, and per sample (shape ``batch``)
    the log-weight and the log-twist :math:`\max(v, v_{\min})/\alpha` of the current state (0
    before the first step)."""

    inner: Any
    log_weight: Float[Array, "*batch"]
    log_twist: Float[Array, "*batch"]


class WeightedSVDD(AbstractWrappedSolver):
    r"""SVDD with importance weights: a twisted sequential Monte Carlo sampler whose weighted samples
    target :math:`p(x_0)\,e^{r(x_0)/\alpha}/Z` exactly, for any number of particles and any value.

    Each step is :class:`SVDD`'s (``num_particles`` candidates :math:`x^{(j)}` of the inner
    ``solver``, one kept with probability :math:`\operatorname{softmax}_j(t_j)`, :math:`t_j =
    \max(v_j, v_{\min})/\alpha`), and each sample carries a log-weight :math:`w` (per sample, in
    the state) that the step increments by

    .. math:: \log\frac1M\sum_j e^{t_j} - t_{\text{prev}},

    :math:`t_{\text{prev}}` the kept log-twist of the step before (0 before the first step); the
    step into :math:`\sigma = 0` (``solver``'s) adds :math:`r(x_0)/\alpha - t_{\text{prev}}`. The
    candidates and the choice among them are the random-weight form of importance sampling: for
    any :math:`f`, :math:`\mathbb E[f(x^{(J)})\,\frac1M\sum_j e^{t_j}] = \mathbb E_{x\sim
    q}[f(x)\,e^{t(x)}]`, :math:`q` the inner solver's step; so the increments telescope in
    expectation and :math:`\mathbb E[e^{w} f(x_0)] = \mathbb E_{q}[e^{r(x_0)/\alpha} f(x_0)]`, the
    expectation over the inner sampler's own runs. The self-normalised weighted samples therefore
    converge to its reward-tilted distribution (the prior's, up to the inner sampler's
    discretisation) as the batch grows, at every :math:`M \ge 1`, with any value function: the
    value decides only the variance of the weights (the exact soft value makes the kept samples
    nearly equally weighted). This is twisted SMC ("Practical and Asymptotically Exact Conditional
    Sampling in Diffusion Models", Wu et al.) with SVDD's multiple-candidate proposal (random-weight
    importance resampling) in place of a gradient-guided one.

    What the value must satisfy: the twist :math:`e^{t}` must be positive wherever a path can
    still end with positive reward. A value of :math:`-\infty` kills the sample (weight 0) for
    good, which is right for the exact soft value and wrong for SVDD-PM's
    :math:`r(D(x, \sigma))` of a hard constraint (at large :math:`\sigma` the denoised estimate of
    every candidate may lie outside a region the sample can still reach): then pass a finite
    ``min_value`` :math:`v_{\min}` (the twist is floored there, which keeps every path alive and
    the sampler unbiased).

    Resampling: with ``resample_ess = c``, after a step whose effective sample size
    :math:`(\sum e^{w})^2/\sum e^{2w}` is below :math:`c` times the number of samples, the whole
    batch (all ``batch_ndim`` axes together: the samples are one particle system) is resampled
    with probabilities :math:`\propto e^{w}` (multinomial, or systematic: one uniform, evenly
    spaced positions), the inner solver's history and the twists follow, and every log-weight
    becomes the log of the mean weight. Then a sample depends on the whole batch, and the number of
    samples is the number of particles of the system.

    The driver's :func:`~jaxsolve.diffusion.sample` returns the samples; :func:`weighted_sample`
    returns the samples and their log-weights.

    Args:
        solver: a stochastic sampler, as for :class:`SVDD`.
        reward: ``reward(x0) -> values`` (one per sample), finite or ``-inf`` (the log-density of a
            region): it defines the target and the final weight.
        num_particles: candidates per step :math:`M` (static); 1 is plain twisted importance
            sampling of the inner solver's runs.
        temperature: :math:`\alpha > 0`; may be traced.
        value: the soft value function ``value(x, sigma) -> values`` of the twist (an exact one,
            a learned one, a Monte-Carlo estimate); ``None`` is SVDD-PM's
            :math:`r(D(x, \sigma))`. Its own model calls are not counted by the driver.
        min_value: the floor :math:`v_{\min}` of the value (``None``: no floor); needed when the
            value is :math:`-\infty` where the target can still be reached (see above).
        resample_ess: ``None`` (never resample) or the threshold :math:`c \in (0, 1]` on the
            effective sample size as a fraction of the batch; may be traced.
        resampling: ``"systematic"`` or ``"multinomial"``.
        batch_ndim: leading batch axes of the state (the log-weights' shape is ``x.shape[:
            batch_ndim]``); ``None`` is 1, which must then be ``sample``'s.
    """

    solver: AbstractSolver
    reward: Callable
    num_particles: int = eqx.field(static=True, default=4)
    temperature: Float[Array, ""] | float = 1.0
    value: Callable | None = None
    min_value: float | None = eqx.field(static=True, default=None)
    resample_ess: Float[Array, ""] | float | None = None
    resampling: str = eqx.field(static=True, default="systematic")
    batch_ndim: int | None = eqx.field(static=True, default=None)

    stochastic = True
    step_form = None

    def __check_init__(self):
        _check_candidates("WeightedSVDD", self, allow_zero=False)
        if not callable(self.reward):
            raise TypeError(f"reward must be callable; got {type(self.reward).__name__}.")
        if self.value is not None and not callable(self.value):
            raise TypeError(f"value must be callable; got {type(self.value).__name__}.")
        if self.min_value is not None and not (
            isinstance(self.min_value, (int, float)) and math.isfinite(self.min_value)
        ):
            raise ValueError(f"min_value must be a finite number or None; got {self.min_value!r}.")
        if self.resample_ess is not None:
            if jnp.ndim(self.resample_ess) != 0:
                raise ValueError(
                    f"resample_ess must be a scalar; got shape {jnp.shape(self.resample_ess)}."
                )
            if is_concrete(self.resample_ess) and not 0 < float(self.resample_ess) <= 1:
                raise ValueError(f"resample_ess must lie in (0, 1]; got {self.resample_ess}.")
        check_choice("resampling", self.resampling, ("systematic", "multinomial"))
        if self.batch_ndim is not None:
            check_int("batch_ndim", self.batch_ndim)

    def init(self, x, sigmas):
        batch_shape = x.shape[: 1 if self.batch_ndim is None else self.batch_ndim]
        zeros = jnp.zeros(batch_shape, x.dtype)
        return WeightedSVDDState(self.solver.init(x, sigmas), zeros, zeros)

    def inner_state(self, state):
        return state.inner

    def _temperature(self):
        if is_concrete(self.temperature):
            return jnp.asarray(self.temperature)  # checked when built
        return eqx.error_if(
            self.temperature, ~(self.temperature > 0), "WeightedSVDD temperature must be positive."
        )

    def _check_batch(self, ctx, x, state):
        batch_ndim = resolve_batch_ndim(self, ctx)
        if state.log_weight.shape != x.shape[:batch_ndim]:
            raise ValueError(
                f"WeightedSVDD: sample(batch_ndim={batch_ndim}) but the solver was built for 1 "
                "batch axis; pass WeightedSVDD(..., batch_ndim=...) as well."
            )
        return batch_ndim

    def step(self, ctx, x, state):
        self._check_batch(ctx, x, state)
        M = self.num_particles
        xs, states, values = _candidates(self, ctx, x, state.inner)
        if self.min_value is not None:
            values = jnp.maximum(values, self.min_value)
        twists = values / self._temperature().astype(x.dtype)
        gumbel = _gumbel(ctx, x, M)
        dead = jnp.all(twists == -jnp.inf, axis=0)
        index = jnp.argmax(jnp.where(dead, gumbel, twists + gumbel), axis=0)
        x_next, inner = _keep(xs, states, index, x, ctx.batch_ndim)
        kept = jnp.take_along_axis(twists, index[None], axis=0)[0]
        mean_twist = jsp.logsumexp(twists, axis=0) - math.log(M)
        log_weight = _add_log(state.log_weight, mean_twist, state.log_twist)
        state = WeightedSVDDState(inner, log_weight, kept)
        if self.resample_ess is None:
            return x_next, state
        # The Gumbel noise takes draws d (M+1) + M, d < first_free: the next such one is free.
        size = math.prod(x.shape[ctx.batch_ndim :])
        first_free = -(-M // size)
        u = _uniforms(ctx, x, lambda d: (first_free + d) * (M + 1) + M, 1)[0]
        return self._resample(x_next, state, u, ctx.batch_ndim)

    def _resample(self, x, state, u, batch_ndim):
        batch_shape = x.shape[:batch_ndim]
        n = math.prod(batch_shape)
        log_w = state.log_weight.reshape(n)
        total = jsp.logsumexp(log_w)
        ess = jnp.exp(2 * total - jsp.logsumexp(2 * log_w))
        # A traced threshold is not checked: above 1 it resamples after every step, at most 0
        # never, which is what it says.
        do = (ess < jnp.asarray(self.resample_ess, x.dtype) * n) & jnp.isfinite(total)
        if self.resampling == "systematic":
            positions = (jnp.arange(n, dtype=x.dtype) + u.reshape(n)[0]) / n
        else:
            positions = u.reshape(n)
        cdf = jnp.cumsum(jnp.exp(log_w - jnp.where(jnp.isfinite(total), total, 0.0)))
        chosen = jnp.clip(jnp.searchsorted(cdf, positions, side="right"), 0, n - 1)
        index = jnp.where(do, chosen, jnp.arange(n))

        def gather(leaf, event_shape):
            # A leaf shaped like (..., *batch, *event_shape) follows the chosen samples: the
            # state, the inner solver's history (as for the candidates: leaves shaped like
            # (..., *x.shape)), the twists.
            tail = (*batch_shape, *event_shape)
            if leaf.ndim < len(tail) or leaf.shape[leaf.ndim - len(tail) :] != tail:
                return leaf
            lead = leaf.shape[: leaf.ndim - len(tail)]
            flat = leaf.reshape((*lead, n, *event_shape))
            return jnp.take(flat, index, axis=len(lead)).reshape(leaf.shape)

        event_shape = x.shape[batch_ndim:]
        x, inner = jax.tree_util.tree_map(lambda leaf: gather(leaf, event_shape), (x, state.inner))
        log_twist = gather(state.log_twist, ())
        mean_weight = jnp.broadcast_to(total - math.log(n), batch_shape).astype(x.dtype)
        log_weight = jnp.where(do, mean_weight, state.log_weight)
        return x, WeightedSVDDState(inner, log_weight, log_twist)

    def final_log_weight(self, x0, state):
        """The log-weights after the step into :math:`\\sigma = 0` that returned ``x0``, from the
        state entering it: :math:`w + r(x_0)/\\alpha - t_{\\text{prev}}`."""
        reward = _per_sample(self.reward(x0), state.log_weight.shape, "reward").astype(x0.dtype)
        reward = jax.lax.stop_gradient(reward)
        twist = reward / self._temperature().astype(x0.dtype)
        return _add_log(state.log_weight, twist, state.log_twist)

    def final_step(self, ctx, x, state):
        self._check_batch(ctx, x, state)
        x0, inner = self.solver.final_step(ctx, x, state.inner)
        log_weight = self.final_log_weight(x0, state)
        return x0, WeightedSVDDState(inner, log_weight, jnp.zeros_like(log_weight))


def _add_log(log_weight, log_twist, previous):
    """``log_weight + log_twist - previous``, where a dead sample (weight 0, hence ``previous =
    -inf``) stays dead instead of becoming NaN."""
    alive = ~jnp.isneginf(log_weight) & ~jnp.isneginf(previous)
    out = log_weight + log_twist - jnp.where(alive, previous, 0.0)
    return jnp.where(alive, out, -jnp.inf)


class _KeepFinalInput(AbstractAdjoint):
    """Backpropagation as :class:`~jaxsolve.diffusion.Backprop`, handing the state and solver
    state entering the step into sigma = 0 to ``sink`` (the driver returns only the samples)."""

    sink: Callable

    def loop(self, run, denoiser, x):
        x_out, path, nfe, taken, result, final_input = run.integrate(
            denoiser, x, keep_final_input=True
        )
        self.sink(final_input)
        return x_out, path, nfe, taken, result


def weighted_sample(
    denoiser: Callable,
    x: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    solver: WeightedSVDD,
    *,
    key: PRNGKeyArray | None = None,
    noise: Callable | None = None,
    batch_ndim: int = 1,
    progress: bool = False,
    throw: bool = True,
    mesh: Mesh | None = None,
    data_axis: str = "data",
) -> tuple[Float[Array, " *shape"], Float[Array, " *batch"]]:
    r"""Run :func:`~jaxsolve.diffusion.sample` with a :class:`WeightedSVDD` and return the samples
    and their log-weights: self-normalised, :math:`\sum_b e^{w_b} f(x_b) / \sum_b e^{w_b}`
    estimates :math:`\mathbb E[f(x_0)]` under the reward-tilted target.

    The arguments are :func:`~jaxsolve.diffusion.sample`'s (the whole grid is integrated;
    gradients flow as with ``adjoint="backprop"``).

    Returns:
        ``(samples, log_weights)``, the log-weights shaped ``x.shape[:batch_ndim]`` (``-inf`` for
        a sample of zero weight). With ``throw``, a NaN log-weight or a batch whose every weight
        is 0 raises.
    """
    if not isinstance(solver, WeightedSVDD):
        raise TypeError(
            f"weighted_sample needs a WeightedSVDD solver; got {type(solver).__name__}."
        )
    final_input = []
    samples = sample(
        denoiser, x, sigmas, solver, key=key, noise=noise, batch_ndim=batch_ndim,
        progress=progress, throw=throw, adjoint=_KeepFinalInput(final_input.append), mesh=mesh,
        data_axis=data_axis,
    )  # fmt: skip
    _, state, _ = final_input[0]
    log_weight = solver.final_log_weight(samples, state)
    if throw:
        log_weight = eqx.error_if(
            log_weight, jnp.any(jnp.isnan(log_weight)), "WeightedSVDD: a reward is NaN."
        )
        log_weight = eqx.error_if(
            log_weight,
            jnp.all(jnp.isneginf(log_weight)),
            "WeightedSVDD: every sample has weight 0 (reward -inf at every sample, or a value of "
            "-inf where the target can still be reached, such as SVDD-PM's value of a hard "
            "constraint: pass min_value).",
        )
    return samples, log_weight


def effective_sample_size(log_weights: Float[ArrayLike, " *batch"]) -> Float[Array, ""]:
    r"""Kish's effective sample size :math:`(\sum_b e^{w_b})^2 / \sum_b e^{2 w_b}` of the
    log-weights (all axes)."""
    log_weights = jnp.ravel(jnp.asarray(log_weights))
    return jnp.exp(2 * jsp.logsumexp(log_weights) - jsp.logsumexp(2 * log_weights))


__all__ = ["SVDD", "WeightedSVDD", "WeightedSVDDState", "effective_sample_size", "weighted_sample"]
