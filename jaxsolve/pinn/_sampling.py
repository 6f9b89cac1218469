r"""Collocation points: uniform, quasi-random and stratified sets, and residual-adaptive samplers.

Point sets are drawn in the unit cube :math:`[0, 1)^{dim}` and mapped into a geometry by its
``from_unit_cube``. Where that map is measure-preserving (intervals, boxes, 2-D disks through
:math:`(r, \theta) = (R\sqrt{u_1}, 2\pi u_2)`, space-time products of those) every point is used
and the structure of the set carries over through the map. For other geometries (a
:class:`~jaxsolve.pinn._geometry.SignedDistance` domain, balls in more than two dimensions) the
set is drawn ``oversample`` times larger on the bounding box and the first ``n`` points inside
are kept, in sequence order; too few inside raises. The accepted points are then a
low-discrepancy set of the domain only approximately, and a Latin hypercube's strata hold on the
bounding box, not on the domain.

Adaptive samplers are a module holding hyper-parameters with ``init(key, geometry) -> state`` and
``step(state, residual_fn, key) -> state``; the state (:class:`SamplerState`) holds a fixed-size
set of points, so a training loop calls ``step`` inside ``jit`` (every ``k`` steps under a
``lax.cond``) and resampling is part of the compiled program. ``residual_fn`` maps points of
shape ``(n, dim)`` to residuals of shape ``(n,)`` or ``(n, m)`` (several equations: their
Euclidean norm is used).
"""

import abc
import functools
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from .._core import RESULTS, check_int, check_positive, is_concrete, safe_divide
from ..pde._checks import check_traced_parameters
from ._geometry import AbstractGeometry, _first_accepted

_OVERSAMPLE = 16


def _hyper(name, value, *, positive=True, allow_zero=False):
    """A concrete hyper-parameter must be finite (and ``> 0``, or ``>= 0`` with ``allow_zero``)
    or raise naming it; a traced one passes. Returned as given. Infinity passes a sign test but
    not the samplers' arithmetic: ``|r|^inf / mean |r|^inf`` is NaN, which would pick the points
    at random without a word."""
    if positive:
        check_positive(name, value, allow_zero=allow_zero)
    if is_concrete(value):
        a = np.asarray(value)
        if a.dtype == object or not np.issubdtype(a.dtype, np.number) or a.ndim:
            raise TypeError(f"{name} must be a real scalar; got {value!r}.")
        if not np.isfinite(a):
            raise ValueError(f"{name} must be finite; got {value!r}.")
    return value


def _check_geometry(geometry):
    if not isinstance(geometry, AbstractGeometry):
        raise TypeError(
            f"geometry must be a jaxsolve.pinn geometry; got {type(geometry).__name__}."
        )
    return geometry


def _dtype(geometry):
    return geometry.bounds[0].dtype


def _from_cube(geometry, unit_fn, n, oversample):
    """Map ``unit_fn(m)`` (``m`` points in the unit cube) into ``geometry``: all ``n`` when its map is
    exact, else the first ``n`` of ``oversample * n`` that land inside."""
    if geometry.exact_map:
        return _map(geometry, unit_fn(n), n)
    oversample = check_int("oversample", oversample, minimum=1)
    return _map(geometry, unit_fn(oversample * n), n)


@eqx.filter_jit
def _map(geometry, u, n):
    x, inside = geometry.from_unit_cube(u)
    if geometry.exact_map:
        return x
    return _first_accepted(x, inside, n)


def uniform(key: PRNGKeyArray, geometry: AbstractGeometry, n: int) -> Float[Array, "n dim"]:
    """``n`` independent points uniform in ``geometry`` (its ``sample_interior``).

    Args:
        key: PRNG key.
        geometry: the domain.
        n: number of points (static).
    """
    _check_geometry(geometry)
    return geometry.sample_interior(key, check_int("n", n, minimum=1))


def _primes(k):
    primes, c = [], 2
    while len(primes) < k:
        if all(c % p for p in primes):
            primes.append(c)
        c += 1
    return primes


