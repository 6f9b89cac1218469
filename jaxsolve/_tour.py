"""The tour behind ``jaxsolve tour``: each section shows one capability, checks it, saves a figure.

Sections are plain functions ``section(ctx) -> None`` listed in :data:`SECTIONS`; a failed check
raises :class:`TourCheckFailed`, which the command turns into a clear message and exit code 1.
"""

from __future__ import annotations

import dataclasses
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm


class TourCheckFailed(RuntimeError):
    pass


@dataclasses.dataclass
class TourContext:
    out: str
    quick: bool
    figures: list = dataclasses.field(default_factory=list)

    def say(self, text: str = "") -> None:
        tqdm.write(text)

    def check(self, ok: bool, what: str) -> None:
        if not bool(ok):
            raise TourCheckFailed(what)

    def savefig(self, fig, name: str) -> str:
        path = os.path.join(self.out, name)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        self.figures.append(path)
        return path


def _schedules_section(ctx: TourContext) -> None:
    from . import diffusion as jd

    ctx.say(
        "== Schedules: a model's time t -> (alpha, sigma), and the VE noise level s = sigma/alpha"
    )
    schedules = {
        "VP linear (score SDE)": jd.VPSchedule.linear(),
        "VP cosine (iDDPM)": jd.VPSchedule.cosine(),
        "VP discrete (SD table)": jd.VPSchedule.discrete(
            jd.ddpm_betas("scaled_linear", 1000, 0.00085, 0.012)
        ),
        "VE (score SDE)": jd.VESchedule(0.01, 50.0),
        "rectified flow": jd.FlowSchedule(),
    }
    ctx.say(
        f"{'schedule':24s} {'t':>8s} {'alpha':>9s} {'sigma':>9s} {'s (VE)':>10s} {'lambda':>8s}"
    )
    worst = 0.0
    for name, sch in schedules.items():
        ts = jnp.linspace(sch.t_min, sch.t_max, 1001)
        worst = max(
            worst,
            float(
                jnp.max(jnp.abs(sch.from_ve_sigma(sch.to_ve_sigma(ts)) - ts))
                / max(1.0, float(sch.t_max))
            ),
        )
        for t in np.linspace(float(sch.t_min), float(sch.t_max), 3):
            a, s = sch.alpha_sigma(t)
            ctx.say(
                f"{name:24s} {t:8.3f} {float(a):9.5f} {float(s):9.5f} {float(sch.to_ve_sigma(t)):10.4g} {float(sch.lam(t)):8.3f}"
            )
    ctx.say(f"round trip t -> s -> t, worst error relative to the time range: {worst:.1e}")
    ctx.check(worst < 1e-6, "schedule round trip worse than 1e-6")

    ctx.say("\n== Grids as data: one compiled function builds Karras grids for every step count")
    traces = []

    @jax.jit
    def grids(ns):
        traces.append(1)
        return jax.vmap(lambda n: jd.karras_sigmas(n, 0.002, 80.0, max_steps=12))(ns)

    g = grids(jnp.array([3, 6, 12]))
    for row in np.asarray(g):
        ctx.say("  " + " ".join(f"{v:7.3f}" for v in row))
    ctx.say(f"compilations: {len(traces)}")
    ctx.check(len(traces) == 1, "grid sweep recompiled")
    disc = jd.discrete_sigmas(schedules["VP discrete (SD table)"], 10)
    ctx.say(
        "diffusers' DPMSolverMultistep sigmas for 10 steps (SD table): "
        + " ".join(f"{v:.3f}" for v in np.asarray(disc))
    )


