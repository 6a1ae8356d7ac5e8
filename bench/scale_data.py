"""Synthetic ColPali-like multi-vector pages and queries for ``bench/scale.py``, plus exact ground truth.

Every vector is 128-d (``dim``), unit-norm, float32 when generated and **stored as float16**
(the values every system is given, and the values the exact ground truth scores).

Structure of a page of ``v`` vectors (``v`` fixed per run: ~260 = pooled, ~750 = unpooled):

* **background** (margins, white space): a fraction ``1 - c`` of the rows, ``c`` drawn per page
  in [0.3, 0.7]. There are 24 background prototypes shared by the whole collection; each page
  uses 3 of them (its "layout") and every background row is a prototype plus small noise
  (cosine ~0.99 to it): many near-duplicate vectors per page and across pages.
* **content** rows (the first ``c * v`` rows of a page): ``normalize(0.55 * term + 0.65 * key +
  0.35 * noise)`` where ``term`` is one of 32 term vectors of one of the page's 2 **topics**
  (``max(20, pages // 200)`` topics for the collection, so a topic is shared by ~1% of the pages:
  hard negatives), and ``key`` one of 6 random directions that belong to the page (the page-specific
  component).
* **queries** (``query_tokens`` = 20 vectors): a target page is drawn; 3 of its content rows
  are anchors and 12 query vectors are anchors plus noise (cosine ~0.9); the other 8 are
  **generic tokens** (16 prototypes shared by all queries, leaning towards the background, like
  a query's special/padding tokens), plus small noise.

Generation is chunked (1,000 pages per chunk, each chunk from its own seeded generator, so
the data depend only on ``seed`` and the sizes) and written straight into a float16 ``.npy``
memory map (``pages * v`` rows, page after page), cached under
``<cache>/data/p<pages>-v<v>-s<seed>/`` with a ``meta.json``: a rerun with the same sizes
reuses it. The exact float32 MaxSim top-100 of the queries (``gt-q<n>.npz``) is cached next
to it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_PAGES = 1000
N_BACKGROUND, LAYOUT, N_TERMS, N_KEYS, N_GENERIC = 24, 3, 32, 6, 16
FORMAT = 1


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


def _noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Gaussian noise of expected norm ``scale`` per vector."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(scale / np.sqrt(shape[-1]))


class Generator:
    """The collection-wide parts (background, topics, generic tokens) for a seed and size."""

    def __init__(self, pages: int, vectors_per_page: int, dim: int = 128, seed: int = 0) -> None:
        self.pages, self.v, self.dim, self.seed = pages, vectors_per_page, dim, seed
        rng = np.random.default_rng([seed, 0])
        self.n_topics = max(20, pages // 200)
        self.background = _unit(rng.standard_normal((N_BACKGROUND, dim), dtype=np.float32))
        centroids = _unit(rng.standard_normal((self.n_topics, 1, dim), dtype=np.float32))
        self.terms = _unit(centroids + _noise(rng, (self.n_topics, N_TERMS, dim), 0.8))
        bg_mean = _unit(self.background.mean(0, keepdims=True))
        self.generic = _unit(
            0.6 * rng.standard_normal((N_GENERIC, dim), dtype=np.float32) / np.sqrt(dim) + 0.4 * bg_mean
        )

    def chunk(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pages ``[index * CHUNK_PAGES, ...)``: ``(n, v, dim)`` float32 and the content row counts."""
        rng = np.random.default_rng([self.seed, 1, index])
        start = index * CHUNK_PAGES
        n = min(CHUNK_PAGES, self.pages - start)
        v, d = self.v, self.dim
        n_content = np.maximum(1, (rng.uniform(0.3, 0.7, n) * v).astype(np.int64))
        layout = rng.integers(0, N_BACKGROUND, (n, LAYOUT))
        bg = self.background[layout[np.arange(n)[:, None], rng.integers(0, LAYOUT, (n, v))]]
        out = _unit(bg + _noise(rng, (n, v, d), 0.15))
        topics = rng.integers(0, self.n_topics, (n, 2))
        keys = _unit(rng.standard_normal((n, N_KEYS, d), dtype=np.float32))
        term = self.terms[topics[np.arange(n)[:, None], rng.integers(0, 2, (n, v))], rng.integers(0, N_TERMS, (n, v))]
        key = keys[np.arange(n)[:, None], rng.integers(0, N_KEYS, (n, v))]
        content = _unit(0.55 * term + 0.65 * key + _noise(rng, (n, v, d), 0.35))
        mask = np.arange(v)[None, :] < n_content[:, None]
        out[mask] = content[mask]
        return out, n_content

    def queries(
        self, vectors: np.ndarray, n_content: np.ndarray, n: int, tokens: int = 20
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(n, tokens, dim)`` float32 queries and their target pages, from the stored pages."""
        rng = np.random.default_rng([self.seed, 2])
        targets = rng.choice(self.pages, n, replace=False) if n <= self.pages else rng.integers(0, self.pages, n)
        n_near = min(tokens, round(tokens * 0.6))
        out = np.empty((n, tokens, self.dim), np.float32)
        for i, p in enumerate(targets):
            rows = np.asarray(vectors[p * self.v : p * self.v + int(n_content[p])], np.float32)
            anchors = rows[rng.choice(len(rows), min(3, len(rows)), replace=False)]
            near = anchors[rng.integers(0, len(anchors), n_near)]
            out[i, :n_near] = _unit(near + _noise(rng, near.shape, 0.45))
            gen = self.generic[rng.integers(0, N_GENERIC, tokens - n_near)]
            out[i, n_near:] = _unit(gen + _noise(rng, gen.shape, 0.2))
        return out, targets


def data_dir(cache: Path, pages: int, v: int, seed: int) -> Path:
    return cache / "data" / f"p{pages}-v{v}-s{seed}"


def ensure_data(cache: Path, pages: int, v: int, queries: int, seed: int = 0, dim: int = 128, log: Any = print) -> Path:
    """Generate (or reuse) ``vectors.f16.npy``, ``n_content.npy`` and ``queries-q<n>.npy``; return the directory."""
    d = data_dir(cache, pages, v, seed)
    meta = {"format": FORMAT, "pages": pages, "vectors_per_page": v, "dim": dim, "seed": seed}
    meta_path = d / "meta.json"
    if not (meta_path.exists() and json.loads(meta_path.read_text()) == meta):
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        gen = Generator(pages, v, dim, seed)
        tmp = d / "vectors.f16.npy.tmp"
        mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(pages * v, dim))
        counts = np.empty(pages, np.int64)
        for c in range((pages + CHUNK_PAGES - 1) // CHUNK_PAGES):
            block, nc = gen.chunk(c)
            a = c * CHUNK_PAGES
            mm[a * v : (a + len(block)) * v] = block.reshape(-1, dim)
            counts[a : a + len(block)] = nc
        mm.flush()
        del mm
        tmp.rename(d / "vectors.f16.npy")
        np.save(d / "n_content.npy", counts)
        for old in d.glob("queries-*.npy"):
            old.unlink()
        for old in d.glob("gt-*.npz"):
            old.unlink()
        meta_path.write_text(json.dumps(meta))
        log(f"generated {pages:,} pages x {v} x {dim} in {time.perf_counter() - t0:.1f}s -> {d}")
    qpath = d / f"queries-q{queries}.npy"
    if not qpath.exists():
        gen = Generator(pages, v, dim, seed)
        vec = np.load(d / "vectors.f16.npy", mmap_mode="r")
        q, targets = gen.queries(vec, np.load(d / "n_content.npy"), queries)
        np.save(d / f"targets-q{queries}.npy", targets)
        np.save(qpath, q)
    return d


def load_pages(d: Path, v: int) -> np.ndarray:
    """The stored pages as a read-only ``(pages, v, dim)`` float16 memory map."""
    vec = np.load(d / "vectors.f16.npy", mmap_mode="r")
    return vec.reshape(-1, v, vec.shape[1])


def ground_truth(
    d: Path, v: int, queries: int, k: int = 100, chunk_pages: int = 256, log: Any = print
) -> tuple[np.ndarray, np.ndarray]:
    """Exact float32 MaxSim top-``k`` ids and scores of the cached queries (torch, chunked; cached)."""
    path = d / f"gt-q{queries}-k{k}.npz"
    if path.exists():
        z = np.load(path)
        return z["ids"], z["scores"]
    import torch

    t0 = time.perf_counter()
    pages = load_pages(d, v)
    q = torch.from_numpy(np.load(d / f"queries-q{queries}.npy"))  # (Q, T, dim)
    nq, t, dim = q.shape
    qf = q.reshape(nq * t, dim)
    best_s = torch.full((nq, k), -torch.inf)
    best_i = torch.full((nq, k), -1, dtype=torch.int64)
    with torch.inference_mode():
        for a in range(0, len(pages), chunk_pages):
            blk = torch.from_numpy(np.asarray(pages[a : a + chunk_pages], np.float32))  # (n, v, dim)
            n = blk.shape[0]
            sim = qf @ blk.reshape(n * v, dim).T  # (Q*T, n*v)
            s = sim.view(nq, t, n, v).amax(dim=3).sum(dim=1)  # (Q, n)
            ids = torch.arange(a, a + n).expand(nq, n)
            cs, ci = torch.cat([best_s, s], 1), torch.cat([best_i, ids], 1)
            top = torch.topk(cs, min(k, cs.shape[1]), dim=1)
            best_s, best_i = top.values, torch.gather(ci, 1, top.indices)
    ids_np, sc_np = best_i.numpy(), best_s.numpy()
    np.savez(path, ids=ids_np, scores=sc_np)
    log(f"ground truth: {nq} queries, top-{k}, {time.perf_counter() - t0:.1f}s")
    return ids_np, sc_np
