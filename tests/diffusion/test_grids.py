import json
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxsolve import diffusion as jd

DATA = pathlib.Path(__file__).parent / "data" / "diffusers_dpmsolver_sigmas.json"

VP = jd.VPSchedule.linear()
DISCRETE = jd.VPSchedule.discrete(jd.ddpm_betas("linear"))

GRIDS = {
    "karras": lambda n, **kw: jd.karras_sigmas(n, 0.002, 80.0, **kw),
    "karras_rho3": lambda n, **kw: jd.karras_sigmas(n, 0.01, 10.0, rho=3.0, **kw),
    "exponential": lambda n, **kw: jd.exponential_sigmas(n, 0.002, 80.0, **kw),
    "polyexponential": lambda n, **kw: jd.polyexponential_sigmas(n, 0.002, 80.0, rho=2.0, **kw),
    "logsnr": lambda n, **kw: jd.logsnr_sigmas(VP, n, **kw),
    "time_uniform": lambda n, **kw: jd.time_uniform_sigmas(VP, n, **kw),
    "time_quadratic": lambda n, **kw: jd.time_quadratic_sigmas(VP, n, **kw),
    "time_uniform_flow": lambda n, **kw: jd.time_uniform_sigmas(jd.FlowSchedule(), n, **kw),
    "discrete": lambda n, **kw: jd.discrete_sigmas(DISCRETE, n, **kw),
    "discrete_trailing": lambda n, **kw: jd.discrete_sigmas(DISCRETE, n, "trailing", **kw),
    "discrete_leading": lambda n, **kw: jd.discrete_sigmas(DISCRETE, n, "leading", **kw),
}


@pytest.mark.parametrize("name", list(GRIDS))
@pytest.mark.parametrize("n", [1, 2, 5, 18, 50])
def test_grid_shape_monotone_and_ends_in_zero(name, n):
    s = np.asarray(GRIDS[name](n))
    assert s.shape == (n + 1,)
    assert s[-1] == 0.0
    assert np.all(s[:-1] > 0)
    assert np.all(np.diff(s) < 0), s


@pytest.mark.parametrize("name", list(GRIDS))
def test_padded_grid_equals_unpadded_and_compiles_once(name):
    max_steps = 40
    ns = jnp.arange(1, max_steps + 1)
    traces = []

    def build(n):
        traces.append(None)
        return GRIDS[name](n, max_steps=max_steps)

    padded = jax.jit(jax.vmap(build))(ns)
    assert len(traces) == 1
    chex.assert_shape(padded, (max_steps, max_steps + 1))
    assert np.all(np.asarray(padded)[np.arange(max_steps + 1)[None, :] > ns[:, None]] == 0.0)
    # Each unpadded grid compiles its own shapes, so compare on a spread of step counts.
    for n in [1, 2, 3, 7, 16, max_steps]:
        ref = np.asarray(GRIDS[name](n))
        np.testing.assert_allclose(padded[n - 1, : n + 1], ref, rtol=2e-6, atol=0)


CONTINUOUS = ["karras", "karras_rho3", "exponential", "polyexponential", "logsnr", "time_uniform"]
CONTINUOUS += ["time_quadratic", "time_uniform_flow"]


