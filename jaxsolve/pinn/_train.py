r"""Training a physics-informed network: one compiled loop for the optimiser, the collocation
samplers and the loss weights.

:func:`train` minimises a :class:`~jaxsolve.pinn._problems.PINNProblem`'s loss over the
floating-point arrays of a single-point network, in *phases* run one after the other (Adam, then
L-BFGS, then Gauss-Newton, say), each a sequence of chunks of ``steps_per_call`` steps compiled as
one ``lax.scan``. Step :math:`s` (counted over all phases):

1. the points of each term: a fixed array, or the current points of its :class:`Collocation`'s
   sampler, with the sampler's point weights (the causal gate of :class:`~jaxsolve.pinn.R3`);
2. the update rule's step on the objective of those points and the current term weights
   (:class:`Optax` for any optax transformation, L-BFGS with its line search included;
   :class:`GaussNewton`);
3. the term weights by the balancing rule, if one is given
   (:func:`~jaxsolve.pinn.grad_norm_weighting`);
4. each sampler whose period divides :math:`s + 1` steps (``lax.cond``), with the residuals of
   the updated network: resampling is part of the compiled program.

A step whose loss or new parameters are not finite, or whose sampler met a non-finite residual,
is a failure: it is not applied, the loop stops applying steps, and :func:`train` raises
``FloatingPointError`` naming the step and what failed (``throw=False``: it returns the last good
network with ``result = RESULTS.nonfinite``). Nothing non-finite is ever returned as a result.

Randomness: the sampler of term ``name`` at step ``s`` gets ``fold_in(fold_in(key, s), i)``
(``i`` the term's index), so a run does not depend on the chunking.
"""

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from .._core import RESULTS, as_float, check_int, is_concrete
from ._geometry import AbstractGeometry
from ._problems import PINNProblem, point_array, residual_on_points
from ._sampling import AbstractAdaptiveSampler, SamplerState
from ._weighting import CausalWeighting, GradNormWeighting

# --------------------------------------------------------------------------------------------
# Collocation sources.


class Collocation(eqx.Module):
    """The points of one term drawn by an adaptive sampler in ``geometry``, stepped every
    ``every`` training steps.

    Args:
        geometry: the domain the sampler draws from.
        sampler: an :class:`~jaxsolve.pinn.AbstractAdaptiveSampler` (:class:`~jaxsolve.pinn.R3`,
            :class:`~jaxsolve.pinn.RARD`, :class:`~jaxsolve.pinn.UniformResampling`, ...).
        every: the period in training steps (``>= 1``; may be traced, so a sweep over it
            compiles once).
        points: the points to start from, ``(n, d)`` with ``n`` the sampler's size (a Latin
            hypercube or Sobol set, or the points of an earlier run); default: the sampler's own
            initial draw.
    """

    geometry: AbstractGeometry
    sampler: AbstractAdaptiveSampler
    every: Int[Array, ""]
    points: Float[Array, "n d"] | None

    def __init__(
        self,
        geometry: AbstractGeometry,
        sampler: AbstractAdaptiveSampler,
        *,
        every: int | Int[ArrayLike, ""] = 1,
        points: Float[ArrayLike, "n d"] | None = None,
    ):
        if not isinstance(geometry, AbstractGeometry):
            raise TypeError(f"geometry must be a jaxsolve.pinn geometry; got {geometry!r}.")
        if not isinstance(sampler, AbstractAdaptiveSampler):
            raise TypeError(
                f"sampler must be a jaxsolve.pinn adaptive sampler (R3, RARD, UniformResampling, "
                f"...); got {type(sampler).__name__}."
            )
        if is_concrete(every):
            a = np.asarray(every)
            # int(1.5) would silently resample every step: a period must be an integer.
            if a.ndim or a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
                raise TypeError(f"every must be an int >= 1; got {every!r}.")
            every = check_int("every", int(a))
        self.geometry = geometry
        self.sampler = sampler
        self.every = jnp.asarray(every, jnp.int32)
        if points is not None:
            points = point_array("points", points)
            if points.shape[0] != sampler.n:
                raise ValueError(
                    f"points must hold the sampler's {sampler.n} points; got {points.shape[0]}."
                )
        self.points = points

    def init(self, key: PRNGKeyArray) -> SamplerState:
        """The sampler's state at the start of training."""
        state = self.sampler.init(key, self.geometry)
        if self.points is None:
            return state
        if self.points.shape[1:] != state.points.shape[1:]:
            raise ValueError(
                f"points must have shape (n, {state.points.shape[1]}) for this geometry; got "
                f"{self.points.shape}."
            )
        return eqx.tree_at(lambda s: s.points, state, self.points.astype(state.points.dtype))


