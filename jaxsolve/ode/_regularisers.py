r"""Regularisers that make learned dynamics cheap for an adaptive solver.

Both use the solver's own cost heuristics (see :mod:`._solver_tools`): the scaled local error
estimate :math:`E_n` that decides acceptance and step size, and the stiffness estimate
:math:`h_n|\hat\lambda_n|` that is compared against the stability region.

* **Global** — "Opening the Blackbox: Accelerating Neural Differential Equations by Regularizing
  Internal Solver Heuristics": sum over every accepted step of the adaptive solve,

  .. math:: R_E = \sum_n E_n |h_n|, \qquad R_S = \sum_n h_n |\hat\lambda_n|,

  differentiated through the discrete solver (discretise-then-optimise adjoint). Step sizes are
  constants for differentiation (diffrax stops gradients through the controller), as in the paper.

* **Local** — "Locally Regularized Neural Differential Equations: Some Black Boxes Were Meant to
  Remain Closed!": the same heuristics of *one* step taken from a random time :math:`t_r`,

  .. math:: R_E^{loc} = E(t_r, y(t_r), h_r)\,|h_r|, \qquad R_S^{loc} = h_r|\hat\lambda(t_r)|,

  where :math:`h_r` is the step the controller would start with at :math:`(t_r, y(t_r))` (the
  Hairer initial-step heuristic for a PID controller, ``dt0`` otherwise; not differentiated).
  The paper's two strategies: ``sampling="unbiased"`` draws :math:`t_r \sim U[t_0, t_1)` and
  saves the solution there too — only :math:`y(t_r)` comes from the solve, as an ordinary saved
  output, so it works with **any** adjoint; ``sampling="biased"`` draws :math:`t_r` uniformly among
  the starting points of the solver's own accepted steps (denser where the dynamics are hard),
  kept by reservoir sampling in an extra state component, which needs a discretise-then-optimise
  adjoint.

**SDE solves.** Both apply to :class:`~jaxsolve.ode.NeuralSDE` solves with an embedded error
estimate (e.g. diffrax's Heun or SPaRK under Stratonovich calculus), through
:meth:`AbstractRegulariser.solve_sde`: :math:`E_n` is the controller's scaled norm of the SDE
solver's embedded estimate, and the local probe is one step of the same solver from
:math:`(t_r, y(t_r))` on the sample's own Brownian path (its virtual Brownian tree), with
:math:`h_r` the controller's first step ``dt0`` clipped to :math:`t_1` (the tree ends there). The
stiffness estimate reads Runge–Kutta stages of an ODE and has no SDE counterpart.

Both are zero for a vector field the solver integrates exactly (a polynomial in :math:`t` within
the order of the embedded pair: the error estimate is then exactly zero) and positive otherwise.
"""

from __future__ import annotations

import abc
from typing import NamedTuple

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._core import RESULTS, check_choice
from ._driver import (
    DISCRETE_ADJOINTS,
    RawSolve,
    count_evaluations,
    integrate_with,
    map_result,
    maybe_throw,
    nan_if,
)
from ._solver_tools import (
    InstrumentedSolver,
    controller_init_evaluations,
    error_norm_fn,
    require_error_estimate,
    require_stiffness_estimate,
    stages_per_step,
    stiffness_estimate,
)


class RegularisedSolve(NamedTuple):
    """What :meth:`AbstractRegulariser.solve` returns: the solve, its outcome (which a probe step
    may change), and the regularisation terms (None for those not computed)."""

    raw: RawSolve
    result: RESULTS
    error_estimate: Float[Array, ""] | None = None
    stiffness_estimate: Float[Array, ""] | None = None
    probe_time: Float[Array, ""] | None = None

    def solution_fields(self, ts, throw: bool) -> dict:
        """The fields an ODE or SDE solution shares, saved at ``ts``: the values (raising on a
        failed code when ``throw``), the step counts, the NFE, the outcome and the terms."""
        raw = self.raw
        # A probe step may fail after a successful solve: its term follows the combined outcome.
        failed = self.result != RESULTS.successful
        return dict(
            ts=ts,
            ys=maybe_throw(self.result, raw.ys, throw),
            num_steps=raw.num_steps,
            num_accepted_steps=raw.num_accepted_steps,
            num_rejected_steps=raw.num_rejected_steps,
            nfe=raw.nfe,
            result=self.result,
            error_estimate=None
            if self.error_estimate is None
            else nan_if(self.error_estimate, failed),
            probe_time=self.probe_time,
        )


