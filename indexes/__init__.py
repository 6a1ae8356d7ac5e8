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

The index classes are imported lazily (lazy-loader stub ``__init__.pyi``): a single-vector
index on the CPU never imports torch, which the MaxSim code needs.
"""

import lazy_loader as _lazy

from indexes.errors import VectorIndexError as _VectorIndexError

# lazy (names listed in __init__.pyi): ``import indexes.storage`` must not import torch or FAISS
__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)

#: Alias: the base class of every index error.
IndexError_ = _VectorIndexError
__all__ += ["IndexError_"]
