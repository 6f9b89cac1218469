r"""Rectified Diffusion's couplings: noise paired with what a pretrained model's ODE makes of it.

From "Rectified Diffusion: Straightness Is Not Your Need in Rectified Flow" (Wang et al.): the
gain of rectification comes from training on a pretrained model's own (noise, sample) pairs, not
from a straight path, so it applies to any parameterisation. Pass the pairs to the losses of
:mod:`jaxsolve.diffusion` through their ``noise=`` argument (``dsm_loss``, ``edm_loss``,
``eps_loss``, ``v_loss``, ``x0_loss``), which build :math:`x_t = \alpha x_0 + \sigma\epsilon` from
the coupled pair. Where the noisy input determines the pair, the optimal predictor's ODE follows
the pairs' lines, its trajectories are first-order, and one Euler (DDIM) step is exact.

Gaussian data :math:`\mathcal N(\mu, \Sigma)` and the exact ODE are such a case. From
:math:`x_T = \sigma_\max z` the ODE gives :math:`x_0 = \mu + J(x_T - \mu)`,
:math:`J = \Sigma^{1/2}(\Sigma + \sigma_\max^2 I)^{-1/2}`, and with the noise
:math:`\epsilon = (x_T - x_0)/\sigma_\max` of :func:`rectified_pairs` the coupling is linear,
:math:`x_0 = \mu + M\epsilon`, :math:`M = \sigma_\max J(I - J)^{-1}`. Then
:math:`x_\sigma = \mu + (M + \sigma I)\epsilon` determines :math:`\epsilon`, the coupled losses'
minimisers have zero loss (denoiser :math:`\mu + M(M + \sigma I)^{-1}(x - \mu)`), and that
denoiser's PF-ODE, :math:`\mathrm dx/\mathrm d\sigma = (M + \sigma I)^{-1}(x - \mu) = \epsilon`,
is a straight line in :math:`\sigma`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float
from .._sample import sample
from .._solvers import AbstractSolver


def rectified_pairs(
    denoiser: Callable,
    key: PRNGKeyArray,
    shape: tuple[int, ...],
    sigmas: Float[ArrayLike, " L"],
    solver: AbstractSolver,
) -> tuple[Float[Array, " *shape"], Float[Array, " *shape"]]:
    r"""Couplings ``(x0, noise)``: what the model makes from :math:`x_T = \sigma_\max z`, and its noise.

    Runs ``solver`` through :func:`jaxsolve.diffusion.sample` from :math:`x_T = \sigma_\max z`,
    :math:`z \sim \mathcal N(0, I)` (``sigmas[0]`` is :math:`\sigma_\max`), so any denoiser (an
    exact oracle, a trained network, a wrapped eps/v/flow model) and any deterministic solver give
    a coupling. The noise returned is :math:`\epsilon = (x_T - x_0)/\sigma_\max`, which puts the
    sampler's start on the pair's line, :math:`x_0 + \sigma_\max\epsilon = x_T` exactly; it is
    :math:`z - x_0/\sigma_\max` (a prior :math:`\sigma_\max z` ignores the data term, and
    training on :math:`x_0 + \sigma\epsilon` with :math:`z` itself would teach lines that miss
    :math:`x_T` by :math:`x_0`). In any schedule's scale the same :math:`\epsilon` applies:
    :math:`\alpha x_0 + \sigma\epsilon` is :math:`\alpha` times the VE state.

    Args:
        denoiser: the pretrained ``denoiser(x, sigma) -> x0_hat`` (VE scale).
        key: PRNG key of :math:`z`.
        shape: the shape of the batch of pairs (one leading batch axis).
        sigmas: the decreasing grid ending in 0 that the ODE is solved on.
        solver: a deterministic solver (a stochastic one does not define a coupling).
    """
    sigmas = as_float(sigmas)
    x_T = sigmas[0] * jax.random.normal(key, tuple(shape), sigmas.dtype)
    x0 = sample(denoiser, x_T, sigmas, solver)
    return x0, (x_T - x0) / sigmas[0]
