"""The ``dse`` command line: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an
exit status). Exit status convention: 0 success, 1 partial failure (some inputs
failed, the rest was done), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

#: Sub-command modules, in the order ``dse --help`` lists them.
SUBCOMMANDS: tuple[str, ...] = (
    "render",
    "index",
    "search",
    "remove",
    "stats",
    "export",
    "eval",
    "ask",
    "serve",
    "train",
)

EXIT_OK = 0
EXIT_PARTIAL = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """Bad arguments or input detected after parsing; reported in one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dse",
        description="OCR-free document retrieval: render, index and search page screenshots.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"dse.cli.{name}")
        module.register(sub)
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"dse {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
