r"""GENIE: the second-order truncated Taylor method ("GENIE: Higher-Order Denoising Diffusion Solvers").

GENIE writes DDIM's ODE in the variables :math:`\bar x = x/\alpha`, :math:`\gamma = \sigma/\alpha` —
which are exactly jaxsolve's VE state and noise level — as
:math:`\mathrm{d}x/\mathrm{d}\sigma = \hat\epsilon(x, \sigma) = (x - D(x, \sigma))/\sigma`, and takes
the second-order truncated Taylor step

.. math:: x_n = x + h\,\hat\epsilon + \tfrac{h^2}{2}\,\frac{\mathrm{d}\hat\epsilon}{\mathrm{d}\sigma},
          \qquad h = \sigma_n - \sigma,
          \qquad \frac{\mathrm{d}\hat\epsilon}{\mathrm{d}\sigma}
          = \partial_x\hat\epsilon\,\hat\epsilon + \partial_\sigma\hat\epsilon .

The total derivative is one Jacobian-vector product of :math:`\hat\epsilon` with tangent
:math:`(\hat\epsilon, 1)`. The paper distils this JVP into a small extra head to save its cost;
here it is computed **exactly** by linearising the denoiser (``jax.linearize``: one primal pass,
then the tangent), so the method is the true second-order Taylor scheme (local error
:math:`O(h^3)`, global order 2) for any differentiable denoiser.

NFE accounting: the primal and the tangent pass cost about two evaluations, so each step counts
2 NFE; the last step, into :math:`\sigma = 0`, lands on the denoiser output as every jaxsolve
solver's does (1 NFE).
"""

from __future__ import annotations

from typing import ClassVar

import jax
import jax.numpy as jnp

from ._base import AbstractSolver


class GENIE(AbstractSolver):
    """Second-order truncated Taylor step with the exact JVP derivative (see the module).

    2 NFE per step (evaluation + JVP), 1 for the final denoising step. Order 2.
    """

    step_form: ClassVar[str | None] = "noise"  # x + h (eps + h/2 d eps / d sigma)

    def step(self, ctx, x, state):
        sigma, sigma_next = ctx.sigma, ctx.sigma_next

        def eps(y, s):
            return (y - ctx.denoise(y, s)) / s

        # One primal evaluation, then the tangent along (eps, 1): the total derivative in sigma.
        e, tangent = jax.linearize(eps, x, sigma)
        de = tangent(e, jnp.ones_like(sigma))
        ctx.add_evaluations(1)  # the tangent pass costs about one more evaluation
        h = sigma_next - sigma
        return x + h * e + (0.5 * h * h) * de, state
