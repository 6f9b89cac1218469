r"""Closed forms for one Gaussian :math:`\mathcal N(m, C)` noised to :math:`\mathcal N(m, C + s^2 I)`.

With :math:`C = U\operatorname{diag}(\lambda)U^\top` and coordinates :math:`y = U^\top(x - m)`,
every quantity is diagonal: the noised covariance has eigenvalues :math:`\lambda + s^2`.
The same functions serve :class:`Gaussian` and (vmapped over components) :class:`GaussianMixture`.
"""

import jax.numpy as jnp
import numpy as np

from ..._core import as_float, exact_einsum

# An oracle is the yardstick samplers are measured against, so its products are at full precision
# (see jaxsolve/_core/_precision.py): a GPU's default TF32 products would swamp the errors measured.


def eigh_cov(cov, full: bool):
    """(eigenvalues, eigenvectors) of a full ``(..., d, d)`` or a diagonal ``(..., d)`` covariance.

    Round-off can make a PSD matrix's smallest eigenvalues slightly negative; they are clipped at 0.
    """
    cov = as_float(cov)
    if full:
        lam, u = jnp.linalg.eigh(0.5 * (cov + jnp.swapaxes(cov, -1, -2)))
        return jnp.maximum(lam, 0.0), u
    eye = jnp.broadcast_to(jnp.eye(cov.shape[-1], dtype=cov.dtype), cov.shape + cov.shape[-1:])
    return jnp.maximum(cov, 0.0), eye


def noised_eigvals(lam, sigma):
    """:math:`\\lambda + s^2`, with ``sigma`` broadcast against the leading axes of ``x``."""
    s = as_float(sigma)
    return lam + (s * s)[..., None]


def coords(x, mean, u):
    return exact_einsum("...i,ij->...j", x - mean, u)


def rotate_back(y, u):
    """:math:`U y`: eigen-coordinates back to the standard basis (a direction, no offset)."""
    return exact_einsum("...j,ij->...i", y, u)


def from_coords(y, mean, u):
    return mean + rotate_back(y, u)


def log_prob(x, sigma, mean, lam, u):
    v = noised_eigvals(lam, sigma)
    y = coords(x, mean, u)
    return -0.5 * jnp.sum(y * y / v + jnp.log(2.0 * np.pi * v), axis=-1)


def denoise(x, sigma, mean, lam, u):
    v = noised_eigvals(lam, sigma)
    # lambda / (lambda + s^2), defined as 1 where both vanish (a degenerate direction at s = 0);
    # the test is "== 0" so that a NaN sigma gives NaN, not a gain of 1.
    gain = jnp.where(v == 0, 1.0, lam / jnp.where(v == 0, 1.0, v))
    return from_coords(gain * coords(x, mean, u), mean, u)


def score(x, sigma, mean, lam, u):
    v = noised_eigvals(lam, sigma)
    return rotate_back(-coords(x, mean, u) / v, u)
