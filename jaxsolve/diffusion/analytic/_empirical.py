r"""Closed-form denoiser of a finite data set."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, check_positive, exact_einsum, is_concrete, per_sample_keys
from . import _posterior as post
from ._base import AbstractOracle
from ._checks import check_finite, check_weights
from ._mixture import GaussianMixture


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

    ``weights`` (``(N,)``, non-negative, summing to 1) make it :math:`\sum_i w_i\,\delta_{p_i}`
    (smoothed: :math:`\sum_i w_i\,\mathcal N(p_i, h^2 I)`); the default is uniform.
    :meth:`condition` returns the exact posterior given a linear Gaussian measurement.
    """

    points: Float[Array, "N d"]
    smoothing: Float[Array, ""]
    weights: Float[Array, " N"] | None

    def __init__(
        self, points: ArrayLike, smoothing: ArrayLike = 0.0, weights: ArrayLike | None = None
    ):
        points = as_float(points)
        if points.ndim != 2 or points.shape[0] < 1:
            raise ValueError(
                f"points must have shape (N, d) with N >= 1; got shape {points.shape}."
            )
        n = points.shape[0]
        check_positive("smoothing", smoothing, allow_zero=True)
        self.points = check_finite("points", points)
        smoothing = as_float(smoothing)
        if not is_concrete(smoothing):
            bad = ~(jnp.isfinite(smoothing) & (smoothing >= 0))
            smoothing = eqx.error_if(smoothing, bad, "smoothing must be finite and non-negative.")
        self.smoothing = smoothing
        # None is the uniform case: kept as such so that its computations are unchanged.
        self.weights = None if weights is None else check_weights("weights", as_float(weights), n)

    @property
    def dim(self) -> int:
        return self.points.shape[1]

    def _variance(self, sigma):
        s = as_float(sigma)
        return self.smoothing**2 + s * s

    def _log_weights(self):
        if self.weights is None:
            return -np.log(self.points.shape[0])
        return jnp.log(self.weights)

    def _logits(self, x, v):
        r""":math:`\log w_i - \lVert x - p_i\rVert^2 / 2v`, shape ``(..., N)``."""
        # Differences rather than |x|^2 - 2 x.p + |p|^2: no cancellation at tiny noise levels.
        diff = as_float(x)[..., None, :] - self.points
        return -0.5 * jnp.sum(diff * diff, axis=-1) / v[..., None] + self._log_weights()

    def _weighted_mean(self, x, v):
        r = jax.nn.softmax(self._logits(x, v), axis=-1)
        return exact_einsum("...n,nd->...d", r, self.points)

    def log_prob(self, x, sigma=0.0):
        v = self._variance(sigma)
        d = self.points.shape[1]
        return jax.nn.logsumexp(self._logits(x, v), axis=-1) - 0.5 * d * jnp.log(2.0 * np.pi * v)

    def score(self, x, sigma):
        v = self._variance(sigma)
        return (self._weighted_mean(x, v) - as_float(x)) / v[..., None]

    def denoise(self, x, sigma):
        s = as_float(sigma)
        v = self._variance(sigma)
        w_data = (s * s / v)[..., None]
        return w_data * self._weighted_mean(x, v) + (1.0 - w_data) * as_float(x)

    def _weights_or_uniform(self):
        n = self.points.shape[0]
        return jnp.full((n,), 1.0 / n, self.points.dtype) if self.weights is None else self.weights

    def mean(self):
        if self.weights is None:
            return jnp.mean(self.points, axis=0)
        return exact_einsum("n,nd->d", self.weights, self.points)

    def covariance(self):
        c = self.points - self.mean()
        w = self._weights_or_uniform()
        return exact_einsum("n,ni,nj->ij", w, c, c) + self.smoothing**2 * jnp.eye(
            self.dim, dtype=c.dtype
        )

    # Compiled as one program (n static): run op by op, the per-sample vmap compiles each
    # primitive separately.
    @eqx.filter_jit
    def sample(self, key: PRNGKeyArray, n: int, sigma: ArrayLike = 0.0) -> Float[Array, "n d"]:
        check_int("n", n)
        std = jnp.sqrt(jnp.broadcast_to(self._variance(sigma), (n,)))

        def draw(k, sd):
            k_idx, k_noise = jax.random.split(k)
            if self.weights is None:
                i = jax.random.randint(k_idx, (), 0, self.points.shape[0])
            else:
                i = jax.random.categorical(k_idx, jnp.log(self.weights))
            return self.points[i] + sd * jax.random.normal(k_noise, (self.dim,), self.points.dtype)

        return jax.vmap(draw)(per_sample_keys(key, n), std)

    def condition(
        self, A, y: ArrayLike | None = None, noise_std: ArrayLike = 0.0
    ) -> Empirical | GaussianMixture:
        r"""The posterior :math:`p(x_0 \mid y)` given :math:`y = Ax_0 + \sigma_y\epsilon`.

        * ``smoothing = 0``: the same points reweighted,
          :math:`w_i' \propto w_i\,\mathcal N(y;\, Ap_i,\, \sigma_y^2 I)`, an :class:`Empirical`;
          this needs ``noise_std > 0`` (a noiseless measurement of a finite set of points has
          likelihood 0 almost everywhere).
        * ``smoothing = h > 0``: the prior is the mixture :math:`\sum_i w_i\mathcal N(p_i, h^2 I)`,
          whose posterior is exactly the :class:`GaussianMixture` of the conditioned components
          (as :meth:`GaussianMixture.condition`; they share one posterior covariance, computed
          once). It is returned as such, not as an :class:`Empirical`.

        Which of the two is returned depends on ``smoothing``, so it must be concrete (not traced);
        ``y`` and ``noise_std`` may be traced.

        Args:
            A: a measurement operator, a ``(m, d)`` matrix, a linear function of a ``(d,)`` point,
                or a :class:`~jaxsolve.diffusion.inverse.Measurement` (then leave ``y`` and
                ``noise_std`` out); see :meth:`Gaussian.condition`.
            y: the measurement, of shape ``A.out_shape``.
            noise_std: :math:`\sigma_y \ge 0`, a scalar.
        """
        if not is_concrete(self.smoothing):
            raise ValueError(
                "Empirical.condition needs a concrete smoothing: it decides whether the posterior "
                "is an Empirical (smoothing = 0) or a GaussianMixture (smoothing > 0), which a "
                "traced value cannot. Build the oracle outside jit/vmap, or condition the "
                "equivalent GaussianMixture."
            )
        op, y, noise_std = post.measurement(A, y, noise_std, self.dim, self.points.dtype)
        log_w = self._log_weights()
        h = float(self.smoothing)
        if h > 0:
            d, n = self.dim, self.points.shape[0]
            lam = jnp.full((d,), h * h, self.points.dtype)
            eye = jnp.eye(d, dtype=self.points.dtype)
            means, lam_post, u_post, log_ev = post.condition_means(
                op, y, noise_std, self.points, lam, eye
            )
            weights = jax.nn.softmax(log_w + log_ev)
            # The prior as a mixture (its isotropic covariances need no eigendecomposition); the
            # posterior replaces its arrays.
            prior = GaussianMixture(
                self._weights_or_uniform(), self.points, jnp.broadcast_to(lam, (n, d))
            )
            return eqx.tree_at(
                lambda g: (g.weights, g.means, g.eigvals, g.eigvecs),
                prior,
                (weights, means, lam_post, u_post),
            )
        if is_concrete(noise_std):
            if float(noise_std) == 0:
                raise ValueError(
                    "noise_std must be positive to condition an unsmoothed Empirical (with no "
                    "noise the likelihood of every point is 0 unless A p_i == y exactly)."
                )
        else:
            noise_std = eqx.error_if(
                noise_std,
                noise_std == 0,
                "noise_std must be positive to condition an unsmoothed Empirical.",
            )
        weights = jax.nn.softmax(log_w + post.log_likelihood(op, y, noise_std, self.points))
        return Empirical(self.points, self.smoothing, weights)
