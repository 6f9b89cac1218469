import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._geometry import Box, Disk, Interval, SignedDistance, SpaceTime
from jaxsolve.pinn._sampling import uniform


def _key(seed):
    # RBG keys: XLA compiles their random bits far faster than threefry's, and the suite's time
    # here is compile time.
    return jax.random.key(seed, impl="rbg")


@eqx.filter_jit
def _evaluate(geometry, x):
    """One compiled program per geometry type and shape (the suite's time is compile time)."""
    return (
        geometry.signed_distance(x),
        geometry.contains(x),
        geometry.boundary_normal(x),
        geometry.distance(x),
    )


@eqx.filter_jit
def _interior(geometry, key, n):
    return geometry.sample_interior(key, n)


def test_box_exact_signed_distance_faces_and_corners():
    box = Box([0.0, 0.0], [1.0, 2.0])
    x = jnp.array([[2.0, 3.0], [-3.0, -4.0], [0.5, 1.0], [0.2, 1.9], [1.5, 1.0], [1.0, 2.0]])
    # corner distances sqrt(1 + 1), sqrt(9 + 16); centre -min half-width; near a face; outside a
    # face; on the corner itself.
    expected = [math.sqrt(2.0), 5.0, -0.5, -0.1, 0.5, 0.0]
    x = jnp.concatenate([x, jnp.array([[0.05, 1.0]])])
    phi, _, normal, _ = _evaluate(box, x)
    np.testing.assert_allclose(phi[:6], expected, atol=1e-6)
    s = math.sqrt(0.5)
    np.testing.assert_allclose(
        np.asarray(normal)[[0, 3, 4, 6]], [[s, s], [0, 1], [1, 0], [-1, 0]], atol=1e-6
    )


def test_box_signed_distance_is_euclidean_distance_in_3d():
    # Outside: distance to the nearest point of the box (the clamp); inside: to the nearest face.
    box = Box([-1.0, 0.0, 2.0], [1.0, 3.0, 2.5])
    x = jax.random.uniform(_key(0), (500, 3), minval=-3.0, maxval=5.0)
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    xn = np.asarray(x)
    outside = np.linalg.norm(xn - np.clip(xn, lo, hi), axis=-1)
    inside = np.min(np.minimum(xn - lo, hi - xn), axis=-1)
    expected = np.where(outside > 0, outside, -inside)
    phi, inside, _, _ = _evaluate(box, x)
    np.testing.assert_allclose(phi, expected, atol=1e-5)
    np.testing.assert_array_equal(inside, expected <= 0)


