"""Convergent Graph Solver: contraction by construction, parity with a dense solve, implicit
gradients, permutation equivariance."""

import chex
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import RUNTIME_ERRORS

N_NODES, N_EDGES = 9, 24

# Built once at import (float32) and cast to float64 inside each test: the Equinox MLP
# initialisation draws with jax.random, which compiles a kernel per weight shape.
_MODEL32 = ji.ConvergentGraphSolver(
    3, 2, 2, key=jax.random.PRNGKey(1), hidden=4, heads=3, gamma=0.8, width=16
)


def _graph(seed=0):
    rng = np.random.default_rng(seed)
    nodes = jnp.asarray(rng.standard_normal((N_NODES, 3)))
    edges = jnp.asarray(rng.standard_normal((N_EDGES, 2)))
    senders = jnp.asarray(rng.integers(0, N_NODES, N_EDGES))
    receivers = jnp.asarray(rng.integers(0, N_NODES, N_EDGES))
    return nodes, edges, senders, receivers


def _model(backward=None):
    model = jax.tree_util.tree_map(
        lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, _MODEL32
    )
    backward = ji.ImplicitDiff() if backward is None else backward
    # Picard: the map is a gamma-contraction by construction, so plain iteration converges.
    return eqx.tree_at(
        lambda m: (m.solver, m.rtol, m.atol, m.backward),
        model,
        (ji.Picard(), 1e-12, 1e-12, backward),
    )


def _dense_forward(model, nodes, edges, senders, receivers):
    """Decode (I - gamma A_h)^{-1} B_h computed with a dense solve."""
    mats = model.dense_operator(nodes, edges, senders, receivers)
    _, b = model.transition(nodes, edges, senders, receivers)
    h = jnp.linalg.solve(jnp.eye(N_NODES)[None] - mats, b)
    h = jnp.transpose(h, (1, 0, 2)).reshape(N_NODES, -1)
    return jax.vmap(model.decoder)(h)


def test_transition_is_a_contraction_and_matches_dense_solve(x64):
    model = _model()
    graph = _graph()

    @eqx.filter_jit
    def run(model, graph):
        out, sol = model(*graph)
        return out, sol, model.dense_operator(*graph), _dense_forward(model, *graph)

    out, sol, mats, dense = run(model, graph)
    # Every head: ||gamma A_h||_inf <= gamma < 1.
    gamma = float(model.gamma)
    assert gamma < 1
    assert float(jnp.max(jnp.sum(jnp.abs(mats), axis=-1))) <= gamma * (1 + 1e-12)
    assert sol.result == RESULTS.successful
    np.testing.assert_allclose(out, dense, atol=1e-10)


def test_implicit_gradients_match_the_dense_solve(x64):
    model = _model(backward=ji.ImplicitDiff(ji.Picard(), rtol=1e-12))
    graph = _graph(seed=2)
    target = jnp.ones((N_NODES, 2))
    loss = lambda m: jnp.sum((m(*graph)[0] - target) ** 2)
    dense = lambda m: jnp.sum((_dense_forward(m, *graph) - target) ** 2)
    g = eqx.filter_jit(eqx.filter_grad(loss))(model)
    e = eqx.filter_jit(eqx.filter_grad(dense))(model)
    chex.assert_trees_all_close(g, e, rtol=1e-7, atol=1e-9)


# The outputs alone, compiled once for the tests below (same model configuration and shapes).
_OUTPUTS = eqx.filter_jit(lambda m, *g: m(*g)[0])


def test_permutation_equivariance(x64):
    model = _model()
    nodes, edges, senders, receivers = _graph(seed=3)
    perm = jnp.asarray(np.random.default_rng(4).permutation(N_NODES))
    inv = jnp.argsort(perm)
    out = _OUTPUTS(model, nodes, edges, senders, receivers)
    # Relabel node i as inv[i]: nodes move, edge endpoints are renamed.
    out_perm = _OUTPUTS(model, nodes[perm], edges, inv[senders], inv[receivers])
    np.testing.assert_allclose(out_perm, out[perm], atol=1e-10)


def test_a_failed_solve_raises_by_default(x64):
    # The transition is a contraction, so a failure is a fault, not a normal case: raised by
    # default (throw=True). Before, a NaN feature gave NaN outputs with only a code to read.
    model = _model()
    assert model.throw
    nodes, edges, senders, receivers = _graph(seed=3)
    with pytest.raises(RUNTIME_ERRORS, match="NaN or infinity"):
        jax.block_until_ready(
            _OUTPUTS(model, nodes.at[0, 0].set(jnp.nan), edges, senders, receivers)
        )


@pytest.mark.slow
def test_cgs_learns_pagerank_on_random_graphs():
    # Stationary state of x = (1 - d)/N + d sum_{j -> i} x_j / outdeg(j): a linear graph system,
    # the kind CGS is built for. Inputs: in/out degrees per node, 1/outdeg(sender) per edge.
    n, e, d, graphs = 12, 36, 0.85, 32
    rng = np.random.default_rng(0)
    data = []
    for _ in range(graphs):
        snd, rcv = rng.integers(0, n, e), rng.integers(0, n, e)
        out_deg = np.bincount(snd, minlength=n).astype(float)
        in_deg = np.bincount(rcv, minlength=n).astype(float)
        p = np.zeros((n, n))
        np.add.at(p, (rcv, snd), 1.0 / out_deg[snd])
        x = np.linalg.solve(np.eye(n) - d * p, np.full(n, (1 - d) / n))
        nodes = np.stack([in_deg / 4, out_deg / 4, np.ones(n)], -1)
        edges = np.stack([1.0 / out_deg[snd], np.ones(e)], -1)
        data.append((nodes, edges, snd, rcv, n * x[:, None]))
    batch = [jnp.asarray(np.stack(a)) for a in zip(*data, strict=True)]
    nodes, edges, snd, rcv, target = batch
    model = ji.ConvergentGraphSolver(
        3, 2, 1, key=jax.random.PRNGKey(0), hidden=8, heads=2, gamma=0.9, solver=ji.Picard()
    )
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(3e-3)

    def loss_fn(params):
        m = eqx.combine(params, static)
        pred = jax.vmap(lambda *g: m(*g)[0])(nodes, edges, snd, rcv)
        return jnp.mean((pred - target) ** 2)

    @jax.jit
    def train(params):
        def one(carry, _):
            params, state = carry
            loss, g = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), loss

        (params, _), history = jax.lax.scan(one, (params, opt.init(params)), None, length=400)
        return history

    history = train(params)
    assert float(history[-1]) < 0.1 * float(history[0]), (history[0], history[-1])
