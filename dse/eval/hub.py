"""ViDoRe (v1, v2) and other Hugging Face hub retrieval sets, as :class:`EvalDataset`.

Two layouts are read, from the hub through ``datasets`` or from a local copy:

* **BEIR-style** (ViDoRe v2, ``vidore/*_beir``): three configs, ``corpus``
  (``corpus-id``, ``image``), ``queries`` (``query-id``, ``query``; v2 also has
  ``language``) and ``qrels`` (``query-id``, ``corpus-id``, ``score``). Ids become strings;
  the judgements are taken as they are.
* **QA-style** (ViDoRe v1): one table, one row per (optional query, page image) with
  ``query``, ``image``, ``image_filename`` (and ``answer``, ``page``, ...). It becomes
  corpus / queries / qrels exactly as the v1 leaderboard's evaluator does it
  (illuin-tech/vidore-benchmark, ``src/vidore_benchmark/evaluation/vidore_evaluators/
  vidore_evaluator_qa.py`` with ``utils/data_utils.py::deduplicate_dataset_rows``):

  - pages are identified by ``image_filename`` (rows sharing a filename are one page;
    the evaluator keeps the max score over such rows, i.e. one corpus entry);
  - queries are deduplicated by their text, first occurrence kept, ``None`` queries
    dropped (query ids are ``0, 1, ...`` in that order, as in the repo's
    ``cli/convert_ds_from_qa_to_beir.py``);
  - each query is relevant (score 1) to exactly one page: the ``image_filename`` of the
    *last* row carrying that query text (the evaluator's ``queries2filename`` dict).

  The evaluator also passes ``ignore_identical_ids=True``, which drops a page whose id
  equals the query id; here query ids (``0, 1, ...``) and page ids (file names) never
  coincide in practice, so nothing is dropped.

Local copies (``data_dir``): a ``save_to_disk`` directory (``Dataset`` or ``DatasetDict``;
the ``split`` is picked) or parquet files, e.g. a snapshot of the hub repo. BEIR-style
when ``data_dir`` holds ``corpus``, ``queries`` and ``qrels`` (directories or
``.parquet`` files), or is a ``DatasetDict`` with those three keys; QA-style otherwise.
Hub ids and local copies go through the same conversion.

Page images are written once as PNG files under ``cache_dir`` (named by corpus id and a
hash of the image bytes, so a changed image is rewritten), so the corpus is plain
``CorpusItem(image=path)``. An image that cannot be decoded is logged and left out of
the corpus (its judgements stay: a page that cannot be found counts as a miss).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dse.eval.data import CorpusItem, DatasetFormatError, EvalDataset, Query
from dse.extras import require
from indexes.storage import atomic_write_bytes

log = logging.getLogger(__name__)

#: ViDoRe benchmark v1: the 10 QA-style tasks of the leaderboard
#: (illuin-tech/vidore-benchmark, src/vidore_benchmark/cli/examples/convert_vidore_benchmark_to_beir.sh)
VIDORE_V1: tuple[str, ...] = (
    "vidore/arxivqa_test_subsampled",
    "vidore/docvqa_test_subsampled",
    "vidore/infovqa_test_subsampled",
    "vidore/tabfquad_test_subsampled",
    "vidore/tatdqa_test",
    "vidore/shiftproject_test",
    "vidore/syntheticDocQA_artificial_intelligence_test",
    "vidore/syntheticDocQA_energy_test",
    "vidore/syntheticDocQA_government_reports_test",
    "vidore/syntheticDocQA_healthcare_industry_test",
)
#: ViDoRe benchmark v2: BEIR-style (collection vidore/vidore-benchmark-v2-67ae03e3924e85b36e7f53b0; the ids of
#: MTEB's Vidore2* tasks)
VIDORE_V2: tuple[str, ...] = (
    "vidore/esg_reports_v2",
    "vidore/biomedical_lectures_v2",
    "vidore/economics_reports_v2",
    "vidore/esg_reports_human_labeled_v2",
)
BENCHMARKS: dict[str, tuple[str, ...]] = {"vidore-v1": VIDORE_V1, "vidore-v2": VIDORE_V2}

#: Published averages, nDCG@5 x 100 over the benchmark's tasks (model cards / papers; see
#: /work/shared/specs/models.md). Only published figures: no entry = not published here.
PUBLISHED: dict[str, dict[str, float]] = {
    "MrLight/dse-qwen2-2b-mrl-v1": {"vidore-v1": 85.8},
    "vidore/colpali-v1.3": {"vidore-v1": 84.8},
    "vidore/colqwen2-v1.0": {"vidore-v1": 89.3},
    "vidore/colqwen2.5-v0.2": {"vidore-v1": 89.4},
    "vidore/colSmol-256M": {"vidore-v1": 80.1},
}

LAYOUTS = ("auto", "beir", "qa")
BEIR_CONFIGS = ("corpus", "queries", "qrels")
# column names of the two layouts (vidore_evaluator_beir.py / vidore_evaluator_qa.py defaults)
CORPUS_ID, QUERY_ID, SCORE = "corpus-id", "query-id", "score"
QUERY, IMAGE, IMAGE_FILENAME = "query", "image", "image_filename"


class HubDatasetError(RuntimeError):
    """A hub dataset cannot be downloaded (no network, unknown or gated repo); one-line message."""


# --------------------------------------------------------------------------- names


def resolve_name(name: str) -> str:
    """A known ViDoRe task given without its ``vidore/`` owner becomes the full hub id."""
    if "/" not in name:
        for hub_id in VIDORE_V1 + VIDORE_V2:
            if hub_id.split("/", 1)[1] == name:
                return hub_id
    return name


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "dataset"


# --------------------------------------------------------------------------- tables


def _hub_table(name: str, config: str | None, split: str) -> Any:
    """``datasets.load_dataset(name, config, split=split)`` with one-line errors."""
    require("eval")
    import datasets
    from datasets.exceptions import DatasetNotFoundError

    hint = f"pass --data-dir /path/to/local/copy (a snapshot or save_to_disk of {name})"
    try:
        return datasets.load_dataset(name, config, split=split)
    except DatasetNotFoundError as exc:
        msg = str(exc).lower()
        if "gated" in msg:
            raise HubDatasetError(
                f"{name!r} is gated on the Hugging Face hub (log in and accept its terms); or {hint}"
            ) from exc
        raise HubDatasetError(
            f"no dataset {name!r} on the Hugging Face hub (or it is private); check the name or {hint}"
        ) from exc
    except (ConnectionError, OSError) as exc:
        raise HubDatasetError(f"cannot reach the Hugging Face hub to download {name!r}; {hint}") from exc
    except ValueError as exc:
        text = str(exc)
        if "Unknown split" in text or "split" in text.lower() and "not found" in text.lower():
            raise DatasetFormatError(f"{name}: no split {split!r} ({text.splitlines()[0]})") from exc
        raise
    except Exception as exc:
        if any(w in type(exc).__name__.lower() for w in ("connect", "timeout", "offline", "http")):
            raise HubDatasetError(f"cannot reach the Hugging Face hub to download {name!r}; {hint}") from exc
        raise


def _hub_has_config(name: str, config: str, split: str) -> Any | None:
    """The ``config`` table of a hub dataset, or None when the dataset has no such config."""
    try:
        return _hub_table(name, config, split)
    except ValueError as exc:
        if "BuilderConfig" in str(exc) or "config" in str(exc).lower():
            return None
        raise


def _parquet_files(path: Path, split: str) -> list[Path]:
    files = sorted(p for p in path.rglob("*.parquet") if not any(part.startswith(".") for part in p.parts))
    named = [
        p for p in files if p.name == f"{split}.parquet" or p.name.startswith(f"{split}-") or p.parent.name == split
    ]
    return named or files


def _disk_table(path: Path, split: str, cache_dir: Path) -> Any:
    """A ``datasets.Dataset`` from a ``save_to_disk`` directory, a parquet file or a directory
    of parquet files (the split's files when they are named after it)."""
    require("eval")
    import datasets

    try:
        if path.is_file():
            if path.suffix != ".parquet":
                raise DatasetFormatError(f"{path}: not a parquet file")
            return datasets.load_dataset(
                "parquet", data_files=[str(path)], split="train", cache_dir=str(cache_dir / "hf-datasets")
            )
        if (path / "dataset_dict.json").is_file():
            dd = datasets.load_from_disk(str(path))
            if split not in dd:
                raise DatasetFormatError(f"{path}: no split {split!r} (available: {', '.join(dd)})")
            return dd[split]
        if (path / "state.json").is_file():
            return datasets.load_from_disk(str(path))
        files = _parquet_files(path, split) if path.is_dir() else []
        if files:
            return datasets.load_dataset(
                "parquet", data_files=[str(p) for p in files], split="train", cache_dir=str(cache_dir / "hf-datasets")
            )
    except DatasetFormatError:
        raise
    except Exception as exc:
        raise DatasetFormatError(
            f"{path}: cannot read the dataset ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no message'})"
        ) from exc
    raise DatasetFormatError(f"{path}: no dataset found (expected a datasets save_to_disk directory or parquet files)")


def _local_beir_parts(data_dir: Path) -> dict[str, Path] | None:
    parts: dict[str, Path] = {}
    for config in BEIR_CONFIGS:
        for candidate in (data_dir / config, data_dir / f"{config}.parquet"):
            if candidate.exists():
                parts[config] = candidate
                break
    return parts if len(parts) == len(BEIR_CONFIGS) else None


def _columns(table: Any, needed: Sequence[str], where: str) -> None:
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise DatasetFormatError(
            f"{where}: missing column(s) {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(table.column_names)})"
        )


# --------------------------------------------------------------------------- images


def _image_payload(value: Any, where: str) -> tuple[bytes | None, str | None]:
    """(encoded bytes, file path) of an undecoded ``datasets.Image`` value."""
    if isinstance(value, dict):
        return value.get("bytes"), value.get("path")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str):
        return None, value
    raise DatasetFormatError(f"{where}: unsupported image value of type {type(value).__name__}")


