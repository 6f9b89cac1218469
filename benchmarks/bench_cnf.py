"""Continuous normalising flows on the 2-D ring: test NLL and test-time NFE per regulariser.

Data: points on a noisy circle, :math:`r\\,(\\cos\\theta, \\sin\\theta) + \\sigma\\epsilon` with
:math:`\\theta \\sim U[0, 2\\pi)`, r = 1.5, sigma = 0.1 (a fresh training batch each step, a fixed
held-out test set). Model: a CNF (FFJORD) with an :class:`~jaxsolve.ode.MLPField` (time
dependent, width 32, depth 2, tanh) on t in [0, 1], exact trace (2-D), base N(0, I), Tsit5 with a
PID controller (rtol = atol = 1e-4 while training), backpropagation through the solver.

Variants, trained side by side from the same initial weights and the same batches (the
regulariser and its weight are the only difference; ``name:weight`` in ``--variants`` overrides a
weight). The default weights put each penalty within an order of magnitude at initialisation
(weight x penalty 2e-4..3e-3 against an NLL of 3.0); the local error term E(t_r)|h_r| is ~3500x
smaller than the global sum there (one probe step of the initial-step heuristic's size against a
whole solve), so its weight is larger (at weight 0.1 it changed nothing):

* ``none``        — negative log-likelihood only;
* ``rnode``       — + lambda (kinetic + Jacobian Frobenius) ("How to Train Your Neural ODE");
* ``taynode``     — + lambda int |d^2 x/dt^2|^2 ("Learning Differential Equations that are Easy
  to Solve", K = 2);
* ``global``      — + lambda sum_n E_n |h_n| ("Opening the Blackbox", ERNODE);
* ``local``       — + lambda E(t_r)|h_r|, t_r ~ U[0, 1) ("Locally Regularized NDEs").

Each trained model is then solved *without* a regulariser on the test set at rtol = atol = 1e-5:
test NLL (nats per sample, mean over the test set) and mean NFE per sample of that adaptive
solve; ratios against ``none``. Writes the top-level key ``"cnf"`` of
benchmarks/results/ode.json (read-modify-write: other keys are kept).

Run: ``python benchmarks/bench_cnf.py [--steps 300] [--quick]``.
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

from jaxsolve import RESULTS
from jaxsolve.ode import ExactDivergence, GlobalRegulariser, LocalRegulariser, MLPField
from jaxsolve.ode._cnf import CNF, RNODE, TayNODE

HERE = os.path.dirname(os.path.abspath(__file__))
RADIUS, NOISE = 1.5, 0.1

# (regulariser, weight, the CNFDensity fields that make the penalty)
VARIANTS = {
    "none": (None, 0.0, ()),
    "rnode": (RNODE(), 0.01, ("kinetic", "jacobian")),
    "taynode": (TayNODE(order=2), 0.01, ("taylor",)),
    "global": (GlobalRegulariser(), 0.1, ("error_estimate",)),
    "local": (LocalRegulariser("unbiased"), 1000.0, ("error_estimate",)),
}


def ring(key, n):
    k1, k2 = jax.random.split(key)
    theta = jax.random.uniform(k1, (n,), minval=0.0, maxval=2 * jnp.pi)
    points = RADIUS * jnp.stack([jnp.cos(theta), jnp.sin(theta)], -1)
    return points + NOISE * jax.random.normal(k2, (n, 2))


def make_cnf(key, rtol):
    field = MLPField(2, 32, 2, key=key, activation=jnp.tanh, time_dependent=True)
    controller = dfx.PIDController(rtol=rtol, atol=rtol)
    return CNF(field, 1.0, ExactDivergence(), stepsize_controller=controller, max_steps=1024)


def parse_variant(spec):
    """``name`` or ``name:weight`` -> (regulariser, weight, fields)."""
    name, _, weight = spec.partition(":")
    if name not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {sorted(VARIANTS)}.")
    regulariser, default, fields = VARIANTS[name]
    return regulariser, float(weight) if weight else default, fields


def train(variant, cnf, steps, batch, key, lr):
    regulariser, weight, fields = parse_variant(variant)
    optim = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))
    opt_state = optim.init(eqx.filter(cnf, eqx.is_inexact_array))

    def loss_fn(cnf, x, key):
        out = cnf.log_prob(x, regulariser=regulariser, key=key)
        nll = -jnp.mean(out.log_prob)
        penalty = sum((jnp.mean(getattr(out, f)) for f in fields), jnp.zeros(()))
        return nll + weight * penalty, (nll, jnp.mean(out.nfe))

    @eqx.filter_jit
    def step(cnf, opt_state, key):
        kx, kr = jax.random.split(key)
        x = ring(kx, batch)
        (_, (nll, nfe)), grads = eqx.filter_value_and_grad(loss_fn, has_aux=True)(cnf, x, kr)
        updates, opt_state = optim.update(grads, opt_state, eqx.filter(cnf, eqx.is_inexact_array))
        return eqx.apply_updates(cnf, updates), opt_state, nll, nfe

    start = time.perf_counter()
    for i in range(steps):
        # The same batches for every variant (the key depends on the step only).
        cnf, opt_state, nll, nfe = step(cnf, opt_state, jax.random.fold_in(key, i))
        if i % max(1, steps // 5) == 0 or i == steps - 1:
            print(f"  [{variant}] step {i:4d}  train NLL {float(nll):.3f}  NFE {float(nfe):.0f}")
    return cnf, time.perf_counter() - start


def evaluate(cnf, x_test, rtol):
    controller = dfx.PIDController(rtol=rtol, atol=rtol)
    cnf = CNF(
        cnf.vector_field,
        cnf.t1,
        cnf.divergence,
        stepsize_controller=controller,
        max_steps=4096,
        throw=False,
    )
    out = eqx.filter_jit(lambda c, x: c.log_prob(x))(cnf, x_test)
    ok = out.result == RESULTS.successful
    return {
        "test_nll": float(-jnp.mean(out.log_prob)),
        "test_nfe_mean": float(jnp.mean(out.nfe)),
        "test_nfe_max": int(jnp.max(out.nfe)),
        "failed_solves": int(jnp.sum(~ok)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join([*VARIANTS, "local:100000"]))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a few steps, to check the script")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "ode.json"))
    args = parser.parse_args(argv)
    steps = 5 if args.quick else args.steps
    key = jax.random.PRNGKey(args.seed)
    k_init, k_data, k_test = jax.random.split(key, 3)
    x_test = ring(k_test, 64 if args.quick else args.n_test)
    train_rtol, test_rtol = 1e-4, 1e-5

    rows = {}
    for variant in args.variants.split(","):
        cnf = make_cnf(k_init, train_rtol)
        trained, wall = train(variant, cnf, steps, args.batch, k_data, args.lr)
        row = evaluate(trained, x_test, test_rtol)
        row["weight"] = parse_variant(variant)[1]
        row["train_wall_s"] = round(wall, 1)
        rows[variant] = row
    base = rows.get("none")
    if base is not None:
        for row in rows.values():
            row["nfe_ratio"] = row["test_nfe_mean"] / base["test_nfe_mean"]
            row["nll_change"] = row["test_nll"] - base["test_nll"]

    print("\nvariant   weight  test NLL  (vs none)  test NFE  (ratio)  max NFE  train s")
    for variant, row in rows.items():
        print(
            f"{variant:8s} {row['weight']:6.3g}  {row['test_nll']:8.3f}  "
            f"{row.get('nll_change', float('nan')):+9.3f}  {row['test_nfe_mean']:8.1f}  "
            f"{row.get('nfe_ratio', float('nan')):7.3f}  {row['test_nfe_max']:7d}  "
            f"{row['train_wall_s']:7.1f}"
        )
    record = {
        "description": __doc__.split("\n\n")[1].replace("\n", " "),
        "data": {"radius": RADIUS, "noise": NOISE, "n_test": int(x_test.shape[0])},
        "training": {
            "steps": steps,
            "batch": args.batch,
            "optimizer": f"clip_by_global_norm(1) + adam({args.lr})",
            "rtol_atol": train_rtol,
        },
        "test_rtol_atol": test_rtol,
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} ({jax.devices()[0].platform})",
        "seed": args.seed,
        "variants": rows,
    }
    if not args.quick:
        results = {}
        if os.path.exists(args.out):
            with open(args.out) as f:
                results = json.load(f)
        results["cnf"] = record
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
        print(f"wrote key 'cnf' of {args.out}")
    return record


if __name__ == "__main__":
    main()
