r"""DPM-Solver-v3 ("DPM-Solver-v3: Improved Diffusion ODE Solver with Empirical Model Statistics").

**The ODE with empirical model statistics.** In VE scale (:math:`\alpha = 1`, half log-SNR
:math:`\lambda = -\log\sigma`) the probability-flow ODE is :math:`\mathrm{d}x/\mathrm{d}\lambda =
D(x, \lambda) - x`. DPM-Solver-v3 rewrites it with three per-dimension statistics of
:math:`\lambda`, the EMS :math:`l_\lambda, s_\lambda, b_\lambda`:

.. math:: f = (1 - l)\,x - D \;(= \sigma\hat\epsilon - l x), \qquad
          \frac{\mathrm{d}x}{\mathrm{d}\lambda} = -l\,x - f,

.. math:: g(\lambda) = e^{-\int_{\lambda_s}^{\lambda}s}\,f(\lambda) - \beta(\lambda), \qquad
          \beta(\lambda) = \int_{\lambda_s}^{\lambda} e^{-\int_{\lambda_s}^{r}s}\,b_r\,\mathrm{d}r,

.. math:: x_t = e^{-\int_{\lambda_s}^{\lambda_t}l}\Big(x_s
          - \int_{\lambda_s}^{\lambda_t} e^{\int_{\lambda_s}^{\lambda}(l+s)}\,g(\lambda)\,\mathrm{d}\lambda
          - \int_{\lambda_s}^{\lambda_t} e^{\int_{\lambda_s}^{\lambda}(l+s)}\,\beta(\lambda)\,\mathrm{d}\lambda\Big),

exact for any statistics. The EMS are chosen to make :math:`g` as flat as possible:
:math:`l^* = \arg\min_l \mathbb E\lVert\nabla_x f\rVert_F^2 = \mathbb E[\operatorname{diag}(\sigma\nabla_x\hat\epsilon)]
= 1 - \mathbb E[\operatorname{diag}\nabla_x D]` and
:math:`(s^*, b^*) = \arg\min \mathbb E\lVert f^{(1)} - s f - b\rVert^2` (a per-dimension linear
regression of the total derivative :math:`f^{(1)} = \mathrm{d}f/\mathrm{d}\lambda` along the ODE on
:math:`f`), both over noised data :math:`x = x_0 + \sigma z`. :func:`estimate_ems` computes them on a
:math:`\lambda` grid from a model and data: the diagonal by Hutchinson's estimator
:math:`\mathbb E_v[v\odot J v]` with Rademacher :math:`v` (one ``jax.jvp``), :math:`f^{(1)}` by one
JVP of the denoiser along :math:`(\mathrm{d}x/\mathrm{d}\lambda, \mathrm{d}\sigma/\mathrm{d}\lambda)`
and :math:`l'` exactly, by forward-mode differentiation of the estimator of :math:`l` (finite
differences on the grid are not accurate enough: see :func:`estimate_ems`).

**Degenerate statistics.** :math:`l = 1, s = b = 0` gives :math:`f = -D`: the data-prediction
exponential integrator, i.e. DPM-Solver++; :math:`l = 0, s = -1, b = 0` gives
:math:`g = \sigma_s\hat\epsilon`: the noise-prediction one, DPM-Solver (:meth:`EMS.data_prediction`,
:meth:`EMS.noise_prediction`; the tests check both reproduce jaxsolve's solvers).

**The solver.** A multistep predictor of order :math:`p` expands :math:`g` in a polynomial
through the last :math:`p` points, :math:`g(\lambda)\approx\sum_n a_n(\lambda-\lambda_s)^n` — the
derivatives of the interpolant (Taylor form) or, with ``pseudo``, its Newton divided differences
(the paper's pseudo-order solver for very few steps) — and integrates it exactly against the
weight. The multistep corrector redoes the last step with the new point (order :math:`p`, or
:math:`p + 1` for a pseudo corrector, as in the paper's code) and keeps :math:`f` fixed at the new
point, so it costs no model evaluation. The first step is first order; ``lower_order_final`` lowers
the order on the last steps when there are fewer than 15, as DPM-Solver does.

**Statistics between grid points (our choice).** The paper snaps the sampling times to its EMS
grid and integrates by the trapezoidal rule. Here the EMS are piecewise linear in :math:`\lambda`
(constant beyond the grid), their integrals :math:`\int l, \int s` are exact, and every weighted
integral is Gauss–Legendre quadrature on each EMS cell the step crosses — so any sampling grid
works, and the degenerate statistics reproduce DPM-Solver(++) to round-off. The rewriting is
exact for *any* statistics, so the solver converges to the true flow whatever the EMS (tested
with random ones); with piecewise-linear EMS, :math:`g` has kinks at the EMS nodes, which caps
the observed order at 2 unless the EMS grid is fine compared with the steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, check_sigma_range, exact_einsum, per_sample_keys
from . import _history as hist
from ._base import AbstractSolver

_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)


def _partial_integration_matrix(nodes):
    """Q with Q @ f(nodes) = int_{-1}^{nodes_i} p, p the interpolant of f through the nodes."""
    k = np.arange(nodes.shape[0])
    vander = nodes[:, None] ** k[None, :]  # V[j, k] = xi_j^k: values = V @ monomial coefficients
    antider = (nodes[:, None] ** (k + 1)[None, :] - (-1.0) ** (k + 1)[None, :]) / (k + 1)[None, :]
    return antider @ np.linalg.inv(vander)


_GL_PARTIAL = _partial_integration_matrix(_GL_NODES)


class EMS(eqx.Module):
    r"""Empirical model statistics :math:`l, s, b` at increasing half log-SNRs ``lambdas``.

    Each statistic has shape ``(K, *event)`` (per dimension) or ``(K,)`` (shared by all
    dimensions); between the nodes it is linear in :math:`\lambda`, beyond them constant.
    """

    lambdas: Float[Array, " K"]
    l: Float[Array, "K ..."]  # noqa: E741 - the paper's name
    s: Float[Array, "K ..."]
    b: Float[Array, "K ..."]

    def __check_init__(self):
        k = self.lambdas.shape[0]
        if self.lambdas.ndim != 1 or k < 2:
            raise ValueError(
                f"lambdas must be 1-D with at least 2 nodes; got {self.lambdas.shape}."
            )
        for name in ("l", "s", "b"):
            if getattr(self, name).shape[:1] != (k,):
                raise ValueError(
                    f"EMS {name} must have shape ({k}, ...) (one value per lambda); got "
                    f"{getattr(self, name).shape}."
                )

    @classmethod
    def constant(cls, l, s, b, sigma_min, sigma_max, num: int = 64) -> EMS:  # noqa: E741
        r"""Constant statistics on ``num`` nodes uniform in :math:`\\lambda` over ``[sigma_min, sigma_max]``."""
        check_sigma_range(sigma_min, sigma_max)
        lambdas = jnp.linspace(-jnp.log(as_float(sigma_max)), -jnp.log(as_float(sigma_min)), num)

        def full(v):
            return jnp.full((num,), v, lambdas.dtype)

        return cls(lambdas, full(l), full(s), full(b))

    @classmethod
    def data_prediction(cls, sigma_min, sigma_max, num: int = 64) -> EMS:
        """:math:`l = 1, s = b = 0`: DPM-Solver-v3 is DPM-Solver++ (data prediction)."""
        return cls.constant(1.0, 0.0, 0.0, sigma_min, sigma_max, num)

    @classmethod
    def noise_prediction(cls, sigma_min, sigma_max, num: int = 64) -> EMS:
        """:math:`l = 0, s = -1, b = 0`: DPM-Solver-v3 is DPM-Solver (noise prediction)."""
        return cls.constant(0.0, -1.0, 0.0, sigma_min, sigma_max, num)

    # -- piecewise-linear evaluation and exact / quadrature integrals -------------------------

    def _at(self, stat, lam, k=None):
        """``stat`` at the (any-shape) ``lam``, linear between nodes, constant beyond; ``k``, when
        known, is the left node of each ``lam``'s piece (broadcast against ``lam``)."""
        lams = self.lambdas
        if k is None:
            k = jnp.clip(jnp.searchsorted(lams, lam, side="right") - 1, 0, lams.shape[0] - 2)
        t = jnp.clip((lam - lams[k]) / (lams[k + 1] - lams[k]), 0.0, 1.0)
        t = t.reshape(t.shape + (1,) * (stat.ndim - 1))
        return stat[k] * (1.0 - t) + stat[k + 1] * t

    def _on_cells(self, stat, u):
        """``stat`` at points ``u`` (cells, ...) lying in the cells of :meth:`_cells`: cell ``c``
        is the piece from node ``c - 1`` to ``c``, so no search is needed (a search per call made
        the solver's compile twice as slow)."""
        k = jnp.clip(jnp.arange(u.shape[0]) - 1, 0, self.lambdas.shape[0] - 2)
        return self._at(stat, u, k.reshape(k.shape + (1,) * (u.ndim - 1)))

    def _cells(self, a, b):
        """The EMS cells (plus the two constant extensions) clipped to ``[a, b]``, ``a <= b``."""
        lams = self.lambdas
        bounds = jnp.concatenate(
            [jnp.minimum(a, lams[0])[None], lams, jnp.maximum(b, lams[-1])[None]]
        )
        lo = jnp.clip(bounds[:-1], a, b)
        hi = jnp.clip(bounds[1:], a, b)
        return lo, hi

    @staticmethod
    def _expand(v, stat):
        return v.reshape(v.shape + (1,) * (stat.ndim - 1))

    def _integral(self, stat, a, b):
        r""":math:`\\int_a^b` stat, exact (trapezoid on each linear piece), any order of a, b."""
        lo, hi = self._cells(jnp.minimum(a, b), jnp.maximum(a, b))
        w = self._expand(hi - lo, stat)
        total = jnp.sum(0.5 * w * (self._on_cells(stat, lo) + self._on_cells(stat, hi)), axis=0)
        return jnp.where(b >= a, total, -total)

    def _nodes(self, a, b):
        """Gauss–Legendre nodes ``(cells, q)``, weights and half-widths on the cells of ``[a, b]``."""
        lo, hi = self._cells(a, b)
        xi = jnp.asarray(_GL_NODES, a.dtype)
        wq = jnp.asarray(_GL_WEIGHTS, a.dtype)
        half = 0.5 * (hi - lo)
        u = lo[:, None] + half[:, None] * (1.0 + xi[None, :])
        return lo, hi, u, half[:, None] * wq[None, :], half

    def _cumulative(self, stat, lo, hi, u):
        r""":math:`\int_{lo_0}^{u}` stat at nodes ``u`` (cells, q) of contiguous cells ``[lo, hi]``
        (exact: stat is linear on each cell)."""
        w = self._expand(hi - lo, stat)
        at_lo = self._on_cells(stat, lo)
        per_cell = 0.5 * w * (at_lo + self._on_cells(stat, hi))
        before = jnp.cumsum(per_cell, axis=0) - per_cell  # exclusive prefix sums, (cells, *E)
        part = (
            0.5 * self._expand(u - lo[:, None], stat) * (at_lo[:, None] + self._on_cells(stat, u))
        )
        return before[:, None] + part


