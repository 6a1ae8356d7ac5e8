"""The rendering job: sources in, page records (or failures) out, lazily and in input order.

:class:`Renderer` owns the job's shared resources - a PDF process pool, a LibreOffice
converter pool and one browser - and starts slow work (office conversions, web
pages) a few sources ahead of the consumer, so they run in parallel while PDFs and
images render in the calling thread. Records come out in input order; within a
document, in page order.

Not thread-safe: use one :class:`Renderer` per thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from renderers.detect import DESCRIPTIONS, check_content, sniff_file
from renderers.errors import RenderError, SourceNotFoundError, UnsupportedFormatError
from renderers.images import render_image
from renderers.office import OfficeConverter, slide_titles
from renderers.pdf import PdfPagePool, render_pdf
from renderers.records import PageRecord, RenderFailure
from renderers.settings import RenderSettings
from renderers.sources import Source, iter_sources

log = logging.getLogger(__name__)

Record = PageRecord | RenderFailure


@dataclass
class _Job:
    source: Source
    error: RenderError | None = None
    future: Future | None = None


def _failure(source: Source, exc: BaseException) -> RenderFailure:
    if isinstance(exc, RenderError):
        reason, page = str(exc), exc.page
    else:
        reason, page = f"unexpected error: {type(exc).__name__}: {exc}", None
    return RenderFailure(
        source=source.source, doc_id=source.doc_id, reason=reason, error_type=type(exc).__name__, page=page
    )


class Renderer:
    """A rendering job with shared resources; use as a context manager.

    >>> with Renderer(RenderSettings(dpi=100)) as r:
    ...     for rec in r.render(["docs/", "https://example.org"]):
    ...         ...
    """

    def __init__(self, settings: RenderSettings | None = None) -> None:
        self.settings = settings or RenderSettings()
        self._pool: PdfPagePool | None = None
        self._office: OfficeConverter | None = None
        self._web: Any = None

    # -- resources ---------------------------------------------------------------

    @property
    def pdf_pool(self) -> PdfPagePool | None:
        workers = self.settings.effective_pdf_workers
        if workers <= 1 or self.settings.pdf_backend != "pdfium":
            return None
        if self._pool is None:
            self._pool = PdfPagePool(workers)
        return self._pool

    @property
    def office(self) -> OfficeConverter:
        if self._office is None:
            s = self.settings
            self._office = OfficeConverter(s.office_workers, s.office_timeout, soffice=s.soffice)
        return self._office

    @property
    def web(self) -> Any:
        if self._web is None:
            from renderers.web import WebRenderer

            self._web = WebRenderer(self.settings)
        return self._web

    def close(self) -> None:
        """Stop the browser, the converter threads and the worker processes."""
        for name in ("_web", "_office", "_pool"):
            res = getattr(self, name)
            setattr(self, name, None)
            if res is not None:
                try:
                    res.close()
                except Exception as exc:  # pragma: no cover - best effort
                    log.warning("closing %s failed: %s", name.strip("_"), exc)

    def __enter__(self) -> Renderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- job -----------------------------------------------------------------------

    def _start(self, source: Source) -> _Job:
        """Validate a source and start its background work (office/web)."""
        job = _Job(source)
        try:
            if source.error is not None:
                raise (UnsupportedFormatError if source.is_url else SourceNotFoundError)(source.error)
            if source.path is not None and not source.path.is_file():
                raise UnsupportedFormatError(f"not a regular file (device, FIFO or socket): {source.source}")
            if source.kind == "unknown":
                raise _unsupported(source)
            if source.path is not None:
                check_content(source.path, source.kind)
            if source.kind == "office":
                assert source.path is not None
                job.future = self.office.submit(source.path)
            elif source.kind == "web":
                job.future = self.web.submit(source)
        except RenderError as exc:
            job.error = exc
        except OSError as exc:
            job.error = SourceNotFoundError(f"cannot read {source.source}: {exc.strerror or exc}")
        return job

    def _finish(self, job: _Job) -> Iterator[Record]:
        """Yield the records of one started job (runs PDF/image rendering here)."""
        source = job.source
        if job.error is not None:
            yield _failure(source, job.error)
            return
        last_page: int | None = None
        try:
            for rec in self._pages(job):
                last_page = rec.page
                yield rec
        except Exception as exc:
            fail = _failure(source, exc)
            if fail.page is None and last_page is not None:
                fail = RenderFailure(fail.source, fail.doc_id, fail.reason, fail.error_type, page=last_page + 1)
            if not isinstance(exc, RenderError):
                log.debug("unexpected error rendering %s", source.source, exc_info=True)
            yield fail

    def _pages(self, job: _Job) -> Iterator[PageRecord]:
        source, s = job.source, self.settings
        if source.kind == "pdf":
            assert source.path is not None
            yield from render_pdf(source.path, source, s, pool=self.pdf_pool)
        elif source.kind == "image":
            assert source.path is not None
            yield from render_image(source.path, source, s)
        elif source.kind == "office":
            assert job.future is not None and source.path is not None
            pdf: Path = job.future.result()
            try:
                titles = slide_titles(source.path)
                yield from render_pdf(
                    pdf,
                    source,
                    s,
                    pool=self.pdf_pool,
                    titles=titles,
                    extra_settings={"kind": "office", "converter": "libreoffice"},
                )
            finally:
                self.office.discard(pdf)
        elif source.kind == "web":
            assert job.future is not None
            yield from job.future.result()
        else:  # pragma: no cover - _start rejects these
            raise _unsupported(source)

    def render(self, inputs: Iterable[str | os.PathLike[str] | Source]) -> Iterator[Record]:
        """Render every source from ``inputs`` (see :func:`renderers.sources.iter_sources`).

        Yields :class:`PageRecord` s and :class:`RenderFailure` s in input order.
        Office conversions and web pages are started up to a few sources ahead.
        """
        s = self.settings
        ahead = max(2, s.office_workers + s.web_concurrency)
        sources = iter_sources(inputs)
        window: deque[_Job] = deque()
        exhausted = False

        def fill() -> None:
            # Keep up to `ahead` unfinished background jobs in flight; finished ones wait
            # for their turn (PDF/image jobs do nothing until then). The window length
            # bounds what is held in memory.
            nonlocal exhausted
            while not exhausted and len(window) < 4 * ahead and _running(window) < ahead:
                src = next(sources, None)
                if src is None:
                    exhausted = True
                    return
                window.append(self._start(src))

        try:
            while True:
                fill()
                if not window:
                    break
                head = window[0]
                # While the next job in order is still running, start more as others finish.
                while head.future is not None and not head.future.done():
                    running = [j.future for j in window if j.future is not None and not j.future.done()]
                    wait(running, return_when=FIRST_COMPLETED)
                    fill()
                yield from self._finish(window.popleft())
        finally:
            for job in window:
                if job.future is not None:
                    job.future.cancel()
                    if job.source.kind == "office" and job.future.done() and not job.future.cancelled():
                        with contextlib.suppress(Exception):
                            self.office.discard(job.future.result())

    def render_source(self, source: Source | str | os.PathLike[str]) -> Iterator[Record]:
        """Render a single source (same records as :meth:`render` gives for it)."""
        if not isinstance(source, Source):
            found = list(iter_sources([source]))
            if len(found) != 1:
                raise ValueError(f"{source!r} expands to {len(found)} sources; use render()")
            source = found[0]
        yield from self._finish(self._start(source))


def _running(window: Iterable[_Job]) -> int:
    return sum(1 for j in window if j.future is not None and not j.future.done())


def _unsupported(source: Source) -> UnsupportedFormatError:
    ext = source.path.suffix.lower() if source.path is not None else ""
    try:
        label = sniff_file(source.path) if source.path is not None and source.path.is_file() else None
    except OSError:
        label = None
    looks = f" (looks like {DESCRIPTIONS.get(label, label)})" if label and label != "empty" else ""
    return UnsupportedFormatError(f"unsupported file type {ext or '(no extension)'!r}{looks}")


def render(
    sources: Iterable[str | os.PathLike[str] | Source], settings: RenderSettings | None = None
) -> Iterator[Record]:
    """Render files, directories, globs and URLs into page records, lazily.

    Yields a :class:`PageRecord` per rendered page and a :class:`RenderFailure` per
    source (or remainder of a source) that failed; a failure never stops the job.
    Resources (browser, workers) live as long as the iteration.
    """
    with Renderer(settings) as renderer:
        yield from renderer.render(sources)


def render_source(source: Source | str | os.PathLike[str], settings: RenderSettings | None = None) -> Iterator[Record]:
    """Render one source with its own short-lived resources (see :func:`render`)."""
    with Renderer(settings) as renderer:
        yield from renderer.render_source(source)
