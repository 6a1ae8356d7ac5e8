"""The answer generator of visual RAG: a Qwen2-VL / Qwen2.5-VL Instruct model reading page images.

:meth:`Generator.load` takes a hub id or a local snapshot directory (one code path, the
encoders' :func:`dse.encoders.sources.resolve_model`), picks the runtime with the encoders'
device rules (``auto`` = CUDA, then MPS, then CPU; bfloat16 on CUDA, float32 elsewhere) and
loads the model class that matches the checkpoint's ``model_type``
(``Qwen2VLForConditionalGeneration`` / ``Qwen2_5_VLForConditionalGeneration``) with its
processor and chat template.

One question becomes one user turn (after the template's default system turn)::

    [1] <image of page 1>
    [2] <image of page 2>
    ...
    PROMPT (the instruction to answer from the pages and cite them as [1], [2], + the question)

built with ``processor.apply_chat_template(..., add_generation_prompt=True)``; the images
go through ``qwen_vl_utils.process_vision_info`` with the generator's ``min_pixels`` /
``max_pixels`` (each page becomes at most ``max_pixels / (28*28)`` visual tokens).
Decoding is greedy (deterministic); the answer is the decoded new tokens without special
tokens, stripped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from PIL import Image

logger = logging.getLogger(__name__)

#: Generator used when none is given (``dse ask``, :func:`dse.rag.ask`, ``POST /answer``).
DEFAULT_GENERATOR = "Qwen/Qwen2-VL-2B-Instruct"


class RAGError(ValueError):
    """A clear, user-facing error of visual RAG (bad question, bad ``k``, nothing to answer from)."""


class GeneratorError(RAGError):
    """The generator cannot be loaded (missing model, hub unreachable, not a Qwen-VL Instruct model)
    or cannot take an input (empty question, unreadable image)."""


class Generator:
    """A loaded Qwen2-VL / Qwen2.5-VL Instruct model that answers a question from page images.

    Create with :meth:`load`. :meth:`generate` returns the answer text; :meth:`stream` yields it
    piece by piece as it is decoded; :meth:`prepare` returns the exact model inputs (token ids,
    ``pixel_values``, ``image_grid_thw``) both use.
    """

    #: Instruction after the page images. ``{n}``: number of pages; ``{question}``: the question.
    PROMPT: ClassVar[str] = (
        "The images above are {n} document page(s), numbered [1] to [{n}] in the order given. "
        "Answer the question using only the information on these pages. After each statement, "
        "cite the page(s) it comes from by their numbers in square brackets, like [1] or [2]. "
        "If the pages do not contain the answer, say that they do not.\n\n"
        "Question: {question}"
    )
    #: Label put in front of each page image (its citation number, 1-based rank order).
    PAGE_LABEL: ClassVar[str] = "[{number}]"
    #: Default visual-token bounds per page (28x28 px per token): 256 .. 1280 tokens, the range the
    #: Qwen2-VL model card suggests; a 3-page context then stays under about 4k visual tokens.
    DEFAULT_MIN_PIXELS: ClassVar[int] = 256 * 28 * 28
    DEFAULT_MAX_PIXELS: ClassVar[int] = 1280 * 28 * 28

    _MODEL_CLASSES: ClassVar[dict[str, str]] = {
        "qwen2_vl": "Qwen2VLForConditionalGeneration",
        "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    }

    def __init__(
        self,
        *,
        name: str,
        model: Any,
        processor: Any,
        runtime: Any,
        max_new_tokens: int,
        min_pixels: int,
        max_pixels: int,
    ) -> None:
        self.name = name
        self.model = model
        self.processor = processor
        self.runtime = runtime
        self.max_new_tokens = max_new_tokens
        self.min_pixels = min_pixels
        self.max_pixels = max_pixels
        self._lock = threading.Lock()  # one generation at a time per loaded model

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        model: str,
        *,
        device: str = "auto",
        dtype: str | None = None,
        max_new_tokens: int = 256,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
    ) -> Generator:
        """Load a Qwen2-VL / Qwen2.5-VL Instruct checkpoint (hub id or local directory).

        ``device``: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps``; ``dtype`` defaults to
        bfloat16 on CUDA and float32 elsewhere. ``max_new_tokens`` caps the answer length (tokens).
        ``min_pixels`` / ``max_pixels`` bound each page image's resized area in pixels (default
        256*28*28 .. 1280*28*28). Every failure is one :class:`GeneratorError` line.
        """
        from dse.encoders.base import EncoderError
        from dse.encoders.devices import Runtime, resolve_runtime
        from dse.encoders.sources import ModelNotFound, resolve_model

        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise GeneratorError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        try:
            source = resolve_model(str(model), option="--generator")
        except ModelNotFound as exc:
            raise GeneratorError(str(exc)) from exc
        except EncoderError as exc:
            raise GeneratorError(f"cannot load generator {model!r}: {exc}") from exc
        config = source.config
        model_type = str(config.get("model_type", ""))
        if model_type not in cls._MODEL_CLASSES:
            raise GeneratorError(
                f"{model!r} is not a Qwen2-VL / Qwen2.5-VL model (model_type {model_type or 'missing'!r}); "
                f"the generator must be a Qwen2-VL or Qwen2.5-VL Instruct checkpoint such as {DEFAULT_GENERATOR}"
            )
        lo = cls.DEFAULT_MIN_PIXELS if min_pixels is None else min_pixels
        hi = cls.DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
            raise GeneratorError(f"need 1 <= min_pixels <= max_pixels, got {lo} and {hi}")
        try:
            runtime = resolve_runtime(device, dtype)
        except EncoderError as exc:
            raise GeneratorError(str(exc)) from exc
        if runtime.attn_implementation == "eager":
            # The encoders use eager attention off CUDA because SDPA returns NaN for fully left-padded
            # rows; generation runs one unpadded sequence, and SDPA avoids materialising the
            # (patches x patches) attention matrices of the vision tower.
            runtime = Runtime(device=runtime.device, dtype=runtime.dtype, attn_implementation="sdpa")
        return cls._from_source(
            source, model_type=model_type, runtime=runtime, max_new_tokens=max_new_tokens, min_pixels=lo, max_pixels=hi
        )

    @classmethod
    def _from_source(
        cls, source: Any, *, model_type: str, runtime: Any, max_new_tokens: int, min_pixels: int, max_pixels: int
    ) -> Generator:
        import transformers
        from transformers import AutoProcessor

        from dse.encoders.base import EncoderError
        from dse.encoders.hf import load_pretrained, load_processor, set_qwen_pixels

        try:
            processor = load_processor(AutoProcessor, source)
            set_qwen_pixels(processor.image_processor, min_pixels, max_pixels)
            if not getattr(processor, "chat_template", None):  # checked before the (large) weights load
                raise GeneratorError(
                    f"{source.name!r} has no chat template; use an Instruct checkpoint (e.g. {DEFAULT_GENERATOR})"
                )
            model = load_pretrained(getattr(transformers, cls._MODEL_CLASSES[model_type]), source, runtime)
        except EncoderError as exc:
            raise GeneratorError(str(exc)) from exc
        _make_greedy(model.generation_config, processor.tokenizer)
        logger.info("loaded generator %s on %s (%s)", source.model, runtime.device, runtime.dtype_name)
        return cls(
            name=source.model,
            model=model,
            processor=processor,
            runtime=runtime,
            max_new_tokens=max_new_tokens,
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )

    # ------------------------------------------------------------------- inputs
    def messages(self, question: str, images: Sequence[Image.Image]) -> list[dict[str, Any]]:
        """The chat messages for ``question`` over ``images`` (page ``i`` labelled ``[i]``, 1-based)."""
        content: list[dict[str, Any]] = []
        for number, image in enumerate(images, start=1):
            content.append({"type": "text", "text": self.PAGE_LABEL.format(number=number)})
            content.append(
                {"type": "image", "image": image, "min_pixels": self.min_pixels, "max_pixels": self.max_pixels}
            )
        content.append({"type": "text", "text": self.PROMPT.format(n=len(images), question=question)})
        return [{"role": "user", "content": content}]

    def prepare(self, question: str, images: Sequence[Image.Image]) -> Any:
        """Model inputs (a ``BatchFeature`` on the model's device) for one question over ``images``.

        Keys: ``input_ids`` / ``attention_mask`` ``(1, seq)``, ``pixel_values``
        ``(sum of patches, C*T*14*14)`` and ``image_grid_thw`` ``(n_images, 3)``.
        """
        from qwen_vl_utils import process_vision_info

        question = _check_question(question)
        imgs = _check_images(images)
        messages = self.messages(question, imgs)
        text = self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        image_inputs, _ = process_vision_info(messages)
        batch = self.processor(text=[text], images=image_inputs, padding=True, return_tensors="pt")
        return batch.to(self.runtime.device)

    def _generation_config(self) -> Any:
        """Greedy decoding with the checkpoint's end/pad tokens and ``max_new_tokens``."""
        import copy

        config = copy.deepcopy(self.model.generation_config)
        config.max_new_tokens = self.max_new_tokens
        return config

    # --------------------------------------------------------------- generation
    def generate(self, question: str, images: list[Image.Image]) -> str:
        """The answer to ``question`` read from ``images`` (pages in rank order), greedy-decoded, stripped."""
        import torch

        inputs = self.prepare(question, images)
        with self._lock, torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=self._generation_config())
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)[
            0
        ].strip()

    def stream(self, question: str, images: list[Image.Image]) -> Iterator[str]:
        """Yield the answer as it is decoded (text pieces; their concatenation, stripped, equals
        :meth:`generate`'s result). Uses transformers' ``TextIteratorStreamer`` and a worker thread;
        closing the iterator early waits for that generation to finish."""
        import torch
        from transformers import TextIteratorStreamer

        inputs = self.prepare(question, images)
        streamer = TextIteratorStreamer(
            self.processor.tokenizer, skip_prompt=True, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        failure: list[BaseException] = []

        def work() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self.model.generate(**inputs, generation_config=self._generation_config(), streamer=streamer)
            except BaseException as exc:
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, name="dse-rag-generate", daemon=True)
        thread.start()
        try:
            for piece in streamer:
                if piece:
                    yield piece
        finally:
            thread.join()
        if failure:
            raise failure[0]

    def __repr__(self) -> str:
        return f"Generator(model={self.name!r}, device={self.runtime.device}, max_new_tokens={self.max_new_tokens})"


