r"""Space-time FNO and Spectral-Refiner's fine-tuning of its last layer in a negative Sobolev norm.

"Spectral-Refiner: Accurate Fine-Tuning of Spatiotemporal Fourier Neural Operator for Turbulent
Flows" maps the initial condition to the whole trajectory at once, a function of space *and*
time, with Fourier layers in space-time; then it freezes the trained network but its last linear
layer and fits that layer in the negative Sobolev norm

.. math:: \|e\|_{H^{-s}}^2 = |\Omega| \sum_k (1 + |\xi_k|^2)^{-s}\, |\hat e_k|^2 ,

evaluated exactly from the Fourier coefficients (Parseval), which weights the large scales that
a pointwise loss under-weights.

**Architecture** (:class:`SpaceTimeFNO`). The sample ``(C_in, N_1, ..., N_d)`` (the initial
condition, or ``h`` history frames stacked on the channel axis) is repeated over ``T`` time
steps, a ``(d + 1)``-dimensional :class:`FNO` with time as its first spectral axis maps it to
``width`` feature channels (its positional embedding supplies the time coordinate
:math:`t_n = n / T` and the space coordinates, so the repeated input is not constant for it),
and a head linear in its parameters — a pointwise linear map, plus optionally a dense spectral
convolution with as many modes as the grid holds (Spectral-Refiner's "last linear spectral
convolution layer ... without the frequency truncation") — gives ``(C_out, T, N_1, ..., N_d)``:

.. math:: \mathcal G(u_0) = H_\theta\big(\sigma(F(u_0 \otimes 1_T))\big).

Time is not periodic: ``time_padding`` cells appended to the time axis inside the FNO (as the
FNO paper's space-time model pads time) keep the end of the trajectory from wrapping onto its
start.

**Fine-tuning** (:func:`spectral_refine`). With the features :math:`\phi_i = \sigma(F(u_0^i))`
frozen, the prediction :math:`H_\theta \phi_i` is affine in :math:`\theta`, so the loss
:math:`\sum_i \|H_\theta \phi_i - u^i\|_{H^{-s}}^2 = \sum_i \|J_i \delta + r_i\|^2` is a
convex quadratic in the change :math:`\delta` of the head's weights: a linear least-squares
problem, with :math:`r_i` the residual's Fourier coefficients weighted by
:math:`\sqrt{|\Omega| c_k (1 + |\xi_k|^2)^{-s}}` (:math:`c_k` the real-FFT multiplicity) and
:math:`J_i` their Jacobian. It is solved in closed form: a QR factorisation of the stacked
:math:`[J_i \mid r_i]` accumulated sample by sample (memory: the head's parameter count squared),
then a least-squares (minimum-norm) solve of the triangular factor. Closed form rather than
gradient steps: the exact minimiser in one pass over the data, with no learning rate or step
count to choose, where gradient descent would converge at a rate set by the condition number of
:math:`J^\top J`; and QR rather than the normal equations, whose rounding error grows with that
squared condition number.
"""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from .._core import as_float, check_int, is_concrete, normalize_lengths
from .._core._init import subkeys
from ._checks import check_sample
from ._fno import FNO, ChannelMLP
from ._spectral import (
    _full_spectrum_weights,
    _wavevector_norm2,
    normalize_modes,
    sobolev_norm,
)
from ._spectral_conv import SpectralConv

_ORDER = "s must be a finite scalar >= 0 (the loss is the H^-s norm; s = 0 is L2)"


def _check_order(s):
    """The order ``s >= 0`` of the negative norm: concrete values checked now, traced ones when
    the program runs (a negative s weights high frequencies up, a positive Sobolev norm)."""
    if is_concrete(s):
        a = np.asarray(s, np.float64)
        if a.ndim or not np.isfinite(a) or a < 0:
            raise ValueError(f"{_ORDER}; got {s!r}.")
        return s
    s = jnp.asarray(s)
    if s.ndim:
        raise ValueError(f"{_ORDER}; got shape {s.shape}.")
    return eqx.error_if(s, ~(jnp.isfinite(s) & (s >= 0)), f"{_ORDER}.")


