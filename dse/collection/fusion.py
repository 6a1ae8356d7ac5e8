"""Reciprocal rank fusion of ranked lists: the one implementation, used by
:meth:`dse.collection.Collection.search` (``fusion="rrf"``: text-only and image-only rankings)
and by :func:`dse.eval.fusion.fuse_runs` (runs of an evaluation)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def reciprocal_rank_fusion(rankings: Sequence[Sequence[tuple[K, float]]], *, k: float = 60.0) -> list[tuple[K, float]]:
    """Reciprocal rank fusion (Cormack et al., 2009): ``score(d) = sum_r 1 / (k + rank_r(d))``.

    ``rankings`` are ``(id, score)`` lists, best first (the scores are ignored); ranks are
    1-based. Returns ``(id, fused score)`` best first; ties keep the order of first appearance.
    """
    scores: dict[K, float] = {}
    for ranking in rankings:
        for rank, (doc, _) in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])
