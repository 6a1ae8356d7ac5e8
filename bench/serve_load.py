"""Serving load: N concurrent clients send M text searches each to `dse serve` on loopback.

The server runs as a real `python -m dse serve` subprocess (uvicorn), once with query
micro-batching (the default) and once with `--no-micro-batch` (the baseline), over the
same collection; clients are threads with their own httpx connection. Reported per mode:
errors (must be 0), p50 / p99 latency, queries per second, and the batcher's mean batch.

    uv run --frozen python bench/serve_load.py                   # tiny random dse-qwen2 (default)
    uv run --frozen python bench/serve_load.py --clients 32 --requests 20
    uv run --frozen python bench/serve_load.py --model /models/dse-qwen2-2b-mrl-v1 --pages 50
    uv run --frozen python bench/serve_load.py --family colqwen2  # tiny colqwen2 (MaxSim)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.server import free_port, make_page  # noqa: E402

WORDS = [
    "revenue",
    "table",
    "chart",
    "growth",
    "quarter",
    "page",
    "layout",
    "figure",
    "benchmark",
    "memory",
    "latency",
    "slide",
    "corpus",
    "index",
    "query",
    "patch",
    "encoder",
    "token",
    "recall",
    "precision",
]


def build_collection(model: Path, out: Path, n_pages: int) -> Path:
    from dse.collection import Collection

    pages = out / "pages"
    pages.mkdir(parents=True)
    for i in range(n_pages):
        make_page(((37 * i) % 255, (91 * i) % 255, (53 * i) % 255), f"page {i} {WORDS[i % len(WORDS)]}").save(
            pages / f"p{i:04d}.png"
        )
    col = Collection.create(out / "col", model=str(model), device="cpu")
    col.add(pages, progress=False)
    col.close()
    return out / "col"


def start_server(collection: Path, port: int, micro_batch: bool, device: str) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "dse",
        "serve",
        "--collection",
        str(collection),
        "--port",
        str(port),
        "--device",
        device,
        "--log-level",
        "warning",
    ]
    if not micro_batch:
        cmd.append("--no-micro-batch")
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the server did not start")


def run_load(url: str, clients: int, requests: int, k: int) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)

    def client(cid: int) -> None:
        nonlocal errors
        with httpx.Client(base_url=url, timeout=300) as c:
            c.get("/health")  # connect before the clock starts
            barrier.wait()
            for r in range(requests):
                text = " ".join(WORDS[(cid * 7 + r * 3 + j) % len(WORDS)] for j in range(4))
                t0 = time.perf_counter()
                try:
                    resp = c.post("/search", json={"text": text, "k": k})
                    ok = resp.status_code == 200 and len(resp.json()["hits"]) > 0
                except httpx.HTTPError:
                    ok = False
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    errors += 0 if ok else 1

    before = httpx.get(f"{url}/info", timeout=30).json().get("batching") or {}
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    info = httpx.get(f"{url}/info", timeout=30).json()
    after = info.get("batching") or {}
    batches = after.get("batches", 0) - before.get("batches", 0)
    mean_batch = (after.get("queries", 0) - before.get("queries", 0)) / batches if batches else 1.0
    return {
        "errors": errors,
        "requests": len(lat),
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "qps": len(lat) / wall,
        "mean_batch": mean_batch,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=None, help="model directory (default: a tiny random model)")
    ap.add_argument("--family", default="dse-qwen2", help="tiny model family when --model is not given")
    ap.add_argument("--pages", type=int, default=24, help="pages in the collection (default 24)")
    ap.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    ap.add_argument("--requests", type=int, default=10, help="searches per client (default 10)")
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        tmp_path = Path(tmp)
        model = args.model
        if model is None:
            from dse.testing.tiny import build_tiny

            model = build_tiny(args.family, tmp_path / "model")
        print(f"building a {args.pages}-page collection with {model} ...", file=sys.stderr)
        collection = build_collection(model, tmp_path / "data", args.pages)
        rows = []
        for micro_batch in (False, True):
            port = free_port()
            proc = start_server(collection, port, micro_batch, args.device)
            try:
                url = f"http://127.0.0.1:{port}"
                run_load(url, min(args.clients, 4), 2, args.k)  # warm-up
                res = run_load(url, args.clients, args.requests, args.k)
            finally:
                proc.terminate()
                proc.wait(30)
            rows.append(("micro-batching (default)" if micro_batch else "one encode per request (baseline)", res))

    base = rows[0][1]
    print(
        f"\nServing load: {args.clients} clients x {args.requests} searches, k={args.k}, "
        f"{args.pages} pages, model {args.model or 'tiny ' + args.family}, {os.cpu_count()} CPUs\n"
    )
    print("| mode | requests | errors | p50 ms | p99 ms | queries/s | mean batch | vs baseline |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        print(
            f"| {name} | {r['requests']} | {r['errors']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | "
            f"{r['qps']:.1f} | {r['mean_batch']:.2f} | {r['qps'] / base['qps']:.2f}x |"
        )
    return 1 if any(r["errors"] for _, r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
