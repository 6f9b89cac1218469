"""MP-PDE training step: the message MLP's first layer factored per node against the per-edge
concatenation.

"Message Passing Neural PDE Solvers" (Brandstetter, Worrall, Welling) feeds every edge
:math:`(i, j)` of every layer the concatenation :math:`[f_i, f_j, u_i - u_j, x_i - x_j,
\\theta_i]` (``2h + hC + d + p`` numbers) to the message MLP :math:`\\phi`, whose first layer is
affine. :meth:`jaxsolve.operators.MPPDE.differences` splits that layer's weight by columns and
computes :math:`A = f W_f^T + u W_u^T + \\theta W_\\theta^T + b` and :math:`B = f W_g^T - u W_u^T`
once per node, so an edge costs the gather :math:`B_j`, :math:`W_x (x_i - x_j)` and two sums.
``plain_differences`` below is the concatenation form, from the same weights (the library's
code before the factoring).

For each case: one jitted forward + backward of the mean-square loss of the decoder's output
:math:`d_{ik}` against a fixed target, over a batch of fields on a 2-D grid whose graph is the
:class:`~jaxsolve.operators.MPPDEGrid` one (:func:`grid_neighbours`, radius 2.5 spacings: 20
neighbours per node), float32, the model's defaults otherwise (6 layers, mean). Recorded per form:
the median wall time of ``--repeats`` calls after compilation (the two forms alternate, so a
change in the machine's load falls on both), XLA's cost analysis of the compiled step (FLOPs and
bytes accessed) and its memory analysis (temporary buffer size), and, as a check, the largest
gradient difference between the forms relative to the largest gradient entry. The operator
zoo's Darcy step (s = 85, width 80, batch 20) is compiled but not run, for XLA's analyses only.

Run: ``python benchmarks/bench_mppde.py [--quick] [--repeats N]``; writes
benchmarks/results/mppde.json (``mppde_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _results import machine_info, write_json  # noqa: E402

from jaxsolve.operators import MPPDEGrid  # noqa: E402

# (grid side s, width, frames in = frames out, periodic): the operator zoo's one-frame Darcy
# setting (open grid) at two sizes and two widths, and a bundle of 16 frames on a periodic grid
# (where the u_i - u_j part of the concatenation is 16 numbers wide).
CASES = [(32, 32, 1, False), (32, 64, 1, False), (48, 32, 1, False), (48, 64, 1, False),
         (32, 64, 16, True)]  # fmt: skip
QUICK_CASES = [(16, 32, 1, False), (16, 32, 4, True)]
# Compiled, never run (too large for this CPU): the operator zoo's Darcy step (s = 85, width 80,
# batch 20), for XLA's FLOPs, bytes and temporary size only.
COMPILE_ONLY = (85, 80, 1, False, 20)


def plain_differences(model, u, x, nb):
    """``MPPDE.differences`` (no PDE parameters) with the concatenation per edge through the
    whole message MLP: the reference."""
    (n, k), idx, act = nb.indices.shape, nb.indices, model.activation
    position = [x] if model.encode_positions else []
    f = act(model.encoder(jnp.concatenate([u, *position], axis=-1)))
    dx = x[:, None] - x[idx]
    if model.period is not None:
        box = jnp.asarray(model.period, x.dtype)
        dx = dx - box * jnp.round(dx / box)
    du = u[:, None] - u[idx]
    weight = nb.mask.astype(u.dtype)
    if model.reduction == "mean":
        weight = weight / jnp.maximum(jnp.sum(nb.mask, axis=1, keepdims=True), 1).astype(u.dtype)
    for phi, psi in zip(model.message_nets, model.update_nets, strict=True):
        fi = jnp.broadcast_to(f[:, None], (n, k, model.width))
        messages = act(phi(jnp.concatenate([fi, f[idx], du, dx], axis=-1)))
        m = jnp.sum(messages * weight[..., None], axis=1)
        f = f + act(psi(jnp.concatenate([f, m], axis=-1)))
        if model.normalise:
            mean = jnp.mean(f, axis=0)
            f = (f - mean) * jax.lax.rsqrt(jnp.mean((f - mean) ** 2, axis=0) + model.eps)
    return model._decode(f)


def library_differences(model, u, x, nb):
    return model.differences(u, x, nb)


def make_step(differences, static, x, nb):
    """``(weights, u, target) -> (loss, gradient)``: mean-square error of ``d`` over a batch."""

    def loss(weights, u, target):
        model = eqx.combine(weights, static)
        d = jax.vmap(lambda ub: differences(model, ub, x, nb))(u)
        return jnp.mean((d - target) ** 2)

    return jax.jit(jax.value_and_grad(loss))


def _costs(compiled):
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list | tuple) else cost
    out = {"flops": float(cost.get("flops", np.nan)),
           "bytes_accessed": float(cost.get("bytes accessed", np.nan))}  # fmt: skip
    try:
        mem = compiled.memory_analysis()
        out["temp_bytes"] = int(mem.temp_size_in_bytes)
        out["argument_bytes"] = int(mem.argument_size_in_bytes)
    except (AttributeError, NotImplementedError, TypeError):
        pass  # not every backend reports it; the times and FLOPs stand without it
    return out


def _setup(s, width, frames, periodic, batch, seed=0):
    """The model's weights and static part, the grid graph and a batch of fields and targets."""
    key = jax.random.PRNGKey(seed)
    grid = MPPDEGrid(2, frames, frames, channels=1, width=width, key=key, periodic=periodic)
    x, nb = grid.graph((s, s))
    n = nb.indices.shape[0]
    rng = np.random.default_rng(seed)
    u = jnp.asarray(rng.standard_normal((batch, n, frames)), jnp.float32)
    target = jnp.asarray(rng.standard_normal((batch, n, frames, 1)), jnp.float32)
    weights, static = eqx.partition(grid.mppde, eqx.is_array)
    return weights, static, x, nb, u, target


