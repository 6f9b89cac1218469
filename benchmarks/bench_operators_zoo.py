"""Every neural operator of jaxsolve on two shared tasks, at comparable parameter counts.

Architectures: FNO, TFNO, UNO, LocalNO, MgNO, LSM, SineNet (grid operators), GINO and MP-PDE (on
the grid's nodes taken as a point cloud; GINO through a latent grid) and DeepONet (the whole
input function into the branch net, the node coordinates into the trunk net). A model whose
module is missing or that fails to build or train is recorded as ``{"skipped": reason}``.

Tasks:

* ``darcy`` -- Darcy flow, coefficient to solution (``jaxsolve.pde.darcy_dataset``, s = 85;
  ``--quick``: s = 29, a smaller parameter target and fewer steps, see ``CONFIGS``). Inputs and
  outputs normalised per channel (``train.Normalizer``), the loss is the FNO paper's relative L2
  of the decoded prediction; the error reported is the mean test relative L2.
* ``ks`` -- Kuramoto-Sivashinsky trajectories, the data path of ``bench_refiner.py``
  (``ks_trajectories``: L = 64, frames every 0.2 after a burn-in). Each model maps a frame to the
  next one, trained with one-step MSE on pairs of consecutive frames; reported are the one-step
  test relative L2 and the rollout horizon: every test trajectory rolled out from its first frame
  by the model alone, the time until the correlation with the truth first drops below 0.8
  (``bench_refiner.high_correlation_time``; mean and standard error over the test trajectories).

Fairness: every model gets the same data, the same batches (``train.fit`` with one key), the
same optimiser (Adam, cosine decay from 1e-3), the same number of steps and batch size. Sizes:
one hyper-parameter per architecture, its ``width``, is picked from a fixed list by one rule --
the parameter count closest (in log) to the task's target -- and everything else is the
architecture's default or a shape-driven choice written in ``REGISTRY`` below (modes, levels,
radii, the domain length of LocalNO's differential kernels), the same for every run; no tuning
per model. Counts are recorded. On this CPU the full mode takes hours (MP-PDE and LSM cost the
most per step); it is meant for a GPU.

Step time: measured inside the training run itself (``train.fit`` compiles ``chunk`` steps as
one call and blocks on each call's losses; the clock is read after every chunk): the median per
step over the chunks after the first, whose time (compilation included) is reported apart. All
models of a task train one after the other in one process, so they share the machine's state only
roughly: on the shared 2-core CPU the run's load averages are recorded; models rerun through
``--models`` are measured in that later process (each row names its run).

Run: ``python benchmarks/bench_operators_zoo.py [--quick] [--models FNO GINO ...] [--tasks ...]``;
writes benchmarks/results/operators_zoo.json (``--quick``: operators_zoo_quick.json), merging
the models run into the rows already there, and the table between the ``operators_zoo`` markers
of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _results import machine_info, result_sections, update_readme, write_json  # noqa: E402
from bench_refiner import THRESHOLD, high_correlation_time, ks_trajectories  # noqa: E402

from jaxsolve import pde, train  # noqa: E402

BEGIN, END = "<!-- operators_zoo:begin -->", "<!-- operators_zoo:end -->"

# The width list every architecture chooses from, and each task's parameter target.
WIDTHS = (4, 6, 8, 10, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256)

KS_LENGTH = 64.0  # the KS domain (both modes)

CONFIGS = {
    "quick": {
        "darcy": dict(resolution=29, n_train=100, n_test=20, steps=200, batch=10, chunk=40,
                      target=5e4),
        "ks": dict(
            length=KS_LENGTH, points=64, dt=0.2, substeps=2, burn_in=40.0, train_n=32,
            train_frames=40, test_n=16, test_frames=150, steps=300, batch=32, chunk=50, target=5e4,
        ),
        "lr": 1e-3,
    },
    "full": {
        "darcy": dict(resolution=85, n_train=1000, n_test=100, steps=5000, batch=20, chunk=250,
                      target=2.5e5),
        "ks": dict(
            length=KS_LENGTH, points=64, dt=0.2, substeps=2, burn_in=40.0, train_n=128,
            train_frames=100, test_n=32, test_frames=200, steps=5000, batch=32, chunk=250, target=1e5,
        ),
        "lr": 1e-3,
    },
}  # fmt: skip

# Spectral modes per sign on each axis (the same for every spectral model of a task).
MODES = {"darcy": 8, "ks": 16}


# ----------------------------------------------------------------------------------------------
# Point-cloud and DeepONet models on a grid: the grid's nodes are the points
# ----------------------------------------------------------------------------------------------


def node_points(spatial, periodic):
    """``(prod(spatial), d)`` coordinates of the grid's nodes in C order: ``n / N`` on a
    periodic axis, ``linspace(0, 1, N)`` (boundary nodes included) otherwise."""
    axes = [np.arange(n) / n if periodic else np.linspace(0.0, 1.0, n) for n in spatial]
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=-1).astype(np.float32)


class OnNodes(eqx.Module):
    """A model on a grid sample ``(c, *spatial)`` through the grid's nodes: a point-cloud
    operator called as ``model(points, f, points)`` (the input function on the nodes, the output
    at the same nodes), or a DeepONet called as ``model(sample, points)`` (``deeponet=True``)."""

    model: eqx.Module
    periodic: bool = eqx.field(static=True)
    deeponet: bool = eqx.field(static=True, default=False)

    def __call__(self, x):
        spatial = x.shape[1:]
        points = jnp.asarray(node_points(spatial, self.periodic), x.dtype)
        if self.deeponet:
            out = self.model(x, points)
        else:
            out = self.model(points, x.reshape(x.shape[0], -1), points)
        return out.reshape(out.shape[0], *spatial)


def max_neighbours(queries, sources, radius):
    """The largest number of ``sources`` within ``radius`` of a query (so no list overflows)."""
    d = np.linalg.norm(queries[:, None, :] - sources[None, :, :], axis=-1)
    return int((d <= radius).sum(1).max())


# ----------------------------------------------------------------------------------------------
# The registry: name -> builder(task, d, spatial, width, key)
# ----------------------------------------------------------------------------------------------


def _grid_kwargs(task):
    return dict(modes=MODES[task])


def build_fno(task, d, spatial, width, key):
    from jaxsolve.operators import FNO

    return FNO(d, 1, 1, width=width, key=key, **_grid_kwargs(task))


def build_tfno(task, d, spatial, width, key):
    from jaxsolve.operators import TFNO

    return TFNO(d, 1, 1, width=width, key=key, **_grid_kwargs(task))


def build_uno(task, d, spatial, width, key):
    from jaxsolve.operators import UNO

    m = MODES[task]
    # A U with one coarsening: full grid, half grid (half the modes, twice the channels), back.
    return UNO(
        d, 1, 1, width=width, key=key,
        layer_channels=[width, 2 * width, 2 * width, width],
        layer_modes=[m, m // 2, m // 2, m],
        layer_scalings=[1.0, 0.5, 2.0, 1.0],
        lifting_channels=2 * width, projection_channels=2 * width,
    )  # fmt: skip


def build_local(task, d, spatial, width, key):
    from jaxsolve.operators import LocalNO

    # Differential kernels in every block; periodic stencils for the periodic task only. The
    # domain in the data's units (KS: L = 64, Darcy: the unit square) and the stencils' unit the
    # training grid's spacing (neuraloperator's default_in_shape).
    padding, length = ("periodic", KS_LENGTH) if task == "ks" else ("zeros", 1.0)
    return LocalNO(
        d,
        1,
        1,
        width=width,
        key=key,
        padding=padding,
        domain_length=length,
        reference_resolution=spatial[-1],
        **_grid_kwargs(task),
    )


def _lazy(module, name):
    return getattr(importlib.import_module(f"jaxsolve.operators.{module}"), name)


def build_mgno(task, d, spatial, width, key):
    boundary = "periodic" if task == "ks" else "dirichlet"
    return _lazy("_mgno", "MgNO")(d, 1, 1, width=width, key=key, boundary=boundary)


def build_lsm(task, d, spatial, width, key):
    return _lazy("_lsm", "LSM")(d, 1, 1, width=width, key=key)


def build_sinenet(task, d, spatial, width, key):
    padding = "circular" if task == "ks" else "zeros"
    return _lazy("_sinenet", "SineNet")(d, 1, 1, width=width, key=key, padding=padding)


def build_gino(task, d, spatial, width, key):
    from jaxsolve.operators import GINO

    m = MODES[task]
    # Latent grid: the data grid's size in 1-D, 32 per axis in 2-D (at least 2 * modes).
    latent = tuple(max(2 * m, min(n, 32)) for n in spatial)
    periodic = task == "ks"
    points = node_points(spatial, periodic)
    nodes = node_points(latent, periodic=False)  # GINO's latent nodes (ends included)
    # Radii: 1.5 latent cells each way (every node reaches some points and every point
    # some nodes); the neighbour slots are the largest count on these points.
    radius = 1.5 / (min(latent) - 1)
    k_in = max_neighbours(nodes, points, radius)
    k_out = max_neighbours(points, nodes, radius)
    model = GINO(
        d, 1, 1, latent_shape=latent, width=width, modes=m, in_radius=radius,
        out_radius=radius, in_k_max=k_in, out_k_max=k_out, key=key,
        in_hidden_widths=(32, 32), out_hidden_widths=(64, 64), embedding_frequencies=8,
        projection_channels=2 * width,
    )  # fmt: skip
    return OnNodes(model, periodic)


def build_mppde(task, d, spatial, width, key):
    # One frame in, one out (the shared task is one-step: no temporal bundling, no
    # pushforward); the grid's points as the graph, periodic for the periodic task.
    cls = _lazy("_mppde", "MPPDEGrid")
    return cls(d, 1, 1, width=width, key=key, periodic=task == "ks")


def build_deeponet(task, d, spatial, width, key):
    from jaxsolve.operators import DeepONet

    model = DeepONet(
        (1, *spatial), d, 1, latent=width, branch_widths=(width, width),
        trunk_widths=(width, width, width), key=key,
    )  # fmt: skip
    return OnNodes(model, task == "ks", deeponet=True)


REGISTRY: dict[str, Callable] = {
    "FNO": build_fno,
    "TFNO": build_tfno,
    "UNO": build_uno,
    "LocalNO": build_local,
    "MgNO": build_mgno,
    "LSM": build_lsm,
    "SineNet": build_sinenet,
    "GINO": build_gino,
    "MPPDE": build_mppde,
    "DeepONet": build_deeponet,
}


def n_params(tree) -> int:
    """Real parameters (floating leaves) of a model or of its ``eval_shape``."""
    leaves = jax.tree_util.tree_leaves(tree)
    return int(
        sum(
            math.prod(x.shape) * (2 if jnp.issubdtype(x.dtype, jnp.complexfloating) else 1)
            for x in leaves
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)
        )
    )


def choose_width(builder, task, d, spatial, target):
    """The width of ``WIDTHS`` whose parameter count is closest to ``target`` in log, and the
    counts tried (widths the architecture rejects are left out)."""
    counts, errors = {}, {}
    for w in WIDTHS:
        try:
            shape = eqx.filter_eval_shape(builder, task, d, spatial, w, jax.random.PRNGKey(0))
        except Exception as e:
            errors[w] = f"{type(e).__name__}: {e}"
            continue
        counts[w] = n_params(shape)
        if counts[w] > 8 * target:
            break
    if not counts:
        raise RuntimeError(f"no width could be built: {next(iter(errors.values()), '')}")
    best = min(counts, key=lambda w: abs(math.log(counts[w] / target)))
    return best, counts


# ----------------------------------------------------------------------------------------------
# Tasks: data, loss, metrics
# ----------------------------------------------------------------------------------------------


class Darcy:
    name = "darcy"
    d = 2

    def __init__(self, cfg, seed):
        self.cfg = cfg
        t0 = time.perf_counter()
        n = cfg["n_train"] + cfg["n_test"]
        x, y = pde.darcy_dataset(jax.random.PRNGKey(seed), n, cfg["resolution"])
        self.data_s = time.perf_counter() - t0
        xtr, ytr = x[: cfg["n_train"]], y[: cfg["n_train"]]
        self.xn, self.yn = train.Normalizer.fit(xtr), train.Normalizer.fit(ytr)
        self.train = (self.xn.encode(xtr), ytr)
        self.test = (self.xn.encode(x[cfg["n_train"] :]), y[cfg["n_train"] :])
        self.spatial = tuple(x.shape[2:])

    def predict(self, model, x):
        return self.yn.decode(model(x))

    def loss(self, model, batch, key):
        from jaxsolve.operators import relative_lp_loss

        xb, yb = batch
        return jnp.mean(jax.vmap(lambda a, u: relative_lp_loss(self.predict(model, a), u))(xb, yb))

    def evaluate(self, model):
        from jaxsolve.operators import relative_lp_loss

        @eqx.filter_jit
        def errors(m, x, y):
            return jax.vmap(lambda a, u: relative_lp_loss(self.predict(m, a), u))(x, y)

        x, y = self.test
        errs = [errors(model, x[i : i + 10], y[i : i + 10]) for i in range(0, len(x), 10)]
        return {"test_rel_l2": float(jnp.mean(jnp.concatenate(errs)))}


class KS:
    name = "ks"
    d = 1

    def __init__(self, cfg, seed):
        self.cfg = cfg
        common = {k: cfg[k] for k in ("length", "points", "dt", "substeps", "burn_in")}
        k_tr, k_te = jax.random.split(jax.random.PRNGKey(seed))
        t0 = time.perf_counter()
        tr = ks_trajectories(k_tr, cfg["train_n"], frames=cfg["train_frames"], **common)
        self.test_traj = ks_trajectories(k_te, cfg["test_n"], frames=cfg["test_frames"], **common)
        self.data_s = time.perf_counter() - t0
        p = cfg["points"]
        self.train = (tr[:, :-1].reshape(-1, 1, p), tr[:, 1:].reshape(-1, 1, p))
        self.spatial = (p,)

    def loss(self, model, batch, key):
        xb, yb = batch
        return jnp.mean((jax.vmap(model)(xb) - yb) ** 2)

    def evaluate(self, model):
        test = self.test_traj
        frames = test.shape[1]

        @eqx.filter_jit
        def predict(m, pairs, starts):
            # One compile for both: the next frame of every test pair, and every test
            # trajectory rolled out from its first frame by the model alone.
            nxt = jax.vmap(m)(pairs)
            roll = jax.vmap(
                lambda u: train.autoregressive_predict(m, u[None], frames - 1, throw=False)
            )(starts)
            return nxt, roll

        x = test[:, :-1].reshape(-1, *test.shape[2:])
        ref = test[:, 1:].reshape(x.shape)
        nxt, roll = predict(model, x, test[:, 0])
        diff = jnp.linalg.norm((nxt - ref).reshape(len(ref), -1), axis=1)
        rel = float(jnp.mean(diff / jnp.linalg.norm(ref.reshape(len(ref), -1), axis=1)))
        pred = jnp.concatenate([test[:, :1], roll], axis=1)
        times = high_correlation_time(pred, test, self.cfg["dt"])
        return {
            "test_rel_l2": rel,
            "rollout_horizon_mean": float(times.mean()),
            "rollout_horizon_sem": float(times.std(ddof=1) / np.sqrt(len(times))),
            "rollout_horizon_max": (frames - 1) * self.cfg["dt"],
            "rollout_nonfinite": int((~jnp.isfinite(pred).all(axis=(1, 2, 3))).sum()),
        }


TASKS = {"darcy": Darcy, "ks": KS}


# ----------------------------------------------------------------------------------------------
# Training and timing
# ----------------------------------------------------------------------------------------------


def optimizer(cfg, steps):
    return optax.adam(optax.cosine_decay_schedule(cfg["lr"], steps))


def train_one(task, model, cfg, tcfg, seed):
    """``train.fit`` for the task's steps; the step time from its compiled chunks.

    ``fit`` runs ``chunk`` steps per compiled call and blocks on each call's losses before the
    evaluation hook, so the clock read in the hook after every chunk times whole chunks; the
    first includes the compilation and is reported apart."""
    chunk = tcfg["chunk"]
    stamps = []

    def clock(m):
        jax.block_until_ready(eqx.filter(m, eqx.is_array))
        stamps.append(time.perf_counter())
        return {}

    t0 = time.perf_counter()
    res = train.fit(
        task.loss,
        model,
        task.train,
        optimizer=optimizer(cfg, tcfg["steps"]),
        num_steps=tcfg["steps"],
        key=jax.random.PRNGKey(seed + 7),
        batch_size=tcfg["batch"],
        progress=False,
        steps_per_call=chunk,
        eval_fn=clock,
        eval_every=chunk,
    )
    wall = time.perf_counter() - t0
    per_step = np.diff(stamps) / chunk
    timing = dict(
        step_ms_median=1e3 * float(np.median(per_step)) if len(per_step) else None,
        step_ms_min=1e3 * float(np.min(per_step)) if len(per_step) else None,
        timed_chunks=len(per_step),
        first_chunk_s=round(stamps[0] - t0, 2),
    )
    return res.model, wall, float(res.history["loss"][-1]), timing


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def markdown(doc, title):
    lines = [
        f"**{title}**",
        "",
        "| model | params (Darcy / KS) | Darcy test rel. L2 | Darcy step (ms) | KS one-step rel. L2 "
        "| KS rollout horizon | KS step (ms) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    tasks = doc.get("tasks", {})
    dar = tasks.get("darcy", {}).get("models", {})
    ks = tasks.get("ks", {}).get("models", {})

    def count(row, task):
        # Counts more than 2x away from the task's target are marked.
        if "params" not in row:
            return "-"
        ratio = row["params"] / tasks[task]["config"]["target"]
        return f"{row['params']}{'*' if not 0.5 <= ratio <= 2 else ''}"

    for name in REGISTRY:
        a, b = dar.get(name), ks.get(name)
        if a is None and b is None:
            continue
        if all(r is None or "skipped" in r for r in (a, b)):
            reason = (a or b)["skipped"].split("\n")[0][:90]
            lines.append(f"| {name} | skipped: {reason} | | | | | |")
            continue
        a = a if a and "skipped" not in a else {}
        b = b if b and "skipped" not in b else {}
        horizon = (
            f"{b['rollout_horizon_mean']:.2f} +- {b['rollout_horizon_sem']:.2f}"
            if "rollout_horizon_mean" in b
            else "-"
        )
        lines.append(
            f"| {name} | {count(a, 'darcy')} / {count(b, 'ks')} | "
            f"{_fmt(a.get('test_rel_l2'), '.4f')} | {_fmt(a.get('step_ms_median'), '.1f')} | "
            f"{_fmt(b.get('test_rel_l2'), '.4f')} | {horizon} | "
            f"{_fmt(b.get('step_ms_median'), '.1f')} |"
        )
    return "\n".join(lines)


README_INTRO = """## Every operator on two shared tasks (`bench_operators_zoo.py`)

