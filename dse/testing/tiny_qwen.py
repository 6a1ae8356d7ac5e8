"""Tiny random-weight Qwen2-VL / Qwen2.5-VL checkpoints for the Qwen-based families.

Each builder writes a directory laid out like a hub snapshot of the published model:

* ``config.json`` + ``model.safetensors`` (random weights, ``architectures`` as in the
  published checkpoint: ``Qwen2VLForConditionalGeneration``, ``Qwen2_5_VLForConditionalGeneration``,
  ``ColQwen2``, ``ColQwen2_5``),
* a locally trained byte-level BPE tokenizer (``Qwen2Tokenizer``) holding the Qwen
  special tokens with the ``<|endoftext|>`` pad / ``<|im_end|>`` eos of the originals,
* the processor files (``processor_config.json`` / ``preprocessor_config.json`` /
  video processor) written by ``processor.save_pretrained``,
* the Qwen2-VL Instruct chat template (:data:`QWEN2_VL_CHAT_TEMPLATE`, byte-identical
  to the published one: it inserts the default system turn).

The vision tower keeps the real patch geometry (patch 14, merge 2, temporal patch 2)
so visual token counts equal the published models'; only widths and depths shrink.
GME snapshots additionally get a ``gme_inference.py`` marker (real GME snapshots ship
their reference inference script under that name; family detection uses it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dse.testing.tiny_tokenizer import train_byte_level_bpe, vocab_and_merges

logger = logging.getLogger(__name__)

#: Chat template of Qwen2-VL-2B/7B-Instruct and Qwen2.5-VL-*-Instruct (``chat_template.json``).
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Special tokens of the Qwen2-VL tokenizer, in id order (151643 ... 151656 in the original).
QWEN2_VL_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
#: Extra specials of the Qwen2.5 tokenizer (tool calls and fill-in-the-middle).
QWEN2_5_EXTRA_SPECIAL_TOKENS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)

#: Image processor bounds saved with the published Qwen2-VL processors (the encoders
#: override them with each family's own recipe values).
QWEN_PROCESSOR_MIN_PIXELS = 56 * 56
QWEN_PROCESSOR_MAX_PIXELS = 28 * 28 * 16384
#: vidore/colqwen2-v1.0 caps pages at 768 visual tokens.
COLQWEN2_MAX_PIXELS = 768 * 28 * 28

#: Model sizes: "tiny" for unit tests (forward in milliseconds), "small" for the encode
#: benchmark, "full" = the smallest published checkpoint (Qwen2-VL-2B / Qwen2.5-VL-3B).
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "text": dict(
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=[2, 3, 3],
        ),
        "vision2": dict(depth=2, embed_dim=32, num_heads=2, mlp_ratio=2),
        "vision2_5": dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, fullatt_block_indexes=[1]),
    },
    "small": {
        "text": dict(
            hidden_size=256,
            intermediate_size=1024,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=[8, 12, 12],
        ),
        "vision2": dict(depth=4, embed_dim=128, num_heads=4, mlp_ratio=4),
        "vision2_5": dict(depth=4, hidden_size=128, intermediate_size=512, num_heads=4, fullatt_block_indexes=[1, 3]),
    },
    "full": {
        "text": dict(
            hidden_size=1536,
            intermediate_size=8960,
            num_hidden_layers=28,
            num_attention_heads=12,
            num_key_value_heads=2,
            mrope_section=[16, 24, 24],
            vocab_size=151936,
        ),
        "vision2": dict(depth=32, embed_dim=1280, num_heads=16, mlp_ratio=4),
        # Qwen2.5-VL-3B: text 2048 wide, 36 layers.
        "text2_5": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            mrope_section=[16, 24, 24],
            vocab_size=151936,
        ),
        "vision2_5": dict(
            depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, fullatt_block_indexes=[7, 15, 23, 31]
        ),
    },
}

#: Weight init scale. Larger than the usual 0.02 so that a random tiny model maps
#: different inputs to clearly different embeddings (tests then have power).
TINY_INITIALIZER_RANGE = 0.2

GME_MARKER = '''"""Marker file written by dse.testing.tiny for a tiny random GME checkpoint.

