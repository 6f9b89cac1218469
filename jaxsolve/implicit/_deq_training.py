r"""Tools for training deep equilibrium models (the feature set of TorchDEQ, "TorchDEQ: A Library
for Deep Equilibrium Models", Geng & Kolter), written for :class:`DEQ`.

**Normalising the cell's weights.** Both are cell wrappers: the wrapped cell keeps the raw
parameters and builds the normalised weights on every call, so gradients flow through the
normalisation.

- :func:`spectral_norm` ("Spectral Normalization for Generative Adversarial Networks", Miyato et
  al.): each selected weight :math:`W` (reshaped to ``(out, -1)``) is used as
  :math:`s\, W / \sigma(W)` with :math:`\sigma(W) = u^\top W v`, :math:`v = W^\top u /
  \|W^\top u\|`, and :math:`u` a power-iteration estimate of the leading left singular vector,
  held without gradient. :func:`update_spectral_norm` runs power iterations
  :math:`u \leftarrow W v / \|W v\|,\ v \leftarrow W^\top u / \|W^\top u\|` (once per training
  step, outside the gradient, as the paper does). With a converged :math:`u` the normalised
  weight has spectral norm :math:`s` (for a convolution: the norm of the reshaped kernel, the
  paper's choice, not the operator norm of the convolution). With ``scale < 1`` and 1-Lipschitz
  activations a cell :math:`\tanh(W z + U x)` is a contraction in :math:`z`.
- :func:`weight_norm` ("Weight Normalization: A Simple Reparameterization to Accelerate Training
  of Deep Neural Networks", Salimans & Kingma): :math:`w_i = g_i\, v_i / \|v_i\|` per output row
  :math:`i`, with the gain :math:`g` learned (initialised to :math:`\|v_i\|`, so wrapping does
  not change the cell) or fixed.

**Fixed-point correction** ("Deep Equilibrium Optical Flow Estimation", Bai, Geng, Kolter &
Koltun): :func:`fixed_point_correction` splits the forward solve into ``num_states`` segments of
the budget, each warm-started from the previous one's end (without gradient), and supervises
every segment's end :math:`z_i` through the DEQ's ``backward`` (use :class:`PhantomGradient` or
:class:`JacobianFree`, as the paper does: the intermediate states are not fixed points),

.. math:: \mathcal L = \sum_{i=1}^{n} \gamma^{\,n-i}\, \ell(z_i), \qquad 0 < \gamma \le 1,

so later states weigh more (the paper uses :math:`\gamma = 0.8`). A stateful solver
(:class:`Anderson`) restarts its history at each segment boundary.

**Initial guesses as data**: :class:`Zeros`, :class:`Previous` (warm start from the previous
equilibrium), :class:`RandomNormal` and :class:`RandomRestart` (warm start, replaced by noise
with a probability, a traced value) all map ``(template, previous, key)`` to ``z0``.
:func:`with_solvers` swaps the forward solver, the backward mode (which holds the backward
solver and its damping) and the budget of a :class:`DEQ`, e.g. between training and evaluation.

**A multiscale cell**: :class:`MultiscaleCell`, two resolutions of a 1-D signal that exchange
information at every call ("Multiscale Deep Equilibrium Models", Bai, Koltun & Kolter), small.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._core import as_float, check_int, check_positive
from ._base import AbstractBackward, AbstractSolver
from ._deq import DEQ, DEQOutput

# ----------------------------------------------------------------------------------------------
# Weight normalisation wrappers.


def is_weight(leaf: Any) -> bool:
    """The default selection: floating arrays with at least two axes (matrices, conv kernels);
    biases and scalars are left alone."""
    return eqx.is_inexact_array(leaf) and leaf.ndim >= 2


def _mask(cell, where, name):
    leaves = jtu.tree_leaves(cell)
    mask = tuple(bool(where(leaf)) for leaf in leaves)
    if not any(mask):
        raise ValueError(
            f"{name}: the selection `where` matched no array of the cell (the default selects "
            "floating arrays with ndim >= 2); nothing would be normalised."
        )
    return mask


def _rows(w):
    return w.reshape(w.shape[0], -1)


def _unit(v, eps):
    # A floor, not an added epsilon: a nonzero vector is normalised exactly.
    return v / jnp.maximum(jnp.linalg.norm(v), eps)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _power_iteration(w, u, iterations, eps):
    # Jitted so that building a wrapper outside jit is one compiled call per weight shape, not
    # an op-by-op dispatch of every iteration (inside jit it is inlined).
    w2 = lax.stop_gradient(_rows(w))

    def body(_, u):
        v = _unit(w2.T @ u, eps)
        return _unit(w2 @ v, eps)

    return lax.fori_loop(0, iterations, body, lax.stop_gradient(u))


class SpectralNormCell(eqx.Module):
    """A cell whose selected weights are spectrally normalised; see :func:`spectral_norm`.

    ``cell`` holds the raw weights, ``u`` the power-iteration vectors (one per selected weight,
    in leaf order; no gradient flows into them), ``scale`` the target spectral norm.
    """

    cell: Callable
    u: tuple[Array, ...]
    scale: float = eqx.field(static=True)
    mask: tuple[bool, ...] = eqx.field(static=True)
    eps: float = eqx.field(static=True, default=1e-12)

    def sigmas(self) -> list[Float[Array, ""]]:
        r"""The estimates :math:`\sigma(W) = \|W^\top u\|` (differentiable in ``W``)."""
        leaves = [leaf for leaf, m in zip(jtu.tree_leaves(self.cell), self.mask, strict=True) if m]
        out = []
        for w, u in zip(leaves, self.u, strict=True):
            w2 = _rows(w)
            u = lax.stop_gradient(u)
            v = lax.stop_gradient(_unit(w2.T @ u, self.eps))
            out.append(u @ (w2 @ v))
        return out

    def normalised(self) -> Callable:
        """The cell with each selected weight replaced by ``scale * W / sigma(W)``."""
        leaves, treedef = jtu.tree_flatten(self.cell)
        sigmas = iter(self.sigmas())
        new = [
            self.scale * leaf / jnp.maximum(next(sigmas), self.eps) if m else leaf
            for leaf, m in zip(leaves, self.mask, strict=True)
        ]
        return jtu.tree_unflatten(treedef, new)

    def power_iteration(self, iterations: int = 1) -> SpectralNormCell:
        """This wrapper with ``u`` refined by ``iterations`` power iterations (no gradient)."""
        leaves = [leaf for leaf, m in zip(jtu.tree_leaves(self.cell), self.mask, strict=True) if m]
        u = tuple(
            _power_iteration(w, u, iterations, self.eps)
            for w, u in zip(leaves, self.u, strict=True)
        )
        return eqx.tree_at(lambda s: s.u, self, u)

    def __call__(self, *args, **kwargs):
        return self.normalised()(*args, **kwargs)


def spectral_norm(
    cell: Callable,
    *,
    key: PRNGKeyArray,
    scale: float = 1.0,
    where: Callable[[Any], bool] = is_weight,
    init_iterations: int = 20,
) -> SpectralNormCell:
    """Wrap ``cell`` so that every weight ``where`` selects is used with spectral norm
    ``scale`` (see the module docstring). ``u`` starts from Gaussian noise (``key``) refined by
    ``init_iterations`` power iterations; call :func:`update_spectral_norm` on the model once
    per training step to track the weights as they change."""
    scale = float(scale)
    if not scale > 0:
        raise ValueError(f"spectral_norm scale must be positive; got {scale}.")
    check_int("spectral_norm init_iterations", init_iterations, minimum=0)
    mask = _mask(cell, where, "spectral_norm")
    leaves = [leaf for leaf, m in zip(jtu.tree_leaves(cell), mask, strict=True) if m]
    u = tuple(
        _unit(jax.random.normal(jax.random.fold_in(key, i), (w.shape[0],), w.dtype), 1e-12)
        for i, w in enumerate(leaves)
    )
    return SpectralNormCell(cell, u, scale, mask).power_iteration(init_iterations)


def update_spectral_norm(model: PyTree, iterations: int = 1) -> PyTree:
    """``model`` with every :class:`SpectralNormCell` inside it refined by ``iterations`` power
    iterations (call once per training step, outside the gradient)."""
    check_int("update_spectral_norm iterations", iterations, minimum=0)
    is_sn = lambda node: isinstance(node, SpectralNormCell)
    return jtu.tree_map(
        lambda node: node.power_iteration(iterations) if is_sn(node) else node,
        model,
        is_leaf=is_sn,
    )


class WeightNormCell(eqx.Module):
    """A cell whose selected weights are used as ``g * v / |v|`` per output row; see
    :func:`weight_norm`. ``cell`` holds the directions ``v``, ``gains`` the learned gains
    (``None`` where the gain is the fixed ``gain``)."""

    cell: Callable
    gains: tuple[Array, ...] | None
    gain: float | None = eqx.field(static=True)
    mask: tuple[bool, ...] = eqx.field(static=True)
    eps: float = eqx.field(static=True, default=1e-12)

    def normalised(self) -> Callable:
        """The cell with each selected weight replaced by ``g v / |v|`` (row-wise)."""
        leaves, treedef = jtu.tree_flatten(self.cell)
        selected = sum(self.mask)
        gains = iter(self.gains if self.gains is not None else [self.gain] * selected)
        new = []
        for leaf, m in zip(leaves, self.mask, strict=True):
            if m:
                norms = jnp.linalg.norm(_rows(leaf), axis=1)
                g = jnp.asarray(next(gains), leaf.dtype)
                shape = (-1,) + (1,) * (leaf.ndim - 1)
                leaf = leaf * jnp.reshape(g / jnp.maximum(norms, self.eps), shape)
            new.append(leaf)
        return jtu.tree_unflatten(treedef, new)

    def __call__(self, *args, **kwargs):
        return self.normalised()(*args, **kwargs)


def weight_norm(
    cell: Callable, *, gain: float | None = None, where: Callable[[Any], bool] = is_weight
) -> WeightNormCell:
    """Wrap ``cell`` so that every weight ``where`` selects is used as ``g v / |v|`` per output
    row. ``gain=None``: ``g`` is learned, one per row, initialised to the row norms (the wrapped
    cell computes what ``cell`` did); a float: every row has that fixed norm."""
    mask = _mask(cell, where, "weight_norm")
    if gain is not None:
        gain = float(gain)
        if not gain > 0:
            raise ValueError(f"weight_norm gain must be positive or None; got {gain}.")
        return WeightNormCell(cell, None, gain, mask)
    leaves = [leaf for leaf, m in zip(jtu.tree_leaves(cell), mask, strict=True) if m]
    gains = tuple(jnp.linalg.norm(_rows(w), axis=1) for w in leaves)
    return WeightNormCell(cell, gains, None, mask)


# ----------------------------------------------------------------------------------------------
# Fixed-point correction.


class CorrectionOutput(eqx.Module):
    """What :func:`fixed_point_correction` returns: ``loss`` (the weighted sum), ``losses`` (per
    state), ``weights`` (:math:`\\gamma^{n-i}`), ``states`` (the supervised iterates, the last is
    the equilibrium), ``output`` (the last segment's :class:`DEQOutput`, whose
    ``jacobian_loss`` is estimated there) and ``num_steps`` (all segments together)."""

    loss: Float[Array, ""]
    losses: Float[Array, " n"]
    weights: Float[Array, " n"]
    states: tuple[PyTree[Array], ...]
    output: DEQOutput
    num_steps: Array


def correction_budgets(max_steps: int, num_states: int) -> list[int]:
    """Segment budgets: state ``i`` (1-based) ends after ``round(i * max_steps / n)`` steps."""
    ends = [round(i * max_steps / num_states) for i in range(1, num_states + 1)]
    return [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]


def fixed_point_correction(
    deq: DEQ,
    x: PyTree[Array],
    loss_fn: Callable[[PyTree[Array]], Float[Array, ""]],
    z0: PyTree[Array] | None = None,
    *,
    num_states: int = 3,
    gamma: float = 0.8,
    key: PRNGKeyArray | None = None,
) -> CorrectionOutput:
    r"""The fixed-point correction loss :math:`\sum_i \gamma^{n-i} \ell(z_i)` over ``num_states``
    states of one forward solve (see the module docstring); ``loss_fn(z) -> scalar`` is
    :math:`\ell`. ``deq.max_steps`` (a Python int) is split into ``num_states`` segments
    (:func:`correction_budgets`); a segment that starts converged takes no step. ``key`` is
    needed when ``deq.jacobian_samples > 0`` (estimated at the last state only)."""
    check_int("fixed_point_correction num_states", num_states)
    gamma = float(gamma)
    if not 0 < gamma <= 1:
        raise ValueError(f"fixed_point_correction gamma must be in (0, 1]; got {gamma}.")
    max_steps = deq.max_steps
    if not isinstance(max_steps, int) or max_steps < num_states:
        raise ValueError(
            "fixed_point_correction needs deq.max_steps to be a Python int >= num_states "
            f"(it is split into segments); got max_steps={max_steps!r}, num_states={num_states}."
        )
    z = deq.initial_state(x) if z0 is None else z0
    states, losses, steps = [], [], []
    budgets = correction_budgets(max_steps, num_states)
    for i, budget in enumerate(budgets):
        last = i == num_states - 1
        out = deq.run(x, z, key=key, max_steps=budget, jacobian=last)
        states.append(out.value)
        losses.append(loss_fn(out.value))
        steps.append(out.solution.num_steps)
        z = lax.stop_gradient(out.value)
    losses = jnp.stack(losses)
    weights = jnp.asarray([gamma ** (num_states - 1 - i) for i in range(num_states)], losses.dtype)
    total = jnp.sum(weights * losses)
    return CorrectionOutput(total, losses, weights, tuple(states), out, sum(steps))


# ----------------------------------------------------------------------------------------------
# Initial guesses and solver choices.


class AbstractInit(eqx.Module):
    """``init(template, previous=None, key=None) -> z0``: an initial guess shaped like
    ``template`` (a state pytree, e.g. ``deq.initial_state(x)``) from the previous equilibrium
    (or ``None``) and a key. No gradient flows into ``z0`` (a DEQ's ``z0`` has none anyway)."""

    def __call__(self, template, previous=None, key=None):
        return lax.stop_gradient(self._guess(template, previous, key))

    @abc.abstractmethod
    def _guess(self, template, previous, key):
        """The guess, before the gradient is stopped."""


class Zeros(AbstractInit):
    """Start from zeros (cold start)."""

    def _guess(self, template, previous, key):
        return jtu.tree_map(jnp.zeros_like, template)


class Previous(AbstractInit):
    """Warm start from the previous equilibrium (zeros when there is none yet): for inputs that
    change little between calls (video frames, a slowly changing batch, successive optimiser
    steps on the same sample) the solve starts close to its answer."""

    def _guess(self, template, previous, key):
        if previous is None:
            return jtu.tree_map(jnp.zeros_like, template)
        return jtu.tree_map(lambda p, t: jnp.asarray(p, t.dtype), previous, template)


def _noise(template, key, scale):
    leaves, treedef = jtu.tree_flatten(template)
    noise = [
        scale.astype(t.dtype) * jax.random.normal(jax.random.fold_in(key, i), t.shape, t.dtype)
        for i, t in enumerate(leaves)
    ]
    return jtu.tree_unflatten(treedef, noise)


def _need_key(key, name):
    if key is None:
        raise ValueError(f"{name} draws a random initial guess and needs key=; got None.")


class RandomNormal(AbstractInit):
    """Start from Gaussian noise of standard deviation ``scale`` (a traced value): trains the
    cell to converge from anywhere near the origin, not only from zeros."""

    scale: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)

    def __check_init__(self):
        check_positive("RandomNormal scale", self.scale, allow_zero=True)

    def _guess(self, template, previous, key):
        _need_key(key, "RandomNormal")
        return _noise(template, key, self.scale)


