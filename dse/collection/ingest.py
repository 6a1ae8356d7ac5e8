"""Streaming ingestion: render -> encode -> store, exactly once, resumable.

A producer thread runs the renderers and feeds page records through a bounded queue,
so rendering (PDF rasterising, LibreOffice, Chromium) overlaps with encoding on the
main thread.

Durability protocol (what makes a SIGKILL at any point safe):

1. the page image is written (temp file + rename) and a ``pending`` page row is
   inserted: its id is the vector id;
2. pages are encoded in batches and added to the in-memory index;
3. every ``commit_every`` pages (and at the end) the index is saved (new segment
   files fsynced, then its manifest atomically replaced), and only THEN the pages are
   marked ``stored`` in SQLite, and documents whose pages are all stored are marked
   ``complete``.

On the next open, :func:`dse.collection.collection.reconcile` drops vectors whose
pages are not ``stored`` and the ``pending`` rows; the next run of the same job skips
complete documents with an unchanged content hash and re-does only the rest.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from dse.collection.crashpoints import crash_point
from dse.encoders.base import EncoderError
from indexes.storage import atomic_path

if TYPE_CHECKING:
    from dse.collection.collection import Collection

logger = logging.getLogger(__name__)

_DONE = object()


@dataclass
class Failure:
    """A source that was not (fully) indexed, with a specific reason."""

    source: str
    reason: str
    error_type: str = "Error"

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "error": self.reason, "error_type": self.error_type}


@dataclass
class IndexReport:
    """What one :meth:`Collection.add` call did."""

    added: int = 0
    replaced: int = 0
    resumed: int = 0
    unchanged: int = 0
    metadata_updated: int = 0
    pages: int = 0
    failures: list[Failure] = field(default_factory=list)
    #: files met while walking directories whose type is not supported (not indexed, not failures)
    skipped: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pages_per_second(self) -> float:
        return self.pages / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        return (
            f"{self.pages} pages indexed from {self.added + self.replaced + self.resumed} documents "
            f"({self.added} new, {self.replaced} replaced, {self.resumed} resumed), {self.unchanged} unchanged"
            + (f" ({self.metadata_updated} with new metadata)" if self.metadata_updated else "")
            + f", {len(self.failures)} failed"
            + (f", {len(self.skipped)} skipped: unsupported type" if self.skipped else "")
            + f", in {self.seconds:.1f}s ({self.pages_per_second:.2f} pages/s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "replaced": self.replaced,
            "resumed": self.resumed,
            "unchanged": self.unchanged,
            "metadata_updated": self.metadata_updated,
            "pages": self.pages,
            "seconds": round(self.seconds, 3),
            "failures": [f.to_dict() for f in self.failures],
            "skipped": list(self.skipped),
        }


@dataclass
class EncodedPage:
    """A rendered page with its vectors, encoded outside the writer (e.g. by a Ray actor).

    ``vectors``: a ``(1, dim)`` array (single-vector) or ``(n_tokens, dim)`` (multi-vector);
    ``error`` (instead of vectors): why the page could not be encoded.
    """

    record: Any  # renderers.PageRecord
    vectors: Any = None
    error: str | None = None

    @property
    def doc_id(self) -> str:
        return str(self.record.doc_id)


@dataclass
class _Plan:
    """What to do with one source in this run."""

    source: Any  # renderers.Source
    content_hash: str | None
    meta: dict[str, Any]
    action: str  # "add" | "replace" | "resume"
    skip_pages: set[int] = field(default_factory=set)
    key: int | None = None  # documents.id once a row exists
    title: str | None = None
    failed: bool = False
    closed: bool = False
    uncommitted: int = 0  # pages of this doc not yet marked stored


class Ingestor:
    """One ingestion job over a collection (see module docstring)."""

    def __init__(
        self,
        collection: Collection,
        *,
        batch_size: int,
        commit_every: int,
        progress: bool,
        render_settings: Any,
        meta: dict[str, Any] | None,
        sidecars: bool,
    ) -> None:
        self.col = collection
        self.batch_size = max(1, batch_size)
        self.commit_every = max(1, commit_every)
        self.progress = progress
        self.render_settings = render_settings
        self.meta = dict(meta or {})
        self.sidecars = sidecars
        self.report = IndexReport()
        self.plans: dict[str, _Plan] = {}
        self._batch: list[tuple[int, str, Image.Image]] = []  # (page id, doc id, image)
        self._uncommitted: list[tuple[int, str]] = []  # (page id, doc id) added to the index, not yet stored
        self._ready: list[tuple[int, str, Any]] = []  # (page id, doc id, vectors) encoded elsewhere, not yet added
        self._bar: Any = None
        self._bar_unit = "doc"

    # ----------------------------------------------------------------- planning
    def _doc_meta(self, src: Any, stored: dict[str, Any]) -> dict[str, Any]:
        """The document's metadata: the stored keys, then the sidecar's, then ``meta``'s (see
        :func:`merge_meta`: later keys win, ``None`` deletes a key)."""
        meta = dict(stored)
        if self.sidecars and src.path is not None:
            meta = merge_meta(meta, read_sidecar(Path(src.path)))
        return merge_meta(meta, self.meta)

    def plan(self, inputs: Iterable[Any]) -> list[Any]:
        """Decide per source: skip (unchanged), update metadata, add, replace or resume."""
        from renderers import iter_sources

        store = self.col.store
        selected = []
        skipped: list[Path] = []
        for src in iter_sources(inputs, skipped=skipped):
            if src.error is not None:  # the renderers report it with its specific error type
                self.plans[src.doc_id] = _Plan(src, None, {}, "add")
                selected.append(src)
                continue
            existing = store.document(src.doc_id)
            try:
                content_hash = src.content_hash()
                meta = self._doc_meta(src, existing.meta if existing is not None else {})
            except (OSError, ValueError) as exc:
                self.report.failures.append(Failure(src.source, str(exc), type(exc).__name__))
                continue
            action = "add"
            skip: set[int] = set()
            if existing is not None:
                same = content_hash is not None and existing.content_hash == content_hash
                if existing.status == "complete" and same:
                    if existing.meta != meta:
                        self.col._update_meta(existing.id, meta)
                        self.report.metadata_updated += 1
                    self.report.unchanged += 1
                    continue
                if existing.status == "indexing" and same:
                    action, skip = "resume", store.stored_pages_of(existing.id)
                else:
                    action = "replace"
            self.plans[src.doc_id] = _Plan(src, content_hash, meta, action, skip)
            selected.append(src)
        # metadata sidecars (<file>.meta.json) are not documents: they are not reported as skipped
        self.report.skipped = [str(p) for p in skipped if not _is_sidecar(p)]
        return selected

    # ------------------------------------------------------------------ running
    def run(self, inputs: Iterable[Any]) -> IndexReport:
        """Plan, render (a producer thread), encode (this thread) and store ``inputs``."""
        from renderers import render

        t0 = time.perf_counter()
        sources = self.plan(inputs)
        if not sources:
            self.report.seconds = time.perf_counter() - t0
            return self.report
        records = _prefetch(render(sources, self.render_settings), maxsize=max(8, 2 * self.batch_size))
        return self.drive(records, len(sources), t0, unit="doc")

    def drive(self, items: Iterable[Any], n_sources: int, t0: float, *, unit: str = "doc") -> IndexReport:
        """Store a stream of records in input order, then commit: the single writer of a job.

        ``items`` are the :class:`renderers.PageRecord` s (encoded here, in batches),
        :class:`EncodedPage` s (encoded elsewhere, e.g. by Ray actors) and
        :class:`renderers.RenderFailure` s of the planned sources; the records of one source
        come together, in page order. The progress bar counts documents (``unit="doc"``)
        or pages (``unit="page"``).
        """
        from renderers import RenderFailure

        bar = _progress_bar(n_sources if unit == "doc" else None, self.progress, unit)
        self._bar, self._bar_unit = bar, unit
        current: str | None = None
        try:
            for item in items:
                if current is not None and item.doc_id != current:
                    self._close_doc(current, bar)
                current = item.doc_id
                if isinstance(item, RenderFailure):
                    self._on_failure(item)
                    continue
                if isinstance(item, EncodedPage):
                    self._on_encoded(item)
                else:
                    self._on_page(item)
                bar.set_postfix_str(
                    f"{self.report.pages} pages, {self.report.pages / max(time.perf_counter() - t0, 1e-9):.2f} pages/s"
                )
            if current is not None:
                self._close_doc(current, bar)
            self._commit()
        finally:
            close = getattr(items, "close", None)
            if close is not None:  # stop the producer (thread or cluster pipeline)
                close()
            bar.close()
        # documents that failed part-way are removed entirely: no half-indexed documents
        failed_keys = [p.key for p in self.plans.values() if p.failed and p.key is not None]
        if failed_keys:
            self.col._remove_keys(failed_keys)
        self.report.seconds = time.perf_counter() - t0
        return self.report

    # ------------------------------------------------------------------- events
    def _ensure_doc(self, plan: _Plan) -> int:
        if plan.key is None:
            if plan.action == "replace":
                old = self.col.store.document(plan.source.doc_id)
                if old is not None:
                    self._flush_batch()
                    self._commit()
                    self.col._remove_keys([old.id])
            plan.key = self.col.store.begin_document(
                plan.source.doc_id, plan.source.source, plan.content_hash, plan.meta
            )
        return plan.key

    def _on_failure(self, failure: Any) -> None:
        plan = self.plans.get(failure.doc_id)
        reason = failure.reason
        if plan is not None:
            plan.failed = True
            if plan.action == "replace" and plan.key is None:
                reason += " (the previously indexed version is kept)"
        if failure.page is not None:
            reason = f"page {failure.page}: {reason}"
        self.report.failures.append(Failure(failure.source, reason, failure.error_type))
        logger.info("failed: %s: %s", failure.source, reason)  # reported once, by the caller, from the report

    def _stage_page(self, rec: Any) -> int | None:
        """Write a page's image and its ``pending`` row; its id (the vector id), or ``None`` to skip it."""
        plan = self.plans[rec.doc_id]
        if plan.failed:
            return None
        if plan.title is None and rec.title:  # also from pages a resumed job skips: they may be all of them
            plan.title = rec.title
        if rec.page in plan.skip_pages:
            return None
        key = self._ensure_doc(plan)
        rel = Path("images") / rec.doc_id / f"p{rec.page:05d}.png"
        target = self.col.directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target, fsync=False) as tmp:  # atomic for readers; no per-page fsync (~25 ms each)
            rec.save_png(tmp)
        crash_point("after_image")
        page_id = self.col.store.add_pending_page(key, rec.page, rec.width, rec.height, rel.as_posix(), rec.title)
        crash_point("after_pending")
        plan.uncommitted += 1
        return page_id

    def _on_page(self, rec: Any) -> None:
        """A rendered page, encoded here in batches."""
        page_id = self._stage_page(rec)
        if page_id is None:
            return
        self._batch.append((page_id, rec.doc_id, rec.image))
        if len(self._batch) >= self.batch_size:
            self._flush_batch()
        if len(self._uncommitted) >= self.commit_every:
            self._commit()

    def _on_encoded(self, item: EncodedPage) -> None:
        """A page encoded elsewhere: stored like :meth:`_on_page`'s, without encoding it here."""
        plan = self.plans[item.doc_id]
        if item.error is not None:
            if not plan.failed and item.record.page not in plan.skip_pages:
                self._encode_failed(plan, item.error)
            return
        page_id = self._stage_page(item.record)
        if page_id is None:
            return
        self._ready.append((page_id, item.doc_id, item.vectors))
        if len(self._ready) >= self.batch_size:
            self._flush_batch()
        if len(self._uncommitted) >= self.commit_every:
            self._commit()

    def _close_doc(self, doc_id: str, bar: Any) -> None:
        plan = self.plans.get(doc_id)
        if plan is None or plan.closed:
            return
        plan.closed = True
        if self._bar_unit == "doc":
            bar.update(1)
        if not plan.failed:
            if plan.key is None:  # no new pages (all already stored, or the document rendered to nothing)
                doc = self.col.store.document(plan.source.doc_id) if plan.action == "resume" else None
                if doc is not None:
                    plan.key = doc.id
                else:
                    plan.failed = True
                    self.report.failures.append(Failure(plan.source.source, "rendered no pages", "NoPagesError"))
                    return
            self._maybe_finish(plan)

    def _maybe_finish(self, plan: _Plan) -> None:
        if plan.closed and not plan.failed and plan.uncommitted == 0 and plan.key is not None:
            self.col.store.finish_document(plan.key, plan.title)
            counter = {"add": "added", "replace": "replaced", "resume": "resumed"}[plan.action]
            setattr(self.report, counter, getattr(self.report, counter) + 1)
            crash_point("after_finish_doc")

    # ------------------------------------------------------------ encode/commit
    def _flush_batch(self) -> None:
        """Add the pending batch to the index: encoded here (``_batch``) or already encoded (``_ready``)."""
        if self._batch:
            batch, self._batch = self._batch, []
            self._add_vectors(*self._encode(batch))
        if self._ready:
            ready, self._ready = self._ready, []
            vectors: Any = [v for _, _, v in ready]
            if self.col.kind == "single":
                import numpy as np

                vectors = np.concatenate(vectors)
            self._add_vectors([(pid, doc_id) for pid, doc_id, _ in ready], vectors)

    def _add_vectors(self, kept: list[tuple[int, str]], vectors: Any) -> None:
        if kept:
            self.col.index.add(vectors, [pid for pid, _ in kept])
            self._uncommitted.extend(kept)
            self.report.pages += len(kept)
            if self._bar_unit == "page" and self._bar is not None:
                self._bar.update(len(kept))
            crash_point("after_index_add")

    def _encode_failed(self, plan: _Plan, reason: str) -> None:
        plan.failed = True
        self.report.failures.append(Failure(plan.source.source, f"cannot encode page: {reason}", "EncoderError"))

    def _encode(self, batch: Sequence[tuple[int, str, Image.Image]]) -> tuple[list[tuple[int, str]], Any]:
        """Encode a batch; returns the ``(page id, doc id)`` pairs encoded and their vectors."""
        images = [im for _, _, im in batch]
        try:
            vectors = self.col.encoder.encode_documents(images, batch_size=self.batch_size)
            return [(pid, doc_id) for pid, doc_id, _ in batch], vectors
        except EncoderError:
            if len(batch) == 1:
                raise
        # isolate the bad page(s): encode one by one
        ok_ids: list[tuple[int, str]] = []
        ok_vecs: list[Any] = []
        for pid, doc_id, im in batch:
            try:
                v = self.col.encoder.encode_documents([im], batch_size=1)
            except EncoderError as exc:
                plan = self.plans[doc_id]
                plan.uncommitted -= 1
                self.col.store.delete_pages([pid])
                self._encode_failed(plan, str(exc))
                continue
            ok_ids.append((pid, doc_id))
            ok_vecs.append(v[0])
        if self.col.kind == "single":
            import numpy as np

            return ok_ids, (np.stack(ok_vecs) if ok_vecs else np.zeros((0, self.col.dim), "float32"))
        return ok_ids, ok_vecs

    def _commit(self) -> None:
        self._flush_batch()
        if not self._uncommitted:
            return
        self.col.index.save(self.col.index_dir)
        crash_point("after_index_save")
        committed, self._uncommitted = self._uncommitted, []
        self.col.store.mark_stored([pid for pid, _ in committed])
        crash_point("after_mark_stored")
        for doc_id, n in Counter(doc_id for _, doc_id in committed).items():
            plan = self.plans.get(doc_id)
            if plan is not None:
                plan.uncommitted -= n
                self._maybe_finish(plan)


