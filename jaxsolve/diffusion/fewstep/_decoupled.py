r"""Decoupled MeanFlow: a flow model turned into a flow map without changing its architecture.

"Decoupled MeanFlow: Turning Flow Models into Flow Maps for Accelerated Sampling" (Lee, Yu &
Shin). Conventions as :mod:`jaxsolve.diffusion.fewstep._meanflow`: data at :math:`t = 0`, noise at
:math:`t = 1`, :math:`z_t = (1-t)\,x + t\,e`, and the average velocity
:math:`u(z_t, r, t) = (z_t - z_r)/(t - r)` for :math:`r \le t`.

A flow network is a stack of blocks that all read one time embedding :math:`e(t)`. Cut the stack
after its first :math:`k` blocks: the **encoder** :math:`f` (the first blocks) keeps the current
time :math:`t`, the **decoder** :math:`g` (the remaining blocks and the output head) reads the
embedding of the target time :math:`r` instead, through the same embedding network:

.. math::
    u_\theta(z, r, t) = g_\theta\bigl(f_\theta(z, e(t)),\ e(r)\bigr).

No weight is added or removed, so

* at :math:`r = t` the decoupled model *is* the flow model, :math:`u_\theta(z, t, t) = v_\theta(z, t)`
  (the flow map's boundary condition holds by construction, not by training);
* a pretrained flow model's weights are a flow map's weights as they stand. Before any fine-tuning,
  :math:`u_\theta(z, r, t)` at :math:`r \ne t` is the flow network run with its last blocks told
  the time is :math:`r`: not the velocity :math:`v_\theta(z, t)` and not the exact average
  velocity, but the starting point the paper fine-tunes from.

Training (the authors' recipe): first train a flow model (plain flow matching), convert it
(:func:`decoupled_noise_mlp`, or :class:`DecoupledFlowMap` for any network cut the same way), then
fine-tune every weight with :func:`decoupled_meanflow_loss`: half a flow-matching term at
:math:`r = t` (one logit-normal time) and half a MeanFlow term at :math:`r < t` (the larger and the
smaller of two logit-normal times of different locations), the MeanFlow target from
:func:`~jaxsolve.diffusion.fewstep.meanflow_target` (``jax.jvp``), each residual scored by the
robust loss :math:`\log(\overline{\Delta^2} + c)`. Sampling is MeanFlow's: jumps
:math:`z_r = z_t - (t - r)\,u_\theta(z_t, r, t)` with
:func:`~jaxsolve.diffusion.fewstep.meanflow_sample`, or on the
:func:`~jaxsolve.diffusion.sample` driver with
:class:`~jaxsolve.diffusion.fewstep.MeanFlowSolver` (the model is the solver's
``average_velocity`` and :func:`~jaxsolve.diffusion.fewstep.meanflow_denoiser` of it the driver's
denoiser).

Not here: the paper's learned log-variance head on the loss, its classifier-free "model guidance"
target and REPA alignment (class-conditional image models).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from ..._core import as_float, check_int, check_positive, expand_to
from .._flow_matching import logit_normal_times
from .._networks import FourierEmbedding, NoiseMLP
from ._meanflow import meanflow_target


class DecoupledFlowMap(eqx.Module):
    r"""A flow network cut into encoder and decoder: :math:`u(z, r, t) = g(f(z, e(t)), e(r))`.

    Called on the batch as MeanFlow models are (``u_fn(z, r, t)``, ``z`` of shape
    ``(batch, ...)``, ``r`` and ``t`` of shape ``(batch,)``), so it is a model for
    :func:`~jaxsolve.diffusion.fewstep.meanflow_loss`,
    :func:`~jaxsolve.diffusion.fewstep.meanflow_sample` and
    :class:`~jaxsolve.diffusion.fewstep.MeanFlowSolver` as it is for
    :func:`decoupled_meanflow_loss`. The three parts act on one sample and are shared: one
    embedding network serves both times, as the time embedder of a diffusion transformer does.

    Args:
        embedding: ``embedding(c) -> e`` for a scalar time ``c``.
        encoder: ``encoder(x, e) -> h``, ``x`` one sample, ``e = embedding(t)``.
        decoder: ``decoder(h, e) -> u``, ``e = embedding(r)``; ``u`` shaped like ``x``.
    """

    embedding: Callable
    encoder: Callable
    decoder: Callable

    def _single(self, x, r, t):
        return self.decoder(self.encoder(x, self.embedding(t)), self.embedding(r))

    def __call__(
        self,
        z: Float[ArrayLike, "batch ..."],
        r: Float[ArrayLike, "..."],
        t: Float[ArrayLike, "..."],
    ) -> Float[Array, "batch ..."]:
        """The average velocity :math:`u(z, r, t)`; a scalar ``r`` or ``t`` serves the batch."""
        batch = jnp.shape(z)[:1]
        r = jnp.broadcast_to(jnp.asarray(r, jnp.result_type(z)), batch)
        t = jnp.broadcast_to(jnp.asarray(t, jnp.result_type(z)), batch)
        return jax.vmap(self._single)(z, r, t)

    def velocity(
        self, z: Float[Array, "batch ..."], t: Float[ArrayLike, "..."]
    ) -> Float[Array, "batch ..."]:
        """The flow model :math:`v(z, t) = u(z, t, t)` (batched as
        :func:`~jaxsolve.diffusion.flow_matching_loss` calls it; a scalar ``t`` serves the
        batch)."""
        return self(z, t, t)


class _MLPEmbedding(eqx.Module):
    """:class:`~jaxsolve.diffusion.NoiseMLP`'s time embedding ``silu(proj(fourier(c)))``."""

    embed: FourierEmbedding
    embed_proj: eqx.nn.Linear

    def __call__(self, c):
        return jax.nn.silu(self.embed_proj(self.embed(c)))


