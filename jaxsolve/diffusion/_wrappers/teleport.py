r"""Analytical teleportation ("The Unreasonable Effectiveness of Gaussian Score Approximation for
Diffusion Models and its Applications").

At moderate to high noise a trained model's score is dominated by its linear part: the score of
the Gaussian :math:`\mathcal N(\mu, C)` with the data's mean and covariance. For that Gaussian the
probability-flow ODE has a closed form; in the eigenbasis :math:`C = U\Lambda U^\top`,

.. math:: x(\sigma_1) = \mu + U\,\operatorname{diag}\!\Big(\sqrt{\tfrac{\lambda_i + \sigma_1^2}
          {\lambda_i + \sigma_0^2}}\Big)\,U^\top\big(x(\sigma_0) - \mu\big)
          \qquad\text{(}:meth:`~jaxsolve.diffusion.analytic.Gaussian.ode_solution`\text{)}.

Teleportation skips the first part of sampling with this map — zero model evaluations — and
hands the state to any solver at :math:`\sigma_\text{skip}` (the paper skips 15–30% of the steps
of DPM-Solver-v3 / UniPC with no loss of quality).

In jaxsolve the skip is the first interval of the grid: :class:`Teleport` takes the step
``sigmas[0] -> sigmas[1]`` with the Gaussian map and every later step with ``solver`` (which sees
the grid from ``sigmas[1]`` on, as if it had started there). :func:`teleport_sigmas` builds such a
grid and :func:`gaussian_approximation` the Gaussian from data. For Gaussian data the teleport
*is* the exact ODE map. The solver may be adaptive (it then integrates from ``sigmas[1]`` to
``sigmas[2]`` on the grid ``[sigma_max, sigma_skip, sigma_min, 0]``; the jump is the driver's first
of its ``max_steps`` iterations) or take a restart grid after the jump.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import ArrayLike, Float

from ..._core import as_float, exact_dot
from .._solvers._base import AbstractSolver, grid_phase, resolve_batch_ndim
from ..analytic import Gaussian
from ._base import AbstractWrappedSolver


def gaussian_approximation(data: Float[ArrayLike, "n ..."], *, shrinkage: float = 0.0) -> Gaussian:
    r"""The Gaussian :math:`\mathcal N(\hat\mu, \hat C)` with the empirical mean and covariance of ``data``.

    ``data`` is ``(n, ...)``: samples on the leading axis, flattened to vectors. ``shrinkage``
    :math:`\in[0, 1]` blends the covariance towards its mean eigenvalue (Ledoit–Wolf style), for
    when ``n`` is small against the dimension.
    """
    data = as_float(data)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape (n >= 2, ...); got shape {data.shape}.")
    if not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must lie in [0, 1]; got {shrinkage}.")
    flat = data.reshape(data.shape[0], -1)
    mean = jnp.mean(flat, axis=0)
    centred = flat - mean
    cov = exact_dot(centred.T, centred) / (flat.shape[0] - 1)
    target = jnp.trace(cov) / cov.shape[0] * jnp.eye(cov.shape[0], dtype=cov.dtype)
    return Gaussian(mean, (1.0 - shrinkage) * cov + shrinkage * target)


class Teleport(AbstractWrappedSolver):
    """Gaussian-map first step (0 NFE), then ``solver`` (see the module).

    ``gaussian`` is a :class:`~jaxsolve.diffusion.analytic.Gaussian` over the flattened event
    (``gaussian_approximation(data)``); ``batch_ndim`` is the number of leading batch axes of the
    state (``None``: ``sample``'s). With a one-step grid ``[sigma_max, 0]`` the teleport goes
    straight to :math:`\\sigma = 0`.
    """

    solver: AbstractSolver
    gaussian: Gaussian
    batch_ndim: int | None = None

    def __check_init__(self):
        if not isinstance(self.gaussian, Gaussian):
            raise TypeError(
                "gaussian must be a jaxsolve.diffusion.analytic.Gaussian (see "
                f"gaussian_approximation); got {type(self.gaussian).__name__}."
            )

    @property
    def step_form(self):
        return None  # the first step is the Gaussian map

    def _teleport(self, x, sigma_from, sigma_to, batch_ndim):
        lead = x.shape[:batch_ndim]
        flat = x.reshape((*lead, -1))
        if flat.shape[-1] != self.gaussian.dim:
            raise ValueError(
                f"the Gaussian has dimension {self.gaussian.dim} but a sample has "
                f"{flat.shape[-1]} entries (shape {x.shape[batch_ndim:]})."
            )
        return self.gaussian.ode_solution(flat, sigma_from, sigma_to).reshape(x.shape)

    def inner_context(self, ctx):
        # The solver sees the grid from sigmas[1] on: step i of the driver is its step i - 1.
        return ctx.replace(sigmas=ctx.sigmas[1:], i=ctx.i - 1, n=ctx.n - 1)

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas[1:])

    def phase(self, ctx, state):
        return jnp.where(
            ctx.i == 0, grid_phase(ctx), self.solver.phase(self.inner_context(ctx), state)
        )

    def _dispatch(self, method, ctx, x, state):
        batch_ndim = resolve_batch_ndim(self, ctx)

        def jump(x, state):
            return self._teleport(x, ctx.sigma, ctx.sigma_next, batch_ndim), state

        def solve(x, state):
            return method(self.inner_context(ctx), x, state)

        return ctx.cond(ctx.i == 0, jump, solve, x, state)

    def step(self, ctx, x, state):
        return self._dispatch(self.solver.step, ctx, x, state)

    def final_step(self, ctx, x, state):
        # The driver's final context keeps sigma_next = 0, so a one-step grid teleports to 0.
        return self._dispatch(
            self.solver.final_step, ctx.replace(sigma_next=jnp.zeros_like(ctx.sigma)), x, state
        )
