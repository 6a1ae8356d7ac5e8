"""Retrieval metrics with trec_eval semantics, computed by pytrec_eval.

Every figure comes from ``pytrec_eval.RelevanceEvaluator`` (the trec_eval library that
mteb and the ViDoRe leaderboard use), never from a hand-written formula:

* ``ndcg_cut_{k}``: nDCG@k with graded gains (trec_eval ``ndcg_cut.k``);
* ``recall_{k}``: Recall@k (``recall.k``; relevant = judgement >= 1);
* ``recip_rank_10``: MRR@10 = trec_eval's ``recip_rank`` on the run cut to each query's
  top 10 in trec_eval's own order (what ``trec_eval -M 10`` does).

trec_eval semantics throughout: documents are ranked by score, ties broken by document
id in *descending* order (the run's rank column is ignored); a query judged in the qrels
but absent from the run is left out of the averages (trec_eval without ``-c``), and so
is a run query with no judgements. Means are arithmetic means over the evaluated queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from dse.extras import require

#: the cutoffs reported by default (``dse eval --k``)
DEFAULT_K_VALUES: tuple[int, ...] = (1, 5, 10, 100)
#: cutoff of the reported reciprocal rank (MRR@10)
MRR_CUTOFF = 10

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def metric_names(k_values: Sequence[int] = DEFAULT_K_VALUES) -> list[str]:
    """Metric keys in display order: nDCG@k for every k > 1 (nDCG@1 only when it is the sole
    cutoff), Recall@k for every k, then MRR@10."""
    ks = sorted(set(int(k) for k in k_values))
    ndcg = [k for k in ks if k > 1] or ks
    return [f"ndcg_cut_{k}" for k in ndcg] + [f"recall_{k}" for k in ks] + [f"recip_rank_{MRR_CUTOFF}"]


def label(name: str) -> str:
    """Display label of a metric key: ``ndcg_cut_5`` -> ``nDCG@5``, ``recip_rank_10`` -> ``MRR@10``."""
    for prefix, text in (
        ("ndcg_cut_", "nDCG@"),
        ("recall_", "Recall@"),
        ("recip_rank_", "MRR@"),
        ("P_", "P@"),
        ("map_cut_", "MAP@"),
    ):
        if name.startswith(prefix):
            return text + name[len(prefix) :]
    return {"recip_rank": "MRR", "map": "MAP"}.get(name, name)


def trec_order(scores: Mapping[str, float]) -> list[str]:
    """Document ids in trec_eval's order: score descending, then id descending (byte order)."""
    return sorted(scores, key=lambda d: (float(scores[d]), d), reverse=True)


def truncate_run(run: Mapping[str, Mapping[str, float]], depth: int) -> Run:
    """Each query's top ``depth`` documents in trec_eval order."""
    out: Run = {}
    for qid, scores in run.items():
        out[qid] = {d: float(scores[d]) for d in trec_order(scores)[:depth]}
    return out


def _clean_qrels(qrels: Qrels) -> dict[str, dict[str, int]]:
    return {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}


def _clean_run(run: Mapping[str, Mapping[str, float]]) -> Run:
    return {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if docs}


def compute_metrics(
    run: Mapping[str, Mapping[str, float]],
    qrels: Qrels,
    k_values: Iterable[int] = DEFAULT_K_VALUES,
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Mean and per-query metrics of ``run`` against ``qrels`` (see the module docstring).

    ``run``: query id -> {doc id: score}; ``qrels``: query id -> {doc id: relevance}.
    Returns ``(means, per_query)`` with keys from :func:`metric_names`; ``per_query`` maps
    each evaluated query id (judged and present in the run) to its values. Both are empty
    when no query can be evaluated. Needs the ``eval`` extra (:class:`dse.extras.MissingExtraError`).
    """
    require("eval")
    import pytrec_eval

    ks = sorted(set(int(k) for k in k_values))
    if not ks or ks[0] < 1:
        raise ValueError(f"cutoffs must be positive integers, got {list(k_values)}")
    names = metric_names(ks)
    qrels_c = _clean_qrels(qrels)
    run_c = {q: d for q, d in _clean_run(run).items() if q in qrels_c}
    if not run_c:
        return {}, {}
    ndcg_ks = [int(n.rsplit("_", 1)[1]) for n in names if n.startswith("ndcg_cut_")]
    measures = {f"ndcg_cut.{','.join(map(str, ndcg_ks))}", f"recall.{','.join(map(str, ks))}"}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels_c, measures)
    per_query_raw = evaluator.evaluate(run_c)
    rr = pytrec_eval.RelevanceEvaluator(qrels_c, {"recip_rank"}).evaluate(truncate_run(run_c, MRR_CUTOFF))
    per_query: dict[str, dict[str, float]] = {}
    for qid in sorted(per_query_raw):
        values = per_query_raw[qid]
        row = {name: float(values[name]) for name in names if name in values}
        row[f"recip_rank_{MRR_CUTOFF}"] = float(rr[qid]["recip_rank"])
        per_query[qid] = row
    means = {name: sum(r[name] for r in per_query.values()) / len(per_query) for name in names}
    return means, per_query
