"""Parity of the LCM and TCD samplers with diffusers' ``LCMScheduler`` / ``TCDScheduler``.

The recordings (tests/diffusion/data/diffusers_fewstep.json) were made by
scripts/record_diffusers_fewstep.py: each diffusers scheduler runs its own loop with the exact
noise prediction of a 2-D Gaussian mixture and a recorded noise table. Here jaxsolve's sampler runs
the same grid from the same initial state and noise with the mixture oracle as its denoiser; every
intermediate state and the output must agree.
"""

import json
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import GaussianMixture
from jaxsolve.diffusion.fewstep import LCMSampler, TCDSampler, lcm_sigmas, lcm_timesteps

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "diffusers_fewstep.json").read_text())
META = DATA["meta"]


def _oracle():
    mix = META["mixture"]
    return GaussianMixture(np.array(mix["weights"]), np.array(mix["means"]), np.array(mix["covs"]))


def _run(record, dtype):
    schedule = jd.DiscreteVPSchedule(alphas_cumprod=np.asarray(META["alphas_cumprod"], dtype))
    n = record["n"]
    grid = lcm_sigmas(schedule, n, original_inference_steps=META["original_inference_steps"])
    if record["name"] == "lcm":
        solver = LCMSampler(schedule, timestep_scaling=record["timestep_scaling"])
    else:
        solver = TCDSampler(schedule, gamma=record["eta"])
        # diffusers' last TCD step lands on the table's first level: end the grid there (module).
        grid = jnp.concatenate([grid[:-1], schedule.sigmas[:1], grid[-1:]])
    table = jnp.asarray(record["noise"], dtype)
    out = jd.sample(
        _oracle(),
        jnp.asarray(record["x_init_ve"], dtype),
        grid,
        solver,
        noise=lambda i, k: table[jnp.minimum(i, table.shape[0] - 1)],
        full_output=True,
        save_trajectory=True,
    )
    return schedule, out


def _id(record):
    eta = "" if record["eta"] is None else f"-eta{record['eta']}"
    return f"{record['name']}{record['timestep_scaling']:g}-n{record['n']}{eta}"


def _check(record, dtype, atol):
    schedule, out = _run(record, dtype)
    traj = np.asarray(out.trajectory)
    n = record["n"]
    # The state after each of the first n - 1 steps (VE scale) ...
    for i, theirs in enumerate(record["states_ve"]):
        np.testing.assert_allclose(traj[i + 1], theirs, rtol=0, atol=atol)
    # ... and the output: LCM's is the last consistency estimate; TCD's the state at the table's
    # first level, in VP scale (the trajectory's entry there).
    if record["name"] == "lcm":
        ours = np.asarray(out.value)
        assert int(out.nfe) == n
    else:
        ours = traj[n] / np.sqrt(1.0 + float(schedule.sigmas[0]) ** 2)
    np.testing.assert_allclose(ours, record["final"], rtol=0, atol=atol)


# Two runs by default (4 steps: noise on three of them, LCM with a visible skip term, TCD with
# gamma between 0 and 1); the rest, and the float32 runs, are slow.
_DEFAULT = {"lcm0.01-n4"}  # TCD's runs under -m slow (default-run budget)
_PARAMS = [
    pytest.param(r, id=_id(r), marks=() if _id(r) in _DEFAULT else pytest.mark.slow)
    for r in DATA["records"]
]


def test_timesteps_match_diffusers():
    for record in DATA["records"]:
        np.testing.assert_array_equal(lcm_timesteps(record["n"]), record["timesteps"])
    with pytest.raises(ValueError, match="num_steps"):
        lcm_timesteps(51)
    schedule = jd.DiscreteVPSchedule(alphas_cumprod=np.asarray(META["alphas_cumprod"]))
    with pytest.raises(ValueError, match="gamma"):
        TCDSampler(schedule, gamma=1.5)
    with pytest.raises(TypeError, match="DiscreteVPSchedule"):
        LCMSampler(jd.VESchedule())


@pytest.mark.parametrize("record", _PARAMS)
def test_matches_diffusers_float64(x64, record):
    # diffusers itself runs in float32 on VE states of size ~15 at t = 999: its round-off (a few
    # 1e-6) bounds the agreement.
    _check(record, np.float64, 1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("record", DATA["records"], ids=_id)
def test_matches_diffusers_float32(record):
    # Both sides in float32: a few ulps of states up to ~50 in VE scale (ulp ~4e-6).
    _check(record, np.float32, 3e-5)
