r"""k-diffusion's remaining samplers: DPM2 / DPM-Solver++(2S) ancestral, DPM-Solver++ SDE, DPM-fast.

All in VE scale with :math:`\lambda = -\log\sigma`. The ancestral split of a step
:math:`\sigma \to \sigma_n` is :func:`~jaxsolve.diffusion._solvers.ancestral.ancestral_levels`:
a deterministic move to :math:`\sigma_\downarrow` followed by fresh noise :math:`\sigma_\uparrow z`.

* :class:`DPM2Ancestral` (k-diffusion ``sample_dpm_2_ancestral``; "Elucidating the Design Space of
  Diffusion-Based Generative Models", the DPM-Solver-2 variant of its Algorithm 2): with
  :math:`d(y, s) = (y - D(y, s))/s` and :math:`\sigma_m = \sqrt{\sigma\sigma_\downarrow}`,

  .. math::
      y = x + (\sigma_m - \sigma)\,d(x, \sigma), \qquad
      x_n = x + (\sigma_\downarrow - \sigma)\,d(y, \sigma_m) + \sigma_\uparrow z .

* :class:`DPMSolverPP2SAncestral` (``sample_dpmpp_2s_ancestral``; "DPM-Solver++: Fast Solver for
  Guided Sampling of Diffusion Probabilistic Models", DPM-Solver++(2S) with :math:`r = 1/2`):
  with :math:`h = \log(\sigma/\sigma_\downarrow)` and :math:`\sigma_m = \sqrt{\sigma\sigma_\downarrow}`,

  .. math::
      y = \tfrac{\sigma_m}{\sigma}x - \operatorname{expm1}(-h/2)\,D(x,\sigma), \qquad
      x_n = \tfrac{\sigma_\downarrow}{\sigma}x - \operatorname{expm1}(-h)\,D(y,\sigma_m)
      + \sigma_\uparrow z .

* :class:`DPMSolverPPSDE2S` (``sample_dpmpp_sde``; the same paper, stochastic singlestep
  DPM-Solver++ with intermediate point :math:`\lambda_s = \lambda + r h`, :math:`h = \log(\sigma/\sigma_n)`):
  each of its two sub-steps is ancestral from :math:`\sigma`,

  .. math::
      y &= \tfrac{\sigma_{s\downarrow}}{\sigma}x + (1 - \tfrac{\sigma_{s\downarrow}}{\sigma})D(x,\sigma)
           + \sigma_{s\uparrow} z_1, \\
      x_n &= \tfrac{\sigma_{\downarrow}}{\sigma}x + (1 - \tfrac{\sigma_{\downarrow}}{\sigma})
           \big[(1 - \tfrac{1}{2r})D(x,\sigma) + \tfrac{1}{2r}D(y,\sigma_s)\big] + \sigma_\uparrow z_2,

  where :math:`(\sigma_{s\downarrow}, \sigma_{s\uparrow})` split :math:`\sigma\to\sigma_s` and
  :math:`z_1, z_2` are the normalised increments of **one** Brownian path :math:`W` (in
  :math:`\sigma`) over :math:`[\sigma_s, \sigma]` and :math:`[\sigma_n, \sigma]`. They are built
  from the step's two independent draws by the Brownian bridge:
  :math:`z_1 = \xi_0`, :math:`z_2 = (\sqrt{\sigma-\sigma_s}\,\xi_0 + \sqrt{\sigma_s-\sigma_n}\,\xi_1)/\sqrt{\sigma-\sigma_n}`,
  which is the joint law k-diffusion's ``BrownianTreeNoiseSampler`` gives them.
  At :math:`\eta = 0` this is deterministic DPM-Solver++(2S) (second order).

* :class:`DPMFast` (``sample_dpm_fast``; "DPM-Solver: A Fast ODE Solver for Diffusion Probabilistic
  Model Sampling in Around 10 Steps", DPM-Solver-fast): on a log-SNR-uniform grid of
  :math:`m = \lfloor N/3\rfloor + 1` steps (:func:`dpm_fast_sigmas`), singlestep noise-prediction
  DPM-Solver-3 steps (nodes :math:`r_1 = 1/3, r_2 = 2/3`) except the last ones: orders
  ``3, ..., 3, 2, 1`` when :math:`N \equiv 0 \pmod 3`, else ``3, ..., 3, N mod 3``, so the
  steps use :math:`N` evaluations in all. With :math:`\psi(h) = e^h - 1`, :math:`\hat\epsilon` the
  noise prediction and :math:`\lambda_j = \lambda + r_j h`:

  .. math::
      u_1 &= x - \sigma_{r_1}\psi(r_1h)\hat\epsilon, \quad
      u_2 = x - \sigma_{r_2}\psi(r_2h)\hat\epsilon
            - \sigma_{r_2}\tfrac{r_2}{r_1}\big(\tfrac{\psi(r_2h)}{r_2h} - 1\big)(\hat\epsilon_1 - \hat\epsilon), \\
      x_n &= x - \sigma_n\psi(h)\hat\epsilon - \tfrac{\sigma_n}{r_2}\big(\tfrac{\psi(h)}{h} - 1\big)
            (\hat\epsilon_2 - \hat\epsilon)

  (order 3), DPM-Solver-2 :math:`x_n = x - \sigma_n\psi(h)\hat\epsilon - \tfrac{\sigma_n}{2r_1}\psi(h)(\hat\epsilon_1 - \hat\epsilon)`
  with :math:`r_1 = 1/2`, and DPM-Solver-1 :math:`x_n = x - \sigma_n\psi(h)\hat\epsilon`.

Two classes reproduce k-diffusion where jaxsolve's own solvers make another choice:
:class:`LMSMultistepFinal` (LMS whose step into :math:`\sigma = 0` is an Adams–Bashforth step,
not the denoiser output) and :class:`DPMSolverPP3MSDEKDiffusion` (``dpmpp_3m_sde``, with its
second-order coefficient; its docstring says why jaxsolve's default differs).
:func:`brownian_tree_noise` gives the SDE samplers k-diffusion's Brownian-tree noise: one path
per sample, the same on every grid, so samples converge as the steps grow.

The last step of every other sampler here (into :math:`\sigma = 0`) lands on the denoiser output,
as in k-diffusion. (k-diffusion's ``sample_dpm_fast`` stops at :math:`\sigma_{\min}` without it; run
:func:`~jaxsolve.diffusion.sample` with ``n_steps`` one short of the grid's for that.)
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._core import check_int, check_positive
from ._base import AbstractSolver
from .ancestral import EulerAncestral, ancestral_levels, check_traced_non_negative
from .dpm_solver import DPMSolverPPSDE
from .linear_multistep import LMS


def _checked_eta(solver):
    return check_traced_non_negative(f"{type(solver).__name__} eta", solver.eta)


def _geometric_mid(sigma, sigma_down):
    """:math:`\\sqrt{\\sigma\\sigma_\\downarrow}`, and a safe level (``sigma``) where
    :math:`\\sigma_\\downarrow = 0` (that step is an Euler step; its midpoint is never used)."""
    positive = sigma_down > 0
    safe_down = jnp.where(positive, sigma_down, sigma)
    return positive, jnp.exp(0.5 * (jnp.log(sigma) + jnp.log(safe_down)))


class DPM2Ancestral(EulerAncestral):
    """k-diffusion's ``dpm_2_ancestral``: a DPM2 (geometric-midpoint) step to
    :math:`\\sigma_\\downarrow`, then noise :math:`\\sigma_\\uparrow z` (see the module).

    ``eta`` scales the injected noise (0 gives :class:`DPM2`); ``s_noise`` the draws themselves.
    Both may be traced. Two evaluations per step, one for the last. (Where ``eta`` is so large
    that :math:`\\sigma_\\downarrow = 0` before the last step, k-diffusion takes an Euler step and
    adds no noise; here the noise :math:`\\sigma_\\uparrow z = \\sigma_n z` is added, so the state
    has the level the grid says.)
    """

    def step(self, ctx, x, state):
        sigma = ctx.sigma
        down, up = ancestral_levels(sigma, ctx.sigma_next, _checked_eta(self))
        denoised = ctx.denoise(x, sigma)
        d = (x - denoised) / sigma
        positive, mid = _geometric_mid(sigma, down)
        y = x + (mid - sigma) * d
        d_mid = (y - ctx.denoise(y, mid)) / mid
        x_next = x + (down - sigma) * jnp.where(positive, d_mid, d)
        if not self.stochastic:
            return x_next, state
        return x_next + (self.s_noise * up) * ctx.noise(0), state


class DPMSolverPP2SAncestral(EulerAncestral):
    """k-diffusion's ``dpmpp_2s_ancestral``: a DPM-Solver++(2S) step (:math:`r = 1/2`) to
    :math:`\\sigma_\\downarrow`, then noise :math:`\\sigma_\\uparrow z` (see the module).

    ``eta = 0`` gives deterministic DPM-Solver++(2S) with the midpoint inside the step (second
    order, two evaluations per step). ``eta`` and ``s_noise`` may be traced.
    """

    def step(self, ctx, x, state):
        sigma = ctx.sigma
        down, up = ancestral_levels(sigma, ctx.sigma_next, _checked_eta(self))
        denoised = ctx.denoise(x, sigma)
        positive, mid = _geometric_mid(sigma, down)
        h = jnp.log(sigma) - jnp.log(jnp.where(positive, down, sigma))
        y = (mid / sigma) * x - jnp.expm1(-0.5 * h) * denoised
        denoised_mid = ctx.denoise(y, mid)
        x_next = jnp.where(positive, (down / sigma) * x - jnp.expm1(-h) * denoised_mid, denoised)
        if not self.stochastic:
            return x_next, state
        return x_next + (self.s_noise * up) * ctx.noise(0), state


def bridged_increments(ctx, sigma, sigma_mid, sigma_next):
    """Normalised increments of one Brownian path over ``[sigma_mid, sigma]`` and
    ``[sigma_next, sigma]`` from the step's draws 0 and 1 (the Brownian bridge, see the module)."""
    xi0, xi1 = ctx.noise(0), ctx.noise(1)
    first, second = sigma - sigma_mid, sigma_mid - sigma_next
    z2 = (jnp.sqrt(first) * xi0 + jnp.sqrt(second) * xi1) / jnp.sqrt(first + second)
    return xi0, z2


