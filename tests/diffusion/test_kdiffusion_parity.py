"""Parity with k-diffusion's ``sampling.py`` and orders of convergence of its samplers (float64).

The reference is k-diffusion's own code (``pip install --no-deps k-diffusion torchsde
torchdiffeq``): its package ``__init__`` imports image libraries, so ``sampling.py`` is loaded by
file path, with its ``utils`` module stubbed down to the one function it calls when the real one
cannot be imported. Both sides run the same exact Gaussian denoiser (jaxsolve's closed form, and its
torch twin from the same eigendecomposition) and the same noise: jaxsolve's draws come from
``sample(noise=...)`` and k-diffusion gets them through its ``noise_sampler(sigma, sigma_next)``.

Those live checks are slow and need torch and k-diffusion. The default run (and CI, which installs
neither) replays recordings of the same samplers instead (``test_matches_recorded_kdiffusion``):
tests/diffusion/data/kdiffusion_samplers.json, made by scripts/record_kdiffusion_samplers.py with
k-diffusion's ``sampling.py`` in float64 on an exact 2-D Gaussian-mixture denoiser computed in
NumPy, every draw taken from a recorded table (or, in one record, k-diffusion's Brownian tree).
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import pathlib
import re
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import diffusion as jd
from jaxsolve.diffusion._solvers.kdiffusion import (
    DPM2Ancestral,
    DPMFast,
    DPMSolverPP2SAncestral,
    DPMSolverPP3MSDEKDiffusion,
    DPMSolverPPSDE2S,
    LMSMultistepFinal,
    brownian_tree_noise,
    dpm_fast_orders,
    dpm_fast_sigmas,
)
from jaxsolve.diffusion.analytic import Gaussian, GaussianMixture
from tests.diffusion.test_solver_order import NS, _errors, _lam_uniform, _slope

N_STEPS, BATCH = 12, 4
SIGMA_MAX, SIGMA_MIN = 10.0, 0.05


def _load_sampling():
    torch = pytest.importorskip("torch")
    for name in ("scipy", "torchsde", "torchdiffeq", "tqdm"):
        pytest.importorskip(name)
    if "_kdiffusion_reference.sampling" in sys.modules:
        return torch, sys.modules["_kdiffusion_reference.sampling"]
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion is not installed")
    root = next(iter(spec.submodule_search_locations))
    package = types.ModuleType("_kdiffusion_reference")
    package.__path__ = [root]
    sys.modules["_kdiffusion_reference"] = package
    try:
        utils = _load_file("_kdiffusion_reference.utils", f"{root}/utils.py")
    except ImportError:  # PIL, torchvision, safetensors: not needed by sampling.py
        utils = types.ModuleType("_kdiffusion_reference.utils")
        utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
        sys.modules["_kdiffusion_reference.utils"] = utils
    package.utils = utils
    return torch, _load_file("_kdiffusion_reference.sampling", f"{root}/sampling.py")


def _load_file(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:
        del sys.modules[name]
        raise
    return module


def _gaussian():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return Gaussian(np.array([0.5, -1.0, 0.25]), q @ np.diag([0.3, 1.0, 3.0]) @ q.T)


def _torch_denoiser(torch, g):
    loc = torch.tensor(np.asarray(g.loc))
    lam = torch.tensor(np.asarray(g.eigvals))
    vecs = torch.tensor(np.asarray(g.eigvecs))

    def denoise(x, sigma):  # sigma: (batch,)
        shrink = lam / (lam + sigma[:, None] ** 2)
        return loc + (((x - loc) @ vecs) * shrink) @ vecs.T

    return denoise


def _karras(n):
    ramp = np.linspace(0, 1, n)
    lo, hi = SIGMA_MIN ** (1 / 7), SIGMA_MAX ** (1 / 7)
    return np.concatenate([(hi + ramp * (lo - hi)) ** 7, [0.0]])


class _RecordedNoise:
    """The draws ``z[i, k]`` given to both samplers: jaxsolve reads them by (step, draw);
    k-diffusion's ``noise_sampler(sigma, sigma_next)`` finds the step from ``sigma`` and, for a
    sub-step that ends inside it (``dpmpp_sde``), returns the first draw and for the whole step the
    Brownian-bridge sum of both (the law of k-diffusion's Brownian tree)."""

    def __init__(self, torch, sigmas, shape, r=0.5):
        self.torch, self.sigmas = torch, sigmas
        self.z = np.random.default_rng(1).normal(size=(len(sigmas), 2, *shape))
        self.r = r

    def jax(self):
        z = jnp.asarray(self.z)
        return lambda i, k: z[i, k]

    def kdiffusion(self, sigma, sigma_next):
        sigma, sigma_next = float(sigma), float(sigma_next)
        i = int(np.argmin(np.abs(self.sigmas - sigma)))
        s, sn = self.sigmas[i], self.sigmas[i + 1]
        assert abs(sigma - s) <= 1e-12 * s
        z0, z1 = self.z[i]
        if abs(sigma_next - sn) <= 1e-12 * s:  # the whole step
            if not self.two_draws:
                return self.torch.tensor(z0)
            mid = np.exp(np.log(s) + self.r * (np.log(sn) - np.log(s)))
            a, b = s - mid, mid - sn
            return self.torch.tensor((np.sqrt(a) * z0 + np.sqrt(b) * z1) / np.sqrt(a + b))
        return self.torch.tensor(z0)

    two_draws = False


CASES = [
    # (name, jaxsolve solver, k-diffusion sampler, its kwargs, two draws per step)
    ("euler", jd.Euler, "sample_euler", {}, False),
    ("euler_ancestral", jd.EulerAncestral, "sample_euler_ancestral", {}, False),
    ("heun", jd.Heun, "sample_heun", {}, False),
    ("dpm_2", jd.DPM2, "sample_dpm_2", {}, False),
    ("dpm_2_ancestral", DPM2Ancestral, "sample_dpm_2_ancestral", {}, False),
    (
        "dpm_2_ancestral_eta",
        lambda: DPM2Ancestral(eta=0.6, s_noise=0.9),
        "sample_dpm_2_ancestral",
        {"eta": 0.6, "s_noise": 0.9},
        False,
    ),
    ("lms", LMSMultistepFinal, "sample_lms", {}, False),
    ("dpmpp_2s_ancestral", DPMSolverPP2SAncestral, "sample_dpmpp_2s_ancestral", {}, False),
    ("dpmpp_sde", DPMSolverPPSDE2S, "sample_dpmpp_sde", {}, True),
    (
        "dpmpp_sde_eta_r",
        lambda: DPMSolverPPSDE2S(eta=0.5, s_noise=1.1, r=0.4),
        "sample_dpmpp_sde",
        {"eta": 0.5, "s_noise": 1.1, "r": 0.4},
        True,
    ),
    ("dpmpp_2m", lambda: jd.DPMSolverPP(order=2), "sample_dpmpp_2m", {}, False),
    ("dpmpp_2m_sde", lambda: jd.DPMSolverPPSDE(order=2), "sample_dpmpp_2m_sde", {}, False),
    (
        "dpmpp_2m_sde_heun",
        lambda: jd.DPMSolverPPSDE(order=2, solver_type="heun"),
        "sample_dpmpp_2m_sde",
        {"solver_type": "heun"},
        False,
    ),
    ("dpmpp_3m_sde", DPMSolverPP3MSDEKDiffusion, "sample_dpmpp_3m_sde", {}, False),
]


def _run_both(case, n_steps=N_STEPS):
    _, make, reference, kwargs, two_draws = case
    torch, sampling = _load_sampling()
    g = _gaussian()
    sigmas = _karras(n_steps)
    x0 = np.asarray(g.sample(jax.random.PRNGKey(0), BATCH, sigma=SIGMA_MAX))
    noise = _RecordedNoise(torch, sigmas, x0.shape, r=kwargs.get("r", 0.5))
    noise.two_draws = two_draws
    ours = jd.sample(g.denoise, jnp.asarray(x0), jnp.asarray(sigmas), make(), noise=noise.jax())
    if "noise_sampler" in _signature(getattr(sampling, reference)):
        kwargs = {**kwargs, "noise_sampler": noise.kdiffusion}
    theirs = getattr(sampling, reference)(
        _torch_denoiser(torch, g),
        torch.tensor(x0),
        torch.tensor(sigmas),
        disable=True,
        **kwargs,
    )
    return np.asarray(ours), theirs.numpy()


def _signature(fn):
    import inspect

    return inspect.signature(fn).parameters


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_parity_with_kdiffusion(x64, case):
    ours, theirs = _run_both(case)
    # k-diffusion's LMS integrates its weights with scipy's quad (epsrel 1e-4), which is exact to
    # round-off for these cubic Lagrange polynomials; every case agrees to float64 round-off.
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_3m_sde_differs_from_kdiffusion_only_by_its_options(x64):
    """jaxsolve's DPMSolverPPSDE(order=3) and k-diffusion's dpmpp_3m_sde differ by three options:
    the D2 weight (2 c2, third order, vs c2), the warm-up step's form (midpoint vs heun) and the
    lowered order on the last steps. Setting all three gives k-diffusion's class exactly (which
    matches k-diffusion above); leaving any one out does not."""
    g = _gaussian()
    sigmas = jnp.asarray(_karras(N_STEPS))
    x0 = g.sample(jax.random.PRNGKey(0), BATCH, sigma=SIGMA_MAX)
    z = jnp.asarray(np.random.default_rng(1).normal(size=(N_STEPS + 1, 1, *x0.shape)))

    def run(solver):
        return np.asarray(jd.sample(g.denoise, x0, sigmas, solver, noise=lambda i, k: z[i, k]))

    kdiffusion = {"legacy_third_order": True, "solver_type": "heun", "lower_order_final": False}
    reference = run(DPMSolverPP3MSDEKDiffusion())
    np.testing.assert_array_equal(run(jd.DPMSolverPPSDE(order=3, **kdiffusion)), reference)
    for left_out in kdiffusion:
        options = {k: v for k, v in kdiffusion.items() if k != left_out}
        assert np.max(np.abs(run(jd.DPMSolverPPSDE(order=3, **options)) - reference)) > 1e-4


@pytest.mark.slow
def test_kdiffusion_3m_sde_at_eta_zero_is_the_reference_3m(x64):
    """At eta = 0 k-diffusion's 3M SDE is DPM-Solver++(3M) with the reference coefficient, whose
    second-order convergence test_solver_order.py::test_reference_3m_is_second_order measures."""
    g = _gaussian()
    sigmas = jnp.asarray(_karras(N_STEPS))
    x0 = g.sample(jax.random.PRNGKey(0), BATCH, sigma=SIGMA_MAX)
    zero = jnp.zeros_like(x0)
    sde = jd.sample(
        g.denoise, x0, sigmas, DPMSolverPP3MSDEKDiffusion(eta=0.0), noise=lambda i, k: zero
    )
    ode = jd.DPMSolverPP(
        order=3, solver_type="heun", legacy_third_order=True, lower_order_final=False
    )
    np.testing.assert_allclose(sde, jd.sample(g.denoise, x0, sigmas, ode), rtol=1e-12, atol=1e-12)


def test_dpm_fast_orders_and_grid():
    assert dpm_fast_orders(12) == [3, 3, 3, 2, 1]
    assert dpm_fast_orders(10) == [3, 3, 3, 1]
    assert dpm_fast_orders(11) == [3, 3, 3, 2]
    for nfe in range(1, 20):
        assert sum(dpm_fast_orders(nfe)) == nfe
    s = np.asarray(dpm_fast_sigmas(12, 0.1, 10.0))
    assert s.shape == (7,) and s[-1] == 0.0
    np.testing.assert_allclose(np.diff(np.log(s[:-1])), np.log(0.1 / 10.0) / 5, rtol=1e-6)


DPM_FAST_NFES = [10, 11, 12]


@pytest.mark.slow
@pytest.mark.parametrize("nfe", DPM_FAST_NFES)
def test_dpm_fast_parity_and_nfe(x64, nfe):
    torch, sampling = _load_sampling()
    g = _gaussian()
    sigmas = dpm_fast_sigmas(nfe, SIGMA_MIN, SIGMA_MAX)
    m = sigmas.shape[0] - 2
    x0 = np.asarray(g.sample(jax.random.PRNGKey(0), BATCH, sigma=SIGMA_MAX))
    out = jd.sample(
        g.denoise, jnp.asarray(x0), sigmas, DPMFast(nfe=nfe), n_steps=m, full_output=True
    )
    assert int(out.nfe) == nfe
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # sample_dpm_fast builds its grid with torch.tensor
    try:
        theirs = sampling.sample_dpm_fast(
            _torch_denoiser(torch, g), torch.tensor(x0), SIGMA_MIN, SIGMA_MAX, nfe, disable=True
        )
    finally:
        torch.set_default_dtype(previous)
    np.testing.assert_allclose(np.asarray(out.value), theirs.numpy(), rtol=1e-12, atol=1e-12)


RECORDED = json.loads(
    (pathlib.Path(__file__).parent / "data" / "kdiffusion_samplers.json").read_text()
)
RECORDS = {record["name"]: record for record in RECORDED["records"]}
# The records replayed in the default run: one per k-diffusion sampler. The live test's other
# options, dpm_fast's other budgets, dpm_adaptive's order 2 and the Brownian-tree run are marked
# slow (run with -m slow).
DEFAULT_RECORDS = {
    "euler",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "dpm_fast_12",
    "dpm_adaptive_3",
}


def _recorded_solver(record):
    """The jaxsolve solver that reproduces a record: CASES' for the live cases' names."""
    if record["sampler"] == "sample_dpm_fast":
        return DPMFast(nfe=record["kwargs"]["n"])
    if record["sampler"] == "sample_dpm_adaptive":
        return jd.DPMAdaptive(order=record["kwargs"]["order"])
    if record["name"] == "dpmpp_sde_brownian_tree":
        return DPMSolverPPSDE2S()
    (case,) = [c for c in CASES if c[0] == record["name"]]
    return case[1]()


def _replay(record, **kwargs):
    """jaxsolve's run of a record: its grid, initial state and draws, on the mixture's exact
    denoiser (jaxsolve's oracle; the recording used its own NumPy one)."""
    mixture = RECORDED["meta"]["mixture"]
    oracle = GaussianMixture(
        np.array(mixture["weights"]), np.array(mixture["means"]), np.array(mixture["covs"])
    )
    grid = jnp.asarray(record["grid"])
    noise = None
    if record["noise"] is not None:
        table = jnp.asarray(record["noise"])
        # The table stops at the last step k-diffusion drew for; later steps add no noise.
        noise = lambda i, k: table[jnp.minimum(i, table.shape[0] - 1), k]
    # dpm_fast stops at sigma_min, one step short of the grid's final 0.
    n_steps = grid.shape[0] - 2 if record["sampler"] == "sample_dpm_fast" else None
    if record["sampler"] == "sample_dpm_adaptive":  # its attempts, then the final step
        kwargs = {"max_steps": record["attempts"] + 1, "save_trajectory": True, **kwargs}
    return jd.sample(
        oracle,
        jnp.asarray(record["x_init"]),
        grid,
        _recorded_solver(record),
        noise=noise,
        n_steps=n_steps,
        full_output=True,
        **kwargs,
    )


@pytest.mark.parametrize(
    "name",
    [n if n in DEFAULT_RECORDS else pytest.param(n, marks=pytest.mark.slow) for n in RECORDS],
)
def test_matches_recorded_kdiffusion(x64, name):
    record = RECORDS[name]
    if record["sampler"] == "sample_dpm_fast":
        kwargs = record["kwargs"]
        grid = dpm_fast_sigmas(kwargs["n"], kwargs["sigma_min"], kwargs["sigma_max"])
        np.testing.assert_allclose(grid, record["grid"], rtol=1e-13, atol=0)
    out = _replay(record)
    ours, tol = np.asarray(out.value), 1e-12
    if record["sampler"] == "sample_dpm_adaptive":
        # k-diffusion stops at sigma_min: compare the state after its attempts, before the final
        # denoising (one more evaluation). Its step-size controller reads an error estimate that
        # is a difference of nearly equal states, so round-off moves the step sizes: k-diffusion
        # against itself, its model's outputs jittered by 1 ulp, differed by up to 6.5e-13 at
        # order 3 (2e-15 at order 2); jaxsolve differs from the recording by 1.9e-13 (7e-16).
        assert int(out.num_steps) == record["attempts"] + 1
        assert int(out.nfe) == record["nfe"] + 1
        path = np.asarray(out.trajectory[: record["attempts"] + 1])
        rejected = np.all(path[1:] == path[:-1], axis=(1, 2))  # a rejected attempt keeps x
        assert int(np.sum(rejected)) == record["rejected"]
        ours, tol = path[-1], 1e-11
    else:
        assert int(out.nfe) == record["nfe"]  # k-diffusion's model calls
    # Float64 round-off, as live. LMS: k-diffusion integrates its weights with scipy's quad
    # (epsrel 1e-4), whose Gauss-Kronrod rule is exact for these cubic Lagrange polynomials.
    np.testing.assert_allclose(ours, record["final"], rtol=tol, atol=tol)


def test_recorded_callback_values(x64):
    """``sample(callback=...)`` reports what k-diffusion's ``callback`` saw at every step."""
    record = RECORDS["dpmpp_2m_sde"]
    seen = []
    _replay(record, callback=seen.append)
    theirs = record["callback"]
    assert [info["i"] for info in seen] == theirs["i"]
    for key in ("sigma", "sigma_hat", "x", "denoised"):
        ours = np.stack([np.asarray(info[key]) for info in seen])
        np.testing.assert_allclose(ours, theirs[key], rtol=1e-12, atol=1e-12, err_msg=key)


def test_recording_covers_the_live_cases():
    """Every case the live test runs is recorded, with the same k-diffusion sampler and options."""
    for name, _, sampler, kwargs, two_draws in CASES:
        record = RECORDS[name]
        assert (record["sampler"], record["kwargs"]) == (sampler, kwargs), name
        if record["noise"] is not None:
            assert np.asarray(record["noise"]).shape[1] == (2 if two_draws else 1), name
    fast = {r["kwargs"]["n"] for r in RECORDS.values() if r["sampler"] == "sample_dpm_fast"}
    assert fast == set(DPM_FAST_NFES)
    for record in RECORDS.values():
        assert np.all(np.isfinite(record["final"])), record["name"]


def test_recording_names_the_kdiffusion_version():
    meta = RECORDED["meta"]
    assert re.fullmatch(r"\d+(\.\d+)+([.-]?\w+)*", meta["k-diffusion"]), meta["k-diffusion"]
    assert re.fullmatch(r"[0-9a-f]{64}", meta["sampling.py sha256"])


def test_recording_was_made_from_the_installed_kdiffusion():
    """Where the recorded k-diffusion version is installed, its ``sampling.py`` is the file the
    recording ran (without importing k-diffusion: its package imports image libraries)."""
    try:
        version = importlib.metadata.version("k-diffusion")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("k-diffusion is not installed")
    if version != RECORDED["meta"]["k-diffusion"]:
        pytest.skip(f"k-diffusion {version} installed, {RECORDED['meta']['k-diffusion']} recorded")
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("k-diffusion's metadata is installed but not its package")
    root = next(iter(spec.submodule_search_locations))
    source = pathlib.Path(root, "sampling.py").read_bytes()
    assert hashlib.sha256(source).hexdigest() == RECORDED["meta"]["sampling.py sha256"]


ORDER_CASES = [
    ("dpm_2_ancestral_eta0", lambda: DPM2Ancestral(eta=0.0), 2, NS),
    ("dpmpp_2s_ancestral_eta0", lambda: DPMSolverPP2SAncestral(eta=0.0), 2, NS),
    ("dpmpp_sde_eta0", lambda: DPMSolverPPSDE2S(eta=0.0), 2, NS),
    ("dpm_fast", lambda: DPMFast(nfe=11), 3, NS),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", ORDER_CASES, ids=[c[0] for c in ORDER_CASES])
def test_order_of_convergence(x64, case):
    _, make, order, ns = case
    errors = _errors(make(), ns, _lam_uniform, 1)
    assert np.all(errors < 1.0) and np.all(np.diff(errors) < 0), errors
    slope = _slope(ns, errors)
    assert abs(slope - order) <= 0.3, f"slope {slope:.3f} vs order {order}; errors {errors}"


def test_eta_zero_is_dpm_solver_pp_2s(x64):
    """At eta = 0 (no key needed) dpmpp_sde is DPM-Solver++(2S) with the midpoint in log sigma:
    one step against the update written out in numpy with the closed-form denoiser."""
    for solver in (
        DPM2Ancestral(eta=0.0),
        DPMSolverPP2SAncestral(eta=0.0),
        DPMSolverPPSDE2S(eta=0.0),
    ):
        assert not solver.stochastic
    g = _gaussian()
    loc, lam, vecs = (np.asarray(a) for a in (g.loc, g.eigvals, g.eigvecs))

    def denoise(x, sigma):
        return loc + (((x - loc) @ vecs) * (lam / (lam + sigma**2))) @ vecs.T

    x0 = np.asarray(g.sample(jax.random.PRNGKey(2), 2, sigma=SIGMA_MAX))
    sigma, sigma_next = SIGMA_MAX, 2.0
    h = np.log(sigma / sigma_next)
    mid = np.sqrt(sigma * sigma_next)
    y = (mid / sigma) * x0 - np.expm1(-h / 2) * denoise(x0, sigma)
    expected = (sigma_next / sigma) * x0 - np.expm1(-h) * denoise(y, mid)
    ours = jd.sample(
        g.denoise, x0, jnp.array([sigma, sigma_next, 0.0]), DPMSolverPPSDE2S(eta=0.0), n_steps=1
    )
    np.testing.assert_allclose(ours, expected, rtol=1e-13, atol=1e-13)


@pytest.mark.slow
def test_dpm2_ancestral_at_eta_zero_is_dpm2(x64):
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(2), BATCH, sigma=SIGMA_MAX)
    sigmas = jnp.asarray(_karras(6))
    np.testing.assert_allclose(
        jd.sample(g.denoise, x0, sigmas, DPM2Ancestral(eta=0.0)),
        jd.sample(g.denoise, x0, sigmas, jd.DPM2()),
        rtol=1e-13,
        atol=1e-13,
    )


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Should have t")  # torchsde: a level 1 ulp outside its span
def test_dpmpp_sde_with_kdiffusions_own_brownian_tree(x64):
    """k-diffusion's dpmpp_sde with its own BrownianTreeNoiseSampler against jaxsolve's, fed the
    same tree's increments over [sigma_s, sigma] and [sigma_n, sigma_s]: the Brownian-bridge sum of
    the module gives the increment over [sigma_n, sigma] that k-diffusion asks its tree for."""
    torch, sampling = _load_sampling()
    g = _gaussian()
    sigmas = _karras(N_STEPS)
    x0 = np.asarray(g.sample(jax.random.PRNGKey(0), BATCH, sigma=SIGMA_MAX))
    tree = sampling.BrownianTreeNoiseSampler(
        torch.tensor(x0), torch.tensor(SIGMA_MIN), torch.tensor(SIGMA_MAX), seed=3
    )
    draws = np.zeros((N_STEPS + 1, 2, *x0.shape))
    for i in range(N_STEPS - 1):
        s, sn = sigmas[i], sigmas[i + 1]
        mid = np.exp(np.log(s) + 0.5 * (np.log(sn) - np.log(s)))
        draws[i, 0] = tree(torch.tensor(s), torch.tensor(mid)).numpy()
        draws[i, 1] = tree(torch.tensor(mid), torch.tensor(sn)).numpy()
    z = jnp.asarray(draws)
    ours = jd.sample(
        g.denoise,
        jnp.asarray(x0),
        jnp.asarray(sigmas),
        DPMSolverPPSDE2S(),
        noise=lambda i, k: z[i, k],
    )
    theirs = sampling.sample_dpmpp_sde(
        _torch_denoiser(torch, g),
        torch.tensor(x0),
        torch.tensor(sigmas),
        disable=True,
        noise_sampler=tree,
    )
    # torchsde's tree answers later queries consistently with the points it has already
    # sampled (a Brownian bridge between them), so the two agree to round-off.
    np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-12, atol=1e-12)


