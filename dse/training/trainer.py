"""The fine-tuning loop: LoRA on a retriever, contrastive loss, accelerate, checkpoints, eval.

:func:`train` runs one job described by a :class:`TrainConfig`:

1. ``accelerate.Accelerator`` sets up the process (one CPU/GPU, or one of several
   processes under ``accelerate launch`` / ``torchrun``: DDP, per-process micro-batches,
   in-batch negatives within each process), bf16 autocast on CUDA;
2. the encoder is loaded with :meth:`dse.encoders.Encoder.load` on the process's device
   and LoRA layers are injected into its model (:mod:`dse.training.lora`); the encoder
   keeps encoding with the adapter applied, so evaluation uses the very same code path
   as inference;
3. micro-batches come from :class:`dse.training.data.BatchPlan`; the model's training
   hooks (``last_token_states`` / ``token_vectors``) give differentiable embeddings and
   :mod:`dse.training.losses` the loss; gradients are accumulated over
   ``grad_accum`` micro-batches, clipped, and AdamW steps with a linear warm-up/decay
   schedule;
4. every ``save_every`` steps (and at the end, at ``stop_after`` and on Ctrl-C) a
   checkpoint is written (:mod:`dse.training.checkpoint`); ``resume=True`` continues
   from the newest one in ``out`` with identical data order, optimizer, schedule and RNG;
5. every ``eval_every`` steps (and at the end) the in-training encoder is evaluated on
   the held-out split through :func:`dse.eval.runner.evaluate`; metrics go to the log;
6. the final adapter is saved in ``out`` itself (``adapter_config.json`` +
   ``adapter_model.safetensors``): ``Encoder.load(base, adapter=out)`` or
   ``Encoder.load(out)`` load it.

``out/train_log.jsonl`` gets one JSON line per optimizer step (``step``, ``loss``,
``lr``, ``epoch``) and one per evaluation (``step``, ``eval`` = metrics).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from dse.extras import require
from dse.training.checkpoint import CheckpointError, TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from dse.training.data import BatchPlan, Sample, TrainingData, TrainingDataError, load_training_data
from dse.training.lora import LoraSettings, attach_lora, default_lora_settings, save_adapter
from dse.training.losses import DEFAULT_TEMPERATURE, build_loss
from indexes.storage import atomic_write_text

logger = logging.getLogger(__name__)

LOG_FILE = "train_log.jsonl"
CONFIG_FILE = "train_config.json"


class TrainingError(ValueError):
    """A training job that cannot run as configured (one clear line)."""


@dataclass
class TrainConfig:
    """Settings of one training job (the ``dse train`` options)."""

    model: str  #: hub id or local model directory (the base)
    data: str  #: local-format dataset dir, or ColPali-layout dataset (hub id / save_to_disk / parquet dir)
    out: str  #: output directory: final adapter, checkpoints, log
    family: str | None = None
    device: str = "auto"
    dtype: str | None = None
    dim: int | None = None  #: DSE output dimension used by the loss (default: full hidden size)
    max_pixels: int | None = None  #: encoder image budget (default: the family's)
    min_pixels: int | None = None
    train_split: str = "train"
    negatives: str | None = None  #: negatives JSONL (dse mine-negatives)
    hard_negatives: int = 1  #: hard negatives per query per batch
    eval_data: str | None = None  #: local-format dataset for evaluation (default: ``data`` if it has the split)
    eval_split: str = "test"
    eval_every: int = 0  #: evaluate every N steps (0: only at the end, when eval data exists)
    eval_batch_size: int = 4
    batch_size: int = 8  #: queries per micro-batch per process
    grad_accum: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  #: optimizer steps (overrides epochs)
    learning_rate: float | None = None  #: default: the recipe's (DSE 1e-4, ColPali family 5e-5)
    weight_decay: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    temperature: float = DEFAULT_TEMPERATURE
    matryoshka_dims: list[int] | None = None
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_targets: str | None = None
    gradient_checkpointing: bool = False
    save_every: int = 0  #: checkpoint every N steps (0: only at the end / interruption)
    save_total_limit: int = 2
    resume: bool = False
    stop_after: int | None = None  #: stop (checkpointed, resumable) after this many steps; not part of the schedule
    seed: int = 0
    progress: bool = True

    def fingerprint(self, *, family: str, world_size: int, total_steps: int, lora: LoraSettings) -> dict[str, Any]:
        """Settings a resumed run must share with the checkpoint's run."""
        keys = (
            "model",
            "data",
            "train_split",
            "negatives",
            "hard_negatives",
            "batch_size",
            "grad_accum",
            "weight_decay",
            "warmup_steps",
            "temperature",
            "matryoshka_dims",
            "dim",
            "max_pixels",
            "min_pixels",
            "seed",
            "max_grad_norm",
        )
        out = {k: getattr(self, k) for k in keys}
        out.update(family=family, world_size=world_size, total_steps=total_steps, lora=asdict(lora))
        return out


