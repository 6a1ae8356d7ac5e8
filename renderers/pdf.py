"""PDF rendering: pypdfium2 (default, optionally in a process pool) or pdf2image/poppler.

Pages are rendered and yielded one at a time; at most a small window of pages is
in flight when the process pool is used, so a large document is never held in
memory. Sizes follow :func:`renderers.settings.pdf_scale` for both backends, so
the two agree pixel for pixel in size.
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import re
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from PIL import Image

from renderers.errors import (
    BackendUnavailableError,
    CorruptDocumentError,
    EncryptedDocumentError,
    NoPagesError,
    RenderError,
    TruncatedDocumentError,
)
from renderers.records import PageRecord
from renderers.settings import RenderSettings, pdf_scale, pixel_size, select_pages

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------- diagnosis


def _has_eof_marker(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(max(0, size - 2048))
        return b"%%EOF" in fh.read()


def _raw_page_count(path: Path) -> int | None:
    """Page count if PDFium can load the file at all (even with zero pages), else None."""
    import pypdfium2.raw as pdfium_c

    doc = pdfium_c.FPDF_LoadDocument((str(path) + "\x00").encode("utf-8", "surrogateescape"), None)
    if not doc:
        return None
    try:
        return int(pdfium_c.FPDF_GetPageCount(doc))
    finally:
        pdfium_c.FPDF_CloseDocument(doc)


def diagnose_unreadable_pdf(path: Path, detail: str) -> RenderError:
    """The most specific error for a PDF that a backend failed to open."""
    try:
        n = _raw_page_count(path)
    except Exception:  # pragma: no cover - diagnosis must never raise
        n = None
    if n == 0:
        return NoPagesError("PDF has no pages")
    if not _has_eof_marker(path):
        return TruncatedDocumentError(f"truncated PDF: the file ends before its %%EOF trailer ({detail})")
    return CorruptDocumentError(f"corrupt PDF: cannot be parsed ({detail})")


def _password_error(password: str | None) -> EncryptedDocumentError:
    if password:
        return EncryptedDocumentError("encrypted PDF: wrong password")
    return EncryptedDocumentError("encrypted PDF: a password is required (settings.password / --password)")


# ------------------------------------------------------------------------ pdfium


def open_pdfium(path: Path, password: str | None) -> Any:
    """Open ``path`` with pypdfium2, mapping load errors to :class:`RenderError` subclasses."""
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        doc = pdfium.PdfDocument(path, password=password)
    except pdfium.PdfiumError as exc:
        code = getattr(exc, "err_code", None)
        if code == pdfium_c.FPDF_ERR_PASSWORD:
            raise _password_error(password) from None
        if code == pdfium_c.FPDF_ERR_SECURITY:
            raise EncryptedDocumentError("encrypted PDF: unsupported security handler") from None
        detail = str(exc).removeprefix("Failed to load document ").strip("(). ") or "PDFium error"
        raise diagnose_unreadable_pdf(path, detail) from None
    try:
        doc.init_forms()  # so filled-in form fields are drawn
    except Exception as exc:  # pragma: no cover - forms are optional
        log.debug("no form rendering for %s: %s", path, exc)
    return doc


def pdfium_title(doc: Any) -> str | None:
    """The document's metadata Title, if any."""
    try:
        title = doc.get_metadata_dict(skip_empty=True).get("Title")
    except Exception:  # pragma: no cover - broken metadata must not fail the render
        return None
    if not isinstance(title, str):
        return None
    return title.strip() or None


def _render_pdfium_page(doc: Any, index: int, scale: float) -> Image.Image:
    import pypdfium2 as pdfium

    try:
        page = doc[index]
        try:
            bitmap = page.render(scale=scale, rev_byteorder=True)
            image = bitmap.to_pil()
        finally:
            page.close()
    except pdfium.PdfiumError as exc:
        raise CorruptDocumentError(f"page {index + 1} cannot be rendered: {exc}", page=index + 1) from None
    return image if image.mode == "RGB" else image.convert("RGB")


# Worker-process state: the last document opened (pages of one PDF arrive in sequence).
_WORKER_DOC: tuple[str, str | None, Any] | None = None


def _worker_render_png(
    path: str, password: str | None, jobs: Sequence[tuple[int, float]], compress_level: int
) -> list[tuple[int, bytes, int, int]]:
    """Process-pool task: render ``(page_index, scale)`` jobs to PNG bytes.

    Returns ``(page_index, png_bytes, width, height)`` per job.
    """
    global _WORKER_DOC
    if _WORKER_DOC is None or _WORKER_DOC[:2] != (path, password):
        if _WORKER_DOC is not None:
            _WORKER_DOC[2].close()
            _WORKER_DOC = None
        _WORKER_DOC = (path, password, open_pdfium(Path(path), password))
    doc = _WORKER_DOC[2]
    out = []
    for index, scale in jobs:
        image = _render_pdfium_page(doc, index, scale)
        buf = io.BytesIO()
        image.save(buf, format="PNG", compress_level=compress_level)
        out.append((index, buf.getvalue(), image.width, image.height))
    return out


