"""Solver-heuristic regularisation of neural ODEs: test-time NFE, accuracy and wall time.

Two standard small tasks, each trained side by side from the same initial weights and data:

* ``spiral`` — two interleaved 2-D spirals, classified by an augmented neural ODE: a linear
  lift R^2 -> R^4, dz/dt = MLP(z, t) on t in [0, 1] (width 32, depth 2, softplus), a linear
  read-out, logistic loss. Only the end state is supervised, so the flow is free to be simple or
  complicated — the setting of the papers' classification experiments.
* ``timeseries`` — diffrax's neural-ODE example: learn dy/dt = (y2/(1+y2), -y1/(1+y1)) on
  t in [0, 10] from 100 observations per trajectory (MLP width 64, depth 2). The whole trajectory
  is supervised, so it pins the dynamics down: the true field itself needs ~125 NFE at these
  tolerances, and a regulariser can only trade accuracy for NFE here.

Variants (the regulariser weight is the only difference):

* ``none``              — task loss only;
* ``global_error``      — + w * sum_n E_n |h_n|       ("Opening the Blackbox", ERNODE);
* ``global_stiffness``  — + w * sum_n h_n |lambda_n|  ("Opening the Blackbox", SRNODE);
* ``local_unbiased``    — + w * E(t_r) |h_r|, t_r ~ U[t0, t1)  ("Locally Regularized NDEs");
* ``local_biased``      — the same with t_r among the starts of the solver's accepted steps.

Every solve is Tsit5 with a PID controller; each trained model is then solved *without* a
regulariser on held-out data: mean NFE per sample, the task metric (accuracy / MSE), and the wall
time of the jitted batched solve (minimum over 10 runs; under ``vmap`` a batch runs until its
slowest sample is done, so it follows the largest NFE more than the mean); also training wall
time. Ratios are against ``none`` of the same task. The papers report 0.556x-0.733x NFE at
comparable accuracy. Wall times on a shared machine are noisy; NFE and accuracy are exact and
reproducible for a given seed.

Run: ``python benchmarks/bench_ode.py [--tasks spiral,timeseries] [--quick]``; writes
benchmarks/results/ode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import ClassVar

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsolve import RESULTS, ode

HERE = os.path.dirname(os.path.abspath(__file__))

REGULARISERS = {
    "none": None,
    "global_error": ode.GlobalRegulariser(),
    "global_stiffness": ode.GlobalRegulariser(error=False, stiffness=True),
    "local_unbiased": ode.LocalRegulariser("unbiased"),
    "local_biased": ode.LocalRegulariser("biased"),
}


def regularisation(sol):
    return sol.stiffness_estimate if sol.error_estimate is None else sol.error_estimate


# --------------------------------------------------------------------------------------------
# Task 1: two spirals, classified by an augmented neural ODE.


def spiral_data(key, n):
    k1, k2, k3 = jax.random.split(key, 3)
    u = jax.random.uniform(k1, (n,))
    theta = jnp.sqrt(u) * 3.0 * jnp.pi
    label = jax.random.bernoulli(k2, 0.5, (n,)).astype(jnp.float32)
    sign = 1.0 - 2.0 * label
    x = sign[:, None] * jnp.stack([theta * jnp.cos(theta), theta * jnp.sin(theta)], -1)
    x = x / (3.0 * jnp.pi) + 0.03 * jax.random.normal(k3, (n, 2))
    return x, label


class SpiralModel(eqx.Module):
    lift: eqx.nn.Linear
    node: ode.NeuralODE
    readout: eqx.nn.Linear

    def __init__(self, key, rtol=1e-3, atol=1e-6):
        k1, k2, k3 = jax.random.split(key, 3)
        self.lift = eqx.nn.Linear(2, 4, key=k1)
        field = ode.MLPField(4, 32, 2, key=k2, time_dependent=True)
        # throw=False: a failed solve is counted (all_successful) rather than ending the run.
        self.node = ode.NeuralODE(
            field, dfx.Tsit5(), dfx.PIDController(rtol=rtol, atol=atol), throw=False
        )
        self.readout = eqx.nn.Linear(4, "scalar", key=k3)

    def __call__(self, x, regulariser=None, key=None):
        sol = self.node(jnp.array([0.0, 1.0]), self.lift(x), regulariser=regulariser, key=key)
        return self.readout(sol.ys[-1]), sol


class Spiral:
    name = "spiral"
    description = (
        "two 2-D spirals, classified by an augmented neural ODE (R^2 -> R^4 lift, "
        "MLPField(4, width=32, depth=2, time-dependent), t in [0, 1], linear read-out); "
        "Tsit5, PID rtol=1e-3 atol=1e-6; metric: test accuracy"
    )
    weights: ClassVar[dict[str, float]] = {
        "none": 0.0,
        "global_error": 0.1,
        "global_stiffness": 0.1,
        "local_unbiased": 1000.0,
        "local_biased": 1000.0,
    }
    steps, batch, lr = 3000, 128, 3e-3

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.train = spiral_data(k1, 2048)
        self.test = spiral_data(k2, 1024)
        self.init = SpiralModel(k3)

    def loss(self, model, batch, regulariser, key):
        x, y = batch

        def one(xi, yi, k):
            logit, sol = model(xi, regulariser, k)
            bce = optax.sigmoid_binary_cross_entropy(logit, yi)
            reg = 0.0 if regulariser is None else regularisation(sol)
            return bce, reg

        keys = jax.random.split(key, x.shape[0])
        bce, reg = jax.vmap(one)(x, y, keys)
        return jnp.mean(bce), jnp.mean(reg)

    def sample(self, key, batch):
        idx = jax.random.choice(key, self.train[0].shape[0], (batch,), replace=False)
        return self.train[0][idx], self.train[1][idx]

    def solve(self, model):
        x, y = self.test

        def run(x):
            logit, sol = jax.vmap(lambda xi: model(xi))(x)
            return logit, sol.nfe, sol.result

        return run, (x,), y

    def metric(self, outputs, target):
        logit = outputs[0]
        return {"accuracy": float(jnp.mean((logit > 0) == (target > 0.5)))}


# --------------------------------------------------------------------------------------------
# Task 2: diffrax's neural-ODE example, a 2-D time series.


def true_field(t, y, args):
    x = y / (1.0 + y)
    return jnp.stack([x[..., 1], -x[..., 0]], axis=-1)


def series_data(key, n, ts):
    y0 = jax.random.uniform(key, (n, 2), minval=-0.6, maxval=1.0)
    solve = lambda y: (
        dfx.diffeqsolve(
            dfx.ODETerm(true_field),
            dfx.Tsit5(),
            ts[0],
            ts[-1],
            0.01,
            y,
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=dfx.PIDController(rtol=1e-8, atol=1e-8),
            max_steps=100_000,
        ).ys
    )
    return jax.vmap(solve)(y0)


class TimeSeries:
    name = "timeseries"
    description = (
        "diffrax neural-ODE example: 2-D time series, t in [0, 10], 100 observations; "
        "MLPField(2, width=64, depth=2, softplus); Tsit5, PID rtol=1e-3 atol=1e-6; "
        "metric: test MSE"
    )
    weights: ClassVar[dict[str, float]] = {
        "none": 0.0,
        "global_error": 1e-2,
        "global_stiffness": 3e-3,
        "local_unbiased": 100.0,
        "local_biased": 100.0,
    }
    steps, batch, lr = 1500, 32, 3e-3

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.ts = jnp.linspace(0.0, 10.0, 100)
        self.train = series_data(k1, 256, self.ts)
        self.test = series_data(k2, 128, self.ts)
        field = ode.MLPField(2, 64, 2, key=k3)
        self.init = ode.NeuralODE(
            field, dfx.Tsit5(), dfx.PIDController(rtol=1e-3, atol=1e-6), throw=False
        )

    def loss(self, model, batch, regulariser, key):
        def one(y, k):
            sol = model(self.ts, y[0], regulariser=regulariser, key=k)
            reg = 0.0 if regulariser is None else regularisation(sol)
            return jnp.mean((sol.ys - y) ** 2), reg

        keys = jax.random.split(key, batch.shape[0])
        mse, reg = jax.vmap(one)(batch, keys)
        return jnp.mean(mse), jnp.mean(reg)

    def sample(self, key, batch):
        idx = jax.random.choice(key, self.train.shape[0], (batch,), replace=False)
        return self.train[idx]

    def solve(self, model):
        def run(y0s):
            sol = jax.vmap(lambda y: model(self.ts, y))(y0s)
            return sol.ys, sol.nfe, sol.result

        return run, (self.test[:, 0],), self.test

    def metric(self, outputs, target):
        return {"mse": float(jnp.mean((outputs[0] - target) ** 2))}


TASKS = {"spiral": Spiral, "timeseries": TimeSeries}


# --------------------------------------------------------------------------------------------


def train(task, variant, weight, *, steps, key):
    regulariser = REGULARISERS[variant]
    # Clipping keeps the occasional gradient spike of a neural ODE from derailing a run.
    optim = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(task.lr))
    params, static = eqx.partition(task.init, eqx.is_inexact_array)
    opt_state = optim.init(params)

    def objective(params, batch, key):
        loss, reg = task.loss(eqx.combine(params, static), batch, regulariser, key)
        return loss + weight * reg, (loss, reg)

    @jax.jit
    def step(params, opt_state, key):
        k1, k2 = jax.random.split(key)
        grads, aux = jax.grad(objective, has_aux=True)(params, task.sample(k1, task.batch), k2)
        updates, opt_state = optim.update(grads, opt_state, params)
        return eqx.apply_updates(params, updates), opt_state, aux

    jax.block_until_ready(step(params, opt_state, key))  # compile outside the timer
    start = time.perf_counter()
    for i in range(steps):
        params, opt_state, aux = step(params, opt_state, jax.random.fold_in(key, i))
    jax.block_until_ready(params)
    elapsed = time.perf_counter() - start
    return eqx.combine(params, static), elapsed, float(aux[0]), float(aux[1])


def evaluate(task, model, repeats=10):
    run, inputs, target = task.solve(model)
    run = jax.jit(run)
    outputs = jax.block_until_ready(run(*inputs))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run(*inputs))
        times.append(time.perf_counter() - start)
    _, nfe, result = outputs[0], outputs[-2], outputs[-1]
    row = {
        "nfe_mean": float(jnp.mean(nfe)),
        "nfe_max": int(jnp.max(nfe)),
        # The minimum over repeats is the least disturbed by other work on a shared machine.
        "solve_wall_s": float(np.min(times)),
        "solve_wall_median_s": float(np.median(times)),
        "all_successful": bool(jnp.all(result == RESULTS.successful)),
    }
    row.update(task.metric(outputs, target))
    return row


def run_task(task, variants, weights, steps, key):
    rows = {}
    for variant in variants:
        weight = weights.get(variant, task.weights[variant])
        model, train_s, loss, reg = train(task, variant, weight, steps=steps, key=key)
        row = {
            "weight": weight,
            "train_wall_s": train_s,
            "final_batch_loss": loss,
            "final_batch_regulariser": reg,
        }
        row.update(evaluate(task, model))
        rows[variant] = row
        metric = {k: row[k] for k in ("accuracy", "mse") if k in row}
        print(
            f"[{task.name}] {variant:17s} w={weight:<7g} NFE={row['nfe_mean']:7.1f} "
            f"{metric} solve={row['solve_wall_s'] * 1e3:7.1f} ms train={train_s:6.1f} s",
            flush=True,
        )
    if "none" in rows:
        base = rows["none"]
        for row in rows.values():
            row["nfe_ratio"] = row["nfe_mean"] / base["nfe_mean"]
            row["solve_wall_ratio"] = row["solve_wall_s"] / base["solve_wall_s"]
            row["train_wall_ratio"] = row["train_wall_s"] / base["train_wall_s"]
            for k in ("accuracy", "mse"):
                if k in row:
                    row[f"{k}_ratio"] = row[k] / base[k]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="spiral,timeseries")
    parser.add_argument("--variants", default=",".join(REGULARISERS))
    parser.add_argument("--steps", type=int, default=None, help="training steps (task default)")
    parser.add_argument("--weights", default="", help="variant=weight,... overrides")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps, to check the script")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ode.json"))
    args = parser.parse_args(argv)
    overrides = {}
    for item in filter(None, args.weights.split(",")):
        name, value = item.split("=")
        overrides[name] = float(value)

    key = jax.random.PRNGKey(args.seed)
    record = {
        "paper_target_nfe_ratio": [0.556, 0.733],
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} ({jax.devices()[0].platform})",
        "seed": args.seed,
        "tasks": {},
    }
    for name in args.tasks.split(","):
        task = TASKS[name](jax.random.fold_in(key, len(name)))
        steps = 20 if args.quick else (args.steps or task.steps)
        rows = run_task(task, args.variants.split(","), overrides, steps, key)
        record["tasks"][name] = {
            "description": task.description,
            "training": {
                "steps": steps,
                "batch": task.batch,
                "optimizer": f"clip_by_global_norm(1) + adam({task.lr})",
            },
            "variants": rows,
        }
        print(f"\n[{name}] variant          NFE ratio  metric ratio  solve ratio  train ratio")
        for variant, row in rows.items():
            metric_ratio = row.get("accuracy_ratio", row.get("mse_ratio", float("nan")))
            print(
                f"[{name}] {variant:17s} {row.get('nfe_ratio', float('nan')):9.3f}  "
                f"{metric_ratio:12.3f}  {row.get('solve_wall_ratio', float('nan')):11.3f}  "
                f"{row.get('train_wall_ratio', float('nan')):11.3f}"
            )
        print(flush=True)
    if not args.quick:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        # Other scripts (bench_sde, bench_cde, bench_cnf) own keys of this file: keep them.
        merged = {}
        if os.path.exists(args.out):
            with open(args.out) as f:
                merged = json.load(f)
        merged.update(record)
        with open(args.out, "w") as f:
            json.dump(merged, f, indent=2)
        print(f"wrote {args.out}")
    return record


if __name__ == "__main__":
    main()
