"""Multi-vector retrieval at scale: exact and approximate MaxSim, ours against colpali-engine, Qdrant Edge, fast-plaid.

    .venv/bin/python bench/scale.py --quick                          # 2,000 pages, 30 queries (smoke run)
    nice -n 5 .venv/bin/python bench/scale.py --pages 10000          # 10k pages x 260 vectors (pooled)
    .venv/bin/python bench/scale.py --pages 100000 --vectors-per-page 260 --systems ours-exact,ours-muvera
    .venv/bin/python bench/scale.py --pages 10000 --reuse            # reprint the table from cached results
    .venv/bin/python bench/scale.py --data /work/bench-cache/data/real-colqwen2-tiny-p2000 --queries 50
                                                       # a prepared corpus of real pages (bench/scale_real.py)

Data (``bench/scale_data.py``; cached under ``--cache``, default ``/work/bench-cache``):
synthetic ColPali-like pages of ``--vectors-per-page`` 128-d unit vectors (~260 = pooled with
``pool_factor=3``, ~750 = unpooled), stored float16 in a memory-mapped ``.npy``: near-duplicate
background rows (margins, white space) shared across pages, topic terms shared by ~1% of the
pages, a page-specific component; queries of 20 vectors, 12 near 3 content rows of a target page
and 8 generic tokens. The ground truth is the exact float32 MaxSim top-100 over the stored float16
values (torch, chunked), cached too.

Systems (every one is built in a fresh process, then searched in another fresh process, so the
peak RSS (``VmHWM``) of each is its own; all get the same float16-stored values):

* ``ours-exact``: ``indexes.MultiVectorIndex(128)``, float16, exhaustive MaxSim [baseline].
* ``ours-muvera``: ``MultiVectorIndex(128, candidates="muvera", codec=..., k_sim, d_proj, r_reps)``;
  a few FDE settings and codecs, each searched with a sweep of ``n_candidates``.
* ``ours-centroids``: ``MultiVectorIndex(128, candidates="centroids", codec=..., n_centroids)``:
  PLAID-style centroid interaction over inverted lists (``--centroid-nprobe`` swept), re-ranked
  by MaxSim; compacted after the bulk load like IVF-PQ.
* ``colpali``: colpali-engine ``BaseVisualRetrieverProcessor.score_multi_vector`` over a list of
  float32 page tensors + ``torch.topk`` (exhaustive; on ``--baseline-queries`` queries only).
* ``qdrant-sq`` / ``qdrant-bq`` / ``qdrant-pooled``: Qdrant Edge (``qdrant-edge-py``, Qdrant's
  Rust shard engine in-process), float16 multivectors with MaxSim and no HNSW (``m=0``, Qdrant's
  own recipe for multivectors): int8 scalar quantization + rescoring; 1-bit binary quantization
  (8-bit asymmetric query) + rescoring; and a mean-pooled single-vector HNSW prefetch then
  MaxSim rescoring on the float16 multivectors. Oversampling / prefetch limits are swept.
* ``fastplaid``: fast-plaid on the CPU (nbits 2 and 4). It pins its own torch, so it runs in a
  separate venv (``<cache>/fastplaid-venv``, created with ``uv venv`` + ``uv pip install
  fast-plaid`` on first use) through ``bench/scale_fastplaid_worker.py``.

Per row: recall@10 and recall@100 against the exact top-100 (|system top-k ∩ exact top-k| / k),
p50/p95 latency of single-query searches (first ``--latency-queries`` queries, after one warm-up
query), queries/s of one batch call over all queries, bytes per page on disk split into
candidate index / vectors used for scoring or rescoring / other, build pages/s (from the
float16 memmap, including save/flush/optimise), and the peak RSS of the build and search
processes (memory-mapped index files count when touched; they are page cache). The 1-minute
load average is printed with every row: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scale_data  # noqa: E402

K = 100
BUILD_CHUNK = 1000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def vm_hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def dir_split(root: Path, classify: Any) -> dict[str, int]:
    """Bytes on disk (allocated blocks) of the files under ``root``, summed per class."""
    out = {"cand": 0, "vectors": 0, "other": 0}
    for p in root.rglob("*"):
        if p.is_file():
            out[classify(p.relative_to(root).as_posix())] += p.stat().st_blocks * 512
    return out


# --------------------------------------------------------------- systems
class Ours:
    """``indexes.MultiVectorIndex``: exhaustive (``candidates=None``) or MUVERA candidates."""

    @staticmethod
    def build(spec: dict[str, Any], pages: np.ndarray, out: Path) -> None:
        from indexes import MultiVectorIndex

        index = MultiVectorIndex(128, device="cpu", **spec.get("params", {}))
        for a in range(0, len(pages), BUILD_CHUNK):
            block = np.asarray(pages[a : a + BUILD_CHUNK], np.float32)
            index.add(list(block), np.arange(a, a + len(block)))
            index.save(out)
        params = spec.get("params", {})
        if params.get("fde_index") == "ivfpq" or params.get("candidates") == "centroids":
            # bulk load done: compaction stores the codes of the segments saved before the training
            index.compact()
            index.save(out)

    def __init__(self, spec: dict[str, Any], out: Path) -> None:
        from indexes import MultiVectorIndex

        self.index = MultiVectorIndex.load(out, device="cpu")

    def search(self, queries: list[np.ndarray], k: int, setting: dict[str, Any]) -> list[list[int]]:
        hits = self.index.search(queries, k, **setting)
        return [[int(i) for i, _ in h] for h in hits]

    @staticmethod
    def classify(name: str) -> str:
        if name.endswith((".fde.npy", ".cand.npy", ".codes.npy", ".faiss")) or name.startswith("centroids-"):
            return "cand"
        if name.endswith((".vectors.npy", ".scales.npy")):
            return "vectors"
        return "other"


class Colpali:
    """colpali-engine ``score_multi_vector`` over a list of float32 page tensors (no index on disk)."""

    @staticmethod
    def build(spec: dict[str, Any], pages: np.ndarray, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)  # nothing to build: the tensors are made at load

    def __init__(self, spec: dict[str, Any], out: Path) -> None:
        import torch
        from colpali_engine.utils.processing_utils import BaseVisualRetrieverProcessor

        self.torch, self.score = torch, BaseVisualRetrieverProcessor.score_multi_vector
        pages = scale_data.load_pages(Path(spec["data"]), spec["v"])
        self.ps = [torch.from_numpy(np.asarray(p, np.float32)) for p in pages]

    def search(self, queries: list[np.ndarray], k: int, setting: dict[str, Any]) -> list[list[int]]:
        scores = self.score([self.torch.from_numpy(q) for q in queries], self.ps)
        return self.torch.topk(scores, k, dim=1).indices.tolist()

    @staticmethod
    def classify(name: str) -> str:
        return "other"


class Qdrant:
    """Qdrant Edge shard: MaxSim multivectors (float16, no HNSW), quantized or with a pooled prefetch."""

    @staticmethod
    def config(kind: str) -> Any:
        import qdrant_edge as q

        mv_quant: Any = None
        if kind == "sq":
            mv_quant = q.ScalarQuantizationConfig(q.ScalarType.Int8, quantile=0.99, memory=q.Memory.Pinned)
        elif kind == "bq":
            mv_quant = q.BinaryQuantizationConfig(
                encoding=q.BinaryQuantizationEncoding.OneBit,
                query_encoding=q.BinaryQuantizationQueryEncoding.Scalar8Bits,
                memory=q.Memory.Pinned,
            )
        vectors = {
            "mv": q.EdgeVectorParams(
                size=128,
                distance=q.Distance.Dot,
                multivector_config=q.MultiVectorConfig(q.MultiVectorComparator.MaxSim),
                datatype=q.VectorStorageDatatype.Float16,
                quantization_config=mv_quant,
                hnsw_config=q.HnswIndexConfig(m=0, ef_construct=100, full_scan_threshold=10**9),
            )
        }
        if kind == "pooled":
            vectors["mean"] = q.EdgeVectorParams(
                size=128,
                distance=q.Distance.Dot,
                hnsw_config=q.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=10),
            )
        return q.EdgeConfig(
            vectors=vectors,
            optimizers=q.EdgeOptimizersConfig(indexing_threshold=1),
            wal_enabled=False,
        )

    @staticmethod
    def build(spec: dict[str, Any], pages: np.ndarray, out: Path) -> None:
        import qdrant_edge as q

        kind = spec["params"]["kind"]
        shard = q.EdgeShard.create(str(out), Qdrant.config(kind))
        for a in range(0, len(pages), 100):
            block = np.asarray(pages[a : a + 100], np.float32)
            pts = []
            for j, page in enumerate(block):
                vec: dict[str, Any] = {"mv": page}
                if kind == "pooled":
                    m = page.mean(0)
                    vec["mean"] = m / np.linalg.norm(m)
                pts.append(q.Point(a + j, vec))
            shard.update(q.UpdateOperation.upsert_points(pts))
        shard.flush()
        shard.optimize()
        shard.flush()
        shard.close()

    def __init__(self, spec: dict[str, Any], out: Path) -> None:
        import qdrant_edge as q

        self.q, self.kind = q, spec["params"]["kind"]
        self.shard = q.EdgeShard.load(str(out))

    def request(self, query: np.ndarray, k: int, setting: dict[str, Any]) -> Any:
        q = self.q
        if self.kind == "pooled":
            pooled = query.sum(0)
            pre = q.Prefetch(limit=max(k, setting["prefetch"]), query=q.Query.Nearest(pooled.tolist(), using="mean"))
            return q.QueryRequest(limit=k, prefetches=[pre], query=q.Query.Nearest(query.tolist(), using="mv"))
        params = q.SearchParams(
            quantization=q.QuantizationSearchParams(rescore=True, oversampling=float(setting["oversampling"]))
        )
        return q.QueryRequest(limit=k, query=q.Query.Nearest(query.tolist(), using="mv"), params=params)

    def search(self, queries: list[np.ndarray], k: int, setting: dict[str, Any]) -> list[list[int]]:
        reqs = [self.request(x, k, setting) for x in queries]
        one = len(reqs) == 1
        res = [self.shard.query(reqs[0])] if one else self.shard.query_batch(self.q.QueryBatchRequest(reqs))
        return [[int(p.id) for p in r] for r in res]

    @staticmethod
    def classify(name: str) -> str:
        if "quantized" in name or "vector_index-" in name or "vector_storage-mean" in name:
            return "cand"
        if "vector_storage-mv" in name:
            return "vectors"
        return "other"


SYSTEMS: dict[str, Any] = {"ours": Ours, "colpali": Colpali, "qdrant": Qdrant}


# ------------------------------------------------------------ child roles
def role_build(spec: dict[str, Any]) -> dict[str, Any]:
    cls = SYSTEMS[spec["impl"]]
    out = Path(spec["index"])
    if out.exists():
        shutil.rmtree(out)
    pages = scale_data.load_pages(Path(spec["data"]), spec["v"])
    t0 = time.perf_counter()
    cls.build(spec, pages, out)
    wall = time.perf_counter() - t0
    return {"build_s": wall, "build_rss": vm_hwm(), "disk": dir_split(out, cls.classify)}


def role_search(spec: dict[str, Any]) -> dict[str, Any]:
    cls = SYSTEMS[spec["impl"]]
    t0 = time.perf_counter()
    sys_ = cls(spec, Path(spec["index"]))
    load_s = time.perf_counter() - t0
    qs = list(np.load(Path(spec["data"]) / f"queries-q{spec['queries']}.npy"))[: spec["n_batch"]]
    runs = []
    for setting in spec["settings"]:
        sys_.search(qs[:1], K, setting)  # warm-up
        lat = []
        for x in qs[: spec["n_latency"]]:
            t = time.perf_counter()
            sys_.search([x], K, setting)
            lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        ids = sys_.search(qs, K, setting)
        batch_s = time.perf_counter() - t
        runs.append({"setting": setting, "lat": lat, "batch_s": batch_s, "ids": ids, "load1": os.getloadavg()[0]})
    return {"load_s": load_s, "search_rss": vm_hwm(), "runs": runs}


# ----------------------------------------------------------------- parent
def run_child(cmd: list[str], timeout: float) -> dict[str, Any]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[2] if 'worker' in cmd[1] else cmd[3]} step timed out after {timeout:.0f} s") from None
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(tail[-1] if tail else f"exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child_cmd(role: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, __file__, "--role", role, "--spec", json.dumps(spec)]


def system_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every configuration to build: name, implementation, constructor params, search settings."""
    n_cands = [int(x) for x in args.n_candidates.split(",")]
    specs: list[dict[str, Any]] = [
        {
            "name": "ours-exact",
            "impl": "ours",
            "label": "ours exact float16 [baseline]",
            "params": {},
            "settings": [{}],
        },
        {
            "name": "ours-exact-int8",
            "impl": "ours",
            "label": "ours exact int8",
            "params": {"codec": "int8"},
            "settings": [{}],
        },
    ]
    nprobes = [int(x) for x in args.nprobe.split(",")]
    for fde in args.fde.split(","):
        ks, dp, rr = (int(x) for x in fde.split("/"))
        for codec in args.codecs.split(","):
            if codec != "int8" and fde != args.fde.split(",")[0]:
                continue  # other codecs only with the first FDE setting
            for fde_index in args.fde_index.split(","):
                params = {"candidates": "muvera", "codec": codec, "k_sim": ks, "d_proj": dp, "r_reps": rr}
                name = f"ours-muvera-{codec}-k{ks}d{dp}r{rr}"
                label = f"ours MUVERA {ks}/{dp}/{rr} ({rr * 2**ks * dp}-d)"
                settings: list[dict[str, Any]] = [{"n_candidates": n} for n in n_cands]
                if fde_index == "ivfpq":
                    pq_m = args.pq_m or rr * 2**ks * dp // 32
                    params.update(fde_index="ivfpq", pq_m=pq_m, train_pages=min(args.train_pages, args.pages))
                    name, label = f"{name}-ivfpq{pq_m}", f"{label} IVF-PQ{pq_m}"
                    settings = [{"n_candidates": n, "nprobe": p} for p in nprobes for n in n_cands]
                specs.append(
                    {"name": name, "impl": "ours", "label": f"{label} {codec}", "params": params, "settings": settings}
                )
    for n_centroids in (int(x) for x in args.centroids.split(",")):
        for codec in args.codecs.split(","):
            params = {"candidates": "centroids", "codec": codec, "n_centroids": n_centroids}
            params["train_pages"] = min(args.train_pages, args.pages)
            specs.append(
                {
                    "name": f"ours-centroids-{codec}-c{n_centroids}",
                    "impl": "ours",
                    "label": f"ours centroids {n_centroids} {codec}",
                    "params": params,
                    "settings": [
                        {"n_candidates": n, "nprobe": int(p)} for p in args.centroid_nprobe.split(",") for n in n_cands
                    ],
                }
            )
    specs.append(
        {"name": "colpali", "impl": "colpali", "label": "colpali-engine score_multi_vector fp32", "settings": [{}]}
    )
    specs.append(
        {
            "name": "qdrant-sq",
            "impl": "qdrant",
            "label": "Qdrant Edge int8 SQ + rescore",
            "params": {"kind": "sq"},
            "settings": [{"oversampling": o} for o in (1.0, 3.0)],
        }
    )
    specs.append(
        {
            "name": "qdrant-bq",
            "impl": "qdrant",
            "label": "Qdrant Edge 1-bit BQ + rescore",
            "params": {"kind": "bq"},
            "settings": [{"oversampling": o} for o in (2.0, 8.0)],
        }
    )
    specs.append(
        {
            "name": "qdrant-pooled",
            "impl": "qdrant",
            "label": "Qdrant Edge mean-pooled HNSW prefetch + MaxSim",
            "params": {"kind": "pooled"},
            "settings": [{"prefetch": n} for n in (200, 1000)],
        }
    )
    for nbits in (2, 4):
        specs.append(
            {
                "name": f"fastplaid-nbits{nbits}",
                "impl": "fastplaid",
                "label": f"fast-plaid CPU nbits={nbits}",
                "params": {"nbits": nbits},
                "settings": [{"n_ivf_probe": 8, "n_full_scores": n} for n in (1024, 4096)],
            }
        )
    wanted = args.systems.split(",") if args.systems else None
    return [s for s in specs if wanted is None or any(s["name"].startswith(w) for w in wanted)]