STRONG_CASES = [
    ("dpmpp_sde", DPMSolverPPSDE2S, True),
    ("dpmpp_2s_ancestral", DPMSolverPP2SAncestral, False),
    ("dpm_2_ancestral", DPM2Ancestral, False),
    ("dpmpp_2m_sde", lambda: jd.DPMSolverPPSDE(order=2), False),
]


@pytest.mark.slow
@pytest.mark.parametrize("case", STRONG_CASES, ids=[c[0] for c in STRONG_CASES])
def test_strong_convergence_with_one_brownian_path(x64, case):
    """Refining the grid with the same Brownian path (brownian_tree_noise) converges:
    the sample at the last positive level approaches the fine-grid one."""
    _, make, two_draws = case
    smax, smin, batch = 10.0, 0.2, 16
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(0), batch, sigma=smax)
    key = jax.random.PRNGKey(5)

    def at_smin(n):
        lam = np.linspace(-np.log(smax), -np.log(smin), n + 1)
        sigmas = np.concatenate([np.exp(-lam), [0.0]])
        out = jd.sample(
            g.denoise,
            x0,
            jnp.asarray(sigmas),
            make(),
            full_output=True,
            save_trajectory=True,
            noise=brownian_tree_noise(key, x0, sigmas, r=0.5 if two_draws else None),
        )
        return np.asarray(out.trajectory[n])

    fine = at_smin(128)
    errors = [np.sqrt(np.mean((at_smin(n) - fine) ** 2)) for n in (8, 16, 32)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[0] / errors[2] > 2.5, errors  # at least ~2/3 order; about 1 is typical


STOCHASTIC = [DPM2Ancestral, DPMSolverPP2SAncestral, DPMSolverPPSDE2S]


@pytest.mark.slow
@pytest.mark.parametrize("make", STOCHASTIC, ids=[m.__name__ for m in STOCHASTIC])
def test_stochastic_batch_independent_and_one_compile_sweep(x64, make):
    """A sample does not depend on the batch it is drawn in; eta and the step count sweep under
    one vmap (one compilation)."""
    g = _gaussian()
    x0 = g.sample(jax.random.PRNGKey(0), 4, sigma=SIGMA_MAX)
    grid = jnp.asarray(_karras(6))
    key = jax.random.PRNGKey(7)
    whole = jd.sample(g.denoise, x0, grid, make(), key=key)
    first = jd.sample(g.denoise, x0[:2], grid, make(), key=key)
    np.testing.assert_allclose(whole[:2], first, rtol=1e-6, atol=1e-6)

    def run(eta, n):
        return jd.sample(g.denoise, x0, grid, make(eta=eta), key=key, n_steps=n)

    etas = jnp.array([1.0, 0.5, 0.0])
    swept = jax.vmap(run)(etas, jnp.array([6, 6, 4]))
    np.testing.assert_allclose(swept[0], whole, rtol=1e-6, atol=1e-6)
    at_zero = jd.sample(g.denoise, x0, grid, make(eta=0.0), n_steps=4)
    np.testing.assert_allclose(swept[2], at_zero, rtol=1e-5, atol=1e-5)
