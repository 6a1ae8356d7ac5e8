"""Collections end to end on tiny offline models: index, search, skip/replace, remove, filters,
corrupted files, encoder mixing, and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support.docs import make_html_site, make_pdf, make_pptx

from dse.collection import Collection, CollectionError
from dse.collection.fusion import reciprocal_rank_fusion
from renderers import RenderSettings

pytestmark = [pytest.mark.office, pytest.mark.browser]

SMALL = RenderSettings(dpi=36)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two PDFs (3 + 2 pages), a 3-slide pptx and two local HTML pages."""
    root = tmp_path_factory.mktemp("corpus")
    make_pdf(root / "report.pdf", 3, seed=1)
    (root / "sub").mkdir()
    make_pdf(root / "sub" / "notes.pdf", 2, seed=2, title="Notes")
    make_pptx(root / "deck.pptx", 3)
    make_html_site(root / "site", 2)
    return root


def expected_pages(corpus: Path) -> int:
    return 3 + 2 + 3 + len(list((corpus / "site").glob("*.html")))


def _docs_pages(col: Collection) -> set[tuple[str, int]]:
    rows = col.store.pages(sorted(col.store.stored_page_ids()))
    return {(r.source, r.page) for r in rows.values()}


def _assert_consistent(col: Collection) -> None:
    """Every stored page has exactly its vectors in the index, and nothing else is there."""
    ids = np.asarray(col.index.ids)
    assert len(ids) == len(set(ids.tolist())), "duplicate vector ids"
    assert set(ids.tolist()) == col.store.stored_page_ids()
    for row in col.store.pages(sorted(col.store.stored_page_ids())).values():
        assert (col.directory / row.image).is_file()


@pytest.fixture(scope="module")
def dse_collection(tmp_path_factory: pytest.TempPathFactory, corpus: Path, tiny_model_dir) -> Collection:
    d = tmp_path_factory.mktemp("col") / "c"
    col = Collection.create(d, model=str(tiny_model_dir("dse-qwen2")), device="cpu")
    report = col.add(corpus, render_settings=SMALL, meta={"team": "blue"}, progress=False)
    assert not report.failures, report.failures
    return col


def test_index_and_search_end_to_end(dse_collection: Collection, corpus: Path) -> None:
    col = dse_collection
    stats = col.stats()
    n = expected_pages(corpus)
    assert stats["pages"] == n and stats["vectors"] == n
    assert stats["documents"] == 3 + len(list((corpus / "site").glob("*.html")))
    assert stats["bytes"]["total"] > stats["bytes"]["images"] > 0
    _assert_consistent(col)
    hits = col.search("quarterly revenue table", k=4)
    assert [h.rank for h in hits] == [1, 2, 3, 4]
    assert all(hits[i].score >= hits[i + 1].score for i in range(3))
    for h in hits:
        assert Path(h.image_path).is_file() and h.page >= 1 and h.source.startswith(str(corpus))
        assert h.meta == {"team": "blue"}


def test_search_scores_are_the_encoders_cosines(dse_collection: Collection) -> None:
    """The flat index returns exactly the dot products of the encoder's vectors (no faked scores)."""
    col = dse_collection
    q = col.encoder.encode_queries(texts=["battery pricing"])
    ids = sorted(col.store.stored_page_ids())
    rows = col.store.pages(ids)
    images = [Image.open(col.directory / rows[i].image).convert("RGB") for i in ids]
    docs = col.encoder.encode_documents(images)
    expected = sorted(zip(ids, (docs @ q[0]).tolist()), key=lambda t: -t[1])[:5]
    hits = col.search("battery pricing", k=5)
    assert [h.page_id for h in hits] == [i for i, _ in expected]
    np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=1e-4)


