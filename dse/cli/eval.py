"""``dse eval``: retrieval metrics of a model on a benchmark; ``dse eval compare``: significance tests.

::

    dse eval --model M --data-dir DIR                  # local format (corpus.jsonl, queries.jsonl, qrels/)
    dse eval --model M --dataset vidore/docvqa_test_subsampled [--data-dir LOCAL_COPY]
    dse eval --model M --benchmark vidore-v1           # every task + average + published figure
    dse eval --model bm25-ocr --data-dir DIR           # OCR + BM25 baseline
    dse eval --model M --data-dir DIR --hybrid bm25-ocr --fusion rrf
    dse eval compare OUT_A OUT_B [--qrels FILE | --data-dir DIR]
    dse eval convert-slidevqa test.jsonl IMAGES_DIR OUT_DIR [--split test]   # SlideVQA -> local format
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from dse.cli import EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, UsageError
from dse.cli.common import (
    DEFAULT_MODEL,
    EXIT_CANNOT_START,
    add_device_argument,
    fail,
    positive_int,
    positive_int_list,
    show_progress,
    unit_float,
)
from dse.eval.pipeline import BENCHMARKS, BM25_OCR, EvalSettings, default_out_dir, format_metrics_table
from dse.extras import MissingExtraError, require

log = logging.getLogger(__name__)


def _k_list(text: str) -> tuple[int, ...]:
    """argparse type of ``--k``: sorted, distinct cutoffs."""
    return tuple(sorted(set(positive_int_list(text))))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate retrieval on a benchmark (nDCG, Recall, MRR); 'dse eval compare' for significance",
        description="Encode a benchmark's corpus into a cached collection (the same code as dse index / dse search), "
        "search every query and report trec_eval metrics (pytrec_eval): nDCG@k, Recall@k and MRR@10. "
        "Writes a TREC run file, a metrics JSON (with per-query values) and a markdown table to --out. "
        "'dse eval compare RUN1 RUN2 ...' compares runs with paired significance tests.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="data: --data-dir DIR alone = the local format (corpus.jsonl with image or source+page, queries.jsonl, "
        "qrels/SPLIT.tsv); --dataset NAME = a hub dataset (BEIR- or QA-style), read from --data-dir when given "
        "(save_to_disk or parquet copy); --benchmark vidore-v1|vidore-v2 = every task of ViDoRe "
        "(--data-dir DIR then holds one local copy per task, named like the hub dataset).",
    )
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", default=None, metavar="DIR", help="dataset directory (see below)")
    data.add_argument(
        "--dataset", default=None, metavar="NAME", help="hub dataset id, e.g. vidore/docvqa_test_subsampled"
    )
    data.add_argument("--benchmark", choices=BENCHMARKS, default=None, help="run every task of a benchmark")
    data.add_argument("--split", default="test", help="qrels split (default test)")
    data.add_argument(
        "--language",
        default=None,
        help="hub BEIR-style sets (ViDoRe v2): keep the queries of this language only, e.g. english",
    )
    model = p.add_argument_group("model")
    model.add_argument(
        "--model",
        "-m",
        default=None,
        help=f"hub id or local directory (default {DEFAULT_MODEL}); '{BM25_OCR}' = the OCR + BM25 baseline",
    )
    model.add_argument("--family", default=None, help="model family (detected from the model config when omitted)")
    model.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter directory to load on the model")
    model.add_argument("--dim", type=positive_int, default=None, help="Matryoshka dimension for DSE models")
    model.add_argument(
        "--model-max-pixels",
        type=positive_int,
        default=None,
        metavar="N",
        help="encoder image budget in pixels (default: the model's own)",
    )
    add_device_argument(model)
    model.add_argument("--batch-size", type=positive_int, default=4, help="pages/queries per encoder batch (default 4)")
    hybrid = p.add_argument_group("baseline and hybrid")
    hybrid.add_argument(
        "--hybrid",
        choices=[BM25_OCR],
        default=None,
        help="also run the OCR + BM25 baseline and fuse it with the model's ranking",
    )
    hybrid.add_argument(
        "--fusion",
        choices=["rrf", "linear"],
        default="rrf",
        help="rrf (reciprocal rank fusion, default) or linear (min-max normalised scores)",
    )
    hybrid.add_argument(
        "--fusion-weight",
        type=unit_float,
        default=0.5,
        metavar="LAMBDA",
        help="linear fusion: LAMBDA * model + (1 - LAMBDA) * bm25 (default 0.5)",
    )
    hybrid.add_argument("--rrf-k", type=float, default=60.0, help="RRF constant (default 60)")
    hybrid.add_argument("--ocr-lang", default="eng", help="tesseract language(s) for bm25-ocr (default eng)")
    out = p.add_argument_group("output")
    out.add_argument(
        "--k", type=_k_list, default=(1, 5, 10, 100), metavar="K,K,...", help="metric cutoffs (default 1,5,10,100)"
    )
    out.add_argument(
        "--depth", type=positive_int, default=100, help="pages retrieved per query in the run (default 100)"
    )
    out.add_argument(
        "--out", "-o", default=None, metavar="DIR", help="output directory (default dse-eval/<dataset>/<model>)"
    )
    out.add_argument(
        "--cache-dir",
        default=None,
        metavar="DIR",
        help="embedding/OCR cache (default $DSE_CACHE/eval or ~/.cache/dse/eval)",
    )
    out.add_argument("--no-cache", action="store_true", help="encode into a temporary collection, keep nothing")
    out.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")
    out.add_argument(
        "--backend",
        choices=["local", "qdrant"],
        default="local",
        help="vectors of the corpus collection: local index files (default) or a Qdrant collection (--qdrant-url)",
    )
    from dse.cli.qdrant_options import add_qdrant_arguments

    add_qdrant_arguments(p)
    render = p.add_argument_group("rendering of source documents")
    render.add_argument("--dpi", type=float, default=None, help="PDF/office resolution (default 144)")
    render.add_argument("--max-pixels", type=positive_int, default=None, metavar="N", help="page pixel budget")
    render.add_argument("--password", default=None, help="password for encrypted PDFs (also $DSE_PDF_PASSWORD)")
    render.add_argument("--web-mode", choices=("viewport", "full", "tiles"), default="viewport")
    render.add_argument("--timeout", type=float, default=None, metavar="S", help="web load / office conversion timeout")
    p.set_defaults(func=run)

    csub = p.add_subparsers(dest="eval_command", metavar="compare | convert-slidevqa")
    c = csub.add_parser(
        "compare",
        help="compare runs side by side with paired significance tests",
        description="Side-by-side metrics of runs (the first is the baseline) with a paired t-test "
        "and a paired randomisation test per metric over queries. Each RUN is a run file, "
        "an output directory of dse eval (holding run.trec) or its metrics.json. "
        "Per-query values come from --qrels / --data-dir when given, otherwise from the "
        "metrics JSON next to each run.",
    )
    c.add_argument("runs", nargs="+", metavar="RUN")
    c.add_argument("--qrels", default=None, metavar="FILE", help="qrels TSV (query-id corpus-id score) or TREC qrels")
    c.add_argument(
        "--data-dir",
        dest="compare_data_dir",
        default=None,
        metavar="DIR",
        help="a local-format dataset whose qrels/SPLIT.tsv to use",
    )
    c.add_argument(
        "--split",
        dest="compare_split",
        default="test",
        metavar="SPLIT",
        help="qrels split with --data-dir (default test)",
    )
    c.add_argument(
        "--metric",
        action="append",
        default=None,
        metavar="NAME",
        help="metric key (repeatable), e.g. ndcg_cut_10, recall_5, recip_rank_10 (default: all)",
    )
    c.add_argument("--name", action="append", default=None, help="display name per run, in order (repeatable)")
    c.add_argument(
        "--resamples",
        type=positive_int,
        default=10000,
        metavar="N",
        help="randomisation test resamples (default 10000)",
    )
    c.add_argument("--alpha", type=float, default=0.05, help="significance level for the * mark (default 0.05)")
    c.add_argument("--seed", type=int, default=0, help="seed of the randomisation test")
    c.add_argument("--json", dest="compare_json", action="store_true", help="print the comparison as JSON")
    c.set_defaults(func=run_compare)

    s = csub.add_parser(
        "convert-slidevqa",
        help="convert SlideVQA's released QA JSON + slide images to the local format",
        description="Write SlideVQA-open (questions against the slides of all decks, evidence slides "
        "relevant) as a local dataset (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) that "
        "'dse eval --data-dir OUT' reads. Images are referenced in place.",
    )
    s.add_argument("annotations", metavar="JSONL", help="SlideVQA annotations, e.g. annotations/qa/test.jsonl")
    s.add_argument("images", metavar="IMAGES_DIR", help="slide images: IMAGES_DIR/<deck_name>/<slide files>")
    s.add_argument("output", metavar="OUT_DIR", help="dataset directory to write")
    s.add_argument("--split", dest="convert_split", default="test", help="qrels split name to write (default test)")
    s.add_argument(
        "--corpus-scope",
        choices=("all", "questions"),
        default="all",
        help="all: every slide of every deck (SlideVQA-open, default); questions: only decks the split's questions use",
    )
    s.set_defaults(func=run_convert_slidevqa)


# --------------------------------------------------------------------------- helpers


def _render_settings(args: argparse.Namespace) -> Any:
    import os

    from renderers import RenderSettings, SettingsError

    kwargs: dict[str, Any] = {
        "dpi": args.dpi,
        "max_pixels": args.max_pixels,
        "web_mode": args.web_mode,
        "password": args.password if args.password is not None else os.environ.get("DSE_PDF_PASSWORD"),
    }
    if args.timeout is not None:
        kwargs.update(web_timeout=args.timeout, office_timeout=args.timeout)
    try:
        return RenderSettings(**kwargs)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None


def _collection_options(args: argparse.Namespace) -> dict[str, Any] | None:
    """``Collection.create`` settings of the corpus collection (``None``: the local default)."""
    from dse.cli.qdrant_options import check_qdrant_url, qdrant_api_key, qdrant_params, qdrant_url

    if args.backend != "qdrant" and not args.qdrant_url:
        return None
    url = qdrant_url(args)
    if not url:
        raise UsageError("--backend qdrant needs --qdrant-url URL (or $QDRANT_URL)")
    check_qdrant_url(url)
    options: dict[str, Any] = {"backend": "qdrant", "qdrant_url": url, "qdrant_api_key": qdrant_api_key(args)}
    params = qdrant_params(args)
    if params:
        options["index_params"] = params
    if args.qdrant_collection:
        options["qdrant_collection"] = args.qdrant_collection
    return options


def _eval_settings(args: argparse.Namespace, collection_options: dict[str, Any] | None = None) -> EvalSettings:
    return EvalSettings(
        k_values=args.k,
        depth=args.depth,
        batch_size=args.batch_size,
        split=args.split,
        hybrid=args.hybrid,
        fusion=args.fusion,
        fusion_weight=args.fusion_weight,
        rrf_k=args.rrf_k,
        ocr_lang=args.ocr_lang,
        render_settings=_render_settings(args),
        progress=show_progress(args),
        collection_options=collection_options,
    )


def _print_failures(failures: list[Any]) -> None:
    for f in failures:
        print(f"FAILED {f.id} ({f.source}): {f.error_type}: {f.reason}", file=sys.stderr)


# --------------------------------------------------------------------------- commands


def run(args: argparse.Namespace) -> int:
    from dse.eval.data import DatasetFormatError
    from dse.eval.pipeline import Evaluator, fatal_errors, load_dataset
    from dse.eval.runner import default_cache_dir

    if args.benchmark is None and args.dataset is None and args.data_dir is None:
        raise UsageError(
            "give --data-dir DIR (local format), --dataset NAME or --benchmark vidore-v1|vidore-v2 "
            "(or 'dse eval compare RUN ...')"
        )
    if args.benchmark is not None and args.dataset is not None:
        raise UsageError("--benchmark and --dataset are exclusive")
    model = args.model or DEFAULT_MODEL
    if model == BM25_OCR and args.hybrid:
        raise UsageError("--hybrid needs a visual model (--model); --model bm25-ocr is the baseline alone")
    if model == BM25_OCR and (args.adapter or args.dim or args.family):
        raise UsageError("--adapter, --dim and --family apply to visual models, not bm25-ocr")
    if args.fusion_weight != 0.5 and args.fusion != "linear":
        raise UsageError("--fusion-weight applies to --fusion linear")
    if args.rrf_k < 0:
        raise UsageError(f"--rrf-k must be >= 0, got {args.rrf_k}")
    if args.language is not None and args.dataset is None and args.benchmark is None:
        raise UsageError("--language applies to hub datasets (--dataset / --benchmark)")
    if args.data_dir is not None and not Path(args.data_dir).exists():
        raise UsageError(f"--data-dir {args.data_dir} does not exist")
    collection_options = _collection_options(args)  # a bad Qdrant setting: a usage error before any model
    require("eval")
    settings = _eval_settings(args, collection_options)
    cache_dir = (
        None if args.no_cache else (Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir())
    )
    tmp = tempfile.TemporaryDirectory(prefix="dse-eval-") if cache_dir is None else None
    hub_cache = (cache_dir / "hub") if cache_dir is not None else Path(tmp.name)  # type: ignore[union-attr]
    try:
        dataset = None
        if args.benchmark is None:  # check the data before loading a model
            try:
                dataset = load_dataset(
                    args.dataset,
                    args.data_dir,
                    split=args.split,
                    cache_dir=hub_cache,
                    language=args.language,
                    progress=settings.progress,
                )
            except DatasetFormatError as exc:
                return fail("eval", str(exc), EXIT_USAGE)
            except _hub_errors() as exc:  # hub unreachable, unknown or gated repo
                return fail("eval", str(exc))
        if model != BM25_OCR:
            from dse.encoders import Encoder, EncoderError

            try:
                encoder = Encoder.load(
                    model,
                    family=args.family,
                    device=args.device,
                    dim=args.dim,
                    adapter=args.adapter,
                    max_pixels=args.model_max_pixels,
                )
            except EncoderError as exc:
                return fail("eval", str(exc))
        else:
            encoder = None
        evaluator = Evaluator(encoder, model, settings, cache_dir=cache_dir, adapter=args.adapter, dim=args.dim)
        if dataset is None:
            return _run_benchmark(args, evaluator, hub_cache)
        out_dir = Path(args.out) if args.out else default_out_dir(dataset.name, evaluator.label)
        if out_dir.exists() and not out_dir.is_dir():
            raise UsageError(f"--out {out_dir} exists and is not a directory")
        try:
            done = evaluator.run(dataset, out_dir)
        except fatal_errors() as exc:
            return fail("eval", str(exc))
        except DatasetFormatError as exc:
            return fail("eval", str(exc), EXIT_USAGE)
        _print_failures(done.failures)
        _print_result(args, done.rows, done.doc, dataset, out_dir)
        return EXIT_PARTIAL if done.failures else EXIT_OK
    finally:
        if tmp is not None:
            tmp.cleanup()


def _hub_errors() -> tuple[type[BaseException], ...]:
    from dse.eval.hub import HubDatasetError

    return (HubDatasetError,)


def _print_result(
    args: argparse.Namespace, rows: list[tuple[str, dict[str, float]]], doc: dict[str, Any], dataset: Any, out_dir: Path
) -> None:
    from dse.eval.metrics import metric_names

    if args.json:
        print(json.dumps({k: v for k, v in doc.items() if k not in ("per_query", "qrels")}, sort_keys=True))
        return
    print(
        f"{dataset.summary()} (split {args.split}); {doc['settings'].get('evaluated_queries', '?')} queries evaluated"
    )
    print(format_metrics_table(rows, metric_names(args.k)))
    print(f"run: {out_dir / 'run.trec'}  metrics: {out_dir / 'metrics.json'}")


def _run_benchmark(args: argparse.Namespace, evaluator: Any, hub_cache: Path) -> int:
    from dse.eval.pipeline import fatal_errors, run_benchmark

    try:
        result = run_benchmark(
            evaluator,
            args.benchmark,
            data_dir=args.data_dir,
            out_dir=Path(args.out) if args.out else None,
            hub_cache=hub_cache,
            language=args.language,
        )
    except fatal_errors() as exc:
        return fail("eval", str(exc))
    _print_failures(result.failures)
    for task, error in result.task_errors.items():
        print(f"dse eval: task {task} failed: {error}", file=sys.stderr)
    if not result.rows:
        return fail("eval", f"no task of {args.benchmark} could be evaluated", EXIT_CANNOT_START)
    if args.json:
        print(json.dumps(result.summary, sort_keys=True))
    else:
        print(f"{args.benchmark}: {result.label}")
        print(result.table)
        if result.published is None:
            print(f"(no published {args.benchmark} figure known for {evaluator.model})")
        print(f"results: {result.out_dir}")
    return EXIT_PARTIAL if (result.task_errors or result.partial) else EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    from dse.eval.compare import compare_runs, format_comparison, load_run_scores
    from dse.eval.data import DatasetFormatError, load_local_dataset, load_qrels
    from dse.eval.runs import RunFormatError

    if len(args.runs) < 2:
        raise UsageError("give at least two runs to compare")
    try:
        require("eval")
    except MissingExtraError as exc:
        return fail("eval compare", str(exc))
    if args.qrels and args.compare_data_dir:
        raise UsageError("--qrels and --data-dir are exclusive")
    if args.name and len(args.name) != len(args.runs):
        raise UsageError(f"--name given {len(args.name)} times for {len(args.runs)} runs")
    try:
        qrels = None
        if args.qrels:
            qrels = load_qrels(args.qrels)
        elif args.compare_data_dir:
            qrels = load_local_dataset(args.compare_data_dir, args.compare_split).qrels
        scores = [
            load_run_scores(r, qrels=qrels, metrics=args.metric, name=(args.name[i] if args.name else None))
            for i, r in enumerate(args.runs)
        ]
        seen: dict[str, int] = {}
        for s in scores:  # disambiguate equal display names
            seen[s.name] = seen.get(s.name, 0) + 1
        for s in scores:
            if seen[s.name] > 1 and s.path is not None:
                s.name = str(s.path.parent if s.path.name == "run.trec" else s.path)
        table = compare_runs(scores, args.metric, n_resamples=args.resamples, seed=args.seed)
    except (DatasetFormatError, RunFormatError, ValueError) as exc:
        return fail("eval compare", str(exc), EXIT_USAGE)
    if args.compare_json:
        print(json.dumps(table.to_dict(), sort_keys=True))
    else:
        print(format_comparison(table, alpha=args.alpha))
    return EXIT_OK


def run_convert_slidevqa(args: argparse.Namespace) -> int:
    from dse.eval.data import DatasetFormatError, load_local_dataset
    from dse.eval.slidevqa import convert_slidevqa

    try:
        out = convert_slidevqa(
            args.annotations, args.images, args.output, split=args.convert_split, corpus_scope=args.corpus_scope
        )
        dataset = load_local_dataset(out, args.convert_split)
    except (DatasetFormatError, OSError) as exc:
        return fail("eval convert-slidevqa", str(exc), EXIT_USAGE)
    print(
        f"{out}: {len(dataset.corpus)} slides, {len(dataset.queries)} questions, "
        f"{sum(len(r) for r in dataset.qrels.values())} relevant slides (split {args.convert_split})"
    )
    return EXIT_OK