def _radical_inverse(index, bases, perms=None):
    """Radical inverses :math:`\\sum_k \\pi_k(d_k) b^{-k-1}` of ``index`` (shape ``(m,)``) in each
    base of ``bases`` (shape ``(dim,)``), over the base-``b`` digits :math:`d_k` (lowest first) of
    an int32, with optional digit permutations ``perms`` of shape ``(digits, dim, max_base)``."""
    dtype = jnp.result_type(float)
    digits = 31  # enough for any int32 index in base 2, more than enough in larger bases
    inv = 1.0 / bases.astype(dtype)

    def body(carry, perm):
        rest, value, scale = carry
        d = rest % bases
        if perm is not None:
            d = jnp.take_along_axis(perm, d.T, axis=-1).T
        return (rest // bases, value + d.astype(dtype) * scale, scale * inv), None

    init = (
        jnp.broadcast_to(index[:, None], (index.shape[0], bases.shape[0])),
        jnp.zeros((index.shape[0], bases.shape[0]), dtype),
        inv,
    )
    if perms is None:
        (_, value, _), _ = jax.lax.scan(lambda c, _: body(c, None), init, None, length=digits)
    else:
        (_, value, _), _ = jax.lax.scan(body, init, perms)
    return value


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _halton_unit(skip, key, m, bases, dtype):
    """``m`` points of the (scrambled when ``key`` is not None) Halton sequence from ``skip``."""
    index = skip + jnp.arange(m, dtype=jnp.int32)
    b = jnp.asarray(bases, jnp.int32)
    perms = None
    if key is not None:
        # One random permutation of {0, ..., b-1} per digit position and dimension: sort uniform
        # keys, with the slots >= b pushed to the end.
        width = max(bases)
        u = jax.random.uniform(key, (31, len(bases), width))
        u = jnp.where(jnp.arange(width) < b[:, None], u, 2.0)
        perms = jnp.argsort(u, axis=-1).astype(jnp.int32)
    return _radical_inverse(index, b, perms).astype(dtype)


def halton(
    geometry: AbstractGeometry,
    n: int,
    *,
    skip: int | Int[ArrayLike, ""] = 1,
    key: PRNGKeyArray | None = None,
    oversample: int = _OVERSAMPLE,
) -> Float[Array, "n dim"]:
    """The Halton sequence mapped into ``geometry``.

    Coordinate :math:`j` of point :math:`i` is the radical inverse of the index :math:`i + skip`
    in the :math:`j`-th prime base (2, 3, 5, ...): the base-:math:`b` digits of the index mirrored
    about the radix point ("On the efficiency of certain quasi-random sequences of points in
    evaluating multi-dimensional integrals", Halton). The default ``skip=1`` leaves out the
    origin (index 0), so in base 2 the points are 1/2, 1/4, 3/4, 1/8, ... With ``key`` the digits
    are scrambled by an independent random permutation of :math:`\\{0, ..., b-1\\}` for each
    dimension and digit position (a random digit permutation scramble), which breaks the
    correlation between high-prime dimensions. Computed in JAX; ``skip`` may be traced.

    Args:
        geometry: the domain.
        n: number of points (static).
        skip: index of the first point (default 1).
        key: PRNG key of the scramble; ``None`` for the plain sequence.
        oversample: candidates per point for geometries without an exact map (static).
    """
    _check_geometry(geometry)
    n = check_int("n", n, minimum=1)
    if is_concrete(skip):
        a = np.asarray(skip)
        if a.ndim != 0 or a.dtype == bool or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"skip must be an integer scalar; got {skip!r}.")
        if a < 0:
            raise ValueError(f"skip must be >= 0; got {int(a)}.")
    bases = tuple(_primes(geometry.dim))
    dtype = _dtype(geometry)

    def unit(m):
        return _halton_unit(jnp.asarray(skip, jnp.int32), key, m, bases, dtype)

    return _from_cube(geometry, unit, n, oversample)