class _MLPBlocks(eqx.Module):
    """A run of :class:`~jaxsolve.diffusion.NoiseMLP` blocks ``h <- silu(W h + C e)``, then the
    output layer when this run ends the network."""

    layers: list
    cond_layers: list
    out: eqx.nn.Linear | None

    def __call__(self, h, e):
        for layer, cond in zip(self.layers, self.cond_layers, strict=True):
            h = jax.nn.silu(layer(h) + cond(e))
        return h if self.out is None else self.out(h)


def decoupled_noise_mlp(net: NoiseMLP, encoder_depth: int | None = None) -> DecoupledFlowMap:
    r"""A :class:`~jaxsolve.diffusion.NoiseMLP` flow model (``net(x, t)``, one sample, flow
    time ``t``) as a :class:`DecoupledFlowMap`, its weights unchanged.

    The first ``encoder_depth`` hidden blocks are the encoder (time :math:`t`); the remaining
    blocks and the output layer are the decoder (time :math:`r`). The output layer takes no time,
    so the decoder needs at least one block, and the encoder at least one so that :math:`u`
    depends on :math:`t`. The default is the paper's proportion (20 of 28 transformer blocks in the
    encoder), rounded and kept within those bounds.

    Args:
        net: the flow model.
        encoder_depth: the number of blocks in the encoder, ``1 <= encoder_depth < depth``.
    """
    if not isinstance(net, NoiseMLP):
        raise TypeError(f"net must be a NoiseMLP; got {type(net).__name__}.")
    depth = len(net.layers)
    if depth < 2:
        raise ValueError(f"net needs at least two hidden blocks to split; it has {depth}.")
    if encoder_depth is None:
        encoder_depth = min(max(round(depth * 20 / 28), 1), depth - 1)
    k = check_int("encoder_depth", encoder_depth, minimum=1, maximum=depth - 1)
    return DecoupledFlowMap(
        _MLPEmbedding(net.embed, net.embed_proj),
        _MLPBlocks(net.layers[:k], net.cond_layers[:k], None),
        _MLPBlocks(net.layers[k:], net.cond_layers[k:], net.out),
    )


