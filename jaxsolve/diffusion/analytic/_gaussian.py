r"""Gaussian oracle with the exact probability-flow map."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, exact_einsum
from . import _gaussian_math as gm
from . import _posterior as post
from ._base import AbstractOracle, sample_normal
from ._checks import check_cov, check_vector


class Gaussian(AbstractOracle):
    r"""Data :math:`x_0 \sim \mathcal N(m, C)`; noised marginal :math:`\mathcal N(m, C + s^2 I)`.

    ``cov`` is ``(d, d)`` or a diagonal ``(d,)``. All quantities are computed in the eigenbasis of
    :math:`C`, so a singular covariance (data on a subspace) is allowed for ``s > 0``.

    :meth:`condition` returns the exact posterior given a linear Gaussian measurement (again a
    :class:`Gaussian`), :meth:`log_evidence` the log-density of the measurement.
    """

    loc: Float[Array, " d"]
    eigvals: Float[Array, " d"]
    eigvecs: Float[Array, "d d"]

    def __init__(self, mean: ArrayLike, cov: ArrayLike):
        mean = as_float(mean)
        cov = as_float(cov)
        self.loc = check_vector("mean", mean)
        cov = check_cov("cov", cov, mean.shape[0])
        self.eigvals, self.eigvecs = gm.eigh_cov(cov, full=cov.ndim == 2)

    @property
    def dim(self) -> int:
        return self.loc.shape[0]

    def mean(self):
        return self.loc

    def covariance(self):
        return exact_einsum("ij,kj->ik", self.eigvecs * self.eigvals, self.eigvecs)

    def log_prob(self, x, sigma=0.0):
        return gm.log_prob(as_float(x), sigma, self.loc, self.eigvals, self.eigvecs)

    def score(self, x, sigma):
        return gm.score(as_float(x), sigma, self.loc, self.eigvals, self.eigvecs)

    def denoise(self, x, sigma):
        return gm.denoise(as_float(x), sigma, self.loc, self.eigvals, self.eigvecs)

    # Compiled as one program (n static): run op by op, the per-sample vmap compiles each
    # primitive separately.
    @eqx.filter_jit
    def sample(self, key: PRNGKeyArray, n: int, sigma: ArrayLike = 0.0) -> Float[Array, "n d"]:
        check_int("n", n)
        z = sample_normal(key, n, self.dim, self.loc.dtype)
        std = jnp.sqrt(gm.noised_eigvals(self.eigvals, jnp.broadcast_to(as_float(sigma), (n,))))
        return gm.from_coords(std * z, self.loc, self.eigvecs)

    def ode_solution(
        self, x: Float[ArrayLike, "... d"], sigma_from: ArrayLike, sigma_to: ArrayLike
    ) -> Float[Array, "... d"]:
        r"""Exact probability-flow map from noise level ``sigma_from`` to ``sigma_to``.

        The flow :math:`\mathrm{d}x/\mathrm{d}s = s(C + s^2 I)^{-1}(x - m)` decouples in the
        eigenbasis: :math:`y_i(s_1) = y_i(s_0)\sqrt{(\lambda_i + s_1^2)/(\lambda_i + s_0^2)}`.
        """
        x = as_float(x)
        v0 = gm.noised_eigvals(self.eigvals, sigma_from)
        v1 = gm.noised_eigvals(self.eigvals, sigma_to)
        y = gm.coords(x, self.loc, self.eigvecs) * jnp.sqrt(v1 / v0)
        return gm.from_coords(y, self.loc, self.eigvecs)

    def condition(self, A, y: ArrayLike | None = None, noise_std: ArrayLike = 0.0) -> Gaussian:
        r"""The posterior :math:`p(x_0 \mid y)` given :math:`y = Ax_0 + \sigma_y\epsilon`.

        Conjugacy: it is :math:`\mathcal N(m + CA^\top G^{-1}(y - Am),\; C - CA^\top G^{-1}AC)`
        with :math:`G = ACA^\top + \sigma_y^2 I`, computed from the SVD of :math:`A C^{1/2}` so that
        it holds for ``noise_std = 0`` and a singular :math:`G` (pseudo-inverse; see
        :mod:`._posterior`). The operator is applied to the ``d`` columns of :math:`C^{1/2}`, never
        built as a matrix.

        Args:
            A: a measurement operator (:mod:`jaxsolve.diffusion.inverse`; its ``in_shape`` may be
                any shape of ``d`` entries, e.g. an image), a ``(m, d)`` matrix, a linear function
                of a ``(d,)`` point, or a :class:`~jaxsolve.diffusion.inverse.Measurement` (then
                leave ``y`` and ``noise_std`` out).
            y: the measurement, of shape ``A.out_shape``.
            noise_std: :math:`\sigma_y \ge 0`, a scalar; may be traced (``y`` too), so a ``vmap``
                over noise levels compiles once.
        """
        op, y, noise_std = post.measurement(A, y, noise_std, self.dim, self.loc.dtype)
        mean, lam, u, _ = post.condition_one(op, y, noise_std, self.loc, self.eigvals, self.eigvecs)
        return eqx.tree_at(lambda g: (g.loc, g.eigvals, g.eigvecs), self, (mean, lam, u))

    def log_evidence(
        self, A, y: ArrayLike | None = None, noise_std: ArrayLike = 0.0
    ) -> Float[Array, ""]:
        r""":math:`\log p(y) = \log\mathcal N(y;\, Am,\, ACA^\top + \sigma_y^2 I)` (arguments as
        for :meth:`condition`). With ``noise_std = 0`` and a singular :math:`ACA^\top` this is the
        density on the measurement's support (pseudo-determinant; see :mod:`._posterior`)."""
        op, y, noise_std = post.measurement(A, y, noise_std, self.dim, self.loc.dtype)
        return post.condition_one(op, y, noise_std, self.loc, self.eigvals, self.eigvecs)[3]
