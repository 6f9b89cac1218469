"""Record diffusers' ``LCMScheduler`` and ``TCDScheduler`` on an exact Gaussian-mixture model.

Each scheduler runs its own loop (as the LCM / TCD pipelines do) with a noise-prediction model whose
output is the *exact* prediction of the 2-D Gaussian mixture of
``scripts/record_diffusers_samplers.py`` (float64 NumPy, independent of jaxsolve). The noise drawn
inside ``step`` comes from a recorded table. The schedule table, timesteps, initial state (in VE
scale), noise, the state after every step and the final output go to a JSON file that the test
suite reads, so CI needs neither torch nor diffusers.

Run in an environment with the ``bench`` extra (``torch==2.13.0`` and diffusers):

    python scripts/record_diffusers_fewstep.py tests/diffusion/data/diffusers_fewstep.json
"""

import json
import sys

import diffusers
import numpy as np
import torch
from diffusers import LCMScheduler, TCDScheduler
from record_diffusers_samplers import BATCH, COVS, MEANS, WEIGHTS, gmm_denoise, patch_noise


def run(name, scheduler, n, *, seed, eta=None):
    scheduler.set_timesteps(n)
    timesteps = scheduler.timesteps.numpy().astype(np.int64)
    acp = scheduler.alphas_cumprod.numpy().astype(np.float64)
    table_sigmas = np.sqrt((1.0 - acp) / acp)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((BATCH, 2))
    table = rng.standard_normal((n, BATCH, 2))
    fake = patch_noise(scheduler, table)

    sample = torch.from_numpy(z).float()  # init_noise_sigma = 1: VP-scale latents
    x_init_ve = z / np.sqrt(acp[timesteps[0]])
    states_ve = []
    for i, t in enumerate(timesteps):
        a = np.sqrt(acp[t])
        s = table_sigmas[t]
        x_vp = sample.numpy().astype(np.float64)
        d = gmm_denoise(x_vp / a, s)
        eps = (x_vp - a * d) / np.sqrt(1.0 - acp[t])
        kwargs = {} if eta is None else {"eta": eta}
        sample = scheduler.step(torch.from_numpy(eps).float(), int(t), sample, **kwargs).prev_sample
        if i < n - 1:  # the state at the next timestep, in VE scale
            states_ve.append(
                (sample.numpy().astype(np.float64) / np.sqrt(acp[timesteps[i + 1]])).tolist()
            )
    return {
        "name": name,
        "n": n,
        "eta": eta,
        "timestep_scaling": float(scheduler.config.timestep_scaling),
        "timesteps": timesteps.tolist(),
        "x_init_ve": x_init_ve.tolist(),
        "noise": table[: max(fake.i, 1)].tolist(),
        "noise_draws": fake.i,
        "states_ve": states_ve,
        "final": sample.numpy().astype(np.float64).tolist(),
    }


def main(path):
    records = []
    acp = None
    for n in (1, 2, 4):
        sch = LCMScheduler()
        acp = sch.alphas_cumprod.numpy().astype(np.float64)
        records.append(run("lcm", sch, n, seed=100 + n))
        # At the default scaling (10) c_skip < 1e-7 on every timestep: a small scaling makes the
        # boundary condition's skip term visible in the recording.
        records.append(run("lcm", LCMScheduler(timestep_scaling=0.01), n, seed=150 + n))
        for eta in (0.0, 0.3, 1.0):
            records.append(
                run("tcd", TCDScheduler(), n, seed=200 + 10 * n + int(10 * eta), eta=eta)
            )
    meta = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "mixture": {"weights": WEIGHTS.tolist(), "means": MEANS.tolist(), "covs": COVS.tolist()},
        # Both schedulers' default table (scaled_linear betas 0.00085 .. 0.012, 1000 steps), float32.
        "alphas_cumprod": acp.tolist(),
        "original_inference_steps": 50,
    }
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": records}, f)
    print(f"wrote {len(records)} records to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/diffusion/data/diffusers_fewstep.json")
