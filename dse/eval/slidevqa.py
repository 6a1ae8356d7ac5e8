"""SlideVQA-open: SlideVQA's released annotations + slide images -> the local evaluation format.

SlideVQA (Tanaka et al., AAAI 2023; github.com/nttmdlab-nlp/SlideVQA) has slide decks of
20 slide images and questions whose answers need one or more *evidence* slides. In the
open-domain setting of the DSE paper (SlideVQA-open) a question is searched against the
slides of all decks; its evidence slides are the relevant pages (nDCG@10).

Accepted input (what the repo's scripts produce):

* ``json_path``: the QA annotation file of one split, ``annotations/qa/{split}.jsonl``,
  one JSON object per line (a JSON array is accepted too) with at least ``qa_id``,
  ``deck_name``, ``question`` and ``evidence_pages`` (1-based slide numbers); other
  fields (``answer``, ``image_urls``, ``reasoning_type`` ...) are kept out of the way.
* ``images_dir``: one directory per deck, named after ``deck_name``, anywhere below
  ``images_dir`` - ``images/{split}/{deck_name}/`` as written by
  ``download_slides_slideshare.py``, or ``images/{deck_name}/``. Slide ``n`` of a deck is
  the file named after ``basename(image_urls[n - 1])`` when the annotation line lists
  ``image_urls`` (what the download script saves; a ``?query`` suffix is ignored),
  otherwise the file whose name carries the number ``n``:
  ``<slug>-<n>-<width>.jpg`` (SlideShare), ``slide_<n>.jpg`` / ``slide-<n>`` /
  ``page_<n>``, or a name ending in ``<n>`` (``.jpg``, ``.jpeg``, ``.png``, ``.webp``).

Output: ``out_dir/corpus.jsonl`` (every slide of every deck found, or only the decks of
the split's questions with ``corpus_scope="questions"``; ids ``<deck_name>_<n>``, the
images referenced where they are, not copied), ``out_dir/queries.jsonl`` (ids =
``qa_id``) and ``out_dir/qrels/{split}.tsv`` (each evidence slide with relevance 1).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dse.eval.data import CorpusItem, DatasetFormatError, EvalDataset, Query, write_local_dataset

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CORPUS_SCOPES = ("all", "questions")
_SLIDESHARE = re.compile(r"-(\d+)-\d+$")  # <slug>-<n>-<width>
_NAMED = re.compile(r"(?:slide|page)[ _-]?(\d+)", re.IGNORECASE)
_TRAILING = re.compile(r"(\d+)$")


def slide_number(filename: str) -> int | None:
    """The 1-based slide number a slide image's file name carries, or None."""
    stem = Path(filename).stem
    for pattern in (_SLIDESHARE, _NAMED, _TRAILING):
        m = pattern.search(stem)
        if m:
            return int(m.group(1))
    return None


def _safe(text: str) -> str:
    return re.sub(r"\s+", "_", text.strip())


