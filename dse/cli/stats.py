"""``dse stats``: documents, pages, vectors and bytes on disk of a collection."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK
from dse.cli.common import add_collection_argument, fail_for, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stats", help="collection statistics", description="Documents, pages, vectors and bytes on disk."
    )
    add_collection_argument(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def run(args: argparse.Namespace) -> int:
    from dse.collection import Collection, CollectionError

    try:
        with Collection.open(args.collection, device="cpu") as col:
            stats = col.stats()
    except CollectionError as exc:
        return fail_for("stats", exc)
    if args.json:
        print_json(stats)
        return EXIT_OK
    for key in (
        "directory",
        "family",
        "model",
        "kind",
        "index",
        "dim",
        "documents",
        "incomplete_documents",
        "pages",
        "vectors",
    ):
        print(f"{key:>21}: {stats[key]}")
    if stats.get("backend", "local") != "local":
        print(f"{'backend':>21}: {stats['backend']}")
        for key, value in (stats.get(stats["backend"]) or {}).items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{stats['backend'] + ' ' + key.replace('_', ' '):>21}: {shown}")
    for key, value in stats["bytes"].items():
        print(f"{'bytes ' + key:>21}: {human_bytes(value)} ({value})")
    return EXIT_OK
