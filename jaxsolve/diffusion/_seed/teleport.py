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
*is* the exact ODE map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, exact_dot, is_concrete
from .._solvers._base import AbstractSolver, resolve_batch_ndim
from ..analytic import Gaussian


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


def teleport_sigmas(
    sigma_max: Float[ArrayLike, ""], sigmas: Float[ArrayLike, " L"]
) -> Float[Array, " L+1"]:
    """The grid ``[sigma_max, *sigmas]``: teleport from ``sigma_max`` to ``sigmas[0]``, then ``sigmas``.

    ``sigmas`` is the solver's own grid starting at the skip level (e.g.
    ``karras_sigmas(n, sigma_min, sigma_skip)``), so ``n`` solver steps follow the free jump.
    """
    sigmas = as_float(sigmas)
    sigma_max = as_float(sigma_max).astype(sigmas.dtype)
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be a 1-D grid; got shape {sigmas.shape}.")
    if is_concrete((sigma_max, sigmas)) and not float(sigma_max) > float(sigmas[0]):
        raise ValueError(
            f"sigma_max must exceed the skip level sigmas[0]; got {float(sigma_max):.6g} <= "
            f"{float(sigmas[0]):.6g}."
        )
    return jnp.concatenate([sigma_max[None], sigmas])


class Teleport(AbstractSolver):
    """Gaussian-map first step (0 NFE), then ``solver`` (see the module).

    ``gaussian`` is a :class:`~jaxsolve.diffusion.analytic.Gaussian` over the flattened event
    (``gaussian_approximation(data)``); ``batch_ndim`` is the number of leading batch axes of the
    state (1 by default). With a one-step grid ``[sigma_max, 0]`` the teleport goes straight to
    :math:`\\sigma = 0`.
    """

    solver: AbstractSolver
    gaussian: Gaussian
    batch_ndim: int = 1

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(f"solver must be a jaxsolve sampler; got {type(self.solver).__name__}.")
        if not isinstance(self.gaussian, Gaussian):
            raise TypeError(
                "gaussian must be a jaxsolve.diffusion.analytic.Gaussian (see "
                f"gaussian_approximation); got {type(self.gaussian).__name__}."
            )

    @property
    def stochastic(self) -> bool:
        return self.solver.stochastic

    def _teleport(self, x, sigma_from, sigma_to):
        lead = x.shape[: self.batch_ndim]
        flat = x.reshape((*lead, -1))
        if flat.shape[-1] != self.gaussian.dim:
            raise ValueError(
                f"the Gaussian has dimension {self.gaussian.dim} but a sample has "
                f"{flat.shape[-1]} entries (shape {x.shape[self.batch_ndim :]})."
            )
        return self.gaussian.ode_solution(flat, sigma_from, sigma_to).reshape(x.shape)

    def _inner_ctx(self, ctx, denoise):
        # The solver sees the grid from sigmas[1] on: step i of the driver is its step i - 1.
        return ctx.replace(denoise=denoise, sigmas=ctx.sigmas[1:], i=ctx.i - 1, n=ctx.n - 1)

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas[1:])

    def _dispatch(self, method, ctx, x, state):
        resolve_batch_ndim(self, ctx)  # its batch_ndim must be sample()'s
        calls = [0]

        def counted(y, s):
            calls[0] += 1
            return ctx.denoise(y, s)

        def jump(x, state):
            return self._teleport(x, ctx.sigma, ctx.sigma_next), state, jnp.zeros((), jnp.int32)

        def solve(x, state):
            out = method(self._inner_ctx(ctx, counted), x, state)
            used = out[2] if len(out) == 3 else calls[0]
            return out[0], out[1], jnp.asarray(used, jnp.int32)

        return jax.lax.cond(ctx.i == 0, jump, solve, x, state)

    def step(self, ctx, x, state):
        return self._dispatch(self.solver.step, ctx, x, state)

    def final_step(self, ctx, x, state):
        # The driver's final context keeps sigma_next = 0, so a one-step grid teleports to 0.
        return self._dispatch(
            self.solver.final_step, ctx.replace(sigma_next=jnp.zeros_like(ctx.sigma)), x, state
        )
