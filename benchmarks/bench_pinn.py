"""Physics-informed networks on the benchmark problems of issue 19, and DeepXDE side by side.

(a) Burgers, u_t + u u_x = (0.01/pi) u_xx on [-1, 1] x [0, 1], u0 = -sin(pi x), u(+-1) = 0:
    hard initial/boundary ansatz, Adam then Gauss-Newton on Latin-hypercube points, then
    Gauss-Newton with RAR-D moving points into the shock; relative L2 error against the Cole-Hopf
    solution (tests/pinn/exact.py) on x = linspace(-1, 1, 256), t = linspace(0, 0.99, 100).
    The prediction on that grid goes to results/pinn_burgers_prediction.npz.
(b) Convection u_t + beta u_x = 0, periodic on [0, 2 pi], u0 = sin x, beta = 30 and 50: a plain
    PINN on fixed uniform points, the same with R3 sampling (causal gate, the R3 paper's own
    recipe: initial and boundary weights 100, a decaying Adam step, 300000 steps), with causal
    weighting (a longer Adam phase), and a Lagrangian PINN (characteristic coordinates), all
    against sin(x - beta t) on
    x = linspace(0, 2 pi, 256, endpoint=False), t = linspace(0, 1, 100). The R3 prediction at
    beta = 30 goes to results/pinn_convection_prediction.npz.
(c) Allen-Cahn, u_t = 1e-4 u_xx - 5 u^3 + 5 u, u0 = x^2 cos(pi x), periodic on [-1, 1]: relative
    L2 against an ETDRK4 reference from jaxsolve.pde (tests/pinn/exact.py).
(d) A physics-only FNO on Burgers nu = 0.1 beside the same FNO trained on data
    (benchmarks/_physics_fno.py).
(e) DeepXDE (PyTorch backend, benchmarks/_deepxde_burgers.py) on Burgers with DeepXDE's own
    example set-up, and jaxsolve with the same network, points, loss and optimiser, in this one
    process, taking turns a chunk of 100 Adam iterations each: time per Adam iteration (the
    median over rounds of jaxsolve's over DeepXDE's, so a slow phase of a shared machine hits
    both sides of a ratio) and the error after the same number of iterations. Skipped with a message without deepxde and torch (the bench extra).
    Beside it, taking turns the same way, jaxsolve against itself with the network behind a
    plain function (its jets from nested JVPs mapped over points instead of the network's own
    rule, ``pinn.directional_jets``).

Writes benchmarks/results/pinn.json. ``--quick`` shrinks everything (a smoke run; its numbers
are not the ones the README quotes); ``--only a,b`` runs some parts (each part rewrites its own
entry of the JSON, so parts may run in separate processes). ``--out PATH`` writes (merges into)
another JSON file instead, e.g. for a run on a lent GPU whose rows are merged by hand;
``--label TEXT`` is stored in every row written, to name the machine behind it.

Run: ``python benchmarks/bench_pinn.py [--quick] [--only burgers,convection_beta30,...]
[--out PATH] [--label TEXT]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.pinn.exact
sys.path.insert(0, str(HERE))

from jaxsolve import pinn  # noqa: E402
from tests.pinn.exact import allen_cahn_reference, burgers_cole_hopf  # noqa: E402

RESULTS = HERE / "results"


def _grid(t, x):
    T, X = np.meshgrid(t, x, indexing="ij")
    return np.stack([T.ravel(), X.ravel()], 1)


def _predict(model, t, x):
    u = jax.jit(jax.vmap(model))(jnp.asarray(_grid(t, x)))
    return np.asarray(u, np.float64).reshape(len(t), len(x))


def _relative_l2(u, exact):
    return float(np.linalg.norm(u - exact) / np.linalg.norm(exact))


def _train(
    problem, model, points, phases, *, eval_points=None, exact=None, causal=None, weights=None
):
    """Train, timing the run (compilation included)."""
    eval_fn = None
    if eval_points is not None:
        P, U = jnp.asarray(eval_points), jnp.asarray(exact.ravel())
        eval_fn = eqx.filter_jit(lambda m: {"error": pinn.relative_l2(m, P, U)})
    start = time.perf_counter()
    result = pinn.train(
        problem,
        model,
        points,
        key=jax.random.key(1),
        phases=phases,
        causal=causal,
        weights=weights,
        eval_fn=eval_fn,
        steps_per_call=50,
        progress=False,
    )
    seconds = time.perf_counter() - start
    return result, seconds


# --------------------------------------------------------------------------------------------
# (a) Burgers.

BURGERS_X = np.linspace(-1.0, 1.0, 256)
BURGERS_T = np.linspace(0.0, 0.99, 100)


def burgers(quick: bool, save: bool = True) -> dict:
    cfg = dict(width=20, depth=6, points=2500, adam=2000, gauss_newton=300, rard=150)
    cfg.update(rard_every=25, rard_new=500)
    if quick:
        cfg.update(points=500, adam=200, gauss_newton=20, rard=20, rard_every=10, rard_new=100)
    with jax.enable_x64(True):
        exact = burgers_cole_hopf(*np.meshgrid(BURGERS_T, BURGERS_X, indexing="ij"))
        problem = pinn.PINNProblem((pinn.burgers().terms[0],))
        net = pinn.MLP(2, "scalar", cfg["width"], cfg["depth"], key=jax.random.key(0))
        # u = -sin(pi x) + t (1 - x^2) N(t, x): the initial and boundary values hold exactly.
        model = pinn.HardDirichlet(
            net, lambda p: -jnp.sin(jnp.pi * p[1]), lambda p: p[0] * (1 - p[1] ** 2)
        )
        domain = pinn.Box([0.0, -1.0], [1.0, 1.0])
        # Latin-hypercube points, frozen while Adam and Gauss-Newton converge away from the shock
        # (the error there falls to ~1e-6, the shock keeps it at ~1e-2: it is thinner than the
        # point spacing); then fixed-size RAR-D moves the rard_new points of smallest residual
        # every rard_every steps to where the residual is large, i.e. into the shock.
        rard = pinn.RARD(cfg["points"], n_new=cfg["rard_new"], k=1.0, c=0.0)
        start = pinn.latin_hypercube(jax.random.key(3), domain, cfg["points"])
        points = {"pde": pinn.Collocation(domain, rard, every=cfg["rard_every"], points=start)}
        phases = [
            pinn.Phase(optax.adam(1e-3), cfg["adam"], resample=False),
            pinn.Phase(pinn.GaussNewton(), cfg["gauss_newton"], resample=False),
            pinn.Phase(pinn.GaussNewton(), cfg["rard"]),
        ]
        result, seconds = _train(
            problem, model, points, phases, eval_points=_grid(BURGERS_T, BURGERS_X), exact=exact
        )
        u = _predict(result.model, BURGERS_T, BURGERS_X)
    error = _relative_l2(u, exact)
    shock = np.abs(BURGERS_X) < 0.05
    if save and not quick:
        np.savez(RESULTS / "pinn_burgers_prediction.npz", x=BURGERS_X, t=BURGERS_T, u=u)
    return {
        "relative_l2": error,
        "relative_l2_away_from_shock": _relative_l2(u[:, ~shock], exact[:, ~shock])
        * np.linalg.norm(exact[:, ~shock])
        / np.linalg.norm(exact),
        "target": 1e-3,
        "iterations": {
            "adam": cfg["adam"],
            "gauss_newton": cfg["gauss_newton"] + cfg["rard"],
        },
        "wall_seconds": seconds,
        "config": cfg
        | {
            "dtype": "float64",
            "ansatz": "-sin(pi x) + t (1 - x^2) N(t, x)",
            "points": "Latin hypercube; RAR-D(k=1, c=0) in the last Gauss-Newton phase",
        },
        "error_history": result.history["error"].tolist(),
    }


# --------------------------------------------------------------------------------------------
# (b) Convection.

CONVECTION_X = np.linspace(0.0, 2 * np.pi, 256, endpoint=False)
CONVECTION_T = np.linspace(0.0, 1.0, 100)


CONVECTION_VARIANTS = ("plain", "r3", "causal", "lagrangian")


def _convection_run(beta, variant, cfg):
    exact = np.sin(CONVECTION_X[None, :] - beta * CONVECTION_T[:, None])
    problem = pinn.convection(beta)
    domain = pinn.Box([0.0, 0.0], [1.0, 2 * np.pi])
    n = cfg["points"]
    fixed = pinn.uniform(jax.random.key(7), domain, n)
    ic = jnp.stack([jnp.zeros(256), jnp.asarray(CONVECTION_X)], 1)
    bc = jnp.stack([jnp.linspace(0.0, 1.0, 100), jnp.zeros(100)], 1)
    key = jax.random.key(0)
    causal, weights, lr = None, None, 1e-3
    # Adam (an adaptive sampler steps with it), then Gauss-Newton on the points it ended with.
    adam, gauss_newton = cfg["adam"], cfg["gauss_newton"]
    if variant == "lagrangian":
        # u(t, x) = N(t, x - beta t), periodic in x - beta t: the characteristics as inputs.
        problem, make_network = pinn.lagrangian_convection(beta)
        model = make_network(key=key, width=cfg["width"], depth=cfg["depth"])
        points = {"pde": fixed, "ic": ic}
    else:
        model = pinn.MLP(2, "scalar", cfg["width"], cfg["depth"], key=key)
        pde = fixed
        if variant == "r3":
            # The R3 paper's own recipe (its code's defaults and README commands): the gate's
            # settings, initial and boundary weights 100, Adam 1e-3 decayed by 0.9 every 5000
            # steps. With unit weights the network stays near u = 0, whose gated residual is
            # below the gate's brake (mean (g r)^2 < ln(1 / clip) / epsilon): the gate opened
            # at its largest rate whatever had been learned, and beta = 50 failed.
            r3 = pinn.R3(n, causal=True)
            pde = pinn.Collocation(domain, r3, every=cfg["r3_every"])
            adam, weights = cfg["r3_adam"], {"ic": cfg["r3_weight"], "bc": cfg["r3_weight"]}
            lr = optax.exponential_decay(1e-3, cfg["r3_decay_steps"], 0.9, staircase=True)
        elif variant == "causal":
            # The weights open chunk by chunk over a much longer Adam phase (at beta = 50,
            # 10000 and 30000 steps left Gauss-Newton only the early chunks to fit; Gauss-Newton
            # alone did not converge).
            causal = pinn.CausalWeighting(cfg["chunks"], eps=cfg["eps"])
            adam = cfg["causal_adam"]
        points = {"pde": pde, "ic": ic, "bc": bc}
    phases = [pinn.Phase(pinn.GaussNewton(), gauss_newton, resample=False)]
    if adam:
        phases.insert(0, pinn.Phase(optax.adam(lr), adam))
    result, seconds = _train(
        problem,
        model,
        points,
        phases,
        eval_points=_grid(CONVECTION_T, CONVECTION_X),
        exact=exact,
        causal=causal,
        weights=weights,
    )
    u = _predict(result.model, CONVECTION_T, CONVECTION_X)
    row = {
        "relative_l2": _relative_l2(u, exact),
        "iterations": {"adam": adam, "gauss_newton": gauss_newton},
        "wall_seconds": seconds,
        "error_history": result.history["error"].tolist(),
    }
    if variant == "r3":
        row["gate_shift_history"] = result.history["shift/pde"].tolist()
    return u, row


def convection(
    quick: bool, beta: float, save: bool = True, variants: tuple = CONVECTION_VARIANTS
) -> dict:
    cfg = dict(width=50, depth=4, points=1000, adam=3000, gauss_newton=200, chunks=32, eps=1.0)
    cfg.update(r3_every=1, r3_adam=300000, r3_weight=100.0, r3_decay_steps=5000)
    cfg.update(causal_adam=60000)
    if quick:
        cfg.update(points=200, adam=20, gauss_newton=5, r3_adam=20, causal_adam=20)
    out = {
        "config": cfg
        | {
            "optimizer": "adam(1e-3), then GaussNewton(); R3: adam(1e-3 * 0.9^floor(k / "
            "r3_decay_steps)) with initial and boundary weights r3_weight, then GaussNewton()",
            "dtype": "float64",
        },
        "target": 5e-2,
    }
    for variant in variants:
        with jax.enable_x64(True):
            u, row = _convection_run(beta, variant, cfg)
        out[variant] = row
        print(f"  convection beta={beta:g} {variant}: {row['relative_l2']:.3e}", flush=True)
        if save and beta == 30.0 and variant == "r3" and not quick:
            np.savez(
                RESULTS / "pinn_convection_prediction.npz", x=CONVECTION_X, t=CONVECTION_T, u=u
            )
    return out


# --------------------------------------------------------------------------------------------
# (c) Allen-Cahn.


def allen_cahn(quick: bool) -> dict:
    cfg = dict(width=32, depth=4, points=2000, adam=1000, gauss_newton=200, harmonics=1)
    if quick:
        cfg.update(points=300, adam=100, gauss_newton=10)
    t = np.linspace(0.0, 1.0, 101)
    x = np.linspace(-1.0, 1.0, 256, endpoint=False)
    with jax.enable_x64(True):
        start = time.perf_counter()
        exact = allen_cahn_reference(t, x)
        reference_seconds = time.perf_counter() - start
        problem = pinn.PINNProblem((pinn.allen_cahn().terms[0],))
        embedding = pinn.PeriodicEmbedding((None, 2.0), cfg["harmonics"])
        net = pinn.MLP(
            2, "scalar", cfg["width"], cfg["depth"], key=jax.random.key(0), embedding=embedding
        )
        model = pinn.HardInitial(net, lambda s: s[0] ** 2 * jnp.cos(jnp.pi * s[0]))
        domain = pinn.Box([0.0, -1.0], [1.0, 1.0])
        points = {"pde": pinn.latin_hypercube(jax.random.key(3), domain, cfg["points"])}
        phases = [
            pinn.Phase(optax.adam(1e-3), cfg["adam"]),
            pinn.Phase(pinn.GaussNewton(), cfg["gauss_newton"]),
        ]
        result, seconds = _train(
            problem, model, points, phases, eval_points=_grid(t, x), exact=exact
        )
        u = _predict(result.model, t, x)
    return {
        "relative_l2": _relative_l2(u, exact),
        "target": 1e-2,
        "iterations": {"adam": cfg["adam"], "gauss_newton": cfg["gauss_newton"]},
        "wall_seconds": seconds,
        "reference_seconds": reference_seconds,
        "config": cfg | {"dtype": "float64"},
        "error_history": result.history["error"].tolist(),
    }


# --------------------------------------------------------------------------------------------
# (d) Physics-only FNO.


def physics_fno(quick: bool) -> dict:
    import _physics_fno

    return _physics_fno.run(quick=quick)


# --------------------------------------------------------------------------------------------
# (e) DeepXDE side by side.


def deepxde(quick: bool) -> dict:
    try:
        import _deepxde_burgers as dxde

        # One torch thread: on a shared 2-core machine two threads slow PyTorch by an order of
        # magnitude (the JSON records the load); JAX runs its default.
        reference = dxde.BurgersTrainer(seed=0, num_threads=1)
    except ImportError as err:
        return {"skipped": str(err)}
    points = reference.points
    num_adam, chunk = (200, 50) if quick else (2000, 100)
    # jaxsolve: the same problem, points, network width/depth, loss and optimiser, float32.
    problem = pinn.burgers()
    pde_points = np.concatenate([points[k] for k in ("domain", "boundary", "initial")])
    pts = {
        "pde": jnp.asarray(pde_points, jnp.float32),
        "ic": jnp.asarray(points["initial"], jnp.float32),
        "bc": jnp.asarray(points["boundary"], jnp.float32),
    }
    model = pinn.MLP(2, "scalar", 20, 3, key=jax.random.key(0), dtype=jnp.float32)
    exact = burgers_cole_hopf(*np.meshgrid(BURGERS_T, BURGERS_X, indexing="ij"))
    # The two sides take turns, a chunk each (DeepXDE's runs while jaxsolve's loop waits in its
    # eval_fn), so both see the same phases of a shared machine; each round's ratio is
    # jaxsolve's time per iteration over DeepXDE's in that round.
    jax_rounds, dx_rounds = _interleaved_adam(
        problem, model, pts, num_adam, chunk, lambda: reference.train(chunk)
    )
    result = jax_rounds.pop("result")
    jax_error = _relative_l2(_predict(result.model, BURGERS_T, BURGERS_X), exact)
    ref = reference.result()
    ratios = np.asarray(jax_rounds["wall"]) / np.asarray([w for w, _ in dx_rounds])
    cpu_ratios = np.asarray(jax_rounds["cpu"]) / np.asarray([c for _, c in dx_rounds])
    jax_per_iteration = float(np.mean(jax_rounds["wall"]))
    jax_cpu = float(np.mean(jax_rounds["cpu"]))
    # The same jaxsolve loop with the network behind a plain function: the residuals get its
    # jets from nested JVPs mapped over the points, not from the network's own rule.
    rule_rounds, plain_rounds = _interleaved_adam(
        problem, model, pts, num_adam, chunk, _plain_network_chunks(problem, model, pts, chunk)
    )
    rule_rounds.pop("result")
    rule_over_plain = np.asarray(rule_rounds["wall"]) / np.asarray([w for w, _ in plain_rounds])
    return {
        "iterations": num_adam,
        "chunk": chunk,
        "interleaved": True,
        "jets_rule_over_nested_jvps": {
            "time_ratio": float(np.median(rule_over_plain)),
            "round_time_ratios": [float(r) for r in rule_over_plain],
            "nested_jvps_seconds_per_adam_iteration": float(np.mean([w for w, _ in plain_rounds])),
        },
        "jaxsolve": {
            "seconds_per_adam_iteration": jax_per_iteration,
            "cpu_seconds_per_adam_iteration": jax_cpu,
            "relative_l2": jax_error,
        },
        "deepxde": ref,
        "time_ratio_jaxsolve_over_deepxde": float(np.median(ratios)),
        "cpu_time_ratio_jaxsolve_over_deepxde": float(np.median(cpu_ratios)),
        "round_time_ratios": [float(r) for r in ratios],
        "round_seconds_per_iteration": {
            "jaxsolve": [float(w) for w in jax_rounds["wall"]],
            "deepxde": [float(w) for w, _ in dx_rounds],
        },
        "target_time_ratio": 0.3,
        # What JAX ran on: the cores this process may use and any XLA thread flags.
        "cores_available": len(os.sched_getaffinity(0)),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "config": dxde.CONFIG,
    }


class _PlainFunction(eqx.Module):
    """A network behind a plain function: no jets rule, so residuals map nested JVPs."""

    network: pinn.MLP

    def __call__(self, x):
        return self.network(x)


def _plain_network_chunks(problem, model, pts, chunk):
    """A function running ``chunk`` Adam steps of ``problem``'s loss on ``model`` behind a plain
    function (the loop of ``pinn.train``: loss, gradient, Adam, in one compiled scan),
    returning its wall and CPU seconds per step, as DeepXDE's trainer does."""
    optimizer = optax.adam(1e-3)
    params, static = eqx.partition(_PlainFunction(model), eqx.is_inexact_array)

    @jax.jit
    def steps(carry):
        def body(carry, _):
            p, opt_state = carry
            loss, grad = jax.value_and_grad(lambda q: problem.loss(eqx.combine(q, static), pts)[0])(
                p
            )
            updates, opt_state = optimizer.update(grad, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), loss

        return jax.lax.scan(body, carry, None, length=chunk)

    state = [(params, optimizer.init(params))]
    jax.block_until_ready(steps(state[0]))  # compile outside the timed rounds

    def run():
        wall, cpu = time.perf_counter(), time.process_time()
        state[0], losses = steps(state[0])
        jax.block_until_ready(losses)
        return (time.perf_counter() - wall) / chunk, (time.process_time() - cpu) / chunk

    return run


