"""mkdocs hooks: pages and figures that live outside ``docs/`` join the site without copies.

* every ``benchmarks/results/*.png`` is served at ``figures/<name>.png``, so a page links a
  benchmark's figure as ``figures/<name>.png`` (``../figures/<name>.png`` from ``guides/``) and the
  site always shows the figure the benchmark last wrote;
* every ``notebooks/*.ipynb`` is served at ``notebooks/<name>.ipynb`` and rendered by
  mkdocs-jupyter (this hook runs first, so the plugin sees the notebooks as its own files);
* ``CHANGELOG.md`` at the repository root is the page ``changelog.md``;
* before the build, ``docs/coverage.py`` lists every public name the API reference leaves out
  or that has no docstring of its own: each is a warning, so ``mkdocs build --strict`` fails.

``mkdocs serve`` watches those folders too. Loaded by ``hooks:`` in mkdocs.yml.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "benchmarks" / "results"
NOTEBOOKS = ROOT / "notebooks"
CHANGELOG = ROOT / "CHANGELOG.md"
log = logging.getLogger("mkdocs.plugins.jaxsolve")


def on_pre_build(config, **kwargs) -> None:
    spec = importlib.util.spec_from_file_location("docs_coverage", ROOT / "docs" / "coverage.py")
    coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coverage)
    for problem in coverage.problems():
        log.warning("API reference: %s", problem)


def _outside_docs() -> dict[str, Path]:
    """``site path -> file`` for the figures and the changelog."""
    found = {f"figures/{png.name}": png for png in sorted(FIGURES.glob("*.png"))}
    if CHANGELOG.exists():
        found["changelog.md"] = CHANGELOG
    return found


# Before mkdocs-jupyter's own on_files (priority 0), which converts the notebooks it finds.
@event_priority(100)
def on_files(files: Files, config, **kwargs) -> Files:
    added = [
        File.generated(config, uri, abs_src_path=str(path)) for uri, path in _outside_docs().items()
    ]
    # mkdocs-jupyter wraps a notebook's File and finds its source through ``src_dir``, which a
    # generated File lacks: a notebook is a File of the repository root instead.
    added += [
        File(
            f"notebooks/{nb.name}",
            src_dir=str(ROOT),
            dest_dir=config["site_dir"],
            use_directory_urls=config["use_directory_urls"],
        )
        for nb in sorted(NOTEBOOKS.glob("*.ipynb"))
    ]
    for file in added:
        if files.get_file_from_path(file.src_uri) is not None:
            raise ValueError(f"docs/{file.src_uri} hides a file the hook adds: remove it")
        files.append(file)
    return files


def on_serve(server, config, builder, **kwargs):
    for folder in (FIGURES, NOTEBOOKS):
        server.watch(str(folder))
    if CHANGELOG.exists():
        server.watch(str(CHANGELOG))
    return server
