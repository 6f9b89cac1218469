"""Record k-diffusion's samplers on an exact Gaussian-mixture model, for jaxsolve's parity tests.

Each of k-diffusion's samplers that tests/diffusion/test_kdiffusion_parity.py checks live (and
``dpm_adaptive``) runs in float64 from its own ``sampling.py`` with a model whose output is the
*exact* denoiser of a 2-D Gaussian mixture (computed with NumPy, independently of jaxsolve), on a
Karras grid of 12 steps (``dpm_fast`` and ``dpm_adaptive`` make their own). Every draw it makes
comes from a recorded table through its ``noise_sampler(sigma, sigma_next)`` argument (one draw a
step; for ``dpmpp_sde`` two, joined by the Brownian bridge as its Brownian tree would join them),
except in one record where ``dpmpp_sde`` queries k-diffusion's own ``BrownianTreeNoiseSampler``
and the table holds that tree's increments over the two sub-steps. The grid, initial state, noise
table, final sample and number of model calls go to a JSON file that the test suite replays
without torch or k-diffusion; one record also keeps what k-diffusion's ``callback`` saw at every
step.

k-diffusion's package ``__init__`` imports image libraries, so where it cannot be imported
``sampling.py`` is loaded by file path with ``utils`` cut down to the one function it calls. Run
with k-diffusion, torchsde, torchdiffeq, scipy and tqdm installed (``pip install --no-deps
k-diffusion torchsde torchdiffeq``):

    python scripts/record_kdiffusion_samplers.py tests/diffusion/data/kdiffusion_samplers.json
"""

import hashlib
import importlib.metadata
import importlib.util
import json
import sys
import types
import warnings

import numpy as np
import torch

WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[1.0, 1.0], [-1.0, 0.5], [0.0, -1.2]])
COVS = np.array(
    [[[0.10, 0.03], [0.03, 0.05]], [[0.20, -0.05], [-0.05, 0.10]], [[0.05, 0.0], [0.0, 0.15]]]
)
BATCH, N_STEPS = 8, 12
SIGMA_MAX, SIGMA_MIN = 10.0, 0.05

# (record name, k-diffusion sampler, its keyword arguments, draws per step). The names are those
# of test_kdiffusion_parity.py's CASES, which say which jaxsolve solver reproduces each.
CASES = [
    ("euler", "sample_euler", {}, 0),
    ("euler_ancestral", "sample_euler_ancestral", {}, 1),
    ("heun", "sample_heun", {}, 0),
    ("dpm_2", "sample_dpm_2", {}, 0),
    ("dpm_2_ancestral", "sample_dpm_2_ancestral", {}, 1),
    ("dpm_2_ancestral_eta", "sample_dpm_2_ancestral", {"eta": 0.6, "s_noise": 0.9}, 1),
    ("lms", "sample_lms", {}, 0),
    ("dpmpp_2s_ancestral", "sample_dpmpp_2s_ancestral", {}, 1),
    ("dpmpp_sde", "sample_dpmpp_sde", {}, 2),
    ("dpmpp_sde_eta_r", "sample_dpmpp_sde", {"eta": 0.5, "s_noise": 1.1, "r": 0.4}, 2),
    ("dpmpp_2m", "sample_dpmpp_2m", {}, 0),
    ("dpmpp_2m_sde", "sample_dpmpp_2m_sde", {}, 1),
    ("dpmpp_2m_sde_heun", "sample_dpmpp_2m_sde", {"solver_type": "heun"}, 1),
    ("dpmpp_3m_sde", "sample_dpmpp_3m_sde", {}, 1),
]
CALLBACK_RECORD = "dpmpp_2m_sde"  # the one record that keeps k-diffusion's callback values
DPM_FAST_NFES = (10, 11, 12)


