"""Fine-tuning retrievers on your own pages: LoRA, contrastive losses, checkpoints, hard negatives.

``from dse.training import TrainConfig, train, merge_adapter, mine_negatives`` — imported
lazily so ``import dse.training`` stays cheap. Modules: :mod:`~dse.training.data` (examples
and batch plan), :mod:`~dse.training.losses`, :mod:`~dse.training.lora`,
:mod:`~dse.training.trainer` (the loop), :mod:`~dse.training.checkpoint`,
:mod:`~dse.training.merge`, :mod:`~dse.training.negatives`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from dse.training.data import TrainingData, TrainingDataError, load_training_data
    from dse.training.merge import merge_adapter
    from dse.training.negatives import mine_negatives
    from dse.training.trainer import TrainConfig, TrainingError, TrainResult, read_log, train

_LAZY = {
    "TrainingData": "dse.training.data",
    "TrainingDataError": "dse.training.data",
    "load_training_data": "dse.training.data",
    "merge_adapter": "dse.training.merge",
    "mine_negatives": "dse.training.negatives",
    "TrainConfig": "dse.training.trainer",
    "TrainResult": "dse.training.trainer",
    "TrainingError": "dse.training.trainer",
    "read_log": "dse.training.trainer",
    "train": "dse.training.trainer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dse.training' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
