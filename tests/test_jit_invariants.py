"""Core invariants hold the same run eagerly and compiled: ``chex.variants`` runs each test twice,
with ``self.variant`` the function itself and then ``jax.jit`` of it."""

import chex
import jax.numpy as jnp
import numpy as np

from jaxsolve import diffusion as jd
from jaxsolve import implicit as ji

SCHEDULES = (jd.VPSchedule.linear(0.1, 20.0), jd.VPSchedule.cosine(0.008), jd.FlowSchedule())


class TestJitInvariants(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_schedules_invert_their_noise_level(self):
        round_trip = self.variant(lambda sch, t: sch.from_ve_sigma(sch.to_ve_sigma(t)))
        for sch in SCHEDULES:
            t = jnp.linspace(sch.t_min, sch.t_max, 101)
            chex.assert_trees_all_close(round_trip(sch, t), t, rtol=0, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_karras_grid_is_its_closed_form_then_zero(self):
        n, smin, smax, rho = 10, 0.002, 80.0, 7.0
        s = self.variant(jd.karras_sigmas, static_argnums=0)(n, smin, smax)
        ramp = np.linspace(0, 1, n)
        expect = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
        chex.assert_shape(s, (n + 1,))
        chex.assert_trees_all_close(s, np.append(expect, 0.0).astype(np.float32), rtol=1e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_norms_of_a_pytree(self):
        x = {"a": jnp.array([3.0, 0.0]), "b": jnp.array([[-4.0]])}
        chex.assert_trees_all_close(self.variant(ji.two_norm)(x), 5.0, rtol=1e-6)
        chex.assert_trees_all_close(self.variant(ji.rms_norm)(x), 5.0 / np.sqrt(3.0), rtol=1e-6)
