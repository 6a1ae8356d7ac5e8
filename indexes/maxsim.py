"""Exact late-interaction (MaxSim) scoring, block by block with a running top-k.

``score(q, p) = sum_i max_j <q_i, p_j>`` for a query of vectors ``q_i`` and a page of
vectors ``p_j`` (ColBERT / ColPali). The scan never materialises a
queries x pages x query-tokens x page-tokens tensor: pages are taken in blocks of about
``block_size`` page vectors, and for each block

1. the block's float16 page vectors are gathered into one contiguous buffer and converted
   to float32 once (on the GPU when scoring there: fp16 over the bus, fp32 maths);
2. all query vectors of a query chunk, ``(Q, d)``, meet the block, ``(T, d)``, in one GEMM:
   ``S = block @ queries.T`` of shape ``(T, Q)``, float32 accumulation;
3. a segment-max over each page's row range of ``S`` gives ``(pages, Q)``, and a
   segment-sum over each query's columns gives the ``(queries, pages)`` MaxSim scores;
4. the scores are merged into a running top-k (:class:`~indexes.topk.RunningTopK`).

Memory is bounded by the block and query-chunk sizes whatever the collection size. On the
CPU the blocks are scored by one worker per torch thread, each running single-threaded
GEMMs (this beats one multi-threaded GEMM on small blocks); torch's thread count is set to 1
for the duration of the scan and restored afterwards.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch

from indexes.errors import IndexInputError
from indexes.segments import to_float_array
from indexes.topk import RunningTopK

logger = logging.getLogger(__name__)

#: Default number of page vectors per scoring block (a page is never split).
DEFAULT_BLOCK_SIZE = 4096
#: Default maximum number of query vectors scored against a block at once.
DEFAULT_QUERY_CHUNK = 2048

_threads_lock = threading.Lock()

#: ``gather(rows) -> (vectors, lengths)``: the float16 ``(sum(lengths), d)`` vectors of the
#: pages ``rows`` (in that order) and their ``(len(rows),)`` int64 vector counts.
Gather = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class QueryChunk:
    """Queries ``first .. first + n - 1`` concatenated: ``vectors_t`` is ``(d, Q)`` float32."""

    first: int
    vectors_t: torch.Tensor
    lengths: np.ndarray  # (n,) int64 vectors per query
    token_query: torch.Tensor  # (Q,) int64: which query (0..n-1) each column belongs to

    @property
    def n(self) -> int:
        return int(self.lengths.shape[0])


def as_query_list(queries: object, dim: int) -> list[np.ndarray]:
    """Validate multi-vector queries: a sequence of ``(n_i, dim)`` arrays/tensors, or a 3-D array.

    Returns float32 C-contiguous arrays. Raises :class:`IndexInputError` with the offending
    query's position for bad shapes, dims or non-finite values.
    """
    if isinstance(queries, np.ndarray | torch.Tensor) and queries.ndim == 2:
        raise IndexInputError(
            "queries must be a sequence of (n_tokens, dim) arrays (or a 3-D array); "
            "wrap a single query in a list: [query]"
        )
    out = []
    for i, q in enumerate(cast(Iterable[Any], queries)):
        arr = to_float_array(q, np.float32)
        if arr.ndim != 2 or arr.shape[1] != dim:
            raise IndexInputError(f"query {i} must have shape (n_tokens, {dim}), got {tuple(arr.shape)}")
        if arr.shape[0] == 0:
            raise IndexInputError(f"query {i} has no vectors")
        if not np.isfinite(arr).all():
            raise IndexInputError(f"query {i} contains NaN or infinite values")
        out.append(np.ascontiguousarray(arr))
    return out


def make_query_chunks(
    queries: Sequence[np.ndarray], device: torch.device, max_vectors: int = DEFAULT_QUERY_CHUNK
) -> list[QueryChunk]:
    """Group whole queries into chunks of at most ``max_vectors`` vectors (at least one query each)."""
    chunks: list[QueryChunk] = []
    start = 0
    while start < len(queries):
        end, total = start, 0
        while end < len(queries) and (end == start or total + queries[end].shape[0] <= max_vectors):
            total += queries[end].shape[0]
            end += 1
        group = queries[start:end]
        lengths = np.array([q.shape[0] for q in group], dtype=np.int64)
        vecs = torch.from_numpy(np.concatenate(group, axis=0)).to(device)
        token_query = torch.repeat_interleave(torch.arange(len(group)), torch.from_numpy(lengths)).to(device)
        chunks.append(QueryChunk(first=start, vectors_t=vecs.T.contiguous(), lengths=lengths, token_query=token_query))
        start = end
    return chunks


def segment_max(sim: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
    """Max of ``sim`` ``(T, Q)`` over consecutive row segments of ``lengths`` -> ``(len(lengths), Q)``.

    Every length must be >= 1. Equal lengths take one reshape; otherwise the CPU loops over
    segments (each a contiguous reduction) and other devices scatter into a padded tensor.
    """
    n = int(lengths.shape[0])
    q = sim.shape[1]
    if n == 0:
        return sim.new_empty((0, q))
    first = int(lengths[0])
    if bool((lengths == first).all()):
        return sim.view(n, first, q).amax(dim=1)
    if sim.device.type == "cpu":
        out = sim.new_empty((n, q))
        start = 0
        for i, length in enumerate(lengths.tolist()):
            torch.amax(sim[start : start + length], dim=0, out=out[i])
            start += length
        return out
    return _segment_max_padded(sim, lengths)


def _segment_max_padded(sim: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
    """Device-friendly segment max: scatter rows into ``(n, max_len, Q)`` padded with -inf."""
    n = int(lengths.shape[0])
    max_len = int(lengths.max())
    lengths_t = torch.from_numpy(lengths).to(sim.device)
    seg = torch.repeat_interleave(torch.arange(n, device=sim.device), lengths_t)
    starts = torch.cumsum(lengths_t, 0) - lengths_t
    pos = torch.arange(sim.shape[0], device=sim.device) - starts[seg]
    padded = sim.new_full((n * max_len, sim.shape[1]), float("-inf"))
    padded[seg * max_len + pos] = sim
    return padded.view(n, max_len, sim.shape[1]).amax(dim=1)


class Workspace:
    """Reusable scratch memory of one scoring thread (avoids page-faulting a fresh GEMM output per block)."""

    def __init__(self) -> None:
        self._buf: torch.Tensor | None = None

    def matrix(self, rows: int, cols: int, like: torch.Tensor) -> torch.Tensor:
        """A contiguous ``(rows, cols)`` float32 tensor on ``like``'s device (contents undefined)."""
        need = rows * cols
        if self._buf is None or self._buf.numel() < need or self._buf.device != like.device:
            self._buf = torch.empty(need, dtype=torch.float32, device=like.device)
        return self._buf[:need].view(rows, cols)


