"""Multi-vector (late-interaction) index with exact MaxSim search.

Pages are stored as float16 vectors, contiguous per segment, with an offsets table::

    seg-000001.vectors.npy   float16 (n_vectors, dim)  the pages' vectors back to back
    seg-000001.offsets.npy   int64   (n_pages + 1,)     page i is vectors[offsets[i]:offsets[i+1]]
    seg-000001.ids.npy       int64   (n_pages,)         the pages' ids

Vectors are memory-mapped on load and after each save, so an index larger than RAM can
be searched; see :mod:`indexes.maxsim` for the scan and :mod:`indexes.segments` for the
append-only, crash-safe storage.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexes.devices import resolve_torch_device
from indexes.errors import IndexFormatError, IndexInputError, UnknownIdError
from indexes.maxsim import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_QUERY_CHUNK,
    as_query_list,
    maxsim_topk,
    single_threaded_torch,
)
from indexes.pooling import check_pool_factor, pool_pages
from indexes.segments import Segment, SegmentTable, as_id_array
from indexes.storage import load_array, read_manifest, segment_file

logger = logging.getLogger(__name__)

INDEX_TYPE = "maxsim"
_FLOAT16_MAX = float(np.finfo(np.float16).max)

Hits = list[list[tuple[int, float]]]


def _merge(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate consecutive segments (offsets are shifted)."""
    offsets = [np.zeros(1, np.int64)]
    base = 0
    for p in parts:
        offsets.append(np.asarray(p["offsets"][1:], np.int64) + base)
        base += int(p["offsets"][-1])
    return {
        "vectors": np.concatenate([np.asarray(p["vectors"]) for p in parts], axis=0),
        "offsets": np.concatenate(offsets),
        "ids": np.concatenate([np.asarray(p["ids"]) for p in parts]),
    }


