"""Fine-tuning retrievers on your own pages: LoRA, contrastive losses, checkpoints, hard negatives.

``from dse.training import TrainConfig, train, merge_adapter, mine_negatives`` — imported
lazily so ``import dse.training`` stays cheap. Modules: :mod:`~dse.training.data` (examples
and batch plan), :mod:`~dse.training.losses`, :mod:`~dse.training.lora`,
:mod:`~dse.training.trainer` (the loop), :mod:`~dse.training.checkpoint`,
:mod:`~dse.training.merge`, :mod:`~dse.training.negatives`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
