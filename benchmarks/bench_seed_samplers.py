"""The seed papers' samplers beside their base solvers: error against a reference at NFE 4-10.

Problems (float64):

* ``mixture64`` — the 64-D Gaussian-mixture oracle of ``bench_samplers.py`` (exact denoiser; the
  reference is diffrax's Dopri8 solution of the probability-flow ODE, then the final denoising).
* ``trained2d`` — a small 2-D model (``Precond(NoiseMLP)``) trained here with
  ``jaxsolve.train.fit`` and ``edm_loss`` on a ring of eight Gaussians; the reference is the
  model's own flow, DPM-Solver++(3M) on 1000 Karras steps. The error therefore measures how well
  each sampler solves the *model's* ODE (the quantity every method here targets).

Every method runs on the same Karras grid (sigma 0.002-80, rho 7) and the same held-out initial
noise; methods that fit something (DPM-Solver-v3's statistics, DC-Solver's ratios, OSS's grids)
fit it on separate samples. The error is the RMS over samples of the L2 distance to the
reference. For a budget of NFE ``N``: one-evaluation-per-step methods take ``N`` steps; GENIE and
Heun (2 per step, 1 for the last) take ``(N + 1) // 2`` steps, i.e. NFE ``N`` or ``N - 1``, as
reported. Each method is evaluated for all budgets in one compile (padded grids, ``vmap``).

Writes benchmarks/results/seed_samplers.json and seed_samplers_error_vs_nfe.png. Run:

    python benchmarks/bench_seed_samplers.py            # full
    python benchmarks/bench_seed_samplers.py --quick    # fewer samples, shorter training
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
NFES = [4, 5, 6, 8, 10]
SMIN, SMAX = 0.002, 80.0
MAXN = max(NFES)


def _mixture64():
    from jaxsolve.diffusion.analytic import GaussianMixture

    rng = np.random.default_rng(1)
    d, k = 64, 8
    means = 0.5 * rng.normal(size=(k, d))
    covs = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        covs.append(q @ np.diag(rng.uniform(0.05, 0.5, size=d)) @ q.T)
    return GaussianMixture(np.full(k, 1.0 / k), means, np.stack(covs))


def _ring():
    from jaxsolve.diffusion.analytic import GaussianMixture

    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    means = 2.0 * np.stack([np.cos(angles), np.sin(angles)], 1)
    return GaussianMixture(np.full(8, 1 / 8), means, np.full((8, 2), 0.03))


def _train_2d(quick):
    import optax

    from jaxsolve import diffusion as jd
    from jaxsolve import train

    ring = _ring()
    steps = 1500 if quick else 5000
    model = jd.Precond(jd.NoiseMLP(2, width=128, depth=3, key=jax.random.PRNGKey(0)), 1.4)
    t0 = time.perf_counter()
    fitted = train.fit(
        lambda m, x, k: jd.edm_loss(m, x, k, sigma_data=1.4),
        model,
        lambda k: ring.sample(k, 512),
        optimizer=optax.adam(optax.cosine_decay_schedule(2e-3, steps, 0.05)),
        num_steps=steps,
        key=jax.random.PRNGKey(1),
        progress=False,
    )
    return fitted.model, ring, time.perf_counter() - t0, steps


def _rms(y, ref):
    return jnp.sqrt(jnp.mean(jnp.sum((y - ref).reshape(y.shape[0], -1) ** 2, axis=-1)))


def _karras(n):
    from jaxsolve import diffusion as jd

    return jd.karras_sigmas(n, SMIN, SMAX, max_steps=MAXN + 1)


class _Evaluator:
    """Runs a solver at every budget in one compile and returns RMS errors and NFEs."""

    def __init__(self, denoiser, x, ref):
        self.denoiser, self.x, self.ref = denoiser, x, ref

    def run(self, make_solver, grids, steps, params=None):
        from jaxsolve import diffusion as jd

        grids = jnp.asarray(grids)
        steps = jnp.asarray(steps)
        params = jnp.zeros(len(steps)) if params is None else jnp.asarray(params)

        @jax.jit
        def go(grids, steps, params):
            def one(grid, n, p):
                out = jd.sample(
                    self.denoiser, self.x, grid, make_solver(p), n_steps=n, full_output=True
                )
                return _rms(out.value, self.ref), out.nfe

            return jax.vmap(one)(grids, steps, params)

        errs, nfe = go(grids, steps, params)
        return [float(e) for e in errs], [int(n) for n in nfe]


def _grids(n_list, builder):
    rows = [np.asarray(builder(n)) for n in n_list]
    width = max(r.shape[0] for r in rows)
    return np.stack([np.concatenate([r, np.zeros(width - r.shape[0])]) for r in rows])


def run_problem(label, denoiser, data, x_eval, ref, quick, log):
    from jaxsolve import diffusion as jd

    ev = _Evaluator(denoiser, x_eval, ref)
    out, timings = {}, {}
    steps1 = NFES
    karras = _grids(steps1, lambda n: _karras(n))
    two_stage = [(n + 1) // 2 for n in NFES]
    karras2 = _grids(two_stage, lambda n: _karras(n))

    def add(name, base, make, grids=karras, steps=steps1, params=None):
        t0 = time.perf_counter()
        errs, nfe = ev.run(make, grids, steps, params)
        timings[name] = time.perf_counter() - t0
        out[name] = {"base": base, "rms_error": errs, "nfe": nfe}
        log(f"  {name:34s}" + "".join(f"{e:10.3e}" for e in errs) + f"   nfe {nfe}")

    # Bases
    add("DDIM", None, lambda p: jd.DDIM())
    add("DPM-Solver++(2M)", None, lambda p: jd.DPMSolverPP(order=2))
    add("DPM-Solver++(3M)", None, lambda p: jd.DPMSolverPP(order=3))
    add("UniPC-2", None, lambda p: jd.UniPC(order=2))
    add("UniPC-3", None, lambda p: jd.UniPC(order=3))
    add("PLMS-2 (iPNDM-2)", None, lambda p: jd.IPNDM(order=2))
    add("PLMS-3 (iPNDM-3)", None, lambda p: jd.IPNDM(order=3))
    add("Heun", None, lambda p: jd.Heun(), grids=karras2, steps=two_stage)

    # DPM-Solver-v3: EMS from the model on data samples.
    t0 = time.perf_counter()
    ems = jd.estimate_ems(
        denoiser, data, SMIN, SMAX, key=jax.random.PRNGKey(11), num=64 if quick else 120
    )
    timings["estimate_ems"] = time.perf_counter() - t0
    add("DPM-Solver-v3 (3, corrector)", "DPM-Solver++(3M)", lambda p: jd.DPMSolverV3(ems, order=3))
    add("DPM-Solver-v3 (2, corrector)", "DPM-Solver++(2M)", lambda p: jd.DPMSolverV3(ems, order=2))
    add(
        "DPM-Solver-v3 (3, pseudo)",
        "DPM-Solver++(3M)",
        lambda p: jd.DPMSolverV3(ems, order=3, pseudo=True, pseudo_corrector=True),
    )

    # DC-Solver: ratios fitted per NFE on separate trajectories; CPR leave-one-NFE-out.
    n_fit = 8 if quick else 16
    key_fit = jax.random.PRNGKey(21)
    x_fit = SMAX * jax.random.normal(key_fit, (n_fit, *x_eval.shape[1:]), x_eval.dtype)
    t0 = time.perf_counter()
    fitted = {}
    for n in NFES:
        sig = jd.karras_sigmas(n, SMIN, SMAX)
        reference = jd.reference_states(denoiser, x_fit, sig, refine=16 if quick else 30)
        fitted[n] = np.asarray(jd.fit_dc_ratios(denoiser, x_fit, sig, reference, order=2))
    timings["fit_dc_ratios"] = time.perf_counter() - t0
    pad = lambda r: np.concatenate([r, np.ones(MAXN + 1 - r.shape[0])])
    add(
        "DC-Solver (UniPC-2, fitted)",
        "UniPC-2",
        lambda p: jd.DCSolver(p, order=2),
        params=np.stack([pad(fitted[n]) for n in NFES]),
    )
    cpr_rows = []
    for n in NFES:
        others = [m for m in NFES if m != n]
        cpr = jd.CascadeRatioRegression.fit(others, [fitted[m] for m in others])
        cpr_rows.append(np.asarray(cpr(n, max_steps=MAXN + 1)))
    add(
        "DC-Solver (UniPC-2, CPR held-out NFE)",
        "UniPC-2",
        lambda p: jd.DCSolver(p, order=2),
        params=np.stack(cpr_rows),
    )

    # DualFast on a first-order and a second-order solver.
    for c in (0.25, 0.5):
        add(f"DualFast(DDIM, c={c})", "DDIM", lambda p, c=c: jd.DualFast(jd.DDIM(), c=c))
        add(
            f"DualFast(DPM-Solver++(2M), c={c})",
            "DPM-Solver++(2M)",
            lambda p, c=c: jd.DualFast(jd.DPMSolverPP(order=2), c=c),
        )

    # GENIE (2 NFE per step) against Heun at the same budget.
    add("GENIE", "Heun", lambda p: jd.GENIE(), grids=karras2, steps=two_stage)

    # Optimal step sizes: DP over a 32-step Karras teacher (the solver itself), on separate noise.
    n_teacher = 24 if quick else 32
    teacher = jd.karras_sigmas(n_teacher, SMIN, SMAX)
    x_oss = x_fit[: 4 if quick else 8]
    for base, solver in (("DDIM", jd.DDIM()), ("DPM-Solver++(2M)", jd.DPMSolverPP(order=2))):
        t0 = time.perf_counter()
        grids = [
            np.asarray(jd.optimal_sigmas(denoiser, x_oss, teacher, solver, n).sigmas) for n in NFES
        ]
        timings[f"optimal_sigmas {base}"] = time.perf_counter() - t0
        add(
            f"OSS grid + {base}",
            base,
            lambda p, solver=solver: solver,
            grids=_grids(range(len(NFES)), lambda j, grids=grids: grids[j]),
        )
        out[f"OSS grid + {base}"]["sigmas"] = [list(map(float, g)) for g in grids]

    # Time-Shift sampler: window 0.2 in log-sigma, shifting above sigma = 1, with the data's
    # per-element variance.
    v = float(jnp.mean(jnp.var(data.reshape(data.shape[0], -1), axis=0)))
    for base, solver in (("DDIM", jd.DDIM()), ("DPM-Solver++(2M)", jd.DPMSolverPP(order=2))):
        add(
            f"Time-Shift({base})",
            base,
            lambda p, solver=solver: jd.TimeShift(
                solver, window=0.2, cutoff_sigma=1.0, data_variance=v
            ),
        )

    # Momentum.
    add(
        "HB(DPM-Solver++(2M), beta=0.8)",
        "DPM-Solver++(2M)",
        lambda p: jd.HeavyBall(jd.DPMSolverPP(order=2), 0.8),
    )
    add("HB(PLMS-2, beta=0.8)", "PLMS-2 (iPNDM-2)", lambda p: jd.HeavyBall(jd.IPNDM(order=2), 0.8))
    add("GHVB 1.5", "PLMS-2 (iPNDM-2)", lambda p: jd.GHVB(1.5))
    add("GHVB 2.5", "PLMS-3 (iPNDM-3)", lambda p: jd.GHVB(2.5))

    # BDIA.
    add("BDIA(gamma=1)", "DDIM", lambda p: jd.BDIA(1.0))
    add("BDIA(gamma=0.5)", "DDIM", lambda p: jd.BDIA(0.5))

    # Teleportation: Gaussian fit to data, free jump 80 -> 5, then N solver steps from 5.
    gauss = jd.gaussian_approximation(data)
    tele = _grids(NFES, lambda n: jd.teleport_sigmas(SMAX, jd.karras_sigmas(n, SMIN, 5.0)))
    for base, solver in (
        ("UniPC-2", jd.UniPC(order=2)),
        ("DPM-Solver++(2M)", jd.DPMSolverPP(order=2)),
    ):
        add(
            f"Teleport(80->5) + {base}",
            base,
            lambda p, solver=solver: jd.Teleport(solver, gauss),
            grids=tele,
            steps=[n + 1 for n in NFES],
        )
    return out, timings


def bdia_roundtrip(denoiser, x, n=10):
    from jaxsolve import diffusion as jd

    sig = jd.karras_sigmas(n, SMIN, SMAX)
    run = jd.sample(denoiser, x, sig, jd.BDIA(1.0), full_output=True, save_trajectory=True)
    back = jd.bdia_invert(denoiser, run.trajectory[n - 1], run.trajectory[n], sig, 1.0)
    return float(jnp.max(jnp.abs(back - x)) / jnp.max(jnp.abs(x)))


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [
        ("DPM-Solver-v3", ["DPM-Solver++(2M)", "DPM-Solver++(3M)", "UniPC-3"]),
        ("DC-Solver", ["UniPC-2"]),
        ("DualFast", ["DDIM", "DPM-Solver++(2M)"]),
        ("GENIE", ["Heun", "DDIM"]),
        ("OSS", ["DDIM", "DPM-Solver++(2M)"]),
        ("Time-Shift", ["DDIM", "DPM-Solver++(2M)"]),
        ("HB|GHVB", ["DPM-Solver++(2M)", "PLMS-2 (iPNDM-2)", "PLMS-3 (iPNDM-3)"]),
        ("BDIA", ["DDIM"]),
        ("Teleport", ["UniPC-2", "DPM-Solver++(2M)"]),
    ]
    problems = list(results["problems"])
    fig, axes = plt.subplots(
        len(problems), len(families), figsize=(4 * len(families), 3.6 * len(problems))
    )
    for r, prob in enumerate(problems):
        rows = results["problems"][prob]["methods"]
        for c, (fam, bases) in enumerate(families):
            ax = axes[r, c]
            for name in bases:
                ax.semilogy(
                    rows[name]["nfe"],
                    rows[name]["rms_error"],
                    "--o",
                    ms=3,
                    color="gray",
                    alpha=0.7,
                    label=name,
                )
            for name, row in rows.items():
                if any(name.startswith(p) for p in fam.split("|")):
                    ax.semilogy(row["nfe"], row["rms_error"], "-o", ms=3, label=name)
            ax.set_title(f"{prob}: {fam}", fontsize=9)
            ax.set_xlabel("NFE")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=6)
    axes[0, 0].set_ylabel("RMS error vs reference")
    axes[1, 0].set_ylabel("RMS error vs reference")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", True)
    from jaxsolve import diffusion as jd

    os.makedirs(RESULTS_DIR, exist_ok=True)
    lines = []

    def log(s):
        print(s, flush=True)
        lines.append(s)

    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
        },
        "quick": args.quick,
        "nfe_budget": NFES,
        "grid": {"kind": "karras", "sigma_min": SMIN, "sigma_max": SMAX, "rho": 7.0},
        "problems": {},
    }
    t_start = time.perf_counter()

    # 64-D Gaussian mixture oracle.
    mix = _mixture64()
    n_eval = 64 if args.quick else 128
    x_eval = mix.sample(jax.random.PRNGKey(0), n_eval, sigma=SMAX)
    t0 = time.perf_counter()
    ref = mix.denoise(mix.reference_solution(x_eval, SMAX, SMIN, rtol=1e-10, atol=1e-10), SMIN)
    ref_s = time.perf_counter() - t0
    data = mix.sample(jax.random.PRNGKey(5), 2048 if args.quick else 4096)
    log(f"\nmixture64 (d=64, 8 components), {n_eval} samples; RMS error at NFE {NFES}")
    methods, timings = run_problem("mixture64", mix, data, x_eval, ref, args.quick, log)
    results["problems"]["mixture64"] = {
        "methods": methods,
        "seconds": timings,
        "reference": "diffrax Dopri8 rtol=atol=1e-10, then the exact denoiser at sigma_min",
        "reference_seconds": ref_s,
        "eval_samples": n_eval,
    }

    # Trained 2-D model.
    model, ring, train_s, train_steps = _train_2d(args.quick)
    x2 = SMAX * jax.random.normal(jax.random.PRNGKey(3), (512 if not args.quick else 256, 2))
    fine = jd.karras_sigmas(1000, SMIN, SMAX)
    ref2 = jd.sample(model, x2, fine, jd.DPMSolverPP(order=3))
    check = jd.sample(model, x2, jd.karras_sigmas(500, SMIN, SMAX), jd.DPMSolverPP(order=3))
    data2 = ring.sample(jax.random.PRNGKey(9), 4096)
    log(f"\ntrained2d (ring of 8, Precond(NoiseMLP), {train_steps} steps), {x2.shape[0]} samples")
    methods2, timings2 = run_problem("trained2d", model, data2, x2, ref2, args.quick, log)
    sw = float(
        jd.sliced_wasserstein(
            ref2, ring.sample(jax.random.PRNGKey(4), x2.shape[0]), jax.random.PRNGKey(8)
        )
    )
    results["problems"]["trained2d"] = {
        "methods": methods2,
        "seconds": timings2,
        "reference": "DPM-Solver++(3M), 1000 Karras steps on the trained model",
        "reference_self_check_rms_500_vs_1000_steps": float(_rms(check, ref2)),
        "train_seconds": train_s,
        "train_steps": train_steps,
        "model_vs_data_sliced_wasserstein": sw,
        "eval_samples": int(x2.shape[0]),
    }
    results["bdia_roundtrip_relative_error"] = {
        "mixture64_10_steps": bdia_roundtrip(mix, x_eval[:16]),
        "trained2d_10_steps": bdia_roundtrip(model, x2[:64]),
    }
    log(f"\nBDIA sample-then-invert relative error: {results['bdia_roundtrip_relative_error']}")
    results["total_seconds"] = time.perf_counter() - t_start
    path = os.path.join(RESULTS_DIR, "seed_samplers.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(RESULTS_DIR, "seed_samplers_error_vs_nfe.png"))
    log(f"\nwrote {path} in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
