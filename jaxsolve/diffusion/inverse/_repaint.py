r"""RePaint ("RePaint: Inpainting using Denoising Diffusion Probabilistic Models", Lugmayr et al.).

RePaint samples the unobserved part of :math:`x_0` with an unconditional model and, after every
reverse step, replaces the observed part by the *measurement* noised to the new level. For a mask
:math:`m` and a noiseless observation :math:`y = m \odot x_0`, a step from :math:`\sigma` to
:math:`\sigma_n` is

.. math::
    x_\text{unknown} = \text{solver step}(x;\ \sigma \to \sigma_n), \qquad
    x_n = (1 - m)\odot x_\text{unknown} + m \odot (y + \sigma_n z) .

Written for a general linear operator :math:`A` this is the projection

.. math:: x_n = x_\text{unknown} + A^{+}\big(y + \sigma_n A z - A x_\text{unknown}\big),

which sets the row-space part :math:`A^{+}A\,x_n` to :math:`A^{+}y + \sigma_n A^{+}A z` (the
row-space part of :math:`x_0 + \sigma_n z` for any :math:`x_0` with :math:`Ax_0 = y`) and keeps the
null-space part :math:`(I - A^{+}A)\,x_\text{unknown}`. For a mask, :math:`A^{+}A = \operatorname
{diag}(m)` and it is the formula above.

The paper's *resampling* ("time travel") lets the two parts harmonise: after a stretch of reverse
steps the state is noised forward again, :math:`x \leftarrow x + \sqrt{\sigma_n^2 - \sigma^2}\,z`
(exactly the forward process), and the stretch is repeated. In jaxsolve the jumps are data: a grid
from :func:`repaint_sigmas` goes up where the paper jumps back, and :class:`RePaint` takes a
forward-noise jump wherever the grid goes up (as :class:`~jaxsolve.diffusion.Restart` does).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ..._core import check_int, default_float, is_concrete, safe_sqrt
from .._solvers._base import AbstractSolver
from .._wrappers._base import AbstractWrappedSolver, require_grid_stepper
from ._measurement import Measurement, check_measurement


def _project(measurement: Measurement, x, sigma, z):
    """``x + A^+(y + sigma A z - A x)``: the row-space part of ``x`` set to that of the
    measurement noised to ``sigma`` (``z`` standard normal; ``sigma = 0`` for the final step)."""
    A = measurement.operator
    target = measurement.y if z is None else measurement.y + sigma * A(z)
    return x + A.pinv(target - A(x)).astype(x.dtype)


class RePaint(AbstractWrappedSolver):
    r"""RePaint around ``solver``: measurement replacement after each step, noise jumps where the
    grid goes up (see the module).

    * Where the grid goes down, ``solver`` steps to :math:`\sigma_n`, then the observed part is
      replaced: :math:`x_n = x + A^{+}(y + \sigma_n A z - Ax)` (for a :class:`Mask`,
      :math:`(1-m)\odot x + m\odot(y + \sigma_n z)`).
    * Where it goes up (a grid from :func:`repaint_sigmas`), the forward jump
      :math:`x + \sqrt{\sigma_n^2 - \sigma^2}\,z`; a multistep ``solver`` restarts its history.
    * The final step into :math:`\sigma = 0` is ``solver``'s (the denoised estimate) with the
      observed part set to the measurement: :math:`x_0 = \hat x + A^{+}(y - A\hat x)` (for a mask,
      :math:`y` where observed).

    RePaint assumes a **noiseless** measurement: it treats :math:`y` as :math:`Ax_0` exactly, so
    every sample satisfies :math:`Ax_0 = A A^{+} y` (the projection of :math:`y` onto the range of
    :math:`A`). With ``measurement.noise_std > 0`` it runs unchanged and ignores the noise level:
    the measurement noise is copied into the samples' observed part (not removed), and the
    unobserved part is sampled as if that noisy :math:`y` were exact — a conditional sample given
    :math:`Ax_0 = y`, not the posterior under measurement noise.

    The wrapper is stochastic whatever ``solver`` is (the replacement draws noise): ``sample``
    needs ``key=``. Draw ``k`` of ``solver`` is the step's draw ``k + 1``; draw 0 is RePaint's.

    Args:
        solver: the unconditional sampler for the unobserved part, deterministic (:class:`Euler`,
            :class:`DDIM`) or stochastic (:class:`EulerAncestral`, the paper's DDPM step); not an
            adaptive one (RePaint's jumps and replacements follow the grid) nor one that itself
            jumps up the grid.
        measurement: a :class:`~jaxsolve.diffusion.inverse.Measurement`, its operator acting on
            one sample (``in_shape`` = the sample's shape); ``y`` one measurement for all samples
            or one per sample (leading batch axes).
    """

    solver: AbstractSolver
    measurement: Measurement

    stochastic = True
    allows_increasing_grid = True
    step_form = None

    def __check_init__(self):
        check_measurement("RePaint", self.measurement)
        require_grid_stepper(
            "RePaint",
            self.solver,
            "RePaint's replacements and jumps follow the grid.",
            up=" (it jumps itself)",
        )

    def inner_context(self, ctx):
        # The solver's draws are shifted by one: draw 0 is the replacement's (or the jump's).
        return ctx.replace(noise=lambda k: ctx.noise(k + 1))

    def step(self, ctx, x, state):
        going_up = ctx.sigma_next > ctx.sigma
        # Under vmap both branches run: keep the solver's branch away from an upward "step" and
        # the jump's square root away from a negative argument (and from an infinite derivative).
        down_ctx = self.inner_context(ctx).replace(
            sigma_next=jnp.where(going_up, 0.5 * ctx.sigma, ctx.sigma_next)
        )

        def jump(x, state):
            rise = safe_sqrt(jnp.maximum(ctx.sigma_next**2 - ctx.sigma**2, 0.0))
            return x + rise * ctx.noise(0), self.solver.init(x, ctx.sigmas)

        def down(x, state):
            x_unknown, state = self.solver.step(down_ctx, x, state)
            return _project(self.measurement, x_unknown, ctx.sigma_next, ctx.noise(0)), state

        return ctx.cond(going_up, jump, down, x, state)

    def final_step(self, ctx, x, state):
        x0, state = self.solver.final_step(self.inner_context(ctx), x, state)
        return _project(self.measurement, x0, 0.0, None), state


def repaint_sigmas(
    sigmas: Float[ArrayLike, " L"],
    jump_length: int = 10,
    jump_n_sample: int = 10,
    *,
    max_steps: int | None = None,
) -> Float[Array, " M"]:
    r"""RePaint's resampling schedule on a decreasing grid (the paper's "time travel").

    Positive levels are counted from the bottom, :math:`t = 0` the smallest. Walking down the
    grid, at every :math:`t \in \{0, L, 2L, \dots\}` from which :math:`L` = ``jump_length`` levels
    up still lie on the grid, the schedule climbs back :math:`L` levels (one level per step) and
    descends again, ``jump_n_sample - 1`` times, before it goes on down; the last step is into 0.
    ``jump_n_sample = 1`` returns the grid as it is. The paper's setting is ``jump_length = 10``,
    ``jump_n_sample = 10`` on 250 levels. Use with :class:`RePaint`.

    Args:
        sigmas: a concrete decreasing grid ending in 0 (zero padding after it is dropped).
        jump_length: levels climbed per jump (:math:`L`).
        jump_n_sample: passes over each stretch (1 + the number of jumps from its bottom).
        max_steps: zero-pad the result to ``max_steps + 1`` entries.

    Returns:
        The grid, decreasing with upward jumps, ending in 0.
    """
    if not is_concrete(sigmas):
        raise TypeError(
            "repaint_sigmas needs a concrete grid (the jumps change the grid's length)."
        )
    jump_length = check_int("jump_length", jump_length)
    jump_n_sample = check_int("jump_n_sample", jump_n_sample)
    base = np.asarray(sigmas, dtype=np.float64)
    if base.ndim != 1 or base.shape[0] < 2:
        raise ValueError(f"sigmas must be a 1-D grid with at least 2 entries; got {base.shape}.")
    if not np.all(np.isfinite(base)) or np.any(base < 0) or not np.any(base == 0):
        raise ValueError("sigmas must be finite, non-negative and end in 0.")
    first_zero = int(np.argmax(base == 0))
    if first_zero == 0 or np.any(base[first_zero:] != 0):
        raise ValueError("sigmas must start positive and be all zeros after its first 0.")
    levels = base[:first_zero]
    if np.any(np.diff(levels) >= 0):
        raise ValueError(
            "sigmas must be strictly decreasing until its first 0 (repaint_sigmas adds the jumps "
            "itself; pass the plain decreasing grid)."
        )
    top = first_zero - 1  # t of the largest level
    if jump_n_sample > 1 and jump_length > top:
        raise ValueError(
            f"jump_length={jump_length} climbs above the grid: with {first_zero} positive levels "
            f"it must be at most {top}."
        )
    remaining = {t: jump_n_sample - 1 for t in range(0, top - jump_length + 1, jump_length)}
    path = [top]
    t = top
    while t > 0:
        t -= 1
        path.append(t)
        if remaining.get(t, 0) > 0:
            remaining[t] -= 1
            for _ in range(jump_length):
                t += 1
                path.append(t)
    grid = np.concatenate([levels[top - np.asarray(path)], [0.0]])
    if max_steps is not None:
        max_steps = check_int("max_steps", max_steps)
        if max_steps + 1 < grid.shape[0]:
            raise ValueError(
                f"max_steps={max_steps} is smaller than the {grid.shape[0] - 1} RePaint grid steps."
            )
        grid = np.concatenate([grid, np.zeros(max_steps + 1 - grid.shape[0])])
    return jnp.asarray(grid, dtype=default_float())


__all__ = ["RePaint", "repaint_sigmas"]
