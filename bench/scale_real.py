"""A ``bench/scale.py`` corpus of REAL rendered PDF pages, encoded by the tiny random-weight ColQwen2.

    apt-get install -y r-doc-pdf      # R's manuals: 3,092 letter pages under /usr/share/doc/r-doc-pdf/manual
    nice -n 10 uv run --frozen python bench/scale_real.py --sources /usr/share/doc/r-doc-pdf/manual --pages 2000
    nice -n 10 uv run --frozen python bench/scale.py --data /work/bench-cache/data/real-colqwen2-tiny-p2000 \\
        --queries 50 --systems ours-exact,ours-muvera

(``apt-get`` is needed for the benchmark only; CI never installs these packages.) The synthetic
corpus of ``bench/scale_data.py`` has the structure we assumed; this one has the structure of
real pages: the same measurements (recall against exact MaxSim on the same vectors) on real page
images. The weights are random (no model hub here), which does not matter for that purpose: the
ground truth is the exact MaxSim over the very vectors every system is given.

Output directory (default ``<cache>/data/real-colqwen2-tiny-p<pages>``), in the format of
``bench/scale_data.py``:

* ``vectors.f16.npy``: ``(pages * v, 128)`` float16, page after page, written through a memory
  map in chunks of ``--chunk-pages`` pages; ``progress.json`` records the pages done, so an
  interrupted build resumes at the last finished chunk (same arguments).
* ``n_content.npy``: ``v`` for every page (every row of a real page is a real token vector).
* ``queries-q<n>.npy``: ``(n, T, 128)`` float32; ``queries-q<n>.json`` their texts and source
  pages; ``targets-q<n>.npy`` the page each query's text came from.
* ``pages.json``: source file and 1-based page number of every corpus page (row order).
* ``meta.json``: ``"kind": "real-colqwen2-tiny"``, ``pages``, ``vectors_per_page``, ``dim``,
  ``sources``, image size, query tokens, model; ``bench/scale.py --data DIR`` reads it.

**Sources.** ``--sources`` takes PDF files and directories (searched recursively for ``*.pdf``),
sorted by path. When they hold more than ``--pages`` pages, the pages are taken evenly spaced over
the concatenation of all documents (every manual contributes, not just the first ones), in
document order.

**Fixed page size.** The corpus format has one number of vectors per page ``v``, and a ColQwen2
page yields one vector per visual token plus the fixed prompt tokens, so every page is rendered
with the project's PDF renderer (``renderers.render_source``, pypdfium2, pixel budget = the
target area) and then fitted into ``--width`` x ``--height`` (aspect kept, centred on white:
``PIL.ImageOps.pad``). The default 672 x 868 is what the ColQwen2 processor (768-visual-token cap,
``max_pixels = 768 * 28 * 28``) maps a US-letter page to (``smart_resize``: multiples of 28), so the
processor does not resize it again: 48 x 62 patches of 14 px merged 2 x 2 = 744 visual tokens, plus
the prompt's text tokens (``<|im_start|>user ... Describe the image.<|im_end|><|endoftext|>``):
``v`` = 744 + 13 = **757** with the tiny model's tokenizer (checked on every page; written to
``meta.json``). The 2,000-page corpus of R's manuals took 27 min to render and encode (1.2 pages/s
on a shared 2-core machine; rendering is ~1 % of it, the model's forward the rest).

**Model.** ``dse.testing.tiny_qwen.build_colqwen2`` (random weights, seed ``--model-seed``) into
``<out>/model`` (or ``--model DIR``), loaded through ``dse.encoders.Encoder.load`` like any
published checkpoint; pages through ``encode_documents`` (colpali-engine ``process_images``),
queries through ``encode_queries`` (``process_queries``: query prefix + text + 10
query-augmentation tokens); the vectors are the model's L2-normalised 128-d token vectors with
padding removed.

**Queries.** ColQwen2 queries have as many vectors as tokens, and ``bench/scale.py`` and
``scale_data.ground_truth`` take one ``(n, T, 128)`` array, so padding or cropping would change
the scores. Instead each query is a run of consecutive words of one page's own text (pypdfium2
text layer; pages drawn at random with seed ``--seed``, at most one query per page), grown word by
word from a random start until ``process_queries`` gives exactly ``--query-tokens`` tokens
(``T``, prefix and augmentation tokens included); starts that jump past ``T`` are dropped and
another start is tried. With the tiny model's 1,500-token BPE vocabulary, ``T = 20`` leaves
~7 text tokens after the fixed prefix and the 10 augmentation tokens (2-4 words), hence the
default ``T = 24``.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

FORMAT = 1
KIND = "real-colqwen2-tiny"
DIM = 128
#: US letter as the ColQwen2 processor sizes it (smart_resize under 768 * 28 * 28 pixels).
WIDTH, HEIGHT = 672, 868

log = logging.getLogger("scale_real")


# ----------------------------------------------------------------- sources
def find_pdfs(sources: Sequence[str | Path]) -> list[Path]:
    """The PDF files named by ``sources`` (files, or directories searched recursively), sorted."""
    found: set[Path] = set()
    for s in sources:
        p = Path(s)
        if p.is_dir():
            found.update(q.absolute() for q in p.rglob("*") if q.is_file() and q.suffix.lower() == ".pdf")
        elif p.is_file():
            found.add(p.absolute())
        else:
            raise SystemExit(f"error: source not found: {p}")
    if not found:
        raise SystemExit(f"error: no PDF files in {', '.join(map(str, sources))}")
    return sorted(found)


def page_counts(pdfs: list[Path]) -> list[int]:
    import pypdfium2 as pdfium

    counts = []
    for p in pdfs:
        doc = pdfium.PdfDocument(p)
        try:
            counts.append(len(doc))
        finally:
            doc.close()
    return counts


def select_pages(pdfs: list[Path], counts: list[int], n: int) -> list[tuple[str, int]]:
    """``n`` (file, 1-based page) pairs, evenly spaced over all pages of all documents, in order."""
    every = [(str(p), i + 1) for p, c in zip(pdfs, counts) for i in range(c)]
    if n > len(every):
        raise SystemExit(f"error: --pages {n} but the sources hold only {len(every)} pages")
    picks = np.floor(np.arange(n) * (len(every) / n)).astype(np.int64)
    return [every[i] for i in picks]


def page_texts(pages: list[tuple[str, int]]) -> list[str]:
    """The text layer of every corpus page (pypdfium2), whitespace collapsed."""
    import pypdfium2 as pdfium

    out: list[str] = []
    docs: dict[str, Any] = {}
    try:
        for path, page in pages:
            if path not in docs:
                docs[path] = pdfium.PdfDocument(path)
            pg = docs[path][page - 1]
            tp = pg.get_textpage()
            out.append(re.sub(r"\s+", " ", tp.get_text_range()).strip())
            tp.close()
            pg.close()
    finally:
        for d in docs.values():
            d.close()
    return out


# ----------------------------------------------------------------- render + encode
def render_fixed(pages: list[tuple[str, int]], width: int, height: int) -> list[Any]:
    """Render ``pages`` with the project's PDF renderer, each fitted into ``width`` x ``height`` on white."""
    from PIL import ImageOps

    from renderers import PageRecord, RenderSettings, render_source

    by_file: dict[str, list[int]] = {}
    for path, page in pages:
        by_file.setdefault(path, []).append(page)
    images: dict[tuple[str, int], Any] = {}
    for path, nums in by_file.items():
        settings = RenderSettings(max_pixels=width * height, pages=",".join(map(str, nums)))
        for rec in render_source(path, settings):
            if not isinstance(rec, PageRecord):
                raise SystemExit(f"error: cannot render {path}: {rec.reason}")
            images[(path, rec.page)] = ImageOps.pad(rec.image, (width, height), color="white")
    missing = [p for p in pages if p not in images]
    if missing:
        raise SystemExit(f"error: pages not rendered: {missing[:3]}")
    return [images[p] for p in pages]


