r"""Exact conditioning of a Gaussian prior on a linear Gaussian measurement.

Prior :math:`x_0 \sim \mathcal N(m, C)` with :math:`C = U\operatorname{diag}(\lambda)U^\top`,
measurement :math:`y = Ax_0 + \sigma_y\epsilon`. With the square root
:math:`L = U\operatorname{diag}(\sqrt\lambda)` (so :math:`C = LL^\top`) and the full SVD
:math:`B = AL = V\operatorname{diag}(s)W^\top` (``m x d``; :math:`s` padded with zeros where needed):

.. math::
    \mathbb E[x_0 \mid y] = m + LW\operatorname{diag}\Big(\frac{s}{s^2+\sigma_y^2}\Big)V^\top(y - Am),
    \qquad
    \operatorname{Cov}[x_0 \mid y] = LW\operatorname{diag}(g)W^\top L^\top,\quad
    g = \frac{\sigma_y^2}{s^2+\sigma_y^2},

the textbook :math:`C - CA^\top(ACA^\top + \sigma_y^2 I)^{-1}AC` written so that it holds for
:math:`\sigma_y = 0`, a singular :math:`AA^\top`, a singular prior and a rank-deficient :math:`B`:
a ratio whose denominator :math:`s^2 + \sigma_y^2` vanishes (a direction the measurement does not
see, or sees without noise and without prior variance) is 0 in the mean and :math:`g = 1` (the
prior variance is kept). Singular values below numpy's ``pinv`` cutoff
(``10 max(m, d) eps s_max``) count as 0.
The covariance is kept as the factor :math:`F = LW\operatorname{diag}(\sqrt g)`, whose SVD gives the
posterior's eigenbasis with eigenvalues that are non-negative by construction.

The evidence is :math:`p(y) = \mathcal N(y;\, Am,\, BB^\top + \sigma_y^2 I)`, diagonal in the basis
:math:`V` with variances :math:`s_i^2 + \sigma_y^2` (and :math:`\sigma_y^2` on the
:math:`m - \operatorname{rank}` directions :math:`B` does not reach). **With** :math:`\sigma_y = 0`
the predictive covariance is singular and the density is taken with the pseudo-determinant: only
directions of positive variance enter the log-determinant, the quadratic form and the count of
:math:`\log 2\pi` terms (the density on the affine subspace :math:`Am + \operatorname{range}(B)`,
and the component of :math:`y - Am` off it is ignored). For a mixture this is the exact limit of
the weights as :math:`\sigma_y \to 0` when every component's :math:`B_k` has the same rank and
:math:`y` lies in each subspace (e.g. :math:`A` of full row rank and non-singular covariances).

The operator is applied to the ``d`` columns of :math:`L` (a batch of ``d`` samples), never turned
into a dense matrix.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..._core import exact_einsum, is_concrete, safe_divide, safe_sqrt
from ..inverse._measurement import Measurement, as_operator


def measurement(A, y, noise_std, d, dtype):
    """Validate a measurement of a ``d``-dimensional sample: ``(operator, flat y, noise_std)``.

    ``A`` is anything :func:`~jaxsolve.diffusion.inverse.as_operator` accepts (a linear function
    gets ``in_shape=(d,)``), or a :class:`~jaxsolve.diffusion.inverse.Measurement` with ``y`` left
    out. Beyond :class:`~jaxsolve.diffusion.inverse.Measurement`'s own checks: the operator acts on
    ``d`` entries, ``y`` is one measurement (no batch axes), and ``y`` and ``noise_std`` are finite
    (concrete bad input raises ``ValueError``; traced input is checked at run time with
    :func:`equinox.error_if`).
    """
    if isinstance(A, Measurement):
        if y is not None:
            raise ValueError("y must be left out when A is a Measurement (it carries y).")
    elif y is None:
        raise ValueError("y is required (or pass a Measurement as A).")
    else:
        op = as_operator(A, in_shape=(d,))
        _check_size(op, d)
        A = Measurement(op, y, noise_std)
    op, y, noise_std = A.operator, A.y, A.noise_std
    _check_size(op, d)
    if y.shape != tuple(op.out_shape):
        raise ValueError(
            f"y must have shape {tuple(op.out_shape)} (the operator's out_shape); got {y.shape}."
        )
    if is_concrete(noise_std):
        if not np.isfinite(np.asarray(noise_std)):
            raise ValueError("noise_std must be finite.")
    else:
        bad = ~(jnp.isfinite(noise_std) & (noise_std >= 0))
        noise_std = eqx.error_if(noise_std, bad, "noise_std must be finite and non-negative.")
    if not is_concrete(y):
        y = eqx.error_if(y, ~jnp.all(jnp.isfinite(y)), "y must be finite.")
    return op, y.reshape(-1).astype(dtype), noise_std.astype(dtype)


def _check_size(op, d):
    size = math.prod(op.in_shape)
    if size != d:
        raise ValueError(
            f"the operator's in_shape {tuple(op.in_shape)} has {size} entries; the oracle's "
            f"points have d = {d}."
        )


def apply_flat(op, x):
    """:math:`Ax` for points ``x`` of shape ``(..., d)``, returned as ``(..., m)``."""
    batch = x.shape[:-1]
    out = op(x.reshape(batch + tuple(op.in_shape)))
    return out.reshape((*batch, -1))


def _factorise(op, lam, u):
    """``(L, V, s, W)``: :math:`L = U\\operatorname{diag}(\\sqrt\\lambda)`, the full SVD of
    :math:`AL` with ``s`` zero-padded to ``d`` and zeroed below the cutoff."""
    d = lam.shape[-1]
    sqrt_c = u * safe_sqrt(lam)  # columns u_j sqrt(lambda_j)
    b = apply_flat(op, sqrt_c.T).T  # (m, d): A applied to each column
    m = b.shape[0]
    v, s, wt = jnp.linalg.svd(b, full_matrices=True)
    cutoff = 10.0 * max(m, d) * jnp.finfo(s.dtype).eps * jnp.max(s, initial=0.0)
    s = jnp.where(s > cutoff, s, 0.0)
    s = jnp.pad(s, (0, d - s.shape[0]))
    return sqrt_c, v, s, wt.T


def condition_gaussian(op, y, noise_std, mean, lam, u):
    r"""Posterior of :math:`\mathcal N(m, U\operatorname{diag}(\lambda)U^\top)` given
    :math:`y = Ax_0 + \sigma_y\epsilon` (see the module).

    Returns ``(mean, eigvals, eigvecs, log_evidence)``; ``y`` is flat ``(m,)``. The SVD does not
    depend on ``mean``, so ``vmap`` over means alone computes it once.
    """
    sqrt_c, v, s, w = _factorise(op, lam, u)
    d, m = mean.shape[0], y.shape[0]
    r = min(m, d)
    var_obs = noise_std * noise_std
    den = s * s + var_obs  # (d,): variance of y along V's columns (the first min(m, d) of them)
    coeff = exact_einsum("ij,i->j", v, y - apply_flat(op, mean))  # V^T (y - A m), (m,)
    gain = safe_divide(s[:r], den[:r], 0.0)
    post_mean = mean + exact_einsum("ij,jk,k->i", sqrt_c, w[:, :r], gain * coeff[:r])
    keep = safe_divide(jnp.broadcast_to(var_obs, den.shape), den, 1.0)
    factor = exact_einsum("ij,jk->ik", sqrt_c, w) * safe_sqrt(keep)
    eigvecs, sv, _ = jnp.linalg.svd(factor)
    # Predictive variances in the V basis: s^2 + sig^2, then sig^2 where B does not reach.
    pred_var = jnp.concatenate([den[:r], jnp.broadcast_to(var_obs, (m - r,))])
    seen = pred_var > 0
    log_evidence = -0.5 * jnp.sum(
        jnp.where(
            seen,
            safe_divide(coeff * coeff, pred_var, 0.0)
            + jnp.log(jnp.where(seen, pred_var, 1.0))
            + np.log(2.0 * np.pi),
            0.0,
        )
    )
    return post_mean, sv * sv, eigvecs, log_evidence


# Compiled entry points: one program per operator type and shape (a noise level or ``y`` is an
# argument, not part of its identity), instead of dispatching the SVDs and products op by op.
condition_one = eqx.filter_jit(condition_gaussian)
# Every component of a mixture: the SVD of A C_k^{1/2} per component.
condition_components = eqx.filter_jit(
    jax.vmap(condition_gaussian, in_axes=(None, None, None, 0, 0, 0))
)
# Components that share one covariance and differ by their means (a smoothed Empirical): the SVD
# does not depend on the mean, so it is computed once.
condition_means = eqx.filter_jit(
    jax.vmap(condition_gaussian, in_axes=(None, None, None, 0, None, None))
)


def log_likelihood(op, y, noise_std, x):
    r""":math:`\log\mathcal N(y;\, Ax,\, \sigma_y^2 I)` for points ``x`` of shape ``(..., d)``
    (needs :math:`\sigma_y > 0`)."""
    res = y - apply_flat(op, x)
    var_obs = noise_std * noise_std
    return -0.5 * (
        jnp.sum(res * res, axis=-1) / var_obs + y.shape[0] * jnp.log(2 * np.pi * var_obs)
    )
