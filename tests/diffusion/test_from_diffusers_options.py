"""``diffusion.from_diffusers`` on the scheduler options beyond the basic configs, and the x0
clipping / thresholding wrappers they use.

tests/diffusion/data/diffusers_options.json (scripts/record_diffusers_options.py) records
diffusers' DPM-Solver, UniPC, DEIS and DDIM with x0 clipping and dynamic thresholding, the SDE
variants, ``euler_at_final``, Lu's log-SNR grid, flow sigmas and UniPC's corrector options, on the
exact Gaussian-mixture model with replayed noise. Each is replayed here through ``from_diffusers``
with the mixture written in diffusers' conventions (``_model`` of test_from_diffusers), and the
clipping records are shown to differ from the same config with the option off (else they would
prove nothing).
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._from_diffusers import from_diffusers
from jaxsolve.diffusion._solvers import DDIM
from jaxsolve.diffusion._solvers._base import StepContext
from jaxsolve.diffusion._thresholding import (
    ClipRule,
    DynamicThresholdRule,
    clip_denoised,
    dynamic_thresholding,
)
from tests.diffusion.test_from_diffusers import _model

DATA = json.loads((pathlib.Path(__file__).parent / "data" / "diffusers_options.json").read_text())
RECORDS = {r["name"]: r for r in DATA["records"]}
EPS32 = float(np.finfo(np.float32).eps)
SPACED = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "use_lu_lambdas")
# A few records run by default (each run compiles a sampler, each grid JAX's eager operations for
# its length); all of them with -m slow.
DEFAULT_RUNS = {"ddim-clip-default", "unipc-flow"}
DEFAULT_GRIDS = {"ddim-clip-default", "dpmsolver++-flow-sigma-min", "deis-flow", "unipc-flow"}
# Records of clipping / thresholding, and their config with the option off.
CLIPPED = {
    "ddim-clip-default": {"clip_sample": False},
    "ddim-clip-0.8": {"clip_sample": False},
    "ddim-clip-0.8-eta1": {"clip_sample": False},
    "ddim-threshold": {"thresholding": False, "clip_sample": False},
    "dpmsolver++-threshold": {"thresholding": False},
    "dpmsolver++-threshold-max-0.8": {"thresholding": False},
    "dpmsolver-threshold": {"thresholding": False},
    "singlestep-threshold": {"thresholding": False},
    "unipc-threshold": {"thresholding": False},
    "deis-threshold": {"thresholding": False},
}


def _build(record, **changes):
    return from_diffusers(
        {**record["config"], **changes}, record["n"], eta=record["step_kwargs"].get("eta", 0.0)
    )


def _run(record, **changes):
    """The final VE state jaxsolve gives for ``record``'s config (with ``changes``)."""
    res = _build(record, **changes)
    prediction_type = record["config"].get("prediction_type", "epsilon")
    denoiser = res.denoiser_from_model(_model(res, prediction_type))
    noise = None
    if record["noise"] is not None:
        table = jnp.asarray(record["noise"])
        noise = lambda i, k: table[jnp.minimum(i, table.shape[0] - 1)]
    out = jd.sample(
        denoiser,
        res.init_noise_scale * jnp.asarray(record["z"]),
        res.sigmas,
        res.solver,
        noise=noise,
        key=None if noise is not None else jax.random.PRNGKey(0),
        full_output=True,
        save_trajectory=True,
    )
    if res.ends_at_sigma_min:
        return np.asarray(out.trajectory[res.sigmas.shape[0] - 2])
    return np.asarray(out.value)


def _some(names):
    return [
        r if r["name"] in names else pytest.param(r, marks=pytest.mark.slow)
        for r in DATA["records"]
    ]


def _assert_grid_matches(ours, theirs, spaced):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape
    assert ours[-1] == 0.0 and np.all(np.diff(ours) < 0)
    # diffusers' float32 table: a relative error eps (1 + 1/s^2)/2 in s (see test_from_diffusers);
    # a spacing option carries its end points' error to every level.
    positive = theirs > 0
    level = theirs[positive].min() if spaced else theirs[positive]
    bound = 8 * EPS32 * (1.0 + 1.0 / level**2) * theirs[positive]
    assert np.all(np.abs(ours[positive] - theirs[positive]) <= bound)


@pytest.mark.parametrize("record", _some(DEFAULT_GRIDS), ids=lambda r: r["name"])
def test_grid_and_initial_state_match_the_recording(x64, record):
    res = _build(record)
    spaced = any(record["config"].get(k, False) for k in SPACED)
    _assert_grid_matches(res.sigmas, record["grid"], spaced)
    assert res.ends_at_sigma_min == record["ends_at_sigma_min"]
    x_init = float(res.init_noise_scale) * np.asarray(record["z"])
    np.testing.assert_allclose(x_init, record["x_init_ve"], rtol=8 * EPS32)


