"""Decoupled MeanFlow: a flow network cut into encoder (time t) and decoder (time r).

Closed forms for Gaussian data N(m, C) -> noise N(0, I) on the linear path (see test_meanflow.py):
with C = Q diag(lam) Q^T and sd_s = sqrt((1-s)^2 lam + s^2), the exact average velocity is
    u(z, r, t) = -m + Q diag(k) Q^T (z - (1-t) m),  k = ((t + r) - lam (2 - t - r)) / ((sd_t + sd_r) sd_t),
and the flow map from t = 1 to r = 0 sends noise e to m + C^(1/2) e. The exact u splits as a
decoupled model: the encoder keeps the centred coordinates Q^T (z - (1-t) m) and t, the decoder
applies the gain k(r, t).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import train
from jaxsolve.diffusion import FlowSchedule, NoiseMLP, flow_matching_loss, sample
from jaxsolve.diffusion.fewstep import (
    DecoupledFlowMap,
    MeanFlowSolver,
    decoupled_meanflow_loss,
    decoupled_noise_mlp,
    meanflow_denoiser,
    meanflow_loss,
    meanflow_sample,
    meanflow_target,
)

MEAN = np.array([0.5, -1.0])
COV = np.array([[1.5, 0.6], [0.6, 0.8]])


class _ExactGain(eqx.Module):
    """Encoder or decoder half of the exact average velocity of N(mean, cov) -> N(0, I)."""

    lam: jax.Array
    q: jax.Array
    m: jax.Array
    decode: bool = eqx.field(static=True)

    def _sd(self, s):
        return jnp.sqrt((1.0 - s) ** 2 * self.lam + s**2)

    def __call__(self, h, e):
        if not self.decode:  # h = z, e = t: keep the centred coordinates and t
            return (h - (1.0 - e) * self.m) @ self.q, e
        (y, t), r = h, e
        k = ((t + r) - self.lam * (2.0 - t - r)) / ((self._sd(t) + self._sd(r)) * self._sd(t))
        return -self.m + self.q @ (k * y)


def _identity(c):
    return c


def _exact_decoupled(cov=COV, mean=MEAN):
    """The exact average velocity of N(mean, cov) -> N(0, I) as a DecoupledFlowMap."""
    lam, q = np.linalg.eigh(cov)
    lam, q, m = jnp.asarray(lam), jnp.asarray(q), jnp.asarray(mean)
    return DecoupledFlowMap(_identity, _ExactGain(lam, q, m, False), _ExactGain(lam, q, m, True))


def _endpoint(noise):
    lam, q = np.linalg.eigh(COV)
    return MEAN + noise @ (q @ np.diag(np.sqrt(lam)) @ q.T)


def _points(seed, n, equal=0):
    # NumPy draws: no random-number programs to compile. The first `equal` pairs have r = t.
    rng = np.random.default_rng(seed)
    z = 1.5 * rng.standard_normal((n, 2))
    a, b = rng.uniform(size=n), rng.uniform(size=n)
    r, t = np.minimum(a, b), np.maximum(a, b)
    r[:equal] = t[:equal]
    return jnp.asarray(z), jnp.asarray(r), jnp.asarray(t)


def _net_shape(depth=3):
    # Only the structure, without running the initialisers (each compiles eagerly).
    return eqx.filter_eval_shape(
        NoiseMLP, 2, width=16, depth=depth, embed_dim=8, key=jax.random.key(0)
    )


def _net(seed=0):
    """A NoiseMLP with NumPy-drawn weights (no initialiser programs to compile)."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(0.7 * rng.standard_normal(s.shape)), _net_shape())


def test_boundary_is_the_flow_model_and_init_decodes_with_r(x64):
    # u(z, t, t) is the wrapped network itself; at r != t (before any fine-tuning) it is the same
    # network with its blocks from encoder_depth on fed the embedding of r.
    z, r, t = _points(0, 16)
    net = _net()

    def by_hand(net, x, r_, t_, k):
        e_t = jax.nn.silu(net.embed_proj(net.embed(t_)))
        e_r = jax.nn.silu(net.embed_proj(net.embed(r_)))
        h = x
        for i, (layer, cond) in enumerate(zip(net.layers, net.cond_layers, strict=True)):
            h = jax.nn.silu(layer(h) + cond(e_t if i < k else e_r))
        return net.out(h)

    @jax.jit
    def run(z, r, t):
        model = decoupled_noise_mlp(net, 1)
        hand = jax.vmap(lambda x, r_, t_: by_hand(net, x, r_, t_, 1))(z, r, t)
        return jax.vmap(net)(z, t), model.velocity(z, t), model(z, r, t), hand

    flow, v, u, hand = run(z, r, t)
    np.testing.assert_allclose(v, flow, rtol=0, atol=1e-14)
    np.testing.assert_allclose(u, hand, rtol=0, atol=1e-14)
    # The decoder reads r: the converted model is not the velocity at r != t.
    assert float(jnp.max(jnp.abs(u - flow))) > 1e-3
    # Default split of a 3-block network: two encoder blocks (the paper's 20 of 28).
    assert len(decoupled_noise_mlp(net).encoder.layers) == 2
    assert len(decoupled_noise_mlp(net).decoder.layers) == 1


