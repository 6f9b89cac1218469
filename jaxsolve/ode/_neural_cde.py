r"""Neural controlled differential equations over interpolated, irregularly sampled data.

A neural CDE ("Neural Controlled Differential Equations for Irregular Time Series"; also the
thesis "On Neural Differential Equations") reads a time series through a continuous path
:math:`X:[t_0, t_1]\to\mathbb{R}^c` that interpolates its observations, and evolves a hidden state
by the Riemann–Stieltjes equation

.. math::

    z(t_0) = \zeta_\theta(X(t_0)), \qquad
    z(t) = z(t_0) + \int_{t_0}^{t} f_\theta(z(s))\,\mathrm{d}X(s), \qquad
    \hat y(t) = \ell_\theta(z(t)),

with :math:`f_\theta(z)\in\mathbb{R}^{h\times c}` a matrix-valued field and :math:`\ell_\theta`
linear. For a path that is differentiable between knots this is the ODE
:math:`\mathrm{d}z/\mathrm{d}t = f_\theta(z)\,\dot X(t)`, which is how it is solved here: through
the ODE pillar's one driver (:func:`~._driver.integrate`: exact NFE, result codes, a non-finite
state ends the solve), with any diffrax solver, step-size controller and adjoint.

Because the model sees only :math:`X`, its output does not depend on where the observations were
taken, only on the path they describe — up to the interpolation error, which shrinks as the
sampling densifies. Time itself is a channel of :math:`X` (else the model could not tell a fast
path from a slow one), and so, following the paper, is the cumulative count of observations of
each channel: its increments are the observation mask, so missingness that carries information is
seen by the model, while the interpolation fills the values themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from .._core import RESULTS, as_float, check_choice, check_int, is_concrete
from ._driver import check_ts, integrate, maybe_throw, nan_if, solver_setup

INTERPOLATIONS = ("cubic", "linear", "rectilinear")
OBSERVED_CHANNELS = ("count", "mask", None)


# --------------------------------------------------------------------------- interpolation


def _check_series(ts, xs):
    """``(ts, xs)`` as floating arrays of shapes ``(n,)`` and ``(n, c)``, ``ts`` strictly
    increasing and finite (at run time when traced)."""
    if jnp.iscomplexobj(ts) or jnp.iscomplexobj(xs):
        raise TypeError("ts and xs must be real; got a complex array.")
    ts, xs = as_float(ts), as_float(xs)
    if ts.ndim != 1 or ts.shape[0] < 2:
        raise ValueError(f"ts must be a 1-D array of at least 2 times; got shape {ts.shape}.")
    if xs.ndim != 2 or xs.shape[0] != ts.shape[0]:
        raise ValueError(
            f"xs must have shape (len(ts), channels) = ({ts.shape[0]}, c); got shape {xs.shape}."
        )
    dtype = jnp.promote_types(ts.dtype, xs.dtype)
    ts, xs = ts.astype(dtype), xs.astype(dtype)
    # Hermite and linear interpolation divide by the gaps between times: a repeated time makes a
    # path with an infinite derivative, so the times must be strictly increasing.
    if is_concrete(ts):
        a = np.asarray(ts)
        if not np.all(np.isfinite(a)):
            raise ValueError("ts must be finite; got NaN or inf (mark missing values in xs).")
        if np.any(np.diff(a) <= 0):
            raise ValueError("ts must be strictly increasing.")
    else:
        bad = ~jnp.all(jnp.isfinite(ts)) | jnp.any(jnp.diff(ts) <= 0)
        ts = eqx.error_if(ts, bad, "ts must be finite and strictly increasing.")
    # NaN marks a missing value; an infinite one would be taken as observed and spread NaN over
    # the path's neighbouring intervals (inf - inf), which then pose as interpolated data.
    if is_concrete(xs):
        if np.any(np.isinf(np.asarray(xs))):
            raise ValueError(
                "xs must be finite where observed (NaN marks a missing value); got inf."
            )
    else:
        xs = eqx.error_if(
            xs, jnp.any(jnp.isinf(xs)), "xs must be finite where observed (NaN marks missing)."
        )
    return ts, xs


def _backward_hermite_c1(ts, data):
    r"""Coefficients ``(d, c, b, a)``, each ``(n - 1, channels)``, of a :math:`C^1` backward
    Hermite cubic spline through the non-NaN entries of ``data`` (its first and last rows must
    be finite): on knot interval :math:`[t_i, t_{i+1}]` channel :math:`j` is
    :math:`a + b\,s + c\,s^2 + d\,s^3`, :math:`s = t - t_i`.

    The splines of "Neural Controlled Differential Equations for Online Prediction Tasks": per
    channel, between consecutive observations :math:`(t_p, y_p)` and :math:`(t_q, y_q)` the
    path is the cubic :math:`H` with :math:`H(t_p) = y_p`, :math:`H(t_q) = y_q`,
    :math:`H'(t_q) = (y_q - y_p) / (t_q - t_p)` (the chord) and :math:`H'(t_p)` the chord of
    the observation interval before (at the first knot, the chord after), so the path is
    :math:`C^1` at the observations and its value at :math:`t` depends only on the observations
    up to the next one of that channel. On the knot intervals inside a gap :math:`t_p < t_i`,
    :math:`H` is re-expanded about :math:`t_i` (a Taylor shift), so every interval of the gap
    holds :math:`H` itself. Diffrax's ``backward_hermite_coefficients`` instead fits a fresh
    Hermite cubic on each later interval of a gap, from :math:`(H(t_i), H'(t_i))` with the chord
    from there as its end slope: a derivative that jumps at the observation ending the gap
    and, over two or more consecutive missing values, a value that jumps inside it. Without gaps
    both are the same arithmetic, so the same numbers."""
    n = data.shape[0]
    seen = ~jnp.isnan(data)
    # Zeros rather than NaN in the unobserved rows, which are never read: a NaN there would make
    # the unused slopes below NaN, and their zero cotangents 0 * NaN = NaN in a gradient.
    y = jnp.where(seen, data, 0.0)
    index = jnp.broadcast_to(jnp.arange(n)[:, None], data.shape)
    # For each row, the last observed row at or before it and the first at or after it (row 0
    # and row n - 1 are observed, so both exist).
    last = jax.lax.cummax(jnp.where(seen, index, 0), axis=0)
    first = jax.lax.cummin(jnp.where(seen, index, n - 1), axis=0, reverse=True)
    at = lambda values, rows: jnp.take_along_axis(values, rows, axis=0)
    # The slope at each observed row: the chord from the previous observation; at row 0 the
    # chord to the next one, (y_0 - y_q) / (t_0 - t_q): negating both differences is exact in
    # floating point, so these are the bits of the forward chord.
    other = jnp.concatenate([first[1:2], last[:-1]])
    slope = (y - at(y, other)) / (ts[:, None] - ts[other])
    p, q = last[:-1], first[1:]  # the observations bracketing interval i, per channel
    t_p, y_p, t_q, y_q, b = ts[p], at(y, p), ts[q], at(y, q), at(slope, p)
    # The Hermite cubic on [t_p, t_q] about t_p, in diffrax's arithmetic.
    t_diff = t_q - t_p
    d_deriv = (y_q - y_p) / t_diff - b
    a, c, d = y_p, 2 * d_deriv / t_diff, -d_deriv / (t_diff**2)
    # Re-expanded about t_i (a shift of 0, hence the same numbers, outside gaps).
    shift = ts[:-1, None] - t_p
    a = a + shift * (b + shift * (c + shift * d))
    b = b + shift * (2 * c + 3 * d * shift)
    c = c + 3 * d * shift
    return d, c, b, a


def interpolate(
    ts: Float[ArrayLike, " n"],
    xs: Float[ArrayLike, "n c"],
    *,
    method: str = "cubic",
    include_time: bool = True,
    observed: str | None = "count",
) -> dfx.AbstractPath:
    r"""The control path :math:`X` of one series observed at times ``ts``, missing values NaN.

    The channels of :math:`X` are, in order: the time :math:`t` (with ``include_time``), the
    ``c`` data channels, and (with ``observed``) one channel per data channel that is either the
    cumulative number of observations of that channel so far, divided by ``n``
    (``"count"``, the paper's choice: its increments are the mask) or the 0/1 observation mask itself (``"mask"``).

    Missing values are filled as diffrax's interpolation helpers do: between two observations by
    the interpolation itself; at the last time by the last observed value (so a linear path is
    constant after it); at the first time by the channel's first observed value; a channel never
    observed is 0.

    ``method``:

    * ``"cubic"`` — Hermite cubic splines with backward differences ("Neural Controlled
      Differential Equations for Online Prediction Tasks"), as a
      :class:`diffrax.CubicInterpolation`: a :math:`C^1` path, also over interior gaps, whose
      value at ``t`` depends only on the observations up to the next observation of each
      channel. Over an interior gap each channel is one cubic from the observation before to
      the observation after. (:func:`diffrax.backward_hermite_coefficients` agrees without gaps;
      over gaps its path's derivative, and over two or more consecutive missing values its
      value, jumps at knots.)
    * ``"linear"`` — :class:`diffrax.LinearInterpolation`: a continuous, piecewise linear path.
    * ``"rectilinear"`` — :func:`diffrax.rectilinear_interpolation` ("Neural Controlled
      Differential Equations for Online Prediction Tasks"): time advances with the data held,
      then the data jumps with time held. Such a path is parametrised by its *index*, not by
      time: observation ``i`` sits at parameter ``2 i`` (the path runs over ``[0, 2 n - 2]``), so
      saving times for it are in that parameter; it needs ``include_time`` to be meaningful.
      Interior gaps are filled forward (the path never looks ahead).

    Returns a diffrax path (an ``eqx.Module``; batch with :func:`interpolate_batch`).
    """
    check_choice("method", method, INTERPOLATIONS)
    check_choice("observed", observed, OBSERVED_CHANNELS)
    if not isinstance(include_time, bool):
        raise TypeError(f"include_time must be a bool; got {type(include_time).__name__}.")
    ts, xs = _check_series(ts, xs)
    return _interpolate_checked(ts, xs, method, include_time, observed)


# One compiled program per (shapes, options): called outside jit, the few dozen operations
# below would otherwise each compile on their own, once per new series length.
@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _interpolate_checked(ts, xs, method, include_time, observed):
    """:func:`interpolate` of a series :func:`_check_series` accepted."""
    seen = ~jnp.isnan(xs)
    observed_ever = jnp.any(seen, axis=0)
    n = xs.shape[0]
    first_value = jnp.take_along_axis(xs, jnp.argmax(seen, axis=0)[None], axis=0)[0]
    last_value = jnp.take_along_axis(xs, (n - 1 - jnp.argmax(seen[::-1], axis=0))[None], axis=0)[0]
    first_value = jnp.where(observed_ever, first_value, 0.0)
    last_value = jnp.where(observed_ever, last_value, 0.0)
    channels = [xs]
    if include_time:
        channels.insert(0, ts[:, None])
    if observed == "count":
        # Divided by the number of time stamps: the same information on the scale of the mask,
        # so a long series does not feed the field increments of O(n) total size.
        channels.append(jnp.cumsum(seen, axis=0).astype(xs.dtype) / xs.shape[0])
    elif observed == "mask":
        channels.append(seen.astype(xs.dtype))
    data = jnp.concatenate(channels, axis=1)
    # Only data channels hold NaN (time, counts and masks are always finite). Filling the end
    # rows here, rather than through diffrax's replace_nans_at_start / fill_forward_nans_at_end,
    # also covers a channel that is never observed (backward_hermite_coefficients leaves it
    # NaN): it becomes the constant 0. Interior gaps are left to the interpolation.
    n_obs = xs.shape[1] if observed is not None else 0
    n_time = int(include_time)
    pad = lambda v: jnp.concatenate([jnp.zeros(n_time, xs.dtype), v, jnp.zeros(n_obs, xs.dtype)])
    data = data.at[0].set(jnp.where(jnp.isnan(data[0]), pad(first_value), data[0]))
    data = data.at[-1].set(jnp.where(jnp.isnan(data[-1]), pad(last_value), data[-1]))
    if method == "cubic":
        return dfx.CubicInterpolation(ts, _backward_hermite_c1(ts, data))
    if method == "linear":
        filled = dfx.linear_interpolation(ts, data)
        return dfx.LinearInterpolation(ts, filled)
    # Time advances first and the data follow: the time channel comes from the new times, not
    # from the data (where it would be held back with the observations).
    new_ts, filled = dfx.rectilinear_interpolation(ts, data[:, n_time:])
    if include_time:
        filled = jnp.concatenate([new_ts[:, None], filled], axis=1)
    return dfx.LinearInterpolation(jnp.arange(filled.shape[0], dtype=data.dtype), filled)


def interpolate_batch(
    ts: Float[ArrayLike, "batch n"] | Float[ArrayLike, " n"],
    xs: Float[ArrayLike, "batch n c"],
    *,
    method: str = "cubic",
    include_time: bool = True,
    observed: str | None = "count",
) -> dfx.AbstractPath:
    """:func:`interpolate` over a batch (``jax.vmap``): each series has its own times
    ``ts[b]`` (or all share a 1-D ``ts``). The result is one path module whose arrays have a
    leading batch axis; pass it to ``jax.vmap(model)`` or to the losses below."""
    ts, xs = jnp.asarray(ts), jnp.asarray(xs)
    if xs.ndim != 3:
        raise ValueError(f"xs must have shape (batch, n, channels); got shape {xs.shape}.")
    if ts.ndim == 1:
        ts = jnp.broadcast_to(ts, xs.shape[:2])
    if ts.shape != xs.shape[:2]:
        raise ValueError(
            f"ts must have shape (batch, n) = {xs.shape[:2]} or (n,); got shape {ts.shape}."
        )
    check_choice("method", method, INTERPOLATIONS)
    check_choice("observed", observed, OBSERVED_CHANNELS)
    if is_concrete(ts):
        a = np.asarray(ts)
        if not np.all(np.isfinite(a)) or np.any(np.diff(a, axis=1) <= 0):
            raise ValueError("ts must be finite and strictly increasing along each series.")
    if is_concrete(xs) and np.any(np.isinf(np.asarray(xs))):
        raise ValueError("xs must be finite where observed (NaN marks a missing value); got inf.")
    return _interpolate_batch_checked(ts, xs, method, include_time, observed)


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _interpolate_batch_checked(ts, xs, method, include_time, observed):
    """:func:`interpolate_batch` after its checks: one compiled program (see above)."""

    def one(t, x):
        t, x = _check_series(t, x)
        return _interpolate_checked(t, x, method, include_time, observed)

    return jax.vmap(one)(ts, xs)


# --------------------------------------------------------------------------------- model


class CDESolution(eqx.Module):
    """What a :class:`NeuralCDE` call returns.

    ``zs[i]`` is the hidden state and ``ys[i] = readout(zs[i])`` the output at ``ts[i]``.
    Statistics as :class:`~jaxsolve.ode.ODESolution`: ``nfe`` counts every evaluation of the
    vector field (each one evaluates :math:`f_\\theta` and :math:`\\dot X` once). After a failed
    solve (``throw=False``) ``zs`` and ``ys`` hold ``inf`` (or NaN) at every time the solve did
    not reach, never a plausible number.
    """

    ts: Float[Array, " n"]
    zs: Float[Array, "n hidden"]
    ys: Float[Array, "n out"]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    nfe: Int[Array, ""]
    result: RESULTS


class _DrivenField(eqx.Module):
    r""":math:`(t, z, X) \mapsto f(t, z)\,\dot X(t)`: the CDE as an ODE along the path ``X``."""

    vector_field: Callable

    def __call__(self, t, z, control):
        matrix = self.vector_field(t, z, None)
        return matrix @ control.derivative(t).astype(matrix.dtype)


class NeuralCDE(eqx.Module):
    r"""Solve :math:`\mathrm{d}z = f(t, z)\,\mathrm{d}X(t)`, :math:`z(t_0) = \zeta(X(t_0))`, and
    read out :math:`\hat y = \ell(z)`.

    ``initial`` (:math:`\zeta`, ``(c,) -> (hidden,)``), ``vector_field`` (:math:`f`, called as
    ``vector_field(t, z, None)``, ``(hidden,) -> (hidden, c)``) and ``readout`` (:math:`\ell`,
    ``(hidden,) -> (out,)``, linear in the paper) are callables, usually ``eqx.Module`` s whose
    arrays are the trained parameters; :meth:`mlp` builds the paper's architecture.
    ``solver``, ``stepsize_controller``, ``adjoint``, ``dt0``, ``max_steps`` and ``throw`` are as
    for :class:`~jaxsolve.ode.NeuralODE` (defaults Tsit5, ``PIDController(rtol=1e-3,
    atol=1e-6)``, ``RecursiveCheckpointAdjoint``).

    With ``step_to_knots`` (the default) an adaptive controller is made to end steps at the knots
    of an interpolated control, as diffrax's neural-CDE example does (a controller that is
    already a ``ClipStepSizeController`` is kept as given): between knots the path is a
    polynomial, so no step straddles a jump of :math:`\ddot X` (cubic: ``step_ts``) or of
    :math:`\dot X` (linear: ``jump_ts``, which also evaluates the field just after the knot, on
    the new slope), which an error estimate sees poorly. For a linear path ``nfe`` is then -1
    (unknown): after each jump the solver evaluates the field afresh, a data-dependent number of
    times the driver does not count. A cubic path is taken to be :math:`C^1`, as those of
    :func:`interpolate` are, with or without missing values: an FSAL solver such as Tsit5 then
    reuses its last evaluation across a knot, and ``nfe`` stays exact. (A cubic path built with
    :func:`diffrax.backward_hermite_coefficients` over data with gaps is not :math:`C^1`, nor
    always continuous: the reused evaluation carries the old slope past the knot, an error the
    embedded estimate does not see; build it with :func:`interpolate`.)

    A call takes one control path ``X`` (from :func:`interpolate`, or any diffrax
    ``AbstractPath`` with a ``derivative``, e.g. a closed-form one) and solves over
    ``[X.t0, X.t1]``; batch with ``jax.vmap`` over the path (from :func:`interpolate_batch`): each
    series keeps its own times and its own adaptive steps.
    """

    initial: Callable
    vector_field: Callable
    readout: Callable
    solver: dfx.AbstractSolver
    stepsize_controller: dfx.AbstractStepSizeController
    adjoint: dfx.AbstractAdjoint
    dt0: float | None
    max_steps: int = eqx.field(static=True)
    throw: bool = eqx.field(static=True)
    step_to_knots: bool = eqx.field(static=True)

    def __init__(
        self,
        initial: Callable,
        vector_field: Callable,
        readout: Callable,
        solver: dfx.AbstractSolver | None = None,
        stepsize_controller: dfx.AbstractStepSizeController | None = None,
        adjoint: dfx.AbstractAdjoint | None = None,
        *,
        dt0: float | None = None,
        max_steps: int = 4096,
        throw: bool = True,
        step_to_knots: bool = True,
    ):
        for name, fn in (
            ("initial", initial),
            ("vector_field", vector_field),
            ("readout", readout),
        ):
            if not callable(fn):
                raise TypeError(f"{name} must be callable; got {type(fn).__name__}.")
        self.initial, self.vector_field, self.readout = initial, vector_field, readout
        self.solver, self.stepsize_controller, self.adjoint = solver_setup(
            solver, stepsize_controller, adjoint, max_steps, dt0, rtol=1e-3, atol=1e-6
        )
        if not isinstance(throw, bool):
            raise TypeError(f"throw must be a bool; got {type(throw).__name__}.")
        self.dt0 = dt0
        self.max_steps = max_steps
        self.throw = throw
        if not isinstance(step_to_knots, bool):
            raise TypeError(f"step_to_knots must be a bool; got {type(step_to_knots).__name__}.")
        self.step_to_knots = step_to_knots

    @classmethod
    def mlp(
        cls,
        in_channels: int,
        hidden_size: int,
        out_size: int,
        *,
        width: int,
        depth: int,
        key: PRNGKeyArray,
        **kwargs,
    ) -> NeuralCDE:
        """The paper's architecture: :math:`\\zeta` linear, :math:`f` an MLP :class:`CDEField`
        (softplus inside, tanh at the end, which keeps :math:`f` bounded), linear readout.
        ``kwargs`` go to :class:`NeuralCDE` (solver, controller, adjoint, ...)."""
        check_int("in_channels", in_channels)
        check_int("hidden_size", hidden_size)
        check_int("out_size", out_size)
        k_init, k_field, k_read = jax.random.split(key, 3)
        return cls(
            eqx.nn.Linear(in_channels, hidden_size, key=k_init),
            CDEField(hidden_size, in_channels, width, depth, key=k_field),
            eqx.nn.Linear(hidden_size, out_size, key=k_read),
            **kwargs,
        )

    def __call__(
        self, control: dfx.AbstractPath, ts: Float[ArrayLike, " n"] | None = None
    ) -> CDESolution:
        """Solve along ``control`` from ``control.t0`` to ``control.t1``; save at ``ts``
        (default ``[t0, t1]``; ``ts[0]`` must be ``t0``, ``ts[-1]`` at most ``t1``)."""
        if not isinstance(control, dfx.AbstractPath):
            raise TypeError(
                "control must be a diffrax path (from interpolate / interpolate_batch, or an "
                f"AbstractPath with a derivative); got {type(control).__name__}."
            )
        t0, t1 = jnp.asarray(control.t0), jnp.asarray(control.t1)
        x0 = as_float(control.evaluate(t0))
        if x0.ndim != 1:
            raise ValueError(
                f"control must take values of shape (channels,); got shape {x0.shape} (batch "
                "with jax.vmap over the path)."
            )
        if ts is None:
            ts = jnp.stack([t0, t1]).astype(x0.dtype)
        elif jnp.iscomplexobj(ts):
            raise TypeError(f"ts must be real; got dtype {jnp.result_type(ts)}.")
        else:
            ts = as_float(ts).astype(x0.dtype)
        ts = check_ts(ts)
        # The solve starts where the path does; saving past its end would read NaN.
        ts = eqx.error_if(
            ts, (ts[0] != t0) | (ts[-1] > t1), "ts must start at control.t0 and end by control.t1."
        )
        try:
            jax.eval_shape(self.initial, x0)
        except Exception as error:
            raise ValueError(
                f"initial(x0) fails on the control's first value, of shape {x0.shape}: {error}"
            ) from error
        z0 = as_float(self.initial(x0))
        if z0.ndim != 1:
            raise ValueError(f"initial must return a 1-D hidden state; got shape {z0.shape}.")
        _check_cde_field(self.vector_field, t0, z0, x0.shape[0])
        controller, jumps = self._controller(control)
        raw = integrate(
            _DrivenField(self.vector_field),
            ts,
            z0,
            control,
            solver=self.solver,
            stepsize_controller=controller,
            adjoint=self.adjoint,
            dt0=self.dt0,
            max_steps=self.max_steps,
        )
        zs = maybe_throw(raw.result, raw.ys, self.throw)
        ys = jax.vmap(self.readout)(zs)
        return CDESolution(
            ts=ts,
            zs=zs,
            ys=ys,
            num_steps=raw.num_steps,
            num_accepted_steps=raw.num_accepted_steps,
            num_rejected_steps=raw.num_rejected_steps,
            # After a jump the solver evaluates the field afresh (no FSAL reuse), as many times
            # as steps start there, rejected ones included: a count the driver does not see.
            nfe=jnp.full((), -1, jnp.int32) if jumps else raw.nfe,
            result=raw.result,
        )

    def _controller(self, control):
        """The step-size controller, made to step to the knots of an interpolated control, and
        whether those knots are jumps (of the path's derivative: a piecewise linear path)."""
        controller = self.stepsize_controller
        knots = getattr(control, "ts", None)
        if (
            not self.step_to_knots
            or knots is None
            or not isinstance(controller, dfx.AbstractAdaptiveStepSizeController)
            or isinstance(controller, dfx.ClipStepSizeController)
        ):
            return controller, False
        if isinstance(control, dfx.LinearInterpolation):
            return dfx.ClipStepSizeController(controller, jump_ts=knots), True
        return dfx.ClipStepSizeController(controller, step_ts=knots), False


def _check_cde_field(vector_field, t0, z0, channels):
    """``vector_field(t, z, None)`` must return a ``(hidden, channels)`` floating matrix."""
    expected = jax.ShapeDtypeStruct((z0.shape[0], channels), z0.dtype)
    try:
        out = eqx.filter_eval_shape(vector_field, t0, z0, None)
    except Exception as error:
        raise ValueError(
            f"vector_field(t, z, None) fails on the initial state of shape {z0.shape}: {error}"
        ) from error
    if not (
        hasattr(out, "shape")
        and out.shape == expected.shape
        and jnp.issubdtype(out.dtype, jnp.inexact)
    ):
        raise ValueError(
            f"vector_field(t, z, None) must return a (hidden, channels) = {expected.shape} "
            f"floating matrix; got {getattr(out, 'shape', out)}."
        )


class CDEField(eqx.Module):
    r"""An MLP matrix field :math:`f_\theta: \mathbb{R}^{h} \to \mathbb{R}^{h\times c}` for
    :class:`NeuralCDE`; time enters through the control's time channel, not as an input."""

    mlp: eqx.nn.MLP
    hidden_size: int = eqx.field(static=True)
    channels: int = eqx.field(static=True)

    def __init__(
        self,
        hidden_size: int,
        channels: int,
        width: int,
        depth: int,
        *,
        key: PRNGKeyArray,
        activation: Callable = jax.nn.softplus,
        final_activation: Callable = jnp.tanh,
    ):
        self.hidden_size = check_int("hidden_size", hidden_size)
        self.channels = check_int("channels", channels)
        check_int("width", width)
        check_int("depth", depth, minimum=0)
        self.mlp = eqx.nn.MLP(
            hidden_size,
            hidden_size * channels,
            width,
            depth,
            activation=activation,
            final_activation=final_activation,
            key=key,
        )

    def __call__(self, t, z: Float[Array, " hidden"], args=None) -> Float[Array, "hidden c"]:
        if z.shape != (self.hidden_size,):
            raise ValueError(f"z must have shape ({self.hidden_size},); got {z.shape}.")
        return self.mlp(z).reshape(self.hidden_size, self.channels)


# -------------------------------------------------------------------------------- losses


def classification_loss(
    model: NeuralCDE, controls: dfx.AbstractPath, labels: Int[ArrayLike, " batch"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """``(mean cross-entropy, accuracy)`` of the final outputs :math:`\\ell(z(t_1))` of a batch
    of paths (from :func:`interpolate_batch`) against integer ``labels``.

    With one output the logit is that of class 1 (logistic loss); with ``k > 1`` outputs, softmax
    over ``k`` classes. Use ``jax.value_and_grad(..., has_aux=True)``. A failed solve gives a
    NaN loss and accuracy, with NaN derivatives (or raises, with ``model.throw``), never
    plausible ones.
    """
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer) or labels.ndim != 1:
        raise TypeError(
            f"labels must be a 1-D integer array; got dtype {labels.dtype}, shape {labels.shape}."
        )
    solutions = jax.vmap(lambda c: model(c))(controls)
    logits = solutions.ys[:, -1]
    if logits.shape[0] != labels.shape[0]:
        raise ValueError(
            f"labels must have one entry per path ({logits.shape[0]}); got {labels.shape[0]}."
        )
    if logits.shape[1] == 1:
        loss = optax.sigmoid_binary_cross_entropy(logits[:, 0], labels.astype(logits.dtype))
        predicted = (logits[:, 0] > 0).astype(labels.dtype)
    else:
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        predicted = jnp.argmax(logits, axis=1).astype(labels.dtype)
    # A failed solve leaves inf in zs, which a bounded readout maps to finite, plausible logits:
    # the outcome decides, and the loss, the accuracy and their derivatives are NaN.
    failed = jnp.any(solutions.result != RESULTS.successful)
    return nan_if((jnp.mean(loss), jnp.mean(predicted == labels)), failed)


def forecasting_loss(
    model: NeuralCDE,
    controls: dfx.AbstractPath,
    ts: Float[ArrayLike, "batch n"],
    targets: Float[ArrayLike, "batch n out"],
) -> Float[Array, ""]:
    """Mean squared error of the outputs :math:`\\ell(z(t))` at times ``ts[b]`` (each series its
    own, ``ts[b, 0]`` its path's start) against ``targets``; NaN targets (unobserved) are left
    out of the mean. A failed solve gives a NaN loss with NaN derivatives, never plausible
    ones."""
    ts, targets = as_float(ts), as_float(targets)
    if ts.ndim != 2 or targets.ndim != 3 or targets.shape[:2] != ts.shape:
        raise ValueError(
            f"ts must have shape (batch, n) and targets (batch, n, out); got {ts.shape} and "
            f"{targets.shape}."
        )
    solutions = jax.vmap(lambda c, t: model(c, t))(controls, ts)
    ys = solutions.ys
    if ys.shape != targets.shape:
        raise ValueError(f"targets must have shape {ys.shape}; got {targets.shape}.")
    seen = ~jnp.isnan(targets)
    # Masked before squaring: a NaN target must not reach the gradient (0 * NaN = NaN).
    err = jnp.where(seen, ys - jnp.where(seen, targets, 0.0), 0.0)
    mse = jnp.sum(err**2) / jnp.maximum(jnp.sum(seen), 1)
    # A failed solve leaves inf in zs, maybe only where targets are missing (and a bounded
    # readout may map it to a finite ys): never a plausible loss, nor a plausible (zero)
    # derivative, which a select alone would give.
    failed = jnp.any(solutions.result != RESULTS.successful) | ~jnp.all(jnp.isfinite(ys))
    return nan_if(mse, failed)