class AbstractRegulariser(eqx.Module):
    """A loss term read from the adaptive solver's own heuristics.

    :class:`~jaxsolve.ode.NeuralODE` hands its solve to the regulariser: :meth:`solve` runs it,
    instrumented as this regulariser needs (through :func:`~._driver.integrate_with`), and returns
    the terms it adds to the :class:`~jaxsolve.ode.ODESolution`. :class:`~jaxsolve.ode.NeuralSDE`
    does the same through :meth:`solve_sde`. A new regulariser is a subclass; neither model
    changes.
    """

    @abc.abstractmethod
    def solve(self, node, ts, y0, args, key) -> RegularisedSolve:
        """Solve ``node``'s equation from ``ts[0]`` to ``ts[-1]`` (saving at ``ts``), with the
        terms of this regulariser.

        Args:
            node: the NeuralODE (its vector field, solver, controller, adjoint, ``dt0`` and
                ``max_steps``); ``integrate_with(node, ts, y0, args, error=, stiffness=,
                reservoir_key=)`` runs the solve, gathering what the keywords ask for.
            ts: the save times (checked: finite, increasing, at least two).
            y0: the initial state.
            args: passed to the vector field.
            key: the call's PRNG key, or None.
        """

    def solve_sde(self, sde, terms, ts, y0, args, key) -> RegularisedSolve:
        """Solve ``sde``'s equation from ``ts[0]`` to ``ts[-1]`` (saving at ``ts``), with the
        terms of this regulariser. A regulariser without an SDE counterpart keeps this default,
        which raises ``TypeError``.

        Args:
            sde: the :class:`~jaxsolve.ode.NeuralSDE` (its solver, controller, adjoint and
                ``dt0``); ``sde.integrate(terms, ts, y0, args, error=, reservoir_key=)`` runs the
                solve, gathering what the keywords ask for.
            terms: the drift and noise terms of this sample (``diffrax.MultiTerm``), the noise
                on the sample's Brownian path.
            ts: the save times (checked: finite, increasing, at least two).
            y0: the initial state.
            args: passed to the drift and the diffusion.
            key: a PRNG key of the regulariser's own, independent of the Brownian path.
        """
        del sde, terms, ts, y0, args, key
        raise TypeError(
            f"regulariser: {type(self).__name__} has no SDE solve (solve_sde); a NeuralSDE takes "
            "None, GlobalRegulariser(error=True) or LocalRegulariser()."
        )


class NoRegulariser(AbstractRegulariser):
    """The plain solve: no instrumentation and no terms (what ``regulariser=None`` means)."""

    def solve(self, node, ts, y0, args, key):
        del key
        raw = integrate_with(node, ts, y0, args)
        return RegularisedSolve(raw, raw.result)

    def solve_sde(self, sde, terms, ts, y0, args, key):
        del key
        raw = sde.integrate(terms, ts, y0, args)
        return RegularisedSolve(raw, raw.result)


def as_regulariser(regulariser) -> AbstractRegulariser:
    """``regulariser`` itself, :class:`NoRegulariser` for None; ``TypeError`` for anything else."""
    if regulariser is None:
        return NoRegulariser()
    if not isinstance(regulariser, AbstractRegulariser):
        raise TypeError(
            "regulariser must be None or a regulariser (an AbstractRegulariser such as "
            f"GlobalRegulariser or LocalRegulariser); got {type(regulariser).__name__}."
        )
    return regulariser


