"""Implicit layers: jaxsolve.implicit against optimistix and jaxopt, and against backprop through
the unrolled iterations.

Problem (float32): the equilibrium z = tanh(W z + x) of a weight-tied layer with W symmetric,
||W||_2 = 0.9, and small inputs (|x| ~ 0.1), so the contraction rate is close to 0.9 and the
iteration count is large enough to matter. Two sizes: one state of n = 512, and a batch of 64
states of n = 64 solved under ``jax.vmap`` (each member stops on its own). Loss for the backward:
L = sum(z**2), gradient with respect to (W, x).

Forward, at equal tolerance (rtol = atol = 1e-5, max-norm of the scaled residual, as optimistix
tests it): jaxsolve Picard / Anderson / Broyden, optimistix ``fixed_point`` with
``FixedPointIteration``, jaxopt ``FixedPointIteration`` and ``AndersonAcceleration`` (jaxopt tests
the 2-norm of the residual against ``tol``; it is given tol = 1e-5 and its final max-norm
residual is reported next to everyone else's). Wall time is the median of repeated calls of the
jitted solve, all methods interleaved in one process.

Backward: the jitted forward returns ``jax.vjp``'s pullback (with whatever it stores); the
backward time is the median wall time of the jitted pullback alone, so it counts exactly the
backward pass. Rows: jaxsolve ``ImplicitDiff`` (the default, BiCGStab; GMRES(10), GMRES(20), GMRES(8) and
GMRES(5);
fixed-point iteration / Anderson on the adjoint), optimistix ``ImplicitAdjoint`` (its default
lineax solver materialises the Jacobian), jaxopt's implicit differentiation, and backprop through
``lax.scan`` over as many Picard steps as the forward took ("unrolled"). The value-and-gradient
time is reported as well. Gradients are compared with the unrolled one. Besides the median, the
minimum over the repeats is recorded (``*_min_s``): on a shared machine it is the least disturbed
figure; the targets are judged on the medians.

Memory: ``jax.jit(grad).lower(...).compile().memory_analysis()`` temp bytes of the gradient for
K = 16 ... 1024 iterations (a tolerance too small to reach, so K steps run): implicit
differentiation keeps nothing per iteration; the unrolled scan stores every iterate.

Targets (issue 6): backward <= 0.5x the unrolled backward; implicit memory flat in K; forward no
slower than optimistix at equal tolerance.

Interop (issue 24, key ``optimistix_interop``): the same problems, backward through a fixed point
with BiCGStab on the adjoint system four ways, side by side (in float64, see below): jaxsolve ``ImplicitDiff(BiCGStab)``
(the baseline of the ratios), jaxsolve ``ImplicitDiff(lx.BiCGStab)`` (lineax's BiCGStab in our
backward), optimistix ``FixedPointIteration`` with ``ImplicitAdjoint(linear_solver=
lx.BiCGStab(...))``, and jaxsolve's Picard run inside optimistix (``as_optimistix``) with that
adjoint. All at rtol = atol = 1e-5 (forward and backward); each BiCGStab tests its own norm
(ours the 2-norm of the residual, lineax's a scaled max-norm). Gradients are compared with the
baseline's. Why float64: lineax 0.1.1's BiCGStab, outside x64, declares a breakdown when
``alpha``, ``omega`` or ``rho`` is below 1e-16 — signed, so any negative value — and on the
negative definite backward system :math:`J^\top - I` of a contractive fixed point ``alpha`` is
negative at the first step: in float32 lineax's BiCGStab stops after one step with
``RESULTS.breakdown`` on these problems (so ``ImplicitAdjoint(lx.BiCGStab)`` raises and our
``ImplicitDiff(lx.BiCGStab)`` reports the failure). With x64 it tests ``== 0`` and converges.

Run: ``python benchmarks/bench_implicit.py [--quick] [--only interop]``; writes
benchmarks/results/implicit.json by read-modify-write: a run sets only the top-level keys it
measured (``--only interop`` sets ``optimistix_interop`` alone) and keeps every other key
(other benchmarks write "deq_training", "bilevel", "dcdm" there).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxsolve import implicit as ji

HERE = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5

try:
    import optimistix as optx
except ImportError:  # optional reference
    optx = None
    print("optimistix not installed: skipping its rows (pip install optimistix)")
try:
    import jaxopt
except ImportError:  # optional reference
    jaxopt = None
    print("jaxopt not installed: skipping its rows (pip install jaxopt)")


def cell(z, args):
    w, x = args
    return jnp.tanh(w @ z + x)


def make_problem(n, batch, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n))
    s = a + a.T
    w = jnp.asarray(0.9 * s / np.linalg.norm(s, 2), jnp.float32)
    shape = (batch, n) if batch else (n,)
    x = jnp.asarray(0.1 * rng.standard_normal(shape), jnp.float32)
    return w, x


def residual(z, w, x):
    return float(jnp.max(jnp.abs(jnp.tanh(z @ w.T + x) - z)))  # z may be a batch of states


# ----------------------------------------------------------------------------------------------
# Solvers: each maps (w, x_single) -> (z, num_steps); batching is a vmap over x.


def jaxsolve_forward(solver, backward=None, max_steps=2000, tol=TOL):
    def solve(w, x):
        sol = ji.fixed_point(
            cell,
            jnp.zeros_like(x),
            (w, x),
            solver=solver,
            rtol=tol,
            atol=tol,
            max_steps=max_steps,
            backward=backward,
            throw=False,
        )
        return sol.value, sol.num_steps

    return solve


def optimistix_forward(max_steps=2000, tol=TOL):
    def solve(w, x):
        sol = optx.fixed_point(
            cell,
            optx.FixedPointIteration(rtol=tol, atol=tol),
            jnp.zeros_like(x),
            (w, x),
            max_steps=max_steps,
            adjoint=optx.ImplicitAdjoint(),
            throw=False,
        )
        return sol.value, sol.stats["num_steps"]

    return solve


def jaxopt_forward(kind, max_steps=2000, tol=TOL):
    fp = lambda z, w, x: jnp.tanh(w @ z + x)
    if kind == "anderson":
        solver = jaxopt.AndersonAcceleration(
            fp, history_size=5, tol=tol, maxiter=max_steps, implicit_diff=True
        )
    else:
        solver = jaxopt.FixedPointIteration(fp, tol=tol, maxiter=max_steps, implicit_diff=True)

    def solve(w, x):
        params, state = solver.run(jnp.zeros_like(x), w, x)
        return params, state.iter_num

    return solve


def unrolled_forward(steps):
    def solve(w, x):
        z = jax.lax.scan(lambda z, _: (cell(z, (w, x)), None), jnp.zeros_like(x), None, steps)[0]
        return z, jnp.asarray(steps)

    return solve


def batched(solve, batch):
    return jax.vmap(solve, in_axes=(None, 0)) if batch else solve


def loss_of(solve):
    def loss(w, x):
        z, _ = solve(w, x)
        return jnp.sum(z**2)

    return loss


def interleaved_times(calls, repeats):
    """``(median, minimum)`` wall time of each ``(fn, args)`` in ``calls``; the calls take turns,
    so a change in machine load during the run affects every method alike."""
    for fn, args in calls.values():
        jax.block_until_ready(fn(*args))  # compile and warm up
    times = {k: [] for k in calls}
    for _ in range(repeats):
        for k, (fn, args) in calls.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(*args))
            times[k].append(time.perf_counter() - t)
    return {k: (float(np.median(v)), float(np.min(v))) for k, v in times.items()}


def temp_bytes(fn, *args):
    analysis = jax.jit(fn).lower(*args).compile().memory_analysis()
    if analysis is None:
        return None
    return int(analysis.temp_size_in_bytes)


# ----------------------------------------------------------------------------------------------


def forward_methods():
    methods = {
        "jaxsolve Picard": jaxsolve_forward(ji.Picard()),
        "jaxsolve Anderson(5)": jaxsolve_forward(ji.Anderson(history=5)),
        "jaxsolve Broyden(20)": jaxsolve_forward(ji.Broyden(memory=20)),
    }
    if optx is not None:
        methods["optimistix FixedPointIteration"] = optimistix_forward()
    if jaxopt is not None:
        methods["jaxopt FixedPointIteration"] = jaxopt_forward("picard")
        methods["jaxopt AndersonAcceleration(5)"] = jaxopt_forward("anderson")
    return methods


DEFAULT_ROW = "jaxsolve Picard + ImplicitDiff() (default: BiCGStab)"


def backward_methods(picard_steps):
    methods = {
        DEFAULT_ROW: jaxsolve_forward(ji.Picard(), ji.ImplicitDiff()),
        "jaxsolve Picard + ImplicitDiff(GMRES(20))": jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(ji.GMRES(restart=20))
        ),
        "jaxsolve Picard + ImplicitDiff(GMRES(8))": jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(ji.GMRES(restart=8))
        ),
        "jaxsolve Picard + ImplicitDiff(GMRES(5))": jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(ji.GMRES(restart=5))
        ),
        "jaxsolve Picard + ImplicitDiff(GMRES(10))": jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(ji.GMRES(restart=10))
        ),
        "jaxsolve Picard + ImplicitDiff(Picard)": jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(ji.Picard())
        ),
        "jaxsolve Anderson + ImplicitDiff() (default: BiCGStab)": jaxsolve_forward(
            ji.Anderson(), ji.ImplicitDiff()
        ),
        "jaxsolve Anderson + ImplicitDiff(Anderson)": jaxsolve_forward(
            ji.Anderson(), ji.ImplicitDiff(ji.Anderson())
        ),
    }
    if optx is not None:
        methods["optimistix FixedPointIteration + ImplicitAdjoint"] = optimistix_forward()
    if jaxopt is not None:
        methods["jaxopt AndersonAcceleration + implicit_diff"] = jaxopt_forward("anderson")
    methods["unrolled (backprop through Picard steps)"] = unrolled_forward(picard_steps)
    return methods


def run_problem(name, n, batch, repeats):
    w, x = make_problem(n, batch)
    print(f"\n== {name}: n={n}, batch={batch or 1}, float32, rtol=atol={TOL} ==")
    out = {"n": n, "batch": batch or 1, "forward": {}, "backward": {}}

    # Forward.
    fwd = {k: jax.jit(batched(v, batch)) for k, v in forward_methods().items()}
    fwd_times = interleaved_times({k: (f, (w, x)) for k, f in fwd.items()}, repeats)
    for k, f in fwd.items():
        z, steps = f(w, x)
        out["forward"][k] = {
            "time_s": fwd_times[k][0],
            "time_min_s": fwd_times[k][1],
            "iterations_max": int(jnp.max(steps)),
            "iterations_mean": float(jnp.mean(steps)),
            "residual_max": residual(z, w, x),
        }
    base = out["forward"].get("optimistix FixedPointIteration")
    print(
        f"{'forward':48s} {'time [ms]':>10s} {'iters':>7s} {'residual':>10s} {'vs optx':>8s} "
        f"{'(min)':>6s}"
    )
    for k, r in out["forward"].items():
        ratio = r["time_s"] / base["time_s"] if base else float("nan")
        ratio_min = r["time_min_s"] / base["time_min_s"] if base else float("nan")
        r["time_vs_optimistix"] = ratio if base else None
        r["time_min_vs_optimistix"] = ratio_min if base else None
        print(
            f"{k:48s} {1e3 * r['time_s']:10.3f} {r['iterations_max']:7d} "
            f"{r['residual_max']:10.2e} {ratio:8.2f} {ratio_min:6.2f}"
        )

    # Backward.
    picard_steps = out["forward"]["jaxsolve Picard"]["iterations_max"]
    bwd_calls, vg_calls, grads = {}, {}, {}
    for k, solve in backward_methods(picard_steps).items():
        loss = loss_of(batched(solve, batch))
        vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        forward = jax.jit(lambda w, x, loss=loss: jax.vjp(loss, w, x))
        value, pullback = forward(w, x)
        backward = jax.jit(lambda pullback, ct: pullback(ct))
        bwd_calls[k] = (backward, (pullback, jnp.ones_like(value)))
        vg_calls[k] = (vg, (w, x))
        grads[k] = vg(w, x)[1]
    bwd_times = interleaved_times(bwd_calls, repeats)
    vg_times = interleaved_times(vg_calls, repeats)
    results = {k: (bwd_times[k], vg_times[k], *grads[k]) for k in grads}
    ref = results["unrolled (backprop through Picard steps)"]
    print(
        f"{'backward':48s} {'bwd [ms]':>9s} {'bwd/unrolled':>12s} {'(min)':>6s} "
        f"{'val+grad [ms]':>13s} {'grad rel.err':>12s}"
    )
    for k, ((t_bwd, t_bwd_min), (t_vg, t_vg_min), gw, gx) in results.items():
        err = float(
            jnp.sqrt(jnp.sum((gw - ref[2]) ** 2) + jnp.sum((gx - ref[3]) ** 2))
            / jnp.sqrt(jnp.sum(ref[2] ** 2) + jnp.sum(ref[3] ** 2))
        )
        out["backward"][k] = {
            "backward_time_s": t_bwd,
            "backward_vs_unrolled": t_bwd / ref[0][0],
            "backward_time_min_s": t_bwd_min,
            "backward_min_vs_unrolled_min": t_bwd_min / ref[0][1],
            "value_and_grad_time_s": t_vg,
            "value_and_grad_vs_unrolled": t_vg / ref[1][0],
            "value_and_grad_time_min_s": t_vg_min,
            "grad_rel_err_vs_unrolled": err,
        }
        print(
            f"{k:48s} {1e3 * t_bwd:9.3f} {t_bwd / ref[0][0]:12.2f} {t_bwd_min / ref[0][1]:6.2f} "
            f"{1e3 * t_vg:13.3f} {err:12.2e}"
        )
    return out


def memory_scan(n, ks):
    """Compiled temp memory of the gradient versus the iteration count K."""
    w, x = make_problem(n, 0)
    rows = {}
    for k in ks:
        # A tolerance that is never reached, so K forward steps run; the backward solve has its
        # own (reachable) tolerance.
        implicit = jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(rtol=1e-5, atol=1e-5, throw=False), max_steps=k, tol=1e-30
        )
        row = {
            "jaxsolve ImplicitDiff (default BiCGStab)": temp_bytes(
                jax.grad(loss_of(implicit), argnums=(0, 1)), w, x
            ),
            "unrolled": temp_bytes(jax.grad(loss_of(unrolled_forward(k)), argnums=(0, 1)), w, x),
        }
        if optx is not None:
            row["optimistix ImplicitAdjoint"] = temp_bytes(
                jax.grad(loss_of(optimistix_forward(max_steps=k, tol=1e-30)), argnums=(0, 1)), w, x
            )
        rows[str(k)] = row
    print(f"\n== gradient temp memory [KiB] vs iterations K (n={n}) ==")
    names = list(next(iter(rows.values())))
    print(f"{'K':>6s} " + " ".join(f"{m:>30s}" for m in names))
    for k, row in rows.items():
        cells = " ".join(
            f"{(row[m] or 0) / 1024:30.1f}" if row[m] is not None else f"{'n/a':>30s}"
            for m in names
        )
        print(f"{k:>6s} {cells}")
    return rows


INTEROP_BASE = "jaxsolve Picard + ImplicitDiff(BiCGStab)"


def interop_methods(tol=TOL, max_steps=2000):
    """Backward through a fixed point with BiCGStab on the adjoint system, four ways."""
    import lineax as lx

    from jaxsolve.implicit import as_optimistix

    def optx_solve(solver):
        adjoint = optx.ImplicitAdjoint(linear_solver=lx.BiCGStab(rtol=tol, atol=tol))

        def solve(w, x):
            sol = optx.fixed_point(
                cell,
                solver,
                jnp.zeros_like(x),
                (w, x),
                max_steps=max_steps,
                adjoint=adjoint,
                throw=False,
            )
            return sol.value, sol.stats["num_steps"]

        return solve

    return {
        INTEROP_BASE: jaxsolve_forward(ji.Picard(), ji.ImplicitDiff(ji.BiCGStab())),
        "jaxsolve Picard + ImplicitDiff(lx.BiCGStab)": jaxsolve_forward(
            ji.Picard(), ji.ImplicitDiff(lx.BiCGStab(rtol=tol, atol=tol, max_steps=256))
        ),
        "optimistix FixedPointIteration + ImplicitAdjoint(lx.BiCGStab)": optx_solve(
            optx.FixedPointIteration(rtol=tol, atol=tol)
        ),
        "optimistix as_optimistix(jaxsolve Picard) + ImplicitAdjoint(lx.BiCGStab)": optx_solve(
            as_optimistix(ji.Picard(), rtol=tol, atol=tol)
        ),
    }


def run_interop(name, n, batch, repeats):
    """Backward and value-and-grad times of :func:`interop_methods`, as ratios to the first."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)  # see the module docstring: lineax in float32
    try:
        return _run_interop(name, n, batch, repeats)
    finally:
        jax.config.update("jax_enable_x64", previous)


