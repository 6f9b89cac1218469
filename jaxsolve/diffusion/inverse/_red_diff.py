r"""RED-Diff: posterior sampling as optimisation, with the diffusion model as the regulariser.

"A Variational Perspective on Solving Inverse Problems with Diffusion Models" (Mardani, Song,
Kautz, Vahdat) fits a variational distribution :math:`q(x_0) = \mathcal N(\mu, \sigma_0^2 I)`
to the posterior. Its objective is the measurement misfit plus a
score-matching regulariser summed over noise levels; dropping the Jacobian of the model (a stop
gradient through the denoiser, as the paper does) leaves, at each noise level :math:`s` walked from
high to low,

.. math::
    x_s = \mu + s\,\epsilon,\qquad \hat\epsilon = \frac{x_s - D(x_s, s)}{s},\qquad
    \ell(\mu) = \frac{\lVert y - A\mu\rVert^2}{2\sigma_y^2}
      + \lambda\,w(s)\,\operatorname{sg}[\hat\epsilon - \epsilon]^\top\mu ,

and one optimiser step on :math:`\ell` (with :math:`\sigma_0 = 0`, as in the paper's
Algorithm 1). This is the paper's Algorithm 1 in VE form: its
:math:`x_t = \alpha_t\mu + \sigma_t\epsilon` divided by :math:`\alpha_t` is the line above with
:math:`s = \sigma_t/\alpha_t`, and the noise prediction :math:`\epsilon_\theta(x_t, t)` is the
same number as :math:`\hat\epsilon`. The paper's weighting :math:`\lambda_t = \lambda\,
\sigma_t/\alpha_t` (the inverse square-root SNR, "linear" in the reference code) is
:math:`w(s) = s`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float

from ..._core import as_float, check_choice, check_positive, is_concrete, safe_divide
from .._solvers._base import AbstractSolver, StepContext
from ._measurement import Measurement, check_measurement

#: The regulariser's weight :math:`w(s)` per choice (:math:`s` the VE noise level, the paper's
#: :math:`\sigma_t/\alpha_t`): the reference code's ``denoise_term_weight`` options.
_WEIGHTINGS: dict[str, Callable] = {
    "linear": lambda s: s,
    "sqrt": jnp.sqrt,
    "square": jnp.square,
    "log": jnp.log1p,
    "clip": lambda s: jnp.minimum(s, 1.0),
    "constant": jnp.ones_like,
}


def paper_adam(learning_rate: Float[ArrayLike, ""]) -> optax.GradientTransformation:
    """Adam with the reference implementation's moments, :math:`(\\beta_1, \\beta_2) = (0.9,
    0.99)`: :class:`REDDiff`'s default optimizer."""
    return optax.adam(learning_rate, b1=0.9, b2=0.99)


class REDDiff(AbstractSolver):
    r"""RED-Diff (see the module): the driver's state is the variational mean :math:`\mu`.

    Pass the initial :math:`\mu` as ``sample``'s ``x`` — ``measurement.operator.pinv(y)`` (the
    paper's start), or zeros — not noise: RED-Diff optimises a point, it does not denoise one. Each
    nonzero level of the grid is one optimiser step (one denoiser evaluation), taken from high to
    low noise; the step into :math:`\sigma = 0` takes the last one and returns :math:`\mu` (not a
    denoised estimate), so a grid of ``N`` nonzero levels costs ``N`` evaluations. The noise
    :math:`\epsilon` is the driver's per-sample draw (``key=`` or ``noise=``).

    The loss sums over every sample of the batch, which the optimiser sees as one array: an
    element-wise optimiser (Adam, SGD, RMSProp, momentum) keeps the samples independent, one that
    mixes entries (a global-norm clip) couples them.

    What it converges to: with ``lam = 0`` it is gradient descent on :math:`\lVert y -
    A\mu\rVert^2`, a least-squares solution (the pseudo-inverse solution from ``x = 0`` under
    SGD). On a Gaussian prior :math:`\mathcal N(m, C)` the regulariser's expected gradient is
    :math:`\lambda\,w(s)\,s\,(C + s^2I)^{-1}(\mu - m)`, zero at the posterior mean of the prior
    :math:`\mathcal N(m, (C + s^2I)/\lambda w(s) s)`: RED-Diff is a MAP-like, mode-seeking method.
    Its samples gather around one point; their spread is the optimiser's noise, not the
    posterior's.

    Args:
        measurement: the :class:`~jaxsolve.diffusion.inverse.Measurement` (operator, ``y``,
            ``noise_std``).
        lam: :math:`\lambda \ge 0`, the regulariser's weight in the paper's summed loss (the
            reference code averages each term over its own entries: its ``grad_term_weight`` is
            ``lam * d / m`` here, ``d`` entries in a sample and ``m`` in a measurement, at unit
            observation weight). May be traced: a ``jax.vmap`` over ``lam`` compiles once.
        learning_rate: the rate handed to ``optimizer`` when it is a factory; may be traced.
        optimizer: a factory ``learning_rate -> optax.GradientTransformation`` (default
            :func:`paper_adam`, e.g. ``optax.sgd``), or a ready ``optax.GradientTransformation``
            carrying its own rate (then leave ``learning_rate`` unset). Its state is the solver
            state. A factory or transformation is part of the compiled program's identity: reuse
            the same object to reuse the program.
        weighting: :math:`w(s)`: ``"linear"`` (:math:`s`, the paper's), ``"sqrt"``, ``"square"``,
            ``"log"`` (:math:`\log(1+s)`), ``"clip"`` (:math:`\min(s, 1)`) or ``"constant"``.

    The data term's weight is :math:`1/2\sigma_y^2`; at ``noise_std = 0``, where that is infinite,
    it is :math:`1/2` (unit observation weight, the reference code's ``obs_weight = 1``), so
    ``lam`` then sets the balance directly.
    """

    measurement: Measurement
    lam: Float[Array, ""]
    learning_rate: Float[Array, ""] | None
    optimizer: Any
    weighting: str = eqx.field(static=True)

    stochastic = True

    def __init__(
        self,
        measurement: Measurement,
        lam: Float[ArrayLike, ""] = 0.25,
        *,
        learning_rate: Float[ArrayLike, ""] | None = None,
        optimizer: Callable | optax.GradientTransformation = paper_adam,
        weighting: str = "linear",
    ):
        check_measurement("REDDiff", measurement)
        check_positive("REDDiff lam", lam, allow_zero=True)
        lam = as_float(lam)
        if jnp.ndim(lam) != 0:
            raise ValueError(f"REDDiff lam must be a scalar; got shape {jnp.shape(lam)}.")
        if isinstance(optimizer, optax.GradientTransformation):
            if learning_rate is not None:
                raise ValueError(
                    "REDDiff: optimizer is a ready optax transformation with its own rate; leave "
                    "learning_rate unset (or pass a factory such as optax.sgd)."
                )
        elif callable(optimizer):
            learning_rate = 0.1 if learning_rate is None else learning_rate
            check_positive("REDDiff learning_rate", learning_rate)
            learning_rate = as_float(learning_rate)
            if jnp.ndim(learning_rate) != 0:
                raise ValueError(
                    f"REDDiff learning_rate must be a scalar; got shape {jnp.shape(learning_rate)}."
                )
        else:
            raise TypeError(
                "REDDiff optimizer must be an optax.GradientTransformation or a factory "
                f"learning_rate -> GradientTransformation; got {type(optimizer).__name__}."
            )
        self.measurement = measurement
        self.lam = lam
        self.learning_rate = learning_rate
        self.optimizer = optimizer
        self.weighting = check_choice("REDDiff weighting", weighting, tuple(_WEIGHTINGS))

    def _transform(self) -> optax.GradientTransformation:
        if isinstance(self.optimizer, optax.GradientTransformation):
            return self.optimizer
        learning_rate = self.learning_rate
        if not is_concrete(learning_rate):
            learning_rate = eqx.error_if(
                learning_rate, ~(learning_rate > 0), "REDDiff learning_rate must be positive."
            )
        return self.optimizer(learning_rate)

    def init(self, x: Float[Array, "..."], sigmas: Float[Array, " L"]) -> Any:
        in_shape = tuple(self.measurement.operator.in_shape)
        if x.shape[x.ndim - len(in_shape) :] != in_shape:
            raise ValueError(
                f"REDDiff: the state x (the variational mean) must end in the operator's in_shape "
                f"{in_shape}; got shape {x.shape}."
            )
        return self._transform().init(x)

    def _update(self, ctx: StepContext, mu, opt_state):
        m = self.measurement
        sigma = ctx.sigma
        lam = self.lam
        if not is_concrete(lam):
            lam = eqx.error_if(lam, ~(lam >= 0), "REDDiff lam must be non-negative.")
        eps = ctx.noise(0)
        x_s = mu + sigma * eps
        eps_hat = (x_s - ctx.denoise(x_s, sigma)) / sigma
        # 1/(2 sigma_y^2) (the Gaussian likelihood); 1/2 where sigma_y = 0 (see the class).
        data_weight = safe_divide(0.5, m.noise_std**2, 0.5).astype(mu.dtype)
        # The loss's gradient, written out: the stop gradient makes the regulariser linear in mu.
        grad = -2.0 * data_weight * m.operator.transpose(m.residual(mu)).astype(mu.dtype)
        weight = (lam * _WEIGHTINGS[self.weighting](sigma)).astype(mu.dtype)
        grad = grad + weight * (eps_hat - eps)
        updates, opt_state = self._transform().update(grad, opt_state, mu)
        return optax.apply_updates(mu, updates), opt_state

    def step(self, ctx, x, state):
        return self._update(ctx, x, state)

    def final_step(self, ctx, x, state):
        # The last level's update; the output is the variational mean itself.
        return self._update(ctx, x, state)


__all__ = ["REDDiff", "paper_adam"]
