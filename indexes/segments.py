"""Append-only segments with ids and tombstones: the storage core shared by both indexes.

Rows (a vector for :class:`~indexes.SingleVectorIndex`, a page for
:class:`~indexes.MultiVectorIndex`) are numbered globally in insertion order across
segments; a row number never changes until :meth:`SegmentTable.replace_all` (compaction).
Each row has an int64 id; at most one *live* row has a given id. Removing an id marks its
row dead (a tombstone); the row's data stays in its segment until compaction, so appends
and removals never rewrite existing segment files.

Saving (:meth:`SegmentTable.save`) writes only segments that are not on disk yet, a new
tombstone file when removals changed, lets the owner write its extra files, and then commits
by atomically replacing the manifest. Files the manifest does not name are ignored on load
and deleted after the next successful save.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import DuplicateIdError, IndexFormatError, IndexInputError
from indexes.storage import (
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST_NAME,
    copy_file,
    fsync_dir,
    load_array,
    read_manifest,
    remove_unreferenced,
    segment_file,
    write_array,
    write_manifest,
)

logger = logging.getLogger(__name__)


@dataclass
class Segment:
    """One block of rows. ``arrays`` maps a part name to its array; ``arrays["ids"]`` is (rows,) int64."""

    arrays: dict[str, np.ndarray]
    name: str | None = None  # set once the segment is written in the bound directory

    @property
    def rows(self) -> int:
        return int(self.arrays["ids"].shape[0])


#: Owner hook: load one segment's arrays from ``directory`` given its manifest entry.
SegmentLoader = Callable[[Path, dict[str, Any], bool], dict[str, np.ndarray]]
#: Owner hook: merge consecutive unsaved segments into one (``arrays`` dicts in row order).
SegmentMerger = Callable[[Sequence[dict[str, np.ndarray]]], dict[str, np.ndarray]]
#: Owner hook called during save after segments and tombstones: ``(directory, generation, rebind)``
#: -> ``(manifest entries, file names to keep)``.
ExtraWriter = Callable[[Path, int, bool], tuple[dict[str, Any], list[str]]]


def to_float_array(x: object, dtype: type[np.floating]) -> np.ndarray:
    """Convert an array-like or torch tensor (any float dtype, bf16 included) to a numpy array of ``dtype``.

    Does not import torch: a tensor can only exist once torch is imported.
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiu":
        raise IndexInputError(f"vectors must be numeric, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def as_id_array(ids: Any, *, what: str = "ids") -> np.ndarray:
    """Convert ``ids`` (sequence, array, tensor or a single int) to a 1-D int64 array."""
    if hasattr(ids, "detach"):
        ids = ids.detach().cpu().numpy()
    elif isinstance(ids, set | frozenset):
        ids = sorted(ids)
    elif not isinstance(ids, np.ndarray | list | tuple | int | np.integer) and hasattr(ids, "__iter__"):
        ids = list(ids)  # generators, dict keys, ranges...
    arr = np.asarray(ids)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise IndexInputError(f"{what} must be a 1-D sequence of integers, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iu":
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise IndexInputError(f"{what} must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > np.iinfo(np.int64).max:
        raise IndexInputError(f"{what} must fit in int64")
    return arr.astype(np.int64, copy=False)


class SegmentTable:
    """Rows in append-only segments, their ids, tombstones and the directory they are saved in."""

    def __init__(self, kind: str, merger: SegmentMerger) -> None:
        self.kind = kind
        self._merge = merger
        self.segments: list[Segment] = []
        self.directory: Path | None = None
        self.generation = 0
        self.next_segment = 1
        self.tombstone_file: str | None = None
        self._dead: set[int] = set()
        self._tomb_dirty = False
        self._invalidate()

    # ------------------------------------------------------------ row bookkeeping
    def _invalidate(self) -> None:
        self._ids_cache: np.ndarray | None = None
        self._alive_cache: np.ndarray | None = None
        self._starts_cache: np.ndarray | None = None
        self._dead_cache: np.ndarray | None = None
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def num_rows(self) -> int:
        """Rows stored, dead ones included."""
        return int(sum(s.rows for s in self.segments))

    @property
    def num_alive(self) -> int:
        return self.num_rows - len(self._dead)

    @property
    def num_dead(self) -> int:
        return len(self._dead)

    @property
    def all_ids(self) -> np.ndarray:
        """(num_rows,) int64 ids of every row, dead ones included, in row order."""
        if self._ids_cache is None:
            parts = [s.arrays["ids"] for s in self.segments]
            self._ids_cache = np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)
        return self._ids_cache

    @property
    def row_starts(self) -> np.ndarray:
        """(num_segments + 1,) int64: first global row of each segment, then ``num_rows``."""
        if self._starts_cache is None:
            self._starts_cache = np.concatenate([[0], np.cumsum([s.rows for s in self.segments])]).astype(np.int64)
        return self._starts_cache

    @property
    def dead_rows(self) -> np.ndarray:
        """Sorted int64 row numbers of removed rows."""
        if self._dead_cache is None:
            self._dead_cache = np.array(sorted(self._dead), dtype=np.int64)
        return self._dead_cache

    @property
    def alive_mask(self) -> np.ndarray:
        """(num_rows,) bool, False for removed rows."""
        if self._alive_cache is None:
            mask = np.ones(self.num_rows, dtype=bool)
            if self._dead:
                mask[self.dead_rows] = False
            self._alive_cache = mask
        return self._alive_cache

    def alive_ids(self) -> np.ndarray:
        """int64 ids of live rows in row (insertion) order."""
        return self.all_ids[self.alive_mask] if self._dead else self.all_ids.copy()

    def locate(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map global ``rows`` to (segment index, row within segment) arrays."""
        rows = np.asarray(rows, dtype=np.int64)
        seg = np.searchsorted(self.row_starts, rows, side="right") - 1
        return seg, rows - self.row_starts[seg]

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """Live row of each id in ``ids`` (int64), -1 where the id is not in the index."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._lookup is None:
            all_ids = self.all_ids
            rows = np.flatnonzero(self.alive_mask).astype(np.int64)
            order = np.argsort(all_ids[rows], kind="stable")
            self._lookup = (all_ids[rows][order], rows[order])
        sorted_ids, sorted_rows = self._lookup
        if sorted_ids.size == 0:
            return np.full(ids.shape, -1, np.int64)
        pos = np.searchsorted(sorted_ids, ids)
        pos_c = np.minimum(pos, sorted_ids.size - 1)
        return np.where(sorted_ids[pos_c] == ids, sorted_rows[pos_c], -1).astype(np.int64)

    def candidate_rows(self, allowed_ids: Any = None) -> np.ndarray:
        """Sorted live rows, restricted to ``allowed_ids`` when given (unknown ids are ignored)."""
        if allowed_ids is None:
            return np.flatnonzero(self.alive_mask).astype(np.int64)
        rows = self.rows_of(as_id_array(allowed_ids, what="allowed_ids"))
        return np.unique(rows[rows >= 0])

    # ------------------------------------------------------------------ updates
    def check_new_ids(self, ids: np.ndarray) -> None:
        """Raise :class:`DuplicateIdError` if ``ids`` repeat or are already live in the index."""
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != ids.size:
            dup = uniq[counts > 1][:5].tolist()
            raise DuplicateIdError(f"ids repeat within one add call: {dup}")
        present = ids[self.rows_of(ids) >= 0]
        if present.size:
            raise DuplicateIdError(
                f"{present.size} id(s) already in the index, e.g. {present[:5].tolist()}; "
                "remove them first to replace their vectors"
            )

    def append(self, arrays: dict[str, np.ndarray]) -> int:
        """Append a new unsaved segment; returns its first global row. Ids must be checked first."""
        first = self.num_rows
        self.segments.append(Segment(arrays=arrays))
        self._invalidate()
        return first

    def remove(self, ids: Any) -> np.ndarray:
        """Mark the live rows of ``ids`` dead; return those rows (unknown ids are ignored)."""
        ids = as_id_array(ids)
        rows = self.rows_of(ids)
        rows = np.unique(rows[rows >= 0])
        if rows.size:
            self._dead.update(int(r) for r in rows)
            self._tomb_dirty = True
            self._invalidate()
        return rows

    def replace_all(self, arrays: dict[str, np.ndarray] | None) -> None:
        """Compaction: the live rows become one new unsaved segment (``None``: empty) and tombstones go."""
        self.segments = [Segment(arrays=arrays)] if arrays is not None and arrays["ids"].size else []
        self._dead = set()
        self._tomb_dirty = True
        self._invalidate()

    # ------------------------------------------------------------------- saving
    def _merge_pending(self) -> None:
        merged: list[Segment] = []
        run: list[Segment] = []
        for seg in [*self.segments, None]:
            if seg is not None and seg.name is None:
                run.append(seg)
                continue
            if len(run) == 1:
                merged.append(run[0])
            elif run:
                merged.append(Segment(arrays=self._merge([s.arrays for s in run])))
            run = []
            if seg is not None:
                merged.append(seg)
        if len(merged) != len(self.segments):
            self.segments = merged
            self._invalidate()

    def save(
        self,
        directory: str | os.PathLike[str],
        *,
        header: dict[str, Any],
        segment_meta: Callable[[Segment], dict[str, Any]],
        extra: ExtraWriter | None = None,
        mmap_after: bool = True,
        loader: SegmentLoader | None = None,
    ) -> None:
        """Write new segments, tombstones and extras, then commit the manifest atomically.

        ``header`` holds the owner's manifest entries (dim, index type, params, counts...).
        Saving into another directory than the bound one writes every segment there (it must
        not already hold an index) and binds the table to it.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        rebind = self.directory is None or directory.resolve() != self.directory.resolve()
        if rebind and (directory / MANIFEST_NAME).exists():
            raise IndexFormatError(
                f"{directory} already holds an index; load it with .load() to add to it, "
                "or save into an empty directory"
            )
        self._merge_pending()
        generation = self.generation + 1
        next_segment = self.next_segment
        written: list[int] = []
        names: list[str] = []
        for i, seg in enumerate(self.segments):
            name = seg.name
            if name is None:
                name = f"seg-{next_segment:06d}"
                next_segment += 1
            if seg.name is not None and rebind and self.directory is not None:
                for part in seg.arrays:  # a saved segment moves to a new directory: copy its files
                    copy_file(
                        self.directory / segment_file(name, part), directory / segment_file(name, part), sync_dir=False
                    )
                written.append(i)
            elif seg.name is None or rebind:
                for part, arr in seg.arrays.items():
                    write_array(directory / segment_file(name, part), np.asarray(arr), sync_dir=False)
                written.append(i)
            names.append(name)
        tomb: str | None = None
        if self._dead:
            tomb = self.tombstone_file if (self.tombstone_file and not self._tomb_dirty and not rebind) else None
            if tomb is None:
                tomb = f"tombstones-{generation:06d}.npy"
                write_array(directory / tomb, self.dead_rows, sync_dir=False)
        extra_entries: dict[str, Any] = {}
        extra_files: list[str] = []
        if extra is not None:
            extra_entries, extra_files = extra(directory, generation, rebind)
        fsync_dir(directory)

        entries: list[dict[str, Any]] = []
        for seg, name in zip(self.segments, names):
            entry = {"name": name, "rows": seg.rows, "parts": sorted(seg.arrays)}
            entry.update(segment_meta(seg))
            entries.append(entry)
        manifest = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "generation": generation,
            "next_segment": next_segment,
            "segments": entries,
            "tombstones": {"file": tomb, "count": len(self._dead)} if tomb else None,
            "rows": self.num_rows,
            "count": self.num_alive,
        }
        manifest.update(header)
        manifest.update(extra_entries)
        write_manifest(directory, manifest)

        # committed: update in-memory state
        self.generation = generation
        self.next_segment = next_segment
        self.tombstone_file = tomb
        self._tomb_dirty = False
        self.directory = directory
        for i, (seg, name) in enumerate(zip(self.segments, names)):
            seg.name = name
            if i in written and mmap_after and loader is not None:
                seg.arrays = loader(directory, entries[i], True)
        referenced = [segment_file(n, p) for n, e in zip(names, entries) for p in e["parts"]]
        referenced += ([tomb] if tomb else []) + extra_files
        remove_unreferenced(directory, referenced)
        logger.debug(
            "saved %s-vector index to %s: generation %d, %d new segment(s)",
            self.kind,
            directory,
            generation,
            len(written),
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        directory: str | os.PathLike[str],
        *,
        kind: str,
        merger: SegmentMerger,
        loader: SegmentLoader,
        mmap: bool,
    ) -> tuple[SegmentTable, dict[str, Any]]:
        """Read the manifest, its segments and tombstones; orphan files are ignored.

        A file vanishing while loading (a concurrent save replaced it) is retried once.
        """
        directory = Path(directory)
        manifest = read_manifest(directory, kind=kind)
        try:
            return cls._load_from(directory, manifest, kind=kind, merger=merger, loader=loader, mmap=mmap)
        except IndexFormatError:
            again = read_manifest(directory, kind=kind)
            if again.get("generation") == manifest.get("generation"):
                raise
            logger.info("index at %s changed while loading; loading generation %s", directory, again["generation"])
            return cls._load_from(directory, again, kind=kind, merger=merger, loader=loader, mmap=mmap)

    @classmethod
    def _load_from(
        cls,
        directory: Path,
        manifest: dict[str, Any],
        *,
        kind: str,
        merger: SegmentMerger,
        loader: SegmentLoader,
        mmap: bool,
    ) -> tuple[SegmentTable, dict[str, Any]]:
        table = cls(kind, merger)
        table.directory = directory
        table.generation = manifest["generation"]
        table.next_segment = manifest["next_segment"]
        seen: set[str] = set()
        for entry in manifest["segments"]:
            if (
                not isinstance(entry, dict)
                or not isinstance(entry.get("name"), str)
                or not isinstance(entry.get("rows"), int)
            ):
                raise IndexFormatError(f"{directory / MANIFEST_NAME} has a malformed segment entry: {entry!r}")
            if entry["name"] in seen:
                raise IndexFormatError(f"{directory / MANIFEST_NAME} names segment {entry['name']} twice")
            seen.add(entry["name"])
            arrays = loader(directory, entry, mmap)
            seg = Segment(arrays=arrays, name=entry["name"])
            if seg.rows != entry["rows"]:
                raise IndexFormatError(
                    f"segment {entry['name']} in {directory} has {seg.rows} rows, the manifest says {entry['rows']}"
                )
            table.segments.append(seg)
        table._invalidate()
        tomb = manifest.get("tombstones")
        if tomb:
            if not isinstance(tomb, dict) or not isinstance(tomb.get("file"), str):
                raise IndexFormatError(f"{directory / MANIFEST_NAME} has a malformed tombstones entry")
            dead = load_array(directory / tomb["file"], dtype=np.int64, shape=(tomb.get("count"),))
            if dead.size and (dead.min() < 0 or dead.max() >= table.num_rows):
                raise IndexFormatError(f"tombstone file {directory / tomb['file']} names rows outside the index")
            table._dead = {int(r) for r in dead}
            table.tombstone_file = tomb["file"]
        if table.num_rows != manifest.get("rows", table.num_rows):
            raise IndexFormatError(f"{directory} holds {table.num_rows} rows, the manifest says {manifest.get('rows')}")
        ids = table.alive_ids()
        if np.unique(ids).size != ids.size:
            raise IndexFormatError(f"{directory} has the same id on two live rows; the index is corrupted")
        table._invalidate()
        return table, manifest