def _concat_float16(pages: Sequence[np.ndarray], offsets: np.ndarray, dim: int) -> np.ndarray:
    """Pages (float16/float32) back to back as one float16 ``(offsets[-1], dim)`` array.

    Uses torch's vectorised conversion, single-threaded (numpy's float32 -> float16 cast is
    several times slower, and per-page multi-threaded copies stall on OpenMP barriers).
    """
    out = torch.empty((int(offsets[-1]), dim), dtype=torch.float16)
    with single_threaded_torch():
        for page, a, b in zip(pages, offsets[:-1].tolist(), offsets[1:].tolist()):
            src = torch.from_numpy(page) if page.flags.writeable else torch.from_numpy(page.copy())
            out[a:b].copy_(src)
    return out.numpy()


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise IndexInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class MultiVectorIndex:
    """Pages of ``(n_i, dim)`` vectors, searched by exact MaxSim.

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``, for scoring.
    ``block_size``: page vectors per scoring block (memory per worker is about
    ``block_size * min(query vectors, query_chunk) * 4`` bytes).
    ``pool_factor``: when >= 2, pages are token-pooled at add time with colpali-engine's
    ``HierarchicalTokenPooler`` (about ``pool_factor`` times fewer vectors).
    ``workers``: CPU scoring threads (default: torch's thread count).
    """

    def __init__(
        self,
        dim: int = 128,
        *,
        device: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE,
        pool_factor: int | None = None,
        query_chunk: int = DEFAULT_QUERY_CHUNK,
        workers: int | None = None,
    ) -> None:
        self.dim = _check_positive_int(dim, "dim")
        self.block_size = _check_positive_int(block_size, "block_size")
        self.query_chunk = _check_positive_int(query_chunk, "query_chunk")
        self.workers = None if workers is None else _check_positive_int(workers, "workers")
        self.pool_factor = check_pool_factor(pool_factor)
        self.device = resolve_torch_device(device)
        self._mmap = True
        self._table = SegmentTable("multi", _merge)
        self._lock = threading.RLock()
        self._lengths: np.ndarray | None = None

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return self._table.num_alive

    def __repr__(self) -> str:
        return (
            f"MultiVectorIndex(dim={self.dim}, pages={len(self)}, vectors={self.num_vectors}, "
            f"pool_factor={self.pool_factor}, device={self.device.type!r})"
        )

    @property
    def ids(self) -> np.ndarray:
        """int64 ids of the live pages, in insertion order."""
        return self._table.alive_ids()

    @property
    def num_vectors(self) -> int:
        """Number of stored vectors of live pages (after pooling)."""
        lengths = self._page_lengths()
        return int(lengths[self._table.alive_mask].sum()) if lengths.size else 0

    @property
    def directory(self) -> Path | None:
        """Directory the index was loaded from or last saved to."""
        return self._table.directory

    def _page_lengths(self) -> np.ndarray:
        """(rows,) int64 vector count of every row, dead rows included."""
        if self._lengths is None or self._lengths.shape[0] != self._table.num_rows:
            parts = [np.diff(np.asarray(s.arrays["offsets"])) for s in self._table.segments]
            self._lengths = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        return self._lengths

    # --------------------------------------------------------------- writing
    def add(self, vectors: Sequence[Any], ids: Any) -> None:
        """Add pages: ``vectors[i]`` is page ``ids[i]``'s ``(n_i, dim)`` array (float, n_i >= 1).

        Stored as float16 (pooled first when ``pool_factor``). Ids must be new: an id already
        in the index raises :class:`DuplicateIdError` (remove it first to replace a page).
        Nothing is written to disk until :meth:`save`.
        """
        id_arr = as_id_array(ids)
        if isinstance(vectors, np.ndarray | torch.Tensor) and vectors.ndim == 2:
            raise IndexInputError(
                "vectors must be a sequence of (n_vectors, dim) arrays, one per page "
                "(or a 3-D array); wrap a single page in a list"
            )
        pages = [self._check_page(page, i) for i, page in enumerate(vectors)]
        if len(pages) != id_arr.size:
            raise IndexInputError(f"got {len(pages)} pages but {id_arr.size} ids")
        if not pages:
            return
        with self._lock:
            self._table.check_new_ids(id_arr)
            if self.pool_factor:
                pages = pool_pages([p.astype(np.float32) for p in pages], self.pool_factor)
            lengths = np.array([p.shape[0] for p in pages], dtype=np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            vecs = _concat_float16(pages, offsets, self.dim)
            self._table.append({"vectors": vecs, "offsets": offsets, "ids": id_arr.copy()})
            self._lengths = None

    def _check_page(self, page: Any, i: int) -> np.ndarray:
        """Validate page ``i``; return it as a float16 or float32 ``(n, dim)`` array within float16 range."""
        if isinstance(page, torch.Tensor):
            page = page.detach().cpu()
            page = page.numpy() if page.dtype in (torch.float16, torch.float32) else page.to(torch.float32).numpy()
        arr = np.asarray(page)
        if arr.dtype.kind not in "fiu":
            raise IndexInputError(f"page {i} must hold numbers, got dtype {arr.dtype}")
        if arr.ndim != 2 or arr.shape[1] != self.dim:
            raise IndexInputError(f"page {i} must have shape (n_vectors, {self.dim}), got {tuple(arr.shape)}")
        if arr.shape[0] == 0:
            raise IndexInputError(f"page {i} has no vectors")
        if arr.dtype not in (np.float16, np.float32):
            arr = arr.astype(np.float32)
        if not np.isfinite(arr).all():
            raise IndexInputError(f"page {i} contains NaN or infinite values")
        if arr.dtype == np.float32 and max(float(arr.max()), -float(arr.min())) > _FLOAT16_MAX:
            raise IndexInputError(f"page {i} has values beyond the float16 range (|x| > {_FLOAT16_MAX:g})")
        return arr

    def remove(self, ids: Any) -> int:
        """Remove pages by id (unknown ids are ignored); returns how many were removed.

        The vectors stay in their segment files (a tombstone hides them) until :meth:`compact`.
        """
        with self._lock:
            return int(self._table.remove(ids).size)

    def compact(self) -> None:
        """Rewrite the live pages into one new segment, dropping removed ones (on the next save).

        Needs memory for the live vectors; old segment files are deleted by the next save.
        """
        with self._lock:
            rows = self._table.candidate_rows()
            if rows.size == 0:
                self._table.replace_all(None)
            else:
                vecs, lengths = self._gather(rows)
                offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                self._table.replace_all(
                    {"vectors": vecs.copy(), "offsets": offsets, "ids": self._table.all_ids[rows].copy()}
                )
            self._lengths = None

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Persist to ``directory``: new segments only, then an atomic manifest replace.

        Existing segment files are never rewritten (except after :meth:`compact`). After the
        save the new segments are memory-mapped instead of held in RAM.
        """
        with self._lock:
            header = {
                "dim": self.dim,
                "index_type": INDEX_TYPE,
                "dtype": "float16",
                "params": {"pool_factor": self.pool_factor, "block_size": self.block_size},
                "vectors": int(self._page_lengths().sum()),
            }
            self._table.save(
                directory,
                header=header,
                segment_meta=lambda seg: {"vectors": int(seg.arrays["vectors"].shape[0])},
                mmap_after=self._mmap,
                loader=self._segment_loader(),
            )

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "auto", mmap: bool = True) -> MultiVectorIndex:
        """Open an index saved by :meth:`save`; vectors are memory-mapped unless ``mmap=False``.

        Raises :class:`IndexFormatError` for a missing, corrupted or mismatched directory.
        """
        directory = Path(directory)
        manifest = read_manifest(directory, kind="multi")
        if manifest.get("index_type") != INDEX_TYPE or manifest.get("dtype") != "float16":
            raise IndexFormatError(
                f"{directory} holds a {manifest.get('index_type')!r} index with dtype "
                f"{manifest.get('dtype')!r}, not a float16 maxsim index"
            )
        params = manifest.get("params") or {}
        try:
            index = cls(
                manifest["dim"],
                device=device,
                pool_factor=params.get("pool_factor"),
                block_size=params.get("block_size", DEFAULT_BLOCK_SIZE),
            )
        except IndexInputError as exc:
            raise IndexFormatError(f"{directory}/index.json has bad parameters: {exc}") from exc
        index._mmap = mmap
        index._table, _ = SegmentTable.load(
            directory, kind="multi", merger=_merge, loader=index._segment_loader(), mmap=mmap
        )
        return index

    def _segment_loader(self):
        dim = self.dim

        def load(directory: Path, entry: dict[str, Any], mmap: bool) -> dict[str, np.ndarray]:
            name, rows = entry["name"], entry["rows"]
            n_vec = entry.get("vectors")
            if not isinstance(n_vec, int):
                raise IndexFormatError(f"segment {name} in {directory}/index.json has no vector count")
            vectors = load_array(
                directory / segment_file(name, "vectors"), dtype=np.float16, shape=(n_vec, dim), mmap=mmap
            )
            offsets = load_array(directory / segment_file(name, "offsets"), dtype=np.int64, shape=(rows + 1,))
            ids = load_array(directory / segment_file(name, "ids"), dtype=np.int64, shape=(rows,))
            if offsets[0] != 0 or offsets[-1] != n_vec or (rows and np.diff(offsets).min() < 1):
                raise IndexFormatError(
                    f"{directory / segment_file(name, 'offsets')} is inconsistent "
                    f"(must rise from 0 to {n_vec} with every page non-empty)"
                )
            return {"vectors": vectors, "offsets": offsets, "ids": ids}

        return load

    # --------------------------------------------------------------- reading
    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float16 vectors of the pages ``rows`` (ascending) back to back, and their lengths."""
        table = self._table
        seg_idx, local = table.locate(rows)
        lengths = self._page_lengths()[rows]
        out = np.empty((int(lengths.sum()), self.dim), dtype=np.float16)
        pos = 0
        bounds = np.flatnonzero(np.diff(seg_idx)) + 1
        for group in np.split(np.arange(rows.size), bounds):
            if group.size == 0:
                continue
            seg: Segment = table.segments[int(seg_idx[group[0]])]
            offsets = seg.arrays["offsets"]
            vecs = seg.arrays["vectors"]
            loc = local[group]
            starts, ends = offsets[loc], offsets[loc + 1]
            # copy contiguous runs of pages in one slice each
            breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
            run_first = np.concatenate([[0], breaks])
            run_last = np.concatenate([breaks, [loc.size]]) - 1
            for a, b in zip(starts[run_first].tolist(), ends[run_last].tolist()):
                out[pos : pos + b - a] = vecs[a:b]
                pos += b - a
        return out, lengths

    def get(self, id: int) -> np.ndarray:
        """The stored ``(n, dim)`` float16 vectors of page ``id`` (pooled if pooling is on)."""
        with self._lock:
            row = int(self._table.rows_of(as_id_array(id))[0])
            if row < 0:
                raise UnknownIdError(f"id {id} is not in the index")
            return self._gather(np.array([row], np.int64))[0]

    def search(self, queries: Sequence[Any] | np.ndarray, k: int, *, allowed_ids: Any = None) -> Hits:
        """Exact MaxSim top-``k`` pages for each query.

        ``queries``: a sequence of ``(n_i, dim)`` float arrays/tensors (or a 3-D array).
        ``allowed_ids``: restrict candidates to these ids (a metadata filter); unknown ids are
        ignored. Returns, per query, up to ``k`` ``(id, score)`` pairs, best first, where
        ``score = sum_i max_j <q_i, p_j>`` over the stored float16 page vectors (float32 maths).
        """
        k = _check_positive_int(k, "k")
        qs = as_query_list(queries, self.dim)
        with self._lock:
            rows = self._table.candidate_rows(allowed_ids)
            lengths = self._page_lengths()[rows]
            scores, top_rows = maxsim_topk(
                qs,
                rows,
                lengths,
                self._gather,
                k,
                device=self.device,
                block_size=self.block_size,
                query_chunk=self.query_chunk,
                workers=self.workers,
            )
            ids = self._table.all_ids[top_rows] if top_rows.size else np.zeros(top_rows.shape, np.int64)
        return [[(int(i), float(s)) for i, s in zip(id_row, s_row)] for id_row, s_row in zip(ids, scores)]