def fastplaid_python(cache: Path) -> Path:
    """The fast-plaid venv's interpreter, creating the venv on first use (several GB of torch)."""
    venv = cache / "fastplaid-venv"
    py = venv / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import fast_plaid"], capture_output=True).returncode == 0
    if not ok:
        log(f"creating {venv} (uv venv + uv pip install fast-plaid; downloads torch)")
        subprocess.run(["uv", "venv", "-q", "--python", "3.11", str(venv)], check=True, capture_output=True, text=True)
        env = {**os.environ, "VIRTUAL_ENV": str(venv)}
        proc = subprocess.run(["uv", "pip", "install", "fast-plaid", "numpy"], env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError("installing fast-plaid failed: " + proc.stderr.strip().splitlines()[-1])
    return py


def run_system(spec: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {"load1_start": os.getloadavg()[0]}
    if spec["impl"] == "fastplaid":
        py = fastplaid_python(args.cache)
        worker = Path(__file__).with_name("scale_fastplaid_worker.py")
        res.update(run_child([str(py), str(worker), "build", json.dumps(spec)], args.timeout))
        res.update(run_child([str(py), str(worker), "search", json.dumps(spec)], args.timeout))
        return res
    if spec["impl"] == "ours" and spec["params"].get("candidates"):
        from indexes.multi import MultiVectorIndex

        try:
            MultiVectorIndex(128, **spec["params"])
        except TypeError as exc:
            raise RuntimeError(f"MultiVectorIndex lacks these options ({exc})") from None
    res.update(run_child(child_cmd("build", spec), args.timeout))
    res.update(run_child(child_cmd("search", spec), args.timeout))
    return res


def recall(ids: list[list[int]], gt: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(a[:k]) & set(g[:k].tolist())) / k for a, g in zip(ids, gt)]))


