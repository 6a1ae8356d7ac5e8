"""Qdrant backend: page vectors in a Qdrant collection (a server, a cluster, or qdrant-client's
local mode for tests), behind the same :class:`~indexes.protocol.VectorIndex` interface as the
local indexes. Needs the ``qdrant`` extra (qdrant-client).

>>> from indexes.qdrant import QdrantIndex
>>> idx = QdrantIndex.create(128, kind="multi", url="http://localhost:6333", collection="pages")  # doctest: +SKIP
>>> idx.add([page_vectors], [7]); idx.save("my-index")                                           # doctest: +SKIP
>>> idx.search([query_vectors], k=10)                                                             # doctest: +SKIP

See :mod:`indexes.qdrant.schema` for the collection layout, :mod:`indexes.qdrant.connection` for
URLs, retries and errors, :mod:`indexes.qdrant.filters` for payload filters.

Imported lazily (``lazy_loader`` stub ``__init__.pyi``): importing :mod:`indexes.qdrant.connection`
(its error classes) loads neither torch nor qdrant-client.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
