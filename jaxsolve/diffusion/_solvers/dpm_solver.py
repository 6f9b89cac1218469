r"""DPM-Solver family: exponential integrators of the probability-flow ODE (and SDE).

"DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps"
(noise prediction), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
Models" (data prediction; the SDE variant is its Appendix / diffusers' ``sde-dpmsolver++``).

In VE scale (:math:`\alpha = 1`, :math:`\lambda = -\log\sigma`, :math:`h = \lambda_{n} - \lambda`),
every update is :math:`x_n = A\,x + c_0 D_0 + c_1 D_1 + c_2 D_2 + \text{noise}` where :math:`D_k`
are divided differences of the model outputs (data :math:`\hat x_0` or noise :math:`\hat\epsilon`)
and the coefficients are the method. With :math:`\varphi = e^{-h}-1`, :math:`\psi = e^{h}-1`:

===========================  ================================  ===================================
                             data prediction (++)              noise prediction
===========================  ================================  ===================================
:math:`A`                    :math:`\sigma_n/\sigma`           1
:math:`c_0`                  :math:`-\varphi`                  :math:`-\sigma_n\psi`
:math:`c_1` midpoint         :math:`-\varphi/2`                :math:`-\sigma_n\psi/2`
:math:`c_1` heun / order 3   :math:`\varphi/h + 1`             :math:`-\sigma_n(\psi/h - 1)`
:math:`c_2` (order 3)        :math:`-((\varphi+h)/h^2 - 1/2)`  :math:`-\sigma_n((\psi-h)/h^2-1/2)`
===========================  ================================  ===================================

Multistep (2M, 3M): :math:`D_1 = (m_0 - m_1)/r_0`, and for order 3
:math:`D_1 = D_{1,0} + \frac{r_0}{r_0+r_1}(D_{1,0}-D_{1,1})`, :math:`D_2 = (D_{1,0}-D_{1,1})/(r_0+r_1)`,
with :math:`r_k = h_k/h` the ratios of the previous log-SNR steps.

**The third-order multistep coefficient.** For :math:`m(\lambda)` quadratic these divided
differences are exact: :math:`D_1 = h\,m'`, :math:`D_2 = h^2 m''/2`. The exponential-integrator
term of second order is :math:`m''\int_0^h w(u)\,u^2/2\,\mathrm{d}u`, i.e. :math:`2c_2D_2` with
:math:`c_2` from the table — the table's :math:`c_2` is the weight of :math:`h^2m''`, which is what
the *singlestep* 3S update's :math:`D_2 = 2(D_{1,1}-D_{1,0})/(r_0-r_1)` estimates. The reference
implementations of 3M (the DPM-Solver repository, diffusers, k-diffusion's ``dpmpp_3m_sde``) apply
:math:`c_2` to the multistep :math:`D_2` without the factor 2, which leaves an
:math:`O(h^3)` local error: they converge at second order (``tests/diffusion`` measures it). By
default jaxsolve uses :math:`2c_2` and is third order; ``legacy_third_order=True`` reproduces the
reference implementations exactly.

Singlestep (2S, 3S): a ``k``-th order update spans ``k`` grid intervals from the group's first
point, the interior grid points serving as the intermediate nodes of DPM-Solver-``k`` (on a
log-SNR-uniform grid these are the paper's :math:`r_1 = 1/2`, resp. :math:`1/3, 2/3`); within a
group the state at each grid point is the lower-order estimate, one model call per grid point.
This is the structure of diffusers' ``DPMSolverSinglestepScheduler``, whose order pattern
``1, 2, (3,) 1, 2, ...`` it follows.

SDE-DPM-Solver++ with stochasticity :math:`\eta` (:math:`h_\eta = (1+\eta)h`):
:math:`A = \frac{\sigma_n}{\sigma}e^{-\eta h}`, :math:`c_0 = -\operatorname{expm1}(-h_\eta)`,
midpoint :math:`c_1 = c_0/2`, heun/3M :math:`c_1 = \phi_2 = \operatorname{expm1}(-h_\eta)/h_\eta + 1`,
3M :math:`c_2 = -(\phi_2/h_\eta - 1/2)`, noise :math:`\sigma_n\sqrt{-\operatorname{expm1}(-2\eta h)}\,z`.
These are the exact integrals of the linear / quadratic interpolant against the SDE's weight
:math:`(1+\eta)e^{-(1+\eta)(h-u)}`; :math:`\eta = 0` gives DPM-Solver++ (heun form). (diffusers'
third-order ``sde-dpmsolver++`` has the opposite sign on the :math:`1/2` in :math:`c_2`; the
integral above, and k-diffusion's ``dpmpp_3m_sde``, give the sign used here;
``diffusers_sde_sign=True`` reproduces diffusers' sign, in 3M and in the singlestep 3S.) Singlestep
(``multistep=False``, diffusers' ``DPMSolverSinglestepScheduler`` with ``sde-dpmsolver++``): each
step restarts from its group's first state with :math:`h` spanning the group so far and a fresh
draw, as diffusers does.

SDE-DPM-Solver (noise prediction, diffusers' ``sde-dpmsolver``): the reverse SDE in the
noise-prediction form, :math:`x_n = x - 2\sigma_n\psi\,\hat\epsilon + \sigma_n\sqrt{e^{2h}-1}\,z`
at first order; its second-order updates weight the divided difference by twice the ODE's
:math:`c_1` (midpoint :math:`-\sigma_n\psi`, heun :math:`-2\sigma_n(\psi/h-1)`), as diffusers.

**Where the run is read.** With diffusers' ``final_sigmas_type="sigma_min"`` the grid is
``[..., s_min, 0]`` and the result is the state at ``s_min``; ``stop_before_final=True`` makes the
order lowering near the end (``lower_order_final`` below 15 steps, ``euler_at_final``) count the
steps up to ``s_min``, as diffusers' loop (which never takes the step to 0) does.
``euler_at_final=True`` takes the last counted step (into ``s_min``) at first order, whatever the
number of steps (a step into 0 is first order anyway).
"""

