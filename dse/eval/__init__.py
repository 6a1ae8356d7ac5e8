"""Retrieval evaluation: local/hub datasets, runs, trec_eval metrics, significance tests.

``from dse.eval import load_local_dataset, evaluate`` — names are imported lazily so that
``import dse.eval`` stays cheap (no torch until a model is used).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach_stub(__name__, __file__)
