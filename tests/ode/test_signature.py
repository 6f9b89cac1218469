r"""The signature kernel (Goursat PDE), the signature MMD and the signature-kernel score.

Closed forms: the kernel of two straight lines is :math:`\sum_k c^k/(k!)^2 = I_0(2\sqrt c)`
(:math:`J_0(2\sqrt{-c})` for :math:`c < 0`), :math:`c = \langle \Delta x, \Delta y\rangle`, and the
scheme's error falls as :math:`4^{-\lambda}` under dyadic refinement :math:`\lambda`. Reference:
truncated signatures from ``signax`` (its conventions checked first against the closed forms of the
signature: a straight line's is the tensor exponential of its increment, Chen's identity, the Lévy
area of a square loop, invariance under reparametrisation and translation), whose inner product the
kernel matches to the truncation and PDE errors.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import i0, j0

from jaxsolve.ode._signature import (
    signature_kernel,
    signature_kernel_matrix,
    signature_kernel_score,
    signature_mmd,
)


def _levels(path, depth):
    signax = pytest.importorskip("signax")
    return signax.signature(jnp.asarray(path), depth, flatten=False)


def _check_gradient(f, args, seed=0):
    """Reverse-mode gradients of the scalar ``f`` against central differences (step 1e-6,
    float64) along a random direction in every argument: truncation error ~1e-12 relative."""
    f = jax.jit(f)
    grads = jax.jit(jax.grad(f, argnums=tuple(range(len(args)))))(*args)
    rng = np.random.default_rng(seed)
    directions = [rng.normal(size=np.shape(a)) for a in args]
    eps = 1e-6
    plus = f(*(a + eps * d for a, d in zip(args, directions, strict=True)))
    minus = f(*(a - eps * d for a, d in zip(args, directions, strict=True)))
    numeric = (float(plus) - float(minus)) / (2 * eps)
    analytic = sum(float(jnp.sum(g * d)) for g, d in zip(grads, directions, strict=True))
    assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-9), (analytic, numeric)


def _tensor_power(v, k):
    out = np.ones(())
    for _ in range(k):
        out = np.multiply.outer(out, v)
    return out


# ---------------------------------------------------------------- the reference (signax)


def test_signax_straight_line_is_the_tensor_exponential_and_jits_vmaps_grads(x64):
    signax = pytest.importorskip("signax")
    dx = np.array([0.7, -0.4, 1.3])
    path = np.stack([np.array([2.0, 1.0, -1.0]), np.array([2.0, 1.0, -1.0]) + dx])
    for k, level in enumerate(_levels(path, 4), start=1):
        np.testing.assert_allclose(level, _tensor_power(dx, k) / math.factorial(k), rtol=1e-13)
    rng = np.random.default_rng(0)
    batch = jnp.asarray(rng.normal(size=(3, 5, 2)))
    flat = jax.vmap(lambda p: signax.signature(p, 3))(batch)
    np.testing.assert_allclose(
        jax.jit(lambda p: signax.signature(p, 3))(batch[1]), flat[1], rtol=1e-13
    )
    _check_gradient(lambda p: jnp.sum(jnp.sin(signax.signature(p, 3))), (batch[0],))


def test_signax_chen_reparametrisation_translation_and_levy_area(x64):
    rng = np.random.default_rng(1)
    a = rng.normal(size=(4, 2))
    b = a[-1] + rng.normal(size=(3, 2))
    depth = 4
    whole = _levels(np.concatenate([a, b[1:]]), depth)
    sa, sb = _levels(a, depth), _levels(np.concatenate([a[-1:], b[1:]]), depth)
    # Chen: S(a * b)_k = sum_{i+j=k} S(a)_i (x) S(b)_j, S_0 = 1.
    for k in range(1, depth + 1):
        chen = np.asarray(sa[k - 1]) + np.asarray(sb[k - 1])
        for i in range(1, k):
            chen = chen + np.multiply.outer(np.asarray(sa[i - 1]), np.asarray(sb[k - i - 1]))
        np.testing.assert_allclose(whole[k - 1], chen, rtol=1e-12, atol=1e-14)
    # A point inserted on a segment, a repeated point, a translation: nothing changes.
    inserted = np.insert(a, 2, 0.3 * a[1] + 0.7 * a[2], axis=0)
    repeated = np.insert(a, 1, a[1], axis=0)
    for other in (inserted, repeated, a + np.array([5.0, -2.0])):
        for mine, theirs in zip(_levels(a, depth), _levels(other, depth), strict=True):
            np.testing.assert_allclose(mine, theirs, rtol=1e-12, atol=1e-14)
    # The unit square run anticlockwise: level 1 is 0, the Lévy area (S^12 - S^21)/2 is 1.
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    s1, s2 = _levels(square, 2)
    np.testing.assert_allclose(s1, 0.0, atol=1e-15)
    assert float(s2[0, 1] - s2[1, 0]) / 2 == pytest.approx(1.0, rel=1e-14)


# ---------------------------------------------------------------- the kernel


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_straight_lines_match_the_bessel_closed_form_at_second_order(x64, sign):
    dx = np.array([0.8, -0.3, 0.5])
    dy = sign * np.array([0.6, 0.4, 1.1])
    c = float(dx @ dy)  # 0.91 or -0.91
    exact = i0(2 * np.sqrt(c)) if c >= 0 else j0(2 * np.sqrt(-c))
    x = np.stack([np.zeros(3), dx])
    y = np.stack([np.ones(3), np.ones(3) + dy])
    errors = [abs(float(signature_kernel(x, y, refinement=lam)) - exact) for lam in range(3, 7)]
    # Second order in the mesh 2^-lambda: each halving divides the error by ~4.
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 3.3) & (ratios < 4.5)), (errors, ratios)
    assert errors[-1] < 1e-5 * max(1.0, abs(exact)), errors


def test_kernel_matches_truncated_signature_inner_product(x64):
    rng = np.random.default_rng(0)
    x = 0.4 * rng.normal(size=(6, 2))
    y = 0.4 * rng.normal(size=(5, 2))
    depth = 10  # level 10 contributes ~1e-13: the truncation is far below the PDE error
    reference = 1.0 + sum(
        float(jnp.sum(a * b)) for a, b in zip(_levels(x, depth), _levels(y, depth), strict=True)
    )
    k5 = float(signature_kernel(x, y, refinement=5))
    k6 = float(signature_kernel(x, y, refinement=6))
    errors = abs(k5 - reference), abs(k6 - reference)
    assert errors[0] / errors[1] > 3.5 and errors[1] < 2e-5 * reference, errors
    # Richardson's extrapolation of the second-order scheme removes the leading error.
    assert abs((4 * k6 - k5) / 3 - reference) < 0.1 * errors[1]


def test_kernel_invariances_are_exact(x64):
    rng = np.random.default_rng(2)
    x = 0.5 * rng.normal(size=(5, 3))
    y = 0.5 * rng.normal(size=(7, 3))
    k = float(signature_kernel(x, y, refinement=1))
    assert float(signature_kernel(y, x, refinement=1)) == pytest.approx(k, rel=1e-13)
    shifted = float(signature_kernel(x + 3.0, y - np.array([1.0, 2.0, 0.5]), refinement=1))
    assert shifted == pytest.approx(k, rel=1e-13)
    repeated = float(signature_kernel(np.insert(x, 2, x[2], axis=0), y, refinement=1))
    assert repeated == pytest.approx(k, rel=1e-13)

    # Halving every segment of both paths at refinement 1 is refinement 2.
    def halved(p):
        mids = (p[:-1] + p[1:]) / 2
        out = np.empty((2 * len(p) - 1, p.shape[1]))
        out[0::2], out[1::2] = p, mids
        return out

    assert float(signature_kernel(halved(x), halved(y), refinement=1)) == pytest.approx(
        float(signature_kernel(x, y, refinement=2)), rel=1e-13
    )
    # scale multiplies <dx, dy>: the kernel of sqrt(scale) x and sqrt(scale) y.
    assert float(signature_kernel(x, y, refinement=1, scale=2.5)) == pytest.approx(
        float(signature_kernel(np.sqrt(2.5) * x, np.sqrt(2.5) * y, refinement=1)), rel=1e-13
    )


def test_kernel_jits_vmaps_and_matrix_is_pairwise(x64):
    rng = np.random.default_rng(3)
    xs = jnp.asarray(0.5 * rng.normal(size=(3, 4, 2)))
    ys = jnp.asarray(0.5 * rng.normal(size=(2, 6, 2)))
    gram = signature_kernel_matrix(xs, ys, refinement=1)
    assert gram.shape == (3, 2)
    loop = np.array([[float(signature_kernel(a, b, refinement=1)) for b in ys] for a in xs])
    np.testing.assert_allclose(gram, loop, rtol=1e-13)
    jitted = jax.jit(lambda a, b, s: signature_kernel(a, b, refinement=1, scale=s))
    assert float(jitted(xs[0], ys[1], 1.0)) == pytest.approx(loop[0, 1], rel=1e-13)
    mapped = jax.vmap(lambda a: signature_kernel(a, ys[0], refinement=1))(xs)
    np.testing.assert_allclose(mapped, loop[:, 0], rtol=1e-13)


def test_kernel_gradients_match_finite_differences(x64):
    rng = np.random.default_rng(4)
    x = jnp.asarray(0.5 * rng.normal(size=(4, 2)))
    y = jnp.asarray(0.5 * rng.normal(size=(5, 2)))
    _check_gradient(lambda a, b, s: signature_kernel(a, b, refinement=1, scale=s), (x, y, 0.7))
    # Forward mode too (jax.hessian through the kernel needs it).
    tangent = jnp.ones_like(x)
    _, jvp = jax.jvp(lambda a: signature_kernel(a, y, refinement=1), (x,), (tangent,))
    grad = jax.grad(lambda a: signature_kernel(a, y, refinement=1))(x)
    assert float(jvp) == pytest.approx(float(jnp.sum(grad * tangent)), rel=1e-12)


# ---------------------------------------------------------------- MMD and score


def _brownian_with_time(seed, n, sigma, length=9):
    """n Brownian paths of volatility sigma on [0, 1], time as the first channel."""
    rng = np.random.default_rng(seed)
    ts = np.linspace(0.0, 1.0, length)
    steps = sigma * np.sqrt(np.diff(ts))[None] * rng.standard_normal((n, length - 1))
    w = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)
    return jnp.asarray(np.stack([np.broadcast_to(ts, w.shape), w], axis=-1))


def test_mmd_matches_its_formula_and_separates_laws(x64):
    x = _brownian_with_time(0, 10, 0.4)
    y = _brownian_with_time(1, 10, 0.4)
    # The losses' default refinement is 1.
    kxx, kyy, kxy = (
        np.asarray(signature_kernel_matrix(a, b, refinement=1)) for a, b in ((x, x), (y, y), (x, y))
    )
    off = lambda k: (k.sum() - np.trace(k)) / (len(k) * (len(k) - 1))
    mmd = signature_mmd
    same = float(mmd(x, y))
    assert same == pytest.approx(off(kxx) + off(kyy) - 2 * kxy.mean(), rel=1e-12)
    assert float(mmd(x, y, unbiased=False)) == pytest.approx(
        kxx.mean() + kyy.mean() - 2 * kxy.mean(), rel=1e-12
    )
    # Identical batches: the V-statistic is exactly ||mean S(x) - mean S(x)||^2 = 0.
    assert abs(float(mmd(x, x, unbiased=False))) < 1e-13
    # A drift of 1 moves level 1 of the signature by (0, 1): MMD^2 >= 1 in the population,
    # against a sampling error of the same-law estimate of ~0.1 at these batch sizes.
    shifted = _brownian_with_time(2, 10, 0.4)
    shifted = shifted.at[..., 1].add(shifted[..., 0])
    different = float(mmd(x, shifted))
    assert different > 0.5 and abs(same) < 0.2 * different, (same, different)


def test_score_is_half_the_mmd_up_to_a_constant_of_the_data(x64):
    x = _brownian_with_time(3, 8, 1.0)
    y = _brownian_with_time(4, 6, 0.5)
    kyy = np.asarray(signature_kernel_matrix(y, y, refinement=1))
    off_yy = (kyy.sum() - np.trace(kyy)) / (len(kyy) * (len(kyy) - 1))
    score = float(signature_kernel_score(x, y, refinement=1))
    mmd = float(signature_mmd(x, y, refinement=1))
    assert 2 * score + off_yy == pytest.approx(mmd, rel=1e-12)
    # One observed path is a batch of one.
    assert float(signature_kernel_score(x, y[0])) == pytest.approx(
        float(signature_kernel_score(x, y[:1])), rel=1e-14
    )


def test_score_is_proper_in_expectation_over_a_finite_law(x64):
    """For laws on a finite set of paths with weights p (model) and q (data), the expected score
    is p'Kp/2 - p'Kq (diagonal included: X, X' are independent draws with replacement), which the
    kernel's positive semi-definiteness makes smallest at p = q. The estimator with the support
    as samples and observations reproduces these quadratic forms' pieces."""
    support = _brownian_with_time(5, 5, 1.0)
    gram = np.asarray(signature_kernel_matrix(support, support, refinement=1))  # the default
    assert np.linalg.eigvalsh(gram).min() > 0
    q = np.array([0.1, 0.3, 0.2, 0.25, 0.15])

    def expected(p):
        return p @ gram @ p / 2 - p @ gram @ q

    rng = np.random.default_rng(6)
    best = expected(q)
    for _ in range(20):
        p = rng.dirichlet(np.ones(5))
        assert expected(p) >= best - 1e-14
    # The estimator: off-diagonal mean of k(x_i, x_j) / 2 minus the mean of k(x_i, y_j).
    n = len(gram)
    off = (gram.sum() - np.trace(gram)) / (n * (n - 1))
    assert float(signature_kernel_score(support, support)) == pytest.approx(
        off / 2 - gram.mean(), rel=1e-12
    )


def test_mmd_and_score_gradients_match_finite_differences(x64):
    x = _brownian_with_time(7, 3, 1.0, length=4)
    y = _brownian_with_time(8, 3, 0.5, length=5)
    _check_gradient(signature_mmd, (x, y))
    _check_gradient(lambda a: signature_kernel_score(a, y, refinement=1), (x,), seed=1)


# ---------------------------------------------------------------- errors


# Shapes against the annotations (ragged channels, wrong rank): under -p tests.typecheck the
# jaxtyping hook rejects them before jaxsolve's own checks run.
_WRONG_SHAPES = pytest.mark.wrong_argument_types


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(
            lambda: signature_kernel(np.zeros((3, 2)), np.zeros((3, 3))),
            "same number of channels",
            marks=_WRONG_SHAPES,
        ),
        (lambda: signature_kernel(np.zeros((1, 2)), np.zeros((3, 2))), "x must have at least 2"),
        pytest.param(
            lambda: signature_kernel(np.zeros((3,)), np.zeros((3, 2))),
            "x must have shape",
            marks=_WRONG_SHAPES,
        ),
        (lambda: signature_kernel(np.zeros((3, 2)), np.zeros((3, 2)), refinement=-1), "refine"),
        (
            lambda: signature_kernel(np.array([[0.0, np.nan], [1.0, 1.0]]), np.zeros((2, 2))),
            "x must be finite",
        ),
        (lambda: signature_kernel(np.zeros((3, 2)), np.zeros((3, 2)), scale=0.0), "scale"),
        (lambda: signature_mmd(np.zeros((1, 3, 2)), np.zeros((2, 3, 2))), "x_batch must hold"),
        pytest.param(
            lambda: signature_mmd(np.zeros((3, 2)), np.zeros((2, 3, 2))),
            "x_batch must have",
            marks=_WRONG_SHAPES,
        ),
        pytest.param(
            lambda: signature_kernel_score(np.zeros((4, 3, 2)), np.zeros((2, 3, 1))),
            "same number of channels",
            marks=_WRONG_SHAPES,
        ),
        (
            lambda: signature_kernel_score(np.zeros((4, 3, 2)), np.full((2, 3, 2), np.inf)),
            "observed must be finite",
        ),
    ],
)
def test_bad_input_raises_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.wrong_argument_types
def test_bad_argument_types_raise():
    with pytest.raises(TypeError, match="refinement"):
        signature_kernel(np.zeros((3, 2)), np.zeros((3, 2)), refinement=1.0)
    with pytest.raises(TypeError, match="unbiased"):
        signature_mmd(np.zeros((2, 3, 2)), np.zeros((2, 3, 2)), unbiased=1)