from __future__ import annotations

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_int
from .._adapters import eps_from_denoised
from . import _history as hist
from ._base import AbstractSolver


def _coefficients(prediction, order, solver_type, h, sigma, sigma_next, eta, sde_legacy=False):
    """(A, c0, c1, c2) of the table in the module docstring (``sde_legacy``: diffusers' sign of
    the 1/2 in the SDE's c2)."""
    if prediction == "data":
        h_eta = h * (1.0 + eta)
        a = sigma_next / sigma * jnp.exp(-eta * h)
        c0 = -jnp.expm1(-h_eta)
        phi2 = jnp.expm1(-h_eta) / h_eta + 1.0
        c1 = 0.5 * c0 if (order == 2 and solver_type == "midpoint") else phi2
        c2 = -(phi2 / h_eta + 0.5) if sde_legacy else -(phi2 / h_eta - 0.5)
    else:
        psi = jnp.expm1(h)
        a = jnp.ones_like(h)
        c0 = -sigma_next * psi
        c1 = (
            -0.5 * sigma_next * psi
            if (order == 2 and solver_type == "midpoint")
            else -sigma_next * (psi / h - 1.0)
        )
        c2 = -sigma_next * ((psi - h) / (h * h) - 0.5)
    return a, c0, c1, c2


def _check_solver_type(solver_type):
    if solver_type not in ("midpoint", "heun"):
        raise ValueError(f"solver_type must be 'midpoint' or 'heun'; got {solver_type!r}.")


