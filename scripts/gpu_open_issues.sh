#!/usr/bin/env bash
# The GPU runs still open in issue 22 (operators), and an optional GPU figure for issue 19 (PINNs),
# as one command for one lent GPU.
#
#   bash scripts/gpu_open_issues.sh OUT_DIR
#
# Pieces, in priority order, one after the other, each under its own `timeout` of at most what
# is left of the budget (so a later piece never eats an earlier one's time, and a piece cut short
# keeps what it had written):
#   deepxde  issue 19, optional (its 0.3x target is met on the CPU, 0.24x; not in the default
#            pieces): `bench_pinn.py --only deepxde`: DeepXDE (PyTorch on CUDA) and jaxsolve on
#            Burgers in one process, same network, points, loss and optimiser, 2000 Adam
#            iterations each, taking turns 100 at a time; time per iteration as a ratio (the
#            median over rounds; target 0.3) and the error. float32
#            with TF32 off on both sides (JAX_DEFAULT_MATMUL_PRECISION=highest; torch's default);
#            JAX takes half the GPU's memory, torch the rest.
#            -> pinn_deepxde.json (its "deepxde" row goes to results/pinn.json as "deepxde_gpu"), deepxde.log
#   zoo      issue 22: `bench_operators_zoo.py --tasks darcy`, full mode (s = 85, 1000/100
#            samples, 5000 steps, batch 20), cheapest model first, each row written as it ends;
#            merged into a copy of benchmarks/results/operators_zoo.json when one is committed.
#            MP-PDE is left out by default (estimate below).
#            -> operators_zoo.json, zoo.log
#   ns       issue 22, Navier-Stokes: the paper setting does not fit a lease (estimate below), so
#            this is a PROBE, labelled so in its JSON, not a table row: one navier_stokes_dataset
#            call at the table script's solver setting (256^2, dt 1e-3; T = 1), the rate of that
#            ETDRK4 step for 8 (the table script's chunk), 64 and 256 trajectories at once, and
#            10 training steps of each paper-config model (FNO-2D recurrent, FNO-3D; batch 20),
#            extrapolated to the paper setting.
#            -> ns_probe.json, ns.log
# Always summary.txt: device, versions, each piece's exit code and seconds, the key numbers, the
# zoo models not finished. 7 files, flat: a `run` returns at most 8.
#
# Environment: GPU_OPEN_BUDGET (seconds for everything, default 480), GPU_OPEN_PIECES (default
# "zoo ns"; add deepxde for the GPU figure), GPU_OPEN_ZOO_MODELS (default below),
# GPU_OPEN_DRY=1 (every piece at tiny
# sizes, e.g. on a CPU in ~2.5 minutes: proves the plumbing, numbers meaningless). Needs a python3
# with JAX, equinox, optax, diffrax, lineax, jaxtyping, tqdm, torch, and deepxde, scikit-optimize
# and pyaml (wheels, below); jaxsolve is this checkout (PYTHONPATH). CI never runs this.
#
# ---- Estimates (GPU minutes) and their sources -----------------------------------------------
# Recorded on a lent H200 (results/fno_table.json, operators_gpu.json): the FNO-table Darcy step
# (s = 85, width 32, 12 modes, batch 20) 2.2 ms, the Burgers one (s = 1024) 0.84 ms; the 1100
# Darcy samples at s = 85 generated in 2.2 s (8 take 7.7 s here, compilation included). The same
# two steps on the shared 2-core CPU here: 3.72 s and 0.55 s, 15.9 and 4.6 GFLOP by XLA's cost
# analysis. So a GPU step ~ CPU step / (650..1700), or ~ GFLOP / 6.5 TFLOP/s; ranges below use both.
# * deepxde: here 1.6 (jaxsolve) / 6.6 (DeepXDE) ms per iteration; on a GPU both are
#   launch-bound, ~1-5 ms: 2 x 2000 iterations < 30 s, plus imports, CUDA start and compilation
#   ~40 s: 1-1.5 min. Cap 180 s.
# * zoo, Darcy full, per model (width by the bench's rule, params, GFLOP per train step, CPU
#   s/step here at s = 85, batch 20 -> GPU ms/step):
#     DeepONet 32, 237k,  0.2, 0.010 -> ~0.3 (launch floor)  FNO     16, 264k,  4.0, 0.77 -> 0.5-1.2
#     UNO      12, 247k, 18.7, 1.52  -> 0.9-2.9              TFNO    48, 251k, 22.8, 2.28 -> 1.3-3.5
#     LocalNO  16, 274k, 12.1, 3.22  -> 1.9-5.0              LSM      8, 409k, 29.2, 3.45 -> 2.0-5.3
#     MgNO     16, 209k, 34.4, 5.56  -> 3.3-8.6              GINO    16, 277k,  6.2, 11.9 -> 1-18
#     SineNet   6, 304k,  3.4 (likely low: XLA counts a loop body once), 15.4 -> 9-24
#     MPPDE    80, 241k, 2180, and 328 GB of memory traffic with a 43 GB temporary (out of
#              memory on this CPU) -> ~110 at 3 TB/s (25 if TF32-compute-bound .. 335); since
#              the message layer is factored per node (bench_mppde.py): 900 GFLOP, 1.43x fewer
#              bytes (~230 GB), a 33 GB temporary -> roughly 75 (the traffic bound)
#   The nine without MP-PDE: 20-70 ms for a step of each, x 5000 = 1.7-5.7 min; compilation
#   (the --quick first chunks summed to 320 s on the loaded 2 cores here; ~1/3 of that on 16 idle
#   cores, plus GPU autotuning) 2-3 min; data and evaluation < 0.5 min: 4-9 min in all, the least
#   certain estimate here. MP-PDE alone: 5000 steps x ~0.075 s ~ 6 min (2-20) and > 33 GB (an
#   H200 is safer): a command of its own (GPU_OPEN_PIECES=zoo GPU_OPEN_ZOO_MODELS=MPPDE).
# * ns, paper setting (1000 + 200 trajectories solved at 256^2 to T = 50; 500 epochs of 50
#   steps): the generator's ETDRK4 step for 8 trajectories at 256^2 is 3.3 GFLOP and 0.25 GB
#   (cost analysis), 9.5 ms per trajectory-step here. At dt 1e-3 (the table script's default),
#   1200 x 50 000 = 6e7 trajectory-steps and 1.9 PB of memory traffic: >= 10.5 min at 3 TB/s even
#   perfectly batched, ~40 min in the script's chunks of 8 if a chunk-step takes ~0.3 ms (assumed:
#   launch-bound); at the paper's own dt 1e-4 (Crank-Nicolson there; README's note) ten times
#   that. Training: FNO-2D recurrent (40 frames) 52 s/step here -> 31-80 ms -> 13-33 min; FNO-3D
#   (184 GFLOP) 21 s/step here -> 12-32 ms -> 5-13 min. In all >= 30-60 GPU-minutes at dt 1e-3:
#   more than a whole 15-minute lease, and than one 10-minute command. Not run; the probe
#   (~1-1.5 min) measures these rates.
# So one 8-minute command holds the zoo without MP-PDE (4-9 min: models still running at the
# budget's end are cut and named in summary.txt) and the ns probe if time is left (deepxde,
# ~1.5 min, when asked for). What was cut reruns in a later lease through GPU_OPEN_PIECES / GPU_OPEN_ZOO_MODELS.
#
# ---- How a GPU session runs it ---------------------------------------------------------------
# Once, on the development machine, in the repository root (the wheels stay out of git; 0.33 MB):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform manylinux1_x86_64 -d .whl deepxde==1.15.0 scikit-optimize==0.10.2 pyaml==26.7.0
# (deepxde needs matplotlib, numpy, scikit-learn, scipy and scikit-optimize; scikit-optimize
# needs joblib, pyaml, numpy, scipy, scikit-learn, packaging; pyaml needs PyYAML: of these only
# deepxde, scikit-optimize and pyaml are missing from the GPU image.) Then ONE device `run`:
#   command:   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir
#              --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site || exit;
#              bash scripts/gpu_open_issues.sh $OUT
#   carry:     [".whl"]
#   timeout_s: 540   (kind left out: an H100 or an H200 both do)
# The pieces stop at GPU_OPEN_BUDGET = 480 s, so the files come back inside timeout_s. If the
# ns piece was not reached and the machine is still warm (30 s), the same command with
# `GPU_OPEN_PIECES=ns GPU_OPEN_BUDGET=150 bash ...` runs it; otherwise give_back. Afterwards:
# the "deepxde" row of pinn_deepxde.json, if run, into benchmarks/results/pinn.json as
# "deepxde_gpu" (its "label" names the GPU); operators_zoo.json to
# benchmarks/results/operators_zoo.json, then
# `python benchmarks/bench_operators_zoo.py --readme-only` redraws the README table.
set -uo pipefail
out=${1:?usage: gpu_open_issues.sh OUT_DIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
out=$(cd "$out" && pwd)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Generated data go to a scratch cache, never to the user's ~/.cache.
export JAXSOLVE_CACHE=${JAXSOLVE_CACHE:-/tmp/jaxsolve_gpu_open_cache}
dry=${GPU_OPEN_DRY:-0}
budget=${GPU_OPEN_BUDGET:-480}
pieces=${GPU_OPEN_PIECES:-zoo ns}
# Cheapest first (estimates above), so a cut budget loses the fewest models.
zoo_models=${GPU_OPEN_ZOO_MODELS:-DeepONet FNO UNO TFNO LocalNO LSM MgNO GINO SineNet}
if [ "$dry" = 1 ]; then
    zoo_models=${GPU_OPEN_ZOO_MODELS:-DeepONet FNO}
fi
summary="$out/summary.txt"
start=$SECONDS

left() { echo $((budget - (SECONDS - start))); }

# run_piece NAME CAP LOG CMD...: CMD under `timeout min(CAP, budget left)`, output to LOG.
run_piece() {
    local name=$1 cap=$2 log=$3
    shift 3
    local t
    t=$(left)
    [ "$t" -gt "$cap" ] && t=$cap
    if [ "$t" -lt 20 ]; then
        echo "piece $name: not run (${t} s of the budget left)" | tee -a "$summary"
        return
    fi
    local t0=$SECONDS
    echo "== piece $name (timeout ${t} s)" | tee -a "$log"
    timeout -k 10 "$t" "$@" >>"$log" 2>&1
    local rc=$?
    local note=""
    [ "$rc" = 124 ] || [ "$rc" = 137 ] && note=" (cut at its timeout)"
    echo "piece $name: exit $rc after $((SECONDS - t0)) s$note" | tee -a "$summary"
}

{
    echo "gpu_open_issues.sh  $(date -u +%Y-%m-%dT%H:%M:%SZ)  dry=$dry  budget=${budget}s"
    echo "pieces: $pieces"
    nvidia-smi -L 2>/dev/null || echo "nvidia-smi: none (no NVIDIA GPU)"
    timeout 120 python3 - <<'EOF' 2>&1 | grep -v -i warning
import importlib
import os
import platform

os.environ.setdefault("DDE_BACKEND", "pytorch")  # else deepxde writes ~/.deepxde/config.json
import jax

print("python", platform.python_version(), "| jax", jax.__version__, jax.devices())
for name in ("equinox", "optax", "diffrax", "lineax", "torch", "deepxde", "skopt"):
    try:
        mod = importlib.import_module(name)
        print(f"{name} {getattr(mod, '__version__', '?')}", end="; ")
    except Exception as err:  # a missing one is reported, the pieces say what it costs
        print(f"{name} MISSING ({type(err).__name__})", end="; ")
print()
try:
    import torch

    print(
        "torch cuda:",
        torch.cuda.is_available(),
        torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
    )
except ImportError:
    pass
EOF
} >"$summary" 2>&1
cat "$summary"
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
label="${gpu:-cpu (no GPU)}, gpu_open_issues.sh$([ "$dry" = 1 ] && echo ' DRY RUN')"

for piece in $pieces; do
    case $piece in
    deepxde)
        quick=()
        [ "$dry" = 1 ] && quick=(--quick)
        # Like for like: full float32 products on both sides (torch keeps TF32 off by default);
        # JAX takes half the GPU's memory, torch the rest.
        JAX_DEFAULT_MATMUL_PRECISION=highest XLA_PYTHON_CLIENT_MEM_FRACTION=0.5 \
            run_piece deepxde 180 "$out/deepxde.log" \
            python3 benchmarks/bench_pinn.py --only deepxde "${quick[@]}" \
            --out "$out/pinn_deepxde.json" --label "$label, TF32 off"
        ;;
    zoo)
        sizes=()
        [ "$dry" = 1 ] && sizes=(--quick --steps 4)
        # A later lease's rerun merges into the committed full-mode rows (never in a dry run).
        committed=benchmarks/results/operators_zoo.json
        if [ "$dry" != 1 ] && [ -f "$committed" ] && [ ! -f "$out/operators_zoo.json" ]; then
            cp "$committed" "$out/operators_zoo.json"
        fi
        # shellcheck disable=SC2086  # the model list splits into words on purpose
        run_piece zoo 1200 "$out/zoo.log" \
            python3 benchmarks/bench_operators_zoo.py --tasks darcy --models $zoo_models \
            "${sizes[@]}" --out "$out/operators_zoo.json"
        ;;
    ns)
        GPU_OPEN_OUT="$out" GPU_OPEN_DRY="$dry" run_piece ns 150 "$out/ns.log" python3 - <<'EOF'
