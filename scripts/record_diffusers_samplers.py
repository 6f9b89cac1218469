"""Record diffusers' samplers on an exact Gaussian-mixture model, for jaxsolve's parity tests.

Every scheduler runs its own loop (as a diffusers pipeline does) with a model whose output is the
*exact* prediction of a 2-D Gaussian mixture (computed in float64 with NumPy, independently of
jaxsolve). Noise drawn inside ``step`` is replaced by a recorded table so jaxsolve can replay it.
The recorded grid, initial state (in VE scale, and the standard-normal draw it came from), noise,
final samples (as diffusers returns them and in VE scale) and the scheduler's full config go to a
JSON file that the test suite reads, so CI needs neither torch nor diffusers. The model's output
follows each config's ``prediction_type``; flow-matching records use the exact velocity. The
"cfg-..." records exist to test ``jaxsolve.diffusion.from_diffusers`` on spacings, offsets, final
levels, spacing options, prediction types, zero-terminal-SNR and flow shifts.

Schedulers that call the model several times per interval (Heun, PNDM, KDPM2, DPMSolverSDE,
FlowMatchHeun) list repeated timesteps; the recorded grid lists each level once, and the model is
evaluated at the level of the state it is given (:func:`model_level`). DPMSolverSDE's Brownian-tree
noise sampler is replaced by :class:`BridgedNoise`: two recorded draws per interval, combined into
the increments of one Brownian path as jaxsolve's ``DPMSolverPPSDE2S`` combines its two draws. The
consistency-model records use the exact denoiser as the consistency function.

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
    CMStochasticIterativeScheduler,
    DDIMParallelScheduler,
    DDIMScheduler,
    DDPMParallelScheduler,
    DDPMScheduler,
    DEISMultistepScheduler,
    DPMSolverMultistepScheduler,
    DPMSolverSDEScheduler,
    DPMSolverSinglestepScheduler,
    EDMDPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    KDPM2DiscreteScheduler,
    LCMScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    SASolverScheduler,
    TCDScheduler,
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


class BridgedNoise:
    """Stands in for DPMSolverSDE's BrownianTreeNoiseSampler: on interval i the first call
    (sigma -> sigma_mid) returns table[i, 0] and the second (sigma -> sigma_next) the normalised
    increment of the same Brownian path over the whole interval, bridged from table[i, 0] and
    table[i, 1] (as jaxsolve's DPMSolverPPSDE2S combines its two draws)."""

    def __init__(self, table):
        self.table, self.i, self.mid = table, 0, None

    def __call__(self, sigma, sigma_next):
        sigma, sigma_next = float(sigma), float(sigma_next)
        xi0, xi1 = self.table[self.i]
        if self.mid is None:
            self.mid = sigma_next
            return torch.from_numpy(xi0).float()
        first, second = sigma - self.mid, self.mid - sigma_next
        self.i, self.mid = self.i + 1, None
        z2 = (np.sqrt(first) * xi0 + np.sqrt(second) * xi1) / np.sqrt(first + second)
        return torch.from_numpy(z2).float()


def patch_brownian_noise(scheduler, table):
    module = importlib.import_module(type(scheduler).__module__)
    fake = BridgedNoise(table)
    module.BrownianTreeNoiseSampler = lambda *args, **kwargs: fake
    return fake


def model_output(prediction_type, x_t, x0, a, b):
    """The model's output in its parameterisation, from x_t = a x0 + b eps (VP or flow scale)."""
    eps = (x_t - a * x0) / b
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        return a * eps - b * x0
    raise ValueError(prediction_type)


def ve_factor(kind, s):
    """x_ve / x_latent at VE level s for the scheduler's latents."""
    if kind == "vp":
        return np.sqrt(1.0 + s * s)
    if kind == "flow":
        return 1.0 + s
    return 1.0


FLOW_T_MAX = 1.0 - 2.0**-24  # flow time 1 (pure noise) is infinite in VE scale

# Schedulers that call the model more than once per interval (their timesteps repeat): the grid
# lists each level once, and the state before the last step is not recorded.
MULTI_STAGE = (
    HeunDiscreteScheduler,
    PNDMScheduler,
    KDPM2DiscreteScheduler,
    KDPM2AncestralDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    DPMSolverSDEScheduler,
)
# Schedulers that keep only the alpha_bar table and step between integer timesteps.
TABLE_ONLY = (PNDMScheduler, DDPMScheduler, DDPMParallelScheduler, LCMScheduler, TCDScheduler)


def table_sigmas(scheduler):
    """VE levels sqrt((1 - a) / a) of the scheduler's alpha_bar table (float64)."""
    acp = scheduler.alphas_cumprod.numpy().astype(np.float64)
    return np.sqrt((1.0 - acp) / acp)


def model_level(scheduler, i, t, sigmas):
    """The VE level of the state the model sees at call i (timestep t)."""
    if isinstance(scheduler, TABLE_ONLY):  # PNDM's stages sit at their own timesteps
        return float(table_sigmas(scheduler)[int(t)])
    if isinstance(scheduler, (KDPM2DiscreteScheduler, KDPM2AncestralDiscreteScheduler)):
        # The interval's start, or its geometric midpoint (indexed differently by the two).
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        if scheduler.state_in_first_order:
            return float(scheduler.sigmas[scheduler.step_index])
        shift = 1 if isinstance(scheduler, KDPM2AncestralDiscreteScheduler) else 0
        return float(scheduler.sigmas_interpol[scheduler.step_index - shift])
    if isinstance(scheduler, DPMSolverSDEScheduler):  # the interval's start, or its midpoint
        if scheduler.step_index is None:
            scheduler._init_step_index(t)
        if scheduler.state_in_first_order:
            return float(scheduler.sigmas[scheduler.step_index])
        return float(scheduler.mid_point_sigma)
    return float(sigmas[i])


def run(name, scheduler, n, *, kind, seed, noise=False, step_kwargs=None, set_kwargs=None):
    scheduler.set_timesteps(n, **(set_kwargs or {}))
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((BATCH, 2))
    timesteps = scheduler.timesteps
    prediction_type = scheduler.config.get("prediction_type", "epsilon")
    if isinstance(scheduler, (DDIMScheduler, DDIMParallelScheduler)):  # DDIM keeps only alphas
        table = scheduler.alphas_cumprod.numpy().astype(np.float64)
        acp = table[timesteps.numpy()]
        final_acp = 1.0 if scheduler.config.set_alpha_to_one else table[0]
        sigmas = np.concatenate([np.sqrt((1 - acp) / acp), [np.sqrt((1 - final_acp) / final_acp)]])
    elif isinstance(scheduler, PNDMScheduler):  # the levels of _timesteps, then the final one
        final_acp = float(scheduler.final_alpha_cumprod)
        final = np.sqrt((1.0 - final_acp) / final_acp)
        sigmas = np.concatenate([table_sigmas(scheduler)[scheduler._timesteps[::-1]], [final]])
    elif isinstance(scheduler, (DDPMScheduler, DDPMParallelScheduler, LCMScheduler)):
        sigmas = np.concatenate([table_sigmas(scheduler)[timesteps.numpy()], [0.0]])
    elif isinstance(scheduler, TCDScheduler):  # the last step lands on timestep 0
        levels = table_sigmas(scheduler)
        sigmas = np.concatenate([levels[timesteps.numpy()], [levels[0]]])
    elif kind == "cm":  # its last step, to sigma_min, returns the consistency output: a step to 0
        sigmas = np.concatenate([scheduler.sigmas.numpy().astype(np.float64)[:-1], [0.0]])
    elif kind == "flow":  # flow times t -> VE levels t / (1 - t)
        t = np.minimum(scheduler.sigmas.numpy().astype(np.float64), FLOW_T_MAX)
        sigmas = t / (1.0 - t)
    else:
        sigmas = scheduler.sigmas.numpy().astype(np.float64)
    if isinstance(scheduler, DPMSolverSDEScheduler):  # two draws per interval
        table = rng.standard_normal((len(timesteps), 2, BATCH, 2)) if noise else None
        fake = patch_brownian_noise(scheduler, table) if noise else None
    else:
        table = rng.standard_normal((len(timesteps), BATCH, 2)) if noise else None
        fake = patch_noise(scheduler, table) if noise else None

    if kind == "vp":  # latents in VP scale, init_noise_sigma = 1
        sample = torch.from_numpy(z).float()
        x_init_ve = z * np.sqrt(1.0 + sigmas[0] ** 2)
    elif kind == "flow":  # latents x_t = z at t = 1; VE x = x_t / (1 - t) at t_max
        sample = torch.from_numpy(z).float()
        x_init_ve = z * (1.0 + sigmas[0])
    else:  # VE-scale latents: z * init_noise_sigma
        init = float(scheduler.init_noise_sigma)
        sample = torch.from_numpy(z * init).float()
        x_init_ve = z * init

    penultimate = None
    for i, t in enumerate(timesteps):
        if kind == "vp":
            s = model_level(scheduler, i, t, sigmas)
            a = 1.0 / np.sqrt(1.0 + s**2)
            x_vp = sample.numpy().astype(np.float64)
            d = gmm_denoise(x_vp / a, s)
            out = torch.from_numpy(model_output(prediction_type, x_vp, d, a, a * s)).float()
        elif kind == "flow":  # velocity eps - x0 of x_t = (1 - t) x0 + t eps
            tf = float(scheduler.sigmas[i])
            x_t = sample.numpy().astype(np.float64)
            if tf >= 1.0:  # pure noise: E[x0] is the mixture's mean, eps = x_t
                d = np.broadcast_to(WEIGHTS @ MEANS, x_t.shape)
                v = x_t - d
            else:
                d = gmm_denoise(x_t / (1.0 - tf), tf / (1.0 - tf))
                v = (x_t - d) / tf
            out = torch.from_numpy(v).float()
        elif kind == "ve_eps":  # Euler-type: VE latents, the model sees x / sqrt(1 + s^2)
            s = model_level(scheduler, i, t, scheduler.sigmas)
            x = sample.numpy().astype(np.float64)
            a = 1.0 / np.sqrt(1.0 + s * s)
            d = gmm_denoise(x, s)
            out = torch.from_numpy(model_output(prediction_type, a * x, d, a, a * s)).float()
        elif kind == "cm":  # consistency boundary condition: f = c_skip x + c_out F
            s = float(scheduler.sigmas[i])
            sd, s_min = scheduler.config.sigma_data, scheduler.config.sigma_min
            x = sample.numpy().astype(np.float64)
            c_skip = sd**2 / ((s - s_min) ** 2 + sd**2)
            c_out = (s - s_min) * sd / np.sqrt(s**2 + sd**2)
            out = torch.from_numpy((gmm_denoise(x, s) - c_skip * x) / c_out).float()
        else:  # EDM preconditioning: D = c_skip x + c_out F
            s = float(scheduler.sigmas[i])
            sd = scheduler.config.sigma_data
            x = sample.numpy().astype(np.float64)
            c_skip = sd**2 / (s**2 + sd**2)
            c_out = s * sd / np.sqrt(s**2 + sd**2)
            out = torch.from_numpy((gmm_denoise(x, s) - c_skip * x) / c_out).float()
        sample = scheduler.step(out, t, sample, **(step_kwargs or {})).prev_sample
        if i == len(timesteps) - 2 and not isinstance(scheduler, MULTI_STAGE):
            # The state at the last positive level, before the final step (in VE scale).
            x = sample.numpy().astype(np.float64)
            if kind == "vp":
                penultimate = x * np.sqrt(1.0 + sigmas[i + 1] ** 2)
            elif kind == "flow":
                penultimate = x * (1.0 + sigmas[i + 1])
            else:
                penultimate = x

    grid = [sigmas[0]]
    # Heun repeats every interior level; the driver's grid lists each once. A level within float32
    # round-off of the previous one is a repeat too (a Karras grid's last level against sigma_min).
    for s in sigmas[1:]:
        if not np.isclose(s, grid[-1], rtol=1e-6, atol=0.0):
            grid.append(s)
    if grid[-1] != 0.0:  # DEIS ends at the table's smallest sigma: append the final 0
        grid.append(0.0)
    config = {"_class_name": type(scheduler).__name__, **dict(scheduler.config)}
    config.pop("_use_default_values", None)
    return {
        "name": name,
        "n": n,
        "config": config,
        "set_timesteps": set_kwargs or {},
        "step_kwargs": step_kwargs or {},
        "z": z.tolist(),
        "grid": [float(s) for s in grid],
        "x_init_ve": x_init_ve.tolist(),
        "noise": None if table is None else table[: fake.i].tolist(),
        "final": sample.numpy().astype(np.float64).tolist(),
        # The final state in VE scale (VP latents at a last level s_min > 0 carry 1/sqrt(1+s^2)).
        "final_ve": (sample.numpy().astype(np.float64) * ve_factor(kind, sigmas[-1])).tolist(),
        "penultimate_ve": None if penultimate is None else penultimate.tolist(),
        "ends_at_sigma_min": bool(sigmas[-1] != 0.0),
    }


SD = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear"}


def extra_records():
    """Configs for diffusers.from_diffusers: spacings, offsets, final levels, spacing options,
    prediction types and flow shifts (one step count each)."""
    out = []
    n = 12
    for spacing, offset in (("leading", 1), ("trailing", 0), ("linspace", 0)):
        sch = EulerDiscreteScheduler(**SD, timestep_spacing=spacing, steps_offset=offset)
        out.append(run(f"cfg-euler-{spacing}", sch, n, kind="ve_eps", seed=100))
        sch = DPMSolverMultistepScheduler(**SD, timestep_spacing=spacing, steps_offset=offset)
        out.append(run(f"cfg-dpmsolver++-{spacing}", sch, 16, kind="vp", seed=101))
    sch = DDIMScheduler(**SD, clip_sample=False, timestep_spacing="trailing")
    out.append(run("cfg-ddim-trailing", sch, 10, kind="vp", seed=102))
    sch = DDIMScheduler(**SD, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    out.append(run("cfg-ddim-leading-offset", sch, 10, kind="vp", seed=103))
    sch = DPMSolverSinglestepScheduler(final_sigmas_type="sigma_min", lower_order_final=False)
    out.append(run("cfg-singlestep-lower-order-final-off", sch, 16, kind="vp", seed=113))
    sch = DPMSolverMultistepScheduler(final_sigmas_type="sigma_min")
    out.append(run("cfg-dpmsolver++-sigma-min", sch, 16, kind="vp", seed=104))
    sch = EulerDiscreteScheduler(**SD, final_sigmas_type="sigma_min")
    out.append(run("cfg-euler-sigma-min", sch, n, kind="ve_eps", seed=105))
    for option in ("karras", "exponential"):
        sch = DPMSolverMultistepScheduler(**SD, **{f"use_{option}_sigmas": True})
        out.append(run(f"cfg-dpmsolver++-{option}", sch, 16, kind="vp", seed=106))
        sch = EulerDiscreteScheduler(**SD, **{f"use_{option}_sigmas": True})
        out.append(run(f"cfg-euler-{option}", sch, n, kind="ve_eps", seed=107))
    for prediction in ("v_prediction", "sample"):
        sch = DPMSolverMultistepScheduler(**SD, prediction_type=prediction)
        out.append(run(f"cfg-dpmsolver++-{prediction}", sch, 16, kind="vp", seed=108))
        sch = EulerDiscreteScheduler(**SD, prediction_type=prediction)
        out.append(run(f"cfg-euler-{prediction}", sch, n, kind="ve_eps", seed=109))
    sch = DDIMScheduler(**SD, clip_sample=False, prediction_type="v_prediction")
    out.append(run("cfg-ddim-v_prediction", sch, 10, kind="vp", seed=110))
    sch = EulerDiscreteScheduler(
        **SD,
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        prediction_type="v_prediction",
    )
    out.append(run("cfg-euler-zero-snr", sch, n, kind="ve_eps", seed=114))
    sch = EDMEulerScheduler(final_sigmas_type="sigma_min")
    out.append(run("cfg-edm-euler-sigma-min", sch, n, kind="edm", seed=115))
    sch = FlowMatchEulerDiscreteScheduler(shift=3.0)
    out.append(run("cfg-flow-euler-shift", sch, n, kind="flow", seed=111))
    sch = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    out.append(
        run("cfg-flow-euler-dynamic", sch, n, kind="flow", seed=112, set_kwargs={"mu": 1.15})
    )
    return out


def new_class_records():
    """PNDM, DDPM, KDPM2 (and ancestral), FlowMatchHeun and LMS: the default config at two step
    counts, then the main options."""
    out = []
    for n in (10, 20):
        for skip_prk_steps in (False, True):
            sch = PNDMScheduler(skip_prk_steps=skip_prk_steps)
            name = "pndm-plms" if skip_prk_steps else "pndm-prk"
            out.append(run(name, sch, n, kind="vp", seed=n + 200 + skip_prk_steps))
        out.append(run("ddpm", DDPMScheduler(), n, kind="vp", seed=n + 202, noise=True))
        sch = DDPMScheduler(variance_type="fixed_large", clip_sample=False)
        out.append(run("ddpm-fixed_large", sch, n, kind="vp", seed=n + 203, noise=True))
        out.append(run("kdpm2", KDPM2DiscreteScheduler(), n, kind="ve_eps", seed=n + 204))
        sch = KDPM2AncestralDiscreteScheduler()
        out.append(run("kdpm2_ancestral", sch, n, kind="ve_eps", seed=n + 205, noise=True))
        sch = FlowMatchHeunDiscreteScheduler()
        out.append(run("flow_heun", sch, n, kind="flow", seed=n + 206))
        out.append(run("lms", LMSDiscreteScheduler(), n, kind="ve_eps", seed=n + 207))
        sch = DPMSolverSDEScheduler()
        out.append(run("dpmsolver_sde", sch, n, kind="ve_eps", seed=n + 208, noise=True))
    n = 12
    # Stable Diffusion's PNDM: PLMS, steps_offset 1, last step onto the table's first level.
    sch = PNDMScheduler(**SD, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)
    out.append(run("cfg-pndm-sd", sch, n, kind="vp", seed=300))
    sch = PNDMScheduler(skip_prk_steps=True, set_alpha_to_one=True, steps_offset=1)
    out.append(run("cfg-pndm-plms-alpha-one-offset", sch, 10, kind="vp", seed=301))
    sch = PNDMScheduler(timestep_spacing="trailing", set_alpha_to_one=True)
    out.append(run("cfg-pndm-trailing", sch, 10, kind="vp", seed=302))
    sch = DDPMScheduler(variance_type="fixed_small_log", clip_sample=False, **SD)
    out.append(run("cfg-ddpm-fixed_small_log", sch, n, kind="vp", seed=303, noise=True))
    sch = DDPMScheduler(timestep_spacing="trailing", clip_sample=False)
    out.append(run("cfg-ddpm-trailing", sch, n, kind="vp", seed=304, noise=True))
    sch = DDPMScheduler(
        timestep_spacing="linspace", clip_sample_range=1.5, prediction_type="v_prediction"
    )
    out.append(run("cfg-ddpm-linspace-v_prediction", sch, n, kind="vp", seed=305, noise=True))
    sch = DDPMScheduler(clip_sample=False, prediction_type="sample", steps_offset=1)
    out.append(run("cfg-ddpm-sample-offset", sch, n, kind="vp", seed=306, noise=True))
    sch = KDPM2DiscreteScheduler(use_karras_sigmas=True)
    out.append(run("cfg-kdpm2-karras", sch, n, kind="ve_eps", seed=307))
    sch = KDPM2DiscreteScheduler(
        timestep_spacing="leading", steps_offset=1, prediction_type="v_prediction"
    )
    out.append(run("cfg-kdpm2-leading-v_prediction", sch, n, kind="ve_eps", seed=308))
    sch = KDPM2AncestralDiscreteScheduler(timestep_spacing="trailing")
    out.append(run("cfg-kdpm2-ancestral-trailing", sch, n, kind="ve_eps", seed=309, noise=True))
    sch = FlowMatchHeunDiscreteScheduler(shift=3.0)
    out.append(run("cfg-flow-heun-shift", sch, n, kind="flow", seed=310))
    sch = LMSDiscreteScheduler(**SD, use_karras_sigmas=True)
    out.append(run("cfg-lms-karras", sch, n, kind="ve_eps", seed=311))
    sch = LMSDiscreteScheduler(**SD, timestep_spacing="leading", steps_offset=1)
    out.append(run("cfg-lms-leading-offset", sch, n, kind="ve_eps", seed=312))
    sch = LMSDiscreteScheduler(prediction_type="v_prediction", timestep_spacing="trailing")
    out.append(run("cfg-lms-trailing-v_prediction", sch, n, kind="ve_eps", seed=313))
    sch = DPMSolverSDEScheduler(**SD, use_karras_sigmas=True, noise_sampler_seed=0)
    out.append(run("cfg-dpmsolver-sde-karras", sch, n, kind="ve_eps", seed=314, noise=True))
    sch = DPMSolverSDEScheduler(prediction_type="v_prediction", timestep_spacing="leading")
    out.append(run("cfg-dpmsolver-sde-leading-v", sch, n, kind="ve_eps", seed=315, noise=True))
    return out


def fewstep_and_parallel_records():
    """LCM and TCD (the few-step schedulers) and the DDIM / DDPM parallel variants."""
    out = []
    for n in (4, 8):
        out.append(run("lcm", LCMScheduler(), n, kind="vp", seed=n + 400, noise=True))
        out.append(
            run(
                "tcd",
                TCDScheduler(),
                n,
                kind="vp",
                seed=n + 401,
                noise=True,
                step_kwargs={"eta": 0.3},
            )
        )
    sch = LCMScheduler(timestep_scaling=5.0, original_inference_steps=25, prediction_type="sample")
    out.append(run("cfg-lcm-scaling-sample", sch, 6, kind="vp", seed=402, noise=True))
    sch = TCDScheduler(prediction_type="v_prediction")
    out.append(
        run("cfg-tcd-v-gamma", sch, 6, kind="vp", seed=403, noise=True, step_kwargs={"eta": 0.7})
    )
    sch = TCDScheduler()
    out.append(run("cfg-tcd-deterministic", sch, 6, kind="vp", seed=404, step_kwargs={"eta": 0.0}))
    sch = DDIMParallelScheduler(clip_sample=False)
    out.append(
        run("ddim_parallel", sch, 10, kind="vp", seed=405, noise=True, step_kwargs={"eta": 1.0})
    )
    sch = DDPMParallelScheduler()
    out.append(run("ddpm_parallel", sch, 10, kind="vp", seed=406, noise=True))
    # Consistency models: the default clamps the consistency output to [-1, 1].
    for n in (1, 4):
        sch = CMStochasticIterativeScheduler()
        out.append(run("consistency", sch, n, kind="cm", seed=n + 407, noise=True))
    sch = CMStochasticIterativeScheduler(clip_denoised=False, sigma_max=40.0, rho=5.0)
    out.append(run("cfg-consistency-unclipped", sch, 3, kind="cm", seed=409, noise=True))
    return out


def sa_solver_records():
    """SA-Solver (data prediction: in float32 diffusers' noise-prediction runs carry round-off
    of order 1e-4 at |x| ~ 2, beyond the replay tolerance), default tau window, noise replayed."""
    out = []
    for n in (10, 20):
        sch = SASolverScheduler()
        out.append(run("sa_solver", sch, n, kind="vp", seed=n + 500, noise=True))
    sch = SASolverScheduler(
        **SD, predictor_order=3, corrector_order=3, timestep_spacing="leading", steps_offset=1
    )
    out.append(run("cfg-sa-solver-3-3-leading", sch, 12, kind="vp", seed=502, noise=True))
    sch = SASolverScheduler(
        predictor_order=1,
        corrector_order=4,
        lower_order_final=False,
        prediction_type="v_prediction",
    )
    out.append(run("cfg-sa-solver-1-4-v", sch, 12, kind="vp", seed=503, noise=True))
    return out


def edm_dpm_records():
    """EDM DPM-Solver++ at order 3 with a final sigma_min below 15 steps (the order lowering
    counts the steps diffusers takes). (Its SDE variant has no third-order update in diffusers.)"""
    sch = EDMDPMSolverMultistepScheduler(solver_order=3, final_sigmas_type="sigma_min")
    return [run("cfg-edm-dpmsolver++-3-sigma-min", sch, 8, kind="edm", seed=511)]


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
    records += extra_records()
    records += new_class_records()
    records += fewstep_and_parallel_records()
    records += sa_solver_records()
    records += edm_dpm_records()
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