def negative_sobolev_loss(
    pred: Float[ArrayLike, " c *spatial"],
    target: Float[ArrayLike, " c *spatial"],
    s: float | ArrayLike = 1.0,
    *,
    lengths: float | Sequence[float] = 1.0,
    num_spatial_dims: int | None = None,
) -> Float[Array, ""]:
    r"""Squared negative Sobolev error :math:`\|\hat u - u\|_{H^{-s}}^2`, Spectral-Refiner's loss.

    .. math:: \|e\|_{H^{-s}}^2 = |\Omega| \sum_k (1 + |\xi_k|^2)^{-s} |\hat e_k|^2,
       \qquad \xi_k = 2\pi k / L,

    with :math:`\hat e` the forward-normalised Fourier coefficients of the periodic field, summed
    over the leading (channel) axes: :func:`sobolev_norm` at order ``-s``, squared (the quadratic
    that :func:`spectral_refine` minimises).

    Args:
        pred, target: same shape ``(C, *axes)``.
        s: the order, ``>= 0`` (may be traced); ``s = 0`` is the squared L2 norm.
        lengths: period of each Fourier axis.
        num_spatial_dims: how many trailing axes are Fourier axes (default all but the first).
            For a space-time field ``(C, T, *spatial)`` the default treats time as a Fourier
            axis too; ``num_spatial_dims=d`` gives :math:`\sum_n \|e(t_n)\|_{H^{-s}}^2` instead.
    """
    pred, target = as_float(pred), as_float(target)
    if pred.shape != target.shape:
        raise ValueError(
            f"negative_sobolev_loss: pred and target shapes differ: {pred.shape} vs {target.shape}."
        )
    s = _check_order(s)
    norm = sobolev_norm(pred - target, -s, num_spatial_dims=num_spatial_dims, lengths=lengths)
    return norm**2


class SpaceTimeHead(eqx.Module):
    """The last layer of :class:`SpaceTimeFNO`: ``linear(v) + spectral(v)``, affine in its weights.

    ``linear`` is a pointwise linear map with a bias; ``spectral`` (optional) a dense
    :class:`SpectralConv` over space-time without bias.
    """

    linear: ChannelMLP
    spectral: SpectralConv | None

    def __call__(self, v: Float[Array, " c *axes"]) -> Float[Array, " cout *axes"]:
        y = self.linear(v)
        if self.spectral is not None:
            y = y + self.spectral(v)
        return y