def _step_integrals(ems: EMS, lam_s, lam_t, max_power: int):
    r"""Over ``[lam_s, lam_t]``: (:math:`e^{-\int l}`, [:math:`\int e^{\Delta E}(\lambda-\lambda_s)^n`
    for n < max_power], :math:`\int e^{\Delta E}\beta`), :math:`\Delta E = \int_{\lambda_s}(l+s)`."""
    lo, hi, u, w, half = ems._nodes(lam_s, lam_t)
    dq = ems._cumulative(ems.l + ems.s, lo, hi, u)
    ds = ems._cumulative(ems.s, lo, hi, u)
    integrand = jnp.exp(-ds) * ems._on_cells(ems.b, u)  # (cells, q, *E)
    wb = EMS._expand(w, ems.b)
    cell = jnp.sum(wb * integrand, axis=1)
    before = jnp.cumsum(cell, axis=0) - cell
    # beta(u) = int_{lam_s}^u e^{-dS} b: whole cells before u, plus the part of u's own cell by
    # the Gauss–Legendre integration matrix (exact for polynomials of degree < q).
    q = jnp.asarray(_GL_PARTIAL, lam_s.dtype)
    partial = exact_einsum("ij,cj...->ci...", q, integrand) * EMS._expand(half, ems.b)[:, None]
    beta = before[:, None] + partial
    weight = EMS._expand(w, ems.l) * jnp.exp(dq)
    offset = EMS._expand(u - lam_s, ems.l)
    powers = [jnp.sum(weight * offset**n, axis=(0, 1)) for n in range(max_power)]
    kb = jnp.sum(weight * beta, axis=(0, 1))
    return jnp.exp(-ems._integral(ems.l, lam_s, lam_t)), powers, kb


