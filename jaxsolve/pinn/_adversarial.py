r"""Adversarial adaptive sampling with a generative sampler: a flow that learns where the residual
is large.

"Adversarial Adaptive Sampling: Unify PINN and Optimal Transport for the Approximation of PDEs"
(Tang, Zhai, Wan & Yang) trains the solution :math:`u` and the density :math:`p` of the
collocation points (a normalising flow) as one min-max problem: :math:`u` minimises the mean of
:math:`|r_u|^2` under :math:`p`, :math:`p` maximises it, with a regularisation of :math:`p` that
implicitly embeds the Wasserstein distance between the residual-induced distribution and the
uniform one. For a fixed :math:`u` the sampler's answer moves the points to where :math:`|r|` is
large; the residual-induced density

.. math:: p_r(x) = \frac{|r(x)|^k / \mathbb E_U |r|^k + c}{1 + c}\, \frac{1}{|\Omega|},
   \qquad k = 2,\ c = 0 \text{ by default},

is the target here (``c > 0`` mixes in the uniform density, a floor in the spirit of the pull
towards uniform of the paper's regularisation). The paper's objective needs the generator's
density in closed form (KRnet); a flow-matching model has none cheaply, so
:class:`AdversarialSampler` fits the generator to :math:`p_r` directly:

* **Generator**: a rectified flow of :mod:`jaxsolve.diffusion` (``NoiseMLP`` velocity field
  :math:`v_\theta(y, s)`) in box coordinates :math:`y = (x - m) / h \in [-1, 1]^{dim}` of the
  geometry's bounding box (centre :math:`m`, half-widths :math:`h`); data at flow time 0, a
  standard normal at flow time 1.
* **Fit** (each ``step``, warm-started from the last): ``n_candidates`` uniform points of the
  domain, their residuals, and ``train_steps`` Adam steps (a ``lax.scan``) of conditional flow
  matching (:func:`jaxsolve.diffusion.flow_matching_loss`) on minibatches drawn from the pool with
  probabilities :math:`\propto p_r` (self-normalised importance resampling): the minimiser of the
  loss is the velocity whose flow carries the standard normal to the resampled pool's law, which
  tends to :math:`p_r` as the pool grows.
* **Draw**: ``n`` standard normal points integrated to flow time 0 by
  :func:`jaxsolve.diffusion.sample` (flow-Heun on a time-uniform grid of ``sample_steps``),
  mapped back to the domain. A point that lands outside the geometry (or is not finite) is
  replaced by a point resampled from the pool with the same weights, so the set has a fixed size
  and lies in the domain; the count of flow points kept is ``aux.accepted``.

Everything is traced (no data-dependent shapes), so ``step`` runs inside a compiled training
loop, under ``lax.cond``; a non-finite residual (or generator loss) gives
``RESULTS.nonfinite`` and the old state (points and generator).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree

from .._core import check_int, safe_divide
from ..pde._checks import check_traced_parameters
from ._geometry import AbstractGeometry
from ._sampling import (
    AbstractAdaptiveSampler,
    SamplerState,
    _check_geometry,
    _hyper,
    _residual_magnitude,
    checked_step,
)

_T_MIN, _T_MAX = 1e-4, 1.0 - 1e-3


def _diffusion():
    """:mod:`jaxsolve.diffusion`, imported on first use (``import jaxsolve.pinn`` stays light)."""
    from .. import diffusion

    return diffusion


class FlowSamplerAux(eqx.Module):
    """What :class:`AdversarialSampler` keeps in ``SamplerState.aux``.

    Attributes:
        params: the arrays of the generator's velocity network.
        opt_state: its Adam state.
        accepted: how many of the ``n`` points of the last step came from the flow (the others
            were resampled from the pool because the flow put them outside the domain).
        loss: the flow-matching loss of the last training step.
    """

    params: PyTree
    opt_state: PyTree
    accepted: Int[Array, ""]
    loss: Float[Array, ""]


def _box(geometry, dtype):
    lower, upper = geometry.bounds
    return (0.5 * (lower + upper)).astype(dtype), (0.5 * (upper - lower)).astype(dtype)


class AdversarialSampler(AbstractAdaptiveSampler):
    r"""Adversarial adaptive sampling with a flow-matching generator (see the module docstring).

    Args:
        n: number of collocation points (static).
        n_candidates: uniform candidate points per step whose residuals weigh the fit (static;
            default ``8 n``).
        batch: flow-matching minibatch (static; default ``min(n_candidates, 1024)``).
        train_steps: Adam steps of the generator per ``step`` (static).
        sample_steps: flow-Heun steps of the draw (static).
        width, depth, embed_dim: the ``NoiseMLP`` velocity field (static).
        learning_rate: Adam's step size (may be traced).
        k: exponent of the residual in the target density (default 2: :math:`p \propto |r|^2`).
        c: weight of the uniform density mixed into the target (>= 0; default 0).
    """

    n: int = eqx.field(static=True)
    n_candidates: int = eqx.field(static=True)
    batch: int = eqx.field(static=True)
    train_steps: int = eqx.field(static=True)
    sample_steps: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    depth: int = eqx.field(static=True)
    embed_dim: int = eqx.field(static=True)
    learning_rate: float | Float[Array, ""]
    k: float | Float[Array, ""]
    c: float | Float[Array, ""]

    def __init__(
        self,
        n: int,
        *,
        n_candidates: int | None = None,
        batch: int | None = None,
        train_steps: int = 100,
        sample_steps: int = 16,
        width: int = 64,
        depth: int = 3,
        embed_dim: int = 16,
        learning_rate: float | Float[ArrayLike, ""] = 1e-3,
        k: float | Float[ArrayLike, ""] = 2.0,
        c: float | Float[ArrayLike, ""] = 0.0,
    ):
        self.n = check_int("n", n, minimum=1)
        self.n_candidates = check_int(
            "n_candidates", 8 * self.n if n_candidates is None else n_candidates, minimum=2
        )
        self.batch = check_int(
            "batch", min(self.n_candidates, 1024) if batch is None else batch, minimum=1
        )
        self.train_steps = check_int("train_steps", train_steps, minimum=0)
        self.sample_steps = check_int("sample_steps", sample_steps, minimum=1)
        self.width = check_int("width", width)
        self.depth = check_int("depth", depth)
        self.embed_dim = check_int("embed_dim", embed_dim, minimum=2)
        if self.embed_dim % 2:
            raise ValueError(f"embed_dim must be even; got {self.embed_dim}.")
        self.learning_rate = _hyper("learning_rate", learning_rate)
        self.k = _hyper("k", k, allow_zero=True)
        self.c = _hyper("c", c, allow_zero=True)

    # -- the generator ---------------------------------------------------------------------

    def _network(self, dim, key):
        return _diffusion().NoiseMLP(dim, self.width, self.depth, self.embed_dim, key=key)

    def _static(self, dim):
        """The non-array part of the velocity network (its structure), from an abstract build."""
        shape = eqx.filter_eval_shape(self._network, dim, jax.random.key(0))
        return eqx.partition(shape, lambda a: isinstance(a, jax.ShapeDtypeStruct))[1]

    def _optimizer(self):
        return optax.adam(self.learning_rate)

    def velocity(
        self, state: SamplerState
    ) -> Callable[[Float[Array, "batch dim"], Float[ArrayLike, "*batch"]], Array]:
        """The generator's velocity field ``v(y, s)`` on a batch of box coordinates ``y`` and
        flow times ``s`` (a scalar or one per point)."""
        if not isinstance(state.aux, FlowSamplerAux):
            raise TypeError("state was not made by AdversarialSampler.init.")
        dim = state.geometry.dim
        net = eqx.combine(state.aux.params, self._static(dim))
        return _batched(net)

    def generate(
        self, state: SamplerState, key: PRNGKeyArray, num: int | None = None
    ) -> Float[Array, "m dim"]:
        """``num`` (default ``n``) points drawn by integrating the generator's flow, in domain
        coordinates (before the geometry check; they may fall outside)."""
        num = self.n if num is None else check_int("num", num)
        dtype = state.points.dtype
        centre, half = _box(state.geometry, dtype)
        noise = jax.random.normal(key, (num, state.geometry.dim), dtype)
        y = _integrate(self.velocity(state), noise, self.sample_steps)
        return centre + half * y.astype(dtype)

    # -- the sampler protocol --------------------------------------------------------------

    def init(self, key: PRNGKeyArray, geometry: AbstractGeometry) -> SamplerState:
        """``n`` points uniform in ``geometry`` and a fresh generator."""
        _check_geometry(geometry)
        k_points, k_net = jax.random.split(key)
        state = super().init(k_points, geometry)
        dtype = state.points.dtype
        net = self._network(geometry.dim, k_net)
        params = jax.tree_util.tree_map(
            lambda a: a.astype(dtype), eqx.filter(net, eqx.is_inexact_array)
        )
        aux = FlowSamplerAux(
            params,
            self._optimizer().init(params),
            jnp.zeros((), jnp.int32),
            jnp.zeros((), dtype),
        )
        return SamplerState(
            state.points, state.geometry, state.shift, state.num_retained, state.result, aux
        )

    def weights(self, magnitudes: Float[ArrayLike, " m"]) -> Float[Array, " m"]:
        r"""The unnormalised target density at points of residual magnitude :math:`|r|`:
        :math:`|r|^k / \operatorname{mean} |r|^k + c`."""
        r = jnp.asarray(magnitudes)
        rk = r ** jnp.asarray(self.k, r.dtype)
        return safe_divide(rk, jnp.mean(rk), 0.0) + jnp.asarray(self.c, r.dtype)

    def step(self, state: SamplerState, residual_fn: Callable, key: PRNGKeyArray) -> SamplerState:
        if not isinstance(state.aux, FlowSamplerAux):
            raise TypeError("state was not made by AdversarialSampler.init.")
        geometry = state.geometry
        dtype = state.points.dtype
        k_pool, k_fit, k_draw, k_back = jax.random.split(key, 4)
        pool = geometry.sample_interior(k_pool, self.n_candidates).astype(dtype)
        r = _residual_magnitude(residual_fn, pool)
        # Traced hyper-parameters are checked when the step runs, as concrete ones were when built.
        rules = (
            ("learning_rate", self.learning_rate, "positive"),
            ("k", self.k, "non-negative"),
            ("c", self.c, "non-negative"),
        )
        r = check_traced_parameters(r, "AdversarialSampler", rules)
        w = self.weights(r)
        # all-zero weights (a zero residual and c = 0): fall back to the uniform pool
        w = jnp.where(jnp.any(w > 0), w, jnp.ones_like(w))
        cdf = jnp.cumsum(w)
        cdf = cdf / cdf[-1]

        def pick(k, m):
            """``m`` pool indices drawn with probabilities ``w / sum(w)`` (inverse CDF)."""
            u = jax.random.uniform(k, (m,), cdf.dtype)
            return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), self.n_candidates - 1)

        centre, half = _box(geometry, dtype)
        y_pool = (pool - centre) / half

        static = self._static(geometry.dim)
        opt = self._optimizer()

        def loss_fn(params, x0, k):
            return _diffusion().flow_matching_loss(_batched(eqx.combine(params, static)), x0, k)

        def fit(carry, k):
            params, opt_state, _ = carry
            k_pick, k_loss = jax.random.split(k)
            idx = pick(k_pick, self.batch)
            loss, grads = jax.value_and_grad(loss_fn)(params, y_pool[idx], k_loss)
            updates, opt_state = opt.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state, loss.astype(dtype)), None

        carry = (state.aux.params, state.aux.opt_state, state.aux.loss)
        if self.train_steps:
            carry, _ = jax.lax.scan(fit, carry, jax.random.split(k_fit, self.train_steps))
        params, opt_state, loss = carry
        aux = FlowSamplerAux(params, opt_state, state.aux.accepted, loss)
        fitted = SamplerState(
            state.points, geometry, state.shift, state.num_retained, state.result, aux
        )

        drawn = self.generate(fitted, k_draw)
        ok = geometry.contains(drawn) & jnp.all(jnp.isfinite(drawn), axis=-1)
        backup = pool[pick(k_back, self.n)]
        points = jnp.where(ok[:, None], drawn, backup).astype(dtype)
        accepted = jnp.sum(ok).astype(jnp.int32)
        aux = FlowSamplerAux(params, opt_state, accepted, loss)
        new = SamplerState(
            points, geometry, state.shift, jnp.zeros((), jnp.int32), state.result, aux
        )
        return checked_step(state, new, r, loss[None])


def _batched(net):
    def v(y, s):
        s = jnp.broadcast_to(jnp.asarray(s, y.dtype), y.shape[:1])
        return jax.vmap(net)(y, s).astype(y.dtype)

    return v


def _integrate(velocity, noise, steps):
    """Integrate the flow from ``noise`` at time ``t_max`` to data at time 0 (as
    :func:`jaxsolve.diffusion.generate`, but never raising: a non-finite state stays NaN)."""
    d = _diffusion()
    schedule = d.FlowSchedule(t_min=_T_MIN, t_max=_T_MAX)
    grid = d.time_uniform_sigmas(schedule, steps, t_min=_T_MIN, t_max=_T_MAX)
    grid = grid.astype(noise.dtype)
    return d.sample(
        d.from_flow(velocity, schedule),
        grid[0] * noise,
        grid,
        d.FlowHeun(schedule=schedule),
        throw=False,
    )
