"""Rendering throughput and peak memory, against naive baselines, in one run.

    .venv/bin/python bench/render.py            # full size (60-page PDF, 24 web pages, 6 decks)
    .venv/bin/python bench/render.py --quick    # small and fast (smoke run)

Benchmarks (each variant runs in a fresh subprocess, so its peak memory is its own):

* PDF render+store: a realistic report (text, chart, table per page) at 144 DPI,
  every page written as PNG. Baseline: ``pdf2image.convert_from_path(dpi=144,
  fmt="png", output_folder=...)`` on the same file. Ours: ``renderers.render`` +
  ``PageRecord.save_png`` (what ``dse render`` does), in-process (the default) and
  with the optional worker-process pool (``pdf_workers``).
* Web: local pages served on 127.0.0.1, viewport mode, PNG written per page.
  Baseline: a fresh Chromium per page (same flags and wait policy). Ours: one
  browser, ``web_concurrency`` pages at once.
* Slide decks: .pptx -> LibreOffice -> PDF -> PNG pages at 144 DPI, with 1 worker
  (sequential) and with N workers (parallel).

Peak memory is the peak of the summed RSS of the variant's process tree (the
Python process plus its children: worker processes, pdftoppm, Chromium, soffice),
sampled every 20 ms; pages shared between processes are counted once per process.
"CPU s" is the user+system CPU time of that process tree (less sensitive than wall
time to other load on the machine); "load avg" is the 1-minute load average after
the variant ran - compare it with the CPU count before trusting wall-clock figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))


# ------------------------------------------------------------------ fixtures


def make_web_pages(root: Path, n: int) -> list[str]:
    """``n`` article-like pages (headings, paragraphs, a table, an inline SVG chart, CSS)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    words = [
        "retrieval",
        "screenshot",
        "embedding",
        "vision",
        "document",
        "layout",
        "table",
        "figure",
        "chart",
        "model",
        "index",
        "query",
        "passage",
        "recall",
        "precision",
        "latency",
        "corpus",
        "slide",
        "page",
        "token",
    ]
    names = []
    for i in range(n):
        paras = "".join(f"<p>{' '.join(rng.choice(words) for _ in range(60)).capitalize()}.</p>" for _ in range(6))
        rows = "".join(
            f"<tr><td>{rng.choice(words)}</td><td>{rng.uniform(0, 100):.1f}</td><td>{rng.uniform(0, 100):.1f}</td></tr>"
            for _ in range(8)
        )
        bars = "".join(
            f'<rect x="{20 + k * 45}" y="{200 - v}" width="30" height="{v}" fill="hsl({k * 40},70%,50%)"/>'
            for k, v in enumerate(rng.randint(20, 180) for _ in range(8))
        )
        html = f"""<!doctype html><html><head><meta charset="utf-8"><title>Article {i}</title>
<style>body{{font:16px/1.5 sans-serif;max-width:900px;margin:20px auto;color:#222}}
table{{border-collapse:collapse}}td{{border:1px solid #999;padding:4px 10px}}
.box{{background:#eef;border-left:6px solid #36c;padding:10px}}</style></head><body>
<h1>Article {i}: document retrieval notes</h1><div class="box">Summary box with key findings.</div>
{paras[: len(paras) // 2]}<svg width="400" height="210">{bars}</svg><table>{rows}</table>{paras[len(paras) // 2 :]}
</body></html>"""
        name = f"article{i:03d}.html"
        (root / name).write_text(html, encoding="utf-8")
        names.append(name)
    return names


# ------------------------------------------------------------- case runners
# Each runs inside a fresh subprocess and returns {"items": n, "seconds": t}.


def case_pdf_pdf2image(pdf: str, out: str, threads: int = 1) -> dict:
    from pdf2image import convert_from_path

    t = time.perf_counter()
    images = convert_from_path(pdf, dpi=144, fmt="png", output_folder=out, thread_count=threads)
    n = len(images)
    for im in images:
        im.close()
    return {"items": n, "seconds": time.perf_counter() - t}