def _materialise(
    table: Any, rows: Sequence[int], ids: Sequence[str], out_dir: Path, where: str, progress: bool = True
) -> dict[str, Path]:
    """Write the image of ``table[rows[i]]`` as ``out_dir/<id>-<hash>.png`` for each ``ids[i]``
    (skipped when that file exists); returns ``{id: path}`` for the images that could be written."""
    require("eval")
    import datasets
    from PIL import Image

    from renderers.images import to_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    raw = (
        table.cast_column(IMAGE, datasets.Image(decode=False))
        if isinstance(table.features.get(IMAGE), datasets.Image)
        else table
    )
    from tqdm.auto import tqdm

    paths: dict[str, Path] = {}
    names: dict[str, str] = {}
    subset = raw.select_columns([IMAGE])
    if list(rows) != list(range(len(raw))):
        subset = subset.select(list(rows))
    for cid, row in tqdm(
        zip(ids, subset), total=len(ids), desc="page images", unit="page", disable=not progress or len(ids) < 50
    ):
        data, path = _image_payload(row[IMAGE], f"{where}: corpus id {cid!r}")
        try:
            if data is None:
                if not path:
                    raise ValueError("no image data")
                data = Path(path).read_bytes()
            digest = hashlib.sha1(data).hexdigest()[:12]
            base = _slug(cid)[:80]
            name = f"{base}-{digest}.png"
            if name in names and names[name] != cid:  # two ids that slug alike with identical bytes
                name = f"{base}-{hashlib.sha1(cid.encode()).hexdigest()[:8]}-{digest}.png"
            names[name] = cid
            target = out_dir / name
            if not target.is_file():
                if data[:8] == b"\x89PNG\r\n\x1a\n":
                    with Image.open(io.BytesIO(data)) as im:
                        im.verify()
                    payload = data
                else:
                    with Image.open(io.BytesIO(data)) as im:
                        im.load()
                        buf = io.BytesIO()
                        to_rgb(im).save(buf, format="PNG")
                    payload = buf.getvalue()
                atomic_write_bytes(target, payload, unique=True)  # several processes may fill the cache
        except Exception as exc:
            log.warning(
                "%s: corpus id %s: unreadable image, left out of the corpus: %s: %s",
                where,
                cid,
                type(exc).__name__,
                exc,
            )
            continue
        paths[cid] = target.resolve()
    return paths


