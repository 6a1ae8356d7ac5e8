"""The one ``device`` setting of the indexes: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from indexes.errors import IndexInputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def resolve_torch_device(device: str = "auto") -> torch.device:
    """Resolve ``device`` for torch work (MaxSim scoring).

    ``"auto"`` picks ``cuda`` when ``torch.cuda.is_available()``, else ``cpu``. An explicit
    CUDA device without CUDA raises :class:`IndexInputError`.
    """
    import torch  # here, not at module level: a CPU FAISS index never needs it

    if not isinstance(device, str):
        raise IndexInputError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {device!r}")
    name = device.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise IndexInputError(f"device {device!r} was asked for but CUDA is not available; use 'cpu' or 'auto'")
        try:
            return torch.device(name)
        except RuntimeError as exc:
            raise IndexInputError(f"invalid device {device!r}: {exc}") from exc
    raise IndexInputError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def faiss_gpu_count() -> int:
    """Number of GPUs FAISS can use (0 with faiss-cpu, or without FAISS)."""
    try:
        import faiss
    except ImportError:
        return 0

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def resolve_faiss_device(device: str = "auto") -> str:
    """Resolve ``device`` for FAISS: ``"cuda"`` only when torch sees CUDA *and* FAISS has GPUs.

    An explicit ``"cuda"`` with a CPU-only FAISS build logs a warning and returns ``"cpu"``.
    ``"cpu"``, and ``"auto"`` with a CPU-only FAISS build, are answered without importing torch.
    """
    name = device.strip().lower() if isinstance(device, str) else None
    if name == "cpu" or (name == "auto" and faiss_gpu_count() == 0):
        return "cpu"
    tdev = resolve_torch_device(device)
    if tdev.type != "cuda":
        return "cpu"
    if faiss_gpu_count() > 0:
        return "cuda"
    if device.strip().lower() != "auto":
        logger.warning("device %r asked for, but this FAISS build has no GPU support; using the CPU", device)
    return "cpu"
