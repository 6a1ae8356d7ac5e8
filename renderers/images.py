"""Image files as pages: EXIF orientation, RGB conversion, pixel budget, bomb guard.

Multi-frame TIFFs give one page per frame; animated GIF/WebP give their first
frame only (animation frames are not pages). The size in the file header is
checked against ``settings.image_max_pixels`` *before* any pixel is decoded.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from renderers.errors import CorruptDocumentError, ImageTooLargeError, NoPagesError, SourceNotFoundError
from renderers.records import PageRecord
from renderers.settings import RenderSettings, fit_to_budget, select_pages

log = logging.getLogger(__name__)

_MULTI_PAGE_FORMATS = frozenset({"TIFF"})


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Transparency is composited over white; 16/32-bit integer greyscale is scaled to
    8 bits (not clipped); float images in [0, 1] are scaled by 255; CMYK, palette,
    L, 1, YCbCr, LAB... use Pillow's conversions.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        import numpy as np

        arr = np.asarray(image)
        if mode == "F":
            arr = arr.astype(np.float64)
            peak = float(np.nanmax(arr)) if arr.size else 0.0
            arr = arr * 255.0 if peak <= 1.0 else arr
            arr8 = np.clip(np.nan_to_num(arr), 0, 255).astype(np.uint8)
        else:
            arr = arr.astype(np.int64)
            peak = int(arr.max()) if arr.size else 0
            if mode.startswith("I;16") or peak > 255:
                arr = arr >> 8 if peak <= 65535 else (arr * 255 // max(peak, 1))
            arr8 = np.clip(arr, 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _open(path: Path | IO[bytes]) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise CorruptDocumentError("corrupt image: Pillow cannot identify the image data") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptDocumentError(f"corrupt image: {exc}") from None


def _check_size(image: Image.Image, cap: int, frame: int) -> None:
    w, h = image.size
    if w * h > cap:
        where = f" (frame {frame})" if frame > 1 else ""
        raise ImageTooLargeError(
            f"image{where} is {w}x{h} = {w * h / 1e6:.1f} MP, over the {cap / 1e6:g} MP limit (image_max_pixels)",
            page=frame,
        )


def _decode_frame(image: Image.Image, max_pixels: int | None) -> tuple[Image.Image, bool]:
    """Decode the current frame, apply EXIF orientation, convert to RGB, fit the budget."""
    if max_pixels is not None and image.format == "JPEG":
        tw, th = fit_to_budget(*image.size, max_pixels)
        if (tw, th) != image.size:
            image.draft("RGB", (tw, th))  # decode at a reduced DCT scale (>= the target)
    orientation = image.getexif().get(0x0112, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image.load()
    transposed = ImageOps.exif_transpose(image)
    rotated = orientation not in (None, 1)
    rgb = to_rgb(transposed)
    tw, th = fit_to_budget(rgb.width, rgb.height, max_pixels)
    if (tw, th) != rgb.size:
        rgb = rgb.resize((tw, th), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return rgb, rotated


def _decode_checked(image: Image.Image, max_pixels: int | None, page: int) -> tuple[Image.Image, bool]:
    """:func:`_decode_frame` with decoding failures as render errors."""
    try:
        return _decode_frame(image, max_pixels)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"image rejected as a decompression bomb: {exc}", page=page) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptDocumentError(f"corrupt or truncated image: {exc}", page=page) from None


def load_image(
    file: str | os.PathLike[str] | bytes | IO[bytes],
    *,
    max_pixels: int | None = None,
    image_max_pixels: int = RenderSettings.image_max_pixels,
) -> Image.Image:
    """One image (a path, the file's bytes or a binary file object) as the page image an indexer sees.

    The first frame, EXIF orientation applied, converted to 8-bit RGB (alpha over white) and,
    with ``max_pixels``, downscaled so that width * height <= ``max_pixels``. The size in the
    header is checked against ``image_max_pixels`` (default 100 MP) before any pixel is decoded.
    Raises :class:`SourceNotFoundError`, :class:`ImageTooLargeError` or
    :class:`CorruptDocumentError` (also for empty data).
    """
    if isinstance(file, (bytes, bytearray)):
        if not file:
            raise CorruptDocumentError("empty image data")
        file = io.BytesIO(file)
    elif isinstance(file, (str, os.PathLike)):
        file = Path(file)
        if not file.is_file():
            raise SourceNotFoundError(f"image not found: {file}")
    image = _open(file)
    try:
        _check_size(image, image_max_pixels, 1)
        return _decode_checked(image, max_pixels, 1)[0]
    finally:
        image.close()


def render_image(path: Path, source: Any, settings: RenderSettings) -> Iterator[PageRecord]:
    """Render the image file at ``path`` (one page, or one per TIFF frame).

    Raises :class:`ImageTooLargeError` (over ``image_max_pixels``, checked from the
    header), :class:`CorruptDocumentError` (unreadable/truncated data) or
    :class:`NoPagesError` (the page selection selects no frame).
    """
    image = _open(path)
    try:
        fmt = image.format or "?"
        n_frames = int(getattr(image, "n_frames", 1)) if fmt in _MULTI_PAGE_FORMATS else 1
        pages = select_pages(settings.page_selection, n_frames)
        if not pages:
            raise NoPagesError(f"page selection {settings.pages!r} selects none of the image's {n_frames} frames")
        for p in pages:
            if p > 1 or n_frames > 1:
                try:
                    image.seek(p - 1)
                except EOFError:
                    raise CorruptDocumentError(f"frame {p} is missing (truncated file)", page=p) from None
            _check_size(image, settings.image_max_pixels, p)
            original_size = list(image.size)
            rgb, rotated = _decode_checked(image, settings.max_pixels, p)
            page_settings = {
                "kind": "image",
                "format": fmt,
                "max_pixels": settings.max_pixels,
                "original_size": original_size,
                "exif_transposed": rotated,
            }
            if n_frames > 1:
                page_settings["frame"] = p
            yield PageRecord(
                doc_id=source.doc_id,
                page=p,
                source=source.source,
                title=None,
                width=rgb.width,
                height=rgb.height,
                settings=page_settings,
                _image=rgb,
            )
    finally:
        image.close()
