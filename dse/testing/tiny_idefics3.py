"""Build a tiny random-weight ColIdefics3 (ColSmol) checkpoint, fully offline.

The result is laid out like a hub snapshot of ``vidore/colSmol-256M``-style
checkpoints (SmolVLM / Idefics3 backbone), so that
``ColIdefics3Processor.from_pretrained(out_dir)`` and
``ColIdefics3.from_pretrained(out_dir)`` (colpali-engine) load it with no network:

* ``config.json`` + ``model.safetensors``: ``ColIdefics3(Idefics3Config)`` with an
  Idefics3 (SigLIP-like) vision tower of depth 1 (hidden 32, ``vision_image_size``
  32 px, patch 8 -> 16 patches), the pixel-shuffle connector (``scale_factor`` 2 ->
  4 image tokens per sub-image), a 2-layer Llama decoder (hidden 64) and
  colpali-engine's 128-d ``linear`` projection; random weights.
* ``tokenizer.json`` / ``tokenizer_config.json``: a GPT-2 style byte-level BPE
  (``GPT2Tokenizer``, as SmolVLM uses) trained with the ``tokenizers`` library at
  build time. Special tokens as in SmolVLM: ``<|endoftext|>`` (0, unk),
  ``<|im_start|>`` (1, bos), ``<|im_end|>`` (2, pad), then ``<fake_token_around_image>``,
  ``<image>``, ``<end_of_utterance>`` (eos), ``<global-img>`` and the 36
  ``<row_{i}_col_{j}>`` tile tokens (i, j in 1..6).
* ``processor_config.json`` / ``chat_template.jinja``: an ``Idefics3ImageProcessor``
  (longest edge ``size_longest_edge`` px, split into tiles of ``vision_image_size``
  px plus a global view, like SmolVLM at a tiny scale) wrapped in
  ``ColIdefics3Processor`` with ``image_seq_len = (vision_image_size // 8) ** 2 / 4``
  and SmolVLM's chat template, which renders one user turn ``[image, "Describe the
  image."]`` with a generation prompt exactly as colpali-engine's document prompt
  ``<|im_start|>User:<image>Describe the image.<end_of_utterance>\\nAssistant:``.

Sizes above are the "tiny" preset; ``size="small"`` (see :data:`SIZES`) is a wider,
deeper variant with 128 px tiles and pages up to 512 px for encode benchmarks.

Queries are text + 10 ``<end_of_utterance>`` augmentation tokens (no prefix), left
padded, as colpali-engine does for ColIdefics3.
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
    from transformers import GPT2Tokenizer

logger = logging.getLogger(__name__)

PATCH_SIZE = 8
SCALE_FACTOR = 2
BASE_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
IMAGE_SPECIALS = (
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)

#: SmolVLM-Instruct's chat template (the one ColSmol checkpoints ship).
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}"
    "{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)


def train_smol_tokenizer(vocab_size: int = 600, seed: int = 0) -> GPT2Tokenizer:
    """Train a SmolVLM-layout byte-level BPE tokenizer on generated text.

    Returns a ``transformers.GPT2Tokenizer`` (tokenizers backend) with SmolVLM's
    special tokens (see the module docstring), padding on the left.
    """
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import AddedToken, GPT2Tokenizer

    raw = Tokenizer(BPE(continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(BASE_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = generate_corpus(seed=seed, extra=["Describe the image.", "User:", "Assistant:"])
    raw.train_from_iterator(corpus, trainer=trainer)
    state = json.loads(raw.to_str())
    vocab: dict[str, int] = state["model"]["vocab"]
    merges = bpe_merges(state)
    for i, tok in enumerate(BASE_SPECIALS):
        if vocab.get(tok) != i:  # pragma: no cover - guards a tokenizers behaviour change
            raise RuntimeError(f"trained tokenizer has {tok} at id {vocab.get(tok)}, expected {i}")
    tokenizer = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token="<|endoftext|>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        add_prefix_space=False,
        padding_side="left",
    )
    tokenizer.add_special_tokens(
        {"additional_special_tokens": [AddedToken(t, normalized=False, special=True) for t in IMAGE_SPECIALS]}
    )
    return tokenizer


#: Size presets: "tiny" for unit tests (4 image tokens per 32 px tile, pages at most
#: 2 x 2 tiles + a global view), "small" for encode benchmarks (64 tokens per 128 px
#: tile, pages at most 4 x 4 tiles + a global view, like ColSmol at 1/4 scale).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(
        vision_image_size=32,
        size_longest_edge=64,
        hidden_size=64,
        num_layers=2,
        vision_hidden_size=32,
        vision_layers=1,
    ),
    "small": dict(
        vision_image_size=128,
        size_longest_edge=512,
        hidden_size=256,
        num_layers=4,
        vision_hidden_size=128,
        vision_layers=4,
    ),
}


def build(
    out_dir: Path,
    *,
    size: str = "tiny",
    vision_image_size: int | None = None,
    size_longest_edge: int | None = None,
    hidden_size: int | None = None,
    num_layers: int | None = None,
    vision_hidden_size: int | None = None,
    vision_layers: int | None = None,
    vocab_size: int = 600,
    seed: int = 0,
) -> Path:
    """Write a random-weight ColIdefics3 checkpoint to ``out_dir`` and return it.

    ``size`` picks a preset of :data:`SIZES`; explicit arguments override it.
    ``vision_image_size`` (pixels, a multiple of 16) is the tile side seen by the
    vision tower; each tile becomes ``(vision_image_size // 8) ** 2 // 4`` image
    tokens (4 for "tiny"). Pages are first resized so their longest edge is
    ``size_longest_edge`` pixels, then split into tiles plus one global view.
    ``vocab_size`` is the trained BPE size before the image special tokens are added.
    """
    p = resolve_preset(
        SIZES,
        size,
        "colidefics3",
        vision_image_size=vision_image_size,
        size_longest_edge=size_longest_edge,
        hidden_size=hidden_size,
        num_layers=num_layers,
        vision_hidden_size=vision_hidden_size,
        vision_layers=vision_layers,
    )
    vision_image_size, size_longest_edge = p["vision_image_size"], p["size_longest_edge"]
    hidden_size, num_layers = p["hidden_size"], p["num_layers"]
    vision_hidden_size, vision_layers = p["vision_hidden_size"], p["vision_layers"]

    from colpali_engine.models import ColIdefics3, ColIdefics3Processor
    from transformers import Idefics3Config, Idefics3ImageProcessor

    if vision_image_size % (PATCH_SIZE * SCALE_FACTOR):
        raise ValueError(
            f"vision_image_size must be a multiple of {PATCH_SIZE * SCALE_FACTOR}, got {vision_image_size}"
        )
    if size_longest_edge < vision_image_size:
        raise ValueError("size_longest_edge must be >= vision_image_size")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_seq_len = (vision_image_size // PATCH_SIZE) ** 2 // SCALE_FACTOR**2

    tokenizer = train_smol_tokenizer(vocab_size=vocab_size, seed=seed)
    image_processor = Idefics3ImageProcessor(
        size={"longest_edge": size_longest_edge},
        max_image_size={"longest_edge": vision_image_size},
        do_image_splitting=True,
        resample=1,  # LANCZOS, as SmolVLM
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_pad=True,
    )
    processor = ColIdefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=image_seq_len,
        chat_template=CHAT_TEMPLATE,
    )
    total_vocab = len(processor.tokenizer)

    head_dim = 16
    config = Idefics3Config(
        vision_config={
            "hidden_size": vision_hidden_size,
            "intermediate_size": 2 * vision_hidden_size,
            "num_hidden_layers": vision_layers,
            "num_attention_heads": 2,
            "image_size": vision_image_size,
            "patch_size": PATCH_SIZE,
        },
        text_config={
            "model_type": "llama",
            "hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size,
            "num_hidden_layers": num_layers,
            "num_attention_heads": hidden_size // head_dim,
            "num_key_value_heads": 2,
            "head_dim": head_dim,
            "vocab_size": total_vocab,
            "rms_norm_eps": 1e-5,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "tie_word_embeddings": False,
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=processor.image_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = ColIdefics3(config).eval()
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    logger.info(
        "built %s ColIdefics3 in %s (vocab %d, %d tokens per %dpx tile, longest edge %dpx)",
        size,
        out_dir,
        total_vocab,
        image_seq_len,
        vision_image_size,
        size_longest_edge,
    )
    return out_dir
