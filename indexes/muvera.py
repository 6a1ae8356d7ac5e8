"""MUVERA fixed-dimensional encodings (FDE) of multi-vector pages and queries.

Dhulipala et al., "MUVERA: Multi-Vector Retrieval via Fixed Dimensional Encodings"
(arXiv 2405.19504). A page of ``n`` vectors and a query of ``m`` vectors each become one
vector of ``r_reps * 2**k_sim * d_proj`` floats whose inner product approximates their
MaxSim (Chamfer) similarity, so an ordinary single-vector index (FAISS) can pre-select
candidates that are then re-ranked by exact MaxSim.

For each of ``r_reps`` independent repetitions:

1. SimHash partitions the space: ``k_sim`` Gaussian hyperplanes give every vector a
   ``k_sim``-bit code, i.e. one of ``B = 2**k_sim`` buckets;
2. every vector is projected to ``d_proj`` dimensions by a random ``±1/sqrt(d_proj)``
   matrix (skipped when ``d_proj == dim``);
3. a **page** block holds, per bucket, the *mean* of its projected vectors in that bucket;
   a bucket no page vector falls in takes the projected vector whose code is closest in
   Hamming distance (ties: the earlier vector). A **query** block holds, per bucket, the
   *sum* of its projected vectors (empty buckets stay zero).

The blocks of all repetitions are concatenated. Everything is a deterministic function of
``seed``, so an encoder rebuilt from :meth:`Muvera.to_dict` gives bit-identical encodings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from indexes.errors import IndexInputError
from indexes.maxsim import as_query_list

#: Page vectors encoded per chunk (bounds the temporary memory of :meth:`Muvera.encode_documents`).
CHUNK_VECTORS = 16384
#: Elements of the (item-reps, buckets, codes) table built per step when filling empty buckets.
_FILL_ELEMENTS = 1 << 22


def _positive(value: Any, name: str, *, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise IndexInputError(f"{name} must be a positive integer, got {value!r}")
    if high is not None and value > high:
        raise IndexInputError(f"{name} must be at most {high}, got {value!r}")
    return int(value)


class Muvera:
    """Fixed-dimensional encoder for ``(n, dim)`` multi-vector pages and queries.

    ``k_sim``: SimHash bits per repetition (``2**k_sim`` buckets, at most 10).
    ``d_proj``: projected dimension per bucket (``<= dim``; ``dim`` means no projection).
    ``r_reps``: independent repetitions. ``seed``: seeds every random matrix.
    The encoding has :attr:`output_dim` ``= r_reps * 2**k_sim * d_proj`` float32 values.
    """

    def __init__(self, dim: int, *, k_sim: int = 4, d_proj: int = 16, r_reps: int = 16, seed: int = 42) -> None:
        self.dim = _positive(dim, "dim")
        self.k_sim = _positive(k_sim, "k_sim", high=10)
        self.d_proj = _positive(d_proj, "d_proj", high=self.dim)
        self.r_reps = _positive(r_reps, "r_reps")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise IndexInputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        rng = np.random.default_rng(self.seed)
        buckets = 1 << self.k_sim
        # (dim, r * k_sim): SimHash hyperplanes of every repetition side by side
        self._hash = torch.from_numpy(rng.standard_normal((self.dim, self.r_reps * self.k_sim)).astype(np.float32))
        if self.d_proj == self.dim:
            self._proj: torch.Tensor | None = None
        else:  # (dim, r * d_proj): random +-1 projections, scaled to keep inner products unbiased
            signs = rng.integers(0, 2, size=(self.dim, self.r_reps * self.d_proj)).astype(np.float32) * 2 - 1
            self._proj = torch.from_numpy(signs / np.sqrt(self.d_proj, dtype=np.float32))
        self._bit_weights = torch.tensor([1 << j for j in range(self.k_sim)], dtype=torch.int64)
        # (B, B) Hamming distance between bucket codes
        codes = np.arange(buckets)
        xor = codes[:, None] ^ codes[None, :]
        self._hamming = torch.from_numpy(np.array([[bin(v).count("1") for v in row] for row in xor], np.int64))

    # ------------------------------------------------------------------ info
    @property
    def buckets(self) -> int:
        return 1 << self.k_sim

    @property
    def output_dim(self) -> int:
        return self.r_reps * self.buckets * self.d_proj

    def to_dict(self) -> dict[str, int]:
        """Parameters that rebuild this exact encoder (for a JSON manifest)."""
        return {"dim": self.dim, "k_sim": self.k_sim, "d_proj": self.d_proj, "r_reps": self.r_reps, "seed": self.seed}

    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> Muvera:
        try:
            return cls(
                params["dim"],
                k_sim=params["k_sim"],
                d_proj=params["d_proj"],
                r_reps=params["r_reps"],
                seed=params["seed"],
            )
        except KeyError as exc:
            raise IndexInputError(f"MUVERA parameters lack {exc}") from None

    def __repr__(self) -> str:
        return (
            f"Muvera(dim={self.dim}, k_sim={self.k_sim}, d_proj={self.d_proj}, r_reps={self.r_reps}, "
            f"seed={self.seed}, output_dim={self.output_dim})"
        )

    # -------------------------------------------------------------- encoding
    def encode_documents(self, pages: Sequence[Any]) -> np.ndarray:
        """``(len(pages), output_dim)`` float32 page encodings (bucket means, empty buckets filled)."""
        return self._encode(as_query_list(pages, self.dim) if len(pages) else [], document=True)

    def encode_queries(self, queries: Sequence[Any]) -> np.ndarray:
        """``(len(queries), output_dim)`` float32 query encodings (bucket sums)."""
        return self._encode(as_query_list(queries, self.dim) if len(queries) else [], document=False)

    def _encode(self, items: list[np.ndarray], *, document: bool) -> np.ndarray:
        out = np.empty((len(items), self.output_dim), dtype=np.float32)
        start = 0
        with torch.inference_mode():
            while start < len(items):
                end, total = start, 0
                while end < len(items) and (end == start or total + items[end].shape[0] <= CHUNK_VECTORS):
                    total += items[end].shape[0]
                    end += 1
                out[start:end] = self._encode_chunk(items[start:end], document=document)
                start = end
        return out

    def _encode_chunk(self, items: list[np.ndarray], *, document: bool) -> np.ndarray:
        n_items, r, b, dp = len(items), self.r_reps, self.buckets, self.d_proj
        lengths = torch.tensor([it.shape[0] for it in items], dtype=torch.int64)
        x = torch.from_numpy(np.concatenate(items, axis=0))  # (N, dim)
        n = x.shape[0]
        item = torch.repeat_interleave(torch.arange(n_items), lengths)  # (N,)
        bits = (x @ self._hash).view(n, r, self.k_sim) > 0  # (N, r, k)
        code = (bits.to(torch.int64) * self._bit_weights).sum(dim=2)  # (N, r) bucket of each vector
        # (N, r, dp); with d_proj == dim every repetition sees the vectors themselves
        proj = x[:, None, :].expand(n, r, dp) if self._proj is None else (x @ self._proj).view(n, r, dp)
        # one slot per (item, repetition, bucket)
        slot = (item[:, None] * r + torch.arange(r)[None, :]) * b + code  # (N, r)
        sums = torch.zeros((n_items * r * b, dp), dtype=torch.float32)
        sums.index_add_(0, slot.reshape(-1), proj.reshape(n * r, dp))
        if not document:
            return sums.view(n_items, r * b * dp).numpy()
        counts = torch.bincount(slot.reshape(-1), minlength=n_items * r * b).to(torch.float32)
        filled = counts > 0
        sums[filled] /= counts[filled, None]
        if not bool(filled.all()):
            self._fill_empty(sums, filled, slot, proj)
        return sums.view(n_items, r * b * dp).numpy()

    def _fill_empty(
        self,
        sums: torch.Tensor,
        filled: torch.Tensor,
        slot: torch.Tensor,
        proj: torch.Tensor,
    ) -> None:
        """Give each empty (item, rep, bucket) slot the projected vector nearest in Hamming distance.

        Nearest means: the occupied code nearest to the bucket in Hamming distance, then the
        earliest vector with that code, so only the earliest vector per (item, rep, code) and a
        ``(B, B)`` distance table per (item, rep) are needed.
        """
        n, r = slot.shape  # slot: (N, r) (item, rep, bucket) slot of each vector
        b = self.buckets
        row = torch.arange(n)
        first = torch.full((sums.shape[0],), n, dtype=torch.int64)  # n: no vector has this code
        first.scatter_reduce_(0, slot.reshape(-1), row[:, None].expand(n, r).reshape(-1), reduce="amin")
        first = first.view(-1, b)  # (items * r, B): earliest row of each code
        best = torch.empty(first.shape, dtype=torch.int64)
        never = torch.iinfo(torch.int64).max
        step = max(1, _FILL_ELEMENTS // (b * b))
        for a in range(0, first.shape[0], step):
            blk = first[a : a + step, None, :]  # (s, 1, B) over codes
            key = torch.where(blk < n, self._hamming[None] * n + blk, never)  # (s, B buckets, B codes)
            best[a : a + step] = key.amin(dim=2)
        empty = torch.nonzero(~filled).squeeze(1)
        src_row = best.view(-1)[empty] % n
        rep = (empty // b) % r
        sums[empty] = proj[src_row, rep]
