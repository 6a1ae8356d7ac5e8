"""Micro-batching of text-query encoding across concurrent requests.

One encoder on one device serves many clients. Encoding the queries of concurrent
requests one by one wastes the device (a forward of 16 queries costs little more than a
forward of one); :class:`QueryBatcher` collects the text queries that arrive within a
short window (``window_ms``, default 5 ms, from the first query of a batch; at most
``max_batch`` queries) and encodes them with ONE ``encode(texts)`` call (for the server:
``encoder.encode_queries(texts=[...])``), in a single worker thread. Each caller gets its
own query's vectors back through a :class:`concurrent.futures.Future`, then searches with
its own ``k`` and filters. Queries that queue up while a batch is being encoded form the
next batch, so under load batches grow by themselves; an idle server adds at most the
window to a lone query's latency.

With a ``search`` function, the batcher also searches: the batch's requests are grouped by
their ``(k, filters)`` and each group is searched with ONE ``search(vectors, k, where)`` call
(one FAISS call / one MaxSim scan for many queries), in a second worker thread so that the
next batch is encoded while the previous one is searched; each future then resolves to its
request's hits. Long-lived worker threads also keep the BLAS/OpenMP thread pools of torch and
FAISS few and stable (a pool per short-lived request thread oversubscribes the CPU).

Identical texts within a batch are encoded once. An encoder error fails only the
requests of that batch whose text caused it: the batch is retried query by query so
one bad query does not fail its neighbours.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

#: encode(texts) -> one result per text (e.g. a ``(n, dim)`` array or a list of ``(t_i, dim)`` arrays)
EncodeFn = Callable[[list[str]], Any]  # (n, dim) array or n per-token arrays
#: search(encodings of a group of queries, k, where) -> one result (e.g. a hit list) per query
SearchFn = Callable[[list[Any], int, Any], Sequence[Any]]


@dataclass
class BatcherStats:
    """Counters since start: ``batches`` encoder calls, ``queries`` requests served, ``largest`` batch."""

    batches: int = 0
    queries: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  #: batch size -> how many batches had it

    @property
    def mean_batch(self) -> float:
        return self.queries / self.batches if self.batches else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "queries": self.queries,
            "largest": self.largest,
            "mean_batch": round(self.mean_batch, 3),
        }


_STOP = object()


class QueryBatcher:
    """Collects text queries for ``window_ms`` and encodes them in one ``encode`` call.

    ``encode`` runs in the batcher's worker thread, inside ``lock`` when given (the lock
    that serialises every use of the model on its device).
    """

    def __init__(
        self,
        encode: EncodeFn,
        *,
        search: SearchFn | None = None,
        window_ms: float = 5.0,
        max_batch: int = 32,
        lock: threading.Lock | threading.RLock | None = None,
        name: str = "query-batcher",
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        self.encode = encode
        self.search = search
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self.lock = lock
        self.stats = BatcherStats()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._searches: queue.Queue[Any] = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        self._search_thread: threading.Thread | None = None
        if search is not None:
            self._search_thread = threading.Thread(target=self._run_searches, name=f"{name}-search", daemon=True)
            self._search_thread.start()

    # ------------------------------------------------------------------ API
    def submit(self, text: str, k: int = 10, where: dict[str, str] | None = None) -> Future[Any]:
        """Queue ``text``; the future resolves to its encoding (no ``search``) or its search result
        with ``k`` and ``where`` (with ``search``), or to the exception that prevented it."""
        if self._closed:
            raise RuntimeError("the query batcher is closed")
        fut: Future[Any] = Future()
        self._queue.put((text, fut, (k, tuple(sorted((where or {}).items())))))
        return fut

    def encode_one(self, text: str, timeout: float | None = None) -> Any:
        """Blocking convenience: ``submit(text).result(timeout)``."""
        return self.submit(text).result(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Finish the queued queries, then stop the worker threads."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._search_thread is not None:
            self._searches.put(_STOP)
            self._search_thread.join(timeout)

    # --------------------------------------------------------------- worker
    def _collect(self, first: Any) -> tuple[list[tuple[str, Future[Any], Any]], bool]:
        """The batch starting with ``first``: everything already queued, then arrivals within the window."""
        batch = [first]
        stop = False
        deadline = time.monotonic() + self.window
        while len(batch) < self.max_batch:
            remaining = deadline - time.monotonic()
            try:
                item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            batch.append(item)
        return batch, stop

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch, stop = self._collect(first)
            self._process(batch)
            if stop:
                # drain whatever was queued before close()
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        return
                    if item is not _STOP:
                        self._process([item])

    def _encode_locked(self, texts: list[str]) -> Sequence[Any]:
        if self.lock is None:
            return self.encode(texts)
        with self.lock:
            return self.encode(texts)

    def _process(self, batch: list[tuple[str, Future[Any], Any]]) -> None:
        live = [(t, f, g) for t, f, g in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        texts = list(dict.fromkeys(t for t, _, _ in live))  # unique, first-seen order
        try:
            results = self._encode_locked(texts)
            if len(results) != len(texts):  # pragma: no cover - encoder contract guard
                raise RuntimeError(f"encode returned {len(results)} results for {len(texts)} texts")
        except Exception as exc:
            if len(texts) == 1:
                for _, fut, _ in live:
                    fut.set_exception(exc)
                self._count(1, len(live))
                return
            logger.info("batch of %d queries failed (%s); retrying one by one", len(texts), exc)
            for text in texts:
                try:
                    result = self._encode_locked([text])[0]
                except Exception as one_exc:
                    for t, fut, _ in live:
                        if t == text:
                            fut.set_exception(one_exc)
                else:
                    self._deliver([(fut, result, g) for t, fut, g in live if t == text])
                self._count(1, sum(1 for t, _, _ in live if t == text))
            return
        by_text = dict(zip(texts, results, strict=True))
        self._deliver([(fut, by_text[t], g) for t, fut, g in live])
        self._count(len(texts), len(live))

    def _deliver(self, items: list[tuple[Future[Any], Any, Any]]) -> None:
        """Resolve futures with encodings, or hand them to the search thread."""
        if self.search is None:
            for fut, result, _ in items:
                fut.set_result(result)
        else:
            self._searches.put(items)

    def _run_searches(self) -> None:
        while True:
            items = self._searches.get()
            if items is _STOP:
                return
            groups: dict[Any, list[tuple[Future[Any], Any]]] = {}
            for fut, vectors, group in items:
                groups.setdefault(group, []).append((fut, vectors))
            for (k, where), members in groups.items():
                try:
                    found = self.search([v for _, v in members], k, dict(where) or None)  # type: ignore[misc]
                    if len(found) != len(members):  # pragma: no cover - search contract guard
                        raise RuntimeError(f"search returned {len(found)} results for {len(members)} queries")
                except Exception as exc:
                    for fut, _ in members:
                        fut.set_exception(exc)
                    continue
                for (fut, _), result in zip(members, found, strict=True):
                    fut.set_result(result)

    def _count(self, encoded: int, served: int) -> None:
        s = self.stats
        s.batches += 1
        s.queries += served
        s.largest = max(s.largest, encoded)
        s.sizes[encoded] = s.sizes.get(encoded, 0) + 1
