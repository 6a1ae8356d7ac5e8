"""FAISS IVF-PQ index over MUVERA page encodings: the compressed candidate generator of
:class:`indexes.MultiVectorIndex` (``candidates="muvera", fde_index="ivfpq"``).

A page's MUVERA encoding (:mod:`indexes.muvera`, ``D`` float32 values) is stored as one FAISS
``IndexIVFPQ`` *standalone code* (``sa_encode``): the number of its inverted list plus ``pq_m``
bytes of product-quantised residual, i.e. ``1-2 + pq_m`` bytes instead of ``2 * D`` as float16.
The trained, empty index (coarse centroids and PQ codebooks, about ``4 * D * (nlist + 256)``
bytes) is written once per directory; every page's code lives in the page's segment, so the
index is rebuilt in memory at load by appending codes to their lists (no training, no encoding).

FAISS ids are the multi-vector index's global row numbers; removed and filtered-out rows are
excluded at search time by an ``IDSelectorBitmap``. Inner-product metric throughout, so the
scores approximate the MUVERA inner products (which approximate MaxSim).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from indexes.errors import IndexFormatError, IndexInputError

logger = logging.getLogger(__name__)

#: Default pages needed before the IVF-PQ index is trained (before: flat float16 encodings).
DEFAULT_TRAIN_PAGES = 5000
#: Fewest pages the index can be trained on (one per PQ centroid).
MIN_TRAIN_PAGES = 256
#: Default inverted lists probed per query.
DEFAULT_NPROBE = 32


def _faiss() -> Any:
    """The faiss module (its install hint is raised by :mod:`indexes.single` when it is missing)."""
    from indexes.single import faiss

    return faiss


def default_pq_m(fde_dim: int) -> int:
    """Sub-quantisers for a ``fde_dim`` encoding: one byte per 32 values (16, 8... when not divisible)."""
    for per_byte in (32, 16, 8, 4, 2, 1):
        if fde_dim % per_byte == 0:
            return fde_dim // per_byte
    return fde_dim  # pragma: no cover - per_byte 1 always divides


def check_pq_m(pq_m: int, fde_dim: int) -> int:
    if fde_dim % pq_m:
        raise IndexInputError(f"pq_m={pq_m} must divide the MUVERA encoding size {fde_dim}")
    return pq_m


class IvfPqCandidates:
    """Trained IVF-PQ over ``fde_dim``-d encodings, holding the codes of the rows added to it.

    ``nlist``: inverted lists (default 1: every code is scanned). On ``bench/scale.py``'s 10k-page
    corpus, partitioning the encodings lost most of the recall (the true top-10 pages' encodings
    fall in many lists: recall of 2,000 candidates 0.42 / 0.69 / 0.97 probing 8 / 32 / 100 of
    100 lists), so a partition is only worth it for far larger collections.
    ``pq_m``: bytes of PQ code per page (must divide ``fde_dim``; default :func:`default_pq_m`).
    """

    def __init__(self, index: Any) -> None:
        self.index = index  # faiss.IndexIVFPQ, trained

    # ------------------------------------------------------------------ make
    @classmethod
    def train(cls, fde: np.ndarray, *, nlist: int | None = None, pq_m: int | None = None) -> IvfPqCandidates:
        """Train on ``(n, fde_dim)`` float32 encodings (the rows are not added)."""
        faiss = _faiss()
        n, dim = fde.shape
        nlist = nlist or 1
        pq_m = check_pq_m(pq_m or default_pq_m(dim), dim)
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, nlist, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        # few training pages per PQ centroid is expected here; FAISS would print a warning
        index.cp.min_points_per_centroid = 1
        index.pq.cp.min_points_per_centroid = 1
        logger.info("training the IVF-PQ candidate index (nlist=%d, pq_m=%d) on %d pages", nlist, pq_m, n)
        index.train(np.ascontiguousarray(fde, dtype=np.float32))
        return cls(index)

    @classmethod
    def read(cls, path: Path) -> IvfPqCandidates:
        """Load a trained (empty) index written by :meth:`write`."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except (RuntimeError, OSError) as exc:
            raise IndexFormatError(f"cannot read the candidate index {path}: {str(exc).splitlines()[0]}") from None
        if not isinstance(index, faiss.IndexIVFPQ) or not index.is_trained:
            raise IndexFormatError(f"{path} is not a trained IVF-PQ index")
        return cls(index)

    def write(self, path: Path) -> None:
        """Write the trained index without its codes (they live in the segments)."""
        faiss = _faiss()
        empty = faiss.IndexIVFPQ(self.index.quantizer, self.dim, self.nlist, self.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
        empty.pq = self.index.pq
        empty.is_trained = True
        faiss.write_index(empty, str(path))

    # ------------------------------------------------------------------ info
    @property
    def dim(self) -> int:
        return int(self.index.d)

    @property
    def nlist(self) -> int:
        return int(self.index.nlist)

    @property
    def pq_m(self) -> int:
        return int(self.index.pq.M)

    @property
    def code_size(self) -> int:
        """Bytes per page: list number + PQ code."""
        return int(self.index.sa_code_size())

    # ----------------------------------------------------------------- codes
    def encode(self, fde: np.ndarray) -> np.ndarray:
        """``(n, code_size)`` uint8 codes of ``(n, fde_dim)`` encodings."""
        if fde.shape[0] == 0:
            return np.zeros((0, self.code_size), np.uint8)
        return np.asarray(self.index.sa_encode(np.ascontiguousarray(fde, dtype=np.float32)), np.uint8)

    def add(self, codes: np.ndarray, rows: np.ndarray) -> None:
        """Append ``codes`` as the pages ``rows`` (global row numbers)."""
        if codes.shape[0]:
            self.index.add_sa_codes(np.ascontiguousarray(codes, np.uint8), np.ascontiguousarray(rows, np.int64))

    def reset(self) -> None:
        self.index.reset()

    def search(self, queries: np.ndarray, n: int, *, nprobe: int, mask: np.ndarray | None) -> np.ndarray:
        """``(n_queries, n)`` rows (``-1`` when fewer match) whose codes score best per query.

        ``mask``: bool ``(rows,)``, the rows that may be returned (``None``: all).
        """
        faiss = _faiss()
        params = faiss.SearchParametersIVF(nprobe=min(nprobe, self.nlist))
        bitmap = None
        if mask is not None:
            bitmap = np.packbits(mask, bitorder="little")
            params.sel = faiss.IDSelectorBitmap(mask.size, faiss.swig_ptr(bitmap))
        _, rows = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), n, params=params)
        del bitmap
        return np.asarray(rows, np.int64)
