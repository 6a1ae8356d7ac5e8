"""Exceptions raised by the vector indexes.

Every error is a :class:`VectorIndexError`, itself a :class:`ValueError`, so callers can
catch one class; the message says what is wrong and with which file or id.
"""

from __future__ import annotations


class VectorIndexError(ValueError):
    """Base class of every error raised by :mod:`indexes`."""


class IndexInputError(VectorIndexError):
    """Bad arguments: wrong shape, dtype, dimension, non-finite values, unknown option."""


class DuplicateIdError(IndexInputError):
    """An id given to ``add`` is already in the index (or repeated within the call)."""


class UnknownIdError(VectorIndexError, KeyError):
    """An id asked for (e.g. by ``get``) is not in the index."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class IndexFormatError(VectorIndexError):
    """An index directory is missing, corrupted, of another kind or from an unsupported version."""
