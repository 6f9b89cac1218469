"""Reference evaluations in NumPy float64 for the operator tests."""

import equinox as eqx
import numpy as np


def block_frequencies(block_shape):
    """Integer frequencies of a compact block ``(2 m_1, ..., 2 m_{d-1}, m_d)`` per axis."""
    lead = [np.concatenate([np.arange(b // 2), np.arange(-(b // 2), 0)]) for b in block_shape[:-1]]
    return [*lead, np.arange(block_shape[-1])]


def trig_field(yh, spatial_shape, lengths=None):
    r"""Direct sum :math:`\mathrm{Re}\sum_k c_k \hat y_k e^{2\pi i k\cdot x}` on a periodic grid.

    ``yh`` has leading (channel) axes and a compact mode block; ``c_k`` is 1 on the zero column
    of the last axis and 2 elsewhere. This is the definition of the field of a truncated
    spectrum, computed by brute force (no FFT).
    """
    yh = np.asarray(yh)
    d = len(spatial_shape)
    freqs = block_frequencies(yh.shape[-d:])
    grids = np.meshgrid(*[np.arange(n) / n for n in spatial_shape], indexing="ij")
    lead = yh.shape[:-d]
    out = np.zeros((*lead, *spatial_shape))
    for idx in np.ndindex(*yh.shape[-d:]):
        k = [freqs[j][idx[j]] for j in range(d)]
        c = 1.0 if k[-1] == 0 else 2.0
        phase = np.exp(2j * np.pi * sum(kj * g for kj, g in zip(k, grids, strict=True)))
        coef = yh[(..., *idx)].reshape(lead + (1,) * d)
        out += np.real(c * coef * phase)
    return out


def trig_interpolant(values, points):
    """Trigonometric interpolant of periodic samples on ``[0, 1)`` (last axis), at ``points``.

    An even grid's Nyquist coefficient is split between ``+N/2`` and ``-N/2`` so the interpolant
    is real.
    """
    values = np.asarray(values, float)
    n = values.shape[-1]
    coef = np.fft.fft(values, axis=-1) / n
    k = np.fft.fftfreq(n, 1.0 / n)
    if n % 2 == 0:
        half = coef[..., n // 2] / 2
        coef = np.concatenate(
            [coef[..., : n // 2], half[..., None], coef[..., n // 2 + 1 :], half[..., None]],
            axis=-1,
        )
        k = np.concatenate([k[: n // 2], [n // 2], k[n // 2 + 1 :], [-(n // 2)]])
    basis = np.exp(2j * np.pi * np.outer(np.asarray(points, float), k))
    return np.real(np.einsum("pk,...k->...p", basis, coef))


@eqx.filter_jit
def apply(model, *args):
    """``model(*args)`` compiled as one program (op-by-op dispatch compiles every primitive)."""
    return model(*args)
