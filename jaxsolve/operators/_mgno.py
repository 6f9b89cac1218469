r"""MgNO: neural operator layers whose linear part is a multigrid V-cycle with learned stencils.

("MgNO: Efficient Parameterization of Linear Operators via Multigrid", He, Liu, Xu.) Each layer
is

.. math:: v^{l+1} = \sigma\big(W^l v^l + b^l + \mathcal{M}^l(v^l)\big),

with :math:`W^l` a pointwise linear map and :math:`\mathcal{M}^l` one V-cycle of a multigrid
method for an unknown, learned, equation :math:`A u = f` (:class:`VCycle`), applied to
:math:`f = v^l`. Every piece of the V-cycle is a ``3^d`` convolution mixing the ``c`` channels:
the operators :math:`A_\ell` (one per grid), the smoothers :math:`S_{\ell,i}` (one per smoothing
step), the restrictions :math:`R_\ell` (stride-2 convolutions) and the prolongations
:math:`P_\ell` (transposed stride-2 convolutions). On grid :math:`\ell`, from :math:`u = 0`:

.. math::
   u &\leftarrow u + S_{\ell,i}\,(f_\ell - A_\ell u) && \text{pre-smoothing, } i = 1..\nu_1\\
   f_{\ell+1} &= R_\ell\,(f_\ell - A_\ell u) && \text{restricted residual}\\
   u &\leftarrow u + P_\ell\, u_{\ell+1} && u_{\ell+1}: \text{the V-cycle on grid } \ell+1\\
   u &\leftarrow u + S'_{\ell,i}\,(f_\ell - A_\ell u) && \text{post-smoothing, } i = 1..\nu_2

(MgNet's correction scheme; on the coarsest grid only the smoothing steps.) The map
:math:`f \mapsto u` is linear, and with the classical stencils (:meth:`VCycle.poisson`) it is the
textbook geometric-multigrid V-cycle for the Poisson equation.

Grids. A grid of ``n`` points along an axis is coarsened to ``n // 2`` points: the coarse points
are the fine points ``1, 3, 5, ...`` (0-based), so every size ``n >= 2`` has a coarse grid and the
restriction is ``y_i = sum_k w_k x_{2i+1+k}`` (``k = -1, 0, 1``). The boundary condition decides
what lies beyond the grid:

* ``"dirichlet"``: zeros, one spacing outside the first and the last point: the grid holds the
  interior unknowns of a problem with zero boundary values. An odd grid nests exactly in its
  coarse grid (``2m + 1 -> m`` points, coarse points on fine ones, the boundary shared), so grids
  of ``2^k - 1`` points (the interior of a vertex-centred grid of ``2^k + 1`` points) nest exactly
  at every level. An even grid ends on a coarse point, so its coarse grid's outer zero lies one
  fine spacing past the fine grid's: still a V-cycle, on a slightly longer coarse domain.
* ``"periodic"``: circular padding. A grid whose size is divisible by ``2^(levels - 1)`` nests
  exactly (every coarse grid periodic), and the V-cycle then commutes with shifts by multiples
  of ``2^(levels - 1)`` points; other sizes work, without that symmetry.

A V-cycle with ``levels`` grids needs ``n // 2^(levels - 1) >= 1`` points on every axis.
"""

import math
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray

from .._core import check_choice, check_int, default_float, is_int
from .._core._init import draw, subkeys
from ._checks import check_real, check_sample, float_input
from ._fno import ChannelMLP, lift_and_project
from ._local import _padded_correlation

_BOUNDARIES = {"dirichlet": "zeros", "periodic": "periodic"}


