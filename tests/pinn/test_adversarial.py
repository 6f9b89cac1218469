import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxsolve._core import RESULTS
from jaxsolve.pinn._adversarial import AdversarialSampler, FlowSamplerAux
from jaxsolve.pinn._geometry import Box, Disk, Interval
from jaxsolve.pinn._sampling import SamplerState


def _key(seed):
    return jax.random.key(seed, impl="rbg")


WIDTH = 0.1  # residual exp(-(x - 1/2)^2 / (2 w^2)): p ~ r^2 is N(1/2, w^2 / 2) on [0, 1]


def _bump(x):
    return jnp.exp(-((x[:, 0] - 0.5) ** 2) / (2 * WIDTH**2))


def test_target_weights_closed_form_and_bad_arguments():
    s = AdversarialSampler(4, k=2.0, c=0.5)
    r = jnp.asarray([0.0, 1.0, 2.0, 3.0])
    # |r|^2 / mean |r|^2 + c, mean |r|^2 = 14 / 4
    np.testing.assert_allclose(s.weights(r), np.array([0, 1, 4, 9]) / 3.5 + 0.5, rtol=1e-6)
    assert s.n_candidates == 32 and s.batch == 32
    for kwargs, err, match in [
        (dict(n=0), ValueError, "n"),
        (dict(n=4, n_candidates=1), ValueError, "n_candidates"),
        (dict(n=4, batch=0), ValueError, "batch"),
        (dict(n=4, train_steps=-1), ValueError, "train_steps"),
        (dict(n=4, sample_steps=0), ValueError, "sample_steps"),
        (dict(n=4, embed_dim=3), ValueError, "embed_dim"),
        (dict(n=4, learning_rate=0.0), ValueError, "learning_rate"),
        (dict(n=4, k=-1.0), ValueError, "k"),
        (dict(n=4, c=-1.0), ValueError, "c"),
    ]:
        n = kwargs.pop("n")
        with pytest.raises(err, match=match):
            AdversarialSampler(n, **kwargs)
    # a state that is not the sampler's own
    g = Interval(0.0, 1.0)
    foreign = SamplerState(jnp.zeros((4, 1)), g, jnp.zeros(()), jnp.zeros((), jnp.int32))
    with pytest.raises(TypeError, match=r"AdversarialSampler\.init"):
        s.step(foreign, _bump, _key(0))


@pytest.mark.wrong_argument_types
def test_wrong_argument_types_raise():
    with pytest.raises(TypeError, match="n"):
        AdversarialSampler(2.5)
    with pytest.raises(TypeError, match="geometry"):
        AdversarialSampler(4).init(_key(0), "unit interval")


@pytest.mark.slow
def test_points_follow_residual_squared_density():
    # After a few steps the flow's points have the law p ~ r^2 = N(1/2, w^2/2) truncated to
    # [0, 1] (truncation at 7 standard deviations). The Kolmogorov-Smirnov distance of 2000
    # points to the closed-form CDF: sampling alone gives 0.030 at the 5% level; the generator
    # (100 Adam steps per call on minibatches of 1024 resampled pool points) adds its fit error,
    # 0.014-0.062 over ten calls of this configuration. Uniform points are at 0.34.
    sd = WIDTH / np.sqrt(2)
    target = stats.truncnorm(-0.5 / sd, 0.5 / sd, loc=0.5, scale=sd)
    sampler = AdversarialSampler(2000, width=64, depth=2)
    state = sampler.init(_key(0), Interval(0.0, 1.0))
    step = jax.jit(lambda s, k: sampler.step(s, _bump, k))
    for i in range(4):
        state = step(state, _key(i + 1))
    x = np.asarray(state.points[:, 0])
    assert state.result == RESULTS.successful
    assert np.all((x >= 0) & (x <= 1))
    assert stats.kstest(x, target.cdf).statistic < 0.08
    assert abs(x.mean() - 0.5) < 0.02  # 0.28 sd
    assert 0.85 < x.std() / sd < 1.15
    assert int(state.aux.accepted) == 2000  # the bump lies well inside: no point replaced
    assert (
        stats.kstest(
            np.asarray(sampler.init(_key(9), Interval(0.0, 1.0)).points[:, 0]), target.cdf
        ).statistic
        > 0.3
    )