@pytest.mark.parametrize("record", _some(DEFAULT_RUNS), ids=lambda r: r["name"])
def test_from_diffusers_reproduces_the_recorded_run(x64, record):
    # Same tolerance as test_from_diffusers: float32 round-off of diffusers' loop.
    np.testing.assert_allclose(_run(record), record["final_ve"], rtol=0, atol=2e-4)


@pytest.mark.parametrize(
    "name",
    [
        n if n == "dpmsolver++-threshold" else pytest.param(n, marks=pytest.mark.slow)
        for n in CLIPPED
    ],
)
def test_the_clipping_records_differ_from_the_unclipped_run(x64, name):
    """Else reproducing them would prove nothing about the option: with it off, the same config
    and noise end 100 times the parity tolerance away."""
    record = RECORDS[name]
    off = _run(record, **CLIPPED[name])
    assert np.max(np.abs(off - np.asarray(record["final_ve"]))) > 100 * 2e-4


# -- the wrappers: closed forms ------------------------------------------------------------------


def test_dynamic_thresholding_rule_on_a_hand_made_array(x64):
    x0 = jnp.array([[0.5, -3.0, 2.0, 1.0], [0.2, 0.1, -0.3, 0.4]])
    out = DynamicThresholdRule(jnp.asarray(0.75), jnp.asarray(2.5))(x0)
    # Sample 0: |x0| sorted (0.5, 1, 2, 3); the 0.75 quantile sits at position 2.25: 2.25.
    r = 2.25
    np.testing.assert_allclose(out[0], [0.5 / r, -1.0, 2.0 / r, 1.0 / r], rtol=1e-15)
    # Sample 1 lies inside [-1, 1]: r = max(q, 1) = 1, unchanged.
    np.testing.assert_array_equal(out[1], x0[1])
    # max_value caps r (1.5 < 2.25); one below 1 fixes r (torch.clamp(q, min=1, max=0.8) = 0.8).
    capped = DynamicThresholdRule(jnp.asarray(0.75), jnp.asarray(1.5))(x0)
    np.testing.assert_allclose(capped[0], np.clip(x0[0], -1.5, 1.5) / 1.5, rtol=1e-15)
    low = DynamicThresholdRule(jnp.asarray(0.75), jnp.asarray(0.8))(x0)
    np.testing.assert_allclose(low, np.clip(x0, -0.8, 0.8) / 0.8, rtol=1e-15)


def test_dynamic_thresholding_is_per_sample_whatever_the_batch(x64):
    x = 3.0 * jax.random.normal(jax.random.PRNGKey(0), (5, 3, 4))
    denoiser = dynamic_thresholding(lambda x, s: x * s, 0.9, 2.0)
    batch = jax.jit(lambda x: denoiser(x, 1.5))(x)
    alone = jax.jit(jax.vmap(lambda xi: denoiser(xi[None], 1.5)[0]))(x)
    np.testing.assert_array_equal(batch, alone)
    assert not np.allclose(batch, 1.5 * x)  # it bites
    # batch_ndim=2: each (i, j) row is one sample.
    rows = dynamic_thresholding(lambda x, s: x, 0.9, 2.0, batch_ndim=2)
    alone = jax.vmap(jax.vmap(lambda xij: denoiser(xij[None], 1.0)[0]))(x)
    np.testing.assert_array_equal(jax.jit(lambda x: rows(x, 1.0))(x), alone)


def test_dynamic_thresholding_ratio_sweeps_under_vmap(x64):
    x0 = jnp.array([[0.5, -3.0, 2.0, 1.0]])
    sweep = jax.vmap(lambda q: DynamicThresholdRule(q, jnp.asarray(10.0))(x0))
    out = sweep(jnp.array([0.75, 1.0]))
    np.testing.assert_allclose(out[0, 0, 1], -1.0)
    np.testing.assert_allclose(out[1, 0], x0[0] / 3.0, rtol=1e-15)


def test_clip_denoised_closed_form():
    x = jnp.array([[-2.0, -0.5, 0.3, 1.7]])
    out = clip_denoised(lambda x, s: x, 0.8)(x, 1.0)
    np.testing.assert_array_equal(out, jnp.array([[-0.8, -0.5, 0.3, 0.8]], out.dtype))


def test_thresholding_bad_arguments_raise():
    with pytest.raises(ValueError, match="ratio"):
        dynamic_thresholding(lambda x, s: x, 1.5)
    with pytest.raises(ValueError, match="max_value"):
        dynamic_thresholding(lambda x, s: x, 0.9, 0.0)
    with pytest.raises(ValueError, match="clip_range"):
        clip_denoised(lambda x, s: x, -1.0)
    with pytest.raises(ValueError, match="batch_ndim"):
        dynamic_thresholding(lambda x, s: x, batch_ndim=1)(jnp.ones(3), 1.0)


