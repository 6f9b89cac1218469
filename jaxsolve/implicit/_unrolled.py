r"""Cheaper backward modes: derivatives of a few steps taken from the solution.

**Jacobian-free backprop** ("JFB: Jacobian-Free Backpropagation for Implicit Networks", Fung et
al.) replaces :math:`(I - \partial_z f)^{-1}` by :math:`I`: gradients come from one application
of :math:`f` at the (non-differentiated) fixed point. **Phantom gradients** ("On Training
Implicit Models", Geng et al.) backpropagate through :math:`k` damped steps
:math:`z \leftarrow (1-\lambda) z + \lambda f(z)` started at the fixed point, a truncated Neumann
series of the exact inverse,

.. math:: \frac{\partial z}{\partial \theta} \approx \lambda \sum_{j=0}^{k-1}
   \big((1-\lambda) I + \lambda\, \partial_z f\big)^j\, \partial_\theta f ,

so JFB is the case :math:`k = 1`, :math:`\lambda = 1`. Both keep the forward value equal to the
solution (the unrolled steps only carry derivatives) and work in forward and reverse mode. A
derivative through a solve whose result is not successful is NaN or raises, as for
:class:`ImplicitDiff`: a step from a point that is not a fixed point is no better an answer.
"""

import equinox as eqx
import jax.numpy as jnp
import jax.tree_util as jtu
from equinox import AbstractVar
from jax import lax
from jaxtyping import Array, Float

from .._core import as_float, check_int, check_positive, is_concrete
from ._base import AbstractBackward
from ._implicit_diff import failed_derivative_message, no_grad, raise_or_nan


def unrolled_steps(residual, params, z_star, steps, damping):
    """``steps`` damped steps ``z <- z + damping * residual(z, params)`` from ``z_star``."""
    damping = lax.stop_gradient(damping)

    def body(_, z):
        r = residual(z, params)
        return jtu.tree_map(lambda a, b: a + jnp.asarray(damping, a.dtype) * b, z, r)

    return lax.fori_loop(0, steps, body, lax.stop_gradient(z_star))


@eqx.filter_custom_jvp
def guard_derivatives(x, *, result, throw, where):
    """``x`` unchanged; its derivatives NaN (``throw=False``) or an error (``throw=True``) where
    ``result`` is not successful. The tangent is multiplied by 1 or NaN, a linear map, so reverse
    mode transposes it into the same NaN; the check sits on that multiplier, which the
    derivative needs, so no dead-code elimination skips it."""
    return x


@guard_derivatives.def_jvp
def _guard_derivatives_jvp(primals, tangents, *, result, throw, where):
    (x,), (t,) = primals, tangents

    def scale(tangent):
        if tangent is None:
            return None
        one = jnp.ones((), tangent.dtype)
        return tangent * raise_or_nan(one, result, throw, failed_derivative_message(where))

    return x, jtu.tree_map(scale, t, is_leaf=lambda v: v is None)


def straight_through(value, carrier):
    """``value`` in the forward pass, the derivatives of ``carrier`` in both modes."""
    return jtu.tree_map(lambda v, c: v + (c - lax.stop_gradient(c)), value, carrier)


class _UnrolledBackward(AbstractBackward):
    """Derivatives of ``steps`` damped steps (``damping`` = lambda) from the solution."""

    steps: AbstractVar[int]
    damping: AbstractVar[Float[Array, ""]]

    def apply(self, primal, residual, args, z0, *, convergence, throw, where):
        del convergence  # no linear system to solve
        damping = self.damping
        if not is_concrete(damping):
            # A traced damping (a sweep) passed __check_init__ unseen; a damping <= 0 steps away
            # from the fixed point, so its derivatives would be finite and wrong.
            damping = eqx.error_if(
                damping, ~(damping > 0), f"{where}: {type(self).__name__} damping must be positive."
            )
        z_star, aux = primal(no_grad(residual), no_grad(args), no_grad(z0))
        carrier = unrolled_steps(residual, args, z_star, self.steps, damping)
        carrier = guard_derivatives(carrier, result=primal.result_of(aux), throw=throw, where=where)
        return straight_through(z_star, carrier), aux


class JacobianFree(_UnrolledBackward):
    """Jacobian-free backpropagation (JFB): derivatives of one step ``f(z*)`` at the solution."""

    @property
    def steps(self):
        return 1

    @property
    def damping(self):
        return as_float(1.0)


class PhantomGradient(_UnrolledBackward):
    """Phantom gradient: derivatives of ``steps`` damped steps (``damping`` = lambda) from ``z*``."""

    steps: int = eqx.field(static=True, default=5)
    damping: Float[Array, ""] = eqx.field(converter=as_float, default=0.5)

    def __check_init__(self):
        check_int("PhantomGradient steps", self.steps)
        check_positive("PhantomGradient damping", self.damping)