def _make_greedy(config: Any, tokenizer: Any) -> None:
    """Turn the checkpoint's generation config into greedy decoding, in place.

    transformers fills every unset value of the config passed to ``generate`` from the model's own,
    so the sampling knobs of the published Instruct configs (``do_sample`` with temperature/top_k/top_p)
    are removed here, once, rather than overridden per call.
    """
    config.do_sample = False
    config.num_beams = 1
    config.temperature = config.top_k = config.top_p = None
    config.max_length = None
    if config.eos_token_id is None:
        config.eos_token_id = tokenizer.eos_token_id
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id


def _check_question(question: Any) -> str:
    if not isinstance(question, str):
        raise GeneratorError(f"the question must be a string, got {type(question).__name__}")
    if not question.strip():
        raise GeneratorError("empty question: give a question to answer")
    return question.strip()


def _check_images(images: Sequence[Image.Image]) -> list[Image.Image]:
    if isinstance(images, Image.Image):
        images = [images]
    if not images:
        raise GeneratorError("no page images given: the generator answers from at least one page")
    out = []
    for i, im in enumerate(images, start=1):
        if not isinstance(im, Image.Image):
            raise GeneratorError(f"page [{i}] is not a PIL image ({type(im).__name__})")
        if im.width < 1 or im.height < 1:
            raise GeneratorError(f"page [{i}] is an empty image ({im.width}x{im.height})")
        if max(im.size) / min(im.size) > 200:
            raise GeneratorError(
                f"page [{i}] is {im.width}x{im.height} px: aspect ratio above 200:1, which Qwen2-VL cannot take"
            )
        out.append(im if im.mode == "RGB" else im.convert("RGB"))
    return out