def decoupled_meanflow_loss(
    u_fn: Callable,
    x0: Float[ArrayLike, "batch ..."],
    key: PRNGKeyArray,
    *,
    noise: Float[ArrayLike, "batch ..."] | None = None,
    velocity: Callable | None = None,
    flow_time_mean: float = 0.0,
    time_means: tuple[float, ...] = (0.4, -1.2),
    time_std: float = 1.0,
    c: float = 0.01,
) -> Float[Array, ""]:
    r"""Decoupled MeanFlow's fine-tuning loss: flow matching at :math:`r = t` plus MeanFlow.

    Two independent draws on the same data :math:`x_0` (fresh noise each unless ``noise`` is
    given). The flow-matching term takes :math:`s = \mathrm{sigmoid}(\mathcal N(\mu_\text{fm},
    \sigma))` and :math:`\Delta_\text{fm} = u_\theta(z_s, s, s) - v`; the MeanFlow term takes
    :math:`a = \mathrm{sigmoid}(\mathcal N(\mu_1, \sigma))`,
    :math:`b = \mathrm{sigmoid}(\mathcal N(\mu_2, \sigma))`, :math:`t = \max(a, b)`,
    :math:`r = \min(a, b)` and :math:`\Delta_\text{mf} = u_\theta(z_t, r, t) - \mathrm{sg}(u_\text{tgt})`
    with :func:`~jaxsolve.diffusion.fewstep.meanflow_target`. The loss is

    .. math::
        \tfrac12\,\mathbb E\log\bigl(\overline{\Delta_\text{fm}^2} + c\bigr)
        + \tfrac12\,\mathbb E\log\bigl(\overline{\Delta_\text{mf}^2} + c\bigr),

    :math:`\overline{\,\cdot\,}` the mean over one sample's elements. Its gradient is the squared
    error's weighted by :math:`1/(\overline{\Delta^2} + c)`, MeanFlow's adaptive weight with
    power 1 (:func:`~jaxsolve.diffusion.fewstep.meanflow_loss`); the paper's learned
    log-variance is left out (it is zero here). The defaults are the paper's ImageNet 256 run
    (``flow_time_mean = 0``, ``time_means = (0.4, -1.2)``, unit scales, :math:`c = 0.01`). Its
    minimum, :math:`\log c`, is reached at the exact average velocity of the flow whose velocity
    is ``velocity``.

    Args:
        u_fn: ``u_fn(z, r, t)`` on the batch, e.g. a :class:`DecoupledFlowMap`.
        x0: data, ``(batch, ...)``.
        key: PRNG key.
        noise: the noise paired with ``x0`` (used in both terms); default fresh standard normal
            draws, one per term.
        velocity: optional ``velocity(z, t)`` (batched) in place of the conditional
            :math:`e - x_0`, e.g. a teacher's marginal velocity.
        flow_time_mean: logit-normal location of the flow-matching time.
        time_means: logit-normal locations of the two MeanFlow draws.
        time_std: the logit-normal scale (all three draws).
        c: :math:`c > 0` of the robust loss.
    """
    check_positive("time_std", time_std)
    check_positive("c", c)
    if len(time_means) != 2:
        raise ValueError(f"time_means must hold two locations; got {time_means!r}.")
    x0 = as_float(x0)
    if noise is not None and jnp.shape(noise) != x0.shape:
        raise ValueError(f"noise has shape {jnp.shape(noise)}, expected x0's {x0.shape}.")
    batch = x0.shape[:1]
    k_s, k_a, k_b, k_n1, k_n2 = jax.random.split(key, 5)
    if noise is None:
        e_fm = jax.random.normal(k_n1, x0.shape, x0.dtype)
        e_mf = jax.random.normal(k_n2, x0.shape, x0.dtype)
    else:
        e_fm = e_mf = jnp.asarray(noise, x0.dtype)

    def state(t, e):
        tt = expand_to(t, x0)
        z = (1.0 - tt) * x0 + tt * e
        v = e - x0 if velocity is None else jnp.asarray(velocity(z, t), x0.dtype)
        return z, jax.lax.stop_gradient(v)

    def robust(delta):
        sq = jnp.mean(delta.reshape(delta.shape[0], -1) ** 2, axis=1)
        return jnp.mean(jnp.log(sq + c))

    s = logit_normal_times(k_s, batch, flow_time_mean, time_std).astype(x0.dtype)
    z_s, v_s = state(s, e_fm)
    fm = robust(jnp.asarray(u_fn(z_s, s, s), x0.dtype) - v_s)

    a = logit_normal_times(k_a, batch, time_means[0], time_std).astype(x0.dtype)
    b = logit_normal_times(k_b, batch, time_means[1], time_std).astype(x0.dtype)
    t, r = jnp.maximum(a, b), jnp.minimum(a, b)
    z_t, v_t = state(t, e_mf)
    u, u_tgt = meanflow_target(u_fn, z_t, r, t, v_t)
    mf = robust(u - jax.lax.stop_gradient(u_tgt))
    return 0.5 * (fm + mf)
