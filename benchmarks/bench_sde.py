"""The global and local error regularisers on a neural SDE: test-time NFE of an adaptive solve.

Task (``ou_moments``): learn an Ornstein-Uhlenbeck process dX = theta (m - X) dt + s dW
(theta = 1, m = 0, s = 0.5) from X_0 ~ N(2, 0.1^2) by matching the exact marginal mean and
standard deviation at 7 times in [0, 3] (sample moments over 64 paths per step, fresh Brownian
keys every step). Model: a NeuralSDE with an MLP drift (width 32, depth 2, softplus, time
dependent) and a learned constant (additive) diffusion, Stratonovich (= Ito for additive noise),
solved by diffrax's Heun with a PID controller (rtol = atol = 1e-3) and its embedded error
estimate.

Variants, trained side by side from the same initial weights and the same keys:

* ``none``          — moment loss only;
* ``global_error``  — + w * sum_n E_n |h_n| over the accepted steps ("Opening the Blackbox:
  Accelerating Neural Differential Equations by Regularizing Internal Solver Heuristics");
* ``local_unbiased`` — + w * E(t_r) |h_r|, the scaled error estimate of one Heun step of
  h_r = dt0 = 0.05 from the solved state at t_r ~ U[0, 3) on the path's own Brownian motion
  ("Locally Regularized Neural Differential Equations: Some Black Boxes Were Meant to Remain
  Closed!"). One step's term against a sum over ~100 steps: its weights are larger (a weight
  60 = T / dt0 times the global one gives the two the same expected size at equal E).

Each trained model is then solved without a regulariser on 1024 held-out paths: mean NFE per
path (Heun: 2 per attempted step), the test moment loss, and the learned diffusion (true 0.5).
Ratios are against ``none``. NFE and losses are exact for a given seed.

Run: ``python benchmarks/bench_sde.py [--steps N] [--weights 0.1,1] [--local-weights 1,10]
[--quick]``; writes the top-level key ``neural_sde`` of benchmarks/results/ode.json
(read-modify-write: other keys kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsolve import RESULTS, ode
from jaxsolve.ode._neural_sde import NeuralSDE

HERE = os.path.dirname(os.path.abspath(__file__))
THETA, M, S, X0_MEAN, X0_STD = 1.0, 0.0, 0.5, 2.0, 0.1
TS = jnp.linspace(0.0, 3.0, 7)


def exact_moments(ts):
    """Mean and standard deviation of the OU marginals from X_0 ~ N(X0_MEAN, X0_STD^2)."""
    decay = jnp.exp(-THETA * ts)
    mean = M + (X0_MEAN - M) * decay
    var = X0_STD**2 * decay**2 + S**2 / (2 * THETA) * (1 - decay**2)
    return mean, jnp.sqrt(var)


class ConstantDiffusion(eqx.Module):
    log_s: jax.Array

    def __call__(self, t, y, args):
        return jnp.exp(self.log_s) * jnp.ones_like(y)


def make_model(key):
    drift = ode.MLPField(1, 32, 2, key=key, time_dependent=True)
    return NeuralSDE(
        drift,
        ConstantDiffusion(jnp.asarray(np.log(0.2), jnp.float32)),
        dt0=0.05,
        calculus="stratonovich",
        solver=dfx.Heun(),
        stepsize_controller=dfx.PIDController(rtol=1e-3, atol=1e-3),
        brownian_tol=2.0**-10,
        max_steps=1024,
    )


def moment_loss(ys):
    """Squared error of the sample mean and std at every time (ys: (paths, times, 1))."""
    mean, std = exact_moments(TS)
    return jnp.mean((ys[..., 0].mean(0) - mean) ** 2 + (ys[..., 0].std(0) - std) ** 2)


def batch(model, key, n, regulariser):
    y0_key, path_key = jax.random.split(key)
    y0 = X0_MEAN + X0_STD * jax.random.normal(y0_key, (n, 1))
    keys = jax.vmap(lambda i: jax.random.fold_in(path_key, i))(jnp.arange(n))
    return jax.vmap(lambda y, k: model(TS, y, key=k, regulariser=regulariser))(y0, keys)


def train(model, regulariser, weight, steps, key, n_paths=64, lr=3e-3):
    optim = optax.adam(lr)

    def loss_fn(model, k):
        sol = batch(model, k, n_paths, regulariser)
        loss = moment_loss(sol.ys)
        if regulariser is not None:
            loss = loss + weight * jnp.mean(sol.error_estimate)
        return loss, jnp.mean(sol.nfe)

    @eqx.filter_jit
    def step(model, opt_state, k):
        (loss, nfe), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(model, k)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss, nfe

    opt_state = optim.init(eqx.filter(model, eqx.is_array))
    start = time.perf_counter()
    for i in range(steps):
        model, opt_state, loss, nfe = step(model, opt_state, jax.random.fold_in(key, i))
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"  step {i:4d} loss {float(loss):.5f} train NFE {float(nfe):.1f}", flush=True)
    return model, time.perf_counter() - start


def evaluate(model, key, n=1024):
    sol = eqx.filter_jit(lambda m: batch(m, key, n, None))(model)
    return {
        "test_nfe_mean": float(jnp.mean(sol.nfe)),
        "test_nfe_max": int(jnp.max(sol.nfe)),
        "test_moment_loss": float(moment_loss(sol.ys)),
        "learned_diffusion": float(jnp.exp(model.diffusion.log_s)),
        "all_successful": bool(jnp.all(sol.result == RESULTS.successful)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--weights", default="0.003,0.01,0.03", help="global regulariser weights to try"
    )
    parser.add_argument(
        "--local-weights", default="0.2,0.6,2", help="local regulariser weights to try"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps, to check the script")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ode.json"))
    args = parser.parse_args(argv)
    steps = 10 if args.quick else args.steps
    key = jax.random.key(args.seed)
    init = make_model(jax.random.fold_in(key, 1))
    variants = [("none", None, 0.0)]
    for weight in filter(None, args.weights.split(",")):
        variants.append(
            (f"global_error_w{float(weight):g}", ode.GlobalRegulariser(), float(weight))
        )
    for weight in filter(None, args.local_weights.split(",")):
        variants.append(
            (f"local_unbiased_w{float(weight):g}", ode.LocalRegulariser(), float(weight))
        )
    rows = {}
    for name, regulariser, weight in variants:
        print(f"[ou_moments] {name}", flush=True)
        model, wall = train(init, regulariser, weight, steps, jax.random.fold_in(key, 2))
        rows[name] = {"weight": weight, "train_wall_s": wall, **evaluate(model, key)}
    base = rows["none"]
    for row in rows.values():
        row["nfe_ratio"] = row["test_nfe_mean"] / base["test_nfe_mean"]
        row["moment_loss_ratio"] = row["test_moment_loss"] / base["test_moment_loss"]
    print("\nvariant                 NFE (mean)  NFE ratio  moment loss  loss ratio  diffusion")
    for name, row in rows.items():
        print(
            f"{name:23s} {row['test_nfe_mean']:10.1f} {row['nfe_ratio']:10.3f} "
            f"{row['test_moment_loss']:12.2e} {row['moment_loss_ratio']:11.3f} "
            f"{row['learned_diffusion']:10.3f}"
        )
    record = {
        "task": "ou_moments",
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "machine": f"{platform.machine()} {platform.system()} (CPU), jax {jax.__version__}",
        "seed": args.seed,
        "training": {"steps": steps, "paths_per_step": 64, "optimizer": "adam(3e-3)"},
        "variants": rows,
    }
    if not args.quick:
        # Read-modify-write: ode.json is shared with bench_ode.py; only "neural_sde" is ours.
        existing = {}
        if os.path.exists(args.out):
            with open(args.out) as f:
                existing = json.load(f)
        existing["neural_sde"] = record
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(existing, f, indent=2)
        print(f"wrote key 'neural_sde' of {args.out}")
    return record


if __name__ == "__main__":
    main()
