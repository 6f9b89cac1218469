"""Parity with diffusers' schedulers on an exact Gaussian-mixture model.

The recordings (tests/diffusion/data/diffusers_samplers.json) were made by
scripts/record_diffusers_samplers.py: each diffusers scheduler runs its own loop with the mixture's
exact prediction and a recorded noise table. Here jaxsolve's sampler runs the same grid from the
same initial state (and noise) with the mixture oracle as its denoiser, the solver chosen from the
recorded scheduler config by :func:`jaxsolve.diffusion.from_diffusers` (whose grids, initial states
and model adapters tests/diffusion/test_from_diffusers.py checks).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._from_diffusers import from_diffusers
from jaxsolve.diffusion._thresholding import TransformedDenoiser
from jaxsolve.diffusion.analytic import GaussianMixture
from jaxsolve.diffusion.fewstep._lcm import TCDSampler

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "diffusers_samplers.json").read_text())


def _id(record):
    return f"{record['name']}-n{record['n']}"


def _replayed(rows):
    """The recorded draws as the driver's ``noise(i, k)``: row i of a table of one draw per step
    (``(steps, *shape)``), or draw k of row i of one with several (``(steps, draws, *shape)``,
    DPMSolverSDE's two Brownian increments)."""
    table = jnp.asarray(rows)
    several = table.ndim == 4  # the records' samples are (batch, 2)
    return lambda i, k: table[jnp.minimum(i, table.shape[0] - 1)][k if several else ...]


# Schedulers recorded at a second step count whose default run is the first one only.
_ONE_COUNT_BY_DEFAULT = (
    "PNDMScheduler",
    "DDPMScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "FlowMatchHeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "DPMSolverSDEScheduler",
    "LCMScheduler",
    "TCDScheduler",
    "CMStochasticIterativeScheduler",
)


_FIRST_COUNT = {}
for _r in DATA["records"]:
    _FIRST_COUNT.setdefault(_r["name"], _r["n"])


def _slow(record):
    """The records made for from_diffusers' options (names "cfg-...") repeat solvers covered here
    on other grids, and the second step count of the later-added schedulers repeats the first:
    they run with --slow (and end to end in test_from_diffusers.py)."""
    if record["name"].startswith("cfg-"):
        return True
    later = record["config"]["_class_name"] in _ONE_COUNT_BY_DEFAULT
    return later and record["n"] != _FIRST_COUNT[record["name"]]


@pytest.mark.parametrize(
    "record",
    [pytest.param(r, marks=pytest.mark.slow) if _slow(r) else r for r in DATA["records"]],
    ids=_id,
)
def test_matches_diffusers(x64, record):
    mix = DATA["meta"]["mixture"]
    oracle = GaussianMixture(
        np.array(mix["weights"]), np.array(mix["means"]), np.array(mix["covs"])
    )
    grid = jnp.asarray(record["grid"])
    x0 = jnp.asarray(record["x_init_ve"])
    noise = None
    if record["noise"]:  # (a one-step consistency run draws nothing)
        noise = _replayed(record["noise"])
    res = from_diffusers(
        record["config"],
        record["n"],
        eta=record["step_kwargs"].get("eta"),
        mu=record["set_timesteps"].get("mu"),
    )
    if isinstance(res.solver, TCDSampler):
        # TCD's step reads its intermediate level off the model's table (the level of timestep
        # floor((1 - gamma) t_next)); diffusers' float32 table differs from it by ~1e-5 in
        # relative terms near the top, so it runs on its own table's levels (which
        # test_from_diffusers checks against the recorded ones).
        grid = res.sigmas
    denoiser = oracle
    if res.denoised_transform is not None:  # a rule diffusers applies to x0_hat (a clamp)
        denoiser = TransformedDenoiser(oracle, res.denoised_transform)
    out = jd.sample(
        denoiser,
        x0,
        grid,
        res.solver,
        noise=noise,
        key=None if noise is not None else jax.random.PRNGKey(0),
        full_output=True,
        save_trajectory=True,
    )
    ours = out.trajectory[grid.shape[0] - 2] if record["ends_at_sigma_min"] else out.value
    # In VE scale: diffusers' VP latents at a last level s_min > 0 carry a factor 1/sqrt(1+s^2).
    theirs = np.asarray(record["final_ve"])
    if record["name"].startswith("unipc") and record["name"].endswith("bh1"):
        # diffusers' UniPC-bh1 multiplies B(h) = h = -inf by 0 on its last step into sigma = 0 and
        # returns NaN; the states before that step must still agree, and ours ends finite.
        assert np.all(np.isnan(theirs))
        assert np.all(np.isfinite(np.asarray(out.value)))
        ours, theirs = out.trajectory[grid.shape[0] - 2], np.asarray(record["penultimate_ve"])
    # diffusers runs in float32: a few float32 ulps of round-off per step on states of size up to
    # sigma_max ~ 157 (in VE scale) leave differences of ~1e-5 at the end.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)
