"""``POST /search``: a text query as JSON; an image query (optionally fused with a text, or ranked with
it by RRF) as multipart/form-data.

Both bodies are validated against the models the OpenAPI document declares (``SearchRequest``,
``SearchForm``): unknown fields, ``"k": true``, blank texts are refused with 422. Text-only queries
go through the micro-batcher (when on); image, fused and RRF queries through ``Collection.search``.
"""

import asyncio
import json
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from dse.collection import CollectionError, Hit
from dse.encoders.base import EncoderError
from dse.server.deps import State, run_blocking
from dse.server.limits import Limits, RequestError, decode_image
from dse.server.schemas import (
    RequestModels,
    SearchResponse,
    error_responses,
    search_form_media_type,
    where_of,
)
from dse.server.state import ServerState

JSON_TYPES = ("application/json", "")


def hit_out(hit: Hit) -> dict[str, Any]:
    """A hit as the API returns it: no server paths, URLs of the page image and thumbnail instead."""
    d = hit.to_dict()
    d.pop("image_path", None)
    d["image_url"] = f"/pages/{hit.page_id}/image"
    d["thumbnail_url"] = f"/pages/{hit.page_id}/image?width=360"
    return d


def _validate(model: type[BaseModel], data: Any, *, json_text: bytes | None = None) -> Any:
    """``model`` validated from ``data`` (or JSON bytes); errors as a 422 located in the body."""
    try:
        if json_text is not None:
            return model.model_validate_json(json_text)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None


async def _read_form(request: Request, model: type[BaseModel]) -> tuple[Any, bytes | None]:
    """The multipart fields validated by ``model``, and the image bytes (``None`` without an image)."""
    try:
        form = await request.form(max_files=1, max_fields=8)
    except Exception as exc:  # starlette's MultiPartException and parser errors: a malformed body
        raise RequestError(400, f"malformed multipart form: {exc}") from exc
    data: dict[str, Any] = {}
    errors: list[dict[str, Any]] = []
    image: bytes | None = None
    for name, value in form.multi_items():
        if name in data:
            errors.append({"loc": ("body", name), "msg": "repeated field: give it once", "type": "repeated_field"})
            continue
        if name == "image":
            if not isinstance(value, UploadFile):
                errors.append(
                    {
                        "loc": ("body", name),
                        "msg": "must be a file part (a multipart field with a filename)",
                        "type": "file_expected",
                    }
                )
                continue
            image = await value.read()
            data[name] = image
        elif isinstance(value, UploadFile):
            errors.append({"loc": ("body", name), "msg": "must be a plain form field, not a file", "type": "str_type"})
        elif name == "filters":
            try:
                data[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise RequestError(400, f"filters must be a JSON object: {exc}") from exc
        else:
            data[name] = value
    if errors:
        raise RequestValidationError(errors)
    return _validate(model, data), image


async def _run_search(
    state: ServerState, text: str | None, image: Any, k: int, where: dict[str, str] | None, fusion: str | None
) -> list[Hit]:
    if image is None and text is not None and state.batcher is not None:
        try:
            return await asyncio.wrap_future(state.batcher.submit(text, k, where))
        except (CollectionError, EncoderError) as exc:
            # a vector backend that is down or failing is the server's problem (503/502), not the request's
            raise RequestError(getattr(exc, "http_status", 400), str(exc)) from exc
    hits: list[Hit] = await run_blocking(state.search, text, image, k=k, where=where, fusion=fusion)
    return hits


def build(models: RequestModels, limits: Limits) -> APIRouter:
    """The search router for these request models and limits."""
    router = APIRouter(tags=["search"])
    body = {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
                "multipart/form-data": search_form_media_type(),
            },
        }
    }

    @router.post(
        "/search",
        response_model=SearchResponse,
        openapi_extra=body,
        responses=error_responses(400, 413, 415, 422),
    )
    async def search(request: Request, state: State) -> dict[str, Any]:
        """Rank pages for a text query (JSON), or an image / fused text + image query (multipart)."""
        started = time.perf_counter()
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        image = None
        if media == "multipart/form-data":
            query, data = await _read_form(request, models.search_form)
            if data is not None:
                image = await run_in_threadpool(decode_image, data, limits)
            filters, fusion = query.filters, query.fusion
        elif media in JSON_TYPES or media.endswith("+json"):
            query = _validate(models.search, None, json_text=await request.body())
            filters, fusion = (query.filters if query.filters is not None else query.where), None
        else:
            raise RequestError(415, f"unsupported content type {media!r}; send application/json or multipart/form-data")
        fusion = "rrf" if fusion == "rrf" else None
        where = where_of(filters)
        hits = await _run_search(state, query.text, image, query.k, where, fusion)
        return {
            "hits": [hit_out(h) for h in hits],
            "query": {"text": query.text, "image": image is not None, "k": query.k, "filters": where, "fusion": fusion},
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    return router
