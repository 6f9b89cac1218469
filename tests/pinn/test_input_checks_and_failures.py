"""Inputs that used to pass silently into a wrong or stalled training run, and a Gauss-Newton
failure that used to look like success."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxsolve import pinn
from jaxsolve._core import RESULTS


def _poisson_points():
    return {"pde": jnp.linspace(0.0, 1.0, 8)[:, None], "bc": jnp.array([[0.0], [1.0]])}


def test_gauss_newton_with_a_nan_jacobian_fails_instead_of_stalling():
    """A residual whose value is finite but whose derivative is NaN (sqrt at 0): under Adam the
    NaN gradient made the parameters NaN and train reported it; Gauss-Newton took its NaN
    direction as a failed factorisation, raised the damping and kept the parameters, so the run
    "succeeded" with the untrained network."""
    base = pinn.poisson(lambda x: jnp.pi**2 * jnp.sin(jnp.pi * x[0]))
    kink = pinn.Term(
        "pde", lambda u, x: base.terms[0].residual(u, x) + jnp.sqrt(jnp.abs(u(x) - u(x)))
    )
    problem = pinn.PINNProblem((kink, base.terms[1]))
    net = pinn.MLP(1, "scalar", 4, 1, key=jax.random.key(0))
    kw = dict(key=jax.random.key(1), optimizer=pinn.GaussNewton(), num_steps=3, progress=False)
    with pytest.raises(FloatingPointError, match="step 0 went non-finite \\(the parameters\\)"):
        pinn.train(problem, net, _poisson_points(), **kw)
    out = pinn.train(problem, net, _poisson_points(), throw=False, **kw)
    assert out.result == RESULTS.nonfinite and out.num_steps == 0
    assert eqx.tree_equal(out.model, net)


def test_gauss_newton_moves_when_its_jacobian_is_finite():
    """The counterpart of the test above: without the kink the same run moves and lowers the
    loss, so the new check is no blanket failure."""
    problem = pinn.poisson(lambda x: jnp.pi**2 * jnp.sin(jnp.pi * x[0]))
    net = pinn.MLP(1, "scalar", 4, 1, key=jax.random.key(0))
    good = pinn.train(
        problem,
        net,
        _poisson_points(),
        key=jax.random.key(1),
        optimizer=pinn.GaussNewton(),
        num_steps=3,
        progress=False,
    )
    assert good.result == RESULTS.successful and good.num_steps == 3
    # A Gauss-Newton step moves only when it lowers the loss.
    assert good.history["loss"][-1] < good.history["loss"][0]
    assert not eqx.tree_equal(good.model, net)


def test_term_weights_given_to_train_or_loss_are_checked():
    """A negative weight made the loss unbounded below (Adam then drove the boundary residual
    up, the loss went to -inf, all "successful"); a NaN weight failed at step 0 without naming
    the weight. Both are refused as a Term's own weight is."""
    problem = pinn.poisson(1.0)
    points = _poisson_points()
    net = pinn.MLP(1, "scalar", 4, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"weights\['bc'\] must be finite and >= 0"):
        pinn.train(
            problem,
            net,
            points,
            key=jax.random.key(0),
            optimizer=optax.adam(1e-3),
            num_steps=1,
            weights={"bc": -1.0},
            progress=False,
        )
    with pytest.raises(ValueError, match=r"weights\['pde'\]"):
        problem.loss(net, points, {"pde": float("nan")})
    # A traced weight is data: the total is the weighted sum of the term losses.
    total = jax.jit(lambda w: problem.loss(net, points, {"pde": w})[0])(2.5)
    _, terms = problem.loss(net, points)
    np.testing.assert_allclose(total, 2.5 * terms["pde"] + terms["bc"], rtol=1e-6)


@pytest.mark.wrong_argument_types  # the field is annotated as an array
def test_convection_residual_takes_a_plain_number():
    """``ConvectionResidual(30.0)`` raised AttributeError ('float' has no astype)."""
    beta = 30.0
    residual = pinn.ConvectionResidual(beta)
    x = jnp.array([0.25, 0.5])
    # u = t x: u_t + beta u_x = x + beta t.
    np.testing.assert_allclose(residual(lambda z: z[0] * z[1], x), 0.5 + beta * 0.25, rtol=1e-6)
    # u = sin(x - beta t) is a solution.
    wave = residual(lambda z: jnp.sin(z[1] - beta * z[0]), x)
    np.testing.assert_allclose(wave, 0.0, atol=1e-4)


