"""optimal_sigmas: each search compiles once per configuration and shapes, not once per call.

The optimality of the searches themselves is checked against brute force in
``test_seed_samplers.py``.
"""

import contextlib
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"  # jax records one per jit trace


@contextlib.contextmanager
def _count_traces():
    traces = []

    def listen(event, duration, **kwargs):
        if event == _TRACE_EVENT:
            traces.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield traces
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


@dataclasses.dataclass
class _Unhashable:
    """A callable dataclass with ``eq=True``: no compilation cache can key it."""

    inner: Callable

    def __call__(self, x, sigma):
        return self.inner(x, sigma)


def _problem():
    g = Gaussian(np.array([0.3, -0.2]), np.full(2, 0.7))
    teacher = jd.karras_sigmas(4, 0.05, 20.0)
    x0 = g.sample(jax.random.PRNGKey(0), 3, sigma=20.0)
    ref = jnp.stack([g.ode_solution(x0, 20.0, s) for s in teacher])
    return g, teacher, x0, ref


@pytest.mark.parametrize(
    "make_solver, restart",
    [(jd.Euler, False), (jd.Heun, True), (lambda: jd.DPMSolverPP(order=2), False)],
    ids=["one_step", "from_teacher", "history"],
)
def test_second_call_reuses_the_compiled_search(make_solver, restart):
    g, teacher, x0, ref = _problem()
    x1, ref1 = 2.0 * x0, 2.0 * ref
    with _count_traces() as first:
        jd.optimal_sigmas(
            g, x0, teacher, make_solver(), 2, reference=ref, restart_from_teacher=restart
        )
    # Other states and references of the same shapes, new (equal) denoiser and solver objects.
    with _count_traces() as second:
        res = jd.optimal_sigmas(
            Gaussian(g.loc, g.eigvals),
            x1,
            teacher,
            make_solver(),
            2,
            reference=ref1,
            restart_from_teacher=restart,
        )
    assert first and not second
    assert res.indices.shape == (3,)


def test_a_denoiser_no_cache_can_key_gives_the_same_grid():
    g, teacher, x0, ref = _problem()
    cached = jd.optimal_sigmas(g, x0, teacher, jd.Euler(), 2, reference=ref)
    per_call = jd.optimal_sigmas(_Unhashable(g), x0, teacher, jd.Euler(), 2, reference=ref)
    np.testing.assert_array_equal(np.asarray(per_call.indices), np.asarray(cached.indices))
    np.testing.assert_array_equal(np.asarray(per_call.cost), np.asarray(cached.cost))
