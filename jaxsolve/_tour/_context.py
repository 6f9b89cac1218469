"""What every tour section receives: where to write, how big to run, how to report and check."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from tqdm.auto import tqdm


class TourCheckFailed(RuntimeError):
    """A number the tour prints did not show what it claims."""


@dataclasses.dataclass
class TourContext:
    out: str
    quick: bool
    figures: list = dataclasses.field(default_factory=list)
    timings: dict = dataclasses.field(default_factory=dict)

    def say(self, text: str = "") -> None:
        tqdm.write(text)  # keeps progress bars intact

    def check(self, ok, what: str) -> None:
        if not bool(np.all(ok)):
            raise TourCheckFailed(what)

    def pick(self, quick, full):
        return quick if self.quick else full

    def savefig(self, fig, name: str) -> str:
        import matplotlib.pyplot as plt

        path = os.path.join(self.out, name)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        plt.close(fig)
        self.figures.append(path)
        self.say(f"saved {path}")
        return path


def pyplot():
    """matplotlib's pyplot on a non-interactive backend (the tour only writes files)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_panel(ax, points, title: str, half_width: float, *, background=None) -> None:
    """One square panel of 2-D samples on ``[-half_width, half_width]^2``, no ticks; the
    ``background`` points (the data) in grey beneath them."""
    if background is not None:
        ax.scatter(*np.asarray(background).T, s=1, c="0.75")
    ax.scatter(*np.asarray(points).T, s=1, alpha=0.6)
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-half_width, half_width)
    ax.set_ylim(-half_width, half_width)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def ring_mixture(n_modes: int = 8, radius: float = 2.5, var: float = 0.03):
    """The tour's 2-D data: equal Gaussians on a circle (an exact oracle of its own)."""
    from ..diffusion.analytic import GaussianMixture

    angles = np.linspace(0, 2 * np.pi, n_modes, endpoint=False)
    means = radius * np.stack([np.cos(angles), np.sin(angles)], 1)
    return GaussianMixture(np.full(n_modes, 1 / n_modes), means, np.full((n_modes, 2), var))
