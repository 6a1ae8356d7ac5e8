"""The HTTP API and web page of a collection (FastAPI).

``create_app(collection_dir, api_key=None, generator=None, device="auto", micro_batch=True, ...)``
returns the app; ``dse serve`` runs it with uvicorn. Endpoints:

=========================================  ===================================================
``GET /health``                            liveness (no key needed)
``GET /info``                              collection statistics, enabled features, limits
``POST /search``                           JSON ``{text, k, filters, fusion}``, or multipart with
                                           an ``image`` file (+ ``text``, ``k``, ``filters``
                                           as a JSON string, ``fusion``) for image/fused queries
``GET /pages/{page_id}/image``             the page image (``?width=N`` for a thumbnail)
``GET /pages/{page_id}/similarity``        ``?text=...&format=png|json[&token=i][&per_token=1]``
                                           similarity map (multi-vector collections only)
``POST /answer``                           ``{question, k, filters}`` -> answer + cited pages
``GET /``                                  the web page (``/static/*``: its script and style)
``GET /docs``, ``/openapi.json``           the API description
=========================================  ===================================================

Errors are JSON ``{"detail": "..."}`` with a 4xx status (400 bad input, 401 key, 404 unknown
page, 413 too large, 503 answer mode off). Model work runs in worker threads, never on the
event loop; text queries are micro-batched across concurrent requests (see
:mod:`dse.server.batching`).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dse.collection import CollectionError, Hit
from dse.encoders.base import Encoder, EncoderError
from dse.server.limits import Limits, RequestError, check_filters, check_k, check_text, decode_image
from dse.server.security import api_key_header, bearer, request_key, verify_key
from dse.server.state import ServerState

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


# ------------------------------------------------------------------ schemas
class SearchRequest(BaseModel):
    """A text search (image and fused queries: send multipart/form-data with an ``image`` file)."""

    text: str | None = Field(None, description="query text", examples=["revenue by region"])
    k: int = Field(10, description="number of hits")
    filters: dict[str, Any] | None = Field(
        None, description="metadata filters, key: value (string equality, AND)", examples=[{"team": "finance"}]
    )
    where: dict[str, Any] | None = Field(None, description="alias of filters")
    fusion: str | None = Field(None, description="'rrf': late fusion of text-only and image-only rankings")


class AnswerRequest(BaseModel):
    question: str = Field(..., description="the question", examples=["What was the revenue in 2021?"])
    k: int = Field(3, description="pages given to the generator")
    filters: dict[str, Any] | None = Field(None, description="metadata filters")
    where: dict[str, Any] | None = Field(None, description="alias of filters")


class HitOut(BaseModel):
    rank: int
    score: float
    source: str
    page: int
    doc_id: str
    page_id: int
    title: str | None = None
    meta: dict[str, Any] = {}
    image_url: str
    thumbnail_url: str


class SearchResponse(BaseModel):
    hits: list[HitOut]
    query: dict[str, Any]
    took_ms: float


class AnswerPage(HitOut):
    number: int = Field(..., description="the page's number [i] in the generator's prompt")
    cited: bool = Field(..., description="whether the answer cites it")


class AnswerResponse(BaseModel):
    question: str
    answer: str
    pages: list[AnswerPage] = Field(..., description="the retrieved pages given to the generator, in rank order")
    citations: list[int] = Field(..., description="page numbers the answer cites")
    cited_pages: list[AnswerPage] = Field(..., description="the cited pages (all pages when the answer cites none)")
    cited_pages_source: str = Field(..., description="'citations' or 'all_retrieved'")
    generator: str | None = None
    took_ms: float


_SEARCH_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "image": {"type": "string", "format": "binary", "description": "query image"},
                        "text": {"type": "string", "description": "optional text (fused query)"},
                        "k": {"type": "integer", "default": 10},
                        "filters": {"type": "string", "description": 'JSON object, e.g. {"team": "finance"}'},
                        "fusion": {"type": "string", "enum": ["rrf"]},
                    },
                }
            },
        },
    }
}


def hit_out(hit: Hit) -> dict[str, Any]:
    """A hit as the API returns it: no server paths, URLs of the page image and thumbnail instead."""
    d = hit.to_dict()
    d.pop("image_path", None)
    d["image_url"] = f"/pages/{hit.page_id}/image"
    d["thumbnail_url"] = f"/pages/{hit.page_id}/image?width=360"
    return d


def answer_out(answer: Any) -> dict[str, Any]:
    """A :class:`dse.rag.Answer` as the API returns it (pages as :func:`hit_out` + number + cited)."""
    citations = [int(n) for n in getattr(answer, "citations", [])]
    numbers = {h.page_id: i for i, h in enumerate(answer.pages, start=1)}

    def page(hit: Hit) -> dict[str, Any]:
        number = numbers.get(hit.page_id, 0)
        return {**hit_out(hit), "number": number, "cited": number in citations}

    cited = getattr(answer, "cited_pages", None) or list(answer.pages)
    return {
        "question": answer.question,
        "answer": answer.answer,
        "pages": [page(h) for h in answer.pages],
        "citations": citations,
        "cited_pages": [page(h) for h in cited],
        "cited_pages_source": getattr(answer, "cited_pages_source", "citations" if citations else "all_retrieved"),
        "generator": getattr(answer, "generator", None),
    }


# -------------------------------------------------------------- body limit
class BodyLimitMiddleware:
    """Rejects request bodies over ``max_bytes`` with 413 (declared length up front, streamed length as read)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = JSONResponse(
            {"detail": f"the request body is too large (limit {self.max_bytes} bytes)"}, status_code=413
        )
        if declared is not None:
            try:
                if int(declared) > self.max_bytes:
                    await too_large(scope, receive, send)
                    return
            except ValueError:
                await JSONResponse({"detail": "bad Content-Length header"}, status_code=400)(scope, receive, send)
                return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await too_large(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


# -------------------------------------------------------------------- app
def create_app(
    collection_dir: str | Path,
    *,
    api_key: str | None = None,
    generator: Any = None,
    device: str = "auto",
    adapter: str | None = None,
    micro_batch: bool = True,
    batch_window_ms: float = 5.0,
    max_batch: int = 32,
    limits: Limits | None = None,
    refresh_interval: float = 2.0,
    encoder: Encoder | None = None,
    generator_options: dict[str, Any] | None = None,
) -> FastAPI:
    """The FastAPI app serving the collection in ``collection_dir``.

    ``generator``: a :class:`dse.rag.Generator` or a model id/dir (enables ``POST /answer``; loaded
    with ``generator_options``, e.g. ``{"max_new_tokens": 128}``);
    ``adapter``: a LoRA adapter directory loaded on the collection's encoder (the collection must
    have been built with it); ``micro_batch``: batch concurrent text queries into one encoder
    call (window ``batch_window_ms``, at most ``max_batch``); ``encoder``: an already loaded
    encoder to use instead of loading the manifest's. The collection and models are loaded here,
    so errors (missing collection, model not loadable) surface before serving.
    """
    limits = limits or Limits()
    state = ServerState(
        collection_dir,
        device=device,
        adapter=adapter,
        generator=generator,
        micro_batch=micro_batch,
        batch_window_ms=batch_window_ms,
        max_batch=max_batch,
        limits=limits,
        refresh_interval=refresh_interval,
        encoder=encoder,
        generator_options=generator_options,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        state.close()

    app = FastAPI(
        title="dse",
        summary="OCR-free document retrieval: search page screenshots, answer questions over them.",
        version="1",
        lifespan=lifespan,
    )
    app.state.dse = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_upload_bytes)

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = f"{where}: {first.get('msg')}" if where else str(first.get("msg", "invalid request"))
        return JSONResponse({"detail": message, "errors": jsonable_encoder(errors)}, status_code=422)

    async def require_key(
        request: Request,
        header_key: Annotated[str | None, Depends(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        verify_key(api_key, request_key(request, header_key, credentials))

    protected = [Depends(require_key)]

    async def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run blocking model/index work in a worker thread; map library errors to 400."""
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except (CollectionError, EncoderError) as exc:
            # a vector backend that is down or failing is the server's problem (503/502), not the request's
            raise RequestError(getattr(exc, "http_status", 400), str(exc)) from exc

    # ---------------------------------------------------------------- routes
    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness: always answers while the server runs (no API key needed)."""
        return {"status": "ok"}

    @app.get("/info", tags=["service"], dependencies=protected)
    async def info() -> dict[str, Any]:
        """Collection statistics (documents, pages, model), enabled features, request limits, batching counters."""
        return await call(state.info)

    async def run_search(
        text: str | None, image: Any, k: int, where: dict[str, str] | None, fusion: str | None
    ) -> list[Hit]:
        if text is None and image is None:
            raise RequestError(400, "empty query: give a text, an image, or both")
        if fusion not in (None, "", "none", "rrf"):
            raise RequestError(400, f"unknown fusion {fusion!r}; use 'rrf' or leave it out")
        fusion = "rrf" if fusion == "rrf" else None
        if image is None and state.batcher is not None:
            try:
                return await asyncio.wrap_future(state.batcher.submit(text, k, where))
            except (CollectionError, EncoderError) as exc:
                raise RequestError(getattr(exc, "http_status", 400), str(exc)) from exc
        return await call(state.search, text, image, k=k, where=where, fusion=fusion)

    @app.post(
        "/search", tags=["search"], dependencies=protected, response_model=SearchResponse, openapi_extra=_SEARCH_OPENAPI
    )
    async def search(request: Request) -> dict[str, Any]:
        """Rank pages for a text query (JSON), or an image / fused text+image query (multipart)."""
        started = time.perf_counter()
        ctype = request.headers.get("content-type", "")
        image = None
        if ctype.startswith("multipart/form-data"):
            try:
                form = await request.form(max_files=1, max_fields=8, max_part_size=limits.max_text_chars * 4 + 1024)
            except RequestError:
                raise
            except Exception as exc:
                raise RequestError(400, f"malformed multipart form: {exc}") from exc
            upload = form.get("image")
            raw_text, raw_k, raw_filters, fusion = (
                form.get("text"),
                form.get("k", 10),
                form.get("filters"),
                form.get("fusion"),
            )
            if upload is not None and not isinstance(upload, str):
                data = await upload.read()
                image = await run_in_threadpool(decode_image, data, limits)
            elif isinstance(upload, str) and upload:
                raise RequestError(400, "image must be a file upload (multipart file field 'image')")
            filters: Any = None
            if raw_filters not in (None, ""):
                try:
                    filters = json.loads(str(raw_filters))
                except json.JSONDecodeError as exc:
                    raise RequestError(400, f"filters must be a JSON object: {exc}") from exc
        elif ctype.startswith("application/json") or not ctype:
            try:
                payload = SearchRequest.model_validate_json(await request.body())
            except ValueError as exc:
                raise RequestError(400, f"invalid JSON request: {_first_error(exc)}") from exc
            raw_text, raw_k, fusion = payload.text, payload.k, payload.fusion
            filters = payload.filters if payload.filters is not None else payload.where
        else:
            raise RequestError(415, f"unsupported content type {ctype!r}; send application/json or multipart/form-data")
        text = check_text(raw_text, limits, what="query text")
        k = check_k(raw_k, limits)
        where = check_filters(filters, limits)
        hits = await run_search(text, image, k, where, fusion if isinstance(fusion, str) else None)
        return {
            "hits": [hit_out(h) for h in hits],
            "query": {"text": text, "image": image is not None, "k": k, "filters": where, "fusion": fusion or None},
            "took_ms": round((time.perf_counter() - started) * 1000, 2),
        }

    @app.get(
        "/pages/{page_id}/image",
        tags=["pages"],
        dependencies=protected,
        responses={200: {"content": {"image/png": {}, "image/jpeg": {}}}},
    )
    async def page_image(
        page_id: int, width: int | None = Query(None, ge=16, le=4096, description="thumbnail width in pixels")
    ) -> Any:
        """The page's rendered image, looked up in the collection (never a path from the request)."""
        path = await call(state.page_image_path, page_id)
        headers = {"Cache-Control": "private, max-age=3600"}
        if width is None:
            return FileResponse(path, headers=headers)
        data = await call(_thumbnail, path, width)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get(
        "/pages/{page_id}/similarity",
        tags=["pages"],
        dependencies=protected,
        responses={200: {"content": {"image/png": {}, "application/json": {}}}},
    )
    async def page_similarity(
        page_id: int,
        text: str = Query(..., description="the query text"),
        format: str = Query("png", pattern="^(png|json)$", description="png: overlay image; json: per-patch values"),
        token: int | None = Query(None, ge=0, description="one query token's map (default: mean of the text tokens)"),
        per_token: bool = Query(False, description="json: include every query token's raw map"),
        max_side: int = Query(1024, ge=64, le=4096, description="png: longest side of the overlay"),
    ) -> Any:
        """Which patches of the page match the query (multi-vector collections; 400 for single-vector ones)."""
        q = check_text(text, limits, what="query text", required=True)
        smap, image = await call(state.similarity, page_id, q)
        if token is not None and token >= len(smap.tokens):
            raise RequestError(400, f"token index {token} is out of range: the query has {len(smap.tokens)} tokens")
        if format == "json":
            return {"page_id": page_id, "text": q, **smap.to_dict(token, per_token=per_token)}
        data = await call(_png, smap.overlay(image, token, max_side=max_side))
        return Response(data, media_type="image/png")

    @app.post("/answer", tags=["answer"], dependencies=protected, response_model=AnswerResponse)
    async def answer(body: AnswerRequest) -> dict[str, Any]:
        """Retrieve ``k`` pages and let the generator answer from them (needs ``--generator``; else 503)."""
        started = time.perf_counter()
        question = check_text(body.question, limits, what="question", required=True)
        k = check_k(body.k, limits, maximum=limits.max_answer_k)
        where = check_filters(body.filters if body.filters is not None else body.where, limits)
        if not state.answer_enabled:
            state.answer(question, k=k, where=where)  # raises the 503
        result = await call(state.answer, question, k=k, where=where)
        return {**answer_out(result), "took_ms": round((time.perf_counter() - started) * 1000, 2)}

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            e = errors()[0]
            loc = ".".join(str(p) for p in e.get("loc", ()))
            return f"{loc}: {e.get('msg')}" if loc else str(e.get("msg"))
        except (IndexError, TypeError):
            pass
    return str(exc).splitlines()[0]


def _thumbnail(path: Path, width: int) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.width > width:
            im = im.resize((width, max(1, round(im.height * width / im.width))), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()


def _png(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