def fmt_bytes(n: float) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


def table(rows: list[dict[str, Any]], pages: int) -> list[str]:
    head = (
        "| system | setting | R@10 | R@100 | p50 ms | p95 ms | batch q/s | cand. index /page | vectors /page "
        "| other /page | build pages/s | peak RSS build | peak RSS search | load |"
    )
    out = [head, "|" + "---|" * 14]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['label']} | **not run**: {r['error']} |" + " |" * 12)
            continue
        d = r["disk"]
        bps = f"{pages / r['build_s']:.0f}" if r.get("build_s") else "-"
        out.append(
            f"| {r['label']} | {r['setting_str']} | {r['r10']:.3f} | {r['r100']:.3f} | "
            f"{r['p50']:.1f} | {r['p95']:.1f} | "
            f"{r['qps']:.2f} | {fmt_bytes(d['cand'] / pages)} | {fmt_bytes(d['vectors'] / pages)} | "
            f"{fmt_bytes(d['other'] / pages)} | {bps} | {r['build_rss'] / 2**30:.2f} GiB | "
            f"{r['search_rss'] / 2**30:.2f} GiB | {r['load1']:.1f} |"
        )
    return out


def pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with an index on disk not dominated on (recall@10 up, batch q/s up, bytes/page down)."""
    ok = [r for r in rows if "error" not in r and sum(r["disk"].values()) > 0]  # colpali-engine: no index

    def size(r: dict[str, Any]) -> int:
        return sum(r["disk"].values())

    front = []
    for r in ok:
        dominated = any(
            o is not r
            and o["r10"] >= r["r10"]
            and o["qps"] >= r["qps"]
            and size(o) <= size(r)
            and (o["r10"] > r["r10"] or o["qps"] > r["qps"] or size(o) < size(r))
            for o in ok
        )
        if not dominated:
            front.append(r)
    return sorted(front, key=lambda r: -r["r10"])


def expand(spec: dict[str, Any], res: dict[str, Any], gt: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for run in res["runs"]:
        lat = np.array(run["lat"]) * 1000
        ids = run["ids"]
        setting = ", ".join(f"{k}={v}" for k, v in run["setting"].items()) or "-"
        rows.append(
            {
                "name": spec["name"],
                "label": spec["label"],
                "setting_str": setting + ("" if len(ids) == len(gt) else f" ({len(ids)} queries)"),
                "r10": recall(ids, gt, 10),
                "r100": recall(ids, gt, 100),
                "p50": float(np.percentile(lat, 50)),
                "p95": float(np.percentile(lat, 95)),
                "qps": len(ids) / run["batch_s"],
                "disk": res["disk"],
                "build_s": res["build_s"] if spec["impl"] != "colpali" else 0.0,
                "build_rss": res["build_rss"],
                "search_rss": res["search_rss"],
                "load1": run["load1"],
            }
        )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--pages", type=int, default=10_000)
    ap.add_argument("--vectors-per-page", type=int, default=260)
    ap.add_argument("--queries", type=int, default=100, help="queries (batch q/s and recall)")
    ap.add_argument("--latency-queries", type=int, default=30, help="queries timed one by one")
    ap.add_argument("--baseline-queries", type=int, default=20, help="queries for colpali-engine (slow)")
    ap.add_argument("--baseline-latency-queries", type=int, default=5, help="of which timed one by one")
    ap.add_argument("--systems", default="", help="comma-separated name prefixes (default: all)")
    ap.add_argument("--n-candidates", default="100,200,500,1000", help="ours-muvera sweep")
    ap.add_argument("--fde", default="4/16/16,5/16/20,3/8/8", help="MUVERA k_sim/d_proj/r_reps settings")
    ap.add_argument("--codecs", default="int8,float16")
    ap.add_argument("--fde-index", default="flat,ivfpq", help="how ours-muvera searches the encodings")
    ap.add_argument("--pq-m", type=int, default=0, help="IVF-PQ bytes per page (default: encoding size / 32)")
    ap.add_argument("--nprobe", default="16,64", help="IVF-PQ lists probed (sweep)")
    ap.add_argument("--train-pages", type=int, default=5000, help="pages stored before IVF-PQ / centroid training")
    ap.add_argument("--centroids", default="4096", help="ours-centroids: n_centroids settings")
    ap.add_argument("--centroid-nprobe", default="4,8", help="ours-centroids: centroids probed per query vector")
    ap.add_argument("--cache", type=Path, default=Path("/work/bench-cache"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data",
        type=Path,
        help="a prepared corpus directory (e.g. from bench/scale_real.py; pages and v from its meta.json) "
        "instead of synthetic data",
    )
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    ap.add_argument("--reuse", action="store_true", help="reuse cached per-system results of the same sizes")
    ap.add_argument("--table-only", action="store_true", help="print the table from cached results only (no runs)")
    ap.add_argument("--quick", action="store_true", help="2,000 pages, 30 queries, 10 timed, 10 for colpali-engine")
    ap.add_argument("--role", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.role:
        spec = json.loads(args.spec)
        res = role_build(spec) if args.role == "build" else role_search(spec)
        print(json.dumps(res))
        return 0

    if args.quick:
        args.pages, args.queries = min(args.pages, 2000), min(args.queries, 30)
        args.latency_queries, args.baseline_queries = min(args.latency_queries, 10), min(args.baseline_queries, 10)
        args.baseline_latency_queries = min(args.baseline_latency_queries, 3)
    load_start = os.getloadavg()
    if args.data:
        meta_path = args.data / "meta.json"
        if not meta_path.is_file():
            ap.error(f"--data {args.data}: no meta.json (not a prepared corpus, or its build did not finish)")
        meta = json.loads(meta_path.read_text())
        args.pages, v, data = int(meta["pages"]), int(meta["vectors_per_page"]), args.data.resolve()
        if not (data / f"queries-q{args.queries}.npy").is_file():
            have = sorted(p.name for p in data.glob("queries-q*.npy"))
            ap.error(f"--data {data}: no queries-q{args.queries}.npy (has: {', '.join(have) or 'none'})")
        data_tag = data.name
    else:
        v = args.vectors_per_page
        data = scale_data.ensure_data(args.cache, args.pages, v, args.queries, args.seed, log=log)
        data_tag = f"p{args.pages}-v{v}-s{args.seed}"
    gt, _ = scale_data.ground_truth(data, v, args.queries, K, log=log)
    q_tokens = np.load(data / f"queries-q{args.queries}.npy", mmap_mode="r").shape[1]
    tag = f"{data_tag}-q{args.queries}"
    results_dir = args.cache / "results" / tag
    results_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for spec in system_specs(args):
        spec.update(
            data=str(data),
            v=v,
            queries=args.queries,
            index=str(args.cache / "indexes" / data_tag / spec["name"]),
            n_batch=args.baseline_queries if spec["impl"] == "colpali" else args.queries,
            n_latency=args.baseline_latency_queries
            if spec["impl"] == "colpali"
            else min(args.latency_queries, args.queries),
        )
        spec.setdefault("params", {})
        cached = results_dir / f"{spec['name']}.json"
        failed = results_dir / f"{spec['name']}.error"
        if (args.reuse or args.table_only) and cached.exists():
            res = json.loads(cached.read_text())
        elif args.table_only:
            why = failed.read_text().strip() if failed.exists() else "no cached result"
            rows.append({"label": spec["label"], "error": why})
            continue
        else:
            log(f"{spec['name']}: build + search")
            try:
                res = run_system(spec, args)
            except Exception as exc:  # a failing system becomes a row that says why
                log(f"{spec['name']} failed: {exc}")
                rows.append({"label": spec["label"], "error": str(exc)[:300]})
                failed.write_text(str(exc)[:300])
                continue
            cached.write_text(json.dumps(res))
        new = expand(spec, res, gt)
        for r in new:
            log(f"  {r['label']} {r['setting_str']}: R@10 {r['r10']:.3f} R@100 {r['r100']:.3f} {r['qps']:.2f} q/s")
        rows.extend(new)
    load_end = os.getloadavg()

    print(
        f"\n### Multi-vector at scale: {args.pages:,} pages x {v} vectors x 128 dims (float16), "
        f"{args.queries} queries x {q_tokens} vectors, recall vs exact float32 MaxSim top-100"
        + (f" ({data.name})" if args.data else "")
        + "\n"
    )
    print("\n".join(table(rows, args.pages)))
    print("\nPareto front (recall@10 up, batch q/s up, bytes/page down):\n")
    print("| system | setting | R@10 | batch q/s | bytes/page |\n|---|---|---|---|---|")
    for r in pareto(rows):
        size = fmt_bytes(sum(r["disk"].values()) / args.pages)
        print(f"| {r['label']} | {r['setting_str']} | {r['r10']:.3f} | {r['qps']:.2f} | {size} |")
    print(
        f"\nload average (1/5/15 min): start {load_start[0]:.1f}/{load_start[1]:.1f}/{load_start[2]:.1f}, "
        f"end {load_end[0]:.1f}/{load_end[1]:.1f}/{load_end[2]:.1f}; {os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
