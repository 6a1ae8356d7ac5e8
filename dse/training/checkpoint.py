"""Training checkpoints: everything a resumed run needs, in safe formats.

A checkpoint is a directory ``OUT/checkpoints/step-000120/``::

    adapter_config.json, adapter_model.safetensors   the LoRA adapter (peft format; loadable as is)
    optimizer.pt        optimizer state dict (torch.save of tensors/numbers; loaded with weights_only=True)
    scheduler.json      LR scheduler state dict (JSON)
    rng.safetensors     torch CPU (and CUDA) RNG states
    state.json          step, epoch, micro-batches consumed, losses, the run's fingerprint

The directory is written as ``step-000120.tmp``, fsynced and renamed when complete
(:func:`indexes.storage.atomic_path`), so a crash while saving never leaves a half checkpoint
that :func:`latest_checkpoint` would pick.
The data order needs no state beyond the step: the batch plan is a function of the
seed (:class:`dse.training.data.BatchPlan`).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from indexes.storage import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
_NAME = re.compile(r"^step-(\d{6,})$")


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged or belongs to a different run."""


@dataclass(frozen=True)
class TrainState:
    """Loop position saved with a checkpoint."""

    step: int  #: optimizer steps done
    micro_batches: int  #: global micro-batches consumed (all processes)
    epoch: int
    fingerprint: dict[str, Any]  #: settings a resumed run must share (model, data, batch plan, LoRA)
    extra: dict[str, Any]  #: informational (last loss, time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "micro_batches": self.micro_batches,
            "epoch": self.epoch,
            "fingerprint": self.fingerprint,
            "extra": self.extra,
        }


def checkpoint_dir(out: str | Path, step: int) -> Path:
    return Path(out) / CHECKPOINTS_DIR / f"step-{step:06d}"


def list_checkpoints(out: str | Path) -> list[Path]:
    """Complete checkpoints under ``out``, oldest first."""
    root = Path(out) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [
        (int(m.group(1)), p) for p in root.iterdir() if (m := _NAME.match(p.name)) and (p / "state.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"torch_cuda_{i}"] = s
    return state


def _set_rng_state(state: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(state["torch_cpu"])
    cuda = [state[k] for k in sorted((k for k in state if k.startswith("torch_cuda_")), key=lambda k: int(k[11:]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return None  # functions (LambdaLR's lambdas) are not state


def save_checkpoint(
    out: str | Path,
    *,
    peft_model: Any,
    base_model: str,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: TrainState,
    keep: int | None = 2,
) -> Path:
    """Write a complete checkpoint for ``state.step`` (see the module doc); prune to the ``keep`` newest."""
    from safetensors.torch import save_file

    from dse.training.lora import save_adapter

    final = checkpoint_dir(out, state.step)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        save_adapter(peft_model, tmp, base_model=base_model)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "scheduler.json").write_text(json.dumps(_jsonable(scheduler.state_dict())), encoding="utf-8")
        save_file({k: v.contiguous() for k, v in _rng_state().items()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps(state.to_dict(), indent=2, sort_keys=True, default=str), encoding="utf-8"
        )
    logger.info("saved checkpoint %s", final)
    if keep is not None and keep > 0:
        for old in list_checkpoints(out)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def read_state(path: str | Path) -> TrainState:
    path = Path(path)
    try:
        raw = json.loads((path / "state.json").read_text(encoding="utf-8"))
        return TrainState(
            step=int(raw["step"]),
            micro_batches=int(raw["micro_batches"]),
            epoch=int(raw["epoch"]),
            fingerprint=dict(raw.get("fingerprint") or {}),
            extra=dict(raw.get("extra") or {}),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable state.json ({exc})") from exc


def load_checkpoint(
    path: str | Path,
    *,
    peft_model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fingerprint: dict[str, Any] | None = None,
    restore_rng: bool = True,
) -> TrainState:
    """Restore adapter weights, optimizer, scheduler and RNG from ``path``; returns its :class:`TrainState`.

    When ``fingerprint`` is given, a checkpoint of a run with different settings raises
    :class:`CheckpointError` naming the differing settings.
    """
    from safetensors.torch import load_file

    from dse.training.lora import load_trainable_state

    path = Path(path)
    state = read_state(path)
    if fingerprint is not None:
        # JSON round trip so tuples/lists and int/float spellings compare equal.
        want = json.loads(json.dumps(fingerprint, default=str))
        differ = sorted(k for k in set(want) | set(state.fingerprint) if want.get(k) != state.fingerprint.get(k))
        if differ:
            details = "; ".join(f"{k}: checkpoint {state.fingerprint.get(k)!r}, now {want.get(k)!r}" for k in differ)
            raise CheckpointError(
                f"{path} belongs to a run with different settings ({details}); use another --out or the same settings"
            )
    try:
        load_trainable_state(peft_model, path)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
        scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
        if restore_rng:
            _set_rng_state(load_file(str(path / "rng.safetensors")))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: cannot restore the checkpoint ({exc})") from exc
    logger.info("resumed from %s (step %d)", path, state.step)
    return state
