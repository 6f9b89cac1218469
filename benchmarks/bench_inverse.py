"""Posterior samplers for linear inverse problems, measured against the exact posterior.

A Gaussian-mixture prior with a linear Gaussian measurement has a Gaussian-mixture posterior in
closed form (``prior.condition(A, y, noise_std)``), so every method's samples can be compared
with the true posterior, not with a ground-truth image.

Priors (float64): ``mix2`` — three anisotropic components in 2-D; ``mix64`` — four components of
smooth 64-D signals (squared-exponential covariances). Tasks per prior: ``inpaint`` (half the
coordinates observed), ``subsample`` (block means: 4x in 64-D, 2x in 2-D, where 4x cannot exist)
and ``blur`` (circular Gaussian blur). Two measurement noise levels, NFE 20, 50 and 100.

Every denoiser-transform method (DPS, PiGDM, DDNM, STSL) runs on the same solver, DPM-Solver++(2M)
(one evaluation per step, Karras grid 0.002-80); ``exact`` is the posterior oracle itself on that
solver (the driver's own error: it sits on the Monte-Carlo floor from NFE 50). MCG and RePaint
wrap Euler-ancestral (the papers' ancestral step; their projections draw noise); RED-Diff and
SVDD run their own steps; every NFE reported is what the driver counted. One compile per (prior, task, method): noise levels
and NFE are data (``vmap`` over measurements and padded grids).

Metrics against ``n`` exact posterior samples: sliced Wasserstein distance (``sw``), the error of
the mean relative to the posterior's spread (``mean_err`` = |mean - m| / sqrt(tr C)) and of the
covariance (``cov_err`` = |cov - C|_F / |C|_F). ``floor`` is the same metric for a second set of
exact posterior samples: the Monte-Carlo noise below which no method can be told apart.

Writes benchmarks/results/inverse.json and inverse.png. Run:

    python benchmarks/bench_inverse.py            # full
    python benchmarks/bench_inverse.py --quick    # fewer samples, one prior
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
NFES = [20, 50, 100]
NOISES = [0.05, 0.25]
SMIN, SMAX = 0.002, 80.0


def _mix2():
    from jaxsolve.diffusion.analytic import GaussianMixture

    means = np.array([[-1.5, 0.5], [1.0, 1.5], [0.5, -1.5]])
    covs = np.array(
        [[[0.3, 0.2], [0.2, 0.4]], [[0.2, -0.1], [-0.1, 0.15]], [[0.5, 0.0], [0.0, 0.1]]]
    )
    return GaussianMixture(np.array([0.3, 0.3, 0.4]), means, covs)


def _mix64():
    from jaxsolve.diffusion.analytic import GaussianMixture

    rng = np.random.default_rng(0)
    d, k = 64, 4
    t = np.arange(d)
    lag = np.minimum(np.abs(t[:, None] - t[None]), d - np.abs(t[:, None] - t[None]))
    covs, means = [], []
    for length, amp in zip([3.0, 5.0, 8.0, 4.0], [0.6, 0.4, 0.5, 0.3], strict=True):
        covs.append(amp * np.exp(-0.5 * (lag / length) ** 2) + 0.02 * np.eye(d))
        means.append(np.sin(2 * np.pi * (t / d) * rng.integers(1, 4) + rng.uniform(0, 2 * np.pi)))
    return GaussianMixture(np.full(k, 1.0 / k), np.stack(means), np.stack(covs))


def _tasks(d):
    from jaxsolve.diffusion import inverse as inv

    if d == 2:
        return {
            "inpaint": inv.Mask(np.array([1.0, 0.0])),
            "subsample": inv.Subsample(2, (2,)),
            "blur": inv.gaussian_blur((2,), 0.5, radius=1),
        }
    observed = np.zeros(d)
    observed[np.random.default_rng(1).permutation(d)[: d // 2]] = 1.0
    return {
        "inpaint": inv.Mask(observed),
        "subsample": inv.Subsample(4, (d,)),
        "blur": inv.gaussian_blur((d,), 2.0),
    }


def _karras(nfe):
    """One denoiser evaluation per level: ``nfe`` levels, then 0."""
    from jaxsolve import diffusion as jd

    return np.asarray(jd.karras_sigmas(nfe, SMIN, SMAX))


def _repaint_grid(nfe):
    """RePaint's time travel on half the levels: jumps of 5 levels, each stretch walked twice
    (the down steps, one evaluation each, about double)."""
    from jaxsolve.diffusion import inverse as inv

    return np.asarray(inv.repaint_sigmas(_karras(nfe // 2), jump_length=5, jump_n_sample=2))


SVDD_PARTICLES = 4


def _svdd_grid(nfe):
    """SVDD spends ``1 + M`` evaluations per step (the step's and M values): ``nfe / (1 + M)``
    steps."""
    return _karras(max(nfe // (1 + SVDD_PARTICLES), 2))


def _pad(rows):
    width = max(r.shape[0] for r in rows)
    return np.stack([np.concatenate([r, np.zeros(width - r.shape[0])]) for r in rows])


def _methods(prior):
    """name -> builder(measurement) -> (denoiser, solver, grid(nfe, width), init(key, n, meas))."""
    from jaxsolve import diffusion as jd
    from jaxsolve.diffusion import inverse as inv

    v = float(jnp.trace(prior.covariance())) / prior.dim  # the data variance per coordinate
    ode = jd.DPMSolverPP(order=2)

    def noise_init(key, n, meas):
        return SMAX * jax.random.normal(key, (n, prior.dim))

    def pinv_init(key, n, meas):
        # RED-Diff optimises a point: it starts from the pseudo-inverse solution, as the paper.
        return jnp.broadcast_to(meas.operator.pinv(meas.y), (n, prior.dim))

    def on_ode(make_denoiser):
        return lambda meas: (make_denoiser(meas), ode, _karras, noise_init)

    return {
        "exact": on_ode(lambda m: prior.condition(m.operator, m.y, m.noise_std)),
        "dps": on_ode(lambda m: inv.DPS(prior, m, normalized=False)),
        "dps_normalized": on_ode(lambda m: inv.DPS(prior, m, scale=1.0)),
        "pigdm": on_ode(lambda m: inv.PiGDM(prior, m, data_variance=v)),
        "ddnm": on_ode(lambda m: inv.DDNM(prior, m, data_variance=v)),
        "mcg": lambda m: (prior, inv.MCG(jd.EulerAncestral(), m), _karras, noise_init),
        "stsl": on_ode(lambda m: inv.STSL(prior, m, key=jax.random.PRNGKey(5))),
        "red_diff": lambda m: (prior, inv.REDDiff(m), _karras, pinv_init),
        "repaint": lambda m: (
            prior,
            inv.RePaint(jd.EulerAncestral(), m),
            _repaint_grid,
            noise_init,
        ),
        # The soft-value target p(x) exp(r(x) / T) with r = log p(y | x) and T = 1 is the
        # posterior: SVDD as a derivative-free posterior sampler.
        "svdd": lambda m: (
            prior,
            inv.SVDD(jd.EulerAncestral(), m.log_likelihood, SVDD_PARTICLES, 1.0),
            _svdd_grid,
            noise_init,
        ),
    }


def _metrics(xs, post, ref, key):
    from jaxsolve import diffusion as jd

    xs = np.asarray(xs)
    m, c = np.asarray(post.mean()), np.asarray(post.covariance())
    mean_err = np.linalg.norm(xs.mean(0) - m) / np.sqrt(np.trace(c))
    cov_err = np.linalg.norm(np.cov(xs.T).reshape(c.shape) - c) / np.linalg.norm(c)
    sw = float(jd.sliced_wasserstein(jnp.asarray(xs), ref, key))
    finite = bool(np.all(np.isfinite(xs)))
    return {"sw": sw, "mean_err": float(mean_err), "cov_err": float(cov_err), "finite": finite}


def run_prior(label, prior, n, log, only=None):
    from jaxsolve import diffusion as jd
    from jaxsolve.diffusion import inverse as inv

    out = {}
    x_true = prior.sample(jax.random.PRNGKey(11), 1)[0]
    methods = _methods(prior)
    for task, op in _tasks(prior.dim).items():
        eps = jax.random.normal(jax.random.PRNGKey(12), op.out_shape)
        eps = eps * op.measured(eps.dtype)  # a mask's unobserved entries are not measured
        ys = jnp.stack([op(x_true) + s * eps for s in NOISES])
        noises = jnp.asarray(NOISES)
        posts = [prior.condition(op, ys[i], NOISES[i]) for i in range(len(NOISES))]
        refs = [p.sample(jax.random.PRNGKey(20 + i), n) for i, p in enumerate(posts)]
        floors = [
            _metrics(p.sample(jax.random.PRNGKey(30 + i), n), p, refs[i], jax.random.PRNGKey(7))
            for i, p in enumerate(posts)
        ]
        out[task] = {
            "operator": type(op).__name__,
            "floor": {str(s): f for s, f in zip(NOISES, floors, strict=True)},
            "methods": {},
        }
        log(
            f"\n{label} / {task} ({type(op).__name__}); floor sw "
            + ", ".join(f"{s}: {f['sw']:.3g}" for s, f in zip(NOISES, floors, strict=True))
        )
        for name, build in methods.items():
            if only and name not in only:
                continue
            grid_fn = build(inv.Measurement(op, ys[0], NOISES[0]))[2]
            grids = jnp.asarray(_pad([grid_fn(k) for k in NFES]))

            @jax.jit
            def go(y, noise_std, grid, key, op=op, build=build):
                meas = inv.Measurement(op, y, noise_std)
                denoiser, solver, _, init = build(meas)
                x = init(jax.random.PRNGKey(3), n, meas)
                sol = jd.sample(denoiser, x, grid, solver, key=key, full_output=True, throw=False)
                return sol.value, sol.nfe, sol.result._value

            t0 = time.perf_counter()
            combos = [(i, j) for i in range(len(NOISES)) for j in range(len(NFES))]
            yi = ys[jnp.array([c[0] for c in combos])]
            si = noises[jnp.array([c[0] for c in combos])]
            gi = grids[jnp.array([c[1] for c in combos])]
            xs, nfe, code = jax.vmap(go, in_axes=(0, 0, 0, None))(yi, si, gi, jax.random.PRNGKey(4))
            xs = jax.block_until_ready(xs)
            seconds = time.perf_counter() - t0
            rows = []
            for k, (i, j) in enumerate(combos):
                row = _metrics(xs[k], posts[i], refs[i], jax.random.PRNGKey(7))
                row.update(
                    noise_std=NOISES[i], nfe_budget=NFES[j], nfe=int(nfe[k]), result=int(code[k])
                )
                rows.append(row)
            out[task]["methods"][name] = {"rows": rows, "seconds_all_rows": seconds}
            log(
                f"  {name:16s} "
                + "  ".join(
                    f"[{r['noise_std']}/{r['nfe']}] sw {r['sw']:.3g} m {r['mean_err']:.2g} "
                    f"c {r['cov_err']:.2g}"
                    for r in rows
                )
                + f"  ({seconds:.1f} s)"
            )
        best = {}
        for s in NOISES:
            scores = {
                name: min(r["sw"] for r in m["rows"] if r["noise_std"] == s and r["finite"])
                for name, m in out[task]["methods"].items()
                if name != "exact" and any(r["finite"] for r in m["rows"] if r["noise_std"] == s)
            }
            if scores:
                best[str(s)] = min(scores, key=scores.get)
        out[task]["closest_method"] = best
        log(f"  closest (lowest sw over NFE, exact excluded): {best}")
    return out


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    priors = list(results["priors"])
    tasks = list(next(iter(results["priors"].values())))
    rows = [(p, s) for p in priors for s in NOISES]
    fig, axes = plt.subplots(
        len(rows), len(tasks), figsize=(4.2 * len(tasks), 3.2 * len(rows)), squeeze=False
    )
    for r, (prior, s) in enumerate(rows):
        for c, task in enumerate(tasks):
            ax = axes[r][c]
            entry = results["priors"][prior][task]
            for name, m in entry["methods"].items():
                pts = [(q["nfe_budget"], q["sw"]) for q in m["rows"] if q["noise_std"] == s]
                ax.plot(
                    *zip(*pts, strict=True),
                    marker="o",
                    label=name,
                    ls="--" if name == "exact" else "-",
                )
            ax.axhline(entry["floor"][str(s)]["sw"], color="gray", lw=0.8, ls=":")
            ax.set_xscale("log")
            ax.set_yscale("log")
            # Diverged runs (the unnormalised likelihood guidance at small noise) leave the top.
            ax.set_ylim(0.5 * entry["floor"][str(s)]["sw"], 3.0)
            ax.set_title(f"{prior} / {task} / noise {s}", fontsize=9)
            ax.set_xlabel("NFE budget")
            ax.set_ylabel("sliced W to exact posterior")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def replot():
    """Redraw the figure from the committed JSON (no sampling)."""
    with open(os.path.join(RESULTS_DIR, "inverse.json")) as f:
        plot(json.load(f), os.path.join(RESULTS_DIR, "inverse.png"))


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", nargs="*", help="method names to run")
    parser.add_argument("--priors", nargs="*", default=None)
    parser.add_argument("--replot", action="store_true", help="only redraw the figure")
    args = parser.parse_args()
    if args.replot:
        return replot()
    jax.config.update("jax_enable_x64", True)
    os.makedirs(RESULTS_DIR, exist_ok=True)

    def log(s):
        print(s, flush=True)

    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
        },
        "quick": args.quick,
        "nfe_budget": NFES,
        "noise_std": NOISES,
        "grid": {"kind": "karras", "sigma_min": SMIN, "sigma_max": SMAX, "rho": 7.0},
        "priors": {},
    }
    t_start = time.perf_counter()
    priors = {
        "mix2": (_mix2, 2000 if args.quick else 4000),
        "mix64": (_mix64, 500 if args.quick else 1000),
    }
    chosen = args.priors or (["mix2"] if args.quick else list(priors))
    for label in chosen:
        make, n = priors[label]
        results["priors"][label] = run_prior(label, make(), n, log, args.only)
        results["samples"] = {k: priors[k][1] for k in chosen}
    results["total_seconds"] = time.perf_counter() - t_start
    path = os.path.join(RESULTS_DIR, "inverse.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(RESULTS_DIR, "inverse.png"))
    log(f"\nwrote {path} in {results['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
