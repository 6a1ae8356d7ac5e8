"""Helpers shared by the sub-commands: common options, key=value parsing, error reporting."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dse.cli import EXIT_CANNOT_START, EXIT_USAGE, UsageError

DEFAULT_MODEL = "MrLight/dse-qwen2-2b-mrl-v1"


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def unit_float(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def positive_int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1, in the order given (``"1, 5,10"`` -> ``[1, 5, 10]``)."""
    try:
        values = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return values


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on an interactive stderr unless ``-q``; always with ``-v``."""
    return (not args.quiet and sys.stderr.isatty()) or args.verbose > 0


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


def no_sources_error(inputs: list[str], sources: list[Any], skipped: list[Any]) -> UsageError:
    """The usage error for inputs of which none resolved to a source to render (with the reasons)."""
    reasons = [str(src.error) for src in sources if src.error is not None]
    if skipped:
        reasons.append(f"{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped: unsupported type")
    return UsageError("no sources matched: " + ", ".join(inputs) + f" ({'; '.join(reasons) or 'no supported files'})")


def check_sources(inputs: list[str]) -> None:
    """Raise :func:`no_sources_error` unless at least one input resolves (stops at the first one)."""
    from renderers import iter_sources

    seen: list[Any] = []
    skipped: list[Any] = []
    for src in iter_sources(inputs, skipped=skipped):
        if src.error is None:
            return
        seen.append(src)
    raise no_sources_error(inputs, seen, skipped)


WHERE_HELP = (
    "metadata filter, repeatable (AND): key=value, key!=value, key>N, key>=N, key<N, key<=N, "
    "key=in:a,b,c, key!=in:a,b,c (numbers compare as numbers)"
)


def add_where_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--where", action="append", metavar="FILTER", help=WHERE_HELP)


def parse_where_args(items: list[str] | None) -> list[str] | None:
    """Validate ``--where`` filters before any work (see :mod:`dse.collection.filters`); UsageError if malformed."""
    if not items:
        return None
    from dse.collection.filters import FilterError, parse_where

    try:
        parse_where(items)
    except FilterError as exc:
        raise UsageError(f"--where: {exc}") from None
    return list(items)


def fail(command: str, message: str, status: int = EXIT_CANNOT_START) -> int:
    """Print one clear error line for ``command`` and return ``status``."""
    print(f"dse {command}: error: {message}", file=sys.stderr)
    return status


def error_status(exc: BaseException) -> int:
    """Exit status for an error from the collection or encoder layers: 2 for a refused request
    (:class:`~dse.collection.CollectionInputError`), 3 for an unusable model/collection/device."""
    from dse.collection import CollectionInputError

    return EXIT_USAGE if isinstance(exc, CollectionInputError) else EXIT_CANNOT_START


def fail_for(command: str, exc: BaseException) -> int:
    """:func:`fail` with the message and the exit status (:func:`error_status`) of ``exc``."""
    return fail(command, str(exc), error_status(exc))


def print_json(obj: Any) -> None:
    print(json.dumps(obj, ensure_ascii=False, sort_keys=True))
