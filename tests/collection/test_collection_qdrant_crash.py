"""Exactly once with the Qdrant backend: SIGKILL ``dse index --backend qdrant`` (local mode,
``--qdrant-url path:DIR``) at the durable steps, re-run the same command, and check that Qdrant
and SQLite agree and hold the same pages as an uninterrupted run: no orphan point, no missing
one. Also a kill in the middle of ``dse export``, resumed by running it again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.docs import make_pdf

pytest.importorskip("qdrant_client")

from dse.collection import Collection

# each run imports torch and loads a model in a child process: the default run keeps the two
# Qdrant-specific cases (points acknowledged but not marked stored; an interrupted export), the
# other steps run with -m heavy (the local backend's crash test covers their SQLite side)
pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("qcrash-src")
    make_pdf(root / "a.pdf", 3, seed=31)
    make_pdf(root / "b.pdf", 2, seed=32)
    make_pdf(root / "c.pdf", 2, seed=33)
    return root


def _run(args: list[str], crash: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DSE_CRASH_AT", None)
    if crash:
        env["DSE_CRASH_AT"] = crash
    cmd = [sys.executable, "-m", "dse", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _index(src: Path, col: Path, model: Path, crash: str | None = None) -> subprocess.Popen[str]:
    qdrant = col.parent / "qdrant"
    args = ["index", str(src), "-c", str(col), "-m", str(model), "--qdrant-url", f"path:{qdrant}"]
    args += ["--device", "cpu", "--dpi", "30", "--batch-size", "2", "--commit-every", "2"]
    return _run(args, crash)


def _points(col: Path) -> int:
    """Points in the local-mode Qdrant of ``col``, read without dse (no reconciliation)."""
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(col.parent / "qdrant"))
    try:
        (name,) = [c.name for c in client.get_collections().collections]
        return int(client.count(name, exact=True).count)
    finally:
        client.close()


def _stored(col: Path) -> int:
    with sqlite3.connect(col / "meta.sqlite") as db:
        return int(db.execute("SELECT COUNT(*) FROM pages WHERE status='stored'").fetchone()[0])


def _snapshot(col_dir: Path) -> set[tuple[str, int]]:
    """The (file name, page) pairs stored, after checking that Qdrant and SQLite agree."""
    col = Collection.open(col_dir, device="cpu")
    try:
        assert col.backend == "qdrant"
        ids = np.asarray(col.index.stored_ids()).tolist()
        assert len(ids) == len(set(ids)), "duplicate points"
        stored = col.store.stored_page_ids()
        assert set(ids) == stored, f"orphan points {set(ids) - stored}, missing points {stored - set(ids)}"
        assert col.consistency is not None and col.consistency["missing_points"] == 0
        assert all(d.status == "complete" for d in col.store.documents())
        rows = col.store.pages(sorted(stored))
        pages = {(Path(r.source).name, r.page) for r in rows.values()}
        assert len(pages) == len(rows), "a page is stored twice"
        return pages
    finally:
        col.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, pdfs: Path, tiny_model_dir) -> set[tuple[str, int]]:
    col = tmp_path_factory.mktemp("qref") / "c"
    proc = _index(pdfs, col, tiny_model_dir("dse-qwen2"))
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    pages = _snapshot(col)
    assert len(pages) == 7
    return pages


@pytest.mark.parametrize(
    "point",
    [
        "after_index_save:2",  # acknowledged by Qdrant, not yet marked stored: orphan points
        pytest.param("after_index_add:2", marks=pytest.mark.heavy),  # buffered, nothing sent to Qdrant
        pytest.param("after_mark_stored:1", marks=pytest.mark.heavy),
        pytest.param("after_pending:3", marks=pytest.mark.heavy),
        pytest.param("after_finish_doc:1", marks=pytest.mark.heavy),
    ],
)
def test_sigkill_at_each_step_then_rerun(point: str, tmp_path: Path, pdfs: Path, reference, tiny_model_dir) -> None:
    col = tmp_path / "c"
    model = tiny_model_dir("dse-qwen2")
    proc = _index(pdfs, col, model, crash=point)
    proc.communicate(timeout=900)
    assert proc.returncode == -signal.SIGKILL, f"the crash point {point} was not reached"
    if point.startswith("after_index_save"):
        assert _points(col) > _stored(col), "Qdrant acknowledged points that SQLite has not marked stored"
    proc = _index(pdfs, col, model)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert _snapshot(col) == reference


@pytest.mark.heavy
@pytest.mark.parametrize("point", ["after_mark_removing:1", "after_remove_vectors:1"])
def test_sigkill_during_replacement(point: str, tmp_path: Path, pdfs: Path, reference, tiny_model_dir) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in pdfs.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    col = tmp_path / "c"
    model = tiny_model_dir("dse-qwen2")
    assert _index(src, col, model).wait(timeout=900) == 0
    make_pdf(src / "b.pdf", 4, seed=99)  # changed: the old version is removed (points deleted), the new one indexed
    proc = _index(src, col, model, crash=point)
    proc.communicate(timeout=900)
    assert proc.returncode == -signal.SIGKILL
    assert _index(src, col, model).wait(timeout=900) == 0
    expected = {p for p in reference if p[0] != "b.pdf"} | {("b.pdf", i) for i in range(1, 5)}
    assert _snapshot(col) == expected


def test_sigkill_during_export_then_rerun(tmp_path: Path, pdfs: Path, reference, tiny_model_dir) -> None:
    local = tmp_path / "local"
    args = ["index", str(pdfs), "-c", str(local), "-m", str(tiny_model_dir("dse-qwen2")), "--device", "cpu"]
    assert _run([*args, "--dpi", "30"]).wait(timeout=900) == 0
    export = ["export", "-c", str(local), "--to-qdrant", f"path:{tmp_path / 'qdrant'}", "--out", str(tmp_path / "c")]
    proc = _run([*export, "--batch-size", "3"], crash="export_after_batch:1")
    proc.communicate(timeout=900)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "c" / "collection.json").exists(), "not a collection until the export finished"
    proc = _run([*export, "--batch-size", "3", "--json"])
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    assert '"already": 3' in out and '"sent": 4' in out
    assert _snapshot(tmp_path / "c") == reference