FORMS = {"plain": plain_differences, "factored": library_differences}


def _ratios(record):
    return {
        f"{q}_plain_over_factored": record["plain"][q] / record["factored"][q]
        for q in ("median_s", "flops", "bytes_accessed", "temp_bytes")
        if q in record["plain"] and record["factored"].get(q)
    }


def _case_info(s, width, frames, periodic, batch, nb):
    return {"s": s, "width": width, "frames": frames, "periodic": periodic, "batch": batch,
            "nodes": int(nb.indices.shape[0]), "neighbour_slots": int(nb.indices.shape[1]),
            "edges": int(np.sum(nb.mask))}  # fmt: skip


def compile_only_case(s, width, frames, periodic, batch):
    """XLA's cost and memory analyses of both forms' steps, compiled and never run."""
    weights, static, x, nb, u, target = _setup(s, width, frames, periodic, batch)
    record = {}
    for name, fn in FORMS.items():
        t0 = time.perf_counter()
        compiled = make_step(fn, static, x, nb).lower(weights, u, target).compile()
        record[name] = {"compile_s": time.perf_counter() - t0, **_costs(compiled)}
    return {**_case_info(s, width, frames, periodic, batch, nb), **record,
            "ratios": _ratios(record)}  # fmt: skip


def run_case(s, width, frames, periodic, batch, repeats):
    weights, static, x, nb, u, target = _setup(s, width, frames, periodic, batch)
    steps, record = {}, {}
    for name, fn in FORMS.items():
        step = make_step(fn, static, x, nb)
        t0 = time.perf_counter()
        compiled = step.lower(weights, u, target).compile()
        record[name] = {"compile_s": time.perf_counter() - t0, **_costs(compiled)}
        steps[name] = compiled
        jax.block_until_ready(compiled(weights, u, target))  # first call, off the clock
    times = {name: [] for name in FORMS}
    for _ in range(repeats):
        for name, compiled in steps.items():
            t0 = time.perf_counter()
            jax.block_until_ready(compiled(weights, u, target))
            times[name].append(time.perf_counter() - t0)
    grads = {name: steps[name](weights, u, target)[1] for name in FORMS}
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree_util.tree_leaves(grads["plain"]))
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(*(jax.tree_util.tree_leaves(grads[f]) for f in FORMS), strict=True)
    )
    for name in FORMS:
        record[name]["times_s"] = times[name]
        record[name]["median_s"] = float(np.median(times[name]))
    return {**_case_info(s, width, frames, periodic, batch, nb), **record,
            "ratios": _ratios(record), "max_grad_difference_relative": diff / scale}  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two tiny cases (a smoke run)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    cases = QUICK_CASES if args.quick else CASES
    doc = {
        "machine": machine_info(equinox=eqx.__version__),
        "settings": {"batch": args.batch, "repeats": args.repeats, "dtype": "float32",
                     "num_layers": 6, "radius": "2.5 spacings", "reduction": "mean"},
        "cases": [],
    }  # fmt: skip
    name = "mppde_quick.json" if args.quick else "mppde.json"
    out = os.path.join(HERE, "results", name)
    for case in cases:
        result = run_case(*case, batch=args.batch, repeats=args.repeats)
        doc["cases"].append(result)
        r = result["ratios"]
        print(
            f"s={result['s']} width={result['width']} frames={result['frames']}: "
            f"plain {result['plain']['median_s']:.3f} s, factored "
            f"{result['factored']['median_s']:.3f} s (x{r['median_s_plain_over_factored']:.2f}); "
            f"FLOPs x{r['flops_plain_over_factored']:.2f}, bytes "
            f"x{r['bytes_accessed_plain_over_factored']:.2f}, temp "
            f"x{r.get('temp_bytes_plain_over_factored', float('nan')):.2f}; grad diff "
            f"{result['max_grad_difference_relative']:.1e}",
            flush=True,
        )
        doc["machine"]["load_average_end"] = list(os.getloadavg())
        write_json(doc, out)  # after every case, so a long run keeps what it finished
    if not args.quick:
        result = compile_only_case(*COMPILE_ONLY)
        doc["compile_only"] = result
        r = result["ratios"]
        print(
            f"compiled only, s={result['s']} width={result['width']} batch={result['batch']}: "
            f"TFLOP {result['plain']['flops'] / 1e12:.2f} -> "
            f"{result['factored']['flops'] / 1e12:.2f} (x{r['flops_plain_over_factored']:.2f}), "
            f"temp GB {result['plain'].get('temp_bytes', np.nan) / 1e9:.1f} -> "
            f"{result['factored'].get('temp_bytes', np.nan) / 1e9:.1f}",
            flush=True,
        )
        write_json(doc, out)
    print("wrote", out)


if __name__ == "__main__":
    main()