class RandomRestart(AbstractInit):
    """Warm start from the previous equilibrium, replaced with probability ``probability`` by
    Gaussian noise of standard deviation ``scale`` (both traced values, so a schedule or a sweep
    is data): keeps a warm-started model able to converge from a cold start."""

    probability: Float[Array, ""] = eqx.field(converter=as_float, default=0.1)
    scale: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)

    def __check_init__(self):
        check_positive("RandomRestart scale", self.scale, allow_zero=True)
        check_positive("RandomRestart probability", self.probability, allow_zero=True)

    def _guess(self, template, previous, key):
        _need_key(key, "RandomRestart")
        warm = Previous()._guess(template, previous, key)
        noise = _noise(template, jax.random.fold_in(key, 1), self.scale)
        restart = jax.random.uniform(jax.random.fold_in(key, 0)) < self.probability
        return jtu.tree_map(lambda w, r: jnp.where(restart, r, w), warm, noise)


def with_solvers(
    deq: DEQ,
    *,
    solver: AbstractSolver | None = None,
    backward: AbstractBackward | None = None,
    max_steps: int | Array | None = None,
) -> DEQ:
    """``deq`` with its forward ``solver`` (and its damping), its ``backward`` mode (holding the
    backward solver or the phantom damping) or its budget replaced; the weights are shared.
    E.g. a cheap forward and :class:`PhantomGradient` for training, and an accurate forward for
    evaluation, from one trained model."""
    if solver is not None:
        if not isinstance(solver, AbstractSolver):
            raise TypeError(f"with_solvers solver must be a solver; got {type(solver).__name__}.")
        deq = eqx.tree_at(lambda d: d.solver, deq, solver)
    if backward is not None:
        if not isinstance(backward, AbstractBackward):
            raise TypeError(
                f"with_solvers backward must be a backward mode; got {type(backward).__name__}."
            )
        deq = eqx.tree_at(lambda d: d.backward, deq, backward)
    if max_steps is not None:
        deq = eqx.tree_at(lambda d: d.convergence.max_steps, deq, max_steps)
    return deq


