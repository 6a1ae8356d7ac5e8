"""The ``dse`` command line: one sub-command per module in this package.

Each sub-command module exposes ``register(subparsers)`` which adds its parser and
sets ``func`` (a callable taking the parsed ``argparse.Namespace`` and returning an
exit status). Every sub-command follows one exit-status scheme (:data:`EXIT_STATUS_HELP`,
shown by ``dse --help``).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from dse.extras import MissingExtraError

#: Sub-command modules, in the order ``dse --help`` lists them (``documents`` is ``dse list``).
SUBCOMMANDS: tuple[str, ...] = (
    "render",
    "index",
    "search",
    "documents",
    "remove",
    "compact",
    "stats",
    "export",
    "eval",
    "ask",
    "serve",
    "train",
)

#: success
EXIT_OK = 0
#: partial failure: the command ran, some inputs failed (each reported once), the rest was done
EXIT_PARTIAL = 1
#: usage error or bad input; reported before any model is loaded when possible, nothing changed
EXIT_USAGE = 2
#: cannot start: the model, the collection or the device is unusable
EXIT_CANNOT_START = 3
#: interrupted (Ctrl-C)
EXIT_INTERRUPTED = 130

EXIT_STATUS_HELP = """\
exit status (every command):
  0    success
  1    partial failure: the command ran, but some inputs failed (each one reported
       once on stderr); everything else was done
  2    usage error or bad input: a bad option or value, a missing input file, an empty
       query, a malformed --where filter, an unknown document, an option that contradicts
       how the collection was built; found before any model is loaded when possible, and
       nothing is changed
  3    cannot start: the model, the collection or the device is unusable (not found,
       corrupted, incompatible, CUDA not available, ...)
  130  interrupted (Ctrl-C)
"""


class UsageError(Exception):
    """Bad arguments or input detected after parsing; reported in one line, exit 2."""


def build_parser() -> argparse.ArgumentParser:
    from dse import __version__

    parser = argparse.ArgumentParser(
        prog="dse",
        description="OCR-free document retrieval: render, index and search page screenshots.",
        epilog=EXIT_STATUS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="more logging, third-party progress bars and lists (skipped files); -vv for debug",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"dse.cli.{name}")
        module.register(sub)
    for command in sub.choices.values():  # -v / -q also after the sub-command: `dse index DIR -c C -v`
        group = command.add_argument_group("output")
        group.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS, help="as dse -v")
        group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="as dse -q")
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


#: environment switches read by huggingface_hub / transformers when they are imported
_QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}
_QUIETER_ENV = {"TRANSFORMERS_VERBOSITY": "error"}
_env_set_here: set[str] = set()


def _third_party_output(verbose: int, quiet: bool) -> None:
    """Hugging Face progress bars ("Loading weights", downloads) only with ``-v``; transformers'
    warnings silenced by ``-q``. Environment switches cover the libraries imported later (the
    usual case: commands import them lazily); the libraries already imported are switched directly.
    A variable the user set is left alone."""
    wanted = {**(_QUIET_ENV if verbose == 0 else {}), **(_QUIETER_ENV if quiet else {})}
    for name in (*_QUIET_ENV, *_QUIETER_ENV):
        if name in wanted and name not in os.environ:
            os.environ[name] = wanted[name]
            _env_set_here.add(name)
        elif name not in wanted and name in _env_set_here:
            os.environ.pop(name, None)
            _env_set_here.discard(name)
    bars = verbose > 0
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (enable_progress_bars if bars else disable_progress_bars)()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        (hf_logging.enable_progress_bar if bars else hf_logging.disable_progress_bar)()
        if quiet:
            hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose, args.quiet)
    _third_party_output(args.verbose, args.quiet)
    try:
        return int(args.func(args) or 0)
    except UsageError as exc:
        print(f"dse {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MissingExtraError as exc:  # an optional extra the command needs: one line, what to install
        from dse.cli.common import fail

        return fail(args.command, str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
