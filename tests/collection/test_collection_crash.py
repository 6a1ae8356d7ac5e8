"""The crash test: SIGKILL the indexer at every durable step of a real run (and at a random
moment from outside), re-run the same command, and check the collection equals an
uninterrupted run's: same pages, one vector set per page, no orphans, no duplicates."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.collections import check_index_matches_store
from support.docs import make_pdf

from dse.collection import Collection

pytestmark = pytest.mark.subprocess


@pytest.fixture(scope="module")
def pdfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("crash-src")
    make_pdf(root / "a.pdf", 4, seed=11)
    make_pdf(root / "b.pdf", 3, seed=12)
    make_pdf(root / "c.pdf", 2, seed=13)
    return root


def _index(src: Path, col: Path, model: Path, crash: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("DSE_CRASH_AT", None)
    if crash:
        env["DSE_CRASH_AT"] = crash
    cmd = [
        sys.executable,
        "-m",
        "dse",
        "index",
        str(src),
        "--collection",
        str(col),
        "--model",
        str(model),
        "--device",
        "cpu",
        "--dpi",
        "30",
        "--batch-size",
        "2",
        "--commit-every",
        "2",
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _snapshot(col_dir: Path) -> tuple[set[tuple[str, int]], int]:
    """(the (file name, page) pairs stored, the number of vectors), after checking consistency."""
    col = Collection.open(col_dir, device="cpu")
    try:
        stored = check_index_matches_store(col)
        assert all(d.status == "complete" for d in col.store.documents())
        rows = col.store.pages(sorted(stored))
        pages = {(Path(r.source).name, r.page) for r in rows.values()}
        assert len(pages) == len(rows), "a page is stored twice"
        return pages, len(stored)
    finally:
        col.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, pdfs: Path, tiny_model_dir) -> set[tuple[str, int]]:
    col = tmp_path_factory.mktemp("ref") / "c"
    proc = _index(pdfs, col, tiny_model_dir("dse-qwen2"))
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    pages, n_vectors = _snapshot(col)
    assert n_vectors == 9 and len(pages) == 9
    return pages


@pytest.mark.parametrize(
    "point",
    [
        "after_image:3",
        "after_pending:4",
        "after_index_add:2",
        "after_index_save:2",
        "after_mark_stored:1",
        "after_finish_doc:1",
        "after_finish_doc:2",
    ],
)
def test_sigkill_at_each_step_then_rerun(point: str, tmp_path: Path, pdfs: Path, reference, tiny_model_dir) -> None:
    col = tmp_path / "c"
    model = tiny_model_dir("dse-qwen2")
    proc = _index(pdfs, col, model, crash=point)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, f"the crash point {point} was not reached"
    proc = _index(pdfs, col, model)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    pages, n_vectors = _snapshot(col)
    assert pages == reference
    assert n_vectors == len(reference)


@pytest.mark.parametrize("point", ["after_mark_removing:1", "after_remove_vectors:1"])
def test_sigkill_during_replacement(point: str, tmp_path: Path, pdfs: Path, reference, tiny_model_dir) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for f in pdfs.iterdir():
        (src / f.name).write_bytes(f.read_bytes())
    col = tmp_path / "c"
    model = tiny_model_dir("dse-qwen2")
    assert _index(src, col, model).wait(timeout=600) == 0
    make_pdf(src / "b.pdf", 5, seed=99)  # changed: the old version is removed, then the new one indexed
    proc = _index(src, col, model, crash=point)
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert _index(src, col, model).wait(timeout=600) == 0
    pages, n_vectors = _snapshot(col)
    expected = {p for p in reference if p[0] != "b.pdf"} | {("b.pdf", i) for i in range(1, 6)}
    assert pages == expected and n_vectors == len(expected)


def test_sigkill_from_outside_at_a_random_moment(tmp_path: Path, pdfs: Path, reference, tiny_model_dir) -> None:
    col = tmp_path / "c"
    model = tiny_model_dir("dse-qwen2")
    proc = _index(pdfs, col, model)
    deadline = time.monotonic() + 300
    stored = 0
    while time.monotonic() < deadline and proc.poll() is None:  # kill once some pages are durable
        db = col / "meta.sqlite"
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=0.1) as con:
                    stored = con.execute("SELECT COUNT(*) FROM pages WHERE status='stored'").fetchone()[0]
            except sqlite3.Error:
                stored = 0
            if stored >= 3:
                break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert _index(pdfs, col, model).wait(timeout=600) == 0
    pages, n_vectors = _snapshot(col)
    assert pages == reference and n_vectors == len(reference)
