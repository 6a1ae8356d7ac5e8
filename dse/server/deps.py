"""Dependencies shared by the routers: the server state, blocking work in worker threads, the API key
and the query-string rules.

The app factory (:func:`dse.server.app.create_app`) decides which routers get which dependency: the
key check only exists (and is only declared in the OpenAPI document) when the server has a key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from dse.collection import CollectionError
from dse.encoders.base import EncoderError
from dse.server.limits import RequestError
from dse.server.security import api_key_header, api_key_query, bearer, request_key, verify_key
from dse.server.state import ServerState

#: Query parameters every API route accepts (the API key, for links).
ALWAYS_ACCEPTED = frozenset({"key"})


def get_state(request: Request) -> ServerState:
    """The app's :class:`ServerState` (set by the factory)."""
    state: ServerState = request.app.state.dse
    return state


State = Annotated[ServerState, Depends(get_state)]


async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run blocking model/index work in a worker thread; map library errors to 400."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except (CollectionError, EncoderError) as exc:
        # a vector backend that is down or failing is the server's problem (503/502), not the request's
        raise RequestError(getattr(exc, "http_status", 400), str(exc)) from exc


def key_dependency(api_key: str) -> Callable[..., Any]:
    """A dependency requiring ``api_key`` (header, bearer token or ``?key=``; 401 otherwise)."""

    async def require_key(
        request: Request,
        header_key: Annotated[str | None, Depends(api_key_header)],
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        query_key: Annotated[str | None, Depends(api_key_query)],
    ) -> None:
        verify_key(api_key, request_key(request, header_key, credentials))

    return require_key


def _query_names(dependant: Any) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


_accepted_cache: dict[int, frozenset[str]] = {}


async def strict_query(request: Request) -> None:
    """Refuse a repeated query parameter (``?k=1&k=2``) or one the route does not take (a typo such as
    ``?widht=``) with 422, instead of silently using one value or ignoring it."""
    items = request.query_params.multi_items()
    if not items:
        return
    route = request.scope.get("route")
    accepted = _accepted_cache.get(id(route))
    if accepted is None:
        dependant = getattr(route, "dependant", None)
        accepted = ALWAYS_ACCEPTED | (_query_names(dependant) if dependant is not None else set())
        _accepted_cache[id(route)] = frozenset(accepted)
    errors = []
    for name, count in Counter(name for name, _ in items).items():
        if name not in accepted:
            known = ", ".join(sorted(accepted - ALWAYS_ACCEPTED)) or "none"
            errors.append(
                {
                    "loc": ("query", name),
                    "msg": f"unknown query parameter (this route takes: {known})",
                    "type": "unknown_parameter",
                }
            )
        elif count > 1:
            errors.append(
                {"loc": ("query", name), "msg": f"repeated {count} times: give it once", "type": "repeated_parameter"}
            )
    if errors:
        raise RequestValidationError(errors)