@pytest.mark.parametrize("name", CONTINUOUS)
def test_an_eager_grid_is_one_compiled_program(name):
    """Called outside jit, a grid for a new step count compiles one program, not one per
    operation of its formula; a new noise level compiles nothing."""
    compiles = []

    def listen(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    n = 101 + 2 * CONTINUOUS.index(name)  # a length no other case here has compiled
    GRIDS[name](n - 1)  # the scalar arithmetic around the grid, compiled once per process
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        grid = GRIDS[name](n)
        counted = len(compiles)
        other = jd.karras_sigmas(n, 0.002, 81.0) if name == "karras" else None
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert counted <= 1, counted
    assert len(compiles) == counted  # a new sigma_max reuses the program
    if other is not None:
        assert float(other[0]) == pytest.approx(81.0, rel=1e-6)
    chex.assert_shape(grid, (n + 1,))
    assert float(grid[-1]) == 0.0 and np.all(np.diff(np.asarray(grid)) < 0)


def test_karras_closed_form(x64):
    n, smin, smax, rho = 10, 0.002, 80.0, 7.0
    ramp = np.linspace(0, 1, n)
    expect = (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho
    np.testing.assert_allclose(jd.karras_sigmas(n, smin, smax, rho)[:-1], expect, rtol=1e-14)


def test_exponential_and_logsnr_are_uniform_in_log_sigma(x64):
    VP = jd.VPSchedule.linear()
    s = np.asarray(jd.exponential_sigmas(12, 0.01, 50.0))[:-1]
    np.testing.assert_allclose(np.diff(np.log(s)), np.log(0.01 / 50.0) / 11, rtol=1e-12)
    g = np.asarray(jd.logsnr_sigmas(VP, 12))[:-1]
    lam = -np.log(g)
    np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=1e-10)
    np.testing.assert_allclose(
        [g[0], g[-1]], [VP.to_ve_sigma(VP.t_max), VP.to_ve_sigma(VP.t_min)], rtol=1e-12
    )


def test_polyexponential_rho_one_is_exponential(x64):
    np.testing.assert_allclose(
        jd.polyexponential_sigmas(9, 0.1, 10.0, rho=1.0),
        jd.exponential_sigmas(9, 0.1, 10.0),
        rtol=1e-13,
    )


def test_time_grids_map_back_to_their_times(x64):
    VP = jd.VPSchedule.linear()  # built under x64, so its fields are float64
    t = np.asarray(VP.from_ve_sigma(jd.time_uniform_sigmas(VP, 11)[:-1]))
    np.testing.assert_allclose(t, np.linspace(1.0, 1e-3, 11), rtol=1e-10)
    t = np.asarray(VP.from_ve_sigma(jd.time_quadratic_sigmas(VP, 11, t_min=1e-4, t_max=0.9)[:-1]))
    np.testing.assert_allclose(np.sqrt(t), np.linspace(np.sqrt(0.9), np.sqrt(1e-4), 11), rtol=1e-10)


def test_single_step_grid_is_sigma_max_then_zero(x64):
    np.testing.assert_allclose(jd.karras_sigmas(1, 0.002, 80.0), [80.0, 0.0], rtol=1e-13)
    np.testing.assert_allclose(jd.exponential_sigmas(1, 0.002, 80.0), [80.0, 0.0], rtol=1e-13)


@given(
    n=st.integers(1, 60),
    log_min=st.floats(-4, 0),
    log_span=st.floats(0.5, 5),
    rho=st.floats(1.0, 10.0),
)
def test_karras_properties(x64, n, log_min, log_span, rho):
    smin, smax = 10.0**log_min, 10.0 ** (log_min + log_span)
    s = np.asarray(jd.karras_sigmas(n, smin, smax, rho))
    assert s.shape == (n + 1,) and s[-1] == 0
    assert np.all(np.diff(s) < 0)
    assert s[0] == pytest.approx(smax, rel=1e-12)
    if n > 1:
        assert s[-2] == pytest.approx(smin, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: jd.karras_sigmas(0, 0.1, 1.0), ValueError, "n must be >= 1"),
        (lambda: jd.karras_sigmas(-3, 0.1, 1.0), ValueError, "n must be >= 1"),
        (lambda: jd.karras_sigmas(2.5, 0.1, 1.0), ValueError, "n must be an integer"),
        (
            lambda: jd.karras_sigmas(5, 1.0, 0.1),
            ValueError,
            "sigma_min must be smaller than sigma_max",
        ),
        (lambda: jd.karras_sigmas(5, 1.0, 1.0), ValueError, "sigma_min must be smaller"),
        (lambda: jd.exponential_sigmas(5, -0.1, 1.0), ValueError, "sigma_min must be positive"),
        (lambda: jd.karras_sigmas(5, 0.1, 1.0, rho=0.0), ValueError, "rho"),
        (lambda: jd.karras_sigmas(50, 0.1, 1.0, max_steps=10), ValueError, "max_steps"),
        (lambda: jd.time_uniform_sigmas(VP, 5, t_min=0.5, t_max=0.1), ValueError, "t_min"),
        (
            lambda: jd.karras_sigmas(5, 0.002, np.inf),
            ValueError,
            "sigma_max must be positive and finite",
        ),
        (lambda: jd.logsnr_sigmas(VP, 5, t_min=0.0), ValueError, "level at t_min=0 must be"),
        (lambda: jd.time_uniform_sigmas(VP, 5, t_max=99.0), ValueError, "level at t_max=99"),
        (lambda: jd.discrete_sigmas(VP, 5), TypeError, "DiscreteVPSchedule"),
        (lambda: jd.discrete_sigmas(DISCRETE, 5, "uniform"), ValueError, "spacing"),
        (lambda: jd.discrete_sigmas(DISCRETE, 1001), ValueError, "num_train_timesteps"),
    ],
)
def test_bad_grid_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_traced_n_needs_max_steps():
    with pytest.raises(TypeError, match="max_steps"):
        jax.jit(lambda n: jd.karras_sigmas(n, 0.1, 1.0))(5)