def sobol(
    geometry: AbstractGeometry,
    n: int,
    *,
    key: PRNGKeyArray | None = None,
    oversample: int = _OVERSAMPLE,
) -> Float[Array, "n dim"]:
    """The first ``n`` points of a Sobol' sequence mapped into ``geometry``.

    Drawn on the host by :class:`scipy.stats.qmc.Sobol` ("On the distribution of points in a cube
    and the approximate evaluation of integrals", Sobol'), so the result is a concrete array and
    this function cannot be traced: call it outside ``jit`` (e.g. once, to fix a point set). The
    balance properties of the sequence hold for ``n`` a power of two. With ``key`` the sequence
    is scrambled (scipy's linear matrix scramble with digital shift, seeded from the key);
    without, the first point is the origin.

    Args:
        geometry: the domain.
        n: number of points.
        key: PRNG key of the scramble (concrete); ``None`` for the plain sequence.
        oversample: candidates per point for geometries without an exact map.
    """
    from scipy.stats import qmc

    _check_geometry(geometry)
    n = check_int("n", n, minimum=1)
    if key is not None:
        if not is_concrete(key):
            raise TypeError("sobol draws on the host: key must be concrete, not traced.")
        seed = np.asarray(jax.random.key_data(key)).astype(np.uint64).ravel()
        rng = np.random.default_rng(seed.tolist())
    else:
        rng = None
    try:
        engine = qmc.Sobol(geometry.dim, scramble=key is not None, rng=rng)
    except TypeError:  # scipy < 1.15 names the generator `seed`
        engine = qmc.Sobol(geometry.dim, scramble=key is not None, seed=rng)
    dtype = _dtype(geometry)

    def unit(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # balance needs a power of two
            return jnp.asarray(engine.random(m), dtype)

    return _from_cube(geometry, unit, n, oversample)


def latin_hypercube(
    key: PRNGKeyArray, geometry: AbstractGeometry, n: int, *, oversample: int = _OVERSAMPLE
) -> Float[Array, "n dim"]:
    """A Latin hypercube sample mapped into ``geometry``.

    Each axis of the unit cube is cut into ``n`` equal strata and each stratum holds exactly one
    point: :math:`u_{ij} = (\\pi_j(i) + U_{ij}) / n` with an independent random permutation
    :math:`\\pi_j` per axis and :math:`U_{ij}` uniform ("A comparison of three methods for
    selecting values of input variables in the analysis of output from a computer code", McKay,
    Beckman & Conover). Computed in JAX. For a geometry without an exact map the strata hold on
    the bounding box before rejection.

    Args:
        key: PRNG key.
        geometry: the domain.
        n: number of points (static).
        oversample: candidates per point for geometries without an exact map (static).
    """
    _check_geometry(geometry)
    n = check_int("n", n, minimum=1)
    dim, dtype = geometry.dim, _dtype(geometry)
    return _from_cube(geometry, lambda m: _lhs_unit(key, m, dim, dtype), n, oversample)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _lhs_unit(key, m, dim, dtype):
    k_perm, k_jit = jax.random.split(key)
    perms = jax.vmap(lambda k: jax.random.permutation(k, m))(jax.random.split(k_perm, dim))
    jitter = jax.random.uniform(k_jit, (m, dim), dtype=dtype)
    return (perms.T.astype(dtype) + jitter) / m


# ---------------------------------------------------------------------------------------------
# Residual-adaptive samplers


class SamplerState(eqx.Module):
    """State of an adaptive sampler.

    Attributes:
        points: the current collocation points, ``(n, dim)``.
        geometry: the domain new points are drawn from.
        shift: the causal gate's shift :math:`\\gamma` (:class:`R3` with ``causal=True``;
            unused otherwise).
        num_retained: how many points the last step kept.
        result: ``RESULTS.nonfinite`` when a step met a NaN or infinite residual (the step then
            keeps the points it had: a resampling driven by NaN would be noise), else
            ``RESULTS.successful``. It stays set once set; a training loop reads it and stops.
        aux: what a sampler keeps besides the points (the parameters of a generative sampler,
            say); ``None`` for the samplers here.
    """

    points: Float[Array, "n dim"]
    geometry: AbstractGeometry
    shift: Float[Array, ""]
    num_retained: Int[Array, ""]
    result: RESULTS = eqx.field(default_factory=lambda: RESULTS.successful)
    aux: PyTree = None


def _residual_magnitude(residual_fn, points):
    """``|r(x_p)|`` per point (the Euclidean norm over a residual's components)."""
    r = jnp.asarray(residual_fn(points))
    if r.ndim == 0 or r.shape[0] != points.shape[0]:
        raise ValueError(
            f"residual_fn must return one residual per point, shape ({points.shape[0]},) or "
            f"({points.shape[0]}, m); got {r.shape}."
        )
    r = r.reshape(r.shape[0], -1)
    return jnp.sqrt(jnp.sum(jnp.abs(r) ** 2, axis=-1)).astype(points.dtype)


class AbstractAdaptiveSampler(eqx.Module):
    """A residual-adaptive collocation sampler: ``init`` then ``step`` every few iterations."""

    n: eqx.AbstractVar[int]

    def init(self, key: PRNGKeyArray, geometry: AbstractGeometry) -> SamplerState:
        """``n`` points uniform in ``geometry``."""
        _check_geometry(geometry)
        points = geometry.sample_interior(key, self.n)
        return SamplerState(points, geometry, jnp.zeros((), points.dtype), jnp.zeros((), jnp.int32))

    @abc.abstractmethod
    def step(self, state: SamplerState, residual_fn: Callable, key: PRNGKeyArray) -> SamplerState:
        """The next point set, from the residuals of the current network."""

    def point_weights(self, state: SamplerState) -> Float[Array, " n"]:
        """The weights of the current points' squared residuals in the training loss (ones;
        a causal sampler gates late times)."""
        return jnp.ones(state.points.shape[:1], state.points.dtype)


class UniformResampling(AbstractAdaptiveSampler):
    """``n`` fresh independent uniform points at every step, whatever the residuals (the
    non-adaptive baseline of "A comprehensive study of non-adaptive and residual-based adaptive
    sampling for physics-informed neural networks", Wu et al.).

    Args:
        n: number of collocation points (static).
    """

    n: int = eqx.field(static=True)

    def __init__(self, n: int):
        self.n = check_int("n", n, minimum=1)

    def step(self, state: SamplerState, residual_fn: Callable, key: PRNGKeyArray) -> SamplerState:
        del residual_fn
        points = state.geometry.sample_interior(key, self.n)
        return SamplerState(
            points, state.geometry, state.shift, jnp.zeros((), jnp.int32), state.result, state.aux
        )


def checked_step(
    state: SamplerState, new: SamplerState, *magnitudes: Float[Array, " _n"]
) -> SamplerState:
    """``new``, unless a residual magnitude that chose it is not finite: then ``state`` with
    ``result = RESULTS.nonfinite`` (the points and every other field of the old state)."""
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(m)) for m in magnitudes]))
    keep = jax.tree_util.tree_map(
        lambda a, b: jnp.where(finite, a, b) if eqx.is_array(a) else a, new, state
    )
    result = RESULTS.where(finite, state.result, RESULTS.nonfinite)
    return eqx.tree_at(lambda s: s.result, keep, result)


