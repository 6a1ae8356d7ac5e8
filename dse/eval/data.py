"""Evaluation datasets in a plain local format: BEIR's layout with image fields.

A dataset directory holds::

    corpus.jsonl        one page per line: {"_id": "p1", "image": "pages/p1.png"}
                        or a page of a document our renderers read:
                        {"_id": "p2", "source": "docs/report.pdf", "page": 3}
    queries.jsonl       one query per line: {"_id": "q1", "text": "...", "image": "q/q1.png"}
                        (``text``, ``image`` or both)
    qrels/test.tsv      header ``query-id<TAB>corpus-id<TAB>score``, then one judgement per line

Relative paths are relative to the dataset directory. Other fields (BEIR's ``title``,
``text`` of corpus lines, ...) are ignored. Every problem with a line raises
:class:`DatasetFormatError` naming the file and the 1-based line number.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from renderers import RenderSettings

log = logging.getLogger(__name__)

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")


class DatasetFormatError(ValueError):
    """A dataset file is missing or malformed; the message names the file and the 1-based line."""


@dataclass(frozen=True)
class CorpusItem:
    """One page of the corpus: an image file, or page ``page`` (1-based) of document ``source``."""

    id: str
    image: Path | None = None
    source: str | None = None
    page: int | None = None


@dataclass(frozen=True)
class Query:
    """A query: text, an image (absolute path) or both (a fused query)."""

    id: str
    text: str | None = None
    image: Path | None = None


@dataclass
class EvalDataset:
    """A retrieval benchmark: pages, queries and graded relevance judgements."""

    name: str
    root: Path
    corpus: list[CorpusItem]
    queries: list[Query]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def corpus_by_id(self) -> dict[str, CorpusItem]:
        return {c.id: c for c in self.corpus}

    def summary(self) -> str:
        n_rel = sum(sum(1 for r in d.values() if r > 0) for d in self.qrels.values())
        return f"{self.name}: {len(self.corpus)} pages, {len(self.queries)} queries, {n_rel} relevant judgements"


@dataclass(frozen=True)
class CorpusFailure:
    """A corpus page that could not be produced (unreadable image, document that failed to render)."""

    id: str
    source: str
    reason: str
    error_type: str


# --------------------------------------------------------------------------- loading


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _resolve(root: Path, value: str) -> Path:
    p = Path(os.path.expanduser(value))
    return (p if p.is_absolute() else root / p).resolve()


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for every non-blank line; malformed JSON raises DatasetFormatError."""
    try:
        fh = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    with fh:
        try:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetFormatError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
                if not isinstance(obj, dict):
                    raise DatasetFormatError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
        except UnicodeDecodeError:
            raise DatasetFormatError(f"{path}: not UTF-8 text") from None


def _get_id(obj: dict[str, Any], where: str) -> str:
    value = obj.get("_id")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DatasetFormatError(f"{where}: missing or empty '_id'")
    value = str(value)
    if any(c.isspace() for c in value):
        raise DatasetFormatError(f"{where}: '_id' {value!r} contains whitespace (not allowed in qrels/run files)")
    return value


