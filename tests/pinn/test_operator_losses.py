"""Physics losses for operators: closed-form residuals, orders of convergence, solver parity."""

import importlib.util
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import pde, pinn


def _space_time(u_fn, nt, nx, T=1.0, length=1.0):
    """``u_fn(t, x)`` on the output grid ``(1, nt, nx)``, ``t_k = k T / (nt - 1)``."""
    t = np.linspace(0.0, T, nt)[:, None]
    x = (np.arange(nx) * length / nx)[None, :]
    return np.asarray(u_fn(t, x))[None], t, x


def _log2_ratio(a, b):
    return float(np.log2(a / b))


@eqx.filter_jit
def _residual(loss, u, a=None):
    """One compiled program per loss and shape (eager dispatch would compile every primitive)."""
    return loss(u, a)


def _max_residual(loss, u, a=None):
    return float(jnp.max(jnp.abs(_residual(loss, u, a))))


def test_time_derivative_exact_for_quadratics_second_order_else(x64):
    @jax.jit
    def errors(t):
        quadratic = pinn.grid_time_derivative(1.0 - 3.0 * t + 0.7 * t**2, t[1]) - (-3.0 + 1.4 * t)
        smooth = pinn.grid_time_derivative(jnp.sin(3 * t), t[1]) - 3 * jnp.cos(3 * t)
        return jnp.max(jnp.abs(quadratic)), jnp.max(jnp.abs(smooth))

    (q17, e17), (q33, e33) = errors(np.linspace(0, 1, 17)), errors(np.linspace(0, 1, 33))
    assert max(q17, q33) < 1e-12
    assert 1.8 < _log2_ratio(e17, e33) < 2.2


@pytest.mark.parametrize("case", ["burgers", "ks"])
def test_residual_equals_closed_form_of_a_manufactured_field(x64, case):
    # u = q(t) sin(kx) with q quadratic: the time differences are exact, the spectral space
    # derivatives exact (a few modes, inside the 2/3 rule), so the residual is the closed form
    # q' s + q^2 s s_x - nu q s_xx (Burgers) or q' s + q^2 s s_x + q s_xx + q s_xxxx (KS).
    T, nt, nx = 0.5, 7, 16
    if case == "burgers":
        nu, length = 0.1, 1.0
        loss = pinn.BurgersPhysicsLoss(nu, T=T)
    else:
        length = 32.0 * np.pi
        loss = pinn.KuramotoSivashinskyPhysicsLoss(T=T)
    k = 2.0 * np.pi * 2 / length
    q = lambda t: 0.5 + t - 2.0 * t**2
    dq = lambda t: 1.0 - 4.0 * t
    u, t, x = _space_time(lambda t, x: q(t) * np.sin(k * x), nt, nx, T, length)
    s, c = np.sin(k * x), np.cos(k * x)
    expected = dq(t) * s + q(t) ** 2 * s * k * c
    if case == "burgers":
        expected = expected + nu * k**2 * q(t) * s
    else:
        expected = expected - k**2 * q(t) * s + k**4 * q(t) * s
    np.testing.assert_allclose(
        _residual(loss, u)[0], expected, atol=1e-11 * np.max(np.abs(expected))
    )


@pytest.mark.slow
def test_burgers_cole_hopf_residual_converges_at_second_order(x64):
    loss = pinn.BurgersPhysicsLoss(0.1)
    exact = lambda t, x: loss.equation.cole_hopf(x, t)
    # Spectral in space (64 points resolve this field to round-off), second order in time.
    errors = [_max_residual(loss, _space_time(exact, n, 64)[0]) for n in (65, 129)]
    assert errors[-1] < 1.2e-2
    assert 1.8 < _log2_ratio(errors[0], errors[1]) < 2.2