# ----------------------------------------------------------------------------------------------
# A multiscale cell.


def _multiscale_zeros(channels, x):
    length = x.shape[-1]
    if length % 2:
        raise ValueError(f"MultiscaleCell needs an even signal length; got {length}.")
    return (
        jnp.zeros((channels, length), x.dtype),
        jnp.zeros((channels, length // 2), x.dtype),
    )


class MultiscaleCell(eqx.Module):
    r"""A small two-resolution cell for 1-D signals, after "Multiscale Deep Equilibrium Models"
    (Bai, Koltun & Kolter). The state is ``(z_hi, z_lo)`` of shapes ``(channels, length)`` and
    ``(channels, length // 2)``; the input ``x`` has shape ``(in_channels, length)``.

    Each resolution runs a residual block with the input injected,
    :math:`b_k = \mathrm{GN}(\mathrm{relu}(z_k + \mathrm{GN}(C_{k,2}\,\mathrm{relu}(C_{k,1} z_k))
    + u_k))` (:math:`u_\text{hi} = P x`, :math:`u_\text{lo} = P_\downarrow x`, GN a group
    norm), then the resolutions exchange information:
    :math:`z_\text{hi}' = \mathrm{relu}(b_\text{hi} + \mathrm{up}(C_{\uparrow} b_\text{lo}))`,
    :math:`z_\text{lo}' = \mathrm{relu}(b_\text{lo} + C_{\downarrow} b_\text{hi})` (a strided
    convolution down, a 1x1 convolution and nearest-neighbour repetition up).
    """

    inject_hi: eqx.nn.Conv1d
    inject_lo: eqx.nn.Conv1d
    conv1: tuple[eqx.nn.Conv1d, eqx.nn.Conv1d]
    conv2: tuple[eqx.nn.Conv1d, eqx.nn.Conv1d]
    norm_inner: tuple[eqx.nn.GroupNorm, eqx.nn.GroupNorm]
    norm_outer: tuple[eqx.nn.GroupNorm, eqx.nn.GroupNorm]
    down: eqx.nn.Conv1d
    up: eqx.nn.Conv1d
    channels: int = eqx.field(static=True)

    def __init__(self, in_channels: int, channels: int, *, key: PRNGKeyArray, groups: int = 2):
        check_int("MultiscaleCell in_channels", in_channels)
        check_int("MultiscaleCell channels", channels)
        if channels % groups:
            raise ValueError(
                f"MultiscaleCell channels ({channels}) must be divisible by groups ({groups})."
            )
        k = jax.random.split(key, 8)
        conv = lambda c_in, c_out, kk, **kw: eqx.nn.Conv1d(c_in, c_out, 3, padding=1, key=kk, **kw)
        self.inject_hi = conv(in_channels, channels, k[0])
        self.inject_lo = conv(in_channels, channels, k[1], stride=2)
        self.conv1 = (conv(channels, channels, k[2]), conv(channels, channels, k[3]))
        self.conv2 = (conv(channels, channels, k[4]), conv(channels, channels, k[5]))
        self.norm_inner = (eqx.nn.GroupNorm(groups, channels), eqx.nn.GroupNorm(groups, channels))
        self.norm_outer = (eqx.nn.GroupNorm(groups, channels), eqx.nn.GroupNorm(groups, channels))
        self.down = conv(channels, channels, k[6], stride=2)
        self.up = eqx.nn.Conv1d(channels, channels, 1, key=k[7])
        self.channels = channels

    @property
    def state_init(self) -> Callable:
        """``x -> (zeros(channels, length), zeros(channels, length // 2))``: the zero state
        for an input ``x``, as a function holding no arrays (pass as ``DEQ(state_init=...)``,
        a static field)."""
        return functools.partial(_multiscale_zeros, self.channels)

    def _block(self, i, z, u):
        inner = self.norm_inner[i](self.conv2[i](jax.nn.relu(self.conv1[i](z))))
        return self.norm_outer[i](jax.nn.relu(z + inner + u))

    def __call__(self, z: tuple[Array, Array], x: Float[Array, "c length"]):
        z_hi, z_lo = z
        b_hi = self._block(0, z_hi, self.inject_hi(x))
        b_lo = self._block(1, z_lo, self.inject_lo(x))
        up = jnp.repeat(self.up(b_lo), 2, axis=-1)
        return jax.nn.relu(b_hi + up), jax.nn.relu(b_lo + self.down(b_hi))
