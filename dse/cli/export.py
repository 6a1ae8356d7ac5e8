"""``dse export``: copy a local collection's vectors into Qdrant (no re-encoding)."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK, UsageError
from dse.cli.common import add_collection_argument, fail, print_json, show_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="copy a local collection's vectors into Qdrant (no re-encoding)",
        description="Copy the vectors of a local collection into a Qdrant collection under the same page ids. "
        "--out NEW_DIR makes a new Qdrant-backed collection (metadata copied, page images hard-linked, the "
        "source untouched); --in-place switches the collection itself to Qdrant (the local index files are "
        "kept in DIR/index unless --drop-local). Re-running an interrupted export resumes it.",
    )
    add_collection_argument(p)
    from dse.cli.qdrant_options import add_qdrant_arguments

    add_qdrant_arguments(p, url_option="--to-qdrant")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--out", default=None, metavar="NEW_DIR", help="directory of the new Qdrant-backed collection")
    where.add_argument("--in-place", action="store_true", help="switch the collection itself to Qdrant")
    p.add_argument("--drop-local", action="store_true", help="with --in-place: delete the local index files after")
    p.add_argument("--batch-size", type=int, default=32, help="pages per upsert batch (default 32)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dse.cli.qdrant_options import check_qdrant_url, qdrant_api_key, qdrant_params, qdrant_url
    from dse.collection import CollectionError
    from dse.collection.export import export_to_qdrant

    url = qdrant_url(args)
    if not url:
        raise UsageError("give the Qdrant URL: --to-qdrant URL (or $QDRANT_URL)")
    check_qdrant_url(url)
    if not args.out and not args.in_place:
        raise UsageError("give --out NEW_DIR (a new collection) or --in-place (convert this one)")
    if args.drop_local and not args.in_place:
        raise UsageError("--drop-local applies to --in-place")
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        report = export_to_qdrant(
            args.collection,
            url,
            out=args.out,
            in_place=args.in_place,
            api_key=qdrant_api_key(args),
            collection=args.qdrant_collection,
            params=qdrant_params(args),
            batch_pages=args.batch_size,
            drop_local=args.drop_local,
            progress=show_progress(args),
        )
    except CollectionError as exc:
        return fail("export", str(exc))
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.summary())
    return EXIT_OK
