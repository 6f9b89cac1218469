"""The sample-based distances: closed forms on tiny point clouds, and inputs that are not point
clouds ``(n, d)`` are refused rather than broadcast into a number."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd


def test_mmd_of_two_points_is_the_kernel_closed_form(x64):
    # One point each: MMD^2 = k(x, x) + k(y, y) - 2 k(x, y) = 2 - 2 exp(-|x - y|^2 / 2 l^2).
    x, y, scale = jnp.array([[0.0, 1.0]]), jnp.array([[3.0, -1.0]]), 1.5
    expected = np.sqrt(2.0 - 2.0 * np.exp(-13.0 / (2 * scale**2)))
    np.testing.assert_allclose(float(jd.mmd(x, y, scale)), expected, rtol=1e-12)


@pytest.mark.parametrize(
    "x, y",
    [
        (jnp.arange(4.0), jnp.arange(4.0) + 1.0),  # 1-D samples
        (jnp.zeros((4, 2)), jnp.zeros((3, 3))),  # different dimensions
        (jnp.zeros((4, 2)), jnp.zeros(3)),
    ],
)
def test_mmd_refuses_inputs_that_are_not_point_clouds(x, y):
    # 1-D samples used to broadcast into an (n, m) array summed over its last axis: a number
    # that is not the MMD.
    with pytest.raises(ValueError, match="x and y must have shapes \\(n, d\\) and \\(m, d\\)"):
        jd.mmd(x, y)


def test_sliced_wasserstein_of_a_shift_is_its_norm_over_root_d(x64):
    # y = x + c: along a unit direction theta the sorted projections differ by theta . c, so
    # SW_2^2 is the mean of (theta . c)^2, whose expectation over the sphere is |c|^2 / d
    # (relative standard deviation about 0.7% of SW here with 4096 directions).
    x = jax.random.normal(jax.random.PRNGKey(1), (50, 3))
    c = jnp.array([1.0, -2.0, 0.5])
    got = jd.sliced_wasserstein(x, x + c, jax.random.PRNGKey(0), num_projections=4096)
    np.testing.assert_allclose(float(got), float(jnp.linalg.norm(c)) / np.sqrt(3.0), rtol=0.03)
