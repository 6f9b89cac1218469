"""Deep conjugate directions (DCDM): exactness with any network (untrained, trained, adversarial),
parity with CG for the identity network, the one-step loss in closed form, derivatives through
linear_solve and ImplicitDiff, and honest errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji
from jaxsolve.implicit._dcdm import DCDM, DirectionNet, dcdm_loss
from jaxsolve.pde import darcy_operator

from ._problems import normal, symmetric_contraction

S = 8  # node grid: 6 x 6 unknowns
N = (S - 2) ** 2


def _darcy(seed=0):
    """A small Darcy operator with a random two-phase coefficient (flat), its dense matrix and a
    right-hand side."""
    rng = np.random.default_rng(seed)
    a = jnp.asarray(np.where(rng.standard_normal((S, S)) >= 0, 12.0, 3.0))
    mv = darcy_operator(a)
    matvec = lambda v: mv(v.reshape(S - 2, S - 2)).reshape(-1)
    dense = jax.vmap(matvec)(jnp.eye(N)).T
    return matvec, dense, normal(seed + 10, (N,))


def _net(seed=0, grid=(S - 2, S - 2), width=4, levels=1):
    """An untrained DirectionNet: the architecture's shapes, random float64 weights drawn with
    NumPy (scaled by 1/sqrt(fan-in)); cheaper than compiling jax.random for every shape."""
    shapes = eqx.filter_eval_shape(
        lambda: DirectionNet(grid, width=width, levels=levels, key=jax.random.key(0))
    )
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if not isinstance(leaf, jax.ShapeDtypeStruct):
            return leaf
        fan_in = np.prod(leaf.shape[1:]) if len(leaf.shape) > 3 else 1.0
        return jnp.asarray(rng.standard_normal(leaf.shape) / np.sqrt(fan_in))

    return jax.tree_util.tree_map(draw, shapes)


def _tanh_net(w, r):
    return r + 0.3 * jnp.tanh(w @ r)


def _cheap_net(seed=0):
    """A random nonlinear map (cheaper to compile than a convolutional net): any function of
    the residual is a valid DCDM network."""
    return jax.tree_util.Partial(_tanh_net, normal(seed + 50, (N, N)) / np.sqrt(N))


def _solve(solver, matvec, b, rtol=1e-10, max_steps=3000, throw=False):
    return jax.jit(
        lambda b: ji.linear_solve(
            matvec, b, solver=solver, rtol=rtol, atol=1e-300, max_steps=max_steps, throw=throw
        )
    )(b)


def _energies(solver, matvec, dense, b, steps):
    """``r_k^T A^{-1} r_k`` over ``steps`` steps of the method from x = 0, and the last
    iterate."""
    inv = jnp.linalg.inv(dense)

    def body(state, _):
        state = solver.step(matvec, b, 0.0, state, False)
        return state, state["r"] @ inv @ state["r"]

    state, e = jax.lax.scan(body, solver.restart(jnp.zeros_like(b), b), None, length=steps)
    return jnp.concatenate([(b @ inv @ b)[None], e]), state["x"]


def _iterate(solver, matvec, b, steps):
    """The iterate after ``steps`` steps of the method from x = 0."""
    body = lambda state, _: (solver.step(matvec, b, 0.0, state, False), None)
    state, _ = jax.lax.scan(body, solver.restart(jnp.zeros_like(b), b), None, length=steps)
    return state["x"]


def test_untrained_network_converges_exactly(x64):
    """A random network: the error never grows in the A-norm, and the solve reaches 1e-10."""
    matvec, dense, b = _darcy()
    solver = DCDM(_net())
    sol = _solve(solver, matvec, b)
    assert sol.result == RESULTS.successful
    assert sol.residual <= 1e-10 * jnp.linalg.norm(b)
    # The reported residual is the true ||b - A x||; two evaluations of it agree to the rounding
    # of forming b - A x (a few eps ||A|| ||x||).
    x = jnp.linalg.solve(dense, b)
    rounding = 16 * jnp.finfo(b.dtype).eps * jnp.linalg.norm(dense, 2) * jnp.linalg.norm(x)
    np.testing.assert_allclose(
        sol.residual, jnp.linalg.norm(b - dense @ sol.value), rtol=1e-6, atol=rounding
    )
    assert jnp.linalg.norm(sol.value - x) <= 1e-8 * jnp.linalg.norm(x)
    e = np.asarray(_energies(solver, matvec, dense, b, 40)[0])
    assert np.all(np.diff(e) <= 1e-12 * e[0]), np.diff(e).max()
    assert e[-1] < 0.5 * e[0]


def test_identity_network_is_cg(x64):
    """With f(r) = r and one previous direction the method is CG: d = r - (r.Ad/d.Ad) d_prev is
    CG's p = r + (|r|^2/|r_prev|^2) p_prev: the same iterates (to rounding; the step count at
    convergence can then differ by the one step where the residual crosses the tolerance)."""
    matvec, dense, b = _darcy(1)
    dcdm = DCDM(lambda r: r, num_orthogonal=1)
    x = jnp.linalg.solve(dense, b)
    for k in (1, 5, 15):
        got, want = _iterate(dcdm, matvec, b, k), _iterate(ji.CG(), matvec, b, k)
        assert jnp.linalg.norm(got - want) <= 1e-10 * jnp.linalg.norm(x), k
    # Not the exact solution yet after 15 steps (the comparison is not trivial).
    assert jnp.linalg.norm(_iterate(ji.CG(), matvec, b, 15) - x) > 1e-6 * jnp.linalg.norm(x)


def test_exact_inverse_network_takes_one_step(x64):
    """A perfect network, f(r) = A^{-1} r: the line search lands on the solution in one step
    (plus the product that measures the true residual)."""
    matvec, dense, b = _darcy(2)
    inv = jnp.linalg.inv(dense)
    sol = _solve(DCDM(jax.tree_util.Partial(jnp.matmul, inv)), matvec, b)
    assert sol.result == RESULTS.successful
    assert int(sol.num_steps) == 2
    np.testing.assert_allclose(sol.value, jnp.linalg.solve(dense, b), rtol=1e-9)


def test_trained_network_loss_falls_and_solve_stays_exact(x64):
    """A few Adam steps on the one-step loss (residuals from the low eigenvectors, as the paper
    draws them) lower it, and the trained network still solves to 1e-10 with a monotone
    A-norm error. (Whether it then takes fewer steps is a benchmark question, not a property:
    see benchmarks/bench_dcdm.py.)"""
    matvec, dense, b = _darcy(3)
    lam, q = jnp.linalg.eigh(dense)
    weights = (lam[0] / lam) ** 0.5
    c = normal(4, (32, N)) * weights
    r, e = c @ q.T, (c / lam) @ q.T
    batch_loss = lambda net: jnp.mean(jax.vmap(lambda r, e: dcdm_loss(net, matvec, r, e))(r, e))
    net = _net(1)
    opt = optax.adam(3e-3)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    state = opt.init(params)

    @jax.jit
    def train(params, state):
        def body(carry, _):
            params, state = carry
            loss, g = jax.value_and_grad(lambda p: batch_loss(eqx.combine(p, static)))(params)
            updates, state = opt.update(g, state)
            return (optax.apply_updates(params, updates), state), loss

        (params, state), losses = jax.lax.scan(body, (params, state), None, length=60)
        return params, losses

    params, losses = train(params, state)
    trained = eqx.combine(params, static)
    assert losses[-1] < 0.7 * losses[0], (losses[0], losses[-1])
    after = _solve(DCDM(trained), matvec, b)
    assert after.result == RESULTS.successful
    assert after.residual <= 1e-10 * jnp.linalg.norm(b)
    np.testing.assert_allclose(after.value, jnp.linalg.solve(dense, b), rtol=1e-8, atol=1e-10)
    e = np.asarray(_energies(DCDM(trained), matvec, dense, b, 30)[0])
    assert np.all(np.diff(e) <= 1e-12 * e[0])


def test_loss_closed_form(x64):
    """dcdm_loss = 1 - (d.r)^2 / ((d.Ad)(r.A^{-1}r)) for unit r: 0 for the exact direction,
    the steepest-descent value for the identity, invariant to the residual's scale."""
    matvec, dense, b = _darcy(5)
    inv = jnp.linalg.inv(dense)
    e = inv @ b
    assert abs(dcdm_loss(jax.tree_util.Partial(jnp.matmul, inv), matvec, b, e)) < 1e-12
    u = b / jnp.linalg.norm(b)
    want = 1 - 1 / ((u @ dense @ u) * (u @ inv @ u))
    np.testing.assert_allclose(dcdm_loss(lambda r: r, matvec, b, e), want, rtol=1e-12)
    np.testing.assert_allclose(dcdm_loss(lambda r: r, matvec, 7 * b, 7 * e), want, rtol=1e-12)


