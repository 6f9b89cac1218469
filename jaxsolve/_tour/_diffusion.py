"""Tour sections of the diffusion pillar: schedules and grids, exact oracles, and a trained model
sampled by the solver zoo."""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._context import TourContext, pyplot, ring_mixture, scatter_panel


def schedules_section(ctx: TourContext) -> None:
    from .. import diffusion as jd

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
    # The whole table is one compiled call: evaluated op by op, every operation of every
    # schedule would be a small program of its own to compile.
    shown = {
        name: np.linspace(float(sch.t_min), float(sch.t_max), 3) for name, sch in schedules.items()
    }

    @eqx.filter_jit
    def tabulate(schedules, shown):
        table = {}
        for name, sch in schedules.items():
            ts = jnp.linspace(sch.t_min, sch.t_max, 1001)
            round_trip = jnp.max(jnp.abs(sch.from_ve_sigma(sch.to_ve_sigma(ts)) - ts))
            t = shown[name]
            table[name] = (
                round_trip / jnp.maximum(1.0, sch.t_max),
                sch.alpha_sigma(t),
                sch.to_ve_sigma(t),
                sch.lam(t),
            )
        return table

    table = jax.tree_util.tree_map(np.asarray, tabulate(schedules, shown))
    worst = 0.0
    for name in schedules:  # (the pytree came back with its keys sorted)
        round_trip, (a, s), ve, lam = table[name]
        worst = max(worst, float(round_trip))
        for i, t in enumerate(shown[name]):
            ctx.say(
                f"{name:24s} {t:8.3f} {float(a[i]):9.5f} {float(s[i]):9.5f} {float(ve[i]):10.4g} {float(lam[i]):8.3f}"
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
    disc = eqx.filter_jit(jd.discrete_sigmas)(schedules["VP discrete (SD table)"], 10)
    ctx.say(
        "diffusers' DPMSolverMultistep sigmas for 10 steps (SD table): "
        + " ".join(f"{v:.3f}" for v in np.asarray(disc))
    )


def oracles_section(ctx: TourContext) -> None:
    plt = pyplot()
    from .. import diffusion as jd
    from ..diffusion.analytic import Gaussian, GaussianMixture

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
    n = ctx.pick(128, 1024)
    key = jax.random.PRNGKey(0)
    noise = mix.sample(key, n, sigma=sigma_max)
    t0 = time.perf_counter()
    flowed = mix.reference_solution(noise, sigma_max, 0.0)
    ctx.say(
        f"transported {n} points from s={sigma_max} to 0 with diffrax Dopri8 in {time.perf_counter() - t0:.1f}s"
    )
    data = mix.sample(jax.random.PRNGKey(1), n)

    g = Gaussian(np.array([0.5, -0.3]), np.array([[1.0, 0.6], [0.6, 0.8]]))
    x = g.sample(key, 8, sigma=20.0)
    sch = jd.VPSchedule.discrete(jd.ddpm_betas("linear"))

    def exact_eps(x_t, t):  # the Bayes-optimal eps-prediction network for the Gaussian
        a, b = sch.alpha_sigma(t)
        c = a**2 * g.covariance() + b**2 * jnp.eye(2)
        return b * jnp.linalg.solve(c, (x_t - a * g.mean()).T).T

    denoiser = jd.from_eps(exact_eps, sch)
    lim = 4.5
    grid = np.linspace(-lim, lim, 200)
    xx, yy = np.meshgrid(grid, grid)
    pts = np.stack([xx, yy], -1)

    # Every closed form below in one compiled call: op by op, each operation would be a small
    # program of its own to compile.
    @eqx.filter_jit
    def closed_forms(flowed, x, pts):
        err_mean = jnp.linalg.norm(flowed.mean(0) - mix.mean())
        eps_gap = jnp.max(jnp.abs(denoiser(x, 3.0) - g.denoise(x, 3.0)))
        densities = [jnp.exp(mix.log_prob(pts, s)) for s in (0.0, 1.0)]
        return err_mean, g.ode_solution(x, 20.0, 0.0), eps_gap, densities

    err_mean, flow_map, eps_gap, densities = closed_forms(flowed, x, pts)
    err_mean = float(err_mean)
    ctx.say(
        f"|mean(flowed) - mean(data)| = {err_mean:.3f}  (data mean is 0; sampling error ~ {2.5 / np.sqrt(n):.3f})"
    )
    ctx.check(err_mean < 6 * 2.6 / np.sqrt(n), "probability-flow transport moved the mean")

    gap = float(np.max(np.abs(np.asarray(flow_map) - g.reference_solution(x, 20.0, 0.0))))
    ctx.say(f"Gaussian: closed-form flow map vs diffrax solve, max difference {gap:.1e}")
    ctx.check(gap < 1e-3, "Gaussian flow map disagrees with diffrax")

    gap = float(eps_gap)
    ctx.say(
        f"a DDPM eps-model wrapped by from_eps equals the exact VE denoiser: max difference {gap:.1e}"
    )
    ctx.check(gap < 1e-4, "from_eps adapter disagrees with the exact denoiser")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    for ax, density, title in zip(
        axes[:2], densities, ["data density (s = 0)", "noised density (s = 1)"], strict=True
    ):
        ax.contourf(xx, yy, np.asarray(density), levels=30, cmap="viridis")
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
    ctx.savefig(fig, "oracle_flow.png")


def trained_model_section(ctx: TourContext) -> None:
    from .. import diffusion as jd
    from .. import train

    plt = pyplot()
    ctx.say("\n== A diffusion model trained on 2-D data, sampled by the solver zoo")
    ring = ring_mixture(var=0.05)
    sigma_data = float(jnp.sqrt(jnp.mean(jnp.diag(ring.covariance()))))
    model = jd.Precond(jd.NoiseMLP(2, width=128, depth=3, key=jax.random.PRNGKey(0)), sigma_data)
    steps = ctx.pick(1000, 4000)
    result = train.fit(
        # Log-normal noise levels wider than EDM's image defaults (-1.2, 1.2), so that the
        # sampler's sigma_max = 40 lies inside what the network has seen.
        lambda m, x, k: jd.edm_loss(m, x, k, sigma_data=sigma_data, p_mean=-0.4, p_std=1.4),
        model,
        lambda k: ring.sample(k, 256),
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, steps, 0.05)),
        num_steps=steps,
        key=jax.random.PRNGKey(1),
        ema_decay=0.995,
        steps_per_call=250,
        desc="EDM denoising score matching",
    )
    trained = result.ema_model
    ctx.say(
        f"trained an MLP denoiser (EDM preconditioning and loss) for {steps} Adam steps: loss "
        f"{result.history['loss'][0]:.3f} -> {result.history['loss'][-1]:.3f}"
    )

    smax, smin = 40.0, 0.002
    n = ctx.pick(512, 2048)
    x0 = smax * jax.random.normal(jax.random.PRNGKey(2), (n, 2))
    # The learned model's own probability-flow solution, from a 200-step 3rd-order multistep
    # solve: what every solver below approximates, so the table measures solver error only.
    reference = jd.sample(trained, x0, jd.karras_sigmas(200, smin, smax), jd.DPMSolverPP(order=3))
    solvers = {
        "Euler": (jd.Euler(), 1),
        "Heun": (jd.Heun(), 2),
        "DPM-Solver++(2M)": (jd.DPMSolverPP(order=2), 1),
        "DPM-Solver++(3M)": (jd.DPMSolverPP(order=3), 1),
        "UniPC-3": (jd.UniPC(order=3), 1),
    }
    if not ctx.quick:
        solvers.update({"DEIS-3": (jd.DEIS(order=3), 1), "iPNDM": (jd.IPNDM(), 1)})
    nfes = np.array([5, 10, 20])

    def sweep(solver, per_step):
        # One compile per solver: the step count is data (a max_steps-padded grid).
        def one(nfe):
            grid = jd.karras_sigmas(-(-nfe // per_step), smin, smax, max_steps=20)
            out = jd.sample(trained, x0, grid, solver, full_output=True)
            return out.value, out.nfe

        return jax.jit(jax.vmap(one))(jnp.asarray(nfes))

    errors, samples = {}, {}
    ctx.say(f"RMS distance to the model's own ODE solution ({n} samples, sigma {smax:g} -> 0)")
    ctx.say(f"{'solver':18s}" + "".join(f"{'NFE ' + str(k):>10s}" for k in nfes))
    for name, (solver, per_step) in solvers.items():
        out, used = sweep(solver, per_step)
        ctx.check(used <= nfes, f"{name} used more NFE than its budget: {used}")
        samples[name] = np.asarray(out)
        errors[name] = np.sqrt(
            np.mean(np.sum((samples[name] - np.asarray(reference)) ** 2, -1), -1)
        )
        ctx.say(f"{name:18s}" + "".join(f"{e:10.3g}" for e in errors[name]))
    for name in ("DPM-Solver++(3M)", "UniPC-3"):
        ctx.check(
            errors[name][-1] < 0.5 * errors["Euler"][-1], f"{name} should beat Euler at 20 NFE"
        )

    data = ring.sample(jax.random.PRNGKey(3), n)
    untrained = jd.sample(model, x0, jd.karras_sigmas(20, smin, smax), jd.DPMSolverPP(order=3))
    exact = jd.sample(ring, x0, jd.karras_sigmas(20, smin, smax), jd.DPMSolverPP(order=3))
    sets = {
        "untrained": untrained,
        "trained": samples["DPM-Solver++(3M)"][-1],
        "exact denoiser": exact,
    }
    # One compiled call for the three distances (the same directions for each).
    distances = jax.jit(
        jax.vmap(lambda y, data: jd.sliced_wasserstein(y, data, jax.random.PRNGKey(4)), (0, None))
    )(np.stack([np.asarray(y) for y in sets.values()]), data)
    sw = {label: float(d) for label, d in zip(sets, distances, strict=True)}
    ctx.say(
        "sliced Wasserstein distance to fresh data (DPM-Solver++(3M), 20 NFE): "
        + ", ".join(f"{k} {v:.3f}" for k, v in sw.items())
    )
    ctx.check(sw["trained"] < 0.5 * sw["untrained"], "training did not bring samples to the data")

    shown = ["Euler", "Heun", "DPM-Solver++(2M)", "UniPC-3"]
    fig, axes = plt.subplots(len(nfes), len(shown), figsize=(3.3 * len(shown), 3.3 * len(nfes)))
    for i, nfe in enumerate(nfes):
        for j, name in enumerate(shown):
            scatter_panel(axes[i, j], samples[name][i], f"{name}, NFE {nfe}", 4, background=data)
    fig.suptitle("Samples of the trained model (grey: data)")
    ctx.savefig(fig, "diffusion_samples.png")

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, row in errors.items():
        ax.loglog(nfes, row, marker="o", label=name)
    ax.set_xlabel("NFE (denoiser evaluations)")
    ax.set_ylabel("RMS distance to the model's ODE solution")
    ax.set_title("Solver error versus NFE, trained 2-D model")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ctx.savefig(fig, "diffusion_error_vs_nfe.png")