class RARD(AbstractAdaptiveSampler):
    """Residual-based adaptive distribution (RAD / RAR-D): points drawn with density

    .. math:: p(x) \\propto \\frac{|r(x)|^k}{\\mathbb E |r|^k} + c

    ("A comprehensive study of non-adaptive and residual-based adaptive sampling for
    physics-informed neural networks", Wu, Zhu, Tan, Kartha & Lu). Each step draws
    ``n_candidates`` uniform points, evaluates the residual there (the expectation is their
    mean) and picks ``n_new`` of them without replacement with probabilities :math:`\\propto p`
    (Gumbel top-k). With ``n_new = n`` (default) the whole set is replaced (RAD); with
    ``n_new < n`` the ``n_new`` current points of smallest residual give way to the new ones
    (a fixed-size RAR-D). ``k`` and ``c`` may be traced; ``k = 1, c = 1`` is the paper's usual
    choice, large ``c`` tends to uniform sampling.

    Args:
        n: number of collocation points (static).
        n_candidates: size of the candidate pool per step (static; default ``10 n``). The pool
            should be much larger than ``n_new``, or drawing without replacement flattens the
            density.
        n_new: points replaced per step (static, ``1 <= n_new <= n``; default ``n``).
        k: exponent of the residual.
        c: uniform floor of the density (>= 0).
    """

    n: int = eqx.field(static=True)
    n_candidates: int = eqx.field(static=True)
    n_new: int = eqx.field(static=True)
    k: float | Float[Array, ""]
    c: float | Float[Array, ""]

    def __init__(
        self,
        n: int,
        *,
        n_candidates: int | None = None,
        n_new: int | None = None,
        k: float | Float[ArrayLike, ""] = 1.0,
        c: float | Float[ArrayLike, ""] = 1.0,
    ):
        self.n = check_int("n", n, minimum=1)
        self.n_new = check_int("n_new", self.n if n_new is None else n_new, maximum=self.n)
        pool = 10 * self.n if n_candidates is None else n_candidates
        self.n_candidates = check_int("n_candidates", pool, minimum=self.n_new)
        self.k = _hyper("k", k, allow_zero=True)
        self.c = _hyper("c", c, allow_zero=True)

    def step(self, state: SamplerState, residual_fn: Callable, key: PRNGKeyArray) -> SamplerState:
        k_pool, k_pick = jax.random.split(key)
        geometry = state.geometry
        pool = geometry.sample_interior(k_pool, self.n_candidates)
        r = _residual_magnitude(residual_fn, pool)
        # Traced k and c are checked when the step runs, as concrete ones were when built.
        r = check_traced_parameters(
            r, "RARD", (("k", self.k, "non-negative"), ("c", self.c, "non-negative"))
        )
        rk = r ** jnp.asarray(self.k, r.dtype)
        weight = safe_divide(rk, jnp.mean(rk), 0.0) + self.c
        # Gumbel top-k: sampling without replacement with probabilities proportional to weight.
        gumbel = jax.random.gumbel(k_pick, weight.shape, dtype=weight.dtype)
        logw = jnp.where(weight > 0, jnp.log(jnp.where(weight > 0, weight, 1.0)), -jnp.inf)
        _, chosen = jax.lax.top_k(logw + gumbel, self.n_new)
        new = pool[chosen]
        if self.n_new == self.n:
            points = new
        else:
            old_r = _residual_magnitude(residual_fn, state.points)
            keep = jnp.argsort(-old_r)[: self.n - self.n_new]
            points = jnp.concatenate([state.points[keep], new], axis=0)
        retained = jnp.asarray(self.n - self.n_new, jnp.int32)
        new_state = SamplerState(points, geometry, state.shift, retained, state.result, state.aux)
        return checked_step(state, new_state, r, *([] if self.n_new == self.n else [old_r]))


