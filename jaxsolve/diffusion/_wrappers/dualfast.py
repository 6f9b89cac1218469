r"""DualFast ("DualFast: Dual-Speedup Framework for Fast Sampling of Diffusion Models").

DualFast splits a sampler's error into the *discretization* error (what higher-order solvers
reduce) and the *approximation* error of the network, which the paper finds decreases with the
noise level. It reduces the latter with no extra model evaluation by mixing the current noise
prediction with one already computed at a higher noise level :math:`\tau > t`,

.. math:: \tilde\epsilon(x_t, t) = (1 + c_t)\,\hat\epsilon(x_t, t) - c_t\,\hat\epsilon(x_\tau, \tau),

and running the unchanged solver on :math:`\tilde\epsilon`; the coefficient :math:`c_t` grows as
sampling approaches the data. In the denoiser form this is

.. math:: \tilde D(x, \sigma) = D(x, \sigma) - c\,\sigma\,\big(\hat\epsilon(x, \sigma) - \hat\epsilon_\tau\big),

so :class:`DualFast` is a wrapper around *any* jaxsolve solver: every denoiser call the solver
makes during step :math:`i` returns :math:`\tilde D` (so a multistep solver's history holds the
compensated outputs, and a multi-stage solver's stages are compensated too), and ``c = 0`` is the
wrapped solver exactly.

**Our choices where the paper leaves them open** (we could read the paper's abstract and a
third-party summary of its method section, not its full text): the reference output
:math:`\hat\epsilon_\tau` is the raw prediction at the previous grid level (``reference =
"previous"``) or at the first one (``"first"``); the coefficient ramps linearly with the step,
:math:`c_i = c\cdot i/(n-1)` (0 at the first step, ``c`` at the last), and also applies to the
final denoising step. An adaptive solver (:class:`~jaxsolve.diffusion.DPMAdaptive`) has no step
index on the grid, so its ramp is in :math:`\log\sigma` instead: at a step that starts at
:math:`\sigma`, :math:`c\,\log(\sigma_0/\sigma)/\log(\sigma_0/\sigma_\text{end})` from the grid's
first to its last positive level; the wrapper otherwise behaves as its solver does (it needs
``max_steps`` and reports running out of them).

The reference is read from the solver's first denoiser call of the step, which must happen at the
step's own level: wrap DualFast *inside* the wrappers that branch or split the state
(``Restart(DualFast(solver))``, ``Teleport(DualFast(solver), g)``, ``TimeShift(DualFast(solver))``).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_choice, check_positive
from .._solvers._base import AbstractSolver
from .._solvers.ancestral import check_traced_non_negative
from ._base import AbstractWrappedSolver


class DualFast(AbstractWrappedSolver):
    """Approximation-error compensation around ``solver`` (see the module); ``c`` may be traced."""

    solver: AbstractSolver
    c: Float[Array, ""] | float = 0.5
    reference: str = "previous"

    def __check_init__(self):
        check_choice("reference", self.reference, {"previous", "first"})
        # c >= 0 compensates towards the lower-noise prediction, as the paper's c_t does; a NaN
        # or infinite c made every sample NaN without a word.
        check_positive("DualFast c", self.c, allow_zero=True)

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas), jnp.zeros_like(x), jnp.zeros((), bool)

    def inner_state(self, state):
        return state[0]

    def _coefficient(self, ctx, sigma):
        """``c`` ramped from 0 at the first step to ``c`` at the last (see the module)."""
        c = check_traced_non_negative("DualFast c", self.c)
        if self.solver.adaptive:
            start, end = ctx.sigmas[0], ctx.sigma_at(ctx.n - 1)
            progress = jnp.clip(jnp.log(start / sigma) / jnp.log(start / end), 0.0, 1.0)
            return c * progress
        return c * ctx.i / jnp.maximum(ctx.n - 1, 1)

    def _run(self, method, ctx, x, state):
        inner, eps_ref, has_ref = state
        depth = ctx.evaluations.depth
        first = []  # (raw eps, coefficient) of the solver's first call at this step's level

        def denoise(y, s):
            d = ctx.denoise(y, s)
            eps = (y - d) / s
            if first:
                coeff = first[0][1]
            else:
                coeff = jnp.where(has_ref, self._coefficient(ctx, s), 0.0)
                if ctx.evaluations.depth == depth:
                    first.append((eps, coeff))
            return d - (coeff * s) * (eps - eps_ref)

        x_next, inner = method(ctx.replace(denoise=denoise), x, inner)
        if not first:
            raise ValueError(
                f"DualFast({type(self.solver).__name__}(...)): the solver made no denoiser call at "
                "the step's own level (it branches or splits the state); put DualFast inside it, "
                "e.g. Restart(DualFast(solver)) or TimeShift(DualFast(solver))."
            )
        eps_here = first[0][0]
        if self.reference == "previous":
            new_ref = eps_here
        else:
            new_ref = jnp.where(has_ref, eps_ref, eps_here)
        return x_next, (inner, new_ref, jnp.ones((), bool))

    def step(self, ctx, x, state):
        return self._run(self.solver.step, ctx, x, state)

    def final_step(self, ctx, x, state):
        return self._run(self.solver.final_step, ctx, x, state)
