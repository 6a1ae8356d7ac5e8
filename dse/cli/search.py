"""``dse search``: ranked pages for a text, image or fused query, or for a file of queries."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dse.cli import EXIT_OK, EXIT_PARTIAL, UsageError
from dse.cli.common import (
    add_collection_argument,
    add_device_argument,
    add_where_argument,
    fail_for,
    parse_where_args,
    positive_int,
    print_json,
)

#: queries searched per call in batch mode (encoded together, then printed)
CHUNK = 64


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="search a collection",
        description="Rank the pages of a collection for a text query, an image query (--image) "
        "or both (a fused query, encoded in one pass; --fusion rrf merges separate "
        "text and image rankings instead). With --queries FILE, answer many queries in one "
        'process: one query per line, or JSONL lines {"_id", "text", "image"} as in the '
        "evaluation format (image paths relative to FILE); - reads standard input. Batch results "
        'are JSONL, one line per query: {"query_id", "text", "image", "hits": [...]}.',
    )
    p.add_argument("text", nargs="?", default=None, help="query text")
    add_collection_argument(p)
    p.add_argument("--image", default=None, metavar="PATH", help="query image")
    p.add_argument(
        "--queries",
        default=None,
        metavar="FILE",
        help="a file of queries (plain lines or JSONL with _id, text, image); - for stdin",
    )
    p.add_argument("-k", type=int, default=10, help="number of hits per query (default 10)")
    add_where_argument(p)
    p.add_argument(
        "--fusion",
        choices=["rrf"],
        default=None,
        help="late fusion of a text-only and an image-only ranking (needs both a text and an image; "
        "default: one fused query)",
    )
    p.add_argument("--batch-size", type=positive_int, default=8, help="queries per encoder batch (default 8)")
    p.add_argument(
        "--exact",
        action="store_true",
        help="score every page by exact MaxSim on a collection with an approximate index "
        "(--index-param candidates=muvera); slower",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per hit (always JSONL with --queries)")
    add_device_argument(p)
    p.set_defaults(func=run)


@dataclass
class BatchQuery:
    """One query of a ``--queries`` file."""

    id: str
    text: str | None
    image: Path | None


def read_queries(name: str, *, fusion: str | None = None) -> list[BatchQuery]:
    """Parse a ``--queries`` file (``-``: stdin). The format is JSONL when the first non-blank line
    starts with ``{``, else one text query per line (ids are line numbers). Raises
    :class:`UsageError` naming ``FILE:LINE`` for anything malformed, before any model is loaded."""
    if name == "-":
        text, base, label = sys.stdin.read(), Path.cwd(), "<stdin>"
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            raise UsageError(f"--queries {name}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"--queries {name}: not UTF-8 text") from None
        except OSError as exc:
            raise UsageError(f"--queries {name}: {exc.strerror or exc}") from None
        base, label = path.parent, name
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        raise UsageError(f"--queries {label}: no queries")
    jsonl = first.lstrip().startswith("{")
    out: list[BatchQuery] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{label}:{lineno}"
        query = _json_query(line, where, base) if jsonl else BatchQuery(str(lineno), line.strip(), None)
        if query.id in seen:
            raise UsageError(f"{where}: duplicate query id {query.id!r} (first on line {seen[query.id]})")
        seen[query.id] = lineno
        if fusion == "rrf" and (query.text is None or query.image is None):
            raise UsageError(f"{where}: --fusion rrf needs both a text and an image in every query")
        out.append(query)
    return out


def _json_query(line: str, where: str, base: Path) -> BatchQuery:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: expected a JSON object with _id, text and/or image")
    qid = obj.get("_id")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    if not isinstance(qid, str) or not qid.strip():
        raise UsageError(f"{where}: missing or empty '_id'")
    text, image = obj.get("text"), obj.get("image")
    for key, value in (("text", text), ("image", image)):
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{where}: '{key}' must be a string, got {type(value).__name__}")
    if text is not None and not text.strip():
        text = None
    image_path = None
    if image is not None:
        image_path = (base / image).expanduser() if not Path(image).is_absolute() else Path(image)
        if not image_path.is_file():
            raise UsageError(f"{where}: query image not found: {image_path}")
    if text is None and image_path is None:
        raise UsageError(f"{where}: query {qid!r} needs 'text', 'image' or both")
    return BatchQuery(qid, text, image_path)


def run(args: argparse.Namespace) -> int:
    # every check on the input comes before the collection and the model are loaded
    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    where = parse_where_args(args.where)
    if args.queries is not None:
        if args.text is not None or args.image is not None:
            raise UsageError("give a query (text and/or --image) or --queries FILE, not both")
        return _run_batch(args, read_queries(args.queries, fusion=args.fusion), where)
    if args.text is None and args.image is None:
        raise UsageError("give a query text, --image PATH, or both (or --queries FILE)")
    if args.text is not None and not args.text.strip() and args.image is None:
        raise UsageError("empty query: the text is blank")
    if args.image is not None and not Path(args.image).expanduser().is_file():
        raise UsageError(f"query image not found: {args.image}")
    if args.fusion == "rrf" and (args.text is None or not args.text.strip() or args.image is None):
        raise UsageError("--fusion rrf merges a text-only and an image-only ranking: give both a text and --image")

    from dse.collection import Collection, CollectionError
    from dse.encoders import EncoderError

    try:
        with Collection.open(args.collection, device=args.device) as col:
            hits = col.search(args.text, image=args.image, k=args.k, where=where, fusion=args.fusion, exact=args.exact)
    except (CollectionError, EncoderError) as exc:
        return fail_for("search", exc)
    if args.json:
        for h in hits:
            print_json(h.to_dict())
        return EXIT_OK
    if not hits:
        print("no results")
    for h in hits:
        print(f"{h.rank:>3}  {h.score:8.4f}  {h.source}  p.{h.page}  {h.image_path}")
    return EXIT_OK


def _run_batch(args: argparse.Namespace, queries: list[BatchQuery], where: list[str] | None) -> int:
    """Search every query in one process, CHUNK queries per encoder/index call; one JSONL line each."""
    from dse.collection import Collection, CollectionError, CollectionInputError
    from dse.encoders import EncoderError

    failed = 0

    def line(q: BatchQuery, **rest: Any) -> None:
        print_json({"query_id": q.id, "text": q.text, "image": str(q.image) if q.image else None, **rest})

    try:
        col = Collection.open(args.collection, device=args.device)
    except (CollectionError, EncoderError) as exc:
        return fail_for("search", exc)
    with col:
        for start in range(0, len(queries), CHUNK):
            chunk = queries[start : start + CHUNK]
            options = {"k": args.k, "where": where, "fusion": args.fusion, "exact": args.exact}
            try:
                results = col.search_many(
                    [q.text for q in chunk], [q.image for q in chunk], batch_size=args.batch_size, **options
                )
            except (CollectionInputError, EncoderError):
                results = None  # one bad query (an unreadable image...): search one by one to isolate it
            except CollectionError as exc:
                return fail_for("search", exc)
            for i, q in enumerate(chunk):
                if results is not None:
                    hits = results[i]
                else:
                    try:
                        hits = col.search(q.text, image=q.image, **options)
                    except (CollectionInputError, EncoderError) as exc:
                        failed += 1
                        line(q, error=str(exc), hits=[])
                        continue
                line(q, hits=[h.to_dict() for h in hits])
            sys.stdout.flush()
    if failed:
        print(f'dse search: {failed} of {len(queries)} queries failed (see their "error" field)', file=sys.stderr)
    return EXIT_PARTIAL if failed else EXIT_OK
