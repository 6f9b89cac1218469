r"""A linear Gaussian measurement :math:`y = Ax_0 + \sigma_y\epsilon` as data."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_positive, is_concrete, per_sample_keys
from ._operators import AbstractOperator, Dense, LinearFunction


def as_operator(A, in_shape: tuple[int, ...] | None = None) -> AbstractOperator:
    """``A`` as an :class:`AbstractOperator`: an operator as it is, a 2-D array as
    :class:`Dense`, a linear function (with ``in_shape``) as :class:`LinearFunction`."""
    if isinstance(A, AbstractOperator):
        return A
    if callable(A) and not eqx.is_array_like(A):
        if in_shape is None:
            raise ValueError("a linear function A needs in_shape= (the shape of one sample).")
        return LinearFunction(A, in_shape)
    if eqx.is_array_like(A):
        return Dense(A)
    raise TypeError(
        f"A must be a measurement operator, a (m, d) matrix or a linear function; got "
        f"{type(A).__name__}."
    )


class Measurement(eqx.Module):
    r"""An observation ``y`` of shape ``operator.out_shape`` with Gaussian noise ``noise_std``.

    The likelihood is :math:`p(y \mid x_0) = \mathcal N(y;\, Ax_0,\, \sigma_y^2 I)`; ``noise_std``
    may be 0 (a noiseless measurement) and may be traced, so a sweep over noise levels compiles
    once.
    """

    operator: AbstractOperator
    y: Float[Array, "..."]
    noise_std: Float[Array, ""]

    def __init__(self, operator, y: ArrayLike, noise_std: ArrayLike = 0.0):
        self.operator = as_operator(operator)
        y = as_float(y)
        out = tuple(self.operator.out_shape)
        if y.shape[y.ndim - len(out) :] != out:
            raise ValueError(
                f"y must have shape {out} (the operator's out_shape); got shape {y.shape}."
            )
        check_positive("noise_std", noise_std, allow_zero=True)
        noise_std = as_float(noise_std)
        if jnp.ndim(noise_std) != 0:
            raise ValueError(f"noise_std must be a scalar; got shape {jnp.shape(noise_std)}.")
        finite = jnp.isfinite(noise_std) & (noise_std >= 0)
        if is_concrete(noise_std):
            # check_positive lets inf through; the oracles' condition() refuses it.
            if not bool(finite):
                raise ValueError(f"noise_std must be finite; got {float(noise_std)}.")
        else:
            noise_std = eqx.error_if(
                noise_std, ~finite, "noise_std must be finite and non-negative."
            )
        if is_concrete(y) and not np.all(np.isfinite(np.asarray(y))):
            raise ValueError("y must be finite.")
        self.y = y
        self.noise_std = noise_std

    def residual(self, x0: Float[Array, "*batch ..."]) -> Float[Array, "*batch ..."]:
        """:math:`y - Ax_0` for every sample of ``x0``."""
        return self.y - self.operator(x0)

    def sum_of_squares(self, x0: Float[Array, "*batch ..."]) -> Float[Array, "*batch"]:
        r""":math:`\lVert y - Ax_0\rVert^2` per sample."""
        r = self.residual(x0)
        return self.event_sum(r * r)

    def event_sum(self, values: Float[Array, "*batch ..."]) -> Float[Array, "*batch"]:
        """Sum over the trailing ``out_shape`` axes (one value per measurement)."""
        k = len(self.operator.out_shape)
        return jnp.sum(values, axis=tuple(range(values.ndim - k, values.ndim)))

    def log_likelihood(self, x0: Float[Array, "*batch ..."]) -> Float[Array, "*batch"]:
        r""":math:`-\lVert y - Ax_0\rVert^2 / 2\sigma_y^2` per sample (up to a constant); ``-inf``
        off the measurement when ``noise_std = 0``."""
        sq = self.sum_of_squares(x0)
        return -0.5 * sq / self.noise_std**2


def measure(
    key: PRNGKeyArray, operator, x0: Float[ArrayLike, "..."], noise_std: ArrayLike = 0.0
) -> Measurement:
    r"""Simulate :math:`y = Ax_0 + \sigma_y\epsilon` for one sample ``x0`` (shape
    ``operator.in_shape``; leading batch axes give one measurement per sample, noise per sample
    from ``fold_in(key, i)``). Entries the operator does not measure (a :class:`Mask`'s
    unobserved ones) stay 0."""
    operator = as_operator(operator)
    x0 = as_float(x0)
    clean = operator(x0)
    out = tuple(operator.out_shape)
    batch = clean.shape[: clean.ndim - len(out)]
    n = int(np.prod(batch, dtype=np.int64))
    keys = per_sample_keys(key, n)
    eps = jax.vmap(lambda k: jax.random.normal(k, out, clean.dtype))(keys).reshape(clean.shape)
    eps = eps * operator.measured(clean.dtype)  # no noise on a mask's unobserved entries
    return Measurement(operator, clean + as_float(noise_std).astype(clean.dtype) * eps, noise_std)


def check_measurement(owner: str, measurement) -> None:
    """Raise ``TypeError`` unless ``measurement`` is a :class:`Measurement`."""
    if not isinstance(measurement, Measurement):
        raise TypeError(
            f"{owner}: measurement must be a jaxsolve.diffusion.inverse.Measurement; got "
            f"{type(measurement).__name__}."
        )


__all__ = ["Measurement", "as_operator", "measure"]
