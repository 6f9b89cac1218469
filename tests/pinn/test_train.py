"""The PINN training driver: update rules, samplers inside the loop, failures."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import pinn
from jaxsolve._core import RESULTS
from jaxsolve.pinn import Collocation, GaussNewton, Phase, train


def _poisson():
    """-u'' = pi^2 sin(pi x) on [0, 1], u(0) = u(1) = 0: u = sin(pi x)."""
    problem = pinn.poisson(lambda x: jnp.pi**2 * jnp.sin(jnp.pi * x[0]))
    points = {"pde": jnp.linspace(0.0, 1.0, 32)[:, None], "bc": jnp.array([[0.0], [1.0]])}
    return problem, points


def _error(model):
    x = jnp.linspace(0.0, 1.0, 101)[:, None]
    return float(pinn.relative_l2(model, x, jnp.sin(jnp.pi * x[:, 0])))


@pytest.mark.slow  # the README's PINN block checks the same in float32 by default
def test_gauss_newton_solves_poisson_to_high_accuracy(x64):
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 10, 2, key=jax.random.key(0))
    result = train(
        problem,
        net,
        points,
        key=jax.random.key(1),
        optimizer=GaussNewton(),
        num_steps=40,
        progress=False,
    )
    assert result.result == RESULTS.successful
    # A Gauss-Newton method on a well-posed linear problem: near machine-level training loss
    # and an error set by the network and the 32 points, far below Adam's after as many steps.
    assert result.history["loss"][-1] < 1e-9
    assert _error(result.model) < 1e-4


@pytest.mark.slow
def test_residual_vector_is_the_loss(x64):
    problem = pinn.burgers()
    net = pinn.MLP(2, "scalar", 8, 2, key=jax.random.key(0))
    key = jax.random.split(jax.random.key(2), 3)
    pts = {
        "pde": jax.random.uniform(key[0], (40, 2)) * jnp.array([1.0, 2.0]) - jnp.array([0, 1]),
        "ic": jax.random.uniform(key[1], (7, 2)),
        "bc": jnp.array([[0.3, -1.0], [0.6, 1.0], [0.9, 1.0]]),
    }
    causal = pinn.CausalWeighting(4, eps=3.0, terms=("pde",))
    weights = {"pde": 2.0, "bc": 0.5}
    pw = {"pde": jax.random.uniform(key[2], (40,))}
    total, _ = eqx.filter_jit(problem.loss)(net, pts, weights, causal=causal, point_weights=pw)
    rho = eqx.filter_jit(problem.residual_vector)(
        net, pts, weights, causal=causal, point_weights=pw
    )
    assert rho.shape == (50,)
    np.testing.assert_allclose(jnp.sum(rho**2), total, rtol=1e-13)


@pytest.mark.slow  # compiling optax's zoom line search inside the loop takes a while
def test_lbfgs_gets_its_line_search_and_phases_chain(x64):
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 10, 2, key=jax.random.key(0))
    result = train(
        problem,
        net,
        points,
        key=jax.random.key(1),
        phases=[Phase(optax.adam(1e-2), 20), Phase(optax.lbfgs(), 30)],
        progress=False,
        steps_per_call=25,
    )
    loss = result.history["loss"]
    assert loss.shape == (50,) and result.num_steps == 50
    # optax's zoom line search enforces sufficient decrease: L-BFGS never goes up.
    assert np.all(np.diff(loss[21:]) <= 1e-12 * loss[21:-1])
    assert list(result.history["phase"]) == [0, 1, 1]


def test_frozen_causal_objective_matches_at_the_point_and_freezes_the_weights():
    from jaxsolve.pinn._train import Objective

    problem = pinn.PINNProblem((pinn.burgers().terms[0],))
    net = pinn.MLP(2, "scalar", 8, 2, key=jax.random.key(0))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    key = jax.random.split(jax.random.key(2))
    pts = {"pde": jax.random.uniform(key[0], (40, 2)) * jnp.array([1.0, 2.0]) - jnp.array([0, 1])}
    pw = {"pde": jax.random.uniform(key[1], (40,))}
    causal = pinn.CausalWeighting(4, eps=3.0, terms=("pde",))
    objective = Objective(problem, static, pts, {"pde": 2.0}, pw, causal)

    @jax.jit
    def compare(params):
        frozen = objective.frozen(params)
        moved = jax.tree_util.tree_map(lambda p: 1.5 * p, params)
        return (
            jax.value_and_grad(objective.value)(params),
            jax.value_and_grad(frozen.value)(params),
            jnp.sum(frozen.residuals(params) ** 2),
            (frozen.value(moved), objective.value(moved)),
        )

    (value, grad), (value_f, grad_f), squared, (frozen_moved, moved) = compare(params)
    np.testing.assert_allclose(value_f, value, rtol=1e-5)
    for a, b in zip(
        jax.tree_util.tree_leaves(grad_f), jax.tree_util.tree_leaves(grad), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(squared, value, rtol=1e-5)
    # Elsewhere the weights stay those of `params`: the frozen loss is a fixed weighted sum.
    assert not np.isclose(float(frozen_moved), float(moved), rtol=1e-3)
    assert objective.frozen(params).causal is None


def test_samplers_step_inside_the_loop():
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 8, 2, key=jax.random.key(0))
    geometry = pinn.Interval(0.0, 1.0)
    pts = dict(points, pde=Collocation(geometry, pinn.R3(32), every=4))
    result = train(
        problem,
        net,
        pts,
        key=jax.random.key(5),
        optimizer=optax.adam(1e-3),
        num_steps=10,
        steps_per_call=10,
        progress=False,
    )
    start = pinn.R3(32).init(
        jax.random.fold_in(jax.random.split(jax.random.key(5))[0], 0), geometry
    )
    assert not np.array_equal(result.samplers["pde"].points, start.points)
    # Two resamplings (after steps 4 and 8): R3 keeps the points at or above the mean residual.
    assert 0 < int(result.samplers["pde"].num_retained) < 32
    # A chosen start set: R3 retains some of those points and replaces the others.
    chosen = jnp.linspace(0.0, 1.0, 34)[1:-1, None]
    pts = dict(points, pde=Collocation(geometry, pinn.R3(32), every=4, points=chosen))
    kept = train(
        problem,
        net,
        pts,
        key=jax.random.key(5),
        optimizer=optax.adam(1e-3),
        num_steps=4,
        progress=False,
    ).samplers["pde"]
    retained = np.isin(np.asarray(kept.points[:, 0]), np.asarray(chosen[:, 0]))
    assert retained.sum() == int(kept.num_retained) and 0 < retained.sum() < 32


def test_history_records_the_causal_gate_opening():
    problem = pinn.convection(2.0)
    net = pinn.MLP(2, "scalar", 8, 2, key=jax.random.key(0))
    domain = pinn.Box([0.0, 0.0], [1.0, 2 * np.pi])
    r3 = pinn.R3(32, causal=True, eta=0.05, clip=0.1)
    ic = jnp.stack([jnp.zeros(16), jnp.linspace(0.0, 2 * np.pi, 16)], 1)
    bc = jnp.stack([jnp.linspace(0.0, 1.0, 8), jnp.zeros(8)], 1)
    pts = {"pde": Collocation(domain, r3, every=1), "ic": ic, "bc": bc}
    result = train(
        problem,
        net,
        pts,
        key=jax.random.key(5),
        optimizer=optax.adam(1e-3),
        num_steps=12,
        steps_per_call=4,
        progress=False,
    )
    shift = result.history["shift/pde"]
    retained = result.history["retained/pde"]
    assert shift.shape == retained.shape == (3,)
    # Each step moves the shift up by eta * min(exp(-epsilon L), clip): at most 4 * 0.005 per
    # chunk of four steps, and never down.
    increments = np.diff(np.concatenate([[-0.5], shift]))
    assert np.all(increments > 0) and np.all(increments <= 4 * 0.05 * 0.1 + 1e-12)
    assert shift[-1] == float(result.samplers["pde"].shift)
    assert retained[-1] == int(result.samplers["pde"].num_retained)
    assert np.all((retained > 0) & (retained < 32))
    # Fixed point sets have no sampler and no entry.
    assert "shift/ic" not in result.history


@pytest.mark.slow
def test_samplers_step_inside_the_loop_and_chunking_does_not_matter():
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 8, 2, key=jax.random.key(0))
    geometry = pinn.Interval(0.0, 1.0)
    pts = dict(points, pde=Collocation(geometry, pinn.R3(32), every=4))
    runs = [
        train(
            problem,
            net,
            pts,
            key=jax.random.key(5),
            optimizer=optax.adam(1e-3),
            num_steps=10,
            steps_per_call=c,
            progress=False,
        )
        for c in (3, 10)
    ]
    a, b = runs
    start = pinn.R3(32).init(
        jax.random.fold_in(jax.random.split(jax.random.key(5))[0], 0), geometry
    )
    assert not np.array_equal(a.samplers["pde"].points, start.points)
    np.testing.assert_array_equal(a.samplers["pde"].points, b.samplers["pde"].points)
    for x, y in zip(
        jax.tree_util.tree_leaves(a.model), jax.tree_util.tree_leaves(b.model), strict=True
    ):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # Two resamplings (after steps 4 and 8): R3 keeps the points at or above the mean residual.
    assert 0 < int(a.samplers["pde"].num_retained) < 32
    never = train(
        problem,
        net,
        dict(points, pde=Collocation(geometry, pinn.R3(32), every=11)),
        key=jax.random.key(5),
        optimizer=optax.adam(1e-3),
        num_steps=10,
        progress=False,
    )
    np.testing.assert_array_equal(never.samplers["pde"].points, start.points)
    # A phase with resample=False keeps the points the previous phase ended with.
    kw = dict(key=jax.random.key(5), steps_per_call=10, progress=False)
    four = train(problem, net, pts, optimizer=optax.adam(1e-3), num_steps=4, **kw)
    frozen = train(
        problem,
        net,
        pts,
        phases=[Phase(optax.adam(1e-3), 4), Phase(optax.adam(1e-3), 6, resample=False)],
        **kw,
    )
    np.testing.assert_array_equal(frozen.samplers["pde"].points, four.samplers["pde"].points)
    assert not np.array_equal(four.samplers["pde"].points, start.points)


def test_a_nonfinite_step_raises_or_returns_the_last_good_network():
    problem = pinn.poisson(lambda x: jnp.where(x[0] > 0.5, jnp.nan, 1.0))
    _, points = _poisson()
    net = pinn.MLP(1, "scalar", 8, 2, key=jax.random.key(0))
    with pytest.raises(FloatingPointError, match="step 0 went non-finite \\(the loss\\)"):
        train(
            problem,
            net,
            points,
            key=jax.random.key(1),
            optimizer=optax.adam(1e-3),
            num_steps=5,
            progress=False,
        )
    out = train(
        problem,
        net,
        points,
        key=jax.random.key(1),
        optimizer=optax.adam(1e-3),
        num_steps=5,
        progress=False,
        throw=False,
    )
    assert out.result == RESULTS.nonfinite and out.num_steps == 0
    assert eqx.tree_equal(out.model, net)
    # A sampler meeting a NaN residual is a failure too, found at its resampling step.
    good, _ = _poisson()
    # (The initial 16 points miss the NaN window; RARD's pool of 1000 candidates does not.)
    nan_pde = pinn.Term("pde", lambda u, x: jnp.where(jnp.abs(x[0] - 1.5) < 0.05, jnp.nan, u(x)))
    probe = pinn.PINNProblem((nan_pde, good.terms[1]))
    geometry = pinn.Interval(0.0, 3.0)
    pts = dict(points, pde=Collocation(geometry, pinn.RARD(16, n_candidates=1000), every=3))
    with pytest.raises(FloatingPointError, match="step 2 went non-finite \\(a sampler"):
        train(
            probe,
            net,
            pts,
            key=jax.random.key(0),
            optimizer=optax.adam(1e-3),
            num_steps=6,
            progress=False,
        )


def test_bad_arguments_are_named():
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 8, 2, key=jax.random.key(0))
    kw = dict(key=jax.random.key(0), progress=False)
    with pytest.raises(ValueError, match="missing \\['bc'\\]"):
        train(problem, net, {"pde": points["pde"]}, optimizer=optax.adam(1e-3), num_steps=1, **kw)
    with pytest.raises(TypeError, match="Collocation"):
        train(
            problem,
            net,
            dict(points, pde=pinn.R3(8)),
            optimizer=optax.adam(1e-3),
            num_steps=1,
            **kw,
        )
    with pytest.raises(ValueError, match="not both"):
        train(
            problem,
            net,
            points,
            optimizer=optax.adam(1e-3),
            num_steps=1,
            phases=[Phase(optax.adam(1e-3), 1)],
            **kw,
        )
    with pytest.raises(ValueError, match="every"):
        Collocation(pinn.Interval(0.0, 1.0), pinn.R3(8), every=0)
    with pytest.raises(ValueError, match="sampler's 8 points"):
        Collocation(pinn.Interval(0.0, 1.0), pinn.R3(8), points=jnp.zeros((7, 1)))
    with pytest.raises(ValueError, match="damping"):
        GaussNewton(damping=0.0)


@pytest.mark.slow
def test_the_adversarial_sampler_runs_inside_the_loop():
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 8, 2, key=jax.random.key(0))
    sampler = pinn.AdversarialSampler(64)
    pts = dict(points, pde=Collocation(pinn.Interval(0.0, 1.0), sampler, every=5))
    result = train(
        problem,
        net,
        pts,
        key=jax.random.key(1),
        optimizer=optax.adam(1e-3),
        num_steps=10,
        progress=False,
    )
    state = result.samplers["pde"]
    assert result.result == RESULTS.successful and state.result == RESULTS.successful
    assert bool(jnp.all((state.points >= 0.0) & (state.points <= 1.0)))
    start = sampler.init(
        jax.random.fold_in(jax.random.split(jax.random.key(1))[0], 0), pinn.Interval(0.0, 1.0)
    )
    assert not np.array_equal(state.points, start.points)


@pytest.mark.wrong_argument_types
def test_an_optimizer_that_is_not_one_is_named():
    problem, points = _poisson()
    net = pinn.MLP(1, "scalar", 8, 2, key=jax.random.key(0))
    with pytest.raises(TypeError, match="update must be an optax"):
        train(
            problem,
            net,
            points,
            optimizer="adam",
            num_steps=1,
            key=jax.random.key(0),
            progress=False,
        )


def test_gauss_newton_damping_stays_finite_when_no_step_helps():
    """At an exact solution (zero loss) no step lowers the loss, so every step raises the
    damping; it used to grow without bound to inf, after which no step could ever move again."""
    from jaxsolve.pinn._train import Objective

    problem = pinn.poisson(0.0, 0.0)
    net = pinn.MLP(2, "scalar", 4, 1, key=jax.random.key(0))
    net = jax.tree_util.tree_map(lambda a: jnp.zeros_like(a) if eqx.is_array(a) else a, net)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    pts = {"pde": jax.random.uniform(jax.random.key(1), (6, 2)), "bc": jnp.zeros((2, 2))}
    objective = Objective(problem, static, pts, {}, {}, None)
    rule = GaussNewton(1e10, increase=1e6)
    step = eqx.filter_jit(rule.step)
    damping = rule.init(params)
    for _ in range(40):
        params, damping, loss = step(objective, params, damping)
    assert float(loss) == 0.0
    assert np.isfinite(float(damping)) and float(damping) == 1 / np.finfo(damping.dtype).eps
