"""SQLite metadata of a collection: documents and pages.

Schema (``meta.sqlite``):

* ``documents``: one row per indexed source. ``status`` is ``indexing`` while its
  pages are being stored, ``complete`` once every page is stored, ``removing`` while a
  removal is in flight (finished on the next open).
* ``pages``: one row per rendered page. ``id`` is the vector id used in the index.
  ``status`` is ``pending`` (image written, vectors not yet durable) or ``stored``
  (its vectors are in the saved index).

The database is the source of truth for what is indexed; the vector index is
reconciled against it on open (see :mod:`dse.collection.collection`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dse.collection.filters import Condition, register_functions, where_sql

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL,
    content_hash TEXT,
    title TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL,
    n_pages INTEGER NOT NULL DEFAULT 0,
    added_at REAL NOT NULL DEFAULT (strftime('%s','now'))
);
CREATE TABLE IF NOT EXISTS pages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    page INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    image TEXT NOT NULL,
    title TEXT,
    status TEXT NOT NULL,
    UNIQUE (doc, page)
);
CREATE INDEX IF NOT EXISTS pages_status ON pages(status);
"""


@dataclass(frozen=True)
class DocumentRow:
    id: int
    doc_id: str
    source: str
    content_hash: str | None
    title: str | None
    meta: dict[str, Any]
    status: str
    n_pages: int


@dataclass(frozen=True)
class PageRow:
    id: int
    doc_id: str
    source: str
    page: int
    width: int
    height: int
    image: str
    title: str | None
    meta: dict[str, Any]


