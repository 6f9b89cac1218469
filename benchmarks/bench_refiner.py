"""PDE-Refiner against one-step MSE on Kuramoto-Sivashinsky: the high-correlation rollout time.

"PDE-Refiner: Achieving Accurate Long Rollouts with Neural PDE Solvers" (Lippe et al.), its 1-D
KS setting scaled to this machine: :math:`u_t + u u_x + u_{xx} + u_{xxxx} = 0` on a periodic
domain of length ``L``, initial conditions a sum of random sines, a burn-in so the state is on
the chaotic attractor, then frames every ``dt`` (ETDRK4 with ``substeps`` inner steps per frame,
from :mod:`jaxsolve.pde`).

Both models are the same FNO backbone behind :class:`~jaxsolve.operators._refiner.RefinerNet`
(inputs ``[u_t, u_noisy, k/K]``), trained with ``train.fit`` for the same steps, optimiser and
batches of pairs :math:`(u_t, u_{t+1})`: ``mse`` with ``K = 0`` (exactly one-step MSE: the noisy
input and the conditioning channel are zero), ``refiner`` with ``K`` refinement steps and
``min_noise_std``, and ``refiner_film``, the same conditioned on ``k`` in every FNO block too
(``RefinerNet(conditioning="film")``). ``--models`` retrains chosen rows and merges them into the
JSON. The metric, as in the paper: roll each test trajectory out from its first frame
and record the first time the Pearson correlation (over space) between prediction and truth falls
below 0.8; report its mean (and standard error) over the test trajectories, with the one-step
relative error. For the refiner the same network is also evaluated without its refinement steps
(``without_refinement``: the k = 0 prediction alone), which separates what the refinement adds
from what sharing the training steps between K + 1 tasks costs the first prediction.

Writes benchmarks/results/refiner.json (``refiner_quick.json`` with ``--quick``).
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
import optax

from jaxsolve import pde, train
from jaxsolve.operators import FNO, count_params
from jaxsolve.operators._refiner import (
    RefinerNet,
    make_refiner_loss,
    refine_step,
    refiner_rollout,
)

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")
# The rows: one-step MSE (K = 0), and the refiner conditioned on k through a constant input
# channel only, or also through FiLM in every FNO block (as the paper's U-Net is conditioned).
MODELS = {
    "mse": dict(refine=False, conditioning="channel"),
    "refiner": dict(refine=True, conditioning="channel"),
    "refiner_film": dict(refine=True, conditioning="film"),
}
THRESHOLD = 0.8


def ks_trajectories(key, n, *, length, points, dt, substeps, burn_in, frames, modes=10):
    """``(n, frames, 1, points)`` KS trajectories after a burn-in of ``burn_in`` time units."""
    x = np.arange(points) * length / points
    ka, kl, kp = jax.random.split(key, 3)
    amp = jax.random.uniform(ka, (n, modes), minval=-0.5, maxval=0.5)
    wav = jax.random.randint(kl, (n, modes), 1, 4)
    phase = jax.random.uniform(kp, (n, modes), maxval=2 * np.pi)
    u0 = jnp.sum(
        amp[..., None] * jnp.sin(2 * np.pi * wav[..., None] * x / length + phase[..., None]), 1
    )
    stepper = pde.ETDRK(pde.KuramotoSivashinsky(length=length), dt / substeps, points)
    burn = round(burn_in / dt) * substeps

    def one(u):
        u = pde.rollout(stepper, u[None], burn, every=burn, include_initial=False)[-1]
        return pde.rollout(stepper, u, (frames - 1) * substeps, every=substeps)

    return jax.jit(jax.vmap(one))(u0)


def correlation(a, b):
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    return (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))


def high_correlation_time(pred, truth, dt):
    """Per trajectory: the time of the first frame whose correlation is below THRESHOLD (the whole
    horizon if none; a non-finite frame counts as below); ``pred`` and ``truth`` are
    ``(n, frames, 1, points)``, frame 0 the start."""
    with np.errstate(all="ignore"):
        corr = correlation(np.asarray(pred, np.float64)[:, :, 0], np.asarray(truth)[:, :, 0])
    # A diverged (non-finite) prediction has a NaN correlation: count it as decorrelated.
    below = ~(corr >= THRESHOLD)
    first = np.where(below.any(1), below.argmax(1), corr.shape[1])
    return (first - 1) * dt


def train_model(name, K, conditioning, data, args, key):
    k_init, k_fit = jax.random.split(key)
    op = FNO(
        1,
        in_channels=3,
        out_channels=1,
        width=args.width,
        modes=args.modes,
        n_layers=args.layers,
        key=k_init,
    )
    net = RefinerNet(op, K, conditioning=conditioning)
    schedule = optax.cosine_decay_schedule(args.lr, args.steps)
    t0 = time.perf_counter()
    res = train.fit(
        make_refiner_loss(num_refinement_steps=K, min_noise_std=args.min_noise_std),
        net,
        data,
        optimizer=optax.adam(schedule),
        num_steps=args.steps,
        key=k_fit,
        batch_size=args.batch,
        progress=False,
        steps_per_call=min(args.steps, 500),
    )
    return res.model, time.perf_counter() - t0, count_params(op)


def evaluate(model, K, test, args, key):
    n, frames = test.shape[:2]
    opts = dict(num_refinement_steps=K, min_noise_std=args.min_noise_std)
    keys = jax.random.split(key, n)
    roll = jax.jit(
        jax.vmap(
            lambda u, k: refiner_rollout(
                model, u, frames - 1, k if K else None, throw=False, **opts
            )
        )
    )
    pred = roll(test[:, 0], keys)
    times = high_correlation_time(pred, test, args.dt)
    one = jax.jit(jax.vmap(lambda u, k: refine_step(model, u, k if K else None, **opts)))
    nxt = one(test[:, :-1].reshape(-1, *test.shape[2:]), jax.random.split(key, n * (frames - 1)))
    ref = test[:, 1:].reshape(nxt.shape)
    rel = float(
        jnp.mean(
            jnp.linalg.norm((nxt - ref).reshape(len(ref), -1), axis=1)
            / jnp.linalg.norm(ref.reshape(len(ref), -1), axis=1)
        )
    )
    return times, rel


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--K", type=int, default=3)
    p.add_argument("--min-noise-std", type=float, default=4e-7)
    p.add_argument("--steps", type=int, default=None, help="training steps (overrides the preset)")
    p.add_argument(
        "--models",
        nargs="+",
        choices=sorted(MODELS),
        default=None,
        help="train only these rows and merge them into the existing JSON (same data and keys)",
    )
    args = p.parse_args()
    if args.quick:
        cfg = dict(
            length=64.0,
            points=64,
            dt=0.2,
            substeps=2,
            burn_in=40.0,
            train_n=32,
            train_frames=40,
            test_n=16,
            test_frames=150,
            width=16,
            modes=12,
            layers=3,
            steps=600,
            batch=32,
            lr=2e-3,
        )
    else:
        cfg = dict(
            length=64.0,
            points=128,
            dt=0.2,
            substeps=4,
            burn_in=80.0,
            train_n=256,
            train_frames=140,
            test_n=64,
            test_frames=400,
            width=32,
            modes=24,
            layers=4,
            steps=10_000,
            batch=64,
            lr=1e-3,
        )
    suffix = "" if args.steps is None else f"_{args.steps}steps"
    if args.steps is not None:
        cfg["steps"] = args.steps
    for k, v in cfg.items():
        setattr(args, k, v)
    key = jax.random.PRNGKey(args.seed)
    k_tr, k_te, k_m, k_ev = jax.random.split(key, 4)
    t0 = time.perf_counter()
    common = dict(
        length=args.length,
        points=args.points,
        dt=args.dt,
        substeps=args.substeps,
        burn_in=args.burn_in,
    )
    train_traj = ks_trajectories(k_tr, args.train_n, frames=args.train_frames, **common)
    test = ks_trajectories(k_te, args.test_n, frames=args.test_frames, **common)
    u_t = train_traj[:, :-1].reshape(-1, 1, args.points)
    u_next = train_traj[:, 1:].reshape(-1, 1, args.points)
    gen_s = time.perf_counter() - t0
    print(f"data: {u_t.shape[0]} training pairs, test {test.shape}, {gen_s:.1f}s")

    path = os.path.join(RESULTS_DIR, f"{'refiner_quick' if args.quick else 'refiner'}{suffix}.json")
    rows = {}
    if args.models is not None and os.path.exists(path):
        with open(path) as f:
            rows = json.load(f)["rows"]
    for name in args.models or MODELS:
        K = args.K if MODELS[name]["refine"] else 0
        conditioning = MODELS[name]["conditioning"]
        model, train_s, params = train_model(name, K, conditioning, (u_t, u_next), args, k_m)
        times, rel = evaluate(model, K, test, args, k_ev)
        rows[name] = dict(
            K=K,
            conditioning=conditioning,
            params=params,
            train_s=round(train_s, 1),
            one_step_rel_l2=rel,
            high_corr_time_mean=float(times.mean()),
            high_corr_time_sem=float(times.std(ddof=1) / np.sqrt(len(times))),
            horizon=(args.test_frames - 1) * args.dt,
        )
        if K:
            # Diagnostic: the same trained network without its refinement steps (k = 0 only).
            times0, rel0 = evaluate(model, 0, test, args, k_ev)
            rows[name]["without_refinement"] = dict(
                one_step_rel_l2=rel0,
                high_corr_time_mean=float(times0.mean()),
                high_corr_time_sem=float(times0.std(ddof=1) / np.sqrt(len(times0))),
            )
        print(name, json.dumps(rows[name]))
    out = dict(
        config={k: getattr(args, k) for k in (*cfg, "K", "min_noise_std", "seed")},
        threshold=THRESHOLD,
        rows=rows,
        platform=platform.platform(),
        device=str(jax.devices()[0]),
        data_s=round(gen_s, 1),
    )
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
