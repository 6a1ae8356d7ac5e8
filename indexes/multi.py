"""Multi-vector (late-interaction) index: exact MaxSim search, or MUVERA candidates re-ranked by MaxSim.

Pages are stored contiguous per segment, with an offsets table::

    seg-000001.vectors.npy   float16 or int8 (n_vectors, dim)  the pages' vectors back to back
    seg-000001.scales.npy    float32 (n_vectors,)   codec "int8" only: vector = int8 row * scale
    seg-000001.offsets.npy   int64   (n_pages + 1,)  page i is vectors[offsets[i]:offsets[i+1]]
    seg-000001.ids.npy       int64   (n_pages,)      the pages' ids
    seg-000001.fde.npy       float16 (n_pages, D)    candidates "muvera", flat: each page's MUVERA FDE
    seg-000001.cand.npy      uint8   (n_pages, C)    candidates "muvera", ivfpq: each FDE's IVF-PQ code
    seg-000001.codes.npy     uint16  (n_vectors,)    candidates "centroids": each vector's nearest centroid
    candidates-000004.faiss  the trained (empty) IVF-PQ index of the codes, written once
    centroids-000004.npy     float32 (n_centroids, dim)  candidates "centroids": the centroids, written once

``codec="int8"`` stores every vector as symmetric int8 with its own float32 scale
(``max|x| / 127``): half the bytes of float16, and a MaxSim error of at most
``sum_i ||q_i||_1 * scale / 2`` per query. ``candidates="muvera"`` keeps a MUVERA fixed-dimensional
encoding (:mod:`indexes.muvera`) of every page; a search scans these (one inner product per
page), takes the ``n_candidates`` best pages per query and re-ranks them by MaxSim on the stored
vectors. FDE rows live in the same segments as their pages, so adds, removals, compaction and
crash-safe saves treat them like the vectors.

``fde_index="ivfpq"`` compresses the encodings instead (:mod:`indexes.candidates`): once the
index holds ``train_pages`` pages a FAISS IVF-PQ index is trained on their encodings, and from
then on each page keeps a ``1 + pq_m``-byte code instead of its ``2 * D``-byte float16 encoding,
and a search scans these codes (``nlist=1``, the default) or ``nprobe`` of ``nlist`` inverted
lists of them. Segments saved before the training keep their float16 encodings (encoded again at
load) until :meth:`compact`.

``candidates="centroids"`` (:mod:`indexes.centroids`) needs no encoding: once the index holds
``train_pages`` pages, ``n_centroids`` centroids are trained on a sample of their vectors, every
vector keeps the number of its nearest centroid (2 bytes), and a search scores pages by their
centroids in the ``nprobe`` inverted lists nearest to each query vector (PLAID's centroid
interaction) before re-ranking the ``n_candidates`` best by MaxSim. Before the training, and for
segments saved before it until :meth:`compact` (their centroids are assigned again at load), the
search is exact or the codes are computed from the stored vectors.

Vectors are memory-mapped on load and after each save, so an index larger than RAM can
be searched; see :mod:`indexes.maxsim` for the scan and :mod:`indexes.segments` for the
append-only, crash-safe storage.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexes.candidates import DEFAULT_NPROBE, DEFAULT_TRAIN_PAGES, MIN_TRAIN_PAGES, IvfPqCandidates, check_pq_m
from indexes.centroids import (
    DEFAULT_N_CENTROIDS,
    TRAIN_POINTS_PER_CENTROID,
    CentroidCandidates,
    centroids_for,
    check_n_centroids,
)
from indexes.centroids import DEFAULT_NPROBE as DEFAULT_CENTROID_NPROBE
from indexes.devices import resolve_torch_device
from indexes.errors import IndexFormatError, IndexInputError, UnknownIdError
from indexes.maxsim import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_QUERY_CHUNK,
    as_query_list,
    maxsim_topk,
    plan_blocks,
    single_threaded_torch,
)
from indexes.muvera import Muvera
from indexes.pooling import check_pool_factor, pool_pages
from indexes.segments import Segment, SegmentTable, as_id_array
from indexes.storage import atomic_path, load_array, read_manifest, segment_file
from indexes.topk import RunningTopK

logger = logging.getLogger(__name__)

INDEX_TYPE = "maxsim"
_FLOAT16_MAX = float(np.finfo(np.float16).max)

#: Storage codecs of page vectors.
CODECS = ("float16", "int8")
#: Candidate generators (``None``: exhaustive MaxSim over every page).
CANDIDATES = (None, "muvera", "centroids")
#: Default number of pages re-ranked by MaxSim per query, per candidate generator (chosen on ``bench/scale.py``).
DEFAULT_N_CANDIDATES = {None: 200, "muvera": 200, "centroids": 1000}
#: How MUVERA encodings are searched: scanned as float16 rows, or through a FAISS IVF-PQ index.
FDE_INDEXES = ("flat", "ivfpq")
#: Default MUVERA parameters (``d_proj`` is capped at ``dim``).
MUVERA_DEFAULTS = {"k_sim": 4, "d_proj": 16, "r_reps": 16, "seed": 42}
#: FDE rows scanned per block during candidate generation.
_FDE_BLOCK = 2048
#: Candidate page vectors re-ranked per GEMM (bounds the re-ranking memory).
_RERANK_BLOCK = 65536
#: int8 re-ranking keeps ``max(k * _RESCORE_FACTOR, _RESCORE_MIN)`` pages for the float32 rescore.
_RESCORE_FACTOR = 4
_RESCORE_MIN = 32
#: Most encodings the IVF-PQ candidate index is trained on.
_TRAIN_SAMPLE = 25000
#: Parts stored per vector (the others are per page, except ``offsets``).
_VECTOR_PARTS = ("vectors", "scales")

Hits = list[list[tuple[int, float]]]


def _merge(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate consecutive segments (offsets are shifted)."""
    offsets = [np.zeros(1, np.int64)]
    base = 0
    for p in parts:
        offsets.append(np.asarray(p["offsets"][1:], np.int64) + base)
        base += int(p["offsets"][-1])
    out = {"offsets": np.concatenate(offsets)}
    for name in parts[0]:
        if name != "offsets":
            out[name] = np.concatenate([np.asarray(p[name]) for p in parts], axis=0)
    return out