@dataclass
class TrainResult:
    """What a finished (or stopped) job did."""

    out: Path
    steps: int
    total_steps: int
    losses: list[float] = field(default_factory=list)  #: loss of each optimizer step run in this call
    evals: list[dict[str, Any]] = field(default_factory=list)  #: {"step": N, "eval": metrics}
    adapter: Path | None = None  #: the final adapter directory (None when stopped early)
    resumed_from: int | None = None
    stopped: bool = False
    encoder: Any = field(default=None, repr=False)  #: the in-training encoder (adapter applied, eval mode)


# --------------------------------------------------------------------------- the model wrapper


class RetrievalTrainingModule(torch.nn.Module):
    """Query/page embeddings of a micro-batch through the encoder's hooks, and the loss.

    Wraps the encoder's model so that ``accelerate.prepare`` (DDP) sees every parameter
    and the forward runs through the wrapper.
    """

    def __init__(self, encoder: Any, loss: torch.nn.Module, data: TrainingData) -> None:
        super().__init__()
        self.backbone = encoder.model
        self.loss = loss
        self._encoder = encoder
        self._data = data
        self._bad_pages: set[str] = set()

    def _page(self, page_id: str) -> Any:
        from dse.encoders import check_image

        if page_id in self._bad_pages:
            return None
        try:
            return check_image(self._data.page(page_id))
        except (TrainingDataError, ValueError) as exc:
            self._bad_pages.add(page_id)
            logger.warning("page %s is skipped: %s", page_id, exc)
            return None

    def items(self, batch: Sequence[Sample]) -> tuple[list[Any], list[Any]]:
        """Encoder items for a batch: queries, then documents (positives in query order, then negatives).

        Samples whose positive page cannot be read are dropped (logged once per page).
        """
        from dse.encoders.hf import Item

        queries, positives, negatives = [], [], []
        for s in batch:
            page = self._page(s.positive)
            if page is None:
                continue
            q_image = self._data.query_image(s.example)
            queries.append(Item("query", text=s.example.text, image=q_image))
            positives.append(Item("document", image=page))
            for n in s.negatives:
                neg = self._page(n)
                if neg is not None:
                    negatives.append(Item("document", image=neg))
        return queries, positives + negatives

    def _embed(self, items: list[Any]) -> torch.Tensor:
        """Embeddings of items in input order; items of different kinds are forwarded separately."""
        enc = self._encoder
        groups: dict[tuple[bool, bool, str], list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault((it.image is not None, it.text is not None, it.role), []).append(i)
        parts: list[tuple[list[int], torch.Tensor]] = []
        for idx in groups.values():
            sub = [items[i] for i in idx]
            if enc.kind == "single":
                parts.append((idx, enc.last_token_states(sub)))
            else:
                parts.append((idx, enc.token_vectors(sub)[0]))
        if len(parts) == 1:
            return parts[0][1]
        order = torch.tensor([i for idx, _ in parts for i in idx])
        if enc.kind == "single":
            stacked = torch.cat([t for _, t in parts], dim=0)
        else:
            from dse.training.losses import pad_token_vectors

            stacked = pad_token_vectors([t for _, t in parts])
        return stacked[torch.argsort(order).to(stacked.device)]

    def forward(self, batch: Sequence[Sample]) -> torch.Tensor:
        """Scalar loss of one micro-batch (0 with no gradient signal when nothing usable remains)."""
        queries, documents = self.items(batch)
        if not queries or len(documents) < 2:
            # a zero that still touches every trainable parameter: keeps DDP in step
            return cast(torch.Tensor, sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad))
        return self.loss(self._embed(queries), self._embed(documents))


