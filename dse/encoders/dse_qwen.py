"""DSE (Document Screenshot Embedding) on Qwen2-VL and Qwen2.5-VL: one vector per input.

Implements the recipe of the ``MrLight/dse-qwen2-2b-mrl-v1`` model card exactly
(prompt version ``dse-card-v1``):

* processor with ``min_pixels = 1*28*28``, ``max_pixels = 2560*28*28``; tokenizer and
  model pad on the LEFT;
* every input is one user chat turn with exactly one image, rendered with
  ``processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)``
  followed by ``<|endoftext|>``; vision inputs from ``qwen_vl_utils.process_vision_info``:

  ================  ==================================================  ==============================
  input             image                                               text
  ================  ==================================================  ==============================
  text query        dummy 28x28 RGB, ``resized_height = resized_width = 1``  ``Query: {q}``
  page image        the page                                            ``What is shown in this image?``
  text document     dummy, as for queries                               ``Document: {text}``
  fused query       the query image                                     ``Query: {q}``
  image-only query  the query image                                     ``What is shown in this image?``
  ================  ==================================================  ==============================

* forward with ``use_cache=False``; embedding = last position of the last hidden
  state (``hidden_states[-1][:, -1]``, valid because of left padding); Matryoshka:
  keep the first ``dim`` values, then L2-normalise (in float32).

The dummy image becomes 56x56 px (4 visual tokens) after ``process_vision_info``'s
smart resize. Pages are first resized by ``process_vision_info`` (its default bounds
4..16384 tokens) and then by the processor (1..2560 tokens), as in the model card.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image

from dse.encoders.base import Vectors
from dse.encoders.devices import Runtime
from dse.encoders.errors import EncoderError
from dse.encoders.hf import HFEncoder, Item, l2_normalize, load_pretrained, load_processor, query_items, set_qwen_pixels
from dse.encoders.inputs import check_images, check_query_inputs, check_texts
from dse.encoders.registry import register_family
from dse.encoders.sources import ModelSource

logger = logging.getLogger(__name__)

#: Published DSE checkpoints' Matryoshka-trained output size (Qwen2-VL-2B hidden size).
DSE_QWEN2_2B_DIM = 1536
#: Qwen's smart resize refuses aspect ratios above this.
MAX_ASPECT_RATIO = 200


def check_aspect_ratio(images: Sequence[Image.Image], what: str) -> None:
    """Qwen2-VL's smart resize fails for width/height ratios above 200: say so clearly."""
    for i, im in enumerate(images):
        w, h = im.size
        if max(w, h) / min(w, h) > MAX_ASPECT_RATIO:
            raise EncoderError(
                f"{what} #{i} is {w}x{h} px: aspect ratio above {MAX_ASPECT_RATIO}:1, which Qwen2-VL cannot take; "
                "crop or split it"
            )


class QwenChatEncoder(HFEncoder):
    """Single-vector encoders whose inputs are one Qwen chat turn per item (DSE, GME).

    Subclasses define how an :class:`Item` becomes a turn and how a batch is forwarded
    (``_forward``); the public encode methods below validate inputs and batch them.
    """

    # --------------------------------------------------------------- public API
    def encode_documents(
        self, images: Sequence[Image.Image], *, batch_size: int = 4, progress: bool = False
    ) -> Vectors:
        """Page images -> ``(n, dim)`` float32, L2-normalised (the family's page prompt)."""
        imgs = check_images(images, what="page image")
        check_aspect_ratio(imgs, "page image")
        items = [Item("document", image=im) for im in imgs]
        return self._stack(self._encode(items, batch_size=batch_size, progress=progress, desc="pages"))

    def encode_text_documents(self, texts: Sequence[str], *, batch_size: int = 8, progress: bool = False) -> Vectors:
        """Text-only documents (DSE: ``Document: {text}`` + dummy image) -> ``(n, dim)`` float32."""
        docs = check_texts(texts, what="text document")
        items = [Item("text_document", text=t) for t in docs]
        return self._stack(self._encode(items, batch_size=batch_size, progress=progress, desc="text documents"))

    def encode_queries(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image] | None = None,
        *,
        batch_size: int = 8,
        progress: bool = False,
    ) -> Vectors:
        """Text, image or fused (image and text in one chat turn) queries -> ``(n, dim)`` float32."""
        t, i = check_query_inputs(texts, images)
        if i is not None:
            check_aspect_ratio(i, "query image")
        items = query_items(t, i)
        return self._stack(self._encode(items, batch_size=batch_size, progress=progress, desc="queries"))


