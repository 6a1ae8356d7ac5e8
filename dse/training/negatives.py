"""Hard-negative mining: the current model's top-ranked non-relevant pages per training query.

:func:`mine_negatives` indexes the dataset's corpus with the model (through the
evaluation runner's collection, :func:`dse.eval.runner.evaluate`, so the pages are
encoded and searched exactly as at inference), retrieves ``k + (number of judged pages)``
pages for each training query, drops every judged page (positives and explicit score-0
rows alike, which training uses anyway) and keeps the ``k`` best. The result is the
negatives JSONL that ``dse train --negatives FILE`` reads:

    {"query_id": "q1", "negatives": ["p7", "p3"], "scores": [0.81, 0.77]}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from dse.extras import require
from dse.training.data import write_negatives

logger = logging.getLogger(__name__)


def mine_negatives(
    model: str | Any,
    data: str | Path,
    out: str | Path,
    *,
    k: int = 5,
    split: str = "train",
    adapter: str | None = None,
    family: str | None = None,
    device: str = "auto",
    batch_size: int = 4,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    **encoder_options: Any,
) -> dict[str, list[tuple[str, float]]]:
    """Mine ``k`` hard negatives per query of ``qrels/{split}.tsv`` of a local-format dataset.

    ``model``: hub id, local directory or a loaded encoder; ``adapter``: a LoRA adapter to
    apply (e.g. a first training round's output). ``cache_dir``: keep the encoded corpus
    (the evaluation cache, reused by a later ``dse eval`` of the same model). Writes
    ``out`` (JSONL) and returns ``{query id: [(page id, score), ...]}``, best first.
    """
    require("train")
    from dse.eval.data import load_local_dataset
    from dse.eval.runner import evaluate
    from dse.training.data import TrainingDataError, is_local_dataset

    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not is_local_dataset(data):
        raise TrainingDataError(
            f"{data}: mining needs a dataset in the local format (corpus.jsonl, queries.jsonl, qrels/{split}.tsv)"
        )
    ds = load_local_dataset(data, split)
    most_judged = max((len(j) for j in ds.qrels.values()), default=0)
    result = evaluate(
        model,
        ds,
        k_values=(1,),
        cache_dir=cache_dir,
        device=device,
        family=family,
        adapter=adapter,
        batch_size=batch_size,
        depth=k + most_judged,
        progress=progress,
        **encoder_options,
    )
    mined: dict[str, list[tuple[str, float]]] = {}
    for q in ds.queries:
        judged = ds.qrels.get(q.id, {})
        ranked = sorted(result.run.get(q.id, {}).items(), key=lambda kv: (-kv[1], kv[0]))
        mined[q.id] = [(cid, score) for cid, score in ranked if cid not in judged][:k]
    write_negatives(out, mined)
    n = sum(len(v) for v in mined.values())
    logger.info("mined %d negatives for %d queries -> %s", n, len(mined), out)
    return mined