def test_meanflow_machinery_runs_on_a_decoupled_model(x64):
    exact, wrong = _exact_decoupled(), _exact_decoupled(cov=COV * 1.2)
    z, r, t = _points(1, 64, equal=8)  # include r = t
    rng = np.random.default_rng(2)
    x0 = jnp.asarray(MEAN + rng.standard_normal((256, 2)) @ np.linalg.cholesky(COV).T)
    noise = jnp.asarray(rng.standard_normal((512, 2)))

    @eqx.filter_jit
    def run(model, teacher, key):
        # One program for both models (same structure, other arrays).
        u, u_tgt = meanflow_target(model, z, r, t, teacher.velocity(z, t))
        loss = decoupled_meanflow_loss(model, x0, key, velocity=teacher.velocity)
        return jnp.max(jnp.abs(u - u_tgt)), loss, meanflow_sample(model, noise)

    key = jax.random.key(3)
    residual, loss, one = run(exact, exact, key)
    residual_w, loss_w, _ = run(wrong, exact, key)
    # The MeanFlow identity u = v - (t - r) du/dt holds through the encoder/decoder split (jvp
    # through the vmapped halves), and fails for another flow's average velocity.
    assert float(residual) < 1e-10
    assert float(residual_w) > 1e-2
    # The loss reaches its minimum log c at the exact average velocity only.
    assert abs(float(loss) - np.log(0.01)) < 1e-12
    assert float(loss_w) > np.log(0.01) + 0.1
    # One jump is the exact flow map m + C^(1/2) e.
    np.testing.assert_allclose(one, _endpoint(noise), rtol=0, atol=1e-12)


@pytest.mark.slow
def test_solver_and_loss_of_meanflow_take_a_decoupled_model(x64):
    # MeanFlowSolver takes the decoupled model as its average velocity unchanged: from the exact
    # state at t_max every grid lands on m + C^(1/2) e, one evaluation per jump.
    exact = _exact_decoupled()
    schedule = FlowSchedule(t_min=1e-3, t_max=0.999)
    noise = jnp.asarray(np.random.default_rng(4).standard_normal((64, 2)))
    t_max = 0.999
    # The exact state at t_max on the noise's trajectory: z = z_1 - (1 - t_max) u(z_1, t_max, 1).
    z = noise - (1.0 - t_max) * exact(noise, t_max, 1.0)
    denoiser = meanflow_denoiser(exact, schedule)
    solver = MeanFlowSolver(exact, schedule)
    for times in [(t_max, 0.0), (t_max, 0.5, 0.0)]:
        sigmas = jnp.asarray([schedule.to_ve_sigma(s) for s in times[:-1]] + [0.0])
        out = sample(denoiser, z / (1.0 - t_max), sigmas, solver, full_output=True)
        np.testing.assert_allclose(out.value, _endpoint(noise), rtol=0, atol=1e-10)
        assert int(out.nfe) == len(times) - 1
    # MeanFlow's own loss takes it unchanged too: zero at the exact average velocity.
    x0 = jnp.asarray(_endpoint(np.random.default_rng(5).standard_normal((256, 2))))
    loss = meanflow_loss(
        exact, x0, jax.random.key(6), velocity=exact.velocity, fraction_distinct=1.0
    )
    assert float(loss) < 1e-20


def test_rejects_bad_input():
    net = _net_shape()
    with pytest.raises(ValueError, match="encoder_depth"):
        decoupled_noise_mlp(net, 0)
    with pytest.raises(ValueError, match="encoder_depth"):
        decoupled_noise_mlp(net, 3)
    with pytest.raises(ValueError, match="net"):
        decoupled_noise_mlp(_net_shape(depth=1))
    x0 = jnp.zeros((4, 2))
    with pytest.raises(ValueError, match="c"):
        decoupled_meanflow_loss(net, x0, jax.random.key(0), c=0.0)
    with pytest.raises(ValueError, match="time_means"):
        decoupled_meanflow_loss(net, x0, jax.random.key(0), time_means=(0.0,))


