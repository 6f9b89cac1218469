"""Record diffusers' samplers on an exact Gaussian-mixture model, for jaxsolve's parity tests.

Every scheduler runs its own loop (as a diffusers pipeline does) with a model whose output is the
*exact* prediction of a 2-D Gaussian mixture (computed in float64 with NumPy, independently of
jaxsolve). Noise drawn inside ``step`` is replaced by a recorded table so jaxsolve can replay it.
The recorded grid, initial state (in VE scale), noise and final samples go to a JSON file that the
test suite reads, so CI needs neither torch nor diffusers.

Run in an environment with the ``bench`` extra (``torch==2.13.0`` and diffusers):

    python scripts/record_diffusers_samplers.py tests/diffusion/data/diffusers_samplers.json
"""

import importlib
import json
import sys

import diffusers
import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.2]])
COVS = np.array(
    [[[0.10, 0.03], [0.03, 0.05]], [[0.20, -0.05], [-0.05, 0.10]], [[0.05, 0.0], [0.0, 0.15]]]
)
BATCH = 16


def gmm_denoise(x, sigma):
    """E[x0 | x0 + sigma eps = x] for the mixture, float64 (x: (B, 2))."""
    x = np.asarray(x, np.float64)
    logits, posts = [], []
    for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True):
        cn = c + sigma**2 * np.eye(2)
        diff = x - m
        sol = np.linalg.solve(cn, diff.T).T
        logits.append(
            np.log(w) - 0.5 * np.sum(diff * sol, 1) - 0.5 * np.linalg.slogdet(2 * np.pi * cn)[1]
        )
        posts.append(m + sol @ c)  # m + C (C + s^2 I)^-1 (x - m)
    logits = np.stack(logits, 1)
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.einsum("bk,kbd->bd", r, np.stack(posts))


class NoiseTable:
    """Stands in for diffusers' randn_tensor: returns the next recorded draw."""

    def __init__(self, table):
        self.table, self.i = table, 0

    def __call__(self, shape, *args, dtype=None, **kwargs):
        out = torch.from_numpy(self.table[self.i]).to(dtype or torch.float32)
        self.i += 1
        return out


def patch_noise(scheduler, table):
    module = importlib.import_module(type(scheduler).__module__)
    fake = NoiseTable(table)
    module.randn_tensor = fake
    return fake


def run(name, scheduler, n, *, kind, seed, noise=False, step_kwargs=None):
    scheduler.set_timesteps(n)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((BATCH, 2))
    timesteps = scheduler.timesteps
    if isinstance(scheduler, DDIMScheduler):  # DDIM keeps only alphas; its last step goes to 0
        acp = scheduler.alphas_cumprod.numpy().astype(np.float64)[timesteps.numpy()]
        sigmas = np.concatenate([np.sqrt((1 - acp) / acp), [0.0]])
    else:
        sigmas = scheduler.sigmas.numpy().astype(np.float64)
    table = rng.standard_normal((len(timesteps), BATCH, 2)) if noise else None
    fake = patch_noise(scheduler, table) if noise else None

    if kind == "vp":  # latents in VP scale, init_noise_sigma = 1
        sample = torch.from_numpy(z).float()
        x_init_ve = z * np.sqrt(1.0 + sigmas[0] ** 2)
    else:  # VE-scale latents: z * init_noise_sigma
        init = float(scheduler.init_noise_sigma)
        sample = torch.from_numpy(z * init).float()
        x_init_ve = z * init

    penultimate = None
    for i, t in enumerate(timesteps):
        if kind == "vp":
            s = float(sigmas[i])
            a = 1.0 / np.sqrt(1.0 + s**2)
            x_vp = sample.numpy().astype(np.float64)
            d = gmm_denoise(x_vp / a, s)
            eps = (x_vp - a * d) / (a * s)  # VP sigma_t = a s
            out = torch.from_numpy(eps).float()
        elif kind == "ve_eps":
            s = float(scheduler.sigmas[i])
            x = sample.numpy().astype(np.float64)
            out = torch.from_numpy((x - gmm_denoise(x, s)) / s).float()
        else:  # EDM preconditioning: D = c_skip x + c_out F
            s = float(scheduler.sigmas[i])
            sd = scheduler.config.sigma_data
            x = sample.numpy().astype(np.float64)
            c_skip = sd**2 / (s**2 + sd**2)
            c_out = s * sd / np.sqrt(s**2 + sd**2)
            out = torch.from_numpy((gmm_denoise(x, s) - c_skip * x) / c_out).float()
        sample = scheduler.step(out, t, sample, **(step_kwargs or {})).prev_sample
        if i == len(timesteps) - 2 and not isinstance(scheduler, HeunDiscreteScheduler):
            # The state at the last positive level, before the final step (in VE scale).
            x = sample.numpy().astype(np.float64)
            penultimate = x * np.sqrt(1.0 + sigmas[i + 1] ** 2) if kind == "vp" else x

    grid = [sigmas[0]]
    for s in sigmas[1:]:  # Heun repeats every interior level; the driver's grid lists each once
        if s != grid[-1]:
            grid.append(s)
    if grid[-1] != 0.0:  # DEIS ends at the table's smallest sigma: append the final 0
        grid.append(0.0)
    return {
        "name": name,
        "n": n,
        "grid": [float(s) for s in grid],
        "x_init_ve": x_init_ve.tolist(),
        "noise": None if table is None else table[: fake.i].tolist(),
        "final": sample.numpy().astype(np.float64).tolist(),
        "penultimate_ve": None if penultimate is None else penultimate.tolist(),
        "ends_at_sigma_min": bool(sigmas[-1] != 0.0),
    }


