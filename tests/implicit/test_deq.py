"""DEQ layer: training on synthetic data, warm start, Hutchinson Jacobian regularisation,
second derivatives through the equilibrium."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import RUNTIME_ERRORS, normal


class Cell(eqx.Module):
    """f(z, x) = tanh(W z + U x + c), with ||W||_2 = 0.5 at initialisation."""

    w: jax.Array
    u: jax.Array
    c: jax.Array

    def __init__(self, d_in, hidden, seed, dtype=jnp.float32):
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((hidden, hidden))
        self.w = jnp.asarray(0.5 * w / np.linalg.norm(w, 2), dtype)
        self.u = jnp.asarray(rng.standard_normal((hidden, d_in)) / np.sqrt(d_in), dtype)
        self.c = jnp.zeros(hidden, dtype)

    def __call__(self, z, x):
        return jnp.tanh(self.w @ z + self.u @ x + self.c)


class Regressor(eqx.Module):
    deq: ji.DEQ
    head: jax.Array

    def __call__(self, x):
        out = self.deq(x)
        return self.head @ out.value, out


def test_small_deq_trains_to_target_loss():
    hidden = 16
    xs = jnp.asarray(normal(0, (64, 3)), jnp.float32)
    ys = jnp.sin(xs @ jnp.array([1.0, -2.0, 0.5]))
    deq = ji.DEQ(Cell(3, hidden, 0), state_init=lambda x: jnp.zeros(hidden))
    model = Regressor(deq, jnp.asarray(normal(1, (hidden,)), jnp.float32) / np.sqrt(hidden))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    # Clipped Adam: implicit gradients grow like 1 / (1 - rho(J)) when a step pushes the cell
    # towards non-contraction, and plain Adam at this rate then overshoots; the run turns
    # chaotic (float32 rounding alone decided between a final loss of 5e-4 and 0.1). With the
    # clip, runs at learning rates 0.98e-2 ... 1.02e-2 all ended below 5e-3.
    opt = optax.chain(optax.clip_by_global_norm(0.1), optax.adam(1e-2))

    def loss_fn(params):
        pred, out = jax.vmap(eqx.combine(params, static))(xs)
        return jnp.mean((pred - ys) ** 2), out.solution

    @jax.jit
    def train(params):
        def one(carry, _):
            params, state = carry
            (mse, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), mse

        init = (params, opt.init(params))
        (params, _), history = jax.lax.scan(one, init, None, length=90)
        return params, history, loss_fn(params)

    # Full float32 products, as on CPU: a GPU's default TF32 products (relative error ~1e-3) kept
    # the backward solve from rtol = 1e-4 on an H200 (see ImplicitDiff's note on precision).
    with jax.default_matmul_precision("float32"):
        params, history, (mse, sol) = train(params)
    assert float(history[0]) > 0.3  # Var(y) ~ 0.5 at the start
    assert float(mse) < 0.05, history[-10:]
    assert float(jnp.mean(sol.successful)) > 0.9


def test_warm_start_reuses_the_previous_equilibrium(x64):
    cell = Cell(3, 8, 2, jnp.float64)
    deq = ji.DEQ(
        cell, solver=ji.Picard(), rtol=1e-10, atol=1e-10, state_init=lambda x: jnp.zeros(8)
    )
    run = eqx.filter_jit(lambda deq, x, z0: deq(x, z0).solution)
    x = jnp.array([0.3, -1.0, 2.0])
    cold = run(deq, x, jnp.zeros(8))
    same = run(deq, x, cold.value)
    nearby = run(deq, x + 1e-3, cold.value)
    assert cold.result == RESULTS.successful and int(same.num_steps) == 0
    assert 0 < int(nearby.num_steps) < int(cold.num_steps), (nearby.num_steps, cold.num_steps)


def test_hutchinson_estimate_is_unbiased_and_differentiable(x64):
    cell = Cell(3, 8, 3, jnp.float64)
    x = jnp.array([0.5, 0.1, -0.7])
    samples = 2000

    @jax.jit
    def estimates(x):
        z = ji.fixed_point(lambda z, a: cell(z, a), jnp.zeros(8), x, rtol=1e-12, atol=1e-12).value
        exact = jnp.sum(jax.jacfwd(lambda z: cell(z, x))(z) ** 2)
        keys = jax.random.split(jax.random.PRNGKey(4), samples)
        per = jax.vmap(lambda k: ji.hutchinson_frobenius(lambda z: cell(z, x), z, k, 1))(keys)
        return exact, per

    exact, per = estimates(x)
    # Unbiased: the sample mean is within four standard errors of ||J||_F^2.
    assert abs(float(jnp.mean(per) - exact)) < 4 * float(jnp.std(per)) / np.sqrt(samples)

    # The DEQ's auxiliary output is that estimate at its own equilibrium, and it carries
    # gradients to the weights.
    deq = ji.DEQ(
        cell,
        solver=ji.Picard(),
        backward=ji.ImplicitDiff(ji.Picard()),
        jacobian_samples=64,
        rtol=1e-12,
        atol=1e-12,
        state_init=lambda x: jnp.zeros(8),
    )
    key = jax.random.PRNGKey(5)

    @eqx.filter_jit
    def aux_and_grad(deq):
        out = deq(x, key=key)
        direct = ji.hutchinson_frobenius(lambda z: cell(z, x), out.value, key, 64)
        grads = eqx.filter_grad(lambda d: d(x, key=key).jacobian_loss)(deq)
        return out.jacobian_loss, direct, grads

    jac, direct, grads = aux_and_grad(deq)
    np.testing.assert_allclose(jac, direct, rtol=1e-12)
    assert float(jnp.linalg.norm(grads.cell.w)) > 0 and bool(jnp.all(jnp.isfinite(grads.cell.w)))
    with pytest.raises(ValueError, match="needs a key"):
        deq(x)


def test_hessian_through_deq_equals_the_unrolled_hessian(x64):
    cell = Cell(3, 8, 6, jnp.float64)
    deq = ji.DEQ(
        cell,
        solver=ji.Picard(),
        backward=ji.ImplicitDiff(ji.Picard()),
        rtol=1e-12,
        atol=1e-12,
        state_init=lambda x: jnp.zeros(8),
    )
    x = jnp.array([0.2, -0.4, 0.9])
    readout = jnp.linspace(-1.0, 1.0, 8)

    def implicit(x):
        return readout @ deq(x).value

    def unrolled(x):
        # ||W|| = 0.5 and |tanh'| <= 1: 50 steps converge to ~1e-15.
        z = jax.lax.fori_loop(0, 50, lambda _, z: cell(z, x), jnp.zeros(8))
        return readout @ z

    np.testing.assert_allclose(
        jax.jit(jax.hessian(implicit))(x), jax.jit(jax.hessian(unrolled))(x), atol=1e-9
    )


@pytest.mark.slow
@pytest.mark.parametrize("backward", ["jfb", "phantom"])
def test_deq_trains_with_cheap_backward_modes(backward):
    hidden = 16
    xs = jnp.asarray(normal(0, (64, 3)), jnp.float32)
    ys = jnp.sin(xs @ jnp.array([1.0, -2.0, 0.5]))
    mode = {"jfb": ji.JacobianFree(), "phantom": ji.PhantomGradient(steps=5, damping=0.5)}
    deq = ji.DEQ(
        Cell(3, hidden, 0), backward=mode[backward], state_init=lambda x: jnp.zeros(hidden)
    )
    model = Regressor(deq, jnp.asarray(normal(1, (hidden,)), jnp.float32) / np.sqrt(hidden))
    params, static = eqx.partition(model, eqx.is_inexact_array)
    opt = optax.adam(1e-2)

    def loss_fn(params):
        pred, _ = jax.vmap(eqx.combine(params, static))(xs)
        return jnp.mean((pred - ys) ** 2)

    @jax.jit
    def train(params):
        def one(carry, _):
            params, state = carry
            mse, g = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(g, state, params)
            return (optax.apply_updates(params, updates), state), mse

        (params, _), history = jax.lax.scan(one, (params, opt.init(params)), None, length=200)
        return history, loss_fn(params)

    history, mse = train(params)
    assert float(history[0]) > 0.3
    assert float(mse) < 0.05, history[-10:]


class _CosCell(eqx.Module):
    """f(z, x) = a cos z + x: a contraction for |a| < 1, with closed-form derivatives."""

    a: jax.Array

    def __call__(self, z, x):
        return self.a * jnp.cos(z) + x


def _value_code_grad(deq, x):
    def value(a):
        out = eqx.tree_at(lambda d: d.cell.a, deq, a)(x)
        return out.value, (out.value, out.solution.result)

    grad, (value, code) = jax.grad(value, has_aux=True)(deq.cell.a)
    return value, code, grad


_VALUE_CODE_GRAD = eqx.filter_jit(eqx.filter_vmap(_value_code_grad, in_axes=(None, 0)))


def _two_step_deq(**kw):
    # Two Picard steps never meet 1e-12: every solve ends at its budget, at z_2 = a cos a + x'
    # (from z_0 = 0: z_1 = a + x, z_2 = a cos(a + x) + x).
    return ji.DEQ(
        _CosCell(jnp.asarray(0.5)),
        solver=ji.Picard(),
        backward=ji.ImplicitDiff(ji.Picard(), rtol=1e-12, atol=1e-12),
        max_steps=2,
        rtol=1e-12,
        atol=1e-12,
        **kw,
    )


def test_deq_budget_is_normal_but_nonfinite_is_not(x64):
    # A DEQ in training runs a fixed budget: reaching it is reported, not raised, and the
    # derivative is the implicit one at the last iterate z_2, cos z_2 / (1 + a sin z_2) (what
    # torchdeq does, and documented). A NaN is never passed on: its code is nonfinite and its
    # derivative NaN (throw=False), and by default (throw=True) it raises.
    z2 = 0.5 * np.cos(0.5)
    value, code, grad = _VALUE_CODE_GRAD(_two_step_deq(throw=False), jnp.array([0.0, jnp.nan]))
    assert bool(jnp.all((code == RESULTS.max_steps_reached) == jnp.array([True, False])))
    assert bool((code == RESULTS.nonfinite)[1])
    np.testing.assert_allclose(value[0], z2, rtol=1e-12)
    np.testing.assert_allclose(grad[0], np.cos(z2) / (1 + 0.5 * np.sin(z2)), rtol=1e-10)
    assert bool(jnp.isnan(grad[1]))

    default = _two_step_deq()
    assert default.throw and not default.require_convergence
    _, _, grad = _VALUE_CODE_GRAD(default, jnp.array([0.0]))
    np.testing.assert_allclose(grad[0], np.cos(z2) / (1 + 0.5 * np.sin(z2)), rtol=1e-10)
    with pytest.raises(RUNTIME_ERRORS, match="DEQ: A NaN or infinity appeared"):
        jax.block_until_ready(_VALUE_CODE_GRAD(default, jnp.array([0.0, jnp.nan])))


@pytest.mark.wrong_argument_types
def test_deq_require_convergence_treats_the_budget_as_a_failure(x64):
    strict = _two_step_deq(throw=False, require_convergence=True)
    _, code, grad = _VALUE_CODE_GRAD(strict, jnp.array([0.0]))
    assert bool((code == RESULTS.max_steps_reached)[0]) and bool(jnp.isnan(grad[0]))
    with pytest.raises(TypeError, match="DEQ require_convergence must be a bool"):
        _two_step_deq(require_convergence=None)


@pytest.mark.wrong_argument_types
@pytest.mark.parametrize(
    ("samples", "error"), [(0, ValueError), (-1, ValueError), (2.5, TypeError)]
)
def test_hutchinson_sample_count_must_be_a_positive_int(samples, error):
    # 0 probes averaged nothing (a silent NaN) and 2.5 drew three probes.
    fn = lambda z: 2.0 * z
    with pytest.raises(error, match="hutchinson_frobenius samples"):
        ji.hutchinson_frobenius(fn, jnp.zeros(3), jax.random.PRNGKey(0), samples)
