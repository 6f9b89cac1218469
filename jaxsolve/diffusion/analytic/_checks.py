"""Validation of oracle parameters: shapes, symmetry, positive semi-definiteness, weights."""

import numpy as np

from ..._core import is_concrete


def check_vector(name, x):
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape (d,); got shape {x.shape}.")


def check_cov(name, cov, d, *, batch=()):
    """``cov`` must be ``batch + (d, d)`` (full) or ``batch + (d,)`` (diagonal), symmetric, PSD."""
    full, diag = (*batch, d, d), (*batch, d)
    if cov.shape not in (full, diag):
        raise ValueError(
            f"{name} must have shape {full} (full) or {diag} (diagonal); got {cov.shape}."
        )
    if not is_concrete(cov):
        return
    c = np.asarray(cov, dtype=np.float64)
    if not np.all(np.isfinite(c)):
        raise ValueError(f"{name} must be finite.")
    scale = max(1.0, float(np.max(np.abs(c))))
    tol = 1e-6 * scale
    if cov.shape == diag:
        if np.any(c < -tol):
            raise ValueError(
                f"{name} (diagonal) must be non-negative; smallest entry {c.min():.3g}."
            )
        return
    asym = float(np.max(np.abs(c - np.swapaxes(c, -1, -2))))
    if asym > tol:
        raise ValueError(f"{name} must be symmetric; max |cov - cov.T| = {asym:.3g}.")
    smallest = float(np.min(np.linalg.eigvalsh(c)))
    if smallest < -tol:
        raise ValueError(
            f"{name} must be positive semi-definite; smallest eigenvalue {smallest:.3g}."
        )


def check_weights(name, w, k):
    if w.shape != (k,):
        raise ValueError(f"{name} must have shape ({k},) to match the {k} means; got {w.shape}.")
    if not is_concrete(w):
        return
    a = np.asarray(w, dtype=np.float64)
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite and non-negative; got {a}.")
    if abs(a.sum() - 1.0) > 1e-5:
        raise ValueError(f"{name} must sum to 1; they sum to {a.sum():.8g}.")
