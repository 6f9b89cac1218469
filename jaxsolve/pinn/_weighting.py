r"""Loss weighting for physics-informed training: causal weights in time, gradient-norm balancing.

**Causal weighting** ("Respecting causality is all you need for training physics-informed neural
networks", Wang, Sankaran & Perdikaris). The time interval :math:`[t_{\min}, t_{\max}]` is split
into :math:`M` equal chunks; :math:`L_i` is the mean squared residual of the collocation points
in chunk :math:`i`. The causal loss is

.. math::

    \mathcal L = \frac1M \sum_{i=1}^{M} w_i L_i, \qquad
    w_i = \exp\Big(-\varepsilon \sum_{k<i} L_k\Big),

with the weights held constant for differentiation (a stop-gradient): a later chunk counts only
once the residual of every earlier one is small, so the network cannot fit late times before the
solution that leads there. Points are binned by their time coordinate into a fixed number of
chunks (a segment sum), so shapes do not depend on where the points fall.

**Gradient-norm balancing** ("An expert's guide to training physics-informed neural networks",
Wang, Wang, Bhartari & Perdikaris). With :math:`g_i = \nabla_\theta L_i` the gradient of term
:math:`i`'s (unweighted) loss,

.. math::

    \hat\lambda_i = \frac{\sum_j \|g_j\|_2}{\|g_i\|_2}, \qquad
    \lambda_i \leftarrow \alpha \lambda_i + (1 - \alpha) \hat\lambda_i

every ``every`` steps (starting at step 0, from :math:`\lambda_i = 1`), so that every weighted
term :math:`\lambda_i L_i` has the same gradient norm :math:`\sum_j \|g_j\|`. (jaxpi's code
divides the mean rather than the sum of the norms: the same weights up to the factor
``len(names)``.) It is an optax-style pair ``(init, update)`` on a state the training loop
carries.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from .._core import as_float, check_int, is_concrete, safe_divide


def _check_real(name, value, *, positive=False, allow_zero=True, upper=None):
    """A concrete scalar ``value`` (finite, >= 0 or > 0, < ``upper``) raises ``ValueError``
    naming ``name`` when out of range; a traced one passes."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    if not is_concrete(value):
        return as_float(value)
    a = np.asarray(value)
    if a.dtype == object or np.iscomplexobj(a) or not np.issubdtype(a.dtype, np.number):
        raise TypeError(f"{name} must be a real number; got {value!r}.")
    if a.ndim:
        raise ValueError(f"{name} must be a scalar; got shape {a.shape}.")
    v = float(a)
    ok = np.isfinite(v)
    if positive:
        ok = ok and (v >= 0 if allow_zero else v > 0)
    if upper is not None:
        ok = ok and v < upper
    if not ok:
        rule = "finite"
        if positive:
            rule += " and >= 0" if allow_zero else " and > 0"
        if upper is not None:
            rule += f" and < {upper}"
        raise ValueError(f"{name} must be {rule}; got {v!r}.")
    return as_float(value)


def chunk_means(
    values: Float[ArrayLike, " n"], chunk: Int[ArrayLike, " n"], num_chunks: int
) -> Float[Array, " m"]:
    r"""Mean of ``values`` over the points of each chunk: :math:`L_i = \frac{1}{n_i}
    \sum_{c(p) = i} v_p`, and 0 for a chunk with no point.

    Args:
        values: one value per point (a squared residual).
        chunk: the chunk index of each point, in ``[0, num_chunks)`` (others are dropped).
        num_chunks: the number of chunks :math:`M` (static).

    Returns:
        The ``(num_chunks,)`` chunk means.
    """
    num_chunks = check_int("num_chunks", num_chunks)
    values = as_float(values)
    chunk = jnp.asarray(chunk)
    if values.ndim != 1:
        raise ValueError(f"values must have shape (n,); got {values.shape}.")
    if chunk.shape != values.shape:
        raise ValueError(f"chunk must have the shape of values {values.shape}; got {chunk.shape}.")
    if not jnp.issubdtype(chunk.dtype, jnp.integer):
        raise TypeError(f"chunk must hold integers; got dtype {chunk.dtype}.")
    sums = jax.ops.segment_sum(values, chunk, num_segments=num_chunks)
    counts = jax.ops.segment_sum(jnp.ones_like(values), chunk, num_segments=num_chunks)
    return safe_divide(sums, counts, jnp.zeros_like(sums))