def _oracles_section(ctx: TourContext) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import diffusion as jd
    from .diffusion.analytic import Gaussian, GaussianMixture

    ctx.say("\n== Exact oracles: a Gaussian mixture's denoiser, and its probability-flow ODE")
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    means = 2.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    covs = np.stack(
        [
            0.08 * np.eye(2) + 0.06 * np.outer([np.cos(a), np.sin(a)], [np.cos(a), np.sin(a)])
            for a in angles
        ]
    )
    mix = GaussianMixture(np.full(6, 1 / 6), means, covs)
    sigma_max = 40.0
    n = 256 if ctx.quick else 1024
    key = jax.random.PRNGKey(0)
    noise = mix.sample(key, n, sigma=sigma_max)
    t0 = time.perf_counter()
    flowed = mix.reference_solution(noise, sigma_max, 0.0)
    ctx.say(
        f"transported {n} points from s={sigma_max} to 0 with diffrax Dopri8 in {time.perf_counter() - t0:.1f}s"
    )
    data = mix.sample(jax.random.PRNGKey(1), n)
    err_mean = float(jnp.linalg.norm(flowed.mean(0) - mix.mean()))
    ctx.say(
        f"|mean(flowed) - mean(data)| = {err_mean:.3f}  (data mean is 0; sampling error ~ {2.5 / np.sqrt(n):.3f})"
    )
    ctx.check(err_mean < 6 * 2.6 / np.sqrt(n), "probability-flow transport moved the mean")

    g = Gaussian(np.array([0.5, -0.3]), np.array([[1.0, 0.6], [0.6, 0.8]]))
    x = g.sample(key, 8, sigma=20.0)
    gap = float(jnp.max(jnp.abs(g.ode_solution(x, 20.0, 0.0) - g.reference_solution(x, 20.0, 0.0))))
    ctx.say(f"Gaussian: closed-form flow map vs diffrax solve, max difference {gap:.1e}")
    ctx.check(gap < 1e-3, "Gaussian flow map disagrees with diffrax")

    sch = jd.VPSchedule.discrete(jd.ddpm_betas("linear"))

    def exact_eps(x_t, t):  # the Bayes-optimal eps-prediction network for the Gaussian
        a, b = sch.alpha_sigma(t)
        c = a**2 * g.covariance() + b**2 * jnp.eye(2)
        return b * jnp.linalg.solve(c, (x_t - a * g.mean()).T).T

    denoiser = jd.from_eps(exact_eps, sch)
    gap = float(jnp.max(jnp.abs(denoiser(x, 3.0) - g.denoise(x, 3.0))))
    ctx.say(
        f"a DDPM eps-model wrapped by from_eps equals the exact VE denoiser: max difference {gap:.1e}"
    )
    ctx.check(gap < 1e-4, "from_eps adapter disagrees with the exact denoiser")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    lim = 4.5
    grid = np.linspace(-lim, lim, 200)
    xx, yy = np.meshgrid(grid, grid)
    pts = jnp.asarray(np.stack([xx, yy], -1))
    for ax, s, title in zip(
        axes[:2], [0.0, 1.0], ["data density (s = 0)", "noised density (s = 1)"], strict=True
    ):
        ax.contourf(xx, yy, np.exp(np.asarray(mix.log_prob(pts, s))), levels=30, cmap="viridis")
        ax.set_title(title)
    axes[0].scatter(*np.asarray(data).T, s=2, c="w", alpha=0.5)
    axes[2].scatter(*np.asarray(data).T, s=3, alpha=0.4, label="data samples")
    axes[2].scatter(*np.asarray(flowed).T, s=3, alpha=0.4, label="noise -> ODE -> samples")
    axes[2].set_title(f"exact probability flow from s = {sigma_max:g}")
    axes[2].legend(loc="upper right", markerscale=4)
    for ax in axes:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    path = ctx.savefig(fig, "oracle_flow.png")
    plt.close(fig)
    ctx.say(f"saved {path}")


