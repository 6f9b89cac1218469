r"""Deep conjugate directions: a network proposes each search direction of a conjugate direction
method for a symmetric positive definite system ``A x = b``.

"A Deep Conjugate Direction Method for Iteratively Solving Linear Systems" (Kaneda, Akar, Chen,
Kim, Wang & Teran, ICML 2023). Step :math:`k` from the iterate :math:`x_k` with residual
:math:`r_k = b - A x_k`:

.. math::
   \tilde d_k = f_\theta(r_k / \|r_k\|_2), \qquad
   d_k = \tilde d_k - \sum_{j \in J_k} \frac{\tilde d_k^\top A d_j}{d_j^\top A d_j}\, d_j, \qquad
   \alpha_k = \frac{d_k^\top r_k}{d_k^\top A d_k}, \qquad
   x_{k+1} = x_k + \alpha_k d_k, \quad r_{k+1} = r_k - \alpha_k A d_k,

with :math:`J_k` the last ``num_orthogonal`` directions (the paper uses 2). The step is the exact
line search of the energy :math:`E(x) = \tfrac12\|x - x^*\|_A^2 = \tfrac12 r^\top A^{-1} r` along
:math:`d_k`, so whatever the network returns,

.. math:: \|r_{k+1}\|_{A^{-1}}^2 = \|r_k\|_{A^{-1}}^2 - \frac{(d_k^\top r_k)^2}{d_k^\top A d_k}
   \le \|r_k\|_{A^{-1}}^2 :

the error never grows in the :math:`A` norm. The A-orthogonalisation keeps the step from undoing
the last ones: :math:`r_k \perp d_{k-1}` by the line search and :math:`r_k \perp d_{k-2}` since
:math:`d_{k-1} \perp_A d_{k-2}`, so it leaves :math:`d^\top r` unchanged while it can only lower
:math:`d^\top A d` (an :math:`A`-orthogonal projection), which only increases the decrease. Since
:math:`A d_k = A \tilde d_k - \sum_j \beta_j A d_j` with the stored :math:`A d_j`, a step costs one
matrix-vector product and one network evaluation.

Safeguard (not in the paper; it makes "converges at any tolerance" a theorem rather than a hope):
where the network's direction is not finite or makes an angle with the residual whose cosine is
below ``min_cosine`` in absolute value, the step uses :math:`r_k` itself (then also
A-orthogonalised). With :math:`|\cos(d, r)| \ge c` the energy falls by at least the factor
:math:`1 - c^2/\kappa(A)` per step (:math:`(d^\top r)^2 / d^\top A d \ge c^2 \|r\|^2 /
\lambda_{\max}` and :math:`r^\top A^{-1} r \le \|r\|^2/\lambda_{\min}`), so any network, trained
or not, converges to the exact solution, if slowly. The direction :math:`A^{-1} r` that a perfect
network would return has :math:`\cos(A^{-1}r, r) \ge 2\sqrt{\kappa}/(1 + \kappa)`
(Kantorovich), so a threshold below that never replaces it.

Training (:func:`dcdm_loss`) needs no solve inside the loop: for a training residual :math:`r`
with known :math:`e = A^{-1} r`, the energy left after one step along :math:`d = f_\theta(r)`,
relative to the energy before it, is

.. math:: \frac{\|r - \alpha A d\|_{A^{-1}}^2}{\|r\|_{A^{-1}}^2}
   = 1 - \frac{(d^\top r)^2}{(d^\top A d)\,(r^\top e)},

the paper's loss (the :math:`A^{-1}` norm of the residual after one step; here divided by the
energy before it, which does not depend on :math:`\theta`, so that residuals of every scale and
frequency weigh alike). The paper draws its training residuals from the span of the
low-frequency eigenvectors of :math:`A`, where :math:`e` is a diagonal scaling away.

The solver is an :class:`AbstractLinearSolver` on the Krylov driver (the residual recurrence
with a true-residual check and restart, as :class:`CG`): usable in :func:`linear_solve`, as the
solver of :class:`ImplicitDiff` (for symmetric definite backward systems), and it returns the
same result codes. A negative definite ``A`` (the Jacobian :math:`W - I` of a fixed point
:math:`z = Wz + x` with symmetric :math:`\|W\| < 1`) gives the iterates of :math:`-A` on
:math:`-b`, since :math:`\alpha` and the A-orthogonalisation coefficients are ratios.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_int, exact_dot
from ._krylov import _RecurrenceResidual


class DCDM(_RecurrenceResidual):
    r"""Deep conjugate direction method for symmetric definite (positive, or negative) ``A``
    (see the module docstring).

    Args:
        network: a pure function of a flat unit residual returning a flat direction of the same
            length (say a :class:`DirectionNet`); an :class:`equinox.Module` or a
            :class:`jax.tree_util.Partial`, so that its weights are leaves of the solver. Any
            function gives a convergent method; a trained one a fast one.
        num_orthogonal: how many previous directions each new one is A-orthogonalised against
            (the paper: 2). Each costs two stored vectors and no matrix-vector product.
        min_cosine: the safeguard threshold in ``[0, 1)``: a direction :math:`d` with
            :math:`|d^\top r| < \text{min\_cosine}\, \|d\|\,\|r\|` (or not finite) is replaced
            by :math:`r`. 0 keeps every finite direction (then a direction orthogonal to the
            residual stalls the method: the run ends on the budget, reported as
            ``max_steps_reached``).

    Stops on :math:`\|b - Ax\|_2 \le \text{atol} + \text{rtol}\,\|b\|_2` measured on the
    returned :math:`x`; ``max_steps`` counts matrix-vector products (one per step).
    """

    network: Callable[[Array], Array]
    num_orthogonal: int = eqx.field(static=True, default=2)
    min_cosine: float = eqx.field(static=True, default=1e-3)

    def __check_init__(self):
        if not callable(self.network):
            raise TypeError(
                "DCDM network must be a function r -> direction on flat vectors; got "
                f"{type(self.network).__name__}."
            )
        check_int("DCDM num_orthogonal", self.num_orthogonal, minimum=0)
        c = self.min_cosine
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c < 1:
            raise ValueError(f"DCDM min_cosine must be a number in [0, 1); got {c!r}.")

    def restart(self, x, r):
        # No previous direction: zero rows with zero curvature take no part (see ``step``).
        m = (max(self.num_orthogonal, 1), r.shape[0])
        return dict(
            x=x,
            r=r,
            dirs=jnp.zeros(m, r.dtype),
            adirs=jnp.zeros(m, r.dtype),
            curv=jnp.zeros(m[0], r.dtype),
            rnorm=jnp.linalg.norm(r),
            broke_down=jnp.zeros((), bool),
        )

    def residual_norm(self, state):
        return state["rnorm"]

    def broke_down(self, state):
        return state["broke_down"]

    def step(self, matvec, b, tol, state, last):
        x, r, rn = state["x"], state["r"], state["rnorm"]
        unit = r / jnp.where(rn > 0, rn, 1)
        d = jnp.asarray(self.network(unit)).astype(r.dtype)
        if d.shape != r.shape:
            raise ValueError(
                f"DCDM network must return a direction of the residual's shape {r.shape}; "
                f"got {d.shape}."
            )
        dnorm = jnp.linalg.norm(d)
        cosine = exact_dot(d, unit) / jnp.where(dnorm > 0, dnorm, 1)
        usable = jnp.all(jnp.isfinite(d)) & (dnorm > 0) & (jnp.abs(cosine) >= self.min_cosine)
        d = jnp.where(usable, d, unit)
        ad = matvec(d)
        dirs, adirs, curv = state["dirs"], state["adirs"], state["curv"]
        if self.num_orthogonal > 0:
            # beta_j = d.A d_j / d_j.A d_j (A symmetric: (A d_j).d); unfilled rows have zero
            # curvature and a zero coefficient. The stored directions are A-orthogonal to each
            # other, so one classical Gram-Schmidt pass projects out all of them.
            filled = curv != 0
            beta = jnp.where(filled, exact_dot(adirs, d) / jnp.where(filled, curv, 1), 0.0)
            d = d - exact_dot(beta, dirs)
            ad = ad - exact_dot(beta, adirs)
        dad = exact_dot(d, ad)
        # dad = 0 cannot happen for a definite A and d != 0 (a negative definite A is -A with
        # the same iterates: alpha and beta are ratios); where an indefinite A makes it so, the
        # step is skipped and the run ends (the driver measures the residual and restarts).
        ok = (dad != 0) & jnp.isfinite(dad)
        alpha = jnp.where(ok, exact_dot(d, r) / jnp.where(ok, dad, 1), 0.0)
        x = x + alpha * d
        r = r - alpha * ad
        if self.num_orthogonal > 0:
            dirs = jnp.concatenate([d[None], dirs[:-1]])
            adirs = jnp.concatenate([ad[None], adirs[:-1]])
            curv = jnp.concatenate([jnp.where(ok, dad, 0.0)[None], curv[:-1]])
        return dict(
            x=x,
            r=r,
            dirs=dirs,
            adirs=adirs,
            curv=curv,
            rnorm=jnp.linalg.norm(r),
            broke_down=~ok,
        )


def dcdm_loss(
    network: Callable[[Array], Array],
    matvec: Callable[[Array], Array],
    r: Float[Array, " n"],
    solution: Float[Array, " n"],
) -> Float[Array, ""]:
    r"""Relative energy left after one DCDM step from residual ``r`` (the paper's loss, scaled):
    :math:`1 - (d^\top r)^2 / ((d^\top A d)(r^\top e))` with :math:`d = f(r/\|r\|)` and
    ``solution`` :math:`e = A^{-1} r`. In :math:`[0, 1]` for SPD :math:`A`; 0 when :math:`d`
    is parallel to :math:`e`. Batch with ``jax.vmap``."""
    if r.shape != solution.shape:
        raise ValueError(
            f"dcdm_loss: solution must have the shape of r, {r.shape}; got {solution.shape}."
        )
    unit = r / jnp.linalg.norm(r)
    d = jnp.asarray(network(unit)).astype(r.dtype)
    dr = jnp.dot(d, unit)
    return 1.0 - dr * dr / (jnp.dot(d, matvec(d)) * jnp.dot(unit, solution / jnp.linalg.norm(r)))


class DirectionNet(eqx.Module):
    """A small convolutional U-Net on a 2-D grid, a pure function of the residual: flat vector of
    ``grid_shape`` in, flat direction out (single sample; batch with ``jax.vmap``).

    A 3 x 3 lift to ``width`` channels; ``levels`` times a stride-2 3 x 3 convolution down (the
    coarse levels give the network the global reach an inverse of an elliptic operator needs)
    and a 3 x 3 convolution; back up by bilinear resizing to the skip's shape, concatenation with
    the skip and a 3 x 3 convolution; a 3 x 3 projection to one channel. GELU activations.
    Works on any grid size (odd sizes included) with at least ``2 ** levels`` points per axis.

    The input is scaled to unit root-mean-square entries (the method only ever passes unit
    residuals, whose entries shrink like :math:`n^{-1/2}`; unscaled, the biases swamp them and
    training stalls). With ``skip`` (default) the direction is that scaled residual plus the
    network's output: the residual alone, A-orthogonalised against the last direction, is CG's
    direction, so the network learns a correction to CG rather than a direction from scratch
    (in a trial on 16 x 16 Darcy systems, 200 training steps, both trained; on a held-out one
    the skip reached a relative residual of 1e-8 in 35 steps, 45 without it, CG in 95).
    """

    grid_shape: tuple[int, int] = eqx.field(static=True)
    skip: bool = eqx.field(static=True)
    lift: eqx.nn.Conv2d
    down: list
    coarse: list
    up: list
    project: eqx.nn.Conv2d

    def __init__(
        self,
        grid_shape: Sequence[int],
        *,
        width: int = 16,
        levels: int = 3,
        skip: bool = True,
        key: PRNGKeyArray,
    ):
        grid_shape = tuple(grid_shape)
        if len(grid_shape) != 2:
            raise ValueError(f"DirectionNet grid_shape must be (nx, ny); got {grid_shape!r}.")
        for g in grid_shape:
            check_int("DirectionNet grid_shape entries", g, minimum=1)
        width = check_int("DirectionNet width", width)
        levels = check_int("DirectionNet levels", levels, minimum=0)
        if min(grid_shape) < 2**levels:
            raise ValueError(
                f"DirectionNet: a grid of {grid_shape} is too small for {levels} levels (needs "
                f"at least {2**levels} points per axis)."
            )
        self.grid_shape = (int(grid_shape[0]), int(grid_shape[1]))
        self.skip = bool(skip)
        keys = iter(jax.random.split(key, 3 * levels + 2))
        conv = lambda cin, cout, stride=1: eqx.nn.Conv2d(
            cin, cout, 3, stride=stride, padding=1, key=next(keys)
        )
        self.lift = conv(1, width)
        self.down = [conv(width, width, 2) for _ in range(levels)]
        self.coarse = [conv(width, width) for _ in range(levels)]
        self.up = [conv(2 * width, width) for _ in range(levels)]
        self.project = conv(width, 1)

    def on_grid(self, grid_shape: Sequence[int]) -> DirectionNet:
        """The same weights on another grid (the convolutions do not depend on its size)."""
        shaped = eqx.filter_eval_shape(
            lambda: DirectionNet(
                grid_shape,
                width=self.lift.out_channels,
                levels=len(self.down),
                skip=self.skip,
                key=jax.random.key(0),
            )
        )
        treedef = jax.tree_util.tree_structure(shaped)
        return jax.tree_util.tree_unflatten(treedef, jax.tree_util.tree_leaves(self))

    def __call__(self, r: Float[Array, " n"]) -> Float[Array, " n"]:
        n = self.grid_shape[0] * self.grid_shape[1]
        if r.shape != (n,):
            raise ValueError(
                f"DirectionNet for grid {self.grid_shape} takes a flat vector of length {n}; "
                f"got shape {r.shape}."
            )
        act = jax.nn.gelu
        # Unit root-mean-square entries, whatever the grid: a unit residual's entries are of
        # size n^{-1/2}, where the biases would swamp them. (The direction's scale is free.)
        rms = jnp.sqrt(jnp.mean(r * r))
        u = (r / jnp.where(rms > 0, rms, 1)).reshape(1, *self.grid_shape)
        h = act(self.lift(u))
        skips = []
        for down, coarse in zip(self.down, self.coarse, strict=True):
            skips.append(h)
            h = act(coarse(act(down(h))))
        for up, fine in zip(reversed(self.up), reversed(skips), strict=True):
            h = jax.image.resize(h, (h.shape[0], *fine.shape[1:]), "linear")
            h = act(up(jnp.concatenate([h, fine])))
        out = self.project(h)
        return (u + out if self.skip else out).reshape(n)
