"""Vector indexes for page embeddings from any model: single-vector (FAISS) and multi-vector (exact MaxSim).

Standalone: this package imports nothing from ``dse`` or ``renderers``.

>>> from indexes import SingleVectorIndex, MultiVectorIndex
>>> idx = MultiVectorIndex(128)
>>> idx.add([page_vectors], [7])          # doctest: +SKIP
>>> idx.search([query_vectors], k=10)     # doctest: +SKIP
[[(7, 12.3)]]

Both store their vectors in append-only, crash-safe segment files with a JSON manifest
(see :mod:`indexes.segments`); nothing is pickled. Every error is a
:class:`VectorIndexError` (a ``ValueError``).
"""

from indexes.errors import (
    DuplicateIdError,
    IndexFormatError,
    IndexInputError,
    UnknownIdError,
    VectorIndexError,
)
from indexes.maxsim import maxsim_scores
from indexes.multi import MultiVectorIndex
from indexes.single import INDEX_TYPES, SingleVectorIndex

#: Alias: the base class of every index error.
IndexError_ = VectorIndexError

__all__ = [
    "INDEX_TYPES",
    "DuplicateIdError",
    "IndexError_",
    "IndexFormatError",
    "IndexInputError",
    "MultiVectorIndex",
    "SingleVectorIndex",
    "UnknownIdError",
    "VectorIndexError",
    "maxsim_scores",
]
