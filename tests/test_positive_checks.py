"""``check_positive``: settings must be finite unless infinity means something (the sites that
say so), and traced values pass to the run-time checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve.diffusion as jd
import jaxsolve.implicit as ji
from jaxsolve._core import check_positive
from jaxsolve.diffusion.fewstep import pfgmpp_radius


def test_infinity_is_refused_unless_allowed():
    for value in (math.inf, np.array([1.0, np.inf])):
        with pytest.raises(ValueError, match="step must be positive and finite"):
            check_positive("step", value)
    with pytest.raises(ValueError, match="non-negative and finite"):
        check_positive("step", math.inf, allow_zero=True)
    assert check_positive("s_tmax", math.inf, allow_inf=True) == math.inf
    for bad in (math.nan, -math.inf, 0.0):
        with pytest.raises(ValueError, match="s_tmax"):
            check_positive("s_tmax", bad, allow_inf=True)
    # traced: left to the caller's run-time check
    assert jax.jit(lambda x: check_positive("step", x))(jnp.inf) == jnp.inf


def test_a_solver_setting_of_infinity_raises():
    # An infinite damping passed "> 0" and made every iterate NaN.
    with pytest.raises(ValueError, match="Picard damping must be positive and finite"):
        ji.Picard(damping=math.inf)
    with pytest.raises(ValueError, match="EDMStochastic churn must be non-negative and finite"):
        jd.EDMStochastic(churn=math.inf)


def test_the_sites_where_infinity_means_no_limit_accept_it():
    jd.EDMStochastic(churn=1.0, s_tmax=math.inf)  # churn at every level above s_tmin
    jd.TauWindow(0.0, math.inf)  # a window with no upper end
    assert pfgmpp_radius(1.0, math.inf) == math.inf  # D = inf, the EDM limit
