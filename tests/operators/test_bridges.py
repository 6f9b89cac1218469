"""The neuraloperator bridge: FNO / TFNO (dense, Tucker, CP) compute neuraloperator's function,
the dispatcher gives what each specific transplant gives, and what has no counterpart raises
naming it.

neuraloperator takes seconds to import, so it is imported by a fixture, only in the (slow)
tests that use it.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._bridges import (
    fno_from_neuraloperator,
    from_neuraloperator,
    put,
    spectral_conv_from_neuraloperator,
)
from jaxsolve.operators._fno import FNO, TFNO
from jaxsolve.operators._gino import gino_from_neuraloperator
from jaxsolve.operators._gno import gno_from_neuraloperator
from jaxsolve.operators._local import (
    differential_conv_from_neuraloperator,
    local_no_from_neuraloperator,
)
from jaxsolve.operators._uno import uno_from_neuraloperator
from jaxsolve.operators._uqno import UQNO, uqno_from_neuraloperator

from .test_local import neuralop_local_no  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def neuralop():
    torch = pytest.importorskip("torch")
    pytest.importorskip("neuralop")
    import neuralop.models

    torch.manual_seed(0)
    return neuralop.models


@eqx.filter_jit
def _batched(model, x):
    return jax.vmap(model)(x)


def _close(got, expected):
    """The house parity criterion: float32 outputs within 1e-5 of the largest entry."""
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


def _torch_out(ref, x):
    import torch

    with torch.no_grad():
        return ref(torch.from_numpy(x)).numpy()


def _same_model(a, b):
    """Same class, same array leaves (the static parts hold fresh ``partial`` objects)."""
    assert type(a) is type(b)
    la, lb = (
        jax.tree.leaves(eqx.filter(a, eqx.is_array)),
        jax.tree.leaves(eqx.filter(b, eqx.is_array)),
    )
    assert len(la) == len(lb) > 0
    for u, v in zip(la, lb, strict=True):
        assert u.shape == v.shape and u.dtype == v.dtype
        np.testing.assert_array_equal(u, v)


# ----------------------------------------------------------------------------------------------
# Without torch
# ----------------------------------------------------------------------------------------------


def test_a_model_of_no_supported_class_raises_naming_it():
    class Mystery:
        pass

    with pytest.raises(TypeError, match="Mystery") as info:
        from_neuraloperator(Mystery())
    for name in ("FNO", "TFNO", "UNO", "LocalNO", "GINO", "UQNO"):
        assert name in str(info.value)


class _Linear(eqx.Module):
    weights: tuple


def test_a_weight_of_the_wrong_shape_raises():
    layer = _Linear((np.zeros((4, 3), np.float32),))
    with pytest.raises(ValueError, match=r"shape \(4, 2\)"):
        put(layer, lambda m: m.weights, (np.zeros((4, 2)),))
    with pytest.raises(ValueError, match="structure"):
        put(layer, lambda m: m.weights, (np.zeros((4, 3)), np.zeros(4)))
    new = put(layer, lambda m: m.weights, (np.ones((4, 3)),))  # float64 in, float32 kept
    assert new.weights[0].dtype == jnp.float32 and float(new.weights[0][0, 0]) == 1.0


# ----------------------------------------------------------------------------------------------
# FNO / TFNO
# ----------------------------------------------------------------------------------------------

_FNO_CASES = {
    "dense-2d": (dict(n_modes=(8, 6)), (16, 12)),
    "dense-1d-skips": (
        dict(n_modes=(8,), fno_skip="soft-gating", channel_mlp_skip="linear", out_channels=3),
        (20,),
    ),
    "no-channel-mlp": (dict(n_modes=(8, 6), use_channel_mlp=False), (16, 12)),
    "padding-linear-lifting": (
        dict(n_modes=(8, 6), domain_padding=0.25, lifting_channel_ratio=0),
        (16, 12),
    ),
    "tucker": (dict(n_modes=(8, 6), factorization="tucker", rank=0.5), (16, 12)),
    "tucker-reconstructed": (
        dict(n_modes=(4, 4, 4), factorization="tucker", rank=0.4, implementation="reconstructed"),
        (8, 8, 6),
    ),
    "cp": (dict(n_modes=(8, 6), factorization="cp", rank=0.5, positional_embedding=None), (16, 12)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(_FNO_CASES))
def test_fno_equals_neuraloperator(neuralop, case):
    kw, shape = _FNO_CASES[case]
    kw = dict(in_channels=2, out_channels=1, hidden_channels=8, n_layers=3) | kw
    ref = neuralop.FNO(**kw)
    ours = fno_from_neuraloperator(ref)
    assert type(ours) is (FNO if kw.get("factorization") is None else TFNO)
    assert ours.blocks[0].conv.factorization == kw.get("factorization")
    x = np.random.default_rng(0).standard_normal((2, kw["in_channels"], *shape)).astype(np.float32)
    got = _batched(ours, jnp.asarray(x))
    assert got.dtype == jnp.float32
    _close(got, _torch_out(ref, x))


@pytest.mark.slow
def test_tfno_and_a_spectral_conv_equal_neuraloperator(neuralop):
    ref = neuralop.TFNO(n_modes=(6, 6), in_channels=1, out_channels=2, hidden_channels=8)
    ours = from_neuraloperator(ref)
    assert isinstance(ours, TFNO) and ours.blocks[0].conv.factorization == "tucker"
    x = np.random.default_rng(1).standard_normal((2, 1, 12, 10)).astype(np.float32)
    _close(_batched(ours, jnp.asarray(x)), _torch_out(ref, x))

    from neuralop.layers.spectral_convolution import SpectralConv

    conv = SpectralConv(3, 4, (6, 4), factorization="cp", rank=0.5)
    ours_conv = from_neuraloperator(conv)
    _same_model(ours_conv, spectral_conv_from_neuraloperator(conv))
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 9)).astype(np.float32)
    _close(_batched(ours_conv, jnp.asarray(x)), _torch_out(conv, x))


# ----------------------------------------------------------------------------------------------
# The dispatcher
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dispatcher_equals_each_specific_transplant(neuralop, neuralop_local_no):  # noqa: F811
    from neuralop.layers.differential_conv import FiniteDifferenceConvolution
    from neuralop.layers.gno_block import GNOBlock

    fno = neuralop.FNO(n_modes=(6, 6), in_channels=1, out_channels=1, hidden_channels=4)
    tfno = neuralop.TFNO(n_modes=(6,), in_channels=1, out_channels=1, hidden_channels=4)
    _same_model(from_neuraloperator(fno), fno_from_neuraloperator(fno))
    _same_model(from_neuraloperator(tfno), fno_from_neuraloperator(tfno))

    uno = neuralop.UNO(
        1, 1, 4, lifting_channels=4, projection_channels=4, n_layers=2,
        uno_out_channels=[4, 4], uno_n_modes=[[4], [4]], uno_scalings=[[1.0], [1.0]],
        channel_mlp_skip="linear",
    )  # fmt: skip
    _same_model(from_neuraloperator(uno), uno_from_neuraloperator(uno))

    local = neuralop_local_no.LocalNO(
        n_modes=[4], in_channels=1, out_channels=1, hidden_channels=4, default_in_shape=(16,),
        n_layers=2, disco_layers=False, diff_layers=[True, False],
    )  # fmt: skip
    _same_model(from_neuraloperator(local), local_no_from_neuraloperator(local))

    fd = FiniteDifferenceConvolution(2, 3, 1, kernel_size=3)
    _same_model(
        from_neuraloperator(fd, default_in_size=8),
        differential_conv_from_neuraloperator(fd, default_in_size=8),
    )

    gno = GNOBlock(
        3, 3, 2, 0.4, channel_mlp_layers=[8], pos_embedding_channels=4,
        use_torch_scatter_reduce=False, use_open3d_neighbor_search=False,
    )  # fmt: skip
    _same_model(from_neuraloperator(gno, k_max=20), gno_from_neuraloperator(gno, k_max=20))

    gino = neuralop.GINO(
        in_channels=2, out_channels=1, gno_coord_dim=2, fno_n_modes=(4, 4),
        fno_hidden_channels=4, fno_n_layers=1, fno_in_channels=2, in_gno_radius=0.35,
        out_gno_radius=0.35, gno_embed_channels=4, in_gno_channel_mlp_hidden_layers=[8],
        out_gno_channel_mlp_hidden_layers=[8], gno_use_open3d=False,
        gno_use_torch_scatter=False,
    )  # fmt: skip
    kw = dict(latent_shape=(6, 6), in_k_max=30, out_k_max=36)
    _same_model(from_neuraloperator(gino, **kw), gino_from_neuraloperator(gino, **kw))

    uqno = neuralop.UQNO(fno)
    got = from_neuraloperator(uqno)
    assert isinstance(got, UQNO)
    _same_model(got, uqno_from_neuraloperator(uqno))
    _same_model(got.residual, fno_from_neuraloperator(fno))


@pytest.mark.slow
def test_uqno_equals_neuraloperator(neuralop):
    base = neuralop.FNO(n_modes=(6,), in_channels=1, out_channels=1, hidden_channels=4)
    residual = neuralop.FNO(n_modes=(4,), in_channels=1, out_channels=1, hidden_channels=6)
    ref = neuralop.UQNO(base, residual)
    ours = from_neuraloperator(ref)
    x = np.random.default_rng(3).standard_normal((2, 1, 16)).astype(np.float32)
    import torch

    with torch.no_grad():
        solution, quantile = ref(torch.from_numpy(x))
    pred, half = _batched(ours, jnp.asarray(x))
    _close(pred, solution.numpy())
    _close(half, np.abs(quantile.numpy()))


@pytest.mark.slow
def test_unsupported_models_and_options_raise_naming_them(neuralop):
    import torch
    from neuralop.models import FNOGNO

    fnogno = FNOGNO(in_channels=1, out_channels=1, fno_n_modes=(4, 4), fno_hidden_channels=4)
    with pytest.raises(TypeError, match="FNOGNO"):
        from_neuraloperator(fnogno)
    with pytest.raises(TypeError, match="Linear"):
        from_neuraloperator(torch.nn.Linear(2, 2))
    for kw, what in (
        (dict(factorization="tt", rank=0.5), "TTTensor"),
        (dict(norm="group_norm"), "norm"),
        (dict(separable=True), "separable"),
        (dict(non_linearity=torch.tanh), "non_linearity"),
        (dict(n_modes=(5, 6)), "even n_modes"),
    ):
        kw = dict(n_modes=(6, 6), in_channels=1, out_channels=1, hidden_channels=4) | kw
        with pytest.raises(ValueError, match=what):
            fno_from_neuraloperator(neuralop.FNO(**kw))