def test_safeguard_keeps_bad_networks_exact(x64):
    """A network that returns NaN, or a direction orthogonal to the residual, is replaced by the
    residual (A-orthogonalised against the last direction: CG's direction), so the solve
    converges in CG's steps; with the safeguard off
    (min_cosine=0) the orthogonal direction cannot move the iterate and the budget ends as
    max_steps_reached with the true residual, never a false success."""
    matvec, dense, b = _darcy(6)
    # (J r) . r = 0 for the skew J that swaps pairs of entries with a sign.
    swap = lambda r: jnp.stack([-r[1::2], r[::2]], axis=1).reshape(-1)
    cg = _solve(ji.CG(), matvec, b)
    x = jnp.linalg.solve(dense, b)
    cg_10 = _iterate(ji.CG(), matvec, b, 10)
    for net in (lambda r: jnp.full_like(r, jnp.nan), swap):
        solver = DCDM(net, num_orthogonal=1)
        assert jnp.linalg.norm(_iterate(solver, matvec, b, 10) - cg_10) <= 1e-10 * jnp.linalg.norm(
            x
        )
        sol = _solve(solver, matvec, b)
        assert sol.result == RESULTS.successful
        assert sol.residual <= 1e-10 * jnp.linalg.norm(b)
        np.testing.assert_allclose(sol.value, cg.value, rtol=1e-8, atol=1e-12)
    stuck = _solve(DCDM(swap, min_cosine=0.0), matvec, b, max_steps=50)
    assert stuck.result == RESULTS.max_steps_reached
    np.testing.assert_allclose(stuck.residual, jnp.linalg.norm(b - dense @ stuck.value))
    assert stuck.residual > 1e-10 * jnp.linalg.norm(b)