def test_sampler_hyperparameters_must_be_finite():
    """Infinity passed the sign checks: RARD(k=inf) made every density |r|^inf / mean = NaN,
    so the points were picked at random without a word; R3's shifts were not checked at all."""
    for make, name in (
        (lambda: pinn.RARD(8, k=float("inf")), "k"),
        (lambda: pinn.RARD(8, c=float("inf")), "c"),
        (lambda: pinn.R3(8, alpha=float("inf")), "alpha"),
        (lambda: pinn.R3(8, eta=float("inf")), "eta"),
        (lambda: pinn.R3(8, causal=True, shift_init=float("nan")), "shift_init"),
        (lambda: pinn.R3(8, causal=True, shift_max=float("inf")), "shift_max"),
        (lambda: pinn.AdversarialSampler(8, learning_rate=float("inf")), "learning_rate"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be .*finite"):
            make()
    # A cap below the start would pull the shift down at the first step, closing the gate.
    with pytest.raises(ValueError, match="shift_max must be >= shift_init"):
        pinn.R3(8, causal=True, shift_init=1.0, shift_max=0.0)
    # Traced values still pass (and the shift starts where it was told).
    domain = pinn.SpaceTime(pinn.Interval(0.0, 1.0), 0.0, 1.0)
    shifts = jax.vmap(
        lambda s: (
            pinn.R3(8, causal=True, shift_init=s, shift_max=s + 1)
            .init(jax.random.key(0), domain)
            .shift
        )
    )(jnp.array([-0.5, 0.25]))
    np.testing.assert_allclose(shifts, [-0.5, 0.25])


def test_constraint_and_condition_settings_must_be_finite():
    """An infinite tau made phi(t) = 0 (the network switched off), an infinite period a constant
    embedding, a NaN t0 or period shift a NaN residual at every point."""
    net = pinn.MLP(2, "scalar", 4, 1, key=jax.random.key(0))
    with pytest.raises(ValueError, match="t0 must be finite"):
        pinn.HardInitial(net, lambda x: 0.0, t0=float("nan"))
    with pytest.raises(ValueError, match=r"tau must be .*finite"):
        pinn.HardInitial(net, lambda x: 0.0, tau=float("inf"))
    with pytest.raises(ValueError, match=r"periods must be .*finite"):
        pinn.PeriodicEmbedding([None, float("inf")])
    with pytest.raises(ValueError, match="shift must be finite"):
        pinn.periodic(np.array([0.0, np.nan]))
    # A finite tau gives phi(t) = 1 - exp(-(t - t0) / tau).
    u = pinn.HardInitial(net, lambda x: 0.0, tau=0.5, t0=0.25)
    np.testing.assert_allclose(u.factor(1.25), 1 - np.exp(-2.0), rtol=1e-6)


def test_gauss_newton_settings_must_be_finite():
    """An infinite damping or factor made every step a no-move (a stalled, "successful" run)."""
    for kw, name in (
        (dict(damping=float("inf")), "damping"),
        (dict(min_damping=float("inf")), "min_damping"),
        (dict(increase=float("inf")), "increase"),
        (dict(decrease=float("inf")), "decrease"),
        (dict(step_sizes=np.array([1.0, np.inf])), "step_sizes"),
    ):
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            pinn.GaussNewton(**kw)


@pytest.mark.wrong_argument_types
def test_collocation_period_must_be_an_integer():
    """``every=1.5`` was truncated to 1 (resampling every step) without a word."""
    domain = pinn.Interval(0.0, 1.0)
    with pytest.raises(TypeError, match="every must be an int"):
        pinn.Collocation(domain, pinn.R3(8), every=1.5)
    with pytest.raises(TypeError, match="every must be an int"):
        pinn.Collocation(domain, pinn.R3(8), every=True)


def test_collocation_period_accepts_integer_scalars():
    domain = pinn.Interval(0.0, 1.0)
    assert int(pinn.Collocation(domain, pinn.R3(8), every=np.int64(3)).every) == 3
    assert int(pinn.Collocation(domain, pinn.R3(8), every=jnp.asarray(2)).every) == 2


def test_traced_sampler_hyperparameters_are_checked_when_the_step_runs():
    """The samplers' hyper-parameters "may be traced", but a traced negative one passed: R3 with
    alpha < 0 opened its gate at late times first, RARD with c < 0 gave points negative density
    (never drawn), without a word. The compiled step now raises, naming the parameter."""
    domain = pinn.Interval(0.0, 1.0)  # coordinate 0 is the time of the causal gate
    key = jax.random.key(0)
    points = jnp.linspace(0.0, 1.0, 8)[:, None]

    def residual_fn(x):
        return 1.0 + x[:, 0]

    def state():
        return pinn.SamplerState(points, domain, jnp.asarray(0.0), jnp.asarray(0, jnp.int32))

    @jax.jit
    def r3_step(alpha):
        return pinn.R3(8, causal=True, alpha=alpha).step(state(), residual_fn, key).points

    @jax.jit
    def rard_step(c):
        return pinn.RARD(8, n_candidates=16, c=c).step(state(), residual_fn, key).points

    # A valid traced alpha gives the points of the concrete one.
    want = pinn.R3(8, causal=True, alpha=5.0).step(state(), residual_fn, key).points
    np.testing.assert_allclose(r3_step(5.0), want, rtol=1e-6)
    with pytest.raises(Exception, match="R3: alpha must be finite and > 0"):
        jax.block_until_ready(r3_step(-5.0))
    with pytest.raises(Exception, match="RARD: c must be finite and >= 0"):
        jax.block_until_ready(rard_step(-1.0))
