"""``QdrantIndex``: a :class:`~indexes.protocol.VectorIndex` whose vectors live in a Qdrant collection.

Point id = the caller's item id (a page id); upserts are idempotent and acknowledged
(``wait=True``). :meth:`QdrantIndex.add` validates and buffers; :meth:`QdrantIndex.save` sends the
buffer (in size-bounded batches) and returns only once Qdrant acknowledged every point, which
is the commit point a caller may record. Removals are sent at once. Items added but not yet
saved are not searchable.

The index directory holds only ``index.json``: the URL (without credentials), the collection
name, the :class:`~indexes.qdrant.schema.Schema` and the payload indexes made. The API key is
never written.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import DuplicateIdError, IndexFormatError, IndexInputError
from indexes.maxsim import as_query_list, to_float_array
from indexes.qdrant.connection import Connection, QdrantError, QdrantNotFoundError, RetryPolicy
from indexes.qdrant.filters import Condition, payload_key, to_filter
from indexes.qdrant.schema import BASE_PAYLOAD_INDEXES, DENSE, MULTI, PREFETCH, Schema
from indexes.segments import as_id_array
from indexes.storage import atomic_write_bytes, fsync_dir

logger = logging.getLogger(__name__)

INDEX_TYPE = "qdrant"
FORMAT = "dse-indexes-qdrant"
FORMAT_VERSION = 1
CONFIG_NAME = "index.json"
#: Upper bound of one upsert request's estimated JSON size (Qdrant's default limit is 32 MiB).
UPSERT_BYTES = 16 * 1024 * 1024
SCROLL_PAGE = 4096
_BAD_NAME_CHARS = set('<>:"/\\|?*\0\x1f')
_FLOAT16_MAX = float(np.finfo(np.float16).max)

Hits = list[list[tuple[int, float]]]
PayloadProvider = Callable[[list[int]], dict[int, dict[str, Any]]]


def check_collection_name(name: str) -> str:
    """A valid Qdrant collection name, else :class:`IndexInputError`."""
    if not isinstance(name, str) or not name or len(name) > 255 or name in (".", ".."):
        raise IndexInputError(f"bad Qdrant collection name {name!r} (1 to 255 characters)")
    bad = sorted(set(name) & _BAD_NAME_CHARS)
    if bad:
        raise IndexInputError(f"bad Qdrant collection name {name!r}: it contains {''.join(bad)!r}")
    return name


def _payload_type(value: Any) -> str | None:
    """The payload index type for a metadata value (``None``: not indexed)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "keyword"
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "keyword"
    return None


def read_config(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The checked ``index.json`` of a Qdrant index directory (:class:`IndexFormatError` otherwise)."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise IndexFormatError(f"no Qdrant index at {directory}: {CONFIG_NAME} is missing")
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexFormatError(f"{path} is corrupted: {exc}") from exc
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not a Qdrant index configuration")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise IndexFormatError(
            f"{path} has format version {cfg.get('format_version')}; this code reads {FORMAT_VERSION}"
        )
    for key, typ in (("url", str), ("collection", str), ("schema", dict)):
        if not isinstance(cfg.get(key), typ):
            raise IndexFormatError(f"{path} is missing or has a bad {key!r} entry")
    return cfg


