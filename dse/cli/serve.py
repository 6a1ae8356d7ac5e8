"""``dse serve``: the HTTP API and web page of a collection (FastAPI + uvicorn)."""

from __future__ import annotations

import argparse
import logging
import os

from dse.cli import EXIT_OK, EXIT_USAGE, UsageError
from dse.cli.common import add_collection_argument, add_device_argument, fail
from dse.extras import require


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a collection over HTTP (API + web page)",
        description="Serve a collection: JSON/multipart search API, page images, similarity maps "
        "(multi-vector collections), visual RAG answers (--generator), OpenAPI docs at "
        "/docs and a web page at /. Binding to a non-loopback address requires an API key.",
    )
    add_collection_argument(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="require this key on every endpoint but /health (default: $DSE_API_KEY); "
        "mandatory when --host is not a loopback address",
    )
    p.add_argument(
        "--generator",
        default=None,
        metavar="MODEL",
        help="Qwen2-VL / Qwen2.5-VL Instruct model (hub id or dir) enabling POST /answer",
    )
    p.add_argument("--max-new-tokens", type=int, default=256, help="longest generated answer in tokens (default 256)")
    p.add_argument(
        "--adapter",
        default=None,
        metavar="DIR",
        help="LoRA adapter directory on the collection's encoder (the collection must be built with it)",
    )
    add_device_argument(p)
    p.add_argument(
        "--no-micro-batch",
        action="store_true",
        help="encode each text query on its own instead of batching concurrent ones",
    )
    p.add_argument(
        "--batch-window-ms",
        type=float,
        default=5.0,
        help="how long the micro-batcher waits for more queries (default 5 ms)",
    )
    p.add_argument("--max-batch", type=int, default=32, help="largest micro-batch (default 32)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest request body in MB (default 10)")
    p.add_argument(
        "--max-image-megapixels",
        type=float,
        default=40.0,
        help="largest uploaded query image in megapixels (default 40)",
    )
    p.add_argument("--max-k", type=int, default=100, help="largest k per search (default 100)")
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn log level (default info)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require("serve")
    from dse.server.limits import Limits
    from dse.server.security import check_bind

    api_key = args.api_key if args.api_key is not None else (os.environ.get("DSE_API_KEY") or None)
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_batch < 1 or args.batch_window_ms < 0:
        raise UsageError("--max-batch must be >= 1 and --batch-window-ms >= 0")
    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.max_upload_mb <= 0 or args.max_image_megapixels <= 0 or args.max_k < 1:
        raise UsageError("--max-upload-mb, --max-image-megapixels and --max-k must be positive")
    try:
        check_bind(args.host, api_key)
    except ValueError as exc:
        return fail("serve", str(exc), EXIT_USAGE)
    limits = Limits(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_image_pixels=int(args.max_image_megapixels * 1_000_000),
        max_k=args.max_k,
    )

    import uvicorn

    from dse.collection import CollectionError
    from dse.encoders import EncoderError
    from dse.server.app import create_app
    from dse.server.state import ServeError

    try:
        app = create_app(
            args.collection,
            api_key=api_key,
            generator=args.generator,
            device=args.device,
            adapter=args.adapter,
            micro_batch=not args.no_micro_batch,
            batch_window_ms=args.batch_window_ms,
            max_batch=args.max_batch,
            limits=limits,
            generator_options={"max_new_tokens": args.max_new_tokens},
        )
    except (CollectionError, EncoderError, ServeError) as exc:
        return fail("serve", str(exc))
    logging.getLogger(__name__).info("serving %s on http://%s:%d", args.collection, args.host, args.port)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind (it has logged the reason)
        if not server.started:
            return fail(
                "serve", f"cannot listen on {args.host}:{args.port} (address in use or not available)", EXIT_USAGE
            )
        raise
    return EXIT_OK
