"""``diffusion.from_diffusers``: diffusers scheduler configs reproduced end to end.

Every record of tests/diffusion/data/diffusers_samplers.json (scripts/record_diffusers_samplers.py)
stores its scheduler's full config. Here ``from_diffusers(config, n)`` must give the recorded grid,
the recorded initial state from the recorded standard-normal draw, and — with the exact mixture
model written in diffusers' own conventions for each ``prediction_type`` (not through jaxsolve's
adapters) — the recorded samples.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._from_diffusers import SUPPORTED_SCHEDULERS, from_diffusers
from jaxsolve.diffusion.analytic import GaussianMixture

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "diffusers_samplers.json").read_text())
EPS32 = float(np.finfo(np.float32).eps)
SPACING_OPTIONS = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas")
# Building a grid is cheap but compiles JAX's eager operations once per grid length, and a run
# compiles the sampler: a few grids run by default (final level, spacing with offset, flow shift),
# every grid and every run with --slow.
DEFAULT_GRIDS = {
    "cfg-euler-sigma-min-n12",
    "cfg-ddim-leading-offset-n10",
    "cfg-flow-euler-dynamic-n12",
    "cfg-pndm-sd-n12",
}


def _id(record):
    return f"{record['name']}-n{record['n']}"


def _replayed(rows):
    """The recorded draws as the driver's ``noise(i, k)``: row i of a table of one draw per step
    (``(steps, *shape)``), or draw k of row i of one with several (``(steps, draws, *shape)``,
    DPMSolverSDE's two Brownian increments)."""
    table = jnp.asarray(rows)
    several = table.ndim == 4  # the records' samples are (batch, 2)
    return lambda i, k: table[jnp.minimum(i, table.shape[0] - 1)][k if several else ...]


def _build(record):
    return from_diffusers(
        record["config"],
        record["n"],
        eta=record["step_kwargs"].get("eta"),
        mu=record["set_timesteps"].get("mu"),
    )


def _oracle():
    mix = DATA["meta"]["mixture"]
    return GaussianMixture(np.array(mix["weights"]), np.array(mix["means"]), np.array(mix["covs"]))


def _grid_bound(record, grid):
    """diffusers builds its grid in float32 from a float32 alpha_bar table: a few ulps of relative
    error in alpha_bar are a relative error eps (1 + 1/s^2)/2 in s = sqrt((1 - a)/a); a spacing
    option (Karras, exponential, beta) carries its end points' relative error to every level."""
    positive = grid > 0
    spaced = any(record["config"].get(k, False) for k in SPACING_OPTIONS)
    level = grid[positive].min() if spaced else grid[positive]
    bound = np.zeros_like(grid)
    bound[positive] = 8 * EPS32 * (1.0 + 1.0 / level**2) * grid[positive]
    return bound


def test_every_scheduler_is_recorded():
    assert {r["config"]["_class_name"] for r in DATA["records"]} == set(SUPPORTED_SCHEDULERS)


@pytest.mark.slow  # importing diffusers (torch) takes seconds
def test_every_init_argument_of_the_supported_classes_is_known():
    # Each is then reproduced or refused by value (the recorded configs hold every key).
    diffusers = pytest.importorskip("diffusers")
    import inspect

    from jaxsolve.diffusion._from_diffusers import _KNOWN_KEYS

    for name in SUPPORTED_SCHEDULERS:
        params = set(inspect.signature(getattr(diffusers, name).__init__).parameters) - {"self"}
        assert params <= _KNOWN_KEYS[name], (name, params - _KNOWN_KEYS[name])


@pytest.mark.parametrize(
    "record",
    [
        r if _id(r) in DEFAULT_GRIDS else pytest.param(r, marks=pytest.mark.slow)
        for r in DATA["records"]
    ],
    ids=_id,
)
def test_grid_and_initial_state_match_the_recording(x64, record):
    res = _build(record)
    ours, theirs = np.asarray(res.sigmas), np.asarray(record["grid"])
    assert ours.shape == theirs.shape
    assert ours[-1] == 0.0 and np.all(np.diff(ours) < 0)
    assert np.all(np.abs(ours - theirs) <= _grid_bound(record, theirs))
    assert res.ends_at_sigma_min == record["ends_at_sigma_min"]
    x_init = float(res.init_noise_scale) * np.asarray(record["z"])
    np.testing.assert_allclose(x_init, record["x_init_ve"], rtol=8 * EPS32)


def _per_sample(level, x):
    """A scalar or per-sample level, broadcastable against x."""
    level = jnp.asarray(level)
    return jnp.reshape(level, level.shape + (1,) * (x.ndim - level.ndim))


def _model(res, prediction_type):
    """The mixture as the network diffusers' scheduler expects, from diffusers' formulas (its
    ``step`` / ``precondition_outputs``), not from jaxsolve's adapters."""
    oracle = _oracle()
    if res.prediction == "flow":  # x_t = (1 - t) x0 + t eps, output eps - x0, timestep 1000 t

        def flow(x_t, timestep):
            t = _per_sample(timestep / 1000.0, x_t)
            x0 = oracle(x_t / (1.0 - t), timestep / (1000.0 - timestep))
            return (x_t - x0) / t

        return flow
    if res.prediction == "edm":  # D = c_skip x + c_out F(c_in x, log(s) / 4)

        def edm(x_in, c_noise):
            level, sd = jnp.exp(4.0 * c_noise), res.sigma_data
            s = _per_sample(level, x_in)
            x = x_in * jnp.sqrt(s * s + sd * sd)
            c_skip, c_out = sd * sd / (s * s + sd * sd), s * sd / jnp.sqrt(s * s + sd * sd)
            if prediction_type == "v_prediction":  # diffusers flips c_out's sign
                c_out = -c_out
            return (oracle(x, level) - c_skip * x) / c_out

        return edm
    if res.prediction == "cm":  # f = c_skip x + c_out F(x / sqrt(s^2 + sd^2), 250 log s)

        def cm(x_in, timestep):
            level, sd = jnp.exp(timestep / 250.0), res.sigma_data
            s_min = float(res.schedule.sigma_min)
            s = _per_sample(level, x_in)
            x = x_in * jnp.sqrt(s * s + sd * sd)
            c_skip = sd * sd / ((s - s_min) ** 2 + sd * sd)
            c_out = (s - s_min) * sd / jnp.sqrt(s * s + sd * sd)
            return (oracle(x, level) - c_skip * x) / c_out

        return cm

    def vp(x_t, timestep):  # x_t = a x0 + b eps with a = 1/sqrt(1 + s^2), b = a s
        level = res.schedule.to_ve_sigma(timestep)
        s = _per_sample(level, x_t)
        a = 1.0 / jnp.sqrt(1.0 + s * s)
        x0 = oracle(x_t / a, level)
        eps = (x_t - a * x0) / (a * s)
        return {"epsilon": eps, "sample": x0, "v_prediction": a * eps - a * s * x0}[prediction_type]

    return vp


@pytest.mark.slow
@pytest.mark.parametrize("record", DATA["records"], ids=_id)
def test_from_diffusers_reproduces_every_recorded_run(x64, record):
    res = _build(record)
    prediction_type = record["config"].get("prediction_type", "epsilon")
    denoiser = res.denoiser_from_model(_model(res, prediction_type))
    noise = None
    if record["noise"]:  # (a one-step consistency run draws nothing)
        noise = _replayed(record["noise"])
    x_init = res.init_noise_scale * jnp.asarray(record["z"])
    out = jd.sample(
        denoiser,
        x_init,
        res.sigmas,
        res.solver,
        noise=noise,
        key=None if noise is not None else jax.random.PRNGKey(0),
        full_output=True,
        save_trajectory=True,
    )
    last = res.sigmas.shape[0] - 2
    ours = out.trajectory[last] if res.ends_at_sigma_min else out.value
    theirs = np.asarray(record["final_ve"])
    if np.all(np.isnan(theirs)):  # diffusers' UniPC-bh1 into sigma = 0 (test_sampler_parity)
        assert np.all(np.isfinite(np.asarray(out.value)))
        ours, theirs = out.trajectory[last], np.asarray(record["penultimate_ve"])
    # Same tolerance as test_sampler_parity: float32 round-off of diffusers' loop.
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-4)