@pytest.mark.wrong_argument_types
def test_rejects_wrong_types():
    net = _net_shape()
    with pytest.raises(TypeError, match="encoder_depth"):
        decoupled_noise_mlp(net, 1.5)
    with pytest.raises(TypeError, match="net"):
        decoupled_noise_mlp(lambda x, t: x)
    with pytest.raises(ValueError, match="noise"):
        decoupled_meanflow_loss(net, jnp.zeros((4, 2)), jax.random.key(0), noise=jnp.zeros((3, 2)))


def _one_step_error(u_fn, noise):
    """RMS distance of the one-jump sample from the exact endpoint m + C^(1/2) e."""
    x = meanflow_sample(u_fn, noise)
    return float(jnp.sqrt(jnp.mean(jnp.sum((x - _endpoint(noise)) ** 2, axis=1))))


@pytest.mark.slow
def test_fine_tuning_a_pretrained_flow_model_lowers_the_one_step_error():
    # Pretrain a flow model by flow matching, convert it, fine-tune it with the Decoupled MeanFlow
    # loss (the paper's recipe), and compare one-jump samples with the exact flow map.
    lam, q = np.linalg.eigh(COV)
    root = jnp.asarray(q @ np.diag(np.sqrt(lam)) @ q.T)

    def data(key):
        return jnp.asarray(MEAN) + jax.random.normal(key, (256, 2)) @ root

    def fit(loss, model, steps, lr, seed):
        return train.fit(
            loss,
            model,
            data,
            optimizer=optax.adam(optax.cosine_decay_schedule(lr, steps, 0.1)),
            num_steps=steps,
            key=jax.random.key(seed),
            progress=False,
        ).model

    net = NoiseMLP(2, width=64, depth=3, key=jax.random.key(20))
    flow_loss = lambda n, x, k: flow_matching_loss(
        lambda z, t: jax.vmap(n)(z, t), x, k, times="logit_normal"
    )
    pretrained = fit(flow_loss, net, 2000, 3e-3, 21)
    converted = decoupled_noise_mlp(pretrained)
    tuned = fit(decoupled_meanflow_loss, converted, 2000, 1e-3, 22)

    noise = jax.random.normal(jax.random.key(23), (4096, 2))
    euler = _one_step_error(
        lambda z, r, t: converted.velocity(z, t), noise
    )  # flow model, 1 Euler step
    before = _one_step_error(converted, noise)
    after = _one_step_error(tuned, noise)
    # Two jumps of the fine-tuned model on the sample driver, from generate's start sigma_0 e at
    # t_max (the data term of z_{t_max} dropped), against the exact flow map from that state.
    schedule = FlowSchedule(t_min=1e-3, t_max=0.999)
    sigmas = jnp.asarray([schedule.to_ve_sigma(0.999), schedule.to_ve_sigma(0.5), 0.0])
    x_start = schedule.to_ve_sigma(0.999) * noise
    two = sample(
        meanflow_denoiser(tuned, schedule), x_start, sigmas, MeanFlowSolver(tuned, schedule)
    )
    z_start = 0.999 * noise
    expected = z_start - 0.999 * _exact_decoupled()(z_start, 0.0, 0.999)
    two_step = float(jnp.sqrt(jnp.mean(jnp.sum((two - expected) ** 2, axis=1))))
    print(
        f"RMS error: one step Euler {euler:.4f}, converted {before:.4f}, fine-tuned {after:.4f};"
        f" two driver steps fine-tuned {two_step:.4f}"
    )
    assert after < 0.5 * min(euler, before), (euler, before, after)
    assert two_step < 0.5 * min(euler, before), two_step
    # Fine-tuning keeps the boundary: u(z, t, t) of the tuned model is still a flow model, close
    # to the pretrained one where both were trained.
    z = jax.random.normal(jax.random.key(24), (512, 2))
    t = jnp.full((512,), 0.5)
    drift = jnp.sqrt(jnp.mean((tuned.velocity(z, t) - converted.velocity(z, t)) ** 2))
    print(f"velocity drift at t = 0.5: {float(drift):.4f}")
    assert float(drift) < 0.2, float(drift)
    # Still one network: the same leaves as the pretrained flow model.
    assert len(jax.tree.leaves(eqx.filter(tuned, eqx.is_array))) == len(
        jax.tree.leaves(eqx.filter(pretrained, eqx.is_array))
    )
