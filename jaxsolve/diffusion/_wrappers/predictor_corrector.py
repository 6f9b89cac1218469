r"""The predictor-corrector sampler ("Score-Based Generative Modeling through Stochastic Differential
Equations").

``n_corrector`` Langevin steps at the current level,
:math:`x \leftarrow x + \epsilon s + \sqrt{2\epsilon}\,z` with
:math:`\epsilon = 2(r\lVert z\rVert/\lVert s\rVert)^2` (``snr`` = r, :math:`s` the score), then any
``predictor`` step (Euler–Maruyama for the reverse SDE by default). How the norms are taken is
``norms``:

- ``"expected"`` (default): their values for pure noise, :math:`\lVert z\rVert^2 = d` and
  :math:`\lVert s\rVert^2 = d/\sigma^2`, i.e. :math:`\epsilon = 2(r\sigma)^2` — the annealed
  Langevin step :math:`\propto\sigma^2` of "Generative Modeling by Estimating Gradients of the
  Data Distribution". Each sample's step is independent of the others.
- ``"batch"``: the paper's code — per-sample norms averaged over the batch. This couples the
  samples of a batch (a sample changes with the batch it is drawn in).
- ``"sample"``: per-sample norms. Independent of the batch, but a sample that happens to sit
  where the score is tiny gets a huge step; only advisable in high dimension, where
  :math:`\lVert s\rVert` concentrates.

The corrector works at the grid level of the step, so an adaptive predictor (which keeps its own
levels) is refused.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..._core import check_choice, check_int, check_positive
from .._adapters import score_from_denoised
from .._solvers._base import AbstractSolver, resolve_batch_ndim
from .._solvers.ancestral import check_traced_non_negative
from .._solvers.euler_maruyama import EulerMaruyama
from ._base import AbstractWrappedSolver, refuse


class PredictorCorrector(AbstractWrappedSolver):
    """Langevin corrector (``n_corrector`` steps, signal-to-noise ratio ``snr``) then ``predictor``.

    Args:
        predictor: the solver whose step follows the corrector (default :class:`EulerMaruyama`);
            it is the wrapped ``solver``.
        snr: the corrector's signal-to-noise ratio :math:`r` (may be traced).
        n_corrector: Langevin steps per grid level.
        norms: ``"expected"``, ``"batch"`` or ``"sample"`` (see the module).
        batch_ndim: leading batch axes of the state (``None``: ``sample``'s).
    """

    solver: AbstractSolver  # the predictor
    snr: Float[Array, ""] | float
    n_corrector: int = eqx.field(static=True)
    norms: str = eqx.field(static=True)
    batch_ndim: int | None = eqx.field(static=True)  # None: sample()'s

    stochastic = True
    step_form = None  # the step starts from the corrected state

    def __init__(
        self,
        predictor: AbstractSolver | None = None,
        snr: Float[Array, ""] | float = 0.16,
        n_corrector: int = 1,
        norms: str = "expected",
        batch_ndim: int | None = None,
    ):
        self.solver = EulerMaruyama() if predictor is None else predictor
        self.snr = snr
        self.n_corrector = n_corrector
        self.norms = norms
        self.batch_ndim = batch_ndim

    def __check_init__(self):
        check_int("n_corrector", self.n_corrector, minimum=0)
        check_choice("norms", self.norms, {"expected", "batch", "sample"})
        # A negative snr enters squared and would act as |snr|; an infinite one gives NaN.
        check_positive("PredictorCorrector snr", self.snr, allow_zero=True)
        if isinstance(self.solver, AbstractSolver) and self.solver.adaptive:
            refuse(
                "PredictorCorrector",
                self.solver,
                "adaptive (it keeps its own levels)",
                "the corrector works at the grid level of the step.",
            )

    @property
    def predictor(self) -> AbstractSolver:
        """The wrapped solver (``solver``), the predictor."""
        return self.solver

    def _snr(self):
        return check_traced_non_negative("PredictorCorrector snr", self.snr)

    def _step_size(self, sigma, z, score, batch_ndim):
        if self.norms == "expected":
            return 2.0 * (self._snr() * sigma) ** 2

        def per_sample_norm(v):
            axes = tuple(range(batch_ndim, v.ndim))
            return jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))

        ratio = per_sample_norm(z) / per_sample_norm(score)
        if self.norms == "batch":
            ratio = jnp.mean(per_sample_norm(z)) / jnp.mean(per_sample_norm(score))
        return 2.0 * (self._snr() * ratio) ** 2

    def _correct(self, ctx, x):
        batch_ndim = resolve_batch_ndim(self, ctx)
        # Corrector draws use indices 1..n_corrector; the predictor keeps draw 0 of this step.
        for k in range(self.n_corrector):
            score = score_from_denoised(x, ctx.sigma, ctx.denoise(x, ctx.sigma))
            z = ctx.noise(1 + k)
            eps = self._step_size(ctx.sigma, z, score, batch_ndim)
            x = x + eps * score + jnp.sqrt(2.0 * eps) * z
        return x

    def step(self, ctx, x, state):
        return self.solver.step(ctx, self._correct(ctx, x), state)

    def final_step(self, ctx, x, state):
        return self.solver.final_step(ctx, self._correct(ctx, x), state)
