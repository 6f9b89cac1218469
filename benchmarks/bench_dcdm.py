"""Deep conjugate directions (DCDM) against CG and Jacobi-preconditioned CG on Poisson and Darcy
systems.

"A Deep Conjugate Direction Method for Iteratively Solving Linear Systems" (Kaneda et al.,
ICML 2023). Problems: the five-point operator of :func:`jaxsolve.pde.darcy_operator` on the
interior of an ``s x s`` node grid (32 x 32 unknowns by default): Poisson (``a = 1``) and Darcy
with the FNO paper's two-phase coefficient (``a = 12`` where a Neumann Gaussian random field is
non-negative, 3 elsewhere).

Training (float32, CPU, a few minutes): a :class:`DirectionNet` (a small convolutional U-Net,
a pure function of the residual) minimises :func:`dcdm_loss`, the energy left after one step,
on residuals drawn as the paper does, from the eigenvectors of the training matrices with
low frequencies weighted up: :math:`r = \\sum_j c_j (\\lambda_1/\\lambda_j)^p q_j`,
:math:`c_j \\sim N(0, 1)`, :math:`p \\sim U[0, 1]` per sample (so :math:`A^{-1} r` is exact from
the same eigendecomposition: no solve in the loop). Training systems: the Poisson matrix and a
few Darcy fields; evaluation: held-out Darcy fields (other seeds), and the Poisson matrix with
held-out right-hand sides, plus the Poisson matrix on a grid twice as fine (the network is
convolutional, so it runs on any grid; it never saw that size).

Evaluation in float64 (the network's weights cast), so relative residuals down to 1e-8 are
measurable: steps (one matrix-vector product each) to reach ``||b - A x|| <= tol ||b||`` for
tol = 1e-4 and 1e-8, from the residual histories of each method's own ``step`` (the library's
CG, CG with the Jacobi preconditioner ``v / diag(A)`` and DCDM with the trained network and
with an untrained one), plus the ``num_steps`` and verdict of ``linear_solve`` with DCDM and CG
at 1e-8, and the wall time of those jitted solves (a network evaluation costs far more than a
five-point product, so fewer steps need not mean less time).

Run: ``python benchmarks/bench_dcdm.py [--quick]``; writes the top-level key ``"dcdm"`` of
benchmarks/results/implicit.json (read-modify-write: the other keys are kept).
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

from jaxsolve import RESULTS
from jaxsolve import implicit as ji
from jaxsolve.implicit import DCDM, DirectionNet, dcdm_loss
from jaxsolve.pde import GaussianRandomField, darcy_operator

HERE = os.path.dirname(os.path.abspath(__file__))
TOLS = (1e-4, 1e-8)


def darcy_field(seed, s):
    """The FNO two-phase coefficient on the ``s x s`` node grid."""
    grf = GaussianRandomField(alpha=2.0, tau=3.0, scale=1.0, boundary="neumann", zero_mean=True)
    g = grf.sample(jax.random.key(seed), (s, s))
    return jnp.where(g >= 0, 12.0, 3.0)


class Jacobi(eqx.Module):
    """The Jacobi preconditioner ``v -> v / diag(A)`` (a module, so ``diag`` is a leaf)."""

    diag: jax.Array

    def __call__(self, v):
        return v / self.diag


def flat_operator(a):
    s = a.shape[0]
    mv = darcy_operator(a)
    return lambda v: mv(v.reshape(s - 2, s - 2)).reshape(-1)


def dense(a):
    n = (a.shape[0] - 2) ** 2
    return jax.vmap(flat_operator(a))(jnp.eye(n, dtype=a.dtype)).T


def train(fields, steps, batch, seed, width, levels):
    """Train a DirectionNet on the systems of ``fields`` (float32)."""
    s = fields.shape[-1]
    grid = (s - 2, s - 2)
    eig = [np.linalg.eigh(np.asarray(dense(a), np.float64)) for a in fields]
    lam = jnp.asarray(np.stack([e[0] for e in eig]), jnp.float32)
    vecs = jnp.asarray(np.stack([e[1] for e in eig]), jnp.float32)
    net = DirectionNet(grid, width=width, levels=levels, key=jax.random.key(seed))
    schedule = optax.cosine_decay_schedule(1e-3, steps, alpha=0.05)
    opt = optax.adam(schedule)
    state = opt.init(eqx.filter(net, eqx.is_inexact_array))

    def sample(key):
        k1, k2, k3 = jax.random.split(key, 3)
        i = jax.random.randint(k1, (), 0, fields.shape[0])
        p = jax.random.uniform(k2)
        c = jax.random.normal(k3, lam.shape[1:]) * (lam[i, 0] / lam[i]) ** p
        r = vecs[i] @ c
        e = vecs[i] @ (c / lam[i])
        return i, r / jnp.linalg.norm(r), e / jnp.linalg.norm(r)

    def loss_fn(net, key):
        i, r, e = jax.vmap(sample)(jax.random.split(key, batch))
        one = lambda i, r, e: dcdm_loss(net, flat_operator(fields[i]), r, e)
        return jnp.mean(jax.vmap(one)(i, r, e))

    @eqx.filter_jit
    def update(net, state, key):
        loss, grads = eqx.filter_value_and_grad(loss_fn)(net, key)
        updates, state = opt.update(grads, state)
        return eqx.apply_updates(net, updates), state, loss

    key = jax.random.key(seed + 1)
    losses = []
    t0 = time.perf_counter()
    for k in range(steps):
        net, state, loss = update(net, state, jax.random.fold_in(key, k))
        losses.append(float(loss))
        if k % max(steps // 10, 1) == 0 or k == steps - 1:
            print(f"  step {k:5d}  loss {np.mean(losses[-50:]):.4f}", flush=True)
    return net, losses, time.perf_counter() - t0


def histories(solvers, matvec, b, steps):
    """Relative residual norms ``||r_k|| / ||b||`` of each method's own steps, ``k = 0..steps``
    (the recurrence residual, which in float64 stays at the true one to rounding)."""
    out = {}
    for name, solver in solvers.items():

        def run(b, solver=solver):
            state = solver.restart(jnp.zeros_like(b), b)

            def body(state, _):
                state = solver.step(matvec, b, 0.0, state, False)
                return state, jnp.linalg.norm(state["r"])

            _, norms = jax.lax.scan(body, state, None, length=steps)
            return jnp.concatenate([jnp.linalg.norm(b)[None], norms]) / jnp.linalg.norm(b)

        out[name] = np.asarray(eqx.filter_jit(run)(b))
    return out


def steps_to(history, tol):
    hit = np.nonzero(history <= tol)[0]
    return int(hit[0]) if hit.size else None


def timed_solve(solver, matvec, b, repeats):
    fn = eqx.filter_jit(
        lambda solver, b: ji.linear_solve(
            matvec, b, solver=solver, rtol=1e-8, atol=1e-30, max_steps=4000, throw=False
        )
    )
    sol = fn(solver, b)
    jax.block_until_ready(sol)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(solver, b))
        times.append(time.perf_counter() - t)
    return sol, float(np.median(times))


def evaluate(name, a, b, solvers, max_hist, repeats):
    matvec = flat_operator(a)
    hist = histories(solvers, matvec, b, max_hist)
    row = {"steps_to_tol": {}}
    for m, h in hist.items():
        row["steps_to_tol"][m] = {f"{tol:g}": steps_to(h, tol) for tol in TOLS}
    for m in ("cg", "dcdm_trained"):
        sol, t = timed_solve(solvers[m], matvec, b, repeats)
        row[f"linear_solve_{m}"] = {
            "successful": bool(sol.result == RESULTS.successful),
            "num_steps": int(sol.num_steps),
            "relative_residual": float(sol.residual / jnp.linalg.norm(b)),
            "median_time_s": t,
        }
    counts = row["steps_to_tol"]
    print(f"{name}:")
    for m, c in counts.items():
        print(f"  {m:16s} " + "  ".join(f"tol {k}: {v}" for k, v in c.items()))
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short training, fewer systems")
    parser.add_argument("--s", type=int, default=34, help="node grid (unknowns: (s - 2)^2)")
    parser.add_argument("--steps", type=int, default=None, help="training steps")
    args = parser.parse_args()
    steps = args.steps or (150 if args.quick else 600)
    s = args.s
    width, levels, batch = 16, 3, 16

    train_fields = jnp.stack([jnp.ones((s, s))] + [darcy_field(k, s) for k in range(5)])
    print(f"training DirectionNet on {train_fields.shape[0]} systems, {steps} steps")
    net, losses, train_s = train(train_fields, steps, batch, 0, width, levels)

    jax.config.update("jax_enable_x64", True)
    to64 = lambda m: jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, m
    )
    untrained = DirectionNet((s - 2, s - 2), width=width, levels=levels, key=jax.random.key(0))

    def solvers_for(a):
        diag = jnp.diag(dense(a))
        return {
            "cg": ji.CG(),
            "jacobi_cg": ji.CG(preconditioner=Jacobi(diag)),
            "dcdm_trained": DCDM(to64(net)),
            "dcdm_untrained": DCDM(to64(untrained)),
        }

    rng = np.random.default_rng(123)
    problems = {}
    n_held = 2 if args.quick else 4
    for k in range(n_held):
        a = darcy_field(1000 + k, s).astype(jnp.float64)
        b = jnp.asarray(rng.standard_normal((s - 2) ** 2))
        problems[f"darcy_heldout_{k}_random_rhs"] = (a, b)
    a = darcy_field(1000, s).astype(jnp.float64)
    problems["darcy_heldout_0_unit_rhs"] = (a, jnp.ones((s - 2) ** 2))
    poisson = jnp.ones((s, s), jnp.float64)
    problems["poisson_random_rhs"] = (poisson, jnp.asarray(rng.standard_normal((s - 2) ** 2)))
    problems["poisson_unit_rhs"] = (poisson, jnp.ones((s - 2) ** 2))

    repeats = 3 if args.quick else 5
    rows = {}
    for name, (a, b) in problems.items():
        rows[name] = evaluate(name, a, b, solvers_for(a), 1500, repeats)

    # The same trained network on a grid twice as fine (it never saw that size).
    s2 = 2 * (s - 2) + 2
    fine = jnp.ones((s2, s2), jnp.float64)
    net_fine = to64(net).on_grid((s2 - 2, s2 - 2))
    untrained_fine = to64(untrained).on_grid((s2 - 2, s2 - 2))
    b = jnp.asarray(rng.standard_normal((s2 - 2) ** 2))
    solvers = {
        "cg": ji.CG(),
        "jacobi_cg": ji.CG(preconditioner=Jacobi(jnp.full((s2 - 2) ** 2, 4.0 * (s2 - 1) ** 2))),
        "dcdm_trained": DCDM(net_fine),
        "dcdm_untrained": DCDM(untrained_fine),
    }
    rows["poisson_2x_finer_grid_random_rhs"] = evaluate(
        "poisson_2x_finer_grid_random_rhs", fine, b, solvers, 3000, repeats
    )

    def beats(row, tol):
        c = row["steps_to_tol"]
        d = c["dcdm_trained"][tol]
        return d is not None and all(
            c[m][tol] is None or d < c[m][tol] for m in ("cg", "jacobi_cg")
        )

    summary = {
        f"fewer_steps_than_cg_and_jacobi_cg_at_{tol}": {n: beats(r, tol) for n, r in rows.items()}
        for tol in ("0.0001", "1e-08")
    }
    result = {
        "platform": platform.platform(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "grid_unknowns": [s - 2, s - 2],
        "network": {"class": "DirectionNet", "width": width, "levels": levels},
        "training": {
            "systems": "poisson + 5 darcy (FNO two-phase, seeds 0-4)",
            "steps": steps,
            "batch": batch,
            "seconds": train_s,
            "loss_first_50": float(np.mean(losses[:50])),
            "loss_last_50": float(np.mean(losses[-50:])),
            "dtype": "float32",
        },
        "evaluation_dtype": "float64",
        "problems": rows,
        "summary": summary,
    }
    print(json.dumps(summary, indent=2))
    path = os.path.join(HERE, "results", "implicit.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = {}
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
    data["dcdm"] = result
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
    print(f"wrote the 'dcdm' key of {path}")


if __name__ == "__main__":
    main()
