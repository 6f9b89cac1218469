r"""Residual operators: exact derivatives of a single-point function by automatic differentiation.

Every operator takes a function ``u`` of one point ``x`` of shape ``(d,)`` (a network, a hard-
constraint ansatz, a closed form) returning a scalar or an array of shape ``(m,)``, and returns a
new function of one point. The result is pure, so it jits, vmaps over points (``jax.vmap(
laplacian(u))(points)``) and is differentiable with respect to whatever ``u`` closes over (the
physics-informed loss differentiates through it with respect to network parameters).

For a space-time problem the point is ``(t, x_1, ..., x_n)``: time is axis 0, which is what
:func:`time_derivative` differentiates and what ``axes=`` leaves out of a spatial Laplacian
(``laplacian(u, axes=range(1, d))``).

Which automatic differentiation mode each operator uses, and why:

* :func:`derivative` of order ``k`` along one coordinate direction ``e``. Orders 1 and 2 nest
  forward-mode ``jax.jvp``: one direction needs no reverse sweep, and two nested JVPs cost a small
  multiple of one evaluation and work with every primitive. Nesting ``k`` JVPs grows as
  :math:`2^k`, whereas Taylor mode (``jax.experimental.jet``, "Taylor-mode automatic
  differentiation for higher-order derivatives in JAX", Bettencourt, Johnson, Duvenaud)
  propagates the truncated series :math:`u(x + s e) = \sum_j \frac{s^j}{j!} u^{(j)}` in
  :math:`O(k^2)`; it is the default for ``k >= 3`` (``method="auto"``). Either can be forced.
* :func:`hessian_diag` and :func:`laplacian`, :math:`\Delta u = \sum_i \partial_i^2 u`: exact
  (no Hutchinson trace estimator), one second directional derivative per axis, vmapped over the
  axes. ``method="forward"`` (default) nests two JVPs and handles vector-valued ``u``;
  ``method="forward_over_reverse"`` takes the JVP of the reverse-mode gradient (a Hessian-vector
  product) and its ``i``-th entry, for scalar ``u``.
* :func:`gradient` (scalar ``u``) is one reverse sweep; :func:`jacobian` is forward mode
  (``jax.jacfwd``), since coordinates have few dimensions; :func:`divergence` is one JVP per axis.
"""

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental.jet import jet
from jaxtyping import Array, ArrayLike

from .._core import check_choice, check_int, default_float, is_int

_METHODS = ("auto", "jvp", "jet")
_SECOND = ("forward", "forward_over_reverse")


