r"""Optimal step sizes by dynamic programming ("Optimal Stepsize for Diffusion Sampling").

A fine *teacher* grid :math:`\sigma^T_0 > \dots > \sigma^T_N = 0` and its trajectory
:math:`x^T_p` (the solver itself on the teacher grid, or exact reference states) define the target.
A :math:`K`-step *student* grid is a subsequence :math:`0 = p_0 < p_1 < \dots < p_K = N` of teacher
indices, and its cost is the error of the student's state against the teacher's. Optimal Stepsize
Distillation (OSS) finds the best subsequence by dynamic programming over (steps taken, teacher
index): with :math:`S_k(j)` the student's state after :math:`k` steps ending at index :math:`j`,

.. math:: \mathrm{cost}_k(j) = \min_{i<j}\ \lVert \Phi(S_{k-1}(i);\ \sigma^T_i\to\sigma^T_j) - x^T_j\rVert^2,
          \qquad S_k(j) = \Phi(S_{k-1}(i^*);\ \sigma^T_{i^*}\to\sigma^T_j),

:math:`\Phi` one step of the given solver, and the answer is traced back from
:math:`(K, N)`. The recursion assumes optimal substructure (the best way to reach :math:`j` in
:math:`k` steps extends a best way to reach some :math:`i`), which holds exactly when every step
shrinks the error monotonically — e.g. Euler on an isotropic Gaussian, where
``tests/diffusion`` checks it against brute force.

**Any solver.** For a solver with history (multistep, singlestep groups) a step depends on the
whole path, so :math:`S_k(j)` is recomputed by running :func:`~jaxsolve.diffusion.sample` from
:math:`x^T_0` along the traced-back path plus the new level (on a ``K``-step grid, so
lower-order-final rules see the final step count; all candidate pairs ``(i, j)`` of a layer in one
``vmap``). One-step solvers (``solver.init`` returns ``None``) take the single step from the stored
state instead. The cost is the mean squared error over a batch of trajectories (one grid for all;
the paper searches per sample and takes the median).

``restart_from_teacher=True`` is the variant in which every student step starts from the teacher's
state: the cost is then the sum of local errors, additive along the path, and the DP is exactly
optimal for any one-step solver.

Each search compiles one layer of the recursion (module-level ``eqx.filter_jit``, keyed on the
denoiser's and solver's non-array parts, ``K`` and the shapes) and runs it for every ``k``; a
later call with the same configuration reuses it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core import as_float, check_int
from .._sample import hashable, sample
from .._solvers._base import AbstractSolver


class OSSResult(NamedTuple):
    """The optimal ``num_steps``-step grid (ending in 0), its teacher indices and its cost."""

    sigmas: Float[Array, " K+1"]
    indices: Int[Array, " K+1"]
    cost: Float[Array, ""]


def optimal_sigmas(
    denoiser: Callable,
    x: Float[ArrayLike, " *shape"],
    teacher_sigmas: Float[ArrayLike, " L"],
    solver: AbstractSolver,
    num_steps: int,
    *,
    reference: Float[ArrayLike, " L *shape"] | None = None,
    teacher_solver: AbstractSolver | None = None,
    restart_from_teacher: bool = False,
) -> OSSResult:
    """The best ``num_steps``-step subgrid of ``teacher_sigmas`` for ``solver`` (see the module).

    Args:
        denoiser: the model.
        x: a batch of initial states at ``teacher_sigmas[0]`` (a few trajectories).
        teacher_sigmas: the fine grid (concrete, unpadded, ending in 0), ``N`` steps.
        solver: the solver the grid is optimised for.
        num_steps: ``K <= N``, the number of student steps.
        reference: the target state at every teacher level, ``(N + 1, *x.shape)``; by default the
            trajectory of ``teacher_solver`` (default ``solver``) on the teacher grid.
        teacher_solver: the solver of the default reference trajectory.
        restart_from_teacher: every student step starts from the teacher's state (additive
            local errors; one-step solvers only).

    Returns:
        An :class:`OSSResult`: the ``K``-step grid, its teacher indices and its cost.
    """
    n = _check_teacher(teacher_sigmas)
    num_steps = check_int("num_steps", num_steps, maximum=n)
    x = as_float(x)
    teacher = jnp.asarray(teacher_sigmas, x.dtype)
    reference = _teacher_reference(
        denoiser, x, teacher, solver if teacher_solver is None else teacher_solver, reference
    )
    search = _choose_search(solver, x, teacher, restart_from_teacher)
    pointers, cost = search(denoiser, solver, x, teacher, reference, num_steps)
    if not np.isfinite(float(cost)):
        raise FloatingPointError(
            f"optimal_sigmas: every {num_steps}-step subgrid of the teacher grid gives a non-finite "
            "state (the solver or the denoiser produced NaN or infinity on every path)."
        )
    indices = jnp.asarray(_trace_back(pointers, num_steps))
    return OSSResult(sigmas=teacher[indices], indices=indices, cost=cost)


def _check_teacher(teacher_sigmas):
    grid = np.asarray(teacher_sigmas, dtype=np.float64)
    if grid.ndim != 1 or grid.shape[0] < 2 or grid[-1] != 0 or np.any(grid[:-1] <= 0):
        raise ValueError(
            "teacher_sigmas must be a concrete, unpadded grid: positive, decreasing, ending in one 0."
        )
    if np.any(np.diff(grid) >= 0):
        raise ValueError("teacher_sigmas must be strictly decreasing.")
    return grid.shape[0] - 1


def _teacher_reference(denoiser, x, teacher, teacher_solver, reference):
    """The target state at every teacher level: given, or the teacher solver's trajectory."""
    n = teacher.shape[0] - 1
    if reference is None:
        run = sample(denoiser, x, teacher, teacher_solver, full_output=True, save_trajectory=True)
        reference = run.trajectory
    reference = as_float(reference).astype(x.dtype)
    if reference.shape != (n + 1, *x.shape):
        raise ValueError(
            f"reference must have shape {(n + 1, *x.shape)} (a state per teacher level); got "
            f"{reference.shape}."
        )
    if not bool(jnp.all(jnp.isfinite(reference))):
        raise ValueError("reference must be finite (a state per teacher level).")
    return reference


