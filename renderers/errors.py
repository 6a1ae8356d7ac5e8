"""Exceptions raised while resolving or rendering a source.

Every rendering problem is a :class:`RenderError` subclass with a readable message.
The pipeline turns them into :class:`renderers.records.RenderFailure` records, so one
bad document never stops a job; ``error_type`` in the record is the class name.
"""

from __future__ import annotations


class SettingsError(ValueError):
    """Invalid render settings (bad page-range syntax, non-positive DPI, ...)."""


class RenderError(Exception):
    """Base class: a source could not be (fully) rendered. ``str(exc)`` is the reason.

    ``page`` (1-based) is set when the failure concerns one page of a document.
    """

    def __init__(self, message: str, *, page: int | None = None) -> None:
        super().__init__(message)
        self.page = page


class SourceNotFoundError(RenderError):
    """The path does not exist, or a glob matched nothing."""


class UnsupportedFormatError(RenderError):
    """The file type (or URL scheme) is not one the renderers handle."""


class FormatMismatchError(RenderError):
    """The file content is not what its extension says (e.g. a ``.pdf`` that is a PNG)."""


class EmptyFileError(RenderError):
    """The file has zero bytes."""


class CorruptDocumentError(RenderError):
    """The document is damaged and cannot be parsed."""


class TruncatedDocumentError(CorruptDocumentError):
    """The document ends early (e.g. a PDF without its ``%%EOF`` trailer)."""


class EncryptedDocumentError(RenderError):
    """The document is encrypted and no (or a wrong) password was given."""


class NoPagesError(RenderError):
    """The document has no pages, or the page selection selects none of them."""


class ImageTooLargeError(RenderError):
    """An image exceeds the hard pixel cap (decompression-bomb guard)."""


class ConversionError(RenderError):
    """LibreOffice failed to convert an office document to PDF."""


class RenderTimeoutError(RenderError):
    """A conversion or a page load did not finish within its timeout."""


class WebError(RenderError):
    """Base class for web page failures."""


class HttpStatusError(WebError):
    """The server answered with an HTTP 4xx/5xx status."""


class NetworkError(WebError):
    """DNS failure, refused connection, unreachable host, TLS error..."""


class DownloadBlockedError(WebError):
    """The URL answered with a file download instead of a page (downloads are blocked)."""


class BackendUnavailableError(RenderError):
    """A required external tool (Chromium, LibreOffice, poppler) is missing or failed to start."""


#: The one line shown when Playwright is missing (the same text as ``dse.extras.install_hint("web")``).
WEB_EXTRA_HINT = "the 'web' extra is not installed: pip install 'dse[web]'"


class WebExtraMissingError(BackendUnavailableError, ImportError):
    """Playwright (the ``web`` extra) is not installed; web sources fail with :data:`WEB_EXTRA_HINT`.

    Also an :class:`ImportError`, like every missing optional dependency of the package."""

    def __init__(self, message: str = WEB_EXTRA_HINT) -> None:
        super().__init__(message)
        self.name = "playwright"