class PdfPagePool:
    """A lazily started pool of ``spawn`` worker processes rendering PDF pages to PNG.

    ``spawn`` (not ``fork``) because the parent may run threads (browser, converters).
    At most ``2 * workers`` tasks are in flight, so memory stays bounded.
    """

    def __init__(self, workers: int, pages_per_task: int = 2) -> None:
        self.workers = workers
        self.pages_per_task = pages_per_task
        self._executor: ProcessPoolExecutor | None = None

    def _get(self) -> ProcessPoolExecutor:
        if self._executor is None:
            ctx = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(max_workers=self.workers, mp_context=ctx)
        return self._executor

    def render_png(
        self, path: Path, password: str | None, jobs: Sequence[tuple[int, float]], compress_level: int
    ) -> Iterator[tuple[int, bytes, int, int]]:
        """Render ``(page_index, scale)`` jobs in order, yielding ``(index, png, w, h)``."""
        executor = self._get()
        chunks = [jobs[i : i + self.pages_per_task] for i in range(0, len(jobs), self.pages_per_task)]
        pending: deque[Future] = deque()
        next_chunk = 0
        try:
            while next_chunk < len(chunks) or pending:
                while next_chunk < len(chunks) and len(pending) < 2 * self.workers:
                    pending.append(
                        executor.submit(_worker_render_png, str(path), password, chunks[next_chunk], compress_level)
                    )
                    next_chunk += 1
                try:
                    results = pending.popleft().result()
                except BrokenProcessPool as exc:
                    self.close()
                    raise RenderError(
                        f"a PDF render worker process died ({exc}); if this runs from a script, guard its "
                        "entry point with `if __name__ == '__main__':`, or use pdf_workers=1"
                    ) from None
                yield from results
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def _usable_titles(titles: Sequence[str | None] | None, n_pages: int, path: Path) -> Sequence[str | None] | None:
    if titles is not None and len(titles) != n_pages:
        log.debug("%s: %d slide titles for %d pages; using the document title", path, len(titles), n_pages)
        return None
    return titles


def _render_with_pdfium(
    path: Path,
    source: Any,
    settings: RenderSettings,
    pool: PdfPagePool | None,
    titles: Sequence[str | None] | None,
    extra: dict[str, Any],
) -> Iterator[PageRecord]:
    doc = open_pdfium(path, settings.password)
    try:
        n_pages = len(doc)
        pages = select_pages(settings.page_selection, n_pages)
        if not pages:
            raise NoPagesError(f"page selection {settings.pages!r} selects none of the document's {n_pages} pages")
        doc_title = pdfium_title(doc)
        titles = _usable_titles(titles, n_pages, path)
        jobs: list[tuple[int, float]] = []
        for p in pages:
            w_pt, h_pt = doc.get_page_size(p - 1)
            try:
                jobs.append((p - 1, pdf_scale(w_pt, h_pt, settings.dpi, settings.max_pixels)))
            except ValueError as exc:
                raise CorruptDocumentError(f"page {p}: {exc}", page=p) from None

        def record(index: int, scale: float, w: int, h: int, image=None, png=None) -> PageRecord:
            page_title = titles[index] if titles is not None and index < len(titles) and titles[index] else doc_title
            page_settings = {
                "kind": "pdf",
                "backend": "pdfium",
                "dpi": round(scale * 72, 3),
                "scale": round(scale, 6),
                "max_pixels": settings.max_pixels,
                **extra,
            }
            return PageRecord(
                doc_id=source.doc_id,
                page=index + 1,
                source=source.source,
                title=page_title,
                width=w,
                height=h,
                settings=page_settings,
                _image=image,
                _png=png,
            )

        scales = dict(jobs)
        use_pool = pool is not None and pool.workers > 1 and len(jobs) >= settings.pdf_parallel_min_pages
        if use_pool:
            assert pool is not None
            log.debug("rendering %d pages of %s in %d processes", len(jobs), path, pool.workers)
            for index, png, w, h in pool.render_png(path, settings.password, jobs, settings.png_compress_level):
                yield record(index, scales[index], w, h, png=png)
        else:
            for index, scale in jobs:
                image = _render_pdfium_page(doc, index, scale)
                yield record(index, scale, image.width, image.height, image=image)
    finally:
        doc.close()


# --------------------------------------------------------------------- pdf2image

_PAGE_SIZE_RE = re.compile(r"^Page\s+(\d+)\s+size$")


