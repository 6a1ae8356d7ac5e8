"""The HTTP API and web page of a collection (FastAPI): the app factory.

``create_app(collection_dir, api_key=None, generator=None, device="auto", micro_batch=True, ...)``
returns the app; ``dse serve`` runs it with uvicorn. The factory loads the collection and models
(:class:`~dse.server.state.ServerState`), then wires the routers of :mod:`dse.server.routes`, the
body-size limit, the API key, the query-string rules and the error handlers. Endpoints:

=========================================  ===================================================
``GET /health``                            liveness (no key needed)
``GET /info``                              collection statistics, enabled features, limits
``POST /search``                           JSON ``{text, k, filters}``, or multipart with an
                                           ``image`` file (+ ``text``, ``k``, ``filters`` as a
                                           JSON object, ``fusion=rrf``) for image/fused queries
``GET|HEAD /pages/{page_id}/image``        the page image (``?width=N`` for a JPEG thumbnail)
``GET /pages/{page_id}/similarity``        ``?text=...&format=png|json[&token=i][&per_token=1]``
                                           similarity map (multi-vector collections only)
``POST /answer``                           ``{question, k, filters}`` -> answer + cited pages
                                           (with a generator only)
``GET /``                                  the web page (``/favicon.ico``, ``/static/*``)
``GET /docs``, ``/openapi.json``           the API description (served offline)
=========================================  ===================================================

The OpenAPI document describes exactly this server: every request constraint that is enforced is
in the schema (so schema-valid requests are accepted and others get a 4xx), every error status is
listed with its body, the API-key schemes appear only when the server has a key, and the
similarity and answer operations only when this collection / configuration offers them.

Errors are JSON ``{"detail": "..."}`` (see :mod:`dse.server.errors`): 400 unreadable input, 401
key, 404 unknown page, 413 too large, 415 content type, 422 schema violation (plus ``errors``),
503 answer mode off. Model work runs in worker threads, never on the event loop; text queries are
micro-batched across concurrent requests (see :mod:`dse.server.batching`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic.json_schema import models_json_schema

from dse.encoders.base import Encoder
from dse.server.deps import key_dependency, strict_query
from dse.server.errors import install_error_handlers
from dse.server.limits import Limits
from dse.server.middleware import BodyLimitMiddleware
from dse.server.routes import answer, info, pages, search, similarity, web
from dse.server.schemas import RequestModels, SimilarityOut, error_responses, request_models
from dse.server.state import ServerState

TITLE = "dse"
SUMMARY = "OCR-free document retrieval: search page screenshots, answer questions over them."


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
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        state.close()

    app = FastAPI(
        title=TITLE,
        summary=SUMMARY,
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served by routes.web, from local files
        redoc_url=None,
    )
    app.state.dse = state
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_upload_bytes)
    install_error_handlers(app)

    models = request_models(limits)
    public = [Depends(strict_query)]
    protected = ([Depends(key_dependency(api_key))] if api_key else []) + public
    routers = [
        (info.health_router, public, True),
        (info.router, protected, True),
        (search.build(models, limits), protected, True),
        (pages.router, protected, True),
        (similarity.build(limits), protected, state.similarity_supported()),
        (answer.build(models), protected, state.answer_enabled),
    ]
    for router, dependencies, documented in routers:
        responses = error_responses(401) if api_key and dependencies is protected else None
        app.include_router(router, dependencies=dependencies, include_in_schema=documented, responses=responses)
    app.state.api_routers = [router for router, _, _ in routers]  # for the Allow header of a 405
    web.install(app, title=TITLE)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = openapi_document(app, models, state)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI, models: RequestModels, state: ServerState) -> dict[str, Any]:
    """FastAPI's document plus the schemas the routes reference by name (``SearchRequest``,
    ``SearchForm``: ``POST /search`` reads its body itself, to take JSON or multipart;
    ``SimilarityOut``) and a description of what this server offers."""
    optional = []
    if not state.similarity_supported():
        optional.append(
            "`GET /pages/{page_id}/similarity` is not offered: it needs a multi-vector (ColPali-family) collection"
        )
    if not state.answer_enabled:
        optional.append("`POST /answer` is not offered: start the server with `--generator MODEL`")
    description = (
        'Errors are JSON `{"detail": "..."}` (422 adds `errors`, one item per problem). '
        'Unknown fields and query parameters, repeated query parameters and `"k": true` are refused.'
    )
    if optional:
        description += "\n\nOn this server: " + "; ".join(optional) + "."
    document = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description=description,
        routes=app.routes,
    )
    _, top = models_json_schema(
        [(models.search, "validation"), (models.search_form, "validation"), (SimilarityOut, "serialization")],
        ref_template="#/components/schemas/{model}",
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    return document
