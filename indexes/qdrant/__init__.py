"""Qdrant backend: page vectors in a Qdrant collection (a server, a cluster, or qdrant-client's
local mode for tests), behind the same :class:`~indexes.protocol.VectorIndex` interface as the
local indexes. Needs the ``qdrant`` extra (qdrant-client).

>>> from indexes.qdrant import QdrantIndex
>>> idx = QdrantIndex.create(128, kind="multi", url="http://localhost:6333", collection="pages")  # doctest: +SKIP
>>> idx.add([page_vectors], [7]); idx.save("my-index")                                           # doctest: +SKIP
>>> idx.search([query_vectors], k=10)                                                             # doctest: +SKIP

See :mod:`indexes.qdrant.schema` for the collection layout, :mod:`indexes.qdrant.connection` for
URLs, retries and errors, :mod:`indexes.qdrant.filters` for payload filters.
"""

from indexes.qdrant.connection import (
    LOCAL_PREFIX,
    MEMORY,
    Connection,
    QdrantError,
    QdrantNotFoundError,
    QdrantRefusedError,
    QdrantUnavailableError,
    RetryPolicy,
    display_url,
    is_local,
    normalize_url,
)
from indexes.qdrant.filters import OPERATORS, Condition, payload_key, to_filter
from indexes.qdrant.index import CONFIG_NAME, INDEX_TYPE, QdrantIndex, check_collection_name, read_config
from indexes.qdrant.schema import Schema

__all__ = [
    "CONFIG_NAME",
    "INDEX_TYPE",
    "LOCAL_PREFIX",
    "MEMORY",
    "OPERATORS",
    "Condition",
    "Connection",
    "QdrantError",
    "QdrantIndex",
    "QdrantNotFoundError",
    "QdrantRefusedError",
    "QdrantUnavailableError",
    "RetryPolicy",
    "Schema",
    "check_collection_name",
    "display_url",
    "is_local",
    "normalize_url",
    "payload_key",
    "read_config",
    "to_filter",
]
