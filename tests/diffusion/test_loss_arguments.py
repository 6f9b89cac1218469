"""Per-sample arguments of the training losses: a noise level or time of the wrong shape is named,
and the accepted shapes give the per-sample losses (checked against the Gaussian oracle)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion.analytic import Gaussian

_G = Gaussian(jnp.array([1.0, -2.0]), jnp.array([2.0, 0.5]))
_X0 = _G.sample(jax.random.PRNGKey(0), 4)
_KEY = jax.random.PRNGKey(1)


@pytest.mark.parametrize("shape", [(3,), (4, 1), (4, 2)])
def test_dsm_loss_names_a_sigma_of_the_wrong_shape(shape):
    # Broadcasting's own error ("Incompatible types for broadcasting ...") named no argument.
    with pytest.raises(ValueError, match=f"sigma must be a scalar or have shape \\(4,\\).*{shape}"):
        jd.dsm_loss(_G, _X0, jnp.ones(shape), _KEY)


@pytest.mark.parametrize("loss", [jd.eps_loss, jd.v_loss, jd.x0_loss])
def test_prediction_losses_name_a_time_of_the_wrong_shape(loss):
    sch = jd.VPSchedule.linear()
    with pytest.raises(ValueError, match="t must be a scalar or have shape \\(4,\\)"):
        loss(jd.to_eps(_G, sch), sch, _X0, _KEY, t=jnp.full((3,), 0.5))


def test_scalar_and_per_sample_sigma_agree():
    # A scalar level is the per-sample vector of that level; per-sample levels are the losses
    # of the samples one by one (same noise: the draw is over the whole batch).
    scalar = jd.dsm_loss(_G, _X0, 0.7, _KEY)
    np.testing.assert_allclose(jd.dsm_loss(_G, _X0, jnp.full((4,), 0.7), _KEY), scalar, rtol=1e-6)
    sigma = jnp.array([0.1, 0.5, 1.0, 3.0])
    eps = jax.random.normal(_KEY, _X0.shape, _X0.dtype)
    x = _X0 + sigma[:, None] * eps
    by_hand = jnp.mean(jnp.mean((_G.denoise(x, sigma) - _X0) ** 2, axis=1))
    np.testing.assert_allclose(jd.dsm_loss(_G, _X0, sigma, _KEY), by_hand, rtol=1e-5)
