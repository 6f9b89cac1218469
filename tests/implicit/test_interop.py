"""Interop with lineax and optimistix (float64).

Lineax: every lineax solver that applies, as the backward solver of ImplicitDiff, gives the
derivatives of jaxsolve's own backward (BiCGStab at 1e-12), in reverse and forward mode, for a
fixed point on a pytree state and a root; tags (transposed in reverse mode) and preconditioners
reach lineax. Optimistix: jaxsolve's nonlinear solvers run as optimistix root finders
(``as_optimistix``) with the iterates, step counts and codes of jaxsolve's driver, and
optimistix's ImplicitAdjoint gives our gradients; the norms equal optimistix's.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve import RESULTS
from jaxsolve import implicit as ji

from ._problems import RUNTIME_ERRORS, contraction, linear_map, normal, symmetric_contraction

lx = pytest.importorskip("lineax")
optx = pytest.importorskip("optimistix")

from jaxsolve.implicit._lineax import LineaxSolver  # noqa: E402
from jaxsolve.implicit._optimistix import (  # noqa: E402
    OptimistixSolver,
    as_optimistix,
    to_optimistix_result,
)

TOL = 1e-12
OURS = ji.ImplicitDiff(rtol=TOL, atol=TOL)  # BiCGStab, the reference backward
N = 7  # state {"a": 4, "b": 3}


# ----------------------------------------------------------------------------------------------
# Problems. Two general (non-symmetric Jacobian) and two symmetric ones, each a fixed point and
# a root, so every lineax solver meets a problem it applies to.


def _split(v):
    return {"a": v[:4], "b": v[4:]}


def _join(z):
    return jnp.concatenate([z["a"], z["b"]])


def tanh_cell(z, args):
    """Fixed point on a pytree: z = tanh(W z + x) with ||W||_2 = 0.9 (non-symmetric)."""
    w, x = args
    return _split(jnp.tanh(w @ _join(z) + x))


def shifted_tanh(y, args):
    """Root: F(y) = y + tanh(W y) / 2 - x (non-symmetric Jacobian I + D W / 2)."""
    w, x = args
    return y + 0.5 * jnp.tanh(w @ y) - x


def gradient_step(z, args):
    """Fixed point of a gradient step on a strictly convex function: z - (A z + tanh z - x) / 4;
    d f/dz - I = -(A + diag(sech^2 z)) / 4, symmetric negative definite."""
    a, x = args
    return z - 0.25 * (a @ z + jnp.tanh(z) - x)


def convex_gradient(y, args):
    """Root: the gradient A y + tanh y - x of a strictly convex function (Jacobian SPD)."""
    a, x = args
    return a @ y + jnp.tanh(y) - x


def _spd(n, seed=0):
    return jnp.eye(n) + 0.5 * (symmetric_contraction(n, 1.0, seed) + jnp.eye(n))


GENERAL = {
    "fixed_point": (ji.fixed_point, tanh_cell, ji.Anderson(), lambda: _split(jnp.zeros(N))),
    "root_find": (ji.root_find, shifted_tanh, ji.Broyden(jacobian_init=1.0), lambda: jnp.zeros(N)),
}
SYMMETRIC = {
    "fixed_point": (ji.fixed_point, gradient_step, ji.Anderson(), lambda: jnp.zeros(N)),
    "root_find": (
        ji.root_find,
        convex_gradient,
        ji.Broyden(jacobian_init=1.0),
        lambda: jnp.zeros(N),
    ),
}


def _args(kind, symmetric):
    x = 0.5 * normal(3, (N,))
    if symmetric:
        return _spd(N), x
    return contraction(N, 0.9, seed=1), x


def _loss_and_tangent(entry, args, backward):
    """Reverse and forward mode through one solve, jitted: the gradient of sum(sin z) with
    respect to ``args`` (the adjoint system) and the tangent of z along a fixed direction (the
    tangent system)."""
    solve, fn, solver, z0 = entry

    def value(args):
        return solve(fn, z0(), args, solver=solver, rtol=TOL, atol=TOL, backward=backward).value

    direction = _direction(args)

    @jax.jit
    def both(args):
        # One forward solve: linearize gives the tangent map, its transpose the gradient.
        z, tangent_map = jax.linearize(value, args)
        (grad,) = jax.linear_transpose(tangent_map, args)(jax.tree_util.tree_map(jnp.cos, z))
        return grad, tangent_map(direction)

    return both(args)


def _direction(args):
    return jax.tree_util.tree_map(lambda a: jnp.cos(jnp.arange(a.size)).reshape(a.shape), args)


def _linear_closed_form(w, b):
    """What :func:`_loss_and_tangent` gives for z = W z + b: z = (I - W)^-1 b, the gradient
    (u z^T, u) with u = (I - W)^-T cos z, the tangent (I - W)^-1 (dW z + db)."""
    a = jnp.eye(b.size) - w
    z = jnp.linalg.solve(a, b)
    dw, db = _direction((w, b))
    u = jnp.linalg.solve(a.T, jnp.cos(z))
    return (jnp.outer(u, z), u), jnp.linalg.solve(a, dw @ z + db)


_REFERENCES = {}


def _reference(kind, symmetric):
    """Our backward's derivatives on a problem, computed once per module."""
    key = (kind, symmetric)
    if key not in _REFERENCES:
        entry = (SYMMETRIC if symmetric else GENERAL)[kind]
        _REFERENCES[key] = _loss_and_tangent(entry, _args(kind, symmetric), OURS)
    return _REFERENCES[key]