def merge_meta(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``update``'s keys set over it; a ``None`` value deletes the key.

    The metadata rule of :meth:`Collection.add`: stored metadata is kept, a sidecar's and the
    ``meta`` argument's keys are merged over it, and ``None`` (JSON ``null``) removes a key.
    """
    out = dict(base)
    for key, value in update.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _is_sidecar(path: Path) -> bool:
    return path.name.endswith(".meta.json") and path.with_name(path.name[: -len(".meta.json")]).exists()


def read_sidecar(path: Path) -> dict[str, Any]:
    """Metadata from a JSON sidecar ``<file>.meta.json`` next to ``path`` (empty if none).

    Raises ``ValueError`` with the file name for malformed JSON or a non-object.
    """
    import json

    side = path.with_name(path.name + ".meta.json")
    if not side.is_file():
        return {}
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"bad metadata sidecar {side}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"bad metadata sidecar {side}: expected a JSON object")
    return data


def _progress_bar(total: int | None, enabled: bool, unit: str = "doc") -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, desc="indexing", disable=not enabled, dynamic_ncols=True)


def _prefetch(items: Iterable[Any], maxsize: int) -> Iterator[Any]:
    """Iterate ``items`` in a producer thread, through a bounded queue (rendering overlaps encoding).

    Closing the generator stops the producer at its next item.
    """
    q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:
            q.put(exc)
        finally:
            q.put(_DONE)

    producer = threading.Thread(target=produce, name="dse-render", daemon=True)
    producer.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
