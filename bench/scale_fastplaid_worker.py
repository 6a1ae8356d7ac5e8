"""fast-plaid side of ``bench/scale.py``; runs in its own venv (fast-plaid pins its torch).

    <venv>/bin/python bench/scale_fastplaid_worker.py build|search '<spec json>'

Reads the float16 pages memmap and the queries written by ``bench/scale_data.py`` (numpy only,
no import from the project), builds a CPU fast-plaid index with ``nbits`` from the spec, or
searches it with each ``(n_ivf_probe, n_full_scores)`` setting; prints one JSON line in the
same shape as ``scale.py``'s own build/search roles.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

K = 100


def vm_hwm() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def classify(name: str) -> str:
    """IVF lists and centroids are the candidate index; codes + residuals are the vectors."""
    base = name.rsplit("/", 1)[-1]
    if "ivf" in base or "centroid" in base or "bucket" in base or "avg_residual" in base:
        return "cand"
    if "codes" in base or "residual" in base:
        return "vectors"
    return "other"


def disk(root: Path) -> dict[str, int]:
    out = {"cand": 0, "vectors": 0, "other": 0}
    for p in root.rglob("*"):
        if p.is_file():
            out[classify(p.relative_to(root).as_posix())] += p.stat().st_blocks * 512
    return out


def main() -> int:
    role, spec = sys.argv[1], json.loads(sys.argv[2])
    import torch
    from fast_plaid import search

    out = Path(spec["index"])
    data = Path(spec["data"])
    if role == "build":
        if out.exists():
            shutil.rmtree(out)
        vec = np.load(data / "vectors.f16.npy", mmap_mode="r")
        v = spec["v"]
        t0 = time.perf_counter()
        docs = [torch.from_numpy(np.asarray(vec[i * v : (i + 1) * v], np.float32)) for i in range(len(vec) // v)]
        index = search.FastPlaid(index=str(out), device="cpu")
        index.create(documents_embeddings=docs, nbits=spec["params"]["nbits"])
        wall = time.perf_counter() - t0
        res: dict[str, Any] = {
            "build_s": wall,
            "build_rss": vm_hwm(),
            "disk": disk(out),
            "files": sorted(p.name for p in out.rglob("*") if p.is_file())[:40],
        }
    else:
        t0 = time.perf_counter()
        index = search.FastPlaid(index=str(out), device="cpu")
        load_s = time.perf_counter() - t0
        qs = np.load(data / f"queries-q{spec['queries']}.npy")[: spec["n_batch"]]
        qt = torch.from_numpy(qs)
        runs = []
        for setting in spec["settings"]:
            kw = {"top_k": K, "show_progress": False, **setting}
            index.search(queries_embeddings=qt[:1], **kw)
            lat = []
            for i in range(min(spec["n_latency"], len(qt))):
                t = time.perf_counter()
                index.search(queries_embeddings=qt[i : i + 1], **kw)
                lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            hits = index.search(queries_embeddings=qt, **kw)
            batch_s = time.perf_counter() - t
            ids = [[int(i) for i, _ in h] for h in hits]
            runs.append({"setting": setting, "lat": lat, "batch_s": batch_s, "ids": ids, "load1": os.getloadavg()[0]})
        res = {"load_s": load_s, "search_rss": vm_hwm(), "runs": runs, "torch": torch.__version__}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
