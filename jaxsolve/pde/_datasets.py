r"""Datasets with the distributions of "Fourier Neural Operator for Parametric Partial
Differential Equations" (Li et al.), regenerated here since none can be downloaded.

* :func:`burgers_dataset` — :math:`u_0 \sim N(0, 625(-\Delta + 25 I)^{-2})` on the periodic
  :math:`[0, 1)`, viscous Burgers with :math:`\nu = 0.1` to :math:`T = 1`, solved with ETDRK4 on
  a fine grid (8192 points, as the paper) and subsampled: pairs :math:`(u_0, u(T))`.
* :func:`darcy_dataset` — :math:`a = 12` where a draw of :math:`N(0, (-\Delta + 9I)^{-2})` (zero
  Neumann conditions) is non-negative and 3 elsewhere; :math:`-\nabla\cdot(a\nabla u) = 1`,
  :math:`u = 0` on the boundary, solved on the fine node grid (421 x 421, as the paper) and
  subsampled to ``resolution`` (85 = every 5th node, 141 = every 3rd): pairs :math:`(a, u)`.
* :func:`navier_stokes_dataset` — vorticity :math:`w_0 \sim N(0, 7^{3/2}(-\Delta + 49 I)^{-5/2})`
  on the torus :math:`[0,1)^2`, forcing :func:`fno_forcing`, :math:`\nu = 10^{-3}`, solved on a
  256 x 256 grid and subsampled to 64 x 64, saved every time unit to :math:`T = 50`.

As the paper's reference generators do (``GRF.m``, ``GaussianRF``, the Burgers ``GRF1``), the
random fields have zero mean: their constant mode is dropped.

Sample ``i`` is drawn from ``fold_in(key, offset + i)``, so it does not depend on ``n_samples``
(a test set is ``offset=n_train`` with the same key) and data at two resolutions are the same
functions subsampled. Generation runs in compiled chunks of ``chunk_size`` samples with a tqdm bar;
results are cached as ``.npz`` files named by a hash of every parameter (``cache_dir=None``
disables the cache; the default directory is ``$JAXSOLVE_CACHE`` or ``~/.cache/jaxsolve``).
A cache file that cannot be read or holds the wrong arrays is regenerated with a warning naming
it; a ``cache_dir`` that cannot be written raises ``ValueError`` before any data are generated.
A sample that holds a NaN or an infinity (a time step beyond the solver's stability) raises
``FloatingPointError`` naming it as soon as its chunk is computed; nothing non-finite is cached.
Arrays come back as ``(n_samples, 1, *spatial)`` in the default float dtype.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

from .._core import RESULTS, check_int, check_writable_dir, default_float, per_sample_keys
from .._core._rollout import rollout
from ._checks import check_parameter
from ._darcy import darcy_solve
from ._equations import Burgers, NavierStokes2D, fno_forcing
from ._etdrk import ETDRK
from ._grf import GaussianRandomField

_VERSION = 1  # bump when the numbers a given set of parameters produces change


def default_cache_dir() -> str:
    """The folder where the dataset generators cache what they computed.

    ``$JAXSOLVE_CACHE/pde`` when the environment variable ``JAXSOLVE_CACHE`` is set and not empty,
    else ``~/.cache/jaxsolve/pde``. Read on every call, so a change of the variable takes effect
    at once; the folder is not created here.
    """
    root = os.environ.get("JAXSOLVE_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "jaxsolve"
    )
    return os.path.join(root, "pde")


def _key_data(key) -> list:
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).astype(np.uint64).ravel().tolist()


def _subsample(resolution, fine_resolution, *, nodes: bool) -> tuple[int, int, int]:
    """``(resolution, fine_resolution, r)``, checked: the coarse grid takes every ``r``-th point
    of the fine one (periodic), or every ``r``-th node, boundary included (``nodes``)."""
    coarse = check_int("resolution", resolution, minimum=2 if nodes else 1)
    fine = check_int("fine_resolution", fine_resolution, minimum=3 if nodes else 1)
    if nodes:
        ok = (fine - 1) % (coarse - 1) == 0
        r = (fine - 1) // (coarse - 1) if ok else 0
        rule = "(fine_resolution - 1) must be a multiple of (resolution - 1)"
    else:
        ok = fine % coarse == 0
        r = fine // coarse if ok else 0
        rule = "fine_resolution must be a multiple of resolution"
    if not ok:
        raise ValueError(
            f"resolution={coarse} cannot be subsampled from fine_resolution={fine}: {rule} (the "
            f"coarse grid takes every r-th point of the fine one)."
        )
    return coarse, fine, r


def _read_cache(path: str, n_samples: int, dtype) -> tuple | None:
    """The arrays stored at ``path``, or None when there is no usable file there.

    A file that cannot be read (truncated, overwritten, a flipped byte: zip members carry a
    CRC-32 that ``np.load`` checks) or that holds arrays of the wrong size, dtype or with
    non-finite values is reported with a warning naming it, and then regenerated.
    """
    if not os.path.exists(path):
        return None
    try:
        with np.load(path) as stored:
            names = sorted(k for k in stored.files if k.startswith("out"))
            arrays = tuple(np.asarray(stored[k]) for k in names)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        problem = f"cannot be read ({type(err).__name__}: {err})"
    else:
        if not arrays:
            problem = "holds no arrays"
        elif any(a.shape[:1] != (n_samples,) or a.dtype != dtype for a in arrays):
            problem = (
                f"holds arrays of shapes {[a.shape for a in arrays]} and dtypes "
                f"{sorted({a.dtype.name for a in arrays})}, not {n_samples} samples of {dtype.name}"
            )
        elif not all(np.all(np.isfinite(a)) for a in arrays):
            problem = "holds NaN or infinity"
        else:
            return arrays
    warnings.warn(
        f"the dataset cache file {path} {problem}; regenerating it.", RuntimeWarning, stacklevel=4
    )
    return None


def _check_writable(cache_dir: str) -> None:
    check_writable_dir(
        "cache_dir",
        cache_dir,
        hint="pass another directory, or cache_dir=None to keep the data in memory only.",
    )


def _generate(
    kind: str,
    params: dict,
    sample_fn: Callable,
    key: PRNGKeyArray,
    n_samples: int,
    offset: int,
    chunk_size: int,
    cache_dir,
    progress: bool,
    check: Callable | None = None,
):
    """Run ``sample_fn(key_i) -> tuple of arrays`` for every sample, in chunks, with caching."""
    n_samples = check_int("n_samples", n_samples)
    offset = check_int("offset", offset, minimum=0)
    chunk_size = check_int("chunk_size", chunk_size)
    dtype = np.dtype(default_float())
    record = {
        "kind": kind,
        "version": _VERSION,
        "params": params,
        "key": _key_data(key),
        "n_samples": n_samples,
        "offset": offset,
        "dtype": dtype.name,
    }
    path = None
    if cache_dir is not None:
        cache_dir = default_cache_dir() if cache_dir == "auto" else os.fspath(cache_dir)
        digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:20]
        path = os.path.join(cache_dir, f"{kind}-{digest}.npz")
        arrays = _read_cache(path, n_samples, dtype)
        if arrays is not None:
            return tuple(jnp.asarray(a) for a in arrays)
        # Generating can take hours; find out now, not then, that the result cannot be saved.
        _check_writable(cache_dir)

    chunk = min(chunk_size, n_samples)
    run = jax.jit(jax.vmap(sample_fn))
    pieces: list = []
    bar = tqdm(total=n_samples, desc=f"generating {kind}", disable=not progress, leave=False)
    for start in range(0, n_samples, chunk):
        count = min(chunk, n_samples - start)
        # Always a full chunk (one compilation): the tail is padded with extra samples, dropped.
        keys = per_sample_keys(key, chunk, offset + start)
        out = jax.device_get(run(keys))
        piece = tuple(np.asarray(o)[:count] for o in out)
        # Checked chunk by chunk: a blow-up in the first chunk of an hours-long run is reported
        # now, naming the sample, not after every other chunk has been computed.
        _raise_if_nonfinite(kind, params, piece, offset + start, bar)
        pieces.append(piece)
        bar.update(count)
    bar.close()
    arrays = tuple(np.concatenate(parts, axis=0) for parts in zip(*pieces, strict=True))
    if check is not None:
        arrays = check(arrays)
    _raise_if_nonfinite(kind, params, arrays, offset)
    if path is not None:
        # Written aside and moved into place, so a crash mid-write never leaves a partial file
        # under the cache's name.
        tmp = f"{path}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **{f"out{i}": a for i, a in enumerate(arrays)})
        os.replace(tmp, path)
    return tuple(jnp.asarray(a) for a in arrays)


def _raise_if_nonfinite(kind, params, arrays, first_index, bar=None):
    """``FloatingPointError`` naming the first sample (``first_index`` + row) of ``arrays`` that
    holds a NaN or an infinity."""
    bad = np.zeros(arrays[0].shape[0], bool)
    for a in arrays:
        if np.issubdtype(a.dtype, np.inexact):
            bad |= ~np.all(np.isfinite(a.reshape(a.shape[0], -1)), axis=1)
    if bad.any():
        if bar is not None:
            bar.close()
        raise FloatingPointError(
            f"{kind}: the generated data contain NaN or infinity (first: sample "
            f"{first_index + int(np.flatnonzero(bad)[0])}; is the time step too large for this "
            f"resolution?); parameters {params}."
        )


def _time_steps(where, T, dt, name_T="T"):
    check_parameter(where, name_T, T, "positive")
    check_parameter(where, "dt", dt, "positive")
    n = max(1, math.ceil(T / dt - 1e-9))
    return n, T / n


def burgers_dataset(
    key: PRNGKeyArray,
    n_samples: int,
    resolution: int = 1024,
    *,
    nu: float = 0.1,
    T: float = 1.0,
    fine_resolution: int = 8192,
    dt: float = 0.01,
    offset: int = 0,
    chunk_size: int = 32,
    cache_dir: str | os.PathLike | None = "auto",
    progress: bool = True,
) -> tuple[Float[Array, " n 1 s"], Float[Array, " n 1 s"]]:
    r"""Pairs :math:`(u_0, u(T))` of viscous Burgers, :math:`u_t + (u^2/2)_x = \nu u_{xx}` on
    :math:`[0,1)` periodic, :math:`u_0 \sim N(0, 625(-\Delta + 25I)^{-2})` (zero mean).

    Solved with :class:`ETDRK` (ETDRK4) on ``fine_resolution`` points with step at most ``dt``
    (the default 0.01 has a relative time error near 2e-6 at ``nu=0.1``), then both fields are
    subsampled to ``resolution`` points. The input keeps the fine field's point values, as in the
    paper (the high modes of :math:`u_0` alias into the coarse input).
    """
    resolution, fine_resolution, r = _subsample(resolution, fine_resolution, nodes=False)
    steps, dt_eff = _time_steps("burgers_dataset", float(T), float(dt))
    Burgers(nu)  # checks nu now, not inside the first compiled chunk
    grf = GaussianRandomField(alpha=2.0, tau=5.0, scale=625.0, zero_mean=True)
    params = dict(
        resolution=resolution, nu=float(nu), T=float(T), fine=fine_resolution, steps=steps
    )

    def sample(k):
        stepper = ETDRK(Burgers(nu), dt_eff, (fine_resolution,))
        u0 = grf.sample(k, (fine_resolution,))[None]
        uh = rollout(
            stepper.step_spectral,
            stepper.to_spectral(u0),
            steps,
            every=steps,
            include_initial=False,
            throw=False,  # non-finite data are reported below, naming the parameters
        )[-1]
        u_t = stepper.from_spectral(uh).astype(u0.dtype)
        return u0[:, ::r], u_t[:, ::r]

    return _generate(
        "burgers", params, sample, key, n_samples, offset, chunk_size, cache_dir, progress
    )


def darcy_dataset(
    key: PRNGKeyArray,
    n_samples: int,
    resolution: int = 85,
    *,
    fine_resolution: int = 421,
    offset: int = 0,
    chunk_size: int = 16,
    cache_dir: str | os.PathLike | None = "auto",
    progress: bool = True,
) -> tuple[Float[Array, " n 1 s s"], Float[Array, " n 1 s s"]]:
    r"""Pairs :math:`(a, u)` of Darcy flow :math:`-\nabla\cdot(a\nabla u) = 1` on
    :math:`[0,1]^2`, :math:`u = 0` on the boundary.

    :math:`a = 12` where :math:`g \ge 0` and :math:`3` where :math:`g < 0`, with
    :math:`g \sim N(0, (-\Delta + 9I)^{-2})` under zero Neumann conditions (zero mean), drawn
    and solved (:func:`darcy_solve`) on the ``fine_resolution`` node grid, both subsampled to
    ``resolution`` nodes per side (boundary included).
    """
    resolution, fine_resolution, r = _subsample(resolution, fine_resolution, nodes=True)
    grf = GaussianRandomField(alpha=2.0, tau=3.0, scale=1.0, boundary="neumann", zero_mean=True)
    params = dict(resolution=resolution, fine=fine_resolution, low=3.0, high=12.0)
    shape = (fine_resolution, fine_resolution)

    def sample(k):
        g = grf.sample(k, shape)
        a = jnp.where(g >= 0, 12.0, 3.0).astype(g.dtype)
        sol = darcy_solve(a, throw=False)  # failures are reported below, naming the sample
        return a[None, ::r, ::r], sol.u[None, ::r, ::r], sol.result == RESULTS.successful

    def check(arrays):
        a, u, ok = arrays
        bad = np.flatnonzero(~ok)
        if bad.size:
            raise RuntimeError(
                f"darcy_dataset: conjugate gradients did not converge for {bad.size} samples "
                f"(first: sample {offset + bad[0]})."
            )
        return a, u

    return _generate(
        "darcy", params, sample, key, n_samples, offset, chunk_size, cache_dir, progress, check
    )


def navier_stokes_dataset(
    key: PRNGKeyArray,
    n_samples: int,
    resolution: int = 64,
    *,
    nu: float = 1e-3,
    T: float = 50.0,
    record_every: float = 1.0,
    fine_resolution: int = 256,
    dt: float = 1e-3,
    offset: int = 0,
    chunk_size: int = 8,
    cache_dir: str | os.PathLike | None = "auto",
    progress: bool = True,
) -> Float[Array, " n frames 1 s s"]:
    r"""Vorticity trajectories of 2-D Navier–Stokes (:class:`NavierStokes2D`) on the unit torus.

    :math:`w_0 \sim N(0, 7^{3/2}(-\Delta + 49I)^{-5/2})` (zero mean), forcing :func:`fno_forcing`,
    viscosity ``nu``; ETDRK4 on ``fine_resolution`` x ``fine_resolution`` points with step at
    most ``dt``, recorded every ``record_every`` time units and subsampled to ``resolution``.
    Returns ``(n_samples, frames, 1, resolution, resolution)`` (each frame one sample
    ``(channels, *spatial)``) with frame ``j`` at time
    ``j * record_every`` (frame 0 is :math:`w_0`), ``frames = T / record_every + 1``. The
    paper's FNO-2D maps frames 0-9 to frames 10-49 (at ``nu=1e-3``, ``T=50``).
    """
    resolution, fine_resolution, r = _subsample(resolution, fine_resolution, nodes=False)
    check_parameter("navier_stokes_dataset", "T", float(T), "positive")
    check_parameter("navier_stokes_dataset", "record_every", float(record_every), "positive")
    NavierStokes2D(nu)  # checks nu now, not inside the first compiled chunk
    frames = float(T) / float(record_every)
    if abs(frames - round(frames)) > 1e-9 or round(frames) < 1:
        raise ValueError(f"T ({T}) must be a positive multiple of record_every ({record_every}).")
    frames = round(frames)
    per_frame, dt_eff = _time_steps(
        "navier_stokes_dataset", float(record_every), float(dt), "record_every"
    )
    grf = GaussianRandomField(alpha=2.5, tau=7.0, scale=7.0**1.5, zero_mean=True)
    params = dict(
        resolution=resolution,
        nu=float(nu),
        T=float(T),
        record_every=float(record_every),
        fine=fine_resolution,
        steps_per_frame=per_frame,
    )
    shape = (fine_resolution, fine_resolution)

    def sample(k):
        stepper = ETDRK(NavierStokes2D(nu, forcing=fno_forcing), dt_eff, shape)
        w0 = grf.sample(k, shape)[None]
        traj = rollout(
            stepper.step_spectral,
            stepper.to_spectral(w0),
            frames * per_frame,
            every=per_frame,
            throw=False,  # non-finite data are reported below, naming the parameters
        )
        w = jax.vmap(stepper.from_spectral)(traj).astype(w0.dtype)
        return (w[:, :, ::r, ::r],)

    (w,) = _generate(
        "navier_stokes", params, sample, key, n_samples, offset, chunk_size, cache_dir, progress
    )
    return w
