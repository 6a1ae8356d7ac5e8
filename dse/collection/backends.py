"""Where a collection's vectors live: local index files (``local``, the default) or a Qdrant
collection (``qdrant``), and everything the collection does differently for the latter.

A Qdrant-backed collection keeps its page images, ``meta.sqlite`` and ``collection.json`` in its
directory; only the vectors (and a payload copy of each page's doc_id, source, page, title and
metadata, for filtering) live in Qdrant. The manifest records the backend, the Qdrant URL
(without credentials) and the Qdrant collection name; the API key is never written: it comes
from ``qdrant_api_key=`` / ``$QDRANT_API_KEY`` at every open.

Exactly-once rule: a page is marked ``stored`` in SQLite only after Qdrant acknowledged its point
(``QdrantIndex.save`` returns after ``wait=True`` upserts), and the point id is the page id, so
a retried or re-run upsert overwrites instead of duplicating. See :func:`reconcile_qdrant` for
what an open and an ``add`` do when Qdrant and SQLite disagree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from dse.collection.manifest import CollectionError

if TYPE_CHECKING:
    from dse.collection.collection import Collection
    from indexes import VectorIndex
    from indexes.qdrant import QdrantIndex

logger = logging.getLogger(__name__)

BACKENDS = ("local", "qdrant")
QDRANT = "qdrant"
#: Overrides the recorded Qdrant URL when opening (e.g. replicas that reach the cluster by another address).
URL_ENV = "DSE_QDRANT_URL"
#: Opening compares every point id with SQLite up to this many stored pages (beyond: counts only,
#: and ``dse index`` compares ids); listing 100k ids takes about 25 scroll requests.
FULL_CHECK_MAX = 100_000
API_KEY_ENV = "QDRANT_API_KEY"


_error_class: type | None = None


def qdrant_collection_error() -> type:
    """``QdrantCollectionError``: a Qdrant failure seen through a collection, both a
    :class:`CollectionError` (one line for the CLI) and an :class:`indexes.qdrant.QdrantError`
    (``http_status`` 503 when Qdrant is unreachable). Made on first use, so that importing
    :mod:`dse.collection` loads no index code."""
    global _error_class
    if _error_class is None:
        from indexes.qdrant.connection import QdrantError

        doc = {"__module__": __name__, "__doc__": "A Qdrant failure seen through a collection."}
        _error_class = type("QdrantCollectionError", (CollectionError, QdrantError), doc)
    return _error_class


def backend_of(index_cfg: dict[str, Any]) -> str:
    """The backend named in a manifest's ``index`` section (``local`` when absent)."""
    return str(index_cfg.get("backend") or "local")


def default_collection_name(directory: Path) -> str:
    """``dse-<directory name>-<8 hex of its absolute path>``: stable for a path, distinct across paths."""
    absolute = str(Path(directory).expanduser().resolve())
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(absolute).name).strip("-")[:48] or "collection"
    return f"dse-{stem}-{hashlib.sha1(absolute.encode('utf-8')).hexdigest()[:8]}"


def qdrant_index_config(
    directory: Path,
    *,
    url: str | None,
    collection: str | None,
    params: dict[str, Any] | None,
    pool_factor: int | None,
    index_dir: str = "index",
) -> dict[str, Any]:
    """The manifest ``index`` section of a new Qdrant-backed collection (no secrets)."""
    from indexes.qdrant import display_url, normalize_url

    url = url or os.environ.get("QDRANT_URL")
    if not url:
        raise CollectionError("the qdrant backend needs a URL: qdrant_url=... (or $QDRANT_URL)")
    try:
        url = display_url(normalize_url(url))
    except ValueError as exc:  # QdrantError
        raise CollectionError(str(exc)) from None
    cfg: dict[str, Any] = {
        "type": QDRANT,
        "backend": QDRANT,
        "params": dict(params or {}),
        "pool_factor": pool_factor,
        "qdrant": {"url": url, "collection": collection or default_collection_name(directory)},
    }
    if index_dir != "index":
        cfg["dir"] = index_dir
    return cfg


def _connection_options(col: Collection) -> dict[str, Any]:
    opts = getattr(col, "_backend_options", {}) or {}
    url = opts.get("qdrant_url") or os.environ.get(URL_ENV) or col.manifest.index["qdrant"]["url"]
    key = opts.get("qdrant_api_key") or os.environ.get(API_KEY_ENV) or None
    return {"url": url, "api_key": key, "error_class": qdrant_collection_error()}