# --------------------------------------------------------------------------- helpers


def _linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int) -> Any:
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1))


def _eval_dataset(config: TrainConfig) -> Any:
    from dse.eval.data import load_local_dataset
    from dse.training.data import is_local_dataset

    source = config.eval_data
    if source is None:
        if (
            not is_local_dataset(config.data)
            or not (Path(config.data) / "qrels" / f"{config.eval_split}.tsv").is_file()
        ):
            return None
        source = config.data
    return load_local_dataset(source, config.eval_split)


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines of steps after ``step`` (written by an interrupted run past its last checkpoint)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("step", 0)) <= step:
                kept.append(line)
        except (ValueError, AttributeError):
            continue
    atomic_write_text(path, "".join(k + "\n" for k in kept))


def read_log(out: str | Path) -> list[dict[str, Any]]:
    """The records of ``out/train_log.jsonl``."""
    path = Path(out) / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate_encoder(encoder: Any, dataset: Any, *, batch_size: int = 4) -> dict[str, float]:
    """Metrics of the (in-training) encoder on ``dataset`` through :func:`dse.eval.runner.evaluate`."""
    from dse.eval.runner import evaluate

    was_training = encoder.model.training
    encoder.model.eval()
    try:
        result = evaluate(encoder, dataset, cache_dir=None, batch_size=batch_size, progress=False)
    finally:
        encoder.model.train(was_training)
    return dict(result.metrics)


# --------------------------------------------------------------------------- the loop


