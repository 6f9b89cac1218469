r"""The signature kernel of piecewise-linear paths, and the signature-MMD and signature-kernel
score as training losses for neural SDEs.

**The kernel.** The signature :math:`S(x) = (1, S^1(x), S^2(x), \dots)` of a path
:math:`x : [0, 1] \to \mathbb R^d` is the sequence of its iterated integrals
:math:`S^k(x) = \int_{s_1 < \dots < s_k} \mathrm dx_{s_1} \otimes \dots \otimes \mathrm dx_{s_k}`.
Its inner product :math:`k(x, y) = \sum_{k \ge 0} \langle S^k(x), S^k(y) \rangle`, the
**signature kernel**, is the value at :math:`(1, 1)` of the solution of the Goursat problem

.. math:: \frac{\partial^2 k}{\partial s\,\partial t}(s, t)
    = \langle \dot x_s, \dot y_t \rangle\, k(s, t), \qquad k(0, \cdot) = k(\cdot, 0) = 1

("The Signature Kernel is the solution of a Goursat PDE", Salvi, Cass, Foster, Lyons, Yang), so
it needs no truncation of the signature: :math:`O(T_x T_y d)` work for paths of :math:`T_x` and
:math:`T_y` points in :math:`d` dimensions, against :math:`O(d^N)` for a depth-:math:`N`
truncated signature. For two straight lines with increments :math:`\Delta x, \Delta y` it is
:math:`\sum_k \langle \Delta x, \Delta y\rangle^k / (k!)^2 = I_0(2\sqrt{\langle \Delta x, \Delta y
\rangle})`.

**The scheme.** For piecewise-linear paths the coefficient is constant on each cell
:math:`[s_i, s_{i+1}] \times [t_j, t_{j+1}]`, equal to :math:`c_{ij} = \langle \Delta x_i, \Delta
y_j\rangle` in the cell's own unit coordinates. ``refinement`` :math:`\lambda` splits every
segment of both paths into :math:`2^\lambda` equal pieces (the dyadic refinement of Salvi et al.),
so a cell carries :math:`c = c_{ij} / 4^\lambda`. Integrating the PDE over a cell gives
:math:`k_{11} = k_{10} + k_{01} - k_{00} + c \iint k`; the explicit update

.. math:: k_{11} = \big(k_{10} + k_{01}\big)\Big(1 + \frac c2 + \frac{c^2}{12}\Big)
    - k_{00}\Big(1 - \frac{c^2}{12}\Big)

matches the exact solution's Taylor expansion in the cell size :math:`h` up to :math:`O(h^4)` per
cell (the :math:`c/2` term is forced at :math:`O(h^2)`; the :math:`c^2` terms are chosen so the
constant-boundary mode is also right at :math:`O(h^4)`), so the global error is :math:`O(4^{-\lambda})`
(second order in :math:`2^{-\lambda}`, measured in ``tests/ode/test_signature.py``). Each row of
the grid is a first-order linear recurrence along the row,
:math:`k_{i+1, j+1} = a_j k_{i+1, j} + (a_j k_{i, j+1} - b_j k_{i, j})`, so a row is one
:func:`jax.lax.associative_scan` of affine maps (parallel over the row), and the rows are a
:func:`jax.lax.scan`: the kernel jits, vmaps and differentiates (reverse mode stores the grid,
:math:`O(T_x T_y 4^\lambda)` numbers).

**Choosing the refinement.** The discrete kernel is positive semi-definite, and the scores below
proper, only up to the scheme's error, which grows with the cell coefficients :math:`|c|`. With
coarse cells a Gram matrix of close Brownian paths can have negative eigenvalues, and the score of
a far too rough law can come out below that of the data's own law, so that a fit runs away from
the truth after passing it (seen on OU paths with unit-size increments per segment in
``tests/ode/test_signature.py``). The losses therefore default to ``refinement=1``; choose it so
that :math:`|\langle \Delta x, \Delta y\rangle| / 4^\lambda \ll 1` over the paths the model can
produce (or shrink ``scale``).

**Losses** ("Neural SDEs as Infinite-Dimensional GANs", Kidger, Foster, Li, Oberhauser, Lyons,
which trains with a signature-kernel MMD beside its SDE-GAN; "Non-adversarial training of Neural
SDEs with signature kernel scores", Issa, Horvath, Lemercier, Salvi):

* :func:`signature_mmd` — the (by default unbiased) squared maximum mean discrepancy between two
  batches of paths with this kernel.
* :func:`signature_kernel_score` — the signature-kernel score
  :math:`\phi(P, y) = \tfrac12 \mathbb E_{X, X' \sim P}\, k(X, X') - \mathbb E_{X \sim P}\, k(X, y)`,
  a proper scoring rule (strictly proper where the kernel is characteristic), averaged over the
  observed paths. Minimising it over the generator's law :math:`P` needs no discriminator.

A signature is blind to the speed at which a path is run and to its starting point, and the
signature of a one-dimensional path depends only on its total increment. For SDE paths add time as
a channel (``jnp.concatenate([ts[:, None], ys], axis=-1)`` for a :class:`~jaxsolve.ode.NeuralSDE`
solution's ``ts`` and ``ys``), and a start at zero (a basepoint) when the initial value matters.
``scale`` multiplies every :math:`\langle \Delta x, \Delta y\rangle` (the kernel of
:math:`\sqrt{\mathrm{scale}}\,x` and :math:`\sqrt{\mathrm{scale}}\,y`), the usual normalisation of
paths whose increments are large.

Truncated signatures themselves are not reimplemented here: ``signax`` ("Differentiable signature
calculations in JAX") computes them under this package's JAX, with ``jit``, ``vmap`` and ``grad``
(checked in the tests, which use it as the reference for :func:`signature_kernel`).
"""

