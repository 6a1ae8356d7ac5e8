"""``dse remove``: delete documents, their pages and vectors from a collection."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK
from dse.cli.common import add_collection_argument, fail_for


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "remove",
        help="remove documents from a collection",
        description="Delete documents (by doc id or source path/URL, as `dse list` shows them) with "
        "their pages, page images and vectors. An unknown document is refused (exit 2) and nothing "
        "is removed. The index keeps the space of removed vectors until `dse compact`.",
    )
    p.add_argument("documents", nargs="+", metavar="DOC_OR_SOURCE")
    add_collection_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dse.collection import Collection, CollectionError

    try:
        with Collection.open(args.collection, device="cpu") as col:
            n = col.remove(args.documents)
    except CollectionError as exc:
        return fail_for("remove", exc)
    print(f"removed {n} document{'s' if n != 1 else ''}")
    return EXIT_OK
