r"""Estimators of the divergence :math:`\nabla\!\cdot D = \operatorname{tr}\partial_x D` of a denoiser.

:func:`~jaxsolve.ode.log_likelihood` integrates :math:`d - \nabla\!\cdot D` along the
probability-flow ODE. An estimator supplies two things: the probes each sample carries along its
trajectory (drawn once, outside the solve) and the function that turns the linearised denoiser
:math:`v \mapsto \partial_x D\,v` and those probes into the divergence.

* :class:`ExactDivergence` — :math:`\operatorname{tr}\partial_x D` from :math:`d`
  Jacobian-vector products along the standard basis (small :math:`d`).
* :class:`HutchinsonDivergence` — the unbiased estimate
  :math:`\frac1K\sum_k \varepsilon_k^\top \partial_x D\,\varepsilon_k` with Rademacher or Gaussian
  probes held fixed along the trajectory ("FFJORD: Free-form Continuous Dynamics for Scalable
  Reversible Generative Models"): the log-likelihood is linear in the divergence estimates along
  one fixed trajectory, so its estimate is unbiased (up to the solver's error).
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, per_sample_keys


class AbstractDivergence(eqx.Module):
    """How :func:`~jaxsolve.ode.log_likelihood` estimates :math:`\\nabla\\cdot D`."""

    @property
    @abc.abstractmethod
    def needs_key(self) -> bool:
        """Whether :meth:`probes` draws random numbers (and so needs a key)."""

    @abc.abstractmethod
    def probes(
        self, key: PRNGKeyArray | None, n: int, event_shape: tuple, dtype
    ) -> Float[Array, "n k ..."]:
        """The probes of each of ``n`` samples, shape ``(n, k, *event_shape)``; sample ``i``'s
        come from ``fold_in(key, i)``."""

    @abc.abstractmethod
    def estimator(self) -> Callable:
        """The function ``(tangent, x, probes) -> divergence`` of one sample, ``tangent`` the
        linearised denoiser at ``x``.

        A plain function of the probes' values, not of how they were drawn: the compiled solve is
        keyed on it, so estimators that differ only in their probes share one program.
        """


class ExactDivergence(AbstractDivergence):
    r""":math:`\operatorname{tr}\partial_x D` from :math:`d` Jacobian-vector products."""

    @property
    def needs_key(self) -> bool:
        return False

    def probes(self, key, n, event_shape, dtype):
        del key
        return jnp.zeros((n, 0, *event_shape), dtype)

    def estimator(self) -> Callable:
        return _trace


class HutchinsonDivergence(AbstractDivergence):
    r""":math:`\frac1K\sum_k \varepsilon_k^\top \partial_x D\,\varepsilon_k`, ``n_probes`` = K.

    ``probe``: ``"rademacher"`` (entries :math:`\pm1`) or ``"gaussian"`` (standard normal); both
    have identity covariance, so the estimate is unbiased. Its variance is
    :math:`\frac2K\sum_{i\ne j} M_{ij}^2` for Rademacher and :math:`\frac2K\lVert M\rVert_F^2` for
    Gaussian probes, :math:`M` the symmetrised Jacobian.
    """

    probe: str = eqx.field(static=True, default="rademacher")
    n_probes: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_choice("probe", self.probe, {"rademacher", "gaussian"})
        check_int("n_probes", self.n_probes)

    @property
    def needs_key(self) -> bool:
        return True

    def probes(self, key, n, event_shape, dtype):
        draw = jax.random.rademacher if self.probe == "rademacher" else jax.random.normal
        keys = per_sample_keys(key, n)
        return jax.vmap(lambda k: draw(k, (self.n_probes, *event_shape), dtype=dtype))(keys)

    def estimator(self) -> Callable:
        return _mean_quadratic_form


def _trace(tangent, x, probes):
    del probes
    d = x.size
    basis = jnp.eye(d, dtype=x.dtype).reshape((d, *x.shape))
    columns = jax.vmap(tangent)(basis).reshape(d, d)
    return jnp.trace(columns)


def _mean_quadratic_form(tangent, x, probes):
    del x
    jvps = jax.vmap(tangent)(probes)
    return jnp.mean(jnp.sum((probes * jvps).reshape(probes.shape[0], -1), axis=-1))


def as_divergence(divergence, probe: str, n_probes: int) -> AbstractDivergence:
    """The estimator that ``log_likelihood``'s ``divergence``/``probe``/``n_probes`` name.

    ``divergence`` is an estimator object, ``"exact"`` or ``"hutchinson"`` (with ``probe`` and
    ``n_probes``, which are checked whatever ``divergence`` is, so a typo never passes unseen,
    and must keep their defaults beside an object, which carries its own).
    """
    check_choice("probe", probe, {"rademacher", "gaussian"})
    check_int("n_probes", n_probes)
    if isinstance(divergence, AbstractDivergence):
        if (probe, n_probes) != ("rademacher", 1):
            raise ValueError(
                "probe= and n_probes= go with divergence='hutchinson'; an estimator object "
                f"carries its own (got divergence={divergence!r}, probe={probe!r}, "
                f"n_probes={n_probes!r})."
            )
        return divergence
    if not isinstance(divergence, str):
        raise TypeError(
            "divergence must be 'exact', 'hutchinson' or an AbstractDivergence; got "
            f"{type(divergence).__name__}."
        )
    check_choice("divergence", divergence, {"exact", "hutchinson"})
    if divergence == "exact":
        return ExactDivergence()
    return HutchinsonDivergence(probe, n_probes)