def _point_terms(ems: EMS, lam_s, lam_i):
    r"""(:math:`e^{-\int_{\lambda_s}^{\lambda_i} s}`, :math:`\beta(\lambda_i)`) for a point on
    either side of ``lam_s``."""
    a, b = jnp.minimum(lam_s, lam_i), jnp.maximum(lam_s, lam_i)
    lo, hi, u, w, _ = ems._nodes(a, b)
    total_s = ems._integral(ems.s, a, b)
    # Exponent relative to lam_s, which is the left end (point ahead) or the right end (behind).
    ds = ems._cumulative(ems.s, lo, hi, u) - jnp.where(lam_i >= lam_s, 0.0, total_s)
    total_beta = jnp.sum(
        EMS._expand(w, ems.b) * jnp.exp(-ds) * ems._on_cells(ems.b, u), axis=(0, 1)
    )
    sign = jnp.where(lam_i >= lam_s, 1.0, -1.0)
    return jnp.exp(-sign * total_s), sign * total_beta


def _coefficients(lams, gs, pseudo: bool):
    """Polynomial coefficients a_n of g(lam) ~ sum_n a_n (lam - lam_0)^n through the points."""
    a = [gs[0]]
    if len(gs) >= 2:
        dd1 = (gs[1] - gs[0]) / (lams[1] - lams[0])
        a.append(dd1)
    if len(gs) >= 3:
        dd1b = (gs[2] - gs[1]) / (lams[2] - lams[1])
        dd2 = (dd1b - dd1) / (lams[2] - lams[0])
        if not pseudo:
            # Newton -> monomial in (lam - lam_0): (lam-l0)(lam-l1) = (lam-l0)^2 + (l0-l1)(lam-l0).
            a[1] = dd1 + dd2 * (lams[0] - lams[1])
        a.append(dd2)
    if len(gs) >= 4:
        dd1c = (gs[3] - gs[2]) / (lams[3] - lams[2])
        dd2b = (dd1c - dd1b) / (lams[3] - lams[1])
        dd3 = (dd2b - dd2) / (lams[3] - lams[0])
        if not pseudo:
            # (lam-l0)(lam-l1)(lam-l2) in powers of (lam - l0).
            d1, d2 = lams[0] - lams[1], lams[0] - lams[2]
            a[1] = a[1] + dd3 * d1 * d2
            a[2] = a[2] + dd3 * (d1 + d2)
        a.append(dd3)
    return a