def _restrict(x, w, boundary: str):
    """Stride-2 correlation centred on the odd fine points: ``(c, *n) -> (c, *(n // 2))``."""
    d = x.ndim - 1
    # Window i covers the fine points 2i, 2i+1, 2i+2; only the last window of an even grid
    # reaches past it (to the point n, a zero or, periodically, the point 0).
    mode = "wrap" if boundary == "periodic" else "constant"
    xp = jnp.pad(x, [(0, 0)] + [(0, 1)] * d, mode=mode)
    return lax.conv_general_dilated(
        xp[None], w, (2,) * d, "VALID", precision=lax.Precision.HIGHEST
    )[0]


def _prolong(y, w, fine_shape: Sequence[int], boundary: str):
    """Transposed stride-2 convolution: the coarse values put on the odd fine points (zeros on
    the even ones), then the ``3^d`` stencil: ``(c, *m) -> (c, *fine_shape)``."""
    padding = []
    for j, n in enumerate(fine_shape):
        m = y.shape[1 + j]
        if boundary == "periodic" and n == 2 * m:
            # The fine point 0 sees the coarse point m - 1 across the period: put it in front.
            y = jnp.concatenate([lax.slice_in_dim(y, m - 1, m, axis=1 + j), y], axis=1 + j)
            padding.append((0, 1))
        else:
            # The zero-inserted coarse field (length 2m - 1) starts at the fine point 1; a zero each
            # side for the stencil. (On an odd periodic grid both end points are even, hence
            # zero, so circular padding would give the same zeros.)
            padding.append((2, n - 2 * m + 1))
    return lax.conv_general_dilated(
        y[None],
        w,
        (1,) * len(fine_shape),
        padding,
        lhs_dilation=(2,) * len(fine_shape),
        precision=lax.Precision.HIGHEST,
    )[0]


def _per_level_smoothing(smoothing, levels: int) -> tuple[tuple[int, int], ...]:
    """``(pre, post)`` steps per grid from one pair or one pair per grid."""
    try:
        pairs = list(smoothing)
    except TypeError:
        raise TypeError(
            f"smoothing must be a (pre, post) pair or one pair per level; got {smoothing!r}."
        ) from None
    if len(pairs) == 2 and all(is_int(p) for p in pairs):
        pairs = [tuple(pairs)] * levels
    if len(pairs) != levels:
        raise ValueError(
            f"smoothing needs one (pre, post) pair per level ({levels}); got {smoothing!r}."
        )
    out = []
    for pair in pairs:
        try:
            pre, post = pair
        except (TypeError, ValueError):
            raise ValueError(
                f"smoothing: each entry must be a (pre, post) pair; got {pair!r}."
            ) from None
        out.append(
            (check_int("smoothing", pre, minimum=0), check_int("smoothing", post, minimum=0))
        )
    if sum(out[-1]) == 0:
        raise ValueError("smoothing: the coarsest level needs at least one smoothing step.")
    return tuple(out)


