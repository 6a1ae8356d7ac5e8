"""A small byte-level BPE tokenizer trained offline on generated text.

Tiny test models need a real tokenizer (merges, special tokens, byte-level
round-tripping) but not a real vocabulary. :func:`train_byte_level_bpe` trains one
with the ``tokenizers`` library on deterministic generated text in about 0.2 s.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

#: The pre-tokenisation regex of the Qwen2 tokenizer family (GPT-4 style).
QWEN2_PRETOKENIZE_REGEX = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""  # noqa: E501

_SYLLABLES = [
    "ba",
    "be",
    "bi",
    "bo",
    "bu",
    "ca",
    "ce",
    "ci",
    "co",
    "cu",
    "da",
    "de",
    "di",
    "do",
    "du",
    "fa",
    "fe",
    "fi",
    "fo",
    "fu",
    "ga",
    "ge",
    "gi",
    "go",
    "gu",
    "ha",
    "he",
    "hi",
    "ho",
    "hu",
    "la",
    "le",
    "li",
    "lo",
    "lu",
    "ma",
    "me",
    "mi",
    "mo",
    "mu",
    "na",
    "ne",
    "ni",
    "no",
    "nu",
    "pa",
    "pe",
    "pi",
    "po",
    "pu",
    "ra",
    "re",
    "ri",
    "ro",
    "ru",
    "sa",
    "se",
    "si",
    "so",
    "su",
    "ta",
    "te",
    "ti",
    "to",
    "tu",
    "va",
    "ve",
    "vi",
    "vo",
    "vu",
    "an",
    "en",
    "in",
    "on",
    "un",
    "ar",
    "er",
    "ir",
    "or",
    "ur",
    "st",
    "th",
    "sh",
    "ch",
    "qu",
    "tion",
    "ment",
    "ing",
    "ed",
]

_COMMON_WORDS = [
    "the",
    "of",
    "and",
    "a",
    "to",
    "in",
    "is",
    "you",
    "that",
    "it",
    "he",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "I",
    "at",
    "be",
    "this",
    "have",
    "from",
    "or",
    "one",
    "had",
    "by",
    "word",
    "but",
    "not",
    "what",
    "all",
    "were",
    "we",
    "when",
    "your",
    "can",
    "said",
    "there",
    "use",
    "an",
    "each",
    "which",
    "she",
    "do",
    "how",
    "their",
    "if",
    "will",
    "up",
    "other",
    "about",
    "out",
    "many",
    "then",
    "them",
    "these",
    "so",
    "some",
    "her",
    "would",
    "make",
    "like",
    "him",
    "into",
    "time",
    "has",
    "look",
    "two",
    "more",
    "write",
    "go",
    "see",
    "number",
    "no",
    "way",
    "could",
    "people",
    "my",
    "than",
    "first",
    "water",
    "been",
    "call",
    "who",
    "its",
    "now",
    "find",
    "long",
    "down",
    "day",
    "did",
    "get",
    "come",
    "made",
    "may",
    "part",
    "page",
    "table",
    "figure",
    "report",
    "revenue",
    "year",
    "total",
    "chart",
    "document",
    "image",
    "query",
    "shown",
    "where",
    "when",
    "which",
    "model",
    "retrieval",
    "slide",
    "screenshot",
]


def generate_corpus(n_lines: int = 4000, seed: int = 0, extra: Sequence[str] = ()) -> list[str]:
    """Deterministic pseudo-English lines (words, made-up words, numbers, punctuation, newlines)."""
    rng = random.Random(seed)
    lines: list[str] = []
    for _ in range(n_lines):
        words = []
        for _ in range(rng.randint(3, 16)):
            r = rng.random()
            if r < 0.55:
                words.append(rng.choice(_COMMON_WORDS))
            elif r < 0.9:
                words.append("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 4))))
            else:
                words.append(str(rng.randint(0, 99999)))
        line = " ".join(words)
        if rng.random() < 0.5:
            line = line.capitalize()
        line += rng.choice([".", "?", "!", ",", ":", ";", " -", "\n", "\n\n", " (x)", ' "q"', "'s"])
        lines.append(line)
    lines.extend(list(extra) * 20)
    return lines


def train_byte_level_bpe(
    special_tokens: Sequence[str],
    *,
    vocab_size: int = 1500,
    seed: int = 0,
    extra_text: Iterable[str] = (),
    pretokenize_regex: str = QWEN2_PRETOKENIZE_REGEX,
) -> Tokenizer:
    """Train a byte-level BPE tokenizer, then append ``special_tokens`` in order.

    The regular vocabulary gets ids ``0 .. n-1`` (256 byte symbols plus merges, ``n``
    close to ``vocab_size``) and the special tokens the ids ``n, n+1, ...`` in the
    order given, like the published Qwen tokenizers (specials after the BPE vocab).
    Normaliser NFC, pre-tokeniser = regex split + byte-level, decoder byte-level.
    """
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pretokenize_regex), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(generate_corpus(seed=seed, extra=list(extra_text)), trainer)
    tok.add_special_tokens(list(special_tokens))
    return tok


def bpe_merges(state: dict[str, Any]) -> list[Any]:
    """The merges of a serialized BPE tokenizer (``json.loads(tok.to_str())``) as ``(left, right)``
    string pairs, whichever of the two serializations (``"a b"`` or ``["a", "b"]``) it uses."""
    return [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]


def vocab_and_merges(tok: Tokenizer) -> tuple[dict[str, int], list[Any]]:
    """The BPE vocabulary (including added tokens) and merges of a trained tokenizer."""
    import json

    return tok.get_vocab(with_added_tokens=True), bpe_merges(json.loads(tok.to_str()))
