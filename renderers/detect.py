"""File-type detection by content (magic bytes), and extension -> kind tables.

A file whose content contradicts its extension is rejected with
:class:`FormatMismatchError` ("not a PDF file (looks like a PNG image)") instead
of being rendered as whatever it really is: a mislabelled file is usually a sign
of a broken export or a mix-up, and silently indexing something else would hide
it. One exception: within the image family (a ``.jpg`` holding PNG data, ...)
the image is rendered, because Pillow decodes by content and this is common.
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
OFFICE_EXTS = frozenset({".pptx", ".ppt", ".odp", ".key", ".docx", ".doc", ".odt", ".rtf", ".xlsx", ".xls", ".ods"})
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
    ".key": "a Keynote file",
    ".rtf": "an RTF file",
}

#: Content labels accepted for each office extension.
_OFFICE_EXPECT: dict[str, frozenset[str]] = {
    ".pptx": frozenset({"zip"}),
    ".docx": frozenset({"zip"}),
    ".xlsx": frozenset({"zip"}),
    ".odp": frozenset({"zip"}),
    ".odt": frozenset({"zip"}),
    ".ods": frozenset({"zip"}),
    ".key": frozenset({"zip"}),
    ".ppt": frozenset({"ole2"}),
    ".xls": frozenset({"ole2"}),
    ".doc": frozenset({"ole2", "rtf"}),
    ".rtf": frozenset({"rtf"}),
}

#: Main part of each Office Open XML flavour.
_OOXML_MAIN = {".pptx": "ppt/presentation.xml", ".docx": "word/document.xml", ".xlsx": "xl/workbook.xml"}
_OOXML_NAMES = {".pptx": "a PowerPoint presentation", ".docx": "a Word document", ".xlsx": "an Excel workbook"}
_ODF_MIME = {
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
}

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
        expected = _OFFICE_EXPECT.get(ext)
        if expected is not None and label not in expected:
            raise _mismatch(ext, label)
        if label == "zip":
            check_office_zip(path)
    return label


def check_office_zip(path: Path) -> None:
    """Structural check of a ZIP-based office file before handing it to LibreOffice.

    Catches truncated/corrupt archives, missing OOXML/ODF parts and a file of the
    wrong flavour (a ``.pptx`` that is really a Word document). Raises
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
            if ext in _OOXML_MAIN:
                if "[Content_Types].xml" not in names:
                    raise CorruptDocumentError(f"broken {what}: missing [Content_Types].xml (not Office Open XML)")
                main = _OOXML_MAIN[ext]
                if main not in names:
                    for other, part in _OOXML_MAIN.items():
                        if part in names:
                            raise FormatMismatchError(f"not {_OOXML_NAMES[ext]} (looks like {_OOXML_NAMES[other]})")
                    raise CorruptDocumentError(f"broken {what}: missing {main}")
            elif ext in _ODF_MIME:
                if "mimetype" not in names:
                    raise CorruptDocumentError(f"broken {what}: missing 'mimetype' entry (not OpenDocument)")
                mime = zf.read("mimetype").decode("ascii", "replace").strip()
                if mime != _ODF_MIME[ext]:
                    raise FormatMismatchError(f"not {_EXT_NAMES[ext]} (mimetype is {mime!r})")
    except zipfile.BadZipFile as exc:
        raise CorruptDocumentError(f"broken {what}: not a valid ZIP archive (truncated or corrupt: {exc})") from None
    except (EOFError, zipfile.LargeZipFile, NotImplementedError, ValueError, zlib.error) as exc:
        raise CorruptDocumentError(f"broken {what}: {exc}") from None
