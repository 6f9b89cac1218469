r"""Restart grids ("Restart Sampling for Improving Generative Processes").

Restart's forward-noise jumps are data: the grid goes up where the trajectory is re-noised and
comes back down with a few ODE steps (:class:`~jaxsolve.diffusion.Restart` takes a jump where the
grid increases, a step of its solver where it decreases).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from ..._core import check_int, check_sigma_range, default_float, is_concrete
from .spacing import karras_sigmas


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
        check_int("restart n_restart", n_restart)
        check_int("restart k", k)
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
    return jnp.asarray(grid, dtype=default_float())
