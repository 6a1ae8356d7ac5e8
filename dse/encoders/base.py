"""The encoder interface shared by every model family.

An :class:`Encoder` turns page images, text documents and queries into vectors:

* ``kind == "single"``: one L2-normalised float32 vector per input, returned as a
  numpy array of shape ``(n, dim)``.
* ``kind == "multi"``: one L2-normalised vector per token, returned as a list of
  ``n`` float32 arrays of shape ``(n_tokens_i, dim)`` with padding removed.

Families register themselves with :func:`~dse.encoders.registry.register_family`;
:meth:`Encoder.load` detects the family from the model's config when it is not given.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from PIL import Image

from dse.encoders.errors import EncoderError as EncoderError
from dse.encoders.registry import FAMILIES as FAMILIES
from dse.encoders.registry import register_family as register_family

logger = logging.getLogger(__name__)

Vectors = np.ndarray | list[np.ndarray]


class Encoder(abc.ABC):
    """Abstract encoder. Subclasses set ``kind`` and implement the three encode methods."""

    kind: ClassVar[Literal["single", "multi"]]
    family: str
    dim: int

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model: str,
        *,
        family: str | None = None,
        device: str = "auto",
        dtype: Any = None,
        dim: int | None = None,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
        adapter: str | None = None,
        **options: Any,
    ) -> Encoder:
        """Load ``model`` (a hub id or a local directory, one code path).

        ``family`` is detected from the model config when omitted. See
        :mod:`dse.encoders.loading` for detection and device rules.
        ``options`` are family specifics (e.g. ``query_instruction`` for ``gme-qwen2``).
        """
        from dse.encoders.loading import load_encoder  # torch and friends: imported on first load

        return load_encoder(
            model,
            family=family,
            device=device,
            dtype=dtype,
            dim=dim,
            max_pixels=max_pixels,
            min_pixels=min_pixels,
            adapter=adapter,
            **options,
        )

    # ----------------------------------------------------------------- encoding
    @abc.abstractmethod
    def encode_documents(
        self, images: Sequence[Image.Image], *, batch_size: int = 4, progress: bool = False
    ) -> Vectors:
        """Encode page images. Single: ``(n, dim)`` float32; multi: list of ``(t_i, dim)``."""

    @abc.abstractmethod
    def encode_text_documents(self, texts: Sequence[str], *, batch_size: int = 8, progress: bool = False) -> Vectors:
        """Encode text-only documents (DSE's ``Document: {text}`` format for DSE)."""

    @abc.abstractmethod
    def encode_queries(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image] | None = None,
        *,
        batch_size: int = 8,
        progress: bool = False,
    ) -> Vectors:
        """Encode queries: text only, image only, or fused (both, one forward pass each)."""

    # ----------------------------------------------------------------- metadata
    @property
    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-serialisable settings stored with every index.

        Keys: ``family``, ``model``, ``revision``, ``dim``, ``kind``, ``min_pixels``,
        ``max_pixels``, ``prompt_version`` (and any family specifics).
        """
