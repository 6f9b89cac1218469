"""NeuralODE: solutions, exact NFE accounting, result codes, jit/vmap/grad, argument checks."""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS, ode


class LinearSystem(eqx.Module):
    matrix: jax.Array

    def __call__(self, t, y, args):
        return self.matrix @ y


class Forced(eqx.Module):
    """-y + sin(3t), which records every evaluation through a host callback."""

    def __call__(self, t, y, args):
        jax.debug.callback(_COUNTER.tick)
        return -y + jnp.sin(3.0 * t)


class _Counter:
    def __init__(self):
        self.n = 0

    def tick(self):
        self.n += 1


_COUNTER = _Counter()


def test_solution_matches_matrix_exponential(x64):
    a = jnp.array([[-0.3, 2.0], [-2.0, -0.3]])
    ts = jnp.linspace(0.0, 5.0, 11)
    y0 = jnp.array([1.0, 0.5])
    node = ode.NeuralODE(LinearSystem(a), dfx.Tsit5(), dfx.PIDController(rtol=1e-10, atol=1e-10))
    sol = eqx.filter_jit(node)(ts, y0)
    expected = jax.vmap(lambda t: jax.scipy.linalg.expm(a * t) @ y0)(ts)
    np.testing.assert_allclose(sol.ys, expected, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(sol.ts, ts)
    assert sol.result == RESULTS.successful
    assert int(sol.num_steps) == int(sol.num_accepted_steps) + int(sol.num_rejected_steps)
    # Tsit5 is FSAL: 2 evaluations for the initial-step heuristic, 1 first stage, 6 per step.
    assert int(sol.nfe) == 2 + 1 + 6 * int(sol.num_steps)


@pytest.mark.parametrize(
    "solver, controller, dt0",
    [
        (dfx.Tsit5(), dfx.PIDController(rtol=1e-6, atol=1e-8), None),
        pytest.param(
            dfx.Bosh3(), dfx.PIDController(rtol=1e-4, atol=1e-6), 0.5, marks=pytest.mark.slow
        ),
        pytest.param(dfx.Heun(), dfx.ConstantStepSize(), 0.1, marks=pytest.mark.slow),
        pytest.param(dfx.Euler(), dfx.ConstantStepSize(), 0.1, marks=pytest.mark.slow),
    ],
    ids=["Tsit5-pid", "Bosh3-pid-dt0", "Heun-constant", "Euler-constant"],
)
def test_nfe_counts_every_evaluation(x64, solver, controller, dt0):
    """The reported NFE equals the number of times the vector field actually ran."""
    ts = jnp.linspace(0.0, 2.0, 5)
    node = ode.NeuralODE(Forced(), solver, controller, dt0=dt0)
    _COUNTER.n = 0
    plain = jax.block_until_ready(jax.jit(lambda y: node(ts, y))(jnp.ones(2)))
    assert _COUNTER.n == int(plain.nfe)
    if isinstance(controller, dfx.PIDController):
        assert int(plain.num_rejected_steps) > 0  # rejected steps are counted too
    if not isinstance(solver, dfx.AbstractAdaptiveSolver):
        return  # no error estimate, no local probe
    _COUNTER.n = 0
    local = jax.block_until_ready(
        jax.jit(lambda y, k: node(ts, y, regulariser=ode.LocalRegulariser("biased"), key=k))(
            jnp.ones(2), jax.random.PRNGKey(0)
        )
    )
    assert _COUNTER.n == int(local.nfe)
    assert int(local.nfe) > int(plain.nfe)


def test_result_codes_and_throw():
    a = jnp.array([[-0.3, 2.0], [-2.0, -0.3]])
    ts = jnp.linspace(0.0, 5.0, 3)
    short = eqx.filter_jit(ode.NeuralODE(LinearSystem(a), max_steps=3))(ts, jnp.ones(2))
    assert short.result == RESULTS.max_steps_reached
    with pytest.raises(Exception, match="maximum number of steps"):
        jax.block_until_ready(
            ode.NeuralODE(LinearSystem(a), max_steps=3, throw=True)(ts, jnp.ones(2))
        )


@pytest.mark.slow
def test_nonfinite_state_is_reported():
    class Blowup(eqx.Module):
        def __call__(self, t, y, args):
            return jnp.where(t > 1.0, jnp.nan, 1.0) * y

    node = ode.NeuralODE(Blowup(), dfx.Euler(), dfx.ConstantStepSize(), dt0=0.1)
    sol = node(jnp.linspace(0.0, 5.0, 3), jnp.ones(2))
    assert sol.result == RESULTS.nonfinite


@pytest.mark.slow  # the default run trains through vmap + grad in test_training.py
def test_vmap_jit_grad_through_a_batch(x64):
    """Per-sample adaptive solves under vmap; the gradient of a loss by AD and by FD."""
    key = jax.random.PRNGKey(0)
    field = ode.MLPField(2, 8, 1, key=key)
    node = ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=1e-8, atol=1e-8))
    ts = jnp.linspace(0.0, 1.0, 6)
    y0s = jax.random.normal(jax.random.PRNGKey(1), (4, 2))
    target = jnp.sin(ts)[None, :, None] * jnp.ones((4, 1, 2))
    params, static = eqx.partition(node, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    direction = [
        jax.random.normal(jax.random.fold_in(key, i), x.shape) for i, x in enumerate(leaves)
    ]

    def loss(eps):
        shifted = [x + eps * d for x, d in zip(leaves, direction, strict=True)]
        m = eqx.combine(jax.tree_util.tree_unflatten(treedef, shifted), static)
        sol = jax.vmap(lambda y: m(ts, y))(y0s)
        return jnp.mean((sol.ys - target) ** 2), sol

    value_and_slope = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (value, sol), slope = value_and_slope(0.0)
    assert sol.ys.shape == (4, 6, 2) and sol.nfe.shape == (4,)
    # Samples start from different points: each has its own adaptive steps.
    assert len(set(np.asarray(sol.num_steps).tolist())) > 1
    # Directional derivative along a random direction in parameter space vs central FD (the step
    # sizes move with the parameters too; tight tolerances keep that effect small).
    (up, _), _ = value_and_slope(1e-5)
    (down, _), _ = value_and_slope(-1e-5)
    np.testing.assert_allclose(slope, (up - down) / 2e-5, rtol=1e-4)
    assert np.isfinite(float(value))


def test_tolerance_is_a_traced_value():
    """One compilation sweeps rtol; tighter tolerances take more steps."""
    field = LinearSystem(jnp.array([[-0.3, 2.0], [-2.0, -0.3]]))
    ts = jnp.linspace(0.0, 5.0, 3)

    @jax.jit
    @jax.vmap
    def steps(rtol):
        node = ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=rtol, atol=rtol * 1e-2))
        return node(ts, jnp.ones(2)).num_steps

    counts = np.asarray(steps(jnp.array([1e-2, 1e-4, 1e-6])))
    assert counts[0] < counts[1] < counts[2]