def _samplers_section(ctx: TourContext) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import diffusion as jd
    from .diffusion.analytic import GaussianMixture

    ctx.say("\n== Samplers: every solver is a step on one lax.scan driver")
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    means = 2.5 * np.stack([np.cos(angles), np.sin(angles)], 1)
    mix = GaussianMixture(np.full(8, 1 / 8), means, np.full((8, 2), 0.03))
    smax, smin = 80.0, 0.002
    n = 512 if ctx.quick else 2048
    x0 = mix.sample(jax.random.PRNGKey(0), n, sigma=smax)
    ref = mix.denoise(mix.reference_solution(x0[:256], smax, smin), smin)
    solvers = {
        "Euler": (jd.Euler(), 1),
        "Heun": (jd.Heun(), 2),
        "DPM-Solver++(2M)": (jd.DPMSolverPP(order=2), 1),
        "DPM-Solver++(3M)": (jd.DPMSolverPP(order=3), 1),
        "UniPC-3": (jd.UniPC(order=3), 1),
        "DEIS-3": (jd.DEIS(order=3), 1),
        "iPNDM": (jd.IPNDM(), 1),
    }
    nfes = [5, 10, 20]
    errors = {}
    ctx.say(
        f"RMS error vs the diffrax reference of the probability-flow ODE (256 points, s {smax:g} -> 0)"
    )
    ctx.say(f"{'solver':18s}" + "".join(f"{'NFE ' + str(k):>10s}" for k in nfes))
    for name, (solver, per_step) in solvers.items():
        row = []
        for nfe in nfes:
            steps = max(1, -(-nfe // per_step))
            y = jd.sample(mix, x0[:256], jd.karras_sigmas(steps, smin, smax), solver)
            row.append(float(jnp.sqrt(jnp.mean(jnp.sum((y - ref) ** 2, -1)))))
        errors[name] = row
        ctx.say(f"{name:18s}" + "".join(f"{e:10.3g}" for e in row))
    ctx.check(errors["UniPC-3"][-1] < errors["Euler"][-1], "UniPC-3 should beat Euler at 20 NFE")

    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    shown = [
        ("Euler", jd.Euler(), None),
        ("DPM-Solver++(2M)", jd.DPMSolverPP(order=2), None),
        ("UniPC-3", jd.UniPC(order=3), None),
        ("SDE-DPM-Solver++(2M)", jd.DPMSolverPPSDE(order=2), 1),
    ]
    for ax, (name, solver, stochastic) in zip(axes, shown, strict=True):
        y = jd.sample(
            mix,
            x0,
            jd.karras_sigmas(10, smin, smax),
            solver,
            key=jax.random.PRNGKey(7) if stochastic else None,
        )
        ax.scatter(
            *np.asarray(mix.sample(jax.random.PRNGKey(2), n)).T,
            s=2,
            alpha=0.25,
            c="gray",
            label="data",
        )
        ax.scatter(*np.asarray(y).T, s=2, alpha=0.5, label=name)
        ax.set_title(f"{name}, 10 NFE")
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
    path = ctx.savefig(fig, "sampler_grid.png")
    plt.close(fig)
    ctx.say(f"saved {path}")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, row in errors.items():
        ax.loglog(nfes, row, marker="o", label=name)
    ax.set_xlabel("NFE")
    ax.set_ylabel("RMS error vs reference")
    ax.set_title("Error versus NFE on an 8-component mixture")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    path = ctx.savefig(fig, "error_vs_nfe.png")
    plt.close(fig)
    ctx.say(f"saved {path}")

    ctx.say("\n== Sweeps as data: one compiled call over step counts x guidance scales")
    cond = GaussianMixture(np.ones(1), means[:1], np.full((1, 2), 0.03))
    traces = []

    def run(steps, scale):
        traces.append(1)
        grid = jd.karras_sigmas(steps, smin, smax, max_steps=20)
        return jd.sample(jd.cfg(cond, mix, scale), x0[:256], grid, jd.DPMSolverPP(order=2))

    steps = jnp.array([5, 10, 20])
    scales = jnp.array([0.0, 1.0, 3.0])
    grid_steps, grid_scales = jnp.meshgrid(steps, scales, indexing="ij")
    t0 = time.perf_counter()
    out = jax.jit(jax.vmap(jax.vmap(run)))(grid_steps, grid_scales)
    out.block_until_ready()
    ctx.say(
        f"9 sampling runs (3 step counts x 3 guidance scales) in one compile: {len(traces)} trace, "
        f"{time.perf_counter() - t0:.1f}s including compilation"
    )
    near = np.asarray(jnp.mean(jnp.linalg.norm(out - means[0], axis=-1) < 1.0, axis=-1))
    for i, k in enumerate([5, 10, 20]):
        ctx.say(
            f"  {k:2d} steps: fraction of samples in the guided mode at scale 0/1/3: "
            + " ".join(f"{v:.2f}" for v in near[i])
        )
    ctx.check(len(traces) == 1, "the sweep recompiled")
    ctx.check(near[-1, -1] > near[-1, 0], "guidance should pull samples into the conditioned mode")


SECTIONS = [
    ("schedules and grids", _schedules_section),
    ("exact oracles", _oracles_section),
    ("samplers and sweeps", _samplers_section),
]


def run_tour(out: str = "jaxsolve-tour", quick: bool = False) -> TourContext:
    os.makedirs(out, exist_ok=True)
    ctx = TourContext(out=out, quick=quick)
    start = time.perf_counter()
    for name, section in tqdm(SECTIONS, desc="jaxsolve tour", unit="section"):
        t0 = time.perf_counter()
        section(ctx)
        ctx.say(f"-- {name}: {time.perf_counter() - t0:.1f}s\n")
    ctx.say(
        f"tour finished in {time.perf_counter() - start:.1f}s; figures: {', '.join(ctx.figures)}"
    )
    return ctx
