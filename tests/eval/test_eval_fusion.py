"""Run fusion (RRF and normalised linear combination) on hand-made runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dse.eval.fusion import fuse_runs

# visual run and BM25 run for two queries; hand-checkable
VISUAL = {"q1": {"a": 0.9, "b": 0.8, "c": 0.5, "d": 0.1}, "q2": {"x": 0.7, "y": 0.6}}
BM25 = {"q1": {"c": 12.0, "a": 6.0, "e": 3.0, "b": 0.0}, "q3": {"z": 1.0}}


def order(run: dict[str, float]) -> list[str]:
    return [d for d, _ in sorted(run.items(), key=lambda kv: -kv[1])]


def test_rrf_hand_checked() -> None:
    fused = fuse_runs([VISUAL, BM25], method="rrf", rrf_k=60)
    assert set(fused) == {"q1", "q2", "q3"}
    q1 = fused["q1"]
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62 + 1/64, e: 1/63, d: 1/64
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62 + 1 / 64, "e": 1 / 63, "d": 1 / 64}
    assert order(q1) == ["a", "c", "b", "e", "d"]
    for doc, value in expected.items():
        assert q1[doc] == pytest.approx(value, abs=1e-8)
    assert order(fused["q2"]) == ["x", "y"] and order(fused["q3"]) == ["z"]
    # small k: rank differences dominate; k=0 gives 1/rank
    k0 = fuse_runs([VISUAL, BM25], method="rrf", rrf_k=0)["q1"]
    assert k0["a"] == pytest.approx(1 + 1 / 2, abs=1e-8) and k0["c"] == pytest.approx(1 / 3 + 1, abs=1e-8)
    # depth limits both the inputs and the output
    shallow = fuse_runs([VISUAL, BM25], method="rrf", depth=2)["q1"]
    assert order(shallow) == ["a", "c"]
    assert shallow["c"] == pytest.approx(1 / 61, abs=1e-8)  # c is rank 3 visually: beyond depth 2


def test_linear_hand_checked() -> None:
    fused = fuse_runs([VISUAL, BM25], method="linear", weight=0.5)
    q1 = fused["q1"]
    # visual min-max over (0.9, 0.8, 0.5, 0.1): a 1, b .875, c .5, d 0; bm25 over (12, 6, 3, 0): c 1, a .5, e .25, b 0
    expected = {"a": 0.75, "c": 0.75, "b": 0.4375, "e": 0.125, "d": 0.0}
    for doc, value in expected.items():
        assert q1[doc] == pytest.approx(value, abs=1e-7)
    # a and c tie at .75: the tie goes to the order of runs[0] (weight >= 0.5): a before c
    assert order(q1) == ["a", "c", "b", "e", "d"]
    tilted = fuse_runs([VISUAL, BM25], method="linear", weight=0.3)["q1"]
    # a: .3*1 + .7*.5 = .65; c: .3*.5 + .7*1 = .85; b: .3*.875 = .2625; e: .7*.25 = .175
    assert order(tilted) == ["c", "a", "b", "e", "d"]
    assert tilted["c"] == pytest.approx(0.85, abs=1e-7)
    # a query only one run has: the other contributes 0
    assert order(fused["q2"]) == ["x", "y"] and fused["q2"]["x"] == pytest.approx(0.5)


@pytest.mark.parametrize("weight, source", [(1.0, VISUAL), (0.0, BM25)])
def test_linear_extremes_reproduce_single_runs(weight: float, source: dict) -> None:
    fused = fuse_runs([VISUAL, BM25], method="linear", weight=weight)
    for qid, run in source.items():
        n = len(run)
        assert order(fused[qid])[:n] == order(run)
        # the pages that run did not retrieve come after all of its own pages
        assert set(order(fused[qid])[n:]).isdisjoint(run)


def test_rrf_single_run_keeps_order() -> None:
    fused = fuse_runs([BM25], method="rrf")
    assert order(fused["q1"]) == order(BM25["q1"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "borda"}, "unknown fusion method 'borda'"),
        ({"method": "linear", "weight": 1.5}, "between 0 and 1"),
        ({"method": "linear", "weight": -0.1}, "between 0 and 1"),
        ({"method": "linear", "weight": math.nan}, "between 0 and 1"),
        ({"method": "rrf", "rrf_k": -1}, "rrf_k must be"),
        ({"method": "rrf", "depth": 0}, "depth must be a positive integer"),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fuse_runs([VISUAL, BM25], **kwargs)


def test_bad_run_counts() -> None:
    with pytest.raises(ValueError, match="exactly two runs"):
        fuse_runs([VISUAL], method="linear")
    with pytest.raises(ValueError, match="at least one run"):
        fuse_runs([], method="rrf")


def test_rrf_of_runs_is_the_collection_rrf() -> None:
    """One RRF: fusing runs gives the collection search's fused order and scores (up to the
    float32 tie-breaking step of :func:`fuse_runs`)."""
    from dse.collection.fusion import reciprocal_rank_fusion

    fused = fuse_runs([VISUAL, BM25], method="rrf", rrf_k=60)["q1"]
    rankings = [sorted(run["q1"].items(), key=lambda kv: (-kv[1], kv[0])) for run in (VISUAL, BM25)]
    direct = reciprocal_rank_fusion(rankings, k=60)
    assert order(fused) == [doc for doc, _ in direct]
    for doc, score in direct:
        assert fused[doc] == pytest.approx(score, abs=1e-8)


@pytest.mark.parametrize("method", ["rrf", "linear"])
def test_trec_eval_sees_the_fused_order_of_tied_pages(method: str) -> None:
    """Two pages with equal fused scores keep the fused order in trec_eval, which compares scores
    in single precision and breaks ties by document id (descending): "a" must stay first."""
    from dse.eval.metrics import compute_metrics

    runs = [{"q": {"a": 0.9, "b": 0.5}}, {"q": {"b": 0.9, "a": 0.5}}]  # symmetric: a and b tie
    fused = fuse_runs(runs, method=method)["q"]
    assert order(fused) == ["a", "b"] and len({float(np.float32(v)) for v in fused.values()}) == 2
    means, _ = compute_metrics({"q": fused}, {"q": {"a": 1}}, (1, 5))
    assert means["ndcg_cut_5"] == 1.0 and means["recip_rank_10"] == 1.0