def _interleaved_adam(problem, model, pts, num_steps, chunk, other):
    """``num_steps`` Adam steps in chunks of ``chunk``, calling ``other()`` (the other library's
    chunk, returning its wall and CPU seconds per iteration) after each; returns this side's
    wall and CPU seconds per step per round and ``other``'s results, both without the first
    round (in which this side compiles), and the :func:`pinn.train` result."""
    marks, others = [], []

    def eval_fn(m):
        jax.block_until_ready(m)
        done = (time.perf_counter(), time.process_time())
        others.append(other())
        marks.append((done, (time.perf_counter(), time.process_time())))
        return {}

    result = pinn.train(
        problem,
        model,
        pts,
        key=jax.random.key(1),
        optimizer=optax.adam(1e-3),
        num_steps=num_steps,
        steps_per_call=chunk,
        eval_fn=eval_fn,
        progress=False,
    )
    # Round k >= 1: from the end of the other side's chunk k-1 to the end of this side's chunk k.
    wall = [(marks[k][0][0] - marks[k - 1][1][0]) / chunk for k in range(1, len(marks))]
    cpu = [(marks[k][0][1] - marks[k - 1][1][1]) / chunk for k in range(1, len(marks))]
    return {"wall": wall, "cpu": cpu, "result": result}, others[1:]


