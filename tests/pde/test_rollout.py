"""The time loop: saving, masking of traced step counts, pytree states, failure codes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS, pde


def test_saved_states_and_initial_state():
    u0 = jnp.array([1.0, -2.0])
    traj = jax.jit(lambda u: pde.rollout(lambda v: 2.0 * v, u, 6, every=2))(u0)
    np.testing.assert_array_equal(traj, np.array([1, 4, 16, 64])[:, None] * np.array([1.0, -2.0]))
    final = pde.rollout(lambda v: v + 1.0, u0, 5, every=5, include_initial=False)
    assert final.shape == (1, 2)
    np.testing.assert_array_equal(final[0], u0 + 5.0)
    # A pytree state: (position, step counter).
    out = pde.rollout(lambda s: (s[0] * 0.5, s[1] + 1), (jnp.ones(3), jnp.zeros((), jnp.int32)), 4)
    np.testing.assert_array_equal(out[1], np.arange(5))
    np.testing.assert_allclose(out[0][-1], 0.5**4)


def test_traced_step_counts_are_masked_and_compile_once():
    """With max_steps, num_steps may be traced: a vmap over step counts is one compilation and
    every entry stops where its own count says."""
    traces = []

    def run(n):
        traces.append(1)
        return pde.rollout(lambda v: v * 3.0, jnp.ones(()), n, max_steps=8, every=4)

    out = jax.jit(jax.vmap(run))(jnp.array([0, 3, 5, 8]))
    assert len(traces) == 1
    np.testing.assert_array_equal(out, [[1, 1, 1], [1, 27, 27], [1, 81, 243], [1, 81, 6561]])
    with pytest.raises(Exception, match="max_steps"):
        jax.block_until_ready(jax.jit(run)(jnp.array(9)))


def test_nonfinite_states_are_reported_and_thrown():
    sol = pde.rollout(lambda v: v * 1e30, jnp.ones(2), 4, full_output=True)
    assert sol.result == RESULTS.nonfinite
    np.testing.assert_array_equal(sol.final, sol.trajectory[-1])
    ok = pde.rollout(lambda v: v * 0.5, jnp.ones(2), 4, full_output=True)
    assert ok.result == RESULTS.successful
    with pytest.raises(Exception, match="non-finite"):
        jax.block_until_ready(
            jax.jit(lambda u: pde.rollout(lambda v: v * 1e30, u, 4, throw=True))(jnp.ones(2))
        )


def test_bad_arguments():
    with pytest.raises(ValueError, match="multiple of every"):
        pde.rollout(lambda v: v, jnp.ones(2), 5, every=2)
    with pytest.raises(ValueError, match="every"):
        pde.rollout(lambda v: v, jnp.ones(2), 4, every=0)
    with pytest.raises(TypeError, match="max_steps"):
        jax.jit(lambda n: pde.rollout(lambda v: v, jnp.ones(2), n))(jnp.array(3))
    with pytest.raises(ValueError, match="num_steps"):
        pde.rollout(lambda v: v, jnp.ones(2), -1)
