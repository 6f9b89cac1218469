r"""Exact log-likelihood of a diffusion or flow model through its probability-flow ODE.

A denoiser :math:`D(x, s) \approx \mathbb E[x_0 \mid x_0 + s\epsilon = x]` (the form of
:mod:`jaxsolve.diffusion`, variance-exploding scale) defines the probability-flow ODE

.. math:: \frac{\mathrm{d}x}{\mathrm{d}s} = \frac{x - D(x, s)}{s}
   \quad\Longleftrightarrow\quad
   \frac{\mathrm{d}x}{\mathrm{d}u} = x - D(x, e^u) =: g(x, u), \qquad u = \log s,

("Score-Based Generative Modeling through Stochastic Differential Equations";
"Elucidating the Design Space of Diffusion-Based Generative Models").
The flow is integrated in :math:`u = \log s`, where it is well conditioned from
:math:`s_{\min} = 10^{-3}` to :math:`s_{\max} = 10^2`.

**What is computed.** Push a prior :math:`\pi` at :math:`s_{\max}` backwards through the model's
flow; the density this induces at :math:`s_{\min}` is the model's *probability-flow density*
:math:`q_{s_{\min}}`. By the instantaneous change of variables ("Neural Ordinary Differential
Equations"), along a trajectory
:math:`\mathrm{d}\log q_u(x(u))/\mathrm{d}u = -\nabla\!\cdot g = -(d - \nabla\!\cdot D)`, so

.. math:: \log q_{s_{\min}}(x) = \log \pi(x(s_{\max}))
   + \int_{\log s_{\min}}^{\log s_{\max}} \big(d - \nabla_x\!\cdot D(x(u), e^u)\big)\,\mathrm{d}u,

with :math:`x(s_{\min}) = x`. The default prior is :math:`\mathcal N(0, s_{\max}^2 I)`; passing
the exact noised marginal :math:`p_{s_{\max}}` as ``prior`` removes the prior mismatch, and then
for the exact denoiser of a distribution :math:`q_{s_{\min}} = p_{s_{\min}}` exactly. This is a
density of the *noised* data at level :math:`s_{\min}` (a continuous density, not a discrete
likelihood; dequantisation for discrete data is the caller's business).

**Divergence** (see :mod:`._divergence`). ``divergence="exact"``: :math:`\nabla\!\cdot D =
\operatorname{tr}\partial_x D` from :math:`d` Jacobian-vector products (small :math:`d`).
``"hutchinson"``: the unbiased estimate :math:`\frac1K\sum_k \varepsilon_k^\top \partial_x
D\,\varepsilon_k` with Rademacher or Gaussian probes held fixed along the trajectory ("FFJORD:
Free-form Continuous Dynamics for Scalable Reversible Generative Models"): the log-likelihood
estimate is linear in the divergence estimates along one fixed trajectory, so it is unbiased (up
to the solver's error).

**Flow and VP models.** With a ``schedule`` (from :mod:`jaxsolve.diffusion`), ``x`` is a sample
in the model's own scale at time ``t_min``, :math:`x_t = \alpha(t) x_{ve}`; the noise range is
:math:`s(t_{\min})..s(t_{\max})` and :math:`\log q_t(x_t) = \log q_{s}(x_t/\alpha) - d\log\alpha`.
The default prior :math:`\mathcal N(0, s_{\max}^2 I)` in VE scale is
:math:`\mathcal N(0, \sigma(t_{\max})^2 I)` in the model's scale (VP: about :math:`\mathcal N(0, I)`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import RESULTS, as_float, check_sigma_range, is_concrete
from ._divergence import AbstractDivergence, as_divergence
from ._driver import integrate, maybe_throw, solver_setup


class LogLikelihood(eqx.Module):
    r"""Result of :func:`log_likelihood`, one entry per sample.

    ``log_prob`` = ``prior_log_prob`` + ``delta_log_prob`` (+ the schedule's scale term
    :math:`-d\log\alpha(t_{\min})` when a schedule is used), and NaN for a sample whose ``result``
    is not successful (only seen with ``throw=False``); ``latent`` is :math:`x(s_{\max})` in VE
    scale; ``nfe`` counts evaluations of the augmented field (each is one denoiser pass plus the
    Jacobian-vector products of the divergence).
    """

    log_prob: Float[Array, " n"]
    prior_log_prob: Float[Array, " n"]
    delta_log_prob: Float[Array, " n"]
    latent: Float[Array, "n ..."]
    nfe: Int[Array, " n"]
    num_steps: Int[Array, " n"]
    result: RESULTS
    sigma_min: Float[Array, ""]
    sigma_max: Float[Array, ""]


def gaussian_prior_log_prob(
    z: Float[Array, "n ..."], sigma_max: Float[ArrayLike, ""]
) -> Float[Array, " n"]:
    r""":math:`\log\mathcal N(z; 0, s_{\max}^2 I)` of each sample ``z[i]``."""
    d = math.prod(z.shape[1:])
    sq = jnp.sum(z.reshape(z.shape[0], -1) ** 2, axis=-1)
    return -0.5 * sq / sigma_max**2 - 0.5 * d * jnp.log(2.0 * jnp.pi * sigma_max**2)


class _FlowField(eqx.Module):
    """:math:`u \\mapsto (x - D(x, e^u),\\ d - \\widehat{\\nabla\\cdot D})` for one sample."""

    denoiser: Callable
    trace: Callable = eqx.field(static=True)  # an AbstractDivergence's estimator()

    def __call__(self, u, state, probes):
        x, _ = state
        sigma = jnp.exp(u)

        def denoise(y):
            return self.denoiser(y[None], sigma)[0].astype(y.dtype)

        d0, tangent = jax.linearize(denoise, x)
        div = self.trace(tangent, x, probes)
        return x - d0, jnp.asarray(x.size, x.dtype) - div


def log_likelihood(
    denoiser: Callable,
    x: Float[ArrayLike, "n ..."],
    *,
    sigma_min: Float[ArrayLike, ""] | None = None,
    sigma_max: Float[ArrayLike, ""] | None = None,
    schedule=None,
    t_min: Float[ArrayLike, ""] | None = None,
    t_max: Float[ArrayLike, ""] | None = None,
    prior: Callable | None = None,
    divergence: str | AbstractDivergence = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    key: PRNGKeyArray | None = None,
    solver: dfx.AbstractSolver | None = None,
    stepsize_controller: dfx.AbstractStepSizeController | None = None,
    adjoint: dfx.AbstractAdjoint | None = None,
    dt0: float | None = None,
    max_steps: int = 4096,
    throw: bool = True,
) -> LogLikelihood:
    r"""Log-density :math:`\log q_{s_{\min}}(x)` of the model's probability-flow ODE, per sample.

    ``denoiser(x, sigma) -> x0_hat`` in VE scale (called with a batch of one and a scalar sigma).
    ``x`` has shape ``(n, *event_shape)``; each sample is its own adaptive solve (so a sample's
    value does not depend on the batch), and sample ``i`` draws its Hutchinson probes from
    ``fold_in(key, i)``.

    Noise range: ``sigma_min``/``sigma_max`` (VE levels), or ``schedule`` with optional
    ``t_min``/``t_max`` (defaults: the schedule's), in which case ``x`` is in the model's own scale
    at ``t_min``. ``prior(z, sigma_max) -> (n,)`` is the log-density at the top in VE scale
    (default :math:`\mathcal N(0, s_{\max}^2 I)`; an oracle's ``log_prob`` gives the exact noised
    marginal). ``divergence``: ``"exact"`` (:class:`ExactDivergence`), ``"hutchinson"``
    (:class:`HutchinsonDivergence` with ``probe``: ``"rademacher"`` or ``"gaussian"`` and
    ``n_probes`` per sample), or an estimator object; a random one needs ``key``. Solver
    defaults: Tsit5 with a PID controller at ``rtol = atol = 1e-5``; gradients with respect to the
    denoiser's parameters go through ``adjoint`` (default ``RecursiveCheckpointAdjoint``).

    Failures: a sample whose solve fails gets a non-successful ``result`` (``max_steps_reached``;
    ``nonfinite`` as soon as its state or the denoiser's output is not finite, after one step, not
    ``max_steps``) and ``log_prob`` NaN (a failed sample has no density, and -inf would read as
    "zero density"). ``throw=True`` (the default: a density is never meant to fail) raises
    instead; pass ``throw=False`` to read the codes. ``sigma_min``/``sigma_max`` (or ``t_min``/
    ``t_max``) that are traced are checked when the compiled code runs, concrete ones now.
    """
    divergence = as_divergence(divergence, probe, n_probes)
    _check_callables(denoiser, prior, throw)
    x, sigma_min, sigma_max, log_scale = _ve_problem(
        x, sigma_min, sigma_max, schedule, t_min, t_max
    )
    solver, stepsize_controller, adjoint = solver_setup(
        solver, stepsize_controller, adjoint, max_steps, dt0, rtol=1e-5, atol=1e-5
    )
    if divergence.needs_key and key is None:
        raise ValueError(f"divergence={divergence!r} draws random probes: pass key=.")
    _check_prior(prior, x, sigma_max)
    _check_denoiser_output(denoiser, x, sigma_min)
    probes = divergence.probes(key, x.shape[0], x.shape[1:], x.dtype)
    setup = dict(
        solver=solver,
        stepsize_controller=stepsize_controller,
        adjoint=adjoint,
        dt0=dt0,
        max_steps=max_steps,
    )
    latent, delta, nfe, num_steps, result = _solve_flows(
        denoiser, x, probes, sigma_min, sigma_max, divergence.estimator(), setup
    )
    if prior is None:
        prior_lp = gaussian_prior_log_prob(latent, sigma_max)
    else:
        prior_lp = as_float(prior(latent, sigma_max)).astype(x.dtype)
    failed = jnp.where(result == RESULTS.successful, 0.0, jnp.nan).astype(x.dtype)
    # Added, not selected, so that a gradient still flows through every sample's value.
    log_prob = maybe_throw(result, prior_lp + delta + log_scale + failed, throw)
    return LogLikelihood(
        log_prob=log_prob,
        prior_log_prob=prior_lp,
        delta_log_prob=delta,
        latent=latent,
        nfe=nfe,
        num_steps=num_steps,
        result=result,
        sigma_min=sigma_min,
        sigma_max=sigma_max,
    )


def _check_callables(denoiser, prior, throw):
    if not isinstance(throw, bool):
        raise TypeError(f"throw must be a bool; got {type(throw).__name__}.")
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma); got {type(denoiser)}.")
    if prior is not None and not callable(prior):
        raise TypeError(f"prior must be callable as prior(z, sigma_max); got {type(prior)}.")


def _ve_problem(x, sigma_min, sigma_max, schedule, t_min, t_max):
    """``(x, sigma_min, sigma_max, log_scale)`` in VE scale, checked: ``x`` divided by
    :math:`\\alpha(t_{\\min})` and ``log_scale`` :math:`= -d\\log\\alpha(t_{\\min})` with a schedule,
    ``x`` as given and ``log_scale`` 0 without."""
    for name, value in (("x", x), ("sigma_min", sigma_min), ("sigma_max", sigma_max)):
        if value is not None and jnp.iscomplexobj(value):
            # as_float would drop the imaginary part without a word.
            raise TypeError(f"{name} must be real; got dtype {jnp.result_type(value)}.")
    x = as_float(x)
    if x.ndim < 2:
        raise ValueError(f"x must have a batch axis, shape (n, *event_shape); got shape {x.shape}.")
    if schedule is not None:
        x, sigma_min, sigma_max, log_scale, names = _schedule_range(
            x, sigma_min, sigma_max, schedule, t_min, t_max
        )
    else:
        if sigma_min is None or sigma_max is None:
            raise ValueError("pass sigma_min= and sigma_max= (or a schedule=).")
        if t_min is not None or t_max is not None:
            raise ValueError("t_min=/t_max= are only meaningful with schedule=.")
        sigma_min = as_float(sigma_min).astype(x.dtype)
        sigma_max = as_float(sigma_max).astype(x.dtype)
        log_scale = jnp.zeros((), x.dtype)
        names = ("sigma_min", "sigma_max")
    if jnp.ndim(sigma_min) != 0 or jnp.ndim(sigma_max) != 0:
        raise ValueError(
            f"sigma_min and sigma_max must be scalars; got shapes {jnp.shape(sigma_min)} and "
            f"{jnp.shape(sigma_max)}."
        )
    sigma_min, sigma_max = _check_noise_range(sigma_min, sigma_max, names)
    return x, sigma_min, sigma_max, log_scale


def _schedule_range(x, sigma_min, sigma_max, schedule, t_min, t_max):
    """The VE noise range of ``schedule`` between ``t_min`` and ``t_max`` (default: its own), and
    ``x`` in VE scale with the log-density term of that change of scale."""
    if sigma_min is not None or sigma_max is not None:
        raise ValueError(
            "pass either schedule= (with optional t_min=/t_max=) or sigma_min=/sigma_max=, "
            "not both."
        )
    dtype = x.dtype
    t_min = schedule.t_min if t_min is None else t_min
    t_max = schedule.t_max if t_max is None else t_max
    sigma_min = as_float(schedule.to_ve_sigma(t_min)).astype(dtype)
    sigma_max = as_float(schedule.to_ve_sigma(t_max)).astype(dtype)
    alpha = as_float(schedule.alpha(t_min)).astype(dtype)
    log_scale = -math.prod(x.shape[1:]) * jnp.log(alpha)
    names = ("sigma_min (the schedule's sigma at t_min)", "sigma_max (its sigma at t_max)")
    return x / alpha, sigma_min, sigma_max, log_scale, names


def _check_prior(prior, x, sigma_max):
    if prior is None:
        return
    n = x.shape[0]
    out = jax.eval_shape(prior, jax.ShapeDtypeStruct(x.shape, x.dtype), sigma_max)
    if getattr(out, "shape", None) != (n,):
        raise ValueError(
            f"prior(z, sigma_max) must return one log-density per sample, shape ({n},); got "
            f"{getattr(out, 'shape', type(out))}."
        )


def _check_noise_range(sigma_min, sigma_max, names):
    """0 < sigma_min < sigma_max < inf: concrete values now (ValueError), traced ones when the
    compiled code runs (otherwise a swapped pair surfaces as diffrax's "(t1 - t0) * dt0 >= 0")."""
    if is_concrete((sigma_min, sigma_max)):
        check_sigma_range(sigma_min, sigma_max, names=names)
        if not np.isfinite(np.asarray(sigma_max)):
            raise ValueError(f"{names[1]} must be finite; got {np.asarray(sigma_max).item()!r}.")
        return sigma_min, sigma_max
    bad = ~((0 < sigma_min) & (sigma_min < sigma_max) & jnp.isfinite(sigma_max))
    message = f"{names[0]} must be positive and smaller than {names[1]}, which must be finite."
    return eqx.error_if((sigma_min, sigma_max), bad, message)


def _check_denoiser_output(denoiser, x, sigma):
    """The field calls ``denoiser`` on a batch of one: it must return that batch's shape (a
    wrong shape would otherwise fail inside the solver's arithmetic, or broadcast silently)."""
    one = jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype)
    try:
        out = eqx.filter_eval_shape(denoiser, one, jax.ShapeDtypeStruct((), x.dtype))
    except Exception as error:
        raise ValueError(
            f"denoiser(x, sigma) fails on a batch of one sample of x, shape {one.shape}: {error}"
        ) from error
    if not (
        hasattr(out, "shape") and out.shape == one.shape and jnp.issubdtype(out.dtype, jnp.floating)
    ):
        got = f"shape {out.shape}, dtype {out.dtype}" if hasattr(out, "shape") else repr(out)
        raise ValueError(
            f"denoiser(x, sigma) must return an array of x's shape: called with shape "
            f"{one.shape} it returned {got}."
        )


@eqx.filter_jit
def _solve_flows(denoiser, x, probes, sigma_min, sigma_max, trace, setup):
    """Every sample's augmented probability-flow ODE, each its own adaptive solve (compiled once
    per configuration; the prior and the probes stay outside so they do not multiply programs).
    ``setup`` holds :func:`integrate`'s solver, controller, adjoint, ``dt0`` and ``max_steps``."""
    dtype = x.dtype
    field = _FlowField(denoiser, trace)
    us = jnp.stack([jnp.log(sigma_min), jnp.log(sigma_max)])

    def solve_one(x_i, probes_i):
        raw = integrate(field, us, (x_i, jnp.zeros((), dtype)), probes_i, **setup)
        z, delta = raw.ys
        return z[-1], delta[-1], raw.nfe, raw.num_steps, raw.result

    return jax.vmap(solve_one)(x, probes)
