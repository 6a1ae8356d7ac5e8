"""Helpers shared by the sub-commands: common options, key=value parsing, error reporting."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dse.cli import UsageError

#: exit status when the job could not start (unusable model or collection)
EXIT_CANNOT_START = 3
DEFAULT_MODEL = "MrLight/dse-qwen2-2b-mrl-v1"


def add_collection_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collection", "-c", required=True, metavar="DIR", help="collection directory")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cuda, cuda:1, mps or cpu")


def parse_key_values(items: list[str] | None, option: str) -> dict[str, Any]:
    """``["a=1", "b=x=y"]`` -> ``{"a": "1", "b": "x=y"}``; raises UsageError naming the bad item."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"{option} expects key=value, got {item!r}")
        out[key.strip()] = value
    return out


def fail(command: str, message: str, status: int = EXIT_CANNOT_START) -> int:
    """Print one clear error line for ``command`` and return ``status``."""
    print(f"dse {command}: error: {message}", file=sys.stderr)
    return status


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, sort_keys=True))
