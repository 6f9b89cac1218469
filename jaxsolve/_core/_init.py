"""Random initial weights for layers (operators, PINN networks), cheap to construct.

Every new array shape costs a compilation when drawn with its own ``jax.random`` call, and fusing
all draws of a layer into one jitted program is slower still (XLA compiles the unrolled
generators). A layer therefore draws one flat normal and one flat uniform vector and cuts its
arrays out of them; with a concrete key the cutting happens in NumPy (no compilation at all),
with a traced key (construction under ``jax.vmap`` over keys, e.g. ensembles) in ``jax.numpy``.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from .._core import default_float, is_concrete


def subkeys(key, n: int):
    """``n`` independent keys ``fold_in(key, i)`` (one compilation for every ``n``, unlike split)."""
    return [jax.random.fold_in(key, i) for i in range(n)]


def _bucket(n: int) -> int:
    """Round a draw size up to a power of two (>= 256) so few distinct shapes get compiled."""
    return max(256, 1 << (n - 1).bit_length()) if n else 0


def draw(key, specs, dtype=None):
    """Arrays for ``specs = [(kind, shape, scale), ...]``.

    ``kind`` is ``"normal"`` (``scale * N(0, 1)``), ``"uniform"`` (``U(-scale, scale)``),
    ``"zeros"`` or ``"ones"``.
    """
    dtype = jnp.dtype(dtype or default_float())
    specs = [(kind, tuple(int(n) for n in shape), float(scale)) for kind, shape, scale in specs]
    n_normal = sum(math.prod(s) for k, s, _ in specs if k == "normal")
    n_uniform = sum(math.prod(s) for k, s, _ in specs if k == "uniform")
    k_normal, k_uniform = subkeys(key, 2)
    concrete = is_concrete(key)
    xp = np if concrete else jnp
    normal = jax.random.normal(k_normal, (_bucket(n_normal),), dtype) if n_normal else None
    uniform = (
        jax.random.uniform(k_uniform, (_bucket(n_uniform),), dtype, -1.0, 1.0)
        if n_uniform
        else None
    )
    if concrete:
        normal = None if normal is None else np.asarray(normal)
        uniform = None if uniform is None else np.asarray(uniform)
    out, i_n, i_u = [], 0, 0
    for kind, shape, scale in specs:
        size = math.prod(shape)
        if kind == "normal":
            a = scale * normal[i_n : i_n + size].reshape(shape)
            i_n += size
        elif kind == "uniform":
            a = scale * uniform[i_u : i_u + size].reshape(shape)
            i_u += size
        elif kind == "zeros":
            a = xp.zeros(shape)
        elif kind == "ones":
            a = xp.ones(shape)
        else:
            raise ValueError(f"unknown initialiser {kind!r}")
        out.append(jnp.asarray(a, dtype))
    return tuple(out)
