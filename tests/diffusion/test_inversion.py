"""DDIM / Euler / Heun inversion and DDIB translation against the Gaussian oracle's closed forms.

For data :math:`\\mathcal N(m, \\mathrm{diag}\\,\\lambda)` the noised marginal at level ``s`` is
:math:`\\mathcal N(m, \\mathrm{diag}(\\lambda + s^2))` and the probability-flow ODE transports each
coordinate affinely: :math:`x_s - m = \\sqrt{(\\lambda + s^2)/(\\lambda + s_0^2)}\\,(x_{s_0} - m)`.
The closed forms below are written from that, not from the oracle's ``ode_solution``.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._inversion import ddib_translate, invert
from jaxsolve.diffusion.analytic import Gaussian

MEAN_A, VAR_A = np.array([1.0, -2.0, 0.5]), np.array([0.5, 2.0, 1.0])
MEAN_B, VAR_B = np.array([-3.0, 0.0, 2.0]), np.array([4.0, 0.25, 1.5])
SIGMA_MIN, SIGMA_MAX = 0.002, 20.0


def _flow(x, mean, var, s_from, s_to):
    """Exact probability-flow map of a diagonal Gaussian from level s_from to s_to."""
    return mean + np.sqrt((var + s_to**2) / (var + s_from**2)) * (x - mean)


def _denoise_a(x, sigma):
    """The Gaussian A's exact denoiser (Tweedie), written out: cheaper to compile than the oracle."""
    return MEAN_A + VAR_A / (VAR_A + sigma**2) * (x - MEAN_A)


def _data(n=5):
    rng = np.random.default_rng(0)
    return MEAN_A + np.sqrt(VAR_A) * rng.standard_normal((n, 3))


def _ddim_by_hand(denoise, x, levels, heun):
    """The inversion written out step by step: DDIM's first step out of 0, then Euler / Heun."""
    x = x + (x - denoise(x, levels[1]))
    for s, t in itertools.pairwise(levels[1:]):
        d = (x - denoise(x, s)) / s
        if heun:
            x_e = x + (t - s) * d
            d = 0.5 * (d + (x_e - denoise(x_e, t)) / t)
        x = x + (t - s) * d
    return x


@pytest.mark.parametrize("solver", ["euler", "ddim", "heun"])
def test_steps_match_hand_written_recursion(x64, solver):
    x = _data()
    levels = [0.0, 0.3, 1.1, 4.0]
    sol = invert(_denoise_a, x, jnp.array(levels), solver, full_output=True)
    expected = _ddim_by_hand(_denoise_a, x, levels, solver == "heun")
    np.testing.assert_allclose(sol.value, expected, rtol=1e-13, atol=1e-13)
    # One evaluation out of 0, then one (Euler) or two (Heun) per step.
    assert int(sol.nfe) == (1 + 2 * 2 if solver == "heun" else 3)


@pytest.mark.slow
def test_grid_without_zero_starts_at_first_level(x64):
    """A grid starting at a positive level takes the method's own step throughout; the sampling
    half of DDIB then stops at that level (no final denoising)."""
    x = _data()
    levels = [0.3, 1.1, 4.0]
    z = invert(_denoise_a, x, jnp.array(levels), "euler")
    expected = x
    for s, t in itertools.pairwise(levels):
        expected = expected + (t - s) * (expected - _denoise_a(expected, s)) / s
    np.testing.assert_allclose(z, expected, rtol=1e-13, atol=1e-13)
    back = ddib_translate(_denoise_a, _denoise_a, x, jnp.array(levels), "euler")
    down = jd.sample(_denoise_a, z, jnp.array([4.0, 1.1, 0.3, 0.0]), jd.Euler(), n_steps=2)
    np.testing.assert_allclose(back, down, rtol=1e-13, atol=1e-13)


@pytest.mark.slow
def test_step_counts_as_data_one_compile(x64):
    """Padded grids reversed: one compiled program over step counts equals the recursion on each
    unpadded grid."""
    x = _data(2)

    def latent(n):
        grid = jd.karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, max_steps=6)
        return grid, invert(_denoise_a, x, grid[::-1], "heun")

    grids, latents = jax.jit(jax.vmap(latent))(jnp.array([3, 6]))
    for k, n in enumerate([3, 6]):
        levels = np.asarray(grids[k, : n + 1])[::-1]
        expected = _ddim_by_hand(_denoise_a, x, levels, heun=True)
        np.testing.assert_allclose(latents[k], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_ddib_between_gaussians_converges_to_closed_form(x64):
    """DDIB = source flow up to SIGMA_MAX composed with the target flow down: affine, and the
    Heun translation approaches it at second order as the steps double (one compile)."""
    source, target = Gaussian(MEAN_A, VAR_A), Gaussian(MEAN_B, VAR_B)
    x = _data()
    exact = _ddib_closed_form(x, SIGMA_MAX)
    counts = jnp.array([32, 64, 128])

    def translate(n):
        grid = jd.karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, max_steps=128)
        return ddib_translate(source, target, x, grid[::-1], "heun")

    out = jax.jit(jax.vmap(translate))(counts)
    errors = np.max(np.abs(np.asarray(out) - exact), axis=(1, 2))
    slopes = -np.diff(np.log2(errors))
    assert np.all(slopes > 1.8), (errors, slopes)
    assert errors[-1] < 1e-3, errors