@pytest.mark.slow
def test_inside_geometry_determinism_nonfinite_and_cond():
    # A disk with the bump at its edge: the flow puts some points outside; they are replaced by
    # pool points, so every point lies in the disk. A tiny generator keeps the compile short.
    disk = Disk([0.0, 0.0], 1.0)
    sampler = AdversarialSampler(
        256, train_steps=5, sample_steps=4, width=16, depth=1, embed_dim=4, batch=128
    )

    def residual(scale):
        return lambda x: scale * jnp.exp(-jnp.sum((x - jnp.asarray([0.9, 0.0])) ** 2, -1) / 0.02)

    @jax.jit
    def run(state, scale, key, go):
        stepped = sampler.step(state, residual(scale), key)
        # as a training loop does it: under lax.cond, the state a pytree of arrays
        dynamic, static = eqx.partition(state, eqx.is_array)

        def branch(d):
            return eqx.partition(
                sampler.step(eqx.combine(d, static), residual(scale), key), eqx.is_array
            )[0]

        conditioned = jax.lax.cond(go, branch, lambda d: d, dynamic)
        return stepped, eqx.combine(conditioned, static)

    state = sampler.init(_key(0), disk)
    assert isinstance(state.aux, FlowSamplerAux)
    one = jnp.asarray(1.0, state.points.dtype)
    a, a_cond = run(state, one, _key(1), True)
    b, _ = run(state, one, _key(1), False)
    c, _ = run(state, one, _key(2), True)
    assert a.result == RESULTS.successful
    assert bool(jnp.all(disk.contains(a.points)))
    assert 0 < int(a.aux.accepted) <= 256
    np.testing.assert_array_equal(a.points, b.points)  # determinism in the key
    np.testing.assert_array_equal(a.points, a_cond.points)  # same step under lax.cond
    assert not np.array_equal(a.points, c.points)
    # the generator moved
    p0, p1 = jax.tree_util.tree_leaves(state.aux.params), jax.tree_util.tree_leaves(a.aux.params)
    assert any(not np.array_equal(u, v) for u, v in zip(p0, p1, strict=True))
    # a NaN residual: RESULTS.nonfinite, old points and old generator kept
    bad, _ = run(a, jnp.asarray(jnp.nan, one.dtype), _key(3), False)
    assert bad.result == RESULTS.nonfinite
    np.testing.assert_array_equal(bad.points, a.points)
    for u, v in zip(
        jax.tree_util.tree_leaves(a.aux), jax.tree_util.tree_leaves(bad.aux), strict=True
    ):
        np.testing.assert_array_equal(u, v)
    # it stays set
    again, _ = run(bad, one, _key(4), False)
    assert again.result == RESULTS.nonfinite


@pytest.mark.slow
def test_box_points_in_bounds_with_uniform_mixture():
    # c = 1: half the target mass is uniform; the flow's points stay in the box after clipping
    # to the geometry (outside ones replaced), and generate() maps back to domain coordinates.
    box = Box([-1.0, 2.0], [1.0, 4.0])
    sampler = AdversarialSampler(
        128, train_steps=3, sample_steps=2, width=8, depth=1, embed_dim=4, c=1.0
    )
    state = sampler.init(_key(5), box)
    state = jax.jit(lambda s, k: sampler.step(s, lambda x: x[:, 0] ** 2, k))(state, _key(6))
    lo, hi = box.bounds
    assert bool(jnp.all((state.points >= lo) & (state.points <= hi)))
    assert state.points.shape == (128, 2) and int(state.num_retained) == 0
    g = sampler.generate(state, _key(7), 10)
    assert g.shape == (10, 2) and bool(jnp.all(jnp.isfinite(g)))
