"""Evaluate a retriever on an :class:`~dse.eval.data.EvalDataset` through a real collection.

The corpus is encoded by the same code as ``dse index`` / ``dse search``: a
:class:`dse.Collection` is built (in a cache directory), the corpus page images and
documents are added to it, and every query is searched against its vector index.
Document embeddings are therefore cached: the cache directory is keyed by the dataset
directory, the encoder settings (family, model, revision, adapter, dim, resolution,
prompt version, dtype), a fingerprint of local model/adapter files and the render
settings, and a second run re-encodes nothing (unchanged sources are skipped, an
interrupted run resumes).

Metrics come from :func:`dse.eval.metrics.compute_metrics` (pytrec_eval).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse.eval.data import CorpusFailure, EvalDataset, Query
from dse.eval.metrics import DEFAULT_K_VALUES, compute_metrics

if TYPE_CHECKING:  # pragma: no cover
    from dse.collection import Collection
    from dse.encoders import Encoder
    from renderers import RenderSettings

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]

#: default run depth (documents retrieved per query)
DEFAULT_DEPTH = 100


@dataclass
class EvalResult:
    """Outcome of one evaluation.

    ``run``: query id -> {corpus id: score} (TREC run semantics, at most ``depth`` per query);
    ``metrics``: mean values (keys of :func:`dse.eval.metrics.metric_names`);
    ``per_query``: query id -> metric values; ``encoded_pages``: pages encoded in this call
    (0 when the cache held them all); ``failures``: corpus pages / queries that could not be
    used (the rest was evaluated); ``collection``: the cache collection directory (``None``
    for a temporary one).
    """

    run: Run
    metrics: dict[str, float]
    per_query: dict[str, dict[str, float]]
    encoded_pages: int = 0
    failures: list[CorpusFailure] = field(default_factory=list)
    collection: Path | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def default_cache_dir() -> Path:
    """``$DSE_CACHE/eval`` when set, else ``~/.cache/dse/eval``."""
    base = os.environ.get("DSE_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "dse") / "eval"


# --------------------------------------------------------------------------- cache key


def _fingerprint_dir(path: Path | None) -> list[list[Any]]:
    """(name, size, mtime_ns) of the top-level files of a local model/adapter directory."""
    if path is None or not Path(path).is_dir():
        return []
    out = []
    for p in sorted(Path(path).iterdir()):
        if p.is_file() and not p.name.startswith("."):
            st = p.stat()
            out.append([p.name, st.st_size, st.st_mtime_ns])
    return out


def encoder_fingerprint(encoder: Encoder) -> dict[str, Any]:
    """The encoder's settings plus a fingerprint of its local files (retrained weights at the same
    path give a new cache key)."""
    settings = dict(encoder.settings)
    source = getattr(encoder, "source", None)
    files: dict[str, Any] = {}
    if source is not None:
        files["model"] = _fingerprint_dir(getattr(source, "path", None))
        for i, adapter in enumerate(getattr(source, "adapters", []) or []):
            files[f"adapter{i}"] = _fingerprint_dir(adapter)
    return {"settings": settings, "files": files}


def cache_key(dataset: EvalDataset, encoder: Encoder, render_settings: RenderSettings, index: str) -> str:
    """16 hex digits identifying (dataset dir, encoder, render settings, index type)."""
    payload = {
        "dataset": str(dataset.root),
        "encoder": encoder_fingerprint(encoder),
        "render": render_settings.to_dict(),
        "index": index,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- corpus


def _page_key(source: str, page: int) -> tuple[str, int]:
    return (source, int(page))


def _corpus_keys(dataset: EvalDataset) -> dict[tuple[str, int], list[str]]:
    """(source as the collection records it, page) -> corpus ids."""
    keys: dict[tuple[str, int], list[str]] = {}
    for item in dataset.corpus:
        if item.image is not None:
            key = _page_key(str(Path(item.image).resolve()), 1)
        else:
            assert item.source is not None and item.page is not None
            key = _page_key(item.source, item.page)
        keys.setdefault(key, []).append(item.id)
    return keys


def _add_corpus(
    col: Collection, dataset: EvalDataset, settings: RenderSettings, *, batch_size: int, progress: bool
) -> tuple[int, list[CorpusFailure]]:
    """Add every corpus page to ``col`` (only missing ones are encoded). Returns (pages encoded, failures)."""
    images = sorted({str(Path(c.image).resolve()) for c in dataset.corpus if c.image is not None})
    pages_by_source: dict[str, set[int]] = {}
    for c in dataset.corpus:
        if c.source is not None and c.page is not None:
            pages_by_source.setdefault(c.source, set()).add(int(c.page))
    # a cached document missing a page the corpus now needs is re-rendered with the right pages
    for source, wanted in pages_by_source.items():
        for doc in col.store.find_documents(source):
            if doc.status == "complete" and not wanted <= col.store.stored_pages_of(doc.id):
                log.info("re-indexing %s: the corpus needs pages %s", source, sorted(wanted))
                col.remove(doc.doc_id)
    groups: dict[str, list[str]] = {}
    for source, wanted in pages_by_source.items():
        groups.setdefault(",".join(map(str, sorted(wanted))), []).append(source)
    batches: list[tuple[list[str], RenderSettings]] = []
    if images:
        batches.append((images, replace(settings, pages=None)))
    for pages, sources in groups.items():
        batches.append((sources, replace(settings, pages=pages)))
    encoded = 0
    failures: list[CorpusFailure] = []
    ids_by_source: dict[str, list[str]] = {}
    for c in dataset.corpus:
        ids_by_source.setdefault(str(Path(c.image).resolve()) if c.image is not None else str(c.source), []).append(
            c.id
        )
    for sources, batch_settings in batches:
        report = col.add(
            sources, batch_size=batch_size, render_settings=batch_settings, sidecars=False, progress=progress
        )
        encoded += report.pages
        for f in report.failures:
            for cid in ids_by_source.get(f.source, []) or [f.source]:
                failures.append(CorpusFailure(cid, f.source, f.reason, f.error_type))
    return encoded, failures


def _page_map(col: Collection, dataset: EvalDataset) -> dict[int, list[str]]:
    """Collection page id -> corpus ids, for the stored pages that belong to the corpus."""
    keys = _corpus_keys(dataset)
    stored = col.store.pages(sorted(col.store.stored_page_ids()))
    out: dict[int, list[str]] = {}
    for pid, row in stored.items():
        cids = keys.get(_page_key(row.source, row.page))
        if cids:
            out[pid] = cids
    return out


# --------------------------------------------------------------------------- queries


def _load_query_image(path: Path) -> Any:
    from renderers import load_image

    return load_image(path)


def _encode_queries(
    encoder: Encoder, queries: Sequence[Query], *, batch_size: int, progress: bool
) -> tuple[list[str], list[Any], list[CorpusFailure]]:
    """Encode queries grouped by kind (text, image, fused). Returns (ids, vectors, failures);
    a query that cannot be encoded (unreadable image, encoder error) is reported and skipped."""
    from dse.encoders import EncoderError

    failures: list[CorpusFailure] = []
    groups: dict[str, list[tuple[Query, Any]]] = {"text": [], "image": [], "fused": []}
    for q in queries:
        image = None
        if q.image is not None:
            try:
                image = _load_query_image(q.image)
            except Exception as exc:
                failures.append(
                    CorpusFailure(q.id, str(q.image), f"cannot read query image: {exc}", type(exc).__name__)
                )
                continue
        kind = "fused" if (q.text and image is not None) else ("image" if image is not None else "text")
        groups[kind].append((q, image))

    def encode(items: list[tuple[Query, Any]], kind: str, bs: int) -> Any:
        texts = [q.text or "" for q, _ in items] if kind in ("text", "fused") else None
        images = [im for _, im in items] if kind in ("image", "fused") else None
        return encoder.encode_queries(texts=texts, images=images, batch_size=bs, progress=progress and bs > 1)

    ids: list[str] = []
    vectors: list[Any] = []
    for kind, items in groups.items():
        if not items:
            continue
        try:
            out = encode(items, kind, batch_size)
            ids += [q.id for q, _ in items]
            vectors += list(out)
        except EncoderError:
            for item in items:  # isolate the bad query
                try:
                    out = encode([item], kind, 1)
                except EncoderError as exc:
                    failures.append(CorpusFailure(item[0].id, "query", f"cannot encode query: {exc}", "EncoderError"))
                    continue
                ids.append(item[0].id)
                vectors.append(out[0])
    return ids, vectors, failures


def _search(col: Collection, vectors: list[Any], page_map: dict[int, list[str]], depth: int) -> list[dict[str, float]]:
    import numpy as np

    if not vectors:
        return []
    index = col.index
    live = {int(i) for i in np.asarray(index.ids).tolist()}
    allowed = None if live <= set(page_map) else np.asarray(sorted(set(page_map) & live), np.int64)
    queries: Any = np.stack(vectors).astype(np.float32) if col.kind == "single" else vectors
    k = max(1, min(depth, len(page_map)))
    results = index.search(queries, k, allowed_ids=allowed) if page_map else [[] for _ in vectors]
    out: list[dict[str, float]] = []
    for ranked in results:
        scores: dict[str, float] = {}
        for pid, score in ranked:
            for cid in page_map.get(int(pid), []):
                if len(scores) < depth:
                    scores[cid] = float(score)
        out.append(scores)
    return out


# --------------------------------------------------------------------------- entry points


def _open_collection(
    directory: Path, encoder: Encoder, index: str, options: dict[str, Any] | None = None
) -> Collection:
    from dse.collection import EXACT_MAXSIM, Collection, CollectionError
    from indexes.qdrant.connection import QdrantError

    options = dict(options or {})
    if options.get("backend", "local") == "local" and encoder.kind == "multi":
        # model quality is measured on exact MaxSim over float16 vectors, not an approximate index
        options["index_params"] = {**EXACT_MAXSIM, **options.get("index_params", {})}
    try:
        return Collection.create(directory, encoder, index=index, exist_ok=True, device=_device_of(encoder), **options)
    except CollectionError as exc:
        if not directory.exists() or isinstance(exc, QdrantError):  # an unreachable Qdrant is no reason to rebuild
            raise
        log.warning("cached collection %s is unusable (%s); rebuilding it", directory, exc)
        shutil.rmtree(directory, ignore_errors=True)
        return Collection.create(directory, encoder, index=index, device=_device_of(encoder), **options)


def _device_of(encoder: Encoder) -> str:
    device = getattr(encoder, "device", None)
    return str(device) if device is not None else "auto"


def evaluate(
    model: str | Encoder,
    dataset: EvalDataset,
    *,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
    cache_dir: str | Path | None = None,
    device: str = "auto",
    family: str | None = None,
    adapter: str | None = None,
    dim: int | None = None,
    batch_size: int = 4,
    depth: int = DEFAULT_DEPTH,
    render_settings: RenderSettings | None = None,
    index: str = "auto",
    progress: bool = True,
    collection_options: dict[str, Any] | None = None,
    **encoder_options: Any,
) -> EvalResult:
    """Encode ``dataset``'s corpus into a collection, search every query, score the run.

    ``model``: a hub id, a local directory or a loaded :class:`~dse.encoders.Encoder` (e.g. the
    in-training one). ``cache_dir=None`` uses a temporary collection, deleted afterwards;
    otherwise the collection lives in ``cache_dir/<dataset name>-<key>`` (see the module
    docstring) and is reused. ``depth``: documents per query in the run. ``index``: the
    collection's index type (``auto``: exact flat / MaxSim, so metrics are not blurred by
    approximate search). Encoder loading errors propagate as :class:`~dse.encoders.EncoderError`.
    ``collection_options``: more :meth:`Collection.create` settings, e.g. ``{"backend": "qdrant",
    "qdrant_url": ...}`` to evaluate through a Qdrant-backed collection (a temporary one's Qdrant
    collection is deleted afterwards).
    """
    from dse.encoders import Encoder
    from renderers import RenderSettings

    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    k_values = tuple(k_values)
    settings = render_settings or RenderSettings()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if isinstance(model, Encoder):
        encoder = model
    else:
        encoder = Encoder.load(model, family=family, device=device, dim=dim, adapter=adapter, **encoder_options)
    timings["load"] = time.perf_counter() - t0
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if cache_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="dse-eval-")
        directory = Path(tmp.name) / "collection"
    else:
        public = {k: v for k, v in (collection_options or {}).items() if k != "qdrant_api_key"}
        key = cache_key(dataset, encoder, settings, index if not public else f"{index} {sorted(public.items())}")
        directory = Path(cache_dir).expanduser() / f"{dataset.name}-{key}"
    try:
        col = _open_collection(directory, encoder, index, collection_options)
        try:
            t1 = time.perf_counter()
            encoded, failures = _add_corpus(col, dataset, settings, batch_size=batch_size, progress=progress)
            timings["corpus"] = time.perf_counter() - t1
            page_map = _page_map(col, dataset)
            missing = len(dataset.corpus) - sum(len(v) for v in page_map.values())
            if missing:
                log.warning(
                    "%d of %d corpus pages could not be indexed; evaluating the rest", missing, len(dataset.corpus)
                )
            t2 = time.perf_counter()
            qids, vectors, q_failures = _encode_queries(
                encoder, dataset.queries, batch_size=batch_size, progress=progress
            )
            timings["queries"] = time.perf_counter() - t2
            t3 = time.perf_counter()
            ranked = _search(col, vectors, page_map, depth)
            timings["search"] = time.perf_counter() - t3
        finally:
            if tmp is not None and getattr(col, "backend", "local") != "local":
                from dse.collection.backends import qdrant_index

                qdrant_index(col.index).drop()  # the temporary collection's vectors live in Qdrant: delete them too
            col.close()
    finally:
        if tmp is not None:
            tmp.cleanup()
    run: Run = {qid: scores for qid, scores in zip(qids, ranked)}
    metrics, per_query = compute_metrics(run, dataset.qrels, k_values)
    timings["total"] = time.perf_counter() - t0
    info = {
        "encoder": dict(encoder.settings),
        "depth": depth,
        "index": index,
        "k_values": list(k_values),
        "render": settings.to_dict(),
        "corpus_pages": len(dataset.corpus),
        "queries": len(dataset.queries),
        "evaluated_queries": len(per_query),
    }
    return EvalResult(
        run=run,
        metrics=metrics,
        per_query=per_query,
        encoded_pages=encoded,
        failures=failures + q_failures,
        collection=None if tmp is not None else directory,
        settings=info,
        seconds=timings,
    )


def score_run(run: Run, dataset: EvalDataset, k_values: Iterable[int] = DEFAULT_K_VALUES) -> EvalResult:
    """An :class:`EvalResult` for a run made elsewhere (BM25-OCR, a fused run, a run file)."""
    metrics, per_query = compute_metrics(run, dataset.qrels, tuple(k_values))
    return EvalResult(
        run=run,
        metrics=metrics,
        per_query=per_query,
        settings={"k_values": list(k_values), "evaluated_queries": len(per_query)},
    )
