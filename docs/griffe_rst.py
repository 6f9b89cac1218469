"""A griffe extension that turns jaxsolve's reST-flavoured docstrings into Markdown with maths.

jaxsolve's docstrings use a few reST constructs (Sphinx roles, ``.. math::`` directives, double
backticks) around Google-style ``Args:`` sections. mkdocstrings renders Markdown, so once the
package is loaded this extension rewrites every docstring in memory (the source is never touched):

* ``:math:`x``` becomes ``\\(x\\)`` and a ``.. math::`` directive (its argument and its indented
  body) becomes a display block ``\\[ ... \\]``; pymdownx.arithmatex hands both to MathJax;
* ``:class:`` / ``:func:`` / ``:meth:`` / ``:attr:`` / ``:data:`` / ``:mod:`` become autorefs links
  when the target is documented in the API reference, and inline code otherwise. A target is
  resolved the way Python would: by importing it (absolute, or relative to the docstring's own
  module, class and public package), so a private path such as
  ``jaxsolve.pinn._weighting.grad_norm_weighting`` links to the public page of the same object. A
  link to a top-level name (an ``:::`` entry of ``docs/api/*.md``) is strict: if it does not
  resolve, ``mkdocs build --strict`` fails. A link to a member (a method or an attribute of a
  documented class) is marked optional, since whether a member is rendered is the renderer's call;
* double backticks become single ones (Markdown inline code).

mkdocs.yml loads it as ``docs/griffe_rst.py:RstToMarkdown`` (mkdocstrings' python handler,
``options: extensions:``). It imports jaxsolve to resolve references.
"""

from __future__ import annotations

import importlib
import inspect
import re
from functools import cache
from pathlib import Path
from typing import Any

import griffe

_API = Path(__file__).resolve().parent / "api"
_ENTRY = re.compile(r"^::: +([\w.]+)\s*$", re.M)

# A code span may wrap onto the next line, never across a blank line.
_INLINE = re.compile(
    r":(?P<role>math|class|func|meth|attr|data|mod|obj|exc):`(?P<target>[^`]*)`"
    r"|``(?P<code>(?:[^`\n]|\n(?![ \t]*\n)|`(?!`))+?)``"
)
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _import(path: str) -> Any:
    """The object a dotted path names, found by importing its longest module prefix."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


@cache
def _documented() -> dict[int, tuple[str, Any]]:
    """``id(object) -> (identifier, object)`` for every ``:::`` entry of the API pages."""
    found: dict[int, tuple[str, Any]] = {}
    for page in sorted(_API.glob("*.md")):
        for identifier in _ENTRY.findall(page.read_text()):
            obj = _import(identifier)
            # Strings and numbers may be shared by identity with unrelated values: never link them.
            if not isinstance(obj, str | int | float):
                found.setdefault(id(obj), (identifier, obj))
    return found


def _public(path: str) -> str:
    """``jaxsolve.diffusion._solvers.unipc`` -> ``jaxsolve.diffusion``."""
    parts = path.split(".")
    private = [i for i, part in enumerate(parts) if part.startswith("_")]
    return ".".join(parts[: private[0]] if private else parts)


def _candidates(target: str, context: griffe.Object) -> list[str]:
    """Absolute paths ``target`` may mean, seen from ``context`` (Sphinx's search order)."""
    target = target.lstrip(".")
    if target.startswith("jaxsolve"):
        return [target]
    scopes = []
    holder = context
    while holder is not None:
        if holder.is_class or holder.is_module:
            scopes.append(holder.path)
        holder = holder.parent
    module = context.module.path
    scopes.append(_public(module))
    scopes += ["jaxsolve.diffusion", "jaxsolve"]
    out = []
    for scope in scopes:
        if f"{scope}.{target}" not in out:
            out.append(f"{scope}.{target}")
    return out


def _resolve(target: str, context: griffe.Object) -> tuple[str, bool] | None:
    """``(identifier, strict)`` of the documented object ``target`` names, or None."""
    documented = _documented()
    for path in _candidates(target, context):
        try:
            obj = _import(path)
        except (ImportError, AttributeError):
            continue
        if id(obj) in documented and documented[id(obj)][1] is obj:
            return documented[id(obj)][0], True
        # A member of a documented class: Class.member, resolved through the class.
        owner_path, _, member = path.rpartition(".")
        try:
            owner = _import(owner_path)
        except (ImportError, AttributeError):
            continue
        if inspect.isclass(owner) and id(owner) in documented:
            return f"{documented[id(owner)][0]}.{member}", False
        return None
    return None


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _inline(text: str, context: griffe.Object) -> str:
    def replace(match: re.Match) -> str:
        if match["code"] is not None:
            return _code(match["code"])
        role, target = match["role"], match["target"]
        if role == "math":
            return rf"\({target}\)"
        shown = target.lstrip("~")
        if target.startswith("~"):
            shown = shown.rsplit(".", 1)[-1]
        found = _resolve(target.lstrip("~"), context)
        if found is None:
            return _code(shown)
        identifier, strict = found
        if strict:
            return f"[{_code(shown)}][{identifier}]"
        return f'<autoref optional identifier="{identifier}"><code>{shown}</code></autoref>'

    return _INLINE.sub(replace, text)


def _blocks(text: str) -> list[tuple[str, bool]]:
    """The text as ``(segment, is_maths)`` pieces, each ``.. math::`` directive a display block
    ``\\[ ... \\]`` at the directive's indentation."""
    lines = text.split("\n")
    pieces: list[tuple[str, bool]] = []
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = match["indent"]
        body = [match["rest"].strip()] if match["rest"].strip() else []
        i += 1
        while i < len(lines):
            line = lines[i]
            if line.strip() and len(line) - len(line.lstrip()) <= len(indent):
                break
            if line.strip():
                body.append(line.strip())
            i += 1
        if out and out[-1].strip():
            out.append("")
        pieces.append(("\n".join(out), False))
        maths = [f"{indent}\\[", *(f"{indent}    {b}" for b in body), f"{indent}\\]"]
        pieces.append(("\n".join(maths), True))
        out = [""]
    pieces.append(("\n".join(out), False))
    return pieces


def convert(text: str, context: griffe.Object) -> str:
    """The Markdown form of one reST-flavoured docstring of ``context``."""
    # The maths of a display block is left alone: LaTeX's ``quotes'' are not code spans.
    return "\n".join(piece if maths else _inline(piece, context) for piece, maths in _blocks(text))


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring of the loaded package (see the module docstring)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        seen: set[str] = set()

        def visit(obj: griffe.Object) -> None:
            if obj.path in seen:
                return
            seen.add(obj.path)
            if obj.docstring is not None:
                obj.docstring.value = convert(obj.docstring.value, obj)
            for member in obj.members.values():
                if not member.is_alias:
                    visit(member)

        visit(pkg)