def case_render(inputs: list[str], out: str, settings_kwargs: dict, serve: str | None = None) -> dict:
    import contextlib

    from support.docs import serve_http

    from renderers import PageRecord, Renderer, RenderSettings

    settings = RenderSettings(**settings_kwargs)
    ctx = serve_http(serve) if serve else contextlib.nullcontext(None)
    with ctx as base:
        urls = [f"{base}/{name}" for name in inputs] if serve else inputs
        t = time.perf_counter()
        n = failures = 0
        with Renderer(settings) as renderer:
            for rec in renderer.render(urls):
                if isinstance(rec, PageRecord):
                    d = Path(out) / rec.doc_id
                    d.mkdir(exist_ok=True)
                    rec.save_png(d / f"p{rec.page:04d}.png", compress_level=settings.png_compress_level)
                    n += 1
                else:
                    failures += 1
                    print(f"failure: {rec.source}: {rec.reason}", file=sys.stderr)
        return {"items": n, "seconds": time.perf_counter() - t, "failures": failures}


def case_web_fresh_browser(names: list[str], out: str, root: str) -> dict:
    """Baseline: launch a new Chromium for every page (same flags and wait policy as ours)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright
    from support.docs import serve_http

    from renderers.web import CHROMIUM_ARGS, find_chromium

    exe = find_chromium()
    with serve_http(root) as base:
        t = time.perf_counter()
        with sync_playwright() as p:
            for i, name in enumerate(names):
                browser = p.chromium.launch(executable_path=exe, headless=True, args=list(CHROMIUM_ARGS))
                page = browser.new_page(viewport={"width": 980, "height": 980}, accept_downloads=False)
                page.goto(f"{base}/{name}", wait_until="load", timeout=30_000)
                with contextlib.suppress(PlaywrightTimeout):
                    page.wait_for_load_state("networkidle", timeout=2_000)
                page.screenshot(path=str(Path(out) / f"{i:04d}.png"))
                browser.close()
        return {"items": len(names), "seconds": time.perf_counter() - t}


CASES = {
    "pdf-pdf2image": lambda a: case_pdf_pdf2image(a["pdf"], a["out"]),
    "pdf-pdf2image-2threads": lambda a: case_pdf_pdf2image(a["pdf"], a["out"], threads=2),
    "pdf-ours": lambda a: case_render([a["pdf"]], a["out"], {"dpi": 144}),
    "pdf-ours-pool": lambda a: case_render([a["pdf"]], a["out"], {"dpi": 144, "pdf_workers": a["workers"]}),
    "web-fresh": lambda a: case_web_fresh_browser(a["names"], a["out"], a["root"]),
    "web-ours": lambda a: case_render(
        a["names"], a["out"], a.get("settings") or {"web_concurrency": a.get("concurrency", 4)}, serve=a["root"]
    ),
    "slides-seq": lambda a: case_render(a["decks"], a["out"], {"dpi": 144, "office_workers": 1}),
    "slides-par": lambda a: case_render(a["decks"], a["out"], {"dpi": 144, "office_workers": a["workers"]}),
}


# ------------------------------------------------------------------ driver


def _tree_rss(proc) -> int:
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_case(name: str, args: dict) -> dict:
    """Run one case in a fresh Python process; return its result plus peak tree RSS (MB)."""
    import psutil

    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as out:
        payload = json.dumps({**args, "out": out})
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(
            [sys.executable, __file__, "--case", name, "--args", payload], stdout=subprocess.PIPE, text=True, cwd=REPO
        )
        ps = psutil.Process(proc.pid)
        peak = 0
        stop = threading.Event()

        def sample() -> None:
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss(ps))
                stop.wait(0.02)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        stdout, _ = proc.communicate()
        stop.set()
        sampler.join()
        if proc.returncode != 0:
            raise SystemExit(f"bench case {name} failed (exit {proc.returncode})")
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = json.loads(stdout.strip().splitlines()[-1])
        result["peak_mb"] = peak / 2**20
        # CPU seconds of the case's process tree (all reaped descendants), incl. interpreter start-up.
        result["cpu_s"] = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
        return result


def measure(cases: list[tuple[str, dict]], repeat: int) -> list[dict]:
    """Run each (case, args) ``repeat`` times, interleaved (A B C A B C ...) so that
    changing background load hits every variant alike; return the median run of each."""
    runs: list[list[dict]] = [[] for _ in cases]
    for _ in range(repeat):
        for i, (name, args) in enumerate(cases):
            r = run_case(name, args)
            r["load"] = os.getloadavg()[0]
            runs[i].append(r)
    out = []
    for rs in runs:
        med = sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2]
        med = {**med, "peak_mb": max(r["peak_mb"] for r in rs), "load": statistics.mean(r["load"] for r in rs)}
        out.append(med)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes for a fast smoke run")
    ap.add_argument("--repeat", type=int, default=1, help="runs per variant (median reported)")
    ap.add_argument("--only", choices=("pdf", "web", "slides"), action="append", help="run only these benchmarks")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--args", help=argparse.SUPPRESS)
    opts = ap.parse_args()

    if opts.case:  # child process
        print(json.dumps(CASES[opts.case](json.loads(opts.args))))
        return

    from support.docs import make_pdf, make_pptx

    n_pdf, n_web, n_decks = (20, 8, 2) if opts.quick else (60, 24, 6)
    workers = max(2, min(os.cpu_count() or 2, 4))
    only = set(opts.only or ["pdf", "web", "slides"])
    rows: list[tuple[str, str, str, dict, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="bench-render-") as tmp:
        tmp_path = Path(tmp)
        if "pdf" in only:
            pdf = str(make_pdf(tmp_path / "report.pdf", n_pages=n_pdf).path)
            args = {"pdf": pdf, "workers": workers}
            variants = [
                ("pdf-pdf2image", f"pdf2image convert_from_path ({n_pdf} pp) [baseline]"),
                ("pdf-pdf2image-2threads", "pdf2image, thread_count=2"),
                ("pdf-ours", "dse renderers, pdfium, in-process (default)"),
                ("pdf-ours-pool", f"dse renderers, pdfium, pool of {workers} processes"),
            ]
            results = measure([(c, args) for c, _ in variants], opts.repeat)
            base_rate = results[0]["items"] / results[0]["seconds"]
            for (_, label), r, k in zip(variants, results, range(len(variants)), strict=True):
                rows.append(("PDF render+store, 144 DPI", label, "pages", r, None if k == 0 else base_rate))
        if "web" in only:
            names = make_web_pages(tmp_path / "site", n_web)
            args = {"names": names, "root": str(tmp_path / "site"), "concurrency": 4}
            base, ours = measure([("web-fresh", args), ("web-ours", args)], opts.repeat)
            rows.append(
                (
                    "Web pages, viewport 980x980",
                    f"fresh browser per page ({n_web} pages) [baseline]",
                    "pages",
                    base,
                    None,
                )
            )
            rows.append(
                (
                    "Web pages, viewport 980x980",
                    "dse renderers, 1 browser, 4 concurrent",
                    "pages",
                    ours,
                    base["items"] / base["seconds"],
                )
            )
        if "slides" in only:
            decks = [str(make_pptx(tmp_path / f"deck{i}.pptx", n_slides=5).path) for i in range(n_decks)]
            args = {"decks": decks, "workers": workers}
            base, par = measure([("slides-seq", args), ("slides-par", args)], opts.repeat)
            rows.append(
                (
                    "Slide decks (.pptx, 5 slides)",
                    f"LibreOffice, 1 worker ({n_decks} decks) [baseline]",
                    "slides",
                    base,
                    None,
                )
            )
            rows.append(
                (
                    "Slide decks (.pptx, 5 slides)",
                    f"LibreOffice, {workers} parallel workers",
                    "slides",
                    par,
                    base["items"] / base["seconds"],
                )
            )

    print(
        f"\nrender benchmarks ({'quick' if opts.quick else 'full'}; {os.cpu_count()} CPUs; "
        f"median of {opts.repeat} interleaved run(s); load avg = mean 1-min load after each run)\n"
    )
    print("| benchmark | variant | items | seconds | items/s | vs baseline | CPU s | peak RSS (MB) | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for bench, variant, unit, r, base_rate in rows:
        rate = r["items"] / r["seconds"]
        speed = "1.00x" if base_rate is None else f"{rate / base_rate:.2f}x"
        fails = f", {r['failures']} failed" if r.get("failures") else ""
        print(
            f"| {bench} | {variant} | {r['items']} {unit}{fails} | {r['seconds']:.2f} | {rate:.2f} | "
            f"{speed} | {r['cpu_s']:.1f} | {r['peak_mb']:.0f} | {r['load']:.1f} |"
        )


if __name__ == "__main__":
    main()