class MetadataStore:
    """Thin typed wrapper over the collection's SQLite file (one writer at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.executescript(SCHEMA)
        register_functions(self.db)

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ helpers
    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    @staticmethod
    def _doc(row: Sequence[Any]) -> DocumentRow:
        return DocumentRow(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])

    _DOC_COLS = "id, doc_id, source, content_hash, title, meta, status, n_pages"

    # ---------------------------------------------------------------- documents
    def document(self, doc_id: str) -> DocumentRow | None:
        row = self.db.execute(f"SELECT {self._DOC_COLS} FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return self._doc(row) if row else None

    def documents(self, status: str | None = None, where: Sequence[Condition] = ()) -> list[DocumentRow]:
        """Documents (with ``status`` when given) whose metadata matches every condition, by insertion."""
        cond, args = where_sql(where, "d.meta")
        if status:
            cond, args = f"d.status = ? AND {cond}", [status, *args]
        cols = ", ".join(f"d.{c.strip()}" for c in self._DOC_COLS.split(","))
        rows = self.db.execute(f"SELECT {cols} FROM documents d WHERE {cond} ORDER BY d.id", args).fetchall()
        return [self._doc(r) for r in rows]

    def doc_ids(self, keys: Iterable[int]) -> dict[int, str]:
        """``{documents.id: doc_id}`` for the given integer keys (unknown keys are left out)."""
        out: dict[int, str] = {}
        for k in keys:
            row = self.db.execute("SELECT doc_id FROM documents WHERE id = ?", (int(k),)).fetchone()
            if row:
                out[int(k)] = str(row[0])
        return out

    def find_documents(self, key: str) -> list[DocumentRow]:
        """Documents whose doc_id or source equals ``key``."""
        rows = self.db.execute(
            f"SELECT {self._DOC_COLS} FROM documents WHERE doc_id = ? OR source = ?", (key, key)
        ).fetchall()
        return [self._doc(r) for r in rows]

    def begin_document(self, doc_id: str, source: str, content_hash: str | None, meta: dict[str, Any]) -> int:
        """Insert (or reset to ``indexing``) a document row; returns its integer key."""
        with self.transaction():
            self.db.execute(
                "INSERT INTO documents (doc_id, source, content_hash, meta, status) VALUES (?, ?, ?, ?, 'indexing') "
                "ON CONFLICT(doc_id) DO UPDATE SET source=excluded.source, content_hash=excluded.content_hash, "
                "meta=excluded.meta, status='indexing'",
                (doc_id, source, content_hash, json.dumps(meta, sort_keys=True)),
            )
            return int(self.db.execute("SELECT id FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()[0])

    def finish_document(self, key: int, title: str | None) -> None:
        with self.transaction():
            n = self.db.execute("SELECT COUNT(*) FROM pages WHERE doc = ? AND status = 'stored'", (key,)).fetchone()[0]
            self.db.execute(
                "UPDATE documents SET status='complete', n_pages=?, title=COALESCE(?, title) WHERE id=?",
                (n, title, key),
            )

    def set_document_status(self, keys: Iterable[int], status: str) -> None:
        with self.transaction():
            self.db.executemany("UPDATE documents SET status=? WHERE id=?", [(status, k) for k in keys])

    def delete_documents(self, keys: Iterable[int]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM documents WHERE id=?", [(k,) for k in keys])

    # -------------------------------------------------------------------- pages
    def add_pending_page(self, doc_key: int, page: int, width: int, height: int, image: str, title: str | None) -> int:
        """Insert a ``pending`` page; returns its id (ids are never reused: AUTOINCREMENT)."""
        with self.transaction():
            self.db.execute("DELETE FROM pages WHERE doc=? AND page=? AND status='pending'", (doc_key, page))
            cur = self.db.execute(
                "INSERT INTO pages (doc, page, width, height, image, title, status) "
                "VALUES (?, ?, ?, ?, ?, ?, 'pending')",
                (doc_key, page, width, height, image, title),
            )
            assert cur.lastrowid is not None
            return int(cur.lastrowid)

    def stored_pages_of(self, doc_key: int) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT page FROM pages WHERE doc=? AND status='stored'", (doc_key,))}

    def page_ids_of(self, doc_keys: Iterable[int]) -> list[int]:
        keys = list(doc_keys)
        out: list[int] = []
        for k in keys:
            out += [r[0] for r in self.db.execute("SELECT id FROM pages WHERE doc=?", (k,))]
        return out

    def mark_stored(self, page_ids: Sequence[int]) -> None:
        with self.transaction():
            self.db.executemany("UPDATE pages SET status='stored' WHERE id=?", [(int(i),) for i in page_ids])

    def mark_pending(self, page_ids: Sequence[int]) -> None:
        with self.transaction():
            self.db.executemany("UPDATE pages SET status='pending' WHERE id=?", [(int(i),) for i in page_ids])

    def delete_pending_pages(self) -> int:
        """Drop every ``pending`` page row (left by an interrupted run); returns how many."""
        with self.transaction():
            return self.db.execute("DELETE FROM pages WHERE status='pending'").rowcount

    def delete_pages(self, page_ids: Sequence[int]) -> None:
        with self.transaction():
            self.db.executemany("DELETE FROM pages WHERE id=?", [(int(i),) for i in page_ids])

    def update_meta(self, key: int, meta: dict[str, Any]) -> None:
        with self.transaction():
            self.db.execute("UPDATE documents SET meta=? WHERE id=?", (json.dumps(meta, sort_keys=True), key))

    def stored_page_counts(self) -> dict[int, int]:
        """``{documents.id: number of stored pages}`` (documents without stored pages are left out)."""
        rows = self.db.execute("SELECT doc, COUNT(*) FROM pages WHERE status='stored' GROUP BY doc")
        return {int(d): int(n) for d, n in rows}

    def stored_page_ids(self) -> set[int]:
        return {r[0] for r in self.db.execute("SELECT id FROM pages WHERE status='stored'")}

    def pending_page_ids(self) -> list[int]:
        return [r[0] for r in self.db.execute("SELECT id FROM pages WHERE status='pending'")]

    def pages(self, ids: Sequence[int]) -> dict[int, PageRow]:
        out: dict[int, PageRow] = {}
        ids = [int(i) for i in ids]
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            q = ",".join("?" * len(chunk))
            for r in self.db.execute(
                "SELECT p.id, d.doc_id, d.source, p.page, p.width, p.height, p.image, COALESCE(p.title, d.title), "
                f"d.meta FROM pages p JOIN documents d ON d.id = p.doc WHERE p.id IN ({q})",
                chunk,
            ):
                out[r[0]] = PageRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], json.loads(r[8]))
        return out

    def filter_page_ids(self, where: Sequence[Condition]) -> list[int]:
        """Ids of stored pages whose document metadata matches every condition
        (see :mod:`dse.collection.filters`)."""
        cond, args = where_sql(where, "d.meta")
        sql = f"SELECT p.id FROM pages p JOIN documents d ON d.id = p.doc WHERE p.status='stored' AND {cond}"
        return [r[0] for r in self.db.execute(sql, args)]

    def counts(self) -> dict[str, int]:
        docs = self.db.execute("SELECT COUNT(*) FROM documents WHERE status='complete'").fetchone()[0]
        incomplete = self.db.execute("SELECT COUNT(*) FROM documents WHERE status!='complete'").fetchone()[0]
        pages = self.db.execute("SELECT COUNT(*) FROM pages WHERE status='stored'").fetchone()[0]
        return {"documents": int(docs), "incomplete_documents": int(incomplete), "pages": int(pages)}

    def vacuum(self) -> None:
        """Rebuild the database file without the space of deleted rows, and truncate the WAL."""
        self.db.execute("VACUUM")
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA quick_check").fetchone()[0])


class _Transaction:
    """``with store.transaction():`` — BEGIN IMMEDIATE / COMMIT / ROLLBACK (re-entrant)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.owner = False

    def __enter__(self) -> _Transaction:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self.owner = True
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if not self.owner:
            return
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")
