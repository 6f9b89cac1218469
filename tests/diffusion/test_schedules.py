import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxsolve import diffusion as jd


def _schedules():
    return {
        "vp_linear": jd.VPSchedule.linear(0.1, 20.0),
        "vp_cosine": jd.VPSchedule.cosine(0.008),
        "vp_discrete": jd.VPSchedule.discrete(jd.ddpm_betas("linear")),
        "vp_discrete_sd": jd.VPSchedule.discrete(
            jd.ddpm_betas("scaled_linear", 1000, 0.00085, 0.012)
        ),
        "ve": jd.VESchedule(0.01, 50.0),
        "flow": jd.FlowSchedule(),
    }


SCHEDULE_NAMES = list(_schedules())


def _times(sch, n=2001):
    return jnp.linspace(sch.t_min, sch.t_max, n)


@pytest.mark.parametrize("name", [n for n in SCHEDULE_NAMES if n.startswith("vp")])
def test_vp_alpha_sigma_unit_circle(x64, name):
    sch = _schedules()[name]
    a, s = sch.alpha_sigma(_times(sch))
    np.testing.assert_allclose(a**2 + s**2, 1.0, rtol=0, atol=1e-14)


def test_linear_vp_closed_form(x64):
    b0, b1 = 0.1, 20.0
    sch = jd.VPSchedule.linear(b0, b1)
    t = np.linspace(1e-3, 1.0, 101)
    log_alpha = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    np.testing.assert_allclose(sch.alpha(t), np.exp(log_alpha), rtol=1e-13)
    np.testing.assert_allclose(sch.sigma(t), np.sqrt(1 - np.exp(2 * log_alpha)), rtol=1e-12)
    np.testing.assert_allclose(
        sch.lam(t), log_alpha - 0.5 * np.log(1 - np.exp(2 * log_alpha)), rtol=1e-12
    )


def test_cosine_vp_closed_form(x64):
    s = 0.008
    sch = jd.VPSchedule.cosine(s)
    t = np.linspace(0.0, 0.99, 101)
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2
    np.testing.assert_allclose(sch.alpha(t) ** 2, f(t) / f(0.0), rtol=1e-12)
    np.testing.assert_allclose(
        sch.to_ve_sigma(t), np.sqrt((1 - f(t) / f(0)) / (f(t) / f(0))), rtol=1e-9
    )


def test_discrete_vp_matches_table_at_integers(x64):
    betas = np.linspace(1e-4, 0.02, 1000)
    acp = np.cumprod(1 - betas)
    sch = jd.VPSchedule.discrete(betas)
    k = np.arange(1000.0)
    np.testing.assert_allclose(sch.alpha(k) ** 2, acp, rtol=1e-13)
    # Exactly the table value at table points, not a round trip through exp(log(.)).
    np.testing.assert_array_equal(sch.to_ve_sigma(k), sch.sigmas)
    np.testing.assert_array_equal(sch.from_ve_sigma(sch.sigmas), k)


def test_discrete_vp_interpolates_log_sigma_linearly(x64):
    """k-diffusion's t_to_sigma: log sigma is linear in t between table points."""
    sch = jd.VPSchedule.discrete(jd.ddpm_betas("linear"))
    k = np.arange(999.0)
    w = 0.3
    expect = np.exp((1 - w) * np.log(sch.sigmas[:-1]) + w * np.log(sch.sigmas[1:]))
    np.testing.assert_allclose(sch.to_ve_sigma(k + w), expect, rtol=1e-13)
    fine = sch.to_ve_sigma(jnp.linspace(0.0, 999.0, 20001))
    assert np.all(np.diff(np.asarray(fine)) > 0), "interpolation must be monotone"


