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

Both are zero for a vector field the solver integrates exactly (a polynomial in :math:`t` within
the order of the embedded pair: the error estimate is then exactly zero) and positive otherwise.
"""

from __future__ import annotations

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp

from .._core import check_choice
from ._driver import map_result
from ._solver_tools import (
    InstrumentedSolver,
    controller_init_evaluations,
    error_norm_fn,
    evaluations_per_step,
    explicit_tableau,
    stiffness_estimate,
)


class GlobalRegulariser(eqx.Module):
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


class LocalRegulariser(eqx.Module):
    r"""The solver's heuristics of one step from a random time ("Locally Regularized NDEs").

    ``sampling``: ``"unbiased"`` (:math:`t_r \sim U[t_0, t_1)`; any adjoint) or ``"biased"``
    (:math:`t_r` uniform among the accepted steps' starting points; discretise-then-optimise
    adjoints). The error estimate is always computed; ``stiffness=True`` adds the stiffness
    estimate of the same step. Needs a ``key`` at call time.
    """

    sampling: str = eqx.field(static=True, default="unbiased")
    stiffness: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        check_choice("sampling", self.sampling, {"unbiased", "biased"})


def local_probe(
    vector_field, solver, stepsize_controller, dt0, t_r, y_r, args, t_end, *, stiffness: bool
):
    """One solver step from ``(t_r, y_r)``: (E·|h|, h|λ| or None, NFE of the probe, result)."""
    if not isinstance(solver, dfx.AbstractAdaptiveSolver):
        raise TypeError(
            "LocalRegulariser needs a solver with an embedded error estimate (a diffrax "
            f"AbstractAdaptiveSolver such as Tsit5); got {type(solver).__name__}."
        )
    if stiffness and (explicit_tableau(solver) is None or solver.tableau.num_stages < 2):
        raise TypeError(
            "the stiffness estimate needs an explicit Runge-Kutta solver with at least two stages; "
            f"got {type(solver).__name__}."
        )
    term = dfx.ODETerm(vector_field)
    t_next, _ = stepsize_controller.init(
        term, t_r, t_end, y_r, dt0, args, solver.func, solver.error_order(term)
    )
    # The step size is a choice of the solver, not of the model: it is not differentiated.
    h = jax.lax.stop_gradient(t_next - t_r)
    instrumented = InstrumentedSolver(solver)
    state = instrumented.init(term, t_r, t_r + h, y_r, args)
    y1, y_error, dense_info, _, result = solver.step(
        term, t_r, t_r + h, y_r, args, state, jnp.array(False)
    )
    error = error_norm_fn(stepsize_controller)(y_r, y1, y_error) * jnp.abs(h)
    stiff = stiffness_estimate(solver.tableau, dense_info["k"]) if stiffness else None
    per_step = evaluations_per_step(solver)
    if per_step is None:
        nfe = -1
    else:
        fsal = explicit_tableau(solver) is not None and solver.tableau.fsal
        nfe = controller_init_evaluations(stepsize_controller, dt0) + per_step + int(fsal)
    return error, stiff, nfe, map_result(result, y1)