class DPMSolverPPSDE2S(EulerAncestral):
    """k-diffusion's ``dpmpp_sde``: stochastic singlestep DPM-Solver++ with intermediate point
    :math:`\\lambda + r h` and Brownian-path noise (see the module).

    ``r`` (default 1/2) places the intermediate point; ``eta`` (1 = the reverse SDE's noise
    level) and ``s_noise`` may be traced. Two evaluations and two draws per step.
    """

    r: float = eqx.field(static=True, default=0.5)

    def __check_init__(self):
        if not 0.0 < self.r <= 1.0:
            raise ValueError(f"DPMSolverPPSDE2S r must lie in (0, 1]; got {self.r!r}.")

    def step(self, ctx, x, state):
        eta = _checked_eta(self)
        sigma, sigma_next = ctx.sigma, ctx.sigma_next
        log_sigma = jnp.log(sigma)
        sigma_s = jnp.exp(log_sigma + self.r * (jnp.log(sigma_next) - log_sigma))
        denoised = ctx.denoise(x, sigma)

        def ancestral_move(y, target, denoised_estimate):
            down, up = ancestral_levels(sigma, target, eta)
            # (sigma_down/sigma) y - expm1(log(sigma_down/sigma)) D, written as k-diffusion does.
            ratio = down / sigma
            return ratio * y - jnp.expm1(jnp.log(ratio)) * denoised_estimate, up

        y, up_s = ancestral_move(x, sigma_s, denoised)
        if self.stochastic:
            z1, z2 = bridged_increments(ctx, sigma, sigma_s, sigma_next)
            y = y + (self.s_noise * up_s) * z1
        denoised_s = ctx.denoise(y, sigma_s)
        fac = 1.0 / (2.0 * self.r)
        x_next, up = ancestral_move(x, sigma_next, (1.0 - fac) * denoised + fac * denoised_s)
        if not self.stochastic:
            return x_next, state
        return x_next + (self.s_noise * up) * z2, state