# --------------------------------------------------------------------------------------------
# The objective one step sees, and the update rules.


class Objective(eqx.Module):
    """The training loss of one step as a function of the trained arrays ``params``: the
    problem's loss on fixed points, term weights and point weights."""

    problem: PINNProblem
    static: Any
    points: dict
    weights: dict
    point_weights: dict
    causal: CausalWeighting | None

    def network(self, params):
        return eqx.combine(params, self.static)

    def value(self, params: PyTree) -> Float[Array, ""]:
        """The weighted loss :math:`\\sum_i \\lambda_i L_i`."""
        total, _ = self.problem.loss(
            self.network(params),
            self.points,
            self.weights,
            causal=self.causal,
            point_weights=self.point_weights,
        )
        return total

    def frozen(self, params: PyTree) -> "Objective":
        """This objective with its causal weights fixed at ``params``: the same value and
        gradient at ``params`` (the weights carry no gradient), and the loss a step from
        ``params`` should lower. Re-weighting at each trial point instead would let a line
        search or a Gauss-Newton step "improve" the loss by raising the early residuals, which
        closes the later weights. Without causal weighting, the objective itself."""
        if self.causal is None:
            return self
        ones = {name: 1.0 for name in self.problem.names}
        scales, _ = self.problem.residual_scales(
            self.network(params),
            self.points,
            ones,
            causal=self.causal,
            point_weights=self.point_weights,
        )
        # s_p = w_p c_k / (M n_k) for a causal term and w_p / n otherwise: as point weights of
        # a plain mean, n s_p.
        point_weights = {n: s * s.shape[0] for n, s in scales.items()}
        return Objective(self.problem, self.static, self.points, self.weights, point_weights, None)

    def residuals(self, params: PyTree) -> Float[Array, " m"]:
        """The scaled residual vector whose squared norm is :meth:`value`."""
        return self.problem.residual_vector(
            self.network(params),
            self.points,
            self.weights,
            causal=self.causal,
            point_weights=self.point_weights,
        )

    def jacobian(self, params: PyTree) -> Float[Array, "m p"]:
        """The Jacobian of :meth:`residuals` with respect to ``ravel_pytree(params)``, one point
        at a time (a reverse pass per point under ``vmap``: the memory of a batch of single-point
        passes, not of a Jacobian of the whole batch)."""
        scales, _ = self.problem.residual_scales(
            self.network(params),
            self.points,
            self.weights,
            causal=self.causal,
            point_weights=self.point_weights,
        )
        blocks = []
        for term in self.problem.terms:

            def residual_at(prm, x, residual=term.residual):
                return jnp.ravel(residual(self.network(prm), x))

            def row(x, residual_at=residual_at):
                jac = jax.jacrev(residual_at)(params, x)
                leaves = jax.tree_util.tree_leaves(jac)
                k = leaves[0].shape[0]
                return jnp.concatenate([leaf.reshape(k, -1) for leaf in leaves], axis=1)

            x = self.points[term.name]
            jac = jax.vmap(row)(x)  # (n, k, p)
            blocks.append(
                (jnp.sqrt(scales[term.name])[:, None, None] * jac).reshape(-1, jac.shape[-1])
            )
        return jnp.concatenate(blocks, axis=0)

    def term_gradients(self, params: PyTree) -> dict:
        return self.problem.term_gradients(
            self.network(params), self.points, causal=self.causal, point_weights=self.point_weights
        )

    def term_losses(self, params: PyTree) -> dict:
        return self.problem.term_losses(
            self.network(params), self.points, causal=self.causal, point_weights=self.point_weights
        )