def _trace_back(pointers, num_steps):
    """Teacher indices of the best path, from the last layer's pointer at the final level ``n``."""
    pointers = np.asarray(pointers)
    indices = [pointers.shape[1] - 1]
    for k in range(num_steps, 0, -1):
        indices.append(int(pointers[k - 1][indices[-1]]))
    return np.asarray(indices[::-1])


def _choose_search(solver, x, teacher, restart_from_teacher):
    """The search that fits ``solver``: from the teacher's states, or over student states with
    one step from each stored state (no history) or a re-run along the path (history)."""
    one_step = solver.init(x, teacher) is None
    if not restart_from_teacher:
        return _search_one_step if one_step else _search_with_history
    if not one_step:
        raise TypeError(
            f"restart_from_teacher needs a one-step solver (no history); {type(solver).__name__} "
            "carries state between steps."
        )
    return _search_from_teacher_states


# -- the three searches: (denoiser, solver, x, teacher, reference, K) -> (pointers, cost) --------


def _search_from_teacher_states(denoiser, solver, x, teacher, reference, K):
    """Every student step starts from the teacher's state: the cost of a path is the sum of its
    steps' local errors, so one table of local costs and a min-plus recursion find the optimum."""
    n = teacher.shape[0] - 1
    local = _compiled(_local_costs, denoiser, solver)(teacher, reference)
    ii, jj = _pairs(n)
    c = jnp.full((n + 1, n + 1), jnp.inf, x.dtype).at[ii, jj].set(local)
    best = jnp.full((n + 1,), jnp.inf, x.dtype).at[0].set(0.0)
    back = []
    for _ in range(K):
        total = best[:, None] + c  # (i, j)
        back.append(jnp.argmin(total, axis=0))
        best = jnp.min(total, axis=0)
    return jnp.stack(back), best[n]


def _search_one_step(denoiser, solver, x, teacher, reference, K):
    """A one-step solver: the best state reaching each level after k steps is stored, and layer k
    takes one step from each of them to every later level."""
    n = teacher.shape[0] - 1
    layer = _compiled(_one_step_layer, denoiser, solver)
    states = jnp.broadcast_to(x, (n + 1, *x.shape))
    back = []
    for k in range(1, K + 1):
        cost_k, arg, states = layer(teacher, reference, states, jnp.asarray(k), K)
        back.append(arg)
    return jnp.stack(back), cost_k[n]


def _search_with_history(denoiser, solver, x, teacher, reference, K):
    """A solver with history: each candidate re-runs the sampler from ``x`` along the traced-back
    best path to its start level, then one step to its end level."""
    n = teacher.shape[0] - 1
    layer = _compiled(_history_layer, denoiser, solver)
    pointers = jnp.zeros((K, n + 1), jnp.int32)
    for k in range(1, K + 1):
        cost_k, arg = layer(x, teacher, reference, pointers, jnp.asarray(k), K)
        pointers = pointers.at[k - 1].set(arg.astype(jnp.int32))
    return pointers, cost_k[n]


# -- the compiled pieces: (denoiser, solver, *arrays, K) -> a table or a layer of the DP ---------


def _compiled(fn, denoiser, solver):
    """``fn`` with the denoiser and solver bound, compiled.

    The module-level ``eqx.filter_jit`` of ``fn`` keys its cache on the non-array parts of the
    denoiser and solver (and on ``K`` and the shapes), so every later call with the same
    configuration reuses the compiled layer. A denoiser or solver whose non-array parts cannot
    be hashed (a callable dataclass with ``eq=True``) cannot key that cache, and keying it by
    identity would reuse a compilation after the object's fields change; it is compiled for this
    call alone (once, for all ``K`` layers).
    """
    if hashable(denoiser, solver):
        return functools.partial(_JITTED[fn], denoiser, solver)
    return eqx.filter_jit(functools.partial(fn, denoiser, solver))


