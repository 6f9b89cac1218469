"""Shared float64 test problems for the implicit pillar (built inside tests, under ``x64``).

Random data comes from NumPy: drawing it with ``jax.random`` would compile a PRNG kernel per
shape, which costs more than many of the checks themselves.
"""

import jax.numpy as jnp
import numpy as np

# A failed ``eqx.error_if`` at run time surfaces through a host callback, which JAX re-raises as
# RuntimeError or ValueError depending on the path; tests match the message, not only the type.
RUNTIME_ERRORS = (RuntimeError, ValueError)


def normal(seed, shape):
    """Standard normal draws as a JAX array (float64 under ``x64``)."""
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


def contraction(n, norm, seed=0):
    """A random ``n x n`` matrix with spectral norm ``norm``."""
    w = np.random.default_rng(seed).standard_normal((n, n))
    return jnp.asarray(norm * w / np.linalg.norm(w, 2))


def symmetric_contraction(n, norm, seed=0):
    """A random symmetric ``n x n`` matrix with ``||W||_2 = rho(W) = norm``."""
    a = np.random.default_rng(seed).standard_normal((n, n))
    s = a + a.T
    return jnp.asarray(norm * s / np.linalg.norm(s, 2))


def linear_problem(n=6, norm=0.8, seed=0):
    """``z = W z + b`` with ``||W||_2 = norm``; returns ``(W, b)``."""
    b = normal(seed + 100, (n,))
    return contraction(n, norm, seed), b


def linear_map(z, args):
    w, b = args
    return w @ z + b


def tanh_map(z, args):
    w, x = args
    return jnp.tanh(w @ z + x)
