"""HTTP API and web page over a collection: ``create_app(collection_dir, ...)`` (see :mod:`dse.server.app`).

``dse serve --collection DIR`` runs it with uvicorn. Modules: ``app`` (the factory: wiring),
``routes/`` (one router per concern: info, search, pages, similarity, answer, web), ``schemas``
(request/response models: the OpenAPI document), ``errors`` (error bodies), ``deps`` (state,
API key, query-string rules), ``middleware`` (body size), ``state`` (the collection, encoder lock,
generator, similarity cache), ``batching`` (query micro-batcher), ``limits`` (request limits),
``security`` (API key, bind rule), ``static/`` (the web page and built-in API docs: plain HTML +
vanilla JS). Needs the ``serve`` extra: without
it, importing this package raises :class:`dse.extras.MissingExtraError`.
"""

import lazy_loader as _lazy

from dse.extras import require as _require

_require("serve")  # one line (MissingExtraError) instead of a FastAPI import traceback

# lazy: importing dse.server must not import FastAPI/torch until used
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