# --------------------------------------------------------------------------- conversions


def _unique_ids(values: Sequence[str]) -> list[str]:
    """Whitespace-free ids (TREC run files split on whitespace); collisions get ``~n``."""
    out: list[str] = []
    taken: set[str] = set()
    for v in values:
        base = re.sub(r"\s+", "_", v.strip()) or "_"
        cid, n = base, 1
        while cid in taken:
            n += 1
            cid = f"{base}~{n}"
        taken.add(cid)
        out.append(cid)
    return out


def dataset_from_qa(table: Any, *, name: str, root: Path, where: str, progress: bool = True) -> EvalDataset:
    """Corpus / queries / qrels of a QA-style table, with ViDoRe v1's semantics (module docstring)."""
    _columns(table, (QUERY, IMAGE, IMAGE_FILENAME), where)
    filenames = [str(f) for f in table[IMAGE_FILENAME]]
    texts = list(table[QUERY])
    first_row: dict[str, int] = {}
    for i, fn in enumerate(filenames):
        first_row.setdefault(fn, i)
    # queries2filename = {query: image_filename for ...}: the last row of a query text wins
    query_page: dict[str, str] = {}
    for text, fn in zip(texts, filenames):
        query_page[text] = fn
    unique_files = list(first_row)
    ids = dict(zip(unique_files, _unique_ids(unique_files)))
    images = _materialise(
        table, [first_row[f] for f in unique_files], [ids[f] for f in unique_files], root / "images", where, progress
    )
    corpus = [CorpusItem(ids[f], image=images[ids[f]]) for f in unique_files if ids[f] in images]
    queries: list[Query] = []
    qrels: dict[str, dict[str, int]] = {}
    seen: set[str] = set()
    skipped = 0
    for text in texts:  # deduplicate_dataset_rows: first occurrence, None dropped
        if text is None or text in seen:
            continue
        seen.add(text)
        if not str(text).strip():
            skipped += 1
            continue
        qid = str(len(queries))
        queries.append(Query(qid, text=str(text)))
        qrels[qid] = {ids[query_page[text]]: 1}
    if skipped:
        log.warning("%s: %d empty query text(s) skipped", where, skipped)
    if not queries:
        raise DatasetFormatError(f"{where}: no queries (every '{QUERY}' is empty or null)")
    return EvalDataset(name=name, root=root, corpus=corpus, queries=queries, qrels=qrels)