def test_gradient_through_linear_solve(x64):
    """The derivative of w . x(b) through a DCDM solve (the transposed system reuses DCDM) is
    the dense one, A^{-T} w."""
    matvec, dense, b = _darcy(7)
    w_vec = normal(8, (N,))
    loss = lambda b: w_vec @ _solve(DCDM(_cheap_net(2)), matvec, b, throw=True).value
    np.testing.assert_allclose(jax.grad(loss)(b), jnp.linalg.solve(dense.T, w_vec), rtol=1e-7)


def test_implicit_diff_backward_solver(x64):
    """ImplicitDiff(DCDM) as the backward solver of a fixed point z = W z + x with symmetric W,
    ||W|| < 1: its system has the negative definite matrix W - I; the gradient is dense."""
    n = 6
    w = symmetric_contraction(n, 0.8)
    x = normal(9, (n,))
    net = jax.tree_util.Partial(_tanh_net, normal(10, (n, n)))
    backward = ji.ImplicitDiff(DCDM(net), rtol=1e-12, atol=1e-14)

    def fp_loss(x):
        z = ji.fixed_point(
            lambda z, x: w @ z + x, jnp.zeros(n), x, backward=backward, rtol=1e-12, atol=1e-14
        ).value
        return jnp.sum(z**2)

    z = jnp.linalg.solve(jnp.eye(n) - w, x)
    want = jnp.linalg.solve((jnp.eye(n) - w).T, 2 * z)
    np.testing.assert_allclose(jax.grad(fp_loss)(x), want, rtol=1e-8)


def test_vmap_members_stop_on_their_own(x64):
    """Under vmap each member stops on its own: b = 0 costs nothing, and a member gives the
    single solve's answer."""
    matvec, dense, b = _darcy(11)
    bs = jnp.stack([b, jnp.zeros_like(b), dense @ jnp.ones(N)])
    sols = jax.vmap(lambda b: _solve(DCDM(_cheap_net()), matvec, b))(bs)
    assert bool(jnp.all(sols.result == RESULTS.successful))
    assert int(sols.num_steps[1]) == 0  # b = 0: the zero guess is the solution
    np.testing.assert_allclose(sols.value[2], jnp.ones(N), rtol=1e-8)
    single = _solve(DCDM(_cheap_net()), matvec, b)
    assert single.result == RESULTS.successful
    np.testing.assert_allclose(sols.value[0], single.value, rtol=1e-8)


def test_direction_net_runs_on_any_grid():
    """on_grid keeps the weights and moves the network to another grid (odd sizes included);
    with the skip, a network whose output layer is zero returns the residual scaled to unit
    root-mean-square entries."""
    net = _net(grid=(8, 8), width=2, levels=2)
    other = net.on_grid((9, 7))
    assert other.grid_shape == (9, 7)
    leaves = zip(jax.tree_util.tree_leaves(net), jax.tree_util.tree_leaves(other), strict=True)
    assert all(a is b for a, b in leaves)
    r = normal(0, (63,))
    assert other(r).shape == (63,)
    zeroed = eqx.tree_at(
        lambda m: (m.project.weight, m.project.bias), other, replace_fn=jnp.zeros_like
    )
    np.testing.assert_allclose(zeroed(r), r / jnp.sqrt(jnp.mean(r * r)), rtol=1e-6)


@pytest.mark.wrong_argument_types
def test_bad_arguments_raise():
    with pytest.raises(TypeError, match="network"):
        DCDM(3)
    with pytest.raises(ValueError, match="min_cosine"):
        DCDM(lambda r: r, min_cosine=1.5)
    with pytest.raises(ValueError, match="num_orthogonal"):
        DCDM(lambda r: r, num_orthogonal=-1)
    with pytest.raises(ValueError, match="too small"):
        DirectionNet((4, 4), levels=3, key=jax.random.key(0))
    net = eqx.filter_eval_shape(lambda: DirectionNet((8, 8), levels=1, key=jax.random.key(0)))
    with pytest.raises(ValueError, match="length 64"):
        net(jnp.zeros(60))
    b = jnp.ones(5)
    with pytest.raises(ValueError, match="residual's shape"):
        ji.linear_solve(lambda x: 2 * x, b, solver=DCDM(lambda r: r[:3]))
    with pytest.raises(ValueError, match="solution"):
        dcdm_loss(lambda r: r, lambda x: x, b, jnp.ones(4))
