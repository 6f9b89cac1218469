"""A physics-only FNO against the same FNO trained on data: Burgers, nu = 0.1 (the FNO setting).

Issue 19's check for the operator physics losses of :mod:`jaxsolve.pinn`: "a physics-only FNO on Burgers
trained with the residual loss and no output data: test error within 3x of the same FNO trained
on data". The setting is the FNO paper's Burgers problem ("Fourier Neural Operator for
Parametric Partial Differential Equations", Li et al.): viscous Burgers on the periodic
:math:`[0, 1)` with :math:`\\nu = 0.1`, :math:`u_0 \\sim N(0, 625(-\\Delta + 25I)^{-2})` (zero
mean, the :func:`jaxsolve.pde.burgers_dataset` field), up to :math:`T = 1`. As in PINO
("Physics-Informed Neural Operator for Learning Partial Differential Equations", Li et al.) the
operator is a 2-D FNO on the space-time grid: its input is :math:`u_0` broadcast over the
``n_t`` frames (the FNO appends the grid coordinates), its output :math:`u(t_k, x_n)` with
:math:`t_k = k T / (n_t - 1)`, and the time axis gets one-sided domain padding (time is not
periodic).

Both runs train the same network from the same initial weights with the same optimiser
(Adam, cosine-decayed learning rate), batch size, inputs and number of steps,
with :func:`jaxsolve.train.fit`:

* ``physics`` — :class:`jaxsolve.pinn.BurgersPhysicsLoss` (mean squared residual on the
  output grid plus the initial-condition term), no solution anywhere in training;
* ``data`` — the relative L2 error against solutions computed by :mod:`jaxsolve.pde` (ETDRK4 on
  a fine grid, subsampled; the generator is checked against :func:`jaxsolve.pde.burgers_dataset`
  at :math:`T`).

Both are scored on held-out initial conditions by the relative L2 error over the whole
space-time field (and at :math:`t = T` alone). As a check of the residual itself, the result
also holds the physics loss of the reference solutions, which must be far below the loss the
physics-trained model reaches.

Run: ``python benchmarks/_physics_fno.py [--quick]`` (prints the dict as JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import optax

from jaxsolve import operators, pde, pinn, train
from jaxsolve._core import per_sample_keys

NU = 0.1
T = 1.0


def _config(quick: bool) -> dict:
    if quick:
        return dict(
            nx=32, nt=17, fine=512, substeps=8, n_train=64, n_test=32, width=16, modes=(8, 8),
            n_layers=4, batch=16, steps=300, lr=3e-3,
        )  # fmt: skip
    return dict(
        nx=64, nt=33, fine=1024, substeps=4, n_train=200, n_test=50, width=20, modes=(12, 12),
        n_layers=4, batch=16, steps=800, lr=3e-3,
    )  # fmt: skip


def burgers_trajectories(key, n, cfg, offset=0):
    """``(u0, u)``: ``u0`` ``(n, 1, nx)``, ``u`` ``(n, 1, nt, nx)`` on ``t_k = k T / (nt - 1)``.

    Drawn and solved as :func:`jaxsolve.pde.burgers_dataset` does (the same random field, sample
    ``i`` from ``fold_in(key, offset + i)``, ETDRK4 on ``cfg["fine"]`` points, subsampled), but
    every frame is kept.
    """
    nx, nt, fine, sub = cfg["nx"], cfg["nt"], cfg["fine"], cfg["substeps"]
    r = fine // nx
    steps = (nt - 1) * sub
    dt = T / steps
    grf = pde.GaussianRandomField(alpha=2.0, tau=5.0, scale=625.0, zero_mean=True)
    stepper = pde.ETDRK(pde.Burgers(NU), dt, (fine,))

    def one(k):
        u0 = grf.sample(k, (fine,))[None]
        traj = pde.rollout(stepper.step_spectral, stepper.to_spectral(u0), steps, every=sub)
        u = jax.vmap(stepper.from_spectral)(traj).astype(u0.dtype)  # (nt, 1, fine)
        return u0[:, ::r], jnp.moveaxis(u, 0, 1)[:, :, ::r]

    keys = per_sample_keys(key, n, offset)
    return jax.jit(jax.vmap(one))(keys)


def _check_generator(key, cfg):
    """The last frame equals :func:`jaxsolve.pde.burgers_dataset`'s ``u(T)`` for the same keys."""
    n = 4
    u0, u = burgers_trajectories(key, n, cfg)
    steps = (cfg["nt"] - 1) * cfg["substeps"]
    a0, aT = pde.burgers_dataset(
        key, n, cfg["nx"], nu=NU, T=T, fine_resolution=cfg["fine"], dt=T / steps,
        cache_dir=None, progress=False,
    )  # fmt: skip
    return max(float(jnp.max(jnp.abs(u0 - a0))), float(jnp.max(jnp.abs(u[:, :, -1] - aT))))


def _space_time_input(u0, nt):
    """PINO's input: ``u0`` ``(n, 1, nx)`` broadcast to ``(n, 1, nt, nx)``."""
    return jnp.broadcast_to(u0[:, :, None, :], (u0.shape[0], 1, nt, u0.shape[-1]))


