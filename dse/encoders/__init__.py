"""Encoders: page images, text documents and queries -> vectors.

``Encoder.load(model, family=None, device="auto", ...)`` loads any supported family
(``dse-qwen2``, ``dse-qwen2.5``, ``gme-qwen2``, ``colqwen2``, ``colqwen2.5``,
``colpali``, ``colidefics3``); see :mod:`dse.encoders.loading`. Model code (torch,
transformers) is imported only when a model is loaded.
"""

from __future__ import annotations

from dse.encoders.base import Encoder, Vectors
from dse.encoders.detection import FAMILY_MODULES
from dse.encoders.errors import EncoderError
from dse.encoders.inputs import InvalidInput, UnsupportedImageMode, check_image, check_query, check_text
from dse.encoders.registry import FAMILIES, register_family

#: Names of all supported families, in documentation order.
FAMILY_NAMES: tuple[str, ...] = tuple(FAMILY_MODULES)

__all__ = [
    "FAMILIES",
    "FAMILY_NAMES",
    "Encoder",
    "EncoderError",
    "InvalidInput",
    "UnsupportedImageMode",
    "Vectors",
    "check_image",
    "check_query",
    "check_text",
    "register_family",
]
