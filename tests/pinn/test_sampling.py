import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import qmc

from jaxsolve.pinn._geometry import Box, Disk, Interval, SignedDistance, SpaceTime
from jaxsolve.pinn._sampling import R3, RARD, halton, latin_hypercube, sobol, uniform

UNIT_SQUARE = Box([0.0, 0.0], [1.0, 1.0])


def _key(seed):
    # RBG keys: XLA compiles their random bits far faster than threefry's, and the suite's time
    # here is compile time.
    return jax.random.key(seed, impl="rbg")


def test_halton_first_points_are_the_radical_inverses():
    x = np.asarray(halton(UNIT_SQUARE, 8))
    np.testing.assert_allclose(x[:, 0], [1 / 2, 1 / 4, 3 / 4, 1 / 8, 5 / 8, 3 / 8, 7 / 8, 1 / 16])
    np.testing.assert_allclose(x[:, 1], [1 / 3, 2 / 3, 1 / 9, 4 / 9, 7 / 9, 2 / 9, 5 / 9, 8 / 9])
    # skip may be traced: one compiled program for every offset
    shifted = jax.jit(lambda s: halton(UNIT_SQUARE, 8, skip=s))(jnp.asarray(4))
    np.testing.assert_allclose(shifted[:4], x[3:7], atol=1e-7)
    # mapped into a box
    y = halton(Box([-1.0, 2.0], [1.0, 5.0]), 8)
    np.testing.assert_allclose(y, [-1.0, 2.0] + x * [2.0, 3.0], atol=1e-6)


def test_scrambled_halton_keeps_one_point_per_elementary_interval():
    # Digit permutations map each block of b^m consecutive indices onto one point per interval
    # of length b^-m, as the plain sequence does.
    x = np.asarray(halton(Box([0.0] * 3, [1.0] * 3), 25, skip=0, key=_key(3)))
    assert np.all((x >= 0) & (x < 1))
    assert sorted(np.floor(8 * x[:8, 0]).astype(int)) == list(range(8))
    assert sorted(np.floor(9 * x[:9, 1]).astype(int)) == list(range(9))
    assert sorted(np.floor(25 * x[:25, 2]).astype(int)) == list(range(25))
    plain = np.asarray(halton(Box([0.0] * 3, [1.0] * 3), 25, skip=0))
    assert not np.allclose(x, plain)


def test_sobol_has_lower_discrepancy_than_uniform():
    n = 256
    s = np.asarray(sobol(UNIT_SQUARE, n))
    s_scrambled = np.asarray(sobol(UNIT_SQUARE, n, key=_key(0)))
    u = np.asarray(uniform(_key(0), UNIT_SQUARE, n))
    d_uniform = qmc.discrepancy(u)
    assert qmc.discrepancy(s) < d_uniform / 4
    assert qmc.discrepancy(s_scrambled) < d_uniform / 4
    np.testing.assert_allclose(s[:4], [[0, 0], [0.5, 0.5], [0.75, 0.25], [0.25, 0.75]])
    h = np.asarray(halton(UNIT_SQUARE, n))
    assert qmc.discrepancy(h) < d_uniform / 4


def test_latin_hypercube_one_point_per_stratum():
    n = 16
    box = Box([0.0, -2.0, 1.0], [1.0, 2.0, 1.5])
    x = np.asarray(latin_hypercube(_key(0), box, n))
    u = (x - np.asarray(box.lower)) / np.asarray(box.upper - box.lower)
    strata = np.sort(np.floor(n * u).astype(int), axis=0)
    np.testing.assert_array_equal(strata, np.tile(np.arange(n)[:, None], (1, 3)))


@pytest.mark.slow  # ~1 s of compiles
def test_non_box_geometries_map_or_reject():
    disk = Disk([0.0, 0.0], 1.0)  # exact (r, theta) map: every point used
    for x in (halton(disk, 64), latin_hypercube(_key(0), disk, 64)):
        assert x.shape == (64, 2) and np.all(np.linalg.norm(x, axis=-1) <= 1 + 1e-6)
    # A signed-distance domain: rejection from the bounding box, keeping the sequence order, so
    # the points are the inside points of the bounding box's sequence.
    sdf = SignedDistance(lambda p: jnp.linalg.norm(p) - 0.5, ([-1.0, -1.0], [1.0, 1.0]))
    box_points = np.asarray(halton(Box([-1.0, -1.0], [1.0, 1.0]), 64))
    inside = box_points[np.linalg.norm(box_points, axis=-1) <= 0.5]
    np.testing.assert_allclose(halton(sdf, 8), inside[:8], atol=1e-6)
    x = np.asarray(sobol(sdf, 8))
    assert np.all(np.linalg.norm(x, axis=-1) <= 0.5)
    # space-time: time is coordinate 0, mapped from the first coordinate of the cube
    st = SpaceTime(disk, 0.0, 2.0)
    np.testing.assert_allclose(halton(st, 8)[:, 0], 2 * halton(UNIT_SQUARE, 8)[:, 0], atol=1e-6)


def _sharp(points):
    return jnp.exp(-100 * points[:, 0] ** 2)