def test_image_and_fused_queries(dse_collection: Collection, tmp_path: Path) -> None:
    col = dse_collection
    page = col.store.pages([min(col.store.stored_page_ids())])
    img_path = col.directory / next(iter(page.values())).image
    image_hits = col.search(image=img_path, k=3)
    fused = col.search("report", image=img_path, k=3)
    rrf = col.search("report", image=img_path, k=3, fusion="rrf")
    assert len(image_hits) == len(fused) == len(rrf) == 3
    # the fused query is one forward pass over image + text: it differs from both single-modality queries
    qi = col.encoder.encode_queries(images=[Image.open(img_path).convert("RGB")])
    qf = col.encoder.encode_queries(texts=["report"], images=[Image.open(img_path).convert("RGB")])
    assert not np.allclose(qi, qf)
    assert fused[0].score == pytest.approx(float(col.search_vectors(qf, 1)[0][0].score), abs=1e-5)


def test_where_filter_and_empty_query(dse_collection: Collection, corpus: Path) -> None:
    col = dse_collection
    assert len(col.search("x", k=50, where={"team": "blue"})) == expected_pages(corpus)
    assert col.search("x", k=5, where={"team": "red"}) == []
    with pytest.raises(CollectionError, match="empty query"):
        col.search("   ")
    with pytest.raises(CollectionError, match="empty query"):
        col.search()
    with pytest.raises(CollectionError, match="query image not found"):
        col.search(image="/nonexistent.png")


def test_query_images_are_read_like_pages(dse_collection: Collection, tmp_path: Path) -> None:
    """A query photo stored sideways with an EXIF orientation searches as its upright view;
    an unreadable or oversized query image is a CollectionError, not a traceback."""
    from support.docs import make_exif_rotated_jpeg

    from renderers import load_image

    col = dse_collection
    rotated = tmp_path / "rotated.jpg"
    make_exif_rotated_jpeg(rotated, size=(160, 120))
    upright = load_image(rotated)
    assert upright.size == (160, 120)
    by_path = col.search(image=rotated, k=3)
    by_upright = col.search(image=upright, k=3)
    assert [(h.page_id, round(h.score, 5)) for h in by_path] == [(h.page_id, round(h.score, 5)) for h in by_upright]
    with Image.open(rotated) as raw:  # the stored (sideways) pixels are a different query
        sideways = col.search(image=raw.convert("RGB"), k=3)
    assert [round(h.score, 5) for h in sideways] != [round(h.score, 5) for h in by_path]
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(CollectionError, match="cannot read query image .*notes.png"):
        col.search(image=tmp_path / "notes.png")


