"""The stochastic samplers added for diffusers / k-diffusion users, under the driver's promises:
a sample does not depend on the batch it is drawn in (noise is folded per sample from the key),
and step counts and guidance scales sweep under one ``vmap`` with one trace, each entry equal to
its own run."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

SMIN, SMAX = 0.02, 20.0
COUNTS = (3, 5, 7)

SOLVERS = {
    "DDPM-fixed_large": lambda: jd.DDPM(variance_type="fixed_large"),
    "DDPM-fixed_small_log": lambda: jd.DDPM(variance_type="fixed_small_log"),
    "DPMSolverSDE-2": lambda: jd.DPMSolverSDE(order=2),
    "DPM2Ancestral": lambda: jd.DPM2Ancestral(),
    "DPMSolverPP2SAncestral": lambda: jd.DPMSolverPP2SAncestral(),
    "DPMSolverPPSDE2S": lambda: jd.DPMSolverPPSDE2S(),
    "SASolver-3-3": lambda: jd.SASolver(3, 3, tau=1.0),
}
DEFAULT = {"DDPM-fixed_large", "DPMSolverSDE-2"}


def _params(default=DEFAULT):
    return [
        name if name in default else pytest.param(name, marks=pytest.mark.slow) for name in SOLVERS
    ]


def _problem():
    cond = Gaussian(jnp.array([1.0, -0.5]), jnp.array([[0.3, 0.1], [0.1, 0.2]]))
    uncond = Gaussian(jnp.zeros(2), 4.0 * jnp.eye(2))
    x0 = uncond.sample(jax.random.PRNGKey(0), 5, sigma=SMAX)
    return cond, uncond, x0


@pytest.mark.parametrize("name", _params())
def test_sample_does_not_depend_on_the_batch(x64, name):
    cond, _, x0 = _problem()
    grid = jd.karras_sigmas(6, SMIN, SMAX)
    key = jax.random.PRNGKey(3)
    whole = jd.sample(cond, x0, grid, SOLVERS[name](), key=key)
    first = jd.sample(cond, x0[:2], grid, SOLVERS[name](), key=key)
    np.testing.assert_allclose(whole[:2], first, rtol=1e-12, atol=1e-12)
    # The noise is drawn: another key moves every sample.
    other = jd.sample(cond, x0, grid, SOLVERS[name](), key=jax.random.PRNGKey(4))
    assert np.all(np.abs(np.asarray(other - whole)).max(-1) > 1e-6)


# Each sweep compiles a vmapped sampler (~5 s): CI runs two (tests/ci_checks.txt), -m slow all.
@pytest.mark.parametrize("name", _params(default=()))
def test_steps_and_guidance_sweep_in_one_compile(x64, name):
    cond, uncond, x0 = _problem()
    key = jax.random.PRNGKey(5)
    grids = np.zeros((len(COUNTS), max(COUNTS) + 1))
    for r, n in enumerate(COUNTS):
        grids[r, : n + 1] = np.asarray(jd.karras_sigmas(n, SMIN, SMAX))
    scales = jnp.array([1.0, 2.5, 4.0])
    traces = []

    def run(sigmas, w):
        traces.append(None)
        return jd.sample(jd.cfg(cond, uncond, w), x0, sigmas, SOLVERS[name](), key=key)

    swept = jax.jit(jax.vmap(run))(jnp.asarray(grids), scales)
    assert len(traces) == 1
    for r, n in enumerate(COUNTS):
        grid = jd.karras_sigmas(n, SMIN, SMAX)
        ref = jd.sample(jd.cfg(cond, uncond, scales[r]), x0, grid, SOLVERS[name](), key=key)
        np.testing.assert_allclose(swept[r], ref, rtol=1e-10, atol=1e-10)