class GlobalRegulariser(AbstractRegulariser):
    r"""Sum the solver's heuristics over every accepted step ("Opening the Blackbox").

    ``error``: :math:`R_E = \sum_n E_n|h_n|` (the paper's ERNODE). ``stiffness``:
    :math:`R_S = \sum_n h_n|\hat\lambda_n|` (SRNODE; needs an explicit Runge–Kutta solver). Needs a
    discretise-then-optimise adjoint (diffrax's default ``RecursiveCheckpointAdjoint``).
    """

    error: bool = eqx.field(static=True, default=True)
    stiffness: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        if not (self.error or self.stiffness):
            raise ValueError("GlobalRegulariser needs error=True or stiffness=True (or both).")

    def solve(self, node, ts, y0, args, key):
        del key
        if not isinstance(node.adjoint, DISCRETE_ADJOINTS):
            raise TypeError(
                "GlobalRegulariser needs a discretise-then-optimise adjoint "
                "(RecursiveCheckpointAdjoint, DirectAdjoint or ForwardMode); this NeuralODE "
                f"has {type(node.adjoint).__name__}. Use LocalRegulariser with it instead."
            )
        raw = integrate_with(node, ts, y0, args, error=self.error, stiffness=self.stiffness)
        # The sums come in the order error, stiffness, of those requested.
        sums = list(raw.sums)
        error = sums.pop(0) if self.error else None
        stiffness = sums.pop(0) if self.stiffness else None
        return RegularisedSolve(raw, raw.result, error, stiffness)

    def solve_sde(self, sde, terms, ts, y0, args, key):
        del key
        _refuse_sde_stiffness(self.stiffness, "GlobalRegulariser(error=True, stiffness=False)")
        raw = sde.integrate(terms, ts, y0, args, error=True)
        return RegularisedSolve(raw, raw.result, raw.sums[0])


class LocalRegulariser(AbstractRegulariser):
    r"""The solver's heuristics of one step from a random time ("Locally Regularized NDEs").

    ``sampling``: ``"unbiased"`` (:math:`t_r \sim U[t_0, t_1)`; any adjoint) or ``"biased"``
    (:math:`t_r` uniform among the accepted steps' starting points; discretise-then-optimise
    adjoints). The error estimate is always computed; ``stiffness=True`` adds the stiffness
    estimate of the same step (ODE solves only). Needs a ``key`` at call time (a NeuralSDE
    derives it from its own ``key``).
    """

    sampling: str = eqx.field(static=True, default="unbiased")
    stiffness: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        check_choice("sampling", self.sampling, {"unbiased", "biased"})

    def solve(self, node, ts, y0, args, key):
        if key is None:
            raise ValueError("LocalRegulariser draws a random time: pass key=.")
        if self.sampling == "unbiased":
            raw, t_r, y_r = _solve_through_uniform_time(
                lambda all_ts: integrate_with(node, all_ts, y0, args), ts, key
            )
        else:
            raw = integrate_with(node, ts, y0, args, reservoir_key=key)
            t_r, y_r = raw.pick
        error, stiffness, probe_nfe, probe_result = local_probe(
            node.vector_field,
            node.solver,
            node.stepsize_controller,
            node.dt0,
            t_r,
            y_r,
            args,
            ts[-1],
            stiffness=self.stiffness,
        )
        raw = raw._replace(nfe=jnp.where(raw.nfe < 0, -1, raw.nfe + probe_nfe))
        result = RESULTS.where(raw.result == RESULTS.successful, probe_result, raw.result)
        return RegularisedSolve(raw, result, error, stiffness, t_r)

    def solve_sde(self, sde, terms, ts, y0, args, key):
        _refuse_sde_stiffness(self.stiffness, "LocalRegulariser(stiffness=False)")
        if key is None:
            raise ValueError("LocalRegulariser draws a random time: pass key=.")
        require_error_estimate(sde.solver, "LocalRegulariser")
        if self.sampling == "unbiased":
            # y(t_r) is the solve's dense output at t_r, as for ODEs: the steps, and so the
            # solution at ts, are those of the unregularised solve on the same path.
            raw, t_r, y_r = _solve_through_uniform_time(
                lambda all_ts: sde.integrate(terms, all_ts, y0, args), ts, key
            )
        else:
            raw = sde.integrate(terms, ts, y0, args, reservoir_key=key)
            t_r, y_r = raw.pick
        error, _, probe_result = probe_step(
            terms,
            sde.solver,
            sde.stepsize_controller,
            jnp.asarray(sde.dt0, ts.dtype),
            t_r,
            y_r,
            args,
            ts[-1],
            stiffness=False,
            clip_to_end=True,
        )
        stages = stages_per_step(sde.solver)
        nfe = raw.nfe if stages is None else jnp.where(raw.nfe < 0, -1, raw.nfe + stages)
        raw = raw._replace(nfe=nfe)
        result = RESULTS.where(raw.result == RESULTS.successful, probe_result, raw.result)
        return RegularisedSolve(raw, result, error, None, t_r)


