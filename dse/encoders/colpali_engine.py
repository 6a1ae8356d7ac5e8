"""Multi-vector (late-interaction) families through colpali-engine's own classes.

Model and processor classes come from ``colpali_engine.models`` (no re-implemented
modeling); :data:`COLPALI_FAMILIES` maps each family to them. Prompt version
``colpali-engine-v1``:

* page images and image-only queries: ``processor.process_images(images)`` (the
  family's fixed visual prompt, e.g. ColQwen2's
  ``<|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>Describe the image.<|im_end|><|endoftext|>``);
* text queries: ``processor.process_queries(texts)`` (query prefix + text + 10
  query-augmentation tokens);
* text documents: ``processor.process_texts(texts)`` (plain text, no augmentation);
* fused queries (image + text in ONE sequence): the family's visual prompt with its
  document instruction (``Describe the image.``) replaced by the query text, followed
  by the 10 query-augmentation tokens; processed by the processor's own
  ``__call__`` with the image, like ``process_images``. For ColQwen2/2.5::

    <|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>{query}<|im_end|><|endoftext|>
    + "<|endoftext|>" * 10

* output: the model's per-token 128-d L2-normalised vectors with padding removed
  using the attention mask -> a list of ``(n_i, 128)`` float32 arrays.

Resolution: ``min_pixels``/``max_pixels`` apply to the Qwen-based families only
(default: the processor's saved values; ColQwen2 caps pages at 768*28*28 px = 768
visual tokens as the published checkpoint does). ColPali has a fixed 448x448 input
and ColIdefics3 its own tiling; passing pixel bounds for them is an error.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from PIL import Image

from dse.encoders.base import Vectors
from dse.encoders.devices import Runtime
from dse.encoders.dse_qwen import check_aspect_ratio
from dse.encoders.errors import EncoderError
from dse.encoders.hf import HFEncoder, Item, load_pretrained, load_processor, query_items, set_qwen_pixels
from dse.encoders.inputs import check_images, check_query_inputs, check_texts
from dse.encoders.registry import register_family
from dse.encoders.sources import ModelSource

logger = logging.getLogger(__name__)

#: Number of query-augmentation tokens colpali-engine appends to queries.
N_AUGMENTATION_TOKENS = 10


@dataclass(frozen=True)
class ColFamily:
    """How one colpali-engine family is loaded and prompted."""

    model_class: str  #: dotted path of the colpali-engine model class
    processor_class: str  #: dotted path of its processor class
    qwen_pixels: bool  #: Qwen2-VL style image processor (min/max pixel bounds apply)
    default_max_pixels: int | None = None  #: forced default max_pixels (None: processor's saved value)
    document_instruction: str = "Describe the image."  #: replaced by the query in fused prompts
    fused: bool = True  #: fused image+text queries supported
    pad_pixel_values: bool = False  #: re-pad pixel_values per image, as ColQwen processors do


#: family -> classes and prompt details.
COLPALI_FAMILIES: dict[str, ColFamily] = {
    "colqwen2": ColFamily(
        model_class="colpali_engine.models.ColQwen2",
        processor_class="colpali_engine.models.ColQwen2Processor",
        qwen_pixels=True,
        default_max_pixels=768 * 28 * 28,
        pad_pixel_values=True,
    ),
    "colqwen2.5": ColFamily(
        model_class="colpali_engine.models.ColQwen2_5",
        processor_class="colpali_engine.models.ColQwen2_5_Processor",
        qwen_pixels=True,
        pad_pixel_values=True,
    ),
    # PaliGemma-based ColPali: fixed 448x448 input (1024 patches).
    "colpali": ColFamily(
        model_class="dse.encoders.colpali_engine.TiedColPali",
        processor_class="colpali_engine.models.ColPaliProcessor",
        qwen_pixels=False,
    ),
    # Idefics3-based ColIdefics3 (ColSmol): image split into 512 px tiles + a global view.
    "colidefics3": ColFamily(
        model_class="colpali_engine.models.ColIdefics3",
        processor_class="colpali_engine.models.ColIdefics3Processor",
        qwen_pixels=False,
    ),
}


@functools.cache
def _tied_colpali_class() -> type:
    """colpali-engine's ``ColPali`` with PaliGemma's ``lm_head`` tied to the input embeddings.

    colpali-engine 0.3.18 overrides ``ColPali.tie_weights`` to delegate to the Gemma
    decoder, which ties nothing; under transformers 5 the ``lm_head`` (absent from
    checkpoints because ``tie_word_embeddings=True``) then stays on the meta device and
    ``model.to(device)`` fails with "Cannot copy out of meta tensor". Restoring the
    standard tie fixes loading; ``forward`` is unchanged (the lm_head is unused for
    embeddings), so outputs equal ``ColPali``'s.
    """
    from colpali_engine.models import ColPali
    from transformers import PreTrainedModel

    class TiedColPali(ColPali):
        def tie_weights(self, *args: Any, **kwargs: Any) -> Any:
            return PreTrainedModel.tie_weights(self, *args, **kwargs)

    return TiedColPali


def __getattr__(name: str) -> Any:
    # Lazy attribute so that importing this module does not import colpali-engine.
    if name == "TiedColPali":
        return _tied_colpali_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@register_family(*COLPALI_FAMILIES)
class ColPaliEngineEncoder(HFEncoder):
    """Multi-vector encoder for the colpali-engine families (ColQwen2, ColQwen2.5, ColPali, ColIdefics3)."""

    kind: ClassVar[Literal["single", "multi"]] = "multi"
    prompt_version = "colpali-engine-v1"

    def __init__(self, *, spec: ColFamily, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.spec = spec

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
    ) -> ColPaliEngineEncoder:
        spec = COLPALI_FAMILIES[family]
        if not spec.qwen_pixels and (min_pixels is not None or max_pixels is not None):
            raise EncoderError(f"{family} has a fixed image resolution; min_pixels/max_pixels do not apply")
        model = load_pretrained(_import(spec.model_class), source, runtime)
        out_dim = int(getattr(model, "dim", 128))
        if dim is not None and dim != out_dim:
            raise EncoderError(f"{family} produces {out_dim}-d token vectors; dim={dim} is not supported")
        processor = load_processor(_import(spec.processor_class), source)
        lo = hi = None
        if spec.qwen_pixels:
            lo, hi = set_qwen_pixels(
                processor.image_processor,
                min_pixels,
                max_pixels if max_pixels is not None else spec.default_max_pixels,
            )
        return cls(
            family=family,
            source=source,
            runtime=runtime,
            model=model,
            processor=processor,
            dim=out_dim,
            min_pixels=lo,
            max_pixels=hi,
            spec=spec,
        )

    # --------------------------------------------------------------- prompts
    @property
    def augmentation(self) -> str:
        """The query suffix colpali-engine appends: 10 query-augmentation tokens."""
        return self.processor.query_augmentation_token * N_AUGMENTATION_TOKENS

    def fused_prompt(self, query: str) -> str:
        """The one-sequence prompt of a fused (image + text) query (see the module doc)."""
        prefix = self.processor.visual_prompt_prefix
        if self.spec.document_instruction not in prefix:  # pragma: no cover - guards a colpali-engine change
            raise EncoderError(f"{self.family}: cannot build a fused prompt from {prefix!r}")
        return prefix.replace(self.spec.document_instruction, query) + self.augmentation

    def _process_fused(self, texts: list[str], images: list[Image.Image]) -> Any:
        batch = self.processor(text=texts, images=images, padding="longest", return_tensors="pt")
        if self.spec.pad_pixel_values:
            # Same layout as ColQwen2Processor.process_images: one zero-padded row per image.
            offsets = (batch["image_grid_thw"][:, 1] * batch["image_grid_thw"][:, 2]).tolist()
            batch["pixel_values"] = torch.nn.utils.rnn.pad_sequence(
                list(torch.split(batch["pixel_values"], offsets)), batch_first=True
            )
        return batch

    def visual_tokens(self, image: Image.Image) -> int:
        """Image tokens in ``process_images([image])`` (the page's visual token count)."""
        from dse.encoders.inputs import check_image

        batch = self.processor.process_images([check_image(image)])
        token = getattr(self.processor, "image_token", None)
        token_id = getattr(self.processor, "image_token_id", None)
        if token_id is None and token is not None:
            token_id = self.processor.tokenizer.convert_tokens_to_ids(token)
        if token_id is None:  # pragma: no cover - every colpali-engine processor names its image token
            raise EncoderError(f"{self.family}: the processor names no image token")
        return int((batch["input_ids"] == token_id).sum())

    # --------------------------------------------------------------- forward
    def token_vectors(self, items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable forward of one batch: ``(n, L, dim)`` token vectors and the ``(n, L)`` bool mask.

        The model's output as colpali-engine returns it (L2-normalised per token, padding
        positions zero), model dtype, on the model's device; runs with autograd when called
        outside ``torch.inference_mode`` (the training hook; colpali-engine's losses take
        these padded tensors directly).
        """
        kinds = {(it.role, it.image is not None, it.text is not None) for it in items}
        if len(kinds) != 1:  # pragma: no cover - callers never mix
            raise ValueError("a batch must hold one kind of input")
        role, has_image, has_text = kinds.pop()
        if has_image and has_text:
            batch = self._process_fused(
                [self.fused_prompt(it.text or "") for it in items], [it.image for it in items if it.image is not None]
            )
        elif has_image:
            batch = self.processor.process_images([it.image for it in items])
        elif role == "query":
            batch = self.processor.process_queries([it.text or "" for it in items])
        else:
            batch = self.processor.process_texts([it.text or "" for it in items])
        batch = self._to_device(batch)
        out = self.model(**batch)
        return out, batch["attention_mask"].bool()

    def _forward(self, items: list[Item]) -> list[np.ndarray]:
        out, mask = self.token_vectors(items)
        return [out[k][mask[k]].float().cpu().numpy() for k in range(len(items))]

    # --------------------------------------------------------------- public API
    def _check_images(self, images: Sequence[Image.Image], what: str) -> list[Image.Image]:
        imgs = check_images(images, what=what)
        if self.spec.qwen_pixels:
            check_aspect_ratio(imgs, what)
        return imgs

    def encode_documents(
        self, images: Sequence[Image.Image], *, batch_size: int = 4, progress: bool = False
    ) -> Vectors:
        """Page images -> list of ``(n_i, 128)`` float32 token vectors."""
        items = [Item("document", image=im) for im in self._check_images(images, "page image")]
        return self._encode(items, batch_size=batch_size, progress=progress, desc="pages")

    def encode_text_documents(self, texts: Sequence[str], *, batch_size: int = 8, progress: bool = False) -> Vectors:
        """Text documents (``processor.process_texts``) -> list of ``(n_i, 128)`` float32."""
        items = [Item("text_document", text=t) for t in check_texts(texts, what="text document")]
        return self._encode(items, batch_size=batch_size, progress=progress, desc="text documents")

    def encode_queries(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[Image.Image] | None = None,
        *,
        batch_size: int = 8,
        progress: bool = False,
    ) -> Vectors:
        """Text (``process_queries``), image (``process_images``) or fused queries -> list of ``(n_i, 128)``."""
        t, i = check_query_inputs(texts, images)
        if i is not None and self.spec.qwen_pixels:
            check_aspect_ratio(i, "query image")
        if t is not None and i is not None and not self.spec.fused:
            raise EncoderError(f"fused image+text queries are not supported for {self.family}")
        items = query_items(t, i)
        return self._encode(items, batch_size=batch_size, progress=progress, desc="queries")
