"""Request limits of the HTTP server and the checks that enforce them.

Every violation raises :class:`RequestError` carrying an HTTP status and a one-line,
specific message; the app turns it into ``{"detail": message}`` with that status.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from PIL import Image


class RequestError(Exception):
    """A client error: ``status`` (400, 404, 413, ...) and a clear ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Limits:
    """Bounds on what one request may ask for.

    ``max_upload_bytes``: whole request body (bytes; multipart uploads included);
    ``max_image_pixels``: width x height of an uploaded query image (pixels), checked from the
    image header before any decoding; ``max_k``: hits per search; ``max_answer_k``: pages given
    to the generator; ``max_text_chars``: query/question length (characters);
    ``max_filters``: ``key=value`` metadata filters per request.
    """

    max_upload_bytes: int = 10 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    max_k: int = 100
    max_answer_k: int = 10
    max_text_chars: int = 2000
    max_filters: int = 16

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def check_text(text: Any, limits: Limits, *, what: str = "text", required: bool = False) -> str | None:
    """``None`` for a missing/blank optional text; the stripped-length-checked string otherwise."""
    if text is None or (isinstance(text, str) and not text.strip()):
        if required:
            raise RequestError(400, f"empty {what}: give a non-blank {what}")
        return None
    if not isinstance(text, str):
        raise RequestError(400, f"{what} must be a string")
    if len(text) > limits.max_text_chars:
        raise RequestError(413, f"{what} is too long: {len(text)} characters (limit {limits.max_text_chars})")
    return text


def check_k(k: Any, limits: Limits, *, maximum: int | None = None, name: str = "k") -> int:
    """An integer in ``[1, maximum]`` (default ``limits.max_k``); strings of digits are accepted."""
    top = limits.max_k if maximum is None else maximum
    try:
        value = int(k)
        if isinstance(k, float) and k != value:
            raise ValueError
    except (TypeError, ValueError):
        raise RequestError(400, f"{name} must be an integer, got {k!r}") from None
    if not 1 <= value <= top:
        raise RequestError(400, f"{name} must be between 1 and {top}, got {value}")
    return value


def check_filters(filters: Any, limits: Limits) -> dict[str, str] | None:
    """Metadata filters: a flat JSON object of scalar values (string equality, AND); ``None`` when empty."""
    if filters is None:
        return None
    if not isinstance(filters, Mapping):
        raise RequestError(400, 'filters must be a JSON object of key: value pairs, e.g. {"team": "finance"}')
    if len(filters) > limits.max_filters:
        raise RequestError(400, f"too many filters: {len(filters)} (limit {limits.max_filters})")
    out: dict[str, str] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not key.strip():
            raise RequestError(400, "filter keys must be non-empty strings")
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, (str, int, float)):
            raise RequestError(
                400, f"filter {key!r}: the value must be a string or a number, got {type(value).__name__}"
            )
        out[key] = str(value)
    return out or None


def decode_image(data: bytes, limits: Limits, *, what: str = "uploaded image") -> Image.Image:
    """Bytes of an image file -> the RGB query image (:func:`renderers.load_image`: first frame, EXIF
    orientation), after checking its pixel count from the header (413 over the limit, 400 unreadable)."""
    from renderers import CorruptDocumentError, ImageTooLargeError, load_image

    if not data:
        raise RequestError(400, f"the {what} is empty")
    try:
        return load_image(data, image_max_pixels=limits.max_image_pixels)
    except ImageTooLargeError as exc:
        raise RequestError(413, f"the {what} is too large: {exc}") from None
    except CorruptDocumentError as exc:
        raise RequestError(
            400, f"the {what} is not an image in a format this server reads (PNG, JPEG, WebP, ...): {exc}"
        ) from None
