"""Collections: crash-safe on-disk indexes of rendered pages (see :mod:`.collection`)."""

from dse.collection.collection import EXACT_MAXSIM, MAXSIM_DEFAULTS, Collection, Document, Hit
from dse.collection.filters import FilterError
from dse.collection.ingest import Failure, IndexReport
from dse.collection.manifest import CollectionError, CollectionInputError

__all__ = [
    "EXACT_MAXSIM",
    "MAXSIM_DEFAULTS",
    "Collection",
    "CollectionError",
    "CollectionInputError",
    "Document",
    "Failure",
    "FilterError",
    "Hit",
    "IndexReport",
]