def causal_weights(
    chunk_losses: Float[ArrayLike, " m"], eps: float | Float[ArrayLike, ""]
) -> Float[Array, " m"]:
    r""":math:`w_i = \exp(-\varepsilon \sum_{k<i} L_k)` (so :math:`w_1 = 1`), with no gradient.

    Args:
        chunk_losses: the chunk losses :math:`L_1, \dots, L_M` in time order.
        eps: the causality parameter :math:`\varepsilon \ge 0` (may be traced).
    """
    losses = as_float(chunk_losses)
    if losses.ndim != 1:
        raise ValueError(f"chunk_losses must have shape (m,); got {losses.shape}.")
    eps = _check_real("eps", eps, positive=True)
    earlier = jnp.cumsum(losses) - losses  # sum over k < i
    return lax.stop_gradient(jnp.exp(-eps * earlier))


class CausalWeighting(eqx.Module):
    r"""The causal loss :math:`\frac1M \sum_i w_i L_i` of the residuals of time-dependent terms.

    Pass it to :meth:`~jaxsolve.pinn._problems.PINNProblem.loss` (``causal=``): the terms it names
    get the causal loss instead of their plain mean squared residual. The points' time coordinate
    (``x[time_axis]``) is binned into ``num_chunks`` equal chunks of ``[t_min, t_max]``; a time
    outside goes to the first or last chunk.

    Args:
        num_chunks: the number of chunks :math:`M` (static).
        eps: the causality parameter :math:`\varepsilon \ge 0` (traced: a sweep over it is data).
        t_min, t_max: the time interval (traced).
        time_axis: which coordinate of a point is time (static; 0 for ``x = (t, *space)``).
        terms: the names of the terms weighted causally (static).
    """

    num_chunks: int = eqx.field(static=True)
    eps: Float[Array, ""]
    t_min: Float[Array, ""]
    t_max: Float[Array, ""]
    time_axis: int = eqx.field(static=True)
    terms: tuple[str, ...] = eqx.field(static=True)

    def __init__(
        self,
        num_chunks: int,
        eps: float | Float[ArrayLike, ""] = 1.0,
        t_min: float | Float[ArrayLike, ""] = 0.0,
        t_max: float | Float[ArrayLike, ""] = 1.0,
        *,
        time_axis: int = 0,
        terms: Sequence[str] = ("pde",),
    ):
        self.num_chunks = check_int("num_chunks", num_chunks)
        self.eps = _check_real("eps", eps, positive=True)
        self.t_min = _check_real("t_min", t_min)
        self.t_max = _check_real("t_max", t_max)
        if is_concrete((t_min, t_max)) and not float(t_max) > float(t_min):
            raise ValueError(f"t_max must be > t_min; got t_min={t_min!r}, t_max={t_max!r}.")
        self.time_axis = check_int("time_axis", time_axis, minimum=0)
        if isinstance(terms, str):
            terms = (terms,)
        terms = tuple(terms)
        if not terms or not all(isinstance(t, str) for t in terms):
            raise TypeError(f"terms must be a non-empty sequence of term names; got {terms!r}.")
        self.terms = terms

    def chunk_index(self, x: Float[ArrayLike, "n d"]) -> Int[Array, " n"]:
        """The chunk of each point ``x[p]`` by its time ``x[p, time_axis]``."""
        x = as_float(x)
        if x.ndim != 2 or x.shape[1] <= self.time_axis:
            raise ValueError(
                f"points must have shape (n, d) with d > time_axis={self.time_axis}; got {x.shape}."
            )
        s = (x[:, self.time_axis] - self.t_min) / (self.t_max - self.t_min)
        return jnp.clip(jnp.floor(s * self.num_chunks), 0, self.num_chunks - 1).astype(jnp.int32)

    def chunk_losses(
        self, squared: Float[ArrayLike, " n"], x: Float[ArrayLike, "n d"]
    ) -> Float[Array, " m"]:
        """The mean of ``squared`` (one squared residual per point) over each time chunk."""
        return chunk_means(squared, self.chunk_index(x), self.num_chunks)

    def weights(self, chunk_losses: Float[ArrayLike, " m"]) -> Float[Array, " m"]:
        """The causal weights of the chunk losses (:func:`causal_weights`)."""
        return causal_weights(chunk_losses, self.eps)

    def __call__(
        self, squared: Float[ArrayLike, " n"], x: Float[ArrayLike, "n d"]
    ) -> Float[Array, ""]:
        r""":math:`\frac1M \sum_i w_i L_i` of the squared residuals ``squared`` at points ``x``."""
        losses = self.chunk_losses(squared, x)
        return jnp.mean(self.weights(losses) * losses)


class GradNormState(NamedTuple):
    """The state of :func:`grad_norm_weighting`: the current weights and the step count."""

    weights: dict[str, Array]
    count: Array


