r"""Neural ODEs on diffrax, with the statistics and regularisers that control their cost.

A neural ODE ("Neural Ordinary Differential Equations") defines a model by
:math:`\mathrm{d}y/\mathrm{d}t = f_\theta(t, y)` and evaluates it with an adaptive solver, whose
cost — the number of function evaluations (NFE) — is set by the learned dynamics. The regularisers
of :mod:`._regularisers` add the solver's own error/stiffness heuristics to the loss so that
training prefers dynamics that are cheap to integrate.
"""

from __future__ import annotations

from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import RESULTS, as_float, check_int
from ._driver import check_ts, nan_if, solver_setup
from ._regularisers import AbstractRegulariser, as_regulariser


class ODESolution(eqx.Module):
    """What a :class:`NeuralODE` call returns.

    ``ys[i]`` is the state at ``ts[i]``. ``num_steps = num_accepted_steps + num_rejected_steps``.
    ``nfe`` counts every vector-field evaluation of the call (-1 for implicit solvers, whose count
    is data dependent); for a local regulariser it includes the probe step. ``error_estimate`` and
    ``stiffness_estimate`` are the regularisation terms :math:`R_E`, :math:`R_S` (scalars) of the
    regulariser used, and None when it did not compute them — add ``weight * term`` to the loss.
    ``probe_time`` is :math:`t_r` of a local regulariser.

    After a failed solve (``result`` not successful, seen only with ``throw=False``), ``ys``
    holds the solution up to the last accepted step and ``inf`` at every later time (diffrax's
    fill value for times a solve did not reach): never a plausible number where there is no data.
    Any derivative through ``ys`` (and through the regularisation terms, then NaN themselves) is
    NaN; a loss that selects the failed sample away (``jnp.where`` on ``result``) keeps the
    gradient of the others (except in reverse mode with ``DirectAdjoint``: its derivative is
    forward mode transposed, so it is NaN whatever the selection).
    """

    ts: Float[Array, " n"]
    ys: Float[Array, "n ..."]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    result: RESULTS
    error_estimate: Float[Array, ""] | None = None
    stiffness_estimate: Float[Array, ""] | None = None
    probe_time: Float[Array, ""] | None = None