def _assert_same(got, want, atol=1e-10):
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-9, atol=atol)


GENERAL_SOLVERS = {
    "GMRES": lambda: lx.GMRES(rtol=TOL, atol=TOL),
    "BiCGStab": lambda: lx.BiCGStab(rtol=TOL, atol=TOL),
    "LU": lambda: lx.LU(),
    "QR": lambda: lx.QR(),
    "SVD": lambda: lx.SVD(),
    "Auto(well_posed=True)": lambda: lx.AutoLinearSolver(well_posed=True),
    "Auto(well_posed=False)": lambda: lx.AutoLinearSolver(well_posed=False),
    "Auto(well_posed=None)": lambda: lx.AutoLinearSolver(well_posed=None),
}
# lineax's GMRES compiles slowly (its restarts are a nested loop), and AutoLinearSolver picks one
# of LU / QR / SVD, which the default run covers: these run with -m slow.
_SLOW = ("GMRES", "Auto(well_posed=True)", "Auto(well_posed=False)", "Auto(well_posed=None)")


def _marked(names, slow):
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]


@pytest.mark.parametrize("kind", ["fixed_point", "root_find"])
@pytest.mark.parametrize("name", _marked(GENERAL_SOLVERS, _SLOW))
def test_every_general_lineax_solver_gives_our_derivatives(x64, name, kind):
    # Non-symmetric Jacobians; the fixed point's state is a dict (raveled for lineax). A direct
    # solver materialises the matrix-free operator.
    args = _args(kind, symmetric=False)
    want = _reference(kind, symmetric=False)
    backward = ji.ImplicitDiff(GENERAL_SOLVERS[name]())
    assert isinstance(backward.solver, LineaxSolver)
    _assert_same(_loss_and_tangent(GENERAL[kind], args, backward), want)


# The operator is d f/dz - I for a fixed point (negative definite here), dF/dy for a root.
DEFINITE_TAG = {
    "fixed_point": lx.negative_semidefinite_tag,
    "root_find": lx.positive_semidefinite_tag,
}
DEFINITE_SOLVERS = {
    "CG": lambda: lx.CG(rtol=TOL, atol=TOL),
    "Cholesky": lambda: lx.Cholesky(),
    "Auto(well_posed=True) -> Cholesky": lambda: lx.AutoLinearSolver(well_posed=True),
    "GMRES with the tag": lambda: lx.GMRES(rtol=TOL, atol=TOL),
}


@pytest.mark.parametrize("kind", ["fixed_point", "root_find"])
@pytest.mark.parametrize(
    "name", _marked(DEFINITE_SOLVERS, ("Auto(well_posed=True) -> Cholesky", "GMRES with the tag"))
)
def test_definite_lineax_solvers_with_tags_give_our_derivatives(x64, name, kind):
    args = _args(kind, symmetric=True)
    want = _reference(kind, symmetric=True)
    backward = ji.ImplicitDiff(LineaxSolver(DEFINITE_SOLVERS[name](), tags=DEFINITE_TAG[kind]))
    _assert_same(_loss_and_tangent(SYMMETRIC[kind], args, backward), want)