def dataset_from_beir(
    corpus_t: Any,
    queries_t: Any,
    qrels_t: Any,
    *,
    name: str,
    root: Path,
    where: str,
    language: str | None = None,
    progress: bool = True,
) -> EvalDataset:
    """Corpus / queries / qrels of a BEIR-style dataset (ids as strings, judgements as given).

    ``language`` keeps only the queries whose ``language`` column equals it (ViDoRe v2's
    per-language evaluation). Only queries with judgements are kept; duplicate corpus ids
    keep their first row; judgements of unknown queries are dropped, those of pages not in
    the corpus are kept (they count as misses) and reported.
    """
    _columns(corpus_t, (CORPUS_ID, IMAGE), f"{where} [corpus]")
    _columns(queries_t, (QUERY_ID, QUERY), f"{where} [queries]")
    _columns(qrels_t, (QUERY_ID, CORPUS_ID, SCORE), f"{where} [qrels]")
    raw_ids = [str(c) for c in corpus_t[CORPUS_ID]]
    first_row: dict[str, int] = {}
    for i, cid in enumerate(raw_ids):
        if cid in first_row:
            log.warning("%s [corpus]: duplicate corpus-id %s (row %d); the first row is kept", where, cid, i + 1)
            continue
        first_row[cid] = i
    unique = list(first_row)
    safe = dict(zip(unique, _unique_ids(unique)))
    images = _materialise(
        corpus_t,
        [first_row[c] for c in unique],
        [safe[c] for c in unique],
        root / "images",
        f"{where} [corpus]",
        progress,
    )
    corpus = [CorpusItem(safe[c], image=images[safe[c]]) for c in unique if safe[c] in images]

    keep_lang: list[bool] | None = None
    if language is not None:
        if "language" not in queries_t.column_names:
            raise DatasetFormatError(f"{where} [queries]: no 'language' column to select {language!r} by")
        langs = [str(x) for x in queries_t["language"]]
        keep_lang = [x == language for x in langs]
        if not any(keep_lang):
            raise DatasetFormatError(
                f"{where} [queries]: no query in language {language!r} (available: {', '.join(sorted(set(langs)))})"
            )
    qids = [str(q) for q in queries_t[QUERY_ID]]
    qtexts = list(queries_t[QUERY])
    qsafe = dict(zip(dict.fromkeys(qids), _unique_ids(list(dict.fromkeys(qids)))))

    qrels: dict[str, dict[str, int]] = {}
    unknown_pages = 0
    for row, (q, c, s) in enumerate(zip(qrels_t[QUERY_ID], qrels_t[CORPUS_ID], qrels_t[SCORE]), 1):
        q, c = str(q), str(c)
        try:
            score = int(s)
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{where} [qrels]: row {row}: score must be an integer, got {s!r}") from None
        if q not in qsafe:
            continue
        if c not in safe:
            unknown_pages += 1
        qrels.setdefault(qsafe[q], {})[safe.get(c, re.sub(r"\s+", "_", c))] = score
    if unknown_pages:
        log.warning("%s [qrels]: %d judgement(s) name pages that are not in the corpus", where, unknown_pages)

    queries: list[Query] = []
    seen: set[str] = set()
    for i, (qid, text) in enumerate(zip(qids, qtexts)):
        sid = qsafe[qid]
        if sid in seen or (keep_lang is not None and not keep_lang[i]) or sid not in qrels:
            continue
        if text is None or not str(text).strip():
            log.warning("%s [queries]: query-id %s has no text; skipped", where, qid)
            continue
        seen.add(sid)
        queries.append(Query(sid, text=str(text)))
    if not queries:
        raise DatasetFormatError(f"{where}: no query has judgements in the qrels")
    qrels = {q.id: qrels[q.id] for q in queries}
    return EvalDataset(name=name, root=root, corpus=corpus, queries=queries, qrels=qrels)