def _pdf2image_info(path: Path, password: str | None) -> dict[str, Any]:
    from pdf2image import pdfinfo_from_path
    from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError, PDFPopplerTimeoutError

    try:
        return pdfinfo_from_path(
            str(path),
            userpw=password,  # type: ignore[arg-type]  # pdf2image annotates `userpw: str = None`
            first_page=1,
            last_page=10**7,
            timeout=120,
        )
    except PDFInfoNotInstalledError:
        raise BackendUnavailableError("poppler's pdfinfo is not installed (needed by the pdf2image backend)") from None
    except PDFPopplerTimeoutError:
        raise CorruptDocumentError("pdfinfo timed out reading the PDF") from None
    except PDFPageCountError as exc:
        msg = str(exc)
        if "Incorrect password" in msg:
            raise _password_error(password) from None
        lines = [ln.strip() for ln in msg.splitlines()[1:] if ln.strip()]
        raise diagnose_unreadable_pdf(path, "poppler: " + ("; ".join(dict.fromkeys(lines)) or "unreadable")) from None


def _render_with_pdf2image(
    path: Path,
    source: Any,
    settings: RenderSettings,
    titles: Sequence[str | None] | None,
    extra: dict[str, Any],
) -> Iterator[PageRecord]:
    from pdf2image import convert_from_path
    from pdf2image.exceptions import PDFPopplerTimeoutError

    info = _pdf2image_info(path, settings.password)
    n_pages = int(info.get("Pages", 0))
    if n_pages == 0:
        raise NoPagesError("PDF has no pages")
    pages = select_pages(settings.page_selection, n_pages)
    if not pages:
        raise NoPagesError(f"page selection {settings.pages!r} selects none of the document's {n_pages} pages")
    doc_title = (info.get("Title") or "").strip() or None
    titles = _usable_titles(titles, n_pages, path)
    for p in pages:
        size = str(info.get(f"Page {p:4d} size") or info.get(f"Page {p} size") or "")
        if not size:  # keys look like "Page    1 size"; find it regardless of padding
            size = next((str(v) for k, v in info.items() if (m := _PAGE_SIZE_RE.match(k)) and int(m.group(1)) == p), "")
        m = re.match(r"\s*([\d.]+)\s*x\s*([\d.]+)", size)
        if not m:
            raise CorruptDocumentError(f"page {p}: pdfinfo reports no page size", page=p)
        w_pt, h_pt = float(m.group(1)), float(m.group(2))
        rot = next((str(v) for k, v in info.items() if re.match(rf"^Page\s+{p}\s+rot$", k)), "0")
        quarter_turn = int(float(rot or 0)) % 180 == 90
        if quarter_turn:  # pdfinfo reports the unrotated size
            w_pt, h_pt = h_pt, w_pt
        scale = pdf_scale(w_pt, h_pt, settings.dpi, settings.max_pixels)
        w, h = pixel_size(w_pt, h_pt, scale)
        # pdftoppm's -scale-to-x/-y also refer to the unrotated page.
        request = (h, w) if quarter_turn else (w, h)
        try:
            images = convert_from_path(
                str(path),
                first_page=p,
                last_page=p,
                size=request,
                userpw=settings.password,  # type: ignore[arg-type]  # pdf2image annotates `userpw: str = None`
                timeout=300,
            )
        except PDFPopplerTimeoutError:
            raise CorruptDocumentError(f"page {p}: pdftoppm timed out", page=p) from None
        if not images:
            raise CorruptDocumentError(f"page {p}: pdftoppm produced no image", page=p)
        image = images[0] if images[0].mode == "RGB" else images[0].convert("RGB")
        page_title = titles[p - 1] if titles is not None and p - 1 < len(titles) and titles[p - 1] else doc_title
        page_settings = {
            "kind": "pdf",
            "backend": "pdf2image",
            "dpi": round(scale * 72, 3),
            "scale": round(scale, 6),
            "max_pixels": settings.max_pixels,
            **extra,
        }
        yield PageRecord(
            doc_id=source.doc_id,
            page=p,
            source=source.source,
            title=page_title,
            width=image.width,
            height=image.height,
            settings=page_settings,
            _image=image,
        )


# --------------------------------------------------------------------------- API


def render_pdf(
    path: Path,
    source: Any,
    settings: RenderSettings,
    *,
    pool: PdfPagePool | None = None,
    titles: Sequence[str | None] | None = None,
    extra_settings: dict[str, Any] | None = None,
) -> Iterator[PageRecord]:
    """Render the selected pages of the PDF at ``path`` as :class:`PageRecord` s.

    ``source`` supplies ``doc_id`` and ``source`` for the records (for office files it
    is the original document, while ``path`` is the converted PDF). ``titles``
    optionally gives a per-page title (slide titles); the PDF Title is the fallback.
    ``extra_settings`` is merged into each record's ``settings``.
    Raises :class:`RenderError` subclasses.
    """
    extra = dict(extra_settings or {})
    if settings.pdf_backend == "pdf2image":
        yield from _render_with_pdf2image(path, source, settings, titles, extra)
    else:
        yield from _render_with_pdfium(path, source, settings, pool, titles, extra)
