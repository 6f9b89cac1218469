"""The reference solutions of the PINN benchmarks (tests/pinn/exact.py): the Cole-Hopf Burgers
solution against Basdevant et al.'s recorded maximum slope and the PDE by finite differences; the
ETDRK4 Allen-Cahn reference by self-convergence in the step and the resolution."""

import itertools
import math

import numpy as np
import pytest

from tests.pinn.exact import (
    allen_cahn_initial,
    allen_cahn_reference,
    burgers_cole_hopf,
    convection_exact,
)

NU = 0.01 / math.pi
X_BURGERS = np.linspace(-1.0, 1.0, 256)
T_BURGERS = np.linspace(0.0, 0.99, 100)


def _relative(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------
# Burgers (Cole-Hopf)
# ----------------------------------------------------------------------------------------------


def test_burgers_initial_and_boundary_values():
    x = np.linspace(-1.0, 1.0, 101)
    np.testing.assert_array_equal(burgers_cole_hopf(0.0, x), -np.sin(np.pi * x))
    u = burgers_cole_hopf(T_BURGERS[:, None], np.array([-1.0, 1.0])[None, :])
    assert np.max(np.abs(u)) < 1e-13
    # The solution is odd in x (u0 is, and the equation keeps the symmetry u(t, -x) = -u(t, x)).
    grid = burgers_cole_hopf(T_BURGERS[::9, None], X_BURGERS[None, :])
    np.testing.assert_allclose(grid, -grid[:, ::-1], rtol=0, atol=1e-13)


def test_burgers_quadrature_converged_on_the_evaluation_grid():
    t, x = T_BURGERS[::9, None], X_BURGERS[None, :]
    default = burgers_cole_hopf(t, x)
    assert default.shape == (12, 256)
    np.testing.assert_allclose(default, burgers_cole_hopf(t, x, num_nodes=200), rtol=0, atol=1e-13)


def test_burgers_solves_the_pde_by_finite_differences():
    rng = np.random.default_rng(0)
    t = rng.uniform(0.05, 1.0, 400)
    x = np.concatenate([rng.uniform(-0.95, 0.95, 360), rng.uniform(-0.02, 0.02, 40)])  # shock
    h = 1e-4

    def first(f):
        return (f(-2 * h) - 8 * f(-h) + 8 * f(h) - f(2 * h)) / (12 * h)

    def second(f):
        return (-f(-2 * h) + 16 * f(-h) - 30 * f(0) + 16 * f(h) - f(2 * h)) / (12 * h * h)

    u, u_x_exact = burgers_cole_hopf(t, x, derivative=True)
    u_t = first(lambda e: burgers_cole_hopf(t + e, x))
    u_x = first(lambda e: burgers_cole_hopf(t, x + e))
    u_xx = second(lambda e: burgers_cole_hopf(t, x + e))
    residual = u_t + u * u_x - NU * u_xx
    scale = np.abs(u_t) + np.abs(u * u_x) + np.abs(NU * u_xx)
    assert np.max(np.abs(residual) / scale) < 1e-6
    # The derivative under the integral sign agrees with the differences.
    assert np.max(np.abs(u_x - u_x_exact) / (1 + np.abs(u_x_exact))) < 1e-6


def test_burgers_maximum_slope_matches_basdevant():
    """Basdevant et al. (1986): max_t |u_x(t, 0)| = 152.00516, reached at t = 1.6037/pi."""

    def slope(t):
        return float(burgers_cole_hopf(t, 0.0, derivative=True)[1])  # negative: a steep shock

    # Golden-section search for the minimum of u_x(t, 0) (the steepest moment).
    low, high = 0.45, 0.56
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = slope(a), slope(b)
    while high - low > 1e-9:
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = slope(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = slope(b)
    t_star = (low + high) / 2
    assert round(t_star * math.pi, 4) == 1.6037
    assert round(-slope(t_star), 5) == 152.00516


def test_burgers_rejects_bad_arguments():
    with pytest.raises(ValueError, match="t must be non-negative"):
        burgers_cole_hopf(-0.1, 0.0)
    with pytest.raises(ValueError, match="nu"):
        burgers_cole_hopf(0.1, 0.0, nu=0.0)
    with pytest.raises(ValueError, match="num_nodes"):
        burgers_cole_hopf(0.1, 0.0, num_nodes=1000)
    with pytest.raises(ValueError, match="broadcast"):
        burgers_cole_hopf(np.zeros(3), np.zeros(4))


# ----------------------------------------------------------------------------------------------
# Convection
# ----------------------------------------------------------------------------------------------


def test_convection_exact_solves_the_advection_equation():
    t = np.linspace(0.0, 1.0, 7)[:, None]
    x = np.linspace(0.0, 2 * np.pi, 16, endpoint=False)[None, :]
    beta = 30.0
    u = convection_exact(t, x, beta)
    np.testing.assert_array_equal(u[0], np.sin(x[0]))
    np.testing.assert_allclose(convection_exact(t, x + 2 * np.pi, beta), u, atol=1e-12)
    h = 1e-5
    u_t = (convection_exact(t + h, x, beta) - convection_exact(t - h, x, beta)) / (2 * h)
    u_x = (convection_exact(t, x + h, beta) - convection_exact(t, x - h, beta)) / (2 * h)
    assert np.max(np.abs(u_t + beta * u_x)) < 1e-6


# ----------------------------------------------------------------------------------------------
# Allen-Cahn (ETDRK4 reference)
# ----------------------------------------------------------------------------------------------

_COARSE = 128  # one compiled program serves every default test below


def test_allen_cahn_fourth_order_in_time():
    times = np.array([0.0, 0.25, 0.5])
    x = -1.0 + 2.0 * np.arange(_COARSE) / _COARSE
    runs = [allen_cahn_reference(times, x, num_modes=_COARSE, dt=0.25 / m) for m in (8, 16, 32, 64)]
    differences = [_relative(a[1:], b[1:]) for a, b in itertools.pairwise(runs)]
    rates = [math.log2(d0 / d1) for d0, d1 in itertools.pairwise(differences)]
    assert all(3.7 < r < 4.3 for r in rates), (differences, rates)


def test_allen_cahn_grid_values_symmetry_and_periodicity():
    times = np.array([0.0, 0.3, 1.0])
    x = -1.0 + 2.0 * np.arange(_COARSE) / _COARSE
    u = allen_cahn_reference(times, x, num_modes=_COARSE, dt=0.01)
    np.testing.assert_array_equal(u[0], allen_cahn_initial(x))
    # u0 is even and the equation keeps it even: u(t, -x) = u(t, x) (on the grid, -x_n = x_{N-n}).
    np.testing.assert_allclose(u[:, 1:], u[:, :0:-1], rtol=0, atol=1e-12)
    # The Fourier series reads x modulo 2 and reproduces the grid values.
    shifted = allen_cahn_reference(times, x + 2.0, num_modes=_COARSE, dt=0.01)
    np.testing.assert_allclose(shifted, u, rtol=0, atol=1e-12)
    # A repeated time gives the same state twice.
    twice = allen_cahn_reference(np.array([0.0, 0.3, 0.3, 1.0]), x, num_modes=_COARSE, dt=0.01)
    np.testing.assert_array_equal(twice[[0, 1, 3]], u)
    np.testing.assert_array_equal(twice[1], twice[2])
    # The fronts: the solution saturates towards the stable states +-1 (|u| <= 1 + round-off).
    assert np.max(np.abs(u)) < 1 + 1e-6 and np.max(np.abs(u[-1])) > 0.99


def test_allen_cahn_rejects_bad_arguments():
    x = np.linspace(-1, 1, 4)
    with pytest.raises(ValueError, match="t_eval"):
        allen_cahn_reference(np.array([0.5, 0.1]), x)
    with pytest.raises(ValueError, match="num_modes"):
        allen_cahn_reference(np.array([0.1]), x, num_modes=101)
    with pytest.raises(ValueError, match="dt"):
        allen_cahn_reference(np.array([0.1]), x, dt=0.0)


@pytest.mark.slow
def test_allen_cahn_reference_converged_at_its_default_setting():
    """Self-convergence on the usual evaluation grid (201 times, 512 points with both ends): the
    default (2048 modes, dt = 1e-3) differs from 4096 modes and from dt = 5e-4 by far less than
    1e-3 relative. In the resolution the differences fall at second order (the kink of the
    periodic extension of u0 at x = +-1, aliased at early times)."""
    t = np.linspace(0.0, 1.0, 201)
    x = np.linspace(-1.0, 1.0, 512)
    by_modes = {n: allen_cahn_reference(t, x, num_modes=n) for n in (1024, 2048, 4096)}
    diffs = [_relative(by_modes[n], by_modes[2 * n]) for n in (1024, 2048)]
    assert diffs[-1] < 5e-6, diffs
    assert 1.7 < math.log2(diffs[0] / diffs[1]) < 2.3, diffs
    # By t = 1 the fronts have settled between the stable states +-1, which attract: the early
    # errors have contracted.
    assert _relative(by_modes[1024][-1], by_modes[2048][-1]) < 1e-9
    half_step = allen_cahn_reference(t, x, dt=5e-4)
    assert _relative(by_modes[2048], half_step) < 1e-9
