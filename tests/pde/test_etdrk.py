"""ETDRK steppers: exactness on linear problems, orders of convergence, invariants, closed forms."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS, pde


@functools.partial(jax.jit, static_argnames=("steps", "method"))
def _final(eq, u0, dt, steps, method="etdrk4"):
    stepper = pde.ETDRK(eq, dt, u0.shape[1:], method)
    return pde.rollout(stepper, u0, steps, every=steps, include_initial=False)[-1]


@functools.partial(jax.jit, static_argnames=("counts", "method"))
def _sweep(eq, u0, horizon, counts, method="etdrk4"):
    """Final states at ``horizon`` for several step counts: one compile, the counts traced
    (``rollout`` masks the steps past each count)."""
    top = int(max(counts))

    def one(n):
        stepper = pde.ETDRK(eq, horizon / n, u0.shape[1:], method)
        return pde.rollout(stepper, u0, n, max_steps=top, every=top, include_initial=False)[-1]

    return jax.vmap(one)(jnp.asarray(counts, jnp.int32))


def _errors(finals, reference):
    return [float(jnp.max(jnp.abs(f - reference))) for f in finals]


def _orders(errors):
    e = np.asarray(errors)
    return np.log2(e[:-1] / e[1:])


def test_heat_and_advection_diffusion_equal_the_exact_fourier_solution(x64):
    """A linear equation is integrated exactly: every saved state equals
    exp((-nu |xi|^2 - i c.xi) t) u_hat(0), written out here, to 1e-10 in float64."""
    rng = np.random.default_rng(0)
    n1, n2 = 24, 16
    u0 = rng.normal(size=(1, n1, n2))
    eq = pde.AdvectionDiffusion(0.03, velocity=(0.4, -1.3), num_spatial_dims=2, lengths=(2.0, 1.0))
    dt, every, steps = 0.037, 3, 12
    traj = jax.jit(lambda u: pde.rollout(pde.ETDRK(eq, dt, (n1, n2)), u, steps, every=every))(u0)
    xi1 = 2 * np.pi * np.fft.fftfreq(n1, 1 / n1)[:, None] / 2.0
    k2 = np.fft.rfftfreq(n2, 1 / n2)
    xi2 = 2 * np.pi * k2[None, :]
    odd2 = np.where(k2 == n2 // 2, 0.0, xi2)  # the Nyquist mode of an odd symbol stays real
    odd1 = np.where(np.abs(np.fft.fftfreq(n1, 1 / n1)) == n1 // 2, 0.0, 1.0)[:, None] * xi1
    symbol = -0.03 * (xi1**2 + xi2**2) - 1j * (0.4 * odd1 - 1.3 * odd2)
    uh0 = np.fft.rfft2(u0[0])
    for j, state in enumerate(np.asarray(traj)):
        exact = np.fft.irfft2(np.exp(symbol * j * every * dt) * uh0, s=(n1, n2))
        np.testing.assert_allclose(state[0], exact, atol=1e-10, rtol=0)
    heat = pde.AdvectionDiffusion(0.1)
    x = np.arange(64) / 64
    v0 = (np.sin(2 * np.pi * x) + 0.5 * np.cos(6 * np.pi * x))[None]
    v = _final(heat, v0, 0.01, 25)
    exact = np.exp(-0.1 * 4 * np.pi**2 * 0.25) * np.sin(2 * np.pi * x) + 0.5 * np.exp(
        -0.1 * 36 * np.pi**2 * 0.25
    ) * np.cos(6 * np.pi * x)
    np.testing.assert_allclose(v[0], exact, atol=1e-12)
    np.testing.assert_allclose(heat.exact(v0, 0.25)[0], exact, atol=1e-12)


def test_constant_forcing_is_integrated_exactly(x64):
    """u_t = nu u_xx + f with f = cos(2 pi x): u_hat_1(t) = e^{-a t} u_hat_1(0) + (1 - e^{-a t}) f_hat_1 / a."""
    nu = 0.05
    eq = pde.AdvectionDiffusion(nu, forcing=lambda x: jnp.cos(2 * jnp.pi * x[0]))
    u0 = np.zeros((1, 32))
    u = _final(eq, u0, 0.1, 7)
    a = nu * 4 * np.pi**2
    x = np.arange(32) / 32
    np.testing.assert_allclose(u[0], (1 - np.exp(-a * 0.7)) / a * np.cos(2 * np.pi * x), atol=1e-13)


def test_phi_functions_are_accurate_near_zero_in_float32():
    """The contour mean keeps phi_1..phi_3 accurate where the closed form cancels (|z| << 1)."""
    z = np.array([0.0, 1e-6, -3e-4, 2e-3j, 0.3 - 0.4j, -0.9, 0.95j, -1.5, 4.0 + 1j, -200.0])
    got = pde.phi_functions(jnp.asarray(z, jnp.complex64), 3)
    for k in range(4):
        want = []
        for zi in z:
            if abs(zi) < 0.5:
                want.append(sum(zi**j / math.factorial(j + k) for j in range(30)))
            else:
                want.append((np.exp(zi) - sum(zi**j / math.factorial(j) for j in range(k))) / zi**k)
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want), rtol=3e-6, atol=1e-7)


def test_etdrk4_is_fourth_order_on_kuramoto_sivashinsky(x64):
    """Kassam & Trefethen's KS problem (L = 32 pi, u0 = cos(x/16)(1 + sin(x/16))) to t = 10:
    errors against a step 1/64 of the coarsest fall by ~16 per halving."""
    eq = pde.KuramotoSivashinsky()
    x = 32 * np.pi * np.arange(64) / 64
    u0 = (np.cos(x / 16) * (1 + np.sin(x / 16)))[None]
    *finals, ref = _sweep(eq, u0, 10.0, (20, 40, 80, 2560))
    errs = _errors(finals, ref)
    orders = _orders(errs)
    assert np.all((orders > 3.7) & (orders < 4.3)), (errs, orders)


def test_etdrk4_is_fourth_order_on_kdv_and_the_soliton_travels(x64):
    """KdV (purely imaginary, stiff dispersive symbol): fourth order in time, and the sech^2
    soliton moves at its speed."""
    eq = pde.KortewegDeVries(length=40.0)
    x = 40 * np.arange(128) / 128
    u0 = eq.soliton(x, 0.0, speed=1.0, x0=15.0)[None]
    *finals, ref = _sweep(eq, u0, 2.0, (64, 128, 256, 2048))
    errs = _errors(finals, ref)
    orders = _orders(errs)
    assert np.all((orders > 3.6) & (orders < 4.6)), (errs, orders)
    np.testing.assert_allclose(ref[0], eq.soliton(x, 2.0, speed=1.0, x0=15.0), atol=1e-6)


def test_burgers_matches_cole_hopf_at_fourth_order(x64):
    """Against the exact Cole-Hopf solution (not a reference run), ETDRK4 converges at order 4."""
    eq = pde.Burgers(0.05)
    x = np.arange(64) / 64
    errs = _errors(
        _sweep(eq, eq.cole_hopf(x, 0.0)[None], 0.5, (10, 20, 40)), eq.cole_hopf(x, 0.5)[None]
    )
    orders = _orders(errs)
    assert np.all(np.abs(orders - 4) < 0.3) and errs[-1] < 1e-8, (errs, orders)


@pytest.mark.slow
@pytest.mark.parametrize("method,order", [("etdrk1", 1), ("etdrk2", 2), ("etdrk3", 3)])
def test_every_tableau_has_its_order(x64, method, order):
    """ETDRK1..3 converge at orders 1..3 against the exact Cole-Hopf solution."""
    eq = pde.Burgers(0.05)
    x = np.arange(64) / 64
    u0, exact = eq.cole_hopf(x, 0.0)[None], eq.cole_hopf(x, 0.5)[None]
    orders = _orders(_errors(_sweep(eq, u0, 0.5, (20, 40, 80), method), exact))
    assert np.all(np.abs(orders - order) < 0.3), (method, orders)


def test_burgers_conserves_the_mean():
    """The conservative, de-aliased nonlinear term has no k = 0 component: the mean of a rough
    random field with a nonzero mean is kept to rounding, in float32."""
    grf = pde.GaussianRandomField(2.0, 5.0, 625.0)
    u0 = 0.7 + grf.sample(jax.random.PRNGKey(3), (256,))[None]
    run = jax.jit(
        lambda u: pde.rollout(pde.ETDRK(pde.Burgers(0.02), 1e-3, (256,)), u, 300, every=100)
    )
    traj = run(u0)
    means = np.asarray(jnp.mean(traj, axis=(1, 2)))
    np.testing.assert_allclose(means, means[0], atol=2e-6)
    assert float(jnp.max(jnp.abs(traj[-1] - traj[0]))) > 0.2  # while the field does change


def test_navier_stokes_taylor_green_and_advection_closed_form(x64):
    """Taylor-Green w = cos(2 pi x) cos(2 pi y) decays as exp(-8 pi^2 nu t) (its advection
    vanishes only with the right velocity signs), and for w = sin(2 pi x) + cos(4 pi y) the
    advection term equals 1.5 cos(2 pi x) sin(4 pi y) (worked out by hand from u = psi_y,
    v = -psi_x, -Laplacian psi = w)."""
    nu, n = 0.01, 16
    eq = pde.NavierStokes2D(nu, forcing=None)
    grid = pde.SpectralGrid((n, n))
    x, y = grid.coordinates()
    w0 = (jnp.cos(2 * np.pi * x) * jnp.cos(2 * np.pi * y))[None]

    @jax.jit
    def check(w0, w):
        traj = pde.rollout(pde.ETDRK(eq, 0.1, (n, n)), w0, 10, every=5)
        rhs = pde.NavierStokes2D(0.0, forcing=None).rhs(w)
        forced = pde.NavierStokes2D(0.0).rhs(jnp.zeros((1, n, n)))
        return traj, rhs, forced

    w = (jnp.sin(2 * np.pi * x) + jnp.cos(4 * np.pi * y))[None]
    traj, rhs, forced = check(w0, w)
    for j, t in enumerate((0.0, 0.5, 1.0)):
        np.testing.assert_allclose(traj[j], w0 * np.exp(-8 * np.pi**2 * nu * t), atol=1e-13)
    np.testing.assert_allclose(
        rhs[0], -1.5 * jnp.cos(2 * np.pi * x) * jnp.sin(4 * np.pi * y), atol=1e-12
    )
    np.testing.assert_allclose(forced[0], pde.fno_forcing(np.stack([x, y])), atol=1e-13)


def test_steppers_build_inside_jit_and_vmap_over_dt_and_nu():
    """dt and nu are traced: one compile serves a sweep, and each entry equals its own run."""
    x = np.arange(32) / 32
    u0 = jnp.asarray(np.sin(2 * np.pi * x))[None]

    def run(nu, dt):
        return pde.rollout(pde.ETDRK(pde.Burgers(nu), dt, (32,)), u0, 5, every=5)[-1]

    nus, dts = jnp.array([0.01, 0.05]), jnp.array([0.01, 0.02])
    swept = jax.jit(jax.vmap(run))(nus, dts)
    single = jax.jit(run)
    for i in range(2):
        np.testing.assert_allclose(swept[i], single(nus[i], dts[i]), rtol=1e-5, atol=1e-6)


def test_phi_functions_settings_that_would_give_nan_are_refused():
    """No contour point, a NaN radius or a zero threshold made every phi_k with k >= 1 NaN (or
    a negative order returned phi_0 alone) without a word; each now raises naming it."""
    z = jnp.asarray([0.5, 2.0], jnp.complex64)
    with pytest.raises(ValueError, match="contour_points"):
        pde.phi_functions(z, 3, contour_points=0)
    with pytest.raises(ValueError, match="radius"):
        pde.phi_functions(z, 3, radius=float("nan"))
    with pytest.raises(ValueError, match="threshold"):
        pde.phi_functions(z, 3, threshold=0.0)
    with pytest.raises(ValueError, match="max_order"):
        pde.phi_functions(z, -1)
    # The settings that are valid still give phi_1(z) = (e^z - 1) / z.
    got = pde.phi_functions(z, 1, contour_points=24, radius=1.5, threshold=1.0)[1]
    np.testing.assert_allclose(np.asarray(got), np.expm1([0.5, 2.0]) / [0.5, 2.0], rtol=1e-5)


def test_exact_heat_solution_refuses_a_negative_or_nan_time():
    """exact(u0, t=-1) ran the heat semigroup backwards: the high modes overflowed and the
    "exact solution" came back all NaN without a word."""
    eq = pde.AdvectionDiffusion(0.01, 1.0)
    x = np.arange(64) / 64
    u0 = jnp.asarray(np.sin(2 * np.pi * x) + 1e-3 * np.sin(40 * np.pi * x))[None]
    for t in (-1.0, math.nan):
        with pytest.raises(ValueError, match="exact: t must be finite and >= 0"):
            eq.exact(u0, t)
    exact = jax.jit(eq.exact)
    with pytest.raises(Exception, match="exact: t must be finite and >= 0"):
        jax.block_until_ready(exact(u0, -1.0))
    # A valid traced time: mode k decays by exp(-nu (2 pi k)^2 t) and moves by t (speed 1).
    t = 0.3
    want = np.exp(-0.01 * (2 * np.pi) ** 2 * t) * np.sin(2 * np.pi * (x - t)) + 1e-3 * np.exp(
        -0.01 * (40 * np.pi) ** 2 * t
    ) * np.sin(40 * np.pi * (x - t))
    np.testing.assert_allclose(exact(u0, t)[0], want, atol=1e-5)


def test_tableau_checks_and_bad_arguments():
    with pytest.raises(ValueError, match="b sums"):
        pde.ExpRKTableau("bad", 1, (0.0,), ((),), (2 * pde.phi(1),))
    with pytest.raises(ValueError, match="row 1"):
        pde.ExpRKTableau(
            "bad", 2, (0.0, 1.0), ((), (pde.phi(2),)), (pde.phi(1) - pde.phi(2), pde.phi(2))
        )
    assert pde.ETDRK4.b[1] == 2 * pde.phi(2) - 4 * pde.phi(3)
    eq = pde.Burgers()
    with pytest.raises(ValueError, match="method"):
        pde.ETDRK(eq, 0.1, (16,), "rk4")
    with pytest.raises(ValueError, match="dt"):
        pde.ETDRK(eq, -0.1, (16,))
    with pytest.raises(ValueError, match="1 spatial"):
        pde.ETDRK(eq, 0.1, (16, 16))
    step = jax.jit(lambda u: pde.ETDRK(eq, 0.1, (16,))(u))  # the errors come at trace time
    with pytest.raises(ValueError, match=r"jax\.vmap"):
        step(jnp.zeros((4, 1, 16)))
    with pytest.raises(ValueError, match="built for the grid"):
        step(jnp.zeros((1, 32)))

    @jax.jit
    def blow_up(u):
        stepper = pde.ETDRK(pde.Burgers(0.0, dealias=False), 5.0, (16,), "etdrk1")
        return pde.rollout(stepper, u, 60, full_output=True, throw=False).result

    assert (
        blow_up(jnp.asarray(40 * np.sin(2 * np.pi * np.arange(16) / 16))[None]) == RESULTS.nonfinite
    )


@pytest.mark.wrong_argument_types
def test_concrete_physical_parameters_are_checked_when_built():
    """Issue 17 item 7: a negative, infinite or NaN parameter raises at construction, naming it
    (an infinite viscosity, dt or domain length, a NaN coefficient used to be accepted)."""
    cases = [
        (lambda: pde.Burgers(-0.1), "Burgers: nu must be finite and >= 0; got -0.1"),
        (lambda: pde.Burgers(math.inf), "Burgers: nu must be finite"),
        (lambda: pde.Burgers(0.1, length=math.inf), "Burgers: lengths must be finite and > 0"),
        (lambda: pde.AdvectionDiffusion(-1e-3), "AdvectionDiffusion: nu"),
        (lambda: pde.AdvectionDiffusion(0.1, math.nan), "AdvectionDiffusion: velocity"),
        (lambda: pde.KuramotoSivashinsky(length=0.0), "KuramotoSivashinsky: lengths"),
        (lambda: pde.KortewegDeVries(dispersion=math.nan), "KortewegDeVries: dispersion"),
        (lambda: pde.KortewegDeVries(convection=math.inf), "KortewegDeVries: convection"),
        (lambda: pde.NavierStokes2D(-1e-3), "NavierStokes2D: nu"),
        (lambda: pde.NavierStokes2D(drag=math.inf), "NavierStokes2D: drag"),
        (lambda: pde.NavierStokes2D(lengths=(1.0, math.inf)), r"NavierStokes2D: lengths .*inf"),
        (lambda: pde.ETDRK(pde.Burgers(), math.inf, (16,)), "ETDRK: dt must be finite and > 0"),
        (lambda: pde.ETDRK(pde.Burgers(), math.nan, (16,)), "ETDRK: dt"),
        (lambda: pde.ETDRK(pde.Burgers(), 0.0, (16,)), "ETDRK: dt"),
        (lambda: pde.ETDRK(pde.Burgers(), jnp.array([0.1, 0.2]), (16,)), "dt must be a scalar"),
        (lambda: pde.ETDRK(pde.Burgers(), 0.1, (16,), contour_points=0), "contour_points"),
        (lambda: pde.GaussianRandomField(2.0, 3.0, math.inf), "GaussianRandomField: scale"),
        (lambda: pde.Burgers(0.1).cole_hopf(0.0, 0.0, a=1.0, b=2.0), "a > |b|"),
        (lambda: pde.KortewegDeVries().soliton(0.0, 0.0, speed=-1.0), "same sign"),
    ]
    for build, message in cases:
        with pytest.raises(ValueError, match=message):
            build()
    with pytest.raises(TypeError, match="AbstractEquation"):
        pde.ETDRK(lambda u: u, 0.1, (16,))
    with pytest.raises(ValueError, match=r"step_spectral.*\(1, 9\).*\(1, 16\)"):
        jax.eval_shape(  # traced only: the check is at trace time
            lambda: pde.ETDRK(pde.Burgers(), 0.1, (16,)).step_spectral(
                jnp.zeros((1, 16), jnp.complex64)
            )
        )


@jax.jit
def _burgers_step_and_rhs(nu, dt, length, u):
    eq = pde.Burgers(nu, length=length)
    return pde.ETDRK(eq, dt, (16,), "etdrk1")(u), eq.rhs(u)


def test_traced_physical_parameters_are_checked_when_run():
    """Issue 17 item 7: a traced negative viscosity (a sweep under jit) used to give NaN or a
    growing solution silently; now the compiled stepper (and rhs) raises, naming the parameter."""
    u = jnp.asarray(np.sin(2 * np.pi * np.arange(16) / 16))[None]
    _, rhs = _burgers_step_and_rhs(0.1, 0.01, 1.0, u)
    np.testing.assert_allclose(rhs, pde.Burgers(0.1).rhs(u), rtol=1e-6, atol=1e-6)
    for args, message in (
        ((-0.1, 0.01, 1.0), "Burgers: nu must be finite and >= 0"),
        ((0.1, -0.01, 1.0), "ETDRK: dt must be finite and > 0"),
        ((0.1, math.nan, 1.0), "ETDRK: dt"),
        ((0.1, 0.01, 0.0), "Burgers: lengths must be finite and > 0"),
    ):
        with pytest.raises(Exception, match=message):
            jax.block_until_ready(_burgers_step_and_rhs(*args, u))