def test_navier_stokes_steady_forced_vorticity_has_zero_residual(x64):
    # The steady vorticity nu Delta w = -f of the FNO forcing: it depends on x + y only, so its
    # velocity runs along its level lines and the advection vanishes; the residual is zero, and
    # without the forcing it is f.
    nu, n = 0.05, 16
    xy = np.asarray(pde.SpectralGrid((n, n)).coordinates())
    f = np.asarray(pde.fno_forcing(xy))
    w = np.broadcast_to(f / (8 * np.pi**2 * nu), (5, n, n))[None]
    forced = pinn.NavierStokesPhysicsLoss(nu)
    free = pinn.NavierStokesPhysicsLoss(nu, forcing=None)
    both = eqx.filter_jit(lambda a, b, w: (a(w), b(w)))
    r_forced, r_free = both(forced, free, w)
    assert float(jnp.max(jnp.abs(r_forced))) < 1e-13
    np.testing.assert_allclose(r_free[0, 2], f, atol=1e-13)


@pytest.mark.slow
def test_navier_stokes_taylor_green_residual_converges_at_second_order(x64):
    # w = cos(2 pi x) cos(2 pi y) exp(-8 pi^2 nu t) solves the unforced equation (no advection).
    nu, n = 0.05, 16
    xy = np.asarray(pde.SpectralGrid((n, n)).coordinates())
    tg = np.cos(2 * np.pi * xy[0]) * np.cos(2 * np.pi * xy[1])
    free = pinn.NavierStokesPhysicsLoss(nu, forcing=None)
    errors = []
    for nt in (17, 33):
        t = np.linspace(0.0, 1.0, nt)
        w = np.exp(-8 * np.pi**2 * nu * t)[:, None, None] * tg
        errors.append(_max_residual(free, w[None]))
    assert 1.8 < _log2_ratio(errors[0], errors[1]) < 2.2 and errors[1] < 2e-2


@pytest.mark.slow
def test_residual_of_a_pde_rollout_is_small_and_second_order_in_the_frame_step(x64):
    # KS on a small box from a smooth u0, solved by ETDRK4 with a fine step, saved every
    # `every` steps: the residual is the time-difference error of the frames, O(frame step^2).
    eq = pde.KuramotoSivashinsky(length=8.0 * np.pi)
    loss = pinn.KuramotoSivashinskyPhysicsLoss(length=8.0 * np.pi, T=1.0)
    n, steps = 32, 256
    x = np.arange(n) * 8.0 * np.pi / n
    u0 = (np.cos(x / 4) * (1 + np.sin(x / 4)))[None]
    stepper = pde.ETDRK(eq, 1.0 / steps, (n,))

    @jax.jit
    def solve(u0):
        traj = pde.rollout(stepper.step_spectral, stepper.to_spectral(u0), steps, every=8)
        traj = jax.vmap(stepper.from_spectral)(traj)  # 33 frames
        return jnp.moveaxis(traj, 0, 1), jnp.max(jnp.abs(jax.vmap(eq.rhs)(traj)))

    u, scale = solve(u0)
    fine, coarse = _max_residual(loss, u), _max_residual(loss, u[:, ::2])
    assert fine < 2e-3 * float(scale)
    assert 1.8 < _log2_ratio(coarse, fine) < 2.2
    # The loss: mean square of the residual, plus the weighted initial error (zero here).
    value = eqx.filter_jit(lambda loss, u, u0: (loss.loss(u, u0), jnp.mean(loss(u) ** 2)))
    np.testing.assert_allclose(*value(loss, u, u0), rtol=1e-12)


