r"""Inversion: the probability-flow ODE run upward, from data to noise, and DDIB translation.

The probability-flow ODE in VE scale, :math:`\mathrm{d}x/\mathrm{d}\sigma = (x - D(x,\sigma))/\sigma`,
is integrated on an *increasing* grid :math:`0 \le s_0 < s_1 < \dots < s_m`, mapping a data point
to the latent a sampler would have started from. With the Euler step this is DDIM inversion
(DDIM's update in VE form is the Euler step of this ODE, "Denoising Diffusion Implicit Models");
Heun's step makes it second order.

**The step out of** :math:`\sigma = 0`. At zero noise the slope :math:`(x - D(x, 0))/0` cannot be
evaluated, so a grid starting at 0 takes its first step as diffusers' ``DDIMInverseScheduler``
does (its initial :math:`\bar\alpha = 1`): the noise estimate is taken at the first nonzero level,
:math:`x_{s_1} = x + s_1\,(x - D(x, s_1))/s_1 = 2x - D(x, s_1)`, one model evaluation, for every
method. Its local error is :math:`O(s_1^2)`, and sampling's last step :math:`D(\cdot, s_1)` undoes
it to :math:`O(s_1^4)` on a Gaussian. A grid starting at a positive :math:`s_0` treats ``x`` as the
state at :math:`s_0` and takes the method's own step throughout: this is DDIB's inversion
(guided-diffusion's ``ddim_reverse_sample``, which places the data at the first discrete level and
evaluates the model at the current level of each step, as Euler does).

**Grids.** ``invert`` takes the sampling grid reversed: ``grid[::-1]`` of any jaxsolve grid
(``karras_sigmas(n, ...)``, padded with ``max_steps=`` or not) is an inversion grid, its leading
zeros the padding, so sweeps over step counts compile once as sampling's do. The integration runs
on :func:`~jaxsolve.diffusion.sample`'s scan: the grid is handed to the driver in its own
(decreasing) orientation and the inversion solver walks it from its end, as :func:`bdia_invert`'s
backward recursion does.

**DDIB** ("Dual Diffusion Implicit Bridges for Image-to-Image Translation"):
:func:`ddib_translate` inverts with the source model and samples the latent with the target
model. For Gaussians :math:`\mathcal N(m_A, C_A)`, :math:`\mathcal N(m_B, C_B)` both flows are
affine: the latent is :math:`z = m_A + (C_A + s_m^2 I)^{1/2}C_A^{-1/2}(x - m_A)` and the translation
:math:`m_B + C_B^{1/2}(C_B + s_m^2 I)^{-1/2}(z - m_B)`, which for commuting covariances tends to the
optimal-transport map :math:`m_B + C_B^{1/2}C_A^{-1/2}(x - m_A)` as :math:`s_m\to\infty`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, is_concrete
from ._sample import SampleSolution, sample
from ._solvers._base import SKIP, STEP, AbstractSolver
from ._solvers.runge_kutta import DPM2, Euler, ExplicitRK, Heun

_METHODS = {"euler": Euler, "ddim": Euler, "heun": Heun, "dpm2": DPM2}


def _as_method(solver) -> ExplicitRK:
    if isinstance(solver, ExplicitRK):
        return solver
    if isinstance(solver, str) and solver in _METHODS:
        return _METHODS[solver]()
    raise ValueError(
        f"solver must be one of {sorted(_METHODS)} or an ExplicitRK instance (a one-step method "
        f"in sigma that integrates in either direction); got {solver!r}."
    )


class _Inversion(AbstractSolver):
    """Driver iteration ``i`` takes inversion step ``i`` on the driver's decreasing grid
    ``g = [s_m, ..., s_1, 0, (padding)]``, from level ``s_{i+o}`` to ``s_{i+o+1}`` with
    ``s_j = g[n - j]`` (``s_0 = 0``); the offset ``o`` (the state) is 0 when the data sit at
    :math:`\\sigma = 0` and 1 when they sit at the first positive level."""

    method: ExplicitRK

    def init(self, x, sigmas):
        # sigmas[-2] is the inversion grid's first entry (the driver's grid has a 0 appended).
        return jnp.where(sigmas[-2] == 0, 0, 1).astype(jnp.int32)

    def phase(self, ctx, offset):
        return jnp.where(ctx.i < ctx.n - offset, STEP, SKIP)

    def step(self, ctx, x, offset):
        j = ctx.i + offset
        active = ctx.i < ctx.n - offset
        # Levels the untaken branch can use safely (under vmap a skipped step is still evaluated).
        sigma = jnp.where(active, ctx.sigma_at(ctx.n - j), 0.5)
        sigma_next = jnp.where(active, ctx.sigma_at(ctx.n - j - 1), 1.0)

        def from_zero(y):
            # DDIM inversion's first step: the noise estimate at the first nonzero level.
            return y + (y - ctx.denoise(y, sigma_next))

        def from_positive(y):
            # Under vmap both branches run: keep this one finite where sigma = 0.
            inner = ctx.replace(
                sigma=jnp.where(sigma > 0, sigma, 0.5 * sigma_next), sigma_next=sigma_next
            )
            return self.method.step(inner, y, None)[0]

        if isinstance(self.method, Euler):
            # One evaluation either way: the Euler slope, taken at sigma_next out of sigma = 0.
            level = jnp.where(sigma > 0, sigma, sigma_next)
            x_next = x + (sigma_next - sigma) * (x - ctx.denoise(x, level)) / level
        else:
            x_next = ctx.cond(sigma > 0, from_positive, from_zero, x)
        return x_next, offset

    def final_step(self, ctx, x, offset):
        # Never taken (phase is STEP or SKIP), but traced by the driver's switch: a no-op.
        return x, offset


def _check_inversion_grid(sigmas) -> Float[Array, " L"]:
    """An increasing grid: optional leading zeros (the data level and padding), then strictly
    increasing positive levels, with at least one step. Concrete grids are checked here; a traced
    one by the driver (its decreasing orientation), which makes the result NaN and reports
    ``RESULTS.invalid_grid``."""
    sigmas = as_float(sigmas)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(
            f"sigmas must be a 1-D increasing grid with at least 2 entries; got shape "
            f"{sigmas.shape}."
        )
    if not is_concrete(sigmas):
        return sigmas
    s = np.asarray(sigmas, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sigmas must be finite and non-negative (an increasing inversion grid).")
    positive = np.nonzero(s > 0)[0]
    if positive.size == 0:
        raise ValueError("sigmas must reach a positive noise level; got all zeros.")
    first = int(positive[0])
    tail = s[first:]
    if np.any(np.diff(tail) <= 0):
        bad = int(np.nonzero(np.diff(tail) <= 0)[0][0]) + first
        raise ValueError(
            "sigmas must be increasing (leading zeros, then strictly increasing levels: a "
            f"sampling grid reversed); sigmas[{bad}]={s[bad]:.6g} >= sigmas[{bad + 1}]="
            f"{s[bad + 1]:.6g}."
        )
    return sigmas


def _driver_grid(sigmas, dtype):
    """The inversion grid in the driver's orientation: reversed, with a 0 appended."""
    return jnp.concatenate([sigmas[::-1], jnp.zeros((1,), sigmas.dtype)]).astype(dtype)