def dpm_fast_orders(nfe: int) -> list[int]:
    """The order of each step of DPM-Solver-fast with ``nfe`` evaluations (sum = ``nfe``)."""
    nfe = check_int("nfe", nfe, minimum=1)
    m = nfe // 3 + 1
    if nfe % 3 == 0:
        return [3] * (m - 2) + [2, 1]
    return [3] * (m - 1) + [nfe % 3]


def dpm_fast_sigmas(nfe: int, sigma_min: float, sigma_max: float) -> Float[Array, " L"]:
    """DPM-Solver-fast's grid for ``nfe`` evaluations: :math:`\\lfloor N/3\\rfloor + 2` levels
    uniform in :math:`\\log\\sigma` from ``sigma_max`` to ``sigma_min``, then 0 (the final
    denoising step, one more evaluation)."""
    m = len(dpm_fast_orders(nfe))
    check_positive("sigma_min", sigma_min)
    check_positive("sigma_max", sigma_max)
    if not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be below sigma_max; got {sigma_min} >= {sigma_max}.")
    lam = np.linspace(-np.log(sigma_max), -np.log(sigma_min), m + 1)
    return jnp.asarray(np.concatenate([np.exp(-lam), [0.0]]))


class DPMFast(AbstractSolver):
    """DPM-Solver-fast (k-diffusion ``dpm_fast``): singlestep DPM-Solver-3 steps with the order
    schedule of :func:`dpm_fast_orders` (see the module), on the grid of :func:`dpm_fast_sigmas`.

    ``nfe`` fixes the orders of the last steps (``3, ..., 3, 2, 1`` for ``nfe`` divisible by 3,
    else ``3, ..., 3, nfe % 3``), counted back from the grid's last positive level, so any grid
    works; on :func:`dpm_fast_sigmas` ``(nfe, ...)`` the steps use exactly ``nfe`` evaluations.
    """

    nfe: int = eqx.field(static=True, default=12)

    def __check_init__(self):
        check_int("DPMFast nfe", self.nfe, minimum=1)

    def _order(self, ctx):
        # Steps before the last positive level, counted back: 0 = the last DPM step.
        from_end = jnp.argmax(ctx.sigmas == 0) - 2 - ctx.i
        tail = dpm_fast_orders(self.nfe)[-2:] if self.nfe % 3 == 0 else [self.nfe % 3]
        order = jnp.asarray(3)
        for back, o in enumerate(reversed(tail)):
            order = jnp.where(from_end == back, o, order)
        return order

    def step(self, ctx, x, state):
        sigma, sigma_next = ctx.sigma, ctx.sigma_next
        lam, lam_next = -jnp.log(sigma), -jnp.log(sigma_next)
        h = lam_next - lam

        def eps(y, lam_y):
            s = jnp.exp(-lam_y)
            return (y - ctx.denoise(y, s)) / s

        e0 = eps(x, lam)

        def first(x, e0):
            return x - sigma_next * jnp.expm1(h) * e0

        def second(x, e0):
            r1 = 0.5
            u1 = x - jnp.exp(-(lam + r1 * h)) * jnp.expm1(r1 * h) * e0
            e1 = eps(u1, lam + r1 * h)
            return first(x, e0) - sigma_next / (2 * r1) * jnp.expm1(h) * (e1 - e0)

        def third(x, e0):
            r1, r2 = 1.0 / 3.0, 2.0 / 3.0
            s1, s2 = jnp.exp(-(lam + r1 * h)), jnp.exp(-(lam + r2 * h))
            u1 = x - s1 * jnp.expm1(r1 * h) * e0
            e1 = eps(u1, lam + r1 * h)
            psi2 = jnp.expm1(r2 * h)
            u2 = x - s2 * psi2 * e0 - s2 * (r2 / r1) * (psi2 / (r2 * h) - 1) * (e1 - e0)
            e2 = eps(u2, lam + r2 * h)
            return first(x, e0) - sigma_next / r2 * (jnp.expm1(h) / h - 1) * (e2 - e0)

        order = self._order(ctx)
        x_next = ctx.cond(
            order == 1, first, lambda x, e0: ctx.cond(order == 2, second, third, x, e0), x, e0
        )
        return x_next, state


