r"""Shared interface of the exact oracles and the diffrax reference solution of their flow."""

from __future__ import annotations

import abc

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, default_float, per_sample_keys


class AbstractOracle(eqx.Module):
    r"""A data distribution whose noised marginals :math:`p_s = p_0 * \mathcal N(0, s^2 I)` are known.

    Points have shape ``(..., d)``; ``sigma`` is a scalar or has the leading axes of ``x``.
    """

    @property
    @abc.abstractmethod
    def dim(self) -> int:
        """Dimension ``d`` of a point."""

    @abc.abstractmethod
    def log_prob(self, x: Float[Array, "... d"], sigma: ArrayLike = 0.0) -> Float[Array, "..."]:
        """:math:`\\log p_s(x)`."""

    @abc.abstractmethod
    def score(self, x: Float[Array, "... d"], sigma: ArrayLike) -> Float[Array, "... d"]:
        """:math:`\\nabla_x \\log p_s(x)`."""

    @abc.abstractmethod
    def denoise(self, x: Float[Array, "... d"], sigma: ArrayLike) -> Float[Array, "... d"]:
        """:math:`\\mathbb E[x_0 \\mid x_0 + s\\epsilon = x] = x + s^2\\nabla\\log p_s(x)` (Tweedie)."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, n: int, sigma: ArrayLike = 0.0) -> Float[Array, "n d"]:
        """``n`` draws from :math:`p_s`; draw ``i`` uses ``fold_in(key, i)``."""

    @abc.abstractmethod
    def mean(self) -> Float[Array, " d"]:
        """Mean of the data distribution."""

    @abc.abstractmethod
    def covariance(self) -> Float[Array, "d d"]:
        """Covariance of the data distribution (add :math:`s^2 I` for the noised one)."""

    def __call__(self, x, sigma):
        """The oracle is itself a denoiser: ``oracle(x, sigma) = oracle.denoise(x, sigma)``."""
        return self.denoise(x, sigma)

    def reference_solution(
        self,
        x: Float[ArrayLike, "... d"],
        sigma_from: ArrayLike,
        sigma_to: ArrayLike,
        *,
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int = 65536,
    ) -> Float[Array, "... d"]:
        r"""Integrate the probability-flow ODE from ``sigma_from`` to ``sigma_to`` with diffrax.

        :math:`\mathrm{d}x/\mathrm{d}s = (x - D(x, s))/s = -s\,\nabla_x\log p_s(x)`; the right-hand
        form stays finite at :math:`s = 0`, so ``sigma_to = 0`` is integrated to the end. Dopri8
        (8th order, adaptive) with a PID controller; tolerances default to 1e-11 in float64 and
        1e-6 in float32. Each point of the batch is its own adaptive solve. This is the yardstick
        against which samplers' errors are measured.
        """
        x = as_float(x)
        dtype = x.dtype
        tight = 1e-11 if dtype == jnp.float64 else 1e-6
        rtol = tight if rtol is None else rtol
        atol = tight if atol is None else atol
        s0, s1 = as_float(sigma_from).astype(dtype), as_float(sigma_to).astype(dtype)
        term = diffrax.ODETerm(lambda s, y, args: -s * self.score(y, s))
        controller = diffrax.PIDController(rtol=rtol, atol=atol)

        def solve_one(y0):
            sol = diffrax.diffeqsolve(
                term,
                diffrax.Dopri8(),
                t0=s0,
                t1=s1,
                dt0=None,
                y0=y0,
                stepsize_controller=controller,
                max_steps=max_steps,
                throw=True,
            )
            return sol.ys[-1]

        flat = x.reshape(-1, x.shape[-1])
        return jax.vmap(solve_one)(flat).reshape(x.shape)


def sample_normal(key, n, dim, dtype=None):
    """``n`` standard normal draws of dimension ``dim``, draw ``i`` from ``fold_in(key, i)``."""
    dtype = default_float() if dtype is None else dtype
    keys = per_sample_keys(key, n)
    return jax.vmap(lambda k: jax.random.normal(k, (dim,), dtype))(keys)