# --------------------------------------------------------------------------- entry point


def load_hub_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    cache_dir: str | Path,
    layout: str = "auto",
    language: str | None = None,
    progress: bool = True,
) -> EvalDataset:
    """Load a BEIR-style or QA-style retrieval set as an :class:`EvalDataset`.

    ``name``: a hub dataset id (``vidore/docvqa_test_subsampled``; a ViDoRe task may be
    given without ``vidore/``), downloaded with ``datasets.load_dataset``; or, with
    ``data_dir``, just the dataset's name, the tables being read from that local copy.
    ``layout``: ``auto`` (ViDoRe v1 ids and local copies without corpus/queries/qrels are
    QA-style, everything else is tried as BEIR-style first), ``beir`` or ``qa``.
    ``language`` (BEIR-style): keep the queries of that ``language`` only.
    Page images are materialised as PNG under ``cache_dir`` (progress bar unless
    ``progress`` is false).

    Raises :class:`HubDatasetError` (one line) when the hub cannot be reached or the repo
    does not exist, :class:`DatasetFormatError` for a copy that is not a dataset or lacks
    the layout's columns.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; use one of: {', '.join(LAYOUTS)}")
    cache_root = Path(cache_dir).expanduser()
    if data_dir is not None:
        local = Path(data_dir).expanduser()
        if not local.exists():
            raise DatasetFormatError(f"{local}: no such file or directory")
        local = local.resolve()
        where = str(local)
        tag = hashlib.sha1(str(local).encode()).hexdigest()[:8]
        root = cache_root / "datasets" / f"{_slug(name)}-{tag}" / _slug(split)
        parts = _local_beir_parts(local) if local.is_dir() else None
        if layout == "qa":
            parts = None
        elif layout == "beir" and parts is None and not (local / "dataset_dict.json").is_file():
            raise DatasetFormatError(
                f"{local}: a BEIR-style copy needs corpus, queries and qrels (directories or .parquet files)"
            )
        if parts is not None:
            tables = {c: _disk_table(p, split, cache_root) for c, p in parts.items()}
            return dataset_from_beir(
                tables["corpus"],
                tables["queries"],
                tables["qrels"],
                name=name,
                root=root,
                where=where,
                language=language,
                progress=progress,
            )
        if (local / "dataset_dict.json").is_file() and layout != "qa":
            require("eval")
            import datasets

            dd = datasets.load_from_disk(str(local))
            if all(c in dd for c in BEIR_CONFIGS):
                return dataset_from_beir(
                    dd["corpus"],
                    dd["queries"],
                    dd["qrels"],
                    name=name,
                    root=root,
                    where=where,
                    language=language,
                    progress=progress,
                )
            if layout == "beir":
                raise DatasetFormatError(
                    f"{local}: a BEIR-style copy needs corpus, queries and qrels (found: {', '.join(dd)})"
                )
        return dataset_from_qa(
            _disk_table(local, split, cache_root), name=name, root=root, where=where, progress=progress
        )

    hub_id = resolve_name(name)
    root = cache_root / "datasets" / _slug(hub_id) / _slug(split)
    if layout == "auto":
        layout = "qa" if hub_id in VIDORE_V1 else "beir" if hub_id in VIDORE_V2 else "auto"
    if layout in ("beir", "auto"):
        corpus_t = _hub_table(hub_id, "corpus", split) if layout == "beir" else _hub_has_config(hub_id, "corpus", split)
        if corpus_t is not None:
            return dataset_from_beir(
                corpus_t,
                _hub_table(hub_id, "queries", split),
                _hub_table(hub_id, "qrels", split),
                name=hub_id,
                root=root,
                where=hub_id,
                language=language,
                progress=progress,
            )
    return dataset_from_qa(_hub_table(hub_id, None, split), name=hub_id, root=root, where=hub_id, progress=progress)


def benchmark_tasks(benchmark: str) -> tuple[str, ...]:
    """The hub ids of ``vidore-v1`` / ``vidore-v2``; ValueError naming the known benchmarks."""
    try:
        return BENCHMARKS[benchmark]
    except KeyError:
        raise ValueError(f"unknown benchmark {benchmark!r}; use one of: {', '.join(BENCHMARKS)}") from None


def published_score(model: str, benchmark: str) -> float | None:
    """The published nDCG@5 x 100 average of ``model`` on ``benchmark``, if there is one."""
    return PUBLISHED.get(model, {}).get(benchmark)