def _optional_str(obj: dict[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise DatasetFormatError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    return value


def _image_field(root: Path, value: str, where: str, key: str = "image") -> Path:
    if not value.strip():
        raise DatasetFormatError(f"{where}: empty '{key}'")
    path = _resolve(root, value)
    if not path.is_file():
        raise DatasetFormatError(f"{where}: image not found: {value} (resolved to {path})")
    return path


def _load_corpus(root: Path) -> list[CorpusItem]:
    path = root / CORPUS_FILE
    items: list[CorpusItem] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        cid = _get_id(obj, where)
        if cid in seen:
            raise DatasetFormatError(f"{where}: duplicate corpus id {cid!r} (first on line {seen[cid]})")
        seen[cid] = lineno
        image = _optional_str(obj, "image", where)
        source = _optional_str(obj, "source", where)
        if image is not None and source is not None:
            raise DatasetFormatError(f"{where}: give either 'image' or 'source' + 'page', not both")
        if image is not None:
            items.append(CorpusItem(cid, image=_image_field(root, image, where)))
            continue
        if source is None or not source.strip():
            raise DatasetFormatError(f"{where}: corpus item {cid!r} needs 'image' or 'source' + 'page'")
        page = obj.get("page")
        if isinstance(page, bool) or not isinstance(page, int) or page < 1:
            raise DatasetFormatError(f"{where}: 'page' must be a 1-based page number, got {page!r}")
        if _is_url(source):
            items.append(CorpusItem(cid, source=source, page=page))
            continue
        src_path = _resolve(root, source)
        if not src_path.exists():
            raise DatasetFormatError(f"{where}: source not found: {source} (resolved to {src_path})")
        items.append(CorpusItem(cid, source=str(src_path), page=page))
    if not items:
        raise DatasetFormatError(f"{path}: the corpus is empty")
    return items


def _load_queries(root: Path) -> list[Query]:
    path = root / QUERIES_FILE
    queries: list[Query] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        qid = _get_id(obj, where)
        if qid in seen:
            raise DatasetFormatError(f"{where}: duplicate query id {qid!r} (first on line {seen[qid]})")
        seen[qid] = lineno
        text = _optional_str(obj, "text", where)
        image_value = _optional_str(obj, "image", where)
        if text is not None and not text.strip():
            if image_value is None:
                raise DatasetFormatError(f"{where}: empty query text")
            text = None
        if text is None and image_value is None:
            raise DatasetFormatError(f"{where}: query {qid!r} needs 'text', 'image' or both")
        image = _image_field(root, image_value, where) if image_value is not None else None
        queries.append(Query(qid, text=text, image=image))
    return queries


def _parse_score(value: str, where: str) -> int:
    try:
        score = float(value)
    except ValueError:
        raise DatasetFormatError(f"{where}: score must be an integer, got {value!r}") from None
    if score != int(score):
        raise DatasetFormatError(f"{where}: score must be an integer, got {value!r}")
    return int(score)


def load_qrels(
    path: str | Path, *, corpus_ids: set[str] | None = None, query_ids: set[str] | None = None
) -> dict[str, dict[str, int]]:
    """Read a qrels TSV (``query-id corpus-id score`` with that header; a TREC qrels file
    ``qid 0 docid rel`` separated by whitespace is accepted too).

    When ``corpus_ids`` / ``query_ids`` are given, a judgement naming an unknown id raises
    :class:`DatasetFormatError` naming the line. Returns ``{query id: {corpus id: relevance}}``.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatasetFormatError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise DatasetFormatError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    qrels: dict[str, dict[str, int]] = {}
    header_seen = False
    for lineno, line in enumerate(io.StringIO(text), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        cols = line.split("\t") if "\t" in line else line.split()
        cols = [c.strip() for c in cols]
        if not header_seen and [c.lower() for c in cols[:3]] == list(QRELS_HEADER):
            header_seen = True
            continue
        header_seen = True
        if len(cols) == 4:  # TREC qrels: qid iteration docid rel
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3 or not cols[0] or not cols[1]:
            raise DatasetFormatError(
                f"{where}: expected 3 tab-separated columns 'query-id corpus-id score', got {len(cols)}: {line!r}"
            )
        qid, cid, value = cols
        rel = _parse_score(value, where)
        if query_ids is not None and qid not in query_ids:
            raise DatasetFormatError(f"{where}: unknown query id {qid!r} (not in {QUERIES_FILE})")
        if corpus_ids is not None and cid not in corpus_ids:
            raise DatasetFormatError(f"{where}: unknown corpus id {cid!r} (not in {CORPUS_FILE})")
        judged = qrels.setdefault(qid, {})
        if cid in judged and judged[cid] != rel:
            raise DatasetFormatError(f"{where}: conflicting judgement for ({qid!r}, {cid!r}): {judged[cid]} and {rel}")
        judged[cid] = rel
    return qrels


def load_local_dataset(data_dir: str | Path, split: str = "test") -> EvalDataset:
    """Load a dataset directory in the local format (see the module docstring).

    Only queries that have judgements in ``qrels/{split}.tsv`` are kept. Paths are
    resolved to absolute paths; every image is checked to exist. Raises
    :class:`DatasetFormatError` (naming file and line) on any problem.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(f"{root}: not a dataset directory")
    root = root.resolve()
    qrels_path = root / QRELS_DIR / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / QRELS_DIR).glob("*.tsv")) if (root / QRELS_DIR).is_dir() else []
        hint = f" (available splits: {', '.join(available)})" if available else ""
        raise DatasetFormatError(f"{qrels_path}: file not found{hint}")
    corpus = _load_corpus(root)
    queries = _load_queries(root)
    qrels = load_qrels(qrels_path, corpus_ids={c.id for c in corpus}, query_ids={q.id for q in queries})
    if not qrels:
        raise DatasetFormatError(f"{qrels_path}: no judgements")
    kept = [q for q in queries if q.id in qrels]
    log.info(
        "loaded %s: %d pages, %d of %d queries judged in split %r",
        root.name,
        len(corpus),
        len(kept),
        len(queries),
        split,
    )
    return EvalDataset(name=root.name, root=root, corpus=corpus, queries=kept, qrels=qrels)


# --------------------------------------------------------------------------- writing


