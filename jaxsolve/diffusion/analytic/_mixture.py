r"""Gaussian-mixture oracle."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, exact_einsum, per_sample_keys
from . import _gaussian_math as gm
from . import _posterior as post
from ._base import AbstractOracle
from ._checks import check_cov, check_finite, check_weights


class GaussianMixture(AbstractOracle):
    r"""Data :math:`x_0 \sim \sum_k w_k \mathcal N(m_k, C_k)`.

    The noised marginal is :math:`\sum_k w_k\mathcal N(m_k, C_k + s^2 I)`. With responsibilities
    :math:`r_k(x) \propto w_k \mathcal N(x; m_k, C_k + s^2 I)`, the score is
    :math:`\sum_k r_k \nabla\log\mathcal N_k` and the denoiser :math:`\sum_k r_k D_k(x)`, where
    :math:`D_k` is component ``k``'s Gaussian denoiser (Tweedie holds component-wise and for the sum).

    ``covs`` is ``(K, d, d)`` (full) or ``(K, d)`` (diagonal).

    :meth:`condition` returns the exact posterior given a linear Gaussian measurement (again a
    :class:`GaussianMixture`), :meth:`log_evidence` the log-density of the measurement.
    """

    weights: Float[Array, " K"]
    means: Float[Array, "K d"]
    eigvals: Float[Array, "K d"]
    eigvecs: Float[Array, "K d d"]

    def __init__(self, weights: ArrayLike, means: ArrayLike, covs: ArrayLike):
        weights, means, covs = as_float(weights), as_float(means), as_float(covs)
        if means.ndim != 2:
            raise ValueError(f"means must have shape (K, d); got shape {means.shape}.")
        k, d = means.shape
        self.weights = check_weights("weights", weights, k)
        covs = check_cov("covs", covs, d, batch=(k,))
        self.means = check_finite("means", means)
        self.eigvals, self.eigvecs = gm.eigh_cov(covs, full=covs.ndim == 3)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def _per_component(self, fn, x, sigma):
        """``fn(x, sigma, m_k, lam_k, U_k)`` for every component, stacked on a last axis."""
        out = jax.vmap(fn, in_axes=(None, None, 0, 0, 0), out_axes=-1)
        return out(as_float(x), sigma, self.means, self.eigvals, self.eigvecs)

    def _log_joint(self, x, sigma):
        # log w_k + log N(x; m_k, C_k + s^2 I), shape (..., K). A zero weight gives -inf, harmless.
        return jnp.log(self.weights) + self._per_component(gm.log_prob, x, sigma)

    def responsibilities(self, x, sigma):
        """Posterior component probabilities :math:`r_k(x)` at noise level ``sigma``."""
        return jax.nn.softmax(self._log_joint(x, sigma), axis=-1)

    def log_prob(self, x, sigma=0.0):
        return jax.nn.logsumexp(self._log_joint(x, sigma), axis=-1)

    def score(self, x, sigma):
        r = self.responsibilities(x, sigma)
        return exact_einsum("...k,...dk->...d", r, self._per_component(gm.score, x, sigma))

    def denoise(self, x, sigma):
        r = self.responsibilities(x, sigma)
        return exact_einsum("...k,...dk->...d", r, self._per_component(gm.denoise, x, sigma))

    def mean(self):
        return exact_einsum("k,kd->d", self.weights, self.means)

    def covariance(self):
        covs = exact_einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)
        second = exact_einsum(
            "k,kij->ij", self.weights, covs + self.means[:, :, None] * self.means[:, None, :]
        )
        m = self.mean()
        return second - jnp.outer(m, m)

    # Compiled as one program (n static): run op by op, the per-sample vmap compiles each
    # primitive separately.
    @eqx.filter_jit
    def sample(self, key: PRNGKeyArray, n: int, sigma: ArrayLike = 0.0) -> Float[Array, "n d"]:
        check_int("n", n)
        sigma = jnp.broadcast_to(as_float(sigma), (n,))
        log_w = jnp.log(self.weights)

        def draw(k, s):
            k_comp, k_noise = jax.random.split(k)
            c = jax.random.categorical(k_comp, log_w)
            z = jax.random.normal(k_noise, (self.dim,), self.means.dtype)
            std = jnp.sqrt(self.eigvals[c] + s * s)
            return gm.from_coords(std * z, self.means[c], self.eigvecs[c])

        return jax.vmap(draw)(per_sample_keys(key, n), sigma)

    def _conditioned(self, A, y, noise_std):
        """Per component: posterior (means, eigvals, eigvecs) and log-evidence, shape ``(K,)``."""
        op, y, noise_std = post.measurement(A, y, noise_std, self.dim, self.means.dtype)
        return post.condition_components(op, y, noise_std, self.means, self.eigvals, self.eigvecs)

    def condition(
        self, A, y: ArrayLike | None = None, noise_std: ArrayLike = 0.0
    ) -> GaussianMixture:
        r"""The posterior :math:`p(x_0 \mid y)` given :math:`y = Ax_0 + \sigma_y\epsilon`.

        It is the mixture of the components' posteriors (each as :meth:`Gaussian.condition`) with
        weights :math:`w_k' \propto w_k\,\mathcal N(y;\, Am_k,\, AC_kA^\top + \sigma_y^2 I)`,
        normalised in log space. With ``noise_std = 0`` a component's evidence is its density on the
        measurement's support (pseudo-determinant; see :mod:`._posterior`): exact when every
        :math:`AC_k^{1/2}` has the same rank and ``y`` is in each support, e.g. :math:`A` of full
        row rank and non-singular covariances.

        Args:
            A: a measurement operator, a ``(m, d)`` matrix, a linear function of a ``(d,)`` point,
                or a :class:`~jaxsolve.diffusion.inverse.Measurement` (then leave ``y`` and
                ``noise_std`` out); see :meth:`Gaussian.condition`.
            y: the measurement, of shape ``A.out_shape``.
            noise_std: :math:`\sigma_y \ge 0`, a scalar; may be traced.
        """
        means, lam, u, log_ev = self._conditioned(A, y, noise_std)
        weights = jax.nn.softmax(jnp.log(self.weights) + log_ev)
        weights = eqx.error_if(
            weights,
            ~jnp.all(jnp.isfinite(weights)),
            "the posterior weights are not finite (the measurement has zero evidence).",
        )
        return eqx.tree_at(
            lambda g: (g.weights, g.means, g.eigvals, g.eigvecs), self, (weights, means, lam, u)
        )

    def log_evidence(
        self, A, y: ArrayLike | None = None, noise_std: ArrayLike = 0.0
    ) -> Float[Array, ""]:
        r""":math:`\log p(y) = \log\sum_k w_k\,\mathcal N(y;\, Am_k,\, AC_kA^\top + \sigma_y^2 I)`
        (arguments as for :meth:`condition`; pseudo-determinant when ``noise_std = 0``)."""
        log_ev = self._conditioned(A, y, noise_std)[3]
        return jax.nn.logsumexp(jnp.log(self.weights) + log_ev)
