"""Exact oracles: distributions whose noised marginals, scores and denoisers are known in closed form.

They measure every sampler's error without a trained network.
"""

from ._base import AbstractOracle
from ._empirical import Empirical
from ._gaussian import Gaussian
from ._mixture import GaussianMixture

__all__ = ["AbstractOracle", "Empirical", "Gaussian", "GaussianMixture"]
