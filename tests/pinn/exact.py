r"""Reference solutions of the PINN benchmarks (used by the tests and ``benchmarks/bench_pinn.py``).

* :func:`burgers_cole_hopf`: viscous Burgers on :math:`[-1, 1]` with :math:`u_0 = -\sin(\pi x)`,
  exactly, by the Cole-Hopf integral evaluated with Gauss-Hermite quadrature ("Spectral and finite
  difference solutions of the Burgers equation", Basdevant et al.).
* :func:`convection_exact`: :math:`u_t + \beta u_x = 0` with :math:`u_0 = \sin x`.
* :func:`allen_cahn_reference`: periodic Allen-Cahn on :math:`[-1, 1]`, integrated with
  :mod:`jaxsolve.pde`'s ETDRK4 ("Fourth-Order Time-Stepping for Stiff PDEs", Kassam & Trefethen)
  at high resolution in float64 and interpolated spectrally onto the evaluation points.

All three return float64 NumPy arrays; the first two broadcast ``t`` against ``x`` (pass
``t[:, None]`` and ``x[None, :]`` for a grid ``u[i, j] = u(t[i], x[j])``).
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike, Float

from jaxsolve.pde import ETDRK, AbstractEquation, SpectralGrid

__all__ = [
    "AllenCahn",
    "allen_cahn_initial",
    "allen_cahn_reference",
    "burgers_cole_hopf",
    "convection_exact",
]

_MAX_HERMITE_NODES = 300  # numpy's hermgauss overflows in its weights beyond about 360 nodes
_CHUNK = 4096  # points per block in the quadrature (bounds memory at points x nodes)


def _real_array(name, value):
    try:
        out = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a real array; got {type(value).__name__}.") from error
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name} must be finite.")
    return out


def _positive_scalar(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}.")
    value = float(value)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and positive; got {value}.")
    return value


def _count(name, value, minimum, maximum=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}.")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}; got {value}.")
    return value


# ----------------------------------------------------------------------------------------------
# Burgers: the Cole-Hopf integral
# ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _hermite(num_nodes):
    """Gauss-Hermite nodes and the logarithms of their weights (read-only)."""
    z, w = np.polynomial.hermite.hermgauss(num_nodes)
    log_w = np.log(w)
    z.flags.writeable = log_w.flags.writeable = False
    return z, log_w


def burgers_cole_hopf(
    t: Float[ArrayLike, "*batch"],
    x: Float[ArrayLike, "*batch"],
    nu: float = 0.01 / math.pi,
    *,
    num_nodes: int = 128,
    derivative: bool = False,
) -> Float[np.ndarray, "*shape"] | tuple[Float[np.ndarray, "*shape"], Float[np.ndarray, "*shape"]]:
    r"""The exact solution of :math:`u_t + u u_x = \nu u_{xx}` on :math:`x \in [-1, 1]` with
    :math:`u(0, x) = -\sin(\pi x)` and :math:`u(t, \pm 1) = 0`.

    The Cole-Hopf transform :math:`u = -2\nu\,\partial_x \log\theta` turns Burgers into the heat
    equation for :math:`\theta`; with the heat kernel the solution is

    .. math:: u(t, x) = -\frac{\int \sin(\pi(x - \eta))\, f(x - \eta)\, e^{-\eta^2 / 4\nu t}
        \,d\eta}{\int f(x - \eta)\, e^{-\eta^2 / 4\nu t}\,d\eta}, \qquad
        f(y) = e^{-\cos(\pi y) / 2\pi\nu}.

    With :math:`\eta = \sqrt{4\nu t}\,z` both integrals carry the weight :math:`e^{-z^2}` and are
    evaluated by Gauss-Hermite quadrature on ``num_nodes`` nodes, in float64. The exponent
    :math:`\log w_j - \cos(\pi y_j)/2\pi\nu` is shifted by its maximum over the nodes before
    exponentiating, so :math:`f` cannot overflow for any viscosity. At :math:`t = 0` the initial
    condition is returned exactly. This is the method of "Spectral and finite difference
    solutions of the Burgers equation" (Basdevant et al.).

    With ``derivative=True`` also returns :math:`u_x`, from differentiating both integrals in
    :math:`x` under the integral sign (:math:`f'(y) = f(y)\sin(\pi y)/2\nu`):
    :math:`u_x = -N'/D - u\,D'/D` for :math:`u = -N/D`.

    Args:
        t: times :math:`t \ge 0`; broadcast against ``x``.
        x: positions (the formula holds on :math:`[-1, 1]`).
        nu: the viscosity :math:`\nu > 0` (default :math:`0.01/\pi`).
        num_nodes: Gauss-Hermite nodes, 2 to 300 (the default reaches round-off for the default
            viscosity on :math:`t \in [0, 1]`; smaller viscosities need more).
        derivative: also return :math:`u_x`.

    Returns:
        ``u`` with the broadcast shape of ``t`` and ``x`` (float64), or ``(u, u_x)``.
    """
    t = _real_array("t", t)
    x = _real_array("x", x)
    if np.any(t < 0):
        raise ValueError("t must be non-negative.")
    nu = _positive_scalar("nu", nu)
    num_nodes = _count("num_nodes", num_nodes, 2, _MAX_HERMITE_NODES)
    if not isinstance(derivative, bool):
        raise TypeError(f"derivative must be a bool; got {type(derivative).__name__}.")
    try:
        t, x = np.broadcast_arrays(t, x)
    except ValueError as error:
        raise ValueError(
            f"t and x must broadcast together; got shapes {t.shape} and {x.shape}."
        ) from error
    shape = t.shape
    t, x = t.ravel(), x.ravel()
    z, log_w = _hermite(num_nodes)
    u = np.empty_like(t)
    ux = np.empty_like(t) if derivative else None
    for start in range(0, t.size, _CHUNK):
        block = slice(start, start + _CHUNK)
        scale = np.sqrt(4.0 * nu * t[block])[:, None]
        y = x[block, None] - scale * z  # (points, nodes)
        exponent = log_w - np.cos(np.pi * y) / (2.0 * np.pi * nu)
        # Shifted by the maximum (no overflow) and clipped at exp(-700), far below round-off
        # relative to the largest term: subnormal numbers would only slow the sums down.
        weight = np.exp(np.maximum(exponent - exponent.max(axis=-1, keepdims=True), -700.0))
        sine = np.sin(np.pi * y)
        den = weight.sum(-1)
        value = -(sine * weight).sum(-1) / den
        u[block] = value
        if derivative:
            d_num = ((np.pi * np.cos(np.pi * y) + sine * sine / (2.0 * nu)) * weight).sum(-1)
            d_den = (sine * weight).sum(-1) / (2.0 * nu)
            ux[block] = -d_num / den - value * d_den / den
    initial = t == 0
    u = np.where(initial, -np.sin(np.pi * x), u).reshape(shape)
    if not derivative:
        return u
    ux = np.where(initial, -np.pi * np.cos(np.pi * x), ux).reshape(shape)
    return u, ux


# ----------------------------------------------------------------------------------------------
# Convection
# ----------------------------------------------------------------------------------------------


def convection_exact(
    t: Float[ArrayLike, "*batch"], x: Float[ArrayLike, "*batch"], beta: float
) -> Float[np.ndarray, "*shape"]:
    r"""The solution :math:`u = \sin(x - \beta t)` of :math:`u_t + \beta u_x = 0`,
    :math:`u(0, x) = \sin x`, periodic on :math:`[0, 2\pi]`.

    Args:
        t: times; broadcast against ``x``.
        x: positions.
        beta: the wave speed.

    Returns:
        ``u`` with the broadcast shape of ``t`` and ``x`` (float64).
    """
    t = _real_array("t", t)
    x = _real_array("x", x)
    if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating, np.integer)):
        raise TypeError(f"beta must be a real number; got {type(beta).__name__}.")
    if not math.isfinite(float(beta)):
        raise ValueError(f"beta must be finite; got {beta}.")
    return np.sin(x - float(beta) * t)


# ----------------------------------------------------------------------------------------------
# Allen-Cahn: ETDRK4 on jaxsolve.pde
# ----------------------------------------------------------------------------------------------


class AllenCahn(AbstractEquation):
    r"""Allen-Cahn :math:`u_t = D u_{xx} + k(u - u^3)`, periodic with period ``length``.

    Split for :class:`jaxsolve.pde.ETDRK` as the linear symbol :math:`L_\xi = k - D\xi^2` and the
    nonlinear part :math:`\mathcal N(u) = -k u^3`, formed in physical space (no de-aliasing: at
    the resolution the reference uses, the modes a cubic aliases onto carry round-off).
    The grid of :mod:`jaxsolve.pde` is :math:`[0, L)`; :func:`allen_cahn_reference` shifts it to
    :math:`[-1, 1)`.
    """

    diffusion: Float[ArrayLike, ""]
    reaction: Float[ArrayLike, ""]
    lengths: Float[ArrayLike, ""]
    num_spatial_dims = 1

    def __init__(self, diffusion=1e-4, reaction=5.0, *, length=2.0):
        self.diffusion = diffusion
        self.reaction = reaction
        self.lengths = length

    def parameter_rules(self):
        return (
            ("diffusion", self.diffusion, "non-negative"),
            ("reaction", self.reaction, "finite"),
            *super().parameter_rules(),
        )

    def linear(self, grid):
        return self.diffusion * grid.laplacian() + self.reaction

    def nonlinear(self, uh, grid):
        u = grid.irfft(uh)
        return grid.rfft(-self.reaction * u * u * u)


def allen_cahn_initial(x: Float[ArrayLike, " n"]) -> Float[np.ndarray, " n"]:
    r"""The benchmark's initial condition :math:`u_0(x) = x^2 \cos(\pi x)` (float64)."""
    x = _real_array("x", x)
    return x * x * np.cos(np.pi * x)


