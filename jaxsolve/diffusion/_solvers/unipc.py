r"""UniPC: unified predictor-corrector ("UniPC: A Unified Predictor-Corrector Framework for Fast
Sampling of Diffusion Models").

In VE scale (:math:`\alpha = 1`), with model outputs :math:`m` (data :math:`\hat x_0`, or noise
:math:`\hat\epsilon`), :math:`h = \lambda_n - \lambda`, :math:`\hat h = -h` (data) or :math:`h` (noise),
:math:`r_k = (\lambda_{-k} - \lambda)/h` for earlier points and
:math:`D_k = (m_{-k} - m_0)/r_k`:

* **UniP-p (predictor)**: :math:`x_n = A x - \beta\,\mathrm{expm1}(\hat h)\,m_0 - \beta B(h)\sum_k\rho^p_k D_k`,
  with :math:`A = \sigma_n/\sigma, \beta = 1` (data) or :math:`A = 1, \beta = \sigma_n` (noise).
* **UniC-p (corrector)**: after the model is evaluated at the predicted :math:`x_n`, the same
  update is redone with one more node, the new output :math:`m_n` (:math:`r = 1`), giving order
  :math:`p+1` without an extra model call; the next step starts from the corrected state but
  reuses :math:`m_n`.

The weights solve :math:`R\rho = b` with :math:`R_{ij} = r_j^{\,i}` and
:math:`b_i = i!\,h\varphi_{i+1}(\hat h)/B(h)` (:math:`\varphi` the exponential-integrator
functions), :math:`B(h) = \hat h` (variant ``"bh1"``) or :math:`\mathrm{expm1}(\hat h)` (``"bh2"``);
order-2 predictor and order-1 corrector use :math:`\rho = 1/2`. The warm-up and the lower order on
the last steps (:math:`p \le n - i`) follow diffusers' ``UniPCMultistepScheduler``.

``disable_corrector`` lists the steps whose prediction is not corrected (diffusers' option of the
same name: at step ``i`` the corrector of the step ``i - 1`` is skipped when ``i - 1`` is listed).
``stop_before_final=True``: the run is read at the grid's last positive level (diffusers'
``final_sigmas_type="sigma_min"``, grid ``[..., s_min, 0]``), so the order lowering counts the
steps up to it.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp

from ..._core import check_int
from .._adapters import eps_from_denoised
from . import _history as hist
from ._base import AbstractSolver


def _b_vector(order, hh, b_h):
    """:math:`b_i = i!\\,h\\varphi_{i+1}/B(h)` for i = 1..order, by the recursion of the paper."""
    h_phi_k = jnp.expm1(hh) / hh - 1.0
    factorial = 1
    out = []
    for i in range(1, order + 1):
        out.append(h_phi_k * factorial / b_h)
        factorial *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / factorial
    return jnp.stack(out)


def _gather(history, count):
    """(outputs, levels) of the newest history entry and up to ``count`` before it."""
    vals, sigs = zip(*(hist.recent(history, j) for j in range(count + 1)), strict=True)
    return vals, sigs


class UniPC(AbstractSolver):
    """UniPC with predictor order ``order`` (1-3), variant ``"bh1"``/``"bh2"``, optional corrector.

    ``prediction`` is ``"data"`` (default, as diffusers' ``predict_x0=True``) or ``"noise"``.
    With the corrector the method has order ``order + 1``.
    """

    order: int = eqx.field(static=True, default=2)
    variant: str = eqx.field(static=True, default="bh2")
    corrector: bool = eqx.field(static=True, default=True)
    prediction: str = eqx.field(static=True, default="data")
    lower_order_final: bool = eqx.field(static=True, default=True)
    disable_corrector: tuple[int, ...] = eqx.field(static=True, default=())
    stop_before_final: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        check_int("UniPC order", self.order, maximum=3)
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in self.disable_corrector):
            raise TypeError(
                f"disable_corrector must be a tuple of step indices (ints); got "
                f"{self.disable_corrector!r}."
            )
        if self.variant not in ("bh1", "bh2"):
            raise ValueError(f"variant must be 'bh1' or 'bh2'; got {self.variant!r}.")
        if self.prediction not in ("data", "noise"):
            raise ValueError(f"prediction must be 'data' or 'noise'; got {self.prediction!r}.")

    def init(self, x, sigmas):
        # History of outputs, the corrected previous state and the order of the previous predictor.
        return hist.empty(x, self.order), x, jnp.ones((), jnp.int32)

    def _terms(self, sigma, sigma_next):
        h = jnp.log(sigma / sigma_next)
        hh = -h if self.prediction == "data" else h
        b_h = hh if self.variant == "bh1" else jnp.expm1(hh)
        if self.prediction == "data":
            return h, hh, b_h, sigma_next / sigma, 1.0
        return h, hh, b_h, jnp.ones_like(h), sigma_next

    def _update(self, k, x, m0, older, h, hh, b_h, a, beta, m_new=None):
        """UniP-k (``m_new`` None) or UniC-k (with the new output ``m_new`` at r = 1)."""
        # r_j = (lambda_j - lambda) / h with lambda = -log(sigma): earlier points give r_j < 0.
        rks = [-jnp.log(ratio) / h for ratio in older[1]]
        d1s = [(m_j - m0) / r for m_j, r in zip(older[0], rks, strict=True)]
        base = a * x - beta * jnp.expm1(hh) * m0
        if m_new is None:  # predictor: k - 1 earlier points
            if k == 1:
                return base
            if k == 2:
                rhos = [0.5]
            else:
                r = jnp.stack(rks)
                mat = jnp.stack([r**p for p in range(k - 1)])
                rhos = list(jnp.linalg.solve(mat, _b_vector(k - 1, hh, b_h)))
            return base - beta * b_h * sum(rho * d for rho, d in zip(rhos, d1s, strict=True))
        # corrector: k - 1 earlier points plus the new point at r = 1
        if k == 1:
            rhos = [0.5]
        else:
            r = jnp.stack([*rks, jnp.ones_like(h)])
            mat = jnp.stack([r**p for p in range(k)])
            rhos = list(jnp.linalg.solve(mat, _b_vector(k, hh, b_h)))
        res = sum(rho * d for rho, d in zip(rhos[:-1], d1s, strict=True)) + rhos[-1] * (m_new - m0)
        return base - beta * b_h * res

    def _output(self, ctx, x):
        denoised = ctx.denoise(x, ctx.sigma)
        return denoised if self.prediction == "data" else eps_from_denoised(x, ctx.sigma, denoised)

    def _correct(self, ctx, x, m_new, history, last_x, last_order):
        """UniC for the step that produced ``x``: from ``last_x`` at the previous level to
        ``ctx.sigma``, with the new output ``m_new`` (``x`` itself on the first step)."""
        vals, sigs = _gather(history, self.order - 1)
        s_prev = sigs[0]
        h, hh, b_h, a, beta = self._terms(s_prev, ctx.sigma)

        def correct(k):
            def branch(x, m_new):
                older = ([vals[j] for j in range(1, k)], [sigs[j] / s_prev for j in range(1, k)])
                return self._update(k, last_x, vals[0], older, h, hh, b_h, a, beta, m_new=m_new)

            return branch

        corrected = hist.switch_on_order(
            last_order, [correct(k) for k in range(1, self.order + 1)], x, m_new
        )
        return jnp.where(history.count > 0, corrected, x)

    def _predict(self, ctx, x, history):
        """UniP from ``x`` at ``ctx.sigma`` to ``ctx.sigma_next``; the newest history entry is the
        output at ``ctx.sigma``. Returns the new state and the order used."""
        n = ctx.n - 1 if self.stop_before_final else ctx.n
        order = hist.effective_order(
            self.order, history.count - 1, ctx.i, n, self.lower_order_final, always=True
        )
        vals, sigs = _gather(history, self.order - 1)
        h, hh, b_h, a, beta = self._terms(ctx.sigma, ctx.sigma_next)

        def predict(k):
            def branch(x):
                older = ([vals[j] for j in range(1, k)], [sigs[j] / ctx.sigma for j in range(1, k)])
                return self._update(k, x, vals[0], older, h, hh, b_h, a, beta)

            return branch

        x_next = hist.switch_on_order(order, [predict(k) for k in range(1, self.order + 1)], x)
        return x_next, order

    def step(self, ctx, x, state):
        history, last_x, last_order = state
        m_new = self._output(ctx, x)
        if self.corrector:
            corrected = self._correct(ctx, x, m_new, history, last_x, last_order)
            if self.disable_corrector:
                skipped = jnp.isin(ctx.i - 1, jnp.asarray(self.disable_corrector))
                corrected = jnp.where(skipped, x, corrected)
            x = corrected
        history = hist.push(history, m_new, ctx.sigma)
        x_next, order = self._predict(ctx, x, history)
        return x_next, (history, x, order)