def new_qdrant_index(col: Collection) -> QdrantIndex:
    """Create the Qdrant collection of a new dse collection."""
    from indexes.errors import IndexInputError
    from indexes.qdrant import QdrantIndex

    cfg = col.manifest.index
    params = dict(cfg.get("params") or {})
    if col.kind == "multi" and cfg.get("pool_factor") is not None:
        params["pool_factor"] = cfg["pool_factor"]
    try:
        index = QdrantIndex.create(
            col.dim,
            kind=col.kind,
            collection=cfg["qdrant"]["collection"],
            **_connection_options(col),
            **params,
        )
    except IndexInputError as exc:
        raise CollectionError(f"bad Qdrant setting: {exc}") from None
    attach(col, index)
    return index


def load_qdrant_index(col: Collection) -> QdrantIndex:
    """Reopen the Qdrant collection of ``col`` (errors are one-line :class:`CollectionError`)."""
    from indexes.errors import IndexFormatError
    from indexes.qdrant import QdrantIndex

    try:
        index = QdrantIndex.load(col.index_dir, **_connection_options(col))
    except IndexFormatError as exc:
        raise CollectionError(f"the vector index of {col.directory} cannot be loaded: {exc}") from None
    recorded = col.manifest.index["qdrant"]["collection"]
    if index.collection != recorded:
        index.close()
        raise CollectionError(
            f"{col.index_dir} names the Qdrant collection {index.collection!r} but the manifest {recorded!r}"
        )
    attach(col, index)
    return index


def attach(col: Collection, index: QdrantIndex) -> None:
    """Let ``index`` fill each point's payload from the collection's SQLite rows (read at call time:
    a collection being created opens its store after its index)."""

    def payloads(ids: list[int]) -> dict[int, dict[str, Any]]:
        rows = col.store.pages(ids)
        return {
            pid: {"doc_id": r.doc_id, "source": r.source, "page": r.page, "title": r.title, **meta_payload(r.meta)}
            for pid, r in rows.items()
        }

    index.payload_provider = payloads


def meta_payload(meta: dict[str, Any]) -> dict[str, Any]:
    """The payload fields of a document's metadata: ``meta`` as given, and ``meta_num``: the values
    that are numbers or numeric strings, as floats (numeric filters compare those, like SQLite's)."""
    import math

    numbers: dict[str, float] = {}
    for key, value in meta.items():
        if isinstance(value, bool):
            continue
        try:
            number = float(value) if isinstance(value, int | float | str) else None
        except ValueError:
            number = None
        if number is not None and math.isfinite(number):
            numbers[str(key)] = number
    return {"meta": meta, "meta_num": numbers}


