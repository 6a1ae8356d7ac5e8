"""PLAID-style centroid candidates of :class:`indexes.MultiVectorIndex` (``candidates="centroids"``).

Once the index holds ``train_pages`` pages, ``n_centroids`` centroids are trained on a sample of
their vectors (spherical k-means, FAISS). From then on every stored page vector also keeps the
number of its nearest centroid (uint16, 2 bytes per vector, in the page's segment). In memory,
inverted lists map each centroid to the pages holding a vector assigned to it.

A query of ``m`` vectors is first scored against the centroids, ``S = Q @ C.T`` of shape
``(m, n_centroids)``. For each query vector the ``nprobe`` best centroids are probed, and each page
gets the approximate score::

    sum_i max(f_i, max_{c probed for q_i, held by the page} S[i, c]),   f_i = max(0, S[i, c_i'])

where ``c_i'`` is query vector ``i``'s best centroid after the probed ones. This is PLAID's
centroid interaction (Santhanam et al., 2022, arXiv 2205.09707), ``sum_i max_{c in page} S[i, c]``,
computed exactly for the probed centroids; a query vector whose probed centroids the page does
not hold adds the most it could (``f_i``: the page's best centroid is not better than ``c_i'``).
That upper bound ranked far better than adding 0 on ``bench/scale.py``'s 100k-page corpus, where
thousands of pages share a query's topic. The ``n`` best pages are the candidates that the index
then re-ranks by exact MaxSim on the stored vectors.

The cost per query is ``m * n_centroids * dim`` multiply-adds plus one pass over the probed
lists, so it grows with the pages that share the query's centroids, not with the whole index.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from indexes.errors import IndexFormatError, IndexInputError
from indexes.storage import load_array

logger = logging.getLogger(__name__)

#: Default number of centroids (lowered at training when there are too few vectors).
DEFAULT_N_CENTROIDS = 4096
#: Most centroids: codes are uint16.
MAX_CENTROIDS = 65536
#: Default centroids probed per query vector.
DEFAULT_NPROBE = 8
#: Training vectors per centroid (a random sample of the stored vectors, at most). With 32 vectors
#: per centroid and 10 iterations the exact centroid interaction kept only 0.60 of the exact top 10
#: among 1,000 of ``bench/scale.py``'s 100k pages; with 100 and 15, 0.99.
TRAIN_POINTS_PER_CENTROID = 100
#: Fewest training vectors per centroid: with fewer vectors, fewer centroids are trained.
MIN_POINTS_PER_CENTROID = 8
#: k-means iterations.
KMEANS_ITERATIONS = 15
#: Vectors assigned per GEMM (bounds the ``(block, n_centroids)`` score matrix).
_ASSIGN_BLOCK = 4096
#: Cells of the ``(n_centroids, pages)`` bitmap used to list each page's distinct centroids.
_BITMAP_CELLS = 1 << 25


def check_n_centroids(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 2 <= value <= MAX_CENTROIDS:
        raise IndexInputError(f"n_centroids must be an integer from 2 to {MAX_CENTROIDS}, got {value!r}")
    return int(value)


def centroids_for(n_vectors: int, requested: int) -> int:
    """Centroids to train on ``n_vectors`` vectors: ``requested``, or fewer when the vectors are too few."""
    return max(2, min(requested, n_vectors // MIN_POINTS_PER_CENTROID))


class CentroidCandidates:
    """Centroids of the page vectors and, per centroid, the pages (rows) that hold one of its vectors.

    ``centroids``: ``(n_centroids, dim)`` float32, unit length.
    """

    def __init__(self, centroids: np.ndarray) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)
        self._centroids_t = torch.from_numpy(self.centroids).T.contiguous()  # (dim, C)
        self._pairs: list[tuple[np.ndarray, np.ndarray]] = []  # per add: (centroids, rows), sorted by centroid
        self._lists: tuple[np.ndarray, np.ndarray] | None = None  # (offsets (C + 1,), rows int32)

    # ------------------------------------------------------------------ make
    @classmethod
    def train(cls, vectors: np.ndarray, n_centroids: int, *, seed: int = 0) -> CentroidCandidates:
        """Spherical k-means (FAISS) on ``(n, dim)`` float32 vectors; ``n`` must be at least ``n_centroids``."""
        from indexes.single import faiss  # its install hint is raised there when FAISS is missing

        n, dim = vectors.shape
        if n < n_centroids:
            raise IndexInputError(f"{n} vectors cannot train {n_centroids} centroids")
        logger.info("training %d centroids on %d vectors", n_centroids, n)
        kmeans = faiss.Kmeans(
            dim,
            n_centroids,
            niter=KMEANS_ITERATIONS,
            seed=seed,
            spherical=True,
            max_points_per_centroid=TRAIN_POINTS_PER_CENTROID,
            min_points_per_centroid=1,  # few points per centroid is expected on small indexes
        )
        kmeans.train(np.ascontiguousarray(vectors, dtype=np.float32))
        return cls(kmeans.centroids)

    @classmethod
    def read(cls, path: Path, dim: int) -> CentroidCandidates:
        """Load centroids written by :meth:`write` (a ``(n_centroids, dim)`` float32 ``.npy``)."""
        centroids = load_array(path, dtype="float32", shape=(None, dim))
        if not 2 <= centroids.shape[0] <= MAX_CENTROIDS or not np.isfinite(centroids).all():
            raise IndexFormatError(f"{path} does not hold 2 to {MAX_CENTROIDS} finite centroids")
        return cls(np.array(centroids))

    def write(self, path: Path) -> None:
        """Write the centroids as ``.npy`` to ``path`` (the caller makes it atomic)."""
        with open(path, "wb") as fh:
            np.lib.format.write_array(fh, self.centroids, allow_pickle=False)

    # ------------------------------------------------------------------ info
    @property
    def n_centroids(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.centroids.shape[1])

    @property
    def postings(self) -> int:
        """(page, centroid) pairs in the inverted lists."""
        return sum(int(c.size) for c, _ in self._pairs)

    # ----------------------------------------------------------------- codes
    def assign(self, vectors: np.ndarray) -> np.ndarray:
        """``(n,)`` uint16 number of the nearest (highest inner product) centroid of each of ``(n, dim)`` vectors.

        float32 GEMM in torch, in blocks (2-3x faster than FAISS's flat search on CPU).
        """
        out = np.empty(vectors.shape[0], np.uint16)
        with torch.inference_mode():
            for a in range(0, vectors.shape[0], _ASSIGN_BLOCK):
                block = torch.from_numpy(np.ascontiguousarray(vectors[a : a + _ASSIGN_BLOCK], dtype=np.float32))
                out[a : a + block.shape[0]] = (block @ self._centroids_t).argmax(dim=1).numpy()
        return out

    def add(self, codes: np.ndarray, lengths: np.ndarray, first_row: int) -> None:
        """Add pages ``first_row, first_row + 1, ...``: ``lengths[i]`` vectors each, whose centroids are
        ``codes`` (``(lengths.sum(),)``, back to back)."""
        if lengths.size == 0:
            return
        step = max(1, _BITMAP_CELLS // self.n_centroids)  # pages per bitmap
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for a in range(0, lengths.size, step):
            b = min(a + step, lengths.size)
            held = np.zeros((self.n_centroids, b - a), dtype=bool)
            page = np.repeat(np.arange(b - a), lengths[a:b])
            held[np.asarray(codes[offsets[a] : offsets[b]], np.int64), page] = True
            cents, pages = np.nonzero(held)  # sorted by centroid, then page
            self._pairs.append((cents.astype(np.uint16), (pages + first_row + a).astype(np.int32)))
        self._lists = None

    def reset(self) -> None:
        self._pairs = []
        self._lists = None

    def _inverted_lists(self) -> tuple[np.ndarray, np.ndarray]:
        """``(offsets, rows)``: centroid ``c``'s pages are ``rows[offsets[c]:offsets[c + 1]]`` (ascending)."""
        if self._lists is None:
            if self._pairs:
                cents = np.concatenate([c for c, _ in self._pairs])
                rows = np.concatenate([r for _, r in self._pairs])
                order = np.argsort(cents, kind="stable")  # radix sort; keeps the rows ascending per list
                rows = rows[order]
                counts = np.bincount(cents, minlength=self.n_centroids)
            else:
                rows, counts = np.zeros(0, np.int32), np.zeros(self.n_centroids, np.int64)
            self._lists = (np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), rows)
        return self._lists

    # ---------------------------------------------------------------- search
    def scores(self, query: np.ndarray, num_rows: int, nprobe: int) -> np.ndarray:
        """``(num_rows,)`` float32 approximate score of every row for one ``(m, dim)`` query (see the module)."""
        offsets, rows = self._inverted_lists()
        nprobe = min(nprobe, self.n_centroids)
        with torch.inference_mode():
            sims = (torch.from_numpy(np.ascontiguousarray(query, np.float32)) @ self._centroids_t).numpy()  # (m, C)
        if nprobe < self.n_centroids:  # the probed centroids and the next best one (the floor)
            probed = np.argpartition(-sims, nprobe, axis=1)[:, : nprobe + 1]  # (m, nprobe + 1)
        else:
            probed = np.broadcast_to(np.arange(self.n_centroids), sims.shape)
        total = np.zeros(num_rows, np.float32)
        best = np.empty(num_rows, np.float32)
        for token, cents in zip(sims, probed):
            cents = cents[np.argsort(token[cents])]  # ascending: the last write is the max
            floor = max(0.0, float(token[cents[0]])) if nprobe < self.n_centroids else 0.0
            best.fill(floor)
            for c in cents[1:].tolist() if nprobe < self.n_centroids else cents.tolist():
                if token[c] > floor:
                    best[rows[offsets[c] : offsets[c + 1]]] = token[c]
            total += best
        return total

    def search(
        self, queries: Sequence[np.ndarray], n: int, *, num_rows: int, nprobe: int, allowed: np.ndarray | None
    ) -> list[np.ndarray]:
        """Per query, the (up to) ``n`` rows with the best approximate scores, ascending.

        ``allowed``: ascending rows that may be returned (``None``: all ``num_rows``). Rows no probed
        list holds score their floors and can still fill the ``n``, so a query gets
        ``min(n, allowed rows)``.
        """
        out = []
        for query in queries:
            total = self.scores(query, num_rows, nprobe)
            if allowed is not None:
                total = total[allowed]
            top = np.argpartition(-total, n - 1)[:n] if n < total.size else np.arange(total.size)
            out.append(np.sort(top if allowed is None else allowed[top]))
        return out
