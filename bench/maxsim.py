"""Exact MaxSim search on the CPU: ``indexes.MultiVectorIndex`` vs colpali-engine's ``score_multi_vector``.

    .venv/bin/python bench/maxsim.py            # 10,000 pages x 780 vectors x 128 dims, 100 queries x 20
    .venv/bin/python bench/maxsim.py --quick    # 1,000 pages (smoke run)
    .venv/bin/python bench/maxsim.py --pages 3000 --repeat 2

Data: random L2-normalised vectors, generated chunk by chunk straight into a float16
``.npy`` memmap on disk (pages back to back), and ``--queries`` queries of
``--query-tokens`` float32 vectors. Both sides score the very same values:

* **ours**: the pages are added to a ``MultiVectorIndex`` (saved every 1,000 pages, i.e.
  append-only segments) - that is the "build" row; a fresh process then loads it
  (memory-mapped) and runs one ``search(queries, k)`` over all queries;
* **colpali-engine**: a fresh process reads the same float16 pages into a list of torch
  tensors (float32 by default: colpali-engine's fastest CPU dtype; ``--baseline-dtype
  float16`` hands it the stored dtype as is) and runs
  ``BaseVisualRetrieverProcessor.score_multi_vector(queries, pages)`` (defaults:
  batch 128, device auto = CPU) followed by ``torch.topk``.

Each side runs in its own subprocess and reports its own memory by sampling
``/proc/self/status`` every 20 ms: peak RSS (``VmHWM``), and the peaks of anonymous
memory (``RssAnon``: heap, tensors) and file-backed mapped memory (``RssFile``: the
memory-mapped index, shared libraries). Pages of a memory-mapped file are page cache: they
are counted in our RSS when touched, but the kernel can drop them under pressure; the
table shows both so nothing is hidden. ``cpu s`` (user + system of the process) is given
next to wall-clock time because the machine may be shared. Top-10 ids must be identical.
Pooling: a ``pool_factor=3`` index (colpali-engine ``HierarchicalTokenPooler``) is built from
the first ``--pool-pages`` pages to report bytes per page on disk with pooling.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402


# ----------------------------------------------------------------- helpers
class MemorySampler:
    """Peaks of VmRSS / RssAnon / RssFile of this process, sampled every ``interval`` s."""

    FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak = dict.fromkeys(self.FIELDS, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in MemorySampler.FIELDS:
                    out[key] = int(rest.split()[0]) * 1024
        return out

    def _run(self) -> None:
        while not self._stop.is_set():
            for k, v in self.read().items():
                self.peak[k] = max(self.peak[k], v)
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for k, v in self.read().items():
            self.peak[k] = max(self.peak[k], v)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


# ------------------------------------------------------------- child roles
def role_build(work: Path, tokens: int, chunk_pages: int, codec: str = "float16") -> dict[str, Any]:
    from indexes import MultiVectorIndex

    pages = np.load(work / "pages.f16.npy", mmap_mode="r")
    n_pages = pages.shape[0] // tokens
    index_dir = work / "index"
    if index_dir.exists():
        shutil.rmtree(index_dir)
    t0, c0 = time.perf_counter(), cpu_seconds()
    index = MultiVectorIndex(pages.shape[1], device="cpu", codec=codec)
    for start in range(0, n_pages, chunk_pages):
        end = min(n_pages, start + chunk_pages)
        block = np.asarray(pages[start * tokens : end * tokens], dtype=np.float32).reshape(end - start, tokens, -1)
        index.add(block, np.arange(start, end))
        index.save(index_dir)
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    disk = sum(p.stat().st_size for p in index_dir.iterdir())
    return {
        "wall": wall,
        "cpu": cpu,
        "pages": n_pages,
        "bytes": disk,
        "segments": len(list(index_dir.glob("seg-*.vectors.npy"))),
    }


def role_pool(work: Path, tokens: int, n_pages: int, pool_factor: int) -> dict[str, Any]:
    import colpali_engine.compression.token_pooling  # noqa: F401 - imported before timing

    from indexes import MultiVectorIndex

    pages = np.load(work / "pages.f16.npy", mmap_mode="r")
    block = np.asarray(pages[: n_pages * tokens], dtype=np.float32).reshape(n_pages, tokens, -1)
    out = work / f"pooled-{pool_factor}"
    if out.exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    index = MultiVectorIndex(pages.shape[1], device="cpu", pool_factor=pool_factor)
    index.add(block, np.arange(n_pages))
    index.save(out)
    wall = time.perf_counter() - t0
    disk = sum(p.stat().st_size for p in out.iterdir())
    return {"wall": wall, "pages": n_pages, "bytes": disk, "vectors": index.num_vectors}


def role_ours(work: Path, k: int) -> dict[str, Any]:
    import torch

    from indexes import MultiVectorIndex

    base = MemorySampler.read()
    with MemorySampler() as mem:
        t_load = time.perf_counter()
        index = MultiVectorIndex.load(work / "index", device="cpu")
        t_load = time.perf_counter() - t_load
        queries = list(np.load(work / "queries.npy"))
        t0, c0 = time.perf_counter(), cpu_seconds()
        hits = index.search(queries, k)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    ids = np.array([[i for i, _ in h] for h in hits], np.int64)
    scores = np.array([[s for _, s in h] for h in hits], np.float32)
    np.save(work / "ours_ids.npy", ids)
    np.save(work / "ours_scores.npy", scores)
    return {"wall": wall, "cpu": cpu, "load": t_load, "mem": mem.peak, "base": base, "threads": torch.get_num_threads()}


def role_baseline(work: Path, k: int, tokens: int, dtype_name: str) -> dict[str, Any]:
    import torch
    from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

    dtype = getattr(torch, dtype_name)
    base = MemorySampler.read()
    with MemorySampler() as mem:
        t_load = time.perf_counter()
        pages = np.load(work / "pages.f16.npy", mmap_mode="r")
        n_pages = pages.shape[0] // tokens
        ps = [torch.from_numpy(np.array(pages[i * tokens : (i + 1) * tokens])).to(dtype) for i in range(n_pages)]
        del pages
        qs = [torch.from_numpy(q).to(dtype) for q in np.load(work / "queries.npy")]
        t_load = time.perf_counter() - t_load
        t0, c0 = time.perf_counter(), cpu_seconds()
        scores = BaseVisualRetrieverProcessor.score_multi_vector(qs, ps)
        top = torch.topk(scores, k, dim=1)
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    np.save(work / "base_ids.npy", top.indices.numpy().astype(np.int64))
    np.save(work / "base_scores.npy", top.values.numpy().astype(np.float32))
    return {"wall": wall, "cpu": cpu, "load": t_load, "mem": mem.peak, "base": base, "threads": torch.get_num_threads()}


def run_child(args: list[str]) -> dict[str, Any]:
    """Run this script as ``--role ...`` in a fresh process and parse its JSON result line."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"child {args[:2]} failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- parent
