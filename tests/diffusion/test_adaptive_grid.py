"""The adaptive solver on the driver: which grid levels it integrates between, ``n_steps``, and
what a run that ran out of attempts returns (checked against the Gaussian oracle's exact flow)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

SMAX, SMIN = 40.0, 0.01


def _gaussian(mean=(1.0, -2.0), cov=((2.0, 0.3), (0.3, 0.5))):
    return Gaussian(jnp.asarray(mean), jnp.asarray(cov))


def _exact(g, x0):
    """The probability-flow map from SMAX to SMIN, then the denoiser at SMIN (what the adaptive
    solver's run approximates)."""
    return g.denoise(g.ode_solution(x0, SMAX, SMIN), SMIN)


def test_adaptive_solver_ends_at_the_last_positive_level_of_any_grid(x64):
    # It integrated from sigmas[0] to sigmas[1] and denoised there, whatever followed: on a
    # 3-step Karras grid the "sample" was D(x, sigmas[1]), near the mean, reported as success.
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(0), 3, sigma=SMAX)
    solver = jd.DPMAdaptive(rtol=1e-4, atol=1e-5)
    run = lambda grid: jd.sample(g, x0, grid, solver, max_steps=60, full_output=True)
    base = run(jnp.array([SMAX, SMIN, 0.0]))
    assert base.result == RESULTS.successful
    np.testing.assert_allclose(np.asarray(base.value), np.asarray(_exact(g, x0)), atol=1e-3)
    # A zero-padded grid and a longer one (the same length: one compiled program).
    for grid in [jnp.array([SMAX, SMIN, 0.0, 0.0]), jd.karras_sigmas(3, SMIN, SMAX)]:
        out = run(grid)
        assert out.result == RESULTS.successful
        # The same integration in lambda (the levels in between are not visited), up to the
        # round-off of the Karras grid's last level.
        np.testing.assert_allclose(np.asarray(out.value), np.asarray(base.value), rtol=1e-12)
        assert int(out.nfe) == int(base.nfe)


def test_adaptive_solver_refuses_n_steps():
    # n_steps was ignored: the run went to the end of the grid and reported success.
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(1), 2, sigma=SMAX)
    with pytest.raises(ValueError, match="n_steps is for solvers that take one step per grid"):
        jd.sample(g, x0, jnp.array([SMAX, SMIN, 0.0]), jd.DPMAdaptive(), max_steps=50, n_steps=1)


def test_running_out_of_attempts_gives_no_plausible_sample_or_gradient():
    # With throw=False the state where the attempts ran out (partway down the flow) came back as
    # the value, with a finite gradient.
    x0 = _gaussian().sample(jax.random.PRNGKey(2), 2, sigma=SMAX)

    def loss(mean):
        sol = jd.sample(
            _gaussian(mean, cov=(2.0, 0.5)),  # diagonal: no eigendecomposition to differentiate
            x0,
            jnp.array([SMAX, SMIN, 0.0]),
            jd.DPMAdaptive(order=2),
            max_steps=3,
            throw=False,
            full_output=True,
        )
        return jnp.sum(sol.value), sol

    (value, sol), grad = jax.value_and_grad(loss, has_aux=True)(jnp.array([1.0, -2.0]))
    assert sol.result == RESULTS.max_steps_reached
    assert np.isnan(float(value))
    assert np.all(np.isnan(np.asarray(grad)))
