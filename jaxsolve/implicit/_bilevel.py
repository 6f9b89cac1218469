r"""Bilevel optimisation: hypergradients and an outer loop.

The problem is

.. math:: \min_\lambda\; \Phi(\lambda) = F(x^*(\lambda), \lambda)
   \quad\text{s.t.}\quad x^*(\lambda) = \arg\min_x G(x, \lambda),

with an outer objective ``outer_fn(x, lam, args) = F`` (a validation loss) and an inner one
``inner_fn(x, lam, args) = G`` (a training loss with hyper-parameters ``lam``). ``x`` and
``lam`` are pytrees of floating arrays. Three ways to get a (hyper)gradient of :math:`\Phi`,
each an :class:`AbstractHypergradient` that :func:`hypergradient` and the outer driver
:func:`bilevel_minimize` call through one interface:

- :class:`ImplicitHypergradient` — implicit differentiation of the inner optimality condition
  :math:`\nabla_x G(x^*, \lambda) = 0` ("Efficient and Modular Implicit Differentiation",
  Blondel et al.; "Optimizing Millions of Hyperparameters by Implicit Differentiation",
  Lorraine, Vicol & Duvenaud):

  .. math:: \nabla\Phi = \nabla_\lambda F - \nabla^2_{\lambda x} G\,
     \big(\nabla^2_{xx} G\big)^{-1} \nabla_x F ,

  the inverse applied matrix-free by the backward solve of :func:`root_find` /
  :func:`custom_root` (:class:`ImplicitDiff`, conjugate gradients by default: the Hessian is
  symmetric). Exact at an exact inner solution; memory does not grow with the inner iterations.
- :class:`UnrolledHypergradient` — backpropagation through :math:`K` inner gradient steps
  :math:`x_{k+1} = x_k - \eta \nabla_x G(x_k, \lambda)` ("Forward and Reverse Gradient-Based
  Hyperparameter Optimization", Franceschi et al.). On a strongly convex :math:`G` its error
  falls geometrically with :math:`K`; memory grows linearly with :math:`K`.
- :class:`PenaltyHypergradient` — V-PBGD ("On Penalty-based Bilevel Gradient Descent", Shen &
  Chen): the value-function penalty
  :math:`\min_{x,\lambda} F(x,\lambda) + \gamma\,(G(x,\lambda) - \min_y G(y,\lambda))`,
  first order (no Hessian products), with a bias of order :math:`1/\gamma`.

Every method returns the inner :class:`Solution` next to the hypergradient. A failed inner solve
never yields a plausible hypergradient: it raises (``throw=True``) or the value and the
hypergradient are NaN (``throw=False``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jax import lax
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from .._core import (
    RESULTS,
    as_float,
    check_int,
    check_integer_count,
    check_positive,
    is_concrete,
)
from ._base import AbstractSolver, Solution
from ._custom_root import custom_root
from ._implicit_diff import ImplicitDiff, fresh_scalars, raise_or_nan
from ._krylov import CG
from ._newton import Newton
from ._norms import max_norm
from ._solve import _describe, _shape_of, check_state, root_find

_WHERE = "jaxsolve.implicit.hypergradient"
_DRIVER = "jaxsolve.implicit.bilevel_minimize"

#: ``fn(x, lam, args) -> scalar``: the outer or the inner objective.
Objective = Callable[[PyTree[Array], PyTree[Array], Any], Float[Array, ""]]


class Hypergradient(eqx.Module):
    """What :func:`hypergradient` returns (and each method's ``step``).

    - ``value``: the outer objective :math:`F(x, \\lambda)` at the inner solution ``x`` (for
      :class:`PenaltyHypergradient`, at its penalised iterate).
    - ``grad``: the hypergradient, a pytree like ``lam``.
    - ``inner``: the inner :class:`Solution` (its ``value`` is the inner solution, its
      ``result`` the inner solve's code, ``num_steps`` its iterations, ``residual`` the max-norm
      of :math:`\\nabla_x G` there).
    """

    value: Float[Array, ""]
    grad: PyTree[Array]
    inner: Solution


# ----------------------------------------------------------------------------------------------
# Argument checks and small helpers.


def _scale(tree, c):
    return jtu.tree_map(lambda a: jnp.asarray(c, a.dtype) * a, tree)


def _axpy(a, x, y):
    """``y + a * x`` on pytrees."""
    return jtu.tree_map(lambda u, v: v + jnp.asarray(a, v.dtype) * u, x, y)


def _all_finite(tree):
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jtu.tree_leaves(tree)]))


def _finite_code(*trees):
    ok = jnp.all(jnp.stack([_all_finite(t) for t in trees]))
    return RESULTS.where(ok, RESULTS.successful, RESULTS.nonfinite)


def _grad_x(inner_fn):
    return jax.grad(inner_fn, argnums=0)


def _positive_at_run_time(name, value):
    """``value``, checked ``> 0`` when the compiled code runs where it is traced (a sweep): the
    methods' ``__check_init__`` sees only concrete values, and a traced step size or penalty of
    0 or below gives a finite, wrong hypergradient (the inner iterate does not move, or moves
    uphill)."""
    if is_concrete(value):
        return value
    return eqx.error_if(value, ~(value > 0), f"{name} must be positive.")


def check_problem(where, outer_fn, inner_fn, lam, x0, args):
    """``lam`` and ``x0`` as floating pytrees; both objectives callable and scalar-valued."""
    for name, fn in (("outer_fn", outer_fn), ("inner_fn", inner_fn)):
        if not callable(fn):
            raise TypeError(f"{where}: {name} must be callable; got {type(fn).__name__}.")
    lam = check_state("lam", fresh_scalars(lam))
    x0 = check_state("x0", fresh_scalars(x0))
    for name, fn in (("outer_fn", outer_fn), ("inner_fn", inner_fn)):
        try:
            # filter_eval_shape: args may hold functions; a number it returns as it is.
            out = jtu.tree_map(_shape_of, eqx.filter_eval_shape(fn, x0, lam, args))
        except (TypeError, ValueError) as error:
            kind = TypeError if isinstance(error, TypeError) else ValueError
            raise kind(
                f"{where}: {name}(x, lam, args) failed when called with x = {_describe(x0)} and "
                f"lam = {_describe(lam)} (do x0 and lam have the shapes {name} expects?): {error}"
            ) from error
        leaves = jtu.tree_leaves(out)
        if not (
            len(leaves) == 1
            and isinstance(leaves[0], jax.ShapeDtypeStruct)
            and leaves[0].shape == ()
            and jnp.issubdtype(leaves[0].dtype, jnp.floating)
        ):
            raise ValueError(
                f"{where}: {name}(x, lam, args) must return a real floating scalar (an objective "
                f"to minimise); got {_describe(out)}."
            )
    return lam, x0


# ----------------------------------------------------------------------------------------------
# Inner solvers that are not jaxsolve root solvers.


class OptaxSolver(eqx.Module):
    r"""An inner solver from an optax optimiser: minimise ``inner_fn(x, lam, args)`` over ``x``.

    Runs ``optimizer`` updates in a ``lax.while_loop`` until
    :math:`\max_i |\nabla_x G|_i / (\text{atol} + \text{rtol}\,|x_i|) \le 1` or ``max_steps``
    (then ``RESULTS.max_steps_reached``); a non-finite iterate stops it with
    ``RESULTS.nonfinite``. Called as ``solver(inner_fn, x0, lam, args)`` and returns a
    :class:`Solution`, which is the protocol any user-written inner loop can follow to be
    used by :class:`ImplicitHypergradient` (a loop that returns only ``x`` works too: its
    stationarity is then checked by the method's own tolerances).
    """

    optimizer: optax.GradientTransformation
    max_steps: int = eqx.field(static=True, default=1000)
    rtol: Float[Array, ""] = eqx.field(converter=as_float, default=1e-6)
    atol: Float[Array, ""] = eqx.field(converter=as_float, default=1e-8)

    def __check_init__(self):
        if not isinstance(self.optimizer, optax.GradientTransformation):
            raise TypeError(
                "OptaxSolver optimizer must be an optax.GradientTransformation (e.g. "
                f"optax.adam(1e-2)); got {type(self.optimizer).__name__}."
            )
        check_int("OptaxSolver max_steps", self.max_steps)
        check_positive("OptaxSolver rtol", self.rtol, allow_zero=True)
        check_positive("OptaxSolver atol", self.atol, allow_zero=True)

    def __call__(self, inner_fn: Callable, x0: PyTree, lam: PyTree, args: Any) -> Solution:
        grad_x = _grad_x(inner_fn)

        def scaled(x, g):
            return max_norm(
                jtu.tree_map(lambda gi, xi: gi / (self.atol + self.rtol * jnp.abs(xi)), g, x)
            )

        def cond(carry):
            x, _, k, g = carry
            return (k < self.max_steps) & (scaled(x, g) > 1) & _all_finite(x)

        def body(carry):
            x, opt_state, k, g = carry
            updates, opt_state = self.optimizer.update(g, opt_state, x)
            x = optax.apply_updates(x, updates)
            return x, opt_state, k + 1, grad_x(x, lam, args)

        g0 = grad_x(x0, lam, args)
        carry = (x0, self.optimizer.init(x0), jnp.zeros((), jnp.int32), g0)
        x, _, k, g = lax.while_loop(cond, body, carry)
        converged = scaled(x, g) <= 1
        result = RESULTS.where(converged, RESULTS.successful, RESULTS.max_steps_reached)
        # A NaN gradient at a finite x also ends the loop (its test is then False), long before
        # the budget: it is a non-finite model output, not max_steps_reached.
        result = RESULTS.where(_all_finite(x) & _all_finite(g), result, RESULTS.nonfinite)
        return Solution(x, result, k, max_norm(g))


# ----------------------------------------------------------------------------------------------
# The methods.


class AbstractHypergradient(eqx.Module):
    """How :func:`hypergradient` and :func:`bilevel_minimize` get :math:`\\nabla\\Phi(\\lambda)`.

    ``init(x0)`` builds the method's state (warm starts); ``step(outer_fn, inner_fn, lam,
    state, args)`` returns a :class:`Hypergradient` and the next state; ``solution(state)`` is
    the current inner iterate. The driver never asks which method it runs.
    """

    @abc.abstractmethod
    def init(self, x0: PyTree[Array]) -> PyTree[Array]:
        """The initial state from the inner initial guess."""

    @abc.abstractmethod
    def step(
        self, outer_fn: Callable, inner_fn: Callable, lam: PyTree, state: PyTree, args: Any
    ) -> tuple[Hypergradient, PyTree[Array]]:
        """One hypergradient evaluation and the next (warm-start) state."""

    def solution(self, state: PyTree[Array]) -> PyTree[Array]:
        """The inner iterate held in ``state``."""
        return state


def _guarded(hg: Hypergradient, throw: bool, where: str) -> Hypergradient:
    """Value and hypergradient raised on (``throw``) or NaN where the inner solve failed."""
    value, grad = raise_or_nan(
        (hg.value, hg.grad), hg.inner.result, throw, where, " (the inner solve failed)"
    )
    return Hypergradient(value, grad, hg.inner)


class ImplicitHypergradient(AbstractHypergradient):
    r"""Hypergradient by implicit differentiation of :math:`\nabla_x G(x, \lambda) = 0`.

    Args:
        solver: the inner solver. A jaxsolve root solver (:class:`Newton`, the default —
            Jacobian-free Newton–Krylov on the gradient, i.e. Hessian-free Newton; or
            :class:`Picard`, :class:`Anderson`, :class:`Broyden`) is run by :func:`root_find`
            on the residual :math:`-\eta\,\nabla_x G` (``eta = step_size``), so :class:`Picard`
            is gradient descent with step :math:`\eta \cdot` damping and :class:`Anderson` its
            acceleration; the convergence test is
            :math:`\|\eta \nabla_x G / (\text{atol} + \text{rtol}|x|)\|_\infty \le 1`. Or any
            callable ``solver(inner_fn, x0, lam, args)`` (:class:`OptaxSolver`, a user's optax
            loop) returning ``x`` or a :class:`Solution`: it runs as written and is
            differentiated through :func:`custom_root`; a returned :class:`Solution`'s code is
            trusted, a bare ``x`` is accepted when it passes the test above (else
            ``RESULTS.max_steps_reached``; its ``num_steps`` is then -1, unknown).
        backward: the :class:`ImplicitDiff` of the Hessian system (default: :class:`CG`, with
            ``throw`` of this method).
        step_size: :math:`\eta`; it scales the residual, not the root or the derivative.
        max_steps, rtol, atol: the budget and tolerances of a jaxsolve root solver (the
            tolerances also judge a callable's bare ``x``).
        throw: a failed inner solve raises; ``False``: its value and hypergradient are NaN.

    The state is the last inner solution, the next solve's warm start.
    """

    solver: AbstractSolver | Callable = eqx.field(default_factory=Newton)
    backward: ImplicitDiff | None = None
    step_size: Float[Array, ""] = eqx.field(converter=as_float, default=1.0)
    max_steps: int = eqx.field(static=True, default=256)
    rtol: Float[Array, ""] = eqx.field(converter=as_float, default=1e-5)
    atol: Float[Array, ""] = eqx.field(converter=as_float, default=1e-6)
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        if not (isinstance(self.solver, AbstractSolver) or callable(self.solver)):
            raise TypeError(
                "ImplicitHypergradient solver must be a jaxsolve solver (Newton, Picard, "
                "Anderson, Broyden) or a callable solver(inner_fn, x0, lam, args); got "
                f"{type(self.solver).__name__}."
            )
        if self.backward is not None and not isinstance(self.backward, ImplicitDiff):
            raise TypeError(
                "ImplicitHypergradient backward must be an ImplicitDiff; got "
                f"{type(self.backward).__name__}."
            )
        check_positive("ImplicitHypergradient step_size", self.step_size)
        check_int("ImplicitHypergradient max_steps", self.max_steps)
        check_positive("ImplicitHypergradient rtol", self.rtol, allow_zero=True)
        check_positive("ImplicitHypergradient atol", self.atol, allow_zero=True)

    def init(self, x0):
        return x0

    def _backward(self):
        if self.backward is not None:
            return self.backward
        return ImplicitDiff(CG(), throw=self.throw)

    def inner_solve(self, inner_fn: Callable, x0: PyTree, lam: PyTree, args: Any) -> Solution:
        """The inner solution, differentiable in ``lam`` (and in arrays of ``args``)."""
        grad_x = _grad_x(inner_fn)
        if isinstance(self.solver, AbstractSolver):
            eta = _positive_at_run_time("ImplicitHypergradient step_size", self.step_size)

            def residual(x, params):
                return _scale(grad_x(x, *params), -eta)

            return root_find(
                residual,
                x0,
                (lam, args),
                solver=self.solver,
                max_steps=self.max_steps,
                rtol=self.rtol,
                atol=self.atol,
                backward=self._backward(),
                throw=self.throw,
            )
        user = self.solver
        rtol, atol = self.rtol, self.atol
        eta = _positive_at_run_time("ImplicitHypergradient step_size", self.step_size)

        def run(x0, lam, args):
            out = user(inner_fn, x0, lam, args)
            x = out.value if isinstance(out, Solution) else out
            g = grad_x(x, lam, args)
            gnorm = max_norm(g)
            if isinstance(out, Solution):
                result, steps = out.result, out.num_steps
            else:
                scaled = jtu.tree_map(lambda gi, xi: eta * gi / (atol + rtol * jnp.abs(xi)), g, x)
                done = max_norm(scaled) <= 1
                result = RESULTS.where(done, RESULTS.successful, RESULTS.max_steps_reached)
                steps = jnp.asarray(-1, jnp.int32)
            result = RESULTS.where(_all_finite(x), result, RESULTS.nonfinite)
            return x, Solution(x, result, jnp.asarray(steps, jnp.int32), gnorm)

        solve = custom_root(
            lambda x, lam, args: grad_x(x, lam, args), backward=self._backward(), has_aux=True
        )(run)
        x, sol = solve(x0, lam, args)
        # The aux leaves come back from custom_root's rule possibly as NumPy constants (a count
        # the user's solver did not trace): make them JAX arrays, as Solution's fields are.
        num_steps = jnp.asarray(sol.num_steps, jnp.int32)
        return Solution(x, sol.result, num_steps, jnp.asarray(sol.residual))

    def step(self, outer_fn, inner_fn, lam, state, args):
        def outer(lam):
            sol = self.inner_solve(inner_fn, state, lam, args)
            return outer_fn(sol.value, lam, args), sol

        (value, sol), grad = jax.value_and_grad(outer, has_aux=True)(lam)
        sol = eqx.tree_at(lambda s: s.value, sol, lax.stop_gradient(sol.value))
        hg = _guarded(Hypergradient(value, grad, sol), self.throw, _WHERE)
        return hg, sol.value


class UnrolledHypergradient(AbstractHypergradient):
    r"""Backpropagation through ``num_steps`` (:math:`K`) inner gradient-descent steps
    :math:`x_{k+1} = x_k - \eta\,\nabla_x G(x_k, \lambda)` from the warm start (whose own
    derivative is taken as zero), a ``lax.scan`` that reverse mode stores step by step.

    ``num_steps`` is a static int, or — with a static ``max_steps`` — any integer, traced
    included: the scan then runs ``max_steps`` steps and leaves ``x`` unchanged after the
    first ``num_steps``, so a ``jax.vmap`` over :math:`K` compiles once (memory is that of
    ``max_steps`` steps).

    The hypergradient is that of :math:`F(x_K(\lambda), \lambda)`, an approximation by design:
    stopping after :math:`K` steps is this method's normal case, so the inner ``result`` is
    ``successful`` unless an iterate or the hypergradient is not finite (``nonfinite``), and its
    ``residual`` says how far :math:`x_K` is from stationary.
    """

    num_steps: int | Int[Array, ""] = 50
    step_size: Float[Array, ""] = eqx.field(converter=as_float, default=0.1)
    max_steps: int | None = eqx.field(static=True, default=None)
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_integer_count(
            "UnrolledHypergradient num_steps", self.num_steps, max_steps=self.max_steps
        )
        check_positive("UnrolledHypergradient step_size", self.step_size)

    def init(self, x0):
        return x0

    def step(self, outer_fn, inner_fn, lam, state, args):
        grad_x = _grad_x(inner_fn)
        eta = _positive_at_run_time("UnrolledHypergradient step_size", self.step_size)
        eta = lax.stop_gradient(eta)
        x0 = lax.stop_gradient(state)
        where = "UnrolledHypergradient num_steps"
        num_steps = check_integer_count(where, self.num_steps, max_steps=self.max_steps)
        length = num_steps if self.max_steps is None else self.max_steps

        def outer(lam):
            def body(carry, _):
                x, k = carry
                x_new = _axpy(-eta, grad_x(x, lam, args), x)
                if self.max_steps is not None:  # masked steps leave x as it is
                    x_new = jtu.tree_map(lambda a, b: jnp.where(k < num_steps, a, b), x_new, x)
                return (x_new, k + 1), None

            (x, _), _ = lax.scan(body, (x0, jnp.zeros((), jnp.int32)), None, length=length)
            return outer_fn(x, lam, args), x

        (value, x), grad = jax.value_and_grad(outer, has_aux=True)(lam)
        residual = max_norm(grad_x(x, lam, args))
        result = _finite_code(x, value, grad)
        inner = Solution(x, result, jnp.asarray(num_steps, jnp.int32), residual)
        return _guarded(Hypergradient(value, grad, inner), self.throw, _WHERE), x


class PenaltyHypergradient(AbstractHypergradient):
    r"""V-PBGD, the value-function penalty method ("On Penalty-based Bilevel Gradient Descent",
    Shen & Chen).

    The bilevel problem is replaced by the penalised single-level problem

    .. math:: \min_{x, \lambda}\; F(x, \lambda) + \gamma\,\big(G(x, \lambda) - v(\lambda)\big),
       \qquad v(\lambda) = \min_y G(y, \lambda),

    whose :math:`\varepsilon`-stationary points are those of the bilevel problem up to
    :math:`O(1/\gamma)` (for a :math:`G` that is strongly convex in :math:`x`, or satisfies a
    Polyak–Łojasiewicz condition). By Danskin's theorem
    :math:`\nabla v(\lambda) = \nabla_\lambda G(y^*(\lambda), \lambda)`, so each step needs
    gradients only. One step, with :math:`y` warm-started:

    .. math::
       y &\leftarrow y - \eta_y\,\nabla_y G(y, \lambda) \quad (\text{``inner_steps'' times}) \\
       g_\lambda &= \nabla_\lambda F(x, \lambda)
          + \gamma\,\big(\nabla_\lambda G(x, \lambda) - \nabla_\lambda G(y, \lambda)\big) \\
       x &\leftarrow x - \eta\,\big(\nabla_x F(x, \lambda) + \gamma\,\nabla_x G(x, \lambda)\big)
          \quad (\text{``x_steps'' times; the first at the same point as } g_\lambda)

    and :func:`bilevel_minimize` applies its optax optimiser to :math:`g_\lambda`: with
    ``optax.sgd(eta)`` and ``x_steps=1`` this is the paper's joint gradient step on
    :math:`(x, \lambda)`. The paper's step size is :math:`\eta \lesssim 1/(L_F + \gamma L_G)`.

    Args:
        gamma: the penalty :math:`\gamma` (bias :math:`O(1/\gamma)`, step :math:`O(1/\gamma)`).
        step_size: :math:`\eta` of the ``x`` updates.
        inner_step_size: the step of the ``y`` updates (default ``step_size``); ``y`` solves
            the inner problem alone, so :math:`1/L_G` suits it, far above the joint step
            :math:`1/(L_F + \gamma L_G)`. A ``y`` that lags :math:`y^*(\lambda)` enters
            :math:`g_\lambda` multiplied by :math:`\gamma`, and can make the run diverge.
        inner_steps: gradient steps on :math:`y` per outer step (the paper's :math:`T`).
        x_steps: gradient steps on :math:`x` per outer step.

    The state is ``(x, y)``; ``solution`` is ``x``. The hypergradient is the penalised
    problem's :math:`g_\lambda` at the current :math:`x` (biased: it is exact only at
    :math:`x = x_\gamma(\lambda)` and in the limit :math:`\gamma \to \infty`). The inner
    :class:`Solution` is that of :math:`y` (``num_steps = inner_steps``, ``residual`` the
    max-norm of :math:`\nabla_y G`); a non-finite iterate is ``RESULTS.nonfinite``.
    """

    gamma: Float[Array, ""] = eqx.field(converter=as_float, default=10.0)
    step_size: Float[Array, ""] = eqx.field(converter=as_float, default=0.01)
    inner_step_size: Float[Array, ""] | None = eqx.field(
        converter=lambda v: None if v is None else as_float(v), default=None
    )
    inner_steps: int = eqx.field(static=True, default=10)
    x_steps: int = eqx.field(static=True, default=1)
    throw: bool = eqx.field(static=True, default=True)

    def __check_init__(self):
        check_positive("PenaltyHypergradient gamma", self.gamma)
        check_positive("PenaltyHypergradient step_size", self.step_size)
        if self.inner_step_size is not None:
            check_positive("PenaltyHypergradient inner_step_size", self.inner_step_size)
        check_int("PenaltyHypergradient inner_steps", self.inner_steps)
        check_int("PenaltyHypergradient x_steps", self.x_steps)

    def init(self, x0):
        return (x0, x0)

    def solution(self, state):
        return state[0]

    def step(self, outer_fn, inner_fn, lam, state, args):
        x, y = state
        eta = _positive_at_run_time("PenaltyHypergradient step_size", self.step_size)
        gamma = _positive_at_run_time("PenaltyHypergradient gamma", self.gamma)
        grad_x = _grad_x(inner_fn)

        eta_y = eta
        if self.inner_step_size is not None:
            name = "PenaltyHypergradient inner_step_size"
            eta_y = _positive_at_run_time(name, self.inner_step_size)

        def descend_y(y, _):
            return _axpy(-eta_y, grad_x(y, lam, args), y), None

        y, _ = lax.scan(descend_y, y, None, length=self.inner_steps)

        def penalised(x, lam):
            return outer_fn(x, lam, args) + gamma * inner_fn(x, lam, args)

        value = outer_fn(x, lam, args)
        g_x, g_lam = jax.grad(penalised, argnums=(0, 1))(x, lam)
        g_lam_y = jax.grad(inner_fn, argnums=1)(y, lam, args)
        grad = _axpy(-gamma, g_lam_y, g_lam)

        def descend_x(x, _):
            return _axpy(-eta, jax.grad(penalised)(x, lam), x), None

        x = _axpy(-eta, g_x, x)
        x, _ = lax.scan(descend_x, x, None, length=self.x_steps - 1)
        inner = Solution(
            y,
            _finite_code(x, y, grad),
            jnp.asarray(self.inner_steps, jnp.int32),
            max_norm(grad_x(y, lam, args)),
        )
        return _guarded(Hypergradient(value, grad, inner), self.throw, _WHERE), (x, y)


def _check_method(where, method):
    method = ImplicitHypergradient() if method is None else method
    if not isinstance(method, AbstractHypergradient):
        raise TypeError(
            f"{where}: method must be an AbstractHypergradient (ImplicitHypergradient, "
            f"UnrolledHypergradient, PenaltyHypergradient); got {type(method).__name__}."
        )
    return method


# ----------------------------------------------------------------------------------------------
# Entry points.


def hypergradient(
    outer_fn: Objective,
    inner_fn: Objective,
    lam: PyTree[ArrayLike],
    x0: PyTree[ArrayLike],
    args: Any = None,
    *,
    method: AbstractHypergradient | None = None,
) -> Hypergradient:
    r"""The outer value and :math:`\nabla_\lambda F(x^*(\lambda), \lambda)`, and the inner solve.

    ``outer_fn(x, lam, args)`` and ``inner_fn(x, lam, args)`` return scalars; ``x0`` is the
    inner initial guess; ``method`` (default :class:`ImplicitHypergradient`, Newton inner
    solver) says how the hypergradient is computed (see the module docstring). A failed inner
    solve raises, or with ``throw=False`` on the method gives NaN value and hypergradient (its
    code is in ``.inner.result``). Wrap the call in ``jax.jit``: run eagerly, each of the
    solver's operations is dispatched (and compiled) on its own.
    """
    method = _check_method(_WHERE, method)
    lam, x0 = check_problem(_WHERE, outer_fn, inner_fn, lam, x0, args)
    hg, _ = method.step(outer_fn, inner_fn, lam, method.init(x0), args)
    return hg


class BilevelResult(eqx.Module):
    """What :func:`bilevel_minimize` returns.

    - ``lam``: the final hyper-parameters; ``x``: the final inner iterate (the warm start the
      next step would use).
    - ``values``, ``grad_norms``: per outer step, :math:`F` and the max-norm of the
      hypergradient at the step's ``lam`` (before its update).
    - ``inner_steps``: per outer step, the inner solve's iterations.
    - ``result``: the first non-successful inner code of the run (``successful`` if none).
    """

    lam: PyTree[Array]
    x: PyTree[Array]
    values: Float[Array, " steps"]
    grad_norms: Float[Array, " steps"]
    inner_steps: Int[Array, " steps"]
    result: RESULTS


def bilevel_minimize(
    outer_fn: Objective,
    inner_fn: Objective,
    lam0: PyTree[ArrayLike],
    x0: PyTree[ArrayLike],
    args: Any = None,
    *,
    optimizer: optax.GradientTransformation,
    num_steps: int,
    method: AbstractHypergradient | None = None,
) -> BilevelResult:
    r"""Minimise :math:`F(x^*(\lambda), \lambda)` over :math:`\lambda` with an optax optimiser.

    A pure function: one ``lax.scan`` of ``num_steps`` outer steps, each
    :math:`g = \text{method.step}(\lambda)`, then ``optimizer``'s update of :math:`\lambda` with
    :math:`g`. The inner solve of each step starts from the previous step's solution (warm
    start), which saves inner iterations when :math:`\lambda` moves little per step (how many
    depends on the solver: Newton's few steps hardly change; gradient-type solvers gain more).
    Jits and vmaps (e.g. over ``lam0``). With ``throw=False`` on the method, a failed inner
    solve makes the rest of the run NaN and its code is ``result``.
    """
    method = _check_method(_DRIVER, method)
    lam0, x0 = check_problem(_DRIVER, outer_fn, inner_fn, lam0, x0, args)
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"{_DRIVER}: optimizer must be an optax.GradientTransformation (e.g. "
            f"optax.adam(1e-2)); got {type(optimizer).__name__}."
        )
    num_steps = check_int(f"{_DRIVER}: num_steps", num_steps)

    def body(carry, _):
        lam, opt_state, state, result = carry
        hg, state = method.step(outer_fn, inner_fn, lam, state, args)
        updates, opt_state = optimizer.update(hg.grad, opt_state, lam)
        lam = optax.apply_updates(lam, updates)
        result = RESULTS.where(result == RESULTS.successful, hg.inner.result, result)
        out = (hg.value, max_norm(hg.grad), jnp.asarray(hg.inner.num_steps, jnp.int32))
        return (lam, opt_state, state, result), out

    carry = (lam0, optimizer.init(lam0), method.init(x0), RESULTS.successful)
    (lam, _, state, result), (values, gnorms, steps) = lax.scan(body, carry, None, length=num_steps)
    # The last update is applied after the last check: an overflow there is reported too.
    final = _finite_code(lam, method.solution(state))
    result = RESULTS.where(result == RESULTS.successful, final, result)
    return BilevelResult(lam, method.solution(state), values, gnorms, steps, result)
