"""Training throughput of the toy models, and the three ways of differentiating through sampling.

(a) Steps per second of ``train.fit`` for EDM training of a NoiseMLP on a 2-D mixture, flow
    matching of the same network, and EDM training of the small UNet2D on 16x16 images.
(b) For a loss of the final sample of DPM-Solver++(2M), the compiled peak temporary memory and the
    time of one gradient (with respect to the denoiser's weights and the initial noise) for
    ``adjoint="backprop" | "checkpoint" | "adjoint"`` at 25, 50, 100, 200 steps, and the adjoint's
    relative difference from backprop.

Writes benchmarks/results/training.json. ``--quick`` shrinks everything.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsolve import diffusion as jd
from jaxsolve import train
from jaxsolve.diffusion.analytic import GaussianMixture

RESULTS = os.path.join(os.path.dirname(__file__), "results", "training.json")


def _ring():
    angles = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    return GaussianMixture(
        np.full(6, 1 / 6),
        2.0 * np.stack([np.cos(angles), np.sin(angles)], 1),
        np.full((6, 2), 0.05),
    )


def _throughput(loss, model, data, steps, batch_label):
    opt = optax.adam(1e-3)
    # Warm-up run compiles; the timed run reuses nothing but measures steady-state speed.
    train.fit(
        loss,
        model,
        data,
        optimizer=opt,
        num_steps=20,
        key=jax.random.PRNGKey(0),
        progress=False,
        steps_per_call=20,
    )
    t0 = time.perf_counter()
    r = train.fit(
        loss,
        model,
        data,
        optimizer=opt,
        num_steps=steps,
        key=jax.random.PRNGKey(1),
        progress=False,
        steps_per_call=steps,
    )
    jax.block_until_ready(jax.tree_util.tree_leaves(eqx.filter(r.model, eqx.is_array)))
    seconds = time.perf_counter() - t0
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds,
        "batch": batch_label,
        "final_loss": r.history["loss"][-1],
    }


def throughput(quick):
    ring = _ring()
    steps = 200 if quick else 1000
    out = {}
    mlp = jd.Precond(jd.NoiseMLP(2, width=128, depth=3, key=jax.random.PRNGKey(0)), sigma_data=1.4)
    out["edm_mlp_2d"] = _throughput(
        lambda m, x, k: jd.edm_loss(m, x, k, sigma_data=1.4),
        mlp,
        lambda k: ring.sample(k, 512),
        steps,
        512,
    )
    net = jd.NoiseMLP(2, width=128, depth=3, key=jax.random.PRNGKey(1))

    def fm(n, x, k):
        v = lambda y, t: jax.vmap(n)(y, jnp.broadcast_to(t, y.shape[:1]))
        return jd.flow_matching_loss(v, x, k, times="u_shaped")

    out["flow_matching_mlp_2d"] = _throughput(fm, net, lambda k: ring.sample(k, 512), steps, 512)
    unet = jd.Precond(jd.UNet2D(channels=1, width=16, key=jax.random.PRNGKey(2)), sigma_data=0.5)

    def images(k):  # blobs at random positions, 16x16
        c = jax.random.uniform(k, (32, 2), minval=3.0, maxval=13.0)
        yy, xx = jnp.mgrid[0:16, 0:16]
        return jnp.exp(
            -((xx[None] - c[:, :1, None]) ** 2 + (yy[None] - c[:, 1:, None]) ** 2) / 8.0
        )[:, None]

    out["edm_unet_16x16"] = _throughput(
        lambda m, x, k: jd.edm_loss(m, x, k), unet, images, max(20, steps // 10), 32
    )
    return out


def gradient_modes(quick):
    net = jd.NoiseMLP(2, width=64, depth=2, key=jax.random.PRNGKey(3))
    den = jd.Precond(net, 0.5)
    params, static = eqx.partition(den, eqx.is_inexact_array)
    x0 = 10.0 * jax.random.normal(jax.random.PRNGKey(4), (64 if quick else 256, 2))
    rows = []
    for n in (25, 50, 100) if quick else (25, 50, 100, 200):
        sig = jd.karras_sigmas(n, 0.01, 10.0)
        grads = {}
        for mode in ("backprop", "checkpoint", "adjoint"):

            def loss(p, x, mode=mode, sig=sig):
                y = jd.sample(eqx.combine(p, static), x, sig, jd.DPMSolverPP(order=2), adjoint=mode)
                return jnp.sum((y - jnp.array([1.0, -1.0])) ** 2)

            f = jax.jit(jax.grad(loss, argnums=(0, 1)))
            compiled = f.lower(params, x0).compile()
            mem = compiled.memory_analysis().temp_size_in_bytes
            g = jax.block_until_ready(compiled(params, x0))
            t0 = time.perf_counter()
            for _ in range(3):
                g = jax.block_until_ready(compiled(params, x0))
            grads[mode] = g
            rows.append(
                {
                    "steps": n,
                    "mode": mode,
                    "temp_bytes": int(mem),
                    "seconds": (time.perf_counter() - t0) / 3,
                }
            )
        flat = lambda g: jnp.concatenate([jnp.ravel(v) for v in jax.tree_util.tree_leaves(g)])
        rel = float(
            jnp.linalg.norm(flat(grads["adjoint"]) - flat(grads["backprop"]))
            / jnp.linalg.norm(flat(grads["backprop"]))
        )
        rows.append({"steps": n, "mode": "adjoint_vs_backprop_relative_difference", "value": rel})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    results = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
        },
        "quick": args.quick,
        "throughput": throughput(args.quick),
        "gradient_modes": gradient_modes(args.quick),
    }
    print(json.dumps(results, indent=1))
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=1)
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