def test_structured_solvers_get_the_transposed_tags_in_reverse_mode(x64):
    # z = L z + b with L lower triangular: d f/dz - I is lower triangular, its transpose (the
    # adjoint system) upper. Handing the adjoint solve the untransposed tag made lx.Triangular
    # read the wrong triangle: a plausible gradient off by 0.27 (before LineaxSolver.transpose).
    w = jnp.tril(contraction(6, 0.5))
    b = normal(100, (6,))
    entry = (ji.fixed_point, linear_map, ji.Anderson(), lambda: jnp.zeros(6))
    triangular = ji.ImplicitDiff(LineaxSolver(lx.Triangular(), tags=lx.lower_triangular_tag))
    _assert_same(_loss_and_tangent(entry, (w, b), triangular), _linear_closed_form(w, b))
    transposed = triangular.solver.transpose()
    assert transposed.tags == frozenset({lx.upper_triangular_tag})
    assert transposed.transpose().tags == frozenset({lx.lower_triangular_tag})

    # An elementwise map z = a cos z: a diagonal operator, for lx.Diagonal. Closed form:
    # dz/da = cos z / (1 + a sin z).
    entry = (ji.fixed_point, lambda z, a: a * jnp.cos(z), ji.Anderson(), lambda: jnp.zeros(6))
    a = 0.5 + 0.1 * jnp.arange(6.0)
    z = np.zeros(6)
    for _ in range(300):  # a contraction with rate <= 0.6 per entry
        z = np.asarray(a) * np.cos(z)
    dz_da = np.cos(z) / (1 + np.asarray(a) * np.sin(z))
    want = (np.cos(z) * dz_da, dz_da * _direction(a))
    diagonal = ji.ImplicitDiff(LineaxSolver(lx.Diagonal(), tags=lx.diagonal_tag))
    _assert_same(_loss_and_tangent(entry, a, diagonal), want)


@pytest.mark.parametrize(
    "solver, needs",
    [
        (lambda: lx.CG(rtol=1e-8, atol=1e-8), "positive_semidefinite_tag"),
        (lambda: lx.Cholesky(), "negative_semidefinite_tag"),
        (lambda: lx.Triangular(), "lower_triangular_tag"),
        (lambda: lx.Diagonal(), "diagonal_tag"),
    ],
)
def test_a_solver_that_needs_a_tag_says_so_when_built(solver, needs):
    with pytest.raises(ValueError, match=f"LineaxSolver tags: .*{needs}"):
        ji.ImplicitDiff(solver())
    with pytest.raises(ValueError, match="tags"):
        LineaxSolver(solver())


def test_a_failed_lineax_backward_solve_raises_or_is_nan(x64):
    args = _args("root_find", symmetric=False)
    short = lambda: lx.BiCGStab(rtol=1e-14, atol=1e-14, max_steps=1)
    grad, tangent = _loss_and_tangent(
        GENERAL["root_find"], args, ji.ImplicitDiff(short(), throw=False)
    )
    assert np.all(np.isnan(grad[1])) and np.all(np.isnan(tangent))
    with pytest.raises(RUNTIME_ERRORS, match=r"backward/tangent.*LineaxSolver"):
        _loss_and_tangent(GENERAL["root_find"], args, ji.ImplicitDiff(short()))
    # As linear_solve's solver, lineax's budget is reported as ours.
    w = contraction(6, 0.9)
    # (linear_solve takes a bare lineax solver too, but its annotation does not say so yet.)
    sol = ji.linear_solve(
        lambda x: x - w @ x, jnp.ones(6), solver=LineaxSolver(short()), throw=False
    )
    assert sol.result == RESULTS.max_steps_reached


# ----------------------------------------------------------------------------------------------
# Preconditioners through options.


def _linear_fixed_point(w, b, backward):
    """Derivatives of z = W z + b, z0 = 0, along b (grad of sum(sin z); jvp along ones)."""
    entry = (ji.fixed_point, linear_map, ji.Anderson(), lambda: jnp.zeros(6))
    grad, tangent = _loss_and_tangent(entry, (w, b), backward)
    return grad[1], tangent


def test_a_preconditioner_reaches_lineax_cg(x64):
    # Symmetric W: d f/dz - I = W - I is negative definite; CG negates it and wants M ~ (I - W)^-1
    # (positive definite). With three steps CG fails unpreconditioned (NaN) and converges with
    # the exact inverse; the derivatives are then ours.
    w, b = symmetric_contraction(6, 0.9), normal(100, (6,))
    (_, want_grad), want_tangent = _linear_closed_form(w, b)
    want = want_grad, want_tangent
    inverse = lx.MatrixLinearOperator(jnp.linalg.inv(jnp.eye(6) - w), lx.positive_semidefinite_tag)
    cg = lx.CG(rtol=1e-10, atol=1e-10, max_steps=3)
    tag = lx.negative_semidefinite_tag
    plain = ji.ImplicitDiff(LineaxSolver(cg, tags=tag), throw=False)
    assert np.all(np.isnan(_linear_fixed_point(w, b, plain)[0]))
    pre = ji.ImplicitDiff(LineaxSolver(cg, tags=tag, options={"preconditioner": inverse}))
    _assert_same(_linear_fixed_point(w, b, pre), want)


