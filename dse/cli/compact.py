"""``dse compact``: reclaim the disk space of removed pages."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK
from dse.cli.common import add_collection_argument, fail_for, print_json
from dse.cli.stats import human_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compact",
        help="reclaim the space of removed pages",
        description="Rewrite the vector index without the vectors of removed pages and vacuum the "
        "metadata database. Crash-safe (a kill leaves the old or the new index, both complete); "
        "search results are unchanged. Takes the collection's write lock like `dse index`.",
    )
    add_collection_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dse.collection import Collection, CollectionError

    try:
        with Collection.open(args.collection, device="cpu") as col:
            result = col.compact()
    except CollectionError as exc:
        return fail_for("compact", exc)
    if args.json:
        print_json(result)
        return EXIT_OK
    before, after = result["bytes_before"], result["bytes_after"]
    print(f"compacted {args.collection}: index and metadata {human_bytes(before)} -> {human_bytes(after)}")
    return EXIT_OK
