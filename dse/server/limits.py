"""Request limits of the HTTP server, its client-error exception, and the query-image decoder.

The limits on fields (``k``, text length, number of filters) are enforced by the request models
(:mod:`dse.server.schemas`), so they are in the OpenAPI document; the body size by
:class:`~dse.server.middleware.BodyLimitMiddleware`; the image size by :func:`decode_image`.
Other violations raise :class:`RequestError` carrying an HTTP status and a one-line, specific
message; the app turns it into ``{"detail": message}`` with that status.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

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
