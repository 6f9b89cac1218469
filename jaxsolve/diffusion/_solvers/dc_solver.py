r"""DC-Solver ("DC-Solver: Improving Predictor-Corrector Diffusion Sampler via Dynamic Compensation").

UniPC evaluates the model at the *predicted* state :math:`\tilde x_i` and uses that output both to
correct :math:`\tilde x_i` (UniC) and as the newest point of the next prediction (UniP) — but the
output belongs to :math:`\tilde x_i`, not to the corrected :math:`x_i` (the misalignment, worst at
large guidance scales). Dynamic compensation replaces the newest output, before the predictor,
by the Lagrange interpolant of the last ``dc_order + 1`` outputs evaluated at a shifted time,

.. math:: \hat m_i = \sum_{j=0}^{K} \ell_j(\lambda_*)\,m_{i-j},\qquad
          \lambda_* = \lambda_{i-1} + \rho_i\,(\lambda_i - \lambda_{i-1}),

with :math:`\ell_j` the Lagrange basis on the nodes :math:`\lambda_{i-j}` (we interpolate in the
half log-SNR :math:`\lambda = -\log\sigma`; the paper uses the model's time) and a *compensation
ratio* :math:`\rho_i` per step; :math:`\hat m_i` also stays in the history, so the next corrector
uses it. :math:`\rho_i = 1` gives :math:`\hat m_i = m_i` exactly: UniPC. Compensation starts once
``dc_order + 1`` outputs exist (the paper's ratios are 1 on the first steps).

**Ratios** (:func:`fit_dc_ratios`) are fitted greedily, step by step, on a few trajectories, as
in the paper: the ratio of step :math:`i` minimises the squared distance between the *corrected*
state :math:`x_{i+1}(\rho_i)` (after the predictor of step :math:`i` and the UniC correction that
opens step :math:`i+1`) and a many-step reference (:func:`reference_states`); for the last
compensated step, whose next state is the denoised output, the output itself. The corrected state
lives inside the next step, so the fit runs the driver with a private hook that makes step
:math:`i+1` return it. The loss is scanned on ``bounds`` (one ``vmap``) and polished by Newton
steps differentiated through the driver (the paper runs AdamW from 1).

**Cascade polynomial regression** (:class:`CascadeRatioRegression`) predicts ratios for an unseen
NFE and guidance scale: :math:`\rho(u) = \sum_a c_a u^a` in the step fraction
:math:`u = (i+1)/\text{NFE}`, each :math:`c_a` a polynomial in the guidance scale whose
coefficients are polynomials in the NFE (the paper's cascade, degree 2 at each level). Expanded,
the cascade is linear in its coefficients, so it is fitted by linear least squares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..._core import as_float, check_int, check_integer_count, exact_einsum
from . import _history as hist
from ._base import AbstractSolver
from .dpm_solver import DPMSolverPP
from .unipc import UniPC


def _compensate(history: hist.History, ratio, dc_order: int):
    """Replace the newest history value by the Lagrange interpolant at the shifted time.

    Written as ``m_0 + sum_{j>0} l_j (m_j - m_0)`` (the weights sum to one) so that ratio = 1,
    where every ``l_j`` with ``j > 0`` has the exact factor ``(lambda_* - lambda_0) = 0``, returns
    ``m_0`` bit for bit.
    """
    pts = [hist.recent(history, j) for j in range(dc_order + 1)]
    lams = [-jnp.log(s) for _, s in pts]
    step = lams[0] - lams[1]
    # lambda_* - lambda_j without cancellation: (lambda_1 - lambda_j) + ratio (lambda_0 - lambda_1).
    offset = [(ratio - 1.0) * step] + [
        (lams[1] - lams[j]) + ratio * step for j in range(1, dc_order + 1)
    ]
    m0 = pts[0][0]
    out = m0
    for j in range(1, dc_order + 1):
        weight = 1.0
        for k in range(dc_order + 1):
            if k != j:
                weight = weight * offset[k] / (lams[j] - lams[k])
        out = out + weight * (pts[j][0] - m0)
    active = history.count >= dc_order + 1
    k = history.values.shape[0]
    return hist.History(
        history.values.at[k - 1].set(jnp.where(active, out, m0)), history.sigmas, history.count
    )


class DCSolver(AbstractSolver):
    """UniPC with dynamic compensation (see the module).

    Args:
        ratios: compensation ratio per step, shape ``(max_steps,)`` (may be traced; entry ``i``
            is used at step ``i``; 1 = no compensation).
        order, variant, prediction, lower_order_final: the UniPC configuration (as
            :class:`~jaxsolve.diffusion.UniPC`; corrector always on).
        dc_order: degree of the compensating interpolant (2 in the paper).
    """

    ratios: Float[Array, " steps"]
    order: int = 2
    variant: str = "bh2"
    prediction: str = "data"
    lower_order_final: bool = True
    dc_order: int = 2
    # Fitting hook (private): step ``_stop_at`` returns its corrected state instead of predicting.
    _stop_at: Int[Array, ""] | int = -1

    def __check_init__(self):
        check_int("DCSolver order", self.order, maximum=3)
        check_int("DCSolver dc_order", self.dc_order, maximum=3)
        _ = self._unipc  # validates variant / prediction
        if jnp.ndim(self.ratios) != 1:
            raise ValueError(
                f"ratios must be 1-D (one per step); got shape {jnp.shape(self.ratios)}."
            )

    @property
    def _unipc(self) -> UniPC:
        return UniPC(
            order=self.order,
            variant=self.variant,
            corrector=True,
            prediction=self.prediction,
            lower_order_final=self.lower_order_final,
        )

    def init(self, x, sigmas):
        size = max(self.order, self.dc_order + 1)
        return hist.empty(x, size), x, jnp.ones((), jnp.int32)

    def step(self, ctx, x, state):
        uni = self._unipc
        history, last_x, last_order = state
        m_new = uni._output(ctx, x)
        # UniC for the previous step, with the raw new output (as UniPC and the paper do).
        x = uni._correct(ctx, x, m_new, history, last_x, last_order)
        history = hist.push(history, m_new, ctx.sigma)
        ratio = self.ratios[jnp.clip(ctx.i, 0, self.ratios.shape[0] - 1)]
        # The compensated output replaces the newest entry before UniP uses it.
        history = _compensate(history, ratio, self.dc_order)
        x_next, order = uni._predict(ctx, x, history)
        x_next = jnp.where(ctx.i == self._stop_at, x, x_next)
        return x_next, (history, x, order)


def reference_states(
    denoiser: Callable,
    x: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    *,
    refine: int = 20,
    solver: AbstractSolver | None = None,
) -> Float[Array, " L *shape"]:
    """A many-step reference: the state at every level of the concrete grid ``sigmas``.

    Each interval is split into ``refine`` log-uniform substeps and integrated with ``solver``
    (DPM-Solver++(3M) by default) in one driver run; entry ``j`` is the state at ``sigmas[j]``
    (the last, at 0, is the denoised endpoint of the fine run).
    """
    from .._sample import sample  # here: the driver imports this package

    grid = np.asarray(sigmas, dtype=np.float64)
    n = int(np.argmax(grid == 0))
    if refine < 1:
        raise ValueError(f"refine must be >= 1; got {refine}.")
    pieces = []
    for j in range(n - 1):
        sub = np.exp(np.linspace(np.log(grid[j]), np.log(grid[j + 1]), refine + 1))[:-1]
        pieces.append(sub)
    pieces.append(np.array([grid[n - 1]]))
    fine = np.concatenate([*pieces, [0.0]])
    solver = DPMSolverPP(order=3) if solver is None else solver
    out = sample(denoiser, x, jnp.asarray(fine), solver, full_output=True, save_trajectory=True)
    take = np.concatenate([np.arange(n) * refine, [fine.shape[0] - 1]])
    states = out.trajectory[jnp.asarray(take)]
    x = as_float(x)
    pad = grid.shape[0] - (n + 1)
    if pad:
        states = jnp.concatenate([states, jnp.broadcast_to(states[-1], (pad, *x.shape))])
    return states


def fit_dc_ratios(
    denoiser: Callable,
    x: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    reference: Float[ArrayLike, " L *shape"],
    *,
    order: int = 2,
    variant: str = "bh2",
    prediction: str = "data",
    lower_order_final: bool = True,
    dc_order: int = 2,
    bounds: tuple[float, float] = (0.0, 2.0),
    resolution: int = 41,
    polish: int = 3,
) -> Float[Array, " steps"]:
    """Fit DC-Solver's compensation ratios step by step against ``reference`` (see the module).

    Args:
        denoiser, x, sigmas: the model, a few initial states (a batch) and the sampling grid.
        reference: the reference state at every grid level, shape ``(len(sigmas), *x.shape)``
            (e.g. :func:`reference_states`, or an oracle's exact flow).
        order, variant, prediction, lower_order_final, dc_order: the solver's configuration.
        bounds: the interval the ratios are searched in.
        resolution: points of the scan over ``bounds``.
        polish: Newton steps after the scan.

    Returns:
        ``ratios`` of shape ``(len(sigmas) - 1,)`` for :class:`DCSolver` (1 where no compensation
        happens: the warm-up steps and the last two).
    """
    from .._sample import sample  # here: the driver imports this package

    x = as_float(x)
    sigmas = as_float(sigmas).astype(x.dtype)
    reference = as_float(reference).astype(x.dtype)
    steps = sigmas.shape[0] - 1
    if reference.shape != (sigmas.shape[0], *x.shape):
        raise ValueError(
            f"reference must have shape {(sigmas.shape[0], *x.shape)} (a state per grid level); "
            f"got {reference.shape}."
        )
    if not bool(jnp.all(jnp.isfinite(reference))):
        raise ValueError("reference must be finite (a state per grid level).")
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"bounds must be an increasing pair; got {bounds}.")
    n = int(np.argmax(np.asarray(sigmas) == 0))
    grid = jnp.linspace(lo, hi, resolution, dtype=x.dtype)

    def loss(ratios, i, r):
        solver = DCSolver(
            ratios.at[i].set(r),
            order=order,
            variant=variant,
            prediction=prediction,
            lower_order_final=lower_order_final,
            dc_order=dc_order,
            _stop_at=i + 1,
        )
        # Step i + 1 returns the corrected state; if it is the final step, the denoised output.
        stop = jnp.minimum(i + 2, n)
        y = sample(denoiser, x, sigmas, solver, n_steps=stop, throw=False)
        target = reference[jnp.where(i + 2 < n, i + 1, n)]
        err = jnp.mean((y - target) ** 2)
        # A ratio whose step goes non-finite is never the best (argmin returns a NaN's index).
        return jnp.where(jnp.isfinite(err), err, jnp.inf)

    @jax.jit
    def best_ratio(ratios, i):
        values = jax.vmap(lambda r: loss(ratios, i, r))(grid)
        r = grid[jnp.argmin(values)]
        best = jnp.min(values)
        grad = jax.grad(loss, argnums=2)
        hess = jax.grad(grad, argnums=2)
        for _ in range(polish):  # Newton, kept inside the bounds and only when it helps
            g, h = grad(ratios, i, r), hess(ratios, i, r)
            trial = jnp.clip(r - g / jnp.where(h > 0, h, 1.0), lo, hi)
            value = loss(ratios, i, trial)
            better = (h > 0) & (value < best)
            r, best = jnp.where(better, trial, r), jnp.where(better, value, best)
        return r, best

    ratios = jnp.ones((steps,), x.dtype)
    for i in range(dc_order, n - 1):
        r, best = best_ratio(ratios, jnp.asarray(i))
        if not np.isfinite(float(best)):
            raise FloatingPointError(
                f"fit_dc_ratios: at step {i} every ratio in bounds={bounds} gives a non-finite "
                "state."
            )
        ratios = ratios.at[i].set(r)
    return ratios


class CascadeRatioRegression(eqx.Module):
    r"""Cascade polynomial regression of compensation ratios over (step, NFE, guidance scale).

    :math:`\rho = \sum_{a\le A}\sum_{b\le B}\sum_{c\le C} w_{abc}\,u^a\,\nu^b\,g^c` with
    :math:`u = (i+1)/\text{NFE}`, :math:`\nu = \text{NFE}/\nu_0`, :math:`g = \text{guidance}/g_0`
    (scales from the fitted data). This is the paper's cascade — the coefficient of :math:`u^a` a
    polynomial in :math:`g` whose coefficients are polynomials in :math:`\nu` — expanded.
    Fit with :meth:`fit`; call with an NFE (and guidance scale) to predict ratios.
    """

    weights: Float[Array, "A B C"]
    nfe_scale: float
    guidance_scale: float
    dc_order: int = 2
    bounds: tuple[float, float] = (0.0, 2.0)

    @classmethod
    def fit(
        cls,
        nfes: Sequence[int],
        ratios: Sequence[ArrayLike],
        guidance: Sequence[float] | None = None,
        *,
        degrees: tuple[int, int, int] = (2, 2, 2),
        dc_order: int = 2,
        bounds: tuple[float, float] = (0.0, 2.0),
    ) -> CascadeRatioRegression:
        """Least squares on the active steps (``dc_order <= i <= NFE - 2``) of each ratio set.

        ``ratios[k]`` holds (at least) ``nfes[k]`` entries fitted at ``nfes[k]`` steps and
        guidance scale ``guidance[k]`` (omit ``guidance`` for unguided models: the guidance
        degree is then 0).
        """
        if len(nfes) != len(ratios) or (guidance is not None and len(guidance) != len(nfes)):
            raise ValueError("nfes, ratios (and guidance) must have the same length.")
        deg_u, deg_n, deg_g = degrees
        if guidance is None:
            guidance, deg_g = [0.0] * len(nfes), 0
        nfe_scale = float(max(nfes))
        g_scale = float(max(abs(g) for g in guidance)) or 1.0
        rows, targets = [], []
        for nfe, r, g in zip(nfes, ratios, guidance, strict=True):
            r = np.asarray(r, dtype=np.float64)
            for i in range(dc_order, nfe - 1):
                rows.append(
                    _features((i + 1) / nfe, nfe / nfe_scale, g / g_scale, deg_u, deg_n, deg_g)
                )
                targets.append(r[i])
        a, b = np.asarray(rows), np.asarray(targets)
        if a.shape[0] < a.shape[1]:
            raise ValueError(
                f"{a.shape[0]} fitted ratios cannot determine {a.shape[1]} cascade coefficients; "
                "give more step counts / guidance scales or lower the degrees."
            )
        w, *_ = np.linalg.lstsq(a, b, rcond=None)
        return cls(
            weights=jnp.asarray(w.reshape(deg_u + 1, deg_n + 1, deg_g + 1)),
            nfe_scale=nfe_scale,
            guidance_scale=g_scale,
            dc_order=dc_order,
            bounds=bounds,
        )

    def __call__(
        self,
        nfe: int | Int[Array, ""],
        guidance: Float[ArrayLike, ""] = 0.0,
        *,
        max_steps: int | None = None,
    ) -> Float[Array, " steps"]:
        """Ratios for ``nfe`` steps (padded to ``max_steps``; ``nfe`` may then be traced)."""
        length = check_integer_count("nfe", nfe, max_steps=max_steps)
        size = length if max_steps is None else max_steps
        i = jnp.arange(size)
        u = (i + 1) / nfe
        nu = nfe / self.nfe_scale
        g = as_float(guidance) / self.guidance_scale
        a, b, c = self.weights.shape
        pu = u[:, None] ** jnp.arange(a)
        pn = nu ** jnp.arange(b)
        pg = g ** jnp.arange(c)
        rho = exact_einsum("ia,abc,b,c->i", pu, self.weights, pn, pg)
        active = (i >= self.dc_order) & (i <= nfe - 2)
        return jnp.where(active, jnp.clip(rho, *self.bounds), 1.0)


def _features(u, nu, g, deg_u, deg_n, deg_g):
    return np.array(
        [
            u**a * nu**b * g**c
            for a in range(deg_u + 1)
            for b in range(deg_n + 1)
            for c in range(deg_g + 1)
        ]
    )
