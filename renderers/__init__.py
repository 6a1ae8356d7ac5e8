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
"""

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
from renderers.pipeline import Renderer, render, render_source
from renderers.records import PageRecord, RenderFailure
from renderers.settings import DEFAULT_DPI, PageSelection, RenderSettings
from renderers.sources import Source, iter_sources, make_doc_id

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
    "make_doc_id",
    "render",
    "render_source",
]