def generate(work: Path, pages: int, tokens: int, dim: int, queries: int, q_tokens: int, seed: int) -> float:
    """Random unit vectors into ``pages.f16.npy`` (float16 memmap, chunked) and ``queries.npy``."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    mm = np.lib.format.open_memmap(work / "pages.f16.npy", mode="w+", dtype=np.float16, shape=(pages * tokens, dim))
    step = 256 * tokens
    for a in range(0, pages * tokens, step):
        b = min(pages * tokens, a + step)
        x = rng.standard_normal((b - a, dim), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        mm[a:b] = x
    mm.flush()
    del mm
    q = rng.standard_normal((queries, q_tokens, dim), dtype=np.float32)
    q /= np.linalg.norm(q, axis=2, keepdims=True)
    np.save(work / "queries.npy", q)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pages", type=int, default=10_000)
    ap.add_argument("--tokens", type=int, default=780, help="vectors per page")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--query-tokens", type=int, default=20)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--pool-pages", type=int, default=50, help="pages pooled for the pooling row (0: skip)")
    ap.add_argument("--pool-factor", type=int, default=3)
    ap.add_argument("--baseline-dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    ap.add_argument("--repeat", type=int, default=1, help="search runs per side (alternating); best is kept")
    ap.add_argument(
        "--codec",
        choices=["float16", "int8"],
        default="float16",
        help="storage codec of our index (int8: top-k compared as overlap, not identity)",
    )
    ap.add_argument("--quick", action="store_true", help="1,000 pages, 20 pooled pages")
    ap.add_argument("--workdir", type=Path, default=None, help="where the data goes (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--role-arg", action="append", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.role:
        work = Path(args.role_arg[0])
        if args.role == "build":
            res = role_build(work, args.tokens, 1000, args.codec)
        elif args.role == "pool":
            res = role_pool(work, args.tokens, args.pool_pages, args.pool_factor)
        elif args.role == "ours":
            res = role_ours(work, args.k)
        else:
            res = role_baseline(work, args.k, args.tokens, args.baseline_dtype)
        print(json.dumps(res))
        return 0

    if args.quick:
        args.pages, args.pool_pages = min(args.pages, 1000), min(args.pool_pages, 20)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-maxsim-"))
    work.mkdir(parents=True, exist_ok=True)
    common = ["--tokens", str(args.tokens), "--k", str(args.k), "--codec", args.codec, "--role-arg", str(work)]
    load_start = os.getloadavg()
    t_start = time.perf_counter()
    try:
        gen = generate(work, args.pages, args.tokens, args.dim, args.queries, args.query_tokens, args.seed)
        print(f"generated {args.pages} pages x {args.tokens} x {args.dim} in {gen:.1f}s under {work}", file=sys.stderr)
        build = run_child(["--role", "build", *common])
        print(f"built index: {build['pages'] / build['wall']:.0f} pages/s", file=sys.stderr)
        ours_runs, base_runs = [], []
        for _ in range(max(1, args.repeat)):
            ours_runs.append(run_child(["--role", "ours", *common]))
            print(f"ours: {ours_runs[-1]['wall']:.1f}s", file=sys.stderr)
            base_runs.append(run_child(["--role", "baseline", "--baseline-dtype", args.baseline_dtype, *common]))
            print(f"colpali-engine: {base_runs[-1]['wall']:.1f}s", file=sys.stderr)
        pool = (
            run_child(
                [
                    "--role",
                    "pool",
                    "--pool-pages",
                    str(args.pool_pages),
                    "--pool-factor",
                    str(args.pool_factor),
                    *common,
                ]
            )
            if args.pool_pages > 0
            else None
        )

        ours_ids, base_ids = np.load(work / "ours_ids.npy"), np.load(work / "base_ids.npy")
        ours_sc, base_sc = np.load(work / "ours_scores.npy"), np.load(work / "base_scores.npy")
        same_top = bool(np.array_equal(ours_ids, base_ids))
        same_sets = int(sum(set(a) == set(b) for a, b in zip(ours_ids.tolist(), base_ids.tolist())))
        max_diff = float(np.abs(ours_sc - base_sc).max())
        overlap = float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(ours_ids.tolist(), base_ids.tolist())]))
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()

    ours = min(ours_runs, key=lambda r: r["wall"])
    base = min(base_runs, key=lambda r: r["wall"])
    nq = args.queries

    def fmt_mem(r: dict) -> str:
        return f"{gib(r['mem']['VmHWM'])} | {gib(r['mem']['RssAnon'])} | {gib(r['mem']['RssFile'])}"

    print(
        f"\n### Exact MaxSim, CPU: {args.pages:,} pages x {args.tokens} vectors x {args.dim} dims, "
        f"{nq} queries x {args.query_tokens} vectors, top-{args.k}\n"
    )
    print("| side | search wall s | queries/s | cpu s | peak RSS | peak anon | peak file-backed | load s |")
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| ours (`MultiVectorIndex.search`, {args.codec}) | {ours['wall']:.1f} | {nq / ours['wall']:.2f} | "
        f"{ours['cpu']:.1f} | "
        f"{fmt_mem(ours)} | {ours['load']:.2f} |"
    )
    print(
        f"| colpali-engine `score_multi_vector` ({args.baseline_dtype}) | {base['wall']:.1f} | "
        f"{nq / base['wall']:.2f} | {base['cpu']:.1f} | {fmt_mem(base)} | {base['load']:.1f} |"
    )
    print(
        f"| **ratio** | | **{base['wall'] / ours['wall']:.2f}x** faster | {base['cpu'] / ours['cpu']:.2f}x less | "
        f"{ours['mem']['VmHWM'] / base['mem']['VmHWM']:.2f}x | "
        f"{ours['mem']['RssAnon'] / base['mem']['RssAnon']:.2f}x | | |"
    )
    print()
    print(
        f"* top-{args.k} identical (ids and order) for all {nq} queries: **{same_top}** "
        f"({same_sets}/{nq} identical sets, top-{args.k} overlap {overlap:.3f}); "
        f"max |score difference| {max_diff:.2e}"
    )
    print(
        f"* RSS right after imports (before any data): ours {gib(ours['base']['VmRSS'])}, "
        f"colpali-engine {gib(base['base']['VmRSS'])}; torch threads: {ours['threads']} / {base['threads']}"
    )
    print(
        f"* build (add + save every 1,000 pages, fsync'd segments): "
        f"**{build['pages'] / build['wall']:.0f} pages/s** ({build['wall']:.1f} s, {build['segments']} segments)"
    )
    print(
        f"* bytes per page on disk: **{build['bytes'] / build['pages'] / 1024:.1f} KiB** unpooled "
        f"({args.tokens} vectors)",
        end="",
    )
    if pool:
        print(
            f"; **{pool['bytes'] / pool['pages'] / 1024:.1f} KiB** with pool_factor={args.pool_factor} "
            f"({pool['vectors'] / pool['pages']:.0f} vectors/page, measured on {pool['pages']} pages; "
            f"pooling runs at {pool['pages'] / pool['wall']:.1f} pages/s)"
        )
    else:
        print()
    print(
        f"* machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {load_start[0]:.1f} at start / {load_end[0]:.1f} at end (shared machine); "
        f"{date.today().isoformat()}; total bench time {time.perf_counter() - t_start:.0f} s"
    )
    return 0 if same_top or args.codec != "float16" else 1  # int8 scores differ within its quantisation error


if __name__ == "__main__":
    raise SystemExit(main())
