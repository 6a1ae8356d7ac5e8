"""``dse search``: ranked pages for a text, image or fused query."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK, UsageError
from dse.cli.common import add_collection_argument, add_device_argument, fail, parse_key_values, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search a collection",
        description="Rank the pages of a collection for a text query, an image query (--image) "
        "or both (a fused query, encoded in one pass; --fusion rrf merges separate "
        "text and image rankings instead).",
    )
    p.add_argument("text", nargs="?", default=None, help="query text")
    add_collection_argument(p)
    p.add_argument("--image", default=None, metavar="PATH", help="query image")
    p.add_argument("-k", type=int, default=10, help="number of hits (default 10)")
    p.add_argument("--where", action="append", metavar="KEY=VALUE", help="metadata filter (repeatable, AND)")
    p.add_argument(
        "--fusion",
        choices=["rrf"],
        default=None,
        help="late fusion of text-only and image-only rankings (default: one fused query)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per hit")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dse.collection import Collection, CollectionError
    from dse.encoders import EncoderError

    if args.text is None and args.image is None:
        raise UsageError("give a query text, --image PATH, or both")
    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    where = parse_key_values(args.where, "--where")
    try:
        with Collection.open(args.collection, device=args.device) as col:
            hits = col.search(args.text, image=args.image, k=args.k, where=where or None, fusion=args.fusion)
    except (CollectionError, EncoderError) as exc:
        return fail("search", str(exc))
    if args.json:
        for h in hits:
            print_json(h.to_dict())
        return EXIT_OK
    if not hits:
        print("no results")
    for h in hits:
        print(f"{h.rank:>3}  {h.score:8.4f}  {h.source}  p.{h.page}  {h.image_path}")
    return EXIT_OK