class GradNormWeighting(NamedTuple):
    """An optax-style pair: ``init(names) -> state`` and ``update(grads, state) -> (weights,
    state)``; see :func:`grad_norm_weighting`."""

    init: Callable[..., GradNormState]
    update: Callable[..., tuple[dict[str, Array], GradNormState]]


def _tree_norm(tree):
    leaves = [jnp.asarray(leaf) for leaf in jax.tree_util.tree_leaves(tree)]
    leaves = [leaf for leaf in leaves if jnp.issubdtype(leaf.dtype, jnp.inexact)]
    if not leaves:
        raise ValueError("a term's gradient holds no floating-point array.")
    return jnp.sqrt(sum(jnp.sum(jnp.abs(leaf) ** 2) for leaf in leaves))


def grad_norm_targets(grads: Mapping[str, PyTree]) -> dict[str, Array]:
    r""":math:`\hat\lambda_i = \sum_j \|g_j\| / \|g_i\|` for the term gradients ``grads``.

    A term whose gradient vanishes gets ``inf`` (it has no gradient to scale up);
    :func:`grad_norm_weighting` keeps that term's previous weight instead.

    Args:
        grads: term name -> the gradient pytree of that term's loss (its floating-point leaves
            form one vector).
    """
    if not isinstance(grads, Mapping) or not grads:
        raise TypeError(f"grads must be a non-empty dict name -> gradient; got {type(grads)}.")
    norms = {name: _tree_norm(g) for name, g in grads.items()}
    total = sum(norms.values())
    return {name: total / n for name, n in norms.items()}


def grad_norm_weighting(
    *, momentum: float | Float[ArrayLike, ""] = 0.9, every: int | Int[ArrayLike, ""] = 1000
) -> GradNormWeighting:
    r"""Gradient-norm loss balancing as an optax-style ``(init, update)`` pair.

    ``init(names)`` starts every weight at 1 (``names``: the term names, or a dict name ->
    starting weight). ``update(grads, state)`` returns ``(weights, new_state)``: at the steps
    where ``state.count % every == 0`` (step 0 included) each weight moves to
    :math:`\alpha \lambda_i + (1 - \alpha) \hat\lambda_i` with :math:`\hat\lambda_i` from
    :func:`grad_norm_targets` (a term with zero gradient keeps its weight); at other steps the
    weights stay. ``grads`` is a dict name -> gradient pytree, or a function of no arguments
    returning one, which is then called only at update steps (inside a ``lax.cond``), so a
    compiled loop pays for the per-term gradients once every ``every`` steps (see
    :meth:`~jaxsolve.pinn._problems.PINNProblem.term_gradients`). Pass ``weights`` to
    :meth:`~jaxsolve.pinn._problems.PINNProblem.loss`; they are data there, so changing them
    compiles nothing.

    Args:
        momentum: :math:`\alpha \in [0, 1)` of the moving average (may be traced).
        every: update the weights every ``every`` steps (``>= 1``; may be traced).
    """
    momentum = _check_real("momentum", momentum, positive=True, upper=1.0)
    if is_concrete(every):
        if isinstance(every, bool) or not isinstance(every, int | np.integer):
            raise TypeError(f"every must be an int >= 1; got {every!r}.")
        check_int("every", int(every))

    def init(names: Sequence[str] | Mapping[str, Any]) -> GradNormState:
        if isinstance(names, str):
            raise TypeError(f"names must be a sequence of term names; got {names!r}.")
        if isinstance(names, Mapping):
            weights = {str(k): as_float(v) for k, v in names.items()}
        else:
            weights = {str(k): as_float(1.0) for k in names}
        if not weights:
            raise ValueError("names must name at least one term.")
        if len(weights) != len(names):
            raise ValueError(f"names must be distinct; got {list(names)!r}.")
        return GradNormState(weights, jnp.zeros((), jnp.int32))

    def update(grads, state: GradNormState) -> tuple[dict[str, Array], GradNormState]:
        old = state.weights

        def blend(g):
            if set(g) != set(old):
                raise ValueError(
                    f"grads must have the state's term names {sorted(old)}; got {sorted(g)}."
                )
            target = grad_norm_targets(g)
            new = {}
            for name, w in old.items():
                t = target[name].astype(w.dtype)
                moved = (momentum * w + (1 - momentum) * t).astype(w.dtype)
                new[name] = jnp.where(jnp.isfinite(t), moved, w)
            return new

        due = state.count % jnp.asarray(every) == 0
        if callable(grads):
            weights = lax.cond(due, lambda: blend(grads()), lambda: dict(old))
        else:
            weights = jax.tree_util.tree_map(
                lambda a, b: jnp.where(due, a, b), blend(grads), dict(old)
            )
        return weights, GradNormState(weights, state.count + 1)

    return GradNormWeighting(init, update)