class DPMSolverV3(AbstractSolver):
    """DPM-Solver-v3 multistep predictor(-corrector) with the statistics ``ems`` (see the module).

    Args:
        ems: an :class:`EMS` covering the sampling grid's noise levels.
        order: predictor order 1-3.
        corrector: apply the multistep corrector (no extra model evaluation).
        pseudo: use divided differences (pseudo-order) in the predictor.
        pseudo_corrector: pseudo-order corrector of order ``p + 1``.
        lower_order_final: lower the order on the last steps (fewer than 15 steps).
    """

    ems: EMS
    order: int = 3
    corrector: bool = True
    pseudo: bool = False
    pseudo_corrector: bool = False
    lower_order_final: bool = True

    def __check_init__(self):
        check_int("DPMSolverV3 order", self.order, maximum=3)
        if not isinstance(self.ems, EMS):
            raise TypeError(f"ems must be an EMS; got {type(self.ems).__name__}.")

    def init(self, x, sigmas):
        size = self.order + (1 if self.pseudo_corrector else 0)
        return hist.empty(x, size), x, jnp.ones((), jnp.int32)

    def _update(self, x_s, integrals, points, pseudo):
        """Step from ``x_s`` with the step ``integrals`` and points ``[(lam_j, g_j)]``, the first at
        the step's start (where g = f)."""
        e_l, powers, kb = integrals
        coeffs = _coefficients([p[0] for p in points], [p[1] for p in points], pseudo)
        return e_l * (x_s - sum(j * a for j, a in zip(powers, coeffs, strict=False)) - kb)

    def step(self, ctx, x, state):
        history, last_x, last_order = state
        lam = -jnp.log(ctx.sigma)
        lam_next = -jnp.log(ctx.sigma_next)
        denoised = ctx.denoise(x, ctx.sigma)
        f_new = (1.0 - self.ems._at(self.ems.l, lam)) * x - denoised
        older = [(-jnp.log(s), v) for v, s in (hist.recent(history, j) for j in range(self.order))]
        max_c = self.order + (1 if self.pseudo_corrector else 0)

        # The EMS integrals depend on the lambdas only: those of the corrector's step (previous
        # point -> this one) and of the predictor's (this one -> next), and the point terms that
        # turn each f_j into g_j, are each computed in one vmapped call, which keeps the traced
        # program (and its compile) small.
        lam_s = older[0][0]
        spans = [(lam_s, lam)] if self.corrector else []
        spans.append((lam, lam_next))
        step_integrals = jax.vmap(lambda a, b: _step_integrals(self.ems, a, b, max_c))(
            *(jnp.stack(v) for v in zip(*spans, strict=True))
        )
        pairs = []  # (start of the step, point), f at the point
        if self.corrector:
            pairs.append(((lam_s, lam), f_new))
            pairs += [((lam_s, lam_j), f_j) for lam_j, f_j in older[1 : max_c - 1]]
        pairs += [((lam, lam_j), f_j) for lam_j, f_j in older[: self.order - 1]]
        gs = []
        if pairs:
            e_s, beta = jax.vmap(lambda a, b: _point_terms(self.ems, a, b))(
                *(jnp.stack(v) for v in zip(*(p for p, _ in pairs), strict=True))
            )
            gs = [e_s[i] * f - beta[i] for i, (_, f) in enumerate(pairs)]

        def span(i):
            return jax.tree.map(lambda t: t[i], step_integrals)

        if self.corrector:
            # Redo the previous step with the new point; f at the new point stays fixed.
            c_order = last_order + (1 if self.pseudo_corrector else 0)
            n_c = max_c - 1  # corrector points past the step's start
            pts = [older[0], (lam, gs[0])]
            pts += [
                (lam_j, g) for (lam_j, _), g in zip(older[1 : max_c - 1], gs[1:n_c], strict=True)
            ]
            integrals = span(0)

            def correct(k):
                def branch(x):
                    if k < 2:
                        return x
                    return self._update(last_x, integrals, pts[:k], self.pseudo_corrector)

                return branch

            corrected = hist.switch_on_order(c_order, [correct(k) for k in range(1, max_c + 1)], x)
            x = jnp.where(history.count > 0, corrected, x)
            gs = gs[n_c:]

        history = hist.push(history, f_new, ctx.sigma)
        order = hist.effective_order(
            self.order, history.count - 1, ctx.i, ctx.n, self.lower_order_final
        )
        integrals = span(len(spans) - 1)
        points = [(lam, f_new)]
        points += [(lam_j, g) for (lam_j, _), g in zip(older[: self.order - 1], gs, strict=True)]

        def predict(k):
            def branch(x):
                return self._update(x, integrals, points[:k], self.pseudo)

            return branch

        x_next = hist.switch_on_order(order, [predict(k) for k in range(1, self.order + 1)], x)
        return x_next, (history, x, order)


