"""``GET`` and ``HEAD /pages/{page_id}/image``: a page's rendered image (``?width=N``: a JPEG thumbnail).

The file is looked up in the collection by id (never a path from the request). HEAD answers with the
headers GET would send (type, length, caching) and no body. Page ids are integers in
``[0, 2**63 - 1]`` (SQLite rowids): anything else is a 422, an unknown id a 404.
"""

import io
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response

from dse.server.deps import State, run_blocking
from dse.server.schemas import MAX_PAGE_ID, error_responses

PageId = Annotated[
    int, PathParam(ge=0, le=MAX_PAGE_ID, description="a page id (``page_id`` of a search hit)", examples=[1])
]
Width = Annotated[int | None, Query(ge=16, le=4096, description="thumbnail width in pixels (a JPEG)")]

CACHE = {"Cache-Control": "private, max-age=3600"}
IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The page image (PNG), or a JPEG thumbnail with ``width``",
        "content": {
            "image/png": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **error_responses(404, 422),
}

router = APIRouter(tags=["pages"])


async def _image(state: State, page_id: int, width: int | None, *, head: bool) -> Response:
    path: Path = await run_blocking(state.page_image_path, page_id)
    if width is None:
        return FileResponse(path, headers=CACHE)  # answers HEAD with headers only
    data: bytes = await run_blocking(thumbnail, path, width)
    if head:
        return Response(media_type="image/jpeg", headers={**CACHE, "Content-Length": str(len(data))})
    return Response(data, media_type="image/jpeg", headers=CACHE)


@router.get("/pages/{page_id}/image", response_class=Response, responses=IMAGE_RESPONSES)
async def page_image(page_id: PageId, state: State, width: Width = None) -> Response:
    """The page's rendered image, looked up in the collection (never a path from the request)."""
    return await _image(state, page_id, width, head=False)


@router.head("/pages/{page_id}/image", response_class=Response, responses=IMAGE_RESPONSES)
async def page_image_head(page_id: PageId, state: State, width: Width = None) -> Response:
    """The headers ``GET`` would send (type, length, caching), without the image."""
    return await _image(state, page_id, width, head=True)


def thumbnail(path: Path, width: int) -> bytes:
    """JPEG bytes of the image at ``path`` scaled down to ``width`` pixels (never up)."""
    from PIL import Image

    with Image.open(path) as source:
        im = source.convert("RGB")
    if im.width > width:
        im = im.resize((width, max(1, round(im.height * width / im.width))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()