def test_mlp_field_shapes():
    key = jax.random.PRNGKey(0)
    f = ode.MLPField(3, 16, 2, key=key, time_dependent=True, final_activation=jnp.tanh)
    y = jnp.ones((5, 3))

    @eqx.filter_jit
    def evaluate(f, y):
        return f(0.5, y), f(0.5, y[1]), f(0.0, y[0]), f(1.0, y[0])

    # Full float32 products: on a GPU the batched layer is a TF32 matrix product by default and
    # the single one a float32 matrix-vector product, which differ by ~1e-3.
    with jax.default_matmul_precision("float32"):
        batch, single, at0, at1 = evaluate(f, y)
    assert batch.shape == (5, 3)
    np.testing.assert_allclose(batch[1], single, rtol=1e-5, atol=1e-6)  # float32 matmuls
    assert jnp.all(jnp.abs(batch) <= 1.0)
    assert not np.allclose(at0, at1)  # time enters
    with pytest.raises(ValueError, match="last axis 3"):
        f(0.0, jnp.ones(4))
    with pytest.raises(ValueError, match="width"):
        ode.MLPField(3, 0, 2, key=key)


def test_argument_checks():
    field = LinearSystem(-jnp.eye(2))
    with pytest.raises(ValueError, match="ts must be a 1-D"):
        ode.NeuralODE(field)(jnp.array([0.0]), jnp.ones(2))
    with pytest.raises(ValueError, match="non-decreasing"):
        ode.NeuralODE(field)(jnp.array([0.0, 2.0, 1.0]), jnp.ones(2))
    with pytest.raises(ValueError, match="dt0 must be given"):
        ode.NeuralODE(field, dfx.Tsit5(), dfx.ConstantStepSize())
    with pytest.raises(TypeError, match="solver must be a diffrax solver"):
        ode.NeuralODE(field, "tsit5")
    with pytest.raises(TypeError, match="adjoint must be a diffrax adjoint"):
        ode.NeuralODE(field, adjoint="backsolve")
    with pytest.raises(ValueError, match="max_steps"):
        ode.NeuralODE(field, max_steps=0)
    with pytest.raises(TypeError, match="vector_field must be callable"):
        ode.NeuralODE(3.0)