@register_family("dse-qwen2", "dse-qwen2.5")
class DSEQwenEncoder(QwenChatEncoder):
    """DSE single-vector encoder (Qwen2-VL / Qwen2.5-VL backbone)."""

    kind: ClassVar[Literal["single", "multi"]] = "single"
    prompt_version = "dse-card-v1"

    QUERY_PROMPT: ClassVar[str] = "Query: {query}"
    DOCUMENT_PROMPT: ClassVar[str] = "What is shown in this image?"
    TEXT_DOCUMENT_PROMPT: ClassVar[str] = "Document: {text}"
    SUFFIX: ClassVar[str] = "<|endoftext|>"
    DEFAULT_MIN_PIXELS: ClassVar[int] = 1 * 28 * 28
    DEFAULT_MAX_PIXELS: ClassVar[int] = 2560 * 28 * 28
    #: The model card's dummy image: 28x28 black RGB, resized to 1x1 (-> 56x56 px, 4 tokens).
    DUMMY_IMAGE_SIZE: ClassVar[tuple[int, int]] = (28, 28)

    _MODEL_CLASSES: ClassVar[dict[str, str]] = {
        "dse-qwen2": "Qwen2VLForConditionalGeneration",
        "dse-qwen2.5": "Qwen2_5_VLForConditionalGeneration",
    }

    def __init__(self, *, hidden_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.hidden_size = hidden_size
        self._dummy = Image.new("RGB", self.DUMMY_IMAGE_SIZE)

    @classmethod
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
    ) -> DSEQwenEncoder:
        import transformers
        from transformers import AutoProcessor

        model_cls = getattr(transformers, cls._MODEL_CLASSES[family])
        model = load_pretrained(model_cls, source, runtime)
        model.padding_side = "left"
        processor = load_processor(AutoProcessor, source)
        processor.tokenizer.padding_side = "left"
        lo, hi = set_qwen_pixels(
            processor.image_processor,
            cls.DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels,
            cls.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        )
        hidden = int(model.config.text_config.hidden_size)
        if dim is None:
            dim = hidden
        if not 1 <= dim <= hidden:
            raise EncoderError(f"dim must be between 1 and the model's hidden size {hidden}, got {dim}")
        return cls(
            family=family,
            source=source,
            runtime=runtime,
            model=model,
            processor=processor,
            dim=int(dim),
            min_pixels=lo,
            max_pixels=hi,
            hidden_size=hidden,
        )

    # --------------------------------------------------------------- prompts
    def messages(self, item: Item) -> list[dict[str, Any]]:
        """The model card's one-turn chat message for an item."""
        if item.role == "document":
            image: dict[str, Any] = {"type": "image", "image": item.image}
            text = self.DOCUMENT_PROMPT
        elif item.role == "text_document":
            image = {"type": "image", "image": self._dummy, "resized_height": 1, "resized_width": 1}
            text = self.TEXT_DOCUMENT_PROMPT.format(text=item.text)
        elif item.role == "query":
            if item.image is None:
                image = {"type": "image", "image": self._dummy, "resized_height": 1, "resized_width": 1}
            else:
                image = {"type": "image", "image": item.image}
            text = self.QUERY_PROMPT.format(query=item.text) if item.text is not None else self.DOCUMENT_PROMPT
        else:  # pragma: no cover - internal roles only
            raise ValueError(item.role)
        return [{"role": "user", "content": [image, {"type": "text", "text": text}]}]

    def render(self, item: Item) -> str:
        """The prompt string of an item (chat template + ``<|endoftext|>``), before image-pad expansion."""
        return (
            self.processor.apply_chat_template(self.messages(item), tokenize=False, add_generation_prompt=True)
            + self.SUFFIX
        )

    def visual_tokens(self, image: Image.Image) -> int:
        """Visual tokens a page image becomes (``process_vision_info`` resize, then the processor's)."""
        from qwen_vl_utils import process_vision_info

        from dse.encoders.inputs import check_image

        images, _ = process_vision_info([self.messages(Item("document", image=check_image(image)))])
        grid = self.processor.image_processor(images=images, return_tensors="pt")["image_grid_thw"]
        return int(grid.prod()) // int(self.processor.image_processor.merge_size) ** 2

    # --------------------------------------------------------------- forward
    def last_token_states(self, items: list[Item]) -> torch.Tensor:
        """Differentiable forward of one batch: ``(n, hidden_size)`` last-position hidden states.

        Model dtype, not sliced, not normalised, on the model's device; runs with autograd
        when called outside ``torch.inference_mode`` (the training hook). The embedding
        is ``l2_normalize(states[:, :dim])``.
        """
        from qwen_vl_utils import process_vision_info

        messages = [self.messages(it) for it in items]
        texts = [
            self.processor.apply_chat_template(m, tokenize=False, add_generation_prompt=True) + self.SUFFIX
            for m in messages
        ]
        image_inputs, video_inputs = process_vision_info(messages)
        batch = self.processor(
            text=texts, images=image_inputs, videos=video_inputs, padding="longest", return_tensors="pt"
        )
        # The backbone's last hidden state == the full model's hidden_states[-1] (no lm_head work).
        out = self.model.model(**self._to_device(batch), use_cache=False, return_dict=True)
        return out.last_hidden_state[:, -1]

    def _forward(self, items: list[Item]) -> list[np.ndarray]:
        reps = l2_normalize(self.last_token_states(items)[:, : self.dim])
        return list(reps.cpu().numpy())

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "hidden_size": self.hidden_size}