def _point(x, where):
    """``x`` as one floating point of shape ``(d,)``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(default_float())
    if x.ndim != 1:
        raise ValueError(
            f"{where} takes one point x of shape (d,); got shape {x.shape}. Map over points "
            f"with jax.vmap (a 1-D problem's point has shape (1,))."
        )
    return x


def _axis(axis, d, name="axis"):
    """A coordinate index in ``[-d, d)`` as a non-negative int."""
    if not is_int(axis):
        raise TypeError(f"{name} must be an int; got {axis!r} ({type(axis).__name__}).")
    axis = int(axis)
    if not -d <= axis < d:
        raise ValueError(f"{name} must lie in [{-d}, {d}) for points of dimension {d}; got {axis}.")
    return axis % d


def _axes(axes, d):
    """``axes`` (None for all) as a tuple of distinct non-negative ints."""
    if axes is None:
        return tuple(range(d))
    if is_int(axes):
        axes = (axes,)
    try:
        axes = tuple(axes)
    except TypeError:
        raise TypeError(f"axes must be None, an int or a sequence of ints; got {axes!r}.") from None
    out = tuple(_axis(a, d, "axes") for a in axes)
    if not out or len(set(out)) != len(out):
        raise ValueError(f"axes must be a non-empty sequence of distinct axes; got {axes!r}.")
    return out


def _basis(x, axis):
    return jnp.zeros_like(x).at[axis].set(1)


def _nested_jvp(u, x, v, order):
    """The ``order``-th directional derivative of ``u`` at ``x`` along ``v`` by nested JVPs."""
    f = u
    for _ in range(order):
        f = (lambda g: lambda y: jax.jvp(g, (y,), (v,))[1])(f)
    return f(x)


def value_and_first(u, x, v):
    """``(u(x), Du(x) v)``: one forward-mode pass."""
    return jax.jvp(u, (x,), (v.astype(x.dtype),))


def value_first_second(u, x, v):
    """``(u(x), Du(x) v, D^2u(x)[v, v])`` by a jvp of a jvp (what a residual with a first and a
    second derivative along one axis needs, in one nested pass)."""
    v = v.astype(x.dtype)
    (value, first), (_, second) = jax.jvp(lambda y: jax.jvp(u, (y,), (v,)), (x,), (v,))
    return value, first, second


def _jet(u, x, v, order):
    """The ``order``-th directional derivative by Taylor mode (``jet`` returns derivatives, not
    Taylor coefficients: term ``j`` is :math:`u^{(j+1)}`)."""
    zero = jnp.zeros_like(v)
    _, series = jet(u, (x,), ((v,) + (zero,) * (order - 1),))
    return series[order - 1]


def _second(u, x, v, method):
    """Second directional derivative along ``v`` (a basis vector)."""
    if method == "forward":
        return _nested_jvp(u, x, v, 2)
    grad = gradient(u)
    return jnp.vdot(v, jax.jvp(grad, (x,), (v,))[1])


def gradient(u: Callable[..., Any]) -> Callable[..., Array]:
    r"""The gradient :math:`\nabla u(x)` of a scalar-valued ``u`` (one reverse sweep).

    Args:
        u: function of one point ``x`` of shape ``(d,)`` returning a scalar.

    Returns:
        A function of one point returning shape ``(d,)``.
    """

    def grad_u(x: ArrayLike) -> Array:
        x = _point(x, "gradient")
        y, pullback = jax.vjp(u, x)
        if jnp.shape(y) != ():
            raise ValueError(
                f"gradient needs a scalar-valued u; u returned shape {jnp.shape(y)}. Use "
                f"jacobian for vector-valued functions."
            )
        return pullback(jnp.ones_like(y))[0]

    return grad_u


def jacobian(u: Callable[..., Any]) -> Callable[..., Array]:
    r"""The Jacobian :math:`\partial u_i / \partial x_j` by forward mode (``jax.jacfwd``).

    Args:
        u: function of one point ``x`` of shape ``(d,)`` returning a scalar or shape ``(m,)``.

    Returns:
        A function of one point returning shape ``(d,)`` (scalar ``u``) or ``(m, d)``.
    """

    def jac_u(x: ArrayLike) -> Array:
        return jax.jacfwd(u)(_point(x, "jacobian"))

    return jac_u


def hessian(u: Callable[..., Any]) -> Callable[..., Array]:
    r"""The full Hessian :math:`\partial_i \partial_j u` of a scalar ``u`` (forward over reverse).

    Args:
        u: function of one point ``x`` of shape ``(d,)`` returning a scalar.

    Returns:
        A function of one point returning shape ``(d, d)``.
    """

    def hess_u(x: ArrayLike) -> Array:
        return jax.jacfwd(gradient(u))(_point(x, "hessian"))

    return hess_u


def derivative(
    u: Callable[..., Any], axis: int, order: int = 1, *, method: str = "auto"
) -> Callable[..., Array]:
    r"""The partial derivative :math:`\partial^k u / \partial x_{\text{axis}}^k`.

    Args:
        u: function of one point ``x`` of shape ``(d,)`` returning a scalar or an array.
        axis: the coordinate to differentiate (negative counts from the end).
        order: ``k >= 1``.
        method: ``"jvp"`` (nested forward mode), ``"jet"`` (Taylor mode) or ``"auto"`` (nested
            JVPs for ``k <= 2``, Taylor mode above; see the module doc).

    Returns:
        A function of one point with the shape of ``u``'s output.
    """
    order = check_int("order", order)
    method = check_choice("method", method, _METHODS)
    if method == "auto":
        method = "jvp" if order <= 2 else "jet"
    if not is_int(axis):
        raise TypeError(f"axis must be an int; got {axis!r} ({type(axis).__name__}).")

    def d_u(x: ArrayLike) -> Array:
        x = _point(x, "derivative")
        e = _basis(x, _axis(axis, x.shape[0]))
        if method == "jvp":
            return _nested_jvp(u, x, e, order)
        return _jet(u, x, e, order)

    return d_u


def time_derivative(
    u: Callable[..., Any], order: int = 1, *, method: str = "auto"
) -> Callable[..., Array]:
    r""":math:`\partial^k u / \partial t^k` for a space-time point ``(t, x_1, ..., x_n)``.

    Args:
        u: function of one space-time point (time first).
        order: ``k >= 1``.
        method: as in :func:`derivative`.

    Returns:
        A function of one point with the shape of ``u``'s output.
    """
    return derivative(u, 0, order, method=method)


def hessian_diag(
    u: Callable[..., Any],
    axes: int | Sequence[int] | None = None,
    *,
    method: str = "forward",
) -> Callable[..., Array]:
    r"""The pure second derivatives :math:`\partial_i^2 u` for ``i`` in ``axes``, exactly.

    Args:
        u: function of one point ``x`` of shape ``(d,)`` returning a scalar or shape ``(m,)``.
        axes: the coordinates (default all ``d``).
        method: ``"forward"`` (two nested JVPs per axis) or ``"forward_over_reverse"`` (the JVP
            of the gradient, scalar ``u`` only).

    Returns:
        A function of one point returning shape ``(k,)`` for ``k`` axes, or ``(m, k)``.
    """
    method = check_choice("method", method, _SECOND)

    def diag_u(x: ArrayLike) -> Array:
        x = _point(x, "hessian_diag")
        basis = jnp.eye(x.shape[0], dtype=x.dtype)[jnp.asarray(_axes(axes, x.shape[0]))]
        out = jax.vmap(lambda e: _second(u, x, e, method))(basis)
        return jnp.moveaxis(out, 0, -1)

    return diag_u


def laplacian(
    u: Callable[..., Any],
    axes: int | Sequence[int] | None = None,
    *,
    method: str = "forward",
) -> Callable[..., Array]:
    r"""The Laplacian :math:`\sum_{i \in \text{axes}} \partial_i^2 u`, exactly.

    For a space-time point ``(t, x)`` pass the spatial axes, ``axes=range(1, d)``.

    Args:
        u: function of one point ``x`` of shape ``(d,)`` returning a scalar or shape ``(m,)``
            (then each component's Laplacian).
        axes: the coordinates summed over (default all).
        method: as in :func:`hessian_diag`.

    Returns:
        A function of one point with the shape of ``u``'s output.
    """
    diag = hessian_diag(u, axes, method=method)

    def lap_u(x: ArrayLike) -> Array:
        return jnp.sum(diag(x), axis=-1)

    return lap_u


def divergence(
    v: Callable[..., Any], axes: int | Sequence[int] | None = None
) -> Callable[..., Array]:
    r"""The divergence :math:`\sum_j \partial v_j / \partial x_{a_j}` of a vector field.

    Args:
        v: function of one point ``x`` of shape ``(d,)`` returning shape ``(k,)``, component
            ``j`` along coordinate ``a_j``.
        axes: the coordinates ``(a_1, ..., a_k)`` (default all ``d``; for a space-time point,
            ``range(1, d)``).

    Returns:
        A function of one point returning a scalar.
    """

    def div_v(x: ArrayLike) -> Array:
        x = _point(x, "divergence")
        ax = _axes(axes, x.shape[0])
        shape = jax.eval_shape(v, x).shape
        if shape != (len(ax),):
            raise ValueError(
                f"divergence needs v to return one component per axis, shape ({len(ax)},); "
                f"got {shape}."
            )
        basis = jnp.eye(x.shape[0], dtype=x.dtype)[jnp.asarray(ax)]
        cols = jax.vmap(lambda e: jax.jvp(v, (x,), (e,))[1])(basis)
        return jnp.trace(cols)

    return div_v
