"""The data generator and ground truth of ``bench/scale.py`` (cheap), and a heavy smoke run of the script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import scale_data  # noqa: E402


def test_generator_is_deterministic_unit_norm_and_structured(tmp_path: Path) -> None:
    d = scale_data.ensure_data(tmp_path, 60, 40, 6, seed=3, log=lambda _: None)
    pages = scale_data.load_pages(d, 40)
    assert pages.shape == (60, 40, 128) and pages.dtype == np.float16
    x = np.asarray(pages, np.float32)
    np.testing.assert_allclose(np.linalg.norm(x, axis=2), 1.0, atol=2e-3)
    again = scale_data.Generator(60, 40, seed=3).chunk(0)[0]
    np.testing.assert_array_equal(pages, again.astype(np.float16))
    # background rows (after the content rows) are near-duplicates of a few shared prototypes
    n_content = np.load(d / "n_content.npy")
    bg = x[0, n_content[0] :]
    assert (bg @ bg.T).max(axis=1).min() > 0.9
    q = np.load(d / "queries-q6.npy")
    assert q.shape == (6, 20, 128)


def test_ground_truth_matches_brute_force(tmp_path: Path) -> None:
    d = scale_data.ensure_data(tmp_path, 50, 30, 4, log=lambda _: None)
    ids, scores = scale_data.ground_truth(d, 30, 4, k=20, chunk_pages=7, log=lambda _: None)
    x = np.asarray(scale_data.load_pages(d, 30), np.float32)
    q = np.load(d / "queries-q4.npy")
    brute = np.einsum("qtd,pvd->qptv", q, x).max(axis=3).sum(axis=2)
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1)[:, :20], rtol=1e-5)
    assert (ids[:, 0] == brute.argmax(axis=1)).all()
    targets = np.load(d / "targets-q4.npy")
    assert (ids[:, 0] == targets).all()  # the query's target page is its exact best match


@pytest.mark.heavy
@pytest.mark.subprocess
def test_scale_script_smoke(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "scale.py"),
            "--cache",
            str(tmp_path),
            "--pages",
            "300",
            "--queries",
            "5",
            "--latency-queries",
            "2",
            "--systems",
            "ours-exact,ours-muvera-int8-k4d16r16,qdrant-sq",
            "--fde",
            "4/16/16",
            "--codecs",
            "int8",
            "--n-candidates",
            "100",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    assert "| ours exact float16 [baseline] | - | 1.000 | 1.000 |" in proc.stdout
    assert "not run" not in proc.stdout
    res = json.loads((tmp_path / "results" / "p300-v260-s0-q5" / "qdrant-sq.json").read_text())
    assert res["disk"]["cand"] > 0 and res["disk"]["vectors"] > 0


@pytest.mark.subprocess
def test_candidate_generators_script(tmp_path: Path) -> None:
    """bench/scale_candidates.py on a small corpus: every generator keeps most of the top 10 at n = all pages."""
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "scale_candidates.py"),
            "--cache",
            str(tmp_path),
            "--pages",
            "300",
            "--vectors-per-page",
            "20",
            "--queries",
            "4",
            "--n",
            "10,300",
            "--fde",
            "2/8/2",
            "--centroids",
            "64",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {line.split("|")[1].strip(): line.split("|") for line in proc.stdout.splitlines() if line.startswith("| ")}
    assert set(rows) >= {"muvera", "muvera-pq", "muvera-hnsw", "centroids"}
    for name in ("muvera", "muvera-pq", "muvera-hnsw", "centroids"):
        assert float(rows[name][3]) == 1.0  # n = every page: the whole top 10
        assert 0.0 <= float(rows[name][2]) <= 1.0
