"""``dse render``: render sources to page images plus a ``pages.jsonl`` manifest.

Output layout::

    OUT/pages.jsonl          one JSON object per page (and one per failed source)
    OUT/<doc_id>/p0001.png   page images

Exit status: 0 all rendered, 1 some sources failed (the rest was written),
2 usage error (nothing matched, bad --pages, ...). Files of unsupported types met in
directories are skipped and counted in the report (listed with ``-v``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from dse.cli import EXIT_OK, EXIT_PARTIAL, UsageError
from dse.cli.common import no_sources_error, positive_float, positive_int
from renderers import (
    PageRecord,
    Renderer,
    RenderFailure,
    RenderSettings,
    SettingsError,
    iter_sources,
)

log = logging.getLogger(__name__)

MANIFEST = "pages.jsonl"


def add_render_arguments(p: argparse.ArgumentParser) -> None:
    """The rendering options, shared by ``dse render`` and ``dse index``."""
    p.add_argument(
        "--dpi",
        type=positive_float,
        default=None,
        help="PDF/office render resolution (default 144; with --max-pixels, the lower of the two wins)",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help="pixel budget per page: pages are rendered/downscaled so width*height <= N",
    )
    p.add_argument(
        "--pages",
        default=None,
        metavar="RANGES",
        help="page ranges to render, e.g. 1-3,7 or 5- (slides, TIFF frames and web tiles too)",
    )
    p.add_argument("--password", default=None, help="password for encrypted PDFs (also $DSE_PDF_PASSWORD)")
    p.add_argument(
        "--pdf-backend",
        choices=("pdfium", "pdf2image"),
        default="pdfium",
        help="PDF rasteriser (default pdfium; pdf2image uses poppler)",
    )
    p.add_argument(
        "--web-mode",
        choices=("viewport", "full", "tiles"),
        default="viewport",
        help="web capture: first 980x980 screen (default), full page, or viewport-high tiles",
    )
    p.add_argument(
        "--timeout",
        type=positive_float,
        default=None,
        metavar="S",
        help="seconds per web page load and per office conversion (defaults 30 and 180)",
    )
    p.add_argument(
        "--workers", type=positive_int, default=None, metavar="N", help="parallel LibreOffice conversions (default 2)"
    )
    p.add_argument(
        "--pdf-workers",
        type=int,
        default=1,
        metavar="N",
        help="processes rendering the pages of a large PDF (default 1 = in-process; 0 = one per CPU)",
    )
    p.add_argument(
        "--web-concurrency",
        type=positive_int,
        default=4,
        metavar="N",
        help="web pages rendered at once in the shared browser (default 4)",
    )
    p.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=100_000_000,
        metavar="N",
        help="reject image files larger than N pixels (default 100000000)",
    )
    p.add_argument(
        "--chromium", default=None, metavar="PATH", help="Chromium executable (default: $DSE_CHROMIUM or PATH)"
    )
    p.add_argument(
        "--soffice", default=None, metavar="PATH", help="LibreOffice executable (default: $DSE_SOFFICE or PATH)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "render",
        help="render documents, images and web pages to page images",
        description=(
            "Render PDFs, office documents (via LibreOffice), images and web pages (via Chromium) "
            "to PNG page images in OUT/<doc_id>/pNNNN.png, with a manifest OUT/pages.jsonl. "
            "SRC may be files, directories (recursive), globs or http(s) URLs."
        ),
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="file, directory, glob or http(s) URL")
    p.add_argument("--out", "-o", required=True, type=Path, metavar="DIR", help="output directory")
    add_render_arguments(p)
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> RenderSettings:
    """Build :class:`RenderSettings` from parsed arguments (raises UsageError on bad values)."""
    kwargs: dict = dict(
        dpi=args.dpi,
        max_pixels=args.max_pixels,
        pages=args.pages,
        password=args.password if args.password is not None else os.environ.get("DSE_PDF_PASSWORD"),
        pdf_backend=args.pdf_backend,
        web_mode=args.web_mode,
        web_concurrency=args.web_concurrency,
        image_max_pixels=args.max_image_pixels,
        chromium=args.chromium,
        soffice=args.soffice,
        pdf_workers=args.pdf_workers,
    )
    if args.timeout is not None:
        kwargs.update(web_timeout=args.timeout, office_timeout=args.timeout)
    if args.workers is not None:
        kwargs.update(office_workers=args.workers)
    try:
        return RenderSettings(**kwargs)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")

    skipped: list[Path] = []
    sources = list(iter_sources(args.sources, skipped=skipped))
    if not any(s.error is None for s in sources):
        raise no_sources_error(args.sources, sources, skipped)
    out.mkdir(parents=True, exist_ok=True)

    n_pages = n_failures = 0
    docs_with_pages: set[str] = set()
    failed_docs: set[str] = set()
    bar = tqdm(total=len(sources), unit="doc", desc="render", file=sys.stderr, disable=None, dynamic_ncols=True)
    current: str | None = None

    def advance(doc_id: str) -> None:
        nonlocal current
        if doc_id != current:
            if current is not None:
                bar.update(1)
            current = doc_id

    with open(out / MANIFEST, "w", encoding="utf-8") as manifest, Renderer(settings) as renderer:
        for rec in renderer.render(sources):
            advance(rec.doc_id)
            if isinstance(rec, PageRecord):
                rel = Path(rec.doc_id) / f"p{rec.page:04d}.png"
                (out / rec.doc_id).mkdir(exist_ok=True)
                rec.save_png(out / rel, compress_level=settings.png_compress_level)
                manifest.write(json.dumps({**rec.metadata(), "image": rel.as_posix()}, ensure_ascii=False) + "\n")
                n_pages += 1
                docs_with_pages.add(rec.doc_id)
            else:
                assert isinstance(rec, RenderFailure)
                manifest.write(json.dumps(rec.metadata(), ensure_ascii=False) + "\n")
                n_failures += 1
                failed_docs.add(rec.doc_id)
                where = f" (page {rec.page})" if rec.page is not None else ""
                tqdm.write(f"dse render: failed: {rec.source}{where}: {rec.reason}", file=sys.stderr)
            manifest.flush()
            bar.set_postfix(pages=n_pages, failed=n_failures, refresh=False)
        if current is not None:
            bar.update(1)
    bar.close()

    if args.verbose:
        for path in skipped:
            print(f"skipped (unsupported type): {path}", file=sys.stderr)
    note = f"; {len(skipped)} skipped: unsupported type" if skipped else ""
    print(
        f"rendered {n_pages} pages from {len(docs_with_pages)} documents; {n_failures} failures{note} "
        f"-> {out / MANIFEST}"
    )
    return EXIT_PARTIAL if n_failures else EXIT_OK
