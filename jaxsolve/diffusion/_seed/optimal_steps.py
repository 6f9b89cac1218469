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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core import as_float
from .._sample import sample
from .._solvers._base import AbstractSolver


class OSSResult(NamedTuple):
    """The optimal ``num_steps``-step grid (ending in 0), its teacher indices and its cost."""

    sigmas: Float[Array, " K+1"]
    indices: Int[Array, " K+1"]
    cost: Float[Array, ""]


def _check_teacher(teacher_sigmas):
    grid = np.asarray(teacher_sigmas, dtype=np.float64)
    if grid.ndim != 1 or grid.shape[0] < 2 or grid[-1] != 0 or np.any(grid[:-1] <= 0):
        raise ValueError(
            "teacher_sigmas must be a concrete, unpadded grid: positive, decreasing, ending in one 0."
        )
    if np.any(np.diff(grid) >= 0):
        raise ValueError("teacher_sigmas must be strictly decreasing.")
    return grid.shape[0] - 1


def _mse(a, b):
    """The cost of a candidate; a non-finite state costs infinity, so that no minimum ever picks
    it (``argmin`` returns the index of a NaN)."""
    err = jnp.mean((a - b) ** 2)
    return jnp.where(jnp.isfinite(err), err, jnp.inf)


def optimal_sigmas(
    denoiser: Callable,
    x: Float[ArrayLike, "*batch ..."],
    teacher_sigmas: Float[ArrayLike, " N+1"],
    solver: AbstractSolver,
    num_steps: int,
    *,
    reference: Float[ArrayLike, "N+1 *batch ..."] | None = None,
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
        restart_from_teacher: every student step starts from the teacher's state (additive
            local errors; one-step solvers only).
    """
    n = _check_teacher(teacher_sigmas)
    if not isinstance(num_steps, int) or isinstance(num_steps, bool) or not 1 <= num_steps <= n:
        raise ValueError(
            f"num_steps must be an int in [1, {n}] (the teacher's steps); got {num_steps!r}."
        )
    x = as_float(x)
    teacher = jnp.asarray(teacher_sigmas, x.dtype)
    if reference is None:
        run = sample(
            denoiser,
            x,
            teacher,
            solver if teacher_solver is None else teacher_solver,
            full_output=True,
            save_trajectory=True,
        )
        reference = run.trajectory
    reference = as_float(reference).astype(x.dtype)
    if reference.shape != (n + 1, *x.shape):
        raise ValueError(
            f"reference must have shape {(n + 1, *x.shape)} (a state per teacher level); got "
            f"{reference.shape}."
        )
    if not bool(jnp.all(jnp.isfinite(reference))):
        raise ValueError("reference must be finite (a state per teacher level).")
    one_step = solver.init(x, teacher) is None
    if restart_from_teacher and not one_step:
        raise TypeError(
            f"restart_from_teacher needs a one-step solver (no history); {type(solver).__name__} "
            "carries state between steps."
        )
    K = num_steps
    ii, jj = np.triu_indices(n + 1, k=1)  # all pairs i < j
    pairs_i, pairs_j = jnp.asarray(ii, jnp.int32), jnp.asarray(jj, jnp.int32)

    def one_step_from(state, i, j):
        # One solver step from level i to level j (j = n is the final step into 0).
        grid = jnp.stack([teacher[i], teacher[j], jnp.zeros_like(teacher[j])])
        return sample(denoiser, state, grid, solver, n_steps=1, throw=False)

    if restart_from_teacher:
        local = jax.jit(
            jax.vmap(lambda i, j: _mse(one_step_from(reference[i], i, j), reference[j]))
        )(pairs_i, pairs_j)
        c = jnp.full((n + 1, n + 1), jnp.inf, x.dtype).at[pairs_i, pairs_j].set(local)
        best = jnp.full((n + 1,), jnp.inf, x.dtype).at[0].set(0.0)
        back = []
        for _ in range(K):
            total = best[:, None] + c  # (i, j)
            back.append(jnp.argmin(total, axis=0))
            best = jnp.min(total, axis=0)
        cost = best[n]
        pointers = jnp.stack(back)
    else:

        def valid(k, i, j):
            final = k == K
            return (
                (i >= k - 1)
                & jnp.where(k == 1, i == 0, True)
                & jnp.where(final, j == n, j <= n - K + k)
            )

        if one_step:

            @jax.jit
            def layer(states, k):
                def pair_cost(i, j):
                    y = one_step_from(states[i], i, j)
                    return jnp.where(valid(k, i, j), _mse(y, reference[j]), jnp.inf), y

                costs, ys = jax.vmap(pair_cost)(pairs_i, pairs_j)
                table = jnp.full((n + 1, n + 1), jnp.inf, x.dtype).at[pairs_i, pairs_j].set(costs)
                arg = jnp.argmin(table, axis=0)
                flat = (
                    jnp.full((n + 1, n + 1), -1, jnp.int32)
                    .at[pairs_i, pairs_j]
                    .set(jnp.arange(pairs_i.shape[0], dtype=jnp.int32))
                )
                new_states = ys[jnp.maximum(flat[arg, jnp.arange(n + 1)], 0)]
                return jnp.min(table, axis=0), arg, new_states

            states = jnp.broadcast_to(x, (n + 1, *x.shape))
            back = []
            for k in range(1, K + 1):
                cost_k, arg, states = layer(states, jnp.asarray(k))
                back.append(arg)
            pointers = jnp.stack(back)
            cost = cost_k[n]
        else:

            @jax.jit
            def layer(pointers, k):
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
                    pos = trace(i)
                    m = jnp.arange(K + 1)
                    levels = teacher[pos]
                    filler = teacher[j] * 0.5 ** jnp.maximum(m - k, 0).astype(x.dtype)
                    grid = jnp.where(m < k, levels, jnp.where(m == k, teacher[j], filler))
                    grid = grid.at[K].set(jnp.where(j == n, grid[K], 0.0))
                    y = sample(denoiser, x, grid, solver, n_steps=k, throw=False)
                    return jnp.where(valid(k, i, j), _mse(y, reference[j]), jnp.inf)

                costs = jax.vmap(pair_cost)(pairs_i, pairs_j)
                table = jnp.full((n + 1, n + 1), jnp.inf, x.dtype).at[pairs_i, pairs_j].set(costs)
                return jnp.min(table, axis=0), jnp.argmin(table, axis=0)

            pointers = jnp.zeros((K, n + 1), jnp.int32)
            for k in range(1, K + 1):
                cost_k, arg = layer(pointers, jnp.asarray(k))
                pointers = pointers.at[k - 1].set(arg.astype(jnp.int32))
            cost = cost_k[n]

    indices = [n]
    for k in range(K, 0, -1):
        indices.append(int(pointers[k - 1][indices[-1]]))
    indices = np.asarray(indices[::-1])
    if not np.isfinite(float(cost)):
        raise FloatingPointError(
            f"optimal_sigmas: every {num_steps}-step subgrid of the teacher grid gives a non-finite "
            "state (the solver or the denoiser produced NaN or infinity on every path)."
        )
    return OSSResult(sigmas=teacher[jnp.asarray(indices)], indices=jnp.asarray(indices), cost=cost)
