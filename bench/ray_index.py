"""Ray indexing vs in-process indexing: pages/s, same tiny model, same pages.

Usage::

    .venv/bin/python bench/ray_index.py [--docs 26] [--pages 8] [--encoders 2] [--dpi 72]

Builds ``--docs`` PDFs of ``--pages`` pages each with reportlab (208 pages by default) and
the tiny random-weight dse-qwen2 model (offline), then indexes them into fresh collections:

* in-process (``Collection.add``: a render thread + the encoder in the writer);
* on a local Ray cluster (``ray.init(num_cpus=encoders + 1)``): render tasks, ``--encoders``
  encoder actors of 1 CPU each, the driver writing.

For each it prints the wall-clock seconds of the ``add`` call (the model is already loaded
in-process; the Ray figure includes starting the actors, each of which imports torch and
loads the model) and the steady-state rate from the first stored page to the last.
Then it measures the rates of the pipeline's stages (one encoder on one CPU thread, PDF
rendering on one CPU, the driver's writing) and prints a MODEL of throughput against the
number of encoder actors: ``min(N * encode_rate, render_cpus * render_rate, write_rate)``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")

from dse.collection import Collection  # noqa: E402
from dse.testing.tiny import build_tiny  # noqa: E402


def make_pdfs(root: Path, docs: int, pages: int) -> None:
    from reportlab.lib.pagesizes import A4
    from reportlab.pdfgen import canvas

    root.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        c = canvas.Canvas(str(root / f"doc{d:03d}.pdf"), pagesize=A4)
        for p in range(pages):
            c.setFont("Helvetica-Bold", 20)
            c.drawString(72, 770, f"Report {d}, page {p + 1}")
            c.setFont("Helvetica", 11)
            for line in range(30):
                c.drawString(72, 730 - 18 * line, f"Line {line}: quarterly figures {d * 31 + p * 7 + line} units")
            c.setFillColorRGB((d % 5) / 5, (p % 3) / 3, 0.5)
            c.rect(72, 120, 200 + 10 * p, 40, fill=1)
            c.showPage()
        c.save()


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def timed_add(col_dir: Path, model: Path, src: Path, settings: object, batch: int, ray: object = None) -> dict:
    from dse.collection import ray_ingest

    stamps: list[float] = []
    ray_ingest._after_record = lambda n: stamps.append(time.perf_counter())
    col = Collection.create(col_dir, model=str(model), device="cpu")
    if ray is None:  # in-process: the same hook, from the writer's stored pages
        from dse.collection import ingest

        orig = ingest.Ingestor._add_vectors

        def add_vectors(self, kept, vectors):  # type: ignore[no-untyped-def]
            orig(self, kept, vectors)
            stamps.extend([time.perf_counter()] * len(kept))

        ingest.Ingestor._add_vectors = add_vectors  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        report = col.add(src, batch_size=batch, commit_every=64, render_settings=settings, progress=False, ray=ray)
        wall = time.perf_counter() - t0
    finally:
        col.close()
        ray_ingest._after_record = None
        if ray is None:
            ingest.Ingestor._add_vectors = orig  # type: ignore[method-assign]
    assert not report.failures, report.failures
    steady = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 and stamps[-1] > stamps[0] else 0.0
    return {"pages": report.pages, "wall": wall, "rate": report.pages / wall, "steady": steady, "first": stamps[0] - t0}


def stage_rates(model: Path, src: Path, settings: object, batch: int) -> dict[str, float]:
    """Pages/s of each stage alone, on one CPU thread: render, encode, write (driver)."""
    import torch

    from dse.collection.ingest import EncodedPage
    from dse.encoders import Encoder
    from renderers import render

    torch.set_num_threads(1)  # an encoder actor with 1 CPU gets OMP_NUM_THREADS=1 from Ray
    t0 = time.perf_counter()
    records = list(render([src], settings))
    render_rate = len(records) / (time.perf_counter() - t0)
    enc = Encoder.load(str(model), device="cpu")
    sample = records[:48]
    enc.encode_documents([r.image for r in sample[:batch]], batch_size=batch)  # warm-up
    t0 = time.perf_counter()
    vectors = enc.encode_documents([r.image for r in sample], batch_size=batch)
    encode_rate = len(sample) / (time.perf_counter() - t0)
    torch.set_num_threads(os.cpu_count() or 1)
    # the driver alone: already-encoded pages (real vectors, reused) through the single writer
    with tempfile.TemporaryDirectory() as tmp:
        col = Collection.create(Path(tmp) / "w", model=enc, device="cpu")
        try:
            from dse.collection.ingest import Ingestor

            ing = Ingestor(
                col,
                batch_size=batch,
                commit_every=64,
                progress=False,
                render_settings=settings,
                meta=None,
                sidecars=False,
            )
            sources = ing.plan([src])
            by_doc = {s.doc_id for s in sources}
            items = [
                EncodedPage(r, vectors=vectors[i % len(sample)][None, :])
                for i, r in enumerate(records)
                if r.doc_id in by_doc
            ]
            t0 = time.perf_counter()
            ing.drive(iter(items), len(sources), t0, unit="page")
            write_rate = len(items) / (time.perf_counter() - t0)
        finally:
            col.close()
    return {"render": render_rate, "encode": encode_rate, "write": write_rate}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=26)
    ap.add_argument("--pages", type=int, default=8)
    ap.add_argument("--encoders", type=int, default=2)
    ap.add_argument("--dpi", type=float, default=72)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--keep", type=Path, default=None, help="work directory to keep (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    from dse.collection.ray_ingest import RaySettings
    from renderers import RenderSettings

    work = args.keep or Path(tempfile.mkdtemp(prefix="dse-ray-bench-"))
    src, model = work / "pdfs", work / "model"
    if not src.exists():
        make_pdfs(src, args.docs, args.pages)
    if not model.exists():
        build_tiny("dse-qwen2", model)
    settings = RenderSettings(dpi=args.dpi)
    rows = []
    load_before = uptime()
    shutil.rmtree(work / "inproc", ignore_errors=True)
    rows.append(("in-process", timed_add(work / "inproc", model, src, settings, args.batch_size)))
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what one encoder actor of 1 CPU gets: the per-actor baseline
    try:
        shutil.rmtree(work / "inproc1", ignore_errors=True)
        rows.append(("in-process, torch 1 thread", timed_add(work / "inproc1", model, src, settings, args.batch_size)))
    finally:
        torch.set_num_threads(threads)
    ray.init(num_cpus=args.encoders + 1, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    try:
        shutil.rmtree(work / "ray", ignore_errors=True)
        ray_settings = RaySettings(encoders=args.encoders, encoder_cpus=1, render_cpus=1)
        rows.append(
            (
                f"Ray, {args.encoders} encoder actors",
                timed_add(work / "ray", model, src, settings, args.batch_size, ray_settings),
            )
        )
    finally:
        ray.shutdown()
    stages = stage_rates(model, src, settings, args.batch_size)
    load_after = uptime()
    base = rows[0][1]
    what = f"{args.docs} PDFs x {args.pages} pages, {args.dpi:g} DPI"
    print(f"\n{base['pages']} pages ({what}), tiny dse-qwen2, batch {args.batch_size}")
    print(f"load before: {load_before}\nload after:  {load_after}\n")
    print("| variant | pages | add() s | pages/s (add) | first page after s | steady pages/s | steady vs in-process |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        print(
            f"| {name} | {r['pages']} | {r['wall']:.1f} | {r['rate']:.2f} | {r['first']:.1f} | {r['steady']:.2f} | "
            f"{r['steady'] / base['steady']:.2f}x |"
        )
    print("\nStage rates, one CPU thread each (pages/s):", ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print("\nMODEL (not measured): throughput = min(N x encode, render_cpus x render, write)")
    print("| encoder actors N | render CPUs | modelled pages/s | bound by |")
    print("|---:|---:|---:|---|")
    for n in (1, 2, 4, 8, 16, 32):
        for render_cpus in (1, max(1, n // 2)):
            caps = {"encode": n * stages["encode"], "render": render_cpus * stages["render"], "write": stages["write"]}
            bound = min(caps, key=lambda k: caps[k])
            print(f"| {n} | {render_cpus} | {caps[bound]:.1f} | {bound} |")
            if render_cpus == max(1, n // 2):
                break
    return 0


if __name__ == "__main__":
    sys.exit(main())
