"""Every code block of README.md does what it says.

Python blocks run one by one, each in a fresh interpreter (they are self-contained, as a reader
would paste them). The two shell commands are the ones CI runs: ``.ci/run`` installs with the
first block's ``pip install .``, runs the tour, and runs the second block's test command; this test
checks that the README and ``.ci/run`` agree, so neither can drift from the other.
"""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md")).read()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code.strip() for lang, code in BLOCKS if lang == "bash"]


def _heading(code):
    """The README heading above a block, for the test id."""
    before = README[: README.index(code)]
    return re.findall(r"^#+ (.*)$", before, flags=re.M)[-1]


@pytest.mark.parametrize(
    "code", PYTHON, ids=[f"{i}-{_heading(c)[:40]}" for i, c in enumerate(PYTHON)]
)
def test_python_block_runs(code, tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg", "JAXSOLVE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (
        f"README block failed:\n{code}\n--- stderr ---\n{proc.stderr[-3000:]}"
    )


def test_readme_has_blocks_for_every_pillar():
    assert len(PYTHON) >= 7
    text = "\n".join(PYTHON)
    for module in ("diffusion", "operators", "implicit", "ode", "sharding", "train", "pde"):
        assert re.search(rf"\b{module}\b", text), module


def test_shell_commands_are_what_ci_runs():
    install, tests = SHELL
    assert install.startswith("python -m venv .venv") and install.endswith("jaxsolve tour")
    assert tests == 'pip install ".[test]" && python -m pytest'
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    for command in (
        "pip install .\n",
        "jaxsolve tour",
        'pip install ".[test]"',
        "python -m pytest",
    ):
        assert command in ci, command