_workspaces = threading.local()


def _workspace() -> Workspace:
    ws = getattr(_workspaces, "ws", None)
    if ws is None:
        ws = _workspaces.ws = Workspace()
    return ws


def score_block(
    block: torch.Tensor, lengths: np.ndarray, chunk: QueryChunk, workspace: Workspace | None = None
) -> torch.Tensor:
    """Exact MaxSim of one query chunk against one block of pages.

    ``block``: ``(T, d)`` float32 page vectors, pages back to back with ``lengths`` (sum T).
    ``workspace``: scratch memory for the ``(T, Q)`` similarity matrix (default: a fresh one).
    Returns ``(chunk.n, len(lengths))`` float32 scores.
    """
    if workspace is None:
        sim = torch.mm(block, chunk.vectors_t)  # (T, Q)
    else:
        sim = torch.mm(block, chunk.vectors_t, out=workspace.matrix(block.shape[0], chunk.vectors_t.shape[1], block))
    per_page = segment_max(sim, lengths)  # (pages, Q)
    q_lengths = chunk.lengths
    if bool((q_lengths == q_lengths[0]).all()):
        scores = per_page.view(per_page.shape[0], chunk.n, int(q_lengths[0])).sum(dim=2)
    else:
        scores = per_page.new_zeros((per_page.shape[0], chunk.n))
        scores.index_add_(1, chunk.token_query, per_page)
    return scores.T


def plan_blocks(lengths: np.ndarray, block_size: int) -> list[tuple[int, int]]:
    """Split pages with ``lengths`` into ``[start, end)`` runs of about ``block_size`` vectors."""
    blocks: list[tuple[int, int]] = []
    n = int(lengths.shape[0])
    if n == 0:
        return blocks
    ends = np.cumsum(lengths)
    start = 0
    base = 0
    while start < n:
        end = int(np.searchsorted(ends, base + block_size, side="right"))
        end = max(end, start + 1)
        blocks.append((start, end))
        base = int(ends[end - 1])
        start = end
    return blocks


