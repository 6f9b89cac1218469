r"""The one sampling driver: a ``lax.scan`` over a sigma grid, each iteration one solver step.

Every solver in :mod:`jaxsolve.diffusion` is a ``step`` this driver calls; the driver owns

* **masking** — iterations past the number of steps (a ``max_steps``-padded grid, or ``n_steps``)
  leave the state untouched, so ``jax.vmap`` over step counts compiles once;
* **the final step** into :math:`\sigma = 0`, which lands on the denoiser output;
* **noise** — draw ``k`` of step ``i`` for sample ``b`` is
  ``normal(fold_in(fold_in(fold_in(key, b), i), k))``, so a sample does not depend on the batch
  size;
* **NFE counting** — its denoiser counts the calls a step makes (see
  :mod:`jaxsolve.diffusion._solvers._base`); a solver never reports a count;
* **adaptive solvers** (``solver.adaptive``) — ``max_steps`` attempts, the remaining ones skipped
  once the final step is taken, and ``RESULTS.max_steps_reached`` if it never is;
* **error reporting** — a NaN or infinity in the state is the result code ``RESULTS.nonfinite``;
  ``throw=True`` (the default) raises it;
* **gradients** — how they flow is the ``adjoint`` object's (:mod:`jaxsolve.diffusion._adjoint`).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import RESULTS, as_float, check_int, is_concrete, shard_batch
from ._adjoint import AbstractAdjoint, as_adjoint
from ._solvers._base import FINAL, SKIP, STEP, AbstractSolver, Evaluations, StepContext


class SampleSolution(eqx.Module):
    """What :func:`sample` returns with ``full_output=True``.

    ``trajectory`` has the state before the first and after every iteration (``None`` unless
    ``save_trajectory=True``); ``nfe`` counts denoiser evaluations; ``num_steps`` the iterations
    that did work; ``result`` is a :data:`~jaxsolve.RESULTS` code.
    """

    value: Float[Array, "..."]
    trajectory: Float[Array, "steps ..."] | None
    nfe: Int[Array, ""]
    num_steps: Int[Array, ""]
    result: RESULTS


def sample(
    denoiser: Callable,
    x: Float[ArrayLike, " *shape"],
    sigmas: Float[ArrayLike, " L"],
    solver: AbstractSolver,
    *,
    key: PRNGKeyArray | None = None,
    n_steps: int | Int[Array, ""] | None = None,
    max_steps: int | None = None,
    noise: Callable | None = None,
    batch_ndim: int = 1,
    full_output: bool = False,
    save_trajectory: bool = False,
    progress: bool = False,
    callback: Callable | None = None,
    throw: bool = True,
    adjoint: AbstractAdjoint | str = "backprop",
    mesh: Mesh | None = None,
    data_axis: str = "data",
) -> Float[Array, " *shape"] | SampleSolution:
    r"""Sample by integrating from ``sigmas[0]`` down the grid with ``solver``.

    The integration is compiled (``equinox.filter_jit``, as diffrax compiles ``diffeqsolve``):
    called outside ``jit``, a second call whose arrays have the same shapes reuses the program.
    Arrays inside the denoiser and solver (an ``eqx.Module``'s weights, a guidance scale) are
    arguments of that program; a plain Python function is part of its identity, so pass the same
    function object (not a new ``lambda`` per call) to reuse it. A denoiser whose non-array parts
    cannot be hashed (a callable dataclass with ``eq=True``) runs uncompiled.

    Args:
        denoiser: ``denoiser(x, sigma) -> x0_hat`` in VE scale, :math:`x = x_0 + \sigma\epsilon`
            (wrap other parameterisations with :func:`from_eps` and friends). Called with the whole
            state ``x`` and a scalar ``sigma``.
        x: the initial state at noise level ``sigmas[0]`` (e.g. ``sigmas[0] * normal``), with
            ``batch_ndim`` leading batch axes.
        sigmas: decreasing noise levels ending in 0 (any grid of :mod:`jaxsolve.diffusion`; a
            ``max_steps``-padded grid has zeros after its first 0).
        solver: an :class:`AbstractSolver`, e.g. ``DPMSolverPP(order=2)``.
        key: PRNG key, required by stochastic solvers.
        n_steps: take only this many steps (a traced integer is fine). Defaults to the number of
            steps in the grid (the index of its first 0); fewer stops early, without the final
            denoising. The solver sees a run of ``n_steps`` steps (``ctx.n``): a solver that adapts
            to the end of its run (the lowered order of a multistep solver's last steps,
            :class:`EDMStochastic`'s ``churn / n``) does so before step ``n_steps``, so its state
            then differs from ``trajectory[n_steps]`` of the whole grid's run (which
            ``save_trajectory`` keeps). Not for adaptive solvers (their attempts are
            ``max_steps``).
        max_steps: the number of attempted steps for adaptive solvers (``solver.adaptive``, e.g.
            :class:`DPMAdaptive`); running out of them before the final step is the result
            ``RESULTS.max_steps_reached``. Other solvers take one step per grid interval.
        noise: optional ``noise(i, k) -> array like x`` replacing the key-based draws (e.g. to
            replay recorded noise or use a Brownian tree).
        batch_ndim: number of leading batch axes of ``x`` for per-sample noise.
        full_output: return a :class:`SampleSolution` instead of the final state.
        save_trajectory: keep every intermediate state (with ``full_output``).
        progress: show a tqdm progress bar; works under ``jit`` (host callbacks).
        callback: ``callback(info)``, called on the host after every step that does work, in
            order (``jax.debug.callback(ordered=True)``, so also under ``jit``), with
            k-diffusion's ``callback`` keys as NumPy values: ``i`` (the step index), ``x`` (the
            state entering step ``i``: ``trajectory[i]`` of ``save_trajectory``), ``sigma``
            (``sigmas[i]``), ``sigma_hat`` (the level of the step's first denoiser call: above
            ``sigma`` after a churn) and ``denoised`` (that call's output, shaped as the solver
            wants it: :class:`CFGPlusPlus`'s stacked branches). Where a step makes no denoiser
            call at its own level (only inside a ``vmap``, ``cond`` or ``jvp`` of the step:
            Restart, whose steps branch with ``cond``; GENIE; TimeShift), ``sigma_hat`` and
            ``denoised`` are NaN. For an adaptive solver ``i`` counts attempts. The sample is the
            one without a callback up to round-off (XLA may fuse a program that sends values to
            the host differently); a gradient under ``adjoint="checkpoint"`` recomputes steps
            and reports them again. ``None`` adds nothing to the program.
        throw: raise if the state became non-finite or an adaptive solver ran out of
            ``max_steps`` (else report it in ``result``; the sample is then not finite).
        adjoint: how reverse-mode gradients flow through sampling, an :class:`AbstractAdjoint`:
            :class:`Backprop` (through the scan; memory grows with the steps),
            :class:`Checkpointed` (steps recomputed in the backward pass; recursive
            checkpointing with ``Checkpointed(checkpoints=k)``) or :class:`AdjointDPM` (the
            continuous adjoint solved backward in exponential-integrator variables, memory
            independent of the number of steps; deterministic solvers on a fixed grid). The
            strings ``"backprop"``, ``"checkpoint"`` and ``"adjoint"`` name ``Backprop()``,
            ``Checkpointed()`` and ``AdjointDPM()``. The sample is the same under every one.
        mesh: a :class:`jax.sharding.Mesh` (e.g. :func:`jaxsolve.sharding.data_mesh`) to split
            the samples over: the first batch axis of ``x`` (its size a multiple of the devices
            on ``data_axis``), the noise and every intermediate state are sharded along it, so
            each device integrates its own samples. The denoiser must act sample by sample (as
            every network and oracle does); the samples equal the one-device ones, stochastic
            solvers included, since each sample's noise is drawn from its own index.
        data_axis: the mesh axis the samples are split over.
    """
    if not isinstance(solver, AbstractSolver):
        raise TypeError(
            f"solver must be a jaxsolve sampler (AbstractSolver); got {type(solver).__name__}."
        )
    adjoint = as_adjoint(adjoint)
    x = as_float(x)
    sigmas = _check_grid(sigmas, solver, x.dtype)
    if not 0 <= batch_ndim <= x.ndim:
        raise ValueError(f"batch_ndim must lie in [0, x.ndim={x.ndim}]; got {batch_ndim}.")
    if mesh is not None:
        if batch_ndim < 1:
            raise ValueError("mesh= splits the first batch axis of x; batch_ndim must be >= 1.")
        x = shard_batch(x, mesh, data_axis)
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable; got {type(callback).__name__}.")
    if solver.stochastic and key is None and noise is None:
        raise ValueError(f"{type(solver).__name__} is stochastic: pass key= (or noise=).")
    adjoint.check(
        solver, max_steps=max_steps, n_steps=n_steps, noise=noise, save_trajectory=save_trajectory
    )

    if solver.adaptive and n_steps is not None:
        # Its attempts are bounded by max_steps=; n_steps would move the level it integrates to.
        raise ValueError(
            f"n_steps is for solvers that take one step per grid interval; "
            f"{type(solver).__name__} is adaptive: bound its attempts with max_steps=."
        )
    grid_steps = sigmas.shape[0] - 1
    n_grid = jnp.argmax(sigmas == 0).astype(jnp.int32)  # index of the first 0 = number of steps
    n = n_grid if n_steps is None else _check_n_steps(n_steps, n_grid, sigmas)
    run = _SamplingRun(
        integrate=functools.partial(
            _integrate_jit if hashable(denoiser, noise, solver, callback) else _integrate,
            sigmas=sigmas,
            solver=solver,
            n=n,
            key=key,
            noise=noise,
            iterations=_num_iterations(solver, grid_steps, max_steps),
            batch_ndim=batch_ndim,
            save_trajectory=save_trajectory,
            progress=progress,
            callback=callback,
            mesh=mesh,
            data_axis=data_axis,
        ),
        final_step=functools.partial(
            _final_step, solver=solver, sigmas=sigmas, n=n, batch_ndim=batch_ndim
        ),
        init=functools.partial(_init, solver=solver, sigmas=sigmas),
        sigmas=sigmas,
    )
    x_out, path, nfe, taken, result = adjoint.loop(run, denoiser, x)
    if not is_concrete(sigmas):
        # A concrete grid was checked above; a traced one is checked as it runs. Its sample is
        # NaN (and so is any gradient through it), never a plausible number.
        grid_ok = _traced_grid_ok(sigmas, solver)
        result = RESULTS.where(grid_ok, result, RESULTS.invalid_grid)
        x_out = x_out * jnp.where(grid_ok, 1.0, jnp.nan).astype(x_out.dtype)
    if throw and mesh is not None:
        # An error raised by a host callback inside a multi-device program stops one device
        # while the others wait for it at their next collective (a hang). So the check runs on
        # the host, in a one-device program, once the sampling program has finished.
        if not is_concrete(result):
            raise ValueError(
                "sample(mesh=..., throw=True) cannot raise from inside jit/vmap: an error raised "
                "on one device of a multi-device program leaves the others waiting. Pass "
                "throw=False and full_output=True, and check the returned result."
            )
        host = jax.device_get(result)
        jax.block_until_ready(host.error_if(np.zeros(()), host != RESULTS.successful))
    elif throw:
        x_out = result.error_if(x_out, result != RESULTS.successful)
    if not full_output:
        return x_out
    trajectory = jnp.concatenate([x[None], path]) if save_trajectory else None
    return SampleSolution(
        value=x_out, trajectory=trajectory, nfe=nfe, num_steps=taken, result=result
    )


class _SamplingRun(NamedTuple):
    """What the adjoint's ``loop`` runs (see :class:`~jaxsolve.diffusion.AbstractAdjoint`)."""

    integrate: Callable  # (denoiser, x, *, scan, keep_final_input) -> the integration
    final_step: Callable  # (denoiser, x, state) -> the step into sigma = 0
    init: Callable  # x -> the solver's initial state
    sigmas: Float[Array, " L"]


def _num_iterations(solver, grid_steps, max_steps):
    """Length of the driver's scan: ``max_steps`` attempts for an adaptive solver, one iteration
    per grid interval otherwise."""
    if solver.adaptive:
        if max_steps is None:
            raise ValueError(
                f"{type(solver).__name__} is adaptive: it needs max_steps= (the number of attempted "
                "steps) in sample()."
            )
        return check_int("max_steps", max_steps)
    if max_steps is not None and max_steps != grid_steps:
        raise ValueError(
            f"max_steps={max_steps} is only for adaptive solvers; {type(solver).__name__} takes "
            f"one step per grid interval ({grid_steps})."
        )
    return grid_steps


def hashable(*trees):
    """Whether the non-array parts of ``trees`` can key a compilation cache (a callable
    dataclass with ``eq=True``, for one, cannot)."""
    try:
        leaves, treedef = jax.tree_util.tree_flatten(eqx.filter(trees, eqx.is_array, inverse=True))
        hash((tuple(leaves), treedef))
    except TypeError:
        return False
    return True


def _integrate(
    denoiser,
    x,
    sigmas,
    solver,
    n,
    key,
    noise,
    *,
    iterations,
    batch_ndim,
    save_trajectory,
    progress,
    mesh,
    data_axis,
    callback=None,
    scan=jax.lax.scan,
    keep_final_input=False,
):
    grid_steps = sigmas.shape[0] - 1
    draw = _noise_source(x, key, noise, batch_ndim)
    if mesh is not None:
        # Each device draws only its own samples' noise; the draws do not depend on the split.
        unsharded_draw = draw
        draw = lambda i, k: shard_batch(unsharded_draw(i, k), mesh, data_axis)

    def body(carry, i):
        x, state, nfe, taken, result, finished, final_input = carry
        ctx = StepContext(
            denoise=None,
            noise=lambda k: draw(i, k),
            sigmas=sigmas,
            i=i,
            n=n,
            sigma=sigmas[jnp.minimum(i, grid_steps)],
            sigma_next=sigmas[jnp.minimum(i + 1, grid_steps)],
            batch_ndim=batch_ndim,
        )
        # Once the step into sigma = 0 is taken, the remaining iterations (an adaptive solver's
        # unused attempts) are skipped.
        phase = jnp.where(finished, SKIP, solver.phase(ctx, state))
        # Branches not taken may still be evaluated (under vmap a switch becomes a select), so
        # each gets noise levels it can use safely: no denoiser call at sigma = 0, no log(0).
        step_ctx = ctx.replace(
            sigma=jnp.where(phase == STEP, ctx.sigma, 1.0),
            sigma_next=jnp.where(phase == STEP, ctx.sigma_next, 0.5),
        )
        final_ctx = ctx.replace(sigma=jnp.where(phase == FINAL, ctx.sigma, 1.0))

        # With a callback, each branch also returns its first denoiser evaluation.
        capture = callback is not None

        def skip_branch(x, state):
            nothing = (_unseen(x, solver.denoiser_output_shape(x.shape)),) if capture else ()
            return x, state, jnp.zeros((), jnp.int32), *nothing

        def final_branch(x, state):
            return _counted(solver, solver.final_step, final_ctx, x, state, denoiser, capture)

        def step_branch(x, state):
            return _counted(solver, solver.step, step_ctx, x, state, denoiser, capture)

        x_new, state_new, used, *first = jax.lax.switch(
            phase, [skip_branch, final_branch, step_branch], x, state
        )
        if capture:
            sigma_hat, denoised = first[0]
            jax.debug.callback(
                functools.partial(_call_back, callback),
                phase != SKIP,
                i,
                x,
                ctx.sigma,
                sigma_hat,
                denoised,
                ordered=True,
            )
        if mesh is not None:
            x_new = shard_batch(x_new, mesh, data_axis)
        finite = jnp.all(jnp.isfinite(x_new))
        result = RESULTS.where((result == RESULTS.successful) & ~finite, RESULTS.nonfinite, result)
        if progress:
            jax.debug.callback(_progress_update, i, iterations)
        if keep_final_input:
            # The state and solver history entering the step into sigma = 0 (the adjoint's
            # residuals: its backward pass starts there).
            final_input = jax.tree_util.tree_map(
                lambda new, old: jnp.where(phase == FINAL, new, old).astype(old.dtype),
                (x, state, i),
                final_input,
            )
        finished = finished | (phase == FINAL)
        carry = (x_new, state_new, nfe + used, taken + (phase != SKIP), result, finished)
        return (*carry, final_input), (x_new if save_trajectory else None)

    state = solver.init(x, sigmas)
    final_input = (x, state, jnp.zeros((), jnp.int32)) if keep_final_input else None
    zero = jnp.zeros((), jnp.int32)
    init = (x, state, zero, zero, RESULTS.successful, jnp.zeros((), bool), final_input)
    (x_out, _, nfe, taken, result, finished, final_input), path = scan(
        body, init, jnp.arange(iterations)
    )
    if solver.adaptive:
        ran_out = (result == RESULTS.successful) & ~finished
        result = RESULTS.where(ran_out, RESULTS.max_steps_reached, result)
        # The state where the attempts ran out is not a sample: NaN, and so is any gradient
        # through it (a product, not a select, whose derivative would be a plausible zero).
        x_out = x_out * jnp.where(ran_out, jnp.nan, 1.0).astype(x_out.dtype)
    return x_out, path, nfe, taken, result, final_input


# Compiled once per denoiser / solver structure, shapes and static options, as diffrax compiles
# ``diffeqsolve``: arrays (the state, the grid, a solver's guidance scale, a module's weights) are
# traced arguments, so calling ``sample`` again outside ``jit`` reuses the program instead of
# tracing and compiling the scan anew; inside a user's ``jit`` / ``vmap`` / ``grad`` it inlines.
# A denoiser whose non-array parts cannot be hashed runs uncompiled.
_integrate_jit = eqx.filter_jit(_integrate)


def _final_context(sigmas, n, grid_steps, batch_ndim):
    """The context of the step into sigma = 0 (the adjoint re-evaluates that step alone)."""
    last = jnp.maximum(n - 1, 0)

    def no_noise(k):
        raise ValueError("the adjoint's final step is deterministic; it draws no noise.")

    return StepContext(
        denoise=None,
        noise=no_noise,
        sigmas=sigmas,
        i=last,
        n=n,
        sigma=sigmas[jnp.minimum(last, grid_steps)],
        sigma_next=jnp.zeros((), sigmas.dtype),
        batch_ndim=batch_ndim,
    )


def _final_step(denoiser, x, state, *, solver, sigmas, n, batch_ndim):
    """The step into sigma = 0 alone (the adjoint differentiates it exactly)."""
    ctx = _final_context(sigmas, n, sigmas.shape[0] - 1, batch_ndim)
    return _counted(solver, solver.final_step, ctx, x, state, denoiser)[0]


def _init(x, *, solver, sigmas):
    return solver.init(x, sigmas)


def _counted(solver, method, ctx, x, state, denoiser, capture=False):
    """``method(ctx, x, state)`` (the solver's step or final step) and the number of denoiser
    evaluations it made: the one place NFE is counted. The denoiser counts its calls while the
    step is traced (into the tally the context's ``cond`` and ``add_evaluations`` also use) and
    checks what it returns (once, at trace time: a wrong shape would otherwise surface deep inside
    a ``lax.switch`` or broadcast silently).

    With ``capture``, also ``(sigma_hat, denoised)``: the step's first denoiser evaluation made at
    the step's own level (traced with ``x``, not inside a ``cond``, ``vmap`` or ``jvp`` of the
    step, whose values cannot leave it), NaN where there is none."""
    tally = Evaluations()
    first = []

    def denoise(y, s):
        tally.count = tally.count + 1
        out = denoiser(y, s)
        expected = solver.denoiser_output_shape(y.shape)
        if not eqx.is_array_like(out):
            raise TypeError(
                f"the denoiser returned a {type(out).__name__}; expected one array of shape "
                f"{expected} (denoiser(x, sigma) -> x0_hat, shaped like x)."
            )
        if jnp.shape(out) != expected:
            raise ValueError(
                f"the denoiser returned shape {jnp.shape(out)}, expected {expected} "
                f"(denoiser(x, sigma) -> x0_hat, shaped like x; x has shape {y.shape})."
            )
        out = jnp.asarray(out).astype(y.dtype)
        if (
            capture
            and not first
            and tally.depth == 0
            # Traced with the step's own x (not inside a cond / vmap / jvp the solver opened
            # without the context): a value of an inner trace cannot leave it.
            and getattr(out, "_trace", None) is getattr(x, "_trace", None)
            and jnp.shape(s) == ()
            and out.shape == expected
        ):
            first.append((jnp.asarray(s, x.dtype), out))
        return out

    x_new, state_new = method(ctx.replace(denoise=denoise, evaluations=tally), x, state)
    out = (x_new.astype(x.dtype), state_new, jnp.asarray(tally.count, jnp.int32))
    if not capture:
        return out
    return (*out, first[0] if first else _unseen(x, solver.denoiser_output_shape(x.shape)))


def _unseen(x, shape):
    """``(sigma_hat, denoised)`` of a step without a denoiser evaluation the callback can see."""
    return jnp.full((), jnp.nan, x.dtype), jnp.full(shape, jnp.nan, x.dtype)


def _call_back(callback, did_work, i, x, sigma, sigma_hat, denoised):
    """Host side of ``sample(callback=...)``: k-diffusion's ``callback`` dict, for steps that
    did work."""
    if bool(did_work):
        callback(
            {"i": int(i), "x": x, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised}
        )


def _noise_source(x, key, noise, batch_ndim):
    if noise is not None:

        def given(i, k):
            z = jnp.asarray(noise(i, k))
            # No reshape: a (d, n) draw for an (n, d) x has the right size and would be
            # scrambled across samples without a word.
            if z.shape != x.shape:
                raise ValueError(
                    f"noise(i, k) must return an array of x's shape {x.shape}; got {z.shape}."
                )
            return z.astype(x.dtype)

        return given
    if key is None:

        def missing(i, k):
            raise ValueError("this solver draws noise: pass key= to sample().")

        return missing
    batch_shape = x.shape[:batch_ndim]
    event_shape = x.shape[batch_ndim:]
    count = int(np.prod(batch_shape, dtype=np.int64))
    sample_keys = jax.vmap(lambda b: jax.random.fold_in(key, b))(jnp.arange(count))

    def draw(i, k):
        def one(sk):
            return jax.random.normal(
                jax.random.fold_in(jax.random.fold_in(sk, i), k), event_shape, x.dtype
            )

        return jax.vmap(one)(sample_keys).reshape(x.shape)

    return draw


def _check_grid(sigmas, solver, dtype):
    sigmas = as_float(sigmas).astype(dtype)
    if sigmas.ndim != 1 or sigmas.shape[0] < 2:
        raise ValueError(
            f"sigmas must be a 1-D grid with at least 2 entries; got shape {sigmas.shape}."
        )
    if not is_concrete(sigmas):
        return sigmas
    s = np.asarray(sigmas, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError("sigmas must be finite and non-negative.")
    zeros = np.nonzero(s == 0)[0]
    if zeros.size == 0:
        raise ValueError(
            f"sigmas must end in 0 (the last step lands on the denoised sample); last entry {s[-1]:.4g}."
        )
    first_zero = int(zeros[0])
    if first_zero == 0:
        raise ValueError("sigmas[0] must be positive.")
    if np.any(s[first_zero:] != 0):
        raise ValueError("sigmas must be all zeros after its first 0 (a max_steps-padded grid).")
    head = s[: first_zero + 1]
    if not solver.allows_increasing_grid and np.any(np.diff(head) >= 0):
        bad = int(np.nonzero(np.diff(head) >= 0)[0][0])
        raise ValueError(
            f"sigmas must be strictly decreasing until its first 0; sigmas[{bad}]={head[bad]:.6g} "
            f"<= sigmas[{bad + 1}]={head[bad + 1]:.6g}."
        )
    return sigmas


def _traced_grid_ok(sigmas, solver):
    """The checks of :func:`_check_grid`, as one boolean computed when the program runs."""
    index = jnp.arange(sigmas.shape[0])
    is_zero = sigmas == 0
    first_zero = jnp.argmax(is_zero)
    ok = (
        jnp.any(is_zero)
        & (first_zero > 0)
        & jnp.all(jnp.isfinite(sigmas))
        & jnp.all(sigmas >= 0)
        & jnp.all(jnp.where(index > first_zero, is_zero, True))
    )
    if not solver.allows_increasing_grid:
        decreasing = jnp.diff(sigmas) < 0
        ok = ok & jnp.all(jnp.where(index[1:] <= first_zero, decreasing, True))
    return ok


def _check_n_steps(n_steps, n_grid, sigmas):
    dtype = np.asarray(n_steps).dtype if is_concrete(n_steps) else jnp.result_type(n_steps)
    if isinstance(n_steps, bool) or not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"n_steps must be an integer; got {n_steps!r} (dtype {dtype}).")
    if jnp.ndim(n_steps) != 0:
        raise ValueError(f"n_steps must be a scalar; got shape {jnp.shape(n_steps)}.")
    if is_concrete(n_steps) and is_concrete(sigmas):
        k = int(np.asarray(n_steps))
        if k < 1 or k > int(n_grid):
            raise ValueError(
                f"n_steps must lie in [1, {int(n_grid)}] (the steps this grid allows); got {k}."
            )
        return jnp.asarray(k, jnp.int32)
    n_steps = jnp.asarray(n_steps, jnp.int32)
    n_steps = eqx.error_if(n_steps, n_steps < 1, "n_steps must be at least 1.")
    return eqx.error_if(
        n_steps, n_steps > n_grid, "n_steps is larger than the number of steps the grid allows."
    )


# Progress bars from inside compiled code: host callbacks keyed by the iteration index.
_BARS: dict[int, Any] = {}
_LOCK = threading.Lock()


def _progress_update(i, total):
    from tqdm.auto import tqdm

    i, total = int(i), int(total)
    with _LOCK:
        bar = _BARS.get(total)
        if bar is None or i == 0:
            if bar is not None:
                bar.close()
            bar = _BARS[total] = tqdm(total=total, desc="sampling", unit="step", leave=False)
        bar.n = max(bar.n, i + 1)
        bar.refresh()
        if bar.n >= total:
            bar.close()
            del _BARS[total]


__all__ = ["SKIP", "SampleSolution", "sample"]
