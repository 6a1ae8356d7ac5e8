"""File-type detection by content (magic bytes), and extension -> kind tables.

A file whose content contradicts its extension is rejected with
:class:`FormatMismatchError` ("not a PDF file (looks like a PNG image)") instead
of being rendered as whatever it really is: a mislabelled file is usually a sign
of a broken export or a mix-up, and silently indexing something else would hide
it. Two exceptions, where the backend decodes by content and mislabelled files are
common:

* within the image family (a ``.jpg`` holding PNG data, ...) Pillow renders the image;
* within the office family, LibreOffice picks its importer from the content, so an
  office extension accepts any office content (:data:`OFFICE_LABELS`): a ``.doc`` that
  is really a ``.docx``, an ``.xls`` holding an HTML table (a common "Excel export"),
  a ``.pptx`` holding a Word document, an OpenDocument *template* saved as ``.odp``...
  Only checks that LibreOffice would fail too are made before converting (a truncated
  ZIP, an Office Open XML package without ``[Content_Types].xml`` or document part).
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from renderers.errors import (
    CorruptDocumentError,
    EmptyFileError,
    FormatMismatchError,
)

PDF_EXTS = frozenset({".pdf"})
IMAGE_EXTS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
OFFICE_EXTS = frozenset(
    {".pptx", ".ppt", ".odp", ".otp", ".key", ".docx", ".doc", ".odt", ".ott", ".rtf", ".xlsx", ".xls", ".ods", ".ots"}
)
HTML_EXTS = frozenset({".html", ".htm", ".xhtml"})

#: Source kinds, by extension.
KIND_BY_EXT: dict[str, str] = {
    **{e: "pdf" for e in PDF_EXTS},
    **{e: "image" for e in IMAGE_EXTS},
    **{e: "office" for e in OFFICE_EXTS},
    **{e: "web" for e in HTML_EXTS},
}

IMAGE_LABELS = frozenset({"png", "jpeg", "gif", "webp", "bmp", "tiff"})

#: Human-readable name for each content label.
DESCRIPTIONS: dict[str, str] = {
    "pdf": "a PDF document",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "bmp": "a BMP image",
    "tiff": "a TIFF image",
    "zip": "a ZIP archive",
    "ole2": "a legacy MS Office (OLE2) file",
    "rtf": "an RTF document",
    "html": "an HTML document",
    "text": "plain text",
    "binary": "unrecognised binary data",
}

_EXT_NAMES = {
    ".pdf": "a PDF file",
    ".pptx": "a PowerPoint (.pptx) file",
    ".docx": "a Word (.docx) file",
    ".xlsx": "an Excel (.xlsx) file",
    ".ppt": "a PowerPoint (.ppt) file",
    ".doc": "a Word (.doc) file",
    ".xls": "an Excel (.xls) file",
    ".odp": "an OpenDocument presentation",
    ".odt": "an OpenDocument text",
    ".ods": "an OpenDocument spreadsheet",
    ".otp": "an OpenDocument presentation template",
    ".ott": "an OpenDocument text template",
    ".ots": "an OpenDocument spreadsheet template",
    ".key": "a Keynote file",
    ".rtf": "an RTF file",
}

#: Content labels that LibreOffice imports as office documents (it detects the format from the
#: content): ZIP packages (Office Open XML, OpenDocument, Keynote), legacy OLE2 files, RTF, and
#: HTML/XML as written by "Excel"/"Word" exports and Word/SpreadsheetML 2003 XML. Any office
#: extension accepts any of them; other content (PDF, images, plain text) is a mismatch.
OFFICE_LABELS = frozenset({"zip", "ole2", "rtf", "html"})

#: Main part of each Office Open XML flavour.
_OOXML_MAIN = {".pptx": "ppt/presentation.xml", ".docx": "word/document.xml", ".xlsx": "xl/workbook.xml"}
_ODF_EXTS = frozenset({".odp", ".odt", ".ods", ".otp", ".ott", ".ots"})
#: Every OpenDocument mimetype (documents, templates, drawings, formulas...) starts with this.
ODF_MIME_PREFIX = "application/vnd.oasis.opendocument."

SNIFF_BYTES = 4096


def sniff_bytes(head: bytes) -> str:
    """Content label for the first bytes of a file (see :data:`DESCRIPTIONS`); ``"empty"`` for b""."""
    if not head:
        return "empty"
    if b"%PDF-" in head[:1024]:
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole2"
    if head.lstrip().startswith(b"{\\rtf"):
        return "rtf"
    if b"\x00" in head:
        return "binary"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a multi-byte char cut at the end
            try:
                text = head.decode("latin-1")
            except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes everything
                return "binary"
        else:
            text = head[: exc.start].decode("utf-8")
    low = text.lstrip("\ufeff \t\r\n").lower()
    html_starts = ("<!doctype html", "<html", "<head", "<body", "<!--", "<meta", "<title", "<?xml")
    if low.startswith(html_starts) or "<html" in low[:1024]:
        return "html"
    return "text"


def sniff_file(path: Path) -> str:
    """Content label of the file at ``path`` (reads at most :data:`SNIFF_BYTES`)."""
    with open(path, "rb") as fh:
        return sniff_bytes(fh.read(SNIFF_BYTES))


def kind_for_label(label: str) -> str | None:
    """Source kind for a content label, for files whose extension says nothing."""
    if label == "pdf":
        return "pdf"
    if label in IMAGE_LABELS:
        return "image"
    if label == "html":
        return "web"
    if label in ("rtf",):
        return "office"
    return None


def _mismatch(ext: str, label: str) -> FormatMismatchError:
    if ext in IMAGE_EXTS:
        what = "an image file"
    elif ext in HTML_EXTS:
        what = "an HTML file"
    else:
        what = _EXT_NAMES.get(ext, f"a {ext} file")
    return FormatMismatchError(f"not {what} (looks like {DESCRIPTIONS.get(label, label)})")


def check_content(path: Path, kind: str) -> str:
    """Verify that the content of ``path`` matches the ``kind`` its extension implies.

    Returns the content label. Raises :class:`EmptyFileError`,
    :class:`FormatMismatchError` or (for damaged ZIP-based office files)
    :class:`CorruptDocumentError`.
    """
    label = sniff_file(path)
    ext = path.suffix.lower()
    if label == "empty":
        raise EmptyFileError("empty file (0 bytes)")
    if kind == "pdf":
        if label != "pdf":
            raise _mismatch(".pdf", label)
    elif kind == "image":
        if label not in IMAGE_LABELS:
            raise _mismatch(ext, label)
    elif kind == "web":
        if label not in ("html", "text"):
            raise _mismatch(ext, label)
    elif kind == "office":
        if label not in OFFICE_LABELS:
            raise _mismatch(ext, label)
        if label == "zip":
            check_office_zip(path)
    return label


def check_office_zip(path: Path) -> None:
    """Structural check of a ZIP-based office file before handing it to LibreOffice.

    Catches what LibreOffice cannot convert either: truncated/corrupt archives, an Office
    Open XML package without ``[Content_Types].xml`` or without any document part, a ZIP
    with an OOXML/OpenDocument extension that is neither, and a package whose mimetype is
    not an OpenDocument one (an EPUB named ``.odt``). The flavour is not checked against
    the extension (a ``.pptx`` holding a Word document, an ``.odp`` holding a presentation
    *template*): LibreOffice converts those by content. Raises
    :class:`CorruptDocumentError` or :class:`FormatMismatchError`.
    """
    ext = path.suffix.lower()
    what = f"{ext} file"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            bad = zf.testzip()
            if bad is not None:
                raise CorruptDocumentError(f"broken {what}: corrupt archive member {bad!r}")
            if "[Content_Types].xml" in names:  # Office Open XML, whatever its flavour
                if not any(part in names for part in _OOXML_MAIN.values()):
                    main = _OOXML_MAIN.get(ext, "a document part")
                    raise CorruptDocumentError(f"broken {what}: missing {main}")
            elif "mimetype" in names or "META-INF/manifest.xml" in names:  # OpenDocument
                mime = zf.read("mimetype").decode("ascii", "replace").strip() if "mimetype" in names else ""
                if mime and not mime.startswith(ODF_MIME_PREFIX):
                    expected = _EXT_NAMES.get(ext, f"an office {ext} file")
                    raise FormatMismatchError(f"not {expected} (mimetype is {mime!r})")
            elif ext in _OOXML_MAIN:
                raise CorruptDocumentError(f"broken {what}: missing [Content_Types].xml (not Office Open XML)")
            elif ext in _ODF_EXTS:
                raise CorruptDocumentError(
                    f"broken {what}: no 'mimetype' entry nor META-INF/manifest.xml (not OpenDocument)"
                )
    except zipfile.BadZipFile as exc:
        raise CorruptDocumentError(f"broken {what}: not a valid ZIP archive (truncated or corrupt: {exc})") from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError, ValueError, zlib.error) as exc:
        raise CorruptDocumentError(f"broken {what}: {exc}") from None