class LMSMultistepFinal(LMS):
    """:class:`LMS` whose last step into :math:`\\sigma = 0` is the Adams–Bashforth step too, as in
    k-diffusion's ``sample_lms`` and diffusers' ``LMSDiscreteScheduler`` (the extrapolant of
    :math:`\\hat\\epsilon` in :math:`\\sigma` integrated down to 0), instead of landing on the
    denoiser output (a first-order step). Same cost: one evaluation per step.
    """

    def final_step(self, ctx, x, state):
        return self.step(ctx.replace(sigma_next=jnp.zeros_like(ctx.sigma)), x, state)


class DPMSolverPP3MSDEKDiffusion(DPMSolverPPSDE):
    r"""k-diffusion's ``dpmpp_3m_sde`` exactly: :class:`DPMSolverPPSDE` ``(order=3)`` with its
    reference coefficient ``legacy_third_order=True``, the heun-form second-order warm-up step
    (:math:`c_1 = \phi_2`, k-diffusion has no midpoint form for 3M) and no lowered order on the
    last steps (``lower_order_final=False``; k-diffusion lowers only the step into 0).

    **Which is right.** For :math:`\hat x_0(\lambda)` quadratic the multistep divided differences
    are exact, :math:`D_1 = h\,m'` and :math:`D_2 = h^2m''/2`, and the exponential integrator's
    second-order term is :math:`m''\int_0^h w(u)\,u^2/2\,\mathrm{d}u = 2c_2D_2` with
    :math:`c_2 = 1/2 - \phi_2/h_\eta` (see :mod:`~jaxsolve.diffusion._solvers.dpm_solver`).
    k-diffusion (like the DPM-Solver repository and diffusers) weights :math:`D_2` by
    :math:`c_2`: half the correction, an :math:`O(h^3)` local error, so the method converges at
    second order only (at :math:`\eta = 0`, where it is deterministic DPM-Solver++(3M)).
    :class:`DPMSolverPPSDE` ``(order=3)`` keeps :math:`2c_2` and is third order; this class exists
    to reproduce k-diffusion's samples.
    """

    order: int = eqx.field(static=True, default=3)
    solver_type: str = eqx.field(static=True, default="heun")
    lower_order_final: bool = eqx.field(static=True, default=False)
    legacy_third_order: bool = eqx.field(static=True, default=True)


