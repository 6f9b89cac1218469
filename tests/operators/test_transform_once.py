"""Transform Once (T1): one transform each way, variance-preserving start, resolution invariance."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import operators as ops

from ._helpers import apply, trig_interpolant


def _fft_eqns(jaxpr):
    """All ``fft`` equations of a jaxpr, including those inside nested (jitted) sub-jaxprs."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "fft":
            found.append(eqn)
        for p in eqn.params.values():
            for sub in p if isinstance(p, (tuple, list)) else (p,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += _fft_eqns(inner)
    return found


@pytest.mark.parametrize("transform", ["rfft", "dct"])
@pytest.mark.parametrize("d", [1, 2])
def test_exactly_one_forward_and_one_inverse_transform(transform, d):
    shape = (16,) * d
    model = ops.T1(
        d,
        2,
        1,
        width=4,
        modes=4,
        grid_shape=shape,
        n_layers=5,
        transform=transform,
        key=jax.random.PRNGKey(0),
    )
    eqns = _fft_eqns(jax.make_jaxpr(model)(jnp.zeros((2, *shape))).jaxpr)
    kinds = sorted(jax.lax.FftType(e.params["fft_type"]).name for e in eqns)
    assert kinds == ["IRFFT", "RFFT"]
    # For comparison, an FNO with as many layers transforms once per layer and direction.
    fno = ops.FNO(d, 2, 1, width=4, modes=4, n_layers=5, key=jax.random.PRNGKey(0), transform="fft")
    assert len(_fft_eqns(jax.make_jaxpr(fno)(jnp.zeros((2, *shape))).jaxpr)) == 10


@pytest.mark.parametrize(("transform", "d", "n", "m"), [("dct", 1, 96, 8), ("rfft", 1, 96, 8)])
def test_variance_preserving_initialisation(transform, d, n, m):
    # White noise in, output variance over input variance, averaged over 32 random models:
    # about one with the paper's rule, about K_eff / N (the collapse it corrects) without it.
    shape = (n,) * d
    k_eff = m**d if transform == "dct" else (2 * m) ** (d - 1) * (2 * (m - 1) + 0.5)

    def ratios(seed):
        key = jax.random.PRNGKey(seed)
        x = jax.random.normal(jax.random.fold_in(key, 1), (4, 1, *shape))
        out = []
        for init in ("vp", "standard"):
            model = ops.T1(
                d,
                1,
                1,
                width=16,
                modes=m,
                grid_shape=shape,
                n_layers=3,
                key=key,
                transform=transform,
                init=init,
                activation=lambda z: z,
            )
            out.append(jnp.mean(jax.vmap(model)(x) ** 2) / jnp.mean(x**2))
        return jnp.stack(out)

    vp, std = np.mean(np.asarray(jax.jit(jax.vmap(ratios))(jnp.arange(32))), axis=0)
    assert 0.75 < vp < 1.33
    expected = k_eff / n**d
    assert 0.6 * expected < std < 1.6 * expected


def _linear(model):
    def zero(path, leaf):
        return jnp.zeros_like(leaf) if "bias" in "".join(str(p) for p in path) else leaf

    return jax.tree_util.tree_map_with_path(zero, model)


def test_rfft_t1_is_resolution_invariant(x64):
    # With identity activation and no biases T1 is a linear, band-limited operator: a band-limited
    # input gives the same trigonometric polynomial on N, 2N and an odd grid.
    model = _linear(
        ops.T1(
            1,
            1,
            2,
            width=4,
            modes=5,
            grid_shape=16,
            n_layers=3,
            key=jax.random.PRNGKey(3),
            activation=lambda z: z,
        )
    )
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=5), rng.normal(size=5)

    def sample(n):
        x = np.arange(n) / n
        k = np.arange(5)[:, None]
        return (a @ np.cos(2 * np.pi * k * x) + b @ np.sin(2 * np.pi * k * x))[None]

    outs = {n: np.asarray(apply(model, sample(n))) for n in (16, 32, 19)}
    np.testing.assert_allclose(outs[32][:, ::2], outs[16], atol=1e-12)
    np.testing.assert_allclose(trig_interpolant(outs[16], np.arange(19) / 19), outs[19], atol=1e-12)


def test_dct_t1_is_resolution_invariant(x64):
    # Cosine-band-limited input on cell centres: outputs on N, 2N and an odd grid are samples of
    # one cosine series (compare the amplitudes).
    model = _linear(
        ops.T1(
            1,
            2,
            1,
            width=3,
            modes=5,
            grid_shape=8,
            n_layers=2,
            transform="dct",
            key=jax.random.PRNGKey(4),
            activation=lambda z: z,
        )
    )
    amp = np.random.default_rng(1).normal(size=(2, 5))
    outs = {n: apply(model, ops.idct_modes(amp, (n,))) for n in (8, 16, 11)}
    ref = ops.dct_modes(outs[8], 5)
    for n, out in outs.items():
        np.testing.assert_allclose(ops.dct_modes(out, 5), ref, atol=1e-12)
        np.testing.assert_allclose(out, ops.idct_modes(ref, (n,)), atol=1e-12)


def test_trains_and_errors():
    model = ops.T1(1, 1, 1, width=4, modes=6, grid_shape=32, key=jax.random.PRNGKey(0))
    grad = eqx.filter_jit(eqx.filter_grad(lambda m: jnp.sum(m(jnp.ones((1, 32))) ** 2)))(model)
    leaves = jax.tree_util.tree_leaves(eqx.filter(grad, eqx.is_inexact_array))
    assert leaves
    chex.assert_tree_all_finite(leaves)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in leaves)
    with pytest.raises(ValueError, match=r"batch of 3 samples.*jax\.vmap"):
        model(jnp.zeros((3, 1, 32)))
    with pytest.raises(ValueError, match=r"modes\[0\]=6.*at least 11 points.*has 8"):
        model(jnp.zeros((1, 8)))
    with pytest.raises(ValueError, match="transform"):
        ops.T1(
            1, 1, 1, width=4, modes=6, grid_shape=32, key=jax.random.PRNGKey(0), transform="wavelet"
        )
    with pytest.raises(ValueError, match=r"modes\[0\]=40 cosine modes need at least 40 points"):
        ops.T1(
            1, 1, 1, width=4, modes=40, grid_shape=32, key=jax.random.PRNGKey(0), transform="dct"
        )
