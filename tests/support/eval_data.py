"""A small local retrieval benchmark, generated at test time with known relevance.

:func:`make_local_benchmark` writes a dataset directory in the local format of
:mod:`dse.eval.data`:

* ``pages/*.png``: ``n_image_pages`` page images (``image`` corpus items), each a solid
  colour (:func:`support.docs.page_color`) with one large printed word;
* ``docs/report.pdf``: a PDF of ``n_pdf_pages`` pages (``source`` + ``page`` corpus
  items), each with its own large word and colour block;
* one text query per page naming its word (relevance 1 to that page; the first query
  also judges a second page with relevance 2, so graded nDCG matters), and one image
  query (a crop of a page's colour) judged relevant to that page;
* ``qrels/test.tsv`` (and ``qrels/train.tsv`` with the same judgements when ``train``).

Import from tests as ``from support.eval_data import make_local_benchmark``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from support.docs import page_color

#: distinct printable words (also present in the tiny tokenizer's training text)
WORDS = ("revenue", "water", "chart", "table", "people", "number", "report", "figure", "image", "slide")


@dataclass
class LocalBenchmark:
    """Where :func:`make_local_benchmark` put things, and the expected judgements."""

    root: Path
    corpus_ids: list[str]
    image_ids: list[str]
    pdf_ids: list[str]
    pdf_path: Path
    words: dict[str, str]  # corpus id -> printed word
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def _font(size: int):  # type: ignore[no-untyped-def]
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def word_page(word: str, color: tuple[int, int, int], size: tuple[int, int] = (224, 224)):  # type: ignore[no-untyped-def]
    """An RGB page: white background, a colour band at the top and ``word`` printed large."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    w, h = size
    d.rectangle((0, 0, w, h // 3), fill=color)
    d.text((w // 12, h // 2), word.upper(), fill="black", font=_font(max(12, w // 7)))
    return im


def make_word_pdf(
    path: Path, words: list[str], start_page: int = 1, size: tuple[float, float] = (160.0, 160.0)
) -> Path:
    """A PDF with one page per word: a colour block (``page_color(start_page + i)``) and the word."""
    from reportlab.pdfgen import canvas

    w, h = size
    c = canvas.Canvas(str(path), pagesize=size)
    c.setTitle("Evaluation fixture")
    for i, word in enumerate(words):
        r, g, b = page_color(start_page + i)
        c.setFillColorRGB(r / 255, g / 255, b / 255)
        c.rect(0, h * 2 / 3, w, h / 3, stroke=0, fill=1)
        c.setFillColorRGB(0, 0, 0)
        c.setFont("Helvetica-Bold", 22)
        c.drawString(12, h / 3, word.upper())
        c.showPage()
    c.save()
    return path


def make_local_benchmark(
    root: str | Path,
    *,
    n_image_pages: int = 4,
    n_pdf_pages: int = 3,
    image_size: tuple[int, int] = (224, 224),
    image_query: bool = True,
    train: bool = False,
) -> LocalBenchmark:
    """Write a benchmark with ``n_image_pages + n_pdf_pages`` pages (at most 10) under ``root``."""
    import json

    n = n_image_pages + n_pdf_pages
    if n > len(WORDS) or n < 2:
        raise ValueError(f"between 2 and {len(WORDS)} pages, got {n}")
    root = Path(root)
    (root / "pages").mkdir(parents=True, exist_ok=True)
    (root / "docs").mkdir(exist_ok=True)
    (root / "qrels").mkdir(exist_ok=True)
    corpus_rows: list[dict] = []
    words: dict[str, str] = {}
    image_ids: list[str] = []
    for i in range(n_image_pages):
        cid = f"img-{i + 1}"
        word_page(WORDS[i], page_color(i + 1), image_size).save(root / "pages" / f"{cid}.png")
        corpus_rows.append({"_id": cid, "image": f"pages/{cid}.png", "title": f"page {WORDS[i]}"})
        words[cid] = WORDS[i]
        image_ids.append(cid)
    pdf_words = list(WORDS[n_image_pages:n])
    pdf_path = make_word_pdf(root / "docs" / "report.pdf", pdf_words, start_page=n_image_pages + 1)
    pdf_ids: list[str] = []
    for j, word in enumerate(pdf_words):
        cid = f"pdf-p{j + 1}"
        corpus_rows.append({"_id": cid, "source": "docs/report.pdf", "page": j + 1})
        words[cid] = word
        pdf_ids.append(cid)
    corpus_ids = image_ids + pdf_ids
    query_rows: list[dict] = []
    qrels: dict[str, dict[str, int]] = {}
    for k, cid in enumerate(corpus_ids):
        qid = f"q{k + 1}"
        query_rows.append({"_id": qid, "text": f"the page about {words[cid]}"})
        qrels[qid] = {cid: 1}
    qrels["q1"][corpus_ids[-1]] = 2  # graded: a second, more relevant page
    if image_query:
        from PIL import Image

        target = corpus_ids[1]
        Image.new("RGB", (64, 64), page_color(2)).save(root / "pages" / "query-colour.png")
        query_rows.append({"_id": "qimg", "image": "pages/query-colour.png"})
        qrels["qimg"] = {target: 1}
    query_rows.append({"_id": "q-unjudged", "text": "a query without judgements"})
    dump = lambda rows: "".join(json.dumps(r) + "\n" for r in rows)  # noqa: E731
    (root / "corpus.jsonl").write_text(dump(corpus_rows), encoding="utf-8")
    (root / "queries.jsonl").write_text(dump(query_rows), encoding="utf-8")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{c}\t{r}" for q, d in qrels.items() for c, r in d.items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    if train:
        (root / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return LocalBenchmark(
        root=root.resolve(),
        corpus_ids=corpus_ids,
        image_ids=image_ids,
        pdf_ids=pdf_ids,
        pdf_path=pdf_path.resolve(),
        words=words,
        qrels=qrels,
    )