`python benchmarks/bench_operators_zoo.py [--quick] [--models FNO GINO ...] [--tasks darcy ks]`
(`--models` reruns some and merges them into the JSON). FNO, TFNO, UNO, LocalNO, MgNO, LSM,
SineNet, GINO and MP-PDE (the grid's nodes as a point cloud; GINO through a latent grid) and
DeepONet, each at the width of a fixed list whose parameter count is closest to the task's
target (full: 250k Darcy / 100k KS; `--quick`: 50k both; `*`: more than 2x off, where the
architecture's smallest width is already larger), everything else the architecture's defaults
or a choice fixed by the data (modes 8 / 16, periodic boundaries on KS only, UNO halving the grid
once, GINO's latent grid and radii, LocalNO's domain in the data's units). Darcy (s = 85;
`--quick` 29): coefficient to solution, normalised, relative L2 loss. KS (`bench_refiner.py`'s
data, L = 64 on 64 points, frames every 0.2): one frame to the next, one-step MSE; the rollout
horizon is the time until the correlation of the model's own rollout with the truth drops below
0.8 (mean +- standard error over 16 test trajectories, out of 29.8). One Adam + cosine schedule,
the same steps, batches and data for all. MP-PDE is run one frame to one frame (no temporal
bundling, no pushforward: the shared task is one-step) and, by construction, predicts an update
of its input. Step time: median per step over `train.fit`'s compiled chunks after the first, on
the shared 2-core CPU while other jobs ran (the JSON records the load): a rough guide only.

`--quick` trains 200 (Darcy) / 300 (KS) steps: far from converged, so the errors rank how fast
each model learns at this size, not how well it can do. Findings of that run:

- LocalNO diverges on Darcy (rel. L2 6.2): its differential kernels divide by the grid spacing
  (h = 1/29 on the unit square) and at the default initialisation the blocks amplify by ~1/h.
  On KS with the domain in the data's units (L = 64, h = 1) it trains (0.057); with the unit
  domain it diverged there too (337, an earlier run). Worth an initialisation scaled by h.
- LSM's smallest width (8, for its 8 heads) is above the 50k target on both tasks (409k Darcy,
  170k KS), SineNet's (4) on Darcy (132k): the two best Darcy errors come with 2.6-8x the
  parameters; on KS, LSM is the weakest of the grid operators despite its 3x.
- GINO and DeepONet learn slowest (KS one-step error 0.53 / 0.98, no useful rollout; Darcy
  0.50 / 0.43): at 50k parameters GINO's budget goes mostly to its kernel MLPs (width 6 on
  Darcy), and DeepONet's branch sees the whole field through one dense layer. MP-PDE is among
  the best on KS (0.035, horizon 3.8) but slow to learn Darcy (0.57), a map from one field to
  another that its update-of-the-input form does not suit.
