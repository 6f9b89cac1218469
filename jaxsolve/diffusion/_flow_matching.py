r"""Flow matching and rectified flow, with the training choices of "Improving the Training of
Rectified Flows" (Lee, Lin & Fanti).

Orientation as :class:`~jaxsolve.diffusion.FlowSchedule`: data at :math:`t = 0`, noise at
:math:`t = 1`, :math:`x_t = (1-t)x_0 + t x_1`, velocity target :math:`x_1 - x_0` (so a trained
``velocity(x_t, t)`` plugs into :func:`from_flow` and every sampler).

* Time distributions: uniform, logit-normal, and the paper's U-shaped density
  :math:`p(t)\propto\cosh(a(t-\tfrac12))` on :math:`[0, 1]` (``a = 4``), sampled by inverting its CDF
  :math:`F(t) = \tfrac12 + \sinh(a(t-\tfrac12))/(2\sinh(a/2))`.
* Metric: squared error, or the pseudo-Huber :math:`\sqrt{\lVert\delta\rVert^2 + c^2} - c` with
  :math:`c = 0.00054\sqrt{d}` (the constant of "Improved Techniques for Training Consistency Models",
  used by the paper in place of LPIPS-Huber on data without a perceptual network).
* Reflow ("Flow Straight and Fast"): couple noise with the samples a trained flow makes from it,
  then train again on those pairs; :func:`straightness` measures
  :math:`S = \int_0^1\mathbb E\lVert (Z_1 - Z_0) - \dot Z_t\rVert^2\,\mathrm dt` along the flow.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import as_float, check_choice, expand_to
from ._adapters import from_flow
from ._grids import time_uniform_sigmas
from ._sample import sample
from ._schedules import FlowSchedule
from ._solvers import FlowEuler, FlowHeun


def u_shaped_times(key: PRNGKeyArray, shape, a: float = 4.0) -> Float[Array, "..."]:
    """Draws from :math:`p(t)\\propto\\cosh(a(t-1/2))` on [0, 1] (inverse-CDF sampling)."""
    u = jax.random.uniform(key, shape)
    s = np.sinh(a / 2)
    return 0.5 + jnp.arcsinh((2.0 * u - 1.0) * s) / a


def logit_normal_times(key: PRNGKeyArray, shape, mean: float = 0.0, std: float = 1.0):
    """:math:`t = \\mathrm{sigmoid}(m + s\\,n)`, :math:`n\\sim\\mathcal N(0,1)`."""
    return jax.nn.sigmoid(mean + std * jax.random.normal(key, shape))


def _times(key, shape, times):
    if callable(times):
        return times(key, shape)
    check_choice("times", times, {"uniform", "u_shaped", "logit_normal"})
    if times == "uniform":
        return jax.random.uniform(key, shape)
    if times == "u_shaped":
        return u_shaped_times(key, shape)
    return logit_normal_times(key, shape)


def pseudo_huber(diff: Float[Array, "batch ..."], c: float | None = None) -> Float[Array, " batch"]:
    """Per-sample :math:`\\sqrt{\\lVert\\delta\\rVert^2 + c^2} - c`, default :math:`c = 0.00054\\sqrt d`."""
    flat = diff.reshape(diff.shape[0], -1)
    c = 0.00054 * np.sqrt(flat.shape[1]) if c is None else c
    return jnp.sqrt(jnp.sum(flat**2, axis=1) + c**2) - c


def flow_matching_loss(
    velocity: Callable,
    x0: Float[Array, "batch ..."],
    key: PRNGKeyArray,
    *,
    x1: Float[Array, "batch ..."] | None = None,
    times: str | Callable = "uniform",
    metric: str = "l2",
) -> Float[Array, ""]:
    """Conditional flow matching on the straight path from data ``x0`` to noise ``x1``.

    ``x1`` defaults to fresh Gaussian noise (independent coupling); pass the noise a reflow
    coupling pairs with ``x0``. ``velocity(x_t, t)`` is called on the batch with ``t`` of shape
    ``(batch,)``. ``metric`` is ``"l2"`` (mean squared error per element) or ``"pseudo_huber"``.
    """
    check_choice("metric", metric, {"l2", "pseudo_huber"})
    x0 = as_float(x0)
    k_t, k_n = jax.random.split(key)
    if x1 is None:
        x1 = jax.random.normal(k_n, x0.shape, x0.dtype)
    t = _times(k_t, x0.shape[:1], times).astype(x0.dtype)
    tt = expand_to(t, x0)
    x_t = (1.0 - tt) * x0 + tt * x1
    diff = velocity(x_t, t) - (x1 - x0)
    if metric == "pseudo_huber":
        return jnp.mean(pseudo_huber(diff))
    return jnp.mean(diff**2)


def _flow_grid(n_steps, t_max):
    return time_uniform_sigmas(
        FlowSchedule(t_min=1e-4, t_max=t_max), n_steps, t_min=1e-4, t_max=t_max
    )


def generate(
    velocity: Callable,
    noise: Float[Array, "batch ..."],
    n_steps: int = 50,
    *,
    t_max: float = 1.0 - 1e-3,
    solver=None,
):
    """Integrate a flow model from noise (``t = t_max``) to data with the sampling driver.

    The state starts at :math:`x_{t_\\max} \\approx t_\\max\\,\\text{noise}` (the data term
    :math:`(1-t_\\max)x_0` is dropped), i.e. VE state :math:`\\sigma_\\max\\,\\text{noise}`.
    """
    schedule = FlowSchedule(t_min=1e-4, t_max=t_max)
    grid = _flow_grid(n_steps, t_max)
    denoiser = from_flow(velocity, schedule)
    return sample(denoiser, grid[0] * as_float(noise), grid, solver or FlowHeun(schedule=schedule))


def reflow_pairs(velocity: Callable, key: PRNGKeyArray, shape, n_steps: int = 50):
    """A reflow coupling: noise and the flow's samples from it, ``(data_like, noise)``."""
    noise = jax.random.normal(key, shape)
    return generate(velocity, noise, n_steps), noise


def straightness(
    velocity: Callable,
    noise: Float[Array, "batch ..."],
    n_steps: int = 100,
    *,
    t_max: float = 1.0 - 1e-3,
):
    """Straightness :math:`S` of the flow from ``noise``, on a uniform time grid (flow-Euler).

    :math:`S = \\frac1n\\sum_k\\mathbb E\\lVert (Z_0 - Z_{t_\\max})/(0 - t_\\max) - v(Z_{t_k}, t_k)\\rVert^2`
    along the trajectory integrated from :math:`t_\\max` down to 0; it is 0 for straight paths.
    """
    schedule = FlowSchedule(t_min=1e-4, t_max=t_max)
    grid = _flow_grid(n_steps, t_max)
    out = sample(
        from_flow(velocity, schedule),
        grid[0] * as_float(noise),
        grid,
        FlowEuler(schedule=schedule),
        full_output=True,
        save_trajectory=True,
    )
    xs = out.trajectory[:n_steps]  # VE states at the grid's positive levels
    ts = schedule.from_ve_sigma(grid[:n_steps])
    z = jax.vmap(lambda x, t: schedule.alpha(t) * x)(xs, ts)  # flow-scale states
    v = jax.vmap(lambda zk, tk: velocity(zk, jnp.full(zk.shape[:1], tk)))(z, ts)
    chord = (out.trajectory[n_steps] - z[0]) / (0.0 - ts[0])  # the final state is at t = 0
    dims = tuple(range(2, v.ndim))
    return jnp.mean(jnp.sum((chord[None] - v) ** 2, axis=dims))