def main(path):
    records = []
    for n in (10, 20):
        for order in (2, 3):
            for solver_type in ("midpoint", "heun"):
                sch = DPMSolverMultistepScheduler(solver_order=order, solver_type=solver_type)
                records.append(
                    run(
                        f"multistep-dpmsolver++-{order}-{solver_type}",
                        sch,
                        n,
                        kind="vp",
                        seed=n + order,
                    )
                )
                sch = DPMSolverSinglestepScheduler(solver_order=order, solver_type=solver_type)
                records.append(
                    run(
                        f"singlestep-dpmsolver++-{order}-{solver_type}",
                        sch,
                        n + 2,
                        kind="vp",
                        seed=n + 10 + order,
                    )
                )
        sch = DPMSolverMultistepScheduler(solver_order=2, algorithm_type="sde-dpmsolver++")
        records.append(
            run("multistep-sde-dpmsolver++-2-midpoint", sch, n, kind="vp", seed=n + 20, noise=True)
        )
        for order in (1, 2, 3):
            for variant in ("bh1", "bh2"):
                sch = UniPCMultistepScheduler(solver_order=order, solver_type=variant)
                records.append(
                    run(f"unipc-{order}-{variant}", sch, n, kind="vp", seed=n + 30 + order)
                )
        sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
        records.append(run("ddim-0", sch, n, kind="vp", seed=n + 40))
        sch = DDIMScheduler(clip_sample=False, set_alpha_to_one=True)
        records.append(
            run("ddim-1", sch, n, kind="vp", seed=n + 41, noise=True, step_kwargs={"eta": 1.0})
        )
        records.append(run("euler", EulerDiscreteScheduler(), n, kind="ve_eps", seed=n + 50))
        records.append(run("heun", HeunDiscreteScheduler(), n, kind="ve_eps", seed=n + 51))
        records.append(
            run(
                "euler_ancestral",
                EulerAncestralDiscreteScheduler(),
                n,
                kind="ve_eps",
                seed=n + 52,
                noise=True,
            )
        )
        records.append(run("edm_euler", EDMEulerScheduler(), n, kind="edm", seed=n + 53))
        records.append(
            run(
                "edm_dpmsolver++-2",
                EDMDPMSolverMultistepScheduler(solver_order=2),
                n,
                kind="edm",
                seed=n + 54,
            )
        )
    # Noise prediction: diffusers refuses final_sigmas_type="zero" (its last step would compute
    # 0 * inf), so these end at the table's smallest sigma; step counts are chosen so that the
    # order pattern near the end matches a grid continued to 0 (>= 15 steps for multistep, so no
    # lowering; for singlestep a count whose last group is complete or a single first-order step).
    for order, solver_type in ((2, "midpoint"), (2, "heun"), (3, "midpoint")):
        sch = DPMSolverMultistepScheduler(
            solver_order=order,
            algorithm_type="dpmsolver",
            solver_type=solver_type,
            final_sigmas_type="sigma_min",
        )
        records.append(
            run(f"multistep-dpmsolver-{order}-{solver_type}", sch, 20, kind="vp", seed=70 + order)
        )
    for order, n in ((2, 21), (3, 22)):
        for solver_type in ("midpoint", "heun"):
            sch = DPMSolverSinglestepScheduler(
                solver_order=order,
                algorithm_type="dpmsolver",
                solver_type=solver_type,
                final_sigmas_type="sigma_min",
            )
            records.append(
                run(
                    f"singlestep-dpmsolver-{order}-{solver_type}",
                    sch,
                    n,
                    kind="vp",
                    seed=80 + order,
                )
            )
    for order in (1, 2, 3):  # DEIS lowers the order near the end only below 15 steps
        records.append(
            run(
                f"deis-{order}",
                DEISMultistepScheduler(solver_order=order),
                20,
                kind="vp",
                seed=60 + order,
            )
        )
    meta = {
        "diffusers": diffusers.__version__,
        "torch": torch.__version__,
        "mixture": {"weights": WEIGHTS.tolist(), "means": MEANS.tolist(), "covs": COVS.tolist()},
    }
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": records}, f)
    print(f"wrote {len(records)} records to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/diffusion/data/diffusers_samplers.json")