def _rel(path: Path, root: Path) -> str:
    path = Path(path).resolve()
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _merge_jsonl(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Existing lines of ``path`` (if any) plus the new objects not already present, by ``_id``.

    An id present in both with different content raises ValueError.
    """
    if not path.exists():
        return new
    old = [obj for _, obj in iter_jsonl(path)]
    by_id = {str(o.get("_id")): o for o in old}
    out = list(old)
    for obj in new:
        prev = by_id.get(obj["_id"])
        if prev is None:
            out.append(obj)
        elif {k: prev.get(k) for k in obj} != obj:
            raise ValueError(f"{path}: id {obj['_id']!r} already exists with different content")
    return out


def write_local_dataset(dataset: EvalDataset, out_dir: str | Path, split: str = "test") -> Path:
    """Write ``dataset`` in the local format under ``out_dir``; returns the directory.

    Image and source paths inside ``out_dir`` are written relative to it, others absolute.
    Writing a second split into the same directory merges the corpus and queries (ids
    already present must have the same content) and adds ``qrels/{split}.tsv``.
    """
    from indexes.storage import atomic_write_text

    root = Path(out_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    root = root.resolve()
    corpus_rows: list[dict[str, Any]] = []
    for c in dataset.corpus:
        if c.image is not None:
            corpus_rows.append({"_id": c.id, "image": _rel(c.image, root)})
        elif c.source is not None and c.page is not None:
            src = c.source if _is_url(c.source) else _rel(Path(c.source), root)
            corpus_rows.append({"_id": c.id, "source": src, "page": int(c.page)})
        else:
            raise ValueError(f"corpus item {c.id!r} has neither an image nor a source + page")
    query_rows: list[dict[str, Any]] = []
    for q in dataset.queries:
        row: dict[str, Any] = {"_id": q.id}
        if q.text is not None:
            row["text"] = q.text
        if q.image is not None:
            row["image"] = _rel(q.image, root)
        if len(row) == 1:
            raise ValueError(f"query {q.id!r} has neither text nor image")
        query_rows.append(row)
    corpus_rows = _merge_jsonl(root / CORPUS_FILE, corpus_rows)
    query_rows = _merge_jsonl(root / QUERIES_FILE, query_rows)
    dump = lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)  # noqa: E731
    atomic_write_text(root / CORPUS_FILE, dump(corpus_rows))
    atomic_write_text(root / QUERIES_FILE, dump(query_rows))
    (root / QRELS_DIR).mkdir(exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(QRELS_HEADER)
    query_ids = {q.id for q in dataset.queries}
    for qid, judged in dataset.qrels.items():
        if qid not in query_ids:
            continue
        for cid, rel in judged.items():
            writer.writerow((qid, cid, int(rel)))
    atomic_write_text(root / QRELS_DIR / f"{split}.tsv", buf.getvalue())
    return root


# --------------------------------------------------------------------------- page images


def iter_corpus_images(
    dataset: EvalDataset,
    render_settings: RenderSettings | None = None,
    *,
    on_failure: Callable[[CorpusFailure], None] | None = None,
) -> Iterator[tuple[str, Image.Image]]:
    """(corpus id, RGB page image) for every corpus item that can be produced.

    Image items are read as the indexer reads them (:func:`renderers.load_image`: EXIF
    orientation, RGB, the settings' pixel budget and size guard);
    ``source`` + ``page`` items are rendered by :mod:`renderers` (each document once,
    only the pages the corpus uses). Items that fail (unreadable image, document that
    fails to render, page beyond the end of the document) are passed to ``on_failure``
    (default: logged as a warning) and skipped; the rest is still yielded. Image items
    come first, in corpus order, then the pages of each document in page order.
    """
    from renderers import PageRecord, RenderFailure, RenderSettings, load_image, render_source

    def report(f: CorpusFailure) -> None:
        if on_failure is not None:
            on_failure(f)
        else:
            log.warning("corpus item %s (%s): %s: %s", f.id, f.source, f.error_type, f.reason)

    settings = render_settings or RenderSettings()
    by_source: dict[str, dict[int, list[str]]] = {}
    for item in dataset.corpus:
        if item.image is not None:
            try:
                image = load_image(
                    item.image, max_pixels=settings.max_pixels, image_max_pixels=settings.image_max_pixels
                )
            except Exception as exc:
                report(CorpusFailure(item.id, str(item.image), str(exc) or type(exc).__name__, type(exc).__name__))
                continue
            yield item.id, image
        elif item.source is not None and item.page is not None:
            by_source.setdefault(item.source, {}).setdefault(int(item.page), []).append(item.id)
    for source, pages in by_source.items():
        wanted = ",".join(str(p) for p in sorted(pages))
        done: set[int] = set()
        try:
            for rec in render_source(source, dataclasses.replace(settings, pages=wanted)):
                if isinstance(rec, RenderFailure):
                    for page, ids in sorted(pages.items()):
                        if page not in done:
                            for cid in ids:
                                report(CorpusFailure(cid, source, rec.reason, rec.error_type))
                            done.add(page)
                    break
                assert isinstance(rec, PageRecord)
                if rec.page in pages and rec.page not in done:
                    done.add(rec.page)
                    image = rec.image
                    for cid in pages[rec.page]:
                        yield cid, image
        except Exception as exc:
            for page, ids in sorted(pages.items()):
                if page not in done:
                    for cid in ids:
                        report(CorpusFailure(cid, source, str(exc) or type(exc).__name__, type(exc).__name__))
                    done.add(page)
        for page, ids in sorted(pages.items()):
            if page not in done:
                for cid in ids:
                    report(CorpusFailure(cid, source, f"the document has no page {page}", "MissingPageError"))
