"""Parameters of backward modes and hypergradient methods, traced (a sweep under ``jit`` /
``vmap``): valid values give the concrete results, invalid ones raise naming the parameter when
the compiled code runs, as a concrete value raises when the object is built. Unchecked, a traced
step size, damping or penalty of 0 or below gave finite, wrong derivatives."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import implicit as ji

from ._problems import RUNTIME_ERRORS


def _cos_map(z, a):
    return a * jnp.cos(z)


def _grad(backward, a=0.5):
    return jax.grad(lambda a: ji.fixed_point(_cos_map, jnp.zeros(()), a, backward=backward).value)(
        a
    )


def _cos_fixed_point(a=0.5):
    z = 0.0
    for _ in range(200):
        z = a * np.cos(z)
    return z


def test_phantom_damping_swept_matches_its_closed_form(x64):
    # k damped steps from z* = a cos z*: lam * sum_{j<k} ((1 - lam) + lam f'(z*))^j * cos z*,
    # with f'(z*) = -a sin z* (the truncated Neumann series of the module docstring).
    a, z = 0.5, _cos_fixed_point()
    dampings = np.array([0.5, 1.0])
    swept = jax.jit(jax.vmap(lambda d: _grad(ji.PhantomGradient(damping=d))))(dampings)
    m = (1 - dampings) + dampings * (-a * np.sin(z))
    expected = dampings * sum(m**j for j in range(5)) * np.cos(z)
    np.testing.assert_allclose(swept, expected, rtol=1e-5)


@pytest.mark.parametrize("damping", [-1.0, 0.0, float("nan")])
def test_phantom_damping_traced_out_of_range_raises(x64, damping):
    # A negative damping steps away from the fixed point: the gradient would be finite and
    # wrong (-38.9 for -1 where the true derivative is 0.739).
    with pytest.raises(ValueError, match="damping must be positive"):
        ji.PhantomGradient(damping=damping)
    with pytest.raises(RUNTIME_ERRORS, match="PhantomGradient damping must be positive"):
        jax.jit(lambda d: _grad(ji.PhantomGradient(damping=d)))(damping)


@pytest.mark.parametrize("name", ["rtol", "atol"])
def test_implicit_diff_tolerance_traced_negative_is_named(x64, name):
    with pytest.raises(RUNTIME_ERRORS, match=f"ImplicitDiff: {name} must be positive"):
        jax.jit(lambda t: _grad(ji.ImplicitDiff(**{name: t})))(-1.0)


def test_implicit_diff_budget_traced_negative_is_named(x64):
    backward = lambda m: ji.ImplicitDiff(ji.Picard(), max_steps=m, throw=False)
    with pytest.raises(RUNTIME_ERRORS, match="ImplicitDiff max_steps must be >= 0"):
        jax.jit(lambda m: _grad(backward(m)))(-1)
    # A budget sweep: too short a budget is a failed backward solve (NaN with throw=False).
    swept = jax.jit(jax.vmap(lambda m: _grad(backward(m))))(jnp.array([1, 100]))
    assert np.isnan(swept[0])
    a, z = 0.5, _cos_fixed_point()
    np.testing.assert_allclose(swept[1], np.cos(z) / (1 + a * np.sin(z)), rtol=1e-5)


def _inner(w, lam, args):
    return jnp.sum((w - 2.0) ** 2) + 0.5 * jnp.exp(lam) * jnp.sum(w**2)


def _outer(w, lam, args):
    return jnp.sum((w - 1.0) ** 2)


def _hypergradient(method):
    return ji.hypergradient(_outer, _inner, jnp.zeros(()), jnp.zeros(2), method=method).grad


# w*(lam) = 4 / (2 + exp(lam)); at lam = 0 the outer derivative is 2 * 2 * (1/3) * (-4/9).
_EXACT = -16 / 27

_METHODS = {
    "ImplicitHypergradient step_size": lambda v: ji.ImplicitHypergradient(step_size=v),
    "UnrolledHypergradient step_size": lambda v: ji.UnrolledHypergradient(
        num_steps=60, step_size=v
    ),
    "PenaltyHypergradient gamma": lambda v: ji.PenaltyHypergradient(gamma=v),
    "PenaltyHypergradient step_size": lambda v: ji.PenaltyHypergradient(step_size=v),
    "PenaltyHypergradient inner_step_size": lambda v: ji.PenaltyHypergradient(inner_step_size=v),
}


def test_hypergradient_step_sizes_swept(x64):
    # Exact for the implicit method at any step size.
    swept = jax.jit(jax.vmap(lambda e: _hypergradient(ji.ImplicitHypergradient(step_size=e))))
    np.testing.assert_allclose(swept(jnp.array([1.0, 0.5])), [_EXACT, _EXACT], rtol=1e-8)
    # K gradient steps from 0 at lam = 0: w_K = w* (1 - r^K) with r = 1 - 3 eta, w* = 4/3, so
    # dw_K/dlam = -(4/9)(1 - r^K) + w* K r^(K-1) eta (dr/dlam = -eta), and the outer derivative
    # is 2 * 2 (w_K - 1) dw_K/dlam.
    k, etas = 20, np.array([0.1, 0.2])
    unrolled = lambda e: _hypergradient(ji.UnrolledHypergradient(num_steps=k, step_size=e))
    r = 1 - 3 * etas
    w_k = 4 / 3 * (1 - r**k)
    dw = -4 / 9 * (1 - r**k) + 4 / 3 * k * r ** (k - 1) * etas
    np.testing.assert_allclose(jax.jit(jax.vmap(unrolled))(etas), 4 * (w_k - 1) * dw, rtol=1e-10)


@pytest.mark.parametrize("name", list(_METHODS))
def test_hypergradient_parameter_traced_non_positive_raises(x64, name):
    build = _METHODS[name]
    with pytest.raises(ValueError, match=f"{name} must be positive"):
        build(0.0)
    with pytest.raises(RUNTIME_ERRORS, match=f"{name} must be positive"):
        jax.jit(lambda v: _hypergradient(build(v)))(0.0)
