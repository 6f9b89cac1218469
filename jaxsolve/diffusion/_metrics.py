r"""Sample-based distances between point clouds, for judging generative models on toy data.

* :func:`sliced_wasserstein` — :math:`\big(\mathbb E_\theta W_2^2(\theta^\top X, \theta^\top Y)\big)^{1/2}`
  over random unit directions, each 1-D :math:`W_2` from sorted projections (equal sample counts).
* :func:`mmd` — the (biased, V-statistic) maximum mean discrepancy with a Gaussian kernel of
  bandwidth ``scale``: :math:`\mathrm{MMD}^2 = \overline{k(X,X)} + \overline{k(Y,Y)} - 2\overline{k(X,Y)}`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import exact_dot


def sliced_wasserstein(
    x: Float[Array, "n d"], y: Float[Array, "n d"], key: PRNGKeyArray, num_projections: int = 256
) -> Float[Array, ""]:
    r"""Sliced 2-Wasserstein distance between two equal-size samples ``x`` and ``y`` of shape ``(n, d)``.

    With ``num_projections`` directions :math:`\theta_k` drawn uniformly on the sphere (from
    ``key``), each sample is projected onto each direction and sorted; in one dimension the optimal
    coupling pairs order statistics, so

    .. math:: \mathrm{SW}_2(x, y) \approx \Big(\frac{1}{Kn}\sum_{k=1}^{K}\sum_{i=1}^{n}
        \big(\theta_k^\top x_{(i)} - \theta_k^\top y_{(i)}\big)^2\Big)^{1/2},

    :math:`x_{(i)}` the point of rank :math:`i` along :math:`\theta_k` ("Sliced and Radon
    Wasserstein Barycenters of Measures"). The projections are computed in full precision.
    Raises ``ValueError`` unless both inputs have the same shape ``(n, d)``.
    """
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"x and y must both have shape (n, d); got {x.shape} and {y.shape}.")
    theta = jax.random.normal(key, (num_projections, x.shape[1]), x.dtype)
    theta = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
    # Full-precision projections: a metric that judges samples must not add TF32 rounding.
    px, py = jnp.sort(exact_dot(x, theta.T), axis=0), jnp.sort(exact_dot(y, theta.T), axis=0)
    return jnp.sqrt(jnp.mean((px - py) ** 2))


def mmd(x: Float[Array, "n d"], y: Float[Array, "m d"], scale: float = 1.0) -> Float[Array, ""]:
    r"""Maximum mean discrepancy between samples ``x`` ``(n, d)`` and ``y`` ``(m, d)``.

    The biased (V-statistic) estimate of "A Kernel Two-Sample Test" with the Gaussian kernel
    :math:`k(a, b) = \exp(-\lVert a - b\rVert^2 / 2\ell^2)`, :math:`\ell` = ``scale``:

    .. math:: \mathrm{MMD}(x, y) = \Big(\overline{k(x, x)} + \overline{k(y, y)}
        - 2\,\overline{k(x, y)}\Big)^{1/2},

    each bar the mean over all pairs (the diagonal included); the square is clipped at 0 before
    the square root, against round-off. Raises ``ValueError`` unless ``x`` and ``y`` are 2-D
    with the same ``d``.
    """
    if jnp.ndim(x) != 2 or jnp.ndim(y) != 2 or jnp.shape(x)[1] != jnp.shape(y)[1]:
        # 1-D samples broadcast into an (n, m) "distance" summed over the wrong axis: a number,
        # not the MMD.
        raise ValueError(
            f"x and y must have shapes (n, d) and (m, d); got {jnp.shape(x)} and {jnp.shape(y)}."
        )

    def k(a, b):
        d2 = jnp.sum((a[:, None] - b[None]) ** 2, axis=-1)
        return jnp.exp(-0.5 * d2 / scale**2)

    return jnp.sqrt(
        jnp.maximum(jnp.mean(k(x, x)) + jnp.mean(k(y, y)) - 2.0 * jnp.mean(k(x, y)), 0.0)
    )
