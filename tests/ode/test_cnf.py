"""Continuous normalising flows: closed forms for a linear field, inversion, Hutchinson's mean,
the regularisers' terms, failures and bad input.

For :math:`f = Ax`: :math:`x(T) = e^{AT}x_0`, :math:`\\log p(x_0) = \\log\\mathcal N(e^{AT}x_0)
+ T\\operatorname{tr}A`, and every integral :math:`\\int_0^T\\lVert B e^{At}x_0\\rVert^2dt =
x_0^\\top W x_0` with :math:`A^\\top W + W A = e^{A^\\top T}B^\\top B e^{AT} - B^\\top B` (a Lyapunov
equation, solved here by Kronecker products).
"""

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve.ode import (
    ExactDivergence,
    GlobalRegulariser,
    HutchinsonDivergence,
    LocalRegulariser,
    MLPField,
)
from jaxsolve.ode._cnf import CNF, RNODE, TayNODE, total_derivative

A = np.array([[-0.3, 0.8], [-0.5, 0.2]])
T = 1.3


class Linear(eqx.Module):
    matrix: jax.Array

    def __call__(self, t, x, args):
        return self.matrix @ x


class Broken(eqx.Module):
    """A field that is NaN from ``t_bad`` on: a solve through it must fail loudly."""

    t_bad: float

    def __call__(self, t, x, args):
        return jnp.where(t >= self.t_bad, jnp.nan, 1.0) * x


def exact_log_prob(x0):
    z = x0 @ np.asarray(jsl.expm(jnp.asarray(A * T))).T
    return -0.5 * np.sum(z**2, -1) - np.log(2 * np.pi) + T * np.trace(A)


def quadratic_integral(B, x0):
    r""":math:`\int_0^T\lVert B e^{At}x_0\rVert^2 dt` for each row of ``x0`` (Lyapunov)."""
    d = A.shape[0]
    Q = B.T @ B
    E = np.asarray(jsl.expm(jnp.asarray(A * T)))
    rhs = E.T @ Q @ E - Q
    # A^T W + W A = rhs  <=>  (I ⊗ A^T + A^T ⊗ I) vec(W) = vec(rhs) (column-major vec).
    K = np.kron(np.eye(d), A.T) + np.kron(A.T, np.eye(d))
    W = np.linalg.solve(K, rhs.reshape(-1, order="F")).reshape(d, d, order="F")
    return np.einsum("ni,ij,nj->n", x0, W, x0)