class QdrantIndex:
    """Pages in a Qdrant collection. Make one with :meth:`create`, reopen it with :meth:`load`.

    ``payload_provider``: optional ``ids -> {id: payload}`` called at :meth:`save` for buffered
    items added without a payload (a collection fills doc_id, source, page, title and meta).
    """

    index_type = INDEX_TYPE

    def __init__(
        self, connection: Connection, collection: str, schema: Schema, payload_indexes: dict[str, str] | None = None
    ) -> None:
        self._conn = connection
        self.collection = check_collection_name(collection)
        self.schema = schema
        self.dim = schema.dim
        self.kind = schema.kind
        self.payload_provider: PayloadProvider | None = None
        self._payload_indexes: dict[str, str] = dict(payload_indexes or {})
        self._pending: dict[int, tuple[np.ndarray, np.ndarray | None, dict[str, Any] | None]] = {}
        self._lock = threading.RLock()
        self._muvera: Any = None
        if schema.kind == "multi" and schema.prefetch == "muvera":
            from indexes.muvera import Muvera

            self._muvera = Muvera.from_dict(schema.muvera or {})

    def __repr__(self) -> str:
        return f"QdrantIndex({self.url!r}, collection={self.collection!r}, kind={self.kind!r}, dim={self.dim})"

    # --------------------------------------------------------------- opening
    @property
    def url(self) -> str:
        """The Qdrant URL without credentials."""
        return self._conn.display

    @property
    def connection(self) -> Connection:
        return self._conn

    @classmethod
    def create(
        cls,
        dim: int,
        *,
        url: str,
        collection: str,
        kind: str = "single",
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        error_class: type[QdrantError] = QdrantError,
        exist_ok: bool = False,
        **params: Any,
    ) -> QdrantIndex:
        """Create the Qdrant collection ``collection`` for ``kind`` vectors of ``dim`` (see :class:`Schema`
        for ``params``). An existing collection is adopted if it has the same layout and is empty (or
        whatever it holds, with ``exist_ok``: resuming an interrupted copy)."""
        schema = Schema.build(kind, dim, **params)
        check_collection_name(collection)
        conn = Connection(url, api_key=api_key, timeout=timeout, retry=retry, error_class=error_class)
        try:
            client = conn.client
            indexes: dict[str, str] = {}
            if conn.call("check for the collection", client.collection_exists, collection):
                info = conn.call("read the collection", client.get_collection, collection)
                why = schema.mismatch(info)
                if why is None and not exist_ok:
                    n = conn.call("count points", client.count, collection, exact=True).count
                    if n:
                        why = f"holds {n} points"
                if why is not None:
                    raise conn.fail(
                        f"the Qdrant collection {collection!r} at {conn.display} already exists and {why}; "
                        "delete it or choose another collection name"
                    )
                indexes = {k: str(getattr(v.data_type, "value", v.data_type)) for k, v in info.payload_schema.items()}
                logger.info("adopting the existing Qdrant collection %s at %s", collection, conn.display)
            else:
                conn.call("create the collection", client.create_collection, collection, **schema.creation_options())
                logger.info("created the Qdrant collection %s at %s", collection, conn.display)
            index = cls(conn, collection, schema, indexes)
            index._ensure_payload_indexes(BASE_PAYLOAD_INDEXES)
            return index
        except BaseException:
            conn.close()
            raise

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        device: str = "auto",
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        error_class: type[QdrantError] = QdrantError,
    ) -> QdrantIndex:
        """Reopen the index saved in ``directory`` (``url`` overrides the recorded URL; ``device`` is unused:
        Qdrant scores). Raises :class:`IndexFormatError` for a bad ``index.json`` and ``error_class`` when
        the collection is unreachable, missing or of another layout."""
        cfg = read_config(directory)
        try:
            schema = Schema.from_dict(cfg["schema"])
        except (TypeError, IndexInputError) as exc:
            raise IndexFormatError(f"{Path(directory) / CONFIG_NAME} has a bad schema: {exc}") from exc
        conn = Connection(url or cfg["url"], api_key=api_key, timeout=timeout, retry=retry, error_class=error_class)
        try:
            index = cls(conn, cfg["collection"], schema, cfg.get("payload_indexes") or {})
            index._check_collection()
            return index
        except BaseException:
            conn.close()
            raise

    def _check_collection(self) -> None:
        try:
            info = self._conn.call("read the collection", self._conn.client.get_collection, self.collection)
        except QdrantNotFoundError:
            raise self._conn.fail(
                f"the Qdrant collection {self.collection!r} does not exist at {self.url} "
                "(deleted, or another Qdrant? restore it from a snapshot or re-index)",
                QdrantNotFoundError,
            ) from None
        why = self.schema.mismatch(info)
        if why is not None:
            raise self._conn.fail(
                f"the Qdrant collection {self.collection!r} at {self.url} does not fit this index: {why}"
            )

    def close(self) -> None:
        """Release the client (buffered, unsaved items are dropped)."""
        self._conn.close()

    def drop(self) -> None:
        """Delete the whole Qdrant collection (irreversible) and release the client."""
        self._conn.call("delete the collection", self._conn.client.delete_collection, self.collection)
        self._pending.clear()

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        with self._lock:
            n = self._conn.call("count points", self._conn.client.count, self.collection, exact=True).count
            return int(n) + len(self._pending)

    def count(self) -> int:
        """Points acknowledged by Qdrant (buffered items not included)."""
        return int(self._conn.call("count points", self._conn.client.count, self.collection, exact=True).count)

    @property
    def ids(self) -> np.ndarray:
        """int64 ids of the stored and buffered items, ascending (Qdrant keeps no insertion order)."""
        with self._lock:
            stored = self._scroll_ids()
            out = np.union1d(stored, np.fromiter(self._pending, np.int64, len(self._pending)))
            return out.astype(np.int64)

    def stored_ids(self) -> np.ndarray:
        """int64 ids of the points in Qdrant, ascending."""
        return self._scroll_ids()

    def _scroll_ids(
        self, payload: Sequence[str] | None = None, sink: Callable[[Any], None] | None = None
    ) -> np.ndarray:
        client = self._conn.client
        out: list[int] = []
        offset = None
        while True:
            points, offset = self._conn.call(
                "list points",
                client.scroll,
                self.collection,
                limit=SCROLL_PAGE,
                offset=offset,
                with_payload=list(payload) if payload else False,
                with_vectors=False,
            )
            out.extend(int(p.id) for p in points)
            if sink is not None:
                for p in points:
                    sink(p)
            if offset is None:
                break
        return np.unique(np.asarray(out, np.int64))

    @property
    def num_vectors(self) -> int:
        """Stored vectors of all items (page vectors after pooling for multi-vector indexes)."""
        if self.kind == "single":
            return len(self)
        total = [0]

        def add(point: Any) -> None:
            total[0] += int((point.payload or {}).get("n_vectors", 0))

        with self._lock:
            self._scroll_ids(payload=["n_vectors"], sink=add)
            return total[0] + sum(int(v[0].shape[0]) for v in self._pending.values())

    # --------------------------------------------------------------- writing
    def add(
        self, vectors: Any, ids: Any, *, payloads: Sequence[dict[str, Any]] | None = None, pool: bool = True
    ) -> None:
        """Buffer items until :meth:`save`. Single: ``(n, dim)`` floats; multi: a sequence of ``(n_i, dim)``.

        An id already in Qdrant or in the buffer raises :class:`DuplicateIdError`. ``pool=False`` skips
        the schema's token pooling (for pages pooled already, e.g. copied from a pooled local index).
        """
        id_arr = as_id_array(ids)
        if id_arr.size and int(id_arr.min()) < 0:
            raise IndexInputError("Qdrant point ids must be non-negative")
        items = self._check_vectors(vectors, pool=pool)
        if len(items) != id_arr.size:
            raise IndexInputError(f"got {len(items)} items but {id_arr.size} ids")
        if payloads is not None and len(payloads) != id_arr.size:
            raise IndexInputError(f"got {len(payloads)} payloads for {id_arr.size} ids")
        if not items:
            return
        if np.unique(id_arr).size != id_arr.size:
            raise DuplicateIdError("an id is repeated within one add call")
        with self._lock:
            dup = [int(i) for i in id_arr if int(i) in self._pending]
            if not dup:
                found = self._conn.call(
                    "check ids",
                    self._conn.client.retrieve,
                    self.collection,
                    ids=[int(i) for i in id_arr],
                    with_payload=False,
                    with_vectors=False,
                )
                dup = sorted(int(p.id) for p in found)
            if dup:
                raise DuplicateIdError(f"id(s) {dup[:5]} already in the index; remove them first to replace pages")
            prefetch = self._prefetch_documents(items) if self.kind == "multi" else [None] * len(items)
            for i, (item, pf) in enumerate(zip(items, prefetch)):
                self._pending[int(id_arr[i])] = (item, pf, dict(payloads[i]) if payloads is not None else None)

    def _check_vectors(self, vectors: Any, *, pool: bool = True) -> list[np.ndarray]:
        if self.kind == "single":
            arr = to_float_array(vectors, np.float32)
            if arr.ndim != 2 or arr.shape[1] != self.dim:
                raise IndexInputError(f"vectors must have shape (n, {self.dim}), got {tuple(arr.shape)}")
            if not np.isfinite(arr).all():
                raise IndexInputError("vectors contain NaN or infinite values")
            if arr.shape[0] and (np.linalg.norm(arr, axis=1) == 0).any():
                raise IndexInputError("a zero vector has no direction (the dense vector uses cosine similarity)")
            return [np.array(row, np.float32) for row in arr]
        if hasattr(vectors, "ndim") and vectors.ndim == 2:
            raise IndexInputError(
                "vectors must be a sequence of (n_vectors, dim) arrays, one per page; wrap a single page in a list"
            )
        pages = []
        for i, page in enumerate(vectors):
            arr = to_float_array(page, np.float32)
            if arr.ndim != 2 or arr.shape[1] != self.dim:
                raise IndexInputError(f"page {i} must have shape (n_vectors, {self.dim}), got {tuple(arr.shape)}")
            if arr.shape[0] == 0:
                raise IndexInputError(f"page {i} has no vectors")
            if not np.isfinite(arr).all() or float(np.abs(arr).max()) > _FLOAT16_MAX:
                raise IndexInputError(f"page {i} has NaN, infinite or beyond-float16 values")
            pages.append(arr)
        if pool and self.schema.pool_factor and pages:
            from indexes.pooling import pool_pages

            pages = pool_pages(pages, self.schema.pool_factor)
        # stored as float16 by Qdrant: round here, so the prefetch encoding and local mode see the stored values
        return [p.astype(np.float16).astype(np.float32) for p in pages]

    def _prefetch_documents(self, pages: list[np.ndarray]) -> list[np.ndarray]:
        if self._muvera is not None:
            return list(self._muvera.encode_documents(pages))
        return [_unit(p.mean(axis=0)) for p in pages]

    def _prefetch_queries(self, queries: list[np.ndarray]) -> list[np.ndarray]:
        if self._muvera is not None:
            return list(self._muvera.encode_queries(queries))
        return [_unit(q.mean(axis=0)) for q in queries]

    def remove(self, ids: Any) -> int:
        """Delete items by id (unknown ids are ignored); returns how many existed. Acknowledged on return."""
        id_arr = as_id_array(ids)
        with self._lock:
            removed = 0
            rest = []
            for i in {int(x) for x in id_arr.tolist()}:
                if self._pending.pop(i, None) is not None:
                    removed += 1
                else:
                    rest.append(i)
            if not rest:
                return removed
            client = self._conn.client
            found: list[Any] = [
                int(p.id)
                for p in self._conn.call(
                    "check ids", client.retrieve, self.collection, ids=rest, with_payload=False, with_vectors=False
                )
            ]
            if found:
                from qdrant_client import models

                self._conn.call(
                    f"delete {len(found)} points",
                    client.delete,
                    self.collection,
                    points_selector=models.PointIdsList(points=found),
                    wait=True,
                    ordering=self.schema.write_ordering_model(),
                )
            return removed + len(found)

    def update_payload(self, ids: Iterable[int], payload: dict[str, Any]) -> None:
        """Set the top-level ``payload`` keys of stored and buffered items ``ids`` (acknowledged on return)."""
        ids = [int(i) for i in ids]
        with self._lock:
            for i in ids:
                entry = self._pending.get(i)
                if entry is not None and entry[2] is not None:
                    entry[2].update(payload)
            stored = [i for i in ids if i not in self._pending]
            if not stored:
                return
            self._ensure_meta_indexes([payload])
            self._conn.call(
                f"update the payload of {len(stored)} points",
                self._conn.client.set_payload,
                self.collection,
                payload=payload,
                points=stored,
                wait=True,
                ordering=self.schema.write_ordering_model(),
            )

    def compact(self) -> None:
        """Nothing to do: Qdrant's optimizer reclaims deleted points by itself."""

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Send the buffered items (acknowledged upserts) and write ``index.json`` if it changed."""
        self.flush()
        self._write_config(Path(directory))

    def flush(self) -> None:
        """Upsert every buffered item; returns once Qdrant acknowledged all of them."""
        from qdrant_client import models

        with self._lock:
            if not self._pending:
                return
            ids = list(self._pending)
            missing = [i for i in ids if self._pending[i][2] is None]
            provided = self.payload_provider(missing) if (missing and self.payload_provider) else {}
            payloads = {}
            for i in ids:
                item, _, given = self._pending[i]
                payload = dict(given if given is not None else provided.get(i, {}))
                if self.kind == "multi":
                    payload["n_vectors"] = int(item.shape[0])
                payloads[i] = payload
            self._ensure_meta_indexes(payloads.values())
            batch: list[Any] = []
            size = 0
            for i in ids:
                item, pf, _ = self._pending[i]
                if self.kind == "single":
                    vector: dict[str, Any] = {DENSE: item.tolist()}
                else:
                    assert pf is not None
                    vector = {MULTI: item.tolist(), PREFETCH: pf.tolist()}
                cost = 20 * (item.size + (pf.size if pf is not None else 0)) + 512
                if batch and size + cost > UPSERT_BYTES:
                    self._upsert(batch)
                    batch, size = [], 0
                batch.append(models.PointStruct(id=i, vector=vector, payload=payloads[i]))
                size += cost
            if batch:
                self._upsert(batch)
            self._pending.clear()

    def _upsert(self, points: list[Any]) -> None:
        self._conn.call(
            f"upsert {len(points)} points",
            self._conn.client.upsert,
            self.collection,
            points=points,
            wait=True,
            ordering=self.schema.write_ordering_model(),
        )

    def _ensure_meta_indexes(self, payloads: Iterable[dict[str, Any]]) -> None:
        """Payload indexes on the keys of every object-valued payload field (``meta.lang``...), typed by value."""
        wanted: dict[str, str] = {}
        for payload in payloads:
            for top, fields in payload.items():
                if not isinstance(fields, dict):
                    continue
                for key, value in fields.items():
                    kind = _payload_type(value)
                    if kind is None or '"' in str(key):
                        continue
                    wanted.setdefault(payload_key((str(top), str(key))), kind)
        self._ensure_payload_indexes(wanted)

    def _ensure_payload_indexes(self, wanted: dict[str, str]) -> None:
        for field_name, kind in wanted.items():
            if field_name in self._payload_indexes:
                continue
            with warnings.catch_warnings():  # local mode: "Payload indexes have no effect in the local Qdrant"
                warnings.simplefilter("ignore", UserWarning)
                self._conn.call(
                    f"index the payload field {field_name}",
                    self._conn.client.create_payload_index,
                    self.collection,
                    field_name=field_name,
                    field_schema=kind,
                    wait=True,
                )
            self._payload_indexes[field_name] = kind

    @property
    def payload_indexes(self) -> dict[str, str]:
        """``{payload field: index type}`` created by this index."""
        return dict(self._payload_indexes)

    def config(self) -> dict[str, Any]:
        """The content of ``index.json``."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "index_type": INDEX_TYPE,
            "url": self._conn.url if self._conn.local else self.url,
            "collection": self.collection,
            "schema": self.schema.to_dict(),
            "payload_indexes": dict(sorted(self._payload_indexes.items())),
        }

    def _write_config(self, directory: Path) -> None:
        data = (json.dumps(self.config(), indent=1, sort_keys=True) + "\n").encode("utf-8")
        path = directory / CONFIG_NAME
        try:
            if path.read_bytes() == data:
                return  # unchanged: servers watching the file do not reload for nothing
        except OSError:
            pass
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        fsync_dir(directory)

    # --------------------------------------------------------------- reading
    def search(
        self,
        queries: Sequence[Any] | np.ndarray,
        k: int,
        *,
        allowed_ids: Any = None,
        where: Sequence[Condition] | None = None,
    ) -> Hits:
        """Top-``k`` ``(id, score)`` per query, best first, in one Qdrant request for all queries.

        ``allowed_ids`` and ``where`` (payload conditions) restrict the candidates inside the query.
        Scores: cosine (single) or MaxSim over the stored float16 patch vectors (multi).
        """
        from qdrant_client import models

        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise IndexInputError(f"k must be a positive integer, got {k!r}")
        k = int(k)
        ids = None
        if allowed_ids is not None:
            ids = as_id_array(allowed_ids, what="allowed_ids")
        if self.kind == "single":
            arr = to_float_array(queries, np.float32)
            if arr.ndim != 2 or arr.shape[1] != self.dim:
                raise IndexInputError(f"queries must have shape (q, {self.dim}), got {tuple(arr.shape)}")
            if not np.isfinite(arr).all():
                raise IndexInputError("queries contain NaN or infinite values")
            qs: list[np.ndarray] = list(arr)
        else:
            qs = as_query_list(queries, self.dim)
        if not qs:
            return []
        if ids is not None and ids.size == 0:
            return [[] for _ in qs]
        flt = to_filter(where, ids.tolist() if ids is not None else None)
        local = self._conn.local  # local mode searches exactly and warns about search params
        requests = []
        if self.kind == "single":
            params = None if local else self.schema.search_params(final=True)
            for q in qs:
                requests.append(
                    models.QueryRequest(
                        query=q.tolist(), using=DENSE, limit=k, filter=flt, params=params, with_payload=False
                    )
                )
        else:
            pre_params = None if local else self.schema.search_params(final=False)
            final_params = None if local else self.schema.search_params(final=True)
            n_cand = self.schema.n_candidates
            prefetch_vecs = self._prefetch_queries(qs) if n_cand else [None] * len(qs)
            for q, pf in zip(qs, prefetch_vecs):
                prefetch = None
                if pf is not None:
                    prefetch = models.Prefetch(
                        query=pf.tolist(), using=PREFETCH, limit=max(n_cand, k), filter=flt, params=pre_params
                    )
                requests.append(
                    models.QueryRequest(
                        query=q.tolist(),
                        using=MULTI,
                        prefetch=prefetch,
                        limit=k,
                        filter=flt,
                        params=final_params,
                        with_payload=False,
                    )
                )
        responses = self._conn.call(
            f"search ({len(requests)} queries)",
            self._conn.client.query_batch_points,
            self.collection,
            requests=requests,
        )
        return [[(int(p.id), float(p.score)) for p in r.points] for r in responses]

    def get(self, id: int) -> np.ndarray:
        """The stored vector(s) of item ``id``: ``(dim,)`` or ``(n, dim)`` float32."""
        from indexes.errors import UnknownIdError

        with self._lock:
            entry = self._pending.get(int(id))
            if entry is not None:
                return entry[0].copy()
            name = DENSE if self.kind == "single" else MULTI
            found = self._conn.call(
                "read a point", self._conn.client.retrieve, self.collection, ids=[int(id)], with_vectors=[name]
            )
        if not found:
            raise UnknownIdError(f"id {id} is not in the Qdrant collection {self.collection!r}")
        vec = found[0].vector
        vec = vec.get(name) if isinstance(vec, dict) else vec
        return np.asarray(vec, np.float32)

    @classmethod
    def is_index_dir(cls, directory: str | os.PathLike[str]) -> bool:
        """True if ``directory`` holds a Qdrant index configuration."""
        try:
            read_config(directory)
            return True
        except IndexFormatError:
            return False


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return (v / n if n > 0 else v).astype(np.float32)
