"""Candidate generators for multi-vector search, compared offline: which share of the exact top 10 do they keep?

    .venv/bin/python bench/scale_candidates.py --pages 10000                       # all generators
    .venv/bin/python bench/scale_candidates.py --pages 100000 --generators muvera,centroids

``bench/scale.py`` measures whole indexes (candidates + MaxSim re-ranking). This script
isolates the first stage on the same cached synthetic data and ground truth
(``bench/scale_data.py``): for each generator and each ``n`` it reports the mean share of a
query's exact top 10 (float32 MaxSim) found among the generator's ``n`` best pages, the
time per query of that stage, and its bytes per page. A candidate set that misses a page
cannot be repaired by re-ranking, so this bounds the recall of any index built on the
generator. Generators:

* ``muvera``: MUVERA encodings (:mod:`indexes.muvera`, ``--fde`` k_sim/d_proj/r_reps), scored
  exactly in float32 against every page (the baseline: what the ``flat`` index computes);
* ``muvera-pq``: the same encodings as FAISS ``IndexIVFPQ`` codes with one list
  (what ``fde_index="ivfpq"`` stores; ``--pq-m`` bytes);
* ``muvera-hnsw``: the float32 encodings in FAISS ``HNSW32,Flat`` (efSearch = max n);
* ``centroids``: PLAID-style centroid interaction: spherical k-means (``--centroids``) on the
  vectors of 2,000 sampled pages, every vector replaced by its nearest centroid, a page scored
  ``sum_i max_{c in page} <q_i, c>`` over its distinct centroids (numpy, brute force over all
  pages: the time shows the cost without an inverted index).

Prints one markdown table; the load average is printed with it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scale_data  # noqa: E402
from scale import log  # noqa: E402

#: A generator: ``(pages, queries, ns) -> (rows best first per query, seconds per query, bytes per page)``.
Generator = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, float, float]]
BLOCK = 1000


_ENCODED: dict[tuple[int, int, int], tuple[np.ndarray, Any]] = {}


def muvera_encodings(pages: np.ndarray, fde: tuple[int, int, int]) -> tuple[np.ndarray, Any]:
    """float32 ``(P, D)`` page encodings (in blocks of the float16 memmap) and the encoder (computed once)."""
    from indexes.muvera import Muvera

    if fde in _ENCODED:
        return _ENCODED[fde]

    muvera = Muvera(pages.shape[2], k_sim=fde[0], d_proj=fde[1], r_reps=fde[2], seed=42)
    out = np.empty((len(pages), muvera.output_dim), np.float32)
    for a in range(0, len(pages), BLOCK):
        out[a : a + BLOCK] = muvera.encode_documents(list(np.asarray(pages[a : a + BLOCK], np.float32)))
    _ENCODED[fde] = (out, muvera)
    return out, muvera


def run_muvera(kind: str, args: argparse.Namespace) -> Generator:
    def generate(pages: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
        from indexes.single import faiss  # untyped alias: faiss's stubs miss much of its API

        fde, muvera = muvera_encodings(pages, args.fde)
        q = muvera.encode_queries(list(queries))
        dim = fde.shape[1]
        if kind == "muvera":
            t = time.perf_counter()
            rows = np.argsort(-(q @ fde.T), axis=1)[:, :n]
            return rows, (time.perf_counter() - t) / len(q), 2.0 * dim
        if kind == "muvera-pq":
            pq_m = args.pq_m or dim // 32
            index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, 1, pq_m, 8, faiss.METRIC_INNER_PRODUCT)
            index.pq.cp.min_points_per_centroid = 1
            index.train(fde[: min(len(fde), 5000)])
            index.add(fde)
            size = float(pq_m + 1)
        else:
            index = faiss.index_factory(dim, "HNSW32,Flat", faiss.METRIC_INNER_PRODUCT)
            index.add(fde)
            index.hnsw.efSearch = n
            size = 4.0 * dim + 2 * 32 * 4
        t = time.perf_counter()
        _, rows = index.search(q, n)
        return rows, (time.perf_counter() - t) / len(q), size

    return generate


def run_centroids(args: argparse.Namespace) -> Generator:
    def generate(pages: np.ndarray, queries: np.ndarray, n: int) -> tuple[np.ndarray, float, float]:
        from indexes.single import faiss  # untyped alias: faiss's stubs miss much of its API

        n_pages, _, dim = pages.shape
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(n_pages, min(n_pages, 2000), replace=False))
        x = np.concatenate([np.asarray(pages[i], np.float32) for i in sample])
        km = faiss.Kmeans(dim, args.centroids, niter=15, seed=1, spherical=True, max_points_per_centroid=100)
        km.train(x)
        index = faiss.IndexFlatIP(dim)
        index.add(km.centroids)
        distinct: list[np.ndarray] = []
        for a in range(0, n_pages, BLOCK):
            block = np.asarray(pages[a : a + BLOCK], np.float32)
            _, nearest = index.search(block.reshape(-1, dim), 1)
            distinct.extend(np.unique(c) for c in nearest[:, 0].reshape(len(block), -1))
        lengths = np.array([len(c) for c in distinct])
        flat = np.concatenate(distinct)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        t = time.perf_counter()
        rows = np.empty((len(queries), n), np.int64)
        for qi, query in enumerate(queries):
            sims = query @ km.centroids.T  # (m, C)
            per_page = np.maximum.reduceat(sims[:, flat], starts, axis=1)  # (m, P): best centroid per token
            rows[qi] = np.argsort(-per_page.sum(axis=0))[:n]
        size = 2.0 * float(lengths.mean())  # distinct uint16 centroid ids per page
        return rows, (time.perf_counter() - t) / len(queries), size

    return generate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pages", type=int, default=10_000)
    ap.add_argument("--vectors-per-page", type=int, default=260)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--n", default="100,200,500,1000,2000,4000", help="candidate counts")
    ap.add_argument("--generators", default="muvera,muvera-pq,muvera-hnsw,centroids")
    ap.add_argument("--fde", default="5/16/20", help="MUVERA k_sim/d_proj/r_reps")
    ap.add_argument("--pq-m", type=int, default=0, help="PQ bytes per page (default: encoding size / 32)")
    ap.add_argument("--centroids", type=int, default=4096)
    ap.add_argument("--cache", type=Path, default=Path("/work/bench-cache"))
    args = ap.parse_args()
    args.fde = tuple(int(x) for x in args.fde.split("/"))
    ns = sorted(int(x) for x in args.n.split(","))
    v = args.vectors_per_page
    data = scale_data.ensure_data(args.cache, args.pages, v, args.queries, log=log)
    gt, _ = scale_data.ground_truth(data, v, args.queries, 100, log=log)
    pages = scale_data.load_pages(data, v)
    queries = np.load(data / f"queries-q{args.queries}.npy")
    n_max = min(ns[-1], args.pages)
    makers = {
        "muvera": lambda: run_muvera("muvera", args),
        "muvera-pq": lambda: run_muvera("muvera-pq", args),
        "muvera-hnsw": lambda: run_muvera("muvera-hnsw", args),
        "centroids": lambda: run_centroids(args),
    }
    rows_out = []
    for name in args.generators.split(","):
        if name not in makers:
            ap.error(f"unknown generator {name!r}; choose from {', '.join(makers)}")
        log(f"{name}: building and searching")
        t0 = time.perf_counter()
        found, per_query, size = makers[name]()(pages, queries, n_max)
        shares = [
            float(np.mean([len(set(r[:n].tolist()) & set(g[:10].tolist())) / 10 for r, g in zip(found, gt)]))
            for n in ns
            if n <= n_max
        ]
        rows_out.append((name, shares, per_query, size, time.perf_counter() - t0, os.getloadavg()[0]))
    ks, dp, rr = args.fde
    print(
        f"\n### Candidate generators: {args.pages:,} pages x {v} vectors, {args.queries} queries; share of the exact "
        f"top 10 among n candidates (MUVERA {ks}/{dp}/{rr}, {args.centroids} centroids)\n"
    )
    shown = [n for n in ns if n <= n_max]
    print("| generator | " + " | ".join(f"n={n}" for n in shown) + " | ms/query | bytes/page | build+search s | load |")
    print("|---|" + "---|" * (len(shown) + 4))
    for name, shares, per_query, size, total, load in rows_out:
        cells = " | ".join(f"{s:.3f}" for s in shares)
        print(f"| {name} | {cells} | {per_query * 1000:.1f} | {size:.0f} | {total:.0f} | {load:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
