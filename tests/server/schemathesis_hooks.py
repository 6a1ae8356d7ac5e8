"""Schemathesis hooks for the dse server (``SCHEMATHESIS_HOOKS=schemathesis_hooks``, with tests/server
on ``PYTHONPATH``).

``POST /search`` takes a query image as a multipart file part whose ``encoding.contentType`` lists
image types. A JSON Schema cannot say "the bytes decode as an image", so without help schemathesis
sends random bytes as "schema-valid" images, which the server rightly refuses (400). These hooks
teach it what a file of those media types is: real PNG / JPEG / WebP / GIF / BMP / TIFF images of
random size and content, so its positive cases are real queries and its negative ones still probe
everything else.
"""

from __future__ import annotations

import io

import schemathesis
from hypothesis import strategies as st
from PIL import Image

FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/webp": "WEBP",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
}


@st.composite
def images(draw: st.DrawFn, fmt: str) -> bytes:
    """An encoded image: 1-96 px a side (aspect ratio within the encoders' 200:1), one to four colour blocks."""
    width = draw(st.integers(1, 96))
    height = draw(st.integers(max(1, width // 150), min(96, width * 150)))
    colour = st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255))
    im = Image.new("RGB", (width, height), draw(colour))
    for _ in range(draw(st.integers(0, 3))):
        x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
        im.paste(draw(colour), (x0, y0, draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


for media_type, fmt in FORMATS.items():
    schemathesis.openapi.media_type(media_type, images(fmt))
