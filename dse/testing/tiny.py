"""Build an offline tiny random-weight model for one family, laid out as a hub snapshot.

Usage::

    python -m dse.testing.tiny FAMILY OUT_DIR [--size tiny|small|full] [--seed N]

``Encoder.load(OUT_DIR)`` then works with no network and detects the family. The
builders live in family-specific modules, imported lazily from :data:`BUILDERS`
(``"module:function"``); each is ``build(out_dir: Path, **kw) -> Path``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: family -> "module:function" of its tiny-model builder.
BUILDERS: dict[str, str] = {
    "dse-qwen2": "dse.testing.tiny_qwen:build_dse_qwen2",
    "dse-qwen2.5": "dse.testing.tiny_qwen:build_dse_qwen2_5",
    "gme-qwen2": "dse.testing.tiny_qwen:build_gme_qwen2",
    "colqwen2": "dse.testing.tiny_qwen:build_colqwen2",
    "colqwen2.5": "dse.testing.tiny_qwen:build_colqwen2_5",
    "colpali": "dse.testing.tiny_paligemma:build",
    "colidefics3": "dse.testing.tiny_idefics3:build",
    # generators for visual RAG (dse.rag), not encoders
    "qwen2-vl-instruct": "dse.testing.tiny_generator:build_qwen2_vl_instruct",
    "qwen2.5-vl-instruct": "dse.testing.tiny_generator:build_qwen2_5_vl_instruct",
}


def builder(family: str) -> Callable[..., Path]:
    """The builder function of ``family`` (imported on first use)."""
    if family not in BUILDERS:
        raise KeyError(f"no tiny model builder for {family!r}; known: {', '.join(BUILDERS)}")
    module, _, func = BUILDERS[family].partition(":")
    return getattr(importlib.import_module(module), func)


def build_tiny(family: str, out_dir: str | Path, **kwargs: Any) -> Path:
    """Build the tiny model of ``family`` into ``out_dir``; returns the directory."""
    return builder(family)(Path(out_dir), **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dse.testing.tiny",
        description="Build a tiny random-weight model (hub snapshot layout) for offline tests.",
    )
    parser.add_argument("family", choices=sorted(BUILDERS), help="model family")
    parser.add_argument("out_dir", type=Path, help="output directory (created)")
    parser.add_argument("--size", default=None, help="size preset (Qwen families: tiny, small, full)")
    parser.add_argument("--seed", type=int, default=None, help="weight/tokenizer seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    kwargs: dict[str, Any] = {}
    if args.size is not None:
        kwargs["size"] = args.size
    if args.seed is not None:
        kwargs["seed"] = args.seed
    try:
        out = build_tiny(args.family, args.out_dir, **kwargs)
    except (ImportError, KeyError, ValueError, TypeError) as exc:
        print(f"error: cannot build {args.family}: {exc}", file=sys.stderr)
        return 1
    print(out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