def test_loss_terms_inputs_and_residual_start(x64):
    loss = pinn.BurgersPhysicsLoss(0.1, ic_weight=3.0)
    later = pinn.BurgersPhysicsLoss(0.1, ic_weight=3.0, residual_start=2)
    u, _, _ = _space_time(lambda t, x: (1 + t) * np.sin(2 * np.pi * x), 5, 8)
    u0 = u[:, 0]
    # PINO's input: u0 broadcast over time, with extra (coordinate) channels, gives the same u0.
    pino = np.concatenate([np.broadcast_to(u0[:, None] + 0.1, u.shape), np.ones_like(u)])

    @jax.jit
    def values(u, u0, pino):
        return (
            loss(u),
            loss.loss(u, u0),
            loss.loss(u, u0 + 0.1),
            loss.loss(u, pino),
            later.loss(u, u0),
        )

    r, plain, shifted, from_pino, from_2 = values(u, u0, pino)
    msr = np.mean(np.asarray(r) ** 2)
    np.testing.assert_allclose(plain, msr, rtol=1e-12)
    # An initial condition off by 0.1 everywhere adds ic_weight * 0.01.
    np.testing.assert_allclose(shifted, msr + 3.0 * 0.01, rtol=1e-12)
    np.testing.assert_allclose(from_pino, msr + 3.0 * 0.01, rtol=1e-12)
    np.testing.assert_allclose(from_2, np.mean(np.asarray(r)[:, 2:] ** 2), rtol=1e-12)


def test_traced_parameters_vmap_jit_and_grad(x64):
    u, _, _ = _space_time(lambda t, x: (1 + t) * np.sin(2 * np.pi * x), 5, 8)
    u = jnp.asarray(u)

    def value(nu, T, v):
        return pinn.BurgersPhysicsLoss(nu, T=T).loss(v, u[:, 0])

    @jax.jit
    def check(nus, d):
        swept = jax.vmap(value, in_axes=(0, None, None))(nus, 1.0, u)
        # Traced parameters give what concrete ones give.
        one_by_one = jnp.stack([pinn.BurgersPhysicsLoss(v).loss(u, u[:, 0]) for v in (0.0, 0.1)])
        # The gradient with respect to the output, against central differences along d.
        g = jax.grad(value, argnums=2)(0.1, 1.0, u)
        h = 1e-6
        fd = (value(0.1, 1.0, u + h * d) - value(0.1, 1.0, u - h * d)) / (2 * h)
        return swept, one_by_one, jnp.sum(g * d), fd

    d = np.random.default_rng(0).normal(size=u.shape)
    swept, one_by_one, directional, fd = check(jnp.array([0.0, 0.1]), d)
    np.testing.assert_allclose(swept, one_by_one, rtol=1e-12)
    assert swept[0] != swept[1]
    np.testing.assert_allclose(directional, fd, rtol=1e-6)


def test_darcy_manufactured_solution_second_order_and_operator_parity(x64):
    # u = sin(pi x) sin(pi y) (zero on the boundary), a = (1 + x^2)(2 + y): f = -div(a grad u).
    def fields(s):
        x, y = np.meshgrid(np.linspace(0, 1, s), np.linspace(0, 1, s), indexing="ij")
        a = (1 + x**2) * (2 + y)
        ax, ay = 2 * x * (2 + y), 1 + x**2
        u = np.sin(np.pi * x) * np.sin(np.pi * y)
        ux = np.pi * np.cos(np.pi * x) * np.sin(np.pi * y)
        uy = np.pi * np.sin(np.pi * x) * np.cos(np.pi * y)
        f = -(ax * ux + ay * uy - 2 * np.pi**2 * a * u)
        return a[None], u[None], f

    errors = []
    for s in (17, 33):
        a, u, f = fields(s)
        errors.append(_max_residual(pinn.DarcyPhysicsLoss(f), u, a))
    assert 1.8 < _log2_ratio(errors[0], errors[1]) < 2.2
    # The residual is the solver's operator on the interior minus f; a boundary value b adds
    # bc_weight * b^2 to the loss.
    a, _, f = fields(17)
    loss = pinn.DarcyPhysicsLoss(f, bc_weight=2.0)
    v = np.random.default_rng(1).normal(size=(15, 15))

    @jax.jit
    def check(a, f, v):
        on_v = loss(jnp.pad(v, 1)[None], a)[0] - (pde.darcy_operator(a[0])(v) - f[1:-1, 1:-1])
        lifted = jnp.pad(v, 1, constant_values=0.5)[None]
        bc = loss.loss(lifted, a) - jnp.mean(loss(lifted, a) ** 2)
        return jnp.max(jnp.abs(on_v)), bc

    on_v, bc = check(a, f, v)
    assert on_v < 1e-9
    np.testing.assert_allclose(bc, 2.0 * 0.25, rtol=1e-10)


