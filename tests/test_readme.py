"""Every code block of README.md does what it says.

Python blocks run one after another in a fresh interpreter, each in a namespace of its own, so a
block that relies on a name another block defined fails (they are self-contained, as a reader
would paste them; no block changes JAX's configuration, which the test checks). Two interpreters,
one for the even-numbered blocks and one for the odd, instead of one per block: each pays JAX's
start-up once, and the two halves run on two pytest-xdist workers side by side instead of one
long test holding one worker at the end of the run. The two
``bash`` commands are the ones CI runs: ``.ci/run`` installs with the first block's
``pip install ".[plots]"``, runs the tour, and runs the second block's test command; this test
checks that the README and ``.ci/run`` agree, so neither can drift from the other. The other shell
blocks (``sh``, ``ipython``) install for a GPU, a TPU or Colab, which CI does not have.
"""

import json
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


# Runs every block in its own namespace and records each one's traceback (or None).
RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
results = []
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"<README block {i}>", "exec"), {"__name__": "__main__"})
        results.append(None)
    except BaseException:
        results.append(traceback.format_exc())
json.dump(results, open(sys.argv[2], "w"))
"""


# The blocks train and sample for about two CPU-minutes: the default run leaves them to CI, which
# runs `python -m pytest -m ci` after it (and its floors step runs them again).
@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("half", ["even", "odd"])
def test_python_blocks_run(tmp_path, half):
    for i, code in enumerate(PYTHON):
        assert "jax.config" not in code and "environ" not in code, (
            f"README block {i} changes JAX's configuration or the environment: it needs an "
            "interpreter of its own"
        )
    numbers = list(range(len(PYTHON)))[0 if half == "even" else 1 :: 2]
    blocks = [PYTHON[i] for i in numbers]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = {**os.environ, "MPLBACKEND": "Agg", "JAXSOLVE_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json"), str(tmp_path / "out.json")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out.json").read_text())
    assert len(results) == len(blocks)
    failed = [
        f"block {i} ({_heading(code)}):\n{code}\n--- traceback ---\n{err[-3000:]}"
        for i, code, err in zip(numbers, blocks, results, strict=True)
        if err is not None
    ]
    assert not failed, "README blocks failed:\n\n" + "\n\n".join(failed)


def test_readme_has_blocks_for_every_pillar():
    assert len(PYTHON) >= 7
    text = "\n".join(PYTHON)
    for module in ("diffusion", "operators", "implicit", "ode", "sharding", "train", "pde", "pinn"):
        assert re.search(rf"\b{module}\b", text), module


def test_shell_commands_are_what_ci_runs():
    install, tests = SHELL
    assert install == (
        'python -m venv .venv && . .venv/bin/activate && pip install ".[plots]" && jaxsolve tour'
    )
    assert tests == 'pip install ".[test]" && python -m pytest'
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    for command in (
        'pip install ".[plots]"\n',
        "jaxsolve tour",
        'pip install ".[test]"',
        "python -m pytest",
    ):
        assert command in ci, command
    # Every other shell block is an accelerator install, which CI cannot run.
    untested = [_heading(code) for lang, code in BLOCKS if lang not in ("python", "bash")]
    assert set(untested) <= {"GPU, TPU and Colab"}, untested


def test_sampler_index_names_where_each_method_is_defined():
    """The README's index of samplers sends a reader to the file that defines each method."""
    import inspect
    import re

    import jaxsolve.diffusion as jd

    section = README[README.index("### Where each") : README.index("### The seed papers")]
    rows = re.findall(r"^\|[^|]*\| `(_[a-z_]+/[a-z_0-9]+\.py)` \| (.*) \|$", section, re.M)
    assert len(rows) >= 20, rows
    for path, methods in rows:
        for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", methods):
            defined = inspect.getsourcefile(getattr(jd, name))
            assert defined.endswith(os.path.join("diffusion", path)), (name, path, defined)
