"""Solver and denoiser options documented as "may be traced" are checked when the program runs,
as concrete ones are when the object is built: a sweep with one value out of range raises
instead of sampling with it, and the valid members equal the concrete runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

_G = Gaussian(jnp.array([1.0, -2.0]), jnp.array([2.0, 0.5]))
_X = 10.0 * jax.random.normal(jax.random.PRNGKey(0), (4, 2))
_GRID = jd.karras_sigmas(4, 0.01, 10.0)

# name: (make(value) -> (denoiser, solver), a valid value, out-of-range values, message).
# Before, each out-of-range traced value sampled silently: a clip range of -1 clipped every
# denoised value to one number, a quantile ratio of 1.5 extrapolated, a negative shift window
# moved every level the wrong way.
_CASES = {
    "heavy_ball_beta": (
        lambda v: (_G, jd.HeavyBall(jd.DPMSolverPP(order=2), v)),
        0.8,
        [1.5, 0.0],
        "HeavyBall beta must lie in \\(0, 1\\]",
    ),
    "bdia_gamma": (lambda v: (_G, jd.BDIA(v)), 0.5, [1.5, -0.5], "BDIA gamma must lie in"),
    "time_shift_window": (
        lambda v: (_G, jd.TimeShift(jd.Euler(), window=v)),
        0.1,
        [-0.1],
        "TimeShift window must be non-negative",
    ),
    "time_shift_cutoff": (
        lambda v: (_G, jd.TimeShift(jd.Euler(), cutoff_sigma=v)),
        0.5,
        [-1.0],
        "TimeShift cutoff_sigma must be non-negative",
    ),
    "dynamic_threshold_ratio": (
        lambda v: (jd.dynamic_thresholding(_G, v), jd.Euler()),
        0.9,
        [1.5, -0.2],
        "ratio must lie in \\[0, 1\\]",
    ),
    "dynamic_threshold_max_value": (
        lambda v: (jd.dynamic_thresholding(_G, 0.9, v), jd.Euler()),
        2.0,
        [-1.0],
        "max_value must be positive",
    ),
    "clip_range": (
        lambda v: (jd.clip_denoised(_G, v), jd.Euler()),
        1.5,
        [-1.0, 0.0],
        "clip_range must be positive",
    ),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_traced_option_out_of_range_raises_when_it_runs(name):
    make, good, bads, message = _CASES[name]

    def run(v):
        denoiser, solver = make(v)
        return jd.sample(denoiser, _X, _GRID, solver)

    swept = jax.jit(jax.vmap(run))
    out = swept(jnp.array([good, good]))
    np.testing.assert_allclose(np.asarray(out[1]), np.asarray(run(good)), rtol=1e-5, atol=1e-6)
    for bad in bads:
        with pytest.raises(ValueError):
            make(bad)  # concrete: refused when built
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(swept(jnp.array([good, bad])))
