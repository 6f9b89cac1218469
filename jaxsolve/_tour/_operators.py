"""Tour section: generate viscous Burgers data, train an FNO on it, check it on unseen data."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._context import TourContext, pyplot


def burgers_fno_section(ctx: TourContext) -> None:
    from .. import operators as ops
    from .. import pde, train

    plt = pyplot()
    ctx.say("\n== Neural operators: Burgers data from an ETDRK4 solver, an FNO trained on it")
    n_train, n_test = ctx.pick((200, 50), (800, 100))
    resolution, fine = ctx.pick((128, 1024), (256, 2048))
    # The FNO paper's initial distribution, u0 ~ N(0, 625(-Laplacian + 25 I)^-2), with less
    # viscosity than its nu = 0.1 (which damps u(1) to a few percent of u0): at nu = 0.01 and
    # T = 0.5 shocks form. Solved on a fine grid (time step within the advective CFL limit),
    # subsampled, cached on disk. Made once at twice the training resolution: every other point
    # of it is the training data (both are point values of the same fine solution), and all of
    # it checks resolution invariance below.
    burgers = dict(nu=0.01, T=0.5, dt=5e-4, fine_resolution=fine)
    u0f, u1f = (
        np.asarray(u)
        for u in pde.burgers_dataset(
            jax.random.PRNGKey(0), n_train + n_test, 2 * resolution, **burgers
        )
    )
    u0, u1 = u0f[..., ::2], u1f[..., ::2]  # NumPy: slicing compiles nothing
    ctx.say(
        f"{n_train + n_test} Burgers pairs (u0, u(T={burgers['T']:g})), solved on {fine} points, kept at "
        f"{resolution} ({n_train} to train, {n_test} to test)"
    )
    model = ops.FNO(
        1, 1, 1, width=32, modes=16, n_layers=4, key=jax.random.PRNGKey(1), lifting_channels=0
    )
    steps = ctx.pick(500, 3000)

    def loss_fn(m, batch, key):
        x, y = batch
        return jnp.mean(jax.vmap(lambda a, b: ops.relative_lp_loss(m(a), b))(x, y))

    # One compiled evaluation serves the untrained model, every evaluation during training
    # and the figure; the finer grid is a second compile, for its shape. The data are
    # arguments, not constants of the program.
    @eqx.filter_jit
    def evaluate(m, u0, u1):
        pred = jax.vmap(m)(u0)
        errors = jax.vmap(ops.relative_lp_loss)(pred, u1)
        return jnp.mean(errors), errors, pred

    def test_error(m):
        return {"test_rel_l2": evaluate(m, u0[n_train:], u1[n_train:])[0]}

    result = train.fit(
        loss_fn,
        model,
        (u0[:n_train], u1[:n_train]),
        optimizer=optax.adamw(optax.cosine_decay_schedule(2e-3, steps, 0.02), weight_decay=1e-4),
        num_steps=steps,
        key=jax.random.PRNGKey(2),
        batch_size=20,
        eval_fn=test_error,
        eval_every=steps // 4,
        desc="FNO on Burgers",
    )
    fno = result.model
    history = result.history["eval"]
    untrained = float(test_error(model)["test_rel_l2"])
    final = history[-1][1]["test_rel_l2"]
    ctx.say(
        f"FNO-1D (width 32, 16 modes, 4 layers, {ops.count_params(fno):,} parameters), "
        f"{steps} AdamW steps, batch 20"
    )
    ctx.say(
        "test relative L2 during training: "
        + ", ".join(f"step {s}: {m['test_rel_l2']:.4f}" for s, m in history)
    )
    ctx.say(
        f"test relative L2 on {n_test} unseen samples: {final:.4f} (untrained: {untrained:.3f})"
    )
    ctx.check(final < ctx.pick(0.08, 0.04), f"the FNO's test error {final:.3f} is too high")

    # Resolution invariance: the same weights on data twice as fine.
    fine_err = float(evaluate(fno, u0f[n_train:], u1f[n_train:])[0])
    ctx.say(f"the same weights evaluated at resolution {2 * resolution}: {fine_err:.4f}")
    ctx.check(fine_err < 2 * final + 0.01, "the FNO does not transfer to the finer grid")

    x = np.linspace(0, 1, resolution, endpoint=False)
    _, errors, pred = evaluate(fno, u0[n_train:], u1[n_train:])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=False)
    for ax, i in zip(axes, range(3), strict=True):
        j = n_train + i
        ax.plot(x, np.asarray(u0[j, 0]), color="0.7", label="u0 (input)")
        ax.plot(x, np.asarray(u1[j, 0]), "k", lw=2, label="u(T) solver")
        ax.plot(x, np.asarray(pred[i, 0]), "C3--", lw=1.5, label="FNO")
        err = float(errors[i])
        ax.set_title(f"test sample {i}: relative L2 {err:.3f}", fontsize=10)
        ax.set_xlabel("x")
    axes[0].legend(fontsize=8)
    fig.suptitle(
        f"Burgers (nu = {burgers['nu']:g}): FNO prediction versus the ETDRK4 solution on unseen inputs"
    )
    ctx.savefig(fig, "fno_burgers.png")
