r"""SA-Solver: stochastic Adams predictor-corrector ("SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models", Xue et al., NeurIPS 2023).

The variance-controlled reverse SDE with noise level :math:`\tau` has the probability-flow ODE as
:math:`\tau = 0` and the reverse SDE as :math:`\tau = 1`. In VE scale (:math:`\alpha = 1`,
:math:`\lambda = -\log\sigma`, a step from :math:`\sigma` to :math:`\sigma_n`,
:math:`h = \lambda_n - \lambda`, :math:`\nu = 1 + \tau^2`) its exact solution with data prediction
:math:`D` is

.. math::
    x_n = e^{-\nu h} x + \nu\int_{\lambda}^{\lambda_n} e^{-\nu(\lambda_n - u)} D(u)\,\mathrm{d}u
          + \sigma_n\sqrt{1 - e^{-2\tau^2 h}}\;\xi ,

and with noise prediction :math:`\hat\epsilon` (the form of the paper's appendix)

.. math::
    x_n = x - \nu\int_{\lambda}^{\lambda_n} e^{-u}\,\hat\epsilon(u)\,\mathrm{d}u
          + \tau\sigma_n\sqrt{e^{2h} - 1}\;\xi .

**SA-Predictor** (order :math:`p`): the model outputs at the current and :math:`p-1` previous
levels are interpolated by the Lagrange polynomial in :math:`\lambda` and the integral is taken
exactly. With nodes :math:`\theta_j = (\lambda_j - \lambda)/h` (0 for the current level, negative
for earlier ones) the weights :math:`w_j` of :math:`x_n = A x + \sum_j w_j m_j + \text{noise}` are
the solution of the moment conditions

.. math::
    \sum_j w_j\,\theta_j^{\,k} = \nu h\,k!\,\varphi_{k+1}(-\nu h)  \ \text{(data)},\qquad
    \sum_j w_j\,\theta_j^{\,k} = -\nu\sigma_n h\,k!\,\varphi_{k+1}(h)  \ \text{(noise)},

:math:`k = 0..p-1`, with :math:`\varphi_{k+1}(z) = \int_0^1 e^{(1-\theta)z}\theta^k/k!\,\mathrm d\theta`
the exponential-integrator functions and :math:`A = e^{-\nu h}` (data) or 1 (noise).

**SA-Corrector** (order :math:`c`): after the model is evaluated at the predicted state, the same
step is redone from the previous corrected state with the new output among the nodes
(:math:`\theta = 1`) and :math:`c - 1` earlier ones, and *the same noise draw* :math:`\xi` as the
predictor. As in UniPC the corrected state is not re-evaluated: the next step reuses the output
at the predicted state, so every step costs one model evaluation. ``corrector_order = 0`` turns the
corrector off. The order of the pair is :math:`\min(p + 1, c)` (:math:`p` without corrector).

**Second-order modification** (data prediction, as the authors' code and diffusers'
``SASolverScheduler``): an update of order 2 (predictor or corrector) adds
:math:`\delta(m_0 - m_1)/(\theta_0 - \theta_1)` with
:math:`\delta = \nu h(\tfrac12 - \varphi_2(-\nu h))`, which replaces the weight
:math:`\varphi_2` of the slope by :math:`1/2`; the change is :math:`O(h^3)` per step, so the order
is kept.

Warm-up and the lower orders on the last steps follow diffusers: at step ``i`` the predictor order
is at most ``i + 1`` and the corrector order (of the correction made at step ``i + 1``) at most
``i + 2``; with ``lower_order_final`` the predictor order is also at most ``n - 1 - i`` and the
corrector order at most ``n - i`` (``n`` steps, the last one to :math:`\sigma = 0`). diffusers'
``SASolverScheduler`` stops at the table's smallest level :math:`s_{\min} > 0`, which is the
driver's grid ``[..., s_min, 0]``: its ``N`` steps are this grid's first ``n - 1``, so these
limits are exactly diffusers'. The final step to :math:`\sigma = 0` lands on the denoiser output
(one evaluation, no correction).

**The noise level** ``tau`` is a number (or a traced array, e.g. swept with ``vmap``), or a
callable ``tau(sigma)`` of the VE level at the *start* of each step (diffusers evaluates its
``tau_func`` at the step's starting timestep, for predictor and corrector alike).
diffusers' default ``tau_func`` (``1`` for timesteps in ``[200, 800]``, else ``0``) is
:meth:`TauWindow.from_timesteps` of the model's DDPM table: ``TauWindow.from_timesteps(schedule)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_choice, check_int, check_positive, is_concrete, safe_sqrt
from .._adapters import eps_from_denoised
from . import _history as hist
from ._base import AbstractSolver
from .ancestral import check_traced_non_negative

_ALGORITHMS = ("data_prediction", "noise_prediction")


class TauWindow(eqx.Module):
    r"""``tau(sigma) = value`` for :math:`\sigma_{lo} \le \sigma \le \sigma_{hi}`, else ``outside``.

    The levels are data (arrays), so a sweep over windows compiles once.
    """

    sigma_lo: Float[Array, ""] | float
    sigma_hi: Float[Array, ""] | float
    value: Float[Array, ""] | float = 1.0
    outside: Float[Array, ""] | float = 0.0

    def __check_init__(self):
        check_positive("TauWindow sigma_lo", self.sigma_lo, allow_zero=True)
        check_positive("TauWindow sigma_hi", self.sigma_hi, allow_inf=True)  # no upper end
        check_positive("TauWindow value", self.value, allow_zero=True)
        check_positive("TauWindow outside", self.outside, allow_zero=True)
        if is_concrete((self.sigma_lo, self.sigma_hi)) and not (
            float(self.sigma_lo) <= float(self.sigma_hi)
        ):
            raise ValueError(
                f"TauWindow sigma_lo must be <= sigma_hi; got {float(self.sigma_lo)!r} > "
                f"{float(self.sigma_hi)!r}."
            )

    def __call__(self, sigma):
        inside = (sigma >= self.sigma_lo) & (sigma <= self.sigma_hi)
        return jnp.where(inside, self.value, self.outside)

    @classmethod
    def from_timesteps(
        cls, schedule, t_min=200.0, t_max=800.0, *, value=1.0, outside=0.0, margin=0.5
    ) -> TauWindow:
        """The window of the timesteps ``[t_min, t_max]`` of ``schedule`` (any schedule with
        ``to_ve_sigma``, e.g. :class:`~jaxsolve.diffusion.DiscreteVPSchedule`).

        With the defaults this is diffusers' default ``tau_func`` of ``SASolverScheduler``
        (``1 if 200 <= t <= 800 else 0``). diffusers compares integer timesteps; ``margin=0.5``
        puts each edge halfway (in log sigma) between two table levels, so that round-off in a
        grid's levels cannot move a level across an edge. Use ``margin=0`` when the timesteps are
        not integers (diffusers' ``use_exponential_sigmas`` / ``use_beta_sigmas``).
        """
        check_positive("TauWindow.from_timesteps margin", margin, allow_zero=True)
        if not float(t_min) <= float(t_max):
            raise ValueError(f"t_min must be <= t_max; got t_min={t_min!r}, t_max={t_max!r}.")
        lo = schedule.to_ve_sigma(float(t_min) - float(margin))
        hi = schedule.to_ve_sigma(float(t_max) + float(margin))
        return cls(lo, hi, value, outside)


def _exp_moments(z, count):
    r""":math:`k!\,\varphi_{k+1}(z)` for ``k = 0..count-1``: Taylor series for :math:`|z| < 1`
    (where the recursion :math:`\varphi_{k+1} = (\varphi_k - 1/k!)/z` cancels), else the
    recursion."""
    small = jnp.abs(z) < 1.0
    zs = jnp.where(small, z, jnp.zeros_like(z))
    zr = jnp.where(small, jnp.ones_like(z), z)
    out = []
    phi = jnp.expm1(zr) / zr
    for k in range(count):
        # k! phi_{k+1}(z) = sum_j k! z^j / (j + k + 1)!, by Horner; the terms past j = 17 are
        # below 1/18! < 2e-16 of the sum at |z| < 1.
        series = jnp.zeros_like(z)
        for j in range(17, -1, -1):
            series = series * zs + math.factorial(k) / math.factorial(j + k + 1)
        out.append(jnp.where(small, series, math.factorial(k) * phi))
        phi = (phi - 1.0 / math.factorial(k + 1)) / zr
    return out


def _lagrange_weights(thetas, moments):
    """Weights ``w`` of the nodes ``thetas`` with ``sum_j w_j theta_j^k = moments[k]``: the exact
    integrals of the Lagrange basis polynomials against the step's exponential weight."""
    if len(thetas) == 1:
        return [moments[0]]
    nodes = jnp.stack(thetas)
    vandermonde_t = jnp.stack([nodes**k for k in range(len(thetas))])
    return list(jnp.linalg.solve(vandermonde_t, jnp.stack(moments)))


class SASolver(AbstractSolver):
    r"""SA-Solver: SA-Predictor of order ``predictor_order`` (1-4) and SA-Corrector of order
    ``corrector_order`` (1-4; 0 = no corrector), see the module.

    Args:
        predictor_order: order of the stochastic Adams-Bashforth predictor (1-4).
        corrector_order: order of the stochastic Adams-Moulton corrector (1-4), 0 for none.
        tau: the noise level: a number >= 0 (0: the deterministic multistep method, 1: the reverse
            SDE), a traced scalar (a sweep), or a callable ``tau(sigma)`` of the VE level at the
            start of a step (e.g. :class:`TauWindow`). The solver draws noise (and ``sample``
            needs a key) unless ``tau`` is the number 0.
        algorithm: ``"data_prediction"`` (the paper's choice) or ``"noise_prediction"``
            (diffusers' ``algorithm_type``).
        lower_order_final: lower the orders on the last steps as diffusers does (see the module).
    """

    predictor_order: int = eqx.field(static=True, default=2)
    corrector_order: int = eqx.field(static=True, default=2)
    tau: Float[Array, ""] | float | Callable = 1.0
    algorithm: str = eqx.field(static=True, default="data_prediction")
    lower_order_final: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_int("SASolver predictor_order", self.predictor_order, maximum=4)
        check_int("SASolver corrector_order", self.corrector_order, minimum=0, maximum=4)
        check_choice("SASolver algorithm", self.algorithm, _ALGORITHMS)
        if not isinstance(self.lower_order_final, bool):
            raise TypeError(
                f"SASolver lower_order_final must be a bool; got {self.lower_order_final!r}."
            )
        if not callable(self.tau):
            if jnp.ndim(self.tau) != 0:
                raise ValueError(
                    f"SASolver tau must be a scalar or a callable tau(sigma); got an array of "
                    f"shape {jnp.shape(self.tau)}."
                )
            check_positive("SASolver tau", self.tau, allow_zero=True)

    @property
    def stochastic(self) -> bool:
        # Only tau = 0 as a concrete number is known to draw no noise.
        if callable(self.tau) or not is_concrete(self.tau):
            return True
        return float(self.tau) != 0.0

    @property
    def step_form(self) -> str | None:
        # Without corrector and noise each step is A x + (model-output terms) with A = sigma_n /
        # sigma (data) or 1 (noise); the corrector restarts from the previous corrected state.
        if self.corrector_order > 0 or self.stochastic:
            return None
        return "data" if self.algorithm == "data_prediction" else "noise"

    def _tau(self, sigma, dtype):
        tau = self.tau(sigma) if callable(self.tau) else self.tau
        tau = jnp.asarray(tau, dtype)
        if jnp.ndim(tau) != 0:
            raise ValueError(
                f"SASolver tau(sigma) must return a scalar; got shape {jnp.shape(tau)}."
            )
        return check_traced_non_negative("SASolver tau", tau)

    def init(self, x, sigmas):
        size = max(self.predictor_order, self.corrector_order - 1)
        # History; the corrected state, noise draw and tau of the last predictor; the order of
        # the correction the next step makes.
        return (
            hist.empty(x, size),
            x,
            jnp.zeros_like(x),
            jnp.zeros((), x.dtype),
            jnp.ones((), jnp.int32),
        )

    def _output(self, ctx, x):
        denoised = ctx.denoise(x, ctx.sigma)
        if self.algorithm == "data_prediction":
            return denoised
        return eps_from_denoised(x, ctx.sigma, denoised)

    def _terms(self, sigma, sigma_next, tau, count):
        """What every update of one step shares: ``h``, the factor ``A`` of ``x``, the right-hand
        sides of the moment conditions (``count`` of them), the slope weight of the second-order
        modification and the noise scale."""
        h = jnp.log(sigma / sigma_next)
        nu = 1.0 + tau * tau
        if self.algorithm == "data_prediction":
            g = _exp_moments(-nu * h, count)
            moments = [nu * h * gk for gk in g]
            # nu h (1/2 - phi_2(-nu h)); unused (and harmless) when count == 1.
            slope_fix = nu * h * (0.5 - g[1]) if count > 1 else None
            scale = sigma_next * safe_sqrt(-jnp.expm1(-2.0 * tau * tau * h))
            return h, jnp.exp(-nu * h), moments, slope_fix, scale
        g = _exp_moments(h, count)
        moments = [-nu * sigma_next * h * gk for gk in g]
        scale = tau * sigma_next * jnp.sqrt(jnp.expm1(2.0 * h))
        return h, jnp.ones_like(h), moments, None, scale

    def _update(self, x, thetas, values, terms, noise):
        """One stochastic Adams update of ``x`` with the model outputs ``values`` at the nodes
        ``thetas`` (the newest first) and the step's ``terms``."""
        _, a, moments, slope_fix, scale = terms
        w = _lagrange_weights(thetas, moments[: len(thetas)])
        if len(thetas) == 2 and slope_fix is not None:  # the second-order modification
            delta = slope_fix / (thetas[0] - thetas[1])
            w = [w[0] + delta, w[1] - delta]
        drift = a * x + sum(wj * mj for wj, mj in zip(w, values, strict=True))
        if not self.stochastic:
            return drift
        return drift + scale * noise

    def _correct(self, ctx, x, m_new, state):
        """SA-Corrector of the last step (from the previous level to ``ctx.sigma``), with the new
        output ``m_new`` at the predicted ``x``; ``x`` itself on the first step."""
        history, last_x, last_noise, last_tau, order = state
        started = history.count > 0
        older = max(self.corrector_order - 1, 1)  # the previous level is needed even for c = 1
        vals, sigs = zip(*(hist.recent(history, j) for j in range(older)), strict=True)
        # Before the first step there is no previous level: a harmless one (h = 1) instead.
        s_prev = jnp.where(started, sigs[0], ctx.sigma * math.e)
        terms = self._terms(s_prev, ctx.sigma, last_tau, self.corrector_order)
        h = terms[0]

        def correct(k):
            def branch(x, m_new):
                thetas = [jnp.ones_like(h)] + [jnp.log(s_prev / s) / h for s in sigs[: k - 1]]
                values = [m_new, *vals[: k - 1]]
                return self._update(last_x, thetas, values, terms, last_noise)

            return branch

        corrected = hist.switch_on_order(
            order, [correct(k) for k in range(1, self.corrector_order + 1)], x, m_new
        )
        return jnp.where(started, corrected, x)

    def step(self, ctx, x, state):
        m_new = self._output(ctx, x)
        if self.corrector_order > 0:
            x = self._correct(ctx, x, m_new, state)
        history = hist.push(state[0], m_new, ctx.sigma)
        p_order = jnp.minimum(self.predictor_order, history.count)
        c_order = jnp.minimum(max(self.corrector_order, 1), history.count + 1)
        if self.lower_order_final:
            p_order = jnp.minimum(p_order, ctx.n - 1 - ctx.i)
            c_order = jnp.minimum(c_order, ctx.n - ctx.i)
        p_order = jnp.maximum(p_order, 1).astype(jnp.int32)
        c_order = jnp.maximum(c_order, 1).astype(jnp.int32)
        tau = self._tau(ctx.sigma, x.dtype)
        noise = ctx.noise(0) if self.stochastic else jnp.zeros_like(x)
        vals, sigs = zip(
            *(hist.recent(history, j) for j in range(self.predictor_order)), strict=True
        )

        terms = self._terms(ctx.sigma, ctx.sigma_next, tau, self.predictor_order)
        h = terms[0]

        def predict(k):
            def branch(x):
                thetas = [jnp.log(ctx.sigma / s) / h for s in sigs[:k]]
                return self._update(x, thetas, vals[:k], terms, noise)

            return branch

        x_next = hist.switch_on_order(
            p_order, [predict(k) for k in range(1, self.predictor_order + 1)], x
        )
        return x_next, (history, x, noise, tau, c_order)


def sa_solver_from_diffusers_config(config, schedule) -> SASolver:
    """The :class:`SASolver` of a diffusers ``SASolverScheduler`` config (its solver keys).

    ``predictor_order``, ``corrector_order``, ``algorithm_type`` and ``lower_order_final`` carry
    over; ``tau_func=None`` (diffusers' default, ``1`` on timesteps ``[200, 800]``) becomes
    :meth:`TauWindow.from_timesteps` of ``schedule`` (the model's DDPM table), with the edges
    halfway between table levels where diffusers' timesteps are integers and exact where they are
    not (``use_exponential_sigmas`` / ``use_beta_sigmas``). A custom ``tau_func`` (a Python function
    of diffusers' timesteps) cannot be read from a config: it raises, naming the key; pass
    ``SASolver(tau=...)`` as a function of the VE level instead. The grid, the model's
    parameterisation and thresholding are the caller's (``from_diffusers``).
    """
    if config.get("tau_func") is not None:
        raise ValueError(
            f"tau_func={config['tau_func']!r} is a function of diffusers' timesteps: build "
            "SASolver(tau=...) with tau a function of the VE level sigma (see TauWindow)."
        )
    if config.get("use_flow_sigmas", False):
        raise ValueError(
            "use_flow_sigmas=True: diffusers' default tau_func then compares flow times * "
            "num_train_timesteps, which TauWindow.from_timesteps of a DDPM table does not give; "
            "build SASolver(tau=...) directly."
        )
    continuous = config.get("use_exponential_sigmas", False) or config.get("use_beta_sigmas", False)
    return SASolver(
        predictor_order=config.get("predictor_order", 2),
        corrector_order=config.get("corrector_order", 2),
        tau=TauWindow.from_timesteps(schedule, margin=0.0 if continuous else 0.5),
        algorithm=config.get("algorithm_type", "data_prediction"),
        lower_order_final=config.get("lower_order_final", True),
    )
