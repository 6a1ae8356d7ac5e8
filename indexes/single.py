"""Single-vector index over FAISS: exact (``flat``), ``hnsw`` or ``ivfpq``, inner-product metric.

The raw float32 vectors, in append-only segments (``seg-000001.vectors.npy`` ``(n, dim)`` +
``seg-000001.ids.npy``), are the source of truth, so adds are incremental. The FAISS index is
built from them; for ``hnsw`` and ``ivfpq`` it is also saved (``faiss-<generation>.index``,
``faiss.write_index``) as a cache named in the manifest together with the number of rows it
covers. On load the cache is read and the rows added after it are appended to it; a
missing or unreadable cache is rebuilt from the vectors. The cache is rewritten only when
it is missing or a quarter or more of the rows are newer than it, so a stream of small
saves costs amortised linear I/O.

FAISS internal ids are global row numbers; removals are tombstones applied at search time
through an ``IDSelectorBitmap`` (with the metadata filter ``allowed_ids``). A selective
filter (at most ``brute_force_max`` candidates) is answered exactly by scoring the
candidates' raw vectors directly, whatever the index type.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:
    import faiss as _faiss
except ImportError as exc:  # pragma: no cover - depends on the installation
    raise ImportError(
        "FAISS is not installed: install the 'cpu' extra (faiss-cpu) or, on CUDA machines, the 'gpu' extra "
        "(faiss-gpu-cu12), e.g. `uv sync --extra cpu` or `pip install 'dse[cpu]'`"
    ) from exc

from indexes.devices import resolve_faiss_device
from indexes.errors import IndexFormatError, IndexInputError, UnknownIdError
from indexes.segments import SegmentTable, as_id_array, to_float_array
from indexes.storage import atomic_path, load_array, read_manifest, segment_file
from indexes.topk import RunningTopK

#: faiss's bundled stubs miss much of its SWIG API (SearchParametersHNSW, keyword parameters).
faiss: Any = _faiss

logger = logging.getLogger(__name__)

Hits = list[list[tuple[int, float]]]

#: Parameters of each index type and their defaults. ``None`` means chosen from the data.
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "flat": {},
    "hnsw": {"hnsw_m": 32, "ef_construction": 200, "ef_search": 128},
    "ivfpq": {"nlist": None, "pq_m": None, "nbits": 8, "nprobe": 16, "train_size": None, "refine_factor": 4},
}
#: Parameters every type accepts.
COMMON_PARAMS: dict[str, Any] = {"brute_force_max": 16384}
INDEX_TYPES = tuple(DEFAULT_PARAMS)
CACHE_REFRESH_FRACTION = 0.25


def _merge(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {
        "vectors": np.concatenate([np.asarray(p["vectors"]) for p in parts], axis=0),
        "ids": np.concatenate([np.asarray(p["ids"]) for p in parts]),
    }


def _positive_int(value: Any, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise IndexInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_params(index_type: str, dim: int, params: dict[str, Any]) -> dict[str, Any]:
    if index_type not in DEFAULT_PARAMS:
        raise IndexInputError(f"unknown index_type {index_type!r}; choose one of {', '.join(INDEX_TYPES)}")
    allowed = {**DEFAULT_PARAMS[index_type], **COMMON_PARAMS}
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise IndexInputError(f"unknown parameter(s) {unknown} for a {index_type!r} index; allowed: {names}")
    out = {**allowed, **params}
    for name, value in out.items():
        out[name] = _positive_int(value, name, allow_none=allowed[name] is None)
    if index_type == "ivfpq":
        if out["nbits"] > 16:
            raise IndexInputError(f"nbits must be <= 16, got {out['nbits']}")
        if out["pq_m"] is not None and dim % out["pq_m"]:
            raise IndexInputError(f"pq_m={out['pq_m']} must divide the dimension {dim}")
    return out


def _default_pq_m(dim: int) -> int:
    """Sub-quantizers for PQ: ``dim // 4`` (4 dims each) or the largest divisor of dim below dim/2."""
    if dim % 4 == 0:
        return dim // 4
    return max([m for m in range(1, max(dim // 2, 1) + 1) if dim % m == 0] or [1])


class SingleVectorIndex:
    """One vector per item, inner-product search through FAISS.

    ``index_type``: ``"flat"`` (exact), ``"hnsw"`` (``hnsw_m``, ``ef_construction``,
    ``ef_search``) or ``"ivfpq"`` (``nlist``, ``pq_m``, ``nbits``, ``nprobe``, ``train_size``,
    ``refine_factor``). Every type takes ``brute_force_max``. ``ivfpq`` searches exactly (a flat
    index) until ``train_size`` vectors (default ``39 * 2**nbits``, at least ``39 * nlist``) have
    been added, then trains and switches; its hits are re-scored exactly from the raw
    vectors among ``k * refine_factor`` candidates.
    ``device``: ``"auto"``/``"cpu"``/``"cuda"``; FAISS moves flat and ivfpq indexes to the GPUs
    (``index_cpu_to_all_gpus``) only when it was built with GPU support.
    Vectors are not normalised: pass L2-normalised vectors for cosine similarity.
    """

    def __init__(self, dim: int, *, index_type: str = "flat", device: str = "auto", **params: Any) -> None:
        self.dim = int(_positive_int(dim, "dim"))  # type: ignore[arg-type]
        self.index_type = index_type
        self.params = _check_params(index_type, self.dim, params)
        self.device = resolve_faiss_device(device)
        self._table = SegmentTable("single", _merge)
        self._lock = threading.RLock()
        self._faiss: Any = None  # CPU index whose ids are rows 0 .. ntotal-1
        self._trained = index_type != "ivfpq"
        self._cache: dict[str, Any] | None = None  # {"file", "rows", "trained"} of the saved cache
        self._gpu: Any = None
        self._gpu_rows = -1

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return self._table.num_alive

    def __repr__(self) -> str:
        return (
            f"SingleVectorIndex(dim={self.dim}, index_type={self.index_type!r}, count={len(self)}, "
            f"device={self.device!r})"
        )

    @property
    def ids(self) -> np.ndarray:
        """int64 ids of the live vectors, in insertion order."""
        return self._table.alive_ids()

    @property
    def num_vectors(self) -> int:
        return len(self)

    @property
    def is_trained(self) -> bool:
        """False for an ``ivfpq`` index still searching exactly before training."""
        return self._trained

    @property
    def directory(self) -> Path | None:
        return self._table.directory

    # ----------------------------------------------------------- faiss index
    def _new_faiss(self) -> Any:
        p = self.params
        if self.index_type == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, p["hnsw_m"], faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = p["ef_construction"]
            return index
        return faiss.IndexFlatIP(self.dim)

    def _train_ivfpq(self) -> None:
        """Train the IVF-PQ index on every stored vector and fill it (replaces the flat fallback)."""
        p = self.params
        rows = self._table.num_rows
        nlist = p["nlist"] or max(1, min(int(4 * math.sqrt(rows)), rows // 39))
        pq_m = p["pq_m"] or _default_pq_m(self.dim)
        x = self._gather(np.arange(rows, dtype=np.int64))
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFPQ(quantizer, self.dim, nlist, pq_m, p["nbits"], faiss.METRIC_INNER_PRODUCT)
        logger.info("training IVF-PQ (nlist=%d, pq_m=%d, nbits=%d) on %d vectors", nlist, pq_m, p["nbits"], rows)
        index.train(x)
        index.add(x)
        index.nprobe = min(p["nprobe"], nlist)
        self.params.update(nlist=nlist, pq_m=pq_m)
        self._faiss = index
        self._trained = True

    def _train_size(self) -> int:
        p = self.params
        return p["train_size"] or max(39 * (1 << p["nbits"]), 39 * (p["nlist"] or 1))

    def _sync_faiss(self) -> None:
        """Make the FAISS index cover every row (adding rows ``>= ntotal``), training ivfpq when due."""
        rows = self._table.num_rows
        if self._faiss is None:
            self._faiss = self._new_faiss()
        if not self._trained and rows >= self._train_size():
            self._train_ivfpq()
            return
        have = int(self._faiss.ntotal)
        if have < rows:
            self._faiss.add(self._gather(np.arange(have, rows, dtype=np.int64)))

    def _gather(self, rows: np.ndarray) -> np.ndarray:
        """Raw float32 vectors of ``rows`` -> ``(len(rows), dim)``."""
        table = self._table
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        if rows.size == 0:
            return out
        seg_idx, local = table.locate(rows)
        for s in np.unique(seg_idx).tolist():
            sel = np.flatnonzero(seg_idx == s)
            out[sel] = table.segments[s].arrays["vectors"][local[sel]]
        return out

    def _search_target(self, needs_selector: bool) -> Any:
        if self.device == "cuda" and not needs_selector and self.index_type != "hnsw":
            if self._gpu is None or self._gpu_rows != self._faiss.ntotal:
                self._gpu = faiss.index_cpu_to_all_gpus(self._faiss)
                self._gpu_rows = int(self._faiss.ntotal)
            return self._gpu
        return self._faiss

    # --------------------------------------------------------------- writing
    def add(self, vectors: Any, ids: Any) -> None:
        """Add ``vectors`` ``(n, dim)`` (float) with their ``n`` int64 ids (new and unique).

        A duplicate id raises :class:`DuplicateIdError`. Nothing is written until :meth:`save`.
        """
        id_arr = as_id_array(ids)
        x = to_float_array(vectors, np.float32)
        if x.ndim == 1 and x.shape[0] == self.dim and id_arr.size == 1:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise IndexInputError(f"vectors must have shape (n, {self.dim}), got {tuple(x.shape)}")
        if x.shape[0] != id_arr.size:
            raise IndexInputError(f"got {x.shape[0]} vectors but {id_arr.size} ids")
        if x.shape[0] == 0:
            return
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
            raise IndexInputError(f"vector {bad} (id {int(id_arr[bad])}) contains NaN or infinite values")
        with self._lock:
            self._table.check_new_ids(id_arr)
            self._table.append({"vectors": np.ascontiguousarray(x).copy(), "ids": id_arr.copy()})
            self._sync_faiss()

    def remove(self, ids: Any) -> int:
        """Remove vectors by id (unknown ids are ignored); returns how many were removed."""
        with self._lock:
            return int(self._table.remove(ids).size)

    def compact(self) -> None:
        """Drop removed vectors for good: one new segment and a rebuilt FAISS index (written on save)."""
        with self._lock:
            rows = self._table.candidate_rows()
            arrays = {"vectors": self._gather(rows), "ids": self._table.all_ids[rows].copy()} if rows.size else None
            self._table.replace_all(arrays)
            self._faiss = None
            self._gpu = None
            self._cache = None
            self._trained = self.index_type != "ivfpq"
            if self._table.num_rows:
                self._sync_faiss()

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Persist new segments (and the FAISS cache when due), then replace the manifest atomically."""
        with self._lock:
            header = {
                "dim": self.dim,
                "index_type": self.index_type,
                "dtype": "float32",
                "params": dict(self.params),
                "trained": self._trained,
            }
            self._table.save(
                directory,
                header=header,
                segment_meta=lambda seg: {},
                extra=self._write_cache,
                mmap_after=True,
                loader=self._segment_loader(),
            )

    def _write_cache(self, directory: Path, generation: int, rebind: bool) -> tuple[dict[str, Any], list[str]]:
        rows = self._table.num_rows
        if self.index_type == "flat" or not self._trained or self._faiss is None or rows == 0:
            return {"cache": None}, []
        cache = self._cache
        stale = cache is None or rebind or rows - cache["rows"] >= max(1, CACHE_REFRESH_FRACTION * cache["rows"])
        if stale:
            name = f"faiss-{generation:06d}.index"
            with atomic_path(directory / name) as tmp:
                faiss.write_index(self._faiss, str(tmp))
            cache = {"file": name, "rows": int(self._faiss.ntotal)}
            self._cache = cache
        assert cache is not None
        return {"cache": dict(cache)}, [cache["file"]]

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "auto") -> SingleVectorIndex:
        """Open an index saved by :meth:`save` (raw vectors memory-mapped, FAISS from cache or rebuilt).

        Raises :class:`IndexFormatError` for a missing, corrupted or mismatched directory.
        """
        directory = Path(directory)
        manifest = read_manifest(directory, kind="single")
        if manifest.get("index_type") not in INDEX_TYPES or manifest.get("dtype") != "float32":
            raise IndexFormatError(
                f"{directory} holds an index of type {manifest.get('index_type')!r}, "
                f"dtype {manifest.get('dtype')!r}; expected one of {INDEX_TYPES}, float32"
            )
        params = manifest.get("params") or {}
        if not isinstance(params, dict):
            raise IndexFormatError(f"{directory}/index.json has bad params: {params!r}")
        try:
            index = cls(manifest["dim"], index_type=manifest["index_type"], device=device, **params)
        except IndexInputError as exc:
            raise IndexFormatError(f"{directory}/index.json has bad parameters: {exc}") from exc
        index._table, manifest = SegmentTable.load(
            directory, kind="single", merger=_merge, loader=index._segment_loader(), mmap=True
        )
        index._restore_faiss(directory, manifest)
        return index

    def _restore_faiss(self, directory: Path, manifest: dict[str, Any]) -> None:
        rows = self._table.num_rows
        cache = manifest.get("cache")
        if rows == 0:
            return
        if cache and self.index_type != "flat":
            path = directory / str(cache.get("file"))
            try:
                if not path.is_file():
                    raise OSError("file missing")
                index = faiss.read_index(str(path))
                if index.d != self.dim or index.ntotal != cache.get("rows") or index.ntotal > rows:
                    raise OSError(
                        f"it covers {index.ntotal} vectors of dim {index.d}, expected "
                        f"{cache.get('rows')} of dim {self.dim}"
                    )
                self._faiss = index
                self._trained = True
                self._cache = {"file": path.name, "rows": int(index.ntotal)}
                if self.index_type == "ivfpq":
                    faiss.extract_index_ivf(index).nprobe = min(self.params["nprobe"], self.params["nlist"] or 1)
            except (OSError, RuntimeError) as exc:
                logger.warning("FAISS cache %s unusable (%s); rebuilding from the stored vectors", path, exc)
                self._faiss = None
        if self._faiss is None and self.index_type == "ivfpq" and manifest.get("trained"):
            self._train_ivfpq()
        self._sync_faiss()

    def _segment_loader(self):
        dim = self.dim

        def load(directory: Path, entry: dict[str, Any], mmap: bool) -> dict[str, np.ndarray]:
            name, rows = entry["name"], entry["rows"]
            vectors = load_array(
                directory / segment_file(name, "vectors"), dtype=np.float32, shape=(rows, dim), mmap=mmap
            )
            ids = load_array(directory / segment_file(name, "ids"), dtype=np.int64, shape=(rows,))
            return {"vectors": vectors, "ids": ids}

        return load

    # --------------------------------------------------------------- reading
    def get(self, id: int) -> np.ndarray:
        """The stored ``(dim,)`` float32 vector of ``id``."""
        with self._lock:
            row = int(self._table.rows_of(as_id_array(id))[0])
            if row < 0:
                raise UnknownIdError(f"id {id} is not in the index")
            return self._gather(np.array([row], np.int64))[0]

    def search(self, queries: Any, k: int, *, allowed_ids: Any = None) -> Hits:
        """Top-``k`` inner-product hits per query.

        ``queries``: ``(n, dim)`` (or one ``(dim,)`` vector). ``allowed_ids`` restricts the
        candidates (a metadata filter; unknown ids ignored). Returns per query up to ``k``
        ``(id, score)`` pairs, best first.
        """
        k = int(_positive_int(k, "k"))  # type: ignore[arg-type]
        q = to_float_array(queries, np.float32)
        if q.ndim == 1:
            q = q.reshape(1, -1)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise IndexInputError(f"queries must have shape (n, {self.dim}), got {tuple(q.shape)}")
        if not np.isfinite(q).all():
            raise IndexInputError("queries contain NaN or infinite values")
        q = np.ascontiguousarray(q)
        with self._lock:
            table = self._table
            if table.num_alive == 0 or q.shape[0] == 0:
                return [[] for _ in range(q.shape[0])]
            if allowed_ids is not None:
                rows = table.candidate_rows(allowed_ids)
                if rows.size <= self.params["brute_force_max"] or not self._trained:
                    return self._exact(q, rows, k)
                allowed = np.zeros(table.num_rows, dtype=bool)
                allowed[rows] = True
                mask: np.ndarray | None = allowed
            else:
                if not self._trained and table.num_dead:  # ivfpq fallback: exact over live rows
                    return self._exact(q, table.candidate_rows(), k)
                mask = table.alive_mask if table.num_dead else None
            return self._faiss_search(q, k, mask)

    def _exact(self, q: np.ndarray, rows: np.ndarray, k: int) -> Hits:
        """Exact inner-product top-k over ``rows`` (scored from the raw vectors, in chunks)."""
        top = RunningTopK(q.shape[0], k)
        chunk = max(1, (64 << 20) // (4 * self.dim))  # ~64 MB of vectors per step
        for start in range(0, rows.size, chunk):
            r = rows[start : start + chunk]
            top.push(q @ self._gather(r).T, r)
        scores, top_rows = top.result()
        return self._to_hits(scores, top_rows)

    def _faiss_search(self, q: np.ndarray, k: int, mask: np.ndarray | None) -> Hits:
        p = self.params
        ivf = self.index_type == "ivfpq" and self._trained
        k_eff = k * p["refine_factor"] if ivf else k
        sel = bitmap = None
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            sel = faiss.IDSelectorBitmap(mask.size, faiss.swig_ptr(bitmap))
        if self.index_type == "hnsw":
            params: Any = faiss.SearchParametersHNSW(efSearch=max(p["ef_search"], k_eff))
        elif ivf:
            params = faiss.SearchParametersIVF(nprobe=min(p["nprobe"], p["nlist"]))
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        target = self._search_target(sel is not None)
        if target is self._faiss:
            scores, rows = target.search(q, k_eff, params=params)
        else:  # GPU copy, no selector
            scores, rows = target.search(q, k_eff)
        del bitmap
        if ivf:  # exact re-scoring of the candidates from the raw vectors
            return self._rerank(q, rows, k)
        return self._to_hits(scores, rows)

    def _rerank(self, q: np.ndarray, rows: np.ndarray, k: int) -> Hits:
        out: Hits = []
        for qi in range(q.shape[0]):
            r = rows[qi][rows[qi] >= 0]
            if r.size == 0:
                out.append([])
                continue
            s = self._gather(r) @ q[qi]
            order = np.lexsort((r, -s))[:k]
            out.append([(int(i), float(v)) for i, v in zip(self._table.all_ids[r[order]], s[order])])
        return out

    def _to_hits(self, scores: np.ndarray, rows: np.ndarray) -> Hits:
        ids = self._table.all_ids
        out: Hits = []
        for s_row, r_row in zip(scores, rows):
            keep = r_row >= 0
            out.append([(int(i), float(v)) for i, v in zip(ids[r_row[keep]], s_row[keep])])
        return out
