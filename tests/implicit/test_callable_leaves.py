"""Cells and arguments that hold functions next to arrays.

An Equinox module keeps callables as ordinary pytree leaves (``eqx.nn.MLP`` holds its
``activation`` and ``final_activation`` that way), and ``args`` is documented as any pytree. The
entry points' shape checks must treat such leaves as static, as the solves themselves do: a
``jax.eval_shape`` over them refused every DEQ built on an MLP cell with a message blaming the
shape of ``z0``.
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import contraction, normal


class _ActivationCell(eqx.Module):
    """``activation(W z + x)`` with the activation a field, as in ``eqx.nn.MLP``."""

    weight: jax.Array
    activation: Callable

    def __call__(self, z, x):
        return self.activation(self.weight @ z + x)


def _tanh_fixed_point_and_weight_gradient(w, x):
    """``z* = tanh(W z* + x)`` by a long Picard run in NumPy, and the closed-form gradient of
    ``sum(z*)`` with respect to ``W``: ``outer(D (I - W^T D)^{-1} 1, z*)``, ``D = 1 - z*^2``."""
    w, x = np.asarray(w), np.asarray(x)
    z = np.zeros_like(x)
    for _ in range(400):
        z = np.tanh(w @ z + x)
    d = np.diag(1 - z**2)
    u = d @ np.linalg.solve(np.eye(len(x)) - w.T @ d, np.ones_like(x))
    return z, np.outer(u, z)


def test_deq_cell_holding_its_activation_solves_and_differentiates(x64):
    w, x = contraction(4, 0.6), normal(1, (4,))
    deq = ji.DEQ(_ActivationCell(w, jnp.tanh), rtol=1e-11, atol=1e-12)
    z_ref, grad_ref = _tanh_fixed_point_and_weight_gradient(w, x)

    def loss(deq):
        out = deq(x)
        return jnp.sum(out.value), out

    (_, out), grads = eqx.filter_jit(eqx.filter_value_and_grad(loss, has_aux=True))(deq)
    assert out.solution.result == RESULTS.successful
    np.testing.assert_allclose(out.value, z_ref, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(grads.cell.weight, grad_ref, rtol=1e-7, atol=1e-9)


def test_fixed_point_with_a_function_in_args_in_both_modes(x64):
    # z = a cos(z): dz/da = cos z / (1 + a sin z).
    a = 0.5

    def solve(a):
        return ji.fixed_point(lambda z, p: p[1] * p[0](z), jnp.zeros(()), (jnp.cos, a)).value

    # Under jit (one compile per mode; eagerly every loop compiles on its own).
    z, tangent = jax.jit(lambda a: jax.jvp(solve, (a,), (1.0,)))(a)
    expected = np.cos(z) / (1 + a * np.sin(z))
    np.testing.assert_allclose(z, a * np.cos(z), atol=1e-5)
    np.testing.assert_allclose(tangent, expected, rtol=1e-5)
    np.testing.assert_allclose(jax.jit(jax.grad(solve))(a), expected, rtol=1e-5)


def test_hypergradient_with_a_function_in_args(x64):
    # G = loss(w) + exp(lam) |w|^2 / 2 with loss = |w - 2|^2: w* = 4 / (2 + exp(lam)), and at
    # lam = 0 the outer |w* - 1|^2 summed over two entries has derivative 2 * 2 (1/3)(-4/9).
    def inner(w, lam, args):
        return args["loss"](w) + 0.5 * jnp.exp(lam) * jnp.sum(w**2)

    def outer(w, lam, args):
        return jnp.sum((w - 1.0) ** 2)

    args = {"loss": lambda w: jnp.sum((w - 2.0) ** 2)}
    hg = jax.jit(lambda lam: ji.hypergradient(outer, inner, lam, jnp.zeros(2), args))(0.0)
    assert hg.inner.result == RESULTS.successful
    np.testing.assert_allclose(hg.inner.value, [4 / 3, 4 / 3], rtol=1e-6)
    np.testing.assert_allclose(hg.grad, -16 / 27, rtol=1e-6)


def test_custom_root_with_a_function_argument(x64):
    @ji.custom_root(lambda x, fn, a: a * fn(x) - x)
    def solver(x0, fn, a):
        return ji.fixed_point(lambda z, p: p[1] * p[0](z), x0, (fn, a), rtol=1e-10).value

    a = 0.5
    z, grad = jax.jit(jax.value_and_grad(lambda a: solver(jnp.zeros(()), jnp.cos, a)))(a)
    np.testing.assert_allclose(grad, np.cos(z) / (1 + a * np.sin(z)), rtol=1e-8)


def test_outputs_that_are_python_numbers_or_functions():
    # The checks read the outputs' shapes without jax.eval_shape's conversion: a number is
    # still a scalar (cast to the state), a function is named as what fn returned.
    solve = jax.jit(lambda z0: ji.fixed_point(lambda z, _: 0.5, z0).value)
    assert float(solve(jnp.zeros(()))) == 0.5
    with pytest.raises(ValueError, match="but fn returned PjitFunction"):
        ji.fixed_point(lambda z, _: jnp.cos, jnp.zeros(()))
    inner = lambda w, lam, args: jnp.sum((w - lam) ** 2)
    with pytest.raises(ValueError, match=r"outer_fn.*must return a real floating scalar"):
        ji.hypergradient(lambda w, lam, args: jnp.cos, inner, jnp.zeros(()), jnp.zeros(2))
