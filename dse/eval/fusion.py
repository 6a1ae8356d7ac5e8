"""Fusion of two or more retrieval runs (e.g. a visual ranking with the OCR + BM25 baseline).

A run is ``{query id: {corpus id: score}}`` (TREC run semantics: a higher score ranks
higher). Two methods:

* ``"rrf"`` - reciprocal rank fusion (Cormack et al., 2009): each run contributes
  ``1 / (rrf_k + rank)`` for every page in its top ``depth`` (ranks are 1-based); scores
  themselves are ignored, so runs on different scales fuse without calibration. The sum is
  :func:`dse.collection.fusion.reciprocal_rank_fusion`, the one used by collection search.
* ``"linear"`` - a normalised linear combination of exactly two runs: per query, each
  run's top-``depth`` scores are min-max normalised to ``[0, 1]`` and combined as
  ``weight * runs[0] + (1 - weight) * runs[1]``; a page missing from a run's top
  ``depth`` counts as 0 there. ``weight=1`` reproduces ``runs[0]``'s order, ``weight=0``
  ``runs[1]``'s.

Within each run, pages of equal score are ordered by corpus id, so fusion is
deterministic whatever the dict order of the input. Fused ties are broken as documented
in :func:`fuse_runs`, and the emitted scores are made strictly decreasing along the fused
order *in single precision* (a score that would not be is lowered to the next float32 below
the previous one), so any evaluator sees exactly that order: trec_eval (pytrec_eval) compares
scores in single precision and breaks ties by document id, so two fused scores ``1e-9`` apart
are a tie to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dse.collection.fusion import reciprocal_rank_fusion

Run = dict[str, dict[str, float]]

FUSION_METHODS = ("rrf", "linear")


def strictly_decreasing(scores: Sequence[float]) -> list[float]:
    """``scores`` (non-increasing) made strictly decreasing in float32: a score whose float32 is
    not below the previous one's becomes the next float32 below it; the others are unchanged."""
    out: list[float] = []
    prev: np.float32 | None = None
    for score in scores:
        value = float(score)
        single = np.float32(value)
        if prev is not None and not single < prev:
            single = np.nextafter(prev, np.float32(-np.inf))
            value = float(single)
        out.append(value)
        prev = single
    return out


def _ranked(scores: dict[str, float], depth: int) -> list[tuple[str, float]]:
    """The top ``depth`` ``(corpus id, score)`` pairs, best first; ties by corpus id."""
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:depth]


def _min_max(ranking: list[tuple[str, float]]) -> dict[str, float]:
    """Min-max normalised scores in ``[0, 1]``; a run whose scores are all equal carries no
    preference and maps every page to 0."""
    if not ranking:
        return {}
    hi, lo = ranking[0][1], ranking[-1][1]
    if hi == lo:
        return {doc: 0.0 for doc, _ in ranking}
    return {doc: (score - lo) / (hi - lo) for doc, score in ranking}


def _check(runs: Sequence[Run], method: str, rrf_k: float, weight: float, depth: int) -> None:
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; use one of: {', '.join(FUSION_METHODS)}")
    if not runs:
        raise ValueError("fusion needs at least one run")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"fusion depth must be a positive integer, got {depth!r}")
    if method == "rrf":
        if not isinstance(rrf_k, (int, float)) or isinstance(rrf_k, bool) or not math.isfinite(rrf_k) or rrf_k < 0:
            raise ValueError(f"rrf_k must be a finite number >= 0, got {rrf_k!r}")
    else:
        if len(runs) != 2:
            raise ValueError(f"linear fusion combines exactly two runs, got {len(runs)}")
        if (
            not isinstance(weight, (int, float))
            or isinstance(weight, bool)
            or not math.isfinite(weight)
            or not 0.0 <= weight <= 1.0
        ):
            raise ValueError(f"fusion weight must be a number between 0 and 1, got {weight!r}")


def fuse_runs(
    runs: Sequence[Run], *, method: str = "rrf", rrf_k: float = 60, weight: float = 0.5, depth: int = 100
) -> Run:
    """Fuse ``runs`` per query into one run of at most ``depth`` pages per query.

    ``method="rrf"``: fused score = sum over runs of ``1 / (rrf_k + rank)`` (any number of
    runs; ``weight`` is ignored; ties keep the order of first appearance, i.e. the earlier
    run's order). ``method="linear"``: fused score =
    ``weight * norm(runs[0]) + (1 - weight) * norm(runs[1])`` with per-query min-max
    normalisation; ties are broken by the order of the more heavily weighted run
    (``runs[0]`` when ``weight >= 0.5``), then the other run, then corpus id.

    Every query of any run is in the result. Raises ValueError for an unknown method, a
    weight outside ``[0, 1]``, a negative ``rrf_k``, a non-positive ``depth`` or (linear)
    a number of runs other than two.
    """
    _check(runs, method, rrf_k, weight, depth)
    query_ids: list[str] = []
    seen: set[str] = set()
    for run in runs:
        for qid in run:
            if qid not in seen:
                seen.add(qid)
                query_ids.append(qid)
    fused: Run = {}
    for qid in query_ids:
        rankings = [_ranked(run.get(qid, {}), depth) for run in runs]
        if method == "rrf":
            pairs = reciprocal_rank_fusion(rankings, k=float(rrf_k))
        else:
            pairs = _linear(rankings[0], rankings[1], float(weight))
        top = pairs[:depth]
        fused[qid] = dict(zip([doc for doc, _ in top], strictly_decreasing([score for _, score in top])))
    return fused


def _linear(first: list[tuple[str, float]], second: list[tuple[str, float]], weight: float) -> list[tuple[str, float]]:
    norm_a, norm_b = _min_max(first), _min_max(second)
    rank_a = {doc: i for i, (doc, _) in enumerate(first)}
    rank_b = {doc: i for i, (doc, _) in enumerate(second)}
    primary, secondary = (rank_a, rank_b) if weight >= 0.5 else (rank_b, rank_a)
    absent = len(first) + len(second) + 1
    docs = set(norm_a) | set(norm_b)
    scores = {doc: weight * norm_a.get(doc, 0.0) + (1.0 - weight) * norm_b.get(doc, 0.0) for doc in docs}
    order = sorted(docs, key=lambda d: (-scores[d], primary.get(d, absent), secondary.get(d, absent), d))
    return [(doc, scores[doc]) for doc in order]
