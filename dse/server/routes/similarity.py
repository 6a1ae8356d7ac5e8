"""``GET /pages/{page_id}/similarity``: which patches of a page match a query (multi-vector collections).

The app lists this operation in its OpenAPI document only when the collection supports similarity
maps (``/info`` ``features.similarity``); on other collections the route still answers, with a 400
that says why.
"""

import io
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import Response

from dse.server.deps import State, run_blocking
from dse.server.limits import Limits, RequestError
from dse.server.routes.pages import PageId
from dse.server.schemas import NON_BLANK, SimilarityOut, error_responses


def build(limits: Limits) -> APIRouter:
    """The similarity-map router (the query text is bounded by ``limits.max_text_chars``)."""
    router = APIRouter(tags=["pages"])
    Text = Annotated[
        str,
        Query(min_length=1, max_length=limits.max_text_chars, pattern=NON_BLANK, description="the query text"),
    ]
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "description": "format=png: the page with the map overlaid; format=json: the map's values",
            "content": {
                "image/png": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"$ref": "#/components/schemas/SimilarityOut"}},
            },
        },
        **error_responses(400, 404, 422),
    }
    # the 200 JSON schema is referenced by name; listing the model under a never-sent status would
    # show in the document, so the app adds SimilarityOut to the components itself

    @router.get("/pages/{page_id}/similarity", response_class=Response, responses=responses)
    async def page_similarity(
        page_id: PageId,
        state: State,
        text: Text,
        format: Annotated[
            Literal["png", "json"], Query(description="png: overlay image; json: per-patch values")
        ] = "png",
        token: Annotated[
            int | None,
            Query(ge=0, description="one query token's map (default: the mean of the text tokens); 404 past the last"),
        ] = None,
        per_token: Annotated[bool, Query(description="json: include every query token's raw map")] = False,
        max_side: Annotated[int, Query(ge=64, le=4096, description="png: longest side of the overlay")] = 1024,
    ) -> Response:
        """Which patches of the page match the query (multi-vector collections)."""
        smap, image = await run_blocking(state.similarity, page_id, text)
        if token is not None and token >= len(smap.tokens):
            # 404: the map of that token does not exist (the count depends on the text, so no schema bound)
            raise RequestError(404, f"token index {token} is out of range: the query has {len(smap.tokens)} tokens")
        if format == "json":
            out = SimilarityOut(page_id=page_id, text=text, **smap.to_dict(token, per_token=per_token))
            exclude = None if per_token else {"per_token"}
            return Response(out.model_dump_json(exclude=exclude), media_type="application/json")
        data: bytes = await run_blocking(_overlay_png, smap, image, token, max_side)
        return Response(data, media_type="image/png")

    return router


def _overlay_png(smap: Any, image: Any, token: int | None, max_side: int) -> bytes:
    """PNG bytes of the page with the map of ``token`` overlaid (longest side ``max_side``)."""
    buf = io.BytesIO()
    smap.overlay(image, token, max_side=max_side).save(buf, "PNG")
    return buf.getvalue()