@pytest.mark.parametrize(
    "config",
    [{"_class_name": "DPMSolverMultistepScheduler", "prediction_type": "v_prediction"}]
    + [
        pytest.param(config, marks=pytest.mark.slow)
        for config in [
            {"_class_name": "EulerDiscreteScheduler", "prediction_type": "epsilon"},
            {"_class_name": "EulerDiscreteScheduler", "prediction_type": "sample"},
            {"_class_name": "EDMEulerScheduler", "prediction_type": "epsilon"},
            {"_class_name": "EDMEulerScheduler", "prediction_type": "v_prediction"},
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 3.0},
        ]
    ],
    ids=lambda c: f"{c['_class_name']}-{c.get('prediction_type', 'flow')}",
)
def test_denoiser_from_model_recovers_the_exact_denoiser(x64, config):
    """The recorded runs check this with --slow; here the adapter alone, at every grid level."""
    res = from_diffusers(config, 6)
    denoiser = res.denoiser_from_model(_model(res, config.get("prediction_type", "epsilon")))
    oracle = _oracle()
    x = jax.random.normal(jax.random.PRNGKey(1), (5, 2), jnp.float64)
    both = jax.jit(jax.vmap(lambda s: (denoiser(x * s, s), oracle(x * s, s))))
    ours, exact = both(res.sigmas[:-1])
    np.testing.assert_allclose(ours, exact, rtol=1e-9, atol=1e-9)


