"""Retrieval evaluation: local/hub datasets, runs, trec_eval metrics, significance tests.

``from dse.eval import load_local_dataset, evaluate`` — names are imported lazily so that
``import dse.eval`` stays cheap (no torch until a model is used).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from dse.eval.compare import compare_runs
    from dse.eval.data import (CorpusFailure, CorpusItem, DatasetFormatError, EvalDataset, Query, iter_corpus_images,
                               load_local_dataset, load_qrels, write_local_dataset)
    from dse.eval.metrics import DEFAULT_K_VALUES, compute_metrics
    from dse.eval.runner import EvalResult, Run, evaluate
    from dse.eval.runs import read_metrics, read_run, write_metrics, write_run

_LAZY = {
    "CorpusFailure": "dse.eval.data",
    "CorpusItem": "dse.eval.data",
    "DatasetFormatError": "dse.eval.data",
    "EvalDataset": "dse.eval.data",
    "Query": "dse.eval.data",
    "iter_corpus_images": "dse.eval.data",
    "load_local_dataset": "dse.eval.data",
    "load_qrels": "dse.eval.data",
    "write_local_dataset": "dse.eval.data",
    "DEFAULT_K_VALUES": "dse.eval.metrics",
    "compute_metrics": "dse.eval.metrics",
    "EvalResult": "dse.eval.runner",
    "Run": "dse.eval.runner",
    "evaluate": "dse.eval.runner",
    "read_run": "dse.eval.runs",
    "write_run": "dse.eval.runs",
    "read_metrics": "dse.eval.runs",
    "write_metrics": "dse.eval.runs",
    "compare_runs": "dse.eval.compare",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dse.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
