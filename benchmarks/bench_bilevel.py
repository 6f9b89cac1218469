"""Bilevel optimisation: implicit, unrolled and penalty (V-PBGD) hypergradients side by side.

Problem (float64, small): tune one ridge penalty per feature on a validation loss.
Training data A (n = 60 rows, d = 30 features), of which 5 carry signal and 25 are noise,
b = A w + 0.5 noise; validation data of 200 rows from the same model. Inner problem
G(x, lam) = |A x - b|^2 / (2n) + sum_j exp(lam_j) x_j^2 / 2, outer F(x) = |A_v x - b_v|^2 / (2 n_v).
The inner solution and the exact hypergradient have closed forms, so every method is judged
on the true bilevel objective Phi(lam) = F(x*(lam)) at the lam it ends with.

Every method runs the same outer loop, ``bilevel_minimize`` (one ``lax.scan``), with Adam
(lr 0.1) for 100 steps from lam = -2, inner solves warm-started:

- implicit: ``ImplicitHypergradient`` (Newton-Krylov inner solve to rtol 1e-8, CG backward);
- unrolled K = 10 and K = 100 gradient steps of size 1 / (L_A + e^4) (stable while lam <= 4);
- penalty: V-PBGD (``PenaltyHypergradient``) with gamma = 10, 100 x and y steps per outer step.

Reported per method: the final Phi and its drop, the error of the cold-start hypergradient at
lam0 against the closed form, wall time of the jitted run (median of repeats, all methods in one
process), inner iterations summed over the run (Newton steps for the implicit method; gradient
steps otherwise), compiled temp memory (``memory_analysis``), and each as a ratio to implicit;
and the compiled temp memory of one hypergradient for unrolled K = 10, 100, 1000 against implicit.

Run: ``python benchmarks/bench_bilevel.py [--quick]``; writes the top-level key "bilevel" of
benchmarks/results/implicit.json (read-modify-write: the other keys are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxsolve import RESULTS  # noqa: E402
from jaxsolve.implicit import (  # noqa: E402
    ImplicitHypergradient,
    PenaltyHypergradient,
    UnrolledHypergradient,
    bilevel_minimize,
    hypergradient,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def make_problem(n=60, n_val=200, d=30, informative=5, seed=0):
    rng = np.random.default_rng(seed)
    w = np.zeros(d)
    w[:informative] = 2 * rng.standard_normal(informative)
    a = rng.standard_normal((n, d))
    b = a @ w + 0.5 * rng.standard_normal(n)
    av = rng.standard_normal((n_val, d))
    bv = av @ w + 0.5 * rng.standard_normal(n_val)
    a, b, av, bv = map(jnp.asarray, (a, b, av, bv))

    def inner(x, lam, args):
        return 0.5 * jnp.mean((a @ x - b) ** 2) + 0.5 * jnp.sum(jnp.exp(lam) * x**2)

    def outer(x, lam, args):
        return 0.5 * jnp.mean((av @ x - bv) ** 2)

    def solution(lam):
        return jnp.linalg.solve(a.T @ a / n + jnp.diag(jnp.exp(lam)), a.T @ b / n)

    def phi(lam):
        return outer(solution(lam), lam, None)

    lipschitz_a = float(jnp.linalg.norm(a, 2) ** 2 / n)
    return inner, outer, phi, lipschitz_a, d


def median_time(fn, arg, repeats):
    jax.block_until_ready(fn(arg))  # compile
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(arg))
        times.append(time.perf_counter() - t)
    return float(np.median(times)), float(np.min(times))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer outer steps and repeats")
    opts = parser.parse_args()
    outer_steps = 40 if opts.quick else 100
    repeats = 3 if opts.quick else 5

    inner, outer, phi, lipschitz_a, d = make_problem()
    lam0 = jnp.full(d, -2.0)
    x0 = jnp.zeros(d)
    optimizer = optax.adam(0.1)
    step = 1 / (lipschitz_a + np.exp(4.0))
    gamma = 10.0
    methods = {
        "implicit": ImplicitHypergradient(rtol=1e-8, atol=1e-10),
        "unrolled_K10": UnrolledHypergradient(10, step_size=step),
        "unrolled_K100": UnrolledHypergradient(100, step_size=step),
        "penalty_vpbgd": PenaltyHypergradient(
            gamma,
            step_size=1 / (1 + gamma * (lipschitz_a + np.exp(4.0))),
            inner_step_size=step,
            inner_steps=100,
            x_steps=100,
        ),
    }
    per_outer_inner = {"unrolled_K10": 10, "unrolled_K100": 100, "penalty_vpbgd": 200}
    exact_grad = jax.grad(phi)(lam0)
    phi0 = float(phi(lam0))
    rows = {}
    for name, method in methods.items():

        def run(lam0, method=method):
            return bilevel_minimize(
                outer, inner, lam0, x0, optimizer=optimizer, num_steps=outer_steps, method=method
            )

        jitted = jax.jit(run)
        out = jitted(lam0)
        median_s, min_s = median_time(jitted, lam0, repeats)
        memory = jitted.lower(lam0).compile().memory_analysis()
        temp = int(memory.temp_size_in_bytes) if memory is not None else None
        hg = jax.jit(
            lambda lam, method=method: hypergradient(outer, inner, lam, x0, method=method)
        )(lam0)
        grad_error = float(jnp.linalg.norm(hg.grad - exact_grad) / jnp.linalg.norm(exact_grad))
        inner_iters = int(jnp.sum(out.inner_steps))
        if name in per_outer_inner:  # gradient steps (V-PBGD: y steps plus x steps)
            inner_iters = per_outer_inner[name] * outer_steps
        final = float(phi(out.lam))
        rows[name] = dict(
            final_validation_loss=final,
            validation_loss_drop=phi0 - final,
            successful=bool(out.result == RESULTS.successful),
            hypergradient_rel_error_at_lam0=grad_error,
            time_median_s=median_s,
            time_min_s=min_s,
            inner_iterations=inner_iters,
            memory_temp_bytes=temp,
        )
        print(
            f"{name:15s} Phi {phi0:.4f} -> {final:.4f}  hypergrad err {grad_error:.2e}  "
            f"time {median_s * 1e3:8.1f} ms  inner iters {inner_iters:6d}  temp {temp} B"
        )

    # Memory of one hypergradient against the inner iteration count: the unrolled scan stores
    # every iterate for the backward pass; implicit differentiation stores none.
    def temp_bytes(method):
        fn = jax.jit(lambda lam: hypergradient(outer, inner, lam, x0, method=method).grad)
        analysis = fn.lower(lam0).compile().memory_analysis()
        return None if analysis is None else int(analysis.temp_size_in_bytes)

    memory_vs_k = {
        "implicit_newton": temp_bytes(methods["implicit"]),
        **{f"unrolled_K{k}": temp_bytes(UnrolledHypergradient(k, step)) for k in (10, 100, 1000)},
    }
    print("one hypergradient, compiled temp bytes:", memory_vs_k)
    base = rows["implicit"]
    for row in rows.values():
        row["time_ratio_vs_implicit"] = row["time_median_s"] / base["time_median_s"]
        row["inner_iterations_ratio_vs_implicit"] = (
            row["inner_iterations"] / base["inner_iterations"]
        )
        if row["memory_temp_bytes"] is not None and base["memory_temp_bytes"]:
            row["memory_ratio_vs_implicit"] = row["memory_temp_bytes"] / base["memory_temp_bytes"]

    results = dict(
        platform=platform.platform(),
        device=str(jax.devices()[0]),
        jax=jax.__version__,
        dtype="float64",
        problem=dict(n_train=60, n_val=200, features=d, informative=5, outer_steps=outer_steps),
        optimizer="adam(0.1)",
        initial_validation_loss=phi0,
        methods=rows,
        hypergradient_memory_temp_bytes=memory_vs_k,
        notes=(
            "inner_iterations: Newton steps (each several Hessian-vector products) for implicit; "
            "gradient steps for unrolled and penalty (V-PBGD: y steps + x steps). Times on a "
            "shared CPU; compare ratios within one run."
        ),
    )
    path = os.path.join(HERE, "results", "implicit.json")
    data = {}
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
    data["bilevel"] = results
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
    print(f"wrote the 'bilevel' key of {path}")


if __name__ == "__main__":
    main()
