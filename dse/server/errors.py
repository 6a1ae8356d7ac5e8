"""How the server reports errors: always JSON with a one-line ``detail``.

* :class:`~dse.server.limits.RequestError` (raised by the routes and the state) -> its status,
  ``{"detail": message}`` (401 adds ``WWW-Authenticate: Bearer``);
* a request that does not match the schema -> 422 ``{"detail": first problem, "errors": [...]}``
  (:class:`~dse.server.schemas.ValidationErrorOut`), except a body that is not JSON at all -> 400;
* Starlette's own errors (unknown path 404, method 405) -> ``{"detail": ...}``; a 405 lists in
  ``Allow`` every method the path supports (GET and HEAD of page images are two routes, and
  FastAPI's own 405 names only the first).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dse.server.limits import RequestError
from dse.server.schemas import NON_BLANK


def error_items(errors: Iterable[Any]) -> list[dict[str, Any]]:
    """Pydantic/FastAPI error dicts as :class:`~dse.server.schemas.ErrorItem` dicts (no echo of the input)."""
    items = []
    for e in errors:
        loc = [p if isinstance(p, int) else str(p) for p in e.get("loc", ())]
        msg = str(e.get("msg", "invalid value"))
        kind = str(e.get("type", ""))
        if kind == "string_pattern_mismatch" and (e.get("ctx") or {}).get("pattern") == NON_BLANK:
            msg = "must not be blank (give some non-whitespace text)"
        elif kind == "missing" and loc == ["body", "image"]:
            msg = "Field required: a multipart query is an image query (send a text-only query as JSON)"
        elif (kind.endswith("_type") or kind.endswith("_parsing")) and "input" in e:
            msg += f", got {_short(e['input'])}"
        items.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return items


def _short(value: Any) -> str:
    """A value as JSON, cut to 40 characters (for "should be an integer, got true")."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


def one_line(items: Sequence[dict[str, Any]]) -> str:
    """The first problem as ``where: what`` (``body.k: Input should be a valid integer``)."""
    if not items:
        return "invalid request"
    first = items[0]
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(items) - 1} more problems)" if len(items) > 1 else ""
    return (f"{where}: {first['msg']}" if where else first["msg"]) + more


def validation_error(errors: Iterable[Any]) -> JSONResponse:
    """422 ``{"detail", "errors"}`` for pydantic/FastAPI errors; 400 when the body is not JSON at all."""
    items = error_items(errors)
    if any(item["type"] == "json_invalid" for item in items):
        bad = next(item for item in items if item["type"] == "json_invalid")
        return JSONResponse({"detail": f"invalid JSON request: {bad['msg']}"}, status_code=400)
    return JSONResponse({"detail": one_line(items), "errors": items}, status_code=422)


def _allowed_methods(app: FastAPI, path: str) -> str | None:
    """Every method of the routes whose path matches ``path`` (for a 405's ``Allow``): the app's own
    routes and those of the routers the factory listed in ``app.state.api_routers``."""
    routes = list(app.router.routes)
    for router in getattr(app.state, "api_routers", ()):
        routes.extend(router.routes)
    methods: set[str] = set()
    for route in routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None and getattr(route, "methods", None) and regex.match(path):
            methods |= set(getattr(route, "methods", ()))
    return ", ".join(sorted(methods)) or None


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers described in the module doc on ``app``."""

    @app.exception_handler(RequestError)
    async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc.errors())

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            allow = _allowed_methods(app, request.scope["path"])
            if allow:
                headers["Allow"] = allow
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=headers or None)