def test_ve_and_flow_closed_forms(x64):
    ve = jd.VESchedule(0.02, 80.0)
    t = np.linspace(0.0, 1.0, 11)
    np.testing.assert_allclose(ve.sigma(t), 0.02 * (80.0 / 0.02) ** t, rtol=1e-13)
    np.testing.assert_allclose(ve.alpha(t), 1.0)
    flow = jd.FlowSchedule()
    t = np.linspace(1e-3, 0.999, 11)
    np.testing.assert_allclose(flow.alpha(t), 1 - t, rtol=1e-13)
    np.testing.assert_allclose(flow.sigma(t), t, rtol=1e-13)
    da, ds = flow.d_alpha_sigma(t)
    np.testing.assert_allclose(da, -1.0, rtol=1e-12)
    np.testing.assert_allclose(ds, 1.0, rtol=1e-12)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_from_ve_sigma_inverts_to_ve_sigma_over_whole_range(x64, name):
    sch = _schedules()[name]
    t = _times(sch, 5001)
    np.testing.assert_allclose(
        sch.from_ve_sigma(sch.to_ve_sigma(t)), t, rtol=0, atol=1e-9 * max(1.0, float(sch.t_max))
    )
    np.testing.assert_allclose(
        sch.from_lam(sch.lam(t)), t, rtol=0, atol=1e-9 * max(1.0, float(sch.t_max))
    )


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_round_trip_in_float32_to_1e6(name):
    sch = _schedules()[name]
    t = _times(sch, 2001)
    err = np.abs(np.asarray(sch.from_ve_sigma(sch.to_ve_sigma(t))) - np.asarray(t))
    # 1e-6 relative to the time range: discrete times run to 999, where a float32 ulp is 6e-5.
    assert err.max() <= 1e-6 * max(1.0, float(sch.t_max)), err.max()


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_lam_is_log_alpha_over_sigma_and_decreasing(x64, name):
    sch = _schedules()[name]
    t = _times(sch, 501)
    a, s = sch.alpha_sigma(t)
    np.testing.assert_allclose(sch.lam(t), np.log(a / s), rtol=1e-10, atol=1e-12)
    assert np.all(np.diff(np.asarray(sch.lam(t))) < 0)


@pytest.mark.parametrize("name", SCHEDULE_NAMES)
def test_time_derivatives_match_finite_differences(x64, name):
    sch = _schedules()[name]
    if name.startswith("vp_discrete"):
        t = jnp.asarray([10.3, 400.6, 880.25])  # off the kinks at integers
    else:
        t = jnp.linspace(sch.t_min + 0.05, sch.t_max - 0.05, 7)
    h = 1e-6 * max(1.0, float(sch.t_max))
    da, ds = sch.d_alpha_sigma(t)
    (a1, s1), (a0, s0) = sch.alpha_sigma(t + h), sch.alpha_sigma(t - h)
    np.testing.assert_allclose(da, (a1 - a0) / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(ds, (s1 - s0) / (2 * h), rtol=1e-6, atol=1e-9)


def test_half_precision_time_is_promoted():
    sch = jd.VPSchedule.linear()
    out = sch.lam(jnp.asarray(0.5, jnp.bfloat16))
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, sch.lam(0.5), rtol=1e-6)


def test_schedule_parameters_are_data_under_vmap():
    beta_max = jnp.linspace(5.0, 30.0, 6)
    f = jax.jit(jax.vmap(lambda b: jd.VPSchedule.linear(0.1, b).to_ve_sigma(0.7)))
    expect = [float(jd.VPSchedule.linear(0.1, float(b)).to_ve_sigma(0.7)) for b in beta_max]
    np.testing.assert_allclose(f(beta_max), expect, rtol=1e-6)


def test_ddpm_betas_tables(x64):
    np.testing.assert_allclose(
        jd.ddpm_betas("linear", 10, 1e-4, 0.02), np.linspace(1e-4, 0.02, 10), rtol=1e-12
    )
    sl = jd.ddpm_betas("scaled_linear", 10, 0.00085, 0.012)
    np.testing.assert_allclose(sl, np.linspace(0.00085**0.5, 0.012**0.5, 10) ** 2, rtol=1e-12)
    cos = np.asarray(jd.ddpm_betas("squaredcos_cap_v2", 1000))
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    assert cos[0] == pytest.approx(1 - f(1 / 1000) / f(0), rel=1e-6)
    assert cos[-1] == pytest.approx(0.999, rel=1e-6)  # capped


# ---------------------------------------------------------------------------------------------
# Property tests


@given(
    beta_min=st.floats(0.0, 2.0),
    delta=st.floats(0.0, 40.0),
    u=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
)
def test_linear_vp_properties(x64, beta_min, delta, u):
    beta_max = beta_min + delta
    if beta_max <= 1e-3:
        return
    sch = jd.VPSchedule.linear(beta_min, beta_max, t_min=1e-3, t_max=1.0)
    t = 1e-3 + (1.0 - 1e-3) * np.asarray(u)
    a, s = sch.alpha_sigma(t)
    np.testing.assert_allclose(a**2 + s**2, 1.0, atol=1e-14)
    np.testing.assert_allclose(sch.from_ve_sigma(sch.to_ve_sigma(t)), t, atol=1e-9)


