"""The OCR + BM25 baseline with the real tesseract: pages with large printed phrases."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from dse.eval import ocr as ocr_mod
from dse.eval.bm25_ocr import BM25Index, bm25_ocr_run, stopwords_for
from dse.eval.data import CorpusItem, EvalDataset, Query
from dse.eval.ocr import OcrCache, OcrUnavailable, image_key

PHRASES = {
    "p1": "Aardvark platinum ledger",
    "p2": "Quantum marmalade harbour",
    "p3": "Velvet tractor symphony",
}
PDF_PHRASE = "Crimson glacier invoice"
FILLER = "Annual report of the company"


def _font(size: int) -> ImageFont.ImageFont:
    for path in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    ):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def _page(path: Path, lines: list[str], size: tuple[int, int] = (900, 500)) -> Path:
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((40, 40 + i * 80), line, fill="black", font=_font(44))
    img.save(path)
    return path


def _pdf(path: Path, lines: list[str]) -> Path:
    from reportlab.lib.pagesizes import A5, landscape
    from reportlab.pdfgen import canvas

    c = canvas.Canvas(str(path), pagesize=landscape(A5))
    c.drawString(40, 360, "blank first page")
    c.showPage()
    c.setFont("Helvetica", 30)
    for i, line in enumerate(lines):
        c.drawString(40, 340 - i * 50, line)
    c.showPage()
    c.save()
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> EvalDataset:
    root = tmp_path_factory.mktemp("bm25ds")
    corpus = [CorpusItem(cid, image=_page(root / f"{cid}.png", [FILLER, phrase])) for cid, phrase in PHRASES.items()]
    corpus.append(CorpusItem("pdf2", source=str(_pdf(root / "doc.pdf", [FILLER, PDF_PHRASE])), page=2))
    query_img = _page(root / "query.png", ["velvet tractor"], size=(600, 160))
    queries = [
        Query("q1", text="Where is the aardvark ledger?"),
        Query("q2", text="marmalade"),
        Query("q3", image=query_img),  # image-only query: OCR'd
        Query("q4", text="crimson glacier"),  # page 2 of a PDF, rendered
        Query("q5", text="the of and"),  # stop words only: all scores 0
    ]
    qrels = {"q1": {"p1": 1}, "q2": {"p2": 1}, "q3": {"p3": 1}, "q4": {"pdf2": 1}, "q5": {"p1": 1}}
    return EvalDataset(name="bm25", root=root, corpus=corpus, queries=queries, qrels=qrels)


def _top(run: dict[str, dict[str, float]], qid: str) -> str:
    return max(run[qid].items(), key=lambda kv: kv[1])[0]


def test_bm25_ocr_finds_printed_phrase_and_reuses_cache(
    dataset: EvalDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache_dir = tmp_path / "cache"
    run = bm25_ocr_run(dataset, k=10, cache_dir=cache_dir, progress=False, workers=2)
    assert set(run) == {"q1", "q2", "q3", "q4", "q5"}
    assert _top(run, "q1") == "p1"
    assert _top(run, "q2") == "p2"
    assert _top(run, "q3") == "p3"
    assert _top(run, "q4") == "pdf2"
    for qid in ("q1", "q2", "q3", "q4"):
        scores = sorted(run[qid].values(), reverse=True)
        assert scores[0] > 0 and scores[0] > scores[1]
        assert len(run[qid]) == 4  # every page, k > corpus size
    assert set(run["q5"].values()) == {0.0}  # a stop-word query matches nothing
    assert (cache_dir / "ocr.sqlite").is_file()
    assert len(OcrCache.in_dir(cache_dir)) == 5  # 4 pages + the query image

    calls: list[int] = []

    def counting(*args, **kwargs):
        calls.append(1)
        raise AssertionError("tesseract must not run on a cached page")

    monkeypatch.setattr(ocr_mod, "ocr_image", counting)
    again = bm25_ocr_run(dataset, k=2, cache_dir=cache_dir, progress=False)
    assert calls == []
    assert {q: list(r) for q, r in again.items()} == {q: list(r)[:2] for q, r in run.items()}


def test_failed_page_is_logged_and_empty(
    dataset: EvalDataset, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import pytesseract

    real = ocr_mod.ocr_image
    bad = image_key(Image.open(dataset.corpus[1].image).convert("RGB"), "eng", ocr_mod.tesseract_version())

    def flaky(image, lang="eng", **kw):
        if image_key(image, lang, ocr_mod.tesseract_version()) == bad:
            raise pytesseract.TesseractError(1, "Error during processing.")
        return real(image, lang, **kw)

    monkeypatch.setattr(ocr_mod, "ocr_image", flaky)
    with caplog.at_level(logging.WARNING, logger="dse.eval.ocr"):
        run = bm25_ocr_run(dataset, k=10, cache_dir=None, progress=False, workers=1)
    assert any("OCR failed for page p2" in r.getMessage() for r in caplog.records)
    assert run["q2"]["p2"] == 0.0  # empty text: no match, still ranked
    assert _top(run, "q1") == "p1" and _top(run, "q4") == "pdf2"


def test_missing_language_is_one_clear_error(dataset: EvalDataset) -> None:
    with pytest.raises(OcrUnavailable, match="no language data for xyz"):
        bm25_ocr_run(dataset, lang="xyz", progress=False)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        bm25_ocr_run(dataset, k=0, progress=False)


def test_bm25_index_ranks_and_stopwords() -> None:
    index = BM25Index(["red apple pie", "green apple", "blue sky", ""], stopwords=stopwords_for("eng"))
    hits = index.search("apple pie", 3)
    assert [i for i, _ in hits[:2]] == [0, 1]
    assert hits[0][1] > hits[1][1] > 0
    assert index.search("the", 4) == [(0, 0.0), (1, 0.0), (2, 0.0), (3, 0.0)]
    assert "the" in stopwords_for("eng+fra") and "le" not in stopwords_for("eng")
