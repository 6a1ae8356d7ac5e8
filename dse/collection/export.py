"""Copy a local collection's vectors into Qdrant, without re-encoding.

Two forms (``dse export --collection DIR --to-qdrant URL ...``):

* ``out=NEW_DIR`` (default form): a new Qdrant-backed collection. ``meta.sqlite`` is copied with
  SQLite's backup API (a consistent snapshot, same page ids), page images are hard-linked (copied
  across file systems), the vectors are read from the local index and upserted under the same
  page ids, and the manifest is written last. The source is left untouched and stays usable.
* ``in_place=True``: the collection itself switches to Qdrant. Its vectors are upserted, the
  Qdrant index configuration goes to ``DIR/index-qdrant/``, then the manifest is atomically
  replaced: that rename is the switch. The local index files stay in ``DIR/index/`` (a fallback,
  e.g. to compare results) unless ``drop_local``.

Both hold the source's write lock for the whole copy, write a marker (``.dse-export.json``)
first and remove it last; an interrupted export is resumed by running the same command again
(upserts are idempotent and points already in Qdrant are not sent again). The exported
collection answers with the same ranking as the local exact index: single-vector pages are
copied as stored (Qdrant compares them by cosine, equal to the inner product of the
L2-normalised vectors every encoder here produces); multi-vector pages are copied as the
float16 values the local index stores (pooled pages stay pooled).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dse.collection import backends
from dse.collection.collection import Collection
from dse.collection.crashpoints import crash_point
from dse.collection.manifest import MANIFEST_NAME, CollectionError, Manifest
from dse.collection.store import MetadataStore
from indexes.storage import atomic_write_text

logger = logging.getLogger(__name__)

MARKER = ".dse-export.json"
IN_PLACE_INDEX_DIR = "index-qdrant"


@dataclass
class ExportReport:
    """What one export did. ``sent``: points upserted by this run; ``already``: found in Qdrant."""

    source: str
    target: str
    url: str
    collection: str
    pages: int
    sent: int
    already: int
    removed_extra: int
    in_place: bool
    seconds: float

    def summary(self) -> str:
        where = "in place" if self.in_place else f"into {self.target}"
        return (
            f"exported {self.pages} pages of {self.source} {where}: Qdrant collection {self.collection!r} at "
            f"{self.url} ({self.sent} points sent, {self.already} already there) in {self.seconds:.1f}s"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def export_to_qdrant(
    source: str | os.PathLike[str],
    url: str,
    *,
    out: str | os.PathLike[str] | None = None,
    in_place: bool = False,
    api_key: str | None = None,
    collection: str | None = None,
    params: dict[str, Any] | None = None,
    batch_pages: int = 32,
    drop_local: bool = False,
    progress: bool = False,
) -> ExportReport:
    """Export the local collection ``source`` to the Qdrant at ``url`` (see the module doc)."""
    if (out is None) == (not in_place):
        raise CollectionError("give either an output directory (out=...) or in_place=True")
    if drop_local and not in_place:
        raise CollectionError("drop_local applies to in-place exports (a new directory leaves the source alone)")
    t0 = time.perf_counter()
    src = Collection.open(source, device="cpu")
    try:
        if src.backend != "local":
            raise CollectionError(f"{src.directory} is already a {src.backend}-backed collection")
        src._write_lock()
        if in_place:
            return _export_in_place(src, url, api_key, collection, params, batch_pages, drop_local, progress, t0)
        assert out is not None
        return _export_new(src, Path(out), url, api_key, collection, params, batch_pages, progress, t0)
    finally:
        src.close()


def _begin(directory: Path, marker: dict[str, Any]) -> bool:
    """Write the export marker; True when resuming the same export."""
    path = directory / MARKER
    resumed = False
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = {}
        if {k: old.get(k) for k in ("source", "collection")} != {k: marker[k] for k in ("source", "collection")}:
            raise CollectionError(
                f"{directory} holds an unfinished export of {old.get('source')!r} to {old.get('collection')!r}; "
                "finish it with the same command, or delete the directory"
            )
        resumed = True
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(marker, sort_keys=True))
    return resumed


def _export_new(
    src: Collection,
    target: Path,
    url: str,
    api_key: str | None,
    collection: str | None,
    params: dict[str, Any] | None,
    batch_pages: int,
    progress: bool,
    t0: float,
) -> ExportReport:
    target = target.expanduser()
    if target.resolve() == src.directory.resolve():
        raise CollectionError("the output directory is the source; use in_place=True to convert it")
    if (target / MANIFEST_NAME).exists():
        raise CollectionError(f"{target} is already a collection; choose a new output directory")
    if target.exists() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise CollectionError(f"{target} exists and is not empty; choose a new output directory")
    cfg = backends.qdrant_index_config(
        target, url=url, collection=collection, params=params, pool_factor=src.manifest.index.get("pool_factor")
    )
    marker = {"source": str(src.directory.resolve()), "collection": cfg["qdrant"]["collection"]}
    resumed = _begin(target, marker)
    # a consistent snapshot of the metadata, same page ids
    db_path = target / "meta.sqlite"
    for leftover in target.glob("meta.sqlite*"):
        leftover.unlink()
    with sqlite3.connect(db_path) as dst_db:
        src.store.db.backup(dst_db)
    dst_db.close()
    _link_tree(src.directory / "images", target / "images")
    crash_point("export_after_copy")
    manifest = Manifest(encoder=dict(src.manifest.encoder), index=cfg, render=dict(src.manifest.render))
    store = MetadataStore(db_path)
    try:
        dst = Collection(target, manifest, store, None, "cpu")
        dst._backend_options = {"qdrant_url": url, "qdrant_api_key": api_key}
        index = _qdrant_index(dst, resumed)
        try:
            sent, already, extra = _copy_vectors(src, index, store, target / "index", batch_pages, progress)
            manifest.write(target)  # the commit point: now a Qdrant-backed collection
        finally:
            index.close()
    finally:
        store.close()
    (target / MARKER).unlink(missing_ok=True)
    report = ExportReport(
        str(src.directory), str(target), index.url, index.collection, len(src.store.stored_page_ids()),
        sent, already, extra, False, time.perf_counter() - t0,
    )  # fmt: skip
    logger.info("%s", report.summary())
    return report


def _export_in_place(
    src: Collection,
    url: str,
    api_key: str | None,
    collection: str | None,
    params: dict[str, Any] | None,
    batch_pages: int,
    drop_local: bool,
    progress: bool,
    t0: float,
) -> ExportReport:
    directory = src.directory
    cfg = backends.qdrant_index_config(
        directory,
        url=url,
        collection=collection,
        params=params,
        pool_factor=src.manifest.index.get("pool_factor"),
        index_dir=IN_PLACE_INDEX_DIR,
    )
    marker = {"source": str(directory.resolve()), "collection": cfg["qdrant"]["collection"]}
    resumed = _begin(directory, marker)
    manifest = Manifest(encoder=dict(src.manifest.encoder), index=cfg, render=dict(src.manifest.render))
    view = Collection(directory, manifest, src.store, None, "cpu")  # the collection as it will be
    view._backend_options = {"qdrant_url": url, "qdrant_api_key": api_key}
    index = _qdrant_index(view, resumed)
    try:
        index_dir = directory / IN_PLACE_INDEX_DIR
        sent, already, extra = _copy_vectors(src, index, src.store, index_dir, batch_pages, progress)
        crash_point("export_before_switch")
        manifest.write(directory)  # the switch: atomic rename of collection.json
    finally:
        index.close()
    if drop_local:
        shutil.rmtree(directory / "index", ignore_errors=True)
    (directory / MARKER).unlink(missing_ok=True)
    report = ExportReport(
        str(directory), str(directory), index.url, index.collection, len(src.store.stored_page_ids()),
        sent, already, extra, True, time.perf_counter() - t0,
    )  # fmt: skip
    logger.info("%s", report.summary())
    return report


def _qdrant_index(col: Collection, resumed: bool) -> Any:
    """Create the Qdrant collection (adopting the one of an interrupted run of this export)."""
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
            exist_ok=resumed,
            **backends._connection_options(col),
            **params,
        )
    except IndexInputError as exc:
        raise CollectionError(f"bad Qdrant setting: {exc}") from None
    backends.attach(col, index)
    return index


def _copy_vectors(
    src: Collection, index: Any, store: MetadataStore, index_dir: Path, batch_pages: int, progress: bool
) -> tuple[int, int, int]:
    """Upsert every stored page's vectors (same ids); returns (sent, already there, extra points removed)."""
    from tqdm.auto import tqdm

    stored = sorted(store.stored_page_ids())
    present = {int(i) for i in np.asarray(index.stored_ids()).tolist()}
    extra = sorted(present - set(stored))
    if extra:  # points of pages the source no longer has (it changed between two runs of this export)
        index.remove(extra)
    todo = [i for i in stored if i not in present]
    local = src.index
    bar = tqdm(total=len(stored), initial=len(stored) - len(todo), unit="page", desc="export", disable=not progress)
    with bar:
        for start in range(0, len(todo), max(1, batch_pages)):
            chunk = todo[start : start + batch_pages]
            vectors = [np.asarray(local.get(i), np.float32) for i in chunk]
            index.add(np.stack(vectors) if src.kind == "single" else vectors, chunk, pool=False)
            index.save(index_dir)  # acknowledged by Qdrant
            crash_point("export_after_batch")
            bar.update(len(chunk))
    index.save(index_dir)
    n = index.count()
    if n != len(stored):
        raise CollectionError(
            f"the Qdrant collection {index.collection!r} holds {n} points after the export, expected {len(stored)}"
        )
    return len(todo), len(stored) - len(todo), len(extra)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (copy when linking is impossible); existing files are kept."""
    if not src.is_dir():
        return
    for root, _, files in os.walk(src):
        out = dst / Path(root).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for name in files:
            target = out / name
            if target.exists():
                continue
            try:
                os.link(Path(root) / name, target)
            except OSError:
                shutil.copy2(Path(root) / name, target)