def level_shapes(spatial_shape: Sequence[int], levels: int) -> tuple[tuple[int, ...], ...]:
    """The grids of a V-cycle with ``levels`` grids, finest first (``n -> n // 2`` per axis);
    ``ValueError`` naming ``levels`` when the coarsest would be empty."""
    levels = check_int("levels", levels)
    shapes = [tuple(int(n) for n in spatial_shape)]
    for _ in range(levels - 1):
        shapes.append(tuple(n // 2 for n in shapes[-1]))
    if min(shapes[-1]) < 1:
        raise ValueError(
            f"levels={levels} coarsens the grid {shapes[0]} to {shapes[-1]}: every axis needs "
            f"at least 2^(levels - 1) = {2 ** (levels - 1)} points."
        )
    return tuple(shapes)


class VCycle(eqx.Module):
    r"""One multigrid V-cycle ``f -> u`` with learned ``3^d`` channel-mixing stencils
    (module doc): a linear map ``(channels, *spatial) -> (channels, *spatial)``.

    Args:
        num_spatial_dims: 1, 2, 3 (any positive number).
        channels: channels of ``f`` and ``u``.
        levels: number of grids, the finest included.
        key: PRNG key; stencils start uniform in :math:`\pm 1/\sqrt{c\,3^d}` (PyTorch's
            convolution default, as the paper's code).
        smoothing: ``(pre, post)`` smoothing steps on every grid, or one pair per grid (finest
            first); the coarsest grid applies its ``pre + post`` steps one after the other.
        boundary: ``"dirichlet"`` (zero padding, default) or ``"periodic"`` (circular).
        dtype: of the stencils (default: the default float).

    Attributes:
        operators: :math:`A_\ell`, ``(c, c, 3, ..., 3)``, one per grid.
        pre_smoothers, post_smoothers: :math:`S_{\ell,i}`, per grid a tuple of stencils.
        restrictions: :math:`R_\ell` (grid :math:`\ell \to \ell + 1`).
        prolongations: :math:`P_\ell` (grid :math:`\ell + 1 \to \ell`).
    """

    operators: tuple[Float[Array, " c c *kernel"], ...]
    pre_smoothers: tuple[tuple[Float[Array, " c c *kernel"], ...], ...]
    post_smoothers: tuple[tuple[Float[Array, " c c *kernel"], ...], ...]
    restrictions: tuple[Float[Array, " c c *kernel"], ...]
    prolongations: tuple[Float[Array, " c c *kernel"], ...]
    num_spatial_dims: int = eqx.field(static=True)
    boundary: str = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        channels: int,
        *,
        levels: int,
        key: PRNGKeyArray,
        smoothing: tuple[int, int] | Sequence[tuple[int, int]] = (1, 1),
        boundary: str = "dirichlet",
        dtype=None,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        c = check_int("channels", channels)
        n_levels = check_int("levels", levels)
        steps = _per_level_smoothing(smoothing, n_levels)
        check_choice("boundary", boundary, set(_BOUNDARIES))
        shape = (c, c) + (3,) * d
        bound = 1.0 / math.sqrt(c * 3**d)
        n_stencils = n_levels + sum(pre + post for pre, post in steps) + 2 * (n_levels - 1)
        arrays = iter(draw(key, [("uniform", shape, bound)] * n_stencils, dtype or default_float()))
        self.operators = tuple(next(arrays) for _ in range(n_levels))
        self.pre_smoothers = tuple(tuple(next(arrays) for _ in range(p)) for p, _ in steps)
        self.post_smoothers = tuple(tuple(next(arrays) for _ in range(q)) for _, q in steps)
        self.restrictions = tuple(next(arrays) for _ in range(n_levels - 1))
        self.prolongations = tuple(next(arrays) for _ in range(n_levels - 1))
        self.num_spatial_dims = d
        self.boundary = boundary

    @property
    def levels(self) -> int:
        return len(self.operators)

    @property
    def channels(self) -> int:
        return self.operators[0].shape[0]

    def _correlate(self, w, x):
        return _padded_correlation(x, w.astype(x.dtype), _BOUNDARIES[self.boundary], 1)

    def _smooth(self, smoothers, u, f, operator):
        for s in smoothers:
            residual = f if u is None else f - self._correlate(operator, u)
            step = self._correlate(s, residual)
            u = step if u is None else u + step
        return u

    def _cycle(self, level: int, f, shapes):
        """The V-cycle on grid ``level`` for the right-hand side ``f``, from ``u = 0`` (``None``
        until the first step, so no product with a zero field is formed)."""
        a = self.operators[level]
        u = self._smooth(self.pre_smoothers[level], None, f, a)
        if level < self.levels - 1:
            residual = f if u is None else f - self._correlate(a, u)
            coarse_f = _restrict(residual, self.restrictions[level].astype(f.dtype), self.boundary)
            coarse_u = self._cycle(level + 1, coarse_f, shapes)
            correction = _prolong(
                coarse_u, self.prolongations[level].astype(f.dtype), shapes[level], self.boundary
            )
            u = correction if u is None else u + correction
        u = self._smooth(self.post_smoothers[level], u, f, a)
        return jnp.zeros_like(f) if u is None else u

    def __call__(self, f: Float[Array, " c *spatial"]) -> Float[Array, " c *spatial"]:
        check_sample(
            f, channels=self.channels, num_spatial_dims=self.num_spatial_dims, where="VCycle"
        )
        f = float_input(f, self.operators[0].dtype)
        return self._cycle(0, f, level_shapes(f.shape[1:], self.levels))

    @classmethod
    def poisson(
        cls,
        num_spatial_dims: int,
        *,
        levels: int,
        grid_spacing: float,
        smoothing: tuple[int, int] | Sequence[tuple[int, int]] = (1, 1),
        omega: float = 2.0 / 3.0,
        coarsest_omega: float = 1.0,
        channels: int = 1,
        dtype=None,
    ) -> "VCycle":
        r"""The classical geometric-multigrid V-cycle for :math:`-\Delta u = f` with zero
        Dirichlet values: on grid :math:`\ell` (spacing :math:`h_\ell = 2^\ell h`)

        * :math:`A_\ell`: the ``2d + 1``-point Laplacian :math:`(2d\,u_0 - \sum_{\pm j}
          u_{\pm e_j}) / h_\ell^2`;
        * smoothers: damped Jacobi :math:`S = \omega\, h_\ell^2 / (2d)` (``coarsest_omega`` on
          the coarsest grid, where :math:`\omega = 1` on a single point is the exact solve);
        * :math:`R`: full weighting, the tensor product of ``(1/4, 1/2, 1/4)``;
        * :math:`P`: (multi)linear interpolation, the tensor product of ``(1/2, 1, 1/2)``.

        ``channels > 1`` applies the same cycle to each channel (stencils times the identity).
        """
        d = check_int("num_spatial_dims", num_spatial_dims)
        h = check_real("grid_spacing", grid_spacing, minimum=0.0, strict=True)
        omega = check_real("omega", omega, minimum=0.0, strict=True)
        coarsest_omega = check_real("coarsest_omega", coarsest_omega, minimum=0.0, strict=True)
        # The structure only: every stencil is set below.
        cycle = eqx.filter_eval_shape(
            cls,
            d,
            channels,
            levels=levels,
            key=jax.random.key(0),
            smoothing=smoothing,
            boundary="dirichlet",
            dtype=dtype,
        )
        dtype = cycle.operators[0].dtype
        eye = np.eye(cycle.channels)

        def stencil(kernel):
            return jnp.asarray(np.multiply.outer(eye, kernel), dtype)

        centre = (1,) * d
        laplacian = np.zeros((3,) * d)
        laplacian[centre] = 2 * d
        for j in range(d):
            for side in (0, 2):
                laplacian[(*centre[:j], side, *centre[j + 1 :])] = -1.0
        delta = np.zeros((3,) * d)
        delta[centre] = 1.0

        def tensor_power(v):
            out = np.ones(())
            for _ in range(d):
                out = np.multiply.outer(out, v)
            return out

        n = cycle.levels
        spacings = [h * 2**level for level in range(n)]
        weights = [coarsest_omega if level == n - 1 else omega for level in range(n)]
        jacobi = [
            stencil(w * s**2 / (2 * d) * delta) for w, s in zip(weights, spacings, strict=True)
        ]
        return eqx.tree_at(
            lambda v: (
                v.operators,
                v.pre_smoothers,
                v.post_smoothers,
                v.restrictions,
                v.prolongations,
            ),
            cycle,
            (
                tuple(stencil(laplacian / s**2) for s in spacings),
                tuple((jacobi[i],) * len(cycle.pre_smoothers[i]) for i in range(n)),
                tuple((jacobi[i],) * len(cycle.post_smoothers[i]) for i in range(n)),
                (stencil(tensor_power(np.array([0.25, 0.5, 0.25]))),) * (n - 1),
                (stencil(tensor_power(np.array([0.5, 1.0, 0.5]))),) * (n - 1),
            ),
        )


class MgNOBlock(eqx.Module):
    """One MgNO layer ``activation(W v + b + vcycle(v))`` on ``(width, *spatial)``; ``linear``
    is the pointwise ``W v + b``."""

    vcycle: VCycle
    linear: ChannelMLP
    activation: Callable = eqx.field(static=True)

    def __call__(self, v: Float[Array, " c *spatial"]) -> Float[Array, " c *spatial"]:
        return self.activation(self.vcycle(v) + self.linear(v))


class MgNO(eqx.Module):
    r"""Multigrid Neural Operator on one sample ``(in_channels, *spatial)``; batch with
    ``jax.vmap``.

    .. math:: \mathcal G(a) = Q\, v^L,\quad v^{l+1} = \sigma\big(W^l v^l + b^l
       + \mathcal M^l v^l\big),\quad v^0 = P a,

    :math:`P, Q` pointwise linear maps (lifting, projection), :math:`\mathcal M^l` a
    :class:`VCycle` (module doc for the grids and boundaries).

    Args:
        num_spatial_dims, in_channels, out_channels: the operator's shape.
        width: channels of the layers.
        key: PRNG key of the initial weights.
        n_layers: number of MgNO layers (default 5, as the paper's Darcy model).
        levels: grids per V-cycle (the finest included; default 5, as the paper's Darcy
            model); every axis needs at least ``2^(levels - 1)`` points.
        smoothing: ``(pre, post)`` smoothing steps per grid, or one pair per grid (default one
            pre-smoothing step per grid; the paper's Darcy model uses
            ``[(1, 0), (1, 0), (1, 0), (2, 0), (2, 0)]``).
        boundary: ``"dirichlet"`` (zero padding, default) or ``"periodic"``.
        activation: :math:`\sigma` (default :func:`jax.nn.gelu`), after every layer.
        lifting_channels, projection_channels: hidden widths of :math:`P, Q` (default 0: one
            linear map each, as the paper).
        use_bias: whether the layers add :math:`b^l`.
        dtype: of the weights.
    """

    lifting: eqx.Module
    blocks: tuple[MgNOBlock, ...]
    projection: eqx.Module
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        key: PRNGKeyArray,
        n_layers: int = 5,
        levels: int = 5,
        smoothing: tuple[int, int] | Sequence[tuple[int, int]] = (1, 0),
        boundary: str = "dirichlet",
        activation: Callable = jax.nn.gelu,
        lifting_channels: int = 0,
        projection_channels: int = 0,
        use_bias: bool = True,
        dtype=None,
    ):
        n = check_int("n_layers", n_layers)
        dtype = dtype or default_float()
        self.lifting, self.projection, rest = lift_and_project(
            key,
            num_spatial_dims,
            in_channels,
            out_channels,
            width,
            lifting_channels=lifting_channels,
            projection_channels=projection_channels,
            positional_embedding=False,
            activation=activation,
            init="uniform",
            dtype=dtype,
        )
        blocks = []
        for kb in subkeys(rest, n):
            k_cycle, k_linear = subkeys(kb, 2)
            cycle = VCycle(
                num_spatial_dims,
                width,
                levels=levels,
                key=k_cycle,
                smoothing=smoothing,
                boundary=boundary,
                dtype=dtype,
            )
            linear = ChannelMLP(
                width, width, n_layers=1, key=k_linear, use_bias=use_bias, dtype=dtype
            )
            blocks.append(MgNOBlock(cycle, linear, activation))
        self.blocks = tuple(blocks)
        self.num_spatial_dims = int(num_spatial_dims)
        self.in_channels = int(in_channels)

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout *spatial"]:
        check_sample(
            x, channels=self.in_channels, num_spatial_dims=self.num_spatial_dims, where="MgNO"
        )
        v = self.lifting(jnp.asarray(x))
        for block in self.blocks:
            v = block(v)
        return self.projection(v)