def invert(
    denoiser: Callable,
    x_data: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    solver: str | ExplicitRK = "euler",
    *,
    full_output: bool = False,
    save_trajectory: bool = False,
    throw: bool = True,
) -> Float[Array, " *shape"] | SampleSolution:
    r"""Integrate the probability-flow ODE upward from ``x_data`` to the grid's largest level.

    Args:
        denoiser: ``denoiser(x, sigma) -> x0_hat`` in VE scale (as for :func:`sample`).
        x_data: the state at the grid's first positive level, or the data if the grid starts at 0.
        sigmas: an increasing grid: leading zeros (the data level, and ``max_steps`` padding),
            then strictly increasing positive levels; ``grid[::-1]`` of a sampling grid. A traced
            grid is fine (one compile over step counts).
        solver: ``"euler"`` (``"ddim"`` is the same step: DDIM inversion), ``"heun"`` (second
            order, 2 evaluations per step), ``"dpm2"``, or an :class:`ExplicitRK` instance. The
            step out of :math:`\sigma = 0` is DDIM inversion's for every method (see the module).
        full_output: return a :class:`SampleSolution` (NFE, result code, trajectory).
        save_trajectory: keep every intermediate state (with ``full_output``); trailing entries
            past the last step repeat the latent.
        throw: raise if the state becomes non-finite (else report it in ``result``).

    Returns:
        The latent at ``sigmas[-1]``, shaped like ``x_data`` (one ``lax.scan``).
    """
    method = _as_method(solver)
    x_data = as_float(x_data)
    sigmas = _check_inversion_grid(sigmas)
    return sample(
        denoiser,
        x_data,
        _driver_grid(sigmas, x_data.dtype),
        _Inversion(method),
        batch_ndim=0,
        full_output=full_output,
        save_trajectory=save_trajectory,
        throw=throw,
    )


def ddib_translate(
    denoiser_source: Callable,
    denoiser_target: Callable,
    x: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    solver: str | ExplicitRK = "heun",
    *,
    sampler: AbstractSolver | None = None,
    throw: bool = True,
) -> Float[Array, " *shape"]:
    r"""DDIB translation ("Dual Diffusion Implicit Bridges for Image-to-Image Translation").

    The source model's probability-flow ODE maps ``x`` up to the latent at ``sigmas[-1]``
    (:func:`invert`); the target model's maps the latent back down the same grid. Each half is
    cycle-consistent up to its discretisation error.

    Args:
        denoiser_source, denoiser_target: the two domains' denoisers (VE scale).
        x: source samples (at ``sigmas``' first positive level if the grid does not start at 0).
        sigmas: the increasing inversion grid (see :func:`invert`).
        solver: the inversion method (see :func:`invert`); also the sampling method unless
            ``sampler`` is given.
        sampler: any deterministic jaxsolve sampler for the second half (e.g. ``DPMSolverPP()``).
        throw: raise if a state becomes non-finite.

    Returns:
        The translated samples: at :math:`\sigma = 0` (the sampler's last step lands on the target
        denoiser's output) if the grid starts at 0, else at its first positive level.
    """
    method = _as_method(solver)
    x = as_float(x)
    sigmas = _check_inversion_grid(sigmas)
    latent = invert(denoiser_source, x, sigmas, method, throw=throw)
    grid = _driver_grid(sigmas, x.dtype)
    # The sampling half stops where the inversion started: at 0, or at the first positive level.
    positive = jnp.sum(sigmas > 0).astype(jnp.int32)
    n_steps = positive - jnp.where(sigmas[0] == 0, 0, 1).astype(jnp.int32)
    if is_concrete(n_steps):
        n_steps = int(n_steps)
    return sample(
        denoiser_target,
        latent,
        grid,
        method if sampler is None else sampler,
        n_steps=n_steps,
        batch_ndim=0,
        throw=throw,
    )


__all__ = ["ddib_translate", "invert"]