class AbstractUpdate(eqx.Module):
    """An update rule of :func:`train`: ``init(params) -> state`` and
    ``step(objective, params, state) -> (params, state, loss)`` with ``loss`` the objective's
    value at the parameters the step started from."""

    @abc.abstractmethod
    def init(self, params: PyTree) -> PyTree: ...

    @abc.abstractmethod
    def step(
        self, objective: Objective, params: PyTree, state: PyTree
    ) -> tuple[PyTree, PyTree, Float[Array, ""]]: ...


class Optax(AbstractUpdate):
    """Any optax transformation on the gradient of the loss. Transformations that need the loss
    (``optax.lbfgs`` and its zoom line search, ``optax.contrib.reduce_on_plateau``) get it: the
    update is called with ``value``, ``grad`` and ``value_fn`` (the loss of the same points and
    weights), which plain transformations ignore.

    Args:
        optimizer: the optax transformation (schedules included).
    """

    optimizer: optax.GradientTransformationExtraArgs

    def __init__(self, optimizer: optax.GradientTransformation):
        if not (hasattr(optimizer, "init") and hasattr(optimizer, "update")):
            raise TypeError(f"optimizer must be an optax transformation; got {optimizer!r}.")
        self.optimizer = optax.with_extra_args_support(optimizer)

    def init(self, params: PyTree) -> PyTree:
        return self.optimizer.init(params)

    def step(self, objective, params, state):
        loss, grads = jax.value_and_grad(objective.value)(params)
        updates, state = self.optimizer.update(
            grads, state, params, value=loss, grad=grads, value_fn=objective.value
        )
        return optax.apply_updates(params, updates), state, loss


