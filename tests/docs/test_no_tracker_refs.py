"""No issue-tracker references in the repository's text: no issue numbers, no markers saying
which piece of work owns a section. Code, docs and configuration must stand on their own."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()  # holds the patterns themselves

#: where the project's own text lives (top-level files and folders)
FILES = ("README.md", "pyproject.toml", "mkdocs.yml", ".pre-commit-config.yaml")
FOLDERS = ("dse", "renderers", "indexes", "tests", "docs", "bench", "notebooks", "scripts", "examples", ".ci")
SUFFIXES = {".py", ".pyi", ".md", ".toml", ".yml", ".yaml", ".sh", ".ipynb", ".cfg", ".ini", ".txt", ".html", ".js", ""}
SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", "node_modules"}

PATTERNS = [
    re.compile(r"\bissues?[\s#:_-]*\d+", re.IGNORECASE),  # "issue 5", "(issue #4)", "issues 6"
    re.compile(r"\bowned\s+by\b", re.IGNORECASE),  # "section owned by the ... work"
]


def _text_files() -> list[Path]:
    files = [ROOT / name for name in FILES if (ROOT / name).is_file()]
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES and not SKIP_DIRS & set(path.parts) and path != THIS:
                files.append(path)
    return files


def test_no_issue_numbers_or_ownership_markers() -> None:
    hits = []
    for path in _text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if any(p.search(line) for p in PATTERNS):
                hits.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not hits, "issue-tracker references:\n" + "\n".join(hits)


def test_the_patterns_catch_what_they_are_for() -> None:
    for text in ("<!-- section owned by the serving work (issue 6) -->", "see Issue #12", "(issues 4)", "issue-7"):
        assert any(p.search(text) for p in PATTERNS), text
    for text in ("tissue 5 samples", "an issue with the page", "the profile belongs to one worker"):
        assert not any(p.search(text) for p in PATTERNS), text