def gmm_denoise(x, sigma):
    """E[x0 | x0 + sigma eps = x] for the mixture, float64 (x: (B, 2), sigma a scalar)."""
    x = np.asarray(x, np.float64)
    logits, posteriors = [], []
    for w, m, c in zip(WEIGHTS, MEANS, COVS, strict=True):
        noised = c + sigma**2 * np.eye(2)
        diff = x - m
        solved = np.linalg.solve(noised, diff.T).T  # (C + s^2 I)^-1 (x - m)
        _, logdet = np.linalg.slogdet(2 * np.pi * noised)
        logits.append(np.log(w) - 0.5 * np.sum(diff * solved, 1) - 0.5 * logdet)
        posteriors.append(m + solved @ c)  # m + C (C + s^2 I)^-1 (x - m)
    logits = np.stack(logits, 1)
    r = np.exp(logits - logits.max(1, keepdims=True))
    r /= r.sum(1, keepdims=True)
    return np.einsum("bk,kbd->bd", r, np.stack(posteriors))


def mixture_sample(rng, n):
    component = rng.choice(len(WEIGHTS), size=n, p=WEIGHTS)
    chol = np.linalg.cholesky(COVS)
    return MEANS[component] + np.einsum("bij,bj->bi", chol[component], rng.standard_normal((n, 2)))


class Model:
    """k-diffusion's ``model(x, sigma)`` (sigma one level per sample) on the exact mixture
    denoiser; counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, sigma):
        levels = sigma.numpy()
        if not np.all(levels == levels[0]):
            raise ValueError(f"the samplers recorded here use one level per call; got {levels}")
        self.calls += 1
        return torch.from_numpy(gmm_denoise(x.numpy(), float(levels[0])))


class NoiseTable:
    """k-diffusion's ``noise_sampler(sigma, sigma_next)`` from the draws ``z[i, k]`` of step
    ``i = index of sigma in the grid``. With one draw a step it returns ``z[i, 0]``; with two
    (``dpmpp_sde``, intermediate level ``sigma_s``, log sigma_s = log sigma_i + r h) the sub-step
    to ``sigma_s`` gets ``z[i, 0]`` and the whole step the Brownian-bridge join of both draws,
    (sqrt(sigma - sigma_s) z[i, 0] + sqrt(sigma_s - sigma_next) z[i, 1]) / sqrt(sigma - sigma_next):
    the law of the normalised increments that k-diffusion's Brownian tree gives the two calls."""

    def __init__(self, table, sigmas, r):
        self.table, self.sigmas, self.r = table, sigmas, r
        self.steps_used = 0

    def __call__(self, sigma, sigma_next):
        sigma, sigma_next = float(sigma), float(sigma_next)
        i = int(np.argmin(np.abs(self.sigmas - sigma)))
        s, s_next = self.sigmas[i], self.sigmas[i + 1]
        if abs(sigma - s) > 1e-12 * s:
            raise ValueError(f"noise asked from level {sigma}, not a level of the grid")
        self.steps_used = max(self.steps_used, i + 1)
        z = self.table[i]
        whole_step = abs(sigma_next - s_next) <= 1e-12 * s
        if z.shape[0] == 1:
            if not whole_step:
                raise ValueError(f"a one-draw sampler asked for noise over [{sigma_next}, {s}]")
            return torch.from_numpy(z[0])
        s_mid = np.exp(np.log(s) + self.r * (np.log(s_next) - np.log(s)))
        if whole_step:
            first, second = s - s_mid, s_mid - s_next
            return torch.from_numpy(
                (np.sqrt(first) * z[0] + np.sqrt(second) * z[1]) / np.sqrt(first + second)
            )
        if abs(sigma_next - s_mid) > 1e-12 * s:
            raise ValueError(f"noise asked over [{sigma_next}, {s}], not a (sub-)step")
        return torch.from_numpy(z[0])