def test_rrf_fusion() -> None:
    fused = reciprocal_rank_fusion([[(1, 0.9), (2, 0.8), (3, 0.1)], [(3, 5.0), (1, 4.0)]], k=60)
    assert [d for d, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_unchanged_skipped_changed_replaced_removed(tmp_path: Path, tiny_model_dir) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_pdf(src / "a.pdf", 2, seed=3)
    make_pdf(src / "b.pdf", 1, seed=4)
    col = Collection.create(tmp_path / "c", model=str(tiny_model_dir("dse-qwen2")), device="cpu")
    r1 = col.add(src, render_settings=SMALL, progress=False)
    assert (r1.added, r1.pages) == (2, 3)
    r2 = col.add(src, render_settings=SMALL, progress=False)
    assert (r2.unchanged, r2.pages, r2.added) == (2, 0, 0)
    make_pdf(src / "a.pdf", 4, seed=5)  # changed: 4 pages now
    r3 = col.add(src, render_settings=SMALL, progress=False)
    assert (r3.replaced, r3.unchanged, r3.pages) == (1, 1, 4)
    assert col.stats()["pages"] == 5 and len(col.index) == 5
    _assert_consistent(col)
    a = col.store.document(next(d.doc_id for d in col.store.documents() if d.source.endswith("a.pdf")))
    assert col.remove(str(src / "a.pdf")) == 1
    assert col.store.document(a.doc_id) is None
    assert not (col.directory / "images" / a.doc_id).exists()
    assert col.stats()["pages"] == 1 and len(col.index) == 1
    _assert_consistent(col)
    with pytest.raises(CollectionError, match="no document"):
        col.remove("nope")
    col.close()
    reopened = Collection.open(tmp_path / "c", device="cpu")
    assert reopened.stats()["pages"] == 1 and len(reopened.index) == 1


def test_bad_sources_do_not_stop_the_job(tmp_path: Path, tiny_model_dir) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_pdf(src / "good.pdf", 2, seed=6)
    (src / "corrupt.pdf").write_bytes(b"%PDF-1.4\n garbage garbage")
    (src / "empty.pdf").write_bytes(b"")
    col = Collection.create(tmp_path / "c", model=str(tiny_model_dir("dse-qwen2")), device="cpu")
    report = col.add([src, tmp_path / "missing.pdf"], render_settings=SMALL, progress=False)
    assert report.pages == 2 and report.added == 1
    failed = {Path(f.source).name for f in report.failures}
    assert failed == {"corrupt.pdf", "empty.pdf", "missing.pdf"}
    assert all(f.reason for f in report.failures)
    assert col.stats()["documents"] == 1
    _assert_consistent(col)


@pytest.mark.subprocess
def test_refuses_to_mix_encoders_and_reports_damage(tmp_path: Path, tiny_model_dir) -> None:
    d = tmp_path / "c"
    col = Collection.create(d, model=str(tiny_model_dir("dse-qwen2")), device="cpu", dim=32)
    col.close()
    with pytest.raises(
        CollectionError, match="built with the dse-qwen2 model .* is a dse-qwen2.5 model: refusing to mix"
    ):
        Collection.open(d, model=str(tiny_model_dir("dse-qwen2.5")), device="cpu")
    Collection.open(d, model=str(tiny_model_dir("dse-qwen2")), device="cpu").close()  # the same model is fine
    with pytest.raises(CollectionError, match="already exists"):
        Collection.create(d, model=str(tiny_model_dir("dse-qwen2")), device="cpu", dim=32)
    # damage: bad manifest, missing database, missing collection
    manifest = (d / "collection.json").read_text()
    (d / "collection.json").write_text("{ not json")
    with pytest.raises(CollectionError, match="corrupted"):
        Collection.open(d)
    (d / "collection.json").write_text(manifest)
    (d / "meta.sqlite").write_bytes(b"this is not a database" * 100)
    for f in d.glob("meta.sqlite-*"):
        f.unlink()
    with pytest.raises(CollectionError, match="corrupted"):
        Collection.open(d)
    with pytest.raises(CollectionError, match="does not exist"):
        Collection.open(tmp_path / "nowhere")


def _dse(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "dse", *args], capture_output=True, text=True, env=full_env, timeout=600
    )


