"""Exact oracles: distributions whose noised marginals, scores and denoisers are known in closed form.

They measure every sampler's error without a trained network. ``condition(A, y, noise_std)``
returns the exact posterior given a linear Gaussian measurement ``y = A x0 + noise_std * eps``
(a :class:`Gaussian` or :class:`GaussianMixture` again), the yardstick of posterior samplers.
"""

from ._base import AbstractOracle
from ._empirical import Empirical
from ._gaussian import Gaussian
from ._mixture import GaussianMixture

__all__ = ["AbstractOracle", "Empirical", "Gaussian", "GaussianMixture"]
