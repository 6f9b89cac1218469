"""DeepXDE (PyTorch backend) on the Burgers PINN benchmark: the reference side of bench_pinn.py.

The problem and the training set-up are those of DeepXDE's own example
(``examples/pinn_forward/Burgers.py``): :math:`u_t + u u_x = (0.01/\\pi) u_{xx}` on
``Interval(-1, 1) x TimeDomain(0, 0.99)``, :math:`u(x, 0) = -\\sin(\\pi x)`,
:math:`u(\\pm 1, t) = 0`; ``TimePDE`` with ``num_domain=2540, num_boundary=80,
num_initial=160`` (Hammersley points, DeepXDE's default); ``FNN([2] + [20] * 3 + [1], "tanh",
"Glorot normal")``; Adam with learning rate 1e-3; the loss is the sum of the mean squared PDE
residual (on all 2780 training points, boundary and initial ones included, as DeepXDE does),
the boundary error (on the points with x = +-1) and the initial error (on the points with t = 0).
float32.

* :data:`CONFIG`: that set-up as a dict.
* :func:`collocation_points`: the points DeepXDE trains on, in jaxsolve's ``(t, x)`` order, so
  the jaxsolve side can train on the same ones.
* :class:`BurgersTrainer`: the model, trained in chunks (``train(n)``), so that another
  library's chunks can run in between; ``result()`` reports the time per iteration (the first
  and last iteration of each chunk, around which DeepXDE evaluates its test losses, excluded)
  and the relative L2 error on the standard grid ``x = linspace(-1, 1, 256)``,
  ``t = linspace(0, 0.99, 100)`` against the Cole-Hopf solution.
* :func:`run`: ``num_adam`` iterations in one chunk.

The backend is chosen through ``DDE_BACKEND=pytorch`` before DeepXDE is imported. Without
``deepxde`` (and ``torch``) installed, :func:`run` and :func:`collocation_points` raise
``ImportError`` saying so.

Run: ``python benchmarks/_deepxde_burgers.py [--num-adam N] [--seed S] [--threads T]`` (prints
the dict as JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script: make tests.pinn.exact importable
    sys.path.insert(0, str(_ROOT))

from tests.pinn.exact import burgers_cole_hopf  # noqa: E402

NU = 0.01 / math.pi

CONFIG = {
    "problem": "burgers",
    "nu": NU,
    "geometry": "Interval(-1, 1) x TimeDomain(0, 0.99)",
    "x_range": [-1.0, 1.0],
    "t_range": [0.0, 0.99],
    "num_domain": 2540,
    "num_boundary": 80,
    "num_initial": 160,
    "train_distribution": "Hammersley",
    "layers": [2, 20, 20, 20, 1],
    "activation": "tanh",
    "initializer": "Glorot normal",
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "loss": "MSE(pde on all training points) + MSE(bc, x = +-1) + MSE(ic, t = 0)",
    "loss_weights": [1.0, 1.0, 1.0],
    "dtype": "float32",
    "backend": "pytorch",
    "input_order_deepxde": "(x, t)",
    "eval_x": "linspace(-1, 1, 256)",
    "eval_t": "linspace(0, 0.99, 100)",
}

EVAL_X = np.linspace(-1.0, 1.0, 256)
EVAL_T = np.linspace(0.0, 0.99, 100)


def _import_deepxde():
    """DeepXDE on its PyTorch backend (the backend is read from DDE_BACKEND at import)."""
    if "deepxde" not in sys.modules:
        os.environ["DDE_BACKEND"] = "pytorch"
    try:
        import deepxde as dde
        import torch
    except ImportError as error:
        raise ImportError(
            "the DeepXDE comparison needs deepxde with its PyTorch backend: "
            "pip install torch==2.13.0 deepxde "
            f"({type(error).__name__}: {error})"
        ) from error
    if dde.backend.backend_name != "pytorch":
        raise ImportError(
            f"deepxde was imported with the {dde.backend.backend_name!r} backend before this "
            "module could select 'pytorch'; start a fresh process (or set DDE_BACKEND=pytorch)."
        )
    dde.config.set_default_float("float32")
    return dde, torch


def _pde(dde):
    def pde(x, y):
        dy_x = dde.grad.jacobian(y, x, i=0, j=0)
        dy_t = dde.grad.jacobian(y, x, i=0, j=1)
        dy_xx = dde.grad.hessian(y, x, i=0, j=0)
        return dy_t + y * dy_x - NU * dy_xx

    return pde


def _data(dde):
    geometry = dde.geometry.GeometryXTime(
        dde.geometry.Interval(*CONFIG["x_range"]), dde.geometry.TimeDomain(*CONFIG["t_range"])
    )
    bc = dde.icbc.DirichletBC(geometry, lambda x: 0, lambda _, on_boundary: on_boundary)
    ic = dde.icbc.IC(
        geometry, lambda x: -np.sin(np.pi * x[:, 0:1]), lambda _, on_initial: on_initial
    )
    return dde.data.TimePDE(
        geometry,
        _pde(dde),
        [bc, ic],
        num_domain=CONFIG["num_domain"],
        num_boundary=CONFIG["num_boundary"],
        num_initial=CONFIG["num_initial"],
        train_distribution=CONFIG["train_distribution"],
    )


def _points_of(data) -> dict[str, np.ndarray]:
    """The training points of a DeepXDE TimePDE, per loss term and per sampled set, as float64
    ``(t, x)``."""
    data.train_next_batch()
    bc_count, ic_count = data.num_bcs
    swap = np.array([1, 0])
    every = np.asarray(data.train_x_all, np.float64)[:, swap]
    # TimePDE stacks the initial points, then the boundary ones, then the interior ones.
    n_initial, n_boundary = CONFIG["num_initial"], CONFIG["num_boundary"]
    out = {
        "pde": every,
        "bc": np.asarray(data.train_x_bc[:bc_count], np.float64)[:, swap],
        "ic": np.asarray(data.train_x_bc[bc_count : bc_count + ic_count], np.float64)[:, swap],
        "initial": every[:n_initial],
        "boundary": every[n_initial : n_initial + n_boundary],
        "domain": every[n_initial + n_boundary :],
    }
    if not (
        np.all(out["initial"][:, 0] == 0.0)
        and np.all(np.abs(out["boundary"][:, 1]) == 1.0)
        and np.array_equal(out["bc"], out["boundary"])
        and np.array_equal(out["ic"], out["initial"])
    ):
        raise RuntimeError("DeepXDE's TimePDE laid out its training points differently.")
    return out


def collocation_points() -> dict[str, np.ndarray]:
    """The points DeepXDE's Burgers example trains on, in ``(t, x)`` order.

    Per loss term: ``"pde"``, all ``num_domain + num_boundary + num_initial = 2780`` training
    points (DeepXDE evaluates the residual on every one of them); ``"bc"``, those with
    ``x = +-1`` (80); ``"ic"``, those with ``t = 0`` (160). Per sampled set: ``"domain"`` (2540
    interior points), ``"boundary"`` (the same points as ``"bc"``) and ``"initial"`` (the same as
    ``"ic"``); ``"pde"`` is ``initial``, ``boundary``, ``domain`` stacked. Float64 copies of
    DeepXDE's float32 points (Hammersley sequences: the same on every call).

    Raises:
        ImportError: deepxde (with torch) is not installed.
    """
    dde, _ = _import_deepxde()
    return _points_of(_data(dde))


def _relative_l2(model) -> tuple[float, np.ndarray]:
    t, x = np.meshgrid(EVAL_T, EVAL_X, indexing="ij")
    inputs = np.stack([x.ravel(), t.ravel()], axis=1).astype(np.float32)  # DeepXDE: (x, t)
    u = np.asarray(model.predict(inputs), np.float64).reshape(t.shape)
    exact = burgers_cole_hopf(EVAL_T[:, None], EVAL_X[None, :])
    return float(np.linalg.norm(u - exact) / np.linalg.norm(exact)), u


def _check_threads(num_threads):
    if num_threads is not None and (
        isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1
    ):
        raise ValueError(f"num_threads must be a positive int or None; got {num_threads!r}.")


class BurgersTrainer:
    """DeepXDE's Burgers PINN, trained in chunks of Adam iterations (so that another library's
    chunks can run in between: the same machine phases for both sides of a comparison).

    Each :meth:`train` call is one ``model.train`` of DeepXDE, which continues the optimiser's
    state; DeepXDE evaluates its test losses at the start and the end of every call, so the first
    and the last iteration of each call are left out of the timing.

    Args:
        seed: ``dde.config.set_random_seed`` (network initialisation; the Hammersley points do
            not depend on it).
        num_threads: ``torch.set_num_threads`` (default: leave torch's setting).

    Raises:
        ImportError: deepxde (with torch) is not installed.
    """

    def __init__(self, seed: int = 0, *, num_threads: int | None = None):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}.")
        _check_threads(num_threads)
        dde, torch = _import_deepxde()
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        dde.config.set_random_seed(seed)
        self._dde, self._torch, self.seed = dde, torch, seed
        self._data = _data(dde)
        self.points = _points_of(self._data)
        self.net = dde.nn.FNN(CONFIG["layers"], CONFIG["activation"], CONFIG["initializer"])
        self.model = dde.Model(self._data, self.net)
        self.model.compile(CONFIG["optimizer"], lr=CONFIG["learning_rate"])
        self.device = str(next(self.net.parameters()).device)
        self.timed_iterations = 0
        self.timed_wall_s = 0.0
        self.timed_cpu_s = 0.0
        self.train_wall_s = 0.0
        self.first_iteration_s: float | None = None

    def _sync(self):
        # On a GPU the iterations are queued: a stamp must wait for the work before it.
        if self.device.startswith("cuda"):
            self._torch.cuda.synchronize()

    def train(self, iterations: int) -> tuple[float, float]:
        """``iterations`` more Adam iterations (at least 3); returns the wall and process-CPU
        seconds per iteration of this call's timed iterations (its 2nd .. second-to-last)."""
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 3:
            raise ValueError(f"iterations must be an int >= 3; got {iterations!r}.")
        stamps: list[tuple[float, float]] = []
        trainer = self

        class _Clock(self._dde.callbacks.Callback):
            def on_batch_begin(self):
                trainer._sync()
                stamps.append((time.perf_counter(), time.process_time()))

        start = time.perf_counter()
        # display_every beyond any step: no test evaluation inside a call.
        self.model.train(
            iterations=iterations, display_every=10**12, callbacks=[_Clock()], verbose=0
        )
        self.train_wall_s += time.perf_counter() - start
        if self.first_iteration_s is None:
            self.first_iteration_s = stamps[1][0] - stamps[0][0]
        n = iterations - 2
        wall = stamps[iterations - 1][0] - stamps[1][0]
        cpu = stamps[iterations - 1][1] - stamps[1][1]
        self.timed_iterations += n
        self.timed_wall_s += wall
        self.timed_cpu_s += cpu
        return wall / n, cpu / n

    def result(self, *, return_prediction: bool = False) -> dict:
        """The run so far: ``seconds_per_adam_iteration`` and ``cpu_seconds_per_adam_iteration``
        (the means over every timed iteration; CPU time counts all threads and, unlike the wall
        time, does not grow when other work shares the machine), ``first_iteration_s``,
        ``relative_l2`` (on the evaluation grid against the Cole-Hopf solution), ``iterations``,
        ``num_points`` per term, ``network``, ``final_losses`` (pde, bc, ic), ``config``
        (:data:`CONFIG`), versions and the torch thread count; with ``return_prediction``, also
        ``"prediction"``, the ``(100, 256)`` float64 array ``u[i, j] = u(t[i], x[j])`` on the
        evaluation grid (not JSON-serialisable)."""
        if self.timed_iterations == 0:
            raise RuntimeError("train() has not run yet.")
        error, prediction = _relative_l2(self.model)
        out = {
            "library": "deepxde",
            "deepxde_version": self._dde.__version__,
            "torch_version": self._torch.__version__,
            "backend": self._dde.backend.backend_name,
            "torch_num_threads": self._torch.get_num_threads(),
            "device": self.device,
            "seed": self.seed,
            "iterations": int(self.model.train_state.step),
            "seconds_per_adam_iteration": self.timed_wall_s / self.timed_iterations,
            "cpu_seconds_per_adam_iteration": self.timed_cpu_s / self.timed_iterations,
            "first_iteration_s": self.first_iteration_s,
            "train_wall_s": self.train_wall_s,
            "load_average_1min": os.getloadavg()[0],
            "relative_l2": error,
            "final_losses": [float(v) for v in np.ravel(self.model.train_state.loss_train)],
            "num_points": {name: len(self.points[name]) for name in ("pde", "bc", "ic")},
            "network": {
                "layers": CONFIG["layers"],
                "activation": CONFIG["activation"],
                "initializer": CONFIG["initializer"],
                "num_parameters": int(sum(p.numel() for p in self.net.parameters())),
            },
            "config": dict(CONFIG),
        }
        if return_prediction:
            out["prediction"] = prediction
        return out


def run(
    num_adam: int,
    seed: int = 0,
    *,
    num_threads: int | None = None,
    return_prediction: bool = False,
) -> dict:
    """Train DeepXDE's Burgers PINN for ``num_adam`` Adam iterations in one call; time and error
    (:meth:`BurgersTrainer.result`: the time per iteration is the mean over iterations
    2 .. num_adam - 1).

    Raises:
        ImportError: deepxde (with torch) is not installed.
    """
    if isinstance(num_adam, bool) or not isinstance(num_adam, int) or num_adam < 3:
        raise ValueError(f"num_adam must be an int >= 3; got {num_adam!r}.")
    trainer = BurgersTrainer(seed, num_threads=num_threads)
    trainer.train(num_adam)
    return trainer.result(return_prediction=return_prediction)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-adam", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args(argv)
    with contextlib.redirect_stdout(sys.stderr):  # DeepXDE's messages; stdout is the JSON
        result = run(args.num_adam, args.seed, num_threads=args.threads)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
