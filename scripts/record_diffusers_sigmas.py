"""Record the timesteps and sigmas of diffusers' DPMSolverMultistepScheduler.

The test suite compares ``jaxsolve.diffusion.discrete_sigmas`` against these recorded arrays so
that CI needs neither torch nor diffusers. Regenerate with (in an environment with the ``bench``
extra, i.e. ``torch==2.13.0`` and diffusers):

    python scripts/record_diffusers_sigmas.py tests/diffusion/data/diffusers_dpmsolver_sigmas.json
"""

import json
import sys

import diffusers
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

CONFIGS = [
    {"beta_schedule": "linear"},  # diffusers' defaults: beta_start=1e-4, beta_end=0.02
    {
        "beta_schedule": "scaled_linear",
        "beta_start": 0.00085,
        "beta_end": 0.012,
    },  # Stable Diffusion
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "squaredcos_cap_v2", "lambda_min_clipped": -5.1},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1},
]
SPACINGS = ["linspace", "leading", "trailing"]
STEPS = [1, 2, 3, 5, 7, 10, 15, 20, 25, 26, 30, 46, 50, 60, 61, 100, 102, 250, 500, 999]


def _shortest(a):
    """float32 values written with the fewest digits that read back to the same float32."""
    return [float(str(v)) for v in np.asarray(a, dtype=np.float32)]


def main(path):
    records = []
    for config in CONFIGS:
        for spacing in SPACINGS:
            sched = DPMSolverMultistepScheduler(timestep_spacing=spacing, **config)
            for n in STEPS:
                sched.set_timesteps(n)
                records.append(
                    {
                        "config": config,
                        "spacing": spacing,
                        "n": n,
                        "timesteps": sched.timesteps.numpy().astype(int).tolist(),
                        "sigmas": _shortest(sched.sigmas.numpy()),
                    }
                )
        # The table itself, to separate table arithmetic from timestep selection.
        sched = DPMSolverMultistepScheduler(**config)
        records.append(
            {
                "config": config,
                "table_sigmas": _shortest(
                    (((1 - sched.alphas_cumprod) / sched.alphas_cumprod) ** 0.5).numpy()
                ),
            }
        )
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__, "numpy": np.__version__}
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": records}, f)
    print(f"wrote {len(records)} records to {path}")


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "tests/diffusion/data/diffusers_dpmsolver_sigmas.json"
    )
