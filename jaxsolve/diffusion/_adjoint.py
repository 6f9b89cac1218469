r"""Gradients through sampling by the adjoint method, in exponential-integrator variables.

"AdjointDPM: Adjoint Sensitivity Method for Gradient Backpropagation of Diffusion Probabilistic
Models". With :math:`\lambda = -\log\sigma` the probability-flow ODE is
:math:`\mathrm dx/\mathrm d\lambda = D_\theta(x, \sigma) - x`, and for a loss of the final sample the
adjoints :math:`a = \partial L/\partial x(\lambda)`, :math:`a_\theta` obey

.. math:: \frac{\mathrm da}{\mathrm d\lambda} = a - J_x^\top a, \qquad
          \frac{\mathrm da_\theta}{\mathrm d\lambda} = -J_\theta^\top a,

solved backward from the last positive level to :math:`\sigma_0` together with :math:`x` itself
(reconstructed backward, never stored). The linear parts are integrated exactly, as in the paper:
over a step :math:`[\lambda_s, \lambda_e]`, :math:`H = \lambda_e - \lambda_s`,

.. math:: x_s = e^{H}x_e - \int_{\lambda_s}^{\lambda_e} e^{u-\lambda_s}D\,\mathrm du, \qquad
          a_s = e^{-H}a_e + \int_{\lambda_s}^{\lambda_e} e^{\lambda_s-u}J_x^\top a\,\mathrm du, \qquad
          a_{\theta,s} = a_{\theta,e} + \int_{\lambda_s}^{\lambda_e} J_\theta^\top a\,\mathrm du,

with the remaining integrands interpolated linearly between a first-order prediction at
:math:`\lambda_s` and the value at :math:`\lambda_e` (a second-order, Heun-type scheme: two
vector-Jacobian products per step). The forward pass is the driver's own integration, so the
sample is the one every other ``adjoint`` gives; its last step, :math:`x\mapsto D(x,\sigma_{n-1})`,
is differentiated exactly. Memory is independent of the number of steps: the backward pass is a
``lax.scan`` whose carry is :math:`(x, a, a_\theta)`.

The gradients are those of the *continuous* flow, evaluated on the sampling grid; they approach
backpropagation through the discrete solver as the number of steps grows. Gradients reach the
initial state and every inexact array the denoiser holds or closes over (network weights,
conditioning, a guidance scale); the grid itself gets none.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import RESULTS


def adjoint_sample(denoiser, x, sigmas, integrate, final_step):
    r"""Sample with the driver, differentiated by the adjoint method.

    ``integrate(denoiser, x) -> (x_out, nfe, taken, result, (x_last, state_last, last))`` is the
    driver's own integration of the whole grid (so the sample is bitwise the one of
    ``adjoint="backprop"``), which also hands back the state entering the final step, the solver
    state there and the index ``last`` of the last positive level.
    ``final_step(denoiser, x_last, state_last) -> x_out`` re-evaluates that last step; it is
    differentiated exactly, with the solver's history held fixed (for every solver whose final
    step is the denoised estimate, as all grid solvers', that is :math:`D(x_{n-1}, \sigma_{n-1})`).

    Returns ``(x_out, nfe, taken, result)``. A gradient through a sample whose ``result`` is not
    successful is NaN: the adjoint of a non-finite trajectory has no meaning, and a zero or finite
    number would look like a real gradient.
    """
    closed = eqx.filter_closure_convert(denoiser, x, sigmas[0])
    params, static = eqx.partition(closed, eqx.is_inexact_array)

    def forward(params, x):
        return integrate(eqx.combine(params, static), x)

    @jax.custom_vjp
    def run(params, x):
        x_out, nfe, taken, result, _ = forward(params, x)
        return x_out, nfe, taken, result

    def run_fwd(params, x):
        x_out, nfe, taken, result, final_input = forward(params, x)
        return (x_out, nfe, taken, result), (params, final_input, result)

    def run_bwd(residuals, cotangents):
        params, (x_last, state_last, last), result = residuals
        cotangent = cotangents[0]

        def denoise(p, y, s):
            return eqx.combine(p, static)(y, s)

        # The final step exactly (the solver's history held fixed).
        _, vjp = jax.vjp(
            lambda p, y: final_step(eqx.combine(p, static), y, state_last), params, x_last
        )
        g_params, a = vjp(cotangent)
        zero_params = jax.tree_util.tree_map(jnp.zeros_like, g_params)

        def eval_point(y, adj, s):
            d, vjp_d = jax.vjp(lambda p, z: denoise(p, z, s), params, y)
            p_bar, g = vjp_d(adj)
            return d, g, p_bar

        def body(carry, k):
            y_e, a_e, acc = carry
            s_e, s_s = sigmas[jnp.minimum(k + 1, sigmas.shape[0] - 1)], sigmas[k]
            active = k + 1 <= last  # step k: from level k+1 back to level k
            s_e = jnp.where(active, s_e, 1.0)
            s_s = jnp.where(active, s_s, 2.0)
            h = jnp.log(s_s / s_e)  # lambda_e - lambda_s > 0
            eh, emh = jnp.exp(h), jnp.exp(-h)
            d_e, g_e, p_e = eval_point(y_e, a_e, s_e)
            y_pred = eh * y_e - (eh - 1.0) * d_e
            a_pred = emh * a_e + (1.0 - emh) * g_e
            d_s, g_s, p_s = eval_point(y_pred, a_pred, s_s)
            # Linear interpolation of D and J^T a between the two ends, integrated exactly.
            w_d = (h * eh - eh + 1.0) / h  # int_0^h e^v v dv / h
            w_g = (1.0 - emh - h * emh) / h  # int_0^h e^-v v dv / h
            y_s = eh * y_e - (d_s * (eh - 1.0) + (d_e - d_s) * w_d)
            a_s = emh * a_e + g_s * (1.0 - emh) + (g_e - g_s) * w_g
            acc_s = jax.tree_util.tree_map(lambda c, u, v: c + 0.5 * h * (u + v), acc, p_s, p_e)
            keep = lambda new, old: jax.tree_util.tree_map(
                lambda u, v: jnp.where(active, u, v), new, old
            )
            return (keep(y_s, y_e), keep(a_s, a_e), keep(acc_s, acc)), None

        steps = jnp.arange(sigmas.shape[0] - 2, -1, -1)
        (_, a0, acc), _ = jax.lax.scan(body, (x_last, a, zero_params), steps)
        g_params = jax.tree_util.tree_map(lambda u, v: u + v, g_params, acc)
        # No gradient through a failed sample looks plausible: it is NaN.
        failed = result != RESULTS.successful
        poison = lambda g: jnp.where(failed, jnp.nan, g)
        return jax.tree_util.tree_map(poison, g_params), poison(a0)

    run.defvjp(run_fwd, run_bwd)
    return run(params, x)
