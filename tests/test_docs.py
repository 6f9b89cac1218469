"""The documentation site documents every public name, and its examples run.

* Every public name of every ``__all__`` below has exactly one ``::: <public path>`` entry in
  ``docs/api/*.md`` (or, for a second public path of the same object, a Markdown anchor
  ``[](){#<public path>}`` beside the entry that documents it), every entry names a public name,
  and every public name has a docstring of its own (an attribute's docstring is the string literal
  under its assignment, as griffe reads it). The checks live in ``docs/coverage.py``, which
  ``docs/hooks.py`` also runs before every build, so a strict build fails on a gap as well.
* Every notebook is in the site's nav.
* ``docs/griffe_rst.py`` turns the docstrings' reST into Markdown with maths (where griffe, of the
  ``docs`` extra, is installed).
* The fenced ``python`` blocks of every page run, each in a namespace of its own, one fresh
  interpreter per page (slow; CI runs them with ``-m ci``), as ``tests/test_readme.py`` runs the
  README's.
* ``mkdocs build --strict`` passes where the ``docs`` extra is installed (slow; ``.ci/run`` also
  runs it after installing the extra).
"""

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_spec = importlib.util.spec_from_file_location("docs_coverage", DOCS / "coverage.py")
reference = importlib.util.module_from_spec(_spec)  # docs/coverage.py, which the build hook runs
_spec.loader.exec_module(reference)
_public, _api_pages, _occurrences = reference._public, reference._api_pages, reference._occurrences
_has_own_docstring = reference._has_own_docstring
FENCE = re.compile(r"^([ \t]*)```python[ \t]*\n(.*?)^\1```[ \t]*$", re.M | re.S)


def test_every_public_name_is_in_the_reference_exactly_once():
    public = _public()
    entries, anchors = _occurrences()
    assert len(entries) > 500, "docs/api/*.md has lost its entries"
    counts: dict[str, list[str]] = {}
    for page, identifier in entries + anchors:
        counts.setdefault(identifier, []).append(page)
    missing = sorted(set(public) - set(counts))
    twice = {i: pages for i, pages in counts.items() if len(pages) > 1}
    assert not missing, f"public names with no entry in docs/api/*.md: {missing}"
    assert not twice, f"documented more than once: {twice}"


def test_every_entry_names_a_public_name():
    public = _public()
    entries, anchors = _occurrences()
    unknown = sorted({i for _, i in entries + anchors} - set(public))
    assert not unknown, f"docs/api/*.md documents names that are not public: {unknown}"
    # An anchor is a second public path of an object that an entry on the same page documents.
    for page, identifier in anchors:
        same = [i for p, i in entries if p == page and public[i] is public[identifier]]
        assert same, f"{page}: the anchor {identifier} has no entry for its object"


def test_every_public_name_has_a_docstring_of_its_own():
    lacking = [i for i, obj in _public().items() if not _has_own_docstring(i, obj)]
    assert not lacking, f"public names without a docstring of their own: {lacking}"


def test_the_build_hook_finds_the_reference_complete():
    # docs/hooks.py warns (so a strict build fails) on each of these.
    assert reference.problems() == []


def test_every_notebook_and_api_page_is_in_the_nav():
    config = (ROOT / "mkdocs.yml").read_text()
    nav = config[config.index("\nnav:") :]
    targets = set(re.findall(r"([\w./-]+\.(?:md|ipynb))\s*$", nav, re.M))
    notebooks = {f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert notebooks, "no notebooks found"
    assert not notebooks - targets, (
        f"notebooks missing from mkdocs.yml's nav: {notebooks - targets}"
    )
    api = {f"api/{name}" for name in _api_pages()}
    assert not api - targets, f"API pages missing from mkdocs.yml's nav: {api - targets}"


def test_rst_docstrings_become_markdown_with_maths():
    pytest.importorskip("griffe", reason="griffe comes with the docs extra")
    spec = importlib.util.spec_from_file_location("griffe_rst", DOCS / "griffe_rst.py")
    rst = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rst)
    import griffe

    with griffe.temporary_visited_module("def f():\n    pass\n") as module:
        context = module["f"]
        text = textwrap.dedent(
            """\
            Solves :math:`Ax = b` with ``tol`` (see :func:`~jaxsolve.implicit.fixed_point`,
            :class:`jaxsolve.pinn._weighting.GradNormWeighting` and :func:`not_a_name`):

            .. math:: x_{n+1} = x_n - J^{-1} f(x_n),
                \\qquad \\text{``quoted'' in LaTeX}

            and :meth:`~jaxsolve.diffusion.analytic.Empirical.condition` or a ``code
            span`` over two lines."""
        )
        expected = textwrap.dedent(
            """\
            Solves \\(Ax = b\\) with `tol` (see [`fixed_point`][jaxsolve.implicit.fixed_point],
            [`jaxsolve.pinn._weighting.GradNormWeighting`][jaxsolve.pinn.GradNormWeighting] and `not_a_name`):

            \\[
                x_{n+1} = x_n - J^{-1} f(x_n),
                \\qquad \\text{``quoted'' in LaTeX}
            \\]

            and <autoref optional identifier="jaxsolve.diffusion.analytic.Empirical.condition"><code>condition</code></autoref> or a `code
            span` over two lines."""
        )
        assert rst.convert(text, context) == expected


def _python_blocks(page: Path) -> list[str]:
    return [textwrap.dedent(code) for _, code in FENCE.findall(page.read_text())]


PAGES = sorted(p for p in DOCS.rglob("*.md") if _python_blocks(p))

# Runs every block in a namespace of its own and records each one's traceback (or None).
RUNNER = """
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
results = []
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"<{sys.argv[3]} block {i}>", "exec"), {"__name__": "__main__"})
        results.append(None)
    except BaseException:
        results.append(traceback.format_exc())
json.dump(results, open(sys.argv[2], "w"))
"""


def test_the_pages_have_python_examples():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert "index.md" in names and "install.md" in names, names


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_python_blocks_run(tmp_path, page):
    blocks = _python_blocks(page)
    for i, code in enumerate(blocks):
        assert "jax.config" not in code and "environ" not in code, (
            f"{page.name} block {i} changes JAX's configuration or the environment"
        )
    (tmp_path / "blocks.json").write_text(json.dumps(blocks))
    env = {**os.environ, "MPLBACKEND": "Agg", "JAXSOLVE_CACHE": str(tmp_path / "cache")}
    name = page.relative_to(DOCS).as_posix()
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNNER,
            str(tmp_path / "blocks.json"),
            str(tmp_path / "out.json"),
            name,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out.json").read_text())
    failed = [
        f"block {i}:\n{code}\n--- traceback ---\n{err[-3000:]}"
        for i, (code, err) in enumerate(zip(blocks, results, strict=True))
        if err is not None
    ]
    assert not failed, f"{name}: blocks failed:\n\n" + "\n\n".join(failed)


@pytest.mark.slow
@pytest.mark.ci
def test_mkdocs_build_is_strict_and_clean(tmp_path):
    for module in ("mkdocs", "material", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        pytest.importorskip(module, reason='the docs extra is not installed: pip install ".[docs]"')
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    problems = [line for line in proc.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0, "\n".join(problems) or proc.stderr[-5000:]
    assert (tmp_path / "site" / "api" / "index.html").exists()