@pytest.mark.slow
def test_darcy_solver_solution_has_zero_residual(x64):
    x, y = np.meshgrid(np.linspace(0, 1, 33), np.linspace(0, 1, 33), indexing="ij")
    a = np.where((x - 0.5) ** 2 + (y - 0.4) ** 2 < 0.1, 12.0, 3.0)[None]  # FNO-like contrast
    sol = pde.darcy_solve(a, 1.0, rtol=1e-12)
    r = eqx.filter_jit(lambda loss, u, a: loss(u, a))(pinn.DarcyPhysicsLoss(1.0), sol.u, a)
    assert float(jnp.max(jnp.abs(r))) < 1e-8


def test_bad_arguments_raise_naming_them():
    u = np.zeros((1, 5, 8))
    with pytest.raises(ValueError, match="T"):
        pinn.BurgersPhysicsLoss(T=-1.0)
    with pytest.raises(ValueError, match="ic_weight"):
        pinn.BurgersPhysicsLoss(ic_weight=-1.0)
    with pytest.raises(ValueError, match="nu"):
        pinn.BurgersPhysicsLoss(-0.1)
    with pytest.raises(ValueError, match="residual_start"):
        pinn.BurgersPhysicsLoss(residual_start=5).loss(u, u[:, 0])
    with pytest.raises(ValueError, match="at least 3 time frames"):
        pinn.BurgersPhysicsLoss()(np.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match="input"):
        pinn.BurgersPhysicsLoss().loss(u, np.zeros((1, 7)))
    with pytest.raises(ValueError, match="dt"):
        pinn.grid_time_derivative(np.zeros(4), 0.0)
    a = np.ones((1, 9, 9))
    with pytest.raises(ValueError, match="bc_weight"):
        pinn.DarcyPhysicsLoss(bc_weight=-1.0)
    with pytest.raises(ValueError, match="input"):
        pinn.DarcyPhysicsLoss()(np.zeros((1, 9, 9)), -a)
    with pytest.raises(ValueError, match="f must be"):
        pinn.DarcyPhysicsLoss(np.ones((5, 5)))(np.zeros((1, 9, 9)), a)


@pytest.mark.wrong_argument_types
def test_arguments_against_the_annotations_raise_naming_them():
    with pytest.raises(TypeError, match="equation"):
        pinn.EvolutionPhysicsLoss("burgers")
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        pinn.BurgersPhysicsLoss()(np.zeros((2, 1, 5, 8)))
    with pytest.raises(ValueError, match="input"):
        pinn.DarcyPhysicsLoss()(np.zeros((1, 9, 9)), np.ones((1, 7, 7)))


@pytest.mark.slow
def test_physics_only_fno_within_3x_of_data_trained_fno():
    # benchmarks/_physics_fno.py's quick setting (32 x 17 space-time grid, 64 training inputs,
    # 300 Adam steps): the FNO trained on the Burgers residual alone, against the same FNO
    # trained on solutions, both scored on held-out solutions.
    path = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "_physics_fno.py")
    spec = importlib.util.spec_from_file_location("_physics_fno", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.run(quick=True)
    assert out["generator_vs_burgers_dataset_max_abs"] < 1e-5
    # The residual is consistent: the exact solutions' loss is far below the untrained model's.
    assert out["physics_loss_reference"] < 0.05 * out["physics_loss_init"]
    assert out["error_data"] < 0.1
    assert out["ratio"] <= 3.0
