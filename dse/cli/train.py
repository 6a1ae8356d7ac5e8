"""``dse train`` (fine-tune with LoRA), ``dse train merge`` and ``dse mine-negatives``."""

from __future__ import annotations

import argparse

from dse.cli import EXIT_OK, EXIT_USAGE, UsageError
from dse.cli.common import DEFAULT_MODEL, add_device_argument, fail, positive_int_list, print_json, show_progress
from dse.extras import require


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="fine-tune a retriever with LoRA (and `dse train merge`)",
        description="Fine-tune a DSE or ColPali-family retriever on (query, page) pairs with LoRA. "
        "`dse train merge --adapter DIR --out DIR` writes base + adapter merged into a full model. "
        "Multi-GPU: `accelerate launch -m dse train ...` (or torchrun -m dse train ...).",
    )
    p.add_argument("action", nargs="?", choices=["merge"], help="merge: fold an adapter into its base model")
    p.add_argument(
        "--model", "-m", default=None, help=f"base model: hub id or local directory (default {DEFAULT_MODEL})"
    )
    p.add_argument("--family", default=None, help="model family (detected from the model config when omitted)")
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR|HUB_ID",
        help="a local-format dataset (corpus.jsonl, queries.jsonl, qrels/train.tsv) or a ColPali "
        "training set (query + image columns): hub id, save_to_disk directory or parquet directory",
    )
    p.add_argument(
        "--out",
        "-o",
        default=None,
        metavar="DIR",
        help="output directory (adapter, checkpoints/, train_log.jsonl); merge: the merged model",
    )
    p.add_argument("--adapter", default=None, metavar="DIR", help="merge: the adapter directory to merge")
    p.add_argument("--negatives", default=None, metavar="FILE", help="hard negatives JSONL (dse mine-negatives)")
    p.add_argument("--hard-negatives", type=int, default=1, metavar="N", help="hard negatives per query (default 1)")
    p.add_argument("--train-split", default="train", help="qrels split used for training (default train)")
    p.add_argument(
        "--eval-data",
        default=None,
        metavar="DIR",
        help="local-format dataset for evaluation (default: --data when it has the eval split)",
    )
    p.add_argument("--eval-split", default="test", help="held-out qrels split (default test)")
    p.add_argument(
        "--eval-every",
        type=int,
        default=0,
        metavar="N",
        help="evaluate every N steps (nDCG@5 etc. logged to OUT/train_log.jsonl; 0: only at the end)",
    )
    p.add_argument("--batch-size", type=int, default=8, help="queries per micro-batch per process (default 8)")
    p.add_argument("--grad-accum", type=int, default=1, metavar="N", help="gradient accumulation steps (default 1)")
    p.add_argument("--epochs", type=float, default=1.0, help="epochs (default 1; --max-steps overrides)")
    p.add_argument("--max-steps", type=int, default=None, metavar="N", help="optimizer steps")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: DSE 1e-4, ColPali family 5e-5)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--temperature", type=float, default=0.02, help="InfoNCE temperature (default 0.02)")
    p.add_argument(
        "--matryoshka-dims",
        type=positive_int_list,
        default=None,
        metavar="D1,D2,...",
        help="DSE: Matryoshka loss over these dims (e.g. 1536,1024,768,512)",
    )
    p.add_argument("--dim", type=int, default=None, help="DSE: output dimension trained (default: full)")
    p.add_argument("--lora-r", type=int, default=None, help="LoRA rank (default: DSE 8, ColPali family 32)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default: DSE 64, ColPali family 32)")
    p.add_argument("--lora-dropout", type=float, default=None, help="LoRA dropout (default 0.1)")
    p.add_argument(
        "--lora-targets",
        default=None,
        metavar="REGEX",
        help="peft target_modules regex (default: language-model q/k/v/o/gate/up/down_proj + head)",
    )
    p.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for memory")
    p.add_argument(
        "--save-every",
        type=int,
        default=100,
        metavar="N",
        help="checkpoint every N steps (default 100; also at the end and on Ctrl-C)",
    )
    p.add_argument("--save-total-limit", type=int, default=2, metavar="N", help="checkpoints kept (default 2)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument(
        "--stop-after",
        type=int,
        default=None,
        metavar="N",
        help="stop after N steps with a checkpoint (resume later with --resume)",
    )
    p.add_argument("--model-max-pixels", type=int, default=None, metavar="N", help="encoder image budget in pixels")
    p.add_argument("--model-min-pixels", type=int, default=None, metavar="N")
    p.add_argument("--dtype", default=None, help="model dtype (default: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_device_argument(p)
    p.set_defaults(func=run_train)

    m = sub.add_parser(
        "mine-negatives",
        help="mine hard negatives for training with the current model",
        description="Index the dataset's corpus with the model, retrieve the top pages for each "
        "training query, drop the judged ones and write the best k per query (JSONL) "
        "for `dse train --negatives FILE`.",
    )
    m.add_argument("--model", "-m", default=None, help=f"hub id or local directory (default {DEFAULT_MODEL})")
    m.add_argument("--data", required=True, metavar="DIR", help="local-format dataset")
    m.add_argument("--out", "-o", required=True, metavar="FILE", help="negatives JSONL to write")
    m.add_argument("--adapter", default=None, metavar="DIR", help="a LoRA adapter to apply")
    m.add_argument("--family", default=None)
    m.add_argument("-k", type=int, default=5, help="negatives per query (default 5)")
    m.add_argument("--split", default="train", help="qrels split whose queries are mined (default train)")
    m.add_argument("--batch-size", type=int, default=4)
    m.add_argument("--cache-dir", default=None, metavar="DIR", help="keep the encoded corpus here for reuse")
    add_device_argument(m)
    m.set_defaults(func=run_mine)


def run_train(args: argparse.Namespace) -> int:
    if args.action == "merge":
        return run_merge(args)
    require("train")
    from dse.encoders import EncoderError
    from dse.eval.data import DatasetFormatError
    from dse.training.checkpoint import CheckpointError
    from dse.training.data import TrainingDataError
    from dse.training.trainer import TrainConfig, TrainingError, train

    if not args.data or not args.out:
        raise UsageError("--data and --out are required (or use `dse train merge --adapter DIR --out DIR`)")
    config = TrainConfig(
        model=args.model or DEFAULT_MODEL,
        data=args.data,
        out=args.out,
        family=args.family,
        device=args.device,
        dtype=args.dtype,
        dim=args.dim,
        max_pixels=args.model_max_pixels,
        min_pixels=args.model_min_pixels,
        train_split=args.train_split,
        negatives=args.negatives,
        hard_negatives=args.hard_negatives,
        eval_data=args.eval_data,
        eval_split=args.eval_split,
        eval_every=args.eval_every,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        weight_decay=args.weight_decay,
        warmup_steps=args.warmup_steps,
        temperature=args.temperature,
        matryoshka_dims=args.matryoshka_dims,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        lora_targets=args.lora_targets,
        gradient_checkpointing=args.gradient_checkpointing,
        save_every=args.save_every,
        save_total_limit=args.save_total_limit,
        resume=args.resume,
        stop_after=args.stop_after,
        seed=args.seed,
        progress=not args.quiet,
    )
    try:
        result = train(config)
    except EncoderError as exc:
        return fail("train", str(exc))
    except (TrainingError, TrainingDataError, DatasetFormatError, CheckpointError, ValueError) as exc:
        return fail("train", str(exc), EXIT_USAGE)
    summary = {
        "out": str(result.out),
        "steps": result.steps,
        "total_steps": result.total_steps,
        "resumed_from": result.resumed_from,
        "stopped": result.stopped,
        "first_loss": result.losses[0] if result.losses else None,
        "last_loss": result.losses[-1] if result.losses else None,
        "adapter": str(result.adapter) if result.adapter else None,
        "eval": result.evals[-1] if result.evals else None,
    }
    if args.json:
        print_json(summary)
        return EXIT_OK
    if result.stopped:
        print(
            f"stopped at step {result.steps} of {result.total_steps}; checkpoint in {result.out}/checkpoints "
            "(continue with --resume)"
        )
        return EXIT_OK
    losses = f" (loss {summary['first_loss']:.4f} -> {summary['last_loss']:.4f})" if result.losses else ""
    print(f"trained {result.steps} steps{losses}; adapter -> {result.out}")
    if result.evals:
        metrics = result.evals[-1]["eval"]
        print(
            f"{args.eval_split}: nDCG@5 {metrics.get('ndcg_cut_5', float('nan')):.4f}  "
            f"nDCG@10 {metrics.get('ndcg_cut_10', float('nan')):.4f}"
        )
    return EXIT_OK


def run_merge(args: argparse.Namespace) -> int:
    from dse.encoders import EncoderError
    from dse.training.merge import merge_adapter

    if not args.adapter or not args.out:
        raise UsageError("merge needs --adapter DIR and --out DIR")
    try:
        out = merge_adapter(
            args.adapter,
            args.out,
            base=args.model,
            dtype=args.dtype,
            device="cpu" if args.device == "auto" else args.device,
        )
    except EncoderError as exc:
        return fail("train", str(exc))
    if args.json:
        print_json({"merged": str(out)})
    else:
        print(f"merged {args.adapter} into {out}")
    return EXIT_OK


def run_mine(args: argparse.Namespace) -> int:
    from dse.encoders import EncoderError
    from dse.eval.data import DatasetFormatError
    from dse.training.data import TrainingDataError
    from dse.training.negatives import mine_negatives

    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    require("train")
    try:
        mined = mine_negatives(
            args.model or DEFAULT_MODEL,
            args.data,
            args.out,
            k=args.k,
            split=args.split,
            adapter=args.adapter,
            family=args.family,
            device=args.device,
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            progress=show_progress(args),
        )
    except EncoderError as exc:
        return fail("mine-negatives", str(exc))
    except (TrainingDataError, DatasetFormatError, ValueError) as exc:
        return fail("mine-negatives", str(exc), EXIT_USAGE)
    n = sum(len(v) for v in mined.values())
    print(f"mined {n} negatives for {len(mined)} queries -> {args.out}")
    return EXIT_OK
