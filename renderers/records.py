"""What the renderers yield: one :class:`PageRecord` per rendered page, or a
:class:`RenderFailure` for a source (or the rest of a source) that could not be rendered."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image


@dataclass
class PageRecord:
    """One rendered page.

    ``page`` is 1-based. ``width``/``height`` are the image size in pixels.
    ``settings`` holds the effective settings used for this page (kind, backend,
    dpi/scale, web mode...). The pixels are held either as a decoded image or as
    PNG bytes (from a worker process or Chromium); :attr:`image` decodes lazily and
    :meth:`save_png` writes PNG bytes without re-encoding when it can.
    """

    doc_id: str
    page: int
    source: str
    title: str | None
    width: int
    height: int
    settings: dict[str, Any]
    _image: Image.Image | None = field(default=None, repr=False)
    _png: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._image is None and self._png is None:
            raise ValueError("a PageRecord needs an image or PNG bytes")

    @property
    def image(self) -> Image.Image:
        """The page as an RGB PIL image of ``size`` (decoded on first access)."""
        if self._image is None:
            assert self._png is not None
            with Image.open(io.BytesIO(self._png)) as im:
                im.load()
                self._image = im if im.mode == "RGB" else im.convert("RGB")
        return self._image

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height

    def png_bytes(self, compress_level: int = 1) -> bytes:
        """The page as PNG bytes (reuses already-encoded bytes)."""
        if self._png is not None:
            return self._png
        buf = io.BytesIO()
        self.image.save(buf, format="PNG", compress_level=compress_level)
        return buf.getvalue()

    def save_png(self, path: str | Path, compress_level: int = 1) -> None:
        """Write the page as a PNG file."""
        if self._png is not None:
            Path(path).write_bytes(self._png)
        else:
            self.image.save(path, format="PNG", compress_level=compress_level)

    def metadata(self) -> dict[str, Any]:
        """JSON-friendly description (no pixels)."""
        return {
            "doc_id": self.doc_id,
            "page": self.page,
            "source": self.source,
            "title": self.title,
            "width": self.width,
            "height": self.height,
            "settings": self.settings,
        }


@dataclass(frozen=True)
class RenderFailure:
    """A source that failed (``page`` is set when earlier pages did render).

    ``reason`` is a readable sentence; ``error_type`` the exception class name
    (e.g. ``"EncryptedDocumentError"``).
    """

    source: str
    doc_id: str
    reason: str
    error_type: str
    page: int | None = None

    def metadata(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "doc_id": self.doc_id,
            "source": self.source,
            "error": self.reason,
            "error_type": self.error_type,
        }
        if self.page is not None:
            d["page"] = self.page
        return d
