r"""Stochastic interpolants ("Stochastic Interpolants: A Unifying Framework for Flows and Diffusions",
Albergo, Boffi & Vanden-Eijnden).

:math:`x_t = \alpha(t)x_0 + \beta(t)x_1 + \gamma(t)z` on :math:`t\in[0,1]` bridges a base
:math:`x_0\sim\rho_0` and a target :math:`x_1\sim\rho_1` (independent of :math:`z\sim\mathcal N(0,I)`),
with :math:`\alpha(0)=\beta(1)=1`, :math:`\alpha(1)=\beta(0)=\gamma(0)=\gamma(1)=0`. Its density
:math:`\rho_t` is transported by the velocity
:math:`b(t,x) = \mathbb E[\dot\alpha x_0 + \dot\beta x_1 + \dot\gamma z\mid x_t = x]` and its score is
:math:`s = -\eta_z/\gamma` with the denoiser :math:`\eta_z(t,x) = \mathbb E[z\mid x_t=x]`. Both are the
minimisers of quadratic losses (:meth:`StochasticInterpolant.velocity_loss`,
:meth:`StochasticInterpolant.denoiser_loss`). Generation integrates, for any
:math:`\epsilon\ge0`, :math:`\mathrm dX = (b + \epsilon s)\,\mathrm dt + \sqrt{2\epsilon}\,\mathrm dW`
from :math:`t_0` to 1 — all such processes have the marginals :math:`\rho_t`; :math:`\epsilon = 0`
is the probability-flow ODE.

Generation runs on :func:`jaxsolve.diffusion.sample` with the time reparametrised as
:math:`\tau = 1 - t` (a grid decreasing to 0, :func:`interpolant_grid`) and the model
``model(x, tau) -> stack([b, eta_z])`` (:func:`interpolant_model` builds it from two functions of
``(x, t)``). :class:`InterpolantSolver` takes Euler–Maruyama (or Heun for :math:`\epsilon = 0`)
steps; the last step into :math:`t = 1`, where :math:`\gamma = 0`, is a deterministic Euler step.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import as_float, check_choice, check_int, exact_dot, expand_to, is_concrete
from ._solvers._base import AbstractSolver


class StochasticInterpolant(eqx.Module):
    """Coefficient functions ``alpha(t)``, ``beta(t)``, ``gamma(t)`` (derivatives by autodiff)."""

    alpha: Callable
    beta: Callable
    gamma: Callable

    @staticmethod
    def _gamma(a):
        if is_concrete(a) and float(a) == 0.0:
            return lambda t: jnp.zeros_like(
                t
            )  # no latent: a deterministic interpolant (and no 0/0)
        return lambda t: jnp.sqrt(a * t * (1.0 - t))

    @classmethod
    def linear(cls, a: float = 1.0) -> StochasticInterpolant:
        """:math:`\\alpha = 1-t`, :math:`\\beta = t`, :math:`\\gamma = \\sqrt{a\\,t(1-t)}` (``a = 0``: rectified flow)."""
        return cls(lambda t: 1.0 - t, lambda t: t, cls._gamma(a))

    @classmethod
    def trigonometric(cls, a: float = 1.0) -> StochasticInterpolant:
        """:math:`\\alpha = \\cos(\\pi t/2)`, :math:`\\beta = \\sin(\\pi t/2)`, :math:`\\gamma = \\sqrt{a\\,t(1-t)}`."""
        return cls(
            lambda t: jnp.cos(0.5 * np.pi * t),
            lambda t: jnp.sin(0.5 * np.pi * t),
            cls._gamma(a),
        )

    def coefficients(self, t):
        """``(alpha, beta, gamma)`` and their time derivatives at ``t`` (elementwise)."""
        t = as_float(t)
        ones = jnp.ones_like(t)
        (a, da), (b, db), (g, dg) = (
            jax.jvp(f, (t,), (ones,)) for f in (self.alpha, self.beta, self.gamma)
        )
        return (a, b, g), (da, db, dg)

    def interpolate(self, x0, x1, z, t):
        (a, b, g), _ = self.coefficients(t)
        return expand_to(a, x0) * x0 + expand_to(b, x0) * x1 + expand_to(g, x0) * z

    def _draw(self, x0, key, t, t_min):
        k_t, k_z = jax.random.split(key)
        if t is None:
            t = jax.random.uniform(k_t, x0.shape[:1], minval=t_min, maxval=1.0 - t_min)
        t = jnp.broadcast_to(as_float(t), x0.shape[:1])
        z = jax.random.normal(k_z, x0.shape, x0.dtype)
        return t, z

    def velocity_loss(
        self, b_model: Callable, x0, x1, key: PRNGKeyArray, t=None, t_min: float = 1e-3
    ):
        """:math:`\\mathbb E\\lVert \\hat b(t, x_t) - (\\dot\\alpha x_0 + \\dot\\beta x_1 + \\dot\\gamma z)\\rVert^2`."""
        x0, x1 = as_float(x0), as_float(x1)
        t, z = self._draw(x0, key, t, t_min)
        _, (da, db, dg) = self.coefficients(t)
        target = expand_to(da, x0) * x0 + expand_to(db, x0) * x1 + expand_to(dg, x0) * z
        err = (b_model(self.interpolate(x0, x1, z, t), t) - target) ** 2
        return jnp.mean(err)

    def denoiser_loss(
        self, eta_model: Callable, x0, x1, key: PRNGKeyArray, t=None, t_min: float = 1e-3
    ):
        """:math:`\\mathbb E\\lVert \\hat\\eta_z(t, x_t) - z\\rVert^2` (the score is :math:`-\\eta_z/\\gamma`)."""
        x0, x1 = as_float(x0), as_float(x1)
        t, z = self._draw(x0, key, t, t_min)
        return jnp.mean((eta_model(self.interpolate(x0, x1, z, t), t) - z) ** 2)

    def gaussian_model(self, mean0, cov0, mean1, cov1) -> Callable:
        """Exact ``(b, eta_z)`` for independent Gaussian endpoints, as ``fn(x, t) -> (b, eta)``.

        :math:`x_t` is Gaussian with mean :math:`\\mu_t = \\alpha m_0 + \\beta m_1` and covariance
        :math:`\\Sigma_t = \\alpha^2C_0 + \\beta^2C_1 + \\gamma^2 I`; conditioning gives
        :math:`b = \\dot\\mu_t + (\\dot\\alpha\\alpha C_0 + \\dot\\beta\\beta C_1 + \\dot\\gamma\\gamma I)\\Sigma_t^{-1}(x-\\mu_t)`
        and :math:`\\eta_z = \\gamma\\Sigma_t^{-1}(x - \\mu_t)`.
        """
        m0, c0, m1, c1 = (as_float(v) for v in (mean0, cov0, mean1, cov1))
        eye = jnp.eye(m0.shape[0], dtype=m0.dtype)

        def at_time(x, t):
            # x: (n, d) states sharing the time t; one factorisation serves them all.
            (a, b, g), (da, db, dg) = self.coefficients(t)
            mu = a * m0 + b * m1
            cov = a * a * c0 + b * b * c1 + g * g * eye
            r = jnp.linalg.solve(cov, (x - mu).T).T
            gain = da * a * c0 + db * b * c1 + dg * g * eye
            drift = da * m0 + db * m1 + exact_dot(r, gain.T)
            return drift, g * r

        def model(x, t):
            t = as_float(t)
            if t.ndim == 0:  # the sampler's case: one time for the whole batch
                return at_time(x, t)
            t = jnp.broadcast_to(t, x.shape[:1])
            drift, eta = jax.vmap(lambda xi, ti: at_time(xi[None], ti))(x, t)
            return drift[:, 0], eta[:, 0]

        return model


def interpolant_grid(n: int, t0: float = 1e-3):
    """Grid in :math:`\\tau = 1 - t` for ``n`` steps from :math:`t_0` to 1: ``1 - linspace(t0, 1, n+1)``."""
    n = check_int("n", n)
    return 1.0 - jnp.linspace(t0, 1.0, n + 1)


def interpolant_model(b_fn: Callable, eta_fn: Callable | None = None) -> Callable:
    """Pack ``b_fn(x, t)`` and ``eta_fn(x, t)`` (or one function returning both) for the driver."""

    def model(x, tau):
        t = 1.0 - tau
        if eta_fn is None:
            b, eta = b_fn(x, t)
        else:
            b, eta = b_fn(x, t), eta_fn(x, t)
        return jnp.stack([b, eta])

    return model


class InterpolantSolver(AbstractSolver):
    """Euler–Maruyama for :math:`\\mathrm dX = (b - \\epsilon\\eta_z/\\gamma)\\mathrm dt + \\sqrt{2\\epsilon}\\mathrm dW`.

    ``epsilon`` may be traced. ``method="heun"`` (only for the ODE, ``epsilon = 0``) uses Heun's
    method on :math:`b`.
    """

    interpolant: StochasticInterpolant
    epsilon: Float[Array, ""] | float = 0.0
    method: str = eqx.field(static=True, default="euler")

    def __check_init__(self):
        check_choice("method", self.method, {"euler", "heun"})
        if self.method == "heun" and self.stochastic:
            raise ValueError("method='heun' integrates the ODE only: it needs epsilon=0.")

    @property
    def stochastic(self) -> bool:
        return not (is_concrete(self.epsilon) and float(self.epsilon) == 0.0)

    def step(self, ctx, x, state):
        t, t_next = 1.0 - ctx.sigma, 1.0 - ctx.sigma_next
        dt = t_next - t
        b, eta = ctx.denoise(x, ctx.sigma)
        if self.method == "heun":
            x_pred = x + dt * b
            b2, _ = ctx.denoise(x_pred, ctx.sigma_next)
            return x + 0.5 * dt * (b + b2), state
        if not self.stochastic:
            return x + dt * b, state
        (_, _, g), _ = self.interpolant.coefficients(t)
        drift = b - self.epsilon * eta / g
        return x + dt * drift + jnp.sqrt(2.0 * self.epsilon * dt) * ctx.noise(0), state

    def denoiser_output_shape(self, x_shape):
        # interpolant_model stacks (b, eta_z).
        return (2, *x_shape)

    def final_step(self, ctx, x, state):
        # Into t = 1 (tau = 0), where gamma = 0 and the score term is singular: a plain Euler step.
        b, _ = ctx.denoise(x, ctx.sigma)
        return x + ctx.sigma * b, state


__all__ = ["InterpolantSolver", "StochasticInterpolant", "interpolant_grid", "interpolant_model"]