def load_model(model: Path | None, out: Path, seed: int) -> tuple[Any, dict[str, Any]]:
    from dse.encoders import Encoder

    if model is None:
        model = out / "model"
        if not (model / "config.json").exists():
            from dse.testing.tiny_qwen import build_colqwen2

            log.info("building the tiny colqwen2 model (random weights, seed %d) in %s", seed, model)
            build_colqwen2(model, seed=seed)
        info = {"family": "colqwen2", "builder": "dse.testing.tiny_qwen.build_colqwen2", "size": "tiny", "seed": seed}
    else:
        info = {"path": str(model)}
    enc = Encoder.load(str(model), device="cpu")
    if enc.family not in ("colqwen2", "colqwen2.5") or enc.kind != "multi":
        raise SystemExit(f"error: {model} is a {enc.family} model; a ColQwen2 model is needed")
    info["family"] = enc.family
    return enc, info


def encode_pages(
    enc: Any,
    pages: list[tuple[str, int]],
    out: Path,
    config: dict[str, Any],
    width: int,
    height: int,
    chunk_pages: int,
    batch_size: int,
) -> int:
    """Render + encode every page into ``out/vectors.f16.npy`` (resumable per chunk); returns ``v``."""
    vec_path, prog_path = out / "vectors.f16.npy", out / "progress.json"
    done, v = 0, None
    if prog_path.exists() and vec_path.exists():
        prog = json.loads(prog_path.read_text())
        if prog.get("config") == config:
            done, v = int(prog["done"]), int(prog["v"])
            log.info("resuming after %d of %d pages", done, len(pages))
    mm = np.lib.format.open_memmap(vec_path, mode="r+") if v is not None else None
    t0 = time.perf_counter()
    start_done = done
    while done < len(pages):
        chunk = pages[done : done + chunk_pages]
        images = render_fixed(chunk, width, height)
        vecs = enc.encode_documents(images, batch_size=batch_size)
        if v is None:
            v = int(vecs[0].shape[0])
            log.info("%d vectors per page (%d x %d px)", v, width, height)
            mm = np.lib.format.open_memmap(vec_path, mode="w+", dtype=np.float16, shape=(len(pages) * v, DIM))
        assert mm is not None
        bad = [(pages[done + i], x.shape) for i, x in enumerate(vecs) if x.shape != (v, DIM)]
        if bad:
            raise SystemExit(f"error: page {bad[0][0]} gave {bad[0][1]} vectors, expected ({v}, {DIM})")
        mm[done * v : (done + len(chunk)) * v] = np.concatenate(vecs).astype(np.float16)
        mm.flush()
        done += len(chunk)
        prog_path.write_text(json.dumps({"config": config, "done": done, "v": v}))
        rate = (done - start_done) / (time.perf_counter() - t0)
        eta = (len(pages) - done) / rate if rate else 0.0
        log.info("encoded %d/%d pages (%.2f pages/s, ~%.0f s left)", done, len(pages), rate, eta)
    del mm
    assert v is not None
    return v


