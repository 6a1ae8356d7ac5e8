"""dse: OCR-free document retrieval over page screenshots.

``from dse import Collection, Encoder`` — imported lazily so ``import dse`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Collection", "CollectionError", "Encoder", "EncoderError", "Hit", "__version__"]

_LAZY = {
    "Collection": "dse.collection",
    "CollectionError": "dse.collection",
    "Hit": "dse.collection",
    "Encoder": "dse.encoders",
    "EncoderError": "dse.encoders",
}

if TYPE_CHECKING:  # pragma: no cover
    from dse.collection import Collection, CollectionError, Hit
    from dse.encoders import Encoder, EncoderError


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dse' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