Published GME snapshots (Alibaba-NLP/gme-Qwen2-VL-*) ship their reference inference
script under this file name; dse's family detection treats its presence in a
Qwen2-VL snapshot as "this is GME, not DSE". This copy holds no code.
"""
'''


def _build_tokenizer(qwen2_5: bool, vocab_size: int, seed: int) -> Any:
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    specials = list(QWEN2_VL_SPECIAL_TOKENS) + (list(QWEN2_5_EXTRA_SPECIAL_TOKENS) if qwen2_5 else [])
    raw = train_byte_level_bpe(
        specials,
        vocab_size=vocab_size,
        seed=seed,
        extra_text=[
            "Query: ",
            "Document: ",
            "What is shown in this image?",
            "Describe the image.",
            "You are a helpful assistant.",
            "Find an image that matches the given text.",
        ],
    )
    vocab, merges = vocab_and_merges(raw)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,  # type: ignore[arg-type]  # Qwen2 has no unknown token; the stub says str
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=32768,
        extra_special_tokens=[t for t in specials if t != "<|endoftext|>"],
    )
    tok.chat_template = QWEN2_VL_CHAT_TEMPLATE
    for t in specials:
        if tok.convert_tokens_to_ids(t) != vocab[t]:  # pragma: no cover - guards the layout
            raise RuntimeError(f"special token {t} got an unexpected id")
    return tok


def _text_config(size: str, qwen2_5: bool, tok: Any) -> dict[str, Any]:
    preset = dict(SIZES[size]["text2_5" if qwen2_5 and "text2_5" in SIZES[size] else "text"])
    mrope = preset.pop("mrope_section")
    vocab_size = preset.pop("vocab_size", None) or ((len(tok) + 63) // 64) * 64
    return dict(
        vocab_size=vocab_size,
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": mrope},
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        initializer_range=TINY_INITIALIZER_RANGE,
        **preset,
    )


def _config(size: str, qwen2_5: bool, tok: Any, architectures: list[str]) -> Any:
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    text = _text_config(size, qwen2_5, tok)
    ids = dict(
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
        vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"),
    )
    cfg: Any
    if qwen2_5:
        vision = dict(
            SIZES[size]["vision2_5"],
            out_hidden_size=text["hidden_size"],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            initializer_range=TINY_INITIALIZER_RANGE,
        )
        cfg = Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    else:
        vision = dict(
            SIZES[size]["vision2"],
            hidden_size=text["hidden_size"],
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            initializer_range=TINY_INITIALIZER_RANGE,
        )
        cfg = Qwen2VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)
    cfg.architectures = architectures
    cfg.initializer_range = TINY_INITIALIZER_RANGE
    return cfg


def _processor(processor_cls: type, tok: Any, max_pixels: int) -> Any:
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=QWEN_PROCESSOR_MIN_PIXELS, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor()
    return processor_cls(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=video_processor,
        chat_template=QWEN2_VL_CHAT_TEMPLATE,
    )


@dataclass(frozen=True)
class QwenLayout:
    """What a tiny Qwen-based snapshot is: model class, processor class, ``architectures`` entry,
    Qwen2.5 vision tower or not, and the processor's pixel cap."""

    model_cls_path: str
    processor_cls_path: str
    architecture: str
    qwen2_5: bool
    max_pixels: int


QWEN2_VL = QwenLayout(
    "transformers.Qwen2VLForConditionalGeneration",
    "transformers.Qwen2VLProcessor",
    "Qwen2VLForConditionalGeneration",
    False,
    QWEN_PROCESSOR_MAX_PIXELS,
)
QWEN2_5_VL = QwenLayout(
    "transformers.Qwen2_5_VLForConditionalGeneration",
    "transformers.Qwen2_5_VLProcessor",
    "Qwen2_5_VLForConditionalGeneration",
    True,
    QWEN_PROCESSOR_MAX_PIXELS,
)
COLQWEN2 = QwenLayout(
    "colpali_engine.models.ColQwen2", "colpali_engine.models.ColQwen2Processor", "ColQwen2", False, COLQWEN2_MAX_PIXELS
)
COLQWEN2_5 = QwenLayout(
    "colpali_engine.models.ColQwen2_5",
    "colpali_engine.models.ColQwen2_5_Processor",
    "ColQwen2_5",
    True,
    COLQWEN2_MAX_PIXELS,
)


def build_layout(
    out_dir: Path, layout: QwenLayout, *, size: str = "tiny", seed: int = 0, vocab_size: int = 1500
) -> Path:
    """Write a tiny random-weight snapshot of ``layout`` into ``out_dir``; returns the directory."""
    import importlib

    def _import(path: str) -> Any:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)

    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose one of {sorted(SIZES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _build_tokenizer(layout.qwen2_5, vocab_size, seed)
    cfg = _config(size, layout.qwen2_5, tok, [layout.architecture])
    torch.manual_seed(seed)
    model_cls = _import(layout.model_cls_path)
    with torch.device("cpu"):
        model = model_cls(cfg).eval()
    model.config.architectures = [layout.architecture]
    model.save_pretrained(out_dir, safe_serialization=True)
    processor = _processor(_import(layout.processor_cls_path), tok, layout.max_pixels)
    processor.save_pretrained(out_dir)
    logger.info("wrote tiny %s (%s) to %s", layout.architecture, size, out_dir)
    return out_dir


def build_dse_qwen2(out_dir: Path, *, size: str = "tiny", seed: int = 0, vocab_size: int = 1500) -> Path:
    """DSE on Qwen2-VL (``MrLight/dse-qwen2-2b-mrl-v1`` layout)."""
    return build_layout(out_dir, QWEN2_VL, size=size, seed=seed, vocab_size=vocab_size)


def build_dse_qwen2_5(out_dir: Path, *, size: str = "tiny", seed: int = 0, vocab_size: int = 1500) -> Path:
    """DSE on Qwen2.5-VL."""
    return build_layout(out_dir, QWEN2_5_VL, size=size, seed=seed, vocab_size=vocab_size)


def build_gme_qwen2(out_dir: Path, *, size: str = "tiny", seed: int = 0, vocab_size: int = 1500) -> Path:
    """GME on Qwen2-VL (``Alibaba-NLP/gme-Qwen2-VL-2B-Instruct`` layout, with the marker file)."""
    out = build_dse_qwen2(out_dir, size=size, seed=seed, vocab_size=vocab_size)
    (out / "gme_inference.py").write_text(GME_MARKER, encoding="utf-8")
    return out


def build_colqwen2(out_dir: Path, *, size: str = "tiny", seed: int = 0, vocab_size: int = 1500) -> Path:
    """ColQwen2 (colpali-engine ``ColQwen2`` + ``ColQwen2Processor``, max 768 visual tokens)."""
    return build_layout(out_dir, COLQWEN2, size=size, seed=seed, vocab_size=vocab_size)


def build_colqwen2_5(out_dir: Path, *, size: str = "tiny", seed: int = 0, vocab_size: int = 1500) -> Path:
    """ColQwen2.5 (colpali-engine ``ColQwen2_5`` + ``ColQwen2_5_Processor``)."""
    return build_layout(out_dir, COLQWEN2_5, size=size, seed=seed, vocab_size=vocab_size)