# ----------------------------------------------------------------- queries
def query_tokens(enc: Any, text: str) -> int:
    """Tokens (= vectors) of ``text`` as a ColQwen2 text query (prefix and augmentation included)."""
    return int(enc.processor.process_queries([text])["attention_mask"].sum())


def make_queries(enc: Any, texts: list[str], n: int, tokens: int, seed: int) -> tuple[list[str], list[int]]:
    """``n`` snippets of consecutive words of distinct pages, each exactly ``tokens`` query tokens."""
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    targets: list[int] = []
    for page in rng.permutation(len(texts)):
        words = [w for w in texts[page].split(" ") if w]
        if len(words) < 8:
            continue  # blank or near-blank page
        for start in rng.permutation(len(words))[:5]:
            snippet = None
            for end in range(start + 1, len(words) + 1):
                c = query_tokens(enc, " ".join(words[start:end]))
                if c >= tokens:
                    snippet = " ".join(words[start:end]) if c == tokens else None
                    break
            if snippet is not None:
                chosen.append(snippet)
                targets.append(int(page))
                break
        if len(chosen) == n:
            return chosen, targets
    raise SystemExit(f"error: found only {len(chosen)} of {n} query snippets of exactly {tokens} tokens")


# ----------------------------------------------------------------- main
def build(args: argparse.Namespace) -> Path:
    pdfs = find_pdfs(args.sources)
    counts = page_counts(pdfs)
    pages = select_pages(pdfs, counts, args.pages)
    out = args.out or args.cache / "data" / f"{KIND}-p{args.pages}"
    out.mkdir(parents=True, exist_ok=True)
    log.info("%d pages from %d PDFs (%d pages in all) -> %s", len(pages), len(pdfs), sum(counts), out)
    t0 = time.perf_counter()
    enc, model_info = load_model(args.model, out, args.model_seed)
    config = {
        "format": FORMAT,
        "pages": [list(p) for p in pages],  # as JSON gives it back, for the resume check
        "image_size": [args.width, args.height],
        "model": model_info,
    }
    (out / "meta.json").unlink(missing_ok=True)  # the corpus is complete only once meta.json exists
    v = encode_pages(enc, pages, out, config, args.width, args.height, args.chunk_pages, args.batch_size)
    encode_s = time.perf_counter() - t0
    np.save(out / "n_content.npy", np.full(len(pages), v, np.int64))
    (out / "pages.json").write_text(json.dumps([{"source": s, "page": p} for s, p in pages]))

    t1 = time.perf_counter()
    texts = page_texts(pages)
    snippets, targets = make_queries(enc, texts, args.queries, args.query_tokens, args.seed)
    qv = enc.encode_queries(snippets, batch_size=16)
    if any(x.shape != (args.query_tokens, DIM) for x in qv):  # pragma: no cover - guards make_queries
        raise SystemExit("error: a query's vector count differs from its token count")
    for old in [*out.glob("gt-q*.npz")]:
        old.unlink()  # new queries or pages: any cached ground truth is stale
    np.save(out / f"queries-q{args.queries}.npy", np.stack(qv).astype(np.float32))
    np.save(out / f"targets-q{args.queries}.npy", np.asarray(targets, np.int64))
    records = [
        {"text": t, "page": p, "source": pages[p][0], "source_page": pages[p][1]} for t, p in zip(snippets, targets)
    ]
    (out / f"queries-q{args.queries}.json").write_text(json.dumps(records, indent=1))
    query_s = time.perf_counter() - t1

    used: dict[str, int] = {}
    for s, _ in pages:
        used[s] = used.get(s, 0) + 1
    meta = {
        "format": FORMAT,
        "kind": KIND,
        "pages": len(pages),
        "vectors_per_page": v,
        "dim": DIM,
        "sources": [{"path": str(p), "pages": c, "used": used.get(str(p), 0)} for p, c in zip(pdfs, counts)],
        "image_size": [args.width, args.height],
        "visual_tokens": (args.width // 28) * (args.height // 28),
        "render": "renderers.render_source (pypdfium2), max_pixels = width * height, then PIL.ImageOps.pad on white",
        "model": model_info,
        "queries": {"n": args.queries, "tokens": args.query_tokens, "seed": args.seed},
        "build_seconds": {"render_encode": round(encode_s, 1), "queries": round(query_s, 1)},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    log.info(
        "done: %d pages x %d vectors, %d queries x %d tokens in %.0f s -> %s",
        len(pages),
        v,
        args.queries,
        args.query_tokens,
        encode_s + query_s,
        out,
    )
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sources", nargs="+", required=True, help="PDF files or directories (recursive)")
    ap.add_argument("--pages", type=int, default=2000, help="corpus pages (evenly spaced over the sources)")
    ap.add_argument("--out", type=Path, help="corpus directory (default <cache>/data/real-colqwen2-tiny-p<pages>)")
    ap.add_argument("--cache", type=Path, default=Path("/work/bench-cache"))
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--query-tokens", type=int, default=24, help="T: tokens (= vectors) of every query")
    ap.add_argument("--seed", type=int, default=0, help="query selection seed")
    ap.add_argument("--width", type=int, default=WIDTH, help="page image width (multiple of 28)")
    ap.add_argument("--height", type=int, default=HEIGHT, help="page image height (multiple of 28)")
    ap.add_argument("--model", type=Path, help="ColQwen2 model directory (default: build the tiny one)")
    ap.add_argument("--model-seed", type=int, default=0, help="weight seed of the tiny model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--chunk-pages", type=int, default=100, help="pages per resumable chunk")
    args = ap.parse_args(argv)
    if args.width % 28 or args.height % 28:
        ap.error("--width and --height must be multiples of 28 (the processor would resize the pages)")
    if args.pages < 1 or args.queries < 1:
        ap.error("--pages and --queries must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    build(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
