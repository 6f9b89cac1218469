"""Causal weights and gradient-norm balancing: closed forms, no gradient through the weights,
weights as data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.pinn._problems import PINNProblem, Term
from jaxsolve.pinn._weighting import (
    CausalWeighting,
    causal_weights,
    chunk_means,
    grad_norm_weighting,
)


def test_causal_weights_closed_form_and_no_gradient(x64):
    losses = jnp.array([0.5, 1.0, 2.0, 0.25])

    @jax.jit
    def run(losses, eps):
        w = causal_weights(losses, eps)
        return w, jax.grad(lambda v: jnp.sum(causal_weights(v, eps) * v))(losses)

    w, g = run(losses, 2.0)
    np.testing.assert_allclose(w, np.exp(-2.0 * np.array([0.0, 0.5, 1.5, 3.5])), rtol=1e-15)
    np.testing.assert_allclose(g, w, rtol=1e-15)  # d/dL_i sum_k w_k L_k = w_i: w is a constant
    w0, _ = run(losses, 0.0)  # eps = 0 (traced, no recompile): the plain mean
    np.testing.assert_array_equal(w0, np.ones(4))


def test_chunk_means_and_binning(x64):
    causal = CausalWeighting(4, eps=1.0, t_min=0.0, t_max=2.0)
    # Times -> chunks of width 0.5; t_max and beyond go to the last, below t_min to the first.
    x = np.array([[0.1, 9.0], [0.6, 9.0], [0.7, 9.0], [1.9, 9.0], [2.0, 9.0], [-0.3, 9.0]])
    sq = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 3.0])

    @jax.jit
    def run(sq, x):
        other = chunk_means(jnp.array([1.0, 3.0, 5.0]), jnp.array([2, 2, 0]), 3)
        return causal.chunk_index(x), causal.chunk_losses(sq, x), causal(sq, x), other

    index, losses, loss, other = run(sq, x)
    np.testing.assert_array_equal(index, [0, 1, 1, 3, 3, 0])
    expected = np.array([2.0, 3.0, 0.0, 12.0])  # chunk 2 is empty: 0
    np.testing.assert_allclose(losses, expected, rtol=1e-15)
    w = np.exp(-np.array([0.0, 2.0, 5.0, 5.0]))
    np.testing.assert_allclose(loss, np.mean(w * expected), rtol=1e-14)
    np.testing.assert_allclose(other, [5.0, 0.0, 2.0])


def test_causal_loss_in_a_problem(x64):
    # Residual u(x) = t at points with times 0.25 and 0.75 (two chunks of [0, 1]).
    problem = PINNProblem((Term("pde", lambda u, x: u(x)), Term("bc", lambda u, x: u(x) - 1.0)))
    pts = {"pde": np.array([[0.25, 0.0], [0.75, 0.0]]), "bc": np.array([[0.5, 0.0]])}
    causal = CausalWeighting(2, eps=4.0)

    @jax.jit
    def run(eps):
        return problem.loss(lambda x: x[0], pts, causal=CausalWeighting(2, eps))

    total, losses = run(4.0)
    # Chunk losses 1/16 and 9/16; weights 1 and exp(-4/16).
    pde = 0.5 * (1 / 16 + np.exp(-0.25) * 9 / 16)
    np.testing.assert_allclose(losses["pde"], pde, rtol=1e-14)
    np.testing.assert_allclose(losses["bc"], 0.25, rtol=1e-14)
    np.testing.assert_allclose(total, pde + 0.25, rtol=1e-14)
    with pytest.raises(ValueError, match="causal"):
        PINNProblem((Term("bc", lambda u, x: u(x)),)).loss(lambda x: x[0], pts, causal=causal)


def test_grad_norm_weights_closed_form(x64):
    # L1 = a |theta|^2 / 2, L2 = b |theta|^2 / 2: gradients a theta and b theta, norms a r, b r.
    a, b, theta = 2.0, 6.0, jnp.array([3.0, 4.0])  # r = 5
    grads = {"one": a * theta, "two": {"w": b * theta}}  # each gradient any pytree
    balancer = grad_norm_weighting(momentum=0.9, every=2)
    plain = grad_norm_weighting(momentum=0.0)
    zero = {"one": grads["one"], "two": {"w": jnp.zeros(2)}}

    @jax.jit  # one program for every case below
    def run(grads, zero):
        state = balancer.init(["one", "two"])
        w1, state = balancer.update(grads, state)  # step 0: an update from 1
        w2, state = balancer.update(grads, state)  # step 1: kept
        # Step 2: updated again, with the gradients given as a function (called in a lax.cond).
        w3, state = balancer.update(lambda: grads, state)
        # With momentum 0 the weighted gradients have equal norms, sum_j |g_j|.
        w0, _ = plain.update(grads, plain.init(["one", "two"]))
        # A term with no gradient keeps its weight.
        wz, _ = balancer.update(zero, balancer.init({"one": 2.0, "two": 3.0}))
        return w1, w2, w3, state.count, w0, wz

    w1, w2, w3, count, w0, wz = run(grads, zero)
    hat = {"one": (a + b) / a, "two": (a + b) / b}  # 4 and 4/3
    expected = {k: 0.9 + 0.1 * v for k, v in hat.items()}
    for k in hat:
        np.testing.assert_allclose(w1[k], expected[k], rtol=1e-15)
        np.testing.assert_allclose(w2[k], expected[k], rtol=1e-15)
        np.testing.assert_allclose(w3[k], 0.9 * expected[k] + 0.1 * hat[k], rtol=1e-15)
    assert int(count) == 3
    np.testing.assert_allclose(w0["one"] * a * 5.0, (a + b) * 5.0, rtol=1e-15)
    np.testing.assert_allclose(w0["two"] * b * 5.0, (a + b) * 5.0, rtol=1e-15)
    np.testing.assert_allclose(wz["two"], 3.0)
    np.testing.assert_allclose(wz["one"], 0.9 * 2.0 + 0.1 * 1.0, rtol=1e-15)  # sum/own = 1


def test_bad_input():
    with pytest.raises(ValueError, match="momentum"):
        grad_norm_weighting(momentum=1.0)
    with pytest.raises(ValueError, match="every"):
        grad_norm_weighting(every=0)
    with pytest.raises(ValueError, match="eps"):
        CausalWeighting(4, eps=-1.0)
    with pytest.raises(ValueError, match="t_max"):
        CausalWeighting(4, t_min=1.0, t_max=1.0)
    with pytest.raises(ValueError, match="num_chunks"):
        CausalWeighting(0)
    balancer = grad_norm_weighting()
    with pytest.raises(ValueError, match="names"):
        balancer.update({"a": jnp.ones(2)}, balancer.init(["b"]))
