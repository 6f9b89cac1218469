"""MgNO: the V-cycle is linear, commutes with the shifts of its coarsest grid under periodic
boundaries, and with the classical stencils is the textbook geometric-multigrid V-cycle (a NumPy
matrix implementation written here), whose iteration solves the discrete Poisson problem."""

import itertools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsolve.operators._mgno import MgNO, VCycle, level_shapes


@eqx.filter_jit
def _apply(model, x):
    return jax.vmap(model)(x)


# ----------------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "boundary"),
    [
        ((33,), "dirichlet"),
        ((37, 50), "periodic"),
        ((9, 10, 11), "dirichlet"),
    ],
)
def test_output_shapes_on_odd_and_even_grids(shape, boundary):
    # Shapes only: an abstract model and an abstract forward pass (no weights drawn, no compile).
    model = eqx.filter_eval_shape(
        MgNO,
        len(shape),
        2,
        3,
        width=4,
        key=jax.random.key(0),
        n_layers=2,
        levels=3,
        smoothing=[(1, 1), (2, 0), (1, 1)],
        boundary=boundary,
    )
    x = jax.ShapeDtypeStruct((5, 2, *shape), jnp.float32)
    assert eqx.filter_eval_shape(_apply, model, x).shape == (5, 3, *shape)


def test_level_shapes_and_too_many_levels():
    assert level_shapes((37, 50, 33), 4) == ((37, 50, 33), (18, 25, 16), (9, 12, 8), (4, 6, 4))
    assert level_shapes((15,), 4) == ((15,), (7,), (3,), (1,))
    with pytest.raises(ValueError, match="levels"):
        level_shapes((15, 7), 4)
    cycle = eqx.filter_eval_shape(VCycle, 1, 2, levels=5, key=jax.random.key(0))
    with pytest.raises(ValueError, match="levels"):
        cycle(jnp.zeros((2, 15)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(boundary="neumann"), "boundary"),
        (dict(smoothing=[(1, 1)]), "smoothing"),
        (dict(smoothing=[(1, 1), (1, 0), (0, 0)]), "smoothing"),
        (dict(smoothing=(1, -1)), "smoothing"),
    ],
)
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ValueError, match=name):
        VCycle(2, 2, levels=3, key=jax.random.key(0), **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("shape", [(37, 33), (7, 10, 9)])
def test_forward_pass_on_odd_grids(shape):
    model = MgNO(len(shape), 2, 1, width=4, key=jax.random.key(0), n_layers=2, levels=3)
    y = _apply(model, jax.random.normal(jax.random.key(1), (2, 2, *shape)))
    assert y.shape == (2, 1, *shape) and bool(jnp.all(jnp.isfinite(y)))


# ----------------------------------------------------------------------------------------------
# Linearity and shift equivariance
# ----------------------------------------------------------------------------------------------


def _check_linear(vx, vy, vxy, a, b):
    scale = np.max(np.abs(vxy))
    assert scale > 1e-2  # a map that is not zero
    np.testing.assert_allclose(vxy, a * vx + b * vy, rtol=0, atol=1e-13 * scale)


def test_vcycle_is_linear(periodic_training_step):
    """The model's V-cycle at ``x``, ``y`` and ``0.7 x - 2.3 y`` (1-D, periodic)."""
    _check_linear(*periodic_training_step["linearity"], 0.7, -2.3)


@pytest.mark.slow
@pytest.mark.parametrize("boundary", ["dirichlet", "periodic"])
def test_2d_vcycle_is_linear(x64, boundary):
    cycle = VCycle(
        2, 2, levels=3, key=jax.random.key(0), smoothing=[(2, 1), (1, 1), (1, 2)], boundary=boundary
    )
    x, y = np.random.default_rng(0).standard_normal((2, 2, 13, 10))
    a, b = 0.7, -2.3
    _check_linear(*np.asarray(_apply(cycle, jnp.asarray(np.stack([x, y, a * x + b * y])))), a, b)


def _shifts_of(x, shift):
    """``x``, shifted by ``shift`` points and by one point along the first axis."""
    axes = tuple(range(-len(shift), 0))
    unit = (1,) + (0,) * (len(shift) - 1)
    return np.stack([x, np.roll(x, shift, axes), np.roll(x, unit, axes)])


def _check_shifts(outputs, shift):
    y, y_coarse_shift, y_unit_shift = outputs
    axes = tuple(range(-len(shift), 0))
    unit = (1,) + (0,) * (len(shift) - 1)
    np.testing.assert_allclose(y_coarse_shift, np.roll(y, shift, axes), rtol=0, atol=1e-12)
    # The odd fine points are the coarse ones: a one-point shift moves them off the coarse grid,
    # so the model is not equivariant to it (the check above can fail).
    assert np.max(np.abs(y_unit_shift - np.roll(y, unit, axes))) > 1e-3


@pytest.fixture(scope="module")
def periodic_training_step():
    """One compiled program (float64) for a 1-D periodic MgNO: ``value_and_grad`` of a loss on
    the batch ``x``, ``x`` shifted by 2 points, ``x`` shifted by one point, with the outputs, and
    the model's V-cycle on ``u``, ``v``, ``0.7 u - 2.3 v`` as auxiliaries. Shared by the shift,
    linearity and transformation tests: one compilation instead of three."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        # 2 grids, 48 -> 24: shifts by multiples of 2 move both grids by whole points (the slow
        # 2-D test has 3 grids).
        model = MgNO(
            1, 2, 1, width=3, key=jax.random.key(0), n_layers=1, levels=2, boundary="periodic"
        )
        rng = np.random.default_rng(1)
        batch = jnp.asarray(_shifts_of(rng.standard_normal((2, 48)), (2,)))
        target = jnp.asarray(rng.standard_normal((3, 1, 48)))
        u, v = rng.standard_normal((2, 3, 48))
        fields = jnp.asarray(np.stack([u, v, 0.7 * u - 2.3 * v]))

        @eqx.filter_jit
        @eqx.filter_value_and_grad(has_aux=True)
        def loss(m, x, y, fields):
            out = jax.vmap(m)(x)
            return jnp.mean((out - y) ** 2), (out, jax.vmap(m.blocks[0].vcycle)(fields))

        (value, (outputs, linearity)), grads = loss(model, batch, target, fields)
        return dict(
            value=float(value),
            outputs=np.asarray(outputs),
            linearity=np.asarray(linearity),
            grads=jax.tree_util.tree_map(np.asarray, grads),
        )
    finally:
        jax.config.update("jax_enable_x64", previous)


def test_periodic_mgno_commutes_with_coarse_grid_shifts(periodic_training_step):
    _check_shifts(periodic_training_step["outputs"], (2,))


@pytest.mark.slow
def test_periodic_2d_mgno_commutes_with_coarse_grid_shifts(x64):
    # 3 grids, 16x12 -> 8x6 -> 4x3: shifts by multiples of 2^(3-1) = 4 move every grid by
    # whole points.
    model = MgNO(2, 2, 1, width=3, key=jax.random.key(0), n_layers=2, levels=3, boundary="periodic")
    x = np.random.default_rng(1).standard_normal((2, 16, 12))
    batch = np.concatenate([_shifts_of(x, (4, 8)), np.roll(x, 2, -2)[None]])
    outputs = np.asarray(_apply(model, jnp.asarray(batch)))
    _check_shifts(outputs[:3], (4, 8))
    # A shift by 2 moves the coarsest grid by half a point: not a symmetry either.
    assert np.max(np.abs(outputs[3] - np.roll(outputs[0], 2, -2))) > 1e-3


# ----------------------------------------------------------------------------------------------
# Classical geometric multigrid, written independently with matrices
# ----------------------------------------------------------------------------------------------


def _laplacian_1d(n, h):
    return (2 * np.eye(n) - np.eye(n, k=1) - np.eye(n, k=-1)) / h**2


def _full_weighting_1d(n):
    """Coarse point i sits on fine point 2i + 1: weights 1/4, 1/2, 1/4 on 2i, 2i + 1, 2i + 2
    (a fine point past the grid is the zero boundary value)."""
    r = np.zeros((n // 2, n))
    for i in range(n // 2):
        for j, w in zip((2 * i, 2 * i + 1, 2 * i + 2), (0.25, 0.5, 0.25), strict=True):
            if j < n:
                r[i, j] = w
    return r


class _ClassicalMultigrid:
    """Dirichlet Poisson on a grid ``shape`` of spacing ``h`` (zero boundary values one spacing
    outside): rediscretised Laplacians, full weighting, linear interpolation ``P = 2^d R^T``,
    damped Jacobi, and a direct solve on the coarsest grid."""

    def __init__(self, shape, h, levels, pre, post, omega):
        self.pre, self.post, self.omega = pre, post, omega
        self.a, self.r, self.p = [], [], []
        for level in range(levels):
            hl = h * 2**level
            a = np.zeros((1, 1))
            for n in shape:
                eye = np.eye(a.shape[0])
                a = np.kron(a, np.eye(n)) + np.kron(eye, _laplacian_1d(n, hl))
            self.a.append(a)
            if level < levels - 1:
                r = np.ones((1, 1))
                for n in shape:
                    r = np.kron(r, _full_weighting_1d(n))
                self.r.append(r)
                self.p.append(2 ** len(shape) * r.T)
                shape = tuple(n // 2 for n in shape)

    def _jacobi(self, a, u, f, steps):
        for _ in range(steps):
            u = u + self.omega * (f - a @ u) / np.diag(a)
        return u

    def vcycle(self, f, level=0):
        a = self.a[level]
        if level == len(self.a) - 1:
            return np.linalg.solve(a, f)
        u = self._jacobi(a, np.zeros_like(f), f, self.pre)
        u = u + self.p[level] @ self.vcycle(self.r[level] @ (f - a @ u), level + 1)
        return self._jacobi(a, u, f, self.post)


def _poisson(shape, levels, smoothing=(1, 1)):
    """Our classical V-cycle on ``shape`` (spacing ``h = 1 / (n_1 + 1)``, the textbook weight
    2/3 in 1-D, 4/5 in 2-D), the matrix one, and the V-cycle as a function of one field."""
    d, h = len(shape), 1.0 / (shape[0] + 1)
    omega = 2.0 / 3.0 if d == 1 else 4.0 / 5.0
    ours = VCycle.poisson(d, levels=levels, grid_spacing=h, smoothing=smoothing, omega=omega)
    ref = _ClassicalMultigrid(shape, h, levels, *smoothing, omega=omega)

    def cycle(f):
        # One compiled program per configuration, shared by the tests (batch of one).
        return np.asarray(_apply(ours, jnp.asarray(f.reshape(1, 1, *shape)))).reshape(-1)

    return cycle, ref


# Each coarsest grid is one point, where Jacobi with omega = 1 is the exact solve.
_CLASSICAL = [
    ((15, 15), 4, (1, 1)),
    pytest.param((31,), 5, (1, 1), marks=pytest.mark.slow),
    pytest.param((16,), 5, (2, 1), marks=pytest.mark.slow),
    pytest.param((12, 9), 4, (1, 2), marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("shape", "levels", "smoothing"), _CLASSICAL)
def test_poisson_vcycle_equals_classical_multigrid(x64, shape, levels, smoothing):
    cycle, ref = _poisson(shape, levels, smoothing)
    for seed in range(2):
        f = np.random.default_rng(seed).standard_normal(np.prod(shape))
        expected = ref.vcycle(f)
        np.testing.assert_allclose(
            cycle(f), expected, rtol=0, atol=1e-12 * np.max(np.abs(expected))
        )


@pytest.mark.parametrize(
    ("shape", "levels", "rate"),
    [
        ((15, 15), 4, 0.4),
        # The same bound on a grid twice finer: the contraction does not depend on h.
        pytest.param((31, 31), 5, 0.4, marks=pytest.mark.slow),
        pytest.param((31,), 5, 0.2, marks=pytest.mark.slow),
        pytest.param((255,), 8, 0.2, marks=pytest.mark.slow),
    ],
)
def test_poisson_vcycles_converge_to_the_discrete_solution(x64, shape, levels, rate):
    """``u <- u + V(f - A u)``: the error to ``A^{-1} f`` shrinks by a fixed factor per cycle
    (1-D about 0.13 to 0.18 here, 2-D with omega = 4/5 about 0.3 to 0.4), far below the
    ``1 - O(h^2)`` of the smoother alone, down to rounding."""
    cycle, ref = _poisson(shape, levels)
    a = ref.a[0]
    h = 1.0 / (shape[0] + 1)
    x = np.meshgrid(*[np.arange(1, n + 1) * h for n in shape], indexing="ij")
    f = (1.0 + np.sin(3 * np.pi * x[0]) * np.prod(x, axis=0)).reshape(-1)
    solution = np.linalg.solve(a, f)
    u, errors = np.zeros_like(f), []
    for _ in range(40):
        u = u + cycle(f - a @ u)
        errors.append(np.max(np.abs(u - solution)) / np.max(np.abs(solution)))
        if errors[-1] < 1e-11:
            break
    assert errors[-1] < 1e-11
    assert all(e1 < rate * e0 for e0, e1 in itertools.pairwise(errors))


# ----------------------------------------------------------------------------------------------
# Transformations
# ----------------------------------------------------------------------------------------------


def test_jit_vmap_grad(periodic_training_step):
    step = periodic_training_step
    grads = step["grads"]
    assert np.isfinite(step["value"]) and np.all(np.isfinite(step["outputs"]))
    assert all(np.all(np.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))
    # Gradients reach the coarsest grid's stencils and the lifting.
    assert np.max(np.abs(grads.blocks[0].vcycle.pre_smoothers[-1][0])) > 0
    assert np.max(np.abs(grads.lifting.weights[0])) > 0
