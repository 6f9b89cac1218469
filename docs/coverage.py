"""What the API reference must cover: every public name once, each with a docstring of its own.

``mkdocs build --strict`` cannot see a public name the reference leaves out, nor one without a
docstring (mkdocstrings renders an undocumented object without a word), so ``docs/hooks.py`` runs
:func:`problems` before every build and turns each into a warning, which fails a strict build;
``tests/test_docs.py`` asserts on the same functions one check at a time.

A public name is a name of an ``__all__`` of :data:`MODULES`. Its entry is a ``::: <public path>``
line in ``docs/api/*.md``, or, for a second public path of the same object, a Markdown anchor
``[](){#<public path>}`` beside the entry that documents it. An attribute's docstring is the
string literal under its assignment, as griffe reads it.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import sys
import types
from pathlib import Path

DOCS = Path(__file__).resolve().parent
MODULES = (
    "jaxsolve",
    "jaxsolve.diffusion",
    "jaxsolve.diffusion.analytic",
    "jaxsolve.diffusion.fewstep",
    "jaxsolve.diffusion.inverse",
    "jaxsolve.diffusion.losses",
    "jaxsolve.operators",
    "jaxsolve.implicit",
    "jaxsolve.ode",
    "jaxsolve.pde",
    "jaxsolve.pinn",
    "jaxsolve.train",
    "jaxsolve.data",
    "jaxsolve.sharding",
)
ENTRY = re.compile(r"^::: +([\w.]+)\s*$", re.M)
ANCHOR = re.compile(r"^\[\]\(\)\{#([\w.]+)\}\s*$", re.M)


def _public() -> dict[str, object]:
    """``public path -> object`` for every name of every ``__all__`` above."""
    found = {}
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            found[f"{module_name}.{name}"] = getattr(module, name)
    return found


def _api_pages() -> dict[str, str]:
    """``page name -> text`` of every API reference page."""
    return {p.name: p.read_text() for p in sorted((DOCS / "api").glob("*.md"))}


def _occurrences() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(page, identifier)`` of every ``:::`` entry and of every alias anchor."""
    entries, anchors = [], []
    for page, text in _api_pages().items():
        entries += [(page, i) for i in ENTRY.findall(text)]
        anchors += [(page, i) for i in ANCHOR.findall(text)]
    return entries, anchors


def _attribute_docstrings(path: str) -> set[str]:
    """Names assigned at the top of a module file and followed by a string literal."""
    tree = ast.parse(Path(path).read_text())
    found = set()
    for statement, after in zip(tree.body, tree.body[1:], strict=False):
        is_doc = (
            isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
            and after.value.value.strip()
        )
        if not is_doc:
            continue
        if isinstance(statement, ast.Assign):
            found |= {t.id for t in statement.targets if isinstance(t, ast.Name)}
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            found.add(statement.target.id)
    return found


def _has_own_docstring(identifier: str, obj: object) -> bool:
    if inspect.isclass(obj):
        doc = obj.__dict__.get("__doc__")  # not a base class's
    elif isinstance(obj, types.ModuleType) or inspect.isroutine(obj) or hasattr(obj, "__wrapped__"):
        doc = obj.__doc__  # a module, a function or a jitted function
    else:
        # A value (a table, a tuple, an instance): the string under its assignment, in the module
        # that assigns it (that module is where the public path's object came from).
        name = identifier.rsplit(".", 1)[1]
        homes = [
            m
            for m in list(sys.modules.values())
            if getattr(m, "__name__", "").startswith("jaxsolve")
            and getattr(m, "__file__", None)
            and m.__dict__.get(name) is obj
        ]
        return any(name in _attribute_docstrings(m.__file__) for m in homes)
    return bool(doc and doc.strip())


def problems() -> list[str]:
    """Every way the reference falls short of the public names, one line each (none: complete)."""
    public = _public()
    entries, anchors = _occurrences()
    found = []
    counts: dict[str, list[str]] = {}
    for page, identifier in entries + anchors:
        counts.setdefault(identifier, []).append(page)
    found += [
        f"{i}: public, but no entry in docs/api/*.md" for i in sorted(set(public) - set(counts))
    ]
    found += [
        f"{i}: documented more than once ({pages})" for i, pages in counts.items() if len(pages) > 1
    ]
    found += [
        f"{i}: an entry in docs/api/*.md, but not a public name"
        for i in sorted(set(counts) - set(public))
    ]
    found += [
        f"{i}: public, without a docstring of its own"
        for i, obj in public.items()
        if not _has_own_docstring(i, obj)
    ]
    return found
