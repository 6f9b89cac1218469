"""The ``jaxsolve`` command: the tour's driver, its failure path and its entry points.

The tour itself runs in CI (``jaxsolve tour --quick`` in .ci/run); here its driver is exercised
with small stand-in sections so that the default test run stays short.
"""

import subprocess
import sys

import jaxsolve._tour as tour
from jaxsolve import cli


def _section_that_plots(ctx):
    plt = tour._context.pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    ctx.check(ctx.quick, "the --quick flag did not reach the sections")
    ctx.savefig(fig, "line.png")


def _section_that_fails(ctx):
    ctx.check(1.0 < 0.5, "a deliberately false claim")


def test_tour_runs_its_sections_and_writes_figures(tmp_path, monkeypatch):
    monkeypatch.setattr(tour, "SECTIONS", [("plot", _section_that_plots)])
    out = tmp_path / "tour"
    assert cli.main(["tour", "--quick", "--out", str(out)]) == 0
    assert (out / "line.png").stat().st_size > 1000


def test_a_failed_check_gives_a_clear_message_and_exit_code_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        tour, "SECTIONS", [("plot", _section_that_plots), ("false", _section_that_fails)]
    )
    assert cli.main(["tour", "--quick", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "jaxsolve tour FAILED: TourCheckFailed: a deliberately false claim" in err


def test_an_unwritable_out_fails_before_any_section_runs(tmp_path, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(tour, "SECTIONS", [("work", lambda ctx: ran.append(1))])
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert cli.main(["tour", "--quick", "--out", str(blocker / "tour")]) == 2
    err = capsys.readouterr().err
    assert "--out=" in err and "is not a writable directory" in err
    assert not ran


def test_every_tour_section_is_listed_once():
    names = [name for name, _ in tour.SECTIONS]
    assert len(names) == len(set(names)) >= 6
    assert all(callable(fn) for _, fn in tour.SECTIONS)


def test_module_entry_point_and_help():
    run = subprocess.run(
        [sys.executable, "-m", "jaxsolve", "tour", "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0 and "--quick" in run.stdout and "--out" in run.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "jaxsolve", "dance"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