def test_the_preconditioner_is_transposed_for_the_adjoint_system(x64):
    # Non-symmetric W: the exact inverse M = (W - I)^-1 lets BiCGStab finish in its three-step
    # budget; reverse mode solves with (W - I)^T and must get M^T. Handing it M^T for the
    # forward system (so that it would be given M^T^T = M in reverse) fails both ways.
    w, b = contraction(6, 0.9), normal(100, (6,))
    (_, want_grad), want_tangent = _linear_closed_form(w, b)
    want = want_grad, want_tangent
    inverse = jnp.linalg.inv(w - jnp.eye(6))
    bicgstab = lx.BiCGStab(rtol=1e-10, atol=1e-10, max_steps=3)

    def backward(matrix):
        options = {"preconditioner": lx.MatrixLinearOperator(matrix)}
        return ji.ImplicitDiff(LineaxSolver(bicgstab, options=options), throw=False)

    _assert_same(_linear_fixed_point(w, b, backward(inverse)), want)
    grad, tangent = _linear_fixed_point(w, b, backward(inverse.T))
    assert np.all(np.isnan(grad)) and np.all(np.isnan(tangent))


def test_a_preconditioner_on_the_pytree_state(x64):
    # The preconditioner may act on the state's pytree ({"a", "b"}); it is raveled as the state.
    w, b = symmetric_contraction(N, 0.9), normal(100, (N,))
    inverse = jnp.linalg.inv(jnp.eye(N) - w)
    tree_inverse = lx.FunctionLinearOperator(
        lambda z: _split(inverse @ _join(z)),
        jax.eval_shape(lambda: _split(jnp.zeros(N))),
        lx.positive_semidefinite_tag,
    )
    cg = lx.CG(rtol=1e-10, atol=1e-10, max_steps=3)
    solver = LineaxSolver(
        cg, tags=lx.negative_semidefinite_tag, options={"preconditioner": tree_inverse}
    )
    entry = (
        ji.fixed_point,
        lambda z, args: _split(linear_map(_join(z), args)),
        ji.Anderson(),
        lambda: _split(jnp.zeros(N)),
    )
    grad, tangent = _linear_closed_form(w, b)
    _assert_same(_loss_and_tangent(entry, (w, b), ji.ImplicitDiff(solver)), (grad, _split(tangent)))


def test_preconditioner_options_are_checked(x64):
    identity = lx.IdentityLinearOperator(jax.ShapeDtypeStruct((3,), jnp.float64))
    with pytest.raises(ValueError, match=r"unknown keys \['y0'\]"):
        LineaxSolver(lx.GMRES(1e-8, 1e-8), options={"y0": jnp.zeros(3)})
    with pytest.raises(ValueError, match="LU takes no preconditioner"):
        LineaxSolver(lx.LU(), options={"preconditioner": identity})
    with pytest.raises(TypeError, match="must be a lineax linear operator"):
        LineaxSolver(lx.GMRES(1e-8, 1e-8), options={"preconditioner": lambda v: v})
    too_small = LineaxSolver(
        lx.GMRES(1e-8, 1e-8),
        options={
            "preconditioner": lx.IdentityLinearOperator(
                {"x": jax.ShapeDtypeStruct((3,), jnp.float64)}
            )
        },
    )
    with pytest.raises(ValueError, match=r"size 4\); its in_structure .* has size 3"):
        ji.linear_solve(lambda x: 2 * x, jnp.ones(4), solver=too_small)


# ----------------------------------------------------------------------------------------------
# jaxsolve solvers inside optimistix.


OPTX_TOL = 1e-10


def _ours_and_optx(entry_point, fn, solver, y0, args, max_steps=256, **kw):
    ours = getattr(ji, entry_point)(
        fn, y0, args, solver=solver, rtol=OPTX_TOL, atol=OPTX_TOL, max_steps=max_steps, **kw
    )
    theirs = getattr(optx, entry_point)(
        fn,
        as_optimistix(solver, rtol=OPTX_TOL, atol=OPTX_TOL, **kw),
        y0,
        args,
        max_steps=max_steps,
    )
    return ours, theirs