PARTS = {
    "burgers": burgers,
    "convection_beta30": lambda quick, **kw: convection(quick, 30.0, **kw),
    "convection_beta50": lambda quick, **kw: convection(quick, 50.0, **kw),
    "allen_cahn": allen_cahn,
    "physics_fno": physics_fno,
    "deepxde": deepxde,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(PARTS))
    parser.add_argument(
        "--variants",
        help="convection variants to rerun (comma-separated, from "
        f"{list(CONVECTION_VARIANTS)}); the others keep their recorded rows",
    )
    parser.add_argument(
        "--out", help="the JSON to write (merge into); default results/pinn[_quick].json"
    )
    parser.add_argument(
        "--label", help="stored in every row written as 'label' (e.g. the GPU the run used)"
    )
    args = parser.parse_args(argv)
    chosen = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in chosen if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose from {list(PARTS)}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / ("pinn_quick.json" if args.quick else "pinn.json")
    if args.out:
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
    machine = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "backend": jax.default_backend(),
    }
    for name in chosen:
        print(f"{name} ...", flush=True)
        start = time.perf_counter()
        merge = args.variants is not None and name.startswith("convection")
        if merge:
            variants = tuple(v.strip() for v in args.variants.split(",") if v.strip())
            if not set(variants) <= set(CONVECTION_VARIANTS):
                parser.error(f"unknown variants {variants}; choose from {CONVECTION_VARIANTS}")
            row = PARTS[name](args.quick, variants=variants)
        else:
            row = PARTS[name](args.quick)
        row["part_seconds"] = time.perf_counter() - start
        row["load_average_after"] = os.getloadavg()
        if args.label:
            row["label"] = args.label
        print(json.dumps(row, default=float)[:600], flush=True)
        # Read again before writing: parts may run in separate processes at once.
        results = json.loads(path.read_text()) if path.exists() else {}
        results["machine"] = machine
        results[name] = (results.get(name, {}) | row) if merge else row
        path.write_text(json.dumps(results, indent=2, default=float))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