def test_linear_field_closed_forms(x64):
    """Exact log-likelihood, RNODE's kinetic and Jacobian terms and TayNODE's integral equal the
    closed forms for f = Ax to round-off (one solve carries all of them)."""
    x0 = np.asarray(jax.random.normal(jax.random.key(0), (4, 2), jnp.float64))
    tight = dfx.PIDController(rtol=1e-12, atol=1e-12)
    cnf = CNF(Linear(jnp.asarray(A)), T, ExactDivergence(), stepsize_controller=tight)
    reg = cnf.log_prob(jnp.asarray(x0), regulariser=(RNODE(), TayNODE(order=2)))
    assert bool(jnp.all(reg.result == RESULTS.successful))
    np.testing.assert_allclose(reg.log_prob, exact_log_prob(x0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(reg.delta_log_prob, T * np.trace(A), rtol=1e-11)
    np.testing.assert_allclose(reg.kinetic, quadratic_integral(A, x0), rtol=1e-9)
    np.testing.assert_allclose(reg.jacobian, T * np.sum(A**2), rtol=1e-11)
    np.testing.assert_allclose(reg.taylor, quadratic_integral(A @ A, x0), rtol=1e-9)
    assert sorted(reg.integrals) == ["jacobian", "kinetic", "taylor"]
    assert reg.error_estimate is None and reg.probe_time is None


def test_total_derivative_is_matrix_power(x64):
    """TayNODE's K-th total derivative of x' = Ax is A^K x (K = 1..4), and for the
    time-dependent x' = t x it is the closed form d^K/dt^K exp(t^2/2) x0 / exp(t^2/2)."""
    x = jnp.array([0.7, -1.1])
    for k in range(1, 5):
        got = total_derivative(Linear(jnp.asarray(A)), 0.3, x, None, k)
        np.testing.assert_allclose(got, np.linalg.matrix_power(A, k) @ x, rtol=1e-13)
    t = 0.4
    # x(s) = exp(s^2/2) c: x' = s x, x'' = (1 + s^2) x, x''' = (3 s + s^3) x.
    third = total_derivative(lambda s, y, a: s * y, t, x, None, 3)
    np.testing.assert_allclose(third, (3 * t + t**3) * x, rtol=1e-13)


def test_sampling_inverts_density_map(x64):
    """The reverse solve of the latent returns the data point (a nonlinear, time-dependent
    field, so the map is far from the identity)."""
    field = MLPField(2, 16, 2, key=jax.random.key(1), activation=jnp.tanh, time_dependent=True)
    tight = dfx.PIDController(rtol=1e-10, atol=1e-10)
    cnf = CNF(field, 1.0, stepsize_controller=tight)
    x = jax.random.normal(jax.random.key(2), (3, 2), jnp.float64)
    forward, back = jax.jit(lambda x: (f := cnf.log_prob(x), cnf.inverse(f.latent)))(x)
    assert bool(jnp.all(back.result == RESULTS.successful))
    np.testing.assert_allclose(back.x, x, rtol=0, atol=1e-8)
    assert float(jnp.max(jnp.abs(forward.latent - x))) > 1e-2


def test_sample_is_batch_independent_reverse_solve(x64):
    """sample() draws z_i from fold_in(key, i) and solves back: for f = Ax that is
    x_i = e^{-AT} z_i, and a sample does not change with the batch size."""
    cnf = CNF(Linear(jnp.asarray(A)), T, stepsize_controller=dfx.PIDController(1e-11, 1e-11))
    key = jax.random.key(3)
    s3 = cnf.sample(key, 3, (2,))
    s2 = cnf.sample(key, 2, (2,))
    z0 = jax.random.normal(jax.random.fold_in(key, 0), (2,), jnp.float64)
    np.testing.assert_array_equal(s3.latent[0], z0)
    expected = s3.latent @ np.asarray(jsl.expm(jnp.asarray(-A * T))).T
    np.testing.assert_allclose(s3.x, expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(s2.x, s3.x[:2], rtol=0, atol=1e-12)


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_mean_converges(x64, probe):
    """Hutchinson's log-likelihood is unbiased: over 2000 probe draws its mean is within four
    standard errors of the exact value; sample i's value does not depend on the batch (its
    probes come from fold_in(key, i))."""
    n = 2000
    x0 = np.array([[0.4, -0.9]])
    cnf = CNF(Linear(jnp.asarray(A)), T, HutchinsonDivergence(probe, 1))
    out = jax.jit(lambda x, k: cnf.log_prob(x, key=k))(
        jnp.repeat(jnp.asarray(x0), n, 0), jax.random.key(4)
    )
    assert out.kinetic is None and out.integrals == {}
    mean, se = float(out.log_prob.mean()), float(out.log_prob.std() / np.sqrt(n))
    assert se > 0
    assert abs(mean - exact_log_prob(x0)[0]) < 4 * se
    if probe == "rademacher":  # one more compile: checked for one probe kind only
        few = cnf.log_prob(jnp.repeat(jnp.asarray(x0), 3, 0), key=jax.random.key(4))
        np.testing.assert_allclose(few.log_prob, out.log_prob[:3], rtol=1e-12)


def test_solver_heuristic_regularisers_through_the_seam(x64):
    """GlobalRegulariser and LocalRegulariser take the CNF's solve as they take a NeuralODE's:
    both leave the density unchanged (same solve) and return positive error terms; the local one
    returns a probe time in [0, T] and counts its probe step in NFE. The CNF's own integrals
    (RNODE) combine with either."""
    field = MLPField(2, 8, 1, key=jax.random.key(5), activation=jnp.tanh)
    cnf = CNF(field, 1.0, stepsize_controller=dfx.PIDController(rtol=1e-5, atol=1e-5))
    x = jax.random.normal(jax.random.key(6), (2, 2), jnp.float64)

    @eqx.filter_jit
    def run(cnf, x, key):
        glob = cnf.log_prob(x, regulariser=GlobalRegulariser())
        loc = cnf.log_prob(x, regulariser=(LocalRegulariser(), RNODE()), key=key)
        return glob, loc

    glob, loc = run(cnf, x, jax.random.key(7))
    assert bool(jnp.all(glob.result == RESULTS.successful))
    assert bool(jnp.all(glob.error_estimate > 0))
    assert bool(jnp.all((loc.probe_time >= 0) & (loc.probe_time <= 1.0)))
    assert bool(jnp.all(loc.error_estimate > 0))
    assert bool(jnp.all(loc.kinetic > 0))
    # Tsit5 with the controller's initial-step heuristic: 2 + 1 + 6 per step; the probe step 2 + 1 + 6.
    np.testing.assert_array_equal(glob.nfe, 3 + 6 * glob.num_steps)
    np.testing.assert_array_equal(loc.nfe, 3 + 6 * loc.num_steps + 9)
    np.testing.assert_allclose(loc.log_prob, glob.log_prob, rtol=1e-12)


@pytest.mark.slow
def test_regularised_cnf_gradients_are_finite(x64):
    """The training loss of each regulariser differentiates through the solve (nonzero, finite
    gradients in the field's parameters)."""
    field = MLPField(2, 8, 1, key=jax.random.key(5), activation=jnp.tanh)
    cnf = CNF(field, 1.0, HutchinsonDivergence(), stepsize_controller=dfx.PIDController(1e-5, 1e-5))
    x = jax.random.normal(jax.random.key(6), (2, 2), jnp.float64)

    def loss(cnf, key):
        out = cnf.log_prob(x, regulariser=(GlobalRegulariser(), RNODE(), TayNODE(order=2)), key=key)
        extra = out.error_estimate + out.kinetic + out.jacobian + out.taylor
        return -out.log_prob.mean() + extra.mean()

    grads = eqx.filter_jit(eqx.filter_grad(loss))(cnf, jax.random.key(8))
    leaves = jax.tree_util.tree_leaves(eqx.filter(grads, eqx.is_inexact_array))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in leaves)


def test_failed_solve_is_flagged():
    """A field that is NaN gives result nonfinite (after one step, not max_steps) and log_prob
    NaN with throw=False, and an error with throw=True."""
    x = jnp.ones((2, 2))
    out = CNF(Broken(0.0), 1.0, throw=False).log_prob(x)
    assert bool(jnp.all(out.result == RESULTS.nonfinite))
    assert bool(jnp.all(jnp.isnan(out.log_prob)))
    assert bool(jnp.all(out.num_steps <= 1))
    with pytest.raises(Exception, match="NaN or infinity"):
        jax.block_until_ready(CNF(Broken(0.0), 1.0).log_prob(x).log_prob)


@pytest.mark.slow
def test_failed_reverse_and_late_failures_are_flagged():
    """The reverse solve flags a NaN field too (samples inf, never a number); a field that turns
    NaN half-way fails with some code (step size too small: the solver cannot step past it), never
    as a success with a number."""
    x = jnp.ones((2, 2))
    back = CNF(Broken(0.0), 1.0, throw=False).inverse(x)
    assert bool(jnp.all(back.result == RESULTS.nonfinite))
    assert not bool(jnp.any(jnp.isfinite(back.x)))
    late = CNF(Broken(0.5), 1.0, throw=False, max_steps=64).log_prob(x)
    assert bool(jnp.all(late.result != RESULTS.successful))
    assert bool(jnp.all(jnp.isnan(late.log_prob)))


def test_bad_input_raises():
    field = Linear(jnp.asarray(A, jnp.float32))
    cnf = CNF(field)
    x = jnp.ones((3, 2))
    with pytest.raises(TypeError, match="vector_field"):
        CNF(3)
    with pytest.raises(TypeError, match="divergence"):
        CNF(field, 1.0, "exact")
    with pytest.raises(ValueError, match="t1"):
        CNF(field, -1.0)
    with pytest.raises(ValueError, match="order"):
        TayNODE(order=0)
    with pytest.raises(ValueError, match="RNODE"):
        RNODE(kinetic=False, jacobian=False)
    with pytest.raises(ValueError, match="batch axis"):
        cnf.log_prob(jnp.ones(2))
    with pytest.raises(TypeError, match="x must be real"):
        cnf.log_prob(x + 1j)
    with pytest.raises(ValueError, match="key"):
        CNF(field, 1.0, HutchinsonDivergence()).log_prob(x)
    with pytest.raises(ValueError, match="key"):
        cnf.log_prob(x, regulariser=LocalRegulariser())
    with pytest.raises(TypeError, match="regulariser"):
        cnf.log_prob(x, regulariser="rnode")
    with pytest.raises(ValueError, match="at most one"):
        cnf.log_prob(
            x, regulariser=(GlobalRegulariser(), LocalRegulariser()), key=jax.random.key(0)
        )
    with pytest.raises(ValueError, match="twice"):
        cnf.log_prob(x, regulariser=(RNODE(), RNODE(jacobian=False)))
    with pytest.raises(ValueError, match="shape"):
        cnf.log_prob(jnp.ones((3, 3)))
    with pytest.raises(TypeError, match="event_shape"):
        cnf.sample(jax.random.key(0), 2, 2)
