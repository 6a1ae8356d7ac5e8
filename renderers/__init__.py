"""Sources (PDF, office documents, images, web pages) -> page images.

Main entry point::

    from renderers import render, RenderSettings
    for rec in render(["report.pdf", "slides/", "https://example.org"], RenderSettings(dpi=144)):
        if isinstance(rec, RenderFailure):
            print(rec.source, rec.reason)
        else:
            rec.image  # RGB PIL image, rec.page is 1-based

For the collection layer: :func:`iter_sources` lists sources without rendering
(``Source.content_hash()`` for change detection) and :func:`render_source`
renders one. This package imports nothing from ``dse`` or ``indexes``.

Names are imported lazily (PEP 562), so PDF worker processes that only need
:mod:`renderers.pdf` start without loading the rest of the package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from renderers.errors import (
    BackendUnavailableError,
    ConversionError,
    CorruptDocumentError,
    DownloadBlockedError,
    EmptyFileError,
    EncryptedDocumentError,
    FormatMismatchError,
    HttpStatusError,
    ImageTooLargeError,
    NetworkError,
    NoPagesError,
    RenderError,
    RenderTimeoutError,
    SettingsError,
    SourceNotFoundError,
    TruncatedDocumentError,
    UnsupportedFormatError,
    WebError,
)

if TYPE_CHECKING:
    from renderers.images import load_image
    from renderers.pipeline import Renderer, render, render_source
    from renderers.records import PageRecord, RenderFailure
    from renderers.settings import DEFAULT_DPI, PageSelection, RenderSettings
    from renderers.sources import Source, iter_sources, make_doc_id

_LAZY = {
    "load_image": "renderers.images",
    "Renderer": "renderers.pipeline",
    "render": "renderers.pipeline",
    "render_source": "renderers.pipeline",
    "PageRecord": "renderers.records",
    "RenderFailure": "renderers.records",
    "DEFAULT_DPI": "renderers.settings",
    "PageSelection": "renderers.settings",
    "RenderSettings": "renderers.settings",
    "Source": "renderers.sources",
    "iter_sources": "renderers.sources",
    "make_doc_id": "renderers.sources",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'renderers' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_DPI",
    "BackendUnavailableError",
    "ConversionError",
    "CorruptDocumentError",
    "DownloadBlockedError",
    "EmptyFileError",
    "EncryptedDocumentError",
    "FormatMismatchError",
    "HttpStatusError",
    "ImageTooLargeError",
    "NetworkError",
    "NoPagesError",
    "PageRecord",
    "PageSelection",
    "RenderError",
    "RenderFailure",
    "RenderSettings",
    "RenderTimeoutError",
    "Renderer",
    "SettingsError",
    "Source",
    "SourceNotFoundError",
    "TruncatedDocumentError",
    "UnsupportedFormatError",
    "WebError",
    "iter_sources",
    "load_image",
    "make_doc_id",
    "render",
    "render_source",
]


def __dir__() -> list[str]:
    return sorted(__all__)