def train(config: TrainConfig) -> TrainResult:
    """Run the job (see the module doc). Raises :class:`TrainingError`, ``TrainingDataError``,
    ``CheckpointError`` or ``EncoderError`` with one clear message on bad settings or input;
    :class:`dse.extras.MissingExtraError` without the ``train`` extra."""
    require("train")
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from dse.encoders import Encoder
    from dse.encoders.hf import as_hf_encoder

    _check_config(config)
    out = Path(config.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not config.resume and latest_checkpoint(out) is not None:
        raise TrainingError(
            f"{out} already holds checkpoints of a run; pass --resume to continue it or choose another --out"
        )
    cpu = config.device.strip().lower() == "cpu" or not torch.cuda.is_available()
    # bf16 autocast on CUDA (the encoder also loads bf16 weights there by default).
    mixed = (
        "bf16"
        if not cpu and config.dtype in (None, "auto", "bf16", "bfloat16") and torch.cuda.is_bf16_supported()
        else "no"
    )
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed)
    device = (
        config.device if accelerator.num_processes == 1 and config.device not in ("auto",) else str(accelerator.device)
    )
    set_seed(config.seed)

    # Data first: bad data fails in seconds, before a large model is loaded.
    data = load_training_data(
        config.data, split=config.train_split, cache_dir=out / "page_cache", negatives=config.negatives
    )
    eval_ds = _eval_dataset(config) if accelerator.is_main_process else None
    if config.eval_every and eval_ds is None and accelerator.is_main_process:
        raise TrainingError(
            f"--eval-every needs a held-out split: {config.data} has no qrels/{config.eval_split}.tsv "
            "(or pass --eval-data DIR)"
        )
    encoder = as_hf_encoder(
        Encoder.load(
            config.model,
            family=config.family,
            device=device,
            dtype=config.dtype,
            dim=config.dim,
            max_pixels=config.max_pixels,
            min_pixels=config.min_pixels,
        )
    )
    if encoder.source.adapters:
        raise TrainingError(
            f"{config.model} comes with a PEFT adapter ({encoder.source.adapters[-1]}); merge it "
            "first with `dse train merge --adapter ... --out DIR` and train on DIR"
        )

    lora = default_lora_settings(
        encoder.family,
        r=config.lora_r,
        alpha=config.lora_alpha,
        dropout=config.lora_dropout,
        target_modules=config.lora_targets,
    )
    lr = config.learning_rate if config.learning_rate is not None else lora.learning_rate
    try:
        peft_model = attach_lora(encoder.model, lora)
    except ValueError as exc:
        raise TrainingError(str(exc)) from exc
    if config.gradient_checkpointing:
        encoder.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    dim = config.dim or getattr(encoder, "dim", None)
    loss_fn = build_loss(
        encoder.kind,
        temperature=config.temperature,
        dim=dim if encoder.kind == "single" else None,
        matryoshka_dims=config.matryoshka_dims,
    )
    module = RetrievalTrainingModule(encoder, loss_fn, data)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=config.weight_decay)

    world = accelerator.num_processes
    plan = BatchPlan(
        data.examples, batch_size=config.batch_size, hard_negatives=config.hard_negatives, seed=config.seed
    )
    per_step = world * config.grad_accum
    steps_per_epoch = max(len(plan.batches(0)) // per_step, 1)
    total = config.max_steps if config.max_steps is not None else max(math.ceil(config.epochs * steps_per_epoch), 1)
    scheduler = _linear_schedule(optimizer, config.warmup_steps, total)
    fingerprint = config.fingerprint(family=encoder.family, world_size=world, total_steps=total, lora=lora)
    module, optimizer = accelerator.prepare(module, optimizer)

    step, micro, resumed_from = 0, 0, None
    log_path = out / LOG_FILE
    if config.resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            logger.warning("--resume: no checkpoint in %s; starting from scratch", out)
        else:
            state = load_checkpoint(
                ckpt, peft_model=peft_model, optimizer=optimizer, scheduler=scheduler, fingerprint=fingerprint
            )
            step, micro, resumed_from = state.step, state.micro_batches, state.step
            if accelerator.is_main_process:
                _truncate_log(log_path, step)
    elif accelerator.is_main_process and log_path.exists():
        log_path.unlink()
    if accelerator.is_main_process:
        (out / CONFIG_FILE).write_text(
            json.dumps(
                {
                    **asdict(config),
                    "family": encoder.family,
                    "total_steps": total,
                    "learning_rate": lr,
                    "lora": asdict(lora),
                    "world_size": world,
                },
                indent=2,
                sort_keys=True,
                default=str,
            ),
            encoding="utf-8",
        )
        logger.info(
            "%s; %d steps of %d queries x %d processes x %d accumulation (%d steps per epoch)",
            data.summary(),
            total,
            config.batch_size,
            world,
            config.grad_accum,
            steps_per_epoch,
        )

    result = TrainResult(out=out, steps=step, total_steps=total, resumed_from=resumed_from, encoder=encoder)
    base_name = encoder.source.model
    last_saved = step
    epoch = 0

    def checkpoint() -> None:
        nonlocal last_saved
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            save_checkpoint(
                out,
                peft_model=peft_model,
                base_model=base_name,
                optimizer=optimizer,
                scheduler=scheduler,
                keep=config.save_total_limit,
                state=TrainState(
                    step=step,
                    micro_batches=micro,
                    epoch=epoch,
                    fingerprint=fingerprint,
                    extra={"loss": result.losses[-1] if result.losses else None, "time": time.time()},
                ),
            )
        last_saved = step

    def run_eval() -> None:
        if accelerator.is_main_process and eval_ds is not None:
            metrics = evaluate_encoder(encoder, eval_ds, batch_size=config.eval_batch_size)
            record = {"step": step, "eval": metrics, "split": config.eval_split}
            result.evals.append(record)
            _append_log(log_path, record)
            logger.info("step %d: nDCG@5 %.4f", step, metrics.get("ndcg_cut_5", float("nan")))
        accelerator.wait_for_everyone()

    stream = plan.micro_batches(start=micro)
    module.train()
    bar = tqdm(
        total=total,
        initial=step,
        desc="training",
        unit="step",
        dynamic_ncols=True,
        disable=not (config.progress and accelerator.is_main_process),
    )
    try:
        while step < total:
            if config.stop_after is not None and step >= config.stop_after:
                result.stopped = True
                break
            losses = []
            for a in range(config.grad_accum):
                group = [next(stream) for _ in range(world)]
                micro += world
                epoch, batch = group[accelerator.process_index]
                sync = a == config.grad_accum - 1
                with accelerator.no_sync(module) if not sync else contextlib.nullcontext():
                    with accelerator.autocast():
                        loss = module(batch)
                    accelerator.backward(loss / config.grad_accum)
                losses.append(loss.detach().float())
            if config.max_grad_norm and config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            mean_loss = float(accelerator.reduce(torch.stack(losses).mean(), reduction="mean"))
            result.losses.append(mean_loss)
            if accelerator.is_main_process:
                _append_log(
                    log_path, {"step": step, "loss": mean_loss, "lr": scheduler.get_last_lr()[0], "epoch": epoch}
                )
            bar.update(1)
            bar.set_postfix(loss=f"{mean_loss:.4f}", epoch=epoch)
            if config.save_every and step % config.save_every == 0 and step < total:
                checkpoint()
            if config.eval_every and step % config.eval_every == 0 and step < total:
                run_eval()
    except KeyboardInterrupt:
        bar.close()
        if step > last_saved:
            logger.warning("interrupted: saving a checkpoint at step %d (resume with --resume)", step)
            checkpoint()
        raise
    bar.close()
    result.steps = step
    if step > last_saved or (result.stopped and latest_checkpoint(out) is None):
        checkpoint()
    if result.stopped:
        logger.info("stopped after %d of %d steps; resume with --resume", step, total)
        module.eval()
        return result
    run_eval()
    if accelerator.is_main_process:
        extra = {
            "base_model": base_name,
            "family": encoder.family,
            "steps": step,
            "dim": dim,
            "settings": encoder.settings,
            "lora": asdict(lora),
            "learning_rate": lr,
            "final_eval": result.evals[-1]["eval"] if result.evals else None,
        }
        save_adapter(peft_model, out, base_model=base_name, extra=extra)
        logger.info("saved the adapter in %s", out)
    accelerator.wait_for_everyone()
    result.adapter = out
    module.eval()
    return result


def _check_config(c: TrainConfig) -> None:
    checks = [
        (c.batch_size >= 1, f"batch size must be at least 1, got {c.batch_size}"),
        (c.grad_accum >= 1, f"gradient accumulation must be at least 1, got {c.grad_accum}"),
        (c.max_steps is None or c.max_steps >= 1, f"max steps must be at least 1, got {c.max_steps}"),
        (c.epochs > 0, f"epochs must be positive, got {c.epochs}"),
        (c.learning_rate is None or c.learning_rate > 0, f"learning rate must be positive, got {c.learning_rate}"),
        (c.temperature > 0, f"temperature must be positive, got {c.temperature}"),
        (c.hard_negatives >= 0, f"hard negatives must be >= 0, got {c.hard_negatives}"),
        (c.eval_every >= 0 and c.save_every >= 0, "--eval-every and --save-every must be >= 0"),
        (c.warmup_steps >= 0, f"warm-up steps must be >= 0, got {c.warmup_steps}"),
        (c.stop_after is None or c.stop_after >= 1, f"--stop-after must be at least 1, got {c.stop_after}"),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingError(message)
    if c.matryoshka_dims is not None and (not c.matryoshka_dims or any(int(d) < 1 for d in c.matryoshka_dims)):
        raise TrainingError(f"Matryoshka dims must be positive integers, got {c.matryoshka_dims}")


__all__ = ["CheckpointError", "TrainConfig", "TrainResult", "TrainingError", "evaluate_encoder", "read_log", "train"]
