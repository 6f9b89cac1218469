"""What every pillar shares: result codes, argument checks, dtype helpers, PRNG helpers."""

from ._dtypes import as_float, default_float, expand_to
from ._errors import (
    check_choice,
    check_in_open_interval,
    check_integer_count,
    check_positive,
    check_sigma_range,
    is_concrete,
)
from ._prng import per_sample_keys
from ._results import RESULTS

__all__ = [
    "RESULTS",
    "as_float",
    "check_choice",
    "check_in_open_interval",
    "check_integer_count",
    "check_positive",
    "check_sigma_range",
    "default_float",
    "expand_to",
    "is_concrete",
    "per_sample_keys",
]
