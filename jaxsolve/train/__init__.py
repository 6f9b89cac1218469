"""Training: the one optax loop (:func:`fit`), checkpoints with exact resume, normalisation."""

from ._batches import microbatched
from ._checkpoint import load as load_checkpoint
from ._checkpoint import save as save_checkpoint
from ._fit import FitResult, fit
from ._normalize import Normalizer
from ._rollout import autoregressive_predict, make_rollout_loss, rollout_loss

__all__ = [
    "FitResult",
    "Normalizer",
    "autoregressive_predict",
    "fit",
    "load_checkpoint",
    "make_rollout_loss",
    "microbatched",
    "rollout_loss",
    "save_checkpoint",
]