def load_sampling():
    """k-diffusion's ``sampling`` module, by file path where the package cannot be imported."""
    try:
        import k_diffusion.sampling

        return k_diffusion.sampling
    except ImportError:  # PIL, scikit-image, torchvision...: not needed by sampling.py
        pass
    spec = importlib.util.find_spec("k_diffusion")
    root = next(iter(spec.submodule_search_locations))
    package = types.ModuleType("_kdiffusion_reference")
    package.__path__ = [root]
    sys.modules["_kdiffusion_reference"] = package
    utils = types.ModuleType("_kdiffusion_reference.utils")
    utils.append_dims = lambda x, n: x[(...,) + (None,) * (n - x.ndim)]
    sys.modules["_kdiffusion_reference.utils"] = package.utils = utils
    spec = importlib.util.spec_from_file_location(
        "_kdiffusion_reference.sampling", f"{root}/sampling.py"
    )
    sampling = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = sampling
    spec.loader.exec_module(sampling)
    return sampling


def karras(n):
    ramp = np.linspace(0, 1, n)
    lo, hi = SIGMA_MIN ** (1 / 7), SIGMA_MAX ** (1 / 7)
    return np.concatenate([(hi + ramp * (lo - hi)) ** 7, [0.0]])


def initial_state(rng):
    return mixture_sample(rng, BATCH) + SIGMA_MAX * rng.standard_normal((BATCH, 2))


def run_case(sampling, name, sampler, kwargs, draws, seed):
    rng = np.random.default_rng(seed)
    sigmas = karras(N_STEPS)
    x_init = initial_state(rng)
    model = Model()
    extra = {}
    noise = None
    if draws:
        noise = NoiseTable(
            rng.standard_normal((N_STEPS, draws, BATCH, 2)), sigmas, kwargs.get("r", 0.5)
        )
        extra["noise_sampler"] = noise
    seen = []
    if name == CALLBACK_RECORD:
        extra["callback"] = lambda info: seen.append(info)
    final = getattr(sampling, sampler)(
        model, torch.from_numpy(x_init), torch.from_numpy(sigmas), disable=True, **kwargs, **extra
    )
    record = {
        "name": name,
        "sampler": sampler,
        "kwargs": kwargs,
        "grid": sigmas.tolist(),
        "x_init": x_init.tolist(),
        # Only the steps whose draws k-diffusion asked for (the step into 0 adds no noise).
        "noise": None if noise is None else noise.table[: noise.steps_used].tolist(),
        "final": final.numpy().tolist(),
        "nfe": model.calls,
    }
    if seen:
        record["callback"] = {
            key: [np.asarray(info[key]).tolist() for info in seen]
            for key in ("i", "sigma", "sigma_hat", "x", "denoised")
        }
    return record


def run_brownian_tree(sampling, seed):
    """``dpmpp_sde`` with k-diffusion's own Brownian tree; the table holds the tree's normalised
    increments over ``[sigma_s, sigma_i]`` and ``[sigma_{i+1}, sigma_s]`` (r = 1/2)."""
    rng = np.random.default_rng(seed)
    sigmas = karras(N_STEPS)
    x_init = initial_state(rng)
    tree = sampling.BrownianTreeNoiseSampler(
        torch.from_numpy(x_init), torch.tensor(SIGMA_MIN), torch.tensor(SIGMA_MAX), seed=seed
    )
    table = np.zeros((N_STEPS - 1, 2, BATCH, 2))
    for i in range(N_STEPS - 1):  # the step into 0 is an Euler step without noise
        s, s_next = sigmas[i], sigmas[i + 1]
        s_mid = np.exp(np.log(s) + 0.5 * (np.log(s_next) - np.log(s)))
        table[i, 0] = tree(torch.tensor(s), torch.tensor(s_mid)).numpy()
        table[i, 1] = tree(torch.tensor(s_mid), torch.tensor(s_next)).numpy()
    model = Model()
    final = sampling.sample_dpmpp_sde(
        model, torch.from_numpy(x_init), torch.from_numpy(sigmas), disable=True, noise_sampler=tree
    )
    return {
        "name": "dpmpp_sde_brownian_tree",
        "sampler": "sample_dpmpp_sde",
        "kwargs": {},
        "grid": sigmas.tolist(),
        "x_init": x_init.tolist(),
        "noise": table.tolist(),
        "final": final.numpy().tolist(),
        "nfe": model.calls,
    }


