"""Spectral helpers: mode selection, Hermitian inverse, Sobolev norms, derivatives, 2/3 rule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import operators as ops

from .._jaxpr import HIGHEST, dot_precisions
from ._helpers import block_frequencies, trig_field

CASES = [
    ((16,), (8,)),  # highest kept frequency 7 < Nyquist 8
    ((16, 9), (4, 5)),
    ((8, 7), (4, 4)),  # leading axis exactly 2m: frequency -m sits on the Nyquist index
    ((15, 21), (3, 11)),  # odd axes; last axis keeps 0..10 of an odd 21-point grid
    ((6, 7, 7), (2, 3, 4)),
]


def _random_block(rng, lead, modes):
    shape = (*lead, *ops.mode_shape(modes))
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


@pytest.mark.parametrize(("shape", "modes"), CASES)
def test_inverse_is_real_part_of_hermitian_spectrum(x64, shape, modes):
    # A random, deliberately non-Hermitian block (complex zero column, complex k=0): the field is
    # defined as Re sum c_k y_k e^{2 pi i k x}; the brute-force sum is the oracle, for the
    # multi-dimensional FFT, the per-axis (pruned) FFT and the matrix-product implementations.
    rng = np.random.default_rng(0)
    yh = jnp.asarray(_random_block(rng, (2,), modes))

    @jax.jit
    def all_impls(yh):
        return (
            ops.irfft_modes(yh, shape),
            ops.irfft_modes(yh, shape, pruned=True),
            ops.irdft_modes(yh, shape),
        )

    ref = trig_field(np.asarray(yh), shape)
    for out in all_impls(yh):
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, ref, atol=1e-11)


def test_zero_column_is_made_hermitian_before_the_inverse(x64):
    # The k_d = 0 column must be the Hermitian part of what was given: adding an anti-Hermitian
    # column (i * real, conjugate-symmetric in k_1) changes nothing.
    shape, modes = (12, 10), (3, 4)
    rng = np.random.default_rng(1)
    yh = _random_block(rng, (1,), modes)
    k1 = block_frequencies(ops.mode_shape(modes))[0]
    anti = np.zeros(ops.mode_shape(modes), complex)
    for i, k in enumerate(k1):
        j = list(k1).index(-k) if -k in k1 else None
        v = rng.normal() + 1j * rng.normal()
        anti[i, 0] += v
        if j is not None:
            anti[j, 0] -= np.conj(v)
    keep = np.array([(-k in k1) for k in k1])
    anti[~keep, 0] = 0.0
    a = ops.irfft_modes(jnp.asarray(yh), shape)
    b = ops.irfft_modes(jnp.asarray(yh + anti[None]), shape)
    np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize(("shape", "modes"), CASES)
def test_forward_keeps_both_signs(x64, shape, modes):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, *shape))
    d = len(shape)
    full = np.fft.rfftn(x, axes=tuple(range(1, d + 1))) / np.prod(shape)
    ref = full[..., : modes[-1]]
    for j, m in enumerate(modes[:-1]):
        ref = np.concatenate(
            [
                np.take(ref, range(m), axis=1 + j),
                np.take(ref, range(shape[j] - m, shape[j]), axis=1 + j),
            ],
            axis=1 + j,
        )
    for got in (
        ops.rfft_modes(x, modes),
        ops.rfft_modes(x, modes, pruned=True),
        ops.rdft_modes(x, modes),
    ):
        np.testing.assert_allclose(got, ref, atol=1e-13)


def test_dft_products_are_full_precision():
    # A truncated DFT stands in for an FFT, so it asks for full float32 products: on GPUs and TPUs
    # the default would be TF32 / bfloat16 (an H200 gave 0.70703 for cos(pi/4) on the default).
    # CPU ignores the request, so the jaxpr is where this can be checked here.
    from jaxsolve.operators._spectral import irdft_modes_last, rdft_modes_last

    x = jnp.ones((2, 12, 10))
    xl = jnp.ones((12, 10, 3))
    re, im = rdft_modes_last(xl, (3, 4))
    cases = [
        (lambda a: ops.rdft_modes(a, (3, 4)), x),
        (lambda a: ops.irdft_modes(a, (12, 10)), ops.rdft_modes(x, (3, 4))),
        (lambda a: rdft_modes_last(a, (3, 4)), xl),
        (lambda a, b: irdft_modes_last(a, b, (12, 10)), re, im),
    ]
    for fn, *args in cases:
        precisions = dot_precisions(fn, *args)
        assert precisions and all(p == HIGHEST for p in precisions), precisions


def test_round_trip_of_a_band_limited_field(x64):
    # A field whose spectrum lies inside the kept modes is reproduced exactly, odd grid included.
    rng = np.random.default_rng(3)
    for shape, modes in [((16, 9), (4, 5)), ((15, 21), (7, 11))]:
        yh = _random_block(rng, (2,), modes)
        yh[:, modes[0]] = 0.0  # frequency -m has no +m partner in the block: keep |k| < m
        u = ops.irfft_modes(jnp.asarray(yh), shape)
        np.testing.assert_allclose(ops.irfft_modes(ops.rfft_modes(u, modes), shape), u, atol=1e-12)


def test_check_grid_names_both_numbers():
    with pytest.raises(ValueError, match=r"modes\[0\]=5.*at least 10 points.*has 8"):
        ops.check_grid((5, 3), (8, 8))
    with pytest.raises(ValueError, match=r"modes\[1\]=6.*at least 11 points.*has 10"):
        ops.check_grid((2, 6), (8, 10))
    ops.check_grid((4, 5), (8, 9))  # the smallest grids that hold these modes
    assert ops.min_grid_shape((4, 5)) == (8, 9)
    with pytest.raises(ValueError, match="modes"):
        ops.rfft_modes(jnp.zeros((1, 10)), (6,))


@pytest.mark.parametrize("n", [64, 63])
def test_sobolev_norm_closed_form(x64, n):
    # ||sin(2 pi k x)||_{H^s}^2 = (1 + 4 pi^2 k^2)^s / 2 on [0, 1), for negative and positive s.
    s = jnp.array([-1.5, -1.0, 0.0, 0.5, 1.0, 2.0])
    x = np.arange(n) / n
    norm = jax.jit(jax.vmap(ops.sobolev_norm, in_axes=(None, 0)))
    for k in (1, 3, 7):
        u = np.sin(2 * np.pi * k * x)[None]
        np.testing.assert_allclose(
            norm(u, s), np.sqrt((1 + 4 * np.pi**2 * k**2) ** s / 2), rtol=1e-12
        )
    # Box of length L: ||sin(2 pi k x / L)||^2 = L (1 + (2 pi k / L)^2)^s / 2.
    length = 3.0
    u = np.sin(2 * np.pi * 2 * x)[None]
    got = jax.vmap(lambda s: ops.sobolev_norm(u, s, lengths=length))(s)
    np.testing.assert_allclose(
        got, np.sqrt(length * (1 + (4 * np.pi / length) ** 2) ** s / 2), rtol=1e-12
    )
    # 2-D: sin(4 pi x) cos(6 pi y) has |xi|^2 = 4 pi^2 * 13 and mean square 1/4.
    xx, yy = np.meshgrid(x, x, indexing="ij")
    u2 = (np.sin(2 * np.pi * 2 * xx) * np.cos(2 * np.pi * 3 * yy))[None]
    np.testing.assert_allclose(norm(u2, s), np.sqrt((1 + 4 * np.pi**2 * 13) ** s / 4), rtol=1e-12)


def test_sobolev_order_is_traced_and_differentiable(x64):
    x = np.arange(32) / 32
    u = np.sin(2 * np.pi * 3 * x)[None]
    norms = jax.jit(jax.vmap(lambda s: ops.sobolev_norm(u, s)))(jnp.array([-1.0, 0.0, 1.0]))
    np.testing.assert_allclose(
        norms**2, (1 + 36 * np.pi**2) ** np.array([-1.0, 0, 1]) / 2, rtol=1e-12
    )
    g = jax.grad(lambda s: ops.sobolev_norm(u, s) ** 2)(1.0)
    lam = 1 + 36 * np.pi**2
    np.testing.assert_allclose(g, lam * np.log(lam) / 2, rtol=1e-10)


def test_spectral_derivative_closed_forms(x64):
    n = 48
    x = np.arange(n) / n
    u = np.sin(2 * np.pi * 3 * x)[None]
    np.testing.assert_allclose(
        ops.spectral_derivative(u, 1), 6 * np.pi * np.cos(2 * np.pi * 3 * x)[None], atol=1e-10
    )
    np.testing.assert_allclose(ops.spectral_derivative(u, 2), -((6 * np.pi) ** 2) * u, atol=1e-8)
    # Mixed derivative on a 2-D box of lengths (2, 3).
    xs, ys = np.arange(24) * 2.0 / 24, np.arange(30) * 3.0 / 30
    xx, yy = np.meshgrid(xs, ys, indexing="ij")
    a, b = 2 * np.pi * 2 / 2.0, 2 * np.pi * 1 / 3.0
    f = np.sin(a * xx) * np.sin(b * yy)
    np.testing.assert_allclose(
        ops.spectral_derivative(f[None], (1, 1), lengths=(2.0, 3.0))[0],
        a * b * np.cos(a * xx) * np.cos(b * yy),
        atol=1e-10,
    )
    # The Nyquist mode of an even grid has no real derivative: zeroed for odd orders.
    nyq = np.cos(np.pi * np.arange(8))[None]
    np.testing.assert_allclose(ops.spectral_derivative(nyq, 1), 0.0, atol=1e-12)
    with pytest.raises(ValueError, match="non-negative"):
        ops.spectral_derivative(u, -1)


def _cosines(grid_n, coefs):
    x = np.arange(grid_n) / grid_n
    return sum(c * np.cos(2 * np.pi * k * x + 0.3 * k) for k, c in coefs)


def _project(fine, n):
    """The modes of a finely sampled field that the 2/3 mask of an n-grid keeps, on the n-grid."""
    coef = np.fft.rfft(fine, axis=-1)[..., : n // 2 + 1] / fine.shape[-1]
    return np.fft.irfft(np.where(ops.dealias_mask((n,)), coef, 0) * n, n=n, axis=-1)


@pytest.mark.parametrize("n", [24, 25])
def test_two_thirds_rule_removes_exactly_the_aliased_modes(x64, n):
    # u, v inside the mask (3|k| < n): the pseudo-spectral product, dealiased, equals the exact
    # product (resolved on a 4x finer grid) projected onto the mask.
    rng = np.random.default_rng(4)
    kmax = (n - 1) // 3
    cu = [(k, rng.normal()) for k in range(kmax + 1)]
    cv = [(k, rng.normal()) for k in range(kmax + 1)]
    u, v = _cosines(n, cu)[None], _cosines(n, cv)[None]
    np.testing.assert_allclose(ops.dealias(u), u, atol=1e-12)
    exact = _project(_cosines(4 * n, cu) * _cosines(4 * n, cv), n)
    np.testing.assert_allclose(ops.dealias(u * v)[0], exact, atol=1e-12)
    # Inputs beyond the mask alias into it: the same comparison then fails, so it can fail.
    cw = [(k, 1.0) for k in range(n // 2)]
    w = _cosines(n, cw)[None]
    exact_w = _project(_cosines(4 * n, cw) ** 2, n)
    assert np.max(np.abs(np.asarray(ops.dealias(w * w)[0]) - exact_w)) > 1e-2
    # and dealias removes the modes outside the mask
    np.testing.assert_allclose(
        ops.dealias(w)[0], _cosines(n, [(k, 1.0) for k in range(kmax + 1)]), atol=1e-12
    )


@pytest.mark.parametrize(("shape", "modes"), [((16,), (5,)), ((16, 9), (4, 5)), ((7, 12), (7, 3))])
def test_cosine_modes_are_the_cosine_series(x64, shape, modes):
    rng = np.random.default_rng(5)
    a = rng.normal(size=(2, *modes))
    grids = np.meshgrid(*[(np.arange(n) + 0.5) / n for n in shape], indexing="ij")
    ref = np.zeros((2, *shape))
    for idx in np.ndindex(*modes):
        basis = np.prod([np.cos(np.pi * k * g) for k, g in zip(idx, grids, strict=True)], axis=0)
        ref += a[(slice(None), *idx)].reshape((2,) + (1,) * len(shape)) * basis
    np.testing.assert_allclose(ops.idct_modes(a, shape), ref, atol=1e-12)
    np.testing.assert_allclose(ops.dct_modes(ref, modes), a, atol=1e-12)
    with pytest.raises(ValueError, match="at least"):
        ops.dct_modes(ref, tuple(n + 1 for n in shape))
