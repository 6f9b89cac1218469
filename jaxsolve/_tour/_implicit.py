"""Tour section: a deep equilibrium model, trained by implicit differentiation."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array

from ._context import TourContext, pyplot


class _Cell(eqx.Module):
    """z -> tanh(W z + U x + b) with W = V min(1, rho / ||V||_2): a contraction with constant at
    most rho (tanh is 1-Lipschitz) whatever training does to V, so the equilibrium is unique and
    plain iteration reaches it from any start (Banach). V starts at spectral norm rho = 0.9, slow
    enough that the solver matters."""

    v: Array
    u: eqx.nn.Linear
    rho: float = eqx.field(static=True, default=0.9)

    def __init__(self, dim, hidden, key, rho=0.9):
        kv, ku = jax.random.split(key)
        v = jax.random.normal(kv, (hidden, hidden))
        self.v = rho * v / jnp.linalg.norm(v, 2)
        self.u = eqx.nn.Linear(dim, hidden, key=ku)
        self.rho = rho

    @property
    def w(self):
        # The spectral norm of a small matrix is cheap; it is the cap's derivative in V that
        # keeps training on the ball instead of letting Adam step out of it.
        return self.v * jnp.minimum(1.0, self.rho / jnp.linalg.norm(self.v, 2))

    def __call__(self, z, x):
        return jnp.tanh(self.w @ z + self.u(x))


class _Regressor(eqx.Module):
    deq: eqx.Module
    head: eqx.nn.Linear

    def __call__(self, x):
        out = self.deq(x)
        return self.head(out.value)[0], out.solution


def _target(x):
    return jnp.sin(2.0 * x[..., 0]) * jnp.cos(1.5 * x[..., 1])


def deq_section(ctx: TourContext) -> None:
    from .. import implicit as ji
    from .. import train

    plt = pyplot()
    ctx.say("\n== Implicit layers: a deep equilibrium model z* = tanh(W z* + U x)")
    hidden = 32
    kx, kt, km, kh = jax.random.split(jax.random.PRNGKey(0), 4)

    @jax.jit  # one program, not one per operation
    def make_data(kx, kt):
        x_train = jax.random.uniform(kx, (512, 2), minval=-2.0, maxval=2.0)
        x_test = jax.random.uniform(kt, (256, 2), minval=-2.0, maxval=2.0)
        return x_train, x_test, _target(x_train), _target(x_test)

    x_train, x_test, y_train, y_test = make_data(kx, kt)

    def zeros(x):
        return jnp.zeros(hidden)

    def make(cell, solver, **kw):
        # One state_init for every DEQ: a static field, so a new function each time would
        # make every evaluation below a program of its own.
        kw = {"rtol": 1e-5, "atol": 1e-6, **kw}
        return ji.DEQ(cell, solver=solver, state_init=zeros, **kw)

    def with_solver(m, solver, **kw):
        return eqx.tree_at(lambda m: m.deq, m, make(m.deq.cell, solver, **kw))

    # The cap on ||W||_2 makes every solve well posed. Training adds the Jacobian regulariser of
    # "Stabilizing Equilibrium Models by Jacobian Regularization", which keeps the cell's
    # Jacobian well inside the cap where the data are, so the solves stay short.
    gamma = 0.5
    model = _Regressor(
        make(_Cell(2, hidden, km), ji.Anderson(), jacobian_samples=1),
        eqx.nn.Linear(hidden, 1, key=kh),
    )

    def train_loss(m, batch, key):
        x, y = batch
        out = jax.vmap(lambda xi, k: m.deq(xi, key=k))(x, jax.random.split(key, x.shape[0]))
        pred = jax.vmap(m.head)(out.value)[:, 0]
        return jnp.mean((pred - y) ** 2) + gamma * jnp.mean(out.jacobian_loss) / hidden

    def mse(m, x, y):
        pred, sol = jax.vmap(m)(x)
        return jnp.mean((pred - y) ** 2), sol

    # One compiled program per solver configuration, shared by every model it evaluates.
    mse_jit = eqx.filter_jit(mse)

    steps = ctx.pick(200, 1000)
    result = train.fit(
        train_loss,
        model,
        (x_train, y_train),
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps, 0.05)),
        num_steps=steps,
        key=jax.random.PRNGKey(1),
        batch_size=128,
        desc="DEQ (Anderson forward, implicit backward)",
    )
    # The solver table's Anderson(5) configuration (200 steps allowed, about 10 taken), so the
    # three evaluations share one program.
    model, trained = (with_solver(m, ji.Anderson(), max_steps=200) for m in (model, result.model))
    before, _ = mse_jit(model, x_test, y_test)
    after, _ = mse_jit(trained, x_test, y_test)
    ctx.say(
        f"trained {steps} Adam steps (MSE + {gamma} ||J||_F^2 / {hidden}): test MSE "
        f"{float(before):.3f} -> {float(after):.4f} (target variance {np.var(y_test):.3f})"
    )
    ctx.check(after < 0.1 * before, "the DEQ did not learn the target")

    # The checks below on the host, in NumPy: JAX would compile each operation.
    equilibria, steps_taken, converged = {}, {}, {}
    ctx.say("forward solve on 256 test inputs (tolerance 1e-5 relative, max norm):")
    for name, solver in (
        ("Picard", ji.Picard()),
        ("Anderson(5)", ji.Anderson()),
        ("Broyden", ji.Broyden()),
    ):
        net = with_solver(trained, solver, max_steps=200)
        _, s = mse_jit(net, x_test, y_test)
        equilibria[name] = np.asarray(s.value)
        steps_taken[name], converged[name] = np.asarray(s.num_steps), np.asarray(s.successful)
        ctx.say(
            f"  {name:12s} iterations mean {np.mean(steps_taken[name], dtype=np.float32):5.1f}, "
            f"max {np.max(steps_taken[name]):3d}; converged on {np.sum(converged[name])} of 256"
        )
    ctx.check(
        np.all(converged["Picard"]),
        "plain iteration did not converge on every test input, although the cell is a "
        "contraction (||W||_2 <= 0.9)",
    )
    for name in ("Anderson(5)", "Broyden"):
        ok = converged[name]
        faster = np.mean(np.where(ok, steps_taken[name], 0)) < np.mean(
            np.where(ok, steps_taken["Picard"], 0)
        )
        ctx.check(faster, f"{name} did not need fewer iterations than Picard where it converged")
        ctx.check(np.mean(ok) > 0.9, f"{name} failed on more than a tenth of the test inputs")
    lost = {n: int(np.sum(~converged[n])) for n in ("Anderson(5)", "Broyden")}
    if any(lost.values()):
        ctx.say(
            "  (a contraction guarantees plain iteration only; an accelerated solver's "
            "extrapolations carry no such guarantee: "
            + ", ".join(f"{n} missed {k}" for n, k in lost.items())
            + ")"
        )
    # A contraction has one equilibrium: where both converged, they found the same point.
    for name in ("Anderson(5)", "Broyden"):
        gap = np.where(
            converged[name],
            np.max(np.abs(equilibria[name] - equilibria["Picard"]), -1),
            0.0,
        )
        ctx.say(f"  {name} and Picard equilibria differ by at most {float(np.max(gap)):.1e}")
        ctx.check(np.max(gap) < 1e-3, f"{name} and Picard found different equilibria")

    # Picard forward and implicit backward against backprop through the unrolled loop (which
    # reaches the unique equilibrium to 0.9^200 ~ 7e-10 of its distance).
    # Solved to 1e-6 (the forward error is the residual over 1 - 0.9, and it bounds the
    # gradient's), a float32 solve's reach; the backward takes the same tolerances.
    tight = with_solver(
        trained, ji.Picard(), max_steps=400, rtol=1e-6, atol=1e-7, backward=ji.ImplicitDiff()
    )

    def unrolled(m, x, y):
        def predict(x):
            z = jax.lax.fori_loop(0, 200, lambda _, z: m.deq.cell(z, x), jnp.zeros(hidden))
            return m.head(z)[0]

        return jnp.mean((jax.vmap(predict)(x) - y) ** 2)

    g_implicit = eqx.filter_jit(eqx.filter_grad(lambda m: mse(m, x_test, y_test)[0]))(tight)
    g_unrolled = eqx.filter_jit(eqx.filter_grad(lambda m: unrolled(m, x_test, y_test)))(tight)
    # The weights: the cell and the head (the solver's hyper-parameters get zero gradients).
    flat = lambda g: np.concatenate(
        [np.ravel(a) for a in jax.tree_util.tree_leaves((g.deq.cell, g.head))], dtype=np.float64
    )
    gi, gu = flat(g_implicit), flat(g_unrolled)
    rel = float(np.linalg.norm(gi - gu) / np.linalg.norm(gu))
    ctx.say(
        f"gradient check: implicit (IFT) versus backprop through 200 unrolled steps, relative "
        f"difference {rel:.1e} over {gi.size} parameters"
    )
    ctx.check(rel < 1e-3, "implicit and unrolled gradients disagree")

    # Convergence curves, with the iteration budget as data: one compile per solver.
    iters = jnp.arange(0, 41)
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for name, solver in (
        ("Picard", ji.Picard()),
        ("Anderson(5)", ji.Anderson()),
        ("Broyden", ji.Broyden()),
    ):

        @jax.jit
        def residuals(k, solver=solver):
            def one(x):
                return ji.fixed_point(
                    lambda z, x: trained.deq.cell(z, x),
                    jnp.zeros(hidden),
                    x,
                    solver=solver,
                    max_steps=k,
                    rtol=1e-30,
                    atol=1e-30,  # never met: every run takes exactly k steps
                    throw=False,
                ).residual

            return jnp.median(jax.vmap(one)(x_test[:64]))

        curve = np.asarray(jax.vmap(residuals)(iters))
        ax.semilogy(np.asarray(iters), np.maximum(curve, 1e-12), marker=".", label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("median max-norm residual |f(z) - z|")
    ax.set_title("Forward solvers on the trained DEQ (64 test inputs)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ctx.savefig(fig, "deq_convergence.png")
