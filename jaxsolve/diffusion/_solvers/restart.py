r"""Restart sampling ("Restart Sampling for Improving Generative Processes", Xu et al.).

Restart alternates an ODE solver with large forward-noise jumps: when the trajectory reaches the
lower end :math:`\sigma_j` of a restart interval :math:`[\sigma_j, \sigma_\text{max}]`, it is
re-noised to :math:`\sigma_\text{max}` by :math:`x \leftarrow x + \sqrt{\sigma_\text{max}^2 -
\sigma_j^2}\,z` (exactly the forward process, so the added noise contracts earlier errors) and
integrated back down to :math:`\sigma_j` with ``n_restart`` steps; this repeats ``k`` times before
the main trajectory continues.

In jaxsolve the restarts are *data*: :func:`restart_sigmas` builds the augmented grid (a jump
is an increase of :math:`\sigma`), and :class:`Restart` takes a jump where the grid goes up and an
ODE step of ``solver`` where it goes down — no extra loop.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..._core import check_sigma_range, is_concrete
from .._grids import karras_sigmas
from ._base import AbstractSolver
from .runge_kutta import Heun


class Restart(AbstractSolver):
    """Forward-noise jumps where the grid increases, ``solver`` steps (default Heun) elsewhere.

    Use with a grid from :func:`restart_sigmas`. A multistep ``solver`` restarts its history after
    each jump.
    """

    solver: AbstractSolver = Heun()
    s_noise: float = 1.0

    stochastic = True
    allows_increasing_grid = True

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas)

    def step(self, ctx, x, state):
        going_up = ctx.sigma_next > ctx.sigma
        # Under vmap both branches run: keep the ODE branch away from an upward "step".
        ode_ctx = ctx.replace(sigma_next=jnp.where(going_up, 0.5 * ctx.sigma, ctx.sigma_next))
        calls = [0]

        def counted(y, s):
            calls[0] += 1
            return ctx.denoise(y, s)

        def jump(x, state):
            x_up = x + self.s_noise * jnp.sqrt(ctx.sigma_next**2 - ctx.sigma**2) * ctx.noise(0)
            return x_up, self.solver.init(x, ctx.sigmas), jnp.zeros((), jnp.int32)

        def ode(x, state):
            out = self.solver.step(ode_ctx.replace(denoise=counted), x, state)
            used = out[2] if len(out) == 3 else calls[0]
            return out[0], out[1], jnp.asarray(used, jnp.int32)

        return jax.lax.cond(going_up, jump, ode, x, state)

    def final_step(self, ctx, x, state):
        return self.solver.final_step(ctx, x, state)


def restart_sigmas(sigmas, restarts, rho=7.0, *, max_steps=None):
    """Insert restart segments into a concrete grid.

    ``restarts`` is a list of ``(sigma_min, sigma_max, n_restart, k)``: at the grid level nearest
    ``sigma_min`` the trajectory jumps to ``sigma_max`` and returns to that level with ``n_restart``
    Karras-spaced ODE steps (exponent ``rho``), ``k`` times. The paper's ImageNet-64 setting is e.g.
    ``[(0.06, 0.30, 3, 10), (0.30, 2.0, 3, 10), ...]``; with one interval it is
    ``[(sigma_min, sigma_max, n_restart, k)]``. With ``max_steps`` the grid is zero-padded to
    ``max_steps + 1`` entries.
    """
    if not is_concrete(sigmas):
        raise TypeError("restart_sigmas needs a concrete grid (restarts change the grid's length).")
    base = np.asarray(sigmas, dtype=np.float64)
    first_zero = int(np.argmax(base == 0))
    head, positive = list(base[:first_zero]), base[:first_zero]
    inserts = {}
    for lo, hi, n_restart, k in restarts:
        check_sigma_range(lo, hi, names=("restart sigma_min", "restart sigma_max"))
        if not isinstance(n_restart, int) or n_restart < 1 or not isinstance(k, int) or k < 1:
            raise ValueError(f"n_restart and k must be positive ints; got {n_restart!r}, {k!r}.")
        j = int(np.argmin(np.abs(positive - lo)))
        if positive[j] >= hi:
            raise ValueError(
                f"the grid level nearest the restart sigma_min={lo} is {positive[j]:.4g}, not below "
                f"sigma_max={hi}."
            )
        segment = np.array(karras_sigmas(n_restart + 1, positive[j], hi, rho), dtype=np.float64)[
            :-1
        ]
        segment[-1] = positive[j]  # land exactly on the main grid level
        inserts.setdefault(j, []).extend(list(segment) * k)
    out = []
    for j, s in enumerate(head):
        out.append(s)
        out.extend(inserts.get(j, []))
    out.append(0.0)
    grid = np.asarray(out)
    if max_steps is not None:
        if max_steps + 1 < grid.shape[0]:
            raise ValueError(
                f"max_steps={max_steps} is smaller than the {grid.shape[0] - 1} restart grid steps."
            )
        grid = np.concatenate([grid, np.zeros(max_steps + 1 - grid.shape[0])])
    return jnp.asarray(grid, dtype=jnp.result_type(float))
