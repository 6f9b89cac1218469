"""Execute every notebook in ``notebooks/``; each asserts its own claims in its cells.

A notebook is run top to bottom in a fresh kernel started from *this* interpreter (a kernel spec
written for the test whose ``argv[0]`` is ``sys.executable``, so a globally installed ``python3``
kernel is never picked up by mistake), in a temporary working directory, with matplotlib's
non-interactive Agg backend. A failing assertion or exception in any cell fails the test with
the cell's traceback. New notebooks are picked up by the glob.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 300  # seconds per cell; a notebook is meant to finish in well under a minute
INSTALL_CELL = '''\
# Install jaxsolve from the checkout this notebook sits in, unless it is installed already.
# Locally, open the notebook in the checkout's notebooks/ folder. On Colab, first bring the
# checkout onto the machine in a cell of its own: `!git clone <repository URL> jaxsolve`, or
# upload it as a zip and unzip it into /content/jaxsolve (README.md, "GPU, TPU and Colab", has
# the GPU and TPU lines). If pip upgrades jax, restart the session before going on.
import importlib.metadata
from pathlib import Path

try:
    importlib.metadata.version("jaxsolve")
except importlib.metadata.PackageNotFoundError:
    here = Path.cwd()
    checkout = next(
        (
            p
            for p in (here, *here.parents, here / "jaxsolve")
            if (p / "pyproject.toml").is_file() and (p / "jaxsolve" / "__init__.py").is_file()
        ),
        None,
    )
    if checkout is None:
        raise RuntimeError(f"no jaxsolve checkout at {here}, above it or in ./jaxsolve") from None
    %pip install -q "{checkout}[plots]"'''
KERNEL_NAME = "jaxsolve-test-python"
PROBE = "import os, sys\nprint(sys.executable, sys.prefix, os.environ.get('MPLBACKEND'), sep='\\n')"


def _ids(paths):
    return [p.name for p in paths]


def _executions(paths):
    """One case per notebook; a notebook whose metadata says ``"jaxsolve": {"slow": true}``
    (one that trains to a benchmark's accuracy) runs under ``-m slow`` only."""
    cases = []
    for path in paths:
        meta = json.loads(path.read_text()).get("metadata", {}).get("jaxsolve", {})
        marks = [pytest.mark.slow] if meta.get("slow") else []
        cases.append(pytest.param(path, marks=marks, id=path.name))
    return cases


def _kernel_manager(spec_dir: Path):
    """A kernel manager whose only kernel is ipykernel on ``sys.executable``."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    kernel_dir = spec_dir / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "jaxsolve test kernel",
        "language": "python",
        "env": {"MPLBACKEND": "Agg"},
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir)])
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs)


def test_notebooks_are_found():
    assert len(NOTEBOOKS) >= 3, f"expected the notebooks in {NOTEBOOK_DIR}; found {NOTEBOOKS}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_is_committed_clean_and_opens_with_the_install_cell(path):
    import nbformat  # here, not at collection: with its schema validator it takes seconds

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.lstrip().startswith("# ")
    install = nb.cells[1]
    assert install.cell_type == "code" and install.source.strip() == INSTALL_CELL, (
        f"{path.name}: the second cell must be the install cell:\n{INSTALL_CELL}"
    )
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name}: cell {i} has stored outputs; commit notebooks without outputs"
            )


@pytest.mark.parametrize("where", ["notebooks", "colab"])
def test_install_cell_finds_the_checkout(where, tmp_path, monkeypatch):
    """Where jaxsolve is not installed, the install cell installs the checkout: from the notebooks'
    folder the repository above it, and on Colab (working directory /content) the clone in
    ./jaxsolve. (Where it is installed, as in the test below, the cell does nothing.)"""
    root = NOTEBOOK_DIR.parent
    if where == "colab":
        (tmp_path / "jaxsolve").symlink_to(root, target_is_directory=True)
        monkeypatch.chdir(tmp_path)
    else:
        monkeypatch.chdir(NOTEBOOK_DIR)
    code = INSTALL_CELL.replace(
        'importlib.metadata.version("jaxsolve")',
        'raise importlib.metadata.PackageNotFoundError("jaxsolve")',
    ).replace('%pip install -q "{checkout}[plots]"', "installed = checkout")
    namespace = {}
    exec(code, namespace)
    assert namespace["installed"].resolve() == root.resolve()


@pytest.mark.parametrize("path", _executions(NOTEBOOKS))
def test_notebook_executes(path, tmp_path, record_property):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))  # which interpreter ran the kernel
    workdir = tmp_path / "work"
    workdir.mkdir()
    client = NotebookClient(
        nb,
        km=_kernel_manager(tmp_path / "kernels"),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute(cleanup_kc=True)  # we own the kernel manager, so shut the kernel down
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: executed in {seconds:.1f} s")

    probe = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    assert probe.splitlines() == [sys.executable, sys.prefix, "Agg"], probe
    # A notebook that splits the CPU into devices must really have run on them (the kernel
    # inherits XLA_FLAGS from the test run; the notebook has to add to it, not defer to it).
    printed = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    if "xla_force_host_platform_device_count" in "".join(c.source for c in nb.cells):
        assert "CpuDevice(id=7)" in printed and "restart the kernel" not in printed, printed[-2000:]