def _local_costs(denoiser, solver, teacher, reference):
    """The error of one step from the teacher's state at level i to level j, for all i < j."""
    ii, jj = _pairs(teacher.shape[0] - 1)
    return jax.vmap(
        lambda i, j: _mse(_step(denoiser, solver, teacher, reference[i], i, j), reference[j])
    )(ii, jj)


def _one_step_layer(denoiser, solver, teacher, reference, states, k, K):
    """Layer ``k`` for a one-step solver: the best cost, predecessor and state at every level."""
    n = teacher.shape[0] - 1
    ii, jj = _pairs(n)

    def pair_cost(i, j):
        y = _step(denoiser, solver, teacher, states[i], i, j)
        return jnp.where(_valid(k, i, j, K, n), _mse(y, reference[j]), jnp.inf), y

    costs, ys = jax.vmap(pair_cost)(ii, jj)
    table = jnp.full((n + 1, n + 1), jnp.inf, costs.dtype).at[ii, jj].set(costs)
    arg = jnp.argmin(table, axis=0)
    flat = (
        jnp.full((n + 1, n + 1), -1, jnp.int32)
        .at[ii, jj]
        .set(jnp.arange(ii.shape[0], dtype=jnp.int32))
    )
    new_states = ys[jnp.maximum(flat[arg, jnp.arange(n + 1)], 0)]
    return jnp.min(table, axis=0), arg, new_states


def _history_layer(denoiser, solver, x, teacher, reference, pointers, k, K):
    """Layer ``k`` for a solver with history: the best cost and predecessor at every level."""
    n = teacher.shape[0] - 1
    ii, jj = _pairs(n)

    def trace(i):
        # Teacher indices of the best (k - 1)-step path ending at i: pos[m], m < k.
        def body(carry, m):
            pos, cur = carry
            take = m < k - 1
            prev = pointers[jnp.maximum(m, 0), cur]  # pointer of layer m + 1
            pos = pos.at[m].set(jnp.where(take, prev, pos[m]))
            cur = jnp.where(take, prev, cur)
            return (pos, cur), None

        pos = jnp.zeros((K + 1,), jnp.int32).at[jnp.maximum(k - 1, 0)].set(i)
        (pos, _), _ = jax.lax.scan(body, (pos, i), jnp.arange(K - 1, -1, -1))
        return pos

    def pair_cost(i, j):
        # The path's levels, then level j, on a K-step grid (so lower-order-final rules see the
        # final step count); the filler levels below j are never reached (n_steps=k).
        pos = trace(i)
        m = jnp.arange(K + 1)
        levels = teacher[pos]
        filler = teacher[j] * 0.5 ** jnp.maximum(m - k, 0).astype(x.dtype)
        grid = jnp.where(m < k, levels, jnp.where(m == k, teacher[j], filler))
        grid = grid.at[K].set(jnp.where(j == n, grid[K], 0.0))
        y = sample(denoiser, x, grid, solver, n_steps=k, throw=False)
        return jnp.where(_valid(k, i, j, K, n), _mse(y, reference[j]), jnp.inf)

    costs = jax.vmap(pair_cost)(ii, jj)
    table = jnp.full((n + 1, n + 1), jnp.inf, costs.dtype).at[ii, jj].set(costs)
    return jnp.min(table, axis=0), jnp.argmin(table, axis=0)


_JITTED = {fn: eqx.filter_jit(fn) for fn in (_local_costs, _one_step_layer, _history_layer)}


# -- shared pieces --------------------------------------------------------------------------------


def _pairs(n):
    """All teacher index pairs ``i < j`` (static: ``n`` is a shape)."""
    ii, jj = np.triu_indices(n + 1, k=1)
    return jnp.asarray(ii, jnp.int32), jnp.asarray(jj, jnp.int32)


def _step(denoiser, solver, teacher, state, i, j):
    """One solver step from teacher level i to level j (j = n is the final step into 0)."""
    grid = jnp.stack([teacher[i], teacher[j], jnp.zeros_like(teacher[j])])
    return sample(denoiser, state, grid, solver, n_steps=1, throw=False)


def _valid(k, i, j, K, n):
    """Whether step k of a K-step path may go from level i to level j: the first step starts at
    0, every path can still reach level n in the steps left, and the last step ends there."""
    return (
        (i >= k - 1) & jnp.where(k == 1, i == 0, True) & jnp.where(k == K, j == n, j <= n - K + k)
    )


def _mse(a, b):
    """The cost of a candidate; a non-finite state costs infinity, so that no minimum ever picks
    it (``argmin`` returns the index of a NaN)."""
    err = jnp.mean((a - b) ** 2)
    return jnp.where(jnp.isfinite(err), err, jnp.inf)
