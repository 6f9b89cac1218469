"""One grid vocabulary (jaxsolve._core._grid) for both pillars, which import nothing of each other;
the channels-last protocol of the layers an FNO block holds."""

import ast
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsolve
import jaxsolve.operators as ops
import jaxsolve.pde as pde
from jaxsolve._core import normalize_lengths

_PACKAGE = pathlib.Path(jaxsolve.__file__).parent


def _imported_pillars(pillar):
    """Every ``jaxsolve.<pillar>`` a pillar's modules import (relative or absolute)."""
    found = set()
    for path in (_PACKAGE / pillar).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                depth = len(path.relative_to(_PACKAGE).parts) - 1
                if node.level:  # ``from ..x import`` climbs out of the pillar when level > depth
                    parts = path.relative_to(_PACKAGE).parts[: depth + 1 - node.level]
                    target = ".".join([*parts, *(node.module or "").split(".")]).strip(".")
                else:
                    target = (node.module or "").removeprefix("jaxsolve.")
                found.add(target.split(".")[0])
            elif isinstance(node, ast.Import):
                found |= {a.name.removeprefix("jaxsolve.").split(".")[0] for a in node.names}
    return found


def test_pde_and_operators_import_nothing_of_each_other():
    assert "operators" not in _imported_pillars("pde")
    assert "pde" not in _imported_pillars("operators")


def test_one_grid_vocabulary():
    grid = pde.SpectralGrid((8, 6), (1.0, 2.0))
    np.testing.assert_array_equal(grid.dealias_mask(), ops.dealias_mask((8, 6)))
    np.testing.assert_array_equal(grid.coordinates(), ops.periodic_grid((8, 6), (1.0, 2.0)))
    (kx, ky) = grid.wavenumbers()
    np.testing.assert_allclose(kx.ravel(), 2 * np.pi * ops.wavenumbers(8), rtol=1e-6)
    np.testing.assert_allclose(ky.ravel(), np.pi * ops.wavenumbers(6, real=True), rtol=1e-6)
    assert ops.wavenumbers(8, odd=True)[4] == 0  # the Nyquist mode of an odd-order symbol
    nodes = pde.GaussianRandomField(boundary="neumann", lengths=2.0).grid(5)
    np.testing.assert_allclose(nodes[0], [0.0, 0.5, 1.0, 1.5, 2.0])
    with pytest.raises(ValueError, match="SpectralGrid: lengths must be finite numbers > 0"):
        pde.SpectralGrid(8, -1.0)
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        normalize_lengths((1.0,), 2)
    with pytest.raises(TypeError, match="lengths must be real"):
        normalize_lengths(1j, 1)


def test_channels_last_protocol():
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (3, 8))
    layers = [
        ops.ChannelMLP(3, 2, 4, key=key),
        ops.SoftGating(3),
        ops.SpectralConv(1, 3, 2, 3, key=key, use_bias=True),
    ]
    for layer in layers:
        assert isinstance(layer, ops.AbstractChannelsLast)
        np.testing.assert_allclose(
            layer.channels_last(jnp.moveaxis(x, 0, -1)),
            jnp.moveaxis(layer(x), 0, -1),
            rtol=1e-5,
            atol=1e-6,
        )
    with pytest.raises(TypeError):
        ops.AbstractChannelsLast()