@pytest.mark.parametrize(
    "solver",
    [ji.Picard(), ji.Anderson(), ji.Broyden(), ji.Newton()],
    ids=["Picard", "Anderson", "Broyden", "Newton"],
)
def test_optimistix_fixed_point_runs_our_solvers_as_our_driver_does(x64, solver):
    # The same iterate after the same number of steps, on a pytree state: the adapter calls our
    # init / step / terminate exactly as the driver does.
    args = _args("fixed_point", symmetric=False)
    ours, theirs = _ours_and_optx("fixed_point", tanh_cell, solver, _split(jnp.zeros(N)), args)
    assert ours.result == RESULTS.successful and theirs.result == optx.RESULTS.successful
    assert int(theirs.stats["num_steps"]) == int(ours.num_steps) >= 3
    _assert_same(theirs.value, ours.value, atol=1e-14)
    np.testing.assert_allclose(theirs.stats["residual"], ours.residual, rtol=1e-6)


@pytest.mark.parametrize(
    "solver",
    [ji.Broyden(jacobian_init=1.0), ji.Newton()],
    ids=["Broyden", "Newton"],
)
def test_optimistix_root_find_runs_our_solvers_as_our_driver_does(x64, solver):
    args = _args("root_find", symmetric=False)
    ours, theirs = _ours_and_optx("root_find", shifted_tanh, solver, jnp.zeros(N), args)
    assert ours.result == RESULTS.successful and theirs.result == optx.RESULTS.successful
    assert int(theirs.stats["num_steps"]) == int(ours.num_steps)
    np.testing.assert_allclose(theirs.value, ours.value, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(shifted_tanh(theirs.value, args), 0, atol=1e-9)


def test_optimistix_with_our_solver_under_vmap_stops_each_member_on_its_own(x64):
    w, _ = _args("fixed_point", symmetric=False)
    xs = 0.5 * normal(8, (3, N)) * jnp.asarray([[0.1], [1.0], [3.0]])  # different step counts
    y0 = _split(jnp.zeros(N))
    adapter = as_optimistix(ji.Anderson(), rtol=OPTX_TOL, atol=OPTX_TOL)
    ours = jax.vmap(
        lambda x: ji.fixed_point(
            tanh_cell, y0, (w, x), solver=ji.Anderson(), rtol=OPTX_TOL, atol=OPTX_TOL
        )
    )(xs)
    theirs = jax.vmap(lambda x: optx.fixed_point(tanh_cell, adapter, y0, (w, x)))(xs)
    np.testing.assert_array_equal(theirs.stats["num_steps"], ours.num_steps)
    assert len(set(np.asarray(ours.num_steps).tolist())) > 1
    _assert_same(theirs.value, ours.value, atol=1e-14)


@pytest.mark.parametrize("kind", ["fixed_point", "root_find"])
def test_optimistix_implicit_adjoint_through_our_solver_gives_our_gradient(x64, kind):
    solve, fn, solver, z0 = GENERAL[kind]
    args = _args(kind, symmetric=False)
    adapter = as_optimistix(solver, rtol=TOL, atol=TOL)
    loss = lambda value: sum(jnp.sum(jnp.sin(v)) for v in jax.tree_util.tree_leaves(value))

    entry = getattr(optx, kind)
    ours_loss = lambda a: loss(solve(fn, z0(), a, solver=solver, rtol=TOL, atol=TOL).value)
    adjoints = (optx.ImplicitAdjoint(), optx.ImplicitAdjoint(lx.BiCGStab(rtol=TOL, atol=TOL)))

    def optx_loss(a, adjoint):
        return loss(entry(fn, adapter, z0(), a, adjoint=adjoint).value)

    @jax.jit
    def grads(args):
        theirs = [jax.grad(optx_loss)(args, adjoint) for adjoint in adjoints]
        return [jax.grad(ours_loss)(args), *theirs]

    ours, *theirs = grads(args)
    for g in theirs:
        _assert_same(g, ours)


def test_optimistix_reports_our_failures_with_its_codes(x64):
    w, x = _args("fixed_point", symmetric=False)
    y0 = _split(jnp.zeros(N))
    run = lambda fn, solver, **kw: optx.fixed_point(fn, solver, y0, (w, x), throw=False, **kw)
    picard = as_optimistix(ji.Picard(), rtol=OPTX_TOL, atol=OPTX_TOL)
    budget = run(tanh_cell, picard, max_steps=3)
    assert budget.result == optx.RESULTS.nonlinear_max_steps_reached
    assert int(budget.stats["num_steps"]) == 3
    # z = 2 z + 1 moves away from its fixed point -1 under Picard: the residual grows 2x a step.
    grows = lambda z, args: jax.tree_util.tree_map(lambda v: 2 * v + 1, z)
    diverged = run(grows, as_optimistix(ji.Picard(), divergence_factor=100.0))
    assert diverged.result == optx.RESULTS.nonlinear_divergence
    assert int(diverged.stats["num_steps"]) == 7  # 2^7 > 100 >= 2^6
    nan = lambda z, args: jax.tree_util.tree_map(lambda v: v + jnp.nan, z)
    assert run(nan, picard).result == optx.RESULTS.nonfinite
    with pytest.raises(RUNTIME_ERRORS, match="maximum number of steps"):
        optx.fixed_point(tanh_cell, picard, y0, (w, x), max_steps=3)
    # Each of our codes maps to the closest of optimistix's.
    pairs = {
        "successful": "successful",
        "max_steps_reached": "nonlinear_max_steps_reached",
        "nonfinite": "nonfinite",
        "diverged": "nonlinear_divergence",
        "linear_solve_failed": "breakdown",
    }
    for ours, theirs in pairs.items():
        assert to_optimistix_result(getattr(RESULTS, ours)) == getattr(optx.RESULTS, theirs)


@pytest.mark.wrong_argument_types
def test_as_optimistix_refuses_a_solver_that_is_not_ours():
    with pytest.raises(TypeError, match="as_optimistix: solver must be a jaxsolve"):
        as_optimistix(optx.Newton(rtol=1e-6, atol=1e-6))


def test_as_optimistix_checks_its_arguments(x64):
    with pytest.raises(ValueError, match="as_optimistix: rtol must be positive"):
        as_optimistix(ji.Picard(), rtol=-1.0)
    with pytest.raises(ValueError, match="as_optimistix: divergence_factor must be > 1"):
        as_optimistix(ji.Picard(), divergence_factor=0.5)
    with pytest.raises(ValueError, match="structure and shapes of y"):
        optx.root_find(lambda y, _: y[:2], as_optimistix(ji.Newton()), jnp.zeros(3))
    assert isinstance(as_optimistix(ji.Anderson()), optx.AbstractRootFinder)
    assert isinstance(as_optimistix(ji.Anderson()), OptimistixSolver)


# ----------------------------------------------------------------------------------------------
# Norms.


NORMS = ["max_norm", "rms_norm", "two_norm"]


@pytest.mark.parametrize("name", NORMS)
def test_our_norms_equal_optimistix_norms_and_their_gradients(x64, name):
    tree = {"a": normal(5, (3,)), "b": normal(6, (2, 2)), "c": jnp.asarray(-4.0)}
    ours, theirs = getattr(ji, name), getattr(optx, name)
    np.testing.assert_allclose(ours(tree), theirs(tree), rtol=1e-15)
    _assert_same(jax.grad(ours)(tree), jax.grad(theirs)(tree), atol=1e-15)


def test_either_norm_family_serves_the_adapter(x64):
    # optimistix's rms_norm in the adapter stops where ours does, with the same residual.
    args = _args("fixed_point", symmetric=False)
    y0 = _split(jnp.zeros(N))
    sols = [
        optx.fixed_point(tanh_cell, as_optimistix(ji.Anderson(), norm=norm), y0, args)
        for norm in (ji.rms_norm, optx.rms_norm)
    ]
    assert int(sols[0].stats["num_steps"]) == int(sols[1].stats["num_steps"]) > 3
    np.testing.assert_allclose(sols[0].stats["residual"], sols[1].stats["residual"], rtol=1e-12)
    np.testing.assert_allclose(
        sols[0].stats["residual"],
        ji.rms_norm(
            jax.tree_util.tree_map(
                lambda f, z: f - z, tanh_cell(sols[0].value, args), sols[0].value
            )
        ),
        rtol=1e-12,
    )


@pytest.mark.parametrize(
    "name",
    [
        "max_norm",
        "rms_norm",
        "two_norm",
    ],
)
def test_norm_gradient_at_zero_is_zero(x64, name):
    zero = {"a": jnp.zeros(3), "b": jnp.zeros((2, 2))}
    for norm in (getattr(optx, name), getattr(ji, name)):
        assert norm(zero) == 0
        for leaf in jax.tree_util.tree_leaves(jax.grad(norm)(zero)):
            np.testing.assert_array_equal(leaf, 0)  # not NaN, not a subgradient
