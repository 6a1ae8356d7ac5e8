"""Merge a LoRA adapter into its base model: a full model directory ``Encoder.load`` loads.

:func:`merge_adapter` loads the base with the adapter through the encoder loader (the
same code path as inference, so published adapters with old checkpoint keys work too),
folds every LoRA layer into its base weights (``W + B @ A * scale``, peft's own
``merge``), removes the LoRA modules, and writes ``save_pretrained`` weights (safetensors)
plus the base snapshot's processor/tokenizer files and family marker files. The merged
directory embeds like base + adapter (within float rounding).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: Files of the base snapshot that ``save_pretrained`` of the model writes itself (not copied).
_MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
)
_MODEL_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def fold_lora(model: torch.nn.Module) -> int:
    """Merge every peft LoRA layer of ``model`` into its base layer and unwrap it, in place.

    Returns the number of merged layers. Works for adapters attached with
    ``peft.get_peft_model`` and with transformers' ``load_adapter`` alike.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in targets:
        module.merge(safe_merge=True)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, module.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, False)
    return len(targets)


def _tied_keys(model: Any) -> set[str]:
    """Parameter names that are tied to another parameter (absent from state dicts on purpose)."""
    tied = getattr(model, "_tied_weights_keys", None) or {}
    return set(tied) if not isinstance(tied, dict) else set(tied) | set(tied.values())


def _copy_support_files(src: Path, dst: Path) -> None:
    for p in src.iterdir():
        if not p.is_file() or p.name in _MODEL_FILES or p.suffix in _MODEL_SUFFIXES or p.name.startswith("."):
            continue
        if not (dst / p.name).exists():
            shutil.copy2(p, dst / p.name)


def merge_adapter(
    adapter: str | Path, out_dir: str | Path, *, base: str | None = None, dtype: str | None = None, device: str = "cpu"
) -> Path:
    """Write ``base + adapter`` merged into ``out_dir``; returns it.

    ``adapter``: a PEFT adapter directory (e.g. a ``dse train`` output); ``base``: the base
    model (default: the adapter's ``base_model_name_or_path``). ``dtype``: the saved
    weights' dtype (default: the base checkpoint's). Merging runs in float32 on ``device``.
    """
    from dse.encoders import Encoder, EncoderError
    from dse.encoders.hf import as_hf_encoder, load_pretrained

    adapter = Path(adapter).expanduser()
    if not (adapter / "adapter_config.json").is_file():
        raise EncoderError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    out = Path(out_dir).expanduser()
    if out.exists() and any(out.iterdir()):
        raise EncoderError(f"{out} exists and is not empty; choose a new --out directory")
    if base is None:
        loaded = Encoder.load(str(adapter), device=device, dtype="float32")
    else:
        loaded = Encoder.load(base, adapter=str(adapter), device=device, dtype="float32")
    encoder = as_hf_encoder(loaded)
    n = fold_lora(encoder.model)
    if n == 0:
        raise EncoderError(f"{adapter}: the adapter holds no LoRA layer to merge")
    # Save through a freshly loaded base model: the adapter loading left key conversions on the
    # model (peft prefixes) that save_pretrained would apply; the fresh model keeps only the base's own.
    merged_state = encoder.model.state_dict()
    model: Any = load_pretrained(type(encoder.model), dataclasses.replace(encoder.source, adapters=[]), encoder.runtime)
    missing, unexpected = model.load_state_dict(merged_state, strict=False)
    missing = [k for k in missing if k not in _tied_keys(model)]
    if missing or unexpected:
        raise EncoderError(
            f"merged weights do not fit {type(model).__name__}: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    del merged_state
    encoder.model = None
    base_dir = encoder.source.path
    saved = (
        encoder.source.config.get("dtype")
        or encoder.source.config.get("torch_dtype")
        or encoder.source.config.get("text_config", {}).get("dtype")
    )
    target = dtype or saved or "float32"
    from dse.encoders.devices import parse_dtype

    model.to(parse_dtype(target, torch.device("cpu")))
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".merging"
    model.save_pretrained(str(tmp), safe_serialization=True)
    architectures = encoder.source.config.get("architectures")
    if architectures:  # keep the published names (family detection), e.g. ColPali for our TiedColPali
        cfg = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        cfg["architectures"] = architectures
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for p in tmp.iterdir():
        p.replace(out / p.name)
    tmp.rmdir()
    _copy_support_files(encoder.source.processor_path or base_dir, out)
    if encoder.source.processor_path and encoder.source.processor_path != base_dir:
        _copy_support_files(base_dir, out)
    (out / "dse_merge.json").write_text(
        json.dumps(
            {
                "base_model": encoder.source.model,
                "adapter": str(adapter.resolve()),
                "family": encoder.family,
                "merged_layers": n,
                "dtype": str(target),
            },
            indent=2,
            sort_keys=True,
        ),
        encoding="utf-8",
    )
    logger.info("merged %d LoRA layers of %s into %s", n, adapter, out)
    return out
