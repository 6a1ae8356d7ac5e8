"""Command-line options of the Qdrant backend, shared by ``dse index`` and ``dse export``.

The API key is read from ``--qdrant-api-key`` or ``$QDRANT_API_KEY`` and handed to the
collection; it is never printed, logged or written (prefer the environment variable: a
command-line argument is visible to other users in ``ps``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from dse.cli import UsageError
from dse.cli.common import parse_key_values

#: --qdrant-param keys that take booleans / numbers (the rest are strings)
_BOOLS = {"rescore", "on_disk"}


def add_qdrant_arguments(parser: argparse.ArgumentParser, *, url_option: str = "--qdrant-url") -> None:
    group = parser.add_argument_group("Qdrant backend")
    group.add_argument(
        url_option,
        dest="qdrant_url",
        default=None,
        metavar="URL",
        help="Qdrant URL: http(s)://HOST:6333, or path:DIR for qdrant-client's local mode (tests and development "
        "only: pure Python, slow, one process at a time) (default: $QDRANT_URL)",
    )
    group.add_argument(
        "--qdrant-api-key",
        default=None,
        metavar="KEY",
        help="Qdrant API key (default: $QDRANT_API_KEY, preferred: arguments are visible in ps); never stored",
    )
    group.add_argument(
        "--qdrant-collection",
        default=None,
        metavar="NAME",
        help="name of the Qdrant collection to create (default: dse-<directory name>-<hash of its path>)",
    )
    group.add_argument(
        "--qdrant-param",
        action="append",
        metavar="KEY=VALUE",
        help="collection setting, repeatable: n_candidates=200 (0: exact MaxSim), prefetch=muvera|mean, "
        "quantization=none|scalar|binary, rescore=true, oversampling=2, hnsw_m=16, ef_construct=100, hnsw_ef=128, "
        "on_disk=false, shard_number=N, replication_factor=N, write_consistency_factor=N, "
        "write_ordering=weak|medium|strong",
    )


def _value(key: str, text: str) -> Any:
    low = text.strip().lower()
    if key in _BOOLS:
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise UsageError(f"--qdrant-param {key} expects true or false, got {text!r}")
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def qdrant_params(args: argparse.Namespace) -> dict[str, Any]:
    return {k: _value(k, v) for k, v in parse_key_values(args.qdrant_param, "--qdrant-param").items()}


def qdrant_url(args: argparse.Namespace) -> str | None:
    return args.qdrant_url or os.environ.get("QDRANT_URL") or None


def qdrant_api_key(args: argparse.Namespace) -> str | None:
    return args.qdrant_api_key or os.environ.get("QDRANT_API_KEY") or None


def check_qdrant_url(url: str) -> None:
    """Reject a malformed URL before any model is loaded (UsageError, exit 2)."""
    from indexes.qdrant.connection import QdrantError, normalize_url

    try:
        normalize_url(url)
    except QdrantError as exc:
        raise UsageError(str(exc)) from None
