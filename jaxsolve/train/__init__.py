"""Training: the one optax loop (:func:`fit`), checkpoints with exact resume, normalisation."""

from ._checkpoint import load as load_checkpoint
from ._checkpoint import save as save_checkpoint
from ._fit import FitResult, fit
from ._normalize import Normalizer

__all__ = ["FitResult", "Normalizer", "fit", "load_checkpoint", "save_checkpoint"]