def _run_interop(name, n, batch, repeats):
    w, x = (a.astype(jnp.float64) for a in make_problem(n, batch))
    print(f"\n== interop {name}: n={n}, batch={batch or 1}, float64, rtol=atol={TOL} ==")
    bwd_calls, vg_calls, grads, steps = {}, {}, {}, {}
    for k, solve in interop_methods().items():
        loss = loss_of(batched(solve, batch))
        vg = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        forward = jax.jit(lambda w, x, loss=loss: jax.vjp(loss, w, x))
        value, pullback = forward(w, x)
        backward = jax.jit(lambda pullback, ct: pullback(ct))
        bwd_calls[k] = (backward, (pullback, jnp.ones_like(value)))
        vg_calls[k] = (vg, (w, x))
        grads[k] = vg(w, x)[1]
        steps[k] = int(jnp.max(jax.jit(batched(solve, batch))(w, x)[1]))
    bwd_times = interleaved_times(bwd_calls, repeats)
    vg_times = interleaved_times(vg_calls, repeats)
    base_bwd, base_vg, (gw0, gx0) = (
        bwd_times[INTEROP_BASE],
        vg_times[INTEROP_BASE],
        grads[INTEROP_BASE],
    )
    norm0 = jnp.sqrt(jnp.sum(gw0**2) + jnp.sum(gx0**2))
    out = {"n": n, "batch": batch or 1, "dtype": "float64", "baseline": INTEROP_BASE, "rows": {}}
    print(
        f"{'backward (BiCGStab on the adjoint)':72s} {'bwd [ms]':>9s} {'ratio':>6s} {'(min)':>6s} "
        f"{'v+g [ms]':>9s} {'ratio':>6s} {'iters':>6s} {'grad rel.err':>12s}"
    )
    for k, (gw, gx) in grads.items():
        err = float(jnp.sqrt(jnp.sum((gw - gw0) ** 2) + jnp.sum((gx - gx0) ** 2)) / norm0)
        row = {
            "backward_time_s": bwd_times[k][0],
            "backward_time_min_s": bwd_times[k][1],
            "backward_vs_jaxsolve": bwd_times[k][0] / base_bwd[0],
            "backward_min_vs_jaxsolve_min": bwd_times[k][1] / base_bwd[1],
            "value_and_grad_time_s": vg_times[k][0],
            "value_and_grad_vs_jaxsolve": vg_times[k][0] / base_vg[0],
            "forward_iterations_max": steps[k],
            "grad_rel_err_vs_jaxsolve": err,
        }
        out["rows"][k] = row
        print(
            f"{k:72s} {1e3 * row['backward_time_s']:9.3f} {row['backward_vs_jaxsolve']:6.2f} "
            f"{row['backward_min_vs_jaxsolve_min']:6.2f} {1e3 * row['value_and_grad_time_s']:9.3f} "
            f"{row['value_and_grad_vs_jaxsolve']:6.2f} {steps[k]:6d} {err:12.2e}"
        )
    return out