class NeuralODE(eqx.Module):
    r"""Solve :math:`\mathrm{d}y/\mathrm{d}t = f(t, y, \mathrm{args})` with diffrax.

    ``vector_field`` is an ``eqx.Module`` (its arrays are the trained parameters) called as
    ``vector_field(t, y, args)``; :class:`MLPField` is a ready one. ``solver`` (default Tsit5),
    ``stepsize_controller`` (default ``PIDController(rtol=1e-3, atol=1e-6)``; tolerances may be
    traced arrays, to sweep them) and ``adjoint`` (default ``RecursiveCheckpointAdjoint``) are
    diffrax objects. ``dt0`` is the first step; with None and a PID controller it comes from the
    initial-step heuristic of Hairer, Nørsett & Wanner, run here on the bare vector field (inside
    ``diffeqsolve`` diffrax 0.7 falls back to a fixed 0.01, whatever the time scale).
    ``max_steps`` bounds the solve (``result`` is then ``max_steps_reached``). A non-finite state
    (a NaN ``y0``, a field that returns NaN or inf) ends the solve at that step with ``result``
    ``nonfinite``; diffrax alone rejects such steps until ``max_steps``.

    ``throw=True`` (the default) raises on a failed solve, when the compiled code runs: a result
    that failed silently would enter a loss as ``inf``. ``throw=False`` returns the code in
    :class:`ODESolution` ``.result`` for the caller to handle (e.g. to skip such samples).

    A call solves one initial condition ``y0`` (any array shape); batch with ``jax.vmap``, which
    gives every sample its own adaptive steps and statistics.
    """

    vector_field: Callable
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController
    adjoint: dfx.AbstractAdjoint
    dt0: float | None
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)

    def __init__(
        self,
        vector_field: Callable,
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        adjoint: dfx.AbstractAdjoint | None = None,
        *,
        dt0: float | None = None,
        max_steps: int = 4096,
        throw: bool = True,
    ):
        if not callable(vector_field):
            raise TypeError(
                f"vector_field must be callable as f(t, y, args); got {type(vector_field)}."
            )
        self.vector_field = vector_field
        self.solver, self.stepsize_controller, self.adjoint = solver_setup(
            solver, stepsize_controller, adjoint, max_steps, dt0, rtol=1e-3, atol=1e-6
        )
        if not isinstance(throw, bool):
            raise TypeError(f"throw must be a bool; got {type(throw).__name__}.")
        self.dt0 = dt0
        self.max_steps = max_steps
        self.throw = throw

    def __call__(
        self,
        ts: Float[ArrayLike, " n"],
        y0: Float[ArrayLike, "..."],
        args=None,
        *,
        regulariser: AbstractRegulariser | None = None,
        key: PRNGKeyArray | None = None,
    ) -> ODESolution:
        """Solve from ``ts[0]`` to ``ts[-1]`` starting at ``y0``; save at every ``ts``.

        ``regulariser``: None, or a regulariser such as :class:`GlobalRegulariser` or
        :class:`LocalRegulariser` (which needs ``key``): it runs the solve, instrumented as it
        needs, and the returned :class:`ODESolution` carries its regularisation terms.
        """
        if jnp.iscomplexobj(y0) or jnp.iscomplexobj(ts):
            # as_float would drop the imaginary part without a word.
            raise TypeError(
                f"y0 and ts must be real; got dtypes {jnp.result_type(y0)} and "
                f"{jnp.result_type(ts)}."
            )
        y0 = as_float(y0)
        ts = check_ts(as_float(ts).astype(y0.dtype))
        solved = as_regulariser(regulariser).solve(self, ts, y0, args, key)
        stiffness = solved.stiffness_estimate
        if stiffness is not None:
            stiffness = nan_if(stiffness, solved.result != RESULTS.successful)
        return ODESolution(
            **solved.solution_fields(ts, self.throw),
            stiffness_estimate=stiffness,
        )


class MLPField(eqx.Module):
    r"""A multilayer-perceptron vector field :math:`f_\theta(t, y)` for :class:`NeuralODE`.

    ``y`` has shape ``(..., dim)``; leading axes are mapped over (so one field serves a single
    state or a batch solved jointly). With ``time_dependent`` the input is ``[y, t]``.
    ``final_activation`` (e.g. ``jnp.tanh``) bounds the field, as in diffrax's neural-ODE example.
    """

    mlp: eqx.nn.MLP
    dim: int = eqx.field(static=True)
    time_dependent: bool = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: Callable = jax.nn.softplus,
        final_activation: Callable = lambda x: x,
        time_dependent: bool = False,
    ):
        check_int("dim", dim)
        check_int("width", width)
        check_int("depth", depth, minimum=0)
        self.dim = dim
        self.time_dependent = time_dependent
        self.mlp = eqx.nn.MLP(
            dim + int(time_dependent),
            dim,
            width,
            depth,
            activation=activation,
            final_activation=final_activation,
            key=key,
        )

    def __call__(
        self, t: Float[ArrayLike, ""], y: Float[Array, "... dim"], args=None
    ) -> Float[Array, "... dim"]:
        if y.shape[-1] != self.dim:
            raise ValueError(f"y must have last axis {self.dim}; got shape {y.shape}.")
        flat = y.reshape(-1, self.dim)
        if self.time_dependent:
            tt = jnp.broadcast_to(jnp.asarray(t, y.dtype), (flat.shape[0], 1))
            flat = jnp.concatenate([flat, tt], axis=-1)
        return jax.vmap(self.mlp)(flat).reshape(y.shape)