def _refuse_sde_stiffness(stiffness: bool, instead: str) -> None:
    if stiffness:
        raise ValueError(
            "stiffness: the stiffness estimate compares Runge-Kutta stages of an ODE's vector "
            f"field and has no counterpart on an SDE solve; got stiffness=True. Use {instead} "
            "with a NeuralSDE."
        )


def _solve_through_uniform_time(integrate, ts, key):
    r"""The solve saved at ``ts`` and at :math:`t_r \sim U[t_0, t_1)`: ``(raw, t_r, y(t_r))``.

    ``integrate(save_times) -> RawSolve`` runs the solve, saving at ``save_times``.
    """
    u = jax.random.uniform(key, (), ts.dtype)
    t_r = ts[0] + u * (ts[-1] - ts[0])
    # Save at t_r as well, at its sorted position, so any adjoint sees an ordinary output.
    n = ts.shape[0]
    all_ts = jnp.concatenate([ts, t_r[None]])
    order = jnp.argsort(all_ts, stable=True)
    raw = integrate(all_ts[order])
    inverse = jnp.argsort(order)
    y_r = raw.ys[inverse[n]]
    return raw._replace(ys=raw.ys[inverse[:n]]), t_r, y_r


def probe_step(
    terms,
    solver,
    stepsize_controller,
    dt0,
    t_r,
    y_r,
    args,
    t_end,
    *,
    stiffness: bool,
    clip_to_end: bool = False,
):
    r"""One step of ``solver`` on ``terms`` from ``(t_r, y_r)``: ``(E·|h|, h|λ| or None, result)``.

    :math:`h` is the step the controller starts with at :math:`(t_r, y_r)` (``dt0`` when given),
    cut at ``t_end`` with ``clip_to_end`` (as diffrax cuts a step that would pass the end: an
    SDE's Brownian path is not defined beyond it). :math:`E` is the controller's scaled norm of
    the embedded error estimate, exactly as in the solve's acceptance test.
    """
    t_next, _ = stepsize_controller.init(
        terms, t_r, t_end, y_r, dt0, args, solver.func, solver.error_order(terms)
    )
    if clip_to_end:
        t_next = jnp.minimum(t_next, t_end)
    # The step size is a choice of the solver, not of the model: it is not differentiated.
    h = jax.lax.stop_gradient(t_next - t_r)
    t_stop = t_r + h
    if clip_to_end:
        # t_r + (t_end - t_r) may round above t_end, where a Brownian path is not defined.
        t_stop = jnp.minimum(t_stop, t_end)
    state = InstrumentedSolver(solver).init(terms, t_r, t_stop, y_r, args)
    y1, y_error, dense_info, _, result = solver.step(
        terms, t_r, t_stop, y_r, args, state, jnp.array(False)
    )
    error = error_norm_fn(stepsize_controller)(y_r, y1, y_error) * jnp.abs(h)
    stiff = stiffness_estimate(solver.tableau, dense_info["k"]) if stiffness else None
    return error, stiff, map_result(result, y1)


def local_probe(
    vector_field, solver, stepsize_controller, dt0, t_r, y_r, args, t_end, *, stiffness: bool
):
    """One solver step from ``(t_r, y_r)``: (E·|h|, h|λ| or None, NFE of the probe, result)."""
    require_error_estimate(solver, "LocalRegulariser")
    if stiffness:
        require_stiffness_estimate(solver)
    error, stiff, result = probe_step(
        dfx.ODETerm(vector_field),
        solver,
        stepsize_controller,
        dt0,
        t_r,
        y_r,
        args,
        t_end,
        stiffness=stiffness,
    )
    nfe = count_evaluations(solver, controller_init_evaluations(stepsize_controller, dt0), 1)
    return error, stiff, nfe, result