class GaussNewton(AbstractUpdate):
    r"""Damped Gauss-Newton (Levenberg-Marquardt) on the residual vector :math:`\rho(\theta)` of
    :meth:`~jaxsolve.pinn.PINNProblem.residual_vector` (:math:`\|\rho\|^2` is the loss):

    .. math:: \delta = (J^\top J + \mu I)^{-1} J^\top \rho
        = J^\top (J J^\top + \mu I)^{-1} \rho,\qquad J = \partial\rho/\partial\theta,

    with :math:`J` assembled one point at a time (:meth:`Objective.jacobian`), solved by
    Cholesky in whichever form is smaller (parameters or residuals), then
    :math:`\theta \leftarrow \theta - \eta\,\delta` with :math:`\eta` the best of
    ``step_sizes`` (all evaluated at once). The damping adapts: divided by ``decrease`` after a
    step that lowers the loss, multiplied by ``increase`` (and no move) after one that does not.
    A Jacobian that is not finite (a NaN derivative of a finite residual) is a failure no damping
    repairs: the step returns non-finite parameters, which :func:`train` reports as it does a
    NaN gradient under an optax rule.

    For a linear PDE this is the energy natural gradient ("Achieving High Accuracy with PINNs via
    Energy Natural Gradients", Müller & Zeinhofer) with its line search over step sizes; "An
    operator preconditioning perspective on training in physics-informed machine learning"
    (De Ryck, Bonnet, Mishra & de Bézenac) explains why: gradient descent on a PINN loss is
    governed by the conditioning of :math:`\mathcal{A}^*\mathcal{A}` for the differential
    operator :math:`\mathcal{A}`, which the Gauss-Newton matrix preconditions. A step costs a
    Jacobian (a pass per parameter or per residual) and a dense solve: for networks of a few
    thousand parameters.

    Args:
        damping: the initial damping :math:`\mu > 0`, relative to the mean diagonal of the
            Gauss-Newton matrix (may be traced); never below ten ulps of the working precision.
        min_damping: the smallest relative damping.
        decrease, increase: the damping's factors (``> 1``).
        step_sizes: the candidate :math:`\eta` (default :math:`1, 1/2, \dots, 2^{-9}`).
    """

    damping: Float[Array, ""]
    min_damping: Float[Array, ""]
    decrease: Float[Array, ""]
    increase: Float[Array, ""]
    step_sizes: Float[Array, " k"]

    def __init__(
        self,
        damping: float | Float[ArrayLike, ""] = 1e-8,
        *,
        min_damping: float | Float[ArrayLike, ""] = 1e-12,
        decrease: float | Float[ArrayLike, ""] = 3.0,
        increase: float | Float[ArrayLike, ""] = 4.0,
        step_sizes: Float[ArrayLike, " k"] | None = None,
    ):
        for name, v, low in (
            ("damping", damping, 0.0),
            ("min_damping", min_damping, 0.0),
            ("decrease", decrease, 1.0),
            ("increase", increase, 1.0),
        ):
            # Finite too: an infinite damping (or factor) makes every later step a no-move.
            if is_concrete(v) and not (np.isfinite(float(v)) and float(v) > low):
                raise ValueError(f"{name} must be finite and > {low:g}; got {v!r}.")
        self.damping = as_float(damping)
        self.min_damping = as_float(min_damping)
        self.decrease = as_float(decrease)
        self.increase = as_float(increase)
        if step_sizes is None:
            step_sizes = 0.5 ** np.arange(10)
        step_sizes = as_float(step_sizes)
        if step_sizes.ndim != 1 or step_sizes.shape[0] == 0:
            raise ValueError(f"step_sizes must be a non-empty 1-D array; got {step_sizes.shape}.")
        if is_concrete(step_sizes) and not bool(
            jnp.all((step_sizes > 0) & jnp.isfinite(step_sizes))
        ):
            raise ValueError(f"step_sizes must be finite and positive; got {step_sizes}.")
        self.step_sizes = step_sizes

    def init(self, params):
        return self.damping

    def step(self, objective, params, damping):
        flat, unravel = ravel_pytree(params)

        def rho(f):
            return objective.residuals(unravel(f))

        r = rho(flat)
        p, m = flat.shape[0], r.shape[0]
        jac = objective.jacobian(params).astype(r.dtype)
        hi = jax.lax.Precision.HIGHEST
        if p <= m:
            gram = jnp.matmul(jac.T, jac, precision=hi)
            rhs = jnp.matmul(jac.T, r, precision=hi)
        else:
            gram = jnp.matmul(jac, jac.T, precision=hi)
            rhs = r
        scale = jnp.mean(jnp.diagonal(gram))
        # Below a few ulps of the diagonal the damping no longer regularises the factorisation.
        relative = jnp.maximum(damping.astype(r.dtype), 10 * jnp.finfo(r.dtype).eps)
        mu = relative * jnp.where(scale > 0, scale, 1.0)
        chol = jax.scipy.linalg.cho_factor(gram + mu * jnp.eye(gram.shape[0], dtype=r.dtype))
        delta = jax.scipy.linalg.cho_solve(chol, rhs)
        if p > m:
            delta = jnp.matmul(jac.T, delta, precision=hi)
        loss = jnp.sum(r**2)
        etas = self.step_sizes.astype(r.dtype)
        trial = jax.vmap(lambda eta: jnp.sum(rho(flat - eta * delta) ** 2))(etas)
        trial = jnp.where(jnp.isfinite(trial), trial, jnp.inf)
        best = jnp.argmin(trial)
        # No move where no step size lowers the loss, or the factorisation broke down (a NaN
        # direction from a finite Jacobian): more damping next time. A non-finite loss is the
        # driver's failure, not hidden here; so is a non-finite Jacobian (a NaN derivative of a
        # finite residual), which no damping repairs: the step returns non-finite parameters,
        # which the driver reports, as it does a NaN gradient under an optax rule.
        better = (trial[best] < loss) & jnp.all(jnp.isfinite(delta))
        new_flat = jnp.where(better, flat - etas[best] * delta, flat)
        new_flat = jnp.where(jnp.all(jnp.isfinite(jac)), new_flat, jnp.nan)
        # Capped at 1 / eps (relative): beyond it the step is below round-off anyway, and an
        # uncapped damping overflowed to inf after enough failed steps, which no later success
        # (after a resample) could bring back.
        new_damping = jnp.where(
            better,
            jnp.maximum(damping / self.decrease, self.min_damping),
            jnp.minimum(damping * self.increase, 1 / jnp.finfo(damping.dtype).eps),
        )
        return unravel(new_flat), new_damping.astype(damping.dtype), loss