def test_disk_and_interval_signed_distance():
    disk = Disk([1.0, -1.0], 2.0)
    x = jnp.array([[1.0, -1.0], [4.0, 3.0], [1.0, 1.0], [2.0, -1.0]])
    phi, _, normal, d = _evaluate(disk, x)
    np.testing.assert_allclose(phi, [-2.0, 3.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(normal[1:3], [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)
    np.testing.assert_allclose(d, [1.0, 1 - 25 / 4, 0.0, 0.75], atol=1e-6)
    interval = Interval(-1.0, 3.0)
    t = jnp.array([[-2.0], [0.0], [3.0], [1.0]])
    phi, _, normal, d = _evaluate(interval, t)
    np.testing.assert_allclose(phi, [1.0, -1.0, 0.0, -2.0])
    np.testing.assert_allclose(d, [-1.25, 0.75, 0.0, 1.0])
    np.testing.assert_allclose(normal, [[-1], [-1], [1], [1]])


def test_space_time_signed_distance_and_point_order():
    st = SpaceTime(Box([0.0], [1.0]), 0.0, 2.0)  # points (t, x)
    x = jnp.array([[1.0, 0.5], [0.1, 0.5], [1.0, 0.95], [3.0, 2.0], [0.0, 0.3], [1.0, 0.0]])
    x = jnp.concatenate([x, jnp.array([[2.0, 0.5], [1.0, 1.0]])])
    phi, _, normal, d = _evaluate(st, x)
    np.testing.assert_allclose(phi[:6], [-0.5, -0.1, -0.05, math.sqrt(2.0), 0.0, 0.0], atol=1e-6)
    s = math.sqrt(0.5)
    np.testing.assert_allclose(normal[1:6], [[-1, 0], [0, 1], [s, s], [-1, 0], [0, -1]], atol=1e-6)
    lower, upper = st.bounds
    np.testing.assert_allclose(lower, [0.0, 0.0])
    np.testing.assert_allclose(upper, [2.0, 1.0])
    # Hard-constraint factor: zero at t0 and on the spatial boundary, not at t1.
    np.testing.assert_allclose(np.asarray(d)[[0, 4, 5, 6, 7]], [0.5, 0.0, 0.0, 1.0, 0.0], atol=1e-6)


def test_contains_agrees_with_signed_distance_sign():
    # (Box: in the exact-distance test above; a SignedDistance domain: in the rejection test)
    geometries = [SpaceTime(Disk([0.0, 0.0], 1.0), 0.0, 1.0)]
    for g in geometries:
        x = jax.random.uniform(_key(1), (300, g.dim), minval=-1.5, maxval=1.5)
        phi, inside = eqx.filter_jit(lambda g, x: (g.signed_distance(x), g.contains(x)))(g, x)
        np.testing.assert_array_equal(inside, phi <= 0)
        assert 0 < inside.sum() < len(x)


def test_box_interior_samples_moments():
    box = Box([0.0, -1.0, 2.0], [1.0, 3.0, 2.5])
    n = 20000
    x = np.asarray(_interior(box, _key(0), n))
    assert np.all((x >= box.lower) & (x <= box.upper))
    lo, hi = np.asarray(box.lower), np.asarray(box.upper)
    mean, var = (lo + hi) / 2, (hi - lo) ** 2 / 12
    # Five standard errors: the mean's is sqrt(var / n); the variance's sqrt(var^2 * 0.8 / n)
    # (a uniform's fourth central moment is 9/5 var^2).
    np.testing.assert_array_less(np.abs(x.mean(0) - mean), 5 * np.sqrt(var / n))
    np.testing.assert_array_less(np.abs(x.var(0) - var), 5 * var * np.sqrt(0.8 / n))


def test_disk_interior_uniform_by_area():
    disk = Disk([0.5, 0.5], 2.0)
    n = 20000
    x = _interior(disk, _key(0), n)
    r = np.asarray(jnp.linalg.norm(x - disk.center, axis=-1))
    assert np.all(r <= 2.0 + 1e-6)
    # P(r < R/2) = 1/4 by area; binomial standard error sqrt(3/16 / n).
    assert abs(np.mean(r < 1.0) - 0.25) < 5 * math.sqrt(3 / 16 / n)


@pytest.mark.slow  # ~0.5 s of compiles
def test_disk_unit_square_map_uniform_by_area():
    disk = Disk([0.5, 0.5], 2.0)
    n = 20000
    u = jax.random.uniform(_key(1), (n, 2))
    y, inside = eqx.filter_jit(disk.from_unit_cube)(u)
    assert bool(inside.all())
    ry = np.asarray(jnp.linalg.norm(y - disk.center, axis=-1))
    assert abs(np.mean(ry < 1.0) - 0.25) < 5 * math.sqrt(3 / 16 / n)


def test_boundary_samples_on_boundary_and_face_weights():
    n = 8000
    box = Box([0.0, 0.0], [3.0, 1.0])  # faces normal to x: length 1; normal to y: length 3
    disk = Disk([1.0, 2.0], 0.5)
    interval = Interval(-1.0, 2.0)

    @eqx.filter_jit
    def draw(key):
        k = jax.random.split(key, 3)
        x, y, z = (
            box.sample_boundary(k[0], n),
            disk.sample_boundary(k[1], n),
            interval.sample_boundary(k[2], n),
        )
        phi = [g.signed_distance(p) for g, p in ((box, x), (disk, y), (interval, z))]
        return x, z, jnp.stack(phi)

    x, z, phi = map(np.asarray, draw(_key(0)))
    assert np.max(np.abs(phi)) < 1e-6
    on_y_faces = np.isclose(x[:, 1], 0.0) | np.isclose(x[:, 1], 1.0)
    # area fraction of the y faces: 2 * 3 / 8
    assert abs(on_y_faces.mean() - 0.75) < 5 * math.sqrt(0.75 * 0.25 / n)
    np.testing.assert_allclose(box.boundary_measure, 8.0)
    assert set(np.unique(z)) == {-1.0, 2.0}
    assert abs(np.mean(z == 2.0) - 0.5) < 5 * math.sqrt(0.25 / n)


@pytest.mark.slow  # ~1 s of compiles
def test_space_time_boundary_weights():
    n = 8000
    st = SpaceTime(Interval(0.0, 1.0), 0.0, 4.0)  # slices: length 1 each; lateral: 4 * 2

    @eqx.filter_jit
    def draw(key):
        k1, k2 = jax.random.split(key)
        w, lateral = st.sample_boundary(k1, n), st.sample_lateral(k2, n)
        return w, st.signed_distance(w), st.space.signed_distance(lateral[:, 1:])

    w, phi, lateral_phi = map(np.asarray, draw(_key(0)))
    assert np.max(np.abs(phi)) < 1e-6 and np.max(np.abs(lateral_phi)) < 1e-6
    # the initial slice carries 1 / (1 + 1 + 8) of the boundary measure
    assert abs(np.isclose(w[:, 0], 0.0).mean() - 0.1) < 5 * math.sqrt(0.09 / n)


@pytest.mark.slow  # ~1 s of compiles
def test_signed_distance_rejection_and_projection():
    sdf = SignedDistance(lambda p: jnp.linalg.norm(p) - 0.5, ([-1.0, -1.0], [1.0, 1.0]))

    @eqx.filter_jit
    def draw(g, key):
        k1, k2 = jax.random.split(key)
        x, y = g.sample_interior(k1, 2000), g.sample_boundary(k2, 500)
        return x, g.contains(x), y, g.signed_distance(y), g.boundary_normal(y)

    x, inside, y, phi, normal = draw(sdf, _key(0))
    assert bool(inside.all())
    # uniform in the disk: P(r < 0.25) = 1/4
    r = np.asarray(jnp.linalg.norm(x, axis=-1))
    assert abs(np.mean(r < 0.25) - 0.25) < 5 * math.sqrt(3 / 16 / 2000)
    assert float(jnp.max(jnp.abs(phi))) < 1e-6
    np.testing.assert_allclose(normal, y / 0.5, atol=1e-5)
    # Too small a domain for the oversampling: a clear error, not wrong points.
    tiny = SignedDistance(
        lambda p: jnp.linalg.norm(p) - 1e-3, ([-1.0, -1.0], [1.0, 1.0]), oversample=2
    )
    with pytest.raises(Exception, match="rejection sampling accepted fewer"):
        tiny.sample_interior(_key(0), 10)


def test_bad_arguments():
    with pytest.raises(ValueError, match="a < b"):
        Interval(1.0, 0.0)
    with pytest.raises(ValueError, match="lower < upper"):
        Box([0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="radius"):
        Disk([0.0, 0.0], -1.0)
    with pytest.raises(ValueError, match="t0 < t1"):
        SpaceTime(Interval(0.0, 1.0), 1.0, 1.0)
    with pytest.raises(ValueError, match="last axis"):
        Box([0.0, 0.0], [1.0, 1.0]).signed_distance(jnp.zeros((4, 3)))


def test_geometry_jits_vmaps_and_grads():
    box = Box([0.0, 0.0], [1.0, 1.0])

    @jax.jit
    def run(centers, x, face):
        sdf = lambda c, p: Disk(c, 1.0).signed_distance(p)
        return (
            jax.grad(sdf)(centers[0], x),  # d/dc |x - c| = -(x - c)/|x - c|
            jax.vmap(sdf, (0, None))(centers, x),
            box.distance(face),
            jax.grad(box.distance)(face),
            jax.grad(box.signed_distance)(centers[0] + 0.5),  # at the centre: a tie of faces
        )

    centers = jnp.array([[0.0, 0.0], [3.0, 0.0]])
    g, phi, d, grad_d, grad_phi = run(centers, jnp.array([3.0, 4.0]), jnp.array([1.0, 0.5]))
    np.testing.assert_allclose(g, [-0.6, -0.8], atol=1e-6)
    np.testing.assert_allclose(phi, [4.0, 3.0], atol=1e-6)
    # the hard-constraint factor of a box vanishes on its faces, with a finite gradient
    assert float(d) == 0.0
    np.testing.assert_allclose(grad_d, [-4.0, 0.0], atol=1e-6)
    assert np.all(np.isfinite(grad_phi))


def test_traced_geometry_parameters_are_checked_when_run():
    """A sweep over domains passes traced endpoints and radii: a reversed interval or a
    negative radius sampled points outside the domain (and flipped the distance's sign) with no
    error; now the program raises when it runs, as the constructor does for concrete values."""
    key = jax.random.key(0)

    @jax.jit
    def sample(a, b, t1, r):
        interval = uniform(key, Interval(a, b), 8)
        box = uniform(key, Box(jnp.stack([a, a]), jnp.stack([b, b])), 8)
        spacetime = uniform(key, SpaceTime(Interval(0.0, 1.0), 0.0, t1), 8)
        disk = uniform(key, Disk(jnp.zeros(2), r), 8)
        return interval, box, spacetime, disk

    interval, box, spacetime, disk = sample(0.0, 2.0, 1.0, 0.5)
    assert np.all((spacetime[:, 0] >= 0) & (spacetime[:, 0] <= 1))
    assert np.all((interval >= 0) & (interval <= 2)) and np.all((box >= 0) & (box <= 2))
    assert np.all(np.linalg.norm(disk, axis=1) <= 0.5)
    for args, what in [
        ((2.0, 0.0, 1.0, 0.5), "Interval needs finite a < b"),
        ((0.0, 2.0, -1.0, 0.5), "SpaceTime needs finite t0 < t1"),
        ((0.0, 2.0, 1.0, -0.5), "Disk needs a finite radius > 0"),
        ((0.0, np.inf, 1.0, 0.5), "Interval needs finite a < b"),
    ]:
        with pytest.raises(Exception, match=what):
            jax.block_until_ready(sample(*args))