def _read_annotations(path: Path) -> list[tuple[int, dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DatasetFormatError(f"{path}: not UTF-8 text") from None
    if text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
        # line numbers of array elements are not tracked: report the element's 1-based index
        return [(i, obj) for i, obj in enumerate(items, 1)]
    out: list[tuple[int, dict[str, Any]]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append((lineno, json.loads(line)))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
    return out


def _check_line(obj: Any, where: str) -> tuple[str, str, str, list[int], list[str] | None]:
    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    missing = [k for k in ("qa_id", "deck_name", "question", "evidence_pages") if k not in obj]
    if missing:
        raise DatasetFormatError(f"{where}: missing field(s) {', '.join(missing)}")
    qa_id, deck, question, pages = obj["qa_id"], obj["deck_name"], obj["question"], obj["evidence_pages"]
    if isinstance(qa_id, bool) or not isinstance(qa_id, (int, str)) or not str(qa_id).strip():
        raise DatasetFormatError(f"{where}: 'qa_id' must be a number or a non-empty string, got {qa_id!r}")
    if not isinstance(deck, str) or not deck.strip():
        raise DatasetFormatError(f"{where}: 'deck_name' must be a non-empty string, got {deck!r}")
    if not isinstance(question, str) or not question.strip():
        raise DatasetFormatError(f"{where}: empty or non-string 'question'")
    if (
        not isinstance(pages, list)
        or not pages
        or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in pages)
    ):
        raise DatasetFormatError(
            f"{where}: 'evidence_pages' must be a non-empty list of 1-based slide numbers, got {pages!r}"
        )
    urls = obj.get("image_urls")
    if urls is not None and (not isinstance(urls, list) or not all(isinstance(u, str) for u in urls)):
        raise DatasetFormatError(f"{where}: 'image_urls' must be a list of strings")
    return _safe(str(qa_id)), deck, question.strip(), sorted(set(pages)), urls


def _find_decks(images_dir: Path) -> dict[str, Path]:
    """deck name -> directory, for every directory below ``images_dir`` holding slide images."""
    decks: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(images_dir, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(f.lower().endswith(IMAGE_SUFFIXES) for f in filenames):
            name = Path(dirpath).name
            if name in decks:
                log.warning("deck %s found twice (%s and %s); the first is used", name, decks[name], dirpath)
                continue
            decks[name] = Path(dirpath)
    return decks


def _deck_slides(directory: Path, urls: list[str] | None) -> dict[int, Path]:
    """slide number -> image file of one deck directory."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    by_name = {p.name: p for p in files}
    slides: dict[int, Path] = {}
    if urls:
        for n, url in enumerate(urls, 1):
            base = os.path.basename(urlparse(url).path)
            for candidate in (os.path.basename(url), base):
                if candidate in by_name:
                    slides[n] = by_name[candidate]
                    break
        if slides:
            return slides
    for p in files:
        number = slide_number(p.name)
        if number is None:
            log.warning("%s: no slide number in the file name; ignored", p)
            continue
        if number in slides:
            log.warning("%s: slide %d already is %s; ignored", p, number, slides[number].name)
            continue
        slides[number] = p
    return slides


def convert_slidevqa(
    json_path: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    split: str = "test",
    *,
    corpus_scope: str = "all",
) -> Path:
    """Convert SlideVQA's released QA annotations + slide images into the local format.

    See the module docstring for the accepted layout. Questions whose deck has no images,
    evidence slides without an image (reported; the question keeps its other evidence)
    and questions left with no evidence slide (reported, dropped) do not stop the job.
    Raises :class:`DatasetFormatError` naming the file and line for a malformed
    annotation line, and when nothing usable remains. Returns ``out_dir``.
    """
    if corpus_scope not in CORPUS_SCOPES:
        raise ValueError(f"unknown corpus_scope {corpus_scope!r}; use one of: {', '.join(CORPUS_SCOPES)}")
    json_path = Path(json_path).expanduser()
    images_root = Path(images_dir).expanduser()
    if not images_root.is_dir():
        raise DatasetFormatError(f"{images_root}: images directory not found")
    lines = [(lineno, _check_line(obj, f"{json_path}:{lineno}")) for lineno, obj in _read_annotations(json_path)]
    if not lines:
        raise DatasetFormatError(f"{json_path}: no questions")
    decks = _find_decks(images_root)
    if not decks:
        raise DatasetFormatError(f"{images_root}: no slide images found (expected <deck_name>/ directories)")

    urls_by_deck: dict[str, list[str]] = {}
    for _, (_, deck, _, _, urls) in lines:
        if urls and deck not in urls_by_deck:
            urls_by_deck[deck] = urls
    wanted = sorted(decks) if corpus_scope == "all" else sorted({d for _, (_, d, *_) in lines if d in decks})
    slides = {deck: _deck_slides(decks[deck], urls_by_deck.get(deck)) for deck in wanted}

    corpus = [
        CorpusItem(f"{_safe(deck)}_{n}", image=path.resolve())
        for deck in wanted
        for n, path in sorted(slides[deck].items())
    ]
    queries: list[Query] = []
    qrels: dict[str, dict[str, int]] = {}
    seen: dict[str, int] = {}
    no_deck = missing_slides = dropped = 0
    for lineno, (qid, deck, question, pages, _) in lines:
        where = f"{json_path}:{lineno}"
        if qid in seen:
            raise DatasetFormatError(f"{where}: duplicate qa_id {qid!r} (first on line {seen[qid]})")
        seen[qid] = lineno
        if deck not in slides:
            no_deck += 1
            log.warning("%s: no images for deck %s; question %s skipped", where, deck, qid)
            continue
        found = [n for n in pages if n in slides[deck]]
        if len(found) < len(pages):
            missing_slides += len(pages) - len(found)
            log.warning(
                "%s: evidence slide(s) %s of deck %s have no image",
                where,
                ", ".join(str(n) for n in pages if n not in slides[deck]),
                deck,
            )
        if not found:
            dropped += 1
            continue
        queries.append(Query(qid, text=question))
        qrels[qid] = {f"{_safe(deck)}_{n}": 1 for n in found}
    if not queries:
        raise DatasetFormatError(f"{json_path}: no question has an evidence slide image under {images_root}")
    log.info(
        "SlideVQA %s: %d slides from %d decks, %d questions (%d without deck images, %d without any "
        "evidence image; %d evidence slides missing)",
        split,
        len(corpus),
        len(wanted),
        len(queries),
        no_deck,
        dropped,
        missing_slides,
    )
    dataset = EvalDataset(name=f"slidevqa-{split}", root=Path(out_dir), corpus=corpus, queries=queries, qrels=qrels)
    return write_local_dataset(dataset, out_dir, split)
