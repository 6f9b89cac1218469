"""Solvers that wrap another solver report what their inner solver reports.

Every wrapper derives from :class:`jaxsolve.diffusion.AbstractWrappedSolver`, which forwards the
inner solver's properties and hooks; a wrapper overrides only what it changes, and refuses (when it
is built, naming the property) an inner solver whose property it cannot honour. The property
checks build modules only (no sampling); the few samples are tiny.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

_GAUSSIAN = Gaussian(np.array([0.5, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]]))

# A representative inner solver of each kind.
INNER = {
    "one-step": jd.Euler,
    "multistep": lambda: jd.DPMSolverPP(order=2),
    "stochastic": jd.EulerAncestral,
    "adaptive": jd.DPMAdaptive,
    "restart": jd.Restart,
}

# Each wrapper around an inner solver, and what it changes itself: (stochastic, increasing grid)
# of its own where it adds them (None: the inner solver's).
WRAPPERS = {
    "HeavyBall": (lambda s: jd.HeavyBall(s, 0.5), None, None),
    "DualFast": (lambda s: jd.DualFast(s), None, None),
    "TimeShift": (lambda s: jd.TimeShift(s), None, None),
    "Teleport": (lambda s: jd.Teleport(s, _GAUSSIAN), None, None),
    "Restart": (lambda s: jd.Restart(s), True, True),
    "EDMStochastic": (lambda s: jd.EDMStochastic(solver=s), None, None),
    "EDMStochastic(churn)": (lambda s: jd.EDMStochastic(churn=5.0, solver=s), True, None),
    "PredictorCorrector": (lambda s: jd.PredictorCorrector(s), True, None),
}

# The combinations a wrapper refuses, and the words of its error.
REFUSED = {
    ("HeavyBall", "stochastic"): "HeavyBall wraps",
    ("HeavyBall", "adaptive"): "HeavyBall wraps",
    ("HeavyBall", "restart"): "HeavyBall wraps",
    ("TimeShift", "adaptive"): "which is adaptive",
    ("TimeShift", "restart"): "grids that go up",
    ("Restart", "adaptive"): "which is adaptive",
    ("PredictorCorrector", "adaptive"): "which is adaptive",
    **{
        (w, kind): "single-step Runge-Kutta"
        for w in ("EDMStochastic", "EDMStochastic(churn)")
        for kind in ("multistep", "stochastic", "adaptive", "restart")
    },
}


@pytest.mark.parametrize("kind", INNER)
@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_wrapper_reports_its_inner_solvers_properties(wrapper, kind):
    make, own_stochastic, own_increasing = WRAPPERS[wrapper]
    inner = INNER[kind]()
    if (wrapper, kind) in REFUSED:
        with pytest.raises((TypeError, ValueError), match=REFUSED[wrapper, kind]):
            make(inner)
        return
    wrapped = make(inner)
    assert isinstance(wrapped, jd.AbstractWrappedSolver)
    assert wrapped.solver is inner
    assert wrapped.stochastic == (inner.stochastic if own_stochastic is None else own_stochastic)
    assert wrapped.adaptive == inner.adaptive
    assert wrapped.allows_increasing_grid == (
        inner.allows_increasing_grid if own_increasing is None else own_increasing
    )


def test_every_solver_holding_a_solver_derives_from_the_wrapper_base():
    # "No wrapper outside the wrapper base": a public solver with a field of solver type wraps.
    solvers = [
        c
        for c in vars(jd).values()
        if isinstance(c, type) and issubclass(c, jd.AbstractSolver) and dataclasses.is_dataclass(c)
    ]
    holders = {
        c.__name__
        for c in solvers
        if any("AbstractSolver" in str(f.type) for f in dataclasses.fields(c))
    }
    assert holders >= {"DualFast", "HeavyBall", "Restart", "TimeShift", "Teleport"}
    for c in solvers:
        if c.__name__ in holders:
            assert issubclass(c, jd.AbstractWrappedSolver), c.__name__


def test_dualfast_around_an_adaptive_solver_behaves_like_it():
    # DualFast(DPMAdaptive()) once ran a single attempt and reported success.
    x0 = _GAUSSIAN.sample(jax.random.PRNGKey(0), 3, sigma=20.0)
    grid = jnp.array([20.0, 0.05, 0.0])
    base = jd.DPMAdaptive(order=2)
    with pytest.raises(ValueError, match="needs max_steps"):
        jd.sample(_GAUSSIAN, x0, grid, jd.DualFast(base))

    @jax.jit
    def runs():
        return [
            jd.sample(
                _GAUSSIAN,
                x0,
                grid,
                s,
                max_steps=4,
                throw=False,
                full_output=True,
                save_trajectory=True,
            )
            for s in (base, jd.DualFast(base, c=0.0))
        ]

    inner, wrapped = runs()
    # Out of attempts: the inner solver's result code, not success, and no sample (NaN); c = 0
    # is the inner solver exactly (states, evaluations, steps).
    assert wrapped.result == RESULTS.max_steps_reached == inner.result
    assert np.all(np.isnan(np.asarray(wrapped.value)))
    assert np.all(np.isfinite(np.asarray(inner.trajectory)))
    np.testing.assert_array_equal(np.asarray(wrapped.trajectory), np.asarray(inner.trajectory))
    assert int(wrapped.nfe) == int(inner.nfe) == 4 * 2
    assert int(wrapped.num_steps) == int(inner.num_steps) == 4


@pytest.mark.slow
def test_dualfast_around_an_adaptive_solver_finishes_like_it():
    x0 = _GAUSSIAN.sample(jax.random.PRNGKey(0), 3, sigma=20.0)
    grid = jnp.array([20.0, 0.05, 0.0])

    @jax.jit
    def runs():
        return [
            jd.sample(_GAUSSIAN, x0, grid, s, max_steps=40, throw=False, full_output=True)
            for s in (
                jd.DPMAdaptive(),
                jd.DualFast(jd.DPMAdaptive(), c=0.0),
                jd.DualFast(jd.DPMAdaptive(), c=0.5),
            )
        ]

    base, plain, mixed = runs()
    assert base.result == plain.result == mixed.result == RESULTS.successful
    np.testing.assert_array_equal(np.asarray(plain.value), np.asarray(base.value))
    assert int(plain.nfe) == int(base.nfe) and int(plain.num_steps) == int(base.num_steps) < 40
    # With compensation the run still ends at sigma = 0, and the correction stays small.
    scale = float(jnp.std(base.value))
    assert 0 < float(jnp.max(jnp.abs(mixed.value - base.value))) < scale


def test_momentum_counts_the_evaluations_of_a_multi_evaluation_solver():
    # HeavyBall dropped the count a wrapped solver reported; GENIE costs 2 evaluations a step.
    x0 = _GAUSSIAN.sample(jax.random.PRNGKey(1), 3, sigma=20.0)
    grid = jd.karras_sigmas(5, 0.05, 20.0)
    out = jd.sample(_GAUSSIAN, x0, grid, jd.HeavyBall(jd.GENIE(), 0.5), full_output=True)
    assert int(out.nfe) == 2 * 4 + 1


def test_adjoint_objects_and_their_names():
    assert isinstance(jd.Checkpointed(), jd.AbstractAdjoint)
    with pytest.raises(ValueError, match="checkpoints must be"):
        jd.Checkpointed(checkpoints=0)
    x = jnp.ones((2, 2))
    sig = jd.karras_sigmas(3, 0.1, 2.0)
    with pytest.raises(TypeError, match="AbstractAdjoint"):
        jd.sample(_GAUSSIAN, x, sig, jd.Euler(), adjoint=3)
    with pytest.raises(ValueError, match="deterministic ODE solver"):
        jd.sample(
            _GAUSSIAN, x, jnp.array([2.0, 0.1, 0.0]), jd.DPMAdaptive(), adjoint=jd.AdjointDPM()
        )


# Public solvers that need data to be built (DC-Solver's ratios, DPM-Solver-v3's statistics, an
# interpolant); the kinds above cover their properties.
_NEEDS_DATA = {"DCSolver", "DPMSolverV3", "InterpolantSolver"}


def test_every_wrapper_around_every_public_solver_reports_or_refuses_by_name():
    solvers = [
        c
        for c in vars(jd).values()
        if isinstance(c, type)
        and issubclass(c, jd.AbstractSolver)
        and not issubclass(c, jd.AbstractWrappedSolver)
        and c is not jd.AbstractSolver
        and c.__name__ not in _NEEDS_DATA
    ]
    assert len(solvers) >= 20, [c.__name__ for c in solvers]
    for cls in solvers:
        inner = cls()
        for wrapper, (make, own_stochastic, own_increasing) in WRAPPERS.items():
            try:
                wrapped = make(inner)
            except (TypeError, ValueError) as err:
                # Refused when built, with a message that names the wrapper and the solver.
                message = str(err)
                assert wrapper.split("(")[0] in message and cls.__name__ in message, message
                continue
            assert wrapped.solver is inner
            assert wrapped.adaptive == inner.adaptive, (wrapper, cls.__name__)
            assert wrapped.step_form in (inner.step_form, None), (wrapper, cls.__name__)
            stochastic = inner.stochastic if own_stochastic is None else own_stochastic
            increasing = inner.allows_increasing_grid if own_increasing is None else own_increasing
            assert wrapped.stochastic == stochastic, (wrapper, cls.__name__)
            assert wrapped.allows_increasing_grid == increasing, (wrapper, cls.__name__)