def _relative_l2(pred, target):
    return jax.vmap(operators.relative_lp_loss)(pred, target)


def run(quick: bool = False, seed: int = 0, *, residual_start: int = 1) -> dict:
    """Train the FNO physics-only and on data; return both test errors and their ratio.

    Args:
        quick: a small version (a 32 x 17 grid, 64 training inputs, 300 steps), for the tests.
        seed: seeds the data, the initial weights and the minibatches.
        residual_start: the first frame whose residual enters the physics loss (see
            :class:`jaxsolve.pinn.EvolutionPhysicsLoss`): 1, the equation on
            :math:`(0, T]`, since the exact solution's residual at :math:`t = 0` is far from
            zero for these rough :math:`u_0` (``physics_loss_reference`` shows it with 0).

    Returns:
        a dict with the configuration, ``error_physics`` / ``error_data`` (mean relative L2 over
        the test set, whole space-time field), ``error_*_at_T``, ``ratio`` (physics / data),
        ``steps``, ``wall_s_*`` and ``cpu_s_*`` (process CPU time of each training), and ``physics_loss_reference`` / ``physics_loss_trained`` (the
        physics loss of the test solutions and of the physics-trained predictions).
    """
    cfg = _config(quick)
    nt = cfg["nt"]
    key = jax.random.PRNGKey(seed)
    k_data, k_model, k_fit = jax.random.split(key, 3)

    t0 = time.perf_counter()
    generator_mismatch = _check_generator(k_data, cfg)
    u0_train, u_train = burgers_trajectories(k_data, cfg["n_train"], cfg)
    u0_test, u_test = burgers_trajectories(k_data, cfg["n_test"], cfg, offset=cfg["n_train"])
    x_train, x_test = _space_time_input(u0_train, nt), _space_time_input(u0_test, nt)
    data_s = time.perf_counter() - t0

    pad_cells = max(1, round(0.25 * nt))
    model = operators.FNO(
        2, 1, 1, width=cfg["width"], modes=cfg["modes"], n_layers=cfg["n_layers"], key=k_model,
        domain_padding=(pad_cells / nt, 0.0), padding_mode="one-sided",
    )  # fmt: skip
    physics = pinn.BurgersPhysicsLoss(NU, T=T, ic_weight=10.0, residual_start=residual_start)

    def physics_loss(m, batch, key):
        (x,) = batch
        pred = jax.vmap(m)(x)
        return jnp.mean(jax.vmap(physics.loss)(pred, x))

    def data_loss(m, batch, key):
        x, y = batch
        return jnp.mean(_relative_l2(jax.vmap(m)(x), y))

    schedule = optax.cosine_decay_schedule(cfg["lr"], cfg["steps"])
    common = dict(
        optimizer=optax.adam(schedule), num_steps=cfg["steps"], key=k_fit,
        batch_size=cfg["batch"], progress=False,
    )  # fmt: skip

    out = {"config": cfg, "nu": NU, "T": T, "ic_weight": 10.0, "seed": seed}
    out["residual_start"] = residual_start
    out["generator_vs_burgers_dataset_max_abs"] = generator_mismatch
    out["data_generation_s"] = data_s
    predict = jax.jit(jax.vmap(lambda m, x: m(x), in_axes=(None, 0)))
    for name, loss_fn, data in (
        ("physics", physics_loss, (x_train,)),
        ("data", data_loss, (x_train, u_train)),
    ):
        t0, c0 = time.perf_counter(), time.process_time()
        result = train.fit(loss_fn, model, data, **common)
        jax.block_until_ready(result.model)
        out[f"wall_s_{name}"] = time.perf_counter() - t0
        out[f"cpu_s_{name}"] = time.process_time() - c0  # all threads; steadier on a busy machine
        pred = predict(result.model, x_test)
        out[f"error_{name}"] = float(jnp.mean(_relative_l2(pred, u_test)))
        out[f"error_{name}_at_T"] = float(jnp.mean(_relative_l2(pred[:, :, -1], u_test[:, :, -1])))
        out[f"final_train_loss_{name}"] = float(result.history["loss"][-1])
        if name == "physics":
            out["physics_loss_trained"] = float(jnp.mean(jax.vmap(physics.loss)(pred, x_test)))
    out["physics_loss_reference"] = float(jnp.mean(jax.vmap(physics.loss)(u_test, x_test)))
    out["physics_loss_init"] = float(
        jnp.mean(jax.vmap(physics.loss)(predict(model, x_test), x_test))
    )
    out["steps"] = cfg["steps"]
    out["ratio"] = out["error_physics"] / out["error_data"]
    out["within_3x"] = bool(out["ratio"] <= 3.0)
    out["device"] = str(jax.devices()[0])
    out["load_average_1min"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--residual-start", type=int, default=1)
    args = parser.parse_args()
    result = run(quick=args.quick, seed=args.seed, residual_start=args.residual_start)
    print(json.dumps(result, indent=2))