class _DPMSolverFamily(AbstractSolver):
    order: int = eqx.field(static=True, default=2)
    multistep: bool = eqx.field(static=True, default=True)
    solver_type: str = eqx.field(static=True, default="midpoint")
    lower_order_final: bool = eqx.field(static=True, default=True)
    legacy_third_order: bool = eqx.field(static=True, default=False)
    euler_at_final: bool = eqx.field(static=True, default=False)
    stop_before_final: bool = eqx.field(static=True, default=False)
    diffusers_sde_sign: bool = eqx.field(static=True, default=False)
    prediction: ClassVar[str]
    # Weight of the model-output terms relative to the ODE's (2 for the noise-prediction SDE).
    _output_weight: ClassVar[float] = 1.0

    def __check_init__(self):
        check_int(f"{type(self).__name__} order", self.order, maximum=3)
        _check_solver_type(self.solver_type)

    @property
    def _eta(self):
        return 0.0

    @property
    def _sde_legacy(self):
        # diffusers' third-order sde-dpmsolver++ (multistep and singlestep) flips the 1/2 in c2.
        return self.diffusers_sde_sign and self.stochastic and self.prediction == "data"

    @property
    def step_form(self) -> str | None:
        # A multistep update is A x + (model-output terms) with A = sigma_n / sigma (data) or 1
        # (noise); a singlestep one starts from its group's first state, not from x.
        if not self.multistep or self.stochastic:
            return None
        return "data" if self.prediction == "data" else "noise"

    def _output(self, ctx, x):
        denoised = ctx.denoise(x, ctx.sigma)
        return denoised if self.prediction == "data" else eps_from_denoised(x, ctx.sigma, denoised)

    def _noise(self, ctx, h):
        return 0.0

    def _counted_steps(self, ctx):
        """The number of steps the order lowering counts (see the module: where the run is read)."""
        return ctx.n - 1 if self.stop_before_final else ctx.n

    def init(self, x, sigmas):
        history = hist.empty(x, self.order)
        if self.multistep:
            return history
        return (history, x, jnp.ones((), x.dtype))  # group history, group start x and sigma

    def step(self, ctx, x, state):
        if self.multistep:
            return self._multistep(ctx, x, state)
        return self._singlestep(ctx, x, state)

    def _multistep(self, ctx, x, history):
        m0 = self._output(ctx, x)
        s, sn = ctx.sigma, ctx.sigma_next
        h = jnp.log(s / sn)
        n = self._counted_steps(ctx)
        order = hist.effective_order(self.order, history.count, ctx.i, n, self.lower_order_final)
        if self.euler_at_final:
            order = jnp.where(ctx.i == n - 1, 1, order)
        (m1, s1), (m2, s2) = hist.recent(history, 0), hist.recent(history, 1)
        noise = self._noise(ctx, h)
        w = self._output_weight

        def update(k):
            def branch(m0, m1, m2):
                a, c0, c1, c2 = _coefficients(
                    self.prediction, k, self.solver_type, h, s, sn, self._eta, self._sde_legacy
                )
                c0, c1, c2 = w * c0, w * c1, w * c2
                out = a * x + c0 * m0 + noise
                if k == 1:
                    return out
                r0 = jnp.log(s1 / s) / h
                d1_0 = (m0 - m1) / r0
                if k == 2:
                    return out + c1 * d1_0
                r1 = jnp.log(s2 / s1) / h
                d1_1 = (m1 - m2) / r1
                d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
                d2 = (d1_0 - d1_1) / (r0 + r1)  # = h^2 m''/2: its weight is 2 c2 (see module)
                return out + c1 * d1 + (c2 if self.legacy_third_order else 2.0 * c2) * d2

            return branch

        x_next = hist.switch_on_order(
            order, [update(k) for k in range(1, self.order + 1)], m0, m1, m2
        )
        return x_next, hist.push(history, m0, s)

    def _singlestep(self, ctx, x, state):
        history, x_start, s_start = state
        position = ctx.i % self.order  # order pattern 1, 2, (3,) 1, 2, ...
        fresh = position == 0
        history = hist.History(history.values, history.sigmas, jnp.where(fresh, 0, history.count))
        x_start = jnp.where(fresh, x, x_start)
        s_start = jnp.where(fresh, ctx.sigma, s_start)
        m0 = self._output(ctx, x)
        history = hist.push(history, m0, ctx.sigma)
        sn = ctx.sigma_next
        h = jnp.log(s_start / sn)
        (m_1, s_1), (m_2, _) = hist.recent(history, 1), hist.recent(history, 2)
        noise = self._noise(ctx, h)  # a fresh draw over the group so far (diffusers' SDE)

        def update(k):
            def branch(m0, m_1, m_2):
                a, c0, c1, c2 = _coefficients(
                    self.prediction,
                    k,
                    self.solver_type,
                    h,
                    s_start,
                    sn,
                    self._eta,
                    self._sde_legacy,
                )
                if k == 1:
                    return a * x_start + c0 * m0 + noise
                if k == 2:  # nodes: group start (m_1) and the current point (m0)
                    r0 = jnp.log(s_start / ctx.sigma) / h
                    return a * x_start + c0 * m_1 + c1 * (m0 - m_1) / r0 + noise
                # nodes: group start (m_2), the interior point (m_1), the current point (m0)
                r0 = jnp.log(s_start / ctx.sigma) / h
                r1 = jnp.log(s_start / s_1) / h
                d1_0 = (m_1 - m_2) / r1
                d1_1 = (m0 - m_2) / r0
                out = a * x_start + c0 * m_2 + noise
                if self.solver_type == "midpoint":
                    return out + c1 * d1_1
                d1 = (r0 * d1_0 - r1 * d1_1) / (r0 - r1)
                d2 = 2.0 * (d1_1 - d1_0) / (r0 - r1)
                return out + c1 * d1 + c2 * d2

            return branch

        x_next = hist.switch_on_order(
            position + 1, [update(k) for k in range(1, self.order + 1)], m0, m_1, m_2
        )
        return x_next, (history, x_start, s_start)


