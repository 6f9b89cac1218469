"""What every pillar shares: result codes, argument checks, dtype, grids, precision, PRNG and
sharding helpers."""

from ._dtypes import as_float, default_float, expand_to, promote_half
from ._errors import (
    check_choice,
    check_in_open_interval,
    check_int,
    check_integer_count,
    check_positive,
    check_sigma_range,
    check_step_budget,
    is_concrete,
    is_int,
)
from ._files import check_writable_dir
from ._grid import (
    axis_shape,
    dealias_mask,
    grid_coordinates,
    normalize_lengths,
    wavenumbers,
    wavevectors,
)
from ._numerics import safe_divide, safe_sqrt
from ._precision import exact_dot, exact_einsum, exact_tensordot
from ._prng import per_sample_keys
from ._results import RESULTS
from ._runtime_errors import quiet_check_logs
from ._sharding import axis_size, check_shardable, data_mesh, replicate, shard_batch, to_host

quiet_check_logs()

__all__ = [
    "RESULTS",
    "as_float",
    "axis_shape",
    "axis_size",
    "check_choice",
    "check_in_open_interval",
    "check_int",
    "check_integer_count",
    "check_positive",
    "check_shardable",
    "check_sigma_range",
    "check_step_budget",
    "check_writable_dir",
    "data_mesh",
    "dealias_mask",
    "default_float",
    "exact_dot",
    "exact_einsum",
    "exact_tensordot",
    "expand_to",
    "grid_coordinates",
    "is_concrete",
    "is_int",
    "normalize_lengths",
    "per_sample_keys",
    "promote_half",
    "replicate",
    "safe_divide",
    "safe_sqrt",
    "shard_batch",
    "to_host",
    "wavenumbers",
    "wavevectors",
]
