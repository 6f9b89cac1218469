"""Record diffusers' DPM-Solver / UniPC / DEIS / DDIM schedulers with the options
``jaxsolve.diffusion.from_diffusers`` reproduces beyond the basic configs: x0 clipping and dynamic
thresholding, the SDE variants, ``euler_at_final``, Lu's log-SNR grid, flow sigmas and UniPC's
corrector options.

The runs use the machinery of ``scripts/record_diffusers_samplers.py`` (the exact Gaussian-mixture
model, noise replayed from a table; imported by path): see its docstring. The mixture's samples
lie within about [-2, 2], so the clipping and thresholding records use ranges that bite (clip
range 0.8, ``sample_max_value`` 1.5 or 0.8); ``tests/diffusion/test_from_diffusers_options.py``
checks that each option changed the sample.

Run in an environment with the ``bench`` extra (``torch==2.13.0`` and diffusers):

    python scripts/record_diffusers_options.py tests/diffusion/data/diffusers_options.json
"""

import importlib.util
import json
import pathlib
import sys

import diffusers
import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSinglestepScheduler,
    UniPCMultistepScheduler,
)

_SPEC = importlib.util.spec_from_file_location(
    "record_diffusers_samplers", pathlib.Path(__file__).parent / "record_diffusers_samplers.py"
)
_BASE = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(_BASE)
run = _BASE.run

THRESHOLD = {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.5}
SIGMA_MIN = {"final_sigmas_type": "sigma_min"}
FLOW = {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}


def _image_threshold(scheduler):
    """diffusers' ``_threshold_sample`` needs a spatial axis (for a ``(B, C)`` sample
    ``np.prod`` of no axes is a float and its reshape fails): threshold each 2-D sample as the
    ``(2, 1)`` image it is, with diffusers' own code."""
    threshold = scheduler._threshold_sample
    scheduler._threshold_sample = lambda sample: threshold(sample[..., None])[..., 0]


def records():
    out = []

    def add(name, scheduler, n, seed, **kwargs):
        if scheduler.config.get("thresholding", False):
            _image_threshold(scheduler)
        out.append(run(name, scheduler, n, kind=kwargs.pop("kind", "vp"), seed=seed, **kwargs))

    # 1. clipping and thresholding (DDIM keeps the unclipped epsilon; the others use x0 only).
    add("ddim-clip-default", DDIMScheduler(), 10, 200)
    add("ddim-clip-0.8", DDIMScheduler(clip_sample_range=0.8), 10, 201)
    add(
        "ddim-clip-0.8-eta1",
        DDIMScheduler(clip_sample_range=0.8),
        10,
        202,
        noise=True,
        step_kwargs={"eta": 1.0},
    )
    add("ddim-threshold", DDIMScheduler(**THRESHOLD), 10, 203)
    add("dpmsolver++-threshold", DPMSolverMultistepScheduler(**THRESHOLD), 10, 204)
    add(
        "dpmsolver++-threshold-max-0.8",
        DPMSolverMultistepScheduler(**{**THRESHOLD, "sample_max_value": 0.8}),
        10,
        205,
    )
    add(
        "dpmsolver-threshold",
        DPMSolverMultistepScheduler(algorithm_type="dpmsolver", **SIGMA_MIN, **THRESHOLD),
        20,
        206,
    )
    add("singlestep-threshold", DPMSolverSinglestepScheduler(**THRESHOLD), 12, 207)
    add("unipc-threshold", UniPCMultistepScheduler(**THRESHOLD), 10, 208)
    add("deis-threshold", DEISMultistepScheduler(**THRESHOLD), 20, 209)
    # 2. SDE variants, euler_at_final, Lu's grid, fewer than 15 steps ending at sigma_min.
    for order, solver_type in ((1, "midpoint"), (2, "midpoint"), (2, "heun")):
        sch = DPMSolverMultistepScheduler(
            algorithm_type="sde-dpmsolver", solver_order=order, solver_type=solver_type, **SIGMA_MIN
        )
        add(f"sde-dpmsolver-{order}-{solver_type}", sch, 20, 210 + order, noise=True)
    sch = DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", solver_order=3)
    add("sde-dpmsolver++-3", sch, 10, 214, noise=True)
    for order, solver_type in ((2, "midpoint"), (3, "midpoint"), (3, "heun")):
        sch = DPMSolverSinglestepScheduler(
            algorithm_type="sde-dpmsolver++", solver_order=order, solver_type=solver_type
        )
        add(f"singlestep-sde-dpmsolver++-{order}-{solver_type}", sch, 12, 215 + order, noise=True)
    sch = DPMSolverMultistepScheduler(euler_at_final=True, **SIGMA_MIN)
    add("dpmsolver++-euler-at-final-sigma-min", sch, 16, 220)
    sch = DPMSolverMultistepScheduler(solver_order=3, **SIGMA_MIN)
    add("dpmsolver++-3-sigma-min-few-steps", sch, 8, 221)
    add("unipc-sigma-min-few-steps", UniPCMultistepScheduler(solver_order=3, **SIGMA_MIN), 8, 222)
    add("deis-3-few-steps", DEISMultistepScheduler(solver_order=3), 8, 223)
    add("dpmsolver++-lu-lambdas", DPMSolverMultistepScheduler(use_lu_lambdas=True), 12, 224)
    for option in ("karras", "exponential"):  # DEIS repeats the last level: a zero-length step
        sch = DEISMultistepScheduler(solver_order=3, **{f"use_{option}_sigmas": True})
        add(f"deis-3-{option}", sch, 10, 225)
    # 3. flow sigmas (flow-matching models), UniPC's corrector options.
    add("dpmsolver++-flow", DPMSolverMultistepScheduler(**FLOW), 12, 230, kind="flow")
    sch = DPMSolverMultistepScheduler(**FLOW, **SIGMA_MIN)
    add("dpmsolver++-flow-sigma-min", sch, 12, 231, kind="flow")
    add("unipc-flow", UniPCMultistepScheduler(**FLOW), 12, 232, kind="flow")
    add("deis-flow", DEISMultistepScheduler(**FLOW), 12, 233, kind="flow")
    sch = UniPCMultistepScheduler(solver_order=3, disable_corrector=[0, 3])
    add("unipc-disable-corrector", sch, 10, 234)
    for variant in ("bh1", "bh2"):
        sch = UniPCMultistepScheduler(predict_x0=False, solver_type=variant, **SIGMA_MIN)
        add(f"unipc-noise-{variant}", sch, 10, 235)
    return out


