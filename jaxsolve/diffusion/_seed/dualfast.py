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
final denoising step.
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_choice
from .._solvers._base import AbstractSolver


class DualFast(AbstractSolver):
    """Approximation-error compensation around ``solver`` (see the module); ``c`` may be traced."""

    solver: AbstractSolver
    c: Float[Array, ""] | float = 0.5
    reference: str = "previous"

    def __check_init__(self):
        if not isinstance(self.solver, AbstractSolver):
            raise TypeError(f"solver must be a jaxsolve sampler; got {type(self.solver).__name__}.")
        check_choice("reference", self.reference, {"previous", "first"})

    @property
    def stochastic(self) -> bool:
        return self.solver.stochastic

    def init(self, x, sigmas):
        return self.solver.init(x, sigmas), jnp.zeros_like(x), jnp.zeros((), bool)

    def _run(self, method, ctx, x, state):
        inner, eps_ref, has_ref = state
        coeff = self.c * ctx.i / jnp.maximum(ctx.n - 1, 1)
        coeff = jnp.where(has_ref, coeff, 0.0)
        raw = []

        def denoise(y, s):
            d = ctx.denoise(y, s)
            eps = (y - d) / s
            raw.append(eps)
            return d - (coeff * s) * (eps - eps_ref)

        out = method(ctx.replace(denoise=denoise), x, inner)
        # The raw prediction at this grid level (the solver's first call is at (x, sigma)).
        eps_here = raw[0] if raw else eps_ref
        if self.reference == "previous":
            new_ref = eps_here
        else:
            new_ref = jnp.where(has_ref, eps_ref, eps_here)
        state = (out[1], new_ref, jnp.ones((), bool))
        return (out[0], state) if len(out) == 2 else (out[0], state, out[2])

    def step(self, ctx, x, state):
        return self._run(self.solver.step, ctx, x, state)

    def final_step(self, ctx, x, state):
        return self._run(self.solver.final_step, ctx, x, state)
