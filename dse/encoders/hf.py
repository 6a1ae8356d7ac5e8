"""Shared machinery of the transformers/colpali-engine backed encoders.

:class:`HFEncoder` holds the loaded model and processor, the runtime (device, dtype,
attention kernel) and the settings, and turns per-item forward functions into the
batched, size-sorted, out-of-memory-safe ``encode_*`` results of :mod:`dse.encoders.base`.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from dse.encoders.base import Encoder
from dse.encoders.batching import run_batched
from dse.encoders.devices import Runtime
from dse.encoders.errors import EncoderError
from dse.encoders.sources import ModelSource

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    """One encoder input: text, image, or both (fused); ``role`` picks the prompt."""

    role: str  #: "query", "document" (page image) or "text_document"
    text: str | None = None
    image: Image.Image | None = None

    @property
    def size(self) -> float:
        """Sort key for batching: image pixels, then text length as a tie-breaker."""
        pixels = self.image.size[0] * self.image.size[1] if self.image is not None else 0
        return float(pixels + len(self.text or ""))


def query_items(texts: Sequence[str] | None, images: Sequence[Image.Image] | None) -> list[Item]:
    """One ``"query"`` :class:`Item` per position of the (validated, equal-length) ``texts`` /
    ``images``: text-only, image-only, or fused when both are given."""
    n = len(texts) if texts is not None else len(images or [])
    return [
        Item("query", text=texts[k] if texts is not None else None, image=images[k] if images is not None else None)
        for k in range(n)
    ]


def load_pretrained(model_cls: Any, source: ModelSource, runtime: Runtime, **kwargs: Any) -> Any:
    """``model_cls.from_pretrained`` on the source, adapters applied, moved to the device, eval mode.

    Adapters are attached with transformers' PEFT integration (``model.load_adapter``),
    which maps checkpoint keys saved by older transformers versions (the published
    ColQwen2 / ColPali adapters); the result equals ``PeftModel.from_pretrained``.
    """
    if len(source.adapters) > 1:
        raise EncoderError(
            f"{len(source.adapters)} adapters to stack ({', '.join(map(str, source.adapters))}); "
            "only one is supported: merge the first into its base model"
        )
    try:
        model = model_cls.from_pretrained(
            str(source.path),
            dtype=runtime.dtype,
            attn_implementation=runtime.attn_implementation,
            **kwargs,
        )
    except (OSError, ValueError) as exc:
        raise EncoderError(f"cannot load {source.name!r} as {model_cls.__name__}: {exc}") from exc
    for adapter in source.adapters:
        try:
            model.load_adapter(str(adapter))
        except (OSError, ValueError, KeyError) as exc:
            raise EncoderError(f"cannot load adapter {str(adapter)!r} on {source.name!r}: {exc}") from exc
        logger.info("loaded adapter %s", adapter)
    model.to(runtime.device)
    model.eval()
    return model


def load_processor(processor_cls: Any, source: ModelSource) -> Any:
    """``processor_cls.from_pretrained`` on the source's processor files, errors as :class:`EncoderError`."""
    try:
        return processor_cls.from_pretrained(str(source.processor_path))
    except (OSError, ValueError, TypeError) as exc:
        raise EncoderError(f"cannot load the processor of {source.name!r}: {exc}") from exc


def set_qwen_pixels(image_processor: Any, min_pixels: int | None, max_pixels: int | None) -> tuple[int, int]:
    """Override a Qwen2-VL image processor's pixel bounds; return the effective (min, max).

    ``size["shortest_edge"]`` / ``size["longest_edge"]`` are the bounds on the resized
    image's pixel count used by ``smart_resize`` (one visual token per 28x28 px).
    """
    size = dict(image_processor.size)
    lo = int(min_pixels) if min_pixels is not None else int(size["shortest_edge"])
    hi = int(max_pixels) if max_pixels is not None else int(size["longest_edge"])
    if lo < 1 or hi < 1:
        raise EncoderError(f"min_pixels and max_pixels must be positive, got {lo} and {hi}")
    if lo > hi:
        raise EncoderError(f"min_pixels ({lo}) is larger than max_pixels ({hi})")
    image_processor.size = {"shortest_edge": lo, "longest_edge": hi}
    for attr, value in (("min_pixels", lo), ("max_pixels", hi)):
        if hasattr(image_processor, attr):
            setattr(image_processor, attr, value)
    return lo, hi