@pytest.mark.parametrize(
    "make",
    [
        lambda lo, hi: jd.karras_sigmas(5, lo, hi),
        lambda lo, hi: jd.exponential_sigmas(5, lo, hi),
        lambda lo, hi: jd.polyexponential_sigmas(5, lo, hi, rho=2.0),
    ],
)
def test_traced_sigma_range_is_checked_when_it_runs(make):
    # A traced karras_sigmas(5, 80, 0.002) used to return an increasing grid.
    f = jax.jit(make)
    assert np.all(np.diff(f(0.002, 80.0)[:-1]) < 0)
    for lo, hi in [(80.0, 0.002), (-1.0, 5.0), (0.01, np.inf), (np.nan, 1.0)]:
        with pytest.raises(Exception, match="sigma_min and sigma_max must satisfy"):
            jax.block_until_ready(f(lo, hi))


def test_traced_time_range_is_checked_when_it_runs():
    f = jax.jit(lambda t: jd.time_uniform_sigmas(VP, 5, t_min=t))
    assert np.all(np.isfinite(f(1e-3)))
    with pytest.raises(Exception, match="0 < s\\(t_min\\)"):
        jax.block_until_ready(f(0.0))


def test_traced_n_out_of_range_fails_at_run_time():
    f = jax.jit(lambda n: jd.karras_sigmas(n, 0.1, 1.0, max_steps=8))
    with pytest.raises(Exception, match="max_steps=8"):
        jax.block_until_ready(f(9))
    with pytest.raises(Exception, match="max_steps=8"):
        jax.block_until_ready(f(0))


# ---------------------------------------------------------------------------------------------
# Parity with diffusers' DPMSolverMultistepScheduler (recorded by scripts/record_diffusers_sigmas.py)


def _records():
    data = json.loads(DATA.read_text())
    tables = {
        json.dumps(r["config"], sort_keys=True): r["table_sigmas"]
        for r in data["records"]
        if "table_sigmas" in r
    }
    runs = [r for r in data["records"] if "n" in r]
    return tables, runs


def _schedule(config):
    betas = jd.ddpm_betas(
        config["beta_schedule"], 1000, config.get("beta_start", 1e-4), config.get("beta_end", 0.02)
    )
    return jd.VPSchedule.discrete(betas)


def _kwargs(config):
    return {
        "steps_offset": config.get("steps_offset", 0),
        "lambda_min_clipped": config.get("lambda_min_clipped", -float("inf")),
    }


# diffusers builds its table in float32: alphas_cumprod carries a few float32 ulps of 1 of
# round-off (measured: <= 4.7e-7 against an exact float64 table). sigma = sqrt((1 - acp) / acp)
# magnifies that where acp is near 1 (relative error up to 3e-4 at the first timesteps), so the
# tables are compared through acp = 1 / (1 + sigma^2), at 32 ulps of 1.
ACP_ATOL = 32 * 2.0**-24


