"""Compare runs side by side with paired significance tests over queries.

For every metric, the first run is the baseline; each other run gets its mean, the
difference to the baseline and two paired two-sided tests over the per-query values
of the queries both runs were evaluated on:

* Student's paired t-test (``scipy.stats.ttest_rel``);
* a paired randomisation test (``scipy.stats.permutation_test`` with
  ``permutation_type="samples"``: the two runs' values are swapped per query at
  random; exact when ``2**n`` is at most ``n_resamples``), statistic = mean difference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dse.eval.metrics import DEFAULT_K_VALUES, compute_metrics, label, metric_names
from dse.eval.runs import RUN_FILE, RunFormatError, metrics_path_for, read_metrics, read_run

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PerQuery = dict[str, dict[str, float]]


@dataclass
class RunScores:
    """Per-query metric values of one run, as compared."""

    name: str
    per_query: PerQuery
    path: Path | None = None


@dataclass
class Comparison:
    """One (metric, run) cell of the comparison against the baseline (``runs[0]``)."""

    metric: str
    run: str
    mean: float
    delta: float | None = None  # mean(run) - mean(baseline) over the common queries
    p_ttest: float | None = None
    p_randomisation: float | None = None


@dataclass
class ComparisonTable:
    runs: list[str]
    metrics: list[str]
    n_queries: int
    cells: list[Comparison] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cell(self, metric: str, run: str) -> Comparison:
        return next(c for c in self.cells if c.metric == metric and c.run == run)

    def to_dict(self) -> dict[str, Any]:
        return {
            "runs": self.runs,
            "metrics": self.metrics,
            "n_queries": self.n_queries,
            "cells": [c.__dict__ for c in self.cells],
            "notes": self.notes,
        }


def paired_tests(
    baseline: Sequence[float] | npt.NDArray[np.float64],
    other: Sequence[float] | npt.NDArray[np.float64],
    *,
    n_resamples: int = 10000,
    seed: int = 0,
) -> tuple[float, float]:
    """Two-sided p-values (paired t-test, paired randomisation test) of ``other`` vs ``baseline``.

    Identical samples give 1.0 for both. The t-test's p-value is NaN when the differences are a
    non-zero constant (zero variance).
    """
    import numpy as np
    from scipy import stats

    a = np.asarray(baseline, dtype=np.float64)
    b = np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("paired tests need two equally long 1-D samples")
    if a.size < 2:
        return math.nan, math.nan
    diff = b - a
    if np.all(diff == 0):
        return 1.0, 1.0
    p_t = float(stats.ttest_rel(b, a).pvalue)

    def statistic(x: Any, y: Any, axis: int) -> Any:
        return np.mean(x - y, axis=axis)

    res = stats.permutation_test(
        (b, a),
        statistic,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        alternative="two-sided",
        random_state=seed,
    )
    return p_t, float(res.pvalue)


def compare_runs(
    runs: Sequence[RunScores], metrics: Sequence[str] | None = None, *, n_resamples: int = 10000, seed: int = 0
) -> ComparisonTable:
    """Compare ``runs`` (first = baseline) on ``metrics`` (default: every metric all runs have)."""
    import numpy as np

    if len(runs) < 2:
        raise ValueError("give at least two runs to compare")
    common = set(runs[0].per_query)
    for r in runs[1:]:
        common &= set(r.per_query)
    queries = sorted(common)
    if not queries:
        raise ValueError("the runs have no evaluated query in common (different datasets?)")
    if metrics is None:
        available = set.intersection(*(set(v) for r in runs for v in r.per_query.values()))
        metrics = [m for m in metric_names(DEFAULT_K_VALUES) if m in available] or sorted(available)
    table = ComparisonTable(runs=[r.name for r in runs], metrics=list(metrics), n_queries=len(queries))
    for r in runs:
        if len(r.per_query) != len(queries):
            table.notes.append(f"{r.name}: {len(r.per_query)} evaluated queries, {len(queries)} in common compared")
    for metric in metrics:
        values = []
        for r in runs:
            try:
                values.append(np.asarray([r.per_query[q][metric] for q in queries], dtype=np.float64))
            except KeyError:
                raise ValueError(f"run {r.name!r} has no per-query values for metric {metric!r}") from None
        base = values[0]
        table.cells.append(Comparison(metric, runs[0].name, float(base.mean())))
        for r, v in zip(runs[1:], values[1:]):
            p_t, p_r = paired_tests(base, v, n_resamples=n_resamples, seed=seed)
            table.cells.append(Comparison(metric, r.name, float(v.mean()), float(v.mean() - base.mean()), p_t, p_r))
    return table


def _fmt_p(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.4f}" if p >= 1e-4 else f"{p:.1e}"


def format_comparison(table: ComparisonTable, *, alpha: float = 0.05) -> str:
    """A markdown table: per metric, each run's mean, and for every non-baseline run the
    difference to the baseline and the two p-values (``*`` marks p < ``alpha`` in both tests)."""
    base, others = table.runs[0], table.runs[1:]
    header = ["metric", f"{base} (baseline)"]
    for name in others:
        header += [name, "Δ", "p (t-test)", "p (randomisation)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for metric in table.metrics:
        row = [label(metric), f"{table.cell(metric, base).mean:.4f}"]
        for name in others:
            c = table.cell(metric, name)
            sig = (
                c.p_ttest is not None
                and c.p_randomisation is not None
                and c.p_ttest < alpha
                and c.p_randomisation < alpha
            )
            row += [
                f"{c.mean:.4f}{'*' if sig else ''}",
                f"{c.delta:+.4f}",
                _fmt_p(c.p_ttest),
                _fmt_p(c.p_randomisation),
            ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    lines.append(f"{table.n_queries} queries, paired two-sided tests against {base}; * = p < {alpha} in both tests.")
    lines += table.notes
    return "\n".join(lines)


# --------------------------------------------------------------------------- loading runs


def resolve_run_path(path: str | Path) -> Path:
    """A run file from a path that is a run file, a directory holding ``run.trec``, or a metrics JSON."""
    p = Path(path)
    if p.is_dir():
        p = p / RUN_FILE
    elif p.suffix == ".json" and p.is_file():
        doc = read_metrics(p)
        run = doc.get("run")
        if not run:
            raise RunFormatError(f"{p}: names no run file")
        p = (p.parent / run) if not Path(run).is_absolute() else Path(run)
    return p


def load_run_scores(
    path: str | Path,
    *,
    qrels: Mapping[str, Mapping[str, int]] | None = None,
    metrics: Sequence[str] | None = None,
    name: str | None = None,
) -> RunScores:
    """Per-query values of a run: recomputed from the run file with ``qrels`` when given (judged
    queries missing from the run count 0), else read from the metrics JSON next to the run
    (recomputed with the qrels stored there when it lacks a requested metric)."""
    run_path = resolve_run_path(path)
    display = name or (run_path.parent.name if run_path.name == RUN_FILE else run_path.stem)
    k_values = _k_values_for(metrics)
    if qrels is not None:
        return RunScores(display, _recompute(read_run(run_path), qrels, k_values), run_path)
    mpath = metrics_path_for(run_path)
    if not mpath.is_file():
        raise RunFormatError(
            f"no qrels for {run_path}: its metrics file {mpath} is missing; pass --qrels FILE or --data-dir DIR"
        )
    doc = read_metrics(mpath)
    per_query: PerQuery = doc["per_query"]
    have = set.intersection(*(set(v) for v in per_query.values())) if per_query else set()
    if metrics is None or set(metrics) <= have:
        return RunScores(display, per_query, run_path)
    if isinstance(doc.get("qrels"), dict) and run_path.is_file():
        return RunScores(display, _recompute(read_run(run_path), doc["qrels"], k_values), run_path)
    missing = sorted(set(metrics) - have)
    raise RunFormatError(f"{mpath} has no per-query {', '.join(missing)}; pass --qrels FILE or --data-dir DIR")


def _k_values_for(metrics: Sequence[str] | None) -> tuple[int, ...]:
    ks = set(DEFAULT_K_VALUES)
    for m in metrics or []:
        tail = m.rsplit("_", 1)[-1]
        if tail.isdigit() and not m.startswith("recip_rank_"):
            ks.add(int(tail))
    return tuple(sorted(ks))


def _recompute(
    run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]], k_values: Sequence[int]
) -> PerQuery:
    _, per_query = compute_metrics(run, qrels, k_values)
    names = metric_names(k_values)
    for qid, docs in qrels.items():  # judged queries without results score 0 in a paired comparison
        if qid not in per_query and any(r > 0 for r in docs.values()):
            per_query[qid] = {n: 0.0 for n in names}
    return per_query