class HFEncoder(Encoder):
    """Base of the model-backed encoders. Subclasses implement :meth:`from_source` and :meth:`_forward`."""

    #: Names of family-specific ``Encoder.load`` options this class accepts.
    OPTIONS: ClassVar[frozenset[str]] = frozenset()
    #: Identifier of the prompt/input format, stored with indexes.
    prompt_version: str

    def __init__(
        self,
        *,
        family: str,
        source: ModelSource,
        runtime: Runtime,
        model: Any,
        processor: Any,
        dim: int,
        min_pixels: int | None,
        max_pixels: int | None,
    ) -> None:
        self.family = family
        self.source = source
        self.runtime = runtime
        self.model = model
        self.processor = processor
        self.dim = dim
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels

    # --------------------------------------------------------------- construction
    @classmethod
    @abc.abstractmethod
    def from_source(
        cls,
        source: ModelSource,
        *,
        family: str,
        runtime: Runtime,
        dim: int | None,
        min_pixels: int | None,
        max_pixels: int | None,
        **options: Any,
    ) -> HFEncoder:
        """Load model and processor for ``family`` from a resolved source."""

    # ------------------------------------------------------------------- helpers
    @property
    def device(self) -> torch.device:
        return self.runtime.device

    @abc.abstractmethod
    def visual_tokens(self, image: Image.Image) -> int:
        """Number of visual tokens ``image`` becomes as a page at this encoder's settings."""

    @abc.abstractmethod
    def _forward(self, items: list[Item]) -> list[np.ndarray]:
        """Encode one batch: one float32 array per item ((dim,) single, (n_i, dim) multi)."""

    def _encode(self, items: Sequence[Item], *, batch_size: int, progress: bool, desc: str) -> list[np.ndarray]:
        if not items:
            return []

        def forward(batch: list[Item]) -> list[np.ndarray]:
            with torch.inference_mode():
                return self._forward(batch)

        return run_batched(
            list(items),
            [it.size for it in items],
            forward,
            batch_size=batch_size,
            device=self.device,
            progress=progress,
            desc=desc,
        )

    def _stack(self, rows: list[np.ndarray]) -> np.ndarray:
        """Single-vector results as one ``(n, dim)`` float32 array (``(0, dim)`` when empty)."""
        if not rows:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.ascontiguousarray(np.stack(rows).astype(np.float32, copy=False))

    def _to_device(self, batch: Any) -> dict[str, Any]:
        return {k: (v.to(self.device) if isinstance(v, torch.Tensor) else v) for k, v in dict(batch).items()}

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "model": self.source.model,
            "revision": self.source.revision,
            "adapter": str(self.source.adapters[-1]) if self.source.adapters else None,
            "dim": self.dim,
            "kind": self.kind,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "prompt_version": self.prompt_version,
            "dtype": self.runtime.dtype_name,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(family={self.family!r}, model={self.source.name!r}, "
            f"dim={self.dim}, device={self.device})"
        )


def as_hf_encoder(encoder: Encoder) -> HFEncoder:
    """``encoder`` as a transformers-based encoder (what training and merging work on), or
    :class:`EncoderError` naming its class."""
    if not isinstance(encoder, HFEncoder):
        raise EncoderError(
            f"{type(encoder).__name__} is not a transformers-based encoder; it cannot be trained or merged"
        )
    return encoder


def l2_normalize(x: torch.Tensor) -> torch.Tensor:
    """Row-wise L2 normalisation in float32."""
    return torch.nn.functional.normalize(x.float(), p=2, dim=-1)