class SpaceTimeFNO(eqx.Module):
    r"""Space-time FNO: one sample ``(C_in, *spatial)`` to a trajectory ``(C_out, T, *spatial)``.

    See the module docstring for the architecture. ``__call__(x) = head(features(x))``, the split
    :func:`spectral_refine` uses.

    Args:
        num_spatial_dims: ``d``, the spatial axes of the input (the FNO inside has ``d + 1``).
        in_channels: channels of the input (history frames times field channels).
        out_channels: channels of each output frame.
        width: channels of the Fourier blocks and of the features the head reads.
        modes: spatial modes per sign (an int or one per spatial axis).
        time_steps: ``T``, the output frames.
        key: PRNG key of the initial weights.
        time_modes: temporal modes per sign (default ``min(max(modes), T // 2)``, at least 1).
        time_padding: cells appended to the time axis inside the FNO (0: time periodic).
        head_modes: modes of the head's spectral convolution (an int or one per axis, time
            first; ``None``: a pointwise head only). Spectral-Refiner keeps every mode the
            training grid holds: ``(T // 2, N_1 // 2, ..., (N_d + 1) // 2)``.
        n_layers: Fourier blocks.
        activation: of the FNO and between the features and the head (default gelu).
        dtype: of the weights.
        **fno_kwargs: passed to :class:`FNO` (``lifting_channels``, ``projection_channels``,
            ``skip``, ``factorization``, ...).
    """

    backbone: FNO
    head: SpaceTimeHead
    num_spatial_dims: int = eqx.field(static=True)
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    time_steps: int = eqx.field(static=True)
    activation: Callable = eqx.field(static=True)

    def __init__(
        self,
        num_spatial_dims: int,
        in_channels: int,
        out_channels: int,
        *,
        width: int,
        modes: int | Sequence[int],
        time_steps: int,
        key: PRNGKeyArray,
        time_modes: int | None = None,
        time_padding: int = 0,
        head_modes: int | Sequence[int] | None = None,
        n_layers: int = 4,
        activation: Callable = jax.nn.gelu,
        dtype=None,
        **fno_kwargs,
    ):
        d = check_int("num_spatial_dims", num_spatial_dims)
        self.num_spatial_dims = d
        self.in_channels = check_int("in_channels", in_channels)
        self.out_channels = check_int("out_channels", out_channels)
        self.time_steps = check_int("time_steps", time_steps)
        check_int("time_padding", time_padding, minimum=0)
        if "positional_embedding" in fno_kwargs or "domain_padding" in fno_kwargs:
            raise ValueError(
                "SpaceTimeFNO sets the FNO's positional_embedding (it carries the time "
                "coordinate) and domain_padding (from time_padding) itself."
            )
        spatial_modes = normalize_modes(modes, d)
        if time_modes is None:
            time_modes = max(1, min(max(spatial_modes), self.time_steps // 2))
        check_int("time_modes", time_modes)
        k_fno, k_lin, k_spec = subkeys(key, 3)
        fraction = (time_padding / self.time_steps,) + (0.0,) * d
        self.backbone = FNO(
            d + 1,
            self.in_channels,
            width,
            width=width,
            modes=(time_modes, *spatial_modes),
            n_layers=n_layers,
            key=k_fno,
            activation=activation,
            domain_padding=fraction if time_padding else None,
            padding_mode="one-sided",
            positional_embedding=True,
            dtype=dtype,
            **fno_kwargs,
        )
        linear = ChannelMLP(width, self.out_channels, n_layers=1, key=k_lin, dtype=dtype)
        spectral = None
        if head_modes is not None:
            spectral = SpectralConv(
                d + 1, width, self.out_channels, head_modes, key=k_spec, dtype=dtype
            )
        self.head = SpaceTimeHead(linear, spectral)
        self.activation = activation

    def features(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " width time *spatial"]:
        """The frozen part :math:`\\sigma(F(u_0 \\otimes 1_T))`, ``(width, T, *spatial)``."""
        check_sample(
            x,
            channels=self.in_channels,
            num_spatial_dims=self.num_spatial_dims,
            where="SpaceTimeFNO",
        )
        x = jnp.asarray(x)
        v = jnp.broadcast_to(x[:, None], (x.shape[0], self.time_steps, *x.shape[1:]))
        return self.activation(self.backbone(v))

    def __call__(self, x: Float[Array, " cin *spatial"]) -> Float[Array, " cout time *spatial"]:
        return self.head(self.features(x))


def _fourier_weights(shape, s, lengths, dtype):
    r""":math:`\sqrt{|\Omega| c_k (1 + |\xi_k|^2)^{-s}}` on the ``rfftn`` grid of ``shape``."""
    xi2 = _wavevector_norm2(shape, lengths, True, dtype)
    volume = 1.0
    for length in lengths:
        volume = volume * jnp.asarray(length, dtype)
    weight = jnp.power(1.0 + xi2, -jnp.asarray(s, dtype)) * _full_spectrum_weights(shape)
    return jnp.sqrt(volume * weight).astype(dtype)


@eqx.filter_jit
def _refine(model, inputs, targets, s, lengths, num_spatial_dims, rcond):
    """:func:`spectral_refine` after the checks, one compiled program."""
    features = lax.stop_gradient(jax.vmap(model.features)(inputs))
    params, static = eqx.partition(model.head, eqx.is_inexact_array)
    theta0, unravel = ravel_pytree(params)
    dtype = theta0.dtype
    d = num_spatial_dims
    axes = tuple(range(targets.ndim - 1 - d, targets.ndim - 1))  # the Fourier axes of one sample
    weights = _fourier_weights(targets.shape[targets.ndim - d :], s, lengths, dtype)

    def residual(theta, phi, target):
        error = eqx.combine(unravel(theta), static)(phi) - target
        eh = jnp.fft.rfftn(error, axes=axes, norm="forward") * weights
        return jnp.concatenate([jnp.real(eh).ravel(), jnp.imag(eh).ravel()])

    def accumulate(carry, sample):
        # Householder QR of [J | r], one sample's rows at a time below the running triangle:
        # [R | z] with ||J delta + r||^2 = ||R delta + z||^2 + const, so the solve works with
        # the condition number of J, not its square (the normal equations').
        triangle, loss = carry
        r = residual(theta0, *sample)
        jac = jax.jacfwd(residual)(theta0, *sample)
        rows = jnp.concatenate([jac, r[:, None]], axis=1)
        triangle = jnp.linalg.qr(jnp.concatenate([triangle, rows], axis=0), mode="r")
        return (triangle, loss + jnp.sum(r**2)), None

    p = theta0.size
    init = (jnp.zeros((p + 1, p + 1), dtype), jnp.zeros((), dtype))
    (triangle, loss0), _ = lax.scan(accumulate, init, (features, targets))
    delta = jnp.linalg.lstsq(triangle[:p, :p], -triangle[:p, p], rcond=rcond)[0]
    theta = theta0 + delta

    def total(theta):
        per_sample = jax.vmap(lambda f, t: jnp.sum(residual(theta, f, t) ** 2))
        return jnp.sum(per_sample(features, targets))

    loss1 = total(theta)
    # The solve is exact up to round-off; keep the frozen head if round-off (or a head that is
    # not affine in its weights) made the loss larger.
    better = loss1 <= loss0
    head = eqx.combine(unravel(jnp.where(better, theta, theta0)), static)
    refined = eqx.tree_at(lambda m: m.head, model, head)
    return refined, loss0, jnp.where(better, loss1, loss0)


def spectral_refine(
    model,
    inputs: Float[ArrayLike, "batch cin *spatial"],
    targets: Float[ArrayLike, "batch cout *axes"],
    s: float | ArrayLike = 1.0,
    *,
    lengths: float | Sequence[float] = 1.0,
    num_spatial_dims: int | None = None,
    rcond: float | None = None,
):
    r"""Spectral-Refiner's fine-tuning: refit the last layer in the :math:`H^{-s}` norm.

    Freezes ``model.features`` and replaces ``model.head`` by the minimiser of
    :math:`\sum_i \|\mathrm{head}(\mathrm{features}(x_i)) - y_i\|_{H^{-s}}^2`
    (:func:`negative_sobolev_loss` summed over the batch), found in closed form: the head is
    affine in its weights, so the loss is a convex quadratic and one least-squares solve (a QR
    factorisation accumulated sample by sample; the head's parameter count squared in memory,
    see the module docstring) gives the minimiser — the minimum-norm change of the weights when the minimiser is not
    unique. The returned loss is never above the frozen start's: if round-off (or a head that is
    not affine, for which the solve is one Gauss-Newton step) made it larger, the head is kept.

    Args:
        model: any module with ``features(x)`` and an affine ``head`` such that
            ``model(x) == model.head(model.features(x))`` (:class:`SpaceTimeFNO`).
        inputs: a batch of inputs ``(B, ...)``.
        targets: the batch of targets ``(B, C_out, *axes)``, the shape of ``model(x)``.
        s: the order of the negative norm, ``>= 0``.
        lengths, num_spatial_dims: as :func:`negative_sobolev_loss` (default: every axis after
            the channel axis, time included, is a Fourier axis).
        rcond: relative cut-off of small singular values in the solve (default: machine
            precision times the parameter count).

    Returns:
        ``(refined_model, loss_before, loss_after)``, the losses summed over the batch.
    """
    _check_order(s)
    inputs, targets = jnp.asarray(inputs), as_float(targets)
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(
            f"inputs and targets hold different batch sizes: {inputs.shape[0]} vs "
            f"{targets.shape[0]}."
        )
    d = targets.ndim - 2 if num_spatial_dims is None else num_spatial_dims
    check_int("num_spatial_dims", d, maximum=targets.ndim - 1)
    lengths = normalize_lengths(lengths, d, "spectral_refine")
    return _refine(model, inputs, targets, s, lengths, d, rcond)
