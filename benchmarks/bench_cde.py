"""Neural CDE on irregularly sampled spirals with missing values: test accuracy and cost.

The task ("Neural Controlled Differential Equations for Irregular Time Series", the thesis "On
Neural Differential Equations"; diffrax's neural-CDE example): classify a 2-D spiral as
clockwise or anticlockwise. Each series has its own random phase, radius, decay and angular speed,
Gaussian noise, its own irregular observation times (gaps uniform in [0.1, 1.9] times T/(n-1)) and 30% of
its observations (each channel separately) dropped at random as NaN. The control is the
backward-Hermite cubic path (:math:`C^1` across the gaps too) of (time, x, y, cumulative
observation counts); the model is :meth:`NeuralCDE.mlp` (hidden 8, field width 32, depth 1)
trained with Adam on a logistic loss, solved with Heun at a fixed step (T/40). Reported: test
accuracy on 512 held-out series, NFE per series, and training wall time; then the trained
model solved adaptively (Tsit5, PID) with and without ``step_to_knots``: accuracy, mean NFE and
rejected steps per series.

Run: ``python benchmarks/bench_cde.py [--quick]``; writes the key "neural_cde" of
benchmarks/results/ode.json (read-modify-write: other keys are kept).
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
import optax

from jaxsolve.ode._neural_cde import NeuralCDE, classification_loss, interpolate_batch

HERE = os.path.dirname(os.path.abspath(__file__))
T = 6.0


def spirals(key, n_series, n_times=40, drop=0.3, noise=0.05):
    """``(ts, xs, labels)``: irregular times ``(b, n)``, observations ``(b, n, 2)`` with NaN
    where dropped, and labels 1 for anticlockwise, 0 for clockwise."""
    k = jax.random.split(key, 7)
    # Irregular gaps (uniform between 0.1 and 1.9 times the mean gap), so no two times coincide
    # (sorted uniform draws in float32 sometimes do); each series ends near T.
    gaps = jax.random.uniform(k[0], (n_series, n_times - 1), minval=0.1, maxval=1.9)
    ts = jnp.concatenate([jnp.zeros((n_series, 1)), jnp.cumsum(gaps, axis=1)], axis=1)
    ts = ts * (T / (n_times - 1))
    labels = jax.random.bernoulli(k[1], 0.5, (n_series,)).astype(jnp.int32)
    phase = jax.random.uniform(k[2], (n_series, 1), maxval=2 * jnp.pi)
    radius = jax.random.uniform(k[3], (n_series, 1), minval=0.5, maxval=1.5)
    speed = jax.random.uniform(k[4], (n_series, 1), minval=0.6, maxval=1.4)
    sign = jnp.where(labels[:, None] == 1, 1.0, -1.0)
    angle = phase + sign * speed * ts
    r = radius * jnp.exp(-0.1 * ts)
    xs = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], axis=-1)
    xs = xs + noise * jax.random.normal(k[5], xs.shape)
    dropped = jax.random.bernoulli(k[6], drop, xs.shape)
    return ts, jnp.where(dropped, jnp.nan, xs), labels


def make_model(key, *, dt):
    return NeuralCDE.mlp(
        5,
        8,
        1,
        width=32,
        depth=1,
        key=key,
        solver=dfx.Heun(),
        stepsize_controller=dfx.ConstantStepSize(),
        dt0=dt,
    )


def train(model, controls, labels, *, steps, batch, lr, key):
    optim = optax.adam(lr)
    opt_state = optim.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, opt_state, idx):
        sub = jax.tree_util.tree_map(lambda a: a[idx], controls)
        (loss, acc), grads = eqx.filter_value_and_grad(classification_loss, has_aux=True)(
            model, sub, labels[idx]
        )
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), opt_state, loss, acc

    n = labels.shape[0]
    history = []
    for i in range(steps):
        idx = jax.random.choice(jax.random.fold_in(key, i), n, (batch,), replace=False)
        model, opt_state, loss, _ = step(model, opt_state, idx)
        history.append(float(loss))
    return model, history


def run(*, quick: bool, seed: int = 0):
    key = jax.random.PRNGKey(seed)
    k_train, k_test, k_model, k_loop = jax.random.split(key, 4)
    n_train, steps = (256, 60) if quick else (1024, 200)
    ts, xs, labels = spirals(k_train, n_train)
    ts_test, xs_test, labels_test = spirals(k_test, 512)
    controls = interpolate_batch(ts, xs)
    controls_test = interpolate_batch(ts_test, xs_test)
    model = make_model(k_model, dt=T / 40)
    start = time.perf_counter()
    model, history = train(model, controls, labels, steps=steps, batch=128, lr=3e-3, key=k_loop)
    train_time = time.perf_counter() - start
    loss, acc = eqx.filter_jit(classification_loss)(model, controls_test, labels_test)
    nfe = eqx.filter_jit(jax.vmap(lambda c: model(c).nfe))(controls_test)
    adaptive = {}
    for step_to_knots in (True, False):
        # The trained weights, solved adaptively (Tsit5, PID rtol 1e-3, atol 1e-6): does ending
        # steps at the knots (the default) save the steps an error estimate wastes on them?
        solved = NeuralCDE(
            model.initial,
            model.vector_field,
            model.readout,
            dfx.Tsit5(),
            dfx.PIDController(rtol=1e-3, atol=1e-6),
            step_to_knots=step_to_knots,
        )
        _, acc_adaptive = eqx.filter_jit(classification_loss)(solved, controls_test, labels_test)
        stats = eqx.filter_jit(jax.vmap(lambda c, m=solved: m(c)))(controls_test)
        adaptive[f"step_to_knots={step_to_knots}"] = {
            "test_accuracy": float(acc_adaptive),
            "mean_nfe_per_series": float(jnp.mean(stats.nfe)),
            "mean_rejected_steps": float(jnp.mean(stats.num_rejected_steps)),
        }
    return {
        "task": "spiral direction (cw vs ccw), irregular times, 30% missing per channel",
        "interpolation": "cubic (backward Hermite, C^1 over gaps), channels: t, x, y, cumulative counts",
        "model": "NeuralCDE.mlp hidden 8, width 32, depth 1; Heun, dt = T/40",
        "n_train": n_train,
        "n_test": 512,
        "train_steps": steps,
        "final_train_loss": history[-1],
        "test_loss": float(loss),
        "test_accuracy": float(acc),
        "mean_nfe_per_series": float(jnp.mean(nfe)),
        "train_wall_s": round(train_time, 2),
        "adaptive_tsit5_eval": adaptive,
        "quick": quick,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = run(quick=args.quick)
    result["machine"] = {
        "platform": platform.platform(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }
    print(json.dumps(result, indent=2))
    path = os.path.join(HERE, "results", "ode.json")
    data = {}
    if os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    data["neural_cde"] = result
    with open(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
