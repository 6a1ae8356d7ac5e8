"""Optional extras: a missing one gives one line saying what to install, from Python (an
ImportError) and from the command line (``dse CMD: error: ...``, no traceback); the core install
(render, index, search) imports no extra-only package.

A package is made missing the way Python sees an absent one: ``sys.modules[name] = None``
(``import name`` raises ModuleNotFoundError, ``importlib.util.find_spec(name)`` is None), in
this process (monkeypatch) or, for the command line, in a child process through a
``sitecustomize`` module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dse import extras
from dse.extras import EXTRAS, MissingExtraError, install_hint, require

REPO = Path(__file__).resolve().parents[2]
#: every module of every extra (what a core-only install lacks)
ALL_EXTRA_MODULES = sorted({m for modules in EXTRAS.values() for m in modules})


def _hide(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    monkeypatch.setattr(extras, "_installed", set())
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def _run_without(modules: list[str], args: list[str], tmp_path: Path, **kw) -> subprocess.CompletedProcess[str]:
    """Run ``python args...`` in a child process where ``modules`` cannot be imported."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nfor _name in {list(modules)!r}:\n    sys.modules[_name] = None\n", encoding="utf-8"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600, **kw
    )


# --------------------------------------------------------------------------- from Python


@pytest.mark.parametrize(
    "extra, module",
    [
        ("web", "playwright"),
        ("serve", "fastapi"),
        ("serve", "matplotlib"),
        ("eval", "pytrec_eval"),
        ("eval", "datasets"),
        ("train", "datasets"),
        ("notebooks", "nbclient"),
        ("qdrant", "qdrant_client"),
        ("ray", "ray"),
    ],
)
def test_require_names_the_extra_to_install(monkeypatch: pytest.MonkeyPatch, extra: str, module: str) -> None:
    require(extra)  # installed in the test environment (all extras)
    _hide(monkeypatch, module)
    assert not extras.is_installed(extra) and extras.missing_modules(extra) == [module]
    with pytest.raises(ImportError) as info:
        require(extra)
    assert isinstance(info.value, MissingExtraError)
    assert str(info.value) == f"the '{extra}' extra is not installed: pip install 'dse[{extra}]'"
    assert info.value.extra == extra and info.value.name == module


def test_unknown_extra_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown extra 'gpu-magic'; known: web, serve"):
        require("gpu-magic")