def estimate_ems(
    denoiser: Callable,
    data: Float[ArrayLike, "n ..."],
    sigma_min: float,
    sigma_max: float,
    *,
    key: PRNGKeyArray,
    num: int = 64,
    probes: int = 1,
    ridge: float = 1e-12,
) -> EMS:
    r"""Estimate the EMS of ``denoiser`` on noised ``data`` at ``num`` log-SNR-uniform levels.

    At each node :math:`\lambda_k` the noised samples are :math:`y_i = x_{0,i} + \sigma z_i`, and

    * :math:`1 - l = \mathbb E[v\odot J_D v]` (Hutchinson, Rademacher :math:`v`, one ``jax.jvp``);
    * :math:`l' = \mathrm dl/\mathrm d\lambda` by forward-mode differentiation of that same
      average along the noising path :math:`\lambda \mapsto x_0 + e^{-\lambda}z` (fixed
      :math:`x_0, z, v`; a derivative of the expectation, exact for the estimator);
    * :math:`f^{(1)} = (1 - l)(D - y) - l'y - \mathrm dD/\mathrm d\lambda`, the last term one JVP
      of the denoiser along the ODE, :math:`(\mathrm dy, \mathrm d\sigma) = (D - y, -\sigma)`;
    * :math:`s = \mathrm{Cov}(f^{(1)}, f) / \mathrm{Var}(f)`,
      :math:`b = \mathbb E f^{(1)} - s\,\mathbb E f` per dimension.

    **Why** :math:`l'` **must be exact.** :math:`f^{(1)}` contains :math:`-l'y`, of size
    :math:`|l'|\sigma`, which cancels against the other terms to leave a variation of the size of
    :math:`f`'s. At high noise the posterior is nearly Gaussian, so :math:`f` hardly varies
    (:math:`\mathrm{Var} f \approx 3\cdot 10^{-11}` at :math:`\sigma = 80` on a ring of eight
    Gaussians, where :math:`\mathrm{Var}\,y = 6400`); an error :math:`\delta` in :math:`l'` adds
    :math:`\delta\,\mathrm{Cov}(f, y) / \mathrm{Var}(f)` to :math:`s`, and that ratio is huge.
    Finite differences of :math:`l` on the grid (one-sided at the ends: an :math:`O(h)` error,
    largest at :math:`\sigma_{\max}`) make :math:`s(\sigma_{\max})` noise of either sign across
    seeds, and DPM-Solver-v3 diverges. With the exact derivative the estimate is stable, and
    at high noise it approaches a closed-form limit: :math:`f` is then dominated by the first term
    of the denoiser's expansion in :math:`y/\sigma^2` that the diagonal :math:`l` cannot absorb —
    the off-diagonal covariance, :math:`f \propto \sigma^{-1}` (:math:`s \to 1`); for a diagonal
    covariance the third cumulant, :math:`\propto \sigma^{-2}` (:math:`s \to 2`); if that vanishes
    too (data symmetric under :math:`x \mapsto -x`, e.g. the ring), the fourth,
    :math:`\propto \sigma^{-3}` (:math:`s \to 3`).

    **Common random numbers (our choice).** The same :math:`x_0, z, v` are used at every node, so
    the estimated statistics are smooth functions of :math:`\lambda` (their error is smooth too).
    Independent draws per node give node-to-node noise, i.e. kinks in :math:`g`, which the
    high-order steps cannot integrate: with them v3 fell behind DPM-Solver++(3M) at NFE 40 on the
    ring (RMS 0.023 against 0.0077, 1024 samples; 0.004 with common draws).

    Args:
        denoiser: ``denoiser(x, sigma)`` on a batch ``(n, ...)``, differentiable in both (twice in
            forward mode).
        data: clean samples ``(n, ...)`` (the paper uses about a thousand).
        sigma_min, sigma_max: the range of the grid (cover the sampling grid's levels).
        key: PRNG key for the noise and the Rademacher probes (per sample, ``fold_in``).
        num: number of :math:`\lambda` nodes.
        probes: Rademacher probes per sample for the Jacobian diagonal.
        ridge: ridge on :math:`\mathrm{Var}(f)` in the regression, relative to
            :math:`\mathbb E[((1 - l)y)^2 + D^2]` (the terms that cancel in :math:`f`); it gives
            :math:`s = 0` where :math:`f` does not vary, e.g. for Gaussian data with a diagonal
            covariance.

    Returns:
        An :class:`EMS` with per-dimension statistics of shape ``(num, *data.shape[1:])``.
    """
    check_sigma_range(sigma_min, sigma_max)
    data = as_float(data)
    if data.ndim < 2 or data.shape[0] < 2:
        raise ValueError(f"data must have shape (n >= 2, ...); got shape {data.shape}.")
    check_int("num", num, minimum=3)
    check_int("probes", probes)
    dtype = data.dtype
    n, event = data.shape[0], data.shape[1:]
    lambdas = jnp.linspace(-math.log(sigma_max), -math.log(sigma_min), num).astype(dtype)
    noise_key, probe_key = jax.random.split(key)
    z = jax.vmap(lambda k: jax.random.normal(k, event, dtype))(per_sample_keys(noise_key, n))
    v = jax.vmap(lambda k: jax.random.rademacher(k, (probes, *event), dtype))(
        per_sample_keys(probe_key, n)
    )
    v = jnp.moveaxis(v, 1, 0)  # (probes, n, *event)

    def path(lam):
        """(1 - l, D) on the noising path at ``lam``; D rides along as an undifferentiated aux."""
        sigma = jnp.exp(-lam)
        y = data + sigma * z

        def probe(v_p):
            d, jv = jax.jvp(lambda y_: denoiser(y_, sigma), (y,), (v_p,))
            return jnp.mean(v_p * jv, axis=0), d

        diag, d = jax.vmap(probe)(v)
        return jnp.mean(diag, axis=0), d[0]

    def node(lam):
        # Work with 1 - l (the mean Jacobian diagonal) itself: at high noise l is within 1e-4 of
        # 1, and rounding l would cost f digits it cannot spare.
        (jac, djac), d = _jvp_with_aux(path, lam)
        sigma = jnp.exp(-lam)
        y = data + sigma * z
        dy = d - y  # dx/dlambda on the probability-flow ODE
        _, dd = jax.jvp(denoiser, (y, sigma), (dy, -sigma))
        f = jac * y - d
        df = jac * dy + djac * y - dd  # l' = -d(1 - l)/dlambda
        mf, mdf = jnp.mean(f, axis=0), jnp.mean(df, axis=0)
        cov = jnp.mean((f - mf) * (df - mdf), axis=0)
        var = jnp.mean((f - mf) ** 2, axis=0)
        # The ridge is relative to the terms that cancel in f, so where f is constant up to
        # round-off (Gaussian data) s is 0 rather than a ratio of rounding errors.
        scale = jnp.mean((jac * y) ** 2, axis=0) + jnp.mean(d**2, axis=0)
        s = cov / (var + ridge * scale + jnp.finfo(dtype).tiny)
        return 1.0 - jac, s, mdf - s * mf

    ell, s, b = jax.lax.map(node, lambdas)
    return EMS(lambdas, ell, s, b)


def _jvp_with_aux(fun, lam):
    """((fun(lam), d fun / d lam), aux) for ``fun(lam) -> (value, aux)``."""
    value, tangent, aux = jax.jvp(fun, (lam,), (jnp.ones_like(lam),), has_aux=True)
    return (value, tangent), aux