def _segment_meta(seg: Segment) -> dict[str, Any]:
    """Manifest entry extras of a segment: its vector count (and IVF-PQ code size)."""
    meta = {"vectors": int(seg.arrays["vectors"].shape[0])}
    if "cand" in seg.arrays:
        meta["cand_bytes"] = int(seg.arrays["cand"].shape[1])
    return meta


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-vector int8: ``(q, scale)`` with ``vectors ~= q * scale[:, None]``.

    ``scale = max|x| / 127`` per row (a zero row gets scale 0), so every component is off by at
    most ``scale / 2``.
    """
    x = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
    with single_threaded_torch():
        scale = x.abs().amax(dim=1) / 127.0
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        q = torch.round(x / safe[:, None]).clamp_(-127, 127).to(torch.int8)
    return q.numpy(), scale.numpy()


def dequantize_int8(q: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """float32 ``q * scale[:, None]``."""
    out = torch.from_numpy(np.ascontiguousarray(q)).to(torch.float32)
    out.mul_(torch.from_numpy(np.ascontiguousarray(scale, dtype=np.float32))[:, None])
    return out.numpy()


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


@functools.cache
def _int8_gemm_available() -> bool:
    """Whether this torch build multiplies int8 matrices into int32 on the CPU (``torch._int_mm``)."""
    try:
        a = torch.ones((17, 8), dtype=torch.int8)
        return bool((torch._int_mm(a, a.T) == 8).all())
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def _sample_rows(rows: int, most: int) -> np.ndarray:
    """Ascending int64 rows to train on: all ``rows`` rows, or a seeded random ``most`` of them."""
    if rows <= most:
        return np.arange(rows, dtype=np.int64)
    return np.sort(np.random.default_rng(0).choice(rows, most, replace=False))


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise IndexInputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _check_codec(codec: Any) -> str:
    if codec not in CODECS:
        raise IndexInputError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    return str(codec)


def _check_candidates(candidates: Any) -> str | None:
    if candidates not in CANDIDATES:
        raise IndexInputError(
            f"unknown candidates {candidates!r}; use None (exhaustive MaxSim), 'muvera' or 'centroids'"
        )
    return None if candidates is None else str(candidates)


class MultiVectorIndex:
    """Pages of ``(n_i, dim)`` vectors, searched by MaxSim (exhaustive, or on MUVERA candidates).

    ``device``: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:N]"``, for scoring.
    ``block_size``: page vectors per scoring block (memory per worker is about
    ``block_size * min(query vectors, query_chunk) * 4`` bytes).
    ``pool_factor``: when >= 2, pages are token-pooled at add time with colpali-engine's
    ``HierarchicalTokenPooler`` (about ``pool_factor`` times fewer vectors).
    ``workers``: CPU scoring threads (default: torch's thread count).
    ``codec``: how page vectors are stored: ``"float16"`` (default) or ``"int8"`` (symmetric,
    one float32 scale per vector; half the size, scores within the quantisation error).
    ``candidates``: ``None`` (default) scores every page by MaxSim; ``"muvera"`` keeps a MUVERA
    encoding of every page and re-ranks only the ``n_candidates`` pages whose encodings score
    best (approximate; :meth:`search` can override ``n_candidates`` or ask for ``exact``).
    ``k_sim``, ``d_proj``, ``r_reps``, ``seed``: MUVERA parameters (see :class:`indexes.muvera.Muvera`;
    the encoding has ``r_reps * 2**k_sim * d_proj`` values).
    ``fde_index``: ``"flat"`` (default) stores each encoding as float16 and scans them all;
    ``"ivfpq"`` stores a FAISS IVF-PQ code of ``pq_m`` (+1-2) bytes per page once ``train_pages``
    (default 5000, at least 256) pages are indexed, and scans the codes instead (``nlist``
    inverted lists, default 1; ``nprobe`` of them probed per query: search-time, settable).
    ``candidates="centroids"``: once ``train_pages`` (default 5000, at least 256) pages are
    indexed, ``n_centroids`` (default 4096, at most 65536; fewer when there are fewer than 8
    vectors per centroid) centroids are trained and every vector keeps its nearest centroid's
    number; a query probes the ``nprobe`` (default 8; search-time, settable) centroids nearest to
    each of its vectors and re-ranks the ``n_candidates`` pages those centroids score best (see
    :mod:`indexes.centroids`). Needs FAISS (the ``cpu``/``gpu`` extra).
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
        codec: str = "float16",
        candidates: str | None = None,
        n_candidates: int | None = None,
        k_sim: int | None = None,
        d_proj: int | None = None,
        r_reps: int | None = None,
        seed: int | None = None,
        fde_index: str | None = None,
        nlist: int | None = None,
        pq_m: int | None = None,
        nprobe: int | None = None,
        train_pages: int | None = None,
        n_centroids: int | None = None,
    ) -> None:
        self.dim = _check_positive_int(dim, "dim")
        self.block_size = _check_positive_int(block_size, "block_size")
        self.query_chunk = _check_positive_int(query_chunk, "query_chunk")
        self.workers = None if workers is None else _check_positive_int(workers, "workers")
        self.pool_factor = check_pool_factor(pool_factor)
        self.codec = _check_codec(codec)
        self.candidates = _check_candidates(candidates)
        muvera_args = {"k_sim": k_sim, "d_proj": d_proj, "r_reps": r_reps, "seed": seed}
        self.muvera: Muvera | None = None
        if self.candidates == "muvera":
            given = {key: v for key, v in muvera_args.items() if v is not None}
            chosen = {**MUVERA_DEFAULTS, "d_proj": min(MUVERA_DEFAULTS["d_proj"], self.dim), **given}
            self.muvera = Muvera(self.dim, **chosen)
        elif any(v is not None for v in muvera_args.values()):
            extra = ", ".join(key for key, v in muvera_args.items() if v is not None)
            raise IndexInputError(f"{extra} apply to candidates='muvera' only")
        #: Search-time parameters (``n_candidates``, ``nprobe``); changes apply to the next search and are saved.
        if n_candidates is None:
            n_candidates = DEFAULT_N_CANDIDATES[self.candidates]
        self.params: dict[str, Any] = {"n_candidates": _check_positive_int(n_candidates, "n_candidates")}
        ivf_args = {"nlist": nlist, "pq_m": pq_m, "nprobe": nprobe, "train_pages": train_pages}
        if fde_index is not None and self.muvera is None:
            raise IndexInputError("fde_index applies to candidates='muvera' only")
        self.fde_index = "flat" if fde_index is None else str(fde_index)
        if self.fde_index not in FDE_INDEXES:
            raise IndexInputError(f"unknown fde_index {fde_index!r}; choose one of {', '.join(FDE_INDEXES)}")
        #: ``fde_index="ivfpq"``: build-time settings (``nlist``/``pq_m`` are filled in at training).
        self.ivf_settings: dict[str, int | None] = {}
        #: ``candidates="centroids"``: build-time settings (``n_centroids`` is the trained count once trained).
        self.centroid_settings: dict[str, int] = {}
        if self.fde_index == "ivfpq" or self.candidates == "centroids":
            n_train = _check_positive_int(DEFAULT_TRAIN_PAGES if train_pages is None else train_pages, "train_pages")
            if n_train < MIN_TRAIN_PAGES:
                raise IndexInputError(f"train_pages must be at least {MIN_TRAIN_PAGES}")
            default_nprobe = DEFAULT_NPROBE if self.fde_index == "ivfpq" else DEFAULT_CENTROID_NPROBE
            self.params["nprobe"] = _check_positive_int(default_nprobe if nprobe is None else nprobe, "nprobe")
        if self.fde_index == "ivfpq":
            assert self.muvera is not None
            self.ivf_settings = {
                "nlist": None if nlist is None else _check_positive_int(nlist, "nlist"),
                "pq_m": None if pq_m is None else check_pq_m(_check_positive_int(pq_m, "pq_m"), self.muvera.output_dim),
                "train_pages": n_train,
            }
        elif self.candidates == "centroids":
            if nlist is not None or pq_m is not None:
                raise IndexInputError("nlist and pq_m apply to fde_index='ivfpq' only")
            self.centroid_settings = {
                "n_centroids": check_n_centroids(DEFAULT_N_CENTROIDS if n_centroids is None else n_centroids),
                "train_pages": n_train,
            }
        elif any(v is not None for v in ivf_args.values()):
            extra = ", ".join(key for key, v in ivf_args.items() if v is not None)
            raise IndexInputError(f"{extra} apply to fde_index='ivfpq' or candidates='centroids' only")
        if n_centroids is not None and self.candidates != "centroids":
            raise IndexInputError("n_centroids applies to candidates='centroids' only")
        #: The trained IVF-PQ index holding every row's code (``None``: flat, or not trained yet).
        self._ivf: IvfPqCandidates | None = None
        #: The trained centroids and their inverted lists (``None``: not ``"centroids"``, or not trained yet).
        self._centroids: CentroidCandidates | None = None
        #: Centroid codes of saved segments stored before the training, by segment name (computed at load).
        self._assigned: dict[str, np.ndarray] = {}
        self._cand_file: tuple[Path, str] | None = None  # (directory, file) the trained generator was saved to
        self.device = resolve_torch_device(device)
        self._mmap = True
        self._table = SegmentTable("multi", _merge)
        self._lock = threading.RLock()
        self._lengths: np.ndarray | None = None

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return self._table.num_alive

    def __repr__(self) -> str:
        approx = f", candidates={self.candidates!r}, n_candidates={self.n_candidates}" if self.candidates else ""
        return (
            f"MultiVectorIndex(dim={self.dim}, pages={len(self)}, vectors={self.num_vectors}, "
            f"codec={self.codec!r}{approx}, pool_factor={self.pool_factor}, device={self.device.type!r})"
        )

    @property
    def n_candidates(self) -> int:
        """Pages re-ranked by MaxSim per query with ``candidates="muvera"`` (search-time; settable)."""
        return _check_positive_int(self.params["n_candidates"], "n_candidates")

    @n_candidates.setter
    def n_candidates(self, value: int) -> None:
        self.params["n_candidates"] = _check_positive_int(value, "n_candidates")

    @property
    def options(self) -> dict[str, Any]:
        """Every build and search option of this index (as in the manifest's ``params``)."""
        out: dict[str, Any] = {
            "codec": self.codec,
            "candidates": self.candidates,
            "n_candidates": self.n_candidates,
            "pool_factor": self.pool_factor,
            "block_size": self.block_size,
        }
        if self.muvera is not None:
            out.update({key: v for key, v in self.muvera.to_dict().items() if key != "dim"})
            out["fde_index"] = self.fde_index
        if "nprobe" in self.params:  # IVF-PQ or centroids (one of the two settings is empty)
            out.update(self.ivf_settings, **self.centroid_settings, nprobe=self.params["nprobe"])
        return out

    @property
    def ivf_trained(self) -> bool:
        """Whether the IVF-PQ candidate index is trained (``fde_index="ivfpq"`` and ``train_pages`` reached)."""
        return self._ivf is not None

    @property
    def centroids_trained(self) -> bool:
        """Whether the centroids are trained (``candidates="centroids"`` and ``train_pages`` reached)."""
        return self._centroids is not None

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

        Stored in the index's codec (pooled first when ``pool_factor``), with their MUVERA
        encodings when ``candidates="muvera"``. Ids must be new: an id already in the index
        raises :class:`DuplicateIdError` (remove it first to replace a page). Nothing is
        written to disk until :meth:`save`.
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
            arrays: dict[str, np.ndarray] = {"offsets": offsets, "ids": id_arr.copy()}
            if self.codec == "int8" or self._centroids is not None:
                flat = np.concatenate([np.asarray(p, np.float32) for p in pages], axis=0)
                if self._centroids is not None:
                    arrays["codes"] = self._centroids.assign(flat)
            if self.codec == "int8":
                arrays["vectors"], arrays["scales"] = quantize_int8(flat)
            else:
                arrays["vectors"] = _concat_float16(pages, offsets, self.dim)
            if self.muvera is not None:
                fde = self.muvera.encode_documents(pages)
                if self._ivf is not None:
                    arrays["cand"] = self._ivf.encode(fde)
                else:
                    arrays["fde"] = fde.astype(np.float16)
            first = self._table.append(arrays)
            self._lengths = None
            if self._ivf is not None:
                self._ivf.add(arrays["cand"], np.arange(first, first + len(pages), dtype=np.int64))
            elif self._centroids is not None:
                self._centroids.add(arrays["codes"], lengths, first)
            else:
                self._maybe_train()

    # ------------------------------------------------------ IVF-PQ candidates
    def _maybe_train(self) -> None:
        """Train the IVF-PQ candidate index once ``train_pages`` pages are stored (``fde_index="ivfpq"``).

        Trains on (a sample of at most :data:`_TRAIN_SAMPLE`) stored encodings; unsaved segments
        then swap their float16 encodings for codes, saved ones keep them until :meth:`compact`.
        """
        if self.candidates == "centroids":
            self._maybe_train_centroids()
        if self.fde_index != "ivfpq" or self._ivf is not None:
            return
        rows = self._table.num_rows
        train_pages = self.ivf_settings["train_pages"]
        assert train_pages is not None
        if rows < train_pages:
            return
        fde = self._row_part(_sample_rows(rows, _TRAIN_SAMPLE), "fde").astype(np.float32)
        self._ivf = IvfPqCandidates.train(fde, nlist=self.ivf_settings["nlist"], pq_m=self.ivf_settings["pq_m"])
        self.ivf_settings.update(nlist=self._ivf.nlist, pq_m=self._ivf.pq_m)
        for seg in self._table.segments:
            if seg.name is None:  # not on disk yet: store codes instead of encodings
                seg.arrays["cand"] = self._encode_fde(seg.arrays.pop("fde"))
        self._rebuild_ivf()

    def _encode_fde(self, fde: np.ndarray) -> np.ndarray:
        """IVF-PQ codes of float16 encodings, in blocks (bounds the float32 copy)."""
        assert self._ivf is not None
        blocks = [
            self._ivf.encode(np.asarray(fde[a : a + _FDE_BLOCK], np.float32)) for a in range(0, len(fde), _FDE_BLOCK)
        ]
        return np.concatenate(blocks) if blocks else self._ivf.encode(np.zeros((0, self._ivf.dim), np.float32))

    def _segment_codes(self, seg: Segment) -> np.ndarray:
        return np.asarray(seg.arrays["cand"]) if "cand" in seg.arrays else self._encode_fde(seg.arrays["fde"])

    def _rebuild_ivf(self) -> None:
        """Refill the IVF-PQ index with every row's code (after training, loading or compaction)."""
        assert self._ivf is not None
        self._ivf.reset()
        for seg, start in zip(self._table.segments, self._table.row_starts.tolist()):
            self._ivf.add(self._segment_codes(seg), np.arange(start, start + seg.rows, dtype=np.int64))

    # --------------------------------------------------- centroid candidates
    def _maybe_train_centroids(self) -> None:
        """Train the centroids once ``train_pages`` pages are stored (``candidates="centroids"``).

        Trains on the vectors of a random sample of the stored pages (about
        ``TRAIN_POINTS_PER_CENTROID * n_centroids`` vectors); unsaved segments then store their
        vectors' centroid codes, saved ones get them computed in memory until :meth:`compact`.
        """
        rows = self._table.num_rows
        if self._centroids is not None or rows < self.centroid_settings["train_pages"]:
            return
        requested = self.centroid_settings["n_centroids"]
        lengths = self._page_lengths()
        want = -(-TRAIN_POINTS_PER_CENTROID * requested // max(1, int(lengths.mean())))  # pages
        vectors, _ = self._gather(_sample_rows(rows, want))
        vectors = np.asarray(vectors, np.float32)
        n_centroids = centroids_for(vectors.shape[0], requested)
        if n_centroids < requested:
            logger.warning(
                "%d vectors are too few for %d centroids: training %d", vectors.shape[0], requested, n_centroids
            )
        self._centroids = CentroidCandidates.train(vectors, n_centroids)
        self.centroid_settings["n_centroids"] = n_centroids
        for seg in self._table.segments:
            if seg.name is None:  # not on disk yet: store the codes with the vectors
                seg.arrays["codes"] = self._assign_segment(seg)
        self._rebuild_centroids()

    def _assign_segment(self, seg: Segment) -> np.ndarray:
        """Centroid codes of a segment's stored vectors (dequantised), in blocks."""
        assert self._centroids is not None
        vectors = seg.arrays["vectors"]
        out = np.empty(vectors.shape[0], np.uint16)
        for a in range(0, vectors.shape[0], _RERANK_BLOCK):
            block = vectors[a : a + _RERANK_BLOCK]
            if "scales" in seg.arrays:
                block = dequantize_int8(block, seg.arrays["scales"][a : a + _RERANK_BLOCK])
            out[a : a + block.shape[0]] = self._centroids.assign(block)
        return out

    def _part(self, seg: Segment, part: str) -> np.ndarray:
        """``seg.arrays[part]``, or the centroid codes computed for a segment saved before the training."""
        if part == "codes" and "codes" not in seg.arrays:
            key = seg.name or ""
            if key not in self._assigned:
                logger.info("assigning centroids to segment %s (saved before the training; compact to store them)", key)
                self._assigned[key] = self._assign_segment(seg)
            return self._assigned[key]
        return seg.arrays[part]

    def _rebuild_centroids(self) -> None:
        """Refill the inverted lists from every row's codes (after training, loading or compaction)."""
        assert self._centroids is not None
        self._centroids.reset()
        for seg, start in zip(self._table.segments, self._table.row_starts.tolist()):
            codes = self._part(seg, "codes")
            if codes.size and int(codes.max()) >= self._centroids.n_centroids:
                raise IndexFormatError(f"segment {seg.name} holds centroid codes beyond {self._centroids.n_centroids}")
            self._centroids.add(codes, np.diff(np.asarray(seg.arrays["offsets"])), start)

    def _write_candidates(self, directory: Path, generation: int, rebind: bool) -> tuple[dict[str, Any], list[str]]:
        """Save hook: write the trained IVF-PQ index or centroids once per directory; name it in the manifest."""
        trained = self._ivf if self._ivf is not None else self._centroids
        if trained is None:
            return {"candidate_index": None}, []
        where = directory.resolve()
        if self._cand_file is None or self._cand_file[0] != where:
            name = f"candidates-{generation:06d}.faiss" if self._ivf is not None else f"centroids-{generation:06d}.npy"
            with atomic_path(directory / name) as tmp:
                trained.write(tmp)
            self._cand_file = (where, name)
        name = self._cand_file[1]
        if self._ivf is not None:
            return {"candidate_index": {"file": name, "code_size": self._ivf.code_size}}, [name]
        return {"candidate_index": {"file": name, "n_centroids": self.centroid_settings["n_centroids"]}}, [name]

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
                parts = self._stored_vector_parts() + (("codes",) if self._centroids is not None else ())
                arrays, lengths = self._gather_parts(rows, parts)
                arrays["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
                arrays["ids"] = self._table.all_ids[rows].copy()
                if self._ivf is not None:
                    arrays["cand"] = self._row_codes(rows)
                elif self.muvera is not None:
                    arrays["fde"] = self._row_part(rows, "fde")
                self._table.replace_all(arrays)
            self._lengths = None
            self._assigned = {}
            if self._ivf is not None:
                self._rebuild_ivf()
            if self._centroids is not None:
                self._rebuild_centroids()

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Persist to ``directory``: new segments only, then an atomic manifest replace.

        Existing segment files are never rewritten (except after :meth:`compact`). After the
        save the new segments are memory-mapped instead of held in RAM.
        """
        with self._lock:
            params: dict[str, Any] = {
                "pool_factor": self.pool_factor,
                "block_size": self.block_size,
                "codec": self.codec,
                "candidates": self.candidates,
                "n_candidates": self.n_candidates,
            }
            if self.muvera is not None:
                params["muvera"] = self.muvera.to_dict()
                params["fde_dim"] = self.muvera.output_dim
                params["fde_index"] = self.fde_index
            if "nprobe" in self.params:  # IVF-PQ or centroids (one of the two settings is empty)
                params.update(self.ivf_settings, **self.centroid_settings, nprobe=self.params["nprobe"])
            header = {
                "dim": self.dim,
                "index_type": INDEX_TYPE,
                "dtype": self.codec,
                "params": params,
                "vectors": int(self._page_lengths().sum()),
            }
            self._table.save(
                directory,
                header=header,
                segment_meta=_segment_meta,
                extra=self._write_candidates if "train_pages" in self.options else None,
                mmap_after=self._mmap,
                loader=self._segment_loader(),
            )

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "auto", mmap: bool = True) -> MultiVectorIndex:
        """Open an index saved by :meth:`save`; vectors are memory-mapped unless ``mmap=False``.

        An index saved before codecs and candidates existed opens as float16, exhaustive.
        Raises :class:`IndexFormatError` for a missing, corrupted or mismatched directory.
        """
        directory = Path(directory)
        manifest = read_manifest(directory, kind="multi")
        if manifest.get("index_type") != INDEX_TYPE or manifest.get("dtype") not in CODECS:
            raise IndexFormatError(
                f"{directory} holds a {manifest.get('index_type')!r} index with dtype "
                f"{manifest.get('dtype')!r}, not a maxsim index with a codec of {', '.join(CODECS)}"
            )
        params = manifest.get("params") or {}
        muvera = params.get("muvera") or {}
        if not isinstance(muvera, dict):
            raise IndexFormatError(f"{directory}/index.json has a malformed muvera entry")
        try:
            if params.get("codec", manifest["dtype"]) != manifest["dtype"]:
                raise IndexInputError(f"codec {params.get('codec')!r} differs from dtype {manifest['dtype']!r}")
            if muvera and muvera.get("dim") != manifest["dim"]:
                raise IndexInputError(f"muvera dim {muvera.get('dim')!r} differs from dim {manifest['dim']!r}")
            index = cls(
                manifest["dim"],
                device=device,
                pool_factor=params.get("pool_factor"),
                block_size=params.get("block_size", DEFAULT_BLOCK_SIZE),
                codec=manifest["dtype"],
                candidates=params.get("candidates"),
                n_candidates=params.get("n_candidates"),
                k_sim=muvera.get("k_sim"),
                d_proj=muvera.get("d_proj"),
                r_reps=muvera.get("r_reps"),
                seed=muvera.get("seed"),
                fde_index=params.get("fde_index"),
                nlist=params.get("nlist"),
                pq_m=params.get("pq_m"),
                nprobe=params.get("nprobe"),
                train_pages=params.get("train_pages"),
                n_centroids=params.get("n_centroids"),
            )
        except IndexInputError as exc:
            raise IndexFormatError(f"{directory}/index.json has bad parameters: {exc}") from exc
        index._mmap = mmap
        index._table, manifest = SegmentTable.load(
            directory, kind="multi", merger=_merge, loader=index._segment_loader(), mmap=mmap
        )
        cand = manifest.get("candidate_index")
        coded = any("cand" in seg.arrays or "codes" in seg.arrays for seg in index._table.segments)
        if index.fde_index == "ivfpq" and isinstance(cand, dict) and isinstance(cand.get("file"), str):
            index._ivf = IvfPqCandidates.read(directory / cand["file"])
            index._cand_file = (directory.resolve(), cand["file"])
            index._rebuild_ivf()
        elif index.candidates == "centroids" and isinstance(cand, dict) and isinstance(cand.get("file"), str):
            index._centroids = CentroidCandidates.read(directory / cand["file"], index.dim)
            index._cand_file = (directory.resolve(), cand["file"])
            index.centroid_settings["n_centroids"] = index._centroids.n_centroids
            index._rebuild_centroids()
        elif coded or cand:
            raise IndexFormatError(f"{directory}/index.json lacks a valid candidate_index for its candidate codes")
        return index

    def _stored_vector_parts(self) -> tuple[str, ...]:
        return ("vectors", "scales") if self.codec == "int8" else ("vectors",)

    def _segment_loader(self):
        dim = self.dim
        codec = self.codec
        fde_dim = self.muvera.output_dim if self.muvera is not None else None

        def load(directory: Path, entry: dict[str, Any], mmap: bool) -> dict[str, np.ndarray]:
            name, rows = entry["name"], entry["rows"]
            n_vec = entry.get("vectors")
            if not isinstance(n_vec, int):
                raise IndexFormatError(f"segment {name} in {directory}/index.json has no vector count")
            vec_dtype = "int8" if codec == "int8" else "float16"
            arrays = {
                "vectors": load_array(
                    directory / segment_file(name, "vectors"), dtype=vec_dtype, shape=(n_vec, dim), mmap=mmap
                ),
                "offsets": load_array(directory / segment_file(name, "offsets"), dtype="int64", shape=(rows + 1,)),
                "ids": load_array(directory / segment_file(name, "ids"), dtype="int64", shape=(rows,)),
            }
            if codec == "int8":
                arrays["scales"] = load_array(
                    directory / segment_file(name, "scales"), dtype="float32", shape=(n_vec,), mmap=mmap
                )
            parts = entry.get("parts") or ["fde"]
            if fde_dim is not None and "fde" in parts:
                arrays["fde"] = load_array(
                    directory / segment_file(name, "fde"), dtype="float16", shape=(rows, fde_dim), mmap=mmap
                )
            if fde_dim is not None and "cand" in parts:
                code_size = entry.get("cand_bytes")
                if not isinstance(code_size, int):
                    raise IndexFormatError(f"segment {name} in {directory}/index.json has no code size")
                arrays["cand"] = load_array(
                    directory / segment_file(name, "cand"), dtype="uint8", shape=(rows, code_size), mmap=mmap
                )
            if "codes" in parts:
                arrays["codes"] = load_array(
                    directory / segment_file(name, "codes"), dtype="uint16", shape=(n_vec,), mmap=mmap
                )
            offsets = arrays["offsets"]
            if offsets[0] != 0 or offsets[-1] != n_vec or (rows and np.diff(offsets).min() < 1):
                raise IndexFormatError(
                    f"{directory / segment_file(name, 'offsets')} is inconsistent "
                    f"(must rise from 0 to {n_vec} with every page non-empty)"
                )
            return arrays

        return load

    # --------------------------------------------------------------- reading
    def _gather_parts(self, rows: np.ndarray, parts: Sequence[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per-vector ``parts`` of the pages ``rows`` (ascending) back to back, and the pages' lengths."""
        lengths = self._page_lengths()[rows]
        total = int(lengths.sum())
        if rows.size == 0:
            dtypes = {"vectors": np.int8 if self.codec == "int8" else np.float16, "scales": np.float32}
            return {p: np.empty((0, self.dim) if p == "vectors" else (0,), dtypes[p]) for p in parts}, lengths
        groups = list(self._segment_groups(rows))
        first = groups[0][0]
        out = {
            part: np.empty((total, *self._part(first, part).shape[1:]), dtype=self._part(first, part).dtype)
            for part in parts
        }
        pos = 0
        for seg, _, loc in groups:
            offsets = seg.arrays["offsets"]
            starts, ends = offsets[loc], offsets[loc + 1]
            # copy contiguous runs of pages in one slice each
            breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
            run_first = np.concatenate([[0], breaks])
            run_last = np.concatenate([breaks, [loc.size]]) - 1
            # plain ndarray views: slicing a np.memmap costs several microseconds per run
            sources = {part: np.asarray(self._part(seg, part)) for part in parts}
            for a, b in zip(starts[run_first].tolist(), ends[run_last].tolist()):
                for part in parts:
                    out[part][pos : pos + b - a] = sources[part][a:b]
                pos += b - a
        return out, lengths

    def _gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Vectors of the pages ``rows`` (ascending) back to back (float16, or float32 dequantised int8)."""
        if self.codec == "int8":
            parts, lengths = self._gather_parts(rows, ("vectors", "scales"))
            return dequantize_int8(parts["vectors"], parts["scales"]), lengths
        parts, lengths = self._gather_parts(rows, ("vectors",))
        return parts["vectors"], lengths

    def _segment_groups(self, rows: np.ndarray) -> Iterator[tuple[Segment, np.ndarray, np.ndarray]]:
        """The pages ``rows`` (ascending) by segment: ``(segment, positions in rows, rows within it)``."""
        seg_idx, local = self._table.locate(rows)
        bounds = np.flatnonzero(np.diff(seg_idx)) + 1
        for group in np.split(np.arange(rows.size), bounds):
            if group.size:
                yield self._table.segments[int(seg_idx[group[0]])], group, local[group]

    def _row_part(self, rows: np.ndarray, part: str) -> np.ndarray:
        """Per-page ``part`` (e.g. ``fde``) of the pages ``rows`` (ascending), stacked."""
        chunks = [np.asarray(seg.arrays[part][loc]) for seg, _, loc in self._segment_groups(rows)]
        return np.concatenate(chunks, axis=0)

    def _row_codes(self, rows: np.ndarray) -> np.ndarray:
        """IVF-PQ codes of the pages ``rows`` (ascending), stacked (encoded from float16 where not stored)."""
        chunks = [
            np.asarray(seg.arrays["cand"][loc]) if "cand" in seg.arrays else self._encode_fde(seg.arrays["fde"][loc])
            for seg, _, loc in self._segment_groups(rows)
        ]
        return np.concatenate(chunks, axis=0)

    def get(self, id: int) -> np.ndarray:
        """The stored ``(n, dim)`` vectors of page ``id`` (pooled if pooling is on): float16, or
        float32 dequantised from int8."""
        with self._lock:
            row = int(self._table.rows_of(as_id_array(id))[0])
            if row < 0:
                raise UnknownIdError(f"id {id} is not in the index")
            return self._gather(np.array([row], np.int64))[0]

    def _candidates(self, queries: list[np.ndarray], rows: np.ndarray, n: int, nprobe: int) -> list[np.ndarray]:
        """Per query, up to ``n`` of ``rows`` (ascending): the pages the candidate generator scores best."""
        restricted = rows.size < self._table.num_rows  # tombstones or a filter
        if self._centroids is not None:
            allowed = rows if restricted else None
            return self._centroids.search(queries, n, num_rows=self._table.num_rows, nprobe=nprobe, allowed=allowed)
        mask = None
        if restricted:
            mask = np.zeros(self._table.num_rows, dtype=bool)
            mask[rows] = True
        assert self.muvera is not None
        if self._ivf is not None:
            found = self._ivf.search(self.muvera.encode_queries(queries), n, nprobe=nprobe, mask=mask)
            return [np.sort(r[r >= 0]) for r in found]
        q_fde = torch.from_numpy(self.muvera.encode_queries(queries))  # (nq, D) float32
        topk = RunningTopK(len(queries), n)
        with torch.inference_mode():
            for seg, group, loc in self._segment_groups(rows):
                fde = seg.arrays["fde"]
                whole = loc.size == fde.shape[0]  # every row of the segment: slice instead of gather
                for start in range(0, loc.size, _FDE_BLOCK):
                    sel = loc[start : start + _FDE_BLOCK]
                    block = fde[int(sel[0]) : int(sel[-1]) + 1] if whole else fde[sel]
                    block = np.asarray(block)
                    if not block.flags.writeable:  # a slice of a memory-mapped segment
                        block = block.copy()
                    scores = torch.from_numpy(block).to(torch.float32) @ q_fde.T  # (b, nq)
                    topk.push(scores.T.numpy(), rows[group[start : start + _FDE_BLOCK]])
        return list(np.sort(topk.result()[1], axis=1))

    def search(
        self,
        queries: Sequence[Any] | np.ndarray,
        k: int,
        *,
        allowed_ids: Any = None,
        n_candidates: int | None = None,
        nprobe: int | None = None,
        exact: bool = False,
    ) -> Hits:
        """MaxSim top-``k`` pages for each query.

        ``queries``: a sequence of ``(n_i, dim)`` float arrays/tensors (or a 3-D array).
        ``allowed_ids``: restrict candidates to these ids (a metadata filter); unknown ids are
        ignored. Returns, per query, up to ``k`` ``(id, score)`` pairs, best first, where
        ``score = sum_i max_j <q_i, p_j>`` over the stored page vectors (float32 maths).

        With ``candidates="muvera"`` only the ``n_candidates`` pages (default: the index's
        :attr:`n_candidates`; at least ``k``) whose MUVERA encodings best match the query are
        scored; the encodings of the allowed pages only are scanned, so a filtered search still
        returns ``min(k, allowed pages)`` hits. ``exact=True`` scores every (allowed) page.
        With ``fde_index="ivfpq"``, ``nprobe`` (default: the index's) inverted lists are probed; a
        query whose probed lists hold fewer than ``k`` allowed pages is answered exactly.
        With ``candidates="centroids"`` (once trained) the candidates are the allowed pages whose
        centroids, among the ``nprobe`` nearest to each query vector, score best (pages without a
        probed centroid score 0, so a filtered search still returns ``min(k, allowed pages)`` hits).
        """
        k = _check_positive_int(k, "k")
        n_cand = self.n_candidates if n_candidates is None else _check_positive_int(n_candidates, "n_candidates")
        if nprobe is not None and "nprobe" not in self.params:
            raise IndexInputError("nprobe applies to fde_index='ivfpq' or candidates='centroids' only")
        probe = _check_positive_int(nprobe if nprobe is not None else self.params.get("nprobe", 1), "nprobe")
        qs = as_query_list(queries, self.dim)
        with self._lock:
            rows = self._table.candidate_rows(allowed_ids)
            n_cand = max(n_cand, k)
            approximate = self.muvera is not None or self._centroids is not None
            if not approximate or exact or rows.size <= n_cand or not qs:
                ids, scores = self._score(qs, rows, k)
            else:
                per_query = self._candidates(qs, rows, n_cand, probe)
                found = []
                for q, cand in zip(qs, per_query):
                    if cand.size < k:  # the probed lists hold too few allowed pages
                        logger.debug("%d candidates for k=%d: scoring %d pages exactly", cand.size, k, rows.size)
                        cand = rows
                    if self.device.type == "cpu":
                        found.append(self._rerank(q, cand, k))
                    else:  # the block scan runs on the scoring device
                        found.append(self._score([q], cand, k))
                return [[(int(i), float(s)) for i, s in zip(id_row[0], s_row[0])] for id_row, s_row in found]
        return [[(int(i), float(s)) for i, s in zip(id_row, s_row)] for id_row, s_row in zip(ids, scores)]

    def _rerank(self, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """MaxSim top-``k`` of one query over its candidate ``rows`` (ascending), like :meth:`_score`.

        A few hundred scattered pages: one single-threaded GEMM per block of candidates, in
        this thread (the block scan of :func:`maxsim_topk` pays per-page and thread-pool overheads
        that dominate at this size). With the int8 codec the blocks are scored by an int8 x int8
        GEMM against the query quantised the same way (no float copy of the pages, several times
        faster on CPU); the best ``max(k * _RESCORE_FACTOR, _RESCORE_MIN)`` pages are then rescored
        in float32, so the returned scores and their order are those of the float32 path.
        """
        fast = self.codec == "int8" and _int8_gemm_available()
        keep = min(rows.size, max(k * _RESCORE_FACTOR, _RESCORE_MIN)) if fast else k
        scores, top_rows = self._rerank_blocks(query, rows, keep, int8_query=fast)
        if fast:
            scores, top_rows = self._rerank_blocks(query, np.sort(top_rows), k, int8_query=False)
        ids = self._table.all_ids[top_rows] if top_rows.size else np.zeros(top_rows.shape, np.int64)
        return ids[None, :], scores[None, :]

    def _rerank_blocks(
        self, query: np.ndarray, rows: np.ndarray, k: int, *, int8_query: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, rows)`` of ``rows`` (ascending) by MaxSim, block by block.

        ``int8_query``: score int8 pages with an int8 x int8 GEMM against the query quantised per
        vector (scores within the quantisation error); otherwise float32 maths on the stored vectors.
        """
        topk = RunningTopK(1, k)
        if int8_query:
            q8, q_scale = quantize_int8(query)
            q_int8, q_scale_t = torch.from_numpy(q8), torch.from_numpy(q_scale)[:, None]  # (m, d), (m, 1)
        q_float = torch.from_numpy(np.ascontiguousarray(query, np.float32))  # (m, d)
        lengths = self._page_lengths()[rows]
        with torch.inference_mode(), single_threaded_torch():
            for a, b in plan_blocks(lengths, _RERANK_BLOCK):
                parts, b_lengths = self._gather_parts(rows[a:b], self._stored_vector_parts())
                vectors = torch.from_numpy(parts["vectors"])  # (T, d) float16 or int8
                if int8_query:
                    sim = torch._int_mm(q_int8, vectors.T).to(torch.float32)  # (m, T), exact int32 sums
                else:
                    sim = q_float @ vectors.to(torch.float32).T  # (m, T)
                if "scales" in parts:  # int8: vector = row * scale, so scale the similarities instead
                    sim.mul_(torch.from_numpy(parts["scales"])[None, :])
                starts = np.concatenate([[0], np.cumsum(b_lengths[:-1])])
                best = torch.from_numpy(np.maximum.reduceat(sim.numpy(), starts, axis=1))  # (m, pages)
                if int8_query:
                    best.mul_(q_scale_t)
                topk.push(best.sum(dim=0)[None, :].numpy(), rows[a:b])
        scores, top_rows = topk.result()
        return scores[0], top_rows[0]

    def _score(self, qs: list[np.ndarray], rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact MaxSim top-``k`` of ``qs`` over ``rows``: ``(ids, scores)``, each ``(n_queries, <= k)``."""
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
        return ids, scores