@pytest.mark.subprocess
def test_cli_index_search_stats_remove(tmp_path: Path, tiny_model_dir, corpus: Path) -> None:
    model = str(tiny_model_dir("colqwen2"))
    col = str(tmp_path / "c")
    pdfs = [str(corpus / "report.pdf"), str(corpus / "sub" / "notes.pdf")]
    r = _dse(
        "index",
        *pdfs,
        "--collection",
        col,
        "--model",
        model,
        "--device",
        "cpu",
        "--dpi",
        "36",
        "--meta",
        "kind=pdf",
        "--pool-factor",
        "2",
    )
    assert r.returncode == 0, r.stderr
    assert "5 pages indexed" in r.stdout
    r = _dse("search", "--collection", col, "revenue", "-k", "3", "--json", "--where", "kind=pdf")
    assert r.returncode == 0, r.stderr
    hits = [json.loads(line) for line in r.stdout.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert {"score", "source", "page", "image_path"} <= set(hits[0])
    # an image query with a page's own image ranks that page first (MaxSim self-match is maximal)
    target = hits[2]
    r = _dse("search", "--collection", col, "--image", target["image_path"], "-k", "1", "--json")
    assert json.loads(r.stdout.splitlines()[0])["page_id"] == target["page_id"]
    r = _dse("stats", "--collection", col, "--json")
    stats = json.loads(r.stdout)
    assert stats["pages"] == 5 and stats["kind"] == "multi" and stats["vectors"] > 5
    r = _dse("remove", pdfs[1], "--collection", col)
    assert r.returncode == 0 and "removed 1 document" in r.stdout
    assert json.loads(_dse("stats", "--collection", col, "--json").stdout)["pages"] == 3
    # bad input: clear one-line errors, no traceback
    for args, code in [
        (("search", "--collection", col), 2),
        (("search", "--collection", str(tmp_path / "none"), "q"), 3),
        (("remove", "zzz", "--collection", col), 2),
        (("index", pdfs[0], "--collection", col, "--meta", "novalue"), 2),
    ]:
        r = _dse(*args)
        assert r.returncode == code, (args, r.stderr)
        assert "Traceback" not in r.stderr and "error:" in r.stderr


@pytest.mark.subprocess
def test_cli_reports_unreachable_hub_in_one_line(tmp_path: Path, corpus: Path) -> None:
    r = _dse("index", str(corpus / "report.pdf"), "--collection", str(tmp_path / "c"))
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and "--model" in lines[0] and "MrLight/dse-qwen2-2b-mrl-v1" in lines[0]


@pytest.mark.subprocess
def test_corrupted_index_file_gives_clear_cli_error(tmp_path: Path, tiny_model_dir, corpus: Path) -> None:
    col = tmp_path / "c"
    r = _dse(
        "index",
        str(corpus / "report.pdf"),
        "--collection",
        str(col),
        "--model",
        str(tiny_model_dir("dse-qwen2")),
        "--device",
        "cpu",
        "--dpi",
        "36",
    )
    assert r.returncode == 0, r.stderr
    seg = sorted(p for p in (col / "index").rglob("*") if p.is_file() and p.suffix == ".npy")
    assert seg
    seg[0].write_bytes(seg[0].read_bytes()[:20])
    r = _dse("search", "--collection", str(col), "q")
    assert r.returncode == 3 and "Traceback" not in r.stderr and "index" in r.stderr
    shutil.rmtree(col / "index")
    r = _dse("stats", "--collection", str(col))
    assert r.returncode == 3 and "Traceback" not in r.stderr


def test_sidecar_metadata_and_hnsw_index(tmp_path: Path, tiny_model_dir) -> None:
    src = tmp_path / "src"
    src.mkdir()
    make_pdf(src / "a.pdf", 2, seed=21)
    make_pdf(src / "b.pdf", 1, seed=22)
    (src / "a.pdf.meta.json").write_text(json.dumps({"team": "red", "year": 2024}))
    col = Collection.create(
        tmp_path / "c",
        model=str(tiny_model_dir("dse-qwen2")),
        device="cpu",
        index="hnsw",
        index_params={"hnsw_m": 8, "ef_search": 32},
    )
    report = col.add(src, render_settings=SMALL, meta={"project": "x"}, progress=False)
    assert report.pages == 3 and not report.failures
    assert col.manifest.index == {"type": "hnsw", "params": {"hnsw_m": 8, "ef_search": 32}, "pool_factor": None}
    red = col.search("anything", k=10, where={"team": "red"})
    assert {(Path(h.source).name, h.page) for h in red} == {("a.pdf", 1), ("a.pdf", 2)}
    assert red[0].meta == {"team": "red", "year": 2024, "project": "x"}
    assert len(col.search("anything", k=10, where={"year": "2024", "project": "x"})) == 2
    assert len(col.search("anything", k=10, where={"project": "x"})) == 3
    # a metadata-only change updates the document without re-encoding it; the sidecar's keys are
    # merged over the stored ones (a key it no longer names is kept)
    (src / "a.pdf.meta.json").write_text(json.dumps({"team": "blue"}))
    again = col.add(src, render_settings=SMALL, meta={"project": "x"}, progress=False)
    assert (again.pages, again.metadata_updated, again.unchanged) == (0, 1, 2)
    blue = col.search("anything", k=10, where={"team": "blue"})
    assert {Path(h.source).name for h in blue} == {"a.pdf"}
    assert blue[0].meta == {"team": "blue", "year": 2024, "project": "x"}
    (src / "b.pdf.meta.json").write_text("[1, 2")
    bad = col.add(src, render_settings=SMALL, progress=False)
    assert any("bad metadata sidecar" in f.reason for f in bad.failures)
    col.close()
    assert len(Collection.open(tmp_path / "c", device="cpu").search("q", k=3)) == 3