_single_users = 0
_saved_threads = 1


@contextmanager
def single_threaded_torch() -> Iterator[int]:
    """Yield the caller's torch thread count while torch runs single-threaded (restored after).

    Many small ops (per page or per block) are much faster single-threaded, especially on a
    busy machine where OpenMP barriers stall; callers parallelise over blocks instead.
    Nested and concurrent uses are reference-counted: the last one out restores the count.
    """
    global _single_users, _saved_threads
    with _threads_lock:
        if _single_users == 0:
            _saved_threads = torch.get_num_threads()
            if _saved_threads > 1:
                torch.set_num_threads(1)
        _single_users += 1
        threads = _saved_threads
    try:
        yield threads
    finally:
        with _threads_lock:
            _single_users -= 1
            if _single_users == 0 and _saved_threads > 1:
                torch.set_num_threads(_saved_threads)


def maxsim_topk(
    queries: Sequence[np.ndarray],
    rows: np.ndarray,
    lengths: np.ndarray,
    gather: Gather,
    k: int,
    *,
    device: torch.device,
    block_size: int = DEFAULT_BLOCK_SIZE,
    query_chunk: int = DEFAULT_QUERY_CHUNK,
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim top-``k`` of ``queries`` over the pages ``rows``.

    ``queries``: float32 ``(n_i, d)`` arrays. ``rows``: ``(P,)`` page rows to score, with
    ``lengths`` ``(P,)`` their vector counts (>= 1). ``gather`` fetches float16 page vectors.
    Returns ``(scores, rows)``, each ``(n_queries, min(k, P))``, best first.
    """
    topk = RunningTopK(len(queries), k)
    if rows.size == 0 or not queries:
        return topk.result()
    chunks = make_query_chunks(queries, device, query_chunk)
    blocks = plan_blocks(lengths, block_size)

    def run(block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        b_rows = rows[block[0] : block[1]]
        vecs16, b_lengths = gather(b_rows)
        if device.type == "cpu":
            vecs = torch.from_numpy(vecs16).to(torch.float32)
        else:
            vecs = torch.from_numpy(vecs16).pin_memory().to(device, non_blocking=True).to(torch.float32)
        ws = _workspace()
        parts = [score_block(vecs, b_lengths, ch, ws) for ch in chunks]
        scores = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        return scores.cpu().numpy(), b_rows

    if device.type != "cpu":
        with torch.inference_mode():
            for block in blocks:
                topk.push(*run(block))
        return topk.result()

    with single_threaded_torch() as threads:
        n_workers = max(1, min(workers or threads, len(blocks)))
        if n_workers == 1:
            for block in blocks:
                topk.push(*run(block))
            return topk.result()
        with ThreadPoolExecutor(n_workers, thread_name_prefix="maxsim") as pool:
            pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()
            for block in blocks:  # at most 2 blocks in flight per worker: bounded memory
                if len(pending) >= 2 * n_workers:
                    topk.push(*pending.popleft().result())
                pending.append(pool.submit(run, block))
            while pending:
                topk.push(*pending.popleft().result())
    return topk.result()


def maxsim_scores(queries: Sequence[np.ndarray], pages: Sequence[np.ndarray]) -> np.ndarray:
    """Full ``(n_queries, n_pages)`` exact MaxSim matrix for small in-memory sets (float32, CPU)."""
    if not pages or not queries:
        return np.zeros((len(queries), len(pages)), np.float32)
    dim = int(np.asarray(pages[0]).shape[1])
    qs = as_query_list(queries, dim)
    ps = [np.ascontiguousarray(to_float_array(p, np.float32)) for p in pages]
    lengths = np.array([p.shape[0] for p in ps], np.int64)
    if (lengths < 1).any():
        raise IndexInputError("every page needs at least one vector")
    block = torch.from_numpy(np.concatenate(ps, axis=0))
    out = [score_block(block, lengths, ch) for ch in make_query_chunks(qs, torch.device("cpu"))]
    return torch.cat(out, dim=0).numpy()