"""NS probe: generator and training-step rates at the paper's configs; extrapolations."""

import json
import os
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, "benchmarks")
from reproduce_fno_table import CASES

from jaxsolve import operators as ops
from jaxsolve import pde
from jaxsolve import train as jt

dry = os.environ["GPU_OPEN_DRY"] == "1"
out_path = os.path.join(os.environ["GPU_OPEN_OUT"], "ns_probe.json")
dev = jax.devices()[0]
doc = {
    "what": "PROBE, not a table row: rates at the FNO paper's Navier-Stokes configs, and the "
    "paper setting extrapolated from them"
    + (" (DRY RUN: tiny sizes, numbers meaningless)" if dry else ""),
    "device": f"{dev.platform}: {dev.device_kind}",
    "jax": jax.__version__,
}


def save():
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)


# Generator. The public path once (a short T: compiles, runs, finite data), then the rate of
# its ETDRK4 step alone: the same stepper and initial field as navier_stokes_dataset, vmapped
# over a chunk of trajectories, n steps in one compiled loop, timed on a second call.
fine, res, dt = (32, 16, 1e-2) if dry else (256, 64, 1e-3)
t0 = time.perf_counter()
w = pde.navier_stokes_dataset(
    jax.random.PRNGKey(0),
    2 if dry else 8,
    res,
    fine_resolution=fine,
    dt=dt,
    T=1.0,
    chunk_size=2 if dry else 8,
    cache_dir=None,
    progress=False,
)
w = jax.block_until_ready(w)
doc["dataset_call"] = {
    "fine": fine,
    "dt": dt,
    "T": 1.0,
    "n": int(w.shape[0]),
    "shape": list(w.shape),
    "wall_s_with_compile": time.perf_counter() - t0,
    "finite": bool(jnp.isfinite(w).all()),
}
print(json.dumps(doc["dataset_call"]), flush=True)
save()
paper_traj, paper_t = 1200, 50.0
grf = pde.GaussianRandomField(alpha=2.5, tau=7.0, scale=7.0**1.5, zero_mean=True)
stepper = pde.ETDRK(pde.NavierStokes2D(1e-3, forcing=pde.fno_forcing), dt, (fine, fine))
gen = {}
for chunk, n in ((2, 20), (4, 20)) if dry else ((8, 2000), (64, 2000), (256, 500)):
    keys = jax.random.split(jax.random.PRNGKey(1), chunk)
    v = jax.vmap(lambda k: stepper.to_spectral(grf.sample(k, (fine, fine))[None]))(keys)
    run = jax.jit(
        lambda v, n=n: jax.lax.fori_loop(0, n, lambda i, u: jax.vmap(stepper.step_spectral)(u), v)
    )
    t0 = time.perf_counter()
    jax.block_until_ready(run(v))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = jax.block_until_ready(run(v))
    per_chunk_step = (time.perf_counter() - t0) / n
    row = {
        "fine": fine,
        "dt": dt,
        "chunk": chunk,
        "steps_timed": n,
        "first_call_s": first,
        "ms_per_chunk_step": 1e3 * per_chunk_step,
        "us_per_trajectory_step": 1e6 * per_chunk_step / chunk,
        "finite": bool(jnp.isfinite(v).all()),
    }
    for paper_dt in (1e-3, 1e-4):
        chunk_steps = -(-paper_traj // chunk) * round(paper_t / paper_dt)
        row[f"paper_data_minutes_at_dt_{paper_dt:g}"] = chunk_steps * per_chunk_step / 60
    gen[f"chunk{chunk}"] = row
    print(json.dumps(row), flush=True)
    doc["generator"] = gen
    save()

# Training steps of the two paper-config models (batch 20; 25 000 steps = 500 epochs x 50).
batch, n_steps = (2, 3) if dry else (20, 10)
# (dry: 20 output frames, so that the paper's 15% time padding is a whole number of cells)
t_in, t_out, s = (2, 20, 16) if dry else (10, 40, 64)
train_rows = {}
for name in ("ns_nu1e-3", "ns_nu1e-3_3d"):
    case = CASES[name]
    space_time = case.get("space_time", False)
    # The paper's padding as a fraction of the time axis (6 of 40 frames).
    d, padding = (3, (0.0, 0.0, case["padding"] / case["t_out"])) if space_time else (2, None)
    model = ops.FNO(
        d,
        t_in,
        1,
        width=case["width"],
        modes=min(case["modes"], s // 4),
        n_layers=4,
        key=jax.random.PRNGKey(1),
        lifting_channels=0,
        projection_channels=case["projection"],
        domain_padding=padding,
        padding_mode="one-sided",
    )

    def predict(m, x, space_time=space_time):
        if space_time:
            v = jnp.broadcast_to(x[..., None], (*x.shape, t_out))
            return jnp.moveaxis(m(v)[0], -1, 0)
        return jt.autoregressive_predict(m, x[:, None], t_out)[:, 0]

    def loss(m, xb, yb, predict=predict):
        rel = jax.vmap(lambda x, y: ops.relative_lp_loss(predict(m, x), y))(xb, yb)
        return jnp.sum(rel)

    opt = optax.chain(optax.add_decayed_weights(1e-4), optax.adam(1e-3))
    params, static = eqx.partition(model, eqx.is_array)

    @jax.jit
    def step(params, state, xb, yb, static=static, loss=loss, opt=opt):
        m = eqx.combine(params, static)
        value, grads = eqx.filter_value_and_grad(loss)(m, xb, yb)
        updates, state = opt.update(grads, state, eqx.filter(m, eqx.is_inexact_array))
        return eqx.filter(eqx.apply_updates(m, updates), eqx.is_array), state, value

    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    xb = jax.random.normal(k1, (batch, t_in, s, s))
    yb = jax.random.normal(k2, (batch, t_out, s, s))
    state = opt.init(eqx.filter(model, eqx.is_inexact_array))
    t0 = time.perf_counter()
    params, state, value = step(params, state, xb, yb)
    jax.block_until_ready(value)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(n_steps):
        params, state, value = step(params, state, xb, yb)
    jax.block_until_ready(value)
    per_step = (time.perf_counter() - t0) / n_steps
    train_rows[name] = {
        "batch": batch,
        "grid": s,
        "t_in": t_in,
        "t_out": t_out,
        "params": ops.count_params(model),
        "first_step_s": compile_s,
        "ms_per_step": 1e3 * per_step,
        "paper_train_minutes": 25_000 * per_step / 60,
    }
    print(name, json.dumps(train_rows[name]), flush=True)
    doc["training"] = train_rows
    save()
doc["paper_setting_minutes_estimate"] = {
    "data_at_dt_1e-3_chunk_8_as_the_table_script": gen[f"chunk{2 if dry else 8}"][
        "paper_data_minutes_at_dt_0.001"
    ],
    "data_at_dt_1e-3_best_chunk": min(r["paper_data_minutes_at_dt_0.001"] for r in gen.values()),
    "train_both_models": sum(r["paper_train_minutes"] for r in train_rows.values()),
}
save()
print(json.dumps(doc["paper_setting_minutes_estimate"]))
EOF
        ;;
    *)
        echo "unknown piece $piece (choose from: deepxde zoo ns)" | tee -a "$summary"
        ;;
    esac
done

# Key numbers from whatever the pieces wrote.
{
    GPU_OPEN_ZOO_LIST="$zoo_models" timeout 60 python3 - "$out" 2>&1 <<'EOF'
import json
import os
import sys

out = sys.argv[1]


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else None


p = load("pinn_deepxde.json")
row = (p or {}).get("deepxde")
if row is None:
    print("deepxde: no result")
elif "skipped" in row:
    print("deepxde: skipped:", row["skipped"])
else:
    print(
        f"deepxde: {row['iterations']} Adam iterations, jaxsolve "
        f"{1e3 * row['jaxsolve']['seconds_per_adam_iteration']:.2f} ms vs DeepXDE "
        f"{1e3 * row['deepxde']['seconds_per_adam_iteration']:.2f} ms per iteration "
        f"(ratio {row['time_ratio_jaxsolve_over_deepxde']:.3f}, target 0.3); rel. L2 "
        f"{row['jaxsolve']['relative_l2']:.3g} vs {row['deepxde']['relative_l2']:.3g}; "
        f"torch on {row['deepxde']['device']}"
    )
z = load("operators_zoo.json")
models = (z or {}).get("tasks", {}).get("darcy", {}).get("models", {})
print(f"zoo darcy ({(z or {}).get('mode', '-')} mode): {len(models)} model rows")
for name, r in models.items():
    if "skipped" in r:
        print(f"  {name}: skipped: {r['skipped'][:120]}")
    else:
        print(
            f"  {name}: {r['params']} params, test rel. L2 {r['test_rel_l2']:.4f}, "
            f"{r['step_ms_median']:.2f} ms/step, first chunk {r['first_chunk_s']} s, "
            f"train {r['train_wall_s']} s"
        )
missing = [m for m in os.environ["GPU_OPEN_ZOO_LIST"].split() if m not in models]
if missing:
    print(f'  not finished (rerun with GPU_OPEN_ZOO_MODELS="{" ".join(missing)}"): {missing}')
n = load("ns_probe.json")
if n is None:
    print("ns probe: no result")
else:
    for k, r in n.get("generator", {}).items():
        print(
            f"  ns generator {k}: {r['ms_per_chunk_step']:.3f} ms per chunk step -> paper data "
            f"{r['paper_data_minutes_at_dt_0.001']:.0f} min at dt 1e-3, "
            f"{r['paper_data_minutes_at_dt_0.0001']:.0f} min at dt 1e-4"
        )
    for k, r in n.get("training", {}).items():
        print(
            f"  ns train {k}: {r['ms_per_step']:.1f} ms/step -> {r['paper_train_minutes']:.1f} "
            "min for 500 epochs"
        )
    est = n.get("paper_setting_minutes_estimate")
    if est:
        print("  ns paper setting, estimated minutes:", json.dumps(est))
EOF
} | grep -v -i warning | tee -a "$summary"
echo "total $((SECONDS - start)) s; files in $out:" | tee -a "$summary"
ls "$out" | tee -a "$summary"
