"""Training with a solver-heuristic regulariser lowers the test-time NFE at comparable accuracy.

Every test here is a training run, so all run with ``-m slow``. First a two-parameter field whose
final-time map has a one-parameter family of exact fits, from cheap to expensive dynamics;
gradient descent with and without each regulariser (the weights are traced values, so one
compiled program trains every variant side by side). Then a small augmented neural ODE
classifying two spirals, the papers' setting. The full comparison is ``benchmarks/bench_ode.py``.
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import pytest

from jaxsolve import ode

OMEGA = 10.0
TS = jnp.array([0.0, 1.0])
Y0 = jnp.linspace(0.5, 1.5, 4)
CONTROLLER = dfx.PIDController(rtol=1e-4, atol=1e-6)


class Wiggly(eqx.Module):
    r"""f(t, y) = (a + b cos(ωt)) y, whose flow over [0, 1] multiplies y by exp(a + b sin(ω)/ω).

    Every (a, b) on the line a + b sin(ω)/ω = log 2 doubles y exactly, but the oscillating part
    costs the adaptive solver steps: b = 0 is the cheap solution of the fitting problem, and the
    fit alone barely moves b (its gradient carries a factor sin(ω)/ω ≈ -0.05)."""

    a: jax.Array
    b: jax.Array

    def __call__(self, t, y, args):
        return (self.a + self.b * jnp.cos(OMEGA * t)) * y


def fit_wiggly(regulariser, weights, steps=200):
    """Adam on (a, b) from (0.5, 2) to fit y(1) = 2 y(0), once per weight, side by side. The
    learning rate decays to zero, so the noise of a random probe time is annealed away and the
    final iterate is the minimiser the regularised loss leads to, not a point of the oscillation
    that Adam keeps up at a constant rate where a regulariser has a kink (R_E at b = 0).

    A weight is a scalar for a regulariser with one term, or a row holding one weight per term it
    returns (error estimate, then stiffness estimate)."""
    key = jax.random.PRNGKey(0)
    optim = optax.adam(optax.cosine_decay_schedule(0.05, steps))

    def loss(params, weight, key):
        node = ode.NeuralODE(Wiggly(*params), dfx.Tsit5(), CONTROLLER)

        def one(y, k):
            sol = node(TS, y, regulariser=regulariser, key=k)
            terms = [t for t in (sol.error_estimate, sol.stiffness_estimate) if t is not None]
            w = jnp.reshape(weight, (-1,))
            if w.shape[0] != len(terms):
                raise ValueError(f"weights: one per term ({len(terms)}); got {w.shape[0]}.")
            penalty = w[0] * terms[0]
            for i in range(1, len(terms)):
                penalty = penalty + w[i] * terms[i]
            return (sol.ys[-1] - 2.0 * y) ** 2 + penalty

        return jnp.mean(jax.vmap(one)(Y0, jax.random.split(key, Y0.shape[0])))

    def train(weight):
        params = (jnp.array(0.5), jnp.array(2.0))

        def step(carry, i):
            p, s = carry
            grads = jax.grad(loss)(p, weight, jax.random.fold_in(key, i))
            updates, s = optim.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (params, optim.init(params)), jnp.arange(steps))
        sol = jax.vmap(lambda y: ode.NeuralODE(Wiggly(*p), dfx.Tsit5(), CONTROLLER)(TS, y))(Y0)
        return jnp.mean(sol.nfe), jnp.mean((sol.ys[:, -1] - 2.0 * Y0) ** 2), p[1]

    return jax.jit(jax.vmap(train))(jnp.asarray(weights))


def check_cheaper(nfe, mse, b, ratio):
    # Without a regulariser nothing pushes b down, and the dynamics stay expensive.
    assert float(abs(b[0])) > 1.5, b
    for i in range(1, nfe.shape[0]):
        assert float(nfe[i]) < ratio * float(nfe[0]), (nfe, b)
        assert float(abs(b[i])) < 0.6 * float(abs(b[0])), (nfe, b)
    # Comparable accuracy: every variant fits the map.
    assert float(jnp.max(mse)) < 1e-5, mse


@pytest.mark.slow  # a training comparison: benchmarks/bench_ode.py measures it in full
def test_global_regularisers_select_the_cheap_dynamics():
    """Error and stiffness sums of "Opening the Blackbox" (both from one regularised solve):
    weights (0, 0), (0.05, 0) and (0, 0.01) for (R_E, R_S).

    A regulariser trades accuracy for NFE, and the paper compares at matched accuracy, so the
    weights are chosen for it. At the optimum of fit + w R the fit's gradient in a, about
    8 m δ (δ the error of log(y(1)/y(0)), m = mean y0² = 1.14), balances w ∂R/∂a, which leaves a
    squared error m (2δ)² = (w ∂R/∂a)² / (16 m). On the exact fits near b = 0,
    |∂R_E/∂a| <= 0.22 (float64, steps held fixed as in training), and |∂R_S/∂a| <= 1 since
    R_S ≈ ∫|a + b cos ωt| dt; the weights bound the error by 7e-6 and 6e-6, below the 1e-5 of
    check_cheaper. (With w_E = 0.3 the bound is 2.4e-4; such runs ended anywhere from 3e-7 to
    6e-5 with the precision and the length of training.)
    On the exact fits R_S ≈ log 2 whenever |b| <= a, so R_S pushes b into that band, not to 0;
    and NFE along the exact fits is not monotone in b (45-57 for b in 0.5-1, float64), so the
    stiffness variant's 0.8 ratio (50.4 of 63) holds where this training ends (b ≈ 0.95, NFE
    45-46.5 in float32 and float64) but would not at b ≈ 0.86 (NFE 51): if it ever fails, look
    there first rather than at the ratio.
    """
    weights = [[0.0, 0.0], [0.05, 0.0], [0.0, 0.01]]
    nfe, mse, b = fit_wiggly(ode.GlobalRegulariser(stiffness=True), weights)
    check_cheaper(nfe, mse, b, ratio=0.8)


@pytest.mark.slow
@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
def test_local_regulariser_selects_the_cheap_dynamics(sampling):
    nfe, mse, b = fit_wiggly(ode.LocalRegulariser(sampling), [0.0, 1e3])
    check_cheaper(nfe, mse, b, ratio=0.8)


# ---- slow: the spiral classification of the benchmark, in small ------------------------------

TS = jnp.array([0.0, 1.0])


def spirals(key, n):
    k1, k2 = jax.random.split(key)
    theta = jnp.sqrt(jax.random.uniform(k1, (n,))) * 2.0 * jnp.pi
    label = (jnp.arange(n) % 2).astype(jnp.float32)
    sign = (1.0 - 2.0 * label)[:, None]
    x = sign * jnp.stack([theta * jnp.cos(theta), theta * jnp.sin(theta)], -1) / (2.0 * jnp.pi)
    return x + 0.02 * jax.random.normal(k2, (n, 2)), label


class Classifier(eqx.Module):
    lift: eqx.nn.Linear
    node: ode.NeuralODE
    readout: eqx.nn.Linear

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.lift = eqx.nn.Linear(2, 3, key=k1)
        field = ode.MLPField(3, 16, 1, key=k2, time_dependent=True)
        self.node = ode.NeuralODE(field, dfx.Tsit5(), dfx.PIDController(rtol=1e-3, atol=1e-5))
        self.readout = eqx.nn.Linear(3, "scalar", key=k3)


def train_variants(regulariser, weights, steps, *, n_train=128, n_test=256):
    """Train one model per weight (same data, initial weights and keys); test NFE and accuracy."""
    x, y = spirals(jax.random.PRNGKey(0), n_train)
    x_test, y_test = spirals(jax.random.PRNGKey(1), n_test)
    params, static = eqx.partition(Classifier(jax.random.PRNGKey(2)), eqx.is_inexact_array)
    optim = optax.adam(1e-2)

    def loss(params, weight, key):
        m = eqx.combine(params, static)

        def one(xi, yi, k):
            sol = m.node(TS, m.lift(xi), regulariser=regulariser, key=k)
            bce = optax.sigmoid_binary_cross_entropy(m.readout(sol.ys[-1]), yi)
            term = sol.error_estimate if sol.error_estimate is not None else sol.stiffness_estimate
            return bce + weight * term

        return jnp.mean(jax.vmap(one)(x, y, jax.random.split(key, n_train)))

    def train(weight):
        def step(carry, i):
            p, s = carry
            grads = jax.grad(loss)(p, weight, jax.random.fold_in(jax.random.PRNGKey(3), i))
            updates, s = optim.update(grads, s, p)
            return (eqx.apply_updates(p, updates), s), None

        (p, _), _ = jax.lax.scan(step, (params, optim.init(params)), jnp.arange(steps))
        m = eqx.combine(p, static)
        sol = jax.vmap(lambda xi: m.node(TS, m.lift(xi)))(x_test)
        logits = jax.vmap(m.readout)(sol.ys[:, -1])
        return jnp.mean(sol.nfe), jnp.mean((logits > 0) == (y_test > 0.5))

    return jax.jit(jax.vmap(train))(jnp.asarray(weights))


@pytest.mark.slow
@pytest.mark.parametrize(
    "regulariser, weight",
    [
        (ode.GlobalRegulariser(), 0.1),
        (ode.GlobalRegulariser(error=False, stiffness=True), 0.1),
        (ode.LocalRegulariser("unbiased"), 1000.0),
        (ode.LocalRegulariser("biased"), 1000.0),
    ],
    ids=["global-error", "global-stiffness", "local-unbiased", "local-biased"],
)
def test_each_regulariser_lowers_nfe_on_spirals(regulariser, weight):
    nfe, acc = train_variants(regulariser, [0.0, weight], steps=600)
    assert float(acc[0]) > 0.7  # the unregularised model did learn
    assert float(nfe[1]) < 0.9 * float(nfe[0]), (nfe, acc)
    assert float(acc[1]) > float(acc[0]) - 0.05, (nfe, acc)