def test_traced_non_finite_path_fails_at_run_time():
    run = jax.jit(signature_kernel)
    y = jnp.zeros((3, 2))
    assert float(run(jnp.ones((3, 2)), y)) == pytest.approx(1.0)
    # eqx.error_if raises RuntimeError or ValueError depending on the path; match the message.
    with pytest.raises((RuntimeError, ValueError), match="x must be finite"):
        run(jnp.array([[0.0, 0.0], [jnp.inf, 1.0], [1.0, 1.0]]), y)


# ---------------------------------------------------------------- training a NeuralSDE

OU_THETA, OU_M, OU_S, OU_X0 = 1.0, 0.5, 0.6, 2.0


class _OUDrift(eqx.Module):
    log_theta: jax.Array
    m: jax.Array

    def __call__(self, t, y, args):
        return jnp.exp(self.log_theta) * (self.m - y)


class _ConstantDiffusion(eqx.Module):
    log_s: jax.Array

    def __call__(self, t, y, args):
        return jnp.exp(self.log_s) * jnp.ones_like(y)


@pytest.mark.slow  # 400 steps through 64 SDE solves and two 64 x 64/128 Gram matrices
def test_neural_sde_fitted_by_signature_kernel_score_recovers_ou_parameters():
    r"""A parametric NeuralSDE :math:`\mathrm dX = \theta(m - X)\mathrm dt + s\,\mathrm dW`
    (Euler–Maruyama, dt = 0.05, X_0 = 2) is fitted to 128 exact OU paths (theta 1, m 0.5, s 0.6)
    seen at 7 times in [0, 3], with time (divided by 3) as a second channel, by minimising the
    signature-kernel score (refinement 1) of 64 model paths with fresh Brownian keys each step
    (Adam, cosine-decayed step). From the start (theta 0.3, m 0, s 1) it must come within 25% of
    theta, 0.15 of m and 20% of s: the mean curve m + (2 - m) e^{-theta t} fixes theta and m, the
    variance curve s^2 (1 - e^{-2 theta t}) / (2 theta) fixes s."""
    import optax

    from jaxsolve import ode

    ts = np.linspace(0.0, 3.0, 7)
    rng = np.random.default_rng(0)
    decay = np.exp(-OU_THETA * np.diff(ts))
    step_std = OU_S * np.sqrt((1 - decay**2) / (2 * OU_THETA))
    xs = [np.full(128, OU_X0)]
    for d, sd in zip(decay, step_std, strict=True):
        xs.append(OU_M + (xs[-1] - OU_M) * d + sd * rng.standard_normal(128))
    data = np.stack(xs, axis=1)

    def with_time(x):
        return jnp.stack([jnp.broadcast_to(jnp.asarray(ts / 3, x.dtype), x.shape), x], axis=-1)

    observed = with_time(jnp.asarray(data, jnp.float32))
    sde = ode.NeuralSDE(
        _OUDrift(jnp.log(jnp.asarray(0.3)), jnp.asarray(0.0)),
        _ConstantDiffusion(jnp.asarray(0.0)),
        dt0=0.05,
        max_steps=128,
    )
    y0 = jnp.full((1,), OU_X0, jnp.float32)
    times = jnp.asarray(ts, jnp.float32)

    def loss(model, key):
        ys = model.sample(times, y0, key=key, num_samples=64).ys[..., 0]
        return signature_kernel_score(with_time(ys), observed, refinement=1)

    steps = 400
    optim = optax.adam(optax.cosine_decay_schedule(0.05, steps, alpha=0.02))

    @eqx.filter_jit
    def step(model, state, key):
        grads = eqx.filter_grad(loss)(model, key)
        updates, state = optim.update(grads, state, eqx.filter(model, eqx.is_inexact_array))
        return eqx.apply_updates(model, updates), state

    state = optim.init(eqx.filter(sde, eqx.is_inexact_array))
    for i in range(steps):
        sde, state = step(sde, state, jax.random.fold_in(jax.random.key(1), i))
    theta = float(jnp.exp(sde.drift.log_theta))
    m = float(sde.drift.m)
    s = float(jnp.exp(sde.diffusion.log_s))
    assert abs(theta - OU_THETA) < 0.25 * OU_THETA, (theta, m, s)
    assert abs(m - OU_M) < 0.15, (theta, m, s)
    assert abs(s - OU_S) < 0.2 * OU_S, (theta, m, s)


@pytest.mark.parametrize("scale", [-1.0, 0.0, np.nan, np.inf])
def test_traced_bad_scale_fails_at_run_time(scale):
    """A traced scale was only checked for its shape: a negative one (the kernel of imaginary
    paths) or NaN came back as a number. It is checked when the code runs, as a concrete one is
    when passed."""
    x = jnp.cumsum(jnp.ones((3, 2)), axis=0)
    run = jax.jit(lambda s: signature_kernel(x, 0.5 * x, scale=s))
    assert np.isfinite(run(1.0))
    with pytest.raises(Exception, match="scale must be a positive finite scalar"):
        jax.block_until_ready(run(scale))
