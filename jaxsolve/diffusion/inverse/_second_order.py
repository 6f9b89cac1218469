r"""Second-order Tweedie guidance: the measurement likelihood under the denoiser's covariance.

"Beyond First-Order Tweedie: Solving Inverse Problems using Latent Diffusion" (Rout, Chen, Kumar,
Caramanis, Shakkottai, Chu; STSL). Tweedie's formula gives the first two moments of :math:`x_0`
given :math:`x = x_0 + s\epsilon` (VE):

.. math:: \mathbb E[x_0\mid x] = D(x, s), \qquad \operatorname{Cov}[x_0\mid x] = s^2 J_D(x),
    \quad J_D = \partial D/\partial x = I + s^2\nabla^2\log p_s(x).

First-order methods (DPS) keep only the mean. With the covariance, :math:`p(x_0\mid x) \approx
\mathcal N(D, s^2J_D)` and Jensen's inequality bounds the likelihood of the noised state:

.. math::
    \log p(y\mid x) = \log\mathbb E_{x_0\mid x}\,\mathcal N(y;\,Ax_0,\,\sigma_y^2I)
    \ \ge\ \hat{\mathcal L}(x) = -\frac{\lVert y - AD\rVert^2 + s^2\operatorname{tr}(AJ_DA^\top)}
    {2\sigma_y^2} + \text{const},

STSL's surrogate loss: one trace instead of a covariance, :math:`O(1)` model evaluations with a
Hutchinson estimate :math:`\operatorname{tr}(AJ_DA^\top) = \mathbb E_v[v^\top AJ_DA^\top v]`
(:math:`v` standard normal or Rademacher in measurement space, :math:`J_DA^\top v` one
Jacobian-vector product). Its gradient is the first-order (DPS) guidance plus the gradient of the
trace, a third derivative of :math:`\log p_s` (reverse mode through the forward-mode product).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_choice, check_int, expand_to, is_concrete, per_sample_keys
from ._measurement import Measurement, check_measurement


class STSL(eqx.Module):
    r"""Second-order Tweedie guidance (see the module) as a denoiser transform.

    :math:`D_y(x, s) = D(x, s) + \zeta\,s^2\,\nabla_x\hat{\mathcal L}(x)` with
    :math:`\hat{\mathcal L}(x) = -\big(\lVert y - AD\rVert^2 + \gamma\,s^2\,\widehat{\operatorname{tr}}
    (AJ_DA^\top)\big)/2\sigma_y^2`: Tweedie's formula for the posterior turns the score correction
    :math:`\nabla_x\log p(y\mid x)` into a denoiser correction, as for
    :class:`~jaxsolve.diffusion.inverse.DPS`. :math:`\gamma = 1` (``trace_weight``) is the lower
    bound itself; :math:`\gamma = 0` is first-order guidance (DPS with ``normalized=False``).
    Every solver of :func:`~jaxsolve.diffusion.sample` samples with it.

    What is implemented, and where it departs from the paper:

    * **pixel space**: the paper guides a latent diffusion model (:math:`A` composed with the
      decoder); here :math:`A` acts on the diffusion state directly.
    * **the trace of the bound**: the paper estimates :math:`\operatorname{tr}\nabla^2\log p_s`
      by a finite difference of the score along a unit-variance probe and weights it by a tuned
      :math:`\eta/d`; here the bound's own term :math:`s^2\operatorname{tr}(AJ_DA^\top)` is
      estimated with exact Jacobian-vector products, and ``trace_weight`` plays :math:`\eta`'s
      role (1 = the bound).
    * **one correction per denoiser call**: the paper takes :math:`K = 5` gradient steps on the
      state per DDIM step (fresh probes each) from a forward-noised :math:`A^\top y`; here the
      gradient corrects the denoised estimate once per call, and averaging over ``probes``
      replaces the repeated steps. Start from noise as for any sampler.
    * ``noise_std`` must be positive: the bound is :math:`-\infty` at :math:`\sigma_y = 0` (the
      paper's step size is :math:`O(1/\sigma_y^2)`).

    On a Gaussian prior :math:`J_D = C(C + s^2I)^{-1}` does not depend on :math:`x`: the trace term
    has no gradient and STSL *equals* first-order guidance there. It matters where the prior's
    curvature varies (mixtures, real data).

    Probes come from ``key``, folded with the bits of ``sigma``: fresh at each noise level, the
    same for two calls at one level; sample ``i``'s probes from ``fold_in`` of that key with ``i``,
    so they do not depend on the batch size. ``probes=None`` takes the exact trace instead
    (one product per measurement entry; small problems and tests). The driver counts one
    evaluation per call; with ``K`` probes the call costs about :math:`3(K + 1)` (the denoiser,
    ``K`` Jacobian-vector products, and the gradient through all of them).

    Args:
        denoiser: ``denoiser(x, sigma) -> x0_hat`` (VE).
        measurement: the :class:`~jaxsolve.diffusion.inverse.Measurement`, ``noise_std > 0``.
        scale: :math:`\zeta`, the guidance strength (1 = the bound's gradient); may be traced or
            carry the leading batch axes.
        trace_weight: :math:`\gamma \ge 0`, the weight of the second-order term; may be traced.
        key: PRNG key of the Hutchinson probes (not needed with ``probes=None``).
        probes: number of Hutchinson probes per call, or ``None`` for the exact trace.
        probe: ``"gaussian"`` (the paper's) or ``"rademacher"`` (lower variance).
    """

    denoiser: Callable
    measurement: Measurement
    scale: Float[Array, "..."]
    trace_weight: Float[Array, ""]
    key: PRNGKeyArray | None
    probes: int | None = eqx.field(static=True)
    probe: str = eqx.field(static=True)

    def __init__(
        self,
        denoiser: Callable,
        measurement: Measurement,
        scale: Float[ArrayLike, "..."] = 1.0,
        trace_weight: Float[ArrayLike, ""] = 1.0,
        *,
        key: PRNGKeyArray | None = None,
        probes: int | None = 1,
        probe: str = "gaussian",
    ):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable; got {type(denoiser).__name__}.")
        check_measurement("STSL", measurement)
        if is_concrete(measurement.noise_std) and float(np.asarray(measurement.noise_std)) == 0:
            raise ValueError(
                "STSL needs measurement.noise_std > 0: its surrogate, the Gaussian likelihood's "
                "lower bound, is -inf for a noiseless measurement."
            )
        trace_weight = as_float(trace_weight)
        if jnp.ndim(trace_weight) != 0:
            raise ValueError(f"trace_weight must be a scalar; got shape {jnp.shape(trace_weight)}.")
        if is_concrete(trace_weight) and not float(np.asarray(trace_weight)) >= 0:
            raise ValueError(f"trace_weight must be non-negative; got {float(trace_weight)}.")
        if probes is not None:
            probes = check_int("probes", probes)
            if key is None:
                raise ValueError("STSL draws Hutchinson probes: pass key= (or probes=None).")
        self.denoiser = denoiser
        self.measurement = measurement
        self.scale = as_float(scale)
        self.trace_weight = trace_weight
        self.key = key
        self.probes = probes
        self.probe = check_choice("probe", probe, ("gaussian", "rademacher"))

    def _batch_shape(self, x):
        in_shape = tuple(self.measurement.operator.in_shape)
        if x.shape[x.ndim - len(in_shape) :] != in_shape:
            raise ValueError(
                f"STSL: x must end in the operator's in_shape {in_shape}; got shape {x.shape}."
            )
        return x.shape[: x.ndim - len(in_shape)]

    def _probe_vectors(self, sigma, batch, dtype):
        """Measurement-space probes, ``(K, *batch, *out_shape)``, and the divisor of their sum."""
        out = tuple(self.measurement.operator.out_shape)
        if self.probes is None:
            m = math.prod(out)
            basis = jnp.eye(m, dtype=dtype).reshape((m, *((1,) * len(batch)), *out))
            return jnp.broadcast_to(basis, (m, *batch, *out)), 1
        level = jnp.asarray(sigma, jnp.float32).reshape(-1)[0]
        key = jax.random.fold_in(self.key, jax.lax.bitcast_convert_type(level, jnp.uint32))
        # Sample i's probes come from fold_in(key, i): a sample's draws do not depend on the
        # batch size (the house's per-sample noise convention).
        n = math.prod(batch)
        draw = jax.random.rademacher if self.probe == "rademacher" else jax.random.normal
        per_sample = jax.vmap(lambda k: draw(k, (self.probes, *out), dtype))
        probes = per_sample(per_sample_keys(key, n))  # (n, K, *out)
        probes = jnp.moveaxis(probes, 1, 0).reshape((self.probes, *batch, *out))
        return probes, self.probes

    def _quadratic_forms(self, tangent, probes, count):
        r"""Per sample, :math:`\frac1K\sum_k v_k^\top A J A^\top v_k` with ``tangent`` the map
        :math:`u \mapsto J u`."""
        op = self.measurement.operator
        k = len(op.out_shape)

        def one(v):
            w = op(tangent(op.transpose(v).astype(v.dtype))).astype(v.dtype)
            return jnp.sum(v * w, axis=tuple(range(v.ndim - k, v.ndim)))

        return jnp.sum(jax.vmap(one)(probes), axis=0) / count

    def trace(self, x: Float[ArrayLike, "*batch ..."], sigma: ArrayLike) -> Float[Array, "*batch"]:
        r"""The estimate of :math:`\operatorname{tr}(AJ_D(x, s)A^\top)` per sample (exact with
        ``probes=None``); unbiased over the probes."""
        x = as_float(x)
        batch = self._batch_shape(x)
        _, tangent = jax.linearize(
            lambda z: jnp.asarray(self.denoiser(z, sigma)).astype(x.dtype), x
        )
        probes, count = self._probe_vectors(sigma, batch, x.dtype)
        return self._quadratic_forms(tangent, probes, count)

    def __call__(self, x: Float[ArrayLike, "..."], sigma: ArrayLike) -> Float[Array, "..."]:
        x = as_float(x)
        m = self.measurement
        batch = self._batch_shape(x)
        s2 = as_float(sigma) ** 2
        trace_weight = self.trace_weight
        if is_concrete(trace_weight):
            second_order = float(trace_weight) != 0.0
        else:
            second_order = True
            trace_weight = eqx.error_if(
                trace_weight, ~(trace_weight >= 0), "STSL trace_weight must be non-negative."
            )
        probes, count = self._probe_vectors(sigma, batch, x.dtype) if second_order else (None, 1)

        def misfit_and_trace(z):
            # 2 sigma_y^2 * (-surrogate), summed over the samples (they do not interact).
            x0, tangent = jax.linearize(lambda u: jnp.asarray(self.denoiser(u, sigma)), z)
            total = jnp.sum(m.sum_of_squares(x0))
            if second_order:
                traces = self._quadratic_forms(tangent, probes, count)
                weight = (trace_weight * s2).astype(traces.dtype)
                total = total + jnp.sum(jnp.broadcast_to(weight, traces.shape) * traces)
            return total, x0

        grad, x0_hat = jax.grad(misfit_and_trace, has_aux=True)(x)
        noise_var = m.noise_std**2
        if not is_concrete(noise_var):
            noise_var = eqx.error_if(noise_var, ~(noise_var > 0), "STSL needs noise_std > 0.")
        step = expand_to(-0.5 * self.scale * s2, x0_hat) / noise_var
        return x0_hat + step.astype(x0_hat.dtype) * grad


__all__ = ["STSL"]
