"""A running top-k over score blocks, so a scan never holds all scores at once."""

from __future__ import annotations

import numpy as np


class RunningTopK:
    """Keep the ``k`` best (score, row) pairs of each of ``n_queries`` queries.

    Push ``(n_queries, b)`` score blocks with their ``(b,)`` rows; memory is O(n_queries * k)
    whatever the number of blocks. Ties are broken by the lower row.
    """

    def __init__(self, n_queries: int, k: int) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.scores = np.empty((n_queries, 0), dtype=np.float32)
        self.rows = np.empty((n_queries, 0), dtype=np.int64)

    def push(self, scores: np.ndarray, rows: np.ndarray) -> None:
        """Merge a ``(n_queries, b)`` float32 block whose columns are ``rows`` (b,) int64."""
        n_q = self.scores.shape[0]
        cand_s = np.concatenate([self.scores, scores.astype(np.float32, copy=False)], axis=1)
        cand_r = np.concatenate([self.rows, np.broadcast_to(np.asarray(rows, np.int64), (n_q, len(rows)))], axis=1)
        if cand_s.shape[1] > self.k:
            idx = np.argpartition(-cand_s, self.k - 1, axis=1)[:, : self.k]
            cand_s = np.take_along_axis(cand_s, idx, axis=1)
            cand_r = np.take_along_axis(cand_r, idx, axis=1)
        self.scores, self.rows = cand_s, cand_r

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(n_queries, min(k, pushed))``, best first (ties: lower row first)."""
        order = np.lexsort((self.rows, -self.scores), axis=1)
        return np.take_along_axis(self.scores, order, axis=1), np.take_along_axis(self.rows, order, axis=1)
