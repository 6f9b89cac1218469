"""Local kernels: the differential kernel converges to a derivative at first order, the local
integral kernel to its integral operator at second order; the LocalNO is neuraloperator's
function."""

import sys
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._local import (
    DifferentialConv,
    LocalIntegralConv,
    LocalNO,
    differential_conv_from_neuraloperator,
    local_no_from_neuraloperator,
)


@eqx.filter_jit
def _apply(model, x):
    return jax.vmap(model)(x)


def _field(n, d):
    """A smooth periodic field on the unit square/segment and its gradient, on n^d points."""
    x = np.meshgrid(*([np.arange(n) / n] * d), indexing="ij")
    a = 2 * np.pi
    if d == 1:
        u = np.sin(a * x[0]) + 0.5 * np.cos(2 * a * x[0])
        grad = [a * np.cos(a * x[0]) - a * np.sin(2 * a * x[0])]
    else:
        u = np.sin(a * (x[0] + 2 * x[1])) + np.cos(a * x[0])
        grad = [
            a * np.cos(a * (x[0] + 2 * x[1])) - a * np.sin(a * x[0]),
            2 * a * np.cos(a * (x[0] + 2 * x[1])),
        ]
    return u, np.stack(grad)


@pytest.mark.parametrize(
    ("d", "length", "reference"),
    [(1, 1.0, None), (1, 5.0, 16), pytest.param(2, 1.0, None, marks=pytest.mark.slow)],
)
def test_differential_kernel_converges_at_first_order(x64, d, length, reference):
    """To ``b . grad u`` in the domain's units; with a reference resolution the stored stencil is
    in units of its spacing ``h_ref = length / reference``."""
    # An abstract layer (nothing drawn) carrying the test's own stencil.
    conv = eqx.filter_eval_shape(
        DifferentialConv,
        d,
        1,
        2,
        key=jax.random.key(3),
        kernel_size=3,
        domain_length=length,
        reference_resolution=reference,
    )
    w = np.random.default_rng(0).uniform(-1, 1, conv.weight.shape)
    conv = eqx.tree_at(lambda c: c.weight, conv, jnp.asarray(w))
    # The limit's coefficients b_oj = h_ref sum_k w_ok k_j, offsets k_j in -1..1.
    offsets = np.stack(np.meshgrid(*([np.arange(-1, 2)] * d), indexing="ij"), axis=-1)
    h_ref = 1.0 if reference is None else length / reference
    b = h_ref * np.tensordot(w[:, 0], offsets, axes=d)  # (out, d)
    np.testing.assert_allclose(np.asarray(conv.derivative_coefficients())[:, 0], b, rtol=1e-14)
    errors = []
    for n in (16, 32, 64):
        u, grad = _field(n, d)
        grad = grad / length  # u(x) = f(x / length) on [0, length)^d
        # With a constant field in the same batch: the zero-sum stencil gives zero on it.
        y = np.asarray(_apply(conv, jnp.asarray(np.stack([u, np.full_like(u, 3.7)]))[:, None]))
        errors.append(np.max(np.abs(y[0] - np.tensordot(b, grad, axes=1))))
        assert np.max(np.abs(y[1])) < 1e-12 * n
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    # Error = (h/2) sum_k w_k k^2 u'' + O(h^2): halving h halves it.
    np.testing.assert_allclose(ratios, 2.0, rtol=0.1)


def test_reference_resolution_makes_the_layer_independent_of_the_domain_length(x64):
    """With ``reference_resolution`` the layer is ``(N / N_ref)`` times the zero-sum stencil's
    correlation, whatever ``domain_length``: the plain stencil at the reference resolution."""
    x = jax.random.normal(jax.random.key(1), (3, 2, 24))
    ys = []
    for length in (1.0, 7.5):
        conv = DifferentialConv(
            1, 2, 3, key=jax.random.key(0), domain_length=length, reference_resolution=12
        )
        ys.append(np.asarray(_apply(conv, x)))
    np.testing.assert_allclose(ys[0], ys[1], rtol=1e-12, atol=1e-12)
    w = np.array(conv.weight)
    w[:, :, 1] -= w.sum(-1)  # the zero-sum stencil
    xp = np.pad(np.asarray(x), [(0, 0), (0, 0), (1, 1)], mode="wrap")
    plain = np.einsum("oik,bink->bon", w, np.stack([xp[..., k : k + 24] for k in range(3)], -1))
    np.testing.assert_allclose(ys[0], (24 / 12) * plain, rtol=1e-10, atol=1e-12)


def test_local_integral_kernel_converges_to_its_integral(x64):
    """On cos(2 pi k x) the operator is multiplication by
    lambda = (1 / 2R) int_{-R}^{R} kappa(|z|) cos(2 pi k z) dz (1-D, radial kernel)."""
    conv = eqx.filter_eval_shape(
        LocalIntegralConv, 1, 1, 1, key=jax.random.key(0), radius=0.15, n_basis=3, use_bias=False
    )
    theta = np.array([0.7, -0.4, 1.1])
    conv = eqx.tree_at(lambda c: c.weight, conv, jnp.asarray(theta).reshape(1, 1, 3))
    z = np.linspace(-0.15, 0.15, 200001)
    rho = np.abs(z) / 0.15
    kappa = sum(
        t * np.maximum(0, 1 - 3 * np.abs(rho - c))
        for t, c in zip(theta, np.arange(3) / 3, strict=True)
    )
    k = 2
    lam = np.trapezoid(kappa * np.cos(2 * np.pi * k * z), z) / 0.3
    errors = []
    for n in (40, 80, 160):
        x = np.arange(n) / n
        y = np.asarray(_apply(conv, jnp.asarray(np.cos(2 * np.pi * k * x))[None, None]))[0, 0]
        errors.append(np.max(np.abs(y - lam * np.cos(2 * np.pi * k * x))))
    # A continuous kernel with kinks: the grid's quadrature is second order.
    np.testing.assert_allclose(np.array(errors[:-1]) / np.array(errors[1:]), 4.0, rtol=0.1)
    assert errors[-1] < 1e-3 * abs(lam)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(21,), (13, 11)])
