"""Tour section: a consistency model trained on the 2-D ring, sampled in one and two steps."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ._context import TourContext, pyplot, ring_mixture, scatter_panel

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def fewstep_section(ctx: TourContext) -> None:
    from .. import diffusion as jd
    from .. import train
    from ..diffusion import fewstep as fs

    plt = pyplot()
    ctx.say("\n== Few-step generation: consistency training, then sampling in one and two steps")
    ring = ring_mixture()  # the data; also an exact oracle, the multistep teacher below
    sigma_data = float(np.sqrt(np.trace(np.asarray(ring.covariance())) / ring.dim))
    steps = ctx.pick(1000, 8000)
    student = fs.ConsistencyFunction(
        jd.NoiseMLP(2, ctx.pick(64, 256), 3, key=jax.random.PRNGKey(0)),
        sigma_min=SIGMA_MIN,
        sigma_data=sigma_data,
    )

    # Consistency training from the data alone ("Improved Techniques for Training Consistency
    # Models": pseudo-Huber metric, lognormal levels, the discretisation doubling with
    # progress); the student is its own target, the EMA is what samples.
    def ict_loss(model, x0, key, step):
        return fs.consistency_training_loss(
            model, model, x0, key, progress=step / steps, sigma_min=SIGMA_MIN, sigma_max=SIGMA_MAX
        )

    result = train.fit(
        ict_loss,
        student,
        lambda k: ring.sample(k, ctx.pick(256, 512)),
        # Full: bench_fewstep's ring configuration (its iCT row: 0.120 at two steps, 1.04x the
        # exact 40-step teacher).
        optimizer=optax.adam(optax.cosine_decay_schedule(ctx.pick(2e-3, 1e-3), steps, 0.05)),
        num_steps=steps,
        key=jax.random.PRNGKey(1),
        with_step=True,
        ema_decay=ctx.pick(0.99, 0.999),
        steps_per_call=ctx.pick(steps, 2000),
        desc="consistency training (iCT)",
    )
    cm = result.ema_model
    ctx.say(
        f"trained a consistency function (NoiseMLP, EDM scalings, f(x, {SIGMA_MIN}) = x) for "
        f"{steps} Adam steps with iCT's curriculum"
    )

    n = ctx.pick(1024, 4096)
    x_max = SIGMA_MAX * jax.random.normal(jax.random.PRNGKey(2), (n, 2))

    teacher_nfe = (1, 2, 40)

    @jax.jit
    def generate(x_max):
        # The student: one step is f(x, sigma_max); two re-noise to sigma_d tan(1.1) (sCM's
        # middle level) and denoise again. The teacher: the exact oracle's own probability flow
        # on DPM-Solver++(2M), one evaluation a step. Grids padded to one shape per model, so
        # one compile serves every step count.
        student_grids = jnp.array(
            [[SIGMA_MAX, 0.0, 0.0], [SIGMA_MAX, sigma_data * np.tan(1.1), 0.0]]
        )
        student = jax.vmap(
            lambda g, k: jd.sample(
                cm, x_max, g, fs.ConsistencySampler(SIGMA_MIN), key=jax.random.PRNGKey(3), n_steps=k
            )
        )(student_grids, jnp.array([1, 2]))
        teacher_grids = jnp.stack(
            [jd.karras_sigmas(k, SIGMA_MIN, SIGMA_MAX, max_steps=40) for k in teacher_nfe]
        )
        teacher = jax.vmap(lambda g: jd.sample(ring, x_max, g, jd.DPMSolverPP(order=2)))(
            teacher_grids
        )
        return student, teacher

    (one, two), teacher = generate(x_max)
    data = ring.sample(jax.random.PRNGKey(4), n)
    fresh = ring.sample(jax.random.PRNGKey(5), n)

    @jax.jit
    def distances(sets, data):
        # Sliced Wasserstein to data drawn from the oracle, averaged over 4 sets of directions.
        keys = jax.random.split(jax.random.PRNGKey(6), 4)
        return jax.vmap(
            lambda x: jnp.mean(jax.vmap(lambda k: jd.sliced_wasserstein(x, data, k))(keys))
        )(sets)

    sw = np.asarray(distances(jnp.stack([fresh, one, two, *teacher]), data))
    floor, sw_one, sw_two, sw_teacher = (
        sw[0],
        sw[1],
        sw[2],
        dict(zip(teacher_nfe, sw[3:], strict=True)),
    )
    ctx.say(f"sliced Wasserstein distance to {n} data samples (two data sets: {floor:.3f})")
    ctx.say(f"  {'':38s} {'1 NFE':>8s} {'2 NFE':>8s} {'40 NFE':>8s}")
    ctx.say(f"  {'consistency model':38s} {sw_one:8.3f} {sw_two:8.3f} {'':>8s}")
    ctx.say(
        f"  {'exact teacher, DPM-Solver++(2M)':38s} "
        + " ".join(f"{sw_teacher[k]:8.3f}" for k in teacher_nfe)
    )
    ctx.check(
        sw_two < 0.5 * sw_teacher[2],
        "the consistency model's two steps should beat the exact teacher's own two by 2x",
    )
    # The few-step bar of bench_fewstep: two steps within 2x of the exact 40-step teacher (its
    # iCT row: 1.04x). The quick run claims 3x: it lands at about 1.3x, but shorter or longer
    # quick trainings tried gave 1.8x-2.2x. One step is not claimed: fully trained, one and two
    # steps come within a replicate's noise of each other (bench: 0.128 and 0.120).
    bar = ctx.pick(3, 2)
    ctx.check(
        sw_two < bar * sw_teacher[40],
        f"the consistency model's two steps should come within {bar}x of the exact 40-step teacher",
    )

    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    panels = [
        (one, f"consistency model, 1 step ({sw_one:.2f})"),
        (two, f"consistency model, 2 steps ({sw_two:.2f})"),
        (teacher[1], f"exact teacher, 2 steps ({sw_teacher[2]:.2f})"),
        (teacher[2], f"exact teacher, 40 steps ({sw_teacher[40]:.2f})"),
    ]
    for ax, (points, title) in zip(axes, panels, strict=True):
        scatter_panel(ax, points, title, 4, background=data)
    fig.suptitle("Few-step sampling on the ring (grey: data; sliced Wasserstein in brackets)")
    ctx.savefig(fig, "fewstep_ring.png")
