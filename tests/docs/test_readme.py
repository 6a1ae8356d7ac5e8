"""README.md's two commands stay in sync with the scripts that CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> dict[str, str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    found = {}
    for label in ("main job", "tests"):
        m = re.search(rf"<!-- command: {label} -->\s*```(?:bash|sh)?\n(.+?)\n```", text, re.S)
        assert m, f"README.md has no '{label}' command block"
        found[label] = m.group(1).strip()
    return found


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()
    assert ci[-1].strip() == _readme_commands()["tests"]


def test_main_job_command_points_at_existing_scripts_and_examples() -> None:
    cmd = _readme_commands()["main job"]
    for script in re.findall(r"scripts/[\w.]+", cmd):
        assert (ROOT / script).is_file(), script
    docs = sorted(p.suffix for p in (ROOT / "examples" / "docs").iterdir())
    assert docs == [".docx", ".html", ".pdf", ".pptx"]


#: the README pitches and links; details belong in docs/
README_MAX_BYTES = 20_000


def test_readme_stays_under_20_kb() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_MAX_BYTES, (
        f"README.md is {size} bytes (at most {README_MAX_BYTES}): move details to the pages under docs/"
    )


def test_readme_links_point_at_existing_files() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t and not t.startswith("#")]
    assert any(t.startswith("docs/") for t in targets), "README.md links to no docs page"
    missing = [t for t in targets if not (ROOT / t.split("#", 1)[0]).exists()]
    assert not missing, f"README.md links to missing files: {missing}"
