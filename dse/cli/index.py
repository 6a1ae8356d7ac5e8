"""``dse index``: render, encode and store documents in a collection."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dse.cli import EXIT_OK, EXIT_PARTIAL, UsageError
from dse.cli.common import (
    DEFAULT_MODEL,
    add_collection_argument,
    add_device_argument,
    check_sources,
    fail_for,
    parse_key_values,
    print_json,
    show_progress,
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="index documents into a collection (resumable)",
        description="Render sources (files, directories, globs, URLs), encode the pages and store "
        "them in a collection. Re-running the same command resumes an interrupted job; "
        "unchanged sources are skipped, changed ones replaced. On an existing collection the model "
        "and index options must match how it was built (search-time --index-param values such as "
        "ef_search and nprobe are applied); --dtype and --device only say how the model runs. "
        "Metadata is kept across runs: --meta and <file>.meta.json sidecars merge their keys over "
        "the stored ones, --unset-meta (or null in a sidecar) deletes a key.",
    )
    p.add_argument("sources", nargs="+", metavar="SRC", help="files, directories (recursive), globs or http(s) URLs")
    add_collection_argument(p)
    p.add_argument(
        "--model",
        "-m",
        default=None,
        help=f"hub id or local directory (default for a new collection: {DEFAULT_MODEL}; an existing "
        "collection uses the model it was built with, and refuses another one)",
    )
    p.add_argument("--family", default=None, help="model family (detected from the model config when omitted)")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension for DSE models (default: full)")
    p.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter directory to load on the model")
    p.add_argument(
        "--model-max-pixels",
        type=int,
        default=None,
        metavar="N",
        help="encoder image budget in pixels (default: the published model's own)",
    )
    p.add_argument(
        "--model-min-pixels",
        type=int,
        default=None,
        metavar="N",
        help="encoder minimum image size in pixels (default: the published model's own)",
    )
    p.add_argument("--dtype", default=None, help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--query-instruction", default=None, help="GME only: the query instruction (system turn)")
    add_device_argument(p)
    p.add_argument("--batch-size", type=int, default=4, help="pages per encoder batch (default 4)")
    p.add_argument(
        "--commit-every",
        type=int,
        default=64,
        help="pages between durable commits (default 64); a kill loses at most this much work",
    )
    p.add_argument(
        "--index",
        default="auto",
        choices=["auto", "flat", "hnsw", "ivfpq", "maxsim"],
        help="index type of a new collection (auto: flat for single-vector, maxsim for multi-vector)",
    )
    p.add_argument(
        "--index-param",
        action="append",
        metavar="KEY=VALUE",
        help="index parameter: FAISS ones, e.g. hnsw_m=32, ef_search=128, nlist=1024, pq_m=16, nprobe=16; "
        "maxsim ones: candidates=centroids|muvera|none (default centroids; none: exact MaxSim), "
        "codec=int8|float16 (default int8), n_candidates, n_centroids, nprobe, train_pages, "
        "and for muvera k_sim, d_proj, r_reps, seed, fde_index=ivfpq, nlist, pq_m "
        "(on an existing collection only the search-time ones: ef_search, nprobe, refine_factor, "
        "brute_force_max, n_candidates)",
    )
    p.add_argument(
        "--pool-factor",
        type=int,
        default=None,
        help="hierarchical token pooling factor for multi-vector models (e.g. 3)",
    )
    p.add_argument(
        "--backend",
        choices=["local", "qdrant"],
        default=None,
        help="where a new collection keeps its vectors: local index files (default) or a Qdrant collection "
        "(--qdrant-url given implies qdrant)",
    )
    from dse.cli.qdrant_options import add_qdrant_arguments

    add_qdrant_arguments(p)
    p.add_argument(
        "--meta",
        action="append",
        metavar="KEY=VALUE",
        help="metadata for every document given, merged over its stored metadata (repeatable)",
    )
    p.add_argument(
        "--unset-meta",
        action="append",
        metavar="KEY",
        help="delete this metadata key from every document given (repeatable)",
    )
    p.add_argument("--no-sidecars", action="store_true", help="ignore <file>.meta.json metadata sidecars")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    ray = p.add_argument_group("distributed indexing (the 'ray' extra)")
    ray.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="auto|ADDRESS",
        help="render and encode on a Ray cluster: auto ($RAY_ADDRESS, else a cluster running on this machine, "
        "else a new local one) or a cluster address; this process stays the only writer",
    )
    ray.add_argument(
        "--ray-encoders", type=int, default=2, metavar="N", help="encoder actors, one model copy each (default 2)"
    )
    ray.add_argument(
        "--ray-gpus-per-encoder",
        type=float,
        default=0.0,
        metavar="G",
        help="GPUs per encoder actor (fractions share a GPU; default 0: CPU)",
    )
    ray.add_argument(
        "--ray-encoder-cpus", type=float, default=1.0, metavar="C", help="CPUs per encoder actor (default 1)"
    )
    ray.add_argument(
        "--ray-render-cpus",
        type=float,
        default=1.0,
        metavar="C",
        help="CPUs per render task, one task per source (default 1)",
    )
    from dse.cli.render import add_render_arguments

    add_render_arguments(p)
    p.set_defaults(func=run)


def _param_value(text: str) -> int | float | str | None:
    if text.lower() == "none":  # e.g. candidates=none: exhaustive MaxSim
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _ray_settings(args: argparse.Namespace) -> object:
    """The --ray options as RaySettings (None without --ray); the extra is checked first (exit 3)."""
    ray_options = ("ray_encoders", "ray_gpus_per_encoder", "ray_encoder_cpus", "ray_render_cpus")
    if args.ray is None:
        defaults = {"ray_encoders": 2, "ray_gpus_per_encoder": 0.0, "ray_encoder_cpus": 1.0, "ray_render_cpus": 1.0}
        if any(getattr(args, k) != defaults[k] for k in ray_options):
            raise UsageError(
                "--ray-encoders, --ray-gpus-per-encoder, --ray-encoder-cpus and --ray-render-cpus need --ray"
            )
        return None
    from dse.extras import require

    require("ray")
    from dse.collection import CollectionInputError
    from dse.collection.ray_ingest import RaySettings

    try:
        return RaySettings(
            address=args.ray,
            encoders=args.ray_encoders,
            gpus_per_encoder=args.ray_gpus_per_encoder,
            encoder_cpus=args.ray_encoder_cpus,
            render_cpus=args.ray_render_cpus,
        )
    except CollectionInputError as exc:
        raise UsageError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    import shutil

    from dse.cli.qdrant_options import check_qdrant_url, qdrant_api_key, qdrant_params, qdrant_url
    from dse.cli.render import settings_from_args
    from dse.collection import Collection, CollectionError
    from dse.encoders import EncoderError

    meta: dict[str, object] = dict(parse_key_values(args.meta, "--meta"))
    for key in args.unset_meta or []:
        if not key.strip():
            raise UsageError("--unset-meta expects a key")
        if key.strip() in meta:
            raise UsageError(f"--meta and --unset-meta both name {key.strip()!r}")
        meta[key.strip()] = None
    params = {k: _param_value(v) for k, v in parse_key_values(args.index_param, "--index-param").items()}
    settings = settings_from_args(args)
    ray_settings = _ray_settings(args)
    check_sources(args.sources)  # before loading a model or creating anything
    directory = Path(args.collection)
    exists = (directory / "collection.json").exists()
    dir_existed = directory.exists()
    backend = args.backend or ("qdrant" if args.qdrant_url else "local")
    if backend == "qdrant":
        if args.index not in ("auto", "qdrant"):
            raise UsageError(f"--index {args.index} applies to the local backend; use --qdrant-param with qdrant")
        if args.index_param:
            raise UsageError("--index-param applies to the local backend; use --qdrant-param with qdrant")
        params = qdrant_params(args)
    elif args.qdrant_param or args.qdrant_collection:
        raise UsageError("--qdrant-param and --qdrant-collection need --backend qdrant")
    if backend == "qdrant" and not qdrant_url(args) and not exists:
        raise UsageError("--backend qdrant needs --qdrant-url URL (or $QDRANT_URL)")
    url = qdrant_url(args)
    if backend == "qdrant" and url:
        check_qdrant_url(url)
    try:
        if exists:
            col = Collection.open(
                directory,
                device=args.device,
                model=args.model,
                qdrant_url=args.qdrant_url,
                qdrant_api_key=qdrant_api_key(args),
                dtype=args.dtype,
                family=args.family,
                dim=args.dim,
                max_pixels=args.model_max_pixels,
                min_pixels=args.model_min_pixels,
                adapter=args.adapter,
                query_instruction=args.query_instruction,
            )
            try:
                col.update_index_options(index=args.index, index_params=params, pool_factor=args.pool_factor)
            except BaseException:
                col.close()
                raise
        else:
            col = Collection.create(
                directory,
                args.model or DEFAULT_MODEL,
                family=args.family,
                device=args.device,
                dim=args.dim,
                index=args.index,
                index_params=params,
                pool_factor=args.pool_factor,
                backend=backend,
                qdrant_url=qdrant_url(args) if backend == "qdrant" else None,
                qdrant_api_key=qdrant_api_key(args),
                qdrant_collection=args.qdrant_collection,
                adapter=args.adapter,
                dtype=args.dtype,
                max_pixels=args.model_max_pixels,
                min_pixels=args.model_min_pixels,
                **({"query_instruction": args.query_instruction} if args.query_instruction else {}),
            )
    except (CollectionError, EncoderError) as exc:
        return fail_for("index", exc)
    try:
        report = col.add(
            args.sources,
            meta=meta,
            batch_size=args.batch_size,
            commit_every=args.commit_every,
            render_settings=settings,
            sidecars=not args.no_sidecars,
            progress=show_progress(args),
            ray=ray_settings,
        )
        counts = col.store.counts()
    except (CollectionError, EncoderError) as exc:
        return fail_for("index", exc)
    finally:
        col.close()
    if not exists and counts["documents"] + counts["incomplete_documents"] == 0:
        # never leave an empty collection behind: the next run would find a directory to refuse
        if dir_existed:
            for child in directory.iterdir():
                if child.is_dir():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(directory, ignore_errors=True)
        print(f"dse index: nothing was indexed; the new collection {directory} was not kept", file=sys.stderr)
    if args.json:
        print_json(report.to_dict())
    else:
        for f in report.failures:
            print(f"FAILED {f.source}: {f.error_type}: {f.reason}", file=sys.stderr)
        if args.verbose:
            for path in report.skipped:
                print(f"skipped (unsupported type): {path}", file=sys.stderr)
        print(report.summary())
    return EXIT_PARTIAL if report.failures else EXIT_OK
