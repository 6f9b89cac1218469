"""Stabilised DEQ training: does spectral normalisation with Jacobian regularisation or with the
fixed-point correction keep the forward iteration count bounded, at equal or better test loss?

Task (CPU, float32): regression y = sin(3 p0) cos(2 p1) + 0.5 tanh(4 p2 p3), p = A^T x, x in R^8
(4096 training points, 512 test points, fixed seeds). Model: a DEQ with the cell
f(z, x) = tanh(W z + U x + b), hidden size 48, ||W||_2 = 0.8 at initialisation, a linear head;
forward solver Anderson (budget 40, rtol 1e-3, atol 1e-4), Adam (lr 1e-2, batch 64, 800 steps;
a step whose gradient is not finite is skipped and counted, ``optax.apply_if_finite``).

Variants, all from the same initial weights and batches:

- ``plain``: implicit gradients (ImplicitDiff, BiCGStab, ``throw=False``: a failed backward
  solve gives a NaN gradient, and the step is skipped).
- ``sn_jr``: W spectrally normalised to 0.99 ("Spectral Normalization for Generative Adversarial
  Networks"; one power iteration per step) and the Hutchinson Jacobian penalty
  0.5 ||J_f||_F^2 / 48 ("Stabilizing Equilibrium Models by Jacobian Regularization", 2 probes).
- ``sn_fc``: W spectrally normalised to 0.99 and the fixed-point correction loss over 3 states
  of the forward solve, gamma = 0.8, phantom gradients (5 steps, damping 0.8) ("Deep Equilibrium
  Optical Flow Estimation").

Recorded per variant: the mean forward iteration count of every training step (for ``sn_fc``:
all three segments together; stored as means over windows of 20 steps, with the training loss
and the number of skipped steps per window), and every 25 steps the test loss, the test forward iteration
count, the fraction of test solves that end at the budget, and ||W||_2 as the cell uses it
(the cell's Lipschitz constant in z is at most that). Claim checked: the stabilised variants'
iteration counts stay bounded and their final test loss is <= plain's.

Run: ``python benchmarks/bench_deq.py [--quick]``; writes the top-level key "deq_training" of
benchmarks/results/implicit.json (read-modify-write, other keys kept).
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

from jaxsolve import implicit as ji
from jaxsolve.implicit import (
    fixed_point_correction,
    spectral_norm,
    update_spectral_norm,
)

HERE = os.path.dirname(os.path.abspath(__file__))
D, HIDDEN, N_TRAIN, N_TEST, BATCH = 8, 48, 4096, 512, 64
MAX_STEPS, LR, EVAL_EVERY = 40, 1e-2, 25
WINDOW = 20  # training curves are stored as means over windows of this many steps
JAC_WEIGHT = 0.5


def make_data():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((D, 4)) / np.sqrt(D)

    def target(x):
        p = x @ a
        return np.sin(3 * p[:, 0]) * np.cos(2 * p[:, 1]) + 0.5 * np.tanh(4 * p[:, 2] * p[:, 3])

    xtr = rng.standard_normal((N_TRAIN, D)).astype(np.float32)
    xte = rng.standard_normal((N_TEST, D)).astype(np.float32)
    return (
        jnp.asarray(xtr),
        jnp.asarray(target(xtr), jnp.float32),
        jnp.asarray(xte),
        jnp.asarray(target(xte), jnp.float32),
        rng,
    )


class Cell(eqx.Module):
    w: jax.Array
    u: jax.Array
    b: jax.Array

    def __init__(self, key):
        k1, k2 = jax.random.split(key)
        w = jax.random.normal(k1, (HIDDEN, HIDDEN)) / np.sqrt(HIDDEN)
        self.w = 0.8 * w / jnp.linalg.norm(w, 2)
        self.u = jax.random.normal(k2, (HIDDEN, D)) / np.sqrt(D)
        self.b = jnp.zeros(HIDDEN)

    def __call__(self, z, x):
        return jnp.tanh(self.w @ z + self.u @ x + self.b)


class Model(eqx.Module):
    deq: ji.DEQ
    head: jax.Array


def build(variant, key, head):
    cell = Cell(key)
    if variant != "plain":
        cell = spectral_norm(cell, key=key, scale=0.99, where=lambda leaf: leaf is cell.w)
    backward = {
        "plain": ji.ImplicitDiff(max_steps=64, throw=False),
        "sn_jr": ji.ImplicitDiff(max_steps=64, throw=False),
        "sn_fc": ji.PhantomGradient(steps=5, damping=0.8),
    }[variant]
    deq = ji.DEQ(
        cell,
        solver=ji.Anderson(),
        backward=backward,
        max_steps=MAX_STEPS,
        rtol=1e-3,
        atol=1e-4,
        throw=False,
        jacobian_samples=2 if variant == "sn_jr" else 0,
        state_init=lambda x: jnp.zeros(HIDDEN),
    )
    return Model(deq, head)


def cell_w(model):
    cell = model.deq.cell
    return cell.normalised().w if hasattr(cell, "normalised") else cell.w


def run(variant, steps, data):
    xtr, ytr, xte, yte, _ = data
    rng = np.random.default_rng(1)  # same batches for every variant
    key = jax.random.PRNGKey(0)
    head = jnp.asarray(np.random.default_rng(2).standard_normal(HIDDEN) / np.sqrt(HIDDEN))
    model = build(variant, key, head.astype(jnp.float32))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.apply_if_finite(optax.adam(LR), max_consecutive_errors=10**6)

    def loss_fn(params, x, y, key):
        m = eqx.combine(params, static)

        def one(x, y, k):
            sq = lambda z: (m.head @ z - y) ** 2
            if variant == "sn_fc":
                c = fixed_point_correction(m.deq, x, sq, num_states=3, gamma=0.8)
                return c.loss, c.num_steps
            out = m.deq(x, key=k)
            loss = sq(out.value)
            if variant == "sn_jr":
                loss = loss + JAC_WEIGHT * out.jacobian_loss / HIDDEN
            return loss, out.solution.num_steps

        loss, steps = jax.vmap(one)(x, y, jax.random.split(key, x.shape[0]))
        return jnp.mean(loss), jnp.mean(steps.astype(jnp.float32))

    @eqx.filter_jit
    def train_step(params, state, x, y, key):
        (loss, fwd), g = jax.value_and_grad(loss_fn, has_aux=True)(params, x, y, key)
        finite = jnp.all(
            jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(g)])
        )
        updates, state = opt.update(g, state, params)
        params = update_spectral_norm(optax.apply_updates(params, updates))
        return params, state, loss, fwd, finite

    @eqx.filter_jit
    def evaluate(params):
        m = eqx.combine(params, static)

        def one(x):
            out = m.deq.run(x, jacobian=False)
            return m.head @ out.value, out.solution.num_steps

        pred, n = jax.vmap(one)(xte)
        return (
            jnp.mean((pred - yte) ** 2),
            jnp.mean(n.astype(jnp.float32)),
            jnp.mean((n >= MAX_STEPS).astype(jnp.float32)),
            jnp.linalg.norm(cell_w(m), 2),
        )

    state = opt.init(params)
    fwd_iters, train_loss, skipped, skipped_steps = [], [], 0, []
    curve = dict(step=[], test_loss=[], test_fwd_iters=[], test_at_budget=[], w_spectral_norm=[])
    start = time.perf_counter()
    for i in range(steps + 1):
        if i % EVAL_EVERY == 0 or i == steps:
            tl, tn, tb, wn = (float(v) for v in evaluate(params))
            for name, v in zip(curve, (i, tl, tn, tb, wn), strict=True):
                curve[name].append(v)
            print(
                f"  {variant:6s} step {i:4d} test {tl:.4f} fwd {tn:5.1f} |W| {wn:.3f}", flush=True
            )
        if i == steps:
            break
        idx = rng.choice(N_TRAIN, BATCH, replace=False)
        params, state, loss, fwd, finite = train_step(
            params, state, xtr[idx], ytr[idx], jax.random.fold_in(key, i)
        )
        fwd_iters.append(round(float(fwd), 3))
        train_loss.append(round(float(loss), 5))
        skipped += int(not bool(finite))
        skipped_steps.append(int(not bool(finite)))
    return dict(
        train_fwd_iters=fwd_iters,
        train_loss=train_loss,
        skipped_nonfinite_steps=skipped,
        skipped_per_window=skipped_steps,
        seconds=round(time.perf_counter() - start, 1),
        **curve,
    )


def windowed(values, reducer=np.mean):
    values = np.asarray(values, float)
    n = len(values) // WINDOW * WINDOW
    return [round(float(v), 4) for v in reducer(values[:n].reshape(-1, WINDOW), axis=1)]


def curves_to_store(r):
    """The curves as written to the JSON: training curves as window means (sums for the
    skipped-step counts), evaluation curves as recorded."""
    out = {k: v for k, v in r.items() if not k.startswith("train_") and k != "skipped_per_window"}
    out["train_fwd_iters_window_mean"] = windowed(r["train_fwd_iters"])
    out["train_loss_window_mean"] = windowed(r["train_loss"])
    out["skipped_steps_per_window"] = [int(v) for v in windowed(r["skipped_per_window"], np.sum)]
    out["test_loss"] = [round(v, 5) for v in r["test_loss"]]
    out["test_fwd_iters"] = [round(v, 3) for v in r["test_fwd_iters"]]
    out["w_spectral_norm"] = [round(v, 4) for v in r["w_spectral_norm"]]
    return out


def summarise(results):
    out = {}
    for name, r in results.items():
        last = r["train_fwd_iters"][-50:]
        first = r["train_fwd_iters"][:50]
        out[name] = dict(
            final_test_loss=r["test_loss"][-1],
            best_test_loss=min(r["test_loss"]),
            mean_fwd_iters_first_50=float(np.mean(first)),
            mean_fwd_iters_last_50=float(np.mean(last)),
            final_test_fwd_iters=r["test_fwd_iters"][-1],
            final_w_spectral_norm=r["w_spectral_norm"][-1],
            skipped_nonfinite_steps=r["skipped_nonfinite_steps"],
        )
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="300 steps instead of 800")
    args = parser.parse_args()
    steps = 300 if args.quick else 800
    data = make_data()
    results = {}
    for variant in ("plain", "sn_jr", "sn_fc"):
        print(f"{variant}:", flush=True)
        results[variant] = run(variant, steps, data)
    summary = summarise(results)
    plain = summary["plain"]
    claims = {
        name: dict(
            fwd_iters_bounded=s["mean_fwd_iters_last_50"] <= 1.5 * s["mean_fwd_iters_first_50"],
            test_loss_le_plain=s["final_test_loss"] <= plain["final_test_loss"],
        )
        for name, s in summary.items()
        if name != "plain"
    }
    claims["plain_fwd_iters_grew"] = (
        plain["mean_fwd_iters_last_50"] > 1.5 * plain["mean_fwd_iters_first_50"]
    )
    for name, s in summary.items():
        print(name, json.dumps(s))
    print("claims", json.dumps(claims))

    path = os.path.join(HERE, "results", "implicit.json")
    data_json = {}
    if os.path.exists(path):
        with open(path) as f:
            data_json = json.load(f)
    data_json["deq_training"] = dict(
        description=__doc__.split("\n\n")[0],
        platform=platform.platform(),
        device=str(jax.devices()[0]),
        jax=jax.__version__,
        steps=steps,
        setup=dict(
            d_in=D,
            hidden=HIDDEN,
            n_train=N_TRAIN,
            n_test=N_TEST,
            batch=BATCH,
            lr=LR,
            forward="Anderson, max_steps 40, rtol 1e-3, atol 1e-4",
            eval_every=EVAL_EVERY,
            jacobian_weight=JAC_WEIGHT,
        ),
        summary=summary,
        claims=claims,
        window=WINDOW,
        curves={name: curves_to_store(r) for name, r in results.items()},
    )
    with open(path, "w") as f:
        json.dump(data_json, f, indent=2)
        f.write("\n")
    print("wrote", path)


if __name__ == "__main__":
    main()
