"""HTTP API and web page over a collection: ``create_app(collection_dir, ...)`` (see :mod:`dse.server.app`).

``dse serve --collection DIR`` runs it with uvicorn. Modules: ``app`` (routes), ``state``
(the collection, encoder lock, generator, similarity cache), ``batching`` (query
micro-batcher), ``limits`` (request limits), ``security`` (API key, bind rule), ``static/``
(the web page: plain HTML + vanilla JS).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Limits", "QueryBatcher", "create_app"]


def __getattr__(name: str) -> Any:
    # lazy: importing dse.server must not import FastAPI/torch until used
    if name == "create_app":
        from dse.server.app import create_app

        return create_app
    if name == "Limits":
        from dse.server.limits import Limits

        return Limits
    if name == "QueryBatcher":
        from dse.server.batching import QueryBatcher

        return QueryBatcher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
