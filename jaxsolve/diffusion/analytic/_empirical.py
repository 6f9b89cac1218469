r"""Closed-form denoiser of a finite data set."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, check_positive, exact_einsum, is_concrete, per_sample_keys
from ._base import AbstractOracle
from ._checks import check_finite


class Empirical(AbstractOracle):
    r"""The empirical distribution of ``points`` (``(N, d)``), optionally kernel-smoothed.

    "Closed-Form Diffusion Models" (Scarvelis, Borde, Solomon): for a finite training set the
    noised marginal is the mixture :math:`\frac1N\sum_i\mathcal N(p_i, s^2 I)` and its score and
    denoiser have closed forms; a sampler driven by them reproduces training points (memorises).
    With :math:`v = h^2 + s^2`, :math:`r_i \propto \exp(-\lVert x - p_i\rVert^2 / 2v)`:

    .. math:: D(x, s) = \frac{s^2}{v}\sum_i r_i p_i + \frac{h^2}{v}x, \qquad
              \nabla\log p_s(x) = \Big(\sum_i r_i p_i - x\Big)/v.

    **Smoothing (our choice).** The paper smooths the closed-form *score* by averaging it over
    perturbations, which has no closed-form density. Here ``smoothing = h`` instead smooths the
    *data*: :math:`p_0` is the Gaussian kernel density estimate with bandwidth ``h``, whose noised
    marginals are :math:`\frac1N\sum_i\mathcal N(p_i, (h^2+s^2)I)`. This keeps the oracle exact
    (score, denoiser and log-density consistent; Tweedie holds) while, like the paper's smoothing,
    pulling samples off the training points. ``h = 0`` is the plain closed-form model.
    """

    points: Float[Array, "N d"]
    smoothing: Float[Array, ""]

    def __init__(self, points: ArrayLike, smoothing: ArrayLike = 0.0):
        points = as_float(points)
        if points.ndim != 2 or points.shape[0] < 1:
            raise ValueError(
                f"points must have shape (N, d) with N >= 1; got shape {points.shape}."
            )
        check_positive("smoothing", smoothing, allow_zero=True)
        self.points = check_finite("points", points)
        smoothing = as_float(smoothing)
        if not is_concrete(smoothing):
            bad = ~(jnp.isfinite(smoothing) & (smoothing >= 0))
            smoothing = eqx.error_if(smoothing, bad, "smoothing must be finite and non-negative.")
        self.smoothing = smoothing

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def _variance(self, sigma):
        s = as_float(sigma)
        return self.smoothing**2 + s * s

    def _logits(self, x, v):
        # Differences rather than |x|^2 - 2 x.p + |p|^2: no cancellation at tiny noise levels.
        diff = as_float(x)[..., None, :] - self.points
        return -0.5 * jnp.sum(diff * diff, axis=-1) / v[..., None]

    def _weighted_mean(self, x, v):
        r = jax.nn.softmax(self._logits(x, v), axis=-1)
        return exact_einsum("...n,nd->...d", r, self.points)

    def log_prob(self, x, sigma=0.0):
        v = self._variance(sigma)
        n, d = self.points.shape
        return (
            jax.nn.logsumexp(self._logits(x, v), axis=-1)
            - np.log(n)
            - 0.5 * d * jnp.log(2.0 * np.pi * v)
        )

    def score(self, x, sigma):
        v = self._variance(sigma)
        return (self._weighted_mean(x, v) - as_float(x)) / v[..., None]

    def denoise(self, x, sigma):
        s = as_float(sigma)
        v = self._variance(sigma)
        w_data = (s * s / v)[..., None]
        return w_data * self._weighted_mean(x, v) + (1.0 - w_data) * as_float(x)

    def mean(self):
        return jnp.mean(self.points, axis=0)

    def covariance(self):
        c = self.points - self.mean()
        return exact_einsum("ni,nj->ij", c, c) / self.points.shape[0] + self.smoothing**2 * jnp.eye(
            self.dim, dtype=c.dtype
        )

    def sample(self, key: PRNGKeyArray, n: int, sigma: ArrayLike = 0.0) -> Float[Array, "n d"]:
        check_int("n", n)
        std = jnp.sqrt(jnp.broadcast_to(self._variance(sigma), (n,)))

        def draw(k, sd):
            k_idx, k_noise = jax.random.split(k)
            i = jax.random.randint(k_idx, (), 0, self.points.shape[0])
            return self.points[i] + sd * jax.random.normal(k_noise, (self.dim,), self.points.dtype)

        return jax.vmap(draw)(per_sample_keys(key, n), std)