def test_local_no_shapes_on_odd_grids(shape):
    d = len(shape)
    model = LocalNO(
        d,
        2,
        3,
        width=4,
        modes=2,
        n_layers=2,
        key=jax.random.key(0),
        integral_layers=[True, False],
        radius=0.2,
        channel_mlp_expansion=0.5,
        mix_derivatives=False,
    )
    y = _apply(model, jax.random.normal(jax.random.key(1), (2, 2, *shape)))
    assert y.shape == (2, 3, *shape) and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize(
    ("make", "name"),
    [
        (lambda: DifferentialConv(1, 2, 2, key=jax.random.key(0), kernel_size=4), "kernel_size"),
        (lambda: DifferentialConv(1, 2, 3, key=jax.random.key(0), groups=2), "groups"),
        (lambda: DifferentialConv(1, 2, 2, key=jax.random.key(0), padding="wrap"), "padding"),
        (
            lambda: DifferentialConv(1, 2, 2, key=jax.random.key(0), reference_resolution=0),
            "reference_resolution",
        ),
        (lambda: LocalIntegralConv(1, 2, 2, key=jax.random.key(0), radius=0.6), "radius"),
        (
            lambda: LocalNO(
                1, 1, 1, width=4, modes=2, n_layers=2, key=jax.random.key(0), diff_layers=[True]
            ),
            "diff_layers",
        ),
        (lambda: LocalNO(1, 1, 1, width=4, modes=2, key=jax.random.key(0), skip="gate"), "skip"),
    ],
)
def test_bad_arguments_name_themselves(make, name):
    with pytest.raises(ValueError, match=name):
        make()


# ----------------------------------------------------------------------------------------------
# Same function as neuraloperator
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "groups"), [((17,), 1), ((12, 9), 1), ((10, 10), 3)])
def test_differential_conv_equals_neuraloperator(shape, groups):
    torch = pytest.importorskip("torch")
    fd = pytest.importorskip("neuralop.layers.differential_conv")
    torch.manual_seed(0)
    d, default = len(shape), 8
    ref = fd.FiniteDifferenceConvolution(3, 6, d, kernel_size=3, groups=groups)
    ours = differential_conv_from_neuraloperator(ref, default_in_size=default)
    x = np.random.default_rng(0).standard_normal((2, 3, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x), default / shape[-1]).numpy()
    got = np.asarray(_apply(ours, jnp.asarray(x)))
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


@pytest.fixture
def neuralop_local_no(monkeypatch):
    """neuraloperator's ``LocalNO`` module. Its DISCO layer imports torch_harmonics at module
    level even when no DISCO layer is built; without that optional package the import fails, so
    placeholders stand in for the names it imports (a model with ``disco_layers=False`` never
    touches them)."""
    pytest.importorskip("torch")
    pytest.importorskip("neuralop")
    try:
        import torch_harmonics  # noqa: F401
    except ImportError:
        th = types.ModuleType("torch_harmonics")
        quadrature = types.ModuleType("torch_harmonics.quadrature")
        basis = types.ModuleType("torch_harmonics.filter_basis")
        quadrature._precompute_grid = None
        for name in ("PiecewiseLinearFilterBasis", "MorletFilterBasis", "ZernikeFilterBasis"):
            setattr(basis, name, None)
        for name, mod in (("", th), (".quadrature", quadrature), (".filter_basis", basis)):
            monkeypatch.setitem(sys.modules, "torch_harmonics" + name, mod)
    from neuralop.models import local_no

    yield local_no
    for name in (
        "neuralop.models.local_no",
        "neuralop.layers.local_no_block",
        "neuralop.layers.discrete_continuous_convolution",
    ):
        sys.modules.pop(name, None)


@pytest.mark.slow
@pytest.mark.parametrize(("shape", "default"), [((33,), (16,)), ((16, 15), (8, 8))])
@pytest.mark.parametrize("channel_mlp", [False, True])
def test_local_no_equals_neuraloperator(neuralop_local_no, shape, default, channel_mlp):
    import torch

    torch.manual_seed(0)
    d = len(shape)
    ref = neuralop_local_no.LocalNO(
        n_modes=[4] * d,
        in_channels=2,
        out_channels=3,
        hidden_channels=6,
        default_in_shape=default,
        n_layers=3,
        disco_layers=False,
        diff_layers=[True, False, True],
        use_channel_mlp=channel_mlp,
    )
    ours = local_no_from_neuraloperator(ref)
    x = np.random.default_rng(0).standard_normal((2, 2, *shape)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    got = np.asarray(_apply(ours, jnp.asarray(x)))
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))