# ------------------------------------------------------------------------------------------ search
#: ``where`` operators (as the collection's filter syntax spells them) -> Qdrant condition operators
_OPS = {"=": "eq", "!=": "ne", "in": "in", "not in": "nin", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte"}


def where_conditions(where: Any) -> list[Any]:
    """``where`` filters as Qdrant payload conditions on ``meta.<key>`` (numbers on ``meta_num.<key>``).

    ``where``: a mapping ``{key: value}`` (equality; a list or tuple value: one of them), or parsed
    conditions with ``key``, ``op`` and ``values`` (``=``, ``!=``, ``in``, ``not in``, ``>``, ``>=``,
    ``<``, ``<=``), or condition strings when the collection has a parser for them
    (``dse.collection.filters.parse_where``). Each maps onto one :class:`indexes.qdrant.Condition`.
    """
    from indexes.qdrant import Condition

    if not where:
        return []
    if not isinstance(where, dict) and not all(hasattr(c, "op") for c in _as_list(where)):
        from dse.collection.filters import parse_where

        where = parse_where(where)
    out = []
    if isinstance(where, dict):
        for key, value in where.items():
            op = "in" if isinstance(value, list | tuple) else "eq"
            out.append(Condition(("meta", str(key)), op, value, number_path=("meta_num", str(key))))
        return out
    for c in _as_list(where):
        if c.op not in _OPS:
            raise CollectionError(f"unsupported filter operator {c.op!r}")
        values = tuple(c.values)
        value = values if c.op in ("in", "not in") else values[0]
        out.append(Condition(("meta", str(c.key)), _OPS[c.op], value, number_path=("meta_num", str(c.key))))
    return out


def _as_list(where: Any) -> list[Any]:
    return [where] if isinstance(where, str) or hasattr(where, "op") else list(where)


def qdrant_index(index: VectorIndex) -> QdrantIndex:
    """``index`` seen as the Qdrant backend's index (a collection whose backend is ``qdrant``)."""
    return cast("QdrantIndex", index)


def qdrant_search(index: VectorIndex, queries: Any, k: int, allowed: Any, where: dict[str, Any] | None) -> Any:
    """One Qdrant request for all ``queries``, the filter applied inside it."""
    from indexes.errors import IndexInputError

    try:
        conditions = where_conditions(where)
        return qdrant_index(index).search(queries, k, allowed_ids=allowed, where=conditions or None)
    except IndexInputError as exc:  # e.g. a metadata key Qdrant cannot address
        raise CollectionError(f"bad filter or query: {exc}") from None


# --------------------------------------------------------------------------------------- recovery
def reconcile_qdrant(col: Collection, *, repair: bool) -> dict[str, int]:
    """Bring Qdrant and SQLite into agreement as far as is safe, and report what remains.

    Always (any open that gets the write lock): documents left ``removing`` are removed, and
    ``pending`` pages of an interrupted run are dropped together with the points already sent
    for them (they were never marked stored). Then the point ids are compared with the stored
    pages (only their numbers beyond :data:`FULL_CHECK_MAX` pages); a difference is logged as a
    warning and kept in ``col.consistency``.

    With ``repair`` (``Collection.add``, i.e. ``dse index``): every point id is compared with
    SQLite; points of no stored page are deleted, and stored pages whose point is missing are
    dropped from SQLite with their documents set back to ``indexing``, so the same ``dse index``
    run re-renders and re-encodes them. Skipped while another process holds the write lock.
    """
    held = col._lock_fh is not None
    if not held and not col._acquire_lock():
        return {}
    from indexes.qdrant import QdrantRefusedError

    index = qdrant_index(col.index)
    try:
        removing = [d.id for d in col.store.documents(status="removing")]
        orphans = dropped = 0
        try:
            if removing:
                col._remove_keys(removing)
            pending = col.store.pending_page_ids()
            orphans = index.remove(pending) if pending else 0
            dropped = col.store.delete_pending_pages()
        except QdrantRefusedError as exc:
            if repair:
                raise
            removing = []  # e.g. a read-only API key (a search replica): recovery is left to `dse index`
            logger.warning("cannot finish the recovery of an interrupted job with this Qdrant key: %s", exc)
        stored = col.store.stored_page_ids()
        extra: list[int] = []
        lost: list[int] = []
        points = index.count()
        if repair or points != len(stored) or len(stored) <= FULL_CHECK_MAX:
            in_qdrant = {int(i) for i in np.asarray(index.stored_ids()).tolist()}
            extra = sorted(in_qdrant - stored)
            lost = sorted(stored - in_qdrant)
        where = f"the Qdrant collection {index.collection!r} at {index.url}"
        if (extra or lost) and not repair:
            logger.warning(
                "%s disagrees with %s: %d stored pages have no point, %d points belong to no stored page; "
                "run `dse index` on this collection to repair it",
                where,
                col.store.path,
                len(lost),
                len(extra),
            )
        if repair and extra:
            index.remove(extra)
            logger.warning("%s held %d points of no stored page; deleted them", where, len(extra))
        if repair and lost:
            logger.warning("%s lacks %d stored pages; their documents will be re-indexed", where, len(lost))
            affected = {r.doc_id for r in col.store.pages(lost).values()}
            col.store.delete_pages(lost)
            col.store.set_document_status([d.id for d in col.store.documents() if d.doc_id in affected], "indexing")
        if orphans or dropped or removing:
            logger.info(
                "recovered %s: %d points of unfinished pages deleted, %d pending pages dropped, %d removals finished",
                col.directory,
                orphans,
                dropped,
                len(removing),
            )
        report = {
            "orphan_vectors": orphans + (len(extra) if repair else 0),
            "pending_pages": dropped,
            "lost_pages": len(lost) if repair else 0,
            "removed_documents": len(removing),
        }
        col.consistency = {
            "points": points,
            "stored_pages": len(stored),
            "missing_points": 0 if repair else len(lost),
            "extra_points": 0 if repair else len(extra),
        }
        return report
    finally:
        if not held:
            col._release_lock()


def update_meta(col: Collection, key: int, meta: dict[str, Any]) -> None:
    """New document metadata: the points' payload first (idempotent), then SQLite (the record)."""
    index = qdrant_index(col.index)
    if hasattr(index, "update_payload"):
        index.update_payload(col.store.page_ids_of([key]), meta_payload(meta))
    col.store.update_meta(key, meta)


def qdrant_stats(col: Collection) -> dict[str, Any]:
    index = qdrant_index(col.index)
    return {
        "url": index.url,
        "collection": index.collection,
        "points": index.count(),
        "payload_indexes": sorted(index.payload_indexes),
        **{k: v for k, v in (getattr(col, "consistency", None) or {}).items() if k.endswith("_points")},
    }
