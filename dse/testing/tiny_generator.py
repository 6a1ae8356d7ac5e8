"""Tiny random-weight Qwen2-VL / Qwen2.5-VL *Instruct* generators for offline RAG tests.

The layout is that of a hub snapshot of ``Qwen/Qwen2-VL-2B-Instruct`` /
``Qwen/Qwen2.5-VL-3B-Instruct``: a ``*ForConditionalGeneration`` checkpoint (with its
language-model head), the processor with the Instruct chat template (which inserts the
default system turn) and a ``generation_config.json``. The files are written by the same
helpers as the tiny encoders (:mod:`dse.testing.tiny_qwen`); only the seed differs, so a
generator is never the very same network as the tiny DSE encoder of a test.

The weights are random: the text such a model generates is a sequence of random tokens.
Tests assert on structure (a string comes back, which images were given, determinism).
"""

from __future__ import annotations

import json
from pathlib import Path

from dse.testing.tiny_qwen import QWEN2_5_VL, QWEN2_VL, QwenLayout, build_layout

#: Seed used unless given: differs from the tiny encoders' default (0).
DEFAULT_SEED = 7


def _write_generation_config(out_dir: Path) -> None:
    """A ``generation_config.json`` shaped like the published Instruct one (greedy-equivalent sampling
    settings, ``<|im_end|>`` / ``<|endoftext|>`` as end tokens), with this tokenizer's ids."""
    config = json.loads((out_dir / "config.json").read_text(encoding="utf-8"))
    text = config.get("text_config", config)
    eos, pad = int(text["eos_token_id"]), int(text["pad_token_id"])
    gen = {
        "bos_token_id": int(text.get("bos_token_id", pad)),
        "pad_token_id": pad,
        "eos_token_id": [eos, pad],
        "do_sample": True,
        "temperature": 0.01,
        "top_k": 1,
        "top_p": 0.001,
        "repetition_penalty": 1.0,
    }
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n", encoding="utf-8")


def _build_instruct(out_dir: Path, layout: QwenLayout, *, size: str, seed: int, vocab_size: int) -> Path:
    out = build_layout(out_dir, layout, size=size, seed=seed, vocab_size=vocab_size)
    _write_generation_config(out)
    return out


def build_qwen2_vl_instruct(
    out_dir: Path, *, size: str = "tiny", seed: int = DEFAULT_SEED, vocab_size: int = 1500
) -> Path:
    """Qwen2-VL Instruct generator (``Qwen/Qwen2-VL-2B-Instruct`` layout)."""
    return _build_instruct(out_dir, QWEN2_VL, size=size, seed=seed, vocab_size=vocab_size)


def build_qwen2_5_vl_instruct(
    out_dir: Path, *, size: str = "tiny", seed: int = DEFAULT_SEED, vocab_size: int = 1500
) -> Path:
    """Qwen2.5-VL Instruct generator (``Qwen/Qwen2.5-VL-3B-Instruct`` layout)."""
    return _build_instruct(out_dir, QWEN2_5_VL, size=size, seed=seed, vocab_size=vocab_size)
