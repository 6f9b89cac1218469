r"""MeanFlow: one-step generation by learning the average velocity of a flow.

"Mean Flows for One-step Generative Modeling" (Geng, Deng, Bai, Kolter & He); the flow-map view
is that of "Decoupled MeanFlow".

Orientation as :mod:`jaxsolve.diffusion._flow_matching` (and
:class:`~jaxsolve.diffusion.FlowSchedule`): data :math:`x` at :math:`t = 0`, noise :math:`e` at
:math:`t = 1`, :math:`z_t = (1-t)\,x + t\,e`, conditional velocity :math:`e - x`, and the marginal
(instantaneous) velocity :math:`v(z, t) = \mathbb E[e - x \mid z_t = z]`. Sampling runs from
:math:`t = 1` down to :math:`t = 0`.

The **average velocity** between times :math:`r \le t` along the ODE trajectory
:math:`\dot z_s = v(z_s, s)` through :math:`z_t` is

.. math::
    u(z_t, r, t) = \frac{1}{t - r}\int_r^t v(z_s, s)\,\mathrm ds = \frac{z_t - z_r}{t - r},

so one step :math:`z_r = z_t - (t - r)\,u(z_t, r, t)` is the exact flow map, and
:math:`u(z, t, t) = v(z, t)`. Differentiating :math:`(t - r)\,u(z_t, r, t) = z_t - z_r` in
:math:`t` along the trajectory (:math:`z_r` does not move) gives the **MeanFlow identity**

.. math::
    u(z_t, r, t) = v(z_t, t) - (t - r)\,\frac{\mathrm d}{\mathrm dt}u(z_t, r, t),\qquad
    \frac{\mathrm d}{\mathrm dt}u = v\,\partial_z u + \partial_t u,

whose total derivative is one forward-mode product: ``jax.jvp`` of :math:`u` at
:math:`(z, r, t)` with tangents :math:`(v, 0, 1)`. Training regresses :math:`u_\theta` on the
stop-gradient target :math:`u_\text{tgt} = v - (t - r)\,(v\,\partial_z u_\theta + \partial_t u_\theta)`
with the conditional velocity :math:`v = e - x` in place of the marginal one (the residual then has
zero conditional mean at the exact :math:`u`, as in flow matching).

The network convention is that of :func:`~jaxsolve.diffusion.flow_matching_loss`: ``u_fn(z, r, t)``
is called on the batch, ``z`` of shape ``(batch, ...)`` and ``r``, ``t`` of shape ``(batch,)``,
and returns an array shaped like ``z``. A per-sample network ``f(z, r, t)`` (``z`` one sample,
``r``, ``t`` scalars) becomes one with ``jax.vmap(f)``.

Sampling: :func:`meanflow_sample` makes a few jumps on a descending time grid from exactly
:math:`t = 1` (the paper's sampler). :class:`MeanFlowSolver` makes the same jumps on the
:func:`~jaxsolve.diffusion.sample` driver, between the grid's VE levels mapped to flow time by
:class:`~jaxsolve.diffusion.FlowSchedule` (:math:`t = \sigma/(1+\sigma)`); the VE state cannot hold
:math:`t = 1` (:math:`\sigma = \infty`), so there the first level is :math:`t_\max < 1`. The
driver's denoiser sees one noise level per call while a jump needs both of its ends, so the solver
holds the two-time model itself and counts each call as one evaluation; pass
:func:`meanflow_denoiser` (the instantaneous velocity :math:`u(z, t, t)` as a denoiser) as the
driver's denoiser, which any other solver can also integrate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_choice, check_positive, expand_to, is_concrete
from .._adapters import from_flow
from .._flow_matching import logit_normal_times
from .._schedules import FlowSchedule
from .._solvers._base import AbstractSolver


def meanflow_times(
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    *,
    times: str | Callable = "logit_normal",
    time_mean: float = -0.4,
    time_std: float = 1.0,
    fraction_distinct: float = 0.25,
) -> tuple[Float[Array, "..."], Float[Array, "..."]]:
    r"""Draws the pair :math:`(r, t)` with :math:`0 \le r \le t \le 1` for the MeanFlow loss.

    Two independent times are drawn, :math:`t` is the larger and :math:`r` the smaller; then
    :math:`r` is set to :math:`t` except with probability ``fraction_distinct`` (so that fraction of
    the batch trains the average velocity and the rest is plain flow matching, :math:`u(z,t,t)=v`).
    The defaults are the paper's best ImageNet ablation: logit-normal times
    :math:`\mathrm{sigmoid}(\mathcal N(-0.4, 1))` and 25% of pairs with :math:`r \ne t`.

    Args:
        key: PRNG key.
        shape: the shape of ``r`` and ``t`` (usually ``(batch,)``).
        times: ``"logit_normal"``, ``"uniform"``, or a callable ``times(key, shape)`` in [0, 1].
        time_mean, time_std: the logit-normal's location and scale.
        fraction_distinct: probability of keeping :math:`r < t`, in [0, 1].
    """
    if not callable(times):
        check_choice("times", times, {"logit_normal", "uniform"})
    check_positive("time_std", time_std)
    if not 0.0 <= float(fraction_distinct) <= 1.0:
        raise ValueError(f"fraction_distinct must lie in [0, 1], got {fraction_distinct}.")
    k_a, k_b, k_keep = jax.random.split(key, 3)

    def draw(k):
        if callable(times):
            return as_float(times(k, shape))
        if times == "uniform":
            return jax.random.uniform(k, shape, dtype=as_float(0.0).dtype)
        return as_float(logit_normal_times(k, shape, time_mean, time_std))

    a, b = draw(k_a), draw(k_b)
    t = jnp.maximum(a, b)
    r = jnp.minimum(a, b)
    keep = jax.random.uniform(k_keep, shape) < fraction_distinct
    return jnp.where(keep, r, t), t


def meanflow_target(
    u_fn: Callable,
    z: Float[ArrayLike, "batch ..."],
    r: Float[Array, " batch"],
    t: Float[Array, " batch"],
    v: Float[Array, "batch ..."],
) -> tuple[Float[Array, "batch ..."], Float[Array, "batch ..."]]:
    r"""The average velocity and its MeanFlow target: ``(u, u_tgt)``.

    :math:`u = u(z, r, t)` and :math:`u_\text{tgt} = v - (t - r)\,\frac{\mathrm d}{\mathrm dt}u`
    with :math:`\frac{\mathrm d}{\mathrm dt}u = v\,\partial_z u + \partial_t u`, both from one
    ``jax.jvp`` of ``u_fn`` at ``(z, r, t)`` with tangents ``(v, 0, 1)``. No stop-gradient is
    applied here (:func:`meanflow_loss` applies it); at the exact average velocity of the flow
    whose velocity is ``v``, ``u == u_tgt``.

    Args:
        u_fn: ``u_fn(z, r, t)`` on the batch (see the module).
        z: states :math:`z_t`, ``(batch, ...)``.
        r, t: times, ``(batch,)``, :math:`r \le t`.
        v: the velocity at :math:`(z, t)` used both as the tangent and in the target.
    """
    z = as_float(z)
    r = jnp.asarray(r, z.dtype)
    t = jnp.asarray(t, z.dtype)
    v = jnp.asarray(v, z.dtype)
    u, du_dt = jax.jvp(u_fn, (z, r, t), (v, jnp.zeros_like(r), jnp.ones_like(t)))
    return u, v - expand_to(t - r, z) * du_dt


def meanflow_loss(
    u_fn: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    *,
    noise: Float[ArrayLike, "batch ..."] | None = None,
    velocity: Callable | None = None,
    times: str | Callable = "logit_normal",
    time_mean: float = -0.4,
    time_std: float = 1.0,
    fraction_distinct: float = 0.25,
    power: float = 1.0,
    c: float = 1e-3,
) -> Float[Array, ""]:
    r"""The MeanFlow loss with adaptive weighting.

    With :math:`(r, t)` from :func:`meanflow_times`, :math:`e` the noise,
    :math:`z_t = (1-t)x_0 + t e` and :math:`v = e - x_0` (or ``velocity(z_t, t)`` when given),
    :math:`\Delta = u_\theta(z_t, r, t) - \mathrm{sg}(u_\text{tgt})` (:func:`meanflow_target`), and
    the loss is the batch mean of

    .. math::
        \mathrm{sg}(w)\,\lVert\Delta\rVert^2,\qquad w = 1/(\lVert\Delta\rVert^2 + c)^p,

    :math:`\lVert\cdot\rVert^2` the squared norm of each sample (summed over its elements).
    ``power = 0`` is the plain squared error; the paper uses :math:`p = 1`, :math:`c = 10^{-3}`.

    Args:
        u_fn: ``u_fn(z, r, t)`` on the batch (see the module).
        x0: data, ``(batch, ...)``.
        key: PRNG key (times, and the noise when ``noise`` is not given).
        noise: the noise paired with ``x0`` (default fresh standard normal).
        velocity: optional ``velocity(z, t)`` (batched, ``t`` of shape ``(batch,)``) to use in place
            of the conditional :math:`e - x_0`, e.g. a teacher's marginal velocity (distillation);
            the loss is then zero at the exact average velocity of that flow.
        times, time_mean, time_std, fraction_distinct: see :func:`meanflow_times`.
        power: :math:`p \ge 0` of the adaptive weight.
        c: :math:`c > 0` of the adaptive weight.
    """
    check_positive("power", power, allow_zero=True)
    check_positive("c", c)
    x0 = as_float(x0)
    if noise is not None and jnp.shape(noise) != x0.shape:
        raise ValueError(f"noise has shape {jnp.shape(noise)}, expected x0's {x0.shape}.")
    k_t, k_n = jax.random.split(key)
    if noise is None:
        noise = jax.random.normal(k_n, x0.shape, x0.dtype)
    noise = jnp.asarray(noise, x0.dtype)
    r, t = meanflow_times(
        k_t,
        x0.shape[:1],
        times=times,
        time_mean=time_mean,
        time_std=time_std,
        fraction_distinct=fraction_distinct,
    )
    r, t = r.astype(x0.dtype), t.astype(x0.dtype)
    tt = expand_to(t, x0)
    z = (1.0 - tt) * x0 + tt * noise
    v = noise - x0 if velocity is None else jnp.asarray(velocity(z, t), x0.dtype)
    u, u_tgt = meanflow_target(u_fn, z, r, t, v)
    delta = u - jax.lax.stop_gradient(u_tgt)
    sq = jnp.sum(delta.reshape(delta.shape[0], -1) ** 2, axis=1)
    weight = jax.lax.stop_gradient(1.0 / (sq + c) ** power)
    return jnp.mean(weight * sq)


def meanflow_sample(
    u_fn: Callable,
    noise: Float[ArrayLike, "batch ..."],
    times: Sequence[float] | Float[Array, " L"] = (1.0, 0.0),
) -> Float[Array, "batch ..."]:
    r"""Few-step MeanFlow sampling: :math:`z_{t_{k+1}} = z_{t_k} - (t_k - t_{k+1})\,u(z_{t_k}, t_{k+1}, t_k)`.

    Starts from :math:`z_{t_0} = ` ``noise`` (at :math:`t_0 = 1` this is exactly the path's noise
    end) and jumps down the grid; the default ``(1, 0)`` is the one-step sampler. With the exact
    average velocity each jump is the exact flow map, so any grid gives the same samples.

    Args:
        u_fn: ``u_fn(z, r, t)`` on the batch (see the module).
        noise: the state at ``times[0]``, ``(batch, ...)``.
        times: a strictly decreasing grid in [0, 1] (concrete), at least two levels.
    """
    z = as_float(noise)
    grid = jnp.asarray(times, z.dtype)
    if grid.ndim != 1 or grid.shape[0] < 2:
        raise ValueError(
            f"times must be a 1-D grid of at least two levels, got shape {grid.shape}."
        )
    if is_concrete(grid):
        g = np.asarray(grid)
        if (g[1:] >= g[:-1]).any() or (g < 0).any() or (g > 1).any():
            raise ValueError(f"times must decrease strictly within [0, 1], got {g}.")
    batch = z.shape[:1]

    def jump(z, ends):
        t, r = ends
        u = u_fn(z, jnp.full(batch, r, z.dtype), jnp.full(batch, t, z.dtype))
        return z - (t - r) * jnp.asarray(u, z.dtype), None

    z, _ = jax.lax.scan(jump, z, (grid[:-1], grid[1:]))
    return z


def meanflow_denoiser(u_fn: Callable, schedule: FlowSchedule | None = None):
    """The instantaneous velocity :math:`v(z, t) = u(z, t, t)` of a MeanFlow model as a VE denoiser
    (:func:`~jaxsolve.diffusion.from_flow`): the driver's denoiser for :class:`MeanFlowSolver`,
    and a flow model every other solver can integrate."""
    schedule = FlowSchedule() if schedule is None else schedule
    return from_flow(_InstantaneousVelocity(u_fn), schedule)


class _InstantaneousVelocity(eqx.Module):
    """``v(z, t) = u(z, t, t)``, a scalar ``t`` spread over the batch (``u_fn``'s convention).
    A module rather than a closure, so that equal models give equal (cached) sampling programs."""

    u_fn: Callable

    def __call__(self, z, t):
        t = jnp.asarray(t, z.dtype)
        if t.ndim == 0:
            t = jnp.full(z.shape[:1], t)
        return self.u_fn(z, t, t)


class MeanFlowSolver(AbstractSolver):
    r"""MeanFlow jumps on the :func:`~jaxsolve.diffusion.sample` driver.

    From level :math:`\sigma` to :math:`\sigma_n` (flow times :math:`t`, :math:`r` by
    ``schedule``), in flow scale :math:`z = \alpha x`:
    :math:`z_r = z_t - (t - r)\,u(z_t, r, t)`; the final step is the jump to :math:`r = 0`, where
    :math:`x = z`. One evaluation of ``average_velocity`` per step (the driver's own denoiser is not
    called). With the exact average velocity every grid gives the exact flow map from the first
    level. Start the driver at that level's VE state :math:`x = z_{t_0}/(1 - t_0)`; from noise,
    :math:`\sigma_0\,e` (as :func:`~jaxsolve.diffusion.generate` does, which drops
    the data term :math:`(1-t_0)\,x_0` of :math:`z_{t_0}`).

    Args:
        average_velocity: ``u_fn(z, r, t)`` on the batch (see :mod:`the module
            <jaxsolve.diffusion.fewstep._meanflow>`); ``r``, ``t`` are shaped like the state's
            batch axes.
        schedule: a :class:`~jaxsolve.diffusion.FlowSchedule` (the linear path).
    """

    average_velocity: Callable
    schedule: FlowSchedule = eqx.field(default_factory=FlowSchedule)

    def _jump(self, ctx, x, r):
        sch = self.schedule
        t = sch.from_ve_sigma(ctx.sigma)
        z = sch.alpha_from_ve_sigma(ctx.sigma) * x
        batch = x.shape[: ctx.batch_ndim]
        u = self.average_velocity(z, jnp.full(batch, r, x.dtype), jnp.full(batch, t, x.dtype))
        ctx.add_evaluations(1)
        return z - (t - r) * jnp.asarray(u, x.dtype)

    def step(self, ctx, x, state):
        sch = self.schedule
        z_r = self._jump(ctx, x, sch.from_ve_sigma(ctx.sigma_next))
        return z_r / sch.alpha_from_ve_sigma(ctx.sigma_next), state

    def final_step(self, ctx, x, state):
        return self._jump(ctx, x, jnp.zeros((), x.dtype)), state
