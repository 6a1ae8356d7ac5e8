"""Device, dtype and attention-kernel choice: one ``device`` setting drives everything.

Rules (:func:`resolve_runtime`):

* ``device="auto"`` picks CUDA, then Apple MPS, then CPU; an explicit ``"cuda"``,
  ``"cuda:1"``, ``"mps"`` or ``"cpu"`` is used as given (error if unavailable).
* dtype when not given: bfloat16 on CUDA (float16 on GPUs without bf16), float32 on
  MPS and CPU.
* attention: on CUDA ``flash_attention_2`` when the ``flash_attn`` package is
  installed and the dtype is 16-bit, else ``sdpa``; elsewhere ``eager`` (with
  transformers 5.x, ``sdpa`` on CPU returns NaN for fully left-padded rows, which
  DSE and ColQwen batches contain).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any

import torch

from dse.encoders.errors import EncoderError

logger = logging.getLogger(__name__)

_DTYPE_NAMES: dict[str, torch.dtype] = {
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs."""

    device: torch.device
    dtype: torch.dtype
    attn_implementation: str

    @property
    def dtype_name(self) -> str:
        return str(self.dtype).removeprefix("torch.")


def pick_device(device: str = "auto") -> torch.device:
    """Resolve ``"auto"`` / ``"cuda[:i]"`` / ``"mps"`` / ``"cpu"`` to an available ``torch.device``."""
    name = (device or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise EncoderError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise EncoderError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise EncoderError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise EncoderError(f"device {device!r} requested but Apple MPS is not available on this machine")
    elif dev.type != "cpu":
        raise EncoderError(f"unsupported device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    return dev


def parse_dtype(dtype: Any, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` -> the device default; a name or ``torch.dtype`` -> that dtype."""
    if dtype is None or (isinstance(dtype, str) and dtype.strip().lower() == "auto"):
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.bfloat16, torch.float16, torch.float32):
            raise EncoderError(f"unsupported dtype {dtype}; use bfloat16, float16 or float32")
        return dtype
    if isinstance(dtype, str) and dtype.strip().lower() in _DTYPE_NAMES:
        return _DTYPE_NAMES[dtype.strip().lower()]
    raise EncoderError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")


def flash_attention_available() -> bool:
    """True when the ``flash_attn`` package is importable."""
    return importlib.util.find_spec("flash_attn") is not None


def resolve_runtime(device: str = "auto", dtype: Any = None) -> Runtime:
    """Device, dtype and attention implementation for one encoder (rules in the module doc)."""
    dev = pick_device(device)
    dt = parse_dtype(dtype, dev)
    if dev.type == "cuda":
        attn = "flash_attention_2" if dt != torch.float32 and flash_attention_available() else "sdpa"
    else:
        attn = "eager"
    runtime = Runtime(device=dev, dtype=dt, attn_implementation=attn)
    logger.info("encoder runtime: device=%s dtype=%s attention=%s", dev, runtime.dtype_name, attn)
    return runtime


def is_out_of_memory(exc: BaseException) -> bool:
    """True for a CUDA (or MPS) out-of-memory error."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_cached_memory(device: torch.device) -> None:
    """Return cached allocator blocks after an out-of-memory error."""
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
