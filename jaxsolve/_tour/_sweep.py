"""Tour section: a whole sweep of step counts x guidance scales as one compiled, vmapped call."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ._context import TourContext, pyplot, ring_mixture, scatter_panel


def sweep_section(ctx: TourContext) -> None:
    from .. import diffusion as jd
    from ..diffusion.analytic import GaussianMixture

    plt = pyplot()
    ctx.say("\n== Sweeps as data: one compiled call over step counts x guidance scales")
    mix = ring_mixture()
    # The conditional model: the mixture's first component alone (also exact).
    target = np.asarray(mix.means[0])
    cond = GaussianMixture(np.ones(1), target[None], np.full((1, 2), 0.03))
    smax, smin = 80.0, 0.002
    x0 = smax * jax.random.normal(jax.random.PRNGKey(0), (ctx.pick(256, 1024), 2))
    traces = []

    def run(steps, scale):
        traces.append(1)  # runs once per trace, not per call
        grid = jd.karras_sigmas(steps, smin, smax, max_steps=20)
        return jd.sample(jd.cfg(cond, mix, scale), x0, grid, jd.DPMSolverPP(order=2))

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
    near = np.asarray(jnp.mean(jnp.linalg.norm(out - target, axis=-1) < 1.0, axis=-1))
    ctx.say("fraction of samples in the conditioned mode")
    ctx.say(f"{'steps':>6s}" + "".join(f"{'scale ' + str(float(s)):>12s}" for s in scales))
    for i, k in enumerate(np.asarray(steps)):
        ctx.say(f"{k:6d}" + "".join(f"{v:12.2f}" for v in near[i]))
    ctx.check(len(traces) == 1, "the sweep recompiled")
    # Scale 0 is the unconditional model (1/8 of the mass in the mode); scale 1 the conditional.
    ctx.check(abs(near[-1, 0] - 1 / 8) < 0.08, "unguided samples should cover all eight modes")
    ctx.check(near[-1, 1] > 0.95, "guidance scale 1 should sample the conditional model")

    fig, axes = plt.subplots(3, 3, figsize=(9, 9))
    for i, k in enumerate(np.asarray(steps)):
        for j, s in enumerate(np.asarray(scales)):
            scatter_panel(axes[i, j], out[i, j], f"{k} steps, guidance {s:g}", 5)
    fig.suptitle("One compiled call: step counts x classifier-free guidance scales")
    ctx.savefig(fig, "sweep_grid.png")
