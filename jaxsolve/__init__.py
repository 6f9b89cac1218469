"""jaxsolve: learned and classical solvers in JAX.

Pillars: :mod:`jaxsolve.diffusion` (samplers, schedules, oracles), :mod:`jaxsolve.operators`
(spectral layers, neural operators), :mod:`jaxsolve.implicit` (fixed points, implicit
differentiation), :mod:`jaxsolve.ode` (neural ODEs), :mod:`jaxsolve.pinn` (physics-informed
networks), with :mod:`jaxsolve.pde` (data generators), :mod:`jaxsolve.data` (loaders for the
data files users have) and :mod:`jaxsolve.train` (the training loop). Shared result codes live in :data:`RESULTS`.
"""

from . import data, diffusion, implicit, ode, operators, pde, pinn, sharding, train
from ._core import RESULTS

__version__ = "0.1.0"  # the one version string: pyproject.toml reads it (setuptools dynamic)
"""jaxsolve's version, as ``MAJOR.MINOR.PATCH`` (semantic versioning; CHANGELOG.md lists the changes)."""

__all__ = [
    "RESULTS",
    "__version__",
    "data",
    "diffusion",
    "implicit",
    "ode",
    "operators",
    "pde",
    "pinn",
    "sharding",
    "train",
]