def test_rard_concentrates_points_where_the_residual_is_large():
    n = 400
    geometry = Interval(-1.0, 1.0)

    @jax.jit
    @jax.vmap  # a sweep over the traced uniform floor c: one compiled program
    def fraction(c):
        sampler = RARD(n, n_candidates=40 * n, c=c)
        state = sampler.init(_key(0), geometry)
        state = sampler.step(state, _sharp, _key(1))
        return jnp.mean(jnp.abs(state.points[:, 0]) < 0.2), state.points.shape[0]

    (near, near_uniform), sizes = fraction(jnp.array([1.0, 1e6]))
    assert np.all(sizes == n)
    # density r / mean(r) + c on [-1, 1]: the mass of |x| < 0.2 is
    # (int_{|x|<0.2} r / mean r + 0.4 c) / (2 + 2 c) with mean r = sqrt(pi) / 20.
    mean_r = math.sqrt(math.pi) / 20
    expected = (math.sqrt(math.pi) / 10 * math.erf(2.0) / mean_r + 0.4) / 4
    assert abs(float(near) - expected) < 0.08  # binomial sd 0.025, plus the finite pool
    assert float(near) > 2.5 * 0.2  # the uniform fraction is 0.2
    # a large floor c is uniform sampling
    assert abs(float(near_uniform) - 0.2) < 5 * math.sqrt(0.16 / n)


@pytest.mark.slow  # ~0.5 s of compiles
def test_rard_partial_replacement_keeps_the_worst_points():
    sampler = RARD(8, n_candidates=64, n_new=3)
    state = sampler.init(_key(0), Interval(-1.0, 1.0))
    new = eqx.filter_jit(sampler.step)(state, lambda p: p[:, 0] ** 2, _key(1))
    old = np.asarray(state.points[:, 0])
    worst = old[np.argsort(-(old**2))[:5]]
    np.testing.assert_array_equal(np.asarray(new.points[:5, 0]), worst)
    assert int(new.num_retained) == 5 and new.points.shape == (8, 1)


def test_r3_retains_exactly_the_high_residual_points():
    n = 64
    sampler = R3(n)
    geometry = Box([-1.0, -1.0], [1.0, 1.0])
    state = sampler.init(_key(0), geometry)
    residual = lambda p: p[:, 0] ** 2 + p[:, 1]
    new = sampler.step(state, residual, _key(1))
    r = np.abs(np.asarray(residual(state.points)))
    retain = r >= r.mean()
    old, pts = np.asarray(state.points), np.asarray(new.points)
    assert pts.shape == (n, 2) and int(new.num_retained) == retain.sum()
    np.testing.assert_array_equal(pts[retain], old[retain])
    assert not np.any(np.all(pts[~retain] == old[~retain], axis=-1))
    np.testing.assert_array_equal(
        pts[~retain], np.asarray(geometry.sample_interior(_key(1), n))[~retain]
    )


def test_causal_r3_gate_and_shift_rule():
    n = 64
    geometry = SpaceTime(Interval(0.0, 1.0), 0.0, 2.0)
    sampler = R3(n, causal=True, alpha=5.0, eta=0.1, epsilon=2.0, shift_init=-0.5)
    state = sampler.init(_key(0), geometry)
    residual = lambda p: 1.0 + p[:, 1]  # largest where the gate is closed
    new = sampler.step(state, residual, _key(1))
    t_hat = np.asarray(state.points[:, 0]) / 2.0
    gate = 0.5 * (1 - np.tanh(5.0 * (t_hat + 0.5)))
    np.testing.assert_allclose(sampler.gate(state, state.points), gate, rtol=1e-5, atol=1e-6)
    gated = gate * (1.0 + np.asarray(state.points[:, 1]))
    # the paper's rule: the mean squared gated residual, the increment clipped at 0.1
    increment = min(np.exp(-2.0 * (gated**2).mean()), 0.1)
    np.testing.assert_allclose(new.shift, -0.5 + 0.1 * increment, rtol=1e-5)
    unclipped = R3(n, causal=True, eta=0.1, epsilon=2.0, shift_init=-0.5, clip=1.0)
    np.testing.assert_allclose(
        unclipped.step(state, residual, _key(1)).shift,
        -0.5 + 0.1 * np.exp(-2.0 * (gated**2).mean()),
        rtol=1e-5,
    )
    np.testing.assert_allclose(sampler.point_weights(state), gate**2, rtol=1e-5, atol=1e-6)
    retain = gated >= gated.mean()
    np.testing.assert_array_equal(np.asarray(new.points)[retain], np.asarray(state.points)[retain])
    # retained points are early: the gate releases late times whatever their residual
    assert np.asarray(new.points)[retain, 0].max() < np.median(np.asarray(state.points[:, 0]))
    # the shift stops at shift_max
    capped = R3(n, causal=True, eta=100.0, shift_max=1.5)
    s = capped.step(capped.init(_key(0), geometry), residual, _key(1))
    assert float(s.shift) == 1.5


def test_step_jits_and_vmaps_with_traced_hyperparameters():
    geometry = SpaceTime(Interval(-1.0, 1.0), 0.0, 1.0)
    residual = lambda p: jnp.sin(3 * p[:, 1]) * p[:, 0]

    def run(eta, key):
        sampler = R3(32, causal=True, eta=eta)
        state = sampler.init(key, geometry)
        return sampler.step(state, residual, jax.random.fold_in(key, 1)).shift

    etas = jnp.array([0.0, 0.01, 0.02])
    keys = jax.random.split(_key(0), 3)
    shifts = jax.jit(jax.vmap(run))(etas, keys)
    assert float(shifts[0]) == -0.5 and float(shifts[2]) > float(shifts[1]) > -0.5


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_new"):
        RARD(4, n_new=5)
    with pytest.raises(ValueError, match="c must be non-negative"):
        RARD(4, c=-1.0)
    with pytest.raises(TypeError, match="geometry"):
        halton("box", 4)
    with pytest.raises(ValueError, match="n must be"):
        latin_hypercube(_key(0), UNIT_SQUARE, 0)
    with pytest.raises(ValueError, match="one residual per point"):
        R3(4).step(R3(4).init(_key(0), UNIT_SQUARE), lambda p: p[:2, 0], _key(1))