def _as_update(name, rule):
    if isinstance(rule, AbstractUpdate):
        return rule
    if hasattr(rule, "init") and hasattr(rule, "update"):
        return Optax(rule)
    raise TypeError(
        f"{name} must be an optax transformation or a jaxsolve.pinn update rule "
        f"(Optax, GaussNewton); got {type(rule).__name__}."
    )


class Phase(eqx.Module):
    """``num_steps`` steps of one update rule (an optax transformation or
    :class:`GaussNewton`); :func:`train` runs its phases one after the other, each starting its
    rule's state afresh from the parameters the previous one reached.

    Args:
        update: the update rule.
        num_steps: its number of steps.
        resample: whether the adaptive samplers step in this phase (default). ``False`` keeps
            the points the previous phase ended with: L-BFGS and Gauss-Newton assume one
            objective over their steps, which resampling would change under them.
    """

    update: AbstractUpdate
    num_steps: int = eqx.field(static=True)
    resample: bool = eqx.field(static=True)

    def __init__(
        self,
        update: AbstractUpdate | optax.GradientTransformation,
        num_steps: int,
        *,
        resample: bool = True,
    ):
        self.update = _as_update("update", update)
        self.num_steps = check_int("num_steps", num_steps)
        if not isinstance(resample, bool):
            raise TypeError(f"resample must be a bool; got {resample!r}.")
        self.resample = resample


# --------------------------------------------------------------------------------------------
# The compiled chunk.


class TrainState(eqx.Module):
    """What the loop carries: the trained arrays, the update rule's state, the samplers' states
    (term name -> :class:`~jaxsolve.pinn.SamplerState`), the term weights and the balancing
    rule's state, the step reached and the first failed step (-1 if none) with its cause."""

    params: PyTree
    rule_state: PyTree
    samplers: dict
    weights: dict
    balance_state: PyTree
    step: Int[Array, ""]
    failed_at: Int[Array, ""]
    cause: Int[Array, ""]


_CAUSES = ("the loss", "the parameters", "a sampler's residuals")


class _Step(eqx.Module):
    problem: PINNProblem
    static: Any
    update: AbstractUpdate
    collocations: dict  # term name -> Collocation (arrays: geometry, every)
    fixed: dict  # term name -> (n, d) array
    causal: CausalWeighting | None
    balancing: GradNormWeighting | None
    key: PRNGKeyArray
    resample: bool = eqx.field(static=True)

    def points(self, samplers):
        pts = dict(self.fixed)
        weights = {}
        for name, c in self.collocations.items():
            pts[name] = samplers[name].points
            weights[name] = c.sampler.point_weights(samplers[name])
        return pts, weights

    def objective(self, state):
        pts, pw = self.points(state.samplers)
        return Objective(self.problem, self.static, pts, state.weights, pw, self.causal)

    def __call__(self, state: TrainState) -> tuple[TrainState, Float[Array, ""]]:
        s = state.step
        objective = self.objective(state)
        params, rule_state, loss = self.update.step(
            objective.frozen(state.params), state.params, state.rule_state
        )
        weights, balance_state = state.weights, state.balance_state
        if self.balancing is not None:
            weights, balance_state = self.balancing.update(
                lambda: objective.term_gradients(params), balance_state
            )
        network = eqx.combine(params, self.static)
        samplers = dict(state.samplers)
        step_key = jax.random.fold_in(self.key, s)
        for i, name in enumerate(self.problem.names):
            if name not in self.collocations or not self.resample:
                continue
            c = self.collocations[name]
            residual = self.problem.terms[i].residual

            def resample(st, c=c, residual=residual, i=i):
                def residual_fn(x):
                    return residual_on_points(residual, network, x)

                return c.sampler.step(st, residual_fn, jax.random.fold_in(step_key, i))

            due = (s + 1) % c.every == 0
            samplers[name] = jax.lax.cond(due, resample, lambda st: st, samplers[name])
        new = TrainState(
            params,
            rule_state,
            samplers,
            weights,
            balance_state,
            s + 1,
            state.failed_at,
            state.cause,
        )
        return new, loss


