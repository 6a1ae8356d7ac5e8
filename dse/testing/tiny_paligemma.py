"""Build a tiny random-weight ColPali (PaliGemma) checkpoint, fully offline.

The result is laid out like a hub snapshot of ``vidore/colpali-v1.3``-style
checkpoints, so that ``ColPaliProcessor.from_pretrained(out_dir)`` and
``ColPali.from_pretrained(out_dir)`` (colpali-engine) load it with no network:

* ``config.json`` + ``model.safetensors``: ``ColPali(PaliGemmaConfig)`` with a
  SigLIP vision tower (depth 1, hidden 32, patch 14) and a 2-layer Gemma
  decoder (hidden 64), random weights, plus colpali-engine's 128-d
  ``custom_text_proj``.
* ``tokenizer.json`` / ``tokenizer_config.json``: a Gemma-style BPE tokenizer
  (byte fallback, ``" " -> "▁"`` normaliser) trained with the ``tokenizers``
  library on generated text at build time. Special ids follow Gemma's layout:
  ``<pad>`` 0, ``<eos>`` 1, ``<bos>`` 2, ``<unk>`` 3, ``<mask>`` 4, then the
  256 byte-fallback tokens ``<0x00>``..``<0xFF>``; ``PaliGemmaProcessor`` adds
  ``<image>`` and the 1,152 ``<locNNNN>`` / ``<segNNN>`` tokens on top.
* ``processor_config.json``: a
  ``SiglipImageProcessor`` resizing to ``image_size`` x ``image_size`` pixels
  (bicubic, mean/std 0.5, like PaliGemma) with ``image_seq_length =
  (image_size // 14) ** 2`` image tokens, wrapped in ``ColPaliProcessor``.

Documents are processed with ColPali's published prompt
``<image><bos>Describe the image.`` (``PaliGemmaProcessor`` expands ``<image>``,
inserts one more ``<bos>`` after the image block and appends ``\\n``); queries are
``<bos>`` + text + 10 ``<pad>`` augmentation tokens (tokenizer only, no ``\\n``),
exactly as colpali-engine does.

Sizes above are the "tiny" preset; ``size="small"`` (see :data:`SIZES`) is a wider,
deeper 224 px variant for encode benchmarks.

The tokenizer pads on the RIGHT, as the published ColPali checkpoints do (the
colpali maintainers set ``padding_side="right"`` for PaliGemma, as discussed on
illuin-tech/colpali's tracker); left-padded rows would also be fully masked rows, which
give NaN with ``sdpa`` attention on CPU.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from dse.testing.presets import resolve_preset
from dse.testing.tiny_tokenizer import bpe_merges, generate_corpus

if TYPE_CHECKING:
    from transformers import GemmaTokenizer

logger = logging.getLogger(__name__)

PATCH_SIZE = 14
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")
BYTE_TOKENS = tuple(f"<0x{i:02X}>" for i in range(256))


def train_gemma_tokenizer(vocab_size: int = 1000, seed: int = 0) -> GemmaTokenizer:
    """Train a Gemma-layout BPE tokenizer on generated text (about 0.3 s).

    Returns a ``transformers.GemmaTokenizer`` (tokenizers backend) whose vocabulary
    starts with Gemma's special tokens and the 256 byte-fallback tokens.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import GemmaTokenizer

    raw = Tokenizer(BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Same normaliser / pre-tokeniser / decoder as transformers' GemmaTokenizer.
    raw.normalizer = normalizers.Replace(" ", "▁")
    raw.pre_tokenizer = pre_tokenizers.Split(pattern=" ", behavior="merged_with_previous", invert=False)
    raw.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*GEMMA_SPECIALS, *BYTE_TOKENS],
        initial_alphabet=list("\n▁"),
        show_progress=False,
    )
    raw.train_from_iterator(generate_corpus(seed=seed, extra=["Describe the image."]), trainer=trainer)
    state = json.loads(raw.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    merges = bpe_merges(state)
    for i, tok in enumerate(GEMMA_SPECIALS):
        if vocab.get(tok) != i:  # pragma: no cover - guards a tokenizers behaviour change
            raise RuntimeError(f"trained tokenizer has {tok} at id {vocab.get(tok)}, expected {i}")
    # padding_side="right" is saved in tokenizer_config.json, as in the ColPali checkpoints.
    return GemmaTokenizer(vocab=vocab, merges=merges, padding_side="right")


#: Size presets: "tiny" for unit tests (16 image tokens, forward in milliseconds),
#: "small" for encode benchmarks (256 image tokens per page, as a 224 px PaliGemma).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(image_size=56, hidden_size=64, num_layers=2, vision_hidden_size=32, vision_layers=1),
    "small": dict(image_size=224, hidden_size=256, num_layers=4, vision_hidden_size=128, vision_layers=4),
}


def build(
    out_dir: Path,
    *,
    size: str = "tiny",
    image_size: int | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    vision_hidden_size: int | None = None,
    vision_layers: int | None = None,
    vocab_size: int = 1000,
    seed: int = 0,
) -> Path:
    """Write a random-weight ColPali checkpoint to ``out_dir`` and return it.

    ``size`` picks a preset of :data:`SIZES`; explicit arguments override it.
    ``image_size`` (pixels, a multiple of 14) sets both the SigLIP input size and
    the number of image tokens per page, ``(image_size // 14) ** 2`` (16 for "tiny").
    ``vocab_size`` is the size of the trained BPE vocabulary before the processor
    adds ``<image>`` and the location/segmentation tokens.
    """
    p = resolve_preset(
        SIZES,
        size,
        "colpali",
        image_size=image_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        vision_hidden_size=vision_hidden_size,
        vision_layers=vision_layers,
    )
    image_size, hidden_size, num_layers = p["image_size"], p["hidden_size"], p["num_layers"]
    vision_hidden_size, vision_layers = p["vision_hidden_size"], p["vision_layers"]

    from colpali_engine.models import ColPali, ColPaliProcessor
    from transformers import PaliGemmaConfig, SiglipImageProcessor

    if image_size % PATCH_SIZE:
        raise ValueError(f"image_size must be a multiple of {PATCH_SIZE}, got {image_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_image_tokens = (image_size // PATCH_SIZE) ** 2

    tokenizer = train_gemma_tokenizer(vocab_size=vocab_size, seed=seed)
    image_processor = SiglipImageProcessor(
        size={"height": image_size, "width": image_size},
        resample=3,  # bicubic
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        image_seq_length=n_image_tokens,
    )
    # PaliGemmaProcessor adds <image> (special) and the <locNNNN>/<segNNN> tokens.
    processor = ColPaliProcessor(image_processor=image_processor, tokenizer=tokenizer)
    total_vocab = len(processor.tokenizer)
    image_token_id = processor.image_token_id

    head_dim = 16
    config = PaliGemmaConfig(
        vision_config={
            "model_type": "siglip_vision_model",
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": PATCH_SIZE,
            "vision_use_head": False,
        },
        text_config={
            "model_type": "gemma",
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": hidden_size // head_dim,
            "num_key_value_heads": 1,
            "head_dim": head_dim,
            "vocab_size": total_vocab,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
        },
        image_token_index=image_token_id,
        vocab_size=total_vocab,
        projection_dim=hidden_size,
        hidden_size=hidden_size,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = ColPali(config).eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    logger.info(
        "built %s ColPali in %s (vocab %d, %d image tokens, image %dpx)",
        size,
        out_dir,
        total_vocab,
        n_image_tokens,
        image_size,
    )
    return out_dir
