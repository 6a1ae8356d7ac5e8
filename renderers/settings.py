"""Render settings and page-range parsing."""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from renderers.errors import SettingsError

#: DPI used when neither ``dpi`` nor ``max_pixels`` is given.
DEFAULT_DPI = 144.0

PdfBackend = Literal["pdfium", "pdf2image"]
WebMode = Literal["viewport", "full", "tiles"]

_RANGE_RE = re.compile(r"(\d+)?\s*(-)?\s*(\d+)?")


@dataclass(frozen=True)
class PageSelection:
    """1-based, inclusive page ranges, e.g. parsed from ``"1-3,7,10-"``.

    ``ranges`` holds ``(start, end)`` pairs; ``end`` is ``None`` for an open range.
    """

    ranges: tuple[tuple[int, int | None], ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> PageSelection:
        """Parse ``"1-3,7"``, ``"5-"`` (5 to the end) or ``"-3"`` (1 to 3).

        Raises :class:`SettingsError` with the offending part on bad syntax.
        """
        if not isinstance(text, str) or not text.strip():
            raise SettingsError("empty page selection (expected e.g. '1-3,7')")
        ranges: list[tuple[int, int | None]] = []
        for part in text.split(","):
            m = _RANGE_RE.fullmatch(part.strip())
            first, dash, last = (m.group(1), m.group(2), m.group(3)) if m else (None, None, None)
            if not m or not (first or last) or (last and not dash):
                raise SettingsError(f"bad page range {part.strip()!r} in {text!r} (expected e.g. '1-3,7' or '5-')")
            start = int(first) if first else 1
            end: int | None = (int(last) if last else None) if dash else start
            if start < 1:
                raise SettingsError(f"bad page range {part.strip()!r} in {text!r} (pages are numbered from 1)")
            if end is not None and end < start:
                raise SettingsError(f"bad page range {part.strip()!r} in {text!r} (range ends before it starts)")
            ranges.append((start, end))
        return cls(tuple(ranges), text.strip())

    def select(self, n_pages: int) -> list[int]:
        """The selected 1-based page numbers that exist in an ``n_pages`` document, sorted."""
        chosen: set[int] = set()
        for start, end in self.ranges:
            stop = n_pages if end is None else min(end, n_pages)
            chosen.update(range(start, stop + 1))
        return sorted(chosen)

    def __contains__(self, page: object) -> bool:
        return isinstance(page, int) and any(s <= page and (e is None or page <= e) for s, e in self.ranges)


def select_pages(selection: PageSelection | None, n_pages: int) -> list[int]:
    """Pages to render (1-based) for a document of ``n_pages``; all of them without a selection."""
    return list(range(1, n_pages + 1)) if selection is None else selection.select(n_pages)


@dataclass(frozen=True)
class RenderSettings:
    """Everything that controls how sources become page images.

    Resolution (PDF and office documents):
      * ``dpi`` only (default 144): scale = dpi / 72.
      * ``max_pixels`` only: the largest scale with ``width * height <= max_pixels``.
      * both: the smaller of the two scales.
    ``max_pixels`` also downscales images and web screenshots that exceed it.
    """

    dpi: float | None = None
    max_pixels: int | None = None
    pages: str | None = None
    password: str | None = field(default=None, repr=False)
    pdf_backend: PdfBackend = "pdfium"
    #: processes rendering the pages of one large PDF in parallel (pypdfium2 backend).
    #: 1 (default) renders in-process; 0 = one per CPU (max 4). Worker processes are
    #: started with ``spawn``, so a script using them needs an ``if __name__ == "__main__":`` guard.
    #: On the shared 2-core development machine the pool was slower than in-process
    #: (see bench/RESULTS.md); it pays off only with idle cores.
    pdf_workers: int = 1
    #: use the process pool only for documents with at least this many selected pages
    pdf_parallel_min_pages: int = 8
    png_compress_level: int = 1
    #: hard cap for image files (pixels); larger files are rejected before decoding
    image_max_pixels: int = 100_000_000
    web_mode: WebMode = "viewport"
    web_viewport: tuple[int, int] = (980, 980)
    #: seconds to wait for a web page's DOMContentLoaded (then ``load``, best effort)
    web_timeout: float = 30.0
    #: seconds of best-effort wait for network idle after ``load``
    web_idle_timeout: float = 2.0
    web_concurrency: int = 4
    #: cap (CSS px) on the captured height in ``full`` and ``tiles`` modes
    web_max_height: int = 16384
    #: Chromium executable; default: $DSE_CHROMIUM, then ``chromium``/``chromium-browser`` on PATH
    chromium: str | None = None
    office_workers: int = 2
    #: seconds per LibreOffice conversion before its process group is killed
    office_timeout: float = 180.0
    #: LibreOffice executable; default: $DSE_SOFFICE, then ``soffice``/``libreoffice`` on PATH
    soffice: str | None = None

    def __post_init__(self) -> None:
        if self.dpi is not None and not (self.dpi > 0 and math.isfinite(self.dpi)):
            raise SettingsError(f"dpi must be a positive number, got {self.dpi!r}")
        if self.max_pixels is not None and self.max_pixels < 64:
            raise SettingsError(f"max_pixels must be at least 64, got {self.max_pixels!r}")
        if self.pages is not None:
            PageSelection.parse(self.pages)
        if self.pdf_backend not in ("pdfium", "pdf2image"):
            raise SettingsError(f"pdf_backend must be 'pdfium' or 'pdf2image', got {self.pdf_backend!r}")
        if self.web_mode not in ("viewport", "full", "tiles"):
            raise SettingsError(f"web_mode must be 'viewport', 'full' or 'tiles', got {self.web_mode!r}")
        for name in ("office_workers", "web_concurrency"):
            if getattr(self, name) < 1:
                raise SettingsError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.pdf_workers < 0:
            raise SettingsError(f"pdf_workers must be >= 0, got {self.pdf_workers!r}")
        for name in ("web_timeout", "office_timeout"):
            if not getattr(self, name) > 0:
                raise SettingsError(f"{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.web_idle_timeout < 0:
            raise SettingsError(f"web_idle_timeout must be >= 0, got {self.web_idle_timeout!r}")
        if self.image_max_pixels < 1:
            raise SettingsError(f"image_max_pixels must be >= 1, got {self.image_max_pixels!r}")
        if not 0 <= self.png_compress_level <= 9:
            raise SettingsError(f"png_compress_level must be 0..9, got {self.png_compress_level!r}")
        vw, vh = self.web_viewport
        if vw < 1 or vh < 1:
            raise SettingsError(f"web_viewport must be positive, got {self.web_viewport!r}")

    @property
    def page_selection(self) -> PageSelection | None:
        return PageSelection.parse(self.pages) if self.pages is not None else None

    @property
    def effective_pdf_workers(self) -> int:
        if self.pdf_workers:
            return self.pdf_workers
        return max(1, min(os.cpu_count() or 1, 4))

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of the settings (the password is never included)."""
        d = asdict(self)
        d.pop("password")
        d["web_viewport"] = list(self.web_viewport)
        return d


def pdf_scale(width_pt: float, height_pt: float, dpi: float | None, max_pixels: int | None) -> float:
    """Scale factor (pixels per PDF point) for a page of ``width_pt`` x ``height_pt``.

    Rendered size is ``ceil(width_pt * scale)`` x ``ceil(height_pt * scale)`` pixels,
    which never exceeds ``max_pixels`` when a budget is given (see :class:`RenderSettings`).
    """
    if width_pt <= 0 or height_pt <= 0:
        raise ValueError(f"page has no area ({width_pt} x {height_pt} pt)")
    scales = []
    if dpi is not None:
        scales.append(dpi / 72.0)
    if max_pixels is not None:
        scales.append(math.sqrt(max_pixels / (width_pt * height_pt)))
    scale = min(scales) if scales else DEFAULT_DPI / 72.0
    if max_pixels is not None:
        while scale > 0 and math.ceil(width_pt * scale) * math.ceil(height_pt * scale) > max_pixels:
            scale *= 0.999
    return scale


def pixel_size(width_pt: float, height_pt: float, scale: float) -> tuple[int, int]:
    """Pixel (width, height) of a page rendered at ``scale`` (same rounding as pypdfium2)."""
    return max(1, math.ceil(width_pt * scale)), max(1, math.ceil(height_pt * scale))


def fit_to_budget(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """Largest (w, h) with the same aspect ratio and ``w * h <= max_pixels`` (unchanged if it fits)."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    s = math.sqrt(max_pixels / (width * height))
    w, h = max(1, math.floor(width * s)), max(1, math.floor(height * s))
    while w * h > max_pixels and (w > 1 or h > 1):
        if w >= h:
            w -= 1
        else:
            h -= 1
    return w, h