def write_results(updates):
    """Read-modify-write of benchmarks/results/implicit.json: set the top-level keys in
    ``updates`` and keep every other key (other benchmarks own some)."""
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    path = os.path.join(HERE, "results", "implicit.json")
    data = {}
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
    data.update(updates)
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
    print(f"\nwrote {path} (keys {sorted(updates)}; others kept)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller problems, fewer repeats")
    parser.add_argument(
        "--only",
        choices=["all", "interop"],
        default="all",
        help="interop: only the optimistix / lineax interop rows (key optimistix_interop)",
    )
    args = parser.parse_args()
    repeats = 5 if args.quick else 20
    problems = {"single_n512": (512, 0), "batch64_n64": (64, 64)}
    if args.quick:
        problems = {"single_n128": (128, 0), "batch16_n32": (32, 16)}
    interop = None
    if optx is not None:
        interop = {
            "platform": platform.platform(),
            "device": str(jax.devices()[0]),
            "jax": jax.__version__,
            "optimistix": importlib.metadata.version("optimistix"),
            "lineax": importlib.metadata.version("lineax"),
            "quick": args.quick,
            "tolerance": TOL,
            "problems": {
                name: run_interop(name, n, batch, repeats) for name, (n, batch) in problems.items()
            },
        }
    else:
        print("optimistix not installed: skipping the interop rows")
    if args.only == "interop":
        if interop is not None:
            write_results({"optimistix_interop": interop})
        return
    results = {
        "platform": platform.platform(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "tolerance": TOL,
        "problems": {},
    }
    for name, (n, batch) in problems.items():
        results["problems"][name] = run_problem(name, n, batch, repeats)
    ks = [16, 64, 256, 1024]
    n_mem = 128 if args.quick else 512
    results["memory_temp_bytes"] = {"n": n_mem, "by_iterations": memory_scan(n_mem, ks)}

    # Targets.
    targets = {}
    for name, r in results["problems"].items():
        b = r["backward"]
        for row in (
            DEFAULT_ROW,
            "jaxsolve Picard + ImplicitDiff(GMRES(10))",
            "jaxsolve Picard + ImplicitDiff(GMRES(20))",
            "jaxsolve Picard + ImplicitDiff(GMRES(8))",
            "jaxsolve Picard + ImplicitDiff(GMRES(5))",
            "jaxsolve Picard + ImplicitDiff(Picard)",
        ):
            targets[f"{name}: backward <= 0.5x unrolled ({row})"] = (
                b[row]["backward_vs_unrolled"] <= 0.5
            )
        if optx is not None:
            f = r["forward"]
            targets[f"{name}: forward Picard no slower than optimistix"] = (
                f["jaxsolve Picard"]["time_vs_optimistix"] <= 1.0
            )
    mem = results["memory_temp_bytes"]["by_iterations"]
    implicit_mem = [row["jaxsolve ImplicitDiff (default BiCGStab)"] for row in mem.values()]
    unrolled_mem = [row["unrolled"] for row in mem.values()]
    targets["implicit memory flat in K"] = max(implicit_mem) <= 1.05 * min(implicit_mem)
    targets["unrolled memory grows with K (sanity)"] = unrolled_mem[-1] > 4 * unrolled_mem[0]
    results["targets_met"] = targets
    print("\n== targets ==")
    for k, v in targets.items():
        print(f"{'met ' if v else 'MISSED'}  {k}")

    if interop is not None:
        results["optimistix_interop"] = interop
    write_results(results)


if __name__ == "__main__":
    main()