from __future__ import annotations

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array, ArrayLike, Float

from .._core import as_float, check_int, exact_dot, is_concrete


def _check_path(name: str, path, batched: bool):
    """``path`` as a float array of shape ``(T, d)`` (``(B, T, d)`` when ``batched``), T >= 2,
    finite (a ValueError when concrete, a run-time error under ``jit``)."""
    if jnp.iscomplexobj(path):
        raise TypeError(f"{name} must be real; got a complex array.")
    path = as_float(path)
    want = 3 if batched else 2
    shape = "(batch, length, channels)" if batched else "(length, channels)"
    if path.ndim != want:
        raise ValueError(f"{name} must have shape {shape}; got shape {path.shape}.")
    if path.shape[-2] < 2:
        raise ValueError(
            f"{name} must have at least 2 points along its length axis (one segment); got "
            f"shape {path.shape}."
        )
    if path.shape[-1] < 1:
        raise ValueError(f"{name} must have at least one channel; got shape {path.shape}.")
    if is_concrete(path):
        if not np.all(np.isfinite(np.asarray(path))):
            raise ValueError(f"{name} must be finite; it holds NaN or inf.")
    else:
        path = eqx.error_if(path, ~jnp.all(jnp.isfinite(path)), f"{name} must be finite.")
    return path


def _check_channels(name_x, x, name_y, y):
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"{name_x} and {name_y} must have the same number of channels (last axis); got "
            f"{x.shape[-1]} and {y.shape[-1]}."
        )


def _check_scale(scale):
    """``scale`` checked: positive, finite, a scalar (a traced one when the code runs)."""
    if is_concrete(scale):
        a = np.asarray(scale)
        if a.ndim != 0 or not np.isfinite(a) or a <= 0:
            raise ValueError(f"scale must be a positive finite scalar; got {scale!r}.")
        return scale
    if jnp.ndim(scale) != 0:
        raise ValueError(f"scale must be a scalar; got shape {jnp.shape(scale)}.")
    # A negative scale is the kernel of imaginary paths (not a kernel), NaN poisons every entry.
    bad = ~(jnp.isfinite(scale) & (scale > 0))
    return eqx.error_if(scale, bad, "scale must be a positive finite scalar.")


def _affine_compose(first, second):
    # z -> a1 z + b1, then z -> a2 z + b2: z -> a1 a2 z + (a2 b1 + b2).
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2