class R3(AbstractAdaptiveSampler):
    """Retain-Resample-Release sampling, with its causal extension.

    ("Mitigating Propagation Failures in Physics-informed Neural Networks using
    Retain-Resample-Release (R3) Sampling", Daw, Bu, Wang, Perdikaris & Karpatne.) Each step
    evaluates the residual magnitude :math:`F(x)` on the current points, *retains* those with
    :math:`F(x) \\ge \\tau = \\operatorname{mean} F`, *releases* the others and *resamples* each
    released slot uniformly in the domain; the set keeps its size (a mask, no data-dependent
    shapes), and high-residual points accumulate over the steps.

    Causal extension (``causal=True``, points ``(t, *x)`` as in
    :class:`~jaxsolve.pinn._geometry.SpaceTime`): residuals are multiplied by the gate

    .. math:: g(t) = \\tfrac12\\bigl(1 - \\tanh(\\alpha(\\hat t - \\gamma))\\bigr),\\qquad
       \\hat t = \\frac{t - t_0}{t_1 - t_0}

    (:math:`t_0, t_1` the bounds of coordinate 0), so points at late times are released until
    the early times are resolved. The shift is updated by the rule

    .. math:: \\gamma \\leftarrow \\min\\bigl(\\gamma + \\eta\\,
       \\min(e^{-\\epsilon L_g}, c),\\ \\gamma_{max}\\bigr),\\qquad
       L_g = \\operatorname{mean}_x\\, \\bigl(g(t) F(x)\\bigr)^2,

    so the gate opens towards later times as the gated residual falls, at most :math:`\\eta c` per
    step. The training loss uses the gated residual :math:`g(t) r(x)`, i.e. the weight
    :math:`g^2` on its square (:meth:`point_weights`). The defaults are the paper's convection
    settings (its code: ``alpha = 5``, ``beta = -0.5``, ``beta_lr = 1e-3``, ``tol = 20``,
    ``grad_clip = 0.1``, over up to 300k Adam iterations): the gate needs at least
    :math:`(\\gamma_{max} - \\gamma_0) / (\\eta c)` steps to open. A shorter run may scale
    ``eta`` up, but a gate that opens before the early times are learned loses its point (on
    harder problems the paper's slow gate is the one that works; ``benchmarks/README.md``).
    The gate brakes only while the gated residual is large, :math:`L_g > \\ln(1/c)/\\epsilon`,
    and a network near the trivial solution :math:`u = 0` has a small residual: weight the
    initial and boundary terms strongly (the paper's commands use 100, with Adam's step decayed
    by 0.9 every 5000 steps), or the gate opens at its full rate whatever has been learned.
    ``alpha``, ``eta``, ``epsilon``, ``clip`` and the shifts may be traced.

    Every hyper-parameter must be finite: concrete values are checked here (``ValueError``
    naming it), traced ones when :meth:`step` runs (:func:`equinox.error_if`).

    Args:
        n: number of collocation points (static).
        causal: whether to use the causal gate (static).
        alpha: steepness :math:`\\alpha` of the gate.
        eta: step :math:`\\eta` of the shift update.
        epsilon: tolerance :math:`\\epsilon` of the shift update.
        clip: largest factor :math:`c` of a shift increment (``> 0``).
        shift_init: initial shift :math:`\\gamma_0`.
        shift_max: largest shift :math:`\\gamma_{max}` (at 1.5 and ``alpha = 5`` the gate is
            above 0.99 on the whole time interval; ``>= shift_init``).
    """

    n: int = eqx.field(static=True)
    causal: bool = eqx.field(static=True)
    alpha: float | Float[Array, ""]
    eta: float | Float[Array, ""]
    epsilon: float | Float[Array, ""]
    clip: float | Float[Array, ""]
    shift_init: float | Float[Array, ""]
    shift_max: float | Float[Array, ""]

    def __init__(
        self,
        n: int,
        *,
        causal: bool = False,
        alpha: float | Float[ArrayLike, ""] = 5.0,
        eta: float | Float[ArrayLike, ""] = 1e-3,
        epsilon: float | Float[ArrayLike, ""] = 20.0,
        clip: float | Float[ArrayLike, ""] = 0.1,
        shift_init: float | Float[ArrayLike, ""] = -0.5,
        shift_max: float | Float[ArrayLike, ""] = 1.5,
    ):
        self.n = check_int("n", n, minimum=1)
        if not isinstance(causal, bool):
            raise TypeError(f"causal must be a bool; got {causal!r}.")
        self.causal = causal
        self.alpha = _hyper("alpha", alpha)
        self.eta = _hyper("eta", eta, allow_zero=True)
        self.epsilon = _hyper("epsilon", epsilon, allow_zero=True)
        self.clip = _hyper("clip", clip)
        # A NaN shift makes every gate weight NaN; a cap below the start would move the shift
        # down to the cap at the first step, closing the gate instead of opening it.
        self.shift_init = _hyper("shift_init", shift_init, positive=False)
        self.shift_max = _hyper("shift_max", shift_max, positive=False)
        if is_concrete((shift_init, shift_max)) and float(shift_max) < float(shift_init):
            raise ValueError(
                f"shift_max must be >= shift_init; got shift_init={shift_init!r}, "
                f"shift_max={shift_max!r}."
            )

    def _rules(self):
        return (
            ("alpha", self.alpha, "positive"),
            ("eta", self.eta, "non-negative"),
            ("epsilon", self.epsilon, "non-negative"),
            ("clip", self.clip, "positive"),
            ("shift_init", self.shift_init, "finite"),
            ("shift_max", self.shift_max, "finite"),
        )

    def init(self, key: PRNGKeyArray, geometry: AbstractGeometry) -> SamplerState:
        state = super().init(key, geometry)
        shift = jnp.asarray(self.shift_init, state.points.dtype)
        return SamplerState(
            state.points, state.geometry, shift, state.num_retained, state.result, state.aux
        )

    def gate(
        self, state: SamplerState, points: Float[ArrayLike, "*batch dim"]
    ) -> Float[Array, "*batch"]:
        """The causal gate :math:`g(t)` at ``points`` (time is coordinate 0); ones when not causal."""
        points = jnp.asarray(points)
        if not self.causal:
            return jnp.ones(points.shape[:-1], points.dtype)
        lower, upper = state.geometry.bounds
        t_hat = (points[..., 0] - lower[0]) / (upper[0] - lower[0])
        return 0.5 * (1 - jnp.tanh(self.alpha * (t_hat - state.shift)))

    def point_weights(self, state: SamplerState) -> Float[Array, " n"]:
        """The squared causal gate at the current points (the loss is that of the gated
        residual :math:`g r`; ones when not causal)."""
        return self.gate(state, state.points) ** 2

    def step(self, state: SamplerState, residual_fn: Callable, key: PRNGKeyArray) -> SamplerState:
        r = _residual_magnitude(residual_fn, state.points)
        # Traced hyper-parameters are checked when the step runs, as concrete ones were when
        # built (a negative alpha would open the gate at late times first, without a word).
        r = check_traced_parameters(r, "R3", self._rules())
        shift = state.shift
        if self.causal:
            r = r * self.gate(state, state.points)
            increment = jnp.minimum(jnp.exp(-self.epsilon * jnp.mean(r**2)), self.clip)
            shift = jnp.minimum(shift + self.eta * increment, self.shift_max)
            shift = shift.astype(state.shift.dtype)
        retain = r >= jnp.mean(r)
        fresh = state.geometry.sample_interior(key, self.n)
        points = jnp.where(retain[:, None], state.points, fresh)
        retained = jnp.sum(retain).astype(jnp.int32)
        new_state = SamplerState(points, state.geometry, shift, retained, state.result, state.aux)
        return checked_step(state, new_state, r)
