"""``bench/scale_real.py`` end to end on 12 pages of a real PDF with the tiny ColQwen2, then ``bench/scale.py --data``.

The ``bench/scale.py --data`` run is ``heavy``: its build and search child processes each import
torch (~80 s on the loaded 2-core machine).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import scale_data  # noqa: E402
import scale_real  # noqa: E402

PDF = Path("/usr/share/doc/shared-mime-info/shared-mime-info-spec.pdf")
PAGES, QUERIES, TOKENS = 12, 3, 20

pytestmark = pytest.mark.skipif(not PDF.is_file(), reason=f"{PDF} not installed (Debian package shared-mime-info)")


def argv(out: Path, model: Path) -> list[str]:
    return [
        *("--sources", str(PDF), "--pages", str(PAGES), "--out", str(out)),
        *("--queries", str(QUERIES), "--query-tokens", str(TOKENS)),
        *("--width", "224", "--height", "280", "--model", str(model), "--chunk-pages", "5"),
    ]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Callable[[str], Path]) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("real") / "corpus"
    model = tiny_model_dir("colqwen2")
    assert scale_real.main(argv(out, model)) == 0
    return out, model


def test_corpus_files_shapes_and_resume(corpus: tuple[Path, Path], caplog: pytest.LogCaptureFixture) -> None:
    out, model = corpus
    meta = json.loads((out / "meta.json").read_text())
    v = meta["vectors_per_page"]
    assert meta["kind"] == "real-colqwen2-tiny" and meta["pages"] == PAGES and meta["dim"] == 128
    assert meta["visual_tokens"] == 8 * 10 and v > 80  # visual tokens + the prompt's text tokens
    assert meta["sources"] == [{"path": str(PDF), "pages": 17, "used": PAGES}]
    assert meta["queries"]["tokens"] == TOKENS
    vec = np.load(out / "vectors.f16.npy")
    assert vec.shape == (PAGES * v, 128) and vec.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(vec.astype(np.float32), axis=1), 1.0, atol=3e-3)
    pages = vec.reshape(PAGES, v, 128).astype(np.float32)
    assert np.abs(pages[0] - pages[1]).max() > 0.1  # different pages, different vectors
    assert (np.load(out / "n_content.npy") == v).all()
    assert len(json.loads((out / "pages.json").read_text())) == PAGES
    q = np.load(out / f"queries-q{QUERIES}.npy")
    assert q.shape == (QUERIES, TOKENS, 128) and q.dtype == np.float32
    texts = json.loads((out / f"queries-q{QUERIES}.json").read_text())
    assert len({t["page"] for t in texts}) == QUERIES and all(t["text"] for t in texts)
    assert [t["page"] for t in texts] == np.load(out / f"targets-q{QUERIES}.npy").tolist()

    # a rerun with the same arguments resumes after the last chunk: nothing is re-encoded
    with caplog.at_level(logging.INFO, logger="scale_real"):
        assert scale_real.main(argv(out, model)) == 0
    assert f"resuming after {PAGES} of {PAGES} pages" in caplog.text
    assert "encoded" not in caplog.text
    np.testing.assert_array_equal(np.load(out / "vectors.f16.npy"), vec)
    np.testing.assert_array_equal(np.load(out / f"queries-q{QUERIES}.npy"), q)


def test_exact_index_matches_the_ground_truth(corpus: tuple[Path, Path]) -> None:
    from indexes import MultiVectorIndex

    out, _ = corpus
    v = json.loads((out / "meta.json").read_text())["vectors_per_page"]
    ids, scores = scale_data.ground_truth(out, v, QUERIES, k=PAGES, log=lambda _: None)
    pages = np.asarray(scale_data.load_pages(out, v), np.float32)
    q = np.load(out / f"queries-q{QUERIES}.npy")
    brute = np.einsum("qtd,pvd->qptv", q, pages).max(axis=3).sum(axis=2)
    np.testing.assert_allclose(scores, -np.sort(-brute, axis=1), rtol=1e-5)
    index = MultiVectorIndex(128, device="cpu")
    index.add(list(pages), np.arange(PAGES))
    hits = index.search(list(q), 10)
    recall = np.mean([len({i for i, _ in h} & set(g[:10].tolist())) / 10 for h, g in zip(hits, ids)])
    assert recall == 1.0


@pytest.mark.heavy
@pytest.mark.subprocess
def test_scale_script_on_the_real_corpus(corpus: tuple[Path, Path], tmp_path: Path) -> None:
    out, _ = corpus
    v = json.loads((out / "meta.json").read_text())["vectors_per_page"]
    cmd = [sys.executable, str(BENCH / "scale.py"), "--data", str(out), "--cache", str(tmp_path)]
    cmd += ["--queries", str(QUERIES), "--latency-queries", "1", "--systems", "ours-exact"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"{PAGES} pages x {v} vectors x 128 dims" in proc.stdout
    assert f"{QUERIES} queries x {TOKENS} vectors" in proc.stdout
    # 12 pages < 100: R@10 is exact (1.0); R@100 is capped at 12/100
    assert "| ours exact float16 [baseline] | - | 1.000 | 0.120 |" in proc.stdout
    assert (tmp_path / "results" / f"corpus-q{QUERIES}" / "ours-exact.json").exists()
    assert (tmp_path / "indexes" / "corpus" / "ours-exact").is_dir()
    assert (out / f"gt-q{QUERIES}-k100.npz").exists()

    bad = subprocess.run([*cmd[:-4], "--queries", "7"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "no queries-q7.npy (has: queries-q3.npy)" in bad.stderr
