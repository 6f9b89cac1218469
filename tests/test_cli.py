"""The ``jaxsolve`` command: the tour's driver, its failure path and its entry points.

The tour itself runs in CI (``jaxsolve tour --quick`` in .ci/run); here its driver is exercised
with small stand-in sections so that the default test run stays short.
"""

import json
import os
import subprocess
import sys

import pytest

import jaxsolve._tour as tour
from jaxsolve import cli
from jaxsolve._core import _xla_flags as xla_flags


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


# The XLA:CPU settings the quick tour (and tests/conftest.py) add where this jaxlib knows them.


def test_a_flag_this_jaxlib_does_not_know_is_left_out(monkeypatch):
    monkeypatch.delenv(xla_flags._VERDICT, raising=False)
    known, unknown = "--xla_backend_optimization_level=1", "--xla_jaxsolve_no_such_flag=1"
    assert xla_flags.accepted_xla_flags([known, unknown]) == (known,)
    assert xla_flags.accepted_xla_flags([unknown]) == ()


def test_the_verdict_is_kept_in_the_environment(monkeypatch):
    monkeypatch.delenv(xla_flags._VERDICT, raising=False)
    flags = ["--xla_jaxsolve_no_such_flag=1"]
    assert xla_flags.accepted_xla_flags(flags) == ()
    verdict = json.loads(os.environ[xla_flags._VERDICT])
    assert verdict["tried"] == flags and verdict["accepted"] == []

    def no_probe(*args, **kwargs):
        raise AssertionError("probed again")

    monkeypatch.setattr(xla_flags.subprocess, "run", no_probe)
    assert xla_flags.accepted_xla_flags(flags) == ()  # inherited by subprocesses, too
    # Another XLA_FLAGS is another question.
    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", "") + " --xla_dump_to=/dev/null")
    with pytest.raises(AssertionError, match="probed again"):
        xla_flags.accepted_xla_flags(flags)


def test_a_setting_the_user_chose_is_kept(monkeypatch):
    monkeypatch.setattr(xla_flags, "_backend_started", lambda: False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    monkeypatch.setattr(xla_flags, "accepted_xla_flags", lambda flags: tuple(flags))
    added = xla_flags.add_fast_compile_flags()
    assert added == tuple(
        f for f in xla_flags.FAST_COMPILE_FLAGS if not f.startswith("--xla_backend_opt")
    )
    assert os.environ["XLA_FLAGS"].split() == ["--xla_backend_optimization_level=3", *added]


def test_nothing_changes_once_jax_has_a_backend(monkeypatch):
    import jax

    jax.devices()  # XLA has read XLA_FLAGS: a change now would reach subprocesses only
    monkeypatch.setenv("XLA_FLAGS", "")
    assert xla_flags.add_fast_compile_flags() == ()
    assert os.environ["XLA_FLAGS"] == ""


@pytest.mark.parametrize(
    "flags, error", [("--xla_a=1", TypeError), (["-O1"], ValueError), ([1], ValueError)]
)
def test_bad_flags_are_rejected(flags, error):
    with pytest.raises(error, match="flags"):
        xla_flags.accepted_xla_flags(flags)


# In a fresh interpreter: the quick tour adds the settings before JAX starts its backend, keeps
# the user's own, and the program that then compiles runs.
_QUICK_TOUR_FLAGS = """
import json, os, sys
import jax.numpy as jnp
import jaxsolve._tour as tour
from jaxsolve import cli

def section(ctx):
    seen.update(flags=os.environ["XLA_FLAGS"], value=float(jnp.arange(4.0).sum()))

seen = {}
tour.SECTIONS = [("flags", section)]
assert cli.main(["tour", "--quick", "--out", sys.argv[1]]) == 0
seen["verdict"] = json.loads(os.environ["JAXSOLVE_XLA_FLAGS_PROBED"])
print(json.dumps(seen))
"""


def test_the_quick_tour_adds_the_settings_before_jax_starts(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != xla_flags._VERDICT}
    env["XLA_FLAGS"] = "--xla_backend_optimization_level=2"
    run = subprocess.run(
        [sys.executable, "-c", _QUICK_TOUR_FLAGS, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    others = [f for f in xla_flags.FAST_COMPILE_FLAGS if not f.startswith("--xla_backend_opt")]
    assert seen["verdict"]["tried"] == others
    assert set(seen["verdict"]["accepted"]) <= set(others)
    assert seen["flags"].split() == [
        "--xla_backend_optimization_level=2",
        *seen["verdict"]["accepted"],
    ]
    assert seen["value"] == 6.0
