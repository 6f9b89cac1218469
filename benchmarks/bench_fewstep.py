"""Few-step generation against an exact teacher: CD, iCT, ECT, sCT / sCD and MeanFlow.

Data: ``ring2`` — eight Gaussians on a circle in 2-D (the tour's ring); ``mix64`` — four
components of smooth 64-D signals (``bench_inverse``'s prior). Both are exact oracles
(:mod:`jaxsolve.diffusion.analytic`), so the teacher of consistency distillation and of sCD is
error-free and what a student loses is its own.

Every student is the same MLP (:class:`~jaxsolve.diffusion.NoiseMLP`; a two-time variant for
MeanFlow) trained in float32 with ``train.fit`` for the same number of steps, from scratch except
ECT, which fine-tunes the EDM-trained network ("Consistency Models Made Easy"). Each is sampled
with 1, 2 and 4 evaluations: consistency models with the multistep consistency sampler (2 steps:
sigma_max, then sigma_d tan(1.1), sCM's middle time; 4 steps: the Karras levels of a 5-level
grid), MeanFlow with jumps at t = 1, 0.5, 0 (4 steps: uniform).

Reference rows: the exact oracle sampled with DPM-Solver++(2M) and Heun (the "teacher's multistep
solvers"; 40 evaluations is the issue's "40-step teacher"), the EDM model of the same network
trained for the same steps, the untrained student (1 and 2 steps), and the floor: the distance
between two independent data sets of the evaluation size.

The metric is the sliced Wasserstein distance (:func:`jaxsolve.diffusion.sliced_wasserstein`,
512 directions, averaged over 4 draws of directions) between ``n_eval`` samples and as many fresh
data samples, averaged over 4 independent replicates (standard errors recorded). The sCM ablation
trains sCT without tangent normalisation and adaptive weighting (the paper's stability claim) and
records whether the run stayed finite.

Writes benchmarks/results/fewstep.json and fewstep.png. ``--quick`` shrinks every run.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import tempfile
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

# The 64-D prior of the inverse-problem benchmark (this directory is on sys.path for a script).
from bench_inverse import _mix64 as mix64

from jaxsolve import diffusion as jd
from jaxsolve import train
from jaxsolve.diffusion import fewstep as fs
from jaxsolve.diffusion.analytic import GaussianMixture

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
TEACHER_NFES = [2, 4, 8, 16, 24, 40]
STUDENT_NFES = [1, 2, 4]
REPLICATES = 4


# --- data -------------------------------------------------------------------------------------


def ring2():
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    means = 2.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return GaussianMixture(np.full(8, 1 / 8), means, np.full((8, 2), 0.03))


def sigma_data(oracle) -> float:
    """The data's standard deviation per coordinate, :math:`\\sqrt{\\operatorname{tr}C/d}`."""
    return float(np.sqrt(np.trace(np.asarray(oracle.covariance())) / oracle.dim))


# --- networks ---------------------------------------------------------------------------------


class Batched(eqx.Module):
    """A single-sample ``net(x, c)`` on a batch: ``(batch, d)`` and ``c`` scalar or ``(batch,)``."""

    net: jd.NoiseMLP

    def __call__(self, x, c):
        c = jnp.broadcast_to(c, x.shape[:1])
        return jax.vmap(self.net)(x, c)