def _ddib_closed_form(x, sigma_max):
    latent = _flow(x, MEAN_A, VAR_A, 0.0, sigma_max)
    return _flow(latent, MEAN_B, VAR_B, sigma_max, 0.0)


def test_ddib_closed_form_tends_to_transport_map():
    """The composed flow map tends to the optimal-transport map m_B + sqrt(C_B / C_A)(x - m_A)
    as the latent level grows (the means' imprint on the latent fades as 1/sigma_max)."""
    x = _data()
    transport = MEAN_B + np.sqrt(VAR_B / VAR_A) * (x - MEAN_A)
    gaps = [np.max(np.abs(_ddib_closed_form(x, s) - transport)) for s in (1e2, 1e3, 1e4)]
    np.testing.assert_allclose(np.diff(np.log10(gaps)), -1.0, atol=0.05)
    assert gaps[-1] < 1e-3


def _inversion_errors(solver, counts, max_steps):
    gauss = Gaussian(MEAN_A, VAR_A)
    x = _data()
    exact = _flow(x, MEAN_A, VAR_A, 0.0, SIGMA_MAX)
    rk = {"euler": jd.Euler(), "heun": jd.Heun()}[solver]

    def run(n):
        grid = jd.karras_sigmas(n, SIGMA_MIN, SIGMA_MAX, max_steps=max_steps)
        z = invert(gauss, x, grid[::-1], solver)
        back = jd.sample(gauss, z, grid, rk)
        return z, back

    latents, backs = jax.jit(jax.vmap(run))(jnp.array(counts))
    latent_err = np.max(np.abs(np.asarray(latents) - exact), axis=(1, 2))
    round_trip_err = np.max(np.abs(np.asarray(backs) - x), axis=(1, 2))
    return latent_err, round_trip_err


@pytest.mark.slow
@pytest.mark.parametrize("solver, order", [("euler", 1), ("heun", 2)])
def test_order_of_inversion_and_round_trip(x64, solver, order):
    """The latent converges to the exact flow map at the method's order; inversion followed by
    sampling on the same grid returns the data, the error falling at least at that order (Heun's
    round trip is superconvergent on this linear ODE: its two halves are adjoint)."""
    counts = [16, 32, 64, 128]
    latent_err, round_trip_err = _inversion_errors(solver, counts, 128)
    latent_slopes = -np.diff(np.log2(latent_err))
    trip_slopes = -np.diff(np.log2(round_trip_err))
    np.testing.assert_allclose(latent_slopes, order, atol=0.05)
    assert np.all(trip_slopes > order - 0.1), trip_slopes
    assert latent_err[-1] < (0.8 if order == 1 else 0.025), latent_err


def test_closed_form_latent_is_oracle_flow(x64):
    """The closed form the order test converges to is the oracle's own flow map."""
    x = _data()
    gauss = Gaussian(MEAN_A, VAR_A)
    exact = _flow(x, MEAN_A, VAR_A, 0.0, SIGMA_MAX)
    np.testing.assert_allclose(gauss.ode_solution(x, 0.0, SIGMA_MAX), exact, rtol=1e-12)


@pytest.mark.parametrize(
    "grid, message",
    [
        ([0.0, 2.0, 1.0], "increasing"),
        ([0.0, 1.0, 1.0], "increasing"),
        ([-0.5, 1.0, 2.0], "non-negative"),
        ([0.0, 1.0, np.inf], "finite"),
        ([0.0, 0.0], "positive"),
        ([1.0], "2 entries"),
    ],
)
def test_bad_grid_raises_naming_sigmas(grid, message):
    with pytest.raises(ValueError, match=f"sigmas.*{message}"):
        invert(_denoise_a, _data(), np.array(grid))
    with pytest.raises(ValueError, match=f"sigmas.*{message}"):
        ddib_translate(_denoise_a, _denoise_a, _data(), np.array(grid))


def test_bad_solver_raises_naming_solver():
    with pytest.raises(ValueError, match="solver"):
        invert(_denoise_a, _data(), np.array([0.0, 1.0]), "rk45")
    with pytest.raises(ValueError, match="solver"):
        invert(_denoise_a, _data(), np.array([0.0, 1.0]), jd.DPMSolverPP())
