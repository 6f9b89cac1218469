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


SECTIONS = [
    ("schedules and grids", _schedules_section),
    ("exact oracles", _oracles_section),
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