def run_dpm_fast(sampling, nfe, seed):
    """``dpm_fast`` stops at ``sigma_min``: ``grid`` lists the levels its steps started from (its
    callback's), then ``sigma_min`` and the 0 that jaxsolve's grid ends with."""
    rng = np.random.default_rng(seed)
    x_init = initial_state(rng)
    model = Model()
    levels = []
    final = sampling.sample_dpm_fast(
        model,
        torch.from_numpy(x_init),
        SIGMA_MIN,
        SIGMA_MAX,
        nfe,
        disable=True,
        callback=lambda info: levels.append(float(info["sigma"])),
    )
    return {
        "name": f"dpm_fast_{nfe}",
        "sampler": "sample_dpm_fast",
        "kwargs": {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "n": nfe},
        "grid": [*levels, SIGMA_MIN, 0.0],
        "x_init": x_init.tolist(),
        "noise": None,
        "final": final.numpy().tolist(),
        "nfe": model.calls,
    }


def run_dpm_adaptive(sampling, order, seed):
    """``dpm_adaptive`` (eta = 0, k-diffusion's default tolerances) from ``sigma_max`` to
    ``sigma_min``, where it stops: ``attempts`` counts its accepted and rejected steps, ``nfe``
    its model calls (``order`` per attempt)."""
    rng = np.random.default_rng(seed)
    x_init = initial_state(rng)
    model = Model()
    final, info = sampling.sample_dpm_adaptive(
        model,
        torch.from_numpy(x_init),
        SIGMA_MIN,
        SIGMA_MAX,
        order=order,
        disable=True,
        return_info=True,
    )
    return {
        "name": f"dpm_adaptive_{order}",
        "sampler": "sample_dpm_adaptive",
        "kwargs": {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "order": order},
        "grid": [SIGMA_MAX, SIGMA_MIN, 0.0],
        "x_init": x_init.tolist(),
        "noise": None,
        "final": final.numpy().tolist(),
        "nfe": model.calls,
        "attempts": info["steps"],
        "accepted": info["n_accept"],
        "rejected": info["n_reject"],
    }


def main(path):
    # sample_dpm_fast builds its levels with torch.tensor(float): float64 throughout.
    torch.set_default_dtype(torch.float64)
    sampling = load_sampling()
    records = [
        run_case(sampling, name, sampler, kwargs, draws, seed=10 + j)
        for j, (name, sampler, kwargs, draws) in enumerate(CASES)
    ]
    with warnings.catch_warnings():  # torchsde: a query level 1 ulp outside the tree's span
        warnings.filterwarnings("ignore", "Should have t")
        records.append(run_brownian_tree(sampling, seed=40))
    records += [run_dpm_fast(sampling, nfe, seed=50 + nfe) for nfe in DPM_FAST_NFES]
    records += [run_dpm_adaptive(sampling, order, seed=70 + order) for order in (2, 3)]
    with open(sampling.__file__, "rb") as f:
        source_sha256 = hashlib.sha256(f.read()).hexdigest()
    meta = {
        "k-diffusion": importlib.metadata.version("k-diffusion"),
        "sampling.py sha256": source_sha256,
        "torch": torch.__version__,
        "torchsde": importlib.metadata.version("torchsde"),
        "scipy": importlib.metadata.version("scipy"),
        "mixture": {"weights": WEIGHTS.tolist(), "means": MEANS.tolist(), "covs": COVS.tolist()},
    }
    with open(path, "w") as f:
        json.dump({"meta": meta, "records": records}, f)
    print(f"wrote {len(records)} records to {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/diffusion/data/kdiffusion_samplers.json")
