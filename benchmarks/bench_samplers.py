"""Samplers: accuracy per NFE, speed against diffusers and against bare model calls, compile time.

(a) Error against the diffrax reference solution of the probability-flow ODE, versus NFE, for every
    deterministic solver, on a 2-D and a 64-D Gaussian mixture (and the moment error of the
    stochastic samplers on the 2-D one). Table and plot.
(b) DPM-Solver++(2M), 20 steps, on a Gaussian-mixture denoiser (d=64, 8 components, batch 4096):
    jaxsolve's compiled scan against diffusers' DPMSolverMultistepScheduler loop (PyTorch CPU, the
    same mixture maths in torch) and against 20 calls of the jitted denoiser alone.
(c) Compile time against the number of steps, for jaxsolve's scan and for a Python loop unrolled
    under jit (what a direct port of a PyTorch sampler compiles to).

Writes benchmarks/results/samplers.json and samplers_error_vs_nfe.png. Run:

    python benchmarks/bench_samplers.py            # full
    python benchmarks/bench_samplers.py --quick    # smaller problems
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


def _mixture(d, k, seed, scale):
    from jaxsolve.diffusion.analytic import GaussianMixture

    rng = np.random.default_rng(seed)
    means = scale * rng.normal(size=(k, d))
    covs = []
    for _ in range(k):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        covs.append(q @ np.diag(rng.uniform(0.05, 0.5, size=d)) @ q.T)
    return GaussianMixture(np.full(k, 1.0 / k), means, np.stack(covs))


# ---------------------------------------------------------------------------------------------
# (a) accuracy per NFE


def _deterministic_solvers():
    from jaxsolve import diffusion as jd

    return {
        "Euler": jd.Euler(),
        "Heun": jd.Heun(),
        "DPM2": jd.DPM2(),
        "LMS(4)": jd.LMS(order=4),
        "DDIM": jd.DDIM(),
        "DPM-Solver-2 (S)": jd.DPMSolver(order=2),
        "DPM-Solver-3 (S)": jd.DPMSolver(order=3),
        "DPM-Solver++(2M)": jd.DPMSolverPP(order=2),
        "DPM-Solver++(3M)": jd.DPMSolverPP(order=3),
        "DPM-Solver++(3M) legacy": jd.DPMSolverPP(order=3, legacy_third_order=True),
        "DPM-Solver++(2S)": jd.DPMSolverPP(order=2, multistep=False),
        "UniPC-2 (bh2)": jd.UniPC(order=2),
        "UniPC-3 (bh2)": jd.UniPC(order=3),
        "UniPC-2 (bh1)": jd.UniPC(order=2, variant="bh1"),
        "DEIS-3 (log sigma)": jd.DEIS(order=3),
        "DEIS-3 (tAB, VP linear)": jd.DEIS(order=3, variable="t", schedule=jd.VPSchedule.linear()),
        "iPNDM": jd.IPNDM(),
        "LMS(4) k-diffusion": jd.LMSMultistepFinal(order=4),
        "PNDM (Heun warm-up)": jd.PNDM(warmup="heun"),
        "SA-Solver (3,3) tau=0": jd.SASolver(predictor_order=3, corrector_order=3, tau=0.0),
    }


def _stochastic_solvers():
    from jaxsolve import diffusion as jd

    return {
        "EulerAncestral": jd.EulerAncestral(),
        "DDIM(eta=0.5)": jd.DDIM(eta=0.5),
        "Euler-Maruyama": jd.EulerMaruyama(),
        "EDM (churn 40)": jd.EDMStochastic(churn=40.0, s_tmin=0.05, s_tmax=50.0),
        "SDE-DPM-Solver++(2M)": jd.DPMSolverPPSDE(order=2),
        "SDE-DPM-Solver++(3M)": jd.DPMSolverPPSDE(order=3),
        "SDE-DPM-Solver++(3M) k-diffusion": jd.DPMSolverPP3MSDEKDiffusion(),
        "DPM2 ancestral": jd.DPM2Ancestral(),
        "DPM-Solver++(2S) ancestral": jd.DPMSolverPP2SAncestral(),
        "DPM-Solver++ SDE (2S)": jd.DPMSolverPPSDE2S(),
        "DDPM (fixed_large)": jd.DDPM(variance_type="fixed_large"),
        "SA-Solver (3,3) tau=1": jd.SASolver(predictor_order=3, corrector_order=3, tau=1.0),
        "SDE-DPM-Solver-2 (noise, 2M)": jd.DPMSolverSDE(order=2),
    }


def _nfe_per_step(name):
    two = ("Heun", "DPM2", "DPM2 ancestral", "DPM-Solver++(2S) ancestral", "DPM-Solver++ SDE (2S)")
    return 2 if name in two else 1


def _steps_for(name, nfe):
    """Steps that cost at most ``nfe`` evaluations (Heun/DPM2: 2 per step, 1 for the last; PNDM's
    Heun warm-up: one extra call on its first interval)."""
    per = _nfe_per_step(name)
    extra = 1 if name.startswith("PNDM") else 0
    return max(1, (nfe - extra + per - 1) // per)


def accuracy(quick):
    from jaxsolve import diffusion as jd

    jax.config.update("jax_enable_x64", True)
    smax, smin = 80.0, 0.002
    nfes = [6, 10, 20, 40] if quick else [6, 10, 15, 20, 30, 40, 60]
    out = {}
    for label, d, k, batch in [("2d", 2, 6, 256), ("64d", 64, 8, 64 if quick else 128)]:
        mix = _mixture(d, k, seed=1, scale=1.5 if d == 2 else 0.5)
        x0 = mix.sample(jax.random.PRNGKey(0), batch, sigma=smax)
        t0 = time.perf_counter()
        ref = mix.denoise(mix.reference_solution(x0, smax, smin, rtol=1e-10, atol=1e-10), smin)
        ref_seconds = time.perf_counter() - t0
        rows = {}
        for name, solver in _deterministic_solvers().items():
            errs = []
            for nfe in nfes:
                steps = _steps_for(name, nfe)
                y = jd.sample(mix, x0, jd.karras_sigmas(steps, smin, smax), solver)
                errs.append(float(jnp.sqrt(jnp.mean(jnp.sum((y - ref) ** 2, -1)))))
            rows[name] = errs
        out[label] = {
            "nfe": nfes,
            "rms_error": rows,
            "reference_seconds": ref_seconds,
            "batch": batch,
        }
        if label == "2d":
            n = 4000 if quick else 20000
            xs = mix.sample(jax.random.PRNGKey(3), n, sigma=smax)
            mean, cov = np.asarray(mix.mean()), np.asarray(mix.covariance())
            moments = {}
            for name, solver in _stochastic_solvers().items():
                errs = []
                for nfe in nfes:
                    steps = _steps_for(name, nfe)
                    y = np.asarray(
                        jd.sample(
                            mix,
                            xs,
                            jd.karras_sigmas(steps, smin, smax),
                            solver,
                            key=jax.random.PRNGKey(4),
                        )
                    )
                    errs.append(
                        float(np.abs(y.mean(0) - mean).max() + np.abs(np.cov(y.T) - cov).max())
                    )
                moments[name] = errs
            out[label]["stochastic_moment_error"] = moments
            out[label]["stochastic_samples"] = n
    jax.config.update("jax_enable_x64", False)
    return out


def plot_accuracy(acc, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(14, 5.5))
    for ax, label in zip(axes, ["2d", "64d"], strict=True):
        res = acc[label]
        for name, errs in res["rms_error"].items():
            style = "--" if "legacy" in name or name in ("Euler", "DDIM") else "-"
            ax.loglog(res["nfe"], errs, style, marker="o", ms=3, label=name)
        ax.set_title(f"{label.upper()} Gaussian mixture: RMS error vs diffrax reference")
        ax.set_xlabel("NFE")
        ax.set_ylabel("RMS error of the final sample")
        ax.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# (b) speed


def _timeit(fn, repeats):
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def speed(quick):
    from jaxsolve import diffusion as jd

    d, k, batch, steps = 64, 8, (1024 if quick else 4096), 20
    mix = _mixture(d, k, seed=2, scale=0.5)
    sched = jd.VPSchedule.discrete(jd.ddpm_betas("linear"))
    sigmas = jd.discrete_sigmas(sched, steps)
    z = jax.random.normal(jax.random.PRNGKey(0), (batch, d))
    x0 = z * jnp.sqrt(1.0 + sigmas[0] ** 2)
    repeats = 3 if quick else 5
    solver = jd.DPMSolverPP(order=2)

    sample = jax.jit(lambda x: jd.sample(mix, x, sigmas, solver))
    ours_median, ours_min = _timeit(lambda: sample(x0).block_until_ready(), repeats)

    denoise = jax.jit(lambda x, s: mix.denoise(x, s))
    sig_host = [float(s) for s in sigmas[:steps]]

    def twenty_calls():
        out = x0
        for s in sig_host:
            out = denoise(x0, s)
        out.block_until_ready()

    calls_median, _ = _timeit(twenty_calls, repeats)
    result = {
        "d": d,
        "components": k,
        "batch": batch,
        "steps": steps,
        "jaxsolve_seconds": ours_median,
        "jaxsolve_min_seconds": ours_min,
        "denoiser_20_calls_seconds": calls_median,
        "ratio_to_20_calls": ours_median / calls_median,
        "jax_devices": [str(dev) for dev in jax.devices()],
    }
    try:
        import torch
        from diffusers import DPMSolverMultistepScheduler
    except ImportError as err:
        result["diffusers"] = f"skipped: {err}"
        return result

    torch.set_num_threads(os.cpu_count() or 1)
    means = torch.tensor(np.asarray(mix.means))
    lam = torch.tensor(np.asarray(mix.eigvals))
    vecs = torch.tensor(np.asarray(mix.eigvecs))
    logw = torch.log(torch.tensor(np.asarray(mix.weights)))

    def torch_denoise(x, sigma):  # the same maths as GaussianMixture.denoise, in float32 torch
        v = lam + sigma**2  # (K, d)
        y = torch.einsum("bi,kij->kbj", x, vecs) - torch.einsum("ki,kij->kj", means, vecs)[:, None]
        logp = (
            -0.5 * (y * y / v[:, None]).sum(-1) - 0.5 * torch.log(2 * torch.pi * v).sum(-1)[:, None]
        )
        r = torch.softmax(logp + logw[:, None], dim=0)  # (K, B)
        den = means[:, None] + torch.einsum("kbj,kij->kbi", y * (lam / v)[:, None], vecs)
        return torch.einsum("kb,kbi->bi", r, den)

    sched_t = DPMSolverMultistepScheduler(solver_order=2)
    x0_vp = torch.tensor(np.asarray(z))

    def diffusers_loop():
        sched_t.set_timesteps(steps)
        x = x0_vp.clone()
        with torch.no_grad():
            for i, t in enumerate(sched_t.timesteps):
                s = float(sched_t.sigmas[i])
                a = 1.0 / (1.0 + s * s) ** 0.5
                d_hat = torch_denoise(x / a, s)
                eps = (x - a * d_hat) / (a * s)
                x = sched_t.step(eps, t, x).prev_sample
        return x

    ref_median, ref_min = _timeit(diffusers_loop, repeats)
    theirs = diffusers_loop().numpy()
    ours = np.asarray(sample(x0))
    result.update(
        {
            "diffusers_seconds": ref_median,
            "diffusers_min_seconds": ref_min,
            "speedup_vs_diffusers": ref_median / ours_median,
            "max_abs_difference_vs_diffusers": float(np.max(np.abs(ours - theirs))),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        }
    )
    return result


# ---------------------------------------------------------------------------------------------
# (c) compile time


def _unrolled_dpmpp_2m(denoiser, x, sigmas):
    """A direct port of a PyTorch DPM-Solver++(2M) loop: Python control flow, unrolled by jit."""
    old = None
    n = len(sigmas) - 1
    for i in range(n):
        s, sn = sigmas[i], sigmas[i + 1]
        d = denoiser(x, s)
        if sn == 0:
            x = d
            break
        h = jnp.log(s / sn)
        if old is None:
            x = (sn / s) * x - jnp.expm1(-h) * d
        else:
            r = jnp.log(sigmas[i - 1] / s) / h
            x = (sn / s) * x - jnp.expm1(-h) * d - 0.5 * jnp.expm1(-h) * (d - old) / r
        old = d
    return x


def compile_times(quick):
    from jaxsolve import diffusion as jd

    mix = _mixture(16, 4, seed=3, scale=0.5)
    x0 = jnp.ones((64, 16))
    steps_list = [10, 20, 50, 100] if quick else [10, 20, 50, 100, 200]
    # The unrolled port is compiled up to 100 steps only: at 200 steps its compile ran this
    # 24 GiB machine out of memory (the process was killed), which is the point being made.
    unrolled_max = 100
    rows = []
    for n in steps_list:
        sig = jd.karras_sigmas(n, 0.002, 80.0)
        f = jax.jit(lambda x, sig=sig: jd.sample(mix, x, sig, jd.DPMSolverPP(order=2)))
        t0 = time.perf_counter()
        f.lower(x0).compile()
        scan_s = time.perf_counter() - t0
        unrolled_s = None
        if n <= unrolled_max:
            sig_host = [float(s) for s in sig]
            g = jax.jit(lambda x, sig_host=sig_host: _unrolled_dpmpp_2m(mix.denoise, x, sig_host))
            t0 = time.perf_counter()
            g.lower(x0).compile()
            unrolled_s = time.perf_counter() - t0
        rows.append(
            {"steps": n, "scan_compile_seconds": scan_s, "unrolled_compile_seconds": unrolled_s}
        )
    # Sweeps as data: one compile for every step count up to the largest.
    nmax = steps_list[-1]
    sweep = jax.jit(
        jax.vmap(
            lambda n: jd.sample(
                mix, x0, jd.karras_sigmas(n, 0.002, 80.0, max_steps=nmax), jd.DPMSolverPP(order=2)
            )
        )
    )
    t0 = time.perf_counter()
    sweep.lower(jnp.asarray(steps_list)).compile()
    return {
        "per_step_count": rows,
        "one_compile_for_all_step_counts_seconds": time.perf_counter() - t0,
    }


def _table(acc):
    lines = []
    for label in ("2d", "64d"):
        res = acc[label]
        lines.append(
            f"\n{label.upper()} mixture, RMS error vs diffrax reference (batch {res['batch']})"
        )
        lines.append(f"{'solver':26s}" + "".join(f"{'NFE ' + str(n):>11s}" for n in res["nfe"]))
        for name, errs in res["rms_error"].items():
            lines.append(f"{name:26s}" + "".join(f"{e:11.2e}" for e in errs))
        if "stochastic_moment_error" in res:
            lines.append(
                f"\nstochastic samplers, |mean err| + |cov err| (max entries), {res['stochastic_samples']} samples"
            )
            for name, errs in res["stochastic_moment_error"].items():
                lines.append(f"{name:26s}" + "".join(f"{e:11.2e}" for e in errs))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["accuracy", "speed", "compile"], default=None)
    args = parser.parse_args()
    os.makedirs(RESULTS_DIR, exist_ok=True)
    path = os.path.join(RESULTS_DIR, "samplers.json")
    results = json.load(open(path)) if (args.only and os.path.exists(path)) else {}
    results["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
    }
    results["quick"] = args.quick

    def save():  # after every section, so a later section's failure keeps the earlier ones
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        print(f"\nwrote {path}")

    if args.only in (None, "accuracy"):
        results["accuracy"] = accuracy(args.quick)
        plot_accuracy(results["accuracy"], os.path.join(RESULTS_DIR, "samplers_error_vs_nfe.png"))
        print(_table(results["accuracy"]))
        save()
    if args.only in (None, "speed"):
        results["speed"] = speed(args.quick)
        print("\nspeed:", json.dumps(results["speed"], indent=1))
        save()
    if args.only in (None, "compile"):
        results["compile"] = compile_times(args.quick)
        print("\ncompile:", json.dumps(results["compile"], indent=1))
        save()


if __name__ == "__main__":
    main()