def _all_finite(tree):
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if eqx.is_inexact_array(x)]
    if not leaves:
        return jnp.asarray(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


@eqx.filter_jit
def _run_chunk(step: _Step, state: TrainState, length: Int[Array, ""], max_length: int):
    """Up to ``max_length`` steps (the first ``length`` of them applied) in one ``lax.scan``;
    a failed step and every one after it are not applied."""

    def one(state, i):
        new, loss = step(state)
        sampler_ok = jnp.all(
            jnp.stack(
                [st.result == RESULTS.successful for st in new.samplers.values()]
                or [jnp.asarray(True)]
            )
        )
        cause = jnp.where(
            ~jnp.isfinite(loss),
            0,
            jnp.where(~_all_finite(new.params), 1, jnp.where(~sampler_ok, 2, -1)),
        )
        live = (i < length) & (state.failed_at < 0)
        failed = live & (cause >= 0)
        take = live & ~failed
        kept = jax.tree_util.tree_map(
            lambda a, b: jnp.where(take, a, b) if eqx.is_array(a) else a, new, state
        )
        kept = eqx.tree_at(
            lambda t: (t.failed_at, t.cause),
            kept,
            (
                jnp.where(failed, state.step, state.failed_at),
                jnp.where(failed, cause, state.cause).astype(state.cause.dtype),
            ),
        )
        return kept, jnp.where(live, loss, jnp.nan)

    state, losses = jax.lax.scan(one, state, jnp.arange(max_length))
    term_losses = step.objective(state).term_losses(state.params)
    return state, losses, term_losses


# --------------------------------------------------------------------------------------------
# The driver.


class PINNResult(eqx.Module):
    """Outcome of :func:`train`.

    Attributes:
        model: the trained network (the last good one if a step failed).
        result: ``RESULTS.successful``, or ``RESULTS.nonfinite`` (with ``throw=False``).
        num_steps: the steps applied.
        samplers: term name -> the final :class:`~jaxsolve.pinn.SamplerState`.
        weights: the final term weights.
        history: ``"loss"``: the loss of every step (NumPy, the loss at the parameters the step
            started from); per chunk ``"step"``, ``"phase"`` and ``"term/<name>"`` (the
            unweighted term losses after the chunk), ``"weight/<name>"``, for each adaptive
            sampler ``"shift/<name>"`` (the causal gate's shift :math:`\\gamma` of :class:`R3`)
            and ``"retained/<name>"`` (the points its last step kept), and the metrics of
            ``eval_fn``.
    """

    model: Any
    result: RESULTS
    num_steps: int = eqx.field(static=True)
    samplers: dict
    weights: dict
    history: dict


def _check_points(problem, points, key):
    problem._check_names(points, "(n, d) array or Collocation")
    fixed, collocations, samplers = {}, {}, {}
    for i, name in enumerate(problem.names):
        p = points[name]
        if isinstance(p, Collocation):
            collocations[name] = p
            samplers[name] = p.init(jax.random.fold_in(key, i))
        elif isinstance(p, AbstractAdaptiveSampler):
            raise TypeError(
                f"points[{name!r}]: an adaptive sampler needs its geometry and period: "
                f"Collocation(geometry, sampler, every=k)."
            )
        else:
            fixed[name] = point_array(name, p)
    return fixed, collocations, samplers


def _phases(optimizer, num_steps, phases):
    if phases is not None:
        if optimizer is not None or num_steps is not None:
            raise ValueError("give either phases, or optimizer and num_steps; not both.")
        phases = list(phases) if isinstance(phases, Sequence) else None
        if not phases or not all(isinstance(p, Phase) for p in phases):
            raise TypeError("phases must be a non-empty sequence of pinn.Phase(update, num_steps).")
        return phases
    if optimizer is None or num_steps is None:
        raise ValueError("give optimizer and num_steps (or phases).")
    return [Phase(optimizer, num_steps)]


def train(
    problem: PINNProblem,
    model: Callable,
    points: Mapping[str, Any],
    *,
    key: PRNGKeyArray,
    optimizer: AbstractUpdate | optax.GradientTransformation | None = None,
    num_steps: int | None = None,
    phases: Sequence[Phase] | None = None,
    weights: Mapping[str, float | Float[ArrayLike, ""]] | None = None,
    causal: CausalWeighting | None = None,
    balancing: GradNormWeighting | None = None,
    eval_fn: Callable | None = None,
    steps_per_call: int = 500,
    throw: bool = True,
    progress: bool = True,
    desc: str = "pinn",
) -> PINNResult:
    """Train the single-point network ``model`` on ``problem``; see the module docstring.

    Args:
        problem: the terms and their residuals.
        model: the network, a callable pytree (``equinox.Module``); its floating-point arrays
            are trained (arrays a network holds behind ``jax.lax.stop_gradient``, such as fixed
            Fourier features or a hard constraint's time scale, get zero gradient).
        points: term name -> its points: a fixed ``(n, d)`` array, or a :class:`Collocation`
            (an adaptive sampler stepped inside the loop).
        key: PRNG key of the samplers.
        optimizer, num_steps: one phase: an optax transformation (or :class:`GaussNewton`) for
            ``num_steps`` steps.
        phases: several phases instead, e.g. ``[Phase(optax.adam(1e-3), 10_000),
            Phase(optax.lbfgs(), 5_000)]``.
        weights: the initial term weights (default: the terms' own; data, never recompiled).
        causal: causal weighting of the time-dependent terms it names.
        balancing: a loss-balancing rule updating the term weights in the loop
            (:func:`~jaxsolve.pinn.grad_norm_weighting`).
        eval_fn: ``eval_fn(model) -> dict`` of scalar metrics after every chunk (the history
            records them).
        steps_per_call: steps per compiled chunk (static).
        throw: raise ``FloatingPointError`` on a failed step (default), else return the last good
            network with ``result = RESULTS.nonfinite``.
        progress: show a tqdm bar.
        desc: the bar's label.

    Returns:
        A :class:`PINNResult`.
    """
    if not isinstance(problem, PINNProblem):
        raise TypeError(f"problem must be a PINNProblem; got {type(problem).__name__}.")
    if not callable(model):
        raise TypeError(f"model must be a callable network u(x); got {type(model).__name__}.")
    if causal is not None and not isinstance(causal, CausalWeighting):
        raise TypeError(f"causal must be a CausalWeighting; got {type(causal).__name__}.")
    if balancing is not None and not isinstance(balancing, GradNormWeighting):
        raise TypeError(
            f"balancing must be pinn.grad_norm_weighting(...); got {type(balancing).__name__}."
        )
    if not isinstance(throw, bool):
        raise TypeError(f"throw must be a bool; got {throw!r}.")
    steps_per_call = check_int("steps_per_call", steps_per_call)
    phases = _phases(optimizer, num_steps, phases)
    sampler_key, loop_key = jax.random.split(key)
    fixed, collocations, samplers = _check_points(problem, points, sampler_key)

    params, static = eqx.partition(model, eqx.is_inexact_array)
    if not bool(_all_finite(params)):
        raise ValueError("model holds NaN or infinite parameters.")
    start_weights = problem._term_weights(weights)
    start_weights = {n: jnp.asarray(w) for n, w in start_weights.items()}
    balance_state = None
    if balancing is not None:
        balance_state = balancing.init(start_weights)
        start_weights = balance_state.weights

    history: dict[str, list] = {"loss": [], "step": [], "phase": []}
    state = None
    total = sum(p.num_steps for p in phases)
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    try:
        for k, phase in enumerate(phases):
            if state is None:
                state = TrainState(
                    params,
                    phase.update.init(params),
                    samplers,
                    start_weights,
                    balance_state,
                    jnp.zeros((), jnp.int32),
                    jnp.asarray(-1, jnp.int32),
                    jnp.asarray(-1, jnp.int32),
                )
            else:
                state = eqx.tree_at(
                    lambda t: t.rule_state,
                    state,
                    phase.update.init(state.params),
                    is_leaf=lambda x: x is None,
                )
            step = _Step(
                problem,
                static,
                phase.update,
                collocations,
                fixed,
                causal,
                balancing,
                loop_key,
                phase.resample,
            )
            done = 0
            width = min(steps_per_call, phase.num_steps)
            while done < phase.num_steps:
                length = min(width, phase.num_steps - done)
                state, losses, term_losses = _run_chunk(
                    step, state, jnp.asarray(length, jnp.int32), width
                )
                done += length
                bar.update(length)
                history["loss"].append(np.asarray(losses[:length]))
                if int(state.failed_at) >= 0:
                    break
                history["step"].append(int(state.step))
                history["phase"].append(k)
                for name, v in term_losses.items():
                    history.setdefault(f"term/{name}", []).append(float(v))
                for name, v in state.weights.items():
                    history.setdefault(f"weight/{name}", []).append(float(v))
                for name, s in state.samplers.items():
                    # The causal gate's position and the points kept: how R3 is progressing.
                    history.setdefault(f"shift/{name}", []).append(float(s.shift))
                    history.setdefault(f"retained/{name}", []).append(int(s.num_retained))
                if eval_fn is not None:
                    metrics = eval_fn(eqx.combine(state.params, static))
                    for name, v in dict(metrics).items():
                        history.setdefault(name, []).append(float(v))
                bar.set_postfix(loss=f"{float(losses[length - 1]):.3e}")
            if int(state.failed_at) >= 0:
                break
    finally:
        bar.close()

    failed_at = int(state.failed_at)
    history = {k: (np.concatenate(v) if k == "loss" else np.asarray(v)) for k, v in history.items()}
    history["loss"] = (
        history["loss"][~np.isnan(history["loss"])] if failed_at >= 0 else history["loss"]
    )
    result = RESULTS.successful
    if failed_at >= 0:
        cause = _CAUSES[int(state.cause)]
        if throw:
            raise FloatingPointError(
                f"pinn.train: step {failed_at} went non-finite ({cause}); the network of step "
                f"{failed_at} is the last good one (train(..., throw=False) returns it)."
            )
        result = RESULTS.nonfinite
    return PINNResult(
        eqx.combine(state.params, static),
        result,
        int(state.step),
        state.samplers,
        state.weights,
        history,
    )


def relative_l2(
    model: Callable, points: Float[ArrayLike, "n d"], exact: Float[ArrayLike, " n"]
) -> Float[Array, ""]:
    r""":math:`\|u - u^*\|_2 / \|u^*\|_2` of the network ``model`` at ``points`` against the
    values ``exact`` (the error every PINN benchmark reports)."""
    x = as_float(points)
    exact = as_float(exact)
    if x.ndim != 2 or exact.shape != x.shape[:1]:
        raise ValueError(f"points must be (n, d) and exact (n,); got {x.shape} and {exact.shape}.")
    u = jax.vmap(model)(x).reshape(x.shape[0])
    return jnp.linalg.norm(u - exact) / jnp.linalg.norm(exact)
