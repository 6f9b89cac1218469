"""FNO / TFNO: parameter counts, domain padding and super-resolution, a heat-semigroup fit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import operators as ops

from ._helpers import apply


def _fno_count(d, cin, cout, width, modes, n_layers, *, mlp_ratio=None, embed=True):
    """Closed-form parameter count of the default FNO configuration."""
    lift_in = cin + (d if embed else 0)
    lift = (lift_in * 2 * width + 2 * width) + (2 * width * width + width)
    proj = (width * 2 * width + 2 * width) + (2 * width * cout + cout)
    mode_count = int(np.prod([2 * m for m in modes[:-1]])) * modes[-1]
    block = 2 * width * width * mode_count + width + width * width  # spectral + bias + linear skip
    if mlp_ratio is not None:
        h = round(width * mlp_ratio)
        block += (width * h + h) + (h * width + width) + width  # channel MLP + soft gating
    return lift + proj + n_layers * block


def test_parameter_counts_match_the_formula():
    key = jax.random.PRNGKey(0)
    m1 = ops.FNO(1, 1, 1, width=8, modes=5, n_layers=3, key=key)
    assert ops.count_params(m1) == _fno_count(1, 1, 1, 8, (5,), 3)
    m2 = ops.FNO(2, 3, 2, width=6, modes=(3, 4), n_layers=2, key=key, channel_mlp_expansion=0.5)
    assert ops.count_params(m2) == _fno_count(2, 3, 2, 6, (3, 4), 2, mlp_ratio=0.5)
    m3 = ops.FNO(2, 3, 2, width=6, modes=(3, 4), n_layers=2, key=key, positional_embedding=False)
    assert ops.count_params(m3) == _fno_count(2, 3, 2, 6, (3, 4), 2, embed=False)
    # TFNO: the dense spectral weights are replaced by Tucker factors.
    t = ops.TFNO(2, 3, 2, width=6, modes=(3, 4), n_layers=2, key=key, rank=(2, 3, 4, 2))
    dense_spec = 2 * 6 * 6 * 6 * 4
    tucker_spec = 2 * (2 * 3 * 4 * 2 + 6 * 2 + 6 * 3 + 6 * 4 + 4 * 2)
    assert ops.count_params(t) == _fno_count(2, 3, 2, 6, (3, 4), 2) - 2 * (dense_spec - tucker_spec)
    assert isinstance(t, ops.FNO) and t.blocks[0].conv.factorization == "tucker"


@pytest.mark.slow
def test_same_network_as_neuraloperator():
    # neuraloperator's default FNO with n_modes = (2m, ..., 2m - 2) is our FNO with
    # channel_mlp_expansion=0.5 and exact GELU: equal parameter counts, and with its weights
    # copied into ours (benchmarks/bench_operators.py's transplant) the same outputs.
    pytest.importorskip("neuralop")
    import importlib.util
    import os
    from functools import partial

    import torch
    from neuralop.models import FNO as NeuralopFNO
    from neuralop.utils import count_model_params

    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "bench_operators.py")
    spec = importlib.util.spec_from_file_location("bench_operators", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    torch.manual_seed(0)
    for d, m, s in [(1, 6, 40), (2, 4, 16)]:
        ref = NeuralopFNO(
            n_modes=bench.neuralop_n_modes(d, m),
            in_channels=2,
            out_channels=3,
            hidden_channels=8,
            n_layers=3,
        )
        ours = ops.FNO(
            d,
            2,
            3,
            width=8,
            modes=m,
            n_layers=3,
            key=jax.random.PRNGKey(0),
            channel_mlp_expansion=0.5,
            activation=partial(jax.nn.gelu, approximate=False),
        )
        assert ops.count_params(ours) == count_model_params(ref)
        ours = bench.transplant(ref, ours)
        x = np.random.default_rng(0).normal(size=(4, 2) + (s,) * d).astype(np.float32)
        with torch.no_grad():
            expected = ref(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(jax.vmap(ours)(jnp.asarray(x)), expected, rtol=1e-4, atol=1e-5)


def _linear_unbiased(model):
    """Zero every bias of a model (so that with identity activations it is a linear operator)."""

    def zero(path, leaf):
        names = "".join(str(p) for p in path)
        return jnp.zeros_like(leaf) if "bias" in names else leaf

    return jax.tree_util.tree_map_with_path(zero, model)


@pytest.mark.parametrize("mode", ["symmetric", "one-sided"])
def test_domain_padding_keeps_super_resolution_exact(x64, mode):
    # A linear FNO (identity activation, no biases, no grid channel) on a smooth bump that vanishes
    # near the boundary: the padded field is smooth and periodic on the padded box, so the output
    # at 2N sampled on the N-grid equals the output at N, because the padding is exactly f*N cells
    # at both resolutions (the padded period is the same physical length).
    model = ops.FNO(
        1,
        1,
        1,
        width=6,
        modes=8,
        n_layers=2,
        key=jax.random.PRNGKey(1),
        activation=lambda v: v,
        positional_embedding=False,
        lifting_channels=0,
        projection_channels=0,
        domain_padding=0.25,
        padding_mode=mode,
    )
    model = _linear_unbiased(model)

    def bump(n):
        x = np.arange(n) / n
        return np.exp(-((x - 0.5) ** 2) / (2 * 0.06**2))[None]

    coarse, fine = apply(model, bump(40)), apply(model, bump(80))
    assert coarse.shape == (1, 40) and fine.shape == (1, 80)
    np.testing.assert_allclose(fine[:, ::2], coarse, atol=1e-10)
    assert float(jnp.max(jnp.abs(coarse))) > 1e-2  # the comparison is not between two zeros
    assert ops.padding_cells((0.25,), (40,)) == (10,)


def test_domain_padding_rejects_fractional_cells():
    model = ops.FNO(
        1, 1, 1, width=4, modes=4, n_layers=1, key=jax.random.PRNGKey(0), domain_padding=0.1
    )
    with pytest.raises(ValueError, match=r"domain_padding=0\.1.*64 points.*6\.4 cells.*6/64"):
        apply(model, jnp.zeros((1, 64)))
    assert apply(model, jnp.zeros((1, 40))).shape == (1, 40)  # 4 cells: fine
    with pytest.raises(ValueError, match="padding_mode"):
        ops.FNO(1, 1, 1, width=4, modes=4, key=jax.random.PRNGKey(0), padding_mode="reflect")


def test_variants_run_and_differ():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 16))
    outs = {}
    for skip in ("linear", "identity", "soft-gating", None):
        m = ops.FNO(
            1,
            2,
            3,
            width=4,
            modes=3,
            n_layers=2,
            key=jax.random.PRNGKey(1),
            skip=skip,
            channel_mlp_expansion=0.5 if skip == "identity" else None,
        )
        outs[skip] = apply(m, x)
        assert outs[skip].shape == (3, 16) and bool(jnp.all(jnp.isfinite(outs[skip])))
    assert float(jnp.max(jnp.abs(outs["linear"] - outs[None]))) > 1e-3
    with pytest.raises(ValueError, match="skip"):
        ops.FNO(1, 1, 1, width=4, modes=4, key=jax.random.PRNGKey(0), skip="gated")


def test_bad_inputs():
    model = ops.FNO(2, 3, 1, width=4, modes=(4, 5), n_layers=1, key=jax.random.PRNGKey(0))
    with pytest.raises(
        ValueError, match=r"expects 3 input channels, shape \(in_channels=3, n1, n2\)"
    ):
        apply(model, jnp.zeros((1, 16, 16)))
    with pytest.raises(ValueError, match=r"batch of 5 samples.*jax\.vmap"):
        apply(model, jnp.zeros((5, 3, 16, 16)))
    with pytest.raises(ValueError, match=r"modes\[1\]=5.*at least 9 points.*has 8"):
        apply(model, jnp.zeros((3, 16, 8)))
    with pytest.raises(ValueError, match="width"):
        ops.FNO(1, 1, 1, width=0, modes=4, key=jax.random.PRNGKey(0))


def _heat_data(key, n_samples, n, k_max, nu_t):
    """Random band-limited initial data and its exact periodic heat-semigroup image."""
    ka, kb = jax.random.split(key)
    k = jnp.arange(1, k_max + 1)
    a = jax.random.normal(ka, (n_samples, k_max)) / k
    b = jax.random.normal(kb, (n_samples, k_max)) / k
    x = jnp.arange(n) / n
    cos, sin = jnp.cos(2 * jnp.pi * k[:, None] * x), jnp.sin(2 * jnp.pi * k[:, None] * x)
    decay = jnp.exp(-4 * jnp.pi**2 * k**2 * nu_t)
    return (a @ cos + b @ sin)[:, None], ((a * decay) @ cos + (b * decay) @ sin)[:, None]


def test_fno_fits_the_heat_semigroup():
    # e^{t Laplacian} on the periodic unit interval: a linear, diagonal-in-Fourier operator. A small
    # FNO (with its GELU nonlinearity) trained with Adam reaches < 1e-2 relative L2 on held-out data.
    n, k_max, nu_t = 64, 8, 0.002
    x_train, y_train = _heat_data(jax.random.PRNGKey(0), 128, n, k_max, nu_t)
    x_test, y_test = _heat_data(jax.random.PRNGKey(1), 64, n, k_max, nu_t)
    model = ops.FNO(1, 1, 1, width=16, modes=12, n_layers=2, key=jax.random.PRNGKey(2))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    steps = 300
    opt = optax.adam(optax.cosine_decay_schedule(4e-3, steps))

    def loss(p, x, y):
        m = eqx.combine(p, static)
        return jnp.mean(jax.vmap(ops.relative_lp_loss)(jax.vmap(m)(x), y))

    @jax.jit
    def train(p):
        def body(carry, _):
            p, s = carry
            val, g = jax.value_and_grad(loss)(p, x_train, y_train)
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), val

        (p, _), history = jax.lax.scan(body, (p, opt.init(p)), None, length=steps)
        return history, loss(p, x_test, y_test)

    history, test_error = train(params)
    assert float(history[0]) > 0.3  # it starts far away
    assert float(test_error) < 1e-2


def test_transform_implementations_agree(x64):
    # Matrix-product DFTs (channels-last), per-axis FFTs and one multi-dimensional FFT: the same
    # network function, on an odd grid with one-sided padding.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 15, 13))
    outs = []
    for transform in ("dft", "pruned-fft", "fft"):
        m = ops.FNO(
            2,
            2,
            1,
            width=5,
            modes=(4, 3),
            n_layers=2,
            key=jax.random.PRNGKey(1),
            transform=transform,
            domain_padding=(0.2, 0.0),
            padding_mode="one-sided",
        )
        outs.append(apply(m, x))
    np.testing.assert_allclose(outs[1], outs[0], atol=1e-11)
    np.testing.assert_allclose(outs[2], outs[0], atol=1e-11)


@pytest.mark.wrong_argument_types
def test_bad_hyper_parameters_name_the_argument():
    """Issue 17: FNO(domain_padding=nan) said "cannot convert float NaN to integer" (at call
    time); an infinite padding, a channel MLP of zero width or a negative lifting width failed
    deep inside. Each now raises when the model is built, naming the argument."""
    key = jax.random.PRNGKey(0)

    def fno(**kw):
        return ops.FNO(1, 1, 1, width=4, modes=2, n_layers=1, key=key, **kw)

    cases = [
        (dict(domain_padding=float("nan")), "domain_padding must be finite; got nan"),
        (dict(domain_padding=float("inf")), "domain_padding must be finite"),
        (dict(domain_padding=(0.25, -0.1)), None),  # wrong length for 1-D: one per axis
        (dict(domain_padding=-0.25), "domain_padding must be >= 0"),
        (dict(domain_padding="wide"), "domain_padding must be a number"),
        (dict(channel_mlp_expansion=0.1), r"round\(4 \* 0\.1\) = 0 hidden channels"),
        (dict(channel_mlp_expansion=float("nan")), "channel_mlp_expansion must be finite"),
        (dict(channel_mlp_expansion=-0.5), "channel_mlp_expansion must be > 0"),
        (dict(lifting_channels=-2), "lifting_channels must be >= 0; got -2"),
        (dict(projection_channels=1.5), "projection_channels"),
        (dict(factorization="cp", rank=float("inf")), "rank must be finite"),
        (dict(factorization="tucker", rank=(1.5, 1, 1)), "Tucker ranks must be ints"),
        (dict(factorization="tucker", rank=float("nan")), "rank must be finite"),
    ]
    for kw, message in cases:
        with pytest.raises((ValueError, TypeError), match=message or "one fraction per spatial"):
            fno(**kw)
    with pytest.raises(ValueError, match="hidden_channels must be >= 1; got 0"):
        ops.ChannelMLP(2, 2, 0, key=key)
    with pytest.raises(ValueError, match="lifting_channels must be >= 0; got -1"):
        ops.T1(1, 1, 1, width=4, modes=3, grid_shape=16, key=key, lifting_channels=-1)
    with pytest.raises(ValueError, match=r"modes entries must be positive ints; got \(0,\)"):
        ops.rfft_modes(jnp.ones((1, 16)), 0)  # used to return an empty block
    with pytest.raises(TypeError, match="modes must be an int or a tuple"):
        ops.dct_modes(jnp.ones((1, 16)), 2.5)  # used to truncate to 2
    with pytest.raises(ValueError, match="orders must be non-negative ints"):
        ops.spectral_derivative(jnp.ones((1, 16)), (1.5,))  # used to take one derivative
