"""``dse list``: the documents of a collection, with page counts and metadata (module named
after what it lists: a module called ``list`` would shadow the builtin in ``dse.cli``)."""

from __future__ import annotations

import argparse
import json

from dse.cli import EXIT_OK
from dse.cli.common import add_collection_argument, add_where_argument, fail_for, parse_where_args, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "list",
        help="list the documents of a collection",
        description="List the documents of a collection in indexing order: doc id, stored pages, "
        "source, title and metadata (--where filters them like `dse search`). Documents of an "
        "interrupted job are marked 'indexing' (the next `dse index` run resumes them).",
    )
    add_collection_argument(p)
    add_where_argument(p)
    p.add_argument("--json", action="store_true", help="one JSON object per document")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dse.collection import Collection, CollectionError

    where = parse_where_args(args.where)
    try:
        with Collection.open(args.collection, device="cpu") as col:
            docs = col.documents(where=where)
    except CollectionError as exc:
        return fail_for("list", exc)
    if args.json:
        for d in docs:
            print_json(d.to_dict())
        return EXIT_OK
    for d in docs:
        status = "" if d.status == "complete" else f"  ({d.status})"
        meta = f"  {json.dumps(d.meta, ensure_ascii=False, sort_keys=True)}" if d.meta else ""
        title = f"  {d.title!r}" if d.title else ""
        print(f"{d.doc_id}  {d.pages:>5} p.  {d.source}{title}{meta}{status}")
    pages = sum(d.pages for d in docs)
    print(f"{len(docs)} document{'s' if len(docs) != 1 else ''}, {pages} page{'s' if pages != 1 else ''}")
    return EXIT_OK