class DPMSolver(_DPMSolverFamily):
    """DPM-Solver with noise prediction; ``order`` 1-3, singlestep by default (the paper's)."""

    multistep: bool = eqx.field(static=True, default=False)
    prediction: ClassVar[str] = "noise"


class DPMSolverPP(_DPMSolverFamily):
    """DPM-Solver++ with data prediction: 2M / 3M (``multistep=True``, default) or 2S / 3S."""

    prediction: ClassVar[str] = "data"


class DPMSolverPPSDE(_DPMSolverFamily):
    """SDE-DPM-Solver++ (2M / 3M), multistep, stochasticity ``eta`` (1 = the reverse SDE).

    ``eta`` and ``s_noise`` may be traced. Noise is one draw per step, scaled by
    :math:`\\sigma_n\\sqrt{1-e^{-2\\eta h}}`.
    """

    order: int = eqx.field(static=True, default=2)
    eta: Float[Array, ""] | float = 1.0
    s_noise: Float[Array, ""] | float = 1.0
    prediction: ClassVar[str] = "data"
    stochastic: ClassVar[bool] = True

    def __check_init__(self):
        check_int("DPMSolverPPSDE order", self.order, maximum=3)
        _check_solver_type(self.solver_type)

    @property
    def _eta(self):
        return self.eta

    def _noise(self, ctx, h):
        return (
            self.s_noise * ctx.sigma_next * jnp.sqrt(-jnp.expm1(-2.0 * self.eta * h))
        ) * ctx.noise(0)


class DPMSolverSDE(_DPMSolverFamily):
    """SDE-DPM-Solver with noise prediction (diffusers' ``sde-dpmsolver``), multistep, ``order``
    1 or 2: the reverse SDE's first-order update, and twice the ODE's second-order correction
    (see the module). ``s_noise`` scales the drawn noise and may be traced."""

    s_noise: Float[Array, ""] | float = 1.0
    prediction: ClassVar[str] = "noise"
    stochastic: ClassVar[bool] = True
    _output_weight: ClassVar[float] = 2.0

    def __check_init__(self):
        # diffusers has no third-order sde-dpmsolver update.
        check_int("DPMSolverSDE order", self.order, maximum=2)
        _check_solver_type(self.solver_type)
        if not self.multistep:
            raise ValueError("DPMSolverSDE is multistep only; got multistep=False.")

    def _noise(self, ctx, h):
        return (self.s_noise * ctx.sigma_next * jnp.sqrt(jnp.expm1(2.0 * h))) * ctx.noise(0)
