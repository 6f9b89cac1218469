r"""Consistency models: the consistency function, its multistep sampler and distillation loss.

"Consistency Models" (Song, Dhariwal, Chen, Sutskever, 2023). A consistency function maps every
point of a probability-flow trajectory to the trajectory's origin,
:math:`f(x_\sigma, \sigma) = x_{\sigma_\text{min}}`, so one evaluation at :math:`\sigma_\text{max}`
generates a sample. In the EDM-style parameterisation

.. math::

    f_\theta(x, \sigma) = c_\text{skip}(\sigma)\,x + c_\text{out}(\sigma)\,
        F_\theta(c_\text{in}(\sigma)\,x,\; c_\text{noise}(\sigma)),\qquad
    c_\text{skip} = \frac{\sigma_d^2}{(\sigma-\sigma_\text{min})^2 + \sigma_d^2},\quad
    c_\text{out} = \frac{(\sigma-\sigma_\text{min})\,\sigma_d}{\sqrt{\sigma_d^2+\sigma^2}},

which meets the boundary condition :math:`f(x, \sigma_\text{min}) = x` for any network
(:math:`c_\text{skip} = 1`, :math:`c_\text{out} = 0` there). A consistency function is a denoiser
``(x, sigma) -> x0_hat`` in VE scale (:math:`x = x_0 + \sigma\epsilon`), so it plugs into
:func:`jaxsolve.diffusion.sample`.

* :func:`consistency_scalings` — :math:`(c_\text{skip}, c_\text{out})`;
* :class:`ConsistencyFunction` — a raw network turned into :math:`f_\theta`
  (:math:`c_\text{in}`, :math:`c_\text{noise}` as :class:`~jaxsolve.diffusion.Precond`);
* :class:`ConsistencySampler` — the multistep stochastic iterative sampler (the paper's
  Algorithm 1) as a solver of the driver;
* :func:`consistency_distillation_loss` — consistency distillation (CD, Algorithm 2) from any
  teacher denoiser with any jaxsolve solver as the ODE step.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_choice, check_positive, expand_to, is_concrete
from .._flow_matching import pseudo_huber
from .._losses import preconditioned
from .._sample import hashable, sample
from .._solvers._base import AbstractSolver, StepContext


def consistency_scalings(sigma: ArrayLike, sigma_min: ArrayLike, sigma_data: ArrayLike):
    r"""The skip and output scalings of a consistency function.

    :math:`c_\text{skip} = \sigma_d^2/((\sigma-\sigma_\text{min})^2 + \sigma_d^2)` and
    :math:`c_\text{out} = (\sigma-\sigma_\text{min})\sigma_d/\sqrt{\sigma_d^2+\sigma^2}`
    ("Consistency Models", Appendix C), so :math:`c_\text{skip}(\sigma_\text{min}) = 1` and
    :math:`c_\text{out}(\sigma_\text{min}) = 0` exactly.

    Args:
        sigma: noise level(s), any shape.
        sigma_min: the boundary level :math:`\sigma_\text{min}` (the paper's :math:`\epsilon`).
        sigma_data: the data's standard deviation :math:`\sigma_d`.

    Returns:
        ``(c_skip, c_out)``, each shaped like ``sigma``.
    """
    sigma = as_float(sigma)
    offset = sigma - sigma_min
    sd2 = sigma_data**2
    c_skip = sd2 / (offset**2 + sd2)
    c_out = offset * sigma_data * jax.lax.rsqrt(sigma**2 + sd2)
    return c_skip, c_out


class ConsistencyFunction(eqx.Module):
    r"""A raw network ``network(x_in, c_noise)`` (single sample) turned into a consistency function.

    :math:`f(x, \sigma) = c_\text{skip}x + c_\text{out}F(c_\text{in}x, c_\text{noise})` with the
    scalings of :func:`consistency_scalings` and EDM's :math:`c_\text{in} = 1/\sqrt{\sigma^2 +
    \sigma_d^2}`, :math:`c_\text{noise} = \tfrac14\ln\sigma` (as
    :class:`~jaxsolve.diffusion.Precond`). The boundary condition :math:`f(x, \sigma_\text{min}) =
    x` holds for any network. ("Consistency Models", Song, Dhariwal, Chen, Sutskever.)

    It is a denoiser: ``x`` has ``batch_ndim`` leading batch axes, ``sigma`` is a scalar or one
    level per sample, and ``network`` is mapped over the batch with ``jax.vmap``.

    Args:
        network: ``network(x_in, c_noise) -> output`` on one sample, e.g. a
            :class:`~jaxsolve.diffusion.NoiseMLP`.
        sigma_min: the boundary level :math:`\sigma_\text{min} > 0`.
        sigma_data: the data's standard deviation :math:`\sigma_d`.
        batch_ndim: number of leading batch axes of ``x``.
    """

    network: Callable
    sigma_min: float = 0.002
    sigma_data: float = 0.5
    batch_ndim: int = eqx.field(static=True, default=1)

    def __check_init__(self):
        check_positive("sigma_min", self.sigma_min)
        check_positive("sigma_data", self.sigma_data)

    def coefficients(self, sigma):
        """``(c_skip, c_out, c_in, c_noise)`` at noise level ``sigma``."""
        sigma = as_float(sigma)
        c_skip, c_out = consistency_scalings(sigma, self.sigma_min, self.sigma_data)
        c_in = jax.lax.rsqrt(sigma**2 + self.sigma_data**2)
        c_noise = 0.25 * jnp.log(sigma)
        return c_skip, c_out, c_in, c_noise

    def __call__(self, x: Float[Array, " *shape"], sigma: ArrayLike) -> Float[Array, " *shape"]:
        return preconditioned(self.network, self.coefficients, x, sigma, self.batch_ndim)


class ConsistencySampler(AbstractSolver):
    r"""Multistep consistency sampling ("Consistency Models", Algorithm 1).

    On a decreasing grid :math:`\sigma_0 > \dots > \sigma_{N-1} > 0 = \sigma_N`, each level
    denoises with the consistency function and re-noises to the next level:

    .. math::

        \hat x_0 = f(x, \sigma_i),\qquad
        x \leftarrow \hat x_0 + \sqrt{\sigma_{i+1}^2 - \sigma_\text{min}^2}\; z,\quad
        z\sim\mathcal N(0, I),

    and the last level returns :math:`f(x, \sigma_{N-1})`. One evaluation per level: the grid
    ``[sigma_max, 0]`` is one-step generation. The re-noising adds
    :math:`\sigma_{i+1}^2 - \sigma_\text{min}^2` because :math:`\hat x_0` already lies at
    :math:`\sigma_\text{min}` (an exact consistency function of data :math:`p` maps to
    :math:`p * \mathcal N(0, \sigma_\text{min}^2 I)`); a level below :math:`\sigma_\text{min}`
    adds no noise.

    Args:
        sigma_min: the consistency function's boundary level :math:`\sigma_\text{min}`.
    """

    sigma_min: float = 0.002
    stochastic = True

    def step(self, ctx: StepContext, x, state):
        denoised = ctx.denoise(x, ctx.sigma)
        var = jnp.maximum(ctx.sigma_next**2 - jnp.asarray(self.sigma_min, x.dtype) ** 2, 0.0)
        return denoised + jnp.sqrt(var).astype(x.dtype) * ctx.noise(0), state


def _check_levels(sigmas) -> Float[Array, " L"]:
    """A concrete grid must be positive and strictly decreasing, then at most one 0."""
    sigmas = as_float(sigmas)
    if sigmas.ndim != 1:
        raise ValueError(f"sigmas must be one-dimensional; got shape {sigmas.shape}.")
    if is_concrete(sigmas):
        s = np.asarray(sigmas)
        s = s[:-1] if s.shape[0] and s[-1] == 0 else s
        if s.shape[0] < 2:
            raise ValueError("sigmas must hold at least two positive levels.")
        if not (np.all(s > 0) and np.all(np.diff(s) < 0)):
            raise ValueError("sigmas must be positive and strictly decreasing (then maybe a 0).")
    return sigmas


def consistency_distillation_loss(
    student: Callable,
    target_student: Callable,
    teacher: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    sigmas: Float[ArrayLike, " L"],
    solver: AbstractSolver,
    *,
    metric: str = "pseudo_huber",
    weight: Callable | None = None,
    level_sampling: str = "uniform",
    p_mean: float = -1.1,
    p_std: float = 2.0,
) -> Float[Array, ""]:
    r"""Consistency distillation ("Consistency Models", Algorithm 2).

    For each sample, a pair of adjacent levels :math:`\sigma_{n+1} > \sigma_n` of the grid is drawn
    (uniformly, or with iCT's lognormal interval probabilities), :math:`x_{n+1} = x_0 + \sigma_{n+1}z`, and :math:`\hat x_n` is one step of
    ``solver`` from :math:`\sigma_{n+1}` to :math:`\sigma_n` on the teacher's probability-flow ODE
    (:func:`jaxsolve.diffusion.sample` on the grid :math:`[\sigma_{n+1}, \sigma_n, 0]` with
    ``n_steps=1``). The loss is

    .. math::

        \mathbb E\;\lambda(\sigma_{n+1}, \sigma_n)\,
        d\big(f_\theta(x_{n+1}, \sigma_{n+1}),\;
        \operatorname{sg} f_{\theta^-}(\hat x_n, \sigma_n)\big),

    with :math:`\operatorname{sg}` the stop-gradient and :math:`f_{\theta^-}` the target (EMA)
    network. The teacher's step is not differentiated either.

    Args:
        student: the consistency function :math:`f_\theta(x, \sigma)` being trained (called on the
            batch with one level per sample), e.g. a :class:`ConsistencyFunction`.
        target_student: the target :math:`f_{\theta^-}` (an EMA of the student, or the student).
        teacher: a denoiser ``(x, sigma) -> x0_hat`` (a trained model or an exact oracle).
        x0: data, ``(batch, ...)``.
        key: PRNG key (levels and noise).
        sigmas: the discretisation, positive and strictly decreasing (a trailing 0, as grids of
            :mod:`jaxsolve.diffusion` have, is dropped), e.g. ``karras_sigmas(N, 0.002, 80)``.
        solver: any deterministic jaxsolve solver, e.g. ``Heun()`` (the paper's) or ``Euler()``.
        metric: ``"pseudo_huber"`` (:func:`~jaxsolve.diffusion.pseudo_huber`, "Improved
            Techniques for Training Consistency Models") or ``"l2"`` (mean squared error per
            element).
        weight: optional :math:`\lambda(\sigma_{n+1}, \sigma_n)` on per-sample levels; 1 by
            default (e.g. ``lambda s, t: 1 / (s - t)`` for iCT's weighting).
        level_sampling: ``"uniform"`` (the paper's) or ``"lognormal"``: the interval
            :math:`[\sigma_n, \sigma_{n+1}]` with probability
            :func:`~jaxsolve.diffusion.fewstep.ict_level_probabilities` (its mass under
            :math:`\ln\sigma\sim\mathcal N(P_\text{mean}, P_\text{std}^2)`; "Improved
            Techniques for Training Consistency Models").
        p_mean, p_std: the lognormal of ``level_sampling="lognormal"``.

    Returns:
        The scalar loss, averaged over the batch.
    """
    check_choice("metric", metric, {"pseudo_huber", "l2"})
    check_choice("level_sampling", level_sampling, {"uniform", "lognormal"})
    check_positive("p_std", p_std)
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"solver must be a jaxsolve sampler (AbstractSolver); got {type(solver).__name__}."
        )
    if solver.stochastic or solver.adaptive:
        raise ValueError(
            f"solver must take one deterministic step per interval; {type(solver).__name__} is "
            + ("stochastic." if solver.stochastic else "adaptive.")
        )
    x0 = as_float(x0)
    levels = _check_levels(sigmas).astype(x0.dtype)
    parts = (student, target_student, teacher, solver, weight)
    loss = _distillation_loss_jit if hashable(*parts) else _distillation_loss
    lognormal = (float(p_mean), float(p_std)) if level_sampling == "lognormal" else None
    return loss(
        student, target_student, teacher, x0, key, levels, solver, metric, weight, lognormal
    )


def ict_level_probabilities(
    levels: Float[Array, " L"], num_levels, p_mean: float = -1.1, p_std: float = 2.0
) -> Float[Array, " L-1"]:
    r"""iCT's lognormal level sampling: :math:`P(\sigma_i, \sigma_{i+1})` on a monotone grid.

    :math:`\propto \big|\operatorname{erf}\frac{\ln\sigma_{i+1} - P_\text{mean}}{\sqrt2
    P_\text{std}} - \operatorname{erf}\frac{\ln\sigma_i - P_\text{mean}}{\sqrt2
    P_\text{std}}\big|` ("Improved Techniques for Training Consistency Models"), for the first
    ``num_levels - 1`` intervals (0 for the padding beyond, which may hold zeros).
    """
    cdf = jax.scipy.special.erf((jnp.log(levels) - p_mean) / (np.sqrt(2.0) * p_std))
    mass = jnp.abs(cdf[1:] - cdf[:-1]) * (jnp.arange(levels.shape[0] - 1) < num_levels - 1)
    return mass / jnp.sum(mass)


def draw_intervals(key, probs, batch, num_intervals) -> Array:
    """``batch`` interval indices drawn with ``probs`` (the first ``num_intervals`` drawable)."""
    # Inverse-CDF sampling: one uniform per sample and a binary search, where
    # jax.random.categorical draws one Gumbel per level per sample (iCT: 1281 levels), which
    # dominated a small network's training step. The padding has probability 0; clipping to the
    # last drawable interval guards against the cumulative sum's round-off at 1.
    cdf = jnp.cumsum(probs)
    u = jax.random.uniform(key, (batch,), cdf.dtype)
    return jnp.minimum(jnp.searchsorted(cdf, u * cdf[-1], side="right"), num_intervals - 1)


def consistency_distance(diff: Float[Array, "batch ..."], metric: str) -> Float[Array, " batch"]:
    """Per-sample distance of a consistency loss: ``"pseudo_huber"`` or ``"l2"`` (mean square)."""
    if metric == "pseudo_huber":
        return pseudo_huber(diff)
    return jnp.mean(diff.reshape(diff.shape[0], -1) ** 2, axis=1)


def _distillation_loss(
    student, target_student, teacher, x0, key, levels, solver, metric, weight, lognormal
):
    # Pairs of adjacent *positive* levels; counted, not sliced, so that a traced grid ending in 0
    # works too.
    num_positive = jnp.sum(levels > 0)
    levels = eqx.error_if(levels, num_positive < 2, "sigmas must hold two positive levels.")
    batch = x0.shape[0]
    k_n, k_z = jax.random.split(key)
    if lognormal is None:
        n = jax.random.randint(k_n, (batch,), 0, num_positive - 1)
    else:  # interval n is [levels[n + 1], levels[n]]; a trailing 0 is masked as padding
        probs = ict_level_probabilities(levels, num_positive, *lognormal)
        n = draw_intervals(k_n, probs, batch, num_positive - 1)
    sigma_hi, sigma_lo = levels[n], levels[n + 1]
    x_hi = x0 + expand_to(sigma_hi, x0) * jax.random.normal(k_z, x0.shape, x0.dtype)

    def teacher_step(x, s_hi, s_lo):
        grid = jnp.stack([s_hi, s_lo, jnp.zeros_like(s_hi)])
        return sample(teacher, x[None], grid, solver, n_steps=1)[0]

    x_lo = jax.lax.stop_gradient(jax.vmap(teacher_step)(x_hi, sigma_hi, sigma_lo))
    target = jax.lax.stop_gradient(target_student(x_lo, sigma_lo))
    dist = consistency_distance(student(x_hi, sigma_hi) - target, metric)
    w = 1.0 if weight is None else weight(sigma_hi, sigma_lo)
    return jnp.mean(w * dist)


# Compiled as one program: run op by op, the per-sample vmap of the driver compiles each primitive
# separately. (Callables whose non-array parts cannot be hashed run uncompiled, as in ``sample``.)
_distillation_loss_jit = eqx.filter_jit(_distillation_loss)
