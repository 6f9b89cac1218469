"""Validation of oracle parameters: shapes, symmetry, positive semi-definiteness, weights.

Concrete parameters raise ``ValueError`` when the oracle is built. Traced ones (an oracle built
under ``jit`` / ``vmap``) come back wrapped in :func:`equinox.error_if`, so the same checks raise
when the compiled code runs: an oracle is the yardstick of every sampler error, and one built from
weights summing to 1.8 would measure against the wrong distribution.
"""

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from ..._core import is_concrete

# Relative tolerance of the symmetry, PSD and sum-to-one checks.
_TOL = 1e-6
_WEIGHT_TOL = 1e-5


def check_vector(name, x):
    """``x`` of shape ``(d,)`` and finite; returns ``x``."""
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape (d,); got shape {x.shape}.")
    return check_finite(name, x)


def check_finite(name, x):
    if is_concrete(x):
        if not np.all(np.isfinite(np.asarray(x))):
            raise ValueError(f"{name} must be finite.")
        return x
    return eqx.error_if(x, ~jnp.all(jnp.isfinite(x)), f"{name} must be finite.")


def check_cov(name, cov, d, *, batch=()):
    """``cov`` must be ``batch + (d, d)`` (full) or ``batch + (d,)`` (diagonal), symmetric, PSD."""
    full, diag = (*batch, d, d), (*batch, d)
    if cov.shape not in (full, diag):
        raise ValueError(
            f"{name} must have shape {full} (full) or {diag} (diagonal); got {cov.shape}."
        )
    if not is_concrete(cov):
        return _check_traced_cov(name, cov, cov.shape == diag)
    c = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be finite.")
    scale = max(1.0, float(np.max(np.abs(c))))
    tol = _TOL * scale
    if cov.shape == diag:
        if np.any(c < -tol):
            raise ValueError(
                f"{name} (diagonal) must be non-negative; smallest entry {c.min():.3g}."
            )
        return cov
    asym = float(np.max(np.abs(c - np.swapaxes(c, -1, -2))))
    if asym > tol:
        raise ValueError(f"{name} must be symmetric; max |cov - cov.T| = {asym:.3g}.")
    smallest = float(np.min(np.linalg.eigvalsh(c)))
    if smallest < -tol:
        raise ValueError(
            f"{name} must be positive semi-definite; smallest eigenvalue {smallest:.3g}."
        )
    return cov


def _check_traced_cov(name, cov, diagonal):
    """The concrete checks of :func:`check_cov` as one run-time condition."""
    finite = jnp.all(jnp.isfinite(cov))
    tol = _TOL * jnp.maximum(1.0, jnp.max(jnp.abs(jnp.where(jnp.isfinite(cov), cov, 0.0))))
    if diagonal:
        ok = finite & jnp.all(cov >= -tol)
        return eqx.error_if(cov, ~ok, f"{name} must be finite and non-negative (diagonal).")
    safe = jnp.where(finite, cov, 0.0)
    symmetric = jnp.max(jnp.abs(safe - jnp.swapaxes(safe, -1, -2))) <= tol
    psd = jnp.min(jnp.linalg.eigvalsh(safe)) >= -tol
    return eqx.error_if(
        cov,
        ~(finite & symmetric & psd),
        f"{name} must be finite, symmetric and positive semi-definite.",
    )


def check_weights(name, w, k):
    if w.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},) to match the {k} means; got {w.shape}.")
    if not is_concrete(w):
        ok = jnp.all(jnp.isfinite(w)) & jnp.all(w >= 0) & (jnp.abs(jnp.sum(w) - 1.0) <= _WEIGHT_TOL)
        return eqx.error_if(w, ~ok, f"{name} must be finite, non-negative and sum to 1.")
    a = np.asarray(w, dtype=np.float64)
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite and non-negative; got {a}.")
    if abs(a.sum() - 1.0) > _WEIGHT_TOL:
        raise ValueError(f"{name} must sum to 1; they sum to {a.sum():.8g}.")
    return w
