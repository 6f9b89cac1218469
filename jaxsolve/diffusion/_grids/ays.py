r"""Align-Your-Steps grids ("Align Your Steps: Optimizing Sampling Schedules in Diffusion Models").

The paper optimises the levels of a 10-step schedule per model and publishes them (its Table 3,
and NVIDIA's project page): eleven noise levels :math:`\sigma(t_{10}) > \dots > \sigma(t_0)`, in
the VE scale of the model's own schedule. For other step counts the authors interpolate the table
log-linearly: the levels are placed at equal fractions of the table's index range and
:math:`\log\sigma` is interpolated linearly between the two neighbouring table levels.

**Steps.** A grid for ``n`` steps is ``n`` positive levels then 0. By default (the convention of
diffusers' ``AysSchedules``, ComfyUI and NVIDIA's diffusers example) the table is interpolated to
``n + 1`` levels and the last one, the table's :math:`\sigma_{\min}`, becomes the final 0: ``n = 10``
is the published table with its last level replaced by 0. With ``keep_sigma_min=True`` (the
convention of AUTOMATIC1111's web UI) the table is interpolated to ``n`` levels that end at
:math:`\sigma_{\min}`, then a final step to 0 follows: ``n = 11`` is the whole table then 0.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._core import as_float, check_choice, check_integer_count

# The published 10-step levels (Table 3 of the paper; the first three also on the project page).
AYS_TABLES: dict[str, tuple[float, ...]] = {
    "sd15": (14.615, 6.475, 3.861, 2.697, 1.886, 1.396, 0.963, 0.652, 0.399, 0.152, 0.029),
    "sdxl": (14.615, 6.315, 3.771, 2.181, 1.342, 0.862, 0.555, 0.380, 0.234, 0.113, 0.029),
    "deepfloyd_if": (160.41, 8.081, 3.315, 1.885, 1.207, 0.785, 0.553, 0.293, 0.186, 0.030, 0.006),
    "svd": (700.00, 54.5, 15.886, 7.977, 4.248, 1.789, 0.981, 0.403, 0.173, 0.034, 0.002),
}
r"""The published 10-step Align-Your-Steps levels ("Align Your Steps: Optimizing Sampling Schedules
in Diffusion Models"), by model: 11 decreasing VE noise levels, from :math:`\sigma_{\max}` to
:math:`\sigma_{\min}`. :func:`ays_sigmas` interpolates them log-linearly to other step counts."""


def ays_sigmas(
    model: str, n=10, *, keep_sigma_min: bool = False, max_steps=None
) -> Float[Array, " L"]:
    r"""The Align-Your-Steps grid of ``model`` for ``n`` steps (see the module).

    Level ``i`` of ``m`` interpolated levels sits at table position :math:`q_i = 10\,i/(m-1)`;
    with :math:`k = \lfloor q_i\rfloor`, :math:`w = q_i - k`,
    :math:`\sigma_i = \exp\big((1-w)\log T_k + w\log T_{k+1}\big)` (the table value itself when
    :math:`w = 0`, so the published levels come back exactly). ``m = n + 1`` by default,
    ``m = n`` with ``keep_sigma_min`` (``n = 1`` then gives :math:`[T_0, 0]`).

    Args:
        model: ``"sd15"`` (Stable Diffusion 1.5), ``"sdxl"``, ``"deepfloyd_if"`` (stage 1) or
            ``"svd"`` (Stable Video Diffusion).
        n: the number of steps (may be traced with ``max_steps``).
        keep_sigma_min: end the positive levels at the table's smallest level and add a step to 0.
        max_steps: pad to ``max_steps + 1`` entries, so ``n`` is data.

    Returns:
        ``n`` decreasing positive levels then 0 (then zeros up to ``max_steps + 1``).
    """
    check_choice("model", model, set(AYS_TABLES))
    n = check_integer_count("n", n, max_steps=max_steps)
    table = as_float(np.asarray(AYS_TABLES[model]))
    levels = n if keep_sigma_min else n + 1
    return _loglinear(table, n, levels, (n if max_steps is None else max_steps) + 1)


@functools.partial(jax.jit, static_argnums=3)
def _loglinear(table, n, levels, length):
    """``length`` entries: the first ``n`` of ``levels`` log-linearly interpolated levels, then 0."""
    intervals = table.shape[0] - 1
    i = jnp.arange(length)
    # i * intervals is an exact integer, so q is exact wherever it lands on a table index.
    q = as_float(i * intervals) / as_float(jnp.maximum(levels - 1, 1))
    k = jnp.clip(jnp.floor(q), 0, intervals - 1).astype(jnp.int32)
    w = jnp.clip(q - k, 0.0, 1.0)
    log_table = jnp.log(table)
    between = jnp.exp((1.0 - w) * log_table[k] + w * log_table[k + 1])
    sig = jnp.where(w == 0, table[k], jnp.where(w == 1, table[k + 1], between))
    return jnp.where(i < n, sig, 0.0)