@eqx.filter_jit
def _allen_cahn_states(u0, times, steps, diffusion, reaction):
    """The states at ``times`` (the first is ``u0``'s time): between consecutive times,
    ``steps[i]`` ETDRK4 steps of equal size, each interval with its own (traced) step."""
    n = u0.shape[-1]
    equation = AllenCahn(diffusion, reaction)

    def interval(uh, args):
        span, count = args
        stepper = ETDRK(equation, span / count, n, "etdrk4")
        uh = jax.lax.fori_loop(0, count, lambda _, v: stepper.step_spectral(v), uh)
        return uh, uh

    grid = SpectralGrid(n, equation.lengths)
    uh0 = grid.rfft(u0)
    _, rest = jax.lax.scan(interval, uh0, (jnp.diff(times), steps))
    return jnp.concatenate([uh0[None], rest], axis=0)


def allen_cahn_reference(
    t_eval: Float[ArrayLike, " nt"],
    x_eval: Float[ArrayLike, " nx"],
    *,
    diffusion: float = 1e-4,
    reaction: float = 5.0,
    num_modes: int = 2048,
    dt: float = 1e-3,
) -> Float[np.ndarray, "nt nx"]:
    r"""Reference solution of the Allen-Cahn benchmark
    :math:`u_t = 10^{-4} u_{xx} - 5u^3 + 5u`, :math:`u(0, x) = x^2\cos(\pi x)`, periodic on
    :math:`[-1, 1]`.

    Integrated pseudo-spectrally with :class:`jaxsolve.pde.ETDRK` (ETDRK4, Kassam & Trefethen's
    "Fourth-Order Time-Stepping for Stiff PDEs") on ``num_modes`` equispaced points
    :math:`x_n = -1 + 2n/N`, in float64. The run stops exactly at every requested time: the
    interval between consecutive times is cut into the fewest equal steps no longer than ``dt``.
    The state is then evaluated at ``x_eval`` from its Fourier series (exact at the grid points);
    at :math:`t = 0` the initial condition is returned exactly. The periodic extension of
    :math:`u_0` has a kink at :math:`x = \pm 1` (:math:`u_0'` jumps from :math:`-2` to
    :math:`2`): aliased at early times, it makes the convergence in ``num_modes`` algebraic
    (second order) rather than spectral; the error is largest while the kink diffuses and
    contracts once the fronts settle between the stable states :math:`\pm 1`.

    Args:
        t_eval: times in :math:`[0, \infty)`, non-decreasing.
        x_eval: positions (read modulo the period 2).
        diffusion: :math:`D` (default :math:`10^{-4}`).
        reaction: :math:`k` (default 5).
        num_modes: grid points :math:`N` (even, at least 8).
        dt: the largest time step.

    Returns:
        ``u[i, j] = u(t_eval[i], x_eval[j])``, float64.
    """
    t_eval = _real_array("t_eval", t_eval)
    x_eval = _real_array("x_eval", x_eval)
    if t_eval.ndim != 1 or t_eval.size == 0:
        raise ValueError(f"t_eval must be a non-empty 1-D array; got shape {t_eval.shape}.")
    if x_eval.ndim != 1:
        raise ValueError(f"x_eval must be a 1-D array; got shape {x_eval.shape}.")
    if np.any(t_eval < 0) or np.any(np.diff(t_eval) < 0):
        raise ValueError("t_eval must be non-negative and non-decreasing.")
    if isinstance(diffusion, bool) or not isinstance(diffusion, (int, float, np.floating)):
        raise TypeError(f"diffusion must be a real number; got {type(diffusion).__name__}.")
    if not (math.isfinite(diffusion) and diffusion >= 0):
        raise ValueError(f"diffusion must be finite and non-negative; got {diffusion}.")
    if isinstance(reaction, bool) or not isinstance(reaction, (int, float, np.floating)):
        raise TypeError(f"reaction must be a real number; got {type(reaction).__name__}.")
    if not math.isfinite(reaction):
        raise ValueError(f"reaction must be finite; got {reaction}.")
    num_modes = _count("num_modes", num_modes, 8)
    if num_modes % 2:
        raise ValueError(f"num_modes must be even; got {num_modes}.")
    dt = _positive_scalar("dt", dt)

    times = np.unique(t_eval)
    if times[0] != 0.0:
        times = np.concatenate([[0.0], times])
    spans = np.diff(times)
    steps = np.maximum(1, np.ceil(spans / dt * (1 - 1e-12))).astype(np.int64)
    grid_x = -1.0 + 2.0 * np.arange(num_modes) / num_modes
    with jax.enable_x64(True):
        coefficients = _allen_cahn_states(
            jnp.asarray(allen_cahn_initial(grid_x)[None]),
            jnp.asarray(times),
            jnp.asarray(steps, dtype=jnp.int32),
            jnp.asarray(float(diffusion)),
            jnp.asarray(float(reaction)),
        )
        coefficients = np.asarray(coefficients)[:, 0]  # (times, N // 2 + 1)
    if not np.all(np.isfinite(coefficients)):
        raise FloatingPointError("allen_cahn_reference: the ETDRK4 run became non-finite.")
    # Fourier series on [-1, 1): u(x) = sum_k c_k exp(i pi k (x + 1)), real data (rfft layout).
    k = np.arange(num_modes // 2 + 1)
    weights = np.full(k.shape, 2.0)
    weights[0] = 1.0
    weights[-1] = 1.0  # the Nyquist mode appears once (as a cosine)
    phase = np.exp(1j * np.pi * np.outer(x_eval + 1.0, k))  # (nx, modes)
    values = np.real(coefficients @ (weights * phase).T)
    values[times == 0.0] = allen_cahn_initial(np.mod(x_eval + 1.0, 2.0) - 1.0)  # periodic u0
    return values[np.searchsorted(times, t_eval)]
