"""The tour behind ``jaxsolve tour``: each section shows one capability, checks it, saves figures.

Sections are plain functions ``section(ctx) -> None`` listed in :data:`SECTIONS`, one module per
pillar. A failed check raises :class:`TourCheckFailed`, which the command turns into a clear
message and exit code 1. ``quick`` shrinks every problem (the CI runs the quick tour).
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm

from .._core import check_writable_dir
from ._context import TourCheckFailed, TourContext
from ._diffusion import oracles_section, schedules_section, trained_model_section
from ._fewstep import fewstep_section
from ._implicit import deq_section
from ._inverse import inverse_section
from ._operators import burgers_fno_section
from ._pinn import pinn_section
from ._sweep import sweep_section

SECTIONS = [
    ("schedules and grids", schedules_section),
    ("exact oracles", oracles_section),
    ("a trained diffusion model and its samplers", trained_model_section),
    ("inpainting against the exact posterior", inverse_section),
    ("a two-step consistency model", fewstep_section),
    ("Burgers data and an FNO", burgers_fno_section),
    ("a PINN on Burgers with R3 sampling", pinn_section),
    ("a deep equilibrium model", deq_section),
    ("sweeps as data", sweep_section),
]


def run_tour(out: str = "jaxsolve-tour", quick: bool = False) -> TourContext:
    check_writable_dir("out", out)
    ctx = TourContext(out=out, quick=quick)
    start = time.perf_counter()
    for name, section in tqdm(SECTIONS, desc="jaxsolve tour", unit="section"):
        t0 = time.perf_counter()
        section(ctx)
        ctx.timings[name] = time.perf_counter() - t0
        ctx.say(f"-- {name}: {ctx.timings[name]:.1f}s\n")
    ctx.say(
        f"tour finished in {time.perf_counter() - start:.1f}s; figures: {', '.join(ctx.figures)}"
    )
    return ctx


__all__ = ["SECTIONS", "TourCheckFailed", "TourContext", "run_tour"]