def _acp(sigmas):
    s = np.asarray(sigmas, dtype=np.float64)
    return 1.0 / (1.0 + s * s)


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_table_sigmas_match_diffusers(request, precision):
    if precision == "float64":
        request.getfixturevalue("x64")
    tables, _ = _records()
    for key, table in tables.items():
        sch = _schedule(json.loads(key))
        np.testing.assert_allclose(
            _acp(sch.sigmas), _acp(table), rtol=0, atol=ACP_ATOL, err_msg=key
        )
        # Where sampling starts (high noise) the sigmas themselves agree closely.
        np.testing.assert_allclose(sch.sigmas[500:], table[500:], rtol=1e-5, err_msg=key)


def _valid(run):
    """diffusers' own glitches: float arange giving n + 1 steps (last -1), or clipping leaving < n."""
    ts = run["timesteps"]
    return len(ts) >= run["n"] and all(t >= 0 for t in ts[: run["n"]])


def test_discrete_sigmas_match_diffusers_recorded_values():
    _, runs = _records()
    checked = 0
    for run in runs:
        cfg, n = run["config"], run["n"]
        sch = _schedule(cfg)
        if not _valid(run):
            # diffusers returns fewer than n steps here; jaxsolve refuses rather than shorten.
            with pytest.raises(ValueError, match="valid timesteps"):
                jd.discrete_sigmas(sch, n, run["spacing"], **_kwargs(cfg))
            continue
        ts = jd.discrete_timesteps(sch, n, run["spacing"], **_kwargs(cfg))
        np.testing.assert_array_equal(
            ts, run["timesteps"][:n], err_msg=f"{cfg} {run['spacing']} n={n}"
        )
        sig = jd.discrete_sigmas(sch, n, run["spacing"], **_kwargs(cfg))
        expect = np.asarray([*run["sigmas"][:n], 0.0])
        np.testing.assert_allclose(
            _acp(sig), _acp(expect), rtol=0, atol=ACP_ATOL, err_msg=f"{cfg} {run['spacing']} n={n}"
        )
        checked += 1
    assert checked > 250


# Default-run budget: traced == concrete (below) and concrete == diffusers stay by default.
@pytest.mark.slow
def test_traced_discrete_timesteps_match_diffusers_recorded_values():
    """The padded path (traced n, exact integer rounding + float-rounding corrections)."""
    _, runs = _records()
    groups = {}
    for run in runs:
        if _valid(run):
            groups.setdefault(
                (json.dumps(run["config"], sort_keys=True), run["spacing"]), []
            ).append(run)
    for (key, spacing), group in groups.items():
        cfg = json.loads(key)
        sch = _schedule(cfg)
        ns = jnp.asarray([r["n"] for r in group])
        kwargs = {"max_steps": 999, **_kwargs(cfg)}
        ts = jax.vmap(
            lambda n, sch=sch, sp=spacing, kw=kwargs: jd.discrete_timesteps(sch, n, sp, **kw)
        )(ns)
        for row, run in zip(np.asarray(ts), group, strict=True):
            n = run["n"]
            np.testing.assert_array_equal(
                row[:n], run["timesteps"][:n], err_msg=f"{cfg} {spacing} n={n}"
            )
            assert np.all(row[n:] == -1)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("max_steps", [100, pytest.param(1000, marks=pytest.mark.slow)])
def test_traced_discrete_timesteps_equal_concrete_for_every_n(spacing, max_steps):
    ns = jnp.arange(1, max_steps + 1)
    ts = np.asarray(
        jax.vmap(lambda n: jd.discrete_timesteps(DISCRETE, n, spacing, max_steps=max_steps))(ns)
    )
    for n in range(1, max_steps + 1):
        ref = np.asarray(jd.discrete_timesteps(DISCRETE, n, spacing))
        np.testing.assert_array_equal(ts[n - 1, :n], ref, err_msg=f"n={n}")
