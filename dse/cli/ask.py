"""``dse ask``: visual RAG — retrieve the top-k pages, answer from their images, cite them."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UsageError
from dse.cli.common import (
    add_collection_argument,
    add_device_argument,
    add_where_argument,
    fail,
    fail_for,
    parse_where_args,
    print_json,
)


def register(sub: argparse._SubParsersAction) -> None:
    from dse.rag.generator import DEFAULT_GENERATOR

    p = sub.add_parser(
        "ask",
        help="answer a question from a collection's pages (visual RAG)",
        description="Retrieve the top-k pages for a question and let a Qwen2-VL / Qwen2.5-VL "
        "Instruct model answer from the page images, citing them as [1], [2], ... "
        "(numbers = rank order of the retrieved pages).",
    )
    p.add_argument("question", help="the question")
    add_collection_argument(p)
    p.add_argument("-k", type=int, default=3, help="number of pages given to the generator (default 3)")
    p.add_argument(
        "--generator",
        default=DEFAULT_GENERATOR,
        metavar="MODEL",
        help=f"Qwen2-VL / Qwen2.5-VL Instruct model: hub id or local directory (default {DEFAULT_GENERATOR})",
    )
    add_where_argument(p)
    p.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="answer length cap (default 256)")
    p.add_argument(
        "--generator-max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="pixel budget of each page image given to the generator (default 1280*28*28)",
    )
    p.add_argument("--dtype", default=None, help="generator dtype (default: bfloat16 on CUDA, float32 otherwise)")
    p.add_argument("--json", action="store_true", help="print the answer and its pages as one JSON object")
    add_device_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dse.collection import Collection, CollectionError
    from dse.encoders import EncoderError
    from dse.rag import Generator, GeneratorError, NoPagesError, RAGError, answer_question, validate_request

    try:
        question = validate_request(args.question, args.k)
    except RAGError as exc:
        raise UsageError(str(exc).replace("k must", "-k must")) from exc
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.generator_max_pixels is not None and args.generator_max_pixels < 1:
        raise UsageError(f"--generator-max-pixels must be positive, got {args.generator_max_pixels}")
    where = parse_where_args(args.where)
    try:
        col = Collection.open(args.collection, device=args.device)
    except (CollectionError, EncoderError) as exc:
        return fail_for("ask", exc)
    with col:
        try:
            if args.generator_max_pixels is not None:
                min_pixels = min(Generator.DEFAULT_MIN_PIXELS, args.generator_max_pixels)
            else:
                min_pixels = None
            generator = Generator.load(
                args.generator,
                device=args.device,
                dtype=args.dtype,
                max_new_tokens=args.max_new_tokens,
                min_pixels=min_pixels,
                max_pixels=args.generator_max_pixels,
            )
        except GeneratorError as exc:
            return fail("ask", str(exc))
        try:
            answer = answer_question(col, question, generator=generator, k=args.k, where=where)
        except NoPagesError as exc:
            return fail("ask", str(exc), EXIT_PARTIAL)
        except (CollectionError, EncoderError) as exc:
            return fail_for("ask", exc)
        except RAGError as exc:
            return fail("ask", str(exc), EXIT_USAGE)
    if args.json:
        print_json(answer.to_dict())
        return EXIT_OK
    print(answer.answer if answer.answer else "(the generator returned an empty answer)")
    print()
    cited = set(answer.citations)
    if answer.cited_pages_source == "citations":
        print(f"cited pages: {', '.join(f'[{n}]' for n in answer.citations)}")
    else:
        print("no citations in the answer; all retrieved pages were its context:")
    for number, h in enumerate(answer.pages, start=1):
        mark = "*" if number in cited else " "
        print(f"{mark}[{number}]  {h.score:8.4f}  {h.source}  p.{h.page}  {h.image_path}")
    return EXIT_OK
