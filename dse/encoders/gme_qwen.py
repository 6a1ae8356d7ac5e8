"""GME (General Multimodal Embedder) on Qwen2-VL: one vector per input, fused-modal.

Implements the format of GME's reference inference script (``gme_inference.py`` in
``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct``), prompt version ``gme-v1``:

* one chat turn written out as a string (``\\n`` = newline)::

    <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{image}{text}<|im_end|>\\n
    <|im_start|>assistant\\n<|endoftext|>      (one line, split here for width)

  where ``{image}`` is ``<|vision_start|><|image_pad|><|vision_end|>`` when the input
  has an image (image BEFORE text) and ``{text}`` the optional text;
* ``{instruction}`` = the query instruction for queries (:attr:`GMEQwenEncoder.query_instruction`,
  default ``Find an image that matches the given text.``; set it per task with
  ``Encoder.load(..., query_instruction=...)``), ``You are a helpful assistant.`` for
  candidates (page images and text documents);
* images: RGB, smart-resized to multiples of 28 px within 4..16384 tokens
  (``qwen_vl_utils.fetch_image``, the same resize as GME's own ``fetch_image``), then by
  the processor with ``min_pixels = 256*28*28``, ``max_pixels = 1280*28*28``;
* RIGHT padding, truncation at 1800 tokens;
* forward as the reference: token embeddings with the vision tower's output scattered
  into the ``<|image_pad|>`` positions, then the text decoder with no ``position_ids``
  (plain sequential positions - GME's script calls the decoder directly, without
  Qwen2-VL's 3-D M-RoPE); embedding = hidden state of the last non-pad token,
  L2-normalised.

Fused text+image inputs (queries) go through the same path: that is GME's native
fused-modal mode.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image

from dse.encoders.devices import Runtime
from dse.encoders.dse_qwen import QwenChatEncoder
from dse.encoders.errors import EncoderError
from dse.encoders.hf import Item, l2_normalize, load_pretrained, load_processor, set_qwen_pixels
from dse.encoders.registry import register_family
from dse.encoders.sources import ModelSource

logger = logging.getLogger(__name__)


@register_family("gme-qwen2")
class GMEQwenEncoder(QwenChatEncoder):
    """GME single-vector encoder (Qwen2-VL backbone)."""

    kind: ClassVar[Literal["single", "multi"]] = "single"
    prompt_version = "gme-v1"
    OPTIONS: ClassVar[frozenset[str]] = frozenset({"query_instruction"})

    DEFAULT_QUERY_INSTRUCTION: ClassVar[str] = "Find an image that matches the given text."
    CANDIDATE_INSTRUCTION: ClassVar[str] = "You are a helpful assistant."
    TEMPLATE: ClassVar[str] = (
        "<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n{content}<|im_end|>\n"
        "<|im_start|>assistant\n<|endoftext|>"
    )
    VISION_PLACEHOLDER: ClassVar[str] = "<|vision_start|><|image_pad|><|vision_end|>"
    DEFAULT_MIN_PIXELS: ClassVar[int] = 256 * 28 * 28
    DEFAULT_MAX_PIXELS: ClassVar[int] = 1280 * 28 * 28
    MAX_LENGTH: ClassVar[int] = 1800

    def __init__(self, *, query_instruction: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.query_instruction = query_instruction

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
        query_instruction: str | None = None,
        **options: Any,
    ) -> GMEQwenEncoder:
        from transformers import AutoProcessor, Qwen2VLForConditionalGeneration

        if query_instruction is not None and (not isinstance(query_instruction, str) or not query_instruction.strip()):
            raise EncoderError("query_instruction must be a non-empty string")
        model = load_pretrained(Qwen2VLForConditionalGeneration, source, runtime)
        processor = load_processor(AutoProcessor, source)
        processor.tokenizer.padding_side = "right"
        lo, hi = set_qwen_pixels(
            processor.image_processor,
            cls.DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels,
            cls.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        )
        hidden = int(model.config.text_config.hidden_size)
        if dim is not None and dim != hidden:
            raise EncoderError(f"GME embeddings have the model's hidden size {hidden}; dim={dim} is not supported")
        return cls(
            family=family,
            source=source,
            runtime=runtime,
            model=model,
            processor=processor,
            dim=hidden,
            min_pixels=lo,
            max_pixels=hi,
            query_instruction=query_instruction or cls.DEFAULT_QUERY_INSTRUCTION,
        )

    # --------------------------------------------------------------- prompts
    def render(self, item: Item) -> str:
        """The prompt string of an item, before image-pad expansion."""
        instruction = self.query_instruction if item.role == "query" else self.CANDIDATE_INSTRUCTION
        content = (self.VISION_PLACEHOLDER if item.image is not None else "") + (item.text or "")
        return self.TEMPLATE.format(instruction=instruction, content=content)

    def visual_tokens(self, image: Image.Image) -> int:
        """Visual tokens a page image becomes (GME's resize, then the processor's)."""
        from qwen_vl_utils import fetch_image

        from dse.encoders.inputs import check_image

        resized = fetch_image({"image": check_image(image)})
        grid = self.processor.image_processor(images=[resized], return_tensors="pt")["image_grid_thw"]
        return int(grid.prod()) // int(self.processor.image_processor.merge_size) ** 2

    # --------------------------------------------------------------- forward
    def last_token_states(self, items: list[Item]) -> torch.Tensor:
        """Differentiable forward of one batch: ``(n, hidden_size)`` hidden states of the last
        non-pad token (model dtype, not normalised); the training hook. Embedding = L2-normalised."""
        from qwen_vl_utils import fetch_image

        with_image = [it.image is not None for it in items]
        if any(with_image) and not all(with_image):  # pragma: no cover - callers never mix
            raise ValueError("a GME batch must be all-image or all-text")
        texts = [self.render(it) for it in items]
        images = [fetch_image({"image": it.image}) for it in items] if all(with_image) else None
        batch = self.processor(
            text=texts,
            images=images,
            padding=True,
            truncation=True,
            max_length=self.MAX_LENGTH,
            return_tensors="pt",
        )
        batch = self._to_device(batch)
        backbone = self.model.model
        input_ids = batch["input_ids"]
        attention_mask = batch["attention_mask"]
        embeds = backbone.get_input_embeddings()(input_ids)
        if images is not None:
            features = backbone.get_image_features(batch["pixel_values"], batch["image_grid_thw"]).pooler_output
            features = torch.cat(list(features), dim=0).to(embeds.device, embeds.dtype)
            mask = input_ids == self.model.config.image_token_id
            if int(mask.sum()) != features.shape[0]:
                raise EncoderError(
                    f"image tokens ({int(mask.sum())}) and image features ({features.shape[0]}) do not match; "
                    f"the text may exceed {self.MAX_LENGTH} tokens"
                )
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), features)
        out = backbone.language_model(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        last = attention_mask.sum(dim=1) - 1
        return out.last_hidden_state[torch.arange(len(items), device=last.device), last]

    def _forward(self, items: list[Item]) -> list[np.ndarray]:
        return list(l2_normalize(self.last_token_states(items)).cpu().numpy())

    @property
    def settings(self) -> dict[str, Any]:
        return {**super().settings, "query_instruction": self.query_instruction}