def test_ddim_transform_clips_x0_but_keeps_the_unclipped_epsilon(x64):
    """diffusers' DDIM: x_n = T(D) + (s_n / s) (x - D), the noise term from the unclipped D."""
    x = jnp.array([[3.0, -0.4]])
    denoise = lambda x, s: 0.9 * x
    ctx = StepContext(
        denoise=denoise,
        noise=None,
        sigmas=jnp.array([2.0, 1.0, 0.0]),
        i=jnp.asarray(0),
        n=jnp.asarray(2),
        sigma=jnp.asarray(2.0),
        sigma_next=jnp.asarray(1.0),
    )
    solver = DDIM(denoised_transform=ClipRule(jnp.asarray(1.0)))
    out, _ = solver.step(ctx, x, None)
    d = 0.9 * x
    np.testing.assert_allclose(out, jnp.clip(d, -1, 1) + 0.5 * (x - d), rtol=1e-15)
    final, _ = solver.final_step(ctx, x, None)
    np.testing.assert_allclose(final, jnp.clip(d, -1, 1), rtol=1e-15)


# -- learned variance: the adapter keeps the mean ------------------------------------------------


def test_learned_variance_adapter_keeps_the_mean_channels(x64):
    config = {"_class_name": "DPMSolverMultistepScheduler", "variance_type": "learned_range"}
    res = from_diffusers(config, 6)
    assert res.learned_variance
    eps = lambda x_t, t: 0.3 * x_t
    stacked = lambda x_t, t: jnp.concatenate([eps(x_t, t), 7.0 + x_t], axis=1)
    plain = from_diffusers({"_class_name": "DPMSolverMultistepScheduler"}, 6)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 3, 4, 4))
    s = res.sigmas[2]
    # (An output already shaped like x_t is the mean itself: diffusers' [:, :3] of 3 channels.)
    learned, whole, expected = jax.jit(
        lambda x, s: (
            res.denoiser_from_model(stacked)(x, s),
            res.denoiser_from_model(eps)(x, s),
            plain.denoiser_from_model(eps)(x, s),
        )
    )(x, s)
    np.testing.assert_array_equal(learned, expected)
    np.testing.assert_array_equal(whole, expected)
    with pytest.raises(ValueError, match="stacked on axis 1"):
        res.denoiser_from_model(lambda x_t, t: jnp.ones((2, 5, 4, 4)))(x, s)


def test_learned_variance_reproduces_the_recorded_run(x64):
    """diffusers with variance_type="learned_range" on 3-channel samples x0 ~ N(0, I), the
    network stacking a made-up variance on its exact noise prediction (the recording's)."""
    record = DATA["learned_variance"]
    res = from_diffusers(record["config"], record["n"])
    _assert_grid_matches(res.sigmas, record["grid"], spaced=False)

    def network(x_t, timestep):
        s = res.schedule.to_ve_sigma(timestep)
        a = 1.0 / jnp.sqrt(1.0 + s * s)
        eps = (x_t - a * (x_t / a) / (1.0 + s * s)) / (a * s)
        return jnp.concatenate([eps, 5.0 + x_t], axis=1)

    x_init = res.init_noise_scale * jnp.asarray(record["z"])
    np.testing.assert_allclose(x_init, record["x_init_ve"], rtol=8 * EPS32)
    out = jd.sample(res.denoiser_from_model(network), x_init, res.sigmas, res.solver)
    np.testing.assert_allclose(out, record["final_ve"], rtol=0, atol=2e-4)


# -- what stays refused, named -------------------------------------------------------------------

DPM = {"_class_name": "DPMSolverMultistepScheduler"}
UNIPC = {"_class_name": "UniPCMultistepScheduler"}


@pytest.mark.parametrize(
    "config, named",
    [
        (
            {**DPM, "algorithm_type": "sde-dpmsolver", "solver_order": 3},
            "algorithm_type='sde-dpmsolver' with solver_order=3",
        ),
        (
            {**DPM, "variance_type": "learned_range", "prediction_type": "v_prediction"},
            "variance_type='learned_range'",
        ),
        ({**DPM, "use_flow_sigmas": True, "use_dynamic_shifting": True}, "use_dynamic_shifting"),
        ({**DPM, "use_flow_sigmas": True, "use_karras_sigmas": True}, "use_karras_sigmas"),
        ({**DPM, "use_flow_sigmas": True, "prediction_type": "v_prediction"}, "v_prediction"),
        ({**UNIPC, "use_flow_sigmas": True, "final_sigmas_type": "sigma_min"}, "sigma_min"),
        (
            {
                **UNIPC,
                "use_flow_sigmas": True,
                "predict_x0": False,
                "prediction_type": "flow_prediction",
            },
            "predict_x0=False",
        ),
        ({**UNIPC, "disable_corrector": [0.5]}, "disable_corrector"),
        ({**UNIPC, "solver_p": "DDIMScheduler"}, "solver_p"),
    ],
)
def test_options_that_stay_refused_raise_naming_them(config, named):
    with pytest.raises(ValueError, match=named):
        from_diffusers(config, 10)
