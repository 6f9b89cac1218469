"""Causal R3 on convection over seeds: how reliable each recipe is, and a control without R3.

Recipes (declared before any run; ``benchmarks/README.md`` has the findings):

- ``unit``: the bench's earlier settings: the paper's gate, unit weights on the initial and
  boundary terms, Adam 1e-3 constant for 60000 steps.
- ``paper``: the R3 paper's own (its code's defaults and README commands): initial and boundary
  weights 100, Adam 1e-3 decayed by 0.9 every 5000 steps, 300000 steps.
- ``paper_plain``: the control: ``paper`` on 1000 fixed uniform points, no R3.

Each then takes 200 Gauss-Newton steps on the points it ended with, as ``bench_pinn.py`` does.
Seed ``s`` draws the network with ``key(s)`` and the samplers with ``key(1000 + s)``; the bench's
own run is a further seed (``key(0)``, ``key(1)``). Writes
``results/pinn_r3_seeds/<recipe>_beta<beta>_seed<s>.json`` (final error, the error after Adam,
the error and gate-shift histories). A run takes about half an hour (``paper``) on one CPU core.

Run: ``python benchmarks/study_r3_seeds.py RECIPE BETA SEED``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import bench_pinn as B
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxsolve import pinn

OUT = Path(__file__).resolve().parent / "results" / "pinn_r3_seeds"
RECIPES = ("unit", "paper", "paper_plain")
ADAM_STEPS = {"unit": 60000, "paper": 300000, "paper_plain": 300000}
GAUSS_NEWTON_STEPS = 200


def run(recipe: str, beta: float, seed: int) -> dict:
    exact = np.sin(B.CONVECTION_X[None, :] - beta * B.CONVECTION_T[:, None])
    problem = pinn.convection(beta)
    domain = pinn.Box([0.0, 0.0], [1.0, 2 * np.pi])
    ic = jnp.stack([jnp.zeros(256), jnp.asarray(B.CONVECTION_X)], 1)
    bc = jnp.stack([jnp.linspace(0.0, 1.0, 100), jnp.zeros(100)], 1)
    model = pinn.MLP(2, "scalar", 50, 4, key=jax.random.key(seed))
    pde = pinn.Collocation(domain, pinn.R3(1000, causal=True), every=1)
    if recipe == "paper_plain":
        pde = pinn.uniform(jax.random.key(7), domain, 1000)
    adam = ADAM_STEPS[recipe]
    if recipe == "unit":
        weights, lr = None, 1e-3
    else:
        weights = {"ic": 100.0, "bc": 100.0}
        lr = optax.exponential_decay(1e-3, 5000, 0.9, staircase=True)
    phases = [
        pinn.Phase(optax.adam(lr), adam),
        pinn.Phase(pinn.GaussNewton(), GAUSS_NEWTON_STEPS, resample=False),
    ]
    grid = jnp.asarray(B._grid(B.CONVECTION_T, B.CONVECTION_X))
    target = jnp.asarray(exact.ravel())
    start = time.perf_counter()
    result = pinn.train(
        problem,
        model,
        {"pde": pde, "ic": ic, "bc": bc},
        key=jax.random.key(1000 + seed),
        phases=phases,
        weights=weights,
        steps_per_call=50,
        progress=False,
        eval_fn=eqx.filter_jit(lambda m: {"error": pinn.relative_l2(m, grid, target)}),
    )
    seconds = time.perf_counter() - start
    error = B._relative_l2(B._predict(result.model, B.CONVECTION_T, B.CONVECTION_X), exact)
    h = result.history
    return {
        "recipe": recipe,
        "beta": beta,
        "seed": seed,
        "relative_l2": error,
        "relative_l2_after_adam": float(h["error"][adam // 50 - 1]),
        "seconds": seconds,
        "error_history": h["error"].tolist(),
        "gate_shift_history": h.get("shift/pde", np.zeros(0)).tolist(),
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] not in RECIPES:
        raise SystemExit(f"usage: study_r3_seeds.py {{{','.join(RECIPES)}}} BETA SEED")
    jax.config.update("jax_enable_x64", True)
    recipe, beta, seed = argv[0], float(argv[1]), int(argv[2])
    row = run(recipe, beta, seed)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{recipe}_beta{beta:g}_seed{seed}.json"
    path.write_text(json.dumps(row))
    print(
        recipe, beta, seed, "error", row["relative_l2"], "after Adam", row["relative_l2_after_adam"]
    )


if __name__ == "__main__":
    main()
