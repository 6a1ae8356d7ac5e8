"""Collections: crash-safe on-disk indexes of rendered pages (see :mod:`.collection`)."""

from dse.collection.collection import Collection, Hit
from dse.collection.ingest import Failure, IndexReport
from dse.collection.manifest import CollectionError

__all__ = ["Collection", "CollectionError", "Failure", "Hit", "IndexReport"]
