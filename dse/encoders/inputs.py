"""Input checks shared by all encoders: clear :class:`EncoderError` messages, no tracebacks.

Image mode policy (documented choice):

* ``RGB`` is used as is.
* Modes with an unambiguous 8-bit RGB rendering are converted silently (one INFO
  log line per encode call says how many): ``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``,
  ``LAB``, ``HSV``, ``RGBX`` and, composited on a white background like a page,
  the alpha modes ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``.
* Every other mode (``I``, ``F``, ``I;16``, ``I;16B``, ``I;16L``, ``I;16N``, ...: high
  bit-depth or float pixels whose display range is unknown) raises
  :class:`UnsupportedImageMode`; convert such images yourself first.

The pipeline can call :func:`check_image` / :func:`check_query` per item to skip bad
items and keep going; the ``encode_*`` methods check a whole call up front and fail
before any model work.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from PIL import Image

from dse.encoders.errors import EncoderError

logger = logging.getLogger(__name__)

#: Modes converted to RGB without loss of meaning.
CONVERTIBLE_MODES = frozenset({"L", "1", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
#: Modes with transparency: composited on white, then RGB.
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


class InvalidInput(EncoderError):
    """An input the encoders cannot take (empty text, zero-size image, wrong type...)."""


class UnsupportedImageMode(InvalidInput):
    """An image whose PIL mode has no safe RGB conversion (e.g. 16-bit ``I;16``)."""


def _label(what: str, index: int | None) -> str:
    return what if index is None else f"{what} #{index}"


def to_rgb(image: Image.Image, *, what: str = "image", index: int | None = None) -> Image.Image:
    """Validate one image and return it as RGB (see the module doc for the mode policy).

    Raises :class:`InvalidInput` for a non-image or a zero-size image and
    :class:`UnsupportedImageMode` for modes such as ``I;16``.
    """
    label = _label(what, index)
    if not isinstance(image, Image.Image):
        raise InvalidInput(f"{label} is a {type(image).__name__}, expected a PIL.Image.Image")
    width, height = image.size
    if width <= 0 or height <= 0:
        raise InvalidInput(f"{label} has zero size ({width}x{height} px)")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if mode in CONVERTIBLE_MODES:
        return image.convert("RGB")
    raise UnsupportedImageMode(
        f"{label} has PIL mode {mode!r}, which has no safe RGB conversion; "
        f"convert it to RGB first (supported: RGB, {', '.join(sorted(CONVERTIBLE_MODES | ALPHA_MODES))})"
    )


def check_image(image: Image.Image, *, what: str = "image", index: int | None = None) -> Image.Image:
    """Alias of :func:`to_rgb` for per-item validation in pipelines."""
    return to_rgb(image, what=what, index=index)


def check_text(text: str, *, what: str = "query", index: int | None = None) -> str:
    """Validate one text: a ``str`` with at least one non-whitespace character."""
    label = _label(what, index)
    if not isinstance(text, str):
        raise InvalidInput(f"{label} is a {type(text).__name__}, expected a str")
    if not text.strip():
        raise InvalidInput(f"{label} is empty" + (" (whitespace only)" if text else ""))
    return text


def check_query(text: str, *, index: int | None = None) -> str:
    """Validate one text query (see :func:`check_text`)."""
    return check_text(text, what="query", index=index)


def _as_list(values: Sequence | None, name: str) -> list | None:
    if values is None:
        return None
    if isinstance(values, (str, bytes, Image.Image)):
        raise InvalidInput(f"{name} must be a sequence (list/tuple), got a single {type(values).__name__}")
    return list(values)


def check_images(images: Sequence[Image.Image] | None, *, what: str = "image") -> list[Image.Image]:
    """Validate a sequence of images; returns RGB copies where conversion was needed."""
    items = _as_list(images, f"{what}s")
    if items is None:
        raise InvalidInput(f"no {what}s given")
    out = [to_rgb(im, what=what, index=i) for i, im in enumerate(items)]
    converted = sum(1 for a, b in zip(items, out, strict=True) if a is not b)
    if converted:
        modes = sorted({im.mode for im in items if im.mode != "RGB"})
        logger.info("converted %d %s(s) from mode(s) %s to RGB", converted, what, ", ".join(modes))
    return out


def check_texts(texts: Sequence[str] | None, *, what: str = "query") -> list[str]:
    """Validate a sequence of texts (none empty)."""
    items = _as_list(texts, f"{what} texts")
    if items is None:
        raise InvalidInput(f"no {what} texts given")
    return [check_text(t, what=what, index=i) for i, t in enumerate(items)]


def check_query_inputs(
    texts: Sequence[str] | None, images: Sequence[Image.Image] | None
) -> tuple[list[str] | None, list[Image.Image] | None]:
    """Validate the arguments of ``encode_queries``: text, image or fused (same lengths)."""
    if texts is None and images is None:
        raise InvalidInput("encode_queries needs texts, images, or both (fused queries); neither was given")
    t = check_texts(texts, what="query") if texts is not None else None
    i = check_images(images, what="query image") if images is not None else None
    if t is not None and i is not None and len(t) != len(i):
        raise InvalidInput(f"fused queries need one image per text: got {len(t)} texts and {len(i)} images")
    return t, i
