"""HTTP API and web page over a collection: ``create_app(collection_dir, ...)`` (see :mod:`dse.server.app`).

``dse serve --collection DIR`` runs it with uvicorn. Modules: ``app`` (routes), ``state``
(the collection, encoder lock, generator, similarity cache), ``batching`` (query
micro-batcher), ``limits`` (request limits), ``security`` (API key, bind rule), ``static/``
(the web page: plain HTML + vanilla JS).
"""

import lazy_loader as _lazy

# lazy: importing dse.server must not import FastAPI/torch until used
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