class TwoTimeMLP(eqx.Module):
    """MeanFlow's ``u(z, r, t)``: a NoiseMLP conditioned on ``t`` plus an embedding of ``t - r``."""

    net: jd.NoiseMLP
    gap_embed: jd.FourierEmbedding
    gap_proj: eqx.nn.Linear

    def __init__(self, dim, width, depth, *, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.net = jd.NoiseMLP(dim, width, depth, key=k1)
        self.gap_embed = jd.FourierEmbedding(64, scale=1.0, key=k2)
        self.gap_proj = eqx.nn.Linear(64, width, key=k3)

    def one(self, z, r, t):
        n = self.net
        e = jax.nn.silu(n.embed_proj(n.embed(t)) + self.gap_proj(self.gap_embed(t - r)))
        h = z
        for layer, cond in zip(n.layers, n.cond_layers, strict=True):
            h = jax.nn.silu(layer(h) + cond(e))
        return n.out(h)

    def __call__(self, z, r, t):
        r, t = jnp.broadcast_to(r, z.shape[:1]), jnp.broadcast_to(t, z.shape[:1])
        return jax.vmap(self.one)(z, r, t)


class LogWeight(eqx.Module):
    """sCM's adaptive weighting :math:`w(t)`: a linear map of a Fourier embedding of ``t``."""

    embed: jd.FourierEmbedding
    proj: eqx.nn.Linear

    def __init__(self, *, key):
        k1, k2 = jax.random.split(key)
        self.embed = jd.FourierEmbedding(64, scale=1.0, key=k1)
        self.proj = eqx.nn.Linear(64, 1, key=k2)

    def __call__(self, t):
        return jax.vmap(lambda s: self.proj(self.embed(s))[0])(t)


class SCM(eqx.Module):
    """The TrigFlow network :math:`F(x_t/\\sigma_d, t)` and its adaptive log-weight."""

    F: Batched
    w: LogWeight | None


# --- training ---------------------------------------------------------------------------------


def _fit(loss, model, oracle, cfg, key, *, steps=None, with_step=False):
    steps = cfg["steps"] if steps is None else steps
    schedule = optax.cosine_decay_schedule(cfg["lr"], steps, alpha=0.05)
    data = jax.jit(lambda k: oracle.sample(k, cfg["batch"]).astype(jnp.float32))
    t0 = time.perf_counter()
    result = train.fit(
        loss,
        model,
        data,
        optimizer=optax.adam(schedule),
        num_steps=steps,
        key=key,
        ema_decay=cfg["ema"],
        steps_per_call=min(500, steps),
        progress=False,
        with_step=with_step,
    )
    seconds = time.perf_counter() - t0
    losses = result.history["loss"]
    return result.ema_model, {"seconds": seconds, "steps": steps, "final_loss": losses[-1]}


METHODS = (
    "edm", "cd", "cd_uniform", "ict", "ect", "sct", "scd", "sct_plain", "meanflow",
    "meanflow_distilled",
)  # fmt: skip


# Positions in one split of the run's key: (network, [log-weight,] fit). The untrained network,
# shared by EDM, CD and iCT, is position 0. "cd_uniform" is the benchmark's earlier "cd" and shares
# its fit key with "cd".
KEYS = dict(
    edm=(1,), cd=(2,), cd_uniform=(2,), ict=(3,), ect=(4,), sct=(5, 6, 7), scd=(8, 9, 10),
    sct_plain=(11, 12), meanflow=(13, 14), meanflow_distilled=(15, 16),
)  # fmt: skip


def train_all(oracle, cfg, key, log, methods=METHODS):
    """Trains ``methods`` (ECT needs the EDM model). Every method draws its keys from fixed
    positions of one split (``KEYS``), so a partial run trains exactly what the full run does."""
    d, sd = oracle.dim, sigma_data(oracle)
    width, depth = cfg["width"], cfg["depth"]
    keys = jax.random.split(key, 32)
    init_net = jd.NoiseMLP(d, width, depth, key=keys[0])
    levels = jd.karras_sigmas(cfg["cd_levels"], SIGMA_MIN, SIGMA_MAX)

    def cm(net):
        return fs.ConsistencyFunction(net, sigma_min=SIGMA_MIN, sigma_data=sd)

    students, info = {"untrained": ("cm", cm(init_net))}, {}
    trained = {}

    # The EDM model of the same network: the trained teacher row, and ECT's starting point.
    def edm(model, x0, k):
        return jd.edm_loss(jd.Precond(model, sigma_data=sd, batch_ndim=1), x0, k, sigma_data=sd)

    def train_edm():
        if "edm" not in trained:
            trained["edm"], info["edm"] = _fit(edm, init_net, oracle, cfg, keys[KEYS["edm"][0]])
            students["edm"] = ("edm", jd.Precond(trained["edm"], sigma_data=sd))
            log("edm", info["edm"])
        return trained["edm"]

    def run(name, loss, start, kind, *, with_step=False, unwrap=lambda m: m):
        k_fit = keys[KEYS[name][-1]]
        try:
            model, info[name] = _fit(loss, start, oracle, cfg, k_fit, with_step=with_step)
            students[name] = (kind, unwrap(model))
        except FloatingPointError as err:  # the sCM ablation may diverge: that is its finding
            info[name] = {"diverged": str(err).splitlines()[0]}
        log(name, info[name])

    if "edm" in methods:
        train_edm()

    # Consistency distillation from the exact teacher (Heun steps on a 40-level Karras grid):
    # "cd" with iCT's weighting 1/(sigma_hi - sigma_lo) and lognormal interval sampling
    # ("Improved Techniques for Training Consistency Models"), "cd_uniform" as Algorithm 2 of
    # "Consistency Models" (uniform intervals, weight 1). Both use the student as its own target.
    for name, extra in [
        ("cd", dict(weight=lambda s, t: 1.0 / (s - t), level_sampling="lognormal")),
        ("cd_uniform", {}),
    ]:
        if name in methods:

            def cd(model, x0, k, extra=extra):
                return fs.consistency_distillation_loss(
                    model, model, oracle, x0, k, levels, jd.Heun(), **extra
                )

            run(name, cd, cm(init_net), "cm")

    for name, schedule in [("ict", "ict"), ("ect", "ect")]:
        if name in methods:

            def ct(model, x0, k, step, schedule=schedule):
                return fs.consistency_training_loss(
                    model, model, x0, k, progress=step / cfg["steps"], schedule=schedule,
                    sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX,
                )  # fmt: skip

            start = cm(train_edm() if name == "ect" else init_net)
            run(name, ct, start, "cm", with_step=True)

    warmup = max(1, cfg["steps"] // 10)
    for name, teacher, normalize, adaptive in [
        ("sct", None, True, True),
        ("scd", oracle, True, True),
        ("sct_plain", None, False, False),
    ]:
        if name in methods:

            def scm(model, x0, k, step, teacher=teacher, normalize=normalize):
                return fs.scm_loss(
                    model.F, x0, k, sd, teacher=teacher, adaptive_weight=model.w,
                    normalize_tangent=normalize, warmup_ratio=jnp.minimum(step / warmup, 1.0),
                )  # fmt: skip

            start = SCM(
                Batched(jd.NoiseMLP(d, width, depth, key=keys[KEYS[name][0]])),
                LogWeight(key=keys[KEYS[name][1]]) if adaptive else None,
            )
            run(name, scm, start, "scm", with_step=True, unwrap=lambda m: m.F)

    # MeanFlow from the data alone (the conditional velocity e - x), and distilled: the exact
    # teacher's marginal velocity in the MeanFlow identity (of the data scaled by 1/sigma_d).
    def scaled_denoiser(x, s):
        return oracle.denoise(sd * x, sd * s) / sd

    teacher_velocity = jd.to_flow(scaled_denoiser, jd.FlowSchedule())
    for name, velocity in [("meanflow", None), ("meanflow_distilled", teacher_velocity)]:
        if name in methods:

            def mf(model, x0, k, velocity=velocity):
                return fs.meanflow_loss(model, x0 / sd, k, velocity=velocity)

            net_key = keys[KEYS[name][0]]
            run(name, mf, TwoTimeMLP(d, width, depth, key=net_key), "meanflow")
    return students, info


# --- sampling and evaluation ------------------------------------------------------------------


def cm_grid(nfe, sd):
    """Consistency sampling levels (then 0): sigma_max; sigma_d tan(1.1); or a Karras grid."""
    if nfe == 1:
        return jnp.array([SIGMA_MAX, 0.0])
    if nfe == 2:
        return jnp.array([SIGMA_MAX, sd * np.tan(1.1), 0.0])
    return [*jd.karras_sigmas(nfe + 1, SIGMA_MIN, SIGMA_MAX)[:-2].tolist(), 0.0]


def generate(kind, model, nfe, sd, x_max, key):
    """``nfe``-evaluation samples from noise ``x_max`` (at sigma_max, or unit noise for flows)."""
    if kind == "meanflow":
        times = np.linspace(1.0, 0.0, nfe + 1) if nfe != 2 else np.array([1.0, 0.5, 0.0])
        return sd * fs.meanflow_sample(model, x_max / SIGMA_MAX, times)
    if kind in ("cm", "scm"):
        denoiser = fs.from_trigflow(model, sd) if kind == "scm" else model
        sampler = fs.ConsistencySampler(sigma_min=0.0 if kind == "scm" else SIGMA_MIN)
        grid = jnp.asarray(cm_grid(nfe, sd), x_max.dtype)
        return jd.sample(denoiser, x_max, grid, sampler, key=key)
    # A diffusion model: DPM-Solver++(2M), one evaluation a step.
    grid = jd.karras_sigmas(nfe, SIGMA_MIN, SIGMA_MAX)
    return jd.sample(model, x_max, grid, jd.DPMSolverPP())


def distance(x, data, key, n_draws=4):
    keys = jax.random.split(key, n_draws)
    return float(np.mean([jd.sliced_wasserstein(x, data, k, 512) for k in keys]))


def evaluate(name, oracle, students, cfg, key):
    """Each distance is the mean over ``REPLICATES`` independent pairs (samples from fresh noise,
    a fresh data set of ``n_eval``): one pair's distance varies by about its own size on the
    ring, where it mostly counts how many samples each mode got. The standard errors go to
    ``rows["standard_error"]``."""
    sd, n, reps = sigma_data(oracle), cfg["n_eval"], REPLICATES
    k_data, k_floor, k_noise, k_sw, k_gen = jax.random.split(key, 5)
    data = oracle.sample(k_data, reps * n).astype(jnp.float32).reshape(reps, n, -1)
    other = oracle.sample(k_floor, reps * n).astype(jnp.float32).reshape(reps, n, -1)
    x_max = SIGMA_MAX * jax.random.normal(k_noise, (reps * n, oracle.dim), jnp.float32)

    def measure(x):
        per = [distance(xi, di, k_sw) for xi, di in zip(x.reshape(reps, n, -1), data, strict=True)]
        return float(np.mean(per)), float(np.std(per, ddof=1) / np.sqrt(reps))

    rows, errors = {}, {}
    rows["floor"], errors["floor"] = measure(other)

    # The exact teacher with its multistep solvers.
    # DPM-Solver++(2M) takes one evaluation a step; Heun two, but its last step (to 0) is Euler's.
    for solver_name, solver, steps_for in [
        ("dpmpp2m", jd.DPMSolverPP(), lambda nfe: nfe),
        ("heun", jd.Heun(), lambda nfe: (nfe + 1) // 2),
    ]:
        label = f"teacher_{solver_name}"
        rows[label], errors[label] = {}, {}
        for nfe in TEACHER_NFES:
            grid = jd.karras_sigmas(steps_for(nfe), SIGMA_MIN, SIGMA_MAX)
            x = jd.sample(oracle.denoise, x_max, grid.astype(jnp.float32), solver)
            rows[label][str(nfe)], errors[label][str(nfe)] = measure(x.astype(jnp.float32))

    for label, (kind, model) in students.items():
        nfes = TEACHER_NFES if kind == "edm" else STUDENT_NFES
        if label == "untrained":
            nfes = [1, 2]
        rows[label], errors[label] = {}, {}
        for nfe in nfes:
            x = generate(kind, model, nfe, sd, x_max, k_gen)
            rows[label][str(nfe)], errors[label][str(nfe)] = measure(x)
    rows["standard_error"] = errors
    return rows


def within_2x(rows):
    """Which few-step methods land within 2x of the 40-step exact teacher's distance at 2 steps."""
    teacher = rows["teacher_dpmpp2m"]["40"]
    return {
        label: rows[label]["2"] <= 2 * teacher
        for label in ("cd", "ict", "ect", "sct", "scd", "meanflow", "meanflow_distilled")
        if label in rows
    }


def merge(previous, new):
    """A partial run's dataset entry (``--methods``) over the previous full one: its methods'
    rows, errors and training records replace those of the same name; the rest are kept (the
    keys and the evaluation draws are fixed, so they are what a full run computes)."""
    merged = json.loads(json.dumps(previous))
    for label, row in new["distances"].items():
        if label not in ("standard_error", "within_2x_of_teacher_at_2_steps"):
            merged["distances"][label] = row
    merged["distances"]["standard_error"].update(new["distances"]["standard_error"])
    merged["training"].update(new["training"])
    merged["config"] = new["config"]
    merged.setdefault("partial_runs", []).append(
        {"methods": sorted(new["training"]), "load_average": new["load_average"]}
    )
    return merged


# --- figure -----------------------------------------------------------------------------------


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2))
    markers = dict(
        cd="o",
        cd_uniform="8",
        ict="s",
        ect="D",
        sct="^",
        scd="v",
        sct_plain="x",
        meanflow="P",
        meanflow_distilled="X",
    )
    for ax, name in zip(np.atleast_1d(axes), names, strict=True):
        rows = results["datasets"][name]["distances"]
        for label, style in [("teacher_dpmpp2m", "k-"), ("teacher_heun", "k--"), ("edm", "C9-")]:
            if label not in rows:  # a partial run (--methods) without the EDM model
                continue
            curve = rows[label]
            ax.plot([int(k) for k in curve], list(curve.values()), style, label=label)
        for i, (label, marker) in enumerate(markers.items()):
            if label in rows:
                curve = rows[label]
                ax.plot(
                    [int(k) for k in curve], list(curve.values()), marker=marker, color=f"C{i}",
                    label=label, lw=1,
                )  # fmt: skip
        ax.axhline(rows["floor"], color="0.6", lw=0.8, ls=":", label="floor (two data sets)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("network evaluations")
        ax.set_ylabel("sliced Wasserstein distance to data")
        ax.set_title(name)
    np.atleast_1d(axes)[-1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", default=None, help="datasets (ring2, mix64)")
    parser.add_argument(
        "--methods", nargs="*", default=None, choices=METHODS,
        help="train and evaluate only these, merged into the previous results' rows",
    )  # fmt: skip
    args = parser.parse_args()
    configs = {
        "ring2": (ring2, dict(width=256, depth=3, batch=512, steps=8000, lr=1e-3)),
        "mix64": (mix64, dict(width=256, depth=3, batch=512, steps=8000, lr=5e-4)),
    }
    suffix = "_quick" if args.quick else ""
    results = {
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "device": str(jax.devices()[0]),
        "load_average": os.getloadavg(),
        "quick": args.quick,
        "datasets": {},
    }
    for name, (make, cfg) in configs.items():
        if args.only and name not in args.only:
            continue
        cfg = dict(cfg, ema=0.999, cd_levels=40, n_eval=4096)
        if args.quick:
            cfg.update(steps=400, width=64, n_eval=1024, ema=0.99)
        oracle = make()

        def log(label, info, name=name):
            print(f"[{name}] {label}: {info}", flush=True)

        methods = METHODS if args.methods is None else args.methods
        students, info = train_all(oracle, cfg, jax.random.PRNGKey(0), log, methods)
        rows = evaluate(name, oracle, students, cfg, jax.random.PRNGKey(1))
        print(json.dumps(rows, indent=1), flush=True)
        entry = {
            "config": cfg,
            "training": info,
            "distances": rows,
            "load_average": os.getloadavg(),
        }
        previous_path = os.path.join(RESULTS_DIR, f"fewstep{suffix}.json")
        if args.methods is not None and os.path.exists(previous_path):
            with open(previous_path) as f:
                previous = json.load(f)["datasets"].get(name)
            if previous is not None:
                entry = merge(previous, entry)
        entry["distances"]["within_2x_of_teacher_at_2_steps"] = within_2x(entry["distances"])
        results["datasets"][name] = entry
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, f"fewstep{suffix}.json")
    with open(os.path.join(tempfile.gettempdir(), "jaxsolve_bench_fewstep.lock"), "w") as lock:
        # Two partial runs (--only) may finish together: merge under a lock.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (args.only or args.methods) and os.path.exists(path):
            # A partial run keeps the other datasets' rows (each records its own load).
            with open(path) as f:
                previous = json.load(f)
            for name, row in previous["datasets"].items():
                results["datasets"].setdefault(name, row)
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        plot(results, os.path.join(RESULTS_DIR, f"fewstep{suffix}.png"))


if __name__ == "__main__":
    main()
