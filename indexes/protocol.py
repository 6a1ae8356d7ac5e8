"""The interface every vector index of this package satisfies.

:class:`VectorIndex` is a structural :class:`typing.Protocol`: :class:`~indexes.SingleVectorIndex`,
:class:`~indexes.MultiVectorIndex` and the Qdrant backend satisfy it without inheriting from
it, and a collection types its index with it.

Ids are non-negative ``int64`` page ids chosen by the caller. Scores are similarities (higher
is better): inner product / cosine for single-vector indexes, MaxSim for multi-vector ones.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Per query, up to ``k`` ``(id, score)`` pairs, best first.
Hits = list[list[tuple[int, float]]]


@runtime_checkable
class VectorIndex(Protocol):
    """Add, remove, search and persist vectors keyed by integer ids."""

    dim: int

    def __len__(self) -> int:
        """Number of live (searchable) items."""
        ...

    @property
    def ids(self) -> np.ndarray:
        """``(len(self),)`` int64 ids of the live items, in insertion order."""
        ...

    @property
    def num_vectors(self) -> int:
        """Stored vectors of live items (``len(self)`` for single-vector indexes)."""
        ...

    def add(self, vectors: Any, ids: Any) -> None:
        """Add items. Single-vector: ``(n, dim)`` floats; multi-vector: a sequence of ``(n_i, dim)``.

        An id already in the index raises :class:`~indexes.DuplicateIdError`.
        """
        ...

    def remove(self, ids: Any) -> int:
        """Remove items by id (unknown ids are ignored); returns how many were removed."""
        ...

    def get(self, id: int) -> np.ndarray:
        """The stored vector(s) of item ``id``: ``(dim,)`` for one vector per item, ``(n, dim)`` for
        multi-vector items (raises :class:`~indexes.UnknownIdError` for an unknown id)."""
        ...

    def compact(self) -> None:
        """Reclaim the space of removed items (takes effect on disk at the next :meth:`save`)."""
        ...

    def search(self, queries: Sequence[Any] | np.ndarray, k: int, *, allowed_ids: Any = None) -> Hits:
        """Top-``k`` ``(id, score)`` per query, best first; ``allowed_ids`` restricts the candidates."""
        ...

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Persist durably to ``directory`` (crash-safe: a reader sees the old or the new state)."""
        ...

    @classmethod
    def load(cls, directory: str | os.PathLike[str], *, device: str = "auto") -> VectorIndex:
        """Open an index saved by :meth:`save` (raises :class:`~indexes.IndexFormatError` when unusable).

        Implementations may take more keyword options, with defaults."""
        ...