# -- what cannot be reproduced raises, naming it -------------------------------------------------

EULER = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.42.1"}


def test_unknown_option_raises_naming_it():
    with pytest.raises(ValueError, match=r"my_new_knob=3"):
        from_diffusers({**EULER, "my_new_knob": 3}, 10)


@pytest.mark.parametrize(
    "config, named",
    [
        ({**EULER, "interpolation_type": "log_linear"}, "interpolation_type='log_linear'"),
        ({**EULER, "timestep_spacing": "uniform"}, "timestep_spacing='uniform'"),
        ({**EULER, "final_sigmas_type": "max"}, "final_sigmas_type='max'"),
        ({**EULER, "prediction_type": "flow_prediction"}, "prediction_type='flow_prediction'"),
        ({**EULER, "beta_schedule": "sigmoid"}, "beta_schedule='sigmoid'"),
        (
            {"_class_name": "DPMSolverMultistepScheduler", "variance_type": "fixed_small"},
            "variance_type='fixed_small'",
        ),
        (
            {"_class_name": "UniPCMultistepScheduler", "shift_terminal": 0.1},
            "shift_terminal=0.1",
        ),
        (
            {"_class_name": "DEISMultistepScheduler", "use_flow_sigmas": True}
            | {"use_dynamic_shifting": True},
            "use_dynamic_shifting=True",
        ),
        (
            {"_class_name": "FlowMatchEulerDiscreteScheduler", "stochastic_sampling": True},
            "stochastic_sampling=True",
        ),
        (
            {"_class_name": "DDIMScheduler", "clip_sample": False, "rescale_betas_zero_snr": True},
            "rescale_betas_zero_snr=True",
        ),
    ],
)
def test_unsupported_value_raises_naming_it(config, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(")):
        from_diffusers(config, 10)


@pytest.mark.parametrize(
    "config, n, named",
    [
        # diffusers converts PNDM's combined v outputs with the current step's alpha_bar.
        ({"_class_name": "PNDMScheduler", "prediction_type": "v_prediction"}, 10, "v_prediction"),
        # Runge-Kutta warm-up with an odd stride (1000 // 30 = 33): no midpoint timestep.
        ({"_class_name": "PNDMScheduler"}, 30, "skip_prk_steps=False"),
        ({"_class_name": "PNDMScheduler"}, 3, "skip_prk_steps=False"),
        (
            {
                "_class_name": "PNDMScheduler",
                "skip_prk_steps": True,
                "timestep_spacing": "linspace",
            },
            7,
            "timestep_spacing='linspace'",
        ),
        ({"_class_name": "DDPMScheduler", "variance_type": "learned_range"}, 10, "learned_range"),
        ({"_class_name": "DDPMScheduler", "variance_type": "fixed_large_log"}, 10, "large_log"),
        ({"_class_name": "DDPMScheduler", "thresholding": True}, 10, "thresholding=True"),
        ({"_class_name": "DDPMScheduler", "rescale_betas_zero_snr": True}, 10, "zero_snr=True"),
        (
            {"_class_name": "DDPMScheduler", "variance_type": "fixed_large", "steps_offset": 1},
            10,
            "variance_type='fixed_large'",
        ),
        ({"_class_name": "KDPM2DiscreteScheduler", "prediction_type": "sample"}, 10, "'sample'"),
        ({"_class_name": "DPMSolverSDEScheduler", "prediction_type": "sample"}, 10, "'sample'"),
        ({"_class_name": "LCMScheduler", "clip_sample": True}, 4, "clip_sample=True"),
        ({"_class_name": "LCMScheduler"}, 51, "original_inference_steps=50"),
        ({"_class_name": "TCDScheduler", "rescale_betas_zero_snr": True}, 4, "zero_snr=True"),
        ({"_class_name": "CMStochasticIterativeScheduler", "s_noise": 0.5}, 4, "s_noise=0.5"),
        ({"_class_name": "CMStochasticIterativeScheduler"}, 41, "num_train_timesteps=40"),
        ({"_class_name": "FlowMatchHeunDiscreteScheduler", "stochastic": 1}, 4, "stochastic=1"),
    ],
)
def test_added_schedulers_refuse_what_they_cannot_reproduce(config, n, named):
    with pytest.raises(ValueError, match=named):
        from_diffusers(config, n)


def test_step_arguments_per_scheduler():
    # eta is a step argument: DDIM's (None is 0), TCD's gamma (None is diffusers' 0.3).
    assert from_diffusers({"_class_name": "DDIMScheduler", "clip_sample": False}, 4).solver.eta == 0
    assert from_diffusers({"_class_name": "TCDScheduler"}, 4).solver.gamma == 0.3
    assert from_diffusers({"_class_name": "TCDScheduler"}, 4, eta=0.7).solver.gamma == 0.7
    with pytest.raises(ValueError, match=r"eta=0\.5"):
        from_diffusers({"_class_name": "LCMScheduler"}, 4, eta=0.5)


@pytest.mark.parametrize("name", ["RePaintScheduler", "IPNDMScheduler", "FlowMatchLCMScheduler"])
def test_classes_that_stay_unsupported_raise(name):
    with pytest.raises(ValueError, match=f"_class_name='{name}' is not supported"):
        from_diffusers({"_class_name": name}, 10)


def test_unknown_class_raises_listing_the_supported_ones():
    with pytest.raises(ValueError, match="RePaintScheduler") as info:
        from_diffusers({"_class_name": "RePaintScheduler"}, 10)
    for name in SUPPORTED_SCHEDULERS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="_class_name=None"):
        from_diffusers({}, 10)


def test_ddim_spacing_that_skips_levels_raises():
    # "linspace" with 7 of 1000 steps: diffusers steps from t to t - 142, not to the next timestep.
    config = {"_class_name": "DDIMScheduler", "clip_sample": False, "timestep_spacing": "linspace"}
    with pytest.raises(ValueError, match="timestep_spacing='linspace'"):
        from_diffusers(config, 7)


def test_dynamic_shifting_needs_mu_or_image_seq_len(x64):
    config = {"_class_name": "FlowMatchEulerDiscreteScheduler", "use_dynamic_shifting": True}
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        from_diffusers(config, 8)
    by_len = from_diffusers(config, 8, image_seq_len=1024)
    by_mu = from_diffusers(config, 8, mu=jd.dynamic_shift_mu(1024))
    np.testing.assert_array_equal(by_len.sigmas, by_mu.sigmas)
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        from_diffusers({"_class_name": "FlowMatchEulerDiscreteScheduler"}, 8, mu=1.0)
