"""Griffe extension for the API reference: the docstrings' reStructuredText markup as Markdown.

The docstrings use Sphinx roles (``:class:`~indexes.SingleVectorIndex` ``, ``:func:`render` ``)
and ``::`` literal-block markers; mkdocstrings renders docstrings as Markdown, where those would
show up verbatim. This extension rewrites, before rendering:

* a role ``:role:`target` `` -> a code span of the target (``~a.b.C`` -> ``C``; ``.mod`` -> ``mod``);
* a paragraph ending in ``::`` -> ending in ``:`` (the indented block that follows is already a
  Markdown code block);
* a ``>>>`` example (doctest) block -> a fenced ``pycon`` block.

Loaded by mkdocs.yml (``extensions: [docs/_ext/rst_roles.py:RstRoles]``); it changes only what
the documentation shows, never the code.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|mod|data|attr|exc|obj|const):`([^`]+)`")


def _role(match: re.Match[str]) -> str:
    target = match.group(1).strip()
    if target.startswith("~"):
        target = target[1:].rsplit(".", 1)[-1]
    return f"`{target.lstrip('.')}`"


def _doctest_blocks(text: str) -> str:
    out: list[str] = []
    in_block = False
    for line in text.splitlines():
        starts = line.startswith(">>> ")
        if starts and not in_block:
            out.append("```pycon")
            in_block = True
        elif in_block and not line.strip():
            out.append("```")
            in_block = False
        out.append(line)
    if in_block:
        out.append("```")
    return "\n".join(out)


def markdown_docstring(text: str) -> str:
    """``text`` (a docstring) with its reStructuredText markup rewritten as Markdown."""
    text = _ROLE.sub(_role, text)
    text = re.sub(r"(?m)(\S)\s*::$", r"\1:", text)
    text = re.sub(r"(?m)^::$", "", text)
    return _doctest_blocks(text)


class RstRoles(griffe.Extension):
    """Rewrite every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown_docstring(obj.docstring.value)