def learned_variance_record(n=10, seed=240):
    """``variance_type="learned_range"``: diffusers keeps ``model_output[:, :3]``, so this run
    has 3-channel samples, ``x0 ~ N(0, I)`` (whose exact denoiser is ``x / (1 + s^2)`` in VE
    terms) and a network that stacks a made-up variance ``5 + x_t`` on its exact noise
    prediction."""
    sch = DPMSolverMultistepScheduler(variance_type="learned_range")
    sch.set_timesteps(n)
    z = np.random.default_rng(seed).standard_normal((_BASE.BATCH, 3))
    sigmas = sch.sigmas.numpy().astype(np.float64)
    sample = torch.from_numpy(z).float()
    for i, t in enumerate(sch.timesteps):
        s = sigmas[i]
        a = 1.0 / np.sqrt(1.0 + s * s)
        x_t = sample.numpy().astype(np.float64)
        x0 = x_t / a / (1.0 + s * s)
        eps = (x_t - a * x0) / (a * s)
        out = torch.from_numpy(np.concatenate([eps, 5.0 + x_t], axis=1)).float()
        sample = sch.step(out, t, sample).prev_sample
    config = {"_class_name": type(sch).__name__, **dict(sch.config)}
    config.pop("_use_default_values", None)
    return {
        "name": "dpmsolver++-learned-range",
        "n": n,
        "config": config,
        "z": z.tolist(),
        "grid": [float(v) for v in sigmas],
        "x_init_ve": (z * np.sqrt(1.0 + sigmas[0] ** 2)).tolist(),
        "final_ve": sample.numpy().astype(np.float64).tolist(),
    }


def main(path):
    meta = {"diffusers": diffusers.__version__, "torch": torch.__version__}
    meta["mixture"] = {
        "weights": _BASE.WEIGHTS.tolist(),
        "means": _BASE.MEANS.tolist(),
        "covs": _BASE.COVS.tolist(),
    }
    recs = records()
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": recs, "learned_variance": learned_variance_record()}, f)
    print(f"wrote {len(recs)} records to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/diffusion/data/diffusers_options.json")