# Jitted (refinement static) so that eager calls compile the grid once per shape instead of
# dispatching its operations one by one; inside a caller's jit it is inlined.
@functools.partial(jax.jit, static_argnums=2)
def _goursat(x, y, refinement: int, scale):
    """The scheme of the module docstring on checked paths ``x`` (Tx, d) and ``y`` (Ty, d)."""
    dtype = jnp.result_type(x, y)
    dx = jnp.diff(x, axis=0).astype(dtype)
    dy = jnp.diff(y, axis=0).astype(dtype)
    pieces = 2**refinement
    c = exact_dot(dx, dy.T) * (jnp.asarray(scale, dtype) / pieces**2)
    if pieces > 1:
        c = jnp.repeat(jnp.repeat(c, pieces, axis=0), pieces, axis=1)
    c2 = c * c / 12
    a = 1 + c / 2 + c2
    b = 1 - c2

    def row(previous, coefficients):
        a_i, b_i = coefficients
        offset = a_i * previous[1:] - b_i * previous[:-1]
        slope, intercept = lax.associative_scan(_affine_compose, (a_i, offset))
        # The row starts at the boundary value k(s_{i+1}, 0) = 1.
        return jnp.concatenate([jnp.ones((1,), dtype), slope + intercept]), None

    first = jnp.ones((c.shape[1] + 1,), dtype)
    last, _ = lax.scan(row, first, (a, b))
    return last[-1]


def signature_kernel(
    x: Float[ArrayLike, "length_x channels"],
    y: Float[ArrayLike, "length_y channels"],
    *,
    refinement: int = 0,
    scale: float | Float[ArrayLike, ""] = 1.0,
) -> Float[Array, ""]:
    r"""The (untruncated) signature kernel :math:`k(x, y) = \langle S(x), S(y) \rangle` of two
    piecewise-linear paths, from the Goursat PDE
    :math:`\partial_s\partial_t k = \langle \dot x_s, \dot y_t\rangle k` solved by the explicit
    scheme of the module docstring ("The Signature Kernel is the solution of a Goursat PDE").

    ``x``: ``(T_x, d)`` and ``y``: ``(T_y, d)`` points (lengths may differ; at least 2 points;
    finite). ``refinement``: the dyadic order :math:`\lambda \ge 0` (each segment split into
    :math:`2^\lambda` pieces; the error falls as :math:`4^{-\lambda}`). ``scale`` (may be
    traced): multiplies every increment inner product. Symmetric in ``x`` and ``y``, exactly
    invariant under translation of either path and under repeating a point, and
    :math:`k(x, y)` at ``refinement + 1`` equals :math:`k` of the paths with every segment halved
    at ``refinement``. Batch with :func:`jax.vmap` (or :func:`signature_kernel_matrix`).
    """
    refinement = check_int("refinement", refinement, minimum=0, maximum=12)
    scale = _check_scale(scale)
    x = _check_path("x", x, batched=False)
    y = _check_path("y", y, batched=False)
    _check_channels("x", x, "y", y)
    return _goursat(x, y, refinement, scale)


def signature_kernel_matrix(
    xs: Float[ArrayLike, "batch_x length_x channels"],
    ys: Float[ArrayLike, "batch_y length_y channels"],
    *,
    refinement: int = 0,
    scale: float | Float[ArrayLike, ""] = 1.0,
) -> Float[Array, "batch_x batch_y"]:
    r"""The Gram matrix :math:`K_{ij} = k(x_i, y_j)` of :func:`signature_kernel` between two
    batches of paths ``(B_x, T_x, d)`` and ``(B_y, T_y, d)``."""
    refinement = check_int("refinement", refinement, minimum=0, maximum=12)
    scale = _check_scale(scale)
    xs = _check_path("xs", xs, batched=True)
    ys = _check_path("ys", ys, batched=True)
    _check_channels("xs", xs, "ys", ys)
    return _gram(xs, ys, refinement, scale)


@functools.partial(jax.jit, static_argnums=2)
def _gram(xs, ys, refinement, scale):
    one = lambda x, y: _goursat(x, y, refinement, scale)
    return jax.vmap(lambda x: jax.vmap(lambda y: one(x, y))(ys))(xs)


def _off_diagonal_mean(gram):
    n = gram.shape[0]
    return (jnp.sum(gram) - jnp.trace(gram)) / (n * (n - 1))


def _check_batch_size(name, batch, minimum):
    if batch.shape[0] < minimum:
        raise ValueError(
            f"{name} must hold at least {minimum} paths (the unbiased estimate leaves out the "
            f"diagonal); got {batch.shape[0]}."
        )