- Step times span three orders of magnitude (DeepONet ~1 ms, the FNO family 10-60 ms, MgNO,
  SineNet and MP-PDE 0.1-0.3 s on KS, LSM ~1 s and MP-PDE ~2 s on Darcy)."""


# ----------------------------------------------------------------------------------------------


def run_task(task_name, models, mode, args, run_id, write):
    """Train and evaluate ``models`` on one task; ``write(rows, meta)`` after each model."""
    cfg = CONFIGS[mode]
    tcfg = dict(cfg[task_name])
    if args.steps is not None:
        tcfg["steps"] = args.steps
        tcfg["chunk"] = max(1, min(tcfg["chunk"], args.steps // 2))
    task = TASKS[task_name](tcfg, args.seed)
    print(f"[{task_name}] data ready in {task.data_s:.1f} s; grid {task.spatial}")
    rows = {}
    meta = dict(config=dict(tcfg), data_s=round(task.data_s, 1), modes=MODES[task_name])
    for name in models:
        key = jax.random.PRNGKey(args.seed + 1)
        try:
            builder = REGISTRY[name]
            width, counts = choose_width(builder, task_name, task.d, task.spatial, tcfg["target"])
            model = builder(task_name, task.d, task.spatial, width, key)
            params = n_params(eqx.filter(model, eqx.is_inexact_array))
            model, wall, last_loss, timing = train_one(task, model, cfg, tcfg, args.seed)
            metrics = task.evaluate(model)
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
            print(f"[{task_name}] {name} skipped: {reason}")
            if args.verbose:
                traceback.print_exc()
            rows[name] = {"skipped": reason[:2000], "run": run_id}
            write(rows, meta)
            continue
        rows[name] = dict(
            width=width,
            params=params,
            params_by_width={str(k): v for k, v in counts.items()},
            train_wall_s=round(wall, 1),
            final_train_loss=last_loss,
            run=run_id,
            **metrics,
            **timing,
        )
        print(f"[{task_name}] {name}: width {width}, {params} params, {json.dumps(metrics)}")
        print(f"[{task_name}] {name}: {json.dumps(timing)}", flush=True)
        write(rows, meta)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small data and steps (CPU, minutes)")
    p.add_argument("--models", nargs="+", default=None, choices=list(REGISTRY))
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--steps", type=int, default=None, help="override the training steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--verbose", action="store_true", help="print the traceback of a skip")
    p.add_argument("--no-readme", action="store_true")
    p.add_argument("--readme-only", action="store_true", help="only redraw the README tables")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    models = args.models or list(REGISTRY)
    out = args.out or os.path.join(
        HERE, "results", "operators_zoo_quick.json" if args.quick else "operators_zoo.json"
    )
    info = machine_info(equinox=eqx.__version__)
    run_id = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def write(task_name, rows, meta):
        # Re-read before writing: merge into what other runs wrote.
        doc = json.load(open(out)) if os.path.exists(out) else {}
        doc["mode"] = mode
        doc["threshold"] = THRESHOLD
        doc["optimiser"] = (
            f"adam, cosine decay from {CONFIGS[mode]['lr']}; same steps, batch, data for all"
        )
        doc["widths_tried"] = list(WIDTHS)
        doc.setdefault("runs", {})[run_id] = {
            **info,
            "load_average_end": list(os.getloadavg()),
            "argv": sys.argv[1:] if argv is None else list(argv),
        }
        entry = doc.setdefault("tasks", {}).setdefault(task_name, {})
        entry.update(meta)
        entry.setdefault("models", {}).update(rows)
        entry["models"] = {k: entry["models"][k] for k in REGISTRY if k in entry["models"]}
        write_json(doc, out)

    for task_name in [] if args.readme_only else args.tasks:
        run_task(task_name, models, mode, args, run_id, partial(write, task_name))
        print(f"wrote {out}")
    if not args.no_readme and args.out is None:
        sections = result_sections(
            [
                ("operators_zoo.json", "Full runs (operators_zoo.json)"),
                (
                    "operators_zoo_quick.json",
                    "--quick runs on the 2-core CPU (operators_zoo_quick.json)",
                ),
            ],
            markdown,
        )
        update_readme(BEGIN, END, README_INTRO + "\n\n" + "\n\n".join(sections))
        print("\n\n".join(sections))


if __name__ == "__main__":
    sys.exit(main())
