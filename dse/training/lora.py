"""LoRA through peft: default targets and hyper-parameters per family, adapter attach/save.

Targets (peft ``target_modules`` as one regular expression, matched against full module
names with ``re.fullmatch``):

* the language model's ``q_proj k_proj v_proj o_proj gate_proj up_proj down_proj``
  (modules under the vision tower / multimodal projector are excluded: Qwen2.5-VL's
  vision MLP also has ``*_proj`` layers);
* for the colpali-engine families also the projection head (``custom_text_proj``;
  ``linear`` for ColIdefics3) as a LoRA target, as colpali-engine's training configs do.

Defaults follow the published recipes (``/work/shared/specs/models.md``): DSE r=8,
alpha=64, dropout 0.1, lr 1e-4; ColPali family r=32, alpha=32, dropout 0.1, lr 5e-5.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from indexes.storage import atomic_write_text

logger = logging.getLogger(__name__)

#: Decoder projections adapted by default.
DEFAULT_PROJECTIONS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
#: Module-name fragments of the vision side (never a default target).
VISION_MARKERS: tuple[str, ...] = ("visual", "vision_tower", "vision_model", "multi_modal_projector", "connector")
#: Projection head of each multi-vector family (a LoRA target too).
PROJECTION_HEADS: dict[str, str] = {
    "colqwen2": "custom_text_proj",
    "colqwen2.5": "custom_text_proj",
    "colpali": "custom_text_proj",
    "colidefics3": "linear",
}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA hyper-parameters; :func:`default_lora_settings` gives the published recipe's."""

    r: int
    alpha: float
    dropout: float
    target_modules: str  #: a peft regex over full module names
    learning_rate: float  #: recipe learning rate (the trainer's default)

    def to_peft(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.alpha,  # type: ignore[arg-type]  # peft annotates int; it scales by alpha / r as a float
            lora_dropout=self.dropout,
            target_modules=self.target_modules,
            bias="none",
        )


def target_regex(family: str, projections: tuple[str, ...] = DEFAULT_PROJECTIONS) -> str:
    """The default ``target_modules`` regex of ``family`` (see the module doc)."""
    vision = "|".join(VISION_MARKERS)
    projs = "|".join(projections)
    pattern = rf"^(?!.*(?:{vision})).*\.(?:{projs})$"
    head = PROJECTION_HEADS.get(family)
    if head:
        pattern += rf"|^(?:.*\.)?{head}$"
    return pattern


def default_lora_settings(
    family: str,
    *,
    r: int | None = None,
    alpha: float | None = None,
    dropout: float | None = None,
    target_modules: str | None = None,
) -> LoraSettings:
    """The published recipe's LoRA settings for ``family``, with any given value overriding."""
    if family in PROJECTION_HEADS:  # ColPali family (colpali-engine configs)
        base = LoraSettings(r=32, alpha=32, dropout=0.1, target_modules=target_regex(family), learning_rate=5e-5)
    else:  # DSE recipe (also used for GME)
        base = LoraSettings(r=8, alpha=64, dropout=0.1, target_modules=target_regex(family), learning_rate=1e-4)
    settings = LoraSettings(
        r=base.r if r is None else int(r),
        alpha=base.alpha if alpha is None else float(alpha),
        dropout=base.dropout if dropout is None else float(dropout),
        target_modules=target_modules or base.target_modules,
        learning_rate=base.learning_rate,
    )
    if settings.r < 1:
        raise ValueError(f"LoRA rank must be at least 1, got {settings.r}")
    if not 0.0 <= settings.dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {settings.dropout}")
    return settings


def attach_lora(model: torch.nn.Module, settings: LoraSettings) -> Any:
    """Inject LoRA layers into ``model`` in place; returns the ``peft.PeftModel`` wrapper.

    Only the LoRA weights are trainable. ``model`` itself keeps working (its target
    modules now hold the LoRA layers), so an encoder built around it encodes with the
    adapter applied. Raises ``ValueError`` when the targets match no module.
    """
    from peft import get_peft_model

    if getattr(model, "_hf_peft_config_loaded", False) or hasattr(model, "peft_config"):
        raise ValueError(
            "the model already carries a PEFT adapter; merge it first (dse train merge) and train on the merged model"
        )
    try:
        peft_model = get_peft_model(cast(Any, model), settings.to_peft())  # any nn.Module, not only PreTrainedModel
    except ValueError as exc:
        raise ValueError(f"LoRA targets {settings.target_modules!r} match no module of the model: {exc}") from exc
    n_train = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in peft_model.parameters())
    logger.info(
        "LoRA r=%d alpha=%g dropout=%g: %d trainable of %d parameters (%.3f%%)",
        settings.r,
        settings.alpha,
        settings.dropout,
        n_train,
        n_all,
        100.0 * n_train / max(n_all, 1),
    )
    return peft_model


def trainable_state(peft_model: Any) -> dict[str, torch.Tensor]:
    """The adapter's weights as peft saves them (``adapter_model.safetensors`` keys)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(peft_model)


def load_trainable_state(peft_model: Any, adapter_dir: str | Path) -> None:
    """Load an adapter directory's weights into ``peft_model`` (same config), in place."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(peft_model, state)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise ValueError(
            f"{adapter_dir}: adapter weights do not fit the model ({len(unexpected)} unexpected keys, "
            f"e.g. {unexpected[0]})"
        )


def save_adapter(peft_model: Any, out_dir: str | Path, *, base_model: str, extra: dict[str, Any] | None = None) -> Path:
    """Save the adapter (``adapter_config.json`` + ``adapter_model.safetensors``) to ``out_dir``.

    ``base_model_name_or_path`` is set to ``base_model`` (the hub id or absolute local path
    the user trained on), so ``Encoder.load(out_dir)`` and ``Encoder.load(base, adapter=out_dir)``
    both work. ``extra`` is written to ``dse_adapter.json`` (training provenance).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(out), safe_serialization=True)
    cfg_path = out / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_model
    atomic_write_text(cfg_path, json.dumps(cfg, indent=2, sort_keys=True))
    if extra is not None:
        (out / "dse_adapter.json").write_text(
            json.dumps(extra, indent=2, sort_keys=True, default=str), encoding="utf-8"
        )
    return out