@given(s=st.floats(1e-4, 0.2), u=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8))
def test_cosine_vp_properties(x64, s, u):
    sch = jd.VPSchedule.cosine(s)
    t = 0.9946 * np.asarray(u)
    np.testing.assert_allclose(sch.from_ve_sigma(sch.to_ve_sigma(t)), t, atol=1e-9)


@given(
    log_min=st.floats(-5, 1),
    log_span=st.floats(0.1, 6),
    u=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
)
def test_ve_properties(x64, log_min, log_span, u):
    smin, smax = 10.0**log_min, 10.0 ** (log_min + log_span)
    sch = jd.VESchedule(smin, smax)
    t = np.asarray(u)
    sig = sch.to_ve_sigma(t)
    assert np.all(np.asarray(sig) >= smin * (1 - 1e-12)) and np.all(
        np.asarray(sig) <= smax * (1 + 1e-12)
    )
    np.testing.assert_allclose(sch.from_ve_sigma(sig), t, atol=1e-10)


@settings(max_examples=10)  # every example has new shapes, so it compiles anew
@given(
    start=st.floats(1e-5, 1e-3),
    end=st.floats(5e-3, 5e-2),
    n=st.integers(2, 400),
    frac=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=8),
)
def test_discrete_vp_properties(x64, start, end, n, frac):
    sch = jd.VPSchedule.discrete(np.linspace(start, end, n))
    t = (n - 1) * np.asarray(frac)
    np.testing.assert_allclose(sch.from_ve_sigma(sch.to_ve_sigma(t)), t, atol=1e-8)
    a, s = sch.alpha_sigma(t)
    np.testing.assert_allclose(a**2 + s**2, 1.0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jd.VPSchedule.discrete(np.array([0.1, 1.2, 0.3])), "betas"),
        (lambda: jd.VPSchedule.discrete(np.array([0.1, 0.0, 0.3])), "betas"),
        (lambda: jd.VPSchedule.discrete(np.array([0.1])), "betas"),
        (lambda: jd.VPSchedule.discrete(alphas_cumprod=np.array([0.9, 0.95])), "alphas_cumprod"),
        (lambda: jd.VESchedule(1.0, 0.5), "sigma_min"),
        (lambda: jd.VESchedule(-1.0, 5.0), "sigma_min"),
        (lambda: jd.VPSchedule.linear(5.0, 1.0), "beta_max"),
        (lambda: jd.VPSchedule.linear(-0.1, 1.0), "beta_min"),
        (lambda: jd.VPSchedule.cosine(-0.1), "s must be positive"),
        (lambda: jd.VPSchedule.cosine(t_max=1.5), "t_max"),
        (lambda: jd.FlowSchedule(t_min=0.5, t_max=0.2), "t_min"),
        (lambda: jd.ddpm_betas("quadratic"), "beta_schedule"),
        # Infinite noise levels: t = 1 is s = inf for the flow and the cosine schedule (the
        # cosine one used to complain about a sigma_max the user never passed).
        (lambda: jd.FlowSchedule(t_max=1.0), "t_max must be < 1"),
        (lambda: jd.VPSchedule.cosine(t_max=1.0), "t_max must be < 1"),
        (lambda: jd.VPSchedule.linear(t_max=100.0), "t_max=100.*must be finite"),
        (lambda: jd.VESchedule(0.01, np.inf), "sigma_max must be positive and finite"),
        # cumprod(1 - betas) underflows to 0 in float32: 874 infinite levels.
        (lambda: jd.VPSchedule.discrete(np.full(1000, 0.5)), "betas give infinite noise levels"),
    ],
)
def test_bad_parameters_raise_value_error_naming_the_argument(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_traced_table_with_infinite_levels_raises_when_it_runs():
    table = jax.jit(lambda b: jd.VPSchedule.discrete(b).sigmas)
    assert np.all(np.isfinite(table(jnp.full(100, 0.01))))
    with pytest.raises(Exception, match="infinite noise levels"):
        jax.block_until_ready(table(jnp.full(100, 0.9)))