def brownian_tree_noise(key, x, sigmas, *, r=None, batch_ndim=1, tol=1e-5):
    r"""``noise(i, k)`` for :func:`~jaxsolve.diffusion.sample` from one Brownian path per sample.

    Each sample's path :math:`W` on :math:`[0, \max\sigma]` is a ``diffrax.VirtualBrownianTree``
    keyed by ``fold_in(key, b)`` (so a sample does not depend on the batch size), and draws are its
    normalised increments, :math:`(W(\sigma_{lo}) - W(\sigma_{hi}))/\sqrt{\sigma_{hi}-\sigma_{lo}}`:

    * ``r=None`` (one draw a step: ancestral samplers, :class:`DPMSolverPPSDE`): draw 0 of step
      ``i`` is the increment over ``[sigmas[i+1], sigmas[i]]``;
    * ``r`` set (two draws a step: :class:`DPMSolverPPSDE2S` with the same ``r``): draws 0 and 1
      are the increments over ``[sigma_s, sigmas[i]]`` and ``[sigmas[i+1], sigma_s]`` with
      :math:`\log\sigma_s = \log\sigma_i + r(\log\sigma_{i+1} - \log\sigma_i)`, which the
      solver joins by the Brownian bridge into the whole step's.

    The same key on a refined grid gives the same path, so a stochastic sampler converges as the
    steps grow (k-diffusion's ``BrownianTreeNoiseSampler``, which is what its SDE samplers use).

    Args:
        key: PRNG key.
        x: the initial state (its shape, batch axes and dtype).
        sigmas: the grid that :func:`~jaxsolve.diffusion.sample` runs on.
        r: the intermediate point of a two-draw solver, else ``None``.
        batch_ndim: leading batch axes of ``x``, as in ``sample``.
        tol: the tree's resolution in :math:`\sigma`.
    """
    if r is not None and not 0.0 < r <= 1.0:
        raise ValueError(f"r must lie in (0, 1] or be None; got {r!r}.")
    check_positive("tol", tol)
    x = jnp.asarray(x)
    sigmas = jnp.asarray(sigmas, x.dtype)
    batch_shape, event = x.shape[:batch_ndim], jax.ShapeDtypeStruct(x.shape[batch_ndim:], x.dtype)
    count = int(np.prod(batch_shape, dtype=np.int64))
    sample_keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(count))
    top = jnp.max(sigmas)

    def noise(i, k):
        if k not in ((0,) if r is None else (0, 1)):
            raise ValueError(
                f"brownian_tree_noise(r={r!r}) has {1 if r is None else 2} draw(s) a step; the "
                f"solver asked for draw {k} (pass r= for a two-draw solver)."
            )
        s = sigmas[i]
        # Past the grid's last positive level (a step never taken) any positive level will do.
        s_next = jnp.maximum(sigmas[i + 1], 1e-3 * s)
        if r is None:
            high, low = s, s_next
        else:
            mid = jnp.exp(jnp.log(s) + r * (jnp.log(s_next) - jnp.log(s)))
            high, low = (s, mid) if k == 0 else (mid, s_next)

        def one(sample_key):
            tree = diffrax.VirtualBrownianTree(0.0, top, tol=tol, shape=event, key=sample_key)
            return tree.evaluate(high, low)

        return (jax.vmap(one)(sample_keys) / jnp.sqrt(high - low)).reshape(x.shape)

    return noise