def signature_mmd(
    x_batch: Float[ArrayLike, "batch_x length_x channels"],
    y_batch: Float[ArrayLike, "batch_y length_y channels"],
    *,
    refinement: int = 1,
    scale: float | Float[ArrayLike, ""] = 1.0,
    unbiased: bool = True,
) -> Float[Array, ""]:
    r"""Squared maximum mean discrepancy between the laws of two batches of paths, with the
    signature kernel (the MMD loss of "Neural SDEs as Infinite-Dimensional GANs").

    Unbiased (default; needs at least 2 paths per batch, and may come out slightly negative):

    .. math:: \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)}\sum_{i \ne j} k(x_i, x_j)
        + \frac{1}{n(n-1)}\sum_{i \ne j} k(y_i, y_j) - \frac{2}{mn}\sum_{i, j} k(x_i, y_j);

    ``unbiased=False``: the V-statistic (all pairs, diagonal included), which is
    :math:`\|\bar S(x) - \bar S(y)\|^2 \ge 0` and zero for identical batches. ``refinement``
    (default 1: see the module doc) and ``scale`` as in :func:`signature_kernel`.
    """
    if not isinstance(unbiased, bool):
        raise TypeError(f"unbiased must be a bool; got {type(unbiased).__name__}.")
    refinement = check_int("refinement", refinement, minimum=0, maximum=12)
    scale = _check_scale(scale)
    x_batch = _check_path("x_batch", x_batch, batched=True)
    y_batch = _check_path("y_batch", y_batch, batched=True)
    _check_channels("x_batch", x_batch, "y_batch", y_batch)
    if unbiased:
        _check_batch_size("x_batch", x_batch, 2)
        _check_batch_size("y_batch", y_batch, 2)
    kxx = _gram(x_batch, x_batch, refinement, scale)
    kyy = _gram(y_batch, y_batch, refinement, scale)
    kxy = _gram(x_batch, y_batch, refinement, scale)
    if unbiased:
        return _off_diagonal_mean(kxx) + _off_diagonal_mean(kyy) - 2 * jnp.mean(kxy)
    return jnp.mean(kxx) + jnp.mean(kyy) - 2 * jnp.mean(kxy)


def signature_kernel_score(
    samples: Float[ArrayLike, "batch length_x channels"],
    observed: Float[ArrayLike, "*num_observed length_y channels"],
    *,
    refinement: int = 1,
    scale: float | Float[ArrayLike, ""] = 1.0,
) -> Float[Array, ""]:
    r"""The signature-kernel score of a model's sample paths against observed paths ("Non-
    adversarial training of Neural SDEs with signature kernel scores"):

    .. math:: \phi(P, y) = \tfrac12\,\mathbb E_{X, X' \sim P}\, k(X, X')
        - \mathbb E_{X \sim P}\, k(X, y),

    estimated without bias from ``samples`` :math:`x_1, \dots, x_m \sim P` (``(m, T_x, d)``,
    :math:`m \ge 2`) as :math:`\frac{1}{2m(m-1)}\sum_{i \ne j} k(x_i, x_j)
    - \frac1{mn}\sum_{i, j} k(x_i, y_j)`, averaged over the ``observed`` paths
    :math:`y_1, \dots, y_n` (``(n, T_y, d)``, or one path ``(T_y, d)``). The score is proper: its
    expectation over :math:`y \sim Q` is :math:`\tfrac12 \mathrm{MMD}^2(P, Q)` minus a constant
    of :math:`Q`, smallest at :math:`P = Q`; so it is a training loss for a
    :class:`~jaxsolve.ode.NeuralSDE` with no discriminator. ``refinement`` (default 1: see the
    module doc) and ``scale`` as in :func:`signature_kernel`.
    """
    refinement = check_int("refinement", refinement, minimum=0, maximum=12)
    scale = _check_scale(scale)
    samples = _check_path("samples", samples, batched=True)
    if jnp.ndim(observed) == 2:  # one observed path: a batch of one
        observed = jnp.asarray(observed)[None]
    observed = _check_path("observed", observed, batched=True)
    _check_channels("samples", samples, "observed", observed)
    _check_batch_size("samples", samples, 2)
    kxx = _gram(samples, samples, refinement, scale)
    kxy = _gram(samples, observed, refinement, scale)
    return 0.5 * _off_diagonal_mean(kxx) - jnp.mean(kxy)
