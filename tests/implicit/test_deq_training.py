"""DEQ training tools: residual traces, spectral and weight normalisation, fixed-point
correction, initial-guess policies, solver swaps and the multiscale cell."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji
from jaxsolve.implicit._deq_training import (
    MultiscaleCell,
    Previous,
    RandomNormal,
    RandomRestart,
    Zeros,
    correction_budgets,
    fixed_point_correction,
    spectral_norm,
    update_spectral_norm,
    weight_norm,
    with_solvers,
)


class Cell(eqx.Module):
    """f(z, x) = tanh(W z + U x + c)."""

    w: jax.Array
    u: jax.Array
    c: jax.Array

    def __init__(self, d_in, hidden, seed, w_norm=0.5, dtype=jnp.float32):
        rng = np.random.default_rng(seed)
        w = rng.standard_normal((hidden, hidden))
        self.w = jnp.asarray(w_norm * w / np.linalg.norm(w, 2), dtype)
        self.u = jnp.asarray(rng.standard_normal((hidden, d_in)) / np.sqrt(d_in), dtype)
        self.c = jnp.zeros(hidden, dtype)

    def __call__(self, z, x):
        return jnp.tanh(self.w @ z + self.u @ x + self.c)


class _CosCell(eqx.Module):
    a: jax.Array

    def __call__(self, z, x):
        return self.a * jnp.cos(z) + x


# ----------------------------------------------------------------------------------------------
# Residual traces.


def test_trace_records_the_picard_residuals_and_pads_with_nan(x64):
    # Picard on z = a cos z + x from 0: the trace must be |f(z_i) - z_i| of the unrolled iterates.
    a, x = 0.5, 0.3
    fn = lambda z, args: args[0] * jnp.cos(z) + args[1]
    args = (jnp.asarray(a), jnp.asarray(x))
    sol = ji.fixed_point(fn, jnp.zeros(()), args, solver=ji.Picard(), rtol=1e-8, atol=1e-8,
                         trace_length=64)  # fmt: skip
    k = int(sol.num_steps)
    z, expected = 0.0, []
    for _ in range(k + 1):
        expected.append(abs(a * np.cos(z) + x - z))
        z = a * np.cos(z) + x
    np.testing.assert_allclose(sol.trace[: k + 1], expected, rtol=1e-12)
    assert bool(jnp.all(jnp.isnan(sol.trace[k + 1 :])))
    np.testing.assert_allclose(sol.trace[k], sol.residual, rtol=1e-12)

    # A shorter trace keeps the first entries; turning the trace off changes nothing else.
    short = ji.fixed_point(fn, jnp.zeros(()), args, solver=ji.Picard(), rtol=1e-8, atol=1e-8,
                           trace_length=3)  # fmt: skip
    off = ji.fixed_point(fn, jnp.zeros(()), args, solver=ji.Picard(), rtol=1e-8, atol=1e-8)
    np.testing.assert_array_equal(short.trace, sol.trace[:3])
    assert off.trace is None
    np.testing.assert_array_equal(off.value, sol.value)
    assert int(off.num_steps) == k and off.result == sol.result == RESULTS.successful


def test_trace_under_vmap_and_in_a_deq():
    deq = ji.DEQ(_CosCell(jnp.asarray(0.5)), solver=ji.Anderson(), trace_length=12)
    sols = eqx.filter_jit(jax.vmap(lambda x: deq(x).solution))(jnp.array([[0.1], [2.0]]))
    assert sols.trace.shape == (2, 12)
    for i in range(2):
        k = int(sols.num_steps[i])
        recorded = sols.trace[i, : k + 1]
        assert bool(jnp.all(jnp.isfinite(recorded))) and bool(
            jnp.all(jnp.isnan(sols.trace[i, k + 1 :]))
        )
        np.testing.assert_allclose(recorded[-1], sols.residual[i], rtol=1e-6)
    with pytest.raises(ValueError, match="trace_length must be >= 0"):
        ji.DEQ(_CosCell(jnp.asarray(0.5)), trace_length=-1)


# ----------------------------------------------------------------------------------------------
# Normalisation.


def test_spectral_norm_sets_the_spectral_norm_and_keeps_gradients(x64):
    cell = Cell(3, 12, 0, w_norm=3.0, dtype=jnp.float64)
    sn = spectral_norm(cell, key=jax.random.PRNGKey(0), scale=0.7, init_iterations=200)
    w, u = sn.normalised().w, sn.normalised().u
    np.testing.assert_allclose(np.linalg.norm(w, 2), 0.7, rtol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(u, 2), 0.7, rtol=1e-8)
    # Direction kept; the bias (1-D) untouched; the wrapper calls the normalised cell.
    np.testing.assert_allclose(w * 3.0 / 0.7, cell.w, rtol=1e-8)
    np.testing.assert_array_equal(sn.normalised().c, cell.c)
    z, x = jnp.ones(12) * 0.1, jnp.array([0.2, -0.1, 0.4])
    np.testing.assert_allclose(sn(z, x), sn.normalised()(z, x), rtol=1e-14)

    # Scale invariance in W: the normalised weight does not change when W is scaled, so the
    # gradient of any loss is orthogonal to W (Miyato et al.'s sigma is differentiated too).
    g = eqx.filter_jit(jax.grad(lambda s: jnp.sum(s(z, x) ** 2)))(sn)
    assert abs(float(jnp.vdot(g.cell.w, cell.w))) < 1e-10 * float(jnp.linalg.norm(g.cell.w))
    assert float(jnp.linalg.norm(g.cell.w)) > 0 and float(jnp.linalg.norm(g.u[0])) == 0.0


def test_update_spectral_norm_tracks_a_changed_weight(x64):
    cell = Cell(3, 10, 1, w_norm=1.0, dtype=jnp.float64)
    sn = spectral_norm(
        cell, key=jax.random.PRNGKey(1), init_iterations=100, where=lambda a: a is cell.w
    )
    assert len(sn.u) == 1  # only W selected
    model = {"layer": sn, "other": jnp.ones(2)}
    new_w = cell.w + 0.3 * jnp.asarray(np.random.default_rng(2).standard_normal((10, 10)))
    model = eqx.tree_at(lambda m: m["layer"].cell.w, model, new_w)
    stale = np.linalg.norm(model["layer"].normalised().w, 2)
    updated = update_spectral_norm(model, iterations=200)
    np.testing.assert_allclose(np.linalg.norm(updated["layer"].normalised().w, 2), 1.0, rtol=1e-8)
    # The one-sided estimate u^T W v never exceeds sigma, so a stale u normalises to >= 1.
    assert stale >= 1.0 - 1e-12
    with pytest.raises(ValueError, match="matched no array"):
        spectral_norm(cell, key=jax.random.PRNGKey(0), where=lambda a: False)


def test_weight_norm_rows_and_identity_at_initialisation(x64):
    cell = Cell(3, 6, 3, w_norm=2.0, dtype=jnp.float64)
    wn = weight_norm(cell)
    z, x = jnp.linspace(-1, 1, 6), jnp.array([0.3, 0.1, -0.2])
    np.testing.assert_allclose(wn(z, x), cell(z, x), rtol=1e-11)  # g = |v| at the start
    # w_i = g_i v_i / |v_i|: doubling a gain doubles that row's norm; scaling v changes nothing.
    wn2 = eqx.tree_at(lambda m: m.gains[0], wn, wn.gains[0].at[0].multiply(2.0))
    np.testing.assert_allclose(
        np.linalg.norm(wn2.normalised().w, axis=1),
        np.linalg.norm(cell.w, axis=1) * [2, 1, 1, 1, 1, 1],
    )
    wn3 = eqx.tree_at(lambda m: m.cell.w, wn, 5.0 * cell.w)
    np.testing.assert_allclose(wn3(z, x), cell(z, x), rtol=1e-11)
    fixed = weight_norm(cell, gain=0.25)
    np.testing.assert_allclose(np.linalg.norm(fixed.normalised().w, axis=1), 0.25, rtol=1e-13)
    np.testing.assert_allclose(np.linalg.norm(fixed.normalised().u, axis=1), 0.25, rtol=1e-13)


# ----------------------------------------------------------------------------------------------
# Fixed-point correction.


def _phantom_deq(max_steps):
    return ji.DEQ(
        _CosCell(jnp.asarray(0.5)),
        solver=ji.Picard(),
        backward=ji.JacobianFree(),
        max_steps=max_steps,
        rtol=1e-12,
        atol=1e-12,
    )


def test_correction_states_are_the_picard_iterates_with_jfb_gradients(x64):
    # Picard with a budget of 6 split into 3 segments: the states are z_2, z_4, z_6 of the plain
    # iteration from 0 (Picard has no state to restart). JFB differentiates one step
    # f(z_i) = a cos z_i + x at each state (z_i held fixed), so dz_i/da = cos z_i and the loss
    # sum_i gamma^(3-i) z_i has the gradient sum_i gamma^(3-i) cos z_i.
    assert correction_budgets(6, 3) == [2, 2, 2] and correction_budgets(10, 3) == [3, 4, 3]
    x, gamma = 0.3, 0.8
    zs = [0.0]
    for _ in range(6):
        zs.append(0.5 * np.cos(zs[-1]) + x)

    def loss(a):
        deq = eqx.tree_at(lambda d: d.cell.a, _phantom_deq(6), a)
        out = fixed_point_correction(deq, jnp.asarray(x), lambda z: z, num_states=3, gamma=gamma)
        return out.loss, out

    (value, out), grad = jax.value_and_grad(loss, has_aux=True)(jnp.asarray(0.5))
    np.testing.assert_allclose([float(s) for s in out.states], [zs[2], zs[4], zs[6]], rtol=1e-13)
    np.testing.assert_allclose(out.weights, [gamma**2, gamma, 1.0])
    np.testing.assert_allclose(value, gamma**2 * zs[2] + gamma * zs[4] + zs[6], rtol=1e-13)
    expected = gamma**2 * np.cos(zs[2]) + gamma * np.cos(zs[4]) + np.cos(zs[6])
    np.testing.assert_allclose(grad, expected, rtol=1e-12)
    assert int(out.num_steps) == 6
    with pytest.raises(ValueError, match="max_steps to be a Python int >= num_states"):
        fixed_point_correction(_phantom_deq(2), jnp.asarray(x), lambda z: z, num_states=3)
    with pytest.raises(ValueError, match="gamma"):
        fixed_point_correction(_phantom_deq(6), jnp.asarray(x), lambda z: z, gamma=1.5)


# ----------------------------------------------------------------------------------------------
# Initial guesses and solver swaps.


def test_initial_guess_policies():
    template = (jnp.ones(3), jnp.ones((2, 2)))
    previous = (jnp.full(3, 0.5), jnp.full((2, 2), -0.5))
    key = jax.random.PRNGKey(0)
    zeros = Zeros()(template, previous)
    assert all(bool(jnp.all(leaf == 0)) for leaf in jax.tree_util.tree_leaves(zeros))
    warm = Previous()(template, previous)
    assert bool(jnp.all(warm[0] == 0.5)) and bool(jnp.all(warm[1] == -0.5))
    assert bool(jnp.all(Previous()(template, None)[0] == 0))
    noise = RandomNormal(0.0)(template, None, key)
    assert bool(jnp.all(noise[0] == 0))  # a zero scale is the cold start
    draws = jax.jit(jax.vmap(lambda k: RandomNormal(2.0)(jnp.zeros(4000), None, k)))(
        jax.random.split(key, 2)
    )
    np.testing.assert_allclose(jnp.std(draws), 2.0, rtol=0.05)

    # Restart frequency: the fraction of keys that drew noise is the probability (4 sigma).
    keys = jax.random.split(key, 4000)
    # One compile for every probability: it is a traced value.
    restarted = jax.jit(
        jax.vmap(
            lambda k, p: jnp.any(RandomRestart(p, 1.0)(template, previous, k)[0] != 0.5),
            in_axes=(0, None),
        )
    )
    for p in (0.0, 0.25, 1.0):
        frac = float(jnp.mean(restarted(keys, jnp.asarray(p))))
        assert abs(frac - p) <= 4 * np.sqrt(p * (1 - p) / 4000) + 1e-12, (p, frac)
    with pytest.raises(ValueError, match="needs key"):
        RandomRestart()(template, previous)


def test_with_solvers_swaps_forward_and_backward_and_shares_weights(x64):
    deq = ji.DEQ(_CosCell(jnp.asarray(0.5)), max_steps=3, rtol=1e-12, atol=1e-12)
    accurate = with_solvers(deq, solver=ji.Picard(damping=0.9), max_steps=200)
    cheap = with_solvers(deq, backward=ji.PhantomGradient(steps=3, damping=0.7))
    assert isinstance(accurate.solver, ji.Picard) and accurate.max_steps == 200
    assert isinstance(cheap.backward, ji.PhantomGradient) and cheap.cell.a is deq.cell.a
    out = accurate(jnp.asarray(0.3))
    assert out.solution.result == RESULTS.successful
    np.testing.assert_allclose(out.value, 0.5 * np.cos(float(out.value)) + 0.3, rtol=1e-11)


@pytest.mark.wrong_argument_types
def test_with_solvers_rejects_a_non_solver():
    deq = ji.DEQ(_CosCell(jnp.asarray(0.5)))
    with pytest.raises(TypeError, match="with_solvers solver"):
        with_solvers(deq, solver="anderson")
    with pytest.raises(TypeError, match="with_solvers backward"):
        with_solvers(deq, backward=ji.Picard())


# ----------------------------------------------------------------------------------------------
# Multiscale cell.


def _cut(cell, which):
    """``cell`` with the input injection ``which`` (a conv of the wrapped MultiscaleCell or of
    the cell itself) zeroed."""
    inner = lambda c: c.cell if hasattr(c, "cell") else c
    layer = lambda c: getattr(inner(c), which)
    zeros = (jnp.zeros_like(layer(cell).weight), jnp.zeros_like(layer(cell).bias))
    return eqx.tree_at(lambda c: (layer(c).weight, layer(c).bias), cell, zeros)


def test_multiscale_cell_exchanges_information():
    cell = MultiscaleCell(2, 4, key=jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 16)), jnp.float32)
    z = cell.state_init(x)
    assert z[0].shape == (4, 16) and z[1].shape == (4, 8)
    z = (
        jnp.asarray(rng.standard_normal((4, 16)), jnp.float32),
        jnp.asarray(rng.standard_normal((4, 8)), jnp.float32),
    )

    # With one resolution's input injection zeroed, one call of the cell (at a fixed state)
    # still carries x into that resolution: the only path left is the exchange with the other
    # resolution. With both injections zeroed, nothing does (the test can fail).
    @eqx.filter_jit
    def directional(cut_lo, cut_hi, cut_both, z, x, dx):
        d = lambda c, i: jax.jvp(lambda x: c(z, x)[i], (x,), (dx,))[1]
        return d(cut_lo, 1), d(cut_hi, 0), d(cut_both, 0), d(cut_both, 1)

    cut_both = _cut(_cut(cell, "inject_lo"), "inject_hi")
    lo, hi, none_hi, none_lo = directional(
        _cut(cell, "inject_lo"), _cut(cell, "inject_hi"), cut_both, z, x, jnp.ones_like(x)
    )
    assert float(jnp.max(jnp.abs(lo))) > 1e-3 and float(jnp.max(jnp.abs(hi))) > 1e-3
    assert float(jnp.max(jnp.abs(none_hi))) == 0.0 and float(jnp.max(jnp.abs(none_lo))) == 0.0
    with pytest.raises(ValueError, match="even signal length"):
        cell.state_init(jnp.zeros((2, 15)))


@pytest.mark.slow
def test_multiscale_deq_converges():
    cell = spectral_norm(
        MultiscaleCell(2, 4, key=jax.random.PRNGKey(0)), key=jax.random.PRNGKey(1), scale=0.5
    )
    # The group norms keep the cell from being a strict contraction (as in MDEQ): Picard needs
    # ~70 steps to a max-norm residual of 1e-3.
    deq = ji.DEQ(
        cell,
        solver=ji.Picard(),
        max_steps=150,
        rtol=1e-3,
        atol=1e-4,
        state_init=cell.cell.state_init,
        require_convergence=True,
    )
    x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 16)), jnp.float32)
    out = eqx.filter_jit(lambda d, x: d(x))(deq, x)
    z_hi, z_lo = out.value
    assert out.solution.result == RESULTS.successful
    f_hi, f_lo = cell(out.value, x)
    np.testing.assert_allclose(f_hi, z_hi, atol=1e-4 + 1e-3 * float(jnp.max(jnp.abs(z_hi))))
    np.testing.assert_allclose(f_lo, z_lo, atol=1e-4 + 1e-3 * float(jnp.max(jnp.abs(z_lo))))
    # Gradients through the equilibrium reach the weights of both resolutions.
    grads = eqx.filter_jit(eqx.filter_grad(lambda d: jnp.sum(jnp.sin(d(x).value[1]))))(deq)
    for conv in (grads.cell.cell.conv1[0], grads.cell.cell.conv1[1]):
        assert bool(jnp.all(jnp.isfinite(conv.weight))) and float(jnp.max(jnp.abs(conv.weight))) > 0