def test_library_entry_points_raise_the_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The functions behind the extras raise MissingExtraError before touching the package."""
    from dse.encoders.similarity import similarity_map
    from dse.eval.metrics import compute_metrics
    from dse.training.data import open_hub_dataset

    _hide(monkeypatch, "pytrec_eval", "datasets", "einops")
    with pytest.raises(MissingExtraError, match=r"^the 'eval' extra is not installed: pip install 'dse\[eval\]'$"):
        compute_metrics({"q": {"d": 1.0}}, {"q": {"d": 1}})
    with pytest.raises(MissingExtraError, match=r"'train' extra"):
        open_hub_dataset(str(tmp_path))
    # the serve extra is checked after the query text and before any encoding
    with pytest.raises(MissingExtraError, match=r"'serve' extra"):
        similarity_map(_FakeMultiEncoder(), None, "a query")  # type: ignore[arg-type]


class _FakeMultiEncoder:
    """Stands in for an encoder only to reach the extra check (the check comes before any model use)."""

    kind = "multi"
    family = "colqwen2"


def test_renderers_hint_matches_dse(monkeypatch: pytest.MonkeyPatch) -> None:
    from renderers import RenderError, WebExtraMissingError
    from renderers.errors import WEB_EXTRA_HINT
    from renderers.web import require_playwright

    assert install_hint("web") == WEB_EXTRA_HINT
    require_playwright()
    monkeypatch.setitem(sys.modules, "playwright", None)
    with pytest.raises(WebExtraMissingError) as info:
        require_playwright()
    assert isinstance(info.value, ImportError) and isinstance(info.value, RenderError)
    assert str(info.value) == WEB_EXTRA_HINT


# --------------------------------------------------------------------------- command line


def _one_error_line(proc: subprocess.CompletedProcess[str], command: str, extra: str) -> None:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"dse {command}: error: the '{extra}' extra is not installed: pip install 'dse[{extra}]'"], (
        proc.stderr
    )
    assert proc.returncode == 3, proc.returncode


@pytest.mark.subprocess
@pytest.mark.parametrize(
    "command, args, blocked, extra",
    [
        ("serve", ["serve", "-c", "col"], ["fastapi", "uvicorn"], "serve"),
        ("eval", ["eval", "--data-dir", "."], ["pytrec_eval"], "eval"),
        ("eval compare", ["eval", "compare", "a", "b"], ["pytrec_eval"], "eval"),
        ("train", ["train", "--data", ".", "--out", "out"], ["datasets"], "train"),
        ("mine-negatives", ["mine-negatives", "--data", ".", "--out", "neg.jsonl"], ["pytrec_eval"], "train"),
    ],
)
def test_cli_prints_one_line(tmp_path: Path, command: str, args: list[str], blocked: list[str], extra: str) -> None:
    proc = _run_without(blocked, ["-m", "dse", *args], tmp_path)
    _one_error_line(proc, command, extra)


@pytest.mark.subprocess
@pytest.mark.parametrize("extra", ["qdrant", "ray"])
def test_child_process_without_extra(tmp_path: Path, extra: str) -> None:
    """qdrant and ray have no command of their own yet: the Python hint, in a process that lacks them."""
    code = f"from dse.extras import require\ntry:\n    require({extra!r})\nexcept ImportError as exc:\n    print(exc)\n"
    proc = _run_without(list(EXTRAS[extra]), ["-c", code], tmp_path)
    assert proc.returncode == 0 and proc.stdout == f"{install_hint(extra)}\n", proc.stderr


@pytest.mark.subprocess
def test_web_page_fails_with_the_hint_and_the_rest_renders(tmp_path: Path) -> None:
    from support.docs import make_pdf

    make_pdf(tmp_path / "doc.pdf", 1, seed=1)
    (tmp_path / "page.html").write_text("<html><body><h1>hello</h1></body></html>", encoding="utf-8")
    proc = _run_without(
        ["playwright"], ["-m", "dse", "render", "doc.pdf", "page.html", "--out", "out", "--dpi", "36"], tmp_path
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1  # partial: the PDF rendered, the web page failed
    failed = [line for line in proc.stderr.splitlines() if "page.html" in line]
    assert len(failed) == 1 and failed[0].endswith(": the 'web' extra is not installed: pip install 'dse[web]'")
    assert "rendered 1 pages from 1 documents; 1 failures" in proc.stdout


@pytest.mark.subprocess
def test_core_install_indexes_and_searches_without_any_extra(tmp_path: Path, tiny_model_dir) -> None:
    """Every module but dse.server imports without the extras; index + search + stats work."""
    from support.docs import make_pdf

    code = (
        "import importlib, pkgutil, dse, renderers, indexes\n"
        "for pkg in (dse, renderers, indexes):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if m.name.startswith('dse.server') or m.name.endswith('__main__'):\n"
        "            continue\n"
        "        importlib.import_module(m.name)\n"
        "print('imported')\n"
    )
    proc = _run_without(ALL_EXTRA_MODULES, ["-c", code], tmp_path)
    assert proc.returncode == 0 and proc.stdout == "imported\n", proc.stderr[-2000:]
    (tmp_path / "docs").mkdir()
    make_pdf(tmp_path / "docs" / "report.pdf", 2, seed=5)
    model = str(tiny_model_dir("dse-qwen2"))
    index = _run_without(
        ALL_EXTRA_MODULES,
        ["-m", "dse", "-q", "index", "docs", "-c", "col", "--model", model, "--device", "cpu"],
        tmp_path,
    )
    assert index.returncode == 0, index.stderr[-2000:]
    search = _run_without(ALL_EXTRA_MODULES, ["-m", "dse", "search", "revenue", "-c", "col", "-k", "2"], tmp_path)
    assert search.returncode == 0 and len(search.stdout.splitlines()) == 2, search.stderr[-2000:]
    stats = _run_without(ALL_EXTRA_MODULES, ["-m", "dse", "stats", "-c", "col"], tmp_path)
    assert stats.returncode == 0 and "pages: 2" in stats.stdout, stats.stdout
