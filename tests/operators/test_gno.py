"""GNO / GINO: neighbour lists, order invariance, quadrature convergence, overflow, parity."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._gino import GINO, gino_from_neuraloperator, latent_grid_points
from jaxsolve.operators._gno import GNO, gno_from_neuraloperator, radius_neighbours

_SMALL = {"hidden_widths": (8,), "embedding_frequencies": 2}


@eqx.filter_jit
def _vmapped(model, *args, in_axes=0):
    return jax.vmap(model, in_axes=in_axes)(*args)


def _points(seed, n, d):
    return np.random.default_rng(seed).random((n, d)).astype(np.float32)


def test_neighbours_are_the_ball_and_overflow_raises():
    # The lists hold exactly the sources within the radius (a NumPy oracle), chunked over the
    # queries (9 = 4 + 4 + 1 padded), padded to k_max > n with masked slots; one slot fewer than
    # the largest neighbourhood is reported (overflow, counts) and raised by default.
    x, y, r = _points(0, 40, 3), _points(1, 9, 3), 0.45
    dist = np.linalg.norm(y[:, None] - x[None], axis=-1)
    counts = (dist <= r).sum(1)

    @eqx.filter_jit
    def search(x, y):
        return (
            radius_neighbours(y, x, r, 45, chunk_size=4),
            radius_neighbours(y, x, r, int(counts.max()) - 1, throw=False),
        )

    nb, truncated = search(x, y)
    assert nb.indices.shape == nb.mask.shape == (9, 45)
    np.testing.assert_array_equal(nb.counts, counts)
    for i in range(9):
        got = np.sort(np.asarray(nb.indices[i])[np.asarray(nb.mask[i])])
        np.testing.assert_array_equal(got, np.flatnonzero(dist[i] <= r))
    assert not bool(nb.overflow)
    assert bool(truncated.overflow)
    np.testing.assert_array_equal(truncated.counts, counts)
    with pytest.raises(Exception, match="k_max"):
        eqx.filter_jit(radius_neighbours)(y, x, r, int(counts.max()) - 1)


@pytest.mark.slow
def test_gno_overflow_raises():
    x, y = _points(0, 30, 2), _points(1, 5, 2)
    gno = GNO(2, 1, 1, radius=2.0, k_max=29, key=jax.random.PRNGKey(0), **_SMALL)
    with pytest.raises(Exception, match="k_max"):
        eqx.filter_jit(lambda m, *a: m(*a))(gno, x, y, np.ones((1, 30), np.float32))


@functools.cache
def _nonlinear_gno(d, chunk_size=None):
    return GNO(
        d, 3, 3, radius=0.6, k_max=60, key=jax.random.PRNGKey(d), transform_type="nonlinear",
        chunk_size=chunk_size, **_SMALL,
    )  # fmt: skip


def _shapes_and_order(d, chunk_size=None):
    # One compiled call on a stack of three inputs: the reference, the sources permuted (with f
    # and the quadrature weights) and the queries permuted. The sum runs over an unordered set,
    # so the second equals the first to round-off and the third is the first, permuted.
    gno = _nonlinear_gno(d, chunk_size)
    rng = np.random.default_rng(d)
    x, y = _points(0, 60, d), _points(1, 11, d)
    f = rng.standard_normal((3, 60)).astype(np.float32)
    w = rng.random(60).astype(np.float32)
    p, q = rng.permutation(60), rng.permutation(11)
    xs, ys = np.stack([x, x[p], x]), np.stack([y, y, y[q]])
    fs, ws = np.stack([f, f[:, p], f]), np.stack([w, w[p], w])
    out = np.asarray(_vmapped(gno, xs, ys, fs, ws))
    assert out.shape == (3, 3, 11) and out.dtype == np.float32
    assert np.max(np.abs(out[0])) > 0.1  # not trivially zero
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(out[2], out[0][:, q], rtol=0, atol=1e-6)


def test_gno_order_invariance_shapes_vmap_2d():
    _shapes_and_order(2)


@pytest.mark.slow
def test_gno_order_invariance_shapes_vmap_3d():
    _shapes_and_order(3, chunk_size=4)  # 11 queries: chunks of 4, the last one padded


def test_same_integral_at_several_densities(x64):
    # A smooth field on cell-centred grids of [0, 1]^2 with weights h^2: the radius holds the
    # whole square, so each output is the midpoint rule of a smooth integrand, whose error falls
    # as h^2. The densities 6^2, 12^2, 24^2 and the reference 48^2 are padded to one size with
    # zero-weight points (so one compiled call does all four) and compared with the reference:
    # the differences fall by about 5 per halving of h.
    gno = GNO(2, 1, 1, radius=2.0, k_max=48 * 48, key=jax.random.PRNGKey(1), dtype=jnp.float64,
              **_SMALL)  # fmt: skip
    queries = np.array([[0.2, 0.3], [0.5, 0.5], [0.9, 0.1]])
    size = 48 * 48

    def sample(n):
        c = (np.arange(n) + 0.5) / n
        pts = np.stack(np.meshgrid(c, c, indexing="ij"), -1).reshape(-1, 2)
        f = np.sin(2 * np.pi * pts[:, 0]) * np.cos(np.pi * pts[:, 1]) + pts[:, 1]
        pad = size - n * n
        pts = np.concatenate([pts, np.full((pad, 2), 0.5)])
        f = np.concatenate([f, np.full(pad, 7.0)])[None]  # padding values must not matter
        return pts, f, np.concatenate([np.full(n * n, 1.0 / n**2), np.zeros(pad)])

    xs, fs, ws = (np.stack(a) for a in zip(*(sample(n) for n in (6, 12, 24, 48)), strict=True))
    out = np.asarray(_vmapped(gno, xs, queries, fs, ws, in_axes=(0, None, 0, 0)))
    errors = [np.max(np.abs(out[j] - out[3])) for j in range(3)]
    assert errors[0] > 1e-6  # the quadrature error is visible at the coarsest density
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3, errors


@pytest.mark.wrong_argument_types
def test_bad_arguments():
    key = jax.random.PRNGKey(0)
    kw = {"radius": 0.5, "k_max": 4, "key": key}
    with pytest.raises(ValueError, match="radius"):
        GNO(2, 1, 1, radius=-1.0, k_max=4, key=key)
    with pytest.raises(ValueError, match="k_max"):
        GNO(2, 1, 1, radius=0.5, k_max=0, key=key)
    with pytest.raises(ValueError, match="transform_type"):
        GNO(2, 1, 1, transform_type="quadratic", **kw)
    with pytest.raises(ValueError, match="reduction"):
        GNO(2, 1, 1, reduction="max", **kw)
    with pytest.raises(ValueError, match="out_channels"):
        GNO(2, 1, 2, transform_type="linear", **kw)
    with pytest.raises(ValueError, match="pos_embedding"):
        GNO(2, 1, 1, pos_embedding="rope", **kw)
    gno = _nonlinear_gno(2)
    x, y = _points(0, 5, 2), _points(1, 3, 2)
    with pytest.raises(ValueError, match="f must"):
        gno(x, y, np.ones((3, 4)))
    with pytest.raises(ValueError, match="f must"):
        gno(x, y)
    with pytest.raises(ValueError, match="sources"):
        gno(_points(0, 5, 3), y, np.ones((3, 5)))
    with pytest.raises(ValueError, match="weights"):
        gno(x, y, np.ones((3, 5)), np.ones(4))
    with pytest.raises(ValueError, match="queries"):
        radius_neighbours(np.ones(3), x, 0.5, 4)
    with pytest.raises(ValueError, match="radius"):
        radius_neighbours(y, x, 0.0, 4)
    with pytest.raises(ValueError, match="latent_shape"):
        GINO(2, 1, 1, latent_shape=(8,), width=4, modes=2, in_radius=0.3, out_radius=0.3,
             in_k_max=4, out_k_max=4, key=key)  # fmt: skip
    with pytest.raises(ValueError, match="domain_padding"):
        GINO(2, 1, 1, latent_shape=(4, 4), width=4, modes=2, in_radius=0.3, out_radius=0.3,
             in_k_max=4, out_k_max=4, key=key, fno_kwargs={"domain_padding": 0.1})  # fmt: skip
    with pytest.raises(ValueError, match="bounds"):
        GINO(2, 1, 1, latent_shape=(4, 4), width=4, modes=2, in_radius=0.3, out_radius=0.3,
             in_k_max=4, out_k_max=4, key=key, bounds=[(0, 1), (1, 0)])  # fmt: skip


def _small_gino(d, latent_shape, key):
    return GINO(
        d, 2, 3, latent_shape=latent_shape, width=4, modes=2, in_radius=0.35, out_radius=0.35,
        in_k_max=64, out_k_max=64, key=key, n_layers=1, in_hidden_widths=(8,),
        out_hidden_widths=(8,), embedding_frequencies=2, projection_channels=8,
    )  # fmt: skip


@pytest.mark.slow
def test_gino_shapes_and_input_order():
    model = _small_gino(2, (6, 5), jax.random.PRNGKey(0))
    x, y = _points(0, 40, 2), _points(1, 7, 2)
    f = np.random.default_rng(2).standard_normal((2, 40)).astype(np.float32)
    p = np.random.default_rng(3).permutation(40)
    out = _vmapped(model, np.stack([x, x[p]]), np.stack([f, f[:, p]]), y, in_axes=(0, 0, None))
    assert out.shape == (2, 3, 7)
    np.testing.assert_allclose(out[1], out[0], rtol=0, atol=1e-5)


@pytest.mark.slow
def test_gino_3d_shapes_and_vmap():
    model = _small_gino(3, (5, 4, 6), jax.random.PRNGKey(1))
    x, y = _points(0, 50, 3), _points(1, 9, 3)
    f = np.random.default_rng(2).standard_normal((2, 2, 50)).astype(np.float32)
    out = _vmapped(model, x, f, y, in_axes=(None, 0, None))
    assert out.shape == (2, 3, 9) and np.all(np.isfinite(out))


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize(
    "transform_type", ["linear_kernelonly", "linear", "nonlinear_kernelonly", "nonlinear"]
)
def test_same_function_as_neuraloperator(d, reduction, transform_type):
    torch = pytest.importorskip("torch")
    gno_block = pytest.importorskip("neuralop.layers.gno_block")
    torch.manual_seed(0)
    out_channels = 5 if transform_type.endswith("kernelonly") else 3
    ref = gno_block.GNOBlock(
        3, out_channels, d, 0.4, transform_type=transform_type, reduction=reduction,
        channel_mlp_layers=[16, 16], pos_embedding_channels=4,
        use_torch_scatter_reduce=False, use_open3d_neighbor_search=False,
    )  # fmt: skip
    ours = gno_from_neuraloperator(ref, k_max=80)
    rng = np.random.default_rng(0)
    x = rng.random((80, d)).astype(np.float32)
    y = rng.random((13, d)).astype(np.float32)
    f = rng.standard_normal((80, 3)).astype(np.float32)
    with_f = transform_type != "linear_kernelonly"
    with torch.no_grad():
        expected = ref(
            torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(f) if with_f else None
        )
    expected = expected.numpy()
    got = np.asarray(_vmapped(ours, x[None], y[None], f.T[None] if with_f else None)[0]).T
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("latent_shape", "n_modes", "in_transform"),
    [((8, 6), (4, 4), "linear"), ((6, 4, 5), (4, 4, 4), "nonlinear_kernelonly")],
)
def test_gino_same_function_as_neuraloperator(latent_shape, n_modes, in_transform):
    torch = pytest.importorskip("torch")
    neuralop_models = pytest.importorskip("neuralop.models")
    torch.manual_seed(0)
    d = len(latent_shape)
    ref = neuralop_models.GINO(
        in_channels=3, out_channels=2, gno_coord_dim=d, fno_n_modes=n_modes,
        fno_hidden_channels=8, fno_n_layers=2, fno_in_channels=3, in_gno_radius=0.35,
        out_gno_radius=0.35, in_gno_transform_type=in_transform, gno_embed_channels=4,
        in_gno_channel_mlp_hidden_layers=[16, 16], out_gno_channel_mlp_hidden_layers=[16],
        gno_use_open3d=False, gno_use_torch_scatter=False,
    )  # fmt: skip
    n_latent = int(np.prod(latent_shape))
    ours = gino_from_neuraloperator(ref, latent_shape=latent_shape, in_k_max=70, out_k_max=n_latent)
    rng = np.random.default_rng(0)
    x, y = rng.random((70, d)).astype(np.float32), rng.random((9, d)).astype(np.float32)
    f = rng.standard_normal((70, 3)).astype(np.float32)
    grid = np.array(latent_grid_points(latent_shape, ((0.0, 1.0),) * d, jnp.float32))
    with torch.no_grad():
        expected = ref(
            torch.from_numpy(x[None]),
            torch.from_numpy(grid.reshape(1, *latent_shape, d)),
            torch.from_numpy(y[None]),
            x=torch.from_numpy(f[None]),
        )
    expected = expected.numpy()[0]
    got = np.asarray(_vmapped(ours, x[None], f.T[None], y[None])[0]).T
    assert got.dtype == np.float32 and got.shape == expected.shape == (9, 2)
    assert np.max(np.abs(got - expected)) <= 1e-5 * np.max(np.abs(expected))
